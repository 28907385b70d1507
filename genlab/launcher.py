"""Background workers forked from a warm process, so that a job does not pay for its imports.

A fresh ``python -m genlab.worker`` imports torch, torch's compiler front end (an optimizer's
first use loads it), the models, opacus, captum, scikit-learn and SciPy before it trains: on this
project's 2-core machine that is 6 to 10 s of CPU per job, often more than a small job's training
(bench/README.md, "Warm workers"). A class of twenty paid it twenty times, on the cores the pages
need. Here one *launcher* process per interpreter and code version imports all of that once and
then forks a worker for each job, in a few milliseconds; the workers share its memory pages
until they write to them.

How it is used: :func:`spawn` (called by :mod:`genlab.jobs`) asks the launcher over a Unix
socket in Linux's abstract namespace (nothing on disk to clean up) to fork a worker with the
caller's arguments, environment, working directory and log file, and returns the worker's pid.
When no launcher answers yet, it starts one in the background and returns ``None``; the caller
then starts a plain ``python -m genlab.worker`` as before, so no job ever waits for the
launcher. That fresh worker waits for its turn with only SQLite loaded and, if a launcher
serves by then, hands the turn to a worker the launcher forks instead of importing torch itself
(:mod:`genlab.worker`). The forked worker is what that process would have been: it leads its
own session (it outlives the server), runs :func:`genlab.worker.main`, and writes to the same
log.

The launcher serves only its own user (it checks the peer's credentials), exits after
``GENLAB_WARM_IDLE`` seconds without a request (default 600), and is keyed by the Python
executable, ``PYTHONPATH``, its nice value and the size and time of every genlab source file, so
an edited checkout gets a fresh launcher instead of stale code. It says when it serves, when it
exits and why it would not serve in ``$GENLAB_HOME/launcher.log`` (the home of whoever started
it). ``GENLAB_WARM_WORKERS=0`` turns it off; it is off outside Linux. It never touches a GPU:
CUDA is initialised in each worker, after the fork, as in a fresh process.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import importlib
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

SWITCH = "GENLAB_WARM_WORKERS"  # "0": every worker is a fresh `python -m genlab.worker`
IDLE = "GENLAB_WARM_IDLE"  # seconds an unused launcher waits for a request before it exits
DEFAULT_IDLE_S = 600.0
# What a worker would import on its way (training, evaluation, the audit, explanations).
PRELOAD = ("torch", "torch._dynamo", "genlab.worker", "genlab.jobs", "genlab.evaluate",
           "genlab.privacy", "genlab.privacy.audit", "genlab.interpret.scores",
           "genlab.interpret.disentanglement", "genlab.fidelity.performance")
# Set in the launcher before it imports anything, so that it stays one thread: a fork copies
# only the forking thread, and a library whose helper threads vanish in the child can hang it.
# NumPy's OpenBLAS starts a pool at import, and pyarrow's jemalloc (scikit-learn imports pandas,
# which imports pyarrow) a background purging thread. The workers' numerical work is torch's.
SINGLE_THREADED = {"OPENBLAS_NUM_THREADS": "1", "JE_ARROW_MALLOC_CONF": "background_thread:false"}
REPLY_TIMEOUT_S = 5.0
_MAX_REQUEST = 4 << 20


def enabled() -> bool:
    """Whether workers are forked from a launcher here (Linux, and not switched off)."""
    return sys.platform.startswith("linux") and os.environ.get(SWITCH, "1").strip() != "0"


def code_key(nice: int | None = None) -> str:
    """What a launcher's imported code and process depend on, hashed: the interpreter,
    ``PYTHONPATH``, the nice value (this process's unless given: a worker's priority is set
    relative to it) and every genlab source file's size and modification time."""
    nice = os.nice(0) if nice is None else nice
    digest = hashlib.sha256()
    digest.update(f"{sys.executable}\0{os.environ.get('PYTHONPATH', '')}\0{nice}".encode())
    for path in sorted(Path(__file__).resolve().parent.rglob("*.py")):
        with contextlib.suppress(OSError):  # a file removed meanwhile: the next call sees it
            stat = path.stat()
            digest.update(f"\0{path}\0{stat.st_size}\0{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:20]


def _address(key: str) -> str:
    return f"\0genlab-warm-{os.getuid()}-{key}"


# ------------------------------------------------------------------------------- the client
def spawn(args: list[str], *, env: dict[str, str], log: Path, key: str | None = None) -> int | None:
    """Fork a background worker (``genlab.worker`` with ``args``) from the warm launcher (of
    ``key``, default this process's :func:`code_key`); returns its pid, or None when no launcher
    is ready (one is started for the next job)."""
    if not enabled():
        return None
    key = key or code_key()
    request = {"args": list(args), "env": dict(env), "cwd": os.getcwd(), "log": str(log)}
    try:
        reply = _ask(key, request)
    except OSError:  # none listens yet (or it just went away): warm one up for next time
        start(key)
        return None
    pid = reply.get("pid")
    return int(pid) if isinstance(pid, int) and pid > 0 else None


def ready(key: str | None = None) -> bool:
    """Whether the launcher of ``key`` (default this process's :func:`code_key`) serves now; it
    is neither started nor waited for."""
    if not enabled():
        return False
    try:
        return isinstance(_ask(key or code_key(), {"ping": True}).get("pid"), int)
    except OSError:
        return False


def warm(timeout: float = 120.0) -> int | None:
    """Start this code version's launcher if none runs and wait until it serves; returns its pid,
    or None when it is off or not ready within ``timeout`` seconds."""
    if not enabled():
        return None
    key = code_key()
    deadline = time.monotonic() + timeout
    while True:
        try:
            pid = _ask(key, {"ping": True}).get("pid")
            return int(pid) if isinstance(pid, int) else None
        except OSError:
            if time.monotonic() > deadline:
                return None
            start(key)
            time.sleep(0.2)


def stop() -> bool:
    """Ask this code version's launcher to exit; True if one was running."""
    try:
        return bool(_ask(code_key(), {"stop": True}).get("stopped"))
    except OSError:
        return False


def start(key: str | None = None) -> None:
    """Start a launcher in the background unless one already holds ``key`` (it holds its
    address from the moment it starts importing, and listens once it is warm)."""
    key = key or code_key()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(_address(key))
        except OSError:  # a launcher is warming up
            return
    from genlab.paths import genlab_home

    with open(genlab_home() / "launcher.log", "ab") as log:
        subprocess.Popen([sys.executable, "-m", "genlab.launcher", key], stdin=subprocess.DEVNULL,
                         stdout=log, stderr=log, start_new_session=True, close_fds=True)


def _say(message: str) -> None:
    """One line of the launcher's log (its stderr)."""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    print(f"{stamp} genlab launcher {os.getpid()}: {message}", file=sys.stderr, flush=True)


def _ask(key: str, message: dict[str, Any]) -> dict[str, Any]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(REPLY_TIMEOUT_S)
        conn.connect(_address(key))
        conn.sendall(json.dumps(message).encode() + b"\n")
        reply = _read_line(conn)
    try:
        out = json.loads(reply)
    except ValueError as err:
        raise OSError(f"the warm launcher answered {reply[:60]!r}") from err
    return out if isinstance(out, dict) else {}


def _read_line(conn: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
        if len(data) > _MAX_REQUEST:
            raise OSError("message too long")
    return data


# ----------------------------------------------------------------------------- the launcher
def serve(key: str, *, idle: float | None = None) -> int:
    """Run the launcher for ``key`` until it has been idle for ``idle`` seconds (or is asked to
    stop). Returns 0, also when another launcher already serves ``key``."""
    if idle is None:
        try:
            idle = float(os.environ.get(IDLE, DEFAULT_IDLE_S))
        except ValueError:
            idle = DEFAULT_IDLE_S
    idle = max(idle, 1.0)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(_address(key))  # clients are refused until it listens, once warm
    except OSError:  # another launcher holds it
        return 0
    os.environ.update(SINGLE_THREADED)
    began = time.monotonic()
    for name in PRELOAD:
        importlib.import_module(name)

    if threads() != 1:  # something started a thread: forking would be unsafe, so serve nothing
        _say(f"{threads()} threads after imports; not serving (each job imports on its own)")
        return 1
    _say(f"serving after {time.monotonic() - began:.1f} s of imports; exits after {idle:g} s idle")

    listener.listen(64)
    listener.settimeout(idle)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps the workers
    gc.collect()
    gc.freeze()  # the imported objects are never scanned again, so their pages stay shared
    while True:
        try:
            conn, _ = listener.accept()
        except TimeoutError:
            _say(f"idle for {idle:g} s; exiting")
            return 0
        with conn:
            conn.settimeout(REPLY_TIMEOUT_S)
            try:
                if not _same_user(conn):
                    continue
                request = json.loads(_read_line(conn))
                if request.get("ping"):
                    conn.sendall(json.dumps({"pid": os.getpid()}).encode() + b"\n")
                    continue
                if request.get("stop"):
                    conn.sendall(b'{"stopped": true}\n')
                    _say("asked to stop; exiting")
                    return 0
                if not _well_formed(request):
                    conn.sendall(b'{"error": "malformed request"}\n')
                    continue
                pid = os.fork()
                if pid == 0:
                    _become_worker(listener, conn, request)  # never returns
                conn.sendall(json.dumps({"pid": pid}).encode() + b"\n")
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                continue  # a broken request: its client falls back to a fresh process


def _well_formed(request: Any) -> bool:
    """A spawn request as :func:`spawn` sends it: string arguments, a string-to-string
    environment, a working directory and a log path. Checked before forking, never after."""
    return (isinstance(request, dict)
            and isinstance(request.get("args"), list)
            and all(isinstance(a, str) for a in request["args"])
            and isinstance(request.get("env"), dict)
            and all(isinstance(k, str) and isinstance(v, str) for k, v in request["env"].items())
            and isinstance(request.get("cwd"), str) and isinstance(request.get("log"), str))


def threads() -> int:
    """This process's OS threads (Linux's /proc), Python's own and any a library started."""
    return len(os.listdir("/proc/self/task"))


def _same_user(conn: socket.socket) -> bool:
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return uid == os.getuid()


def _become_worker(listener: socket.socket, conn: socket.socket, request: dict) -> None:
    """In the forked child: become what ``python -m genlab.worker ARGS`` would be, run it, exit."""
    code = 1
    try:
        listener.close()
        conn.close()
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        os.setsid()  # its own session: it outlives the server that asked for it
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update({str(k): str(v) for k, v in request["env"].items()})
        log = os.open(request["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(log)
        os.close(null)
        args = [str(a) for a in request["args"]]
        sys.argv = ["genlab.worker", *args]
        import numpy as np

        np.random.seed()  # as a fresh process would be (Python's random reseeds itself on fork)
        from genlab.worker import main

        code = main(args)
    except SystemExit as err:
        code = err.code if isinstance(err.code, int) else 1
    except BaseException:  # noqa: BLE001  (a worker must never return into the launcher)
        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code or 0)


if __name__ == "__main__":
    sys.exit(serve(sys.argv[1]))
