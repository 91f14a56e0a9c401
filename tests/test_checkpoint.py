"""Checkpoints: exact resume, crash safety (SIGKILL mid-write), refusal of corrupt or
mismatched checkpoints, Ctrl-C, divergence, TOML configuration, metrics and TensorBoard."""

from __future__ import annotations

import csv
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from lagprop.checkpoint import (
    CHECKPOINT,
    PREVIOUS,
    CheckpointError,
    load_into,
    make_payload,
    read_checkpoint,
    write_checkpoint,
)
from lagprop.cli import main
from lagprop.data import load_dataset
from lagprop.dynamics import forward_state
from lagprop.graph import Graph
from lagprop.lagrangian import evaluate, x_grads
from lagprop.network import Network
from lagprop.runs import RunDir
from lagprop.train import TrainConfig, Trainer

SMALL = ["train", "--dataset", "xor", "--hidden", "8", "--batch-size", "64", "--quiet", "--device", "cpu"]


def weights(folder: Path) -> dict:
    return torch.load(folder / "model.pt", weights_only=True)["weights"]


def metrics(folder: Path) -> list[dict]:
    with open(folder / "metrics.csv") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("extra", [[], ["--state", "stored", "--l1", "0.01", "--optimizer", "sgd", "--lr", "0.05"]])
def test_resume_equals_one_run(tmp_path, extra):
    """4 epochs in one go == 2 epochs, stop, resume to 4: same weights and figures, bit for bit."""
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(SMALL + extra + ["--epochs", "4", "--out", str(a)]) == 0
    assert main(SMALL + extra + ["--epochs", "2", "--out", str(b)]) == 0
    assert main(["train", "--resume", str(b), "--epochs", "4", "--quiet"]) == 0
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    ra, rb = metrics(a), metrics(b)
    assert len(ra) == len(rb) == 4
    for x, y in zip(ra, rb):
        assert {k: v for k, v in x.items() if k != "seconds"} == {k: v for k, v in y.items() if k != "seconds"}
    sa, sb = (json.loads((d / "summary.json").read_text()) for d in (a, b))
    assert sa["test_accuracy"] == sb["test_accuracy"] and sb["epochs"] == 4


def test_resume_refuses_conflicting_flags(tmp_path, capsys):
    run = tmp_path / "r"
    assert main(SMALL + ["--epochs", "1", "--lr", "0.01", "--out", str(run)]) == 0
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--lr", "0.1", "--epochs", "2"]) == 2
    err = capsys.readouterr().err
    assert "--lr" in err and "saved" in err and err.count("\n") == 1
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before  # nothing touched
    # the same value as saved is no conflict
    assert main(["train", "--resume", str(run), "--lr", "0.01", "--epochs", "2", "--quiet"]) == 0
    assert len(metrics(run)) == 2


def test_new_run_does_not_replace_an_existing_one(tmp_path, capsys):
    run = tmp_path / "r"
    assert main(SMALL + ["--epochs", "1", "--out", str(run)]) == 0
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    assert main(SMALL + ["--epochs", "1", "--out", str(run)]) == 2
    assert "--resume" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before


# ---------------------------------------------------------------- crash safety
WRITER = textwrap.dedent("""
    import sys, torch
    from lagprop.checkpoint import read_checkpoint, write_checkpoint
    folder = sys.argv[1]
    try:  # carry on from the newest loadable checkpoint, as a resumed run would
        i = read_checkpoint(folder)[0]["i"]
    except Exception:
        i = 0
    while True:
        i += 1
        write_checkpoint(folder, {"format": 1, "i": i, "t": torch.full((400_000,), float(i))})
        print(i, flush=True)
""")


def test_sigkill_during_writes_leaves_a_loadable_checkpoint(tmp_path):
    """Kill a process that writes checkpoints in a loop at random moments; one always loads."""
    rng = random.Random(8)
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    folder = tmp_path / "ck"
    last_seen = 0
    for _ in range(3):
        proc = subprocess.Popen([sys.executable, str(script), str(folder)], stdout=subprocess.PIPE, text=True)
        try:
            for _ in range(1 + rng.randrange(4)):  # wait for a few complete writes
                line = proc.stdout.readline()
                assert line, "the writer died"
            time.sleep(rng.uniform(0.0, 0.05))  # then kill at a random moment, most likely mid-write
        finally:
            proc.kill()
            proc.wait()
            proc.stdout.close()
        payload, used = read_checkpoint(folder)
        assert used.name in (CHECKPOINT, PREVIOUS)
        assert payload["i"] >= 1 and torch.equal(payload["t"], torch.full((400_000,), float(payload["i"])))
        assert payload["i"] >= last_seen  # never older than a checkpoint known to be complete
        last_seen = payload["i"]


