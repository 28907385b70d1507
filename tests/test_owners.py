"""Who may delete or cancel a run, enforced by the store itself (genlab.owners)."""

from __future__ import annotations

import pytest

from genlab import jobs
from genlab.errors import ConfigError, GenlabError, OwnershipError
from genlab.owners import Actor, check_owner_name, local_owner, may_modify
from genlab.runs import RunStore


@pytest.fixture
def store(tmp_path):
    return RunStore(tmp_path)


def run_of(store: RunStore, owner: str | None, status: str = "cancelled") -> str:
    return store.create_run(model="vae", dataset="digits", config={"model": "vae"},
                            owner=owner, status=status)


def test_only_the_owner_or_the_teacher_may_delete(store):
    ann, bob, teacher = Actor("ann"), Actor("bob"), Actor("tess", teacher=True)
    first, second = run_of(store, "ann"), run_of(store, "ann")
    with pytest.raises(OwnershipError) as refused:
        store.delete(first, actor=bob)
    assert str(refused.value) == (f"bob cannot delete {first}: it is ann's run; only its owner "
                                  "or the teacher can")
    assert isinstance(refused.value, PermissionError) and isinstance(refused.value, GenlabError)
    assert store.get(first).owner == "ann"  # nothing was deleted
    store.delete(first, actor=ann)
    store.delete(second[:12], actor=teacher)  # a prefix works as everywhere else
    assert store.list() == []


def test_only_the_owner_or_the_teacher_may_cancel(store):
    run_id = run_of(store, "ann", status="queued")
    with pytest.raises(OwnershipError, match="bob cannot cancel"):
        jobs.cancel(store, run_id, actor=Actor("bob"))
    assert not store.get(run_id).cancel_requested
    with pytest.raises(OwnershipError, match="Ann cannot cancel"):  # names are case-sensitive
        store.request_cancel(run_id, actor=Actor("Ann"))
    assert jobs.cancel(store, run_id, actor=Actor("ann")) == "queued"
    assert store.get(run_id).cancel_requested


def test_runs_without_an_owner_belong_to_the_operator_and_the_teacher(store):
    cli = run_of(store, None)
    with pytest.raises(OwnershipError, match="a run started outside the dashboard"):
        store.delete(cli, actor=Actor("ann"))
    assert may_modify(None, Actor("t", teacher=True)) and may_modify("ann", None)
    store.delete(cli)  # the command line names no actor: the operator owns the files
    assert store.list() == []


@pytest.mark.parametrize("name, expected", [("  Ann  Lee ", "Ann Lee"), ("zoë_2", "zoë_2"),
                                            ("a.b@school-1", "a.b@school-1")])
def test_owner_names_are_tidied(name, expected):
    assert check_owner_name(name) == expected == Actor(name).name


@pytest.mark.parametrize("name, message", [
    ("", "enter a name"), ("x" * 41, "at most 40 characters"),
    ("-ann", "must start with a letter"), ("a<b>", "may only hold"), (None, "must be text"),
])
def test_bad_owner_names_say_what_is_wrong(name, message):
    with pytest.raises(ConfigError, match=message):
        Actor(name)


def test_the_laptop_user_has_a_valid_name():
    assert check_owner_name(local_owner()) == local_owner()
