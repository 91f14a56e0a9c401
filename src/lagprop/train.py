"""Training: the Lagrangian methods and backpropagation behind one loop.

A :class:`Trainer` walks the training set in mini-batches (``batch_size=0``: the whole set
in a fixed order, Algorithm 1 proper).  For the Lagrangian methods each batch is::

    x      <- stored x (state='stored') or the forward pass (state='predicted')
    lambda <- stored lambda (lambda_init='stored') or 0
    K times: relaxation step (x descent, lambda ascent; dynamics.relax_step)
    one weight step with dL/dw at the relaxed state (any torch.optim optimizer)
    store x and lambda back

so full batch, stored state and K = 1 is exactly Algorithm 1.  ``backprop`` takes one
optimizer step per batch on the same network, loss, initial weights, data order and
optimizer.  The same seed gives the same numbers.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .data import Dataset
from .dynamics import Dynamics, first_step_from_forward, forward_state, relax_step, weight_grads, zero_state
from .errors import ConfigError, DivergenceError
from .lagrangian import evaluate, loss_value
from .network import Network
from .state import ExampleState, L1Weights

LAGRANGIAN_METHODS = ("mdmm", "bdmm")
# backprop-unrolled: backprop through the unrolled fixed-point iteration, the baseline for
# cyclic graphs (plain backprop needs a feed-forward pass and refuses a cycle)
METHODS = ("mdmm", "bdmm", "backprop", "backprop-unrolled")


@dataclass
class TrainConfig:
    """Everything that defines a training run (saved with every run)."""

    method: str = "mdmm"
    epochs: int = 30
    batch_size: int = 64          # 0: the whole training set (Algorithm 1 proper)
    optimizer: str = "adam"       # any torch.optim class name, case-insensitive
    lr: float = 1e-3
    weight_decay: float = 0.0
    mu_x: float = 0.5
    mu_lambda: float = 0.5
    rho: float = 1.0              # MDMM's augmented term; bdmm forces 0
    relax_steps: int = 0          # K relaxation steps per weight step; 0 = auto (the depth)
    state: str = "predicted"      # 'predicted' (x by a forward pass) or 'stored'
    lambda_init: str = "zero"     # 'zero' (predicted as 0 each visit) or 'stored'
    x_init: str = "forward"       # first visit of a stored x: 'forward' or 'zero'
    weight_timing: str = "wave"   # 'wave': each layer's dL/dw when the error reaches it; 'end'
    loss: str = "ce"
    l1: float = 0.0
    l1_mode: str = "prox"
    schedule: str = "sweep"       # local method: weights per 'sweep' (Algorithm 1) or per 'example' (Alg. 2)
    seed: int = 0
    tol_violation: float = 0.0    # stop when mean G^2 falls below (0: off)
    tol_grad: float = 0.0         # ... and mean |dL/dx| below (0: off)
    max_violation: float = 1e6    # mean G^2 above this counts as divergence
    device: str = "cpu"
    extra: dict = field(default_factory=dict)

    def validate(self) -> None:
        if self.method not in METHODS + tuple(_EXTRA_METHODS):
            raise ConfigError(f"unknown method {self.method!r}; choose one of "
                              f"{', '.join(METHODS + tuple(_EXTRA_METHODS))}")
        if self.epochs < 0:
            raise ConfigError(f"--epochs must be >= 0, got {self.epochs}")
        if self.batch_size < 0:
            raise ConfigError(f"--batch-size must be >= 0 (0 = the whole training set), got {self.batch_size}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"--lr must be a positive number, got {self.lr}")
        if self.relax_steps < 0:
            raise ConfigError(f"--relax-steps must be >= 1, or 0 for the depth of the graph, got {self.relax_steps}")
        if self.state not in ("predicted", "stored"):
            raise ConfigError("--state must be 'predicted' or 'stored'")
        if self.lambda_init not in ("stored", "zero"):
            raise ConfigError("--lambda-init must be 'stored' or 'zero'")
        if self.weight_timing not in ("wave", "end"):
            raise ConfigError("--weight-timing must be 'wave' or 'end'")
        if self.x_init not in ("forward", "zero"):
            raise ConfigError("--x-init must be 'forward' or 'zero'")
        if self.schedule not in ("sweep", "example"):
            raise ConfigError(f"--schedule must be 'sweep' or 'example', got {self.schedule!r}")
        if self.l1 < 0 or not math.isfinite(self.l1):
            raise ConfigError(f"--l1 must be >= 0, got {self.l1}")
        if not (self.weight_decay >= 0 and math.isfinite(self.weight_decay)):
            raise ConfigError(f"--weight-decay must be >= 0, got {self.weight_decay}")
        if not (self.rho >= 0 and math.isfinite(self.rho)):
            raise ConfigError(f"--rho must be a number >= 0 (0 is plain BDMM), got {self.rho}")
        self.dynamics()

    def dynamics(self) -> Dynamics:
        rho = 0.0 if self.method == "bdmm" else self.rho
        return Dynamics(self.mu_x, self.mu_lambda, rho, self.loss, self.l1_mode)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# Methods registered by other modules (e.g. the local engine): name -> step factory.
_EXTRA_METHODS: dict[str, Callable[[Trainer], Callable[[Tensor | None], None]]] = {}


def register_method(name: str, factory: Callable[[Trainer], Callable[[Tensor | None], None]]) -> None:
    """Make ``factory(trainer)`` -> ``step(idx)`` available as ``TrainConfig.method = name``."""
    _EXTRA_METHODS[name] = factory


def make_optimizer(cfg: TrainConfig, params) -> torch.optim.Optimizer:
    names = {n.lower(): n for n in dir(torch.optim)
             if isinstance(getattr(torch.optim, n), type)
             and issubclass(getattr(torch.optim, n), torch.optim.Optimizer)}
    cls_name = names.get(cfg.optimizer.lower())
    if cls_name is None:
        raise ConfigError(f"unknown optimizer {cfg.optimizer!r}; choose a torch.optim class "
                          f"such as adam, sgd, adamw, rmsprop")
    return getattr(torch.optim, cls_name)(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def targets(ds: Dataset, y: np.ndarray) -> np.ndarray:
    """One-hot targets for classification, the values (as columns) for regression."""
    if ds.n_classes is not None:
        out = np.zeros((len(y), ds.n_classes), np.float32)
        out[np.arange(len(y)), y] = 1
        return out
    return y.reshape(len(y), -1).astype(np.float32)


class Trainer:
    """Trains ``net`` on ``data`` as ``cfg`` says; see the module docstring."""

    def __init__(self, net: Network, data: Dataset, cfg: TrainConfig) -> None:
        cfg.validate()
        if net.num_arcs() == 0:
            raise ConfigError("the network has no arcs to learn")
        if data.n_inputs != len(net.graph.inputs) or data.n_outputs != len(net.graph.outputs):
            raise ConfigError(f"the data has {data.n_inputs} inputs and {data.n_outputs} outputs but "
                              f"the graph has {len(net.graph.inputs)} and {len(net.graph.outputs)}")
        # a cyclic graph has no forward pass: the predicted x, inference and the backprop
        # baseline go through the loss-free fixed-point iteration instead (lagprop.cyclic)
        self.cyclic = None
        if cfg.method == "backprop" and not net.acyclic:
            raise ConfigError("backprop needs a feed-forward pass and this graph has a cycle; use "
                              "--method mdmm, or --method backprop-unrolled (backprop through the "
                              "unrolled fixed-point iteration)")
        if not net.acyclic:
            from .cyclic import CyclicHooks
            self.cyclic = CyclicHooks(net, cfg.extra)
        self.cfg, self.net, self.data = cfg, net, data
        self.device = net.device
        dt = net.dtype
        self.X = torch.as_tensor(data.X_train, dtype=dt, device=self.device)
        self.Y = torch.as_tensor(targets(data, data.y_train), dtype=dt, device=self.device)
        self.Xt = torch.as_tensor(data.X_test, dtype=dt, device=self.device)
        self.Yt = torch.as_tensor(targets(data, data.y_test), dtype=dt, device=self.device)
        self.n = len(self.X)
        self._zero_output_loss = float(loss_value(cfg.loss, torch.zeros_like(self.Y[:1024]), self.Y[:1024]).mean())
        self.opt = make_optimizer(cfg, net.parameters())
        self.dyn = cfg.dynamics()
        # K = 0 means one step per layer of depth: with lambda predicted as 0, information
        # crosses one layer per relaxation step, so K >= depth reaches the first layer.
        # BDMM (rho = 0) needs two steps a layer: lambda must first take up G before the
        # child sum carries it down, and the weight gradient reads lambda, not lambda + rho G.
        self.relax_steps = cfg.relax_steps or max(1, net.depth) * (1 if self.dyn.rho > 0 else 2)
        out_groups = {g for g, grp in enumerate(net.groups) if grp.role == "output"}
        self._outputs_have_children = any(b.src in out_groups for b in net.blocks)
        # weight_timing 'wave': height -> groups whose weights learn after that relaxation
        # step; only defined from a forward pass with lambda = 0 and no l1 term on a DAG
        self._wave: dict[int, set[int]] | None = None
        self._layered_wave = False
        heights = net.heights()
        if (cfg.weight_timing == "wave" and cfg.state == "predicted" and cfg.lambda_init == "zero"
                and not cfg.l1 and heights is not None and self.dyn.rho > 0):
            self._wave = {}
            for g, h in enumerate(heights):
                if h is not None:
                    self._wave.setdefault(h, set()).add(g)
            # after step k + 1 the groups more than k arcs above the outputs (or reaching none)
            # have not moved yet: their G, lambda and m are exactly 0 (see lagrangian.evaluate)
            self._quiet = [frozenset(g for g in range(1, len(net.groups)) if heights[g] is None or heights[g] > k)
                           for k in range(self.relax_steps + 1)]
            # In a strictly layered net (every arc joins adjacent heights, as in an MLP) the
            # groups behind the wave no longer affect any weight gradient: their children are
            # done and their parents' updates come only from the front.  They are frozen, so
            # a step costs what one layer of backprop's backward pass costs.
            layered = all(b.src == 0 or heights[b.src] == heights[b.dst] + 1 for b in net.blocks)
            self._layered_wave = layered
            if layered:
                self._quiet = [frozenset(g for g in range(1, len(net.groups)) if heights[g] != k)
                               for k in range(self.relax_steps + 1)]
        self.epoch = 0
        self.seconds = 0.0
        self.history: list[dict[str, float]] = []
        self.shuffle_gen = torch.Generator().manual_seed(cfg.seed + 1)
        self.alpha = L1Weights(net, cfg.l1, self.n) if cfg.l1 else None
        self.state: ExampleState | None = None
        if cfg.method in LAGRANGIAN_METHODS or cfg.method in _EXTRA_METHODS:
            self.state = ExampleState(net, self.n, keep_x=cfg.state == "stored",
                                      keep_lambda=cfg.lambda_init == "stored")
        if cfg.method in _EXTRA_METHODS:
            self._step = _EXTRA_METHODS[cfg.method](self)
        elif cfg.method in ("backprop", "backprop-unrolled"):
            self._step = self._backprop_step
        else:
            self._step = self._lagrangian_step
        self._acc: dict[str, Tensor] = {}
        # called with the trainer after the weight gradients are written and before the
        # optimizer steps (e.g. to all-reduce gradients across processes)
        self.before_weight_step: list[Callable[[Trainer], None]] = []

    # ------------------------------------------------------------- the steps
    def batch(self, idx: Tensor | None) -> tuple[Tensor, Tensor]:
        return (self.X, self.Y) if idx is None else (self.X[idx], self.Y[idx])

    def _lagrangian_step(self, idx: Tensor | None) -> None:
        net, cfg, dyn, st = self.net, self.cfg, self.dyn, self.state
        x_in, y = self.batch(idx)
        x_in = net.split_inputs(x_in)
        with torch.no_grad():
            base = net.input_contribution(x_in)
            a = None
            if cfg.state == "stored":
                xs = [x_in] + st.get_x(idx)[1:]
                if st.any_fresh(idx):  # no device sync once every example was visited
                    fresh = ~st.visited if idx is None else ~st.visited[idx]
                    fwd = forward_state if self.cyclic is None else self.cyclic.initial_state
                    init = fwd(net, x_in, base) if cfg.x_init == "forward" else zero_state(net, x_in)
                    xs = [x_in] + [torch.where(fresh[:, None], i, s) for i, s in zip(init[1:], xs[1:])]
            elif self.cyclic is not None:
                xs = self.cyclic.initial_state(net, x_in, base)
            else:
                xs, a = forward_state(net, x_in, base, return_preactivations=True)
            if cfg.lambda_init == "stored":
                lams = st.get_lambda(idx)
            elif self._wave is not None and a is not None:
                lams = [None] * len(xs)  # None: known to be 0 (the wave path skips the additions)
            else:
                lams = [None] + [torch.zeros_like(t) for t in xs[1:]]
            alpha = self.alpha.for_batch(len(net.groups), idx) if self.alpha else None
            cache: dict = {}  # sigma, sigma' of pre-activations that do not change (first layer)
            steps = self.relax_steps
            prev = xs
            if a is not None and cfg.lambda_init == "zero" and alpha is None:
                # from the forward pass with lambda = 0 only the outputs move (exactly)
                xs = first_step_from_forward(net, xs, y, dyn)
                steps -= 1
                if not self._outputs_have_children:
                    for g in range(1, len(net.groups)):  # prime the cache: sigma(a) is the x of the forward pass
                        if net.groups[g].role != "output":
                            cache[g] = (a[g], prev[g], net.acts[g].derivative(a[g], prev[g]))
                else:
                    a = None
                if self._wave is not None:
                    return self._wave_step(xs, lams, y, a, base, cache, steps)
            for _ in range(steps):
                prev = xs
                xs, lams = relax_step(net, xs, lams, y, dyn, alpha, base, a, cache)
                a = None  # pre-activations from before the step serve only that step
            terms = weight_grads(net, xs, lams, dyn, base, cache)
            self._accumulate(terms.G, xs, y, lams, prev)
            st.put(idx, xs if cfg.state == "stored" else None,
                   lams if cfg.lambda_init == "stored" else None)
        self.weight_step()

    def _wave_step(self, xs, lams, y, a, base, cache, steps) -> None:
        """The relaxation after the first step, with each layer's weights learning as the
        error reaches it (``weight_timing='wave'``).

        From a forward-pass x with lambda = 0, the first step moves only the outputs; after
        step s the constraint of a group at height s - 1 above the outputs (arcs to the
        outputs) has just become violated, while nothing below it has moved yet.  Its
        incoming weights take Eq. 3 at that state: lambda + rho G of the group times the x
        of its parents, which are still the forward pass's.  Every weight thus learns from
        a state its own neuron could recognise locally (its residual just left 0), and the
        product has backprop's factorisation (a test checks the direction per layer).
        Groups the error has not reached after K steps learn from the final state.
        """
        net, dyn = self.net, self.dyn
        scale = 1.0 / xs[0].shape[0]
        done: set[int] = set()
        G_learned: list[Tensor | None] = [None] * len(net.groups)  # G where each group learned
        prev = xs
        for k in range(steps):  # step k + 2: its terms are those of the state after step k + 1
            prev = xs
            xs, lams, terms = relax_step(net, xs, lams, y, dyn, None, base, a, cache, return_terms=True,
                                         quiet=self._quiet[k])
            # strictly layered: the front's parents have not moved, so its pre-activation is
            # still the forward pass's (and sigma, sigma' come from the cache)
            a = a if self._layered_wave else None
            ready = self._wave.get(k, set()) - done
            if ready:
                net.weight_grads(prev, terms.m, scale, ready)
                done |= ready
                for g in ready:
                    G_learned[g] = terms.G[g]
        rest = set(range(1, len(net.groups))) - done
        reached = rest - self._quiet[steps]
        if reached:
            terms = evaluate(net, xs, lams, dyn.rho, base, a, cache=cache,
                             quiet=frozenset(range(1, len(net.groups))) - reached)
            net.weight_grads(xs, terms.m, scale, reached)
            for g in reached:
                G_learned[g] = terms.G[g]
        for g in rest - reached:  # the error never reached these: dL/dw = 0
            net.weight_grads(xs, [torch.zeros_like(t) for t in xs], scale, {g})
        self._accumulate(G_learned, xs, y, lams, prev)
        self.weight_step()

    def weight_step(self) -> None:
        """Run the hooks, then the optimizer, on the gradients already in ``.grad``."""
        for hook in self.before_weight_step:
            hook(self)
        self.opt.step()

    def _backprop_step(self, idx: Tensor | None) -> None:
        x_in, y = self.batch(idx)
        self.opt.zero_grad(set_to_none=True)
        out = self.net(x_in) if self.cyclic is None else self.cyclic.outputs(x_in)
        loss = loss_value(self.cfg.loss, out, y).mean()
        loss.backward()
        self.weight_step()

    def _accumulate(self, G: list, xs: list, y: Tensor, lams: list | None = None,
                    prev: list | None = None) -> None:
        """Sum the epoch's metrics on the device (no host sync in the hot loop).

        |dL/dx| is read off the last relaxation step, |x_new - x_old| / mu_x (Eq. 4; with
        the l1 prox it is the proximal-gradient residual, also 0 at the saddle point).
        lambda statistics are per group (layer) over the examples of the batch.
        """
        acc = self._acc
        g2 = sum(torch.vdot(G[g].flatten(), G[g].flatten()) for g in range(1, len(G)) if G[g] is not None)
        acc["g2"] = acc.get("g2", 0) + g2
        acc["count"] = acc.get("count", 0) + xs[0].shape[0] * sum(self.net.sizes[1:])
        # |dL/dx| and the lambda statistics are estimated on every 8th batch of the epoch:
        # they are reports, and computing them on every batch costs more than the step's
        # small products
        acc["batches"] = acc.get("batches", 0) + 1
        if (acc["batches"] - 1) % 8:
            return
        acc["dx_count"] = acc.get("dx_count", 0) + xs[0].shape[0] * sum(self.net.sizes[1:])
        if prev is not None:
            dx = sum((xs[g] - prev[g]).abs().sum() for g in range(1, len(xs))) / self.dyn.mu_x
            acc["dx"] = acc.get("dx", 0) + dx
        if lams is not None:
            for g in range(1, len(lams)):
                a = lams[g].abs() if lams[g] is not None else xs[g].new_zeros(xs[g].shape)
                acc[f"lam_sum_{g}"] = acc.get(f"lam_sum_{g}", 0) + a.sum()
                acc[f"lam_n_{g}"] = acc.get(f"lam_n_{g}", 0) + a.numel()
                top = a.max() if a.numel() else a.new_zeros(())
                acc[f"lam_max_{g}"] = torch.maximum(acc[f"lam_max_{g}"], top) if f"lam_max_{g}" in acc else top

    # ------------------------------------------------------------- the loop
    def batches(self) -> list[Tensor | None]:
        bs = self.cfg.batch_size
        if bs == 0:
            return [None]
        perm = torch.randperm(self.n, generator=self.shuffle_gen).to(self.device)
        return list(perm.split(bs))

    def train_epoch(self) -> dict[str, float]:
        self._acc = {}
        start = time.perf_counter()
        for k, idx in enumerate(self.batches()):
            self._step(idx)
            if k % 50 == 49:
                self._check_finite()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        self.seconds += time.perf_counter() - start
        self.epoch += 1
        metrics = self.evaluate()
        metrics["epoch"] = self.epoch
        metrics["seconds"] = self.seconds
        self.history.append(metrics)
        self._check_divergence(metrics)
        return metrics

    def fit(self, epochs: int | None = None,
            callback: Callable[[Trainer, dict[str, float]], None] | None = None) -> list[dict[str, float]]:
        """Train until ``epochs`` (total, counting earlier ones) or the tolerances are met."""
        target = self.cfg.epochs if epochs is None else epochs
        while self.epoch < target:
            m = self.train_epoch()
            if callback is not None:
                callback(self, m)
            if self.cfg.tol_violation > 0 and m["constraint_violation"] <= self.cfg.tol_violation and (
                    self.cfg.tol_grad <= 0 or m.get("grad_x", 0) <= self.cfg.tol_grad):
                break
        return self.history

    # ------------------------------------------------------------- metrics
    @torch.no_grad()
    def predict_outputs(self, X: Tensor) -> Tensor:
        out = []
        for chunk in X.split(8192):
            out.append(self.net(chunk) if self.cyclic is None else self.cyclic.predict(chunk))
        return torch.cat(out)

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        m: dict[str, float] = {}
        if self.cyclic is not None:
            self.cyclic.last = None
        for split, X, Y in (("train", self.X, self.Y), ("test", self.Xt, self.Yt)):
            out = self.predict_outputs(X)
            m[f"{split}_loss"] = float(loss_value(self.cfg.loss, out, Y).mean())
            if self.data.n_classes is not None:
                m[f"{split}_accuracy"] = float((out.argmax(1) == Y.argmax(1)).float().mean())
            else:
                m[f"{split}_mse"] = float(((out - Y) ** 2).mean())
        if self.cyclic is not None and self.cyclic.last is not None:
            m["inference_residual"] = self.cyclic.last.residual  # max |G| at inference, worst split
        if "count" in self._acc:
            m["constraint_violation"] = float(self._acc["g2"]) / self._acc["count"]
        else:
            m["constraint_violation"] = 0.0
        if "dx" in self._acc:
            m["grad_x"] = float(self._acc["dx"]) / self._acc["dx_count"]
        for g in range(1, len(self.net.groups)):
            if f"lam_n_{g}" in self._acc:
                m[f"lambda_mean_abs_{g}"] = float(self._acc[f"lam_sum_{g}"]) / max(self._acc[f"lam_n_{g}"], 1)
                m[f"lambda_max_abs_{g}"] = float(self._acc[f"lam_max_{g}"])
        return m

    def _check_finite(self) -> None:
        params = list(self.net.named_parameters())
        if bool(torch.stack([torch.isfinite(p).all() for _, p in params]).all()):
            return  # one device sync for all parameters
        bad = [n for n, p in params if not bool(torch.isfinite(p).all())]
        if bad:
            self._diverged(f"weights {bad[0]} became NaN or infinite")

    def _check_divergence(self, m: dict[str, float]) -> None:
        vals = [v for k, v in m.items() if k.endswith(("loss", "violation"))]
        if not all(math.isfinite(v) for v in vals):
            self._diverged("the loss or the constraint violation became NaN or infinite")
        if m["constraint_violation"] > self.cfg.max_violation:
            self._diverged(f"the constraint violation exploded to {m['constraint_violation']:.3g}")
        # a loss 1e4 times that of the all-zero output (log C for cross-entropy) has exploded
        loss = m.get("train_loss", 0.0)
        if loss > 1e4 * max(self._zero_output_loss, 1e-3):
            self._diverged(f"the training loss exploded to {loss:.3g}")
        self._check_finite()

    def _diverged(self, what: str) -> None:
        """Raise DivergenceError naming the likely cause and the flag to change.

        Weights that are NaN/inf or huge point at the weight step (--lr); finite, moderate
        weights with an exploding state point at the x / lambda steps (--mu-x, --mu-lambda),
        and for BDMM at its missing damping (rho = 0).
        """
        cfg = self.cfg
        with torch.no_grad():
            big = max((float(p.detach().abs().max()) for p in self.net.parameters() if p.numel()), default=0.0)
        if not math.isfinite(big) or big > 1e4 or cfg.method == "backprop":
            hint = (f"likely cause: weight steps too large (largest |w| = {big:.3g}); lower --lr "
                    f"(now {cfg.lr:g}, try {cfg.lr / 10:g})")
        elif cfg.method == "bdmm":
            hint = (f"likely cause: plain BDMM has no damping and its x / lambda steps oscillate (MATH.md); "
                    f"use --method mdmm (the default) or lower --mu-x (now {cfg.mu_x:g}) and --mu-lambda "
                    f"(now {cfg.mu_lambda:g})")
        else:
            hint = (f"likely cause: x / lambda steps too large; lower --mu-x (now {cfg.mu_x:g}) or "
                    f"--mu-lambda (now {cfg.mu_lambda:g}), or raise --rho (now {cfg.rho:g})")
        raise DivergenceError(f"training diverged at epoch {self.epoch}: {what}; {hint}")

    # ------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly: weights, optimizer, example state, RNGs."""
        return {
            "epoch": self.epoch, "seconds": self.seconds, "history": list(self.history),
            "config": self.cfg.to_dict(), "weights": self.net.state_dict(),
            "optimizer": self.opt.state_dict(),
            "example_state": None if self.state is None else self.state.state_dict(),
            "shuffle_rng": self.shuffle_gen.get_state(), "torch_rng": torch.get_rng_state(),
        }

    def load_state_dict(self, d: dict[str, Any]) -> None:
        self.net.load_state_dict(d["weights"])
        self.opt.load_state_dict(d["optimizer"])
        if self.state is not None and d.get("example_state") is not None:
            self.state.load_state_dict(d["example_state"])
        self.shuffle_gen.set_state(d["shuffle_rng"])
        torch.set_rng_state(d["torch_rng"])
        self.epoch, self.seconds, self.history = d["epoch"], d["seconds"], list(d["history"])

    def summary(self) -> dict[str, Any]:
        last = self.history[-1] if self.history else self.evaluate()
        out: dict[str, Any] = {"method": self.cfg.method, "epochs": self.epoch, "seconds": self.seconds}
        out.update({k: v for k, v in last.items() if k not in ("epoch", "seconds")})
        out["seconds_per_epoch"] = self.seconds / max(self.epoch, 1)
        out["dataset"] = self.data.name
        out["arcs"] = self.net.num_arcs()
        out["hidden"] = len(self.net.graph.hidden)
        if self.state is not None:
            out["state_numbers"] = self.state.numbers()
        return out
