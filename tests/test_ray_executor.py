"""Sweeps on Ray, against one real local Ray instance for the whole module: the same records as
the local executor, idempotence by config hash, a Ray worker killed mid-run, cancelling, and a
missing Ray as one line.

The instance gets one CPU (``num_cpus=1``): on a 2-core machine the driver (this process) and
one task fit without oversubscribing, and tasks queue in Ray as they would on a busy cluster.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sqlite3
import sys
import threading
import time
from pathlib import Path

import pytest

from genlab.checkpoint import WEIGHTS_FILE
from genlab.cli import main
from genlab.runs import RunStore
from genlab.sweep import RECORD_BLOCKS, SweepSpec

RAY_TITLE = "ray::genlab:"  # a Ray worker's process title while it runs a genlab task


@pytest.fixture(scope="module")
def ray_instance(tmp_path_factory):
    """One local Ray instance (1 CPU, no dashboard) for every test here; workers keep their
    caches in a temporary GENLAB_RAY_HOME."""
    ray = pytest.importorskip("ray", reason="the Ray extra is not installed (genlab[ray])")
    previous = os.environ.get("GENLAB_RAY_HOME")
    os.environ["GENLAB_RAY_HOME"] = str(tmp_path_factory.mktemp("ray_home"))
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()
        if previous is None:
            os.environ.pop("GENLAB_RAY_HOME", None)
        else:
            os.environ["GENLAB_RAY_HOME"] = previous


def strip_timing(obj):
    """A record, summary or history without wall-clock figures (they differ run to run)."""
    if isinstance(obj, dict):
        return {k: strip_timing(v) for k, v in obj.items()
                if "seconds" not in k and "per_second" not in k and k != "time"}
    if isinstance(obj, list):
        return [strip_timing(v) for v in obj]
    return obj


def rows_per_hash(home: Path) -> dict[str, int]:
    with sqlite3.connect(home / "genlab.db") as conn:
        return dict(conn.execute("SELECT config_hash, COUNT(*) FROM runs GROUP BY config_hash"))


def sweep_cli(home: Path, monkeypatch, capsys, *extra: str) -> tuple[int, dict]:
    monkeypatch.setenv("GENLAB_HOME", str(home))
    capsys.readouterr()
    code = main(["sweep", "--dataset", "digits", "--models", "vae", "--epsilons", "4",
                 "--seeds", "0", "--epochs", "1", "--json", "--quiet", *extra])
    return code, json.loads(capsys.readouterr().out)


def genlab_tasks() -> dict[int, str]:
    """``{pid: run id}`` of the Ray workers running a genlab task now."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                title = (entry / "cmdline").read_bytes().split(b"\0")[0].decode().strip()
            except (OSError, UnicodeDecodeError):
                continue
            if title.startswith(RAY_TITLE):
                found[int(entry.name)] = title[len(RAY_TITLE):]
    return found


