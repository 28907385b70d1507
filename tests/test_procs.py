"""Pid markers: a reader sees a whole marker while another process rewrites it."""

from __future__ import annotations

import os
import threading
import time

from genlab.procs import pid_marker_alive, write_pid_marker


def test_a_marker_rewritten_in_a_loop_always_reads_as_alive(tmp_path):
    marker = tmp_path / "evaluate.pid"
    write_pid_marker(marker, os.getpid())
    stop = threading.Event()

    def rewrite() -> None:
        while not stop.is_set():
            write_pid_marker(marker, os.getpid())

    writer = threading.Thread(target=rewrite)
    writer.start()
    try:
        deadline, reads, missed = time.monotonic() + 1.0, 0, 0
        while time.monotonic() < deadline:
            reads += 1
            missed += not pid_marker_alive(marker)
    finally:
        stop.set()
        writer.join()
    assert reads > 1000 and missed == 0, f"{missed} of {reads} reads saw no live marker"
    assert [p.name for p in tmp_path.iterdir()] == ["evaluate.pid"]  # no partial file is left


def test_a_marker_names_its_process_and_a_dead_one_reads_as_dead(tmp_path):
    marker = tmp_path / "audit.pid"
    write_pid_marker(marker, os.getpid())
    pid, start = (int(v) for v in marker.read_text().split())
    assert pid == os.getpid() and start > 0 and pid_marker_alive(marker)
    marker.write_text(f"{os.getpid()} {start + 1}")  # the same pid, started at another time
    assert not pid_marker_alive(marker)
    assert not pid_marker_alive(tmp_path / "missing.pid")
