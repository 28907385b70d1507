"""The genlab command, run as a real subprocess against a temporary store."""

from __future__ import annotations

import csv
import io
import json
import os
import struct
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from genlab.models import MODELS


def genlab(home, *args, timeout=120):
    env = {**os.environ, "GENLAB_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "genlab.cli", *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One short digits run trained through the CLI, shared by the read-only tests below."""
    home = tmp_path_factory.mktemp("cli-home")
    out = genlab(home, "train", "--dataset", "digits", "--model", "vae", "--epochs", "6",
                 "--seed", "0", "--json")
    assert out.returncode == 0, out.stderr
    return home, json.loads(out.stdout)


def test_train_prints_one_json_object(trained):
    _, run = trained
    assert set(run) >= {"run_id", "model", "dataset", "config", "record", "summary"}
    assert run["model"] == "vae" and run["dataset"] == "digits"
    assert run["status"] == "finished"
    assert run["config"]["train"]["epochs"] == 6
    assert run["record"] == {}  # no block is computed by training alone
    s = run["summary"]
    assert 5 < s["test_loss"] < 60 and 5 < s["train_loss"] < 60  # nats per 8x8 image


def test_history_shows_the_test_loss_falling(trained):
    home, run = trained
    out = genlab(home, "runs", "show", run["run_id"], "--json")
    history = json.loads(out.stdout)["history"]
    test = [h["test_loss"] for h in history]
    assert [h["epoch"] for h in history] == list(range(1, 7))
    assert test[-1] < test[0] - 2
    assert sum(b < a for a, b in zip(test, test[1:])) >= 4  # falls from epoch 1, mostly monotone


def test_runs_list_and_export_persist_across_processes(trained):
    home, run = trained
    listed = json.loads(genlab(home, "runs", "list", "--json").stdout)["runs"]
    assert [r["run_id"] for r in listed] == [run["run_id"]]
    text = genlab(home, "runs", "export", "--format", "csv").stdout
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == 1 and rows[0]["id"] == run["run_id"]
    assert float(rows[0]["summary.test_loss"]) == pytest.approx(run["summary"]["test_loss"])
    exported = json.loads(genlab(home, "runs", "export", "--format", "json").stdout)
    assert exported[0]["id"] == run["run_id"]


def test_delete_then_unknown_run(tmp_path):
    out = genlab(tmp_path, "train", "--dataset", "digits", "--epochs", "1", "--json", "--quiet")
    run_id = json.loads(out.stdout)["run_id"]
    assert genlab(tmp_path, "runs", "delete", run_id).returncode == 0
    gone = genlab(tmp_path, "runs", "show", run_id)
    assert gone.returncode != 0
    assert gone.stderr.strip() == (
        f"genlab: error: unknown run '{run_id}'; `genlab runs list` shows the runs"
    )
    assert json.loads(genlab(tmp_path, "runs", "list", "--json").stdout)["runs"] == []


def _write_idx(path, array, code=0x08):
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(">u1").tobytes())


def _bad_inputs(tmp):
    raw = tmp / "MNIST" / "raw"
    raw.mkdir(parents=True)
    images = np.random.default_rng(0).integers(0, 255, (20, 28, 28), dtype=np.uint8)
    _write_idx(raw / "train-labels-idx1-ubyte", np.arange(20) % 10)
    _write_idx(raw / "train-images-idx3-ubyte", images)
    data = (raw / "train-images-idx3-ubyte").read_bytes()
    (raw / "train-images-idx3-ubyte").write_bytes(data[: len(data) - 300])  # truncated
    np.savez(tmp / "wrong.npz", x=np.zeros((20, 784), np.float32), y=np.zeros(20, np.int64))
    return [
        (["--model", "transformer"], "unknown model 'transformer'; known models: "
                                     + ", ".join(sorted(MODELS))),
        (["--dataset", "cifar"], "unknown dataset 'cifar'; known: digits, mnist5k, sprites"),
        (["--epochs", "0"], "epochs must be at least 1 (got 0)"),
        (["--set", "latent_dim=0"], "latent_dim must be at least 1 (got 0)"),
        (["--set", "latent_dim=-2"], "latent_dim must be at least 1 (got -2)"),
        (["--dataset", tmp], "is truncated: expected 15680 bytes of data, found 15380"),
        (["--dataset", tmp / "wrong.npz"], "images have shape (20, 784)"),
        (["--set", "wings=2"], "model 'vae' has no setting 'wings'; settable keys: arch"),
        (["--set", "latent_dim"], "--set expects key=value"),
        (["--set", "batch_size=5000"], "batch_size 5000 is larger than the train split"),
    ]


def test_bad_input_gives_one_clear_line_and_loses_nothing(tmp_path, trained):
    home, run = trained
    cases = _bad_inputs(tmp_path)
    with ThreadPoolExecutor(4) as pool:  # independent processes; saves a minute of CI
        outs = list(pool.map(lambda c: genlab(home, "train", "--epochs", "1", *c[0]), cases))
    for (args, message), out in zip(cases, outs):
        assert out.returncode == 2, (args, out.stderr)
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1, (args, out.stderr)
        assert lines[0].startswith("genlab: error: ") and message in lines[0], (args, lines[0])
        assert "Traceback" not in out.stderr
    # nothing was lost and no half-made runs were left behind
    runs = json.loads(genlab(home, "runs", "list", "--json").stdout)["runs"]
    assert [r["run_id"] for r in runs] == [run["run_id"]]


def test_usage_errors_are_one_line(tmp_path):
    out = genlab(tmp_path, "train", "--device", "tpu")
    assert out.returncode == 2
    assert len(out.stderr.strip().splitlines()) == 1
    assert "invalid choice: 'tpu'" in out.stderr


def test_empty_store_says_how_to_start(tmp_path):
    out = genlab(tmp_path, "runs", "list")
    assert out.returncode == 0 and "no runs yet" in out.stdout


def test_a_closed_pipe_is_not_an_error(tmp_path):
    """`genlab runs list | head` must not print an internal error when head stops reading."""
    import subprocess
    import sys

    env = {**os.environ, "GENLAB_HOME": str(tmp_path)}
    code = (
        "import sys; from genlab.runs import RunStore; from genlab.config import make_run_config\n"
        "s = RunStore()\n"
        "for i in range(300):\n"
        "    c = make_run_config('mixture', 'digits', epochs=1, seed=i)\n"
        "    s.create_run(model='mixture', dataset='digits', config=c.to_dict(),"
        " config_hash=c.config_hash())\n"
    )
    subprocess.run([sys.executable, "-c", code], env=env, check=True)
    proc = subprocess.run(
        f"{sys.executable} -m genlab.cli runs list --json | head -1", shell=True, env=env,
        capture_output=True, text=True,
    )
    assert proc.stdout.startswith("{") and "internal error" not in proc.stderr
    assert "BrokenPipe" not in proc.stderr
