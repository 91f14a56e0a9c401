"""Data-parallel training on ``torch.distributed`` (gloo on CPU, NCCL on GPU).

Why it splits so well.  The state of the Lagrangian methods (x and lambda of every example
and neuron) is private to its example: the relaxation of one example reads only its own
state and the weights.  Only the weight gradient (Eq. 3) is a sum over examples.  So each
process (*rank*) owns a contiguous block of the training examples and keeps their state,
and the ranks exchange only the weight gradient, one all-reduce per weight step.

Exactness.  Every rank walks the *same* global batch order (the shuffle generator is seeded
alike everywhere) and takes, from each global batch, the examples it owns.  The local
gradient is divided by the local batch size (train.py's convention), so the all-reduce sums
``grad * local / global`` to give exactly the single-process gradient of the global batch
(to rounding); the optimizer then steps identically on every rank.  Hence N ranks give the
weights of 1 rank, for the Lagrangian methods and for backprop alike.

Faults.  Every collective runs under the process group's timeout (``LAGPROP_DIST_TIMEOUT``
seconds, default 600); a rank that dies closes its connections, so the others fail at their
next collective, and a rank that stalls makes them fail at the timeout.  Either way they
raise :class:`DistributedError` (exit code 4) instead of hanging; torchrun also tears the
group down when one worker exits non-zero.

Checkpoints.  :meth:`DistributedTrainer.state_dict` gathers the example state of all ranks
in global example order (a collective: every rank must call it; every rank gets the whole
dict, and only rank 0 should write it), and :meth:`DistributedTrainer.load_state_dict` takes
the rows this rank owns, so a checkpoint written by N ranks resumes on M ranks.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from .data import Dataset
from .errors import ConfigError, LagpropError
from .network import Network
from .train import METHODS, TrainConfig, Trainer

DEFAULT_TIMEOUT_S = 600.0


class DistributedError(LagpropError):
    """Another process of a data-parallel run died or stopped answering."""

    exit_code = 4


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in a data-parallel run."""

    rank: int
    world_size: int
    local_rank: int
    backend: str
    device: str
    timeout_s: float

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    """True when torchrun (or a user imitating it) set RANK and WORLD_SIZE."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def world_size() -> int:
    """The number of processes torchrun started (1 outside torchrun)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1")) if launched_by_torchrun() else 1
    except ValueError:
        return 1


def init_from_env(device: str) -> DistContext | None:
    """Join the process group that torchrun's environment describes; None when not launched so.

    ``device`` is the resolved ``--device`` (cpu / cuda): on a GPU each rank takes the GPU
    of its LOCAL_RANK and talks NCCL; on CPU, gloo.  The process group's timeout bounds every
    collective, so a dead or stalled peer never makes the others hang.
    """
    if not launched_by_torchrun():
        return None
    try:
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        timeout = float(os.environ.get("LAGPROP_DIST_TIMEOUT", DEFAULT_TIMEOUT_S))
    except ValueError as e:
        raise ConfigError(f"bad torchrun environment ({e}); RANK, WORLD_SIZE, LOCAL_RANK and "
                          "LAGPROP_DIST_TIMEOUT must be numbers") from None
    if not (0 <= rank < world) or timeout <= 0:
        raise ConfigError(f"bad torchrun environment: RANK={rank}, WORLD_SIZE={world}, timeout {timeout}s")
    if device.startswith("cuda"):
        if local_rank >= torch.cuda.device_count():
            raise ConfigError(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} GPUs on this "
                              "machine; start at most one process per GPU (--nproc-per-node)")
        device, backend = f"cuda:{local_rank}", "nccl"
        torch.cuda.set_device(local_rank)
    else:
        backend = "gloo"
    if not dist.is_initialized():
        try:
            dist.init_process_group(backend, rank=rank, world_size=world, timeout=timedelta(seconds=timeout))
        except (RuntimeError, ValueError) as e:
            raise DistributedError(f"could not join the process group as rank {rank} of {world}: "
                                   f"{_first_line(e)}; check MASTER_ADDR/MASTER_PORT and that every "
                                   "node started torchrun") from None
    return DistContext(rank, world, local_rank, backend, device, timeout)


def shutdown(ctx: DistContext | None) -> None:
    """Leave the process group (a no-op outside a data-parallel run)."""
    if ctx is not None and dist.is_initialized():
        dist.destroy_process_group()