def wait_for_task(timeout: float = 120) -> tuple[int, str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        tasks = genlab_tasks()
        if tasks:
            return next(iter(tasks.items()))
        time.sleep(0.1)
    raise AssertionError("no Ray worker started a genlab task")


def in_thread(fn, *args, **kwargs) -> tuple[threading.Thread, dict]:
    out: dict = {}

    def body():
        try:
            out["value"] = fn(*args, **kwargs)
        except BaseException as err:  # the test thread re-raises it
            out["error"] = err

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    return thread, out


# ----------------------------------------------------------------------------- no Ray
def test_a_missing_ray_is_one_line_and_creates_nothing(genlab_home, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    code = main(["sweep", "--models", "mixture", "--epochs", "1", "--executor", "ray"])
    err = capsys.readouterr().err
    assert code == 2
    assert err == ("genlab: error: --executor ray needs Ray, which is not installed; "
                   "pip install 'genlab[ray]'\n")
    assert RunStore(genlab_home).list() == []


@pytest.mark.parametrize(("address", "message"), [
    ("127.0.0.1:{port}", "cannot reach the Ray cluster at 127.0.0.1:{port} (Connection refused); "
                         "is `ray start --head` running there?"),
    ("head-node", "the Ray address must be auto, HOST:PORT or ray://HOST:PORT (got 'head-node')"),
])
def test_an_unreachable_ray_address_is_one_line_and_creates_nothing(genlab_home, capsys,
                                                                    address, message):
    pytest.importorskip("ray")
    from browser_support import free_port

    port = free_port()  # nothing listens there
    code = main(["sweep", "--models", "mixture", "--epochs", "1", "--executor", "ray",
                 "--ray-address", address.format(port=port), "--quiet"])
    assert code == 2
    assert capsys.readouterr().err == f"genlab: error: {message.format(port=port)}\n"
    assert RunStore(genlab_home).list() == []


def test_ray_options_need_the_ray_executor(genlab_home, capsys):
    assert main(["sweep", "--models", "mixture", "--ray-address", "auto"]) == 2
    assert "--ray-address only applies with --executor ray" in capsys.readouterr().err


class FakeRay:
    def __init__(self, resources):
        self.resources = resources

    def cluster_resources(self):
        return self.resources


@pytest.mark.parametrize(("device", "resources", "gpus"), [
    ("cuda", {"CPU": 8}, 1), ("auto", {"CPU": 8, "GPU": 4}, 1), ("auto", {"CPU": 8}, 0),
    ("cpu", {"CPU": 8, "GPU": 4}, 0)])
def test_a_run_asks_ray_for_a_gpu_when_its_device_is_cuda(device, resources, gpus):
    from genlab.ray_executor import _in_flight_cap, _num_gpus

    assert _num_gpus(FakeRay(resources), device) == gpus
    assert _in_flight_cap(FakeRay(resources), None) == 16  # twice the cluster's CPUs
    assert _in_flight_cap(FakeRay(resources), 3) == 3


# ----------------------------------------------------------------------------- on Ray
@pytest.mark.slow
def test_ray_gives_the_local_records_and_is_idempotent(ray_instance, tmp_path, monkeypatch,
                                                       capsys):
    # A Ray task trains on one thread (genlab.ray_executor.CPUS_PER_RUN); the local workers
    # must too, or the VAE's float sums differ in their last bits.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    code, local = sweep_cli(tmp_path / "local", monkeypatch, capsys)
    assert code == 0, local["failed"]
    code, on_ray = sweep_cli(tmp_path / "ray", monkeypatch, capsys, "--executor", "ray")
    assert code == 0, on_ray["failed"]
    by_hash = {}
    for home, out in ((tmp_path / "local", local), (tmp_path / "ray", on_ray)):
        store = RunStore(home)
        for run in out["runs"]:
            info = store.get(run["run_id"])
            folder = store.artifacts_dir(info.id)
            by_hash.setdefault(info.config_hash, []).append({
                "status": info.status,
                "record": strip_timing(info.record),
                "summary": strip_timing(info.summary),
                "history": strip_timing(store.history(info.id)),
                "files": {p.name: p.read_bytes() for p in folder.iterdir()
                          if not p.name.endswith(".log")},
            })
    assert len(by_hash) == 1  # one DP VAE: the VAE is the family whose sums depend on threads
    for local_run, ray_run in by_hash.values():
        assert local_run["status"] == ray_run["status"] == "finished"
        assert set(ray_run["record"]) == set(RECORD_BLOCKS)
        assert ray_run["record"] == local_run["record"]
        assert ray_run["summary"] == local_run["summary"]
        assert ray_run["history"] == local_run["history"] and len(ray_run["history"]) == 1
        assert set(ray_run["files"]) == {"config.json", WEIGHTS_FILE, "samples.png",
                                         "audit_exposed.png"}
        assert ray_run["files"] == local_run["files"]  # weights and images, byte for byte
    (dp,) = on_ray["runs"]
    assert 3.9 < dp["record"]["privacy"]["epsilon"] <= 4.0 and dp["record"]["privacy"]["mia_auc"]

    # the same sweep again, on either executor: nothing is trained, the same rows come back
    for home, first, extra in ((tmp_path / "ray", on_ray, ["--executor", "ray"]),
                               (tmp_path / "local", local, ["--executor", "ray"]),
                               (tmp_path / "ray", on_ray, [])):
        code, again = sweep_cli(home, monkeypatch, capsys, *extra)
        assert code == 0
        assert [r["run_id"] for r in again["runs"]] == [r["run_id"] for r in first["runs"]]
        assert [r["summary"] for r in again["runs"]] == [r["summary"] for r in first["runs"]]
        assert set(rows_per_hash(home).values()) == {1}


@pytest.mark.slow
def test_a_killed_ray_worker_fails_its_run_and_the_others_complete(ray_instance, tmp_path):
    from genlab.ray_executor import run_ray_sweep

    store = RunStore(tmp_path)
    spec = SweepSpec(dataset="digits", models=("vae",), epsilons=(math.inf,), seeds=(0, 1, 2),
                     epochs=6)
    thread, out = in_thread(run_ray_sweep, store, spec, evaluate=False, poll=0.2)
    pid, victim = wait_for_task()
    os.kill(pid, signal.SIGKILL)
    thread.join(timeout=300)
    assert not thread.is_alive() and "error" not in out, out.get("error")
    runs = {run_id: store.get(run_id) for run_id in out["value"]}
    assert victim in runs
    assert runs[victim].status == "failed"
    assert runs[victim].error == "its Ray worker died before the run finished (WorkerCrashedError)"
    others = [info for run_id, info in runs.items() if run_id != victim]
    assert len(others) == 2
    for info in others:
        assert info.status == "finished" and info.summary["epochs"] == 6
        assert [h["epoch"] for h in store.history(info.id)] == [1, 2, 3, 4, 5, 6]
        assert (store.artifacts_dir(info.id) / WEIGHTS_FILE).is_file()

    # the next sweep retries the failed run in its own row and leaves the others alone
    finished = {info.id: info.finished for info in others}
    assert run_ray_sweep(store, spec, evaluate=False) == out["value"]
    assert store.get(victim).status == "finished"
    assert {i: store.get(i).finished for i in finished} == finished
    assert set(rows_per_hash(tmp_path).values()) == {1}


@pytest.mark.slow
def test_with_retries_ray_reruns_a_run_whose_worker_was_killed(ray_instance, tmp_path):
    from genlab.ray_executor import run_ray_sweep

    store = RunStore(tmp_path)
    spec = SweepSpec(dataset="digits", models=("vae",), epsilons=(math.inf,), seeds=(7,),
                     epochs=6)
    thread, out = in_thread(run_ray_sweep, store, spec, evaluate=False, retries=1, poll=0.2)
    pid, victim = wait_for_task()
    os.kill(pid, signal.SIGKILL)
    thread.join(timeout=300)
    assert not thread.is_alive() and "error" not in out, out.get("error")
    assert out["value"] == [victim]
    info = store.get(victim)
    assert info.status == "finished" and info.error is None and info.summary["epochs"] == 6
    assert [h["epoch"] for h in store.history(victim)] == [1, 2, 3, 4, 5, 6]


@pytest.mark.slow
def test_a_trained_run_without_its_record_is_evaluated_on_ray(ray_instance, tmp_path):
    from genlab import jobs
    from genlab.ray_executor import run_ray_sweep

    store = RunStore(tmp_path)
    spec = SweepSpec(dataset="digits", models=("mixture",), epsilons=(math.inf,), seeds=(0,),
                     epochs=1)
    (cfg,) = spec.configs()
    run_id = store.create_run(model=cfg.model, dataset="digits", config=cfg.to_dict(),
                              config_hash=cfg.config_hash())
    jobs.execute_run(store, run_id)  # trained here, never evaluated
    before = store.get(run_id)
    weights = (store.artifacts_dir(run_id) / WEIGHTS_FILE).read_bytes()
    assert run_ray_sweep(store, spec) == [run_id]
    after = store.get(run_id)
    assert set(after.record) == set(RECORD_BLOCKS)
    assert after.record["privacy"]["mia_auc"] is not None
    assert (after.finished, after.summary) == (before.finished, before.summary)  # not retrained
    assert (store.artifacts_dir(run_id) / WEIGHTS_FILE).read_bytes() == weights
    assert (store.artifacts_dir(run_id) / "audit_exposed.png").is_file()
    assert not (store.artifacts_dir(run_id) / "evaluate.pid").exists()
    assert len(store.list()) == 1


@pytest.mark.slow
def test_cancel_requests_reach_running_and_queued_ray_tasks(ray_instance, tmp_path):
    from genlab import jobs
    from genlab.ray_executor import run_ray_sweep

    store = RunStore(tmp_path)
    spec = SweepSpec(dataset="digits", models=("vae",), epsilons=(math.inf,), seeds=(0, 1),
                     epochs=500)
    thread, out = in_thread(run_ray_sweep, store, spec, evaluate=False, poll=0.2)
    _, running = wait_for_task()
    queued = next(r.id for r in store.list() if r.id != running)
    assert store.get(queued).status == "queued"  # one CPU: it waits in Ray's queue
    assert jobs.cancel(store, queued) == "queued"
    assert jobs.cancel(store, running) == "queued"  # the driver marks it running at the end
    thread.join(timeout=120)
    assert not thread.is_alive() and "error" not in out, out.get("error")
    assert {store.get(r).status for r in out["value"]} == {"cancelled"}
    deadline = time.monotonic() + 30
    while genlab_tasks() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert genlab_tasks() == {}  # the cancelled task's worker stopped training


# ----------------------------------------------------------------------------- the page
def fill_sweep_form(at, *, executor: str, address: str = ""):
    at.selectbox(key="tradeoffs_sweep_dataset").set_value("digits")
    at.multiselect(key="tradeoffs_sweep_models").set_value(["mixture"])
    at.text_input(key="tradeoffs_sweep_epsilons").set_value("inf")
    at.text_input(key="tradeoffs_sweep_seeds").set_value("0")
    at.number_input(key="tradeoffs_sweep_epochs").set_value(1)
    at.selectbox(key="tradeoffs_sweep_executor").set_value(executor)
    at.run()
    if address:
        at.text_input(key="tradeoffs_sweep_ray_address").set_value(address)
    return at.button(key="tradeoffs_sweep_start").click().run()


@pytest.fixture
def page_home(genlab_home, monkeypatch, tmp_path):
    import services

    monkeypatch.setenv(services.DEMO_ENV, str(tmp_path / "absent.json"))  # no demo records
    return genlab_home


def test_the_page_refuses_the_ray_executor_without_ray_in_one_line(page_home, monkeypatch):
    from test_dashboard import no_exception, open_page

    monkeypatch.setitem(sys.modules, "ray", None)
    at = fill_sweep_form(open_page("tradeoffs"), executor="ray")
    no_exception(at)
    assert [e.value for e in at.error] == [
        "--executor ray needs Ray, which is not installed; pip install 'genlab[ray]'"]
    assert "tradeoffs_sweep_spec" not in at.session_state
    assert RunStore(page_home).list() == []
    assert not list((page_home / "sweeps").glob("*.pid")) if (page_home / "sweeps").exists() \
        else True


def test_the_page_refuses_a_ray_address_nothing_answers_at(page_home):
    pytest.importorskip("ray")
    from browser_support import free_port
    from test_dashboard import no_exception, open_page

    port = free_port()
    at = fill_sweep_form(open_page("tradeoffs"), executor="ray", address=f"127.0.0.1:{port}")
    no_exception(at)
    assert [e.value for e in at.error] == [
        f"cannot reach the Ray cluster at 127.0.0.1:{port} (Connection refused); is "
        "`ray start --head` running there?"]
    assert "tradeoffs_sweep_spec" not in at.session_state and RunStore(page_home).list() == []


@pytest.mark.slow
def test_a_sweep_started_on_the_page_on_a_ray_cluster_lands_in_the_store(ray_instance, page_home):
    from test_dashboard import no_exception, open_page

    from genlab.sweep import sweep_status

    # the page's driver is its own process: it joins this module's instance by its address
    address = ray_instance.get_runtime_context().gcs_address
    at = fill_sweep_form(open_page("tradeoffs"), executor="ray", address=address)
    no_exception(at)
    assert not at.error, [e.value for e in at.error]
    spec = SweepSpec.from_dict(at.session_state["tradeoffs_sweep_spec"])
    store = RunStore(page_home)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:  # the detached driver starts its own local Ray
        status = sweep_status(store, spec)
        if not status["running"] and status["done"] + status["failed"] == status["total"]:
            break
        time.sleep(1)
    log = next((page_home / "sweeps").glob("*.log"))
    assert status["done"] == 1 and status["failed"] == 0, (status, log.read_text()[-2000:])
    while "runs done" not in log.read_text() and time.monotonic() < deadline + 60:
        time.sleep(0.5)  # the driver's last line comes after it has left Ray
    assert "genlab sweep: 1 of 1 runs done" in log.read_text()
    (info,) = store.list()
    assert info.owner == "sweep" and info.summary["epochs"] == 1
    assert set(info.record) == set(RECORD_BLOCKS)
    assert not list((page_home / "runs" / info.id).glob("*.log"))  # no local worker ran it
    # it ran on this module's instance: the audit's reference model is in that node's cache
    cache = Path(os.environ["GENLAB_RAY_HOME"]) / "cache" / "audit_references"
    assert list(cache.glob(f"{info.config_hash}-*.safetensors"))