def test_write_keeps_previous_and_falls_back(tmp_path):
    write_checkpoint(tmp_path, {"format": 1, "i": 1})
    write_checkpoint(tmp_path, {"format": 1, "i": 2})
    assert read_checkpoint(tmp_path)[0]["i"] == 2
    assert read_checkpoint(tmp_path / PREVIOUS)[0]["i"] == 1
    # damage the newest: one flipped byte in the body
    data = bytearray((tmp_path / CHECKPOINT).read_bytes())
    data[-10] ^= 0xFF
    (tmp_path / CHECKPOINT).write_bytes(bytes(data))
    payload, used = read_checkpoint(tmp_path)
    assert used.name == PREVIOUS and payload["i"] == 1
    # damage both: truncated and not a checkpoint at all
    (tmp_path / PREVIOUS).write_bytes((tmp_path / PREVIOUS).read_bytes()[:50])
    (tmp_path / CHECKPOINT).write_bytes(b"hello, world\n" * 10)
    with pytest.raises(CheckpointError, match="corrupt|not a lagprop checkpoint"):
        read_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match="does not exist"):
        read_checkpoint(tmp_path / "nope")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError, match="holds no checkpoint"):
        read_checkpoint(empty)


def _trainer(hidden: int, split_seed: int = 0, **kw) -> Trainer:
    data = load_dataset("xor", seed=split_seed)
    net = Network(Graph.mlp([2, hidden, 2]), generator=torch.Generator().manual_seed(0))
    return Trainer(net, data, TrainConfig(epochs=1, batch_size=64, **kw))


def test_mismatched_checkpoints_are_refused(tmp_path):
    src = _trainer(8)
    src.fit()
    RunDir(tmp_path).save_checkpoint(make_payload(src))
    with pytest.raises(CheckpointError, match="another graph"):
        load_into(_trainer(5), tmp_path)
    with pytest.raises(CheckpointError, match="training data differ"):
        load_into(_trainer(8, split_seed=1), tmp_path)
    other = _trainer(8, state="stored")  # same graph and data, but a stored x the checkpoint lacks
    with pytest.raises(CheckpointError):
        load_into(other, tmp_path)
    same = _trainer(8)
    load_into(same, tmp_path)
    assert same.epoch == 1 and all(torch.equal(p, q) for p, q in zip(same.net.parameters(), src.net.parameters()))


# ---------------------------------------------------------------- divergence and Ctrl-C
def test_divergence_stops_with_clear_message_and_keeps_last_good_checkpoint(tmp_path, capsys):
    run = tmp_path / "d"
    rc = main(SMALL + ["--epochs", "30", "--method", "bdmm", "--mu-x", "50", "--batch-size", "0", "--state", "stored",
                       "--lambda-init", "stored", "--out", str(run)])
    err = capsys.readouterr().err
    assert rc == 3
    assert "diverged" in err and "likely cause" in err and "--mu-x" in err and err.count("\n") == 1
    payload, used = read_checkpoint(run)
    rows = metrics(run)
    assert payload["trainer"]["epoch"] == len(rows) - 1  # the diverged epoch is recorded, not saved
    assert all(torch.isfinite(w).all() for w in payload["trainer"]["weights"].values())


def test_lr_divergence_names_lr(tmp_path, capsys):
    assert main(SMALL + ["--epochs", "30", "--lr", "1e6", "--out", str(tmp_path / "d")]) == 3
    assert "--lr" in capsys.readouterr().err
    assert read_checkpoint(tmp_path / "d")[0]["trainer"]["epoch"] >= 0


def test_ctrl_c_saves_and_resumes(tmp_path):
    run = tmp_path / "c"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "lagprop", *SMALL, "--dataset", "moons", "--epochs", "100000",
                             "--out", str(run)], stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.time() + 120
        while not (run / "metrics.csv").exists():
            assert proc.poll() is None and time.time() < deadline
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "--resume" in err and "Traceback" not in err
    payload, _ = read_checkpoint(run)
    k = payload["trainer"]["epoch"]
    assert k >= 1 and len(metrics(run)) == k
    assert main(["train", "--resume", str(run), "--epochs", str(k + 1), "--quiet"]) == 0
    assert len(metrics(run)) == k + 1


# ---------------------------------------------------------------- configuration file
def test_toml_config_and_command_line_override(tmp_path, capsys):
    cfg = tmp_path / "run.toml"
    cfg.write_text('dataset = "xor"\nhidden = [6, 3]\nepochs = 3\nlr = 0.01\nmu_x = 0.25\nquiet = true\n'
                   'device = "cpu"\n')
    run = tmp_path / "t"
    assert main(["train", "--config", str(cfg), "--epochs", "1", "--out", str(run)]) == 0
    saved = json.loads((run / "config.json").read_text())
    assert saved["args"]["hidden"] == [6, 3] and saved["args"]["lr"] == 0.01 and saved["train"]["mu_x"] == 0.25
    assert saved["train"]["epochs"] == 1  # the command line wins
    assert len(metrics(run)) == 1
    bad = tmp_path / "bad.toml"
    bad.write_text("learning_rate = 3\n")
    assert main(["train", "--config", str(bad), "--out", str(tmp_path / "u")]) == 2
    assert "unknown key 'learning_rate'" in capsys.readouterr().err
    bad.write_text("lr = [\n")
    assert main(["train", "--config", str(bad), "--out", str(tmp_path / "u")]) == 2
    assert "not valid TOML" in capsys.readouterr().err
    assert not (tmp_path / "u").exists()


