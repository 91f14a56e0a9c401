"""Data-parallel training (lagprop.distributed) against the single-process oracle.

Two ranks talk gloo over loopback.  The oracle is the plain single-process Trainer on the
whole training set with the same seed: the ranks must end with its weights (float64,
tolerance 1e-5) for the Lagrangian method and for backprop, full batch and mini-batch,
including batches of which one rank owns nothing.  A checkpoint written by 2 ranks resumes
on 1 and vice versa.  A killed or stalled rank makes the survivor exit with an error
within a bound instead of hanging.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from lagprop.data import load_dataset
from lagprop.graph import Graph
from lagprop.network import Network
from lagprop.train import TrainConfig, Trainer

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch without distributed")

WORLD = 2
JOBS = {  # name -> TrainConfig keyword arguments
    "mdmm_full": dict(method="mdmm", batch_size=0, epochs=6, state="stored", lr=3e-3),
    "mdmm_mini": dict(method="mdmm", batch_size=100, epochs=2),
    # batches of 3 on 'xor': often one rank owns none of a batch and contributes zero
    "mdmm_tiny_batches": dict(method="mdmm", batch_size=3, epochs=1, state="stored", lr=1e-2),
    "backprop_full": dict(method="backprop", batch_size=0, epochs=6, lr=3e-3),
    "backprop_mini": dict(method="backprop", batch_size=100, epochs=2),
}
RESUME = dict(method="mdmm", batch_size=128, epochs=4, state="stored")  # x and lambda both stored


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _trainer(kwargs: dict, ctx=None) -> Trainer:
    from lagprop.distributed import DistributedTrainer
    data = load_dataset("xor" if kwargs["batch_size"] == 3 else "digits")
    cfg = TrainConfig(seed=0, **kwargs)
    net = Network(Graph.mlp([data.n_inputs, 16, data.n_outputs]), dtype=torch.float64,
                  generator=torch.Generator().manual_seed(cfg.seed))
    return Trainer(net, data, cfg) if ctx is None else DistributedTrainer(net, data, cfg, ctx)


def _env(rank: int, world: int, port: int) -> dict[str, str]:
    return {"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank),
            "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
            "GLOO_SOCKET_IFNAME": os.environ.get("GLOO_SOCKET_IFNAME", "lo")}


def _worker(rank: int, world: int, port: int, tmp: str) -> None:
    """One rank: every job of JOBS, then the two resumptions; rank 0 saves the results."""
    from lagprop.checkpoint import load_into, make_payload, write_checkpoint
    from lagprop.distributed import init_from_env, shutdown
    torch.set_num_threads(1)
    os.environ.update(_env(rank, world, port))
    ctx = init_from_env("cpu")
    try:
        for name, kwargs in JOBS.items():
            t = _trainer(kwargs, ctx)
            t.fit()
            if ctx.is_main:
                torch.save({"weights": t.net.state_dict(), "history": t.history}, Path(tmp, f"{name}.pt"))
        # 2 ranks write a checkpoint after 2 epochs (the test resumes it on 1 rank)
        t = _trainer(RESUME, ctx)
        t.fit(2)
        payload = make_payload(t)  # a collective: every rank gathers, rank 0 writes
        if ctx.is_main:
            write_checkpoint(Path(tmp, "ck_2ranks"), payload)
        # 2 ranks resume the 1-rank checkpoint the test wrote, and finish
        t = _trainer(RESUME, ctx)
        load_into(t, Path(tmp, "ck_1rank"))
        t.fit()
        if ctx.is_main:
            torch.save({"weights": t.net.state_dict(), "history": t.history}, Path(tmp, "resumed_on_2.pt"))
    finally:
        shutdown(ctx)


@pytest.fixture(scope="module")
def ranks_output(tmp_path_factory) -> Path:
    """Run the 2-rank workers once for the module (spawned processes, gloo on loopback)."""
    from lagprop.checkpoint import make_payload, write_checkpoint
    tmp = tmp_path_factory.mktemp("dist")
    t = _trainer(RESUME)
    t.fit(2)
    write_checkpoint(tmp / "ck_1rank", make_payload(t))
    procs = mp.start_processes(_worker, args=(WORLD, _free_port(), str(tmp)), nprocs=WORLD,
                               join=False, start_method="spawn")
    deadline = time.monotonic() + 300
    while not procs.join(timeout=5):
        if time.monotonic() > deadline:
            for p in procs.processes:
                p.kill()
            pytest.fail("the 2-rank workers did not finish within 300 s")
    return tmp


def _assert_same_weights(ref: dict, got: dict, tol: float = 1e-5) -> None:
    assert ref.keys() == got.keys()
    for k in ref:
        diff = (ref[k] - got[k]).abs().max().item()
        assert diff <= tol, f"{k}: 2 ranks differ from 1 rank by {diff:.3g}"


@pytest.mark.parametrize("name", sorted(JOBS))
def test_two_ranks_equal_one(ranks_output: Path, name: str) -> None:
    ref = _trainer(JOBS[name])
    ref.fit()
    got = torch.load(ranks_output / f"{name}.pt", weights_only=True)
    _assert_same_weights(ref.net.state_dict(), got["weights"])
    # the weights moved (so agreement is not the trivial one of two untrained nets)
    init = _trainer(JOBS[name]).net.state_dict()
    assert max((init[k] - got["weights"][k]).abs().max().item() for k in init) > 1e-3
    # reduced metrics equal the single-process ones
    for m_ref, m_got in zip(ref.history, got["history"]):
        for key in ("train_loss", "test_accuracy", "constraint_violation"):
            assert m_got[key] == pytest.approx(m_ref[key], rel=1e-6, abs=1e-9), key


@pytest.fixture(scope="module")
def straight() -> Trainer:
    """The oracle of the resumptions: one process, all epochs in one go."""
    t = _trainer(RESUME)
    t.fit()
    return t


def test_checkpoint_of_two_ranks_resumes_on_one(ranks_output: Path, straight: Trainer) -> None:
    from lagprop.checkpoint import load_into
    t = _trainer(RESUME)
    load_into(t, ranks_output / "ck_2ranks")
    assert t.epoch == 2 and bool(t.state.visited.all())
    t.fit()
    _assert_same_weights(straight.net.state_dict(), t.net.state_dict())
    # the stored x and lambda came back in global example order
    for a, b in zip(straight.state.x + straight.state.lam, t.state.x + t.state.lam):
        if a is not None:
            assert (a - b).abs().max().item() <= 1e-5


def test_checkpoint_of_one_rank_resumes_on_two(ranks_output: Path, straight: Trainer) -> None:
    got = torch.load(ranks_output / "resumed_on_2.pt", weights_only=True)
    assert [m["epoch"] for m in got["history"]] == [1, 2, 3, 4]
    _assert_same_weights(straight.net.state_dict(), got["weights"])


# ---------------------------------------------------------------------------- faults
def _launch_cli(tmp: Path, extra_env: dict[str, str] | None = None) -> list[subprocess.Popen]:
    port = _free_port()
    procs = []
    for rank in range(WORLD):
        env = dict(os.environ, OMP_NUM_THREADS="1", **_env(rank, WORLD, port), **(extra_env or {}))
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "lagprop", "train", "--dataset", "digits", "--hidden", "16",
             "--epochs", "100000", "--batch-size", "0", "--device", "cpu", "--out", str(tmp / "run")],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    return procs


def _wait_for_first_epoch(procs: list[subprocess.Popen], tmp: Path) -> None:
    deadline = time.monotonic() + 120
    while not (tmp / "run" / "metrics.csv").exists():
        for p in procs:
            if p.poll() is not None:
                out, err = p.communicate()
                pytest.fail(f"a rank exited early with {p.returncode}: {err[-800:]}")
        if time.monotonic() > deadline:
            for p in procs:
                p.kill()
            pytest.fail("no epoch finished within 120 s")
        time.sleep(0.2)


@pytest.mark.parametrize("fault", ["killed", "stalled"])
def test_a_lost_rank_stops_the_others(tmp_path: Path, fault: str) -> None:
    """Rank 1 is SIGKILLed (its sockets close) or SIGSTOPped (silent: the timeout must fire)."""
    timeout_s = 5
    procs = _launch_cli(tmp_path, {"LAGPROP_DIST_TIMEOUT": str(timeout_s)})
    survivor, victim = procs
    try:
        _wait_for_first_epoch(procs, tmp_path)
        victim.send_signal(signal.SIGKILL if fault == "killed" else signal.SIGSTOP)
        try:
            _, err = survivor.communicate(timeout=timeout_s + 60)
        except subprocess.TimeoutExpired:
            pytest.fail(f"rank 0 still running {timeout_s + 60} s after rank 1 was {fault}: it hangs")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.communicate()
    assert survivor.returncode == 4, err[-800:]
    assert "lost contact" in err and "Traceback" not in err, err[-800:]
