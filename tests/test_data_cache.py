"""genlab.data's disk caches: a worker that trains on a built-in dataset never imports sklearn,
and a damaged cache file is rebuilt rather than trusted."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from genlab import data

# Loads digits with sklearn made unimportable and prints a fingerprint of the splits.
NO_SKLEARN = """
import sys
sys.modules["sklearn"] = None  # any import of sklearn now raises ImportError
from genlab.data import load_dataset
s = load_dataset("digits", seed=3)
print(s.train.index.sum().item(), s.holdout.index.sum().item(), s.test.index.sum().item(),
      float(s.train.x.sum()))
"""


@pytest.fixture()
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("GENLAB_HOME", str(tmp_path))
    data.clear_caches()
    yield tmp_path
    data.clear_caches()


def sklearn_split(y: np.ndarray, seed: int) -> list[np.ndarray]:
    """The split as genlab made it before the cache: test first, then holdout from the rest."""
    rows = np.arange(len(y))
    rest, test = train_test_split(rows, test_size=round(0.2 * len(y)), stratify=y,
                                  random_state=seed)
    train, holdout = train_test_split(rest, test_size=round(0.2 * len(y)), stratify=y[rest],
                                      random_state=seed)
    return [np.sort(p) for p in (train, holdout, test)]


def test_the_second_load_needs_no_sklearn_and_gives_the_same_data(home):
    first = data.load_dataset("digits", seed=3)
    bunch = load_digits()
    expected = sklearn_split(bunch.target, 3)
    for part, rows in zip((first.train, first.holdout, first.test), expected):
        np.testing.assert_array_equal(part.index.numpy(), rows)
        np.testing.assert_array_equal(part.x.numpy()[:, 0], bunch.images[rows] / 16.0)
        np.testing.assert_array_equal(part.y.numpy(), bunch.target[rows])
    assert (home / "cache" / "datasets" / "digits.npz").exists()
    assert len(list((home / "cache" / "splits").glob("*.npz"))) == 1

    env = {**os.environ, "GENLAB_HOME": str(home)}
    out = subprocess.run([sys.executable, "-c", NO_SKLEARN], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    fingerprint = [float(v) for v in out.stdout.split()]
    assert fingerprint == [float(r.sum()) for r in expected] + [float(first.train.x.sum())]


def test_a_fresh_home_still_loads_without_a_cache_and_seeds_differ(home):
    a, b = (data.split_indices(load_digits().target, seed=s, holdout_fraction=0.2,
                               test_fraction=0.2) for s in (0, 1))
    assert not np.array_equal(a[0], b[0])  # each seed has its own cache entry
    assert len(list((home / "cache" / "splits").glob("*.npz"))) == 2


@pytest.mark.parametrize("damage", ["garbage", "overlap", "unsorted"])
def test_a_damaged_split_cache_is_rebuilt(home, damage):
    y = np.arange(100) % 4
    good = data.split_indices(y, seed=0, holdout_fraction=0.2, test_fraction=0.2)
    (path,) = (home / "cache" / "splits").glob("*.npz")
    if damage == "garbage":
        path.write_bytes(b"not a zip file at all")
    elif damage == "overlap":  # a well-formed file whose rows do not partition the data
        np.savez(path, train=good[0], holdout=good[0][:5], test=good[2])
    else:  # the right rows, out of order
        np.savez(path, train=good[0][::-1], holdout=good[1], test=good[2])
    again = data.split_indices(y, seed=0, holdout_fraction=0.2, test_fraction=0.2)
    for a, b in zip(good, again):
        np.testing.assert_array_equal(a, b)
    with np.load(path, allow_pickle=False) as cached:  # and the file is good again
        np.testing.assert_array_equal(cached["holdout"], good[1])


def test_a_damaged_digits_cache_is_rebuilt(home):
    data.load_dataset("digits")
    path = home / "cache" / "datasets" / "digits.npz"
    np.savez(path, x=np.full((1797, 8, 8), 200, np.uint8), y=np.zeros(1797, np.int64))
    data.clear_caches()
    again = data.load_dataset("digits")
    assert float(again.train.x.max()) == 1.0 and len(set(again.train.y.tolist())) == 10
