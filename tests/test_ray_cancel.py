"""Cancelling a Ray task: the escalation from ``ray.cancel`` to ``ray.cancel(force=True)``, without
a Ray instance (``test_ray_executor.py`` cancels real tasks)."""

from __future__ import annotations

import time

import pytest

from genlab.runs import RunStore


def test_a_task_that_ignores_its_cancel_is_cancelled_with_force(tmp_path, monkeypatch):
    """The escalation alone: ray.cancel first, ray.cancel(force=True) after the grace period,
    and the crashed worker that a forced cancel leaves counts as a cancel, not a failure."""
    ray = pytest.importorskip("ray", reason="the Ray extra is not installed (genlab[ray])")
    from genlab import ray_executor

    sent = []

    class Recorder:  # stands in for the ray module's cancel and get only
        exceptions = ray.exceptions

        @staticmethod
        def cancel(ref, force=False):
            sent.append((ref, force))

        @staticmethod
        def get(ref):
            raise ray.exceptions.WorkerCrashedError()

    store = RunStore(tmp_path)
    run_id = store.create_run(model="vae", dataset="digits", config={})
    task = ray_executor._Task(0, run_id, "ref-0", evaluating_only=False)
    ray_executor._pass_on_cancel(Recorder, store, task)
    assert sent == []  # nobody asked
    store.request_cancel(run_id)
    monkeypatch.setattr(ray_executor, "CANCEL_GRACE_S", 0.2)
    ray_executor._pass_on_cancel(Recorder, store, task)
    ray_executor._pass_on_cancel(Recorder, store, task)  # still within the grace period
    assert sent == [("ref-0", False)]
    time.sleep(0.3)
    ray_executor._pass_on_cancel(Recorder, store, task)
    ray_executor._pass_on_cancel(Recorder, store, task)
    assert sent == [("ref-0", False), ("ref-0", True)]
    ray_executor._collect(Recorder, store, task)
    assert store.get(run_id).status == "cancelled"