def shard_range(n: int, rank: int, world: int) -> tuple[int, int]:
    """The contiguous block [start, end) of ``n`` examples that ``rank`` owns."""
    return n * rank // world, n * (rank + 1) // world


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:300] if text else type(e).__name__


class NullRunDir:
    """What ranks other than 0 write to: nothing (only rank 0 writes the run's folder)."""

    def __init__(self, path: Any = None) -> None:
        self.path = path

    def __getattr__(self, name: str):
        if name.startswith("write_") or name.startswith("save_"):
            return lambda *a, **k: None
        raise AttributeError(name)


class DistributedTrainer(Trainer):
    """A :class:`~lagprop.train.Trainer` for one rank of a data-parallel run.

    ``data`` is the whole data set (every rank loads it); the trainer keeps only this rank's
    block of training and test examples, and its example state covers only its own block.
    Everything a caller sees (metrics, summary, state_dict) is global and the same on every rank.
    """

    def __init__(self, net: Network, data: Dataset, cfg: TrainConfig, ctx: DistContext) -> None:
        if cfg.method not in METHODS:
            raise ConfigError(f"data-parallel training supports --method {', '.join(METHODS)}, not "
                              f"{cfg.method!r} (its weight updates are not one sum over the batch)")
        self.ctx = ctx
        self.n_global = len(data.X_train)
        if min(self.n_global, len(data.X_test)) < ctx.world_size:
            raise ConfigError(f"{self.n_global} training and {len(data.X_test)} test examples cannot be shared "
                              f"by {ctx.world_size} processes; start fewer processes")
        self.start, self.end = shard_range(self.n_global, ctx.rank, ctx.world_size)
        ts, te = shard_range(len(data.X_test), ctx.rank, ctx.world_size)
        local = dataclasses.replace(data, X_train=data.X_train[self.start:self.end],
                                    y_train=data.y_train[self.start:self.end],
                                    X_test=data.X_test[ts:te], y_test=data.y_test[ts:te])
        super().__init__(net, local, cfg)
        self.data = data  # the name and sizes of the whole set, for summaries
        self._counts: Iterator[tuple[int, int]] = iter(())
        self._local, self._global = 0, 0
        self._inner_step = self._step
        self._step = self._shard_step
        self.before_weight_step.insert(0, _allreduce_grads)
        self._broadcast_weights()

    # ------------------------------------------------------------ collectives
    def _collective(self, what: str, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (RuntimeError, dist.DistError) as e:
            raise DistributedError(
                f"rank {self.ctx.rank} of {self.ctx.world_size} lost contact with the others during {what} "
                f"({_first_line(e)}); another process died or stalled beyond the {self.ctx.timeout_s:g}s "
                "timeout (LAGPROP_DIST_TIMEOUT); see that process's output") from None

    def _broadcast_weights(self) -> None:
        """Start every rank from rank 0's weights (they agree anyway when seeded alike)."""
        with torch.no_grad():
            for p in self.net.parameters():
                self._collective("the initial broadcast of the weights", dist.broadcast, p.data, 0)

    # ------------------------------------------------------------ batches
    def batches(self) -> list[Tensor | None]:
        """This rank's share of every global batch, in the global batch order.

        The permutation is drawn exactly as the single-process trainer draws it (same
        generator, same size), so every rank sees the same global batches.
        """
        bs = self.cfg.batch_size
        if bs == 0:
            self._counts = iter([(self.n, self.n_global)])
            return [None]
        perm = torch.randperm(self.n_global, generator=self.shuffle_gen)
        mine, counts = [], []
        for gb in perm.split(bs):
            own = gb[(gb >= self.start) & (gb < self.end)] - self.start
            mine.append(own)
            counts.append((len(own), len(gb)))
        self._counts = iter(counts)
        flat = torch.cat(mine).to(self.device)  # one host-to-device copy per epoch
        return list(flat.split([c for c, _ in counts]))

    def _shard_step(self, idx: Tensor | None) -> None:
        self._local, self._global = next(self._counts)
        if self._local == 0:  # none of this global batch is ours: contribute zero, still step
            for p in self.net.parameters():
                p.grad = torch.zeros_like(p)
            self.weight_step()
        else:
            self._inner_step(idx)

    # ------------------------------------------------------------ metrics
    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """The single-process metrics on every rank.

        The epoch's accumulators (sums, and maxima for ``*_max_*`` keys) are all-reduced
        before the base class turns them into metrics; ``train_*`` and ``test_*`` metrics,
        means over each rank's block, are weighted by the block sizes and all-reduced.
        """
        local_acc = self._acc
        keys = sorted(local_acc)
        if keys:
            vals = torch.stack([torch.as_tensor(local_acc[k], device=self.device).double().reshape(())
                                for k in keys])
            is_max = torch.tensor(["_max_" in k for k in keys], device=self.device)
            top = vals.clone()
            self._collective("the evaluation", dist.all_reduce, vals)
            self._collective("the evaluation", dist.all_reduce, top, op=dist.ReduceOp.MAX)
            self._acc = dict(zip(keys, torch.where(is_max, top, vals).tolist()))
        try:
            m = super().evaluate()
        finally:
            self._acc = local_acc
        split_keys = [k for k in sorted(m) if k.startswith(("train_", "test_"))]
        weights = [len(self.X) if k.startswith("train_") else len(self.Xt) for k in split_keys]
        vec = torch.tensor([m[k] * w for k, w in zip(split_keys, weights)] + [len(self.X), len(self.Xt)],
                           dtype=torch.float64, device=self.device)
        self._collective("the evaluation", dist.all_reduce, vec)
        v = vec.tolist()
        n_train, n_test = v[-2], v[-1]
        for k, total in zip(split_keys, v):
            m[k] = total / (n_train if k.startswith("train_") else n_test)
        return m

    def summary(self) -> dict[str, Any]:
        out = super().summary()
        if self.state is not None:
            per_example = sum(t.shape[1] for t in self.state.x + self.state.lam if t is not None)
            out["state_numbers"] = per_example * self.n_global
        out["processes"] = self.ctx.world_size
        return out

    # ------------------------------------------------------------ checkpoints
    def _gather_rows(self, t: Tensor) -> Tensor:
        """Rows of every rank's block, concatenated in global example order."""
        rows = [shard_range(self.n_global, r, self.ctx.world_size) for r in range(self.ctx.world_size)]
        most = max(e - s for s, e in rows)
        was_bool = t.dtype == torch.bool
        src = t.to(torch.uint8) if was_bool else t
        padded = src.new_zeros((most, *src.shape[1:]))
        padded[: len(src)] = src
        parts = [torch.empty_like(padded) for _ in rows]
        self._collective("gathering the example state", dist.all_gather, parts, padded.contiguous())
        full = torch.cat([p[: e - s] for p, (s, e) in zip(parts, rows)])
        return full.bool() if was_bool else full

    def state_dict(self) -> dict[str, Any]:
        """The single-process checkpoint: the example state of all ranks in global order.

        A collective: every rank must call it (all get the same dict; rank 0 writes it).
        """
        d = super().state_dict()
        if self.state is not None:
            es = self.state.state_dict()
            d["example_state"] = {
                "x": [None if t is None else self._gather_rows(t) for t in es["x"]],
                "lam": [None if t is None else self._gather_rows(t) for t in es["lam"]],
                "visited": self._gather_rows(es["visited"]),
            }
        d["processes"] = self.ctx.world_size
        return d

    def load_state_dict(self, d: dict[str, Any]) -> None:
        """Resume from a checkpoint written by any number of ranks: keep this rank's rows."""
        es = d.get("example_state")
        if self.state is not None and es is not None:
            if len(es["visited"]) != self.n_global:
                raise ConfigError(f"the checkpoint holds the state of {len(es['visited'])} examples but "
                                  f"the data set has {self.n_global}; resume with the same data")
            cut = slice(self.start, self.end)
            d = dict(d, example_state={
                "x": [None if t is None else t[cut] for t in es["x"]],
                "lam": [None if t is None else t[cut] for t in es["lam"]],
                "visited": es["visited"][cut]})
        super().load_state_dict(d)


def _allreduce_grads(trainer: Trainer) -> None:
    """Hook before every weight step: the gradient of the global batch, on every rank.

    Each rank's ``.grad`` is its sum divided by its local batch size; scaled by
    local / global and summed over the ranks, it is the global sum divided by the global
    batch size, exactly what one process computes.  One flat all-reduce per step.
    """
    assert isinstance(trainer, DistributedTrainer)
    params = list(trainer.net.parameters())
    grads = [torch.zeros_like(p) if p.grad is None else p.grad for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    flat.mul_(trainer._local / trainer._global)
    trainer._collective("the all-reduce of the weight gradients", dist.all_reduce, flat)
    offset = 0
    for p in params:
        k = p.numel()
        p.grad = flat[offset: offset + k].view_as(p)
        offset += k