# ---------------------------------------------------------------- metrics
def test_epoch_metrics_match_direct_computation():
    """grad_x and the lambda statistics against the explicit formulas (Eq. 4) and the stored state."""
    data = load_dataset("xor")
    net = Network(Graph.mlp([2, 7, 2]), generator=torch.Generator().manual_seed(3))
    t = Trainer(net, data, TrainConfig(batch_size=0, relax_steps=1, lambda_init="stored", rho=0.5))
    t.fit(1)  # so that the stored lambda is not zero
    with torch.no_grad():  # the state the next (full-batch) relaxation step starts from
        xs = forward_state(net, net.split_inputs(t.X))
        lams = [None] + [lam.clone() for lam in t.state.lam[1:]]
        dx = x_grads(net, xs, evaluate(net, xs, lams, 0.5), t.Y, "ce")
    want_grad = sum(float(d.abs().sum()) for d in dx[1:]) / (len(t.X) * sum(net.sizes[1:]))
    m = t.train_epoch()
    assert m["grad_x"] == pytest.approx(want_grad, rel=1e-4)
    for g in range(1, len(net.groups)):
        lam = t.state.lam[g].abs()
        assert m[f"lambda_mean_abs_{g}"] == pytest.approx(float(lam.mean()), rel=1e-5)
        assert m[f"lambda_max_abs_{g}"] == pytest.approx(float(lam.max()), rel=1e-6)


def test_tensorboard_when_installed(tmp_path, monkeypatch):
    calls = []

    class FakeWriter:
        def __init__(self, log_dir):
            calls.append(("dir", log_dir))

        def add_scalar(self, k, v, step):
            calls.append((k, v, step))

        def flush(self):
            pass

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=FakeWriter))
    RunDir(tmp_path).write_tensorboard({"epoch": 3, "test_accuracy": 0.5})
    assert calls == [("dir", str(tmp_path / "tensorboard")), ("test_accuracy", 0.5, 3)]


def test_no_tensorboard_is_silent(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    RunDir(tmp_path).write_tensorboard({"epoch": 1, "test_accuracy": 0.5})
    assert not (tmp_path / "tensorboard").exists()


def test_checkpoint_every(tmp_path):
    run = tmp_path / "e"
    assert main(SMALL + ["--epochs", "3", "--checkpoint-every", "2", "--out", str(run)]) == 0
    assert read_checkpoint(run)[0]["trainer"]["epoch"] == 3  # the end is always saved
    assert read_checkpoint(run / PREVIOUS)[0]["trainer"]["epoch"] == 2
    none = tmp_path / "n"
    assert main(SMALL + ["--epochs", "1", "--checkpoint-every", "0", "--out", str(none)]) == 0
    assert not (none / CHECKPOINT).exists() and np.isfinite(float(metrics(none)[0]["train_loss"]))


def test_crash_between_the_renames_falls_back_to_previous(tmp_path, monkeypatch):
    """The one moment with no checkpoint.pt (after it became .prev): the reader uses .prev."""
    write_checkpoint(tmp_path, {"format": 1, "i": 1})
    real = os.replace
    calls = []

    def crash_on_second(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise KeyboardInterrupt  # stands in for the process dying here
        real(src, dst)

    monkeypatch.setattr(os, "replace", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        write_checkpoint(tmp_path, {"format": 1, "i": 2})
    monkeypatch.setattr(os, "replace", real)
    assert not (tmp_path / CHECKPOINT).exists()
    payload, used = read_checkpoint(tmp_path)
    assert used.name == PREVIOUS and payload["i"] == 1
    assert not list(tmp_path.glob("*.tmp"))  # the half-done temporary file is cleaned up


def test_overwrite_replaces_the_old_runs_files_only(tmp_path):
    run = tmp_path / "o"
    assert main(SMALL + ["--epochs", "2", "--out", str(run)]) == 0
    (run / "notes.txt").write_text("mine")
    assert main(SMALL + ["--epochs", "1", "--checkpoint-every", "0", "--out", str(run), "--overwrite"]) == 0
    assert not (run / CHECKPOINT).exists() and not (run / PREVIOUS).exists()  # none of the old run's
    assert len(metrics(run)) == 1 and (run / "notes.txt").read_text() == "mine"
