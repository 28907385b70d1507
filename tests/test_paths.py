"""genlab.paths.replacing: a file is written whole or not at all."""

from __future__ import annotations

import threading

import pytest

from genlab.paths import replacing


def test_a_replaced_file_is_the_new_one_and_nothing_else_is_left(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("old")
    with replacing(target) as partial:
        assert partial.parent == tmp_path and partial != target
        partial.write_text("new")
        assert target.read_text() == "old"  # readers see the old file until the block ends
    assert target.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_an_error_while_writing_keeps_the_old_file_and_removes_the_partial_one(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="disk full"), replacing(target) as partial:
        partial.write_text("half")
        raise RuntimeError("disk full")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_writers_of_one_path_in_threads_never_mix_their_files(tmp_path):
    target = tmp_path / "shared.txt"
    texts = [str(i) * 100_000 for i in range(8)]

    def write(text: str) -> None:
        for _ in range(20):
            with replacing(target) as partial:
                partial.write_text(text)

    threads = [threading.Thread(target=write, args=(t,)) for t in texts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert target.read_text() in texts  # one writer's whole file, not a mix
    assert [p.name for p in tmp_path.iterdir()] == ["shared.txt"]

