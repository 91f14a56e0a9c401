"""Cyclic graphs: the constraints x = sigma(w x) define a fixed point, not a forward pass.

The paper's formulation allows "any directed graph".  With a cycle there is no order in
which to compute the neurons, but nothing in the Lagrangian (Eq. 2) or its saddle dynamics
(Eqs. 3-5, :func:`lagprop.dynamics.relax_step`) needs one: every term reads a neuron's
parents and children only.  So a cyclic graph trains with the same Jacobi sweeps.  Between
visits an example's x is either *stored*, or *predicted* as for a DAG, where the forward
pass is replaced by the loss-free fixed-point iteration below (on a DAG that iteration
reaches the forward pass in depth sweeps).  Measured (benchmarks/bench_cyclic.py): the
predicted x trains as well as backprop through the fixed point; the stored x drifts as the
weights move, and the weights wander out of the contraction region.

What changes is inference.  For a new input the targets are unknown, so the loss is out
and only the constraints remain: x must satisfy G(x) = x - sigma(a(x)) = 0.  We find it by
the (damped) fixed-point iteration, itself local (each neuron reads its parents)::

    x <- (1 - beta) x + beta sigma(a(x))

which converges when the map is a contraction (e.g. small recurrent weights, saturating
units).  Whether it did is checked by substitution: the largest |G| at the returned state.
When it did not, :func:`infer` warns (or raises :class:`ConvergenceError`) with the numbers.

The backpropagation baseline is autograd through the unrolled iteration
(:func:`unrolled_outputs`): at a contraction, as the unrolling grows, its gradient tends
to the implicit (Almeida-Pineda) gradient, which is also what Eq. 6 gives at the
stationary point of L.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from .errors import LagpropError
from .network import Network

DEFAULTS = {"fp_iters": 300, "fp_tol": 1e-4, "fp_damping": 0.5, "unroll": 30}


class ConvergenceError(LagpropError):
    """Relaxation of a cyclic graph's constraints did not reach a fixed point."""


class NotConvergedWarning(UserWarning):
    """Inference on a cyclic graph stopped before its residual fell below the tolerance."""


@dataclass
class FixedPointInfo:
    iterations: int
    residual: float      # max |x - sigma(a(x))| over examples and neurons, by substitution
    converged: bool
    tol: float

    def describe(self) -> str:
        return (f"after {self.iterations} iterations the largest constraint residual |x - sigma(a)| is "
                f"{self.residual:.3g} (tolerance {self.tol:.3g})")


def residual(net: Network, xs: Sequence[Tensor], base: Sequence[Tensor | None] | None = None) -> float:
    """max |G| = max |x - sigma(a(x))| over all non-input neurons: the substitution check."""
    a = net.preactivations(xs, skip_src=0 if base is not None else None, base=base)
    return max(float((xs[g] - net.acts[g].fn(a[g])).abs().max()) for g in range(1, len(net.groups)))


def _iterate(net: Network, xs: list[Tensor], base: Sequence[Tensor | None], damping: float) -> list[Tensor]:
    a = net.preactivations(xs, skip_src=0, base=base)
    new = [xs[0]]
    for g in range(1, len(net.groups)):
        s = net.acts[g].fn(a[g])
        new.append(s if damping == 1.0 else (1 - damping) * xs[g] + damping * s)
    return new


def fixed_point(net: Network, x_in: Tensor, iters: int = 200, tol: float = 1e-4, damping: float = 1.0,
                init: Sequence[Tensor] | None = None,
                base: Sequence[Tensor | None] | None = None) -> tuple[list[Tensor], FixedPointInfo]:
    """Solve x = sigma(a(x)) for frozen weights by damped fixed-point iteration (no targets).

    ``x_in`` is in the input group's column order; starts from ``init`` or from x = 0.
    Stops when the residual is at most ``tol`` (checked every 10 iterations).
    """
    if not 0 < damping <= 1:
        raise LagpropError(f"the fixed-point damping must be in (0, 1], got {damping}")
    with torch.no_grad():
        if base is None:
            base = net.input_contribution(x_in)
        xs = [x_in] + ([t.clone() for t in init[1:]] if init is not None
                       else [x_in.new_zeros(x_in.shape[0], s) for s in net.sizes[1:]])
        r = float("inf")
        k = 0
        for k in range(1, iters + 1):
            xs = _iterate(net, xs, base, damping)
            if k % 10 == 0 or k == iters:
                r = residual(net, xs, base)
                if r <= tol or r != r:
                    break
        if k == 0:
            r = residual(net, xs, base)
    return xs, FixedPointInfo(k, r, r <= tol, tol)


def infer(net: Network, X: Tensor, iters: int = 200, tol: float = 1e-4, damping: float = 1.0,
          on_fail: str = "warn") -> tuple[Tensor, FixedPointInfo]:
    """Outputs for inputs ``X`` (data column order) of a cyclic graph by relaxation.

    ``on_fail``: 'warn' (a :class:`NotConvergedWarning` with the numbers), 'raise'
    (:class:`ConvergenceError`) or 'ignore'.
    """
    net.check_inputs(X)
    xs, info = fixed_point(net, net.split_inputs(X), iters, tol, damping)
    if not info.converged and on_fail != "ignore":
        msg = (f"inference on the cyclic graph did not converge: {info.describe()}; raise the "
               "iterations, lower the damping, or train with smaller recurrent weights (weight decay)")
        if on_fail == "raise":
            raise ConvergenceError(msg)
        warnings.warn(msg, NotConvergedWarning, stacklevel=2)
    return net.gather_outputs(xs), info


def unrolled_outputs(net: Network, X: Tensor, iters: int = 30, damping: float = 1.0) -> Tensor:
    """Outputs after ``iters`` fixed-point iterations from x = 0, differentiable (the baseline)."""
    x_in = net.split_inputs(X)
    base = net.input_contribution(x_in)
    xs = [x_in] + [x_in.new_zeros(x_in.shape[0], s) for s in net.sizes[1:]]
    for _ in range(iters):
        xs = _iterate(net, xs, base, damping)
    return net.gather_outputs(xs)


class CyclicHooks:
    """What :class:`lagprop.train.Trainer` calls instead of the forward pass on a cyclic graph.

    Settings come from ``TrainConfig.extra`` (keys of :data:`DEFAULTS`).  The last
    inference's :class:`FixedPointInfo` is kept in ``last``, for the metrics.
    """

    def __init__(self, net: Network, extra: dict) -> None:
        self.net = net
        self.opts = {k: extra.get(k, v) for k, v in DEFAULTS.items()}
        self.last: FixedPointInfo | None = None

    def outputs(self, X: Tensor) -> Tensor:
        """Differentiable outputs for backprop: autograd through the unrolled iteration."""
        return unrolled_outputs(self.net, X, int(self.opts["unroll"]), float(self.opts["fp_damping"]))

    def predict(self, X: Tensor) -> Tensor:
        out, info = infer(self.net, X, int(self.opts["fp_iters"]), float(self.opts["fp_tol"]),
                          float(self.opts["fp_damping"]), on_fail="warn")
        if self.last is None or math.isnan(info.residual) or info.residual > self.last.residual:  # keep the worst
            self.last = info
        return out

    def initial_state(self, net: Network, x_in: Tensor, base: Sequence[Tensor | None] | None = None) -> list:
        """The predicted x (and the first x of a stored one): the loss-free fixed point."""
        xs, _ = fixed_point(net, x_in, int(self.opts["fp_iters"]), float(self.opts["fp_tol"]),
                            float(self.opts["fp_damping"]), base=base)
        return xs
