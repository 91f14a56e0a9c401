"""The Lagrangian of paper Eq. 2 and its partial derivatives (Eqs. 3-5), by explicit formulas.

For one example kappa and every non-input neuron i::

    a_i = sum_{j in pa(i)} w_ij x_j + b_i                  pre-activation
    G_i = x_i - sigma(a_i)                                 constraint residual  (Eq. 5)
    L   = sum_{i in O} v(x_i, y_i) + sum_{i in H} alpha_i |x_i| + sum_i lambda_i G_i
          + (rho / 2) sum_i G_i^2                          (MDMM's augmented term; rho=0: BDMM)

    dL/dx_i      = [i in O] dv/dx_i + [i in H] alpha_i sign(x_i) + lambda~_i
                   - sum_{r in ch(i)} lambda~_r sigma'(a_r) w_ri          (Eq. 4)
    dL/dlambda_i = G_i                                                   (Eq. 5)
    dL/dw_ij     = - sum_kappa lambda~_i sigma'(a_i) x_j                 (Eq. 3)

with lambda~ = lambda + rho G (the augmented term's only effect on the x and w gradients).
The child sum applies to every non-input neuron, outputs included (in a general graph an
output may have children).  Everything is vectorised over the examples of a batch and
over the neurons of a group; the arcs are summed in :mod:`lagprop.network`.

Loss v: ``mse`` is v = 1/2 (x - y)^2 per output; ``ce`` is the soft-max cross-entropy over
all outputs jointly, v = -sum_o y_o log softmax(x)_o, a documented generalisation of the
paper's per-output v (its gradient softmax(x) - y still reads only the output neurons).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from .errors import ConfigError
from .network import Network

LOSSES = ("ce", "mse")


def loss_value(kind: str, out: Tensor, y: Tensor) -> Tensor:
    """v summed over the outputs, per example: shape ``(batch,)``."""
    if kind == "mse":
        return 0.5 * ((out - y) ** 2).sum(1)
    if kind == "ce":
        return -(y * torch.log_softmax(out, 1)).sum(1)
    raise ConfigError(f"unknown loss {kind!r}; choose one of {LOSSES}")


def loss_grad(kind: str, out: Tensor, y: Tensor) -> Tensor:
    """dv/dx for the output neurons, ``(batch, n_outputs)``."""
    if kind == "mse":
        return out - y
    if kind == "ce":
        return torch.softmax(out, 1) - y
    raise ConfigError(f"unknown loss {kind!r}; choose one of {LOSSES}")


@dataclass
class Terms:
    """Per-group quantities at one state (None for the input group)."""

    a: list[Tensor | None]        # pre-activations
    ds: list[Tensor | None]       # sigma'(a)
    G: list[Tensor | None]        # constraint residuals x - sigma(a)
    m: list[Tensor | None]        # lambda~ * sigma'(a), lambda~ = lambda + rho G
    lam_eff: list[Tensor | None]  # lambda~


def evaluate(net: Network, xs: Sequence[Tensor], lams: Sequence[Tensor | None], rho: float,
             base: Sequence[Tensor | None] | None = None,
             a: Sequence[Tensor | None] | None = None,
             cache: dict[int, tuple[Tensor, Tensor, Tensor]] | None = None,
             quiet: set[int] | frozenset[int] = frozenset()) -> Terms:
    """Pre-activations, residuals and the child-sum factors m at state (x, lambda).

    Groups in ``quiet`` are known to sit at their forward-pass x with lambda = 0 (so are
    all their parents): their G, lambda~ and m are exactly 0 and are left as None.

    ``a`` may pass pre-activations already known at this state (they are not recomputed).
    ``cache`` maps a group to ``(a, sigma(a), sigma'(a))`` from an earlier call: while a
    group's pre-activation is the very same tensor (e.g. a first hidden layer, whose inputs
    are data, during a relaxation) sigma and sigma' are not computed again.
    """
    if a is None:
        a = net.preactivations(xs, skip_src=0 if base is not None else None, base=base)
    n = len(net.groups)
    ds: list[Tensor | None] = [None] * n
    G: list[Tensor | None] = [None] * n
    m: list[Tensor | None] = [None] * n
    lam_eff: list[Tensor | None] = [None] * n
    for g in range(1, n):
        if g in quiet:
            continue
        hit = cache.get(g) if cache is not None else None
        if hit is not None and hit[0] is a[g]:
            s, ds[g] = hit[1], hit[2]
        else:
            act = net.acts[g]
            s = act.fn(a[g])
            ds[g] = act.derivative(a[g], s)
            if cache is not None:
                cache[g] = (a[g], s, ds[g])
        G[g] = xs[g] - s
        lam = lams[g]  # None: lambda known to be exactly 0 (saves the additions)
        if lam is None:
            lam_eff[g] = (G[g] if rho == 1 else G[g] * rho) if rho else torch.zeros_like(G[g])
        else:
            lam_eff[g] = torch.add(lam, G[g], alpha=rho) if rho else lam
        m[g] = lam_eff[g] * ds[g]
    return Terms(a, ds, G, m, lam_eff)


def x_grads(net: Network, xs: Sequence[Tensor], terms: Terms, y: Tensor, loss: str,
            alpha: Sequence[Tensor | float | None] | None = None) -> list[Tensor | None]:
    """dL/dx for every non-input group (Eq. 4).

    ``alpha`` (per group, hidden groups only) adds the l1 subgradient alpha*sign(x); pass
    None when the l1 term is handled by a proximal step instead.
    """
    batch = xs[0].shape[0]
    c = net.child_sums(terms.m, batch)
    dv = net.scatter_outputs(loss_grad(loss, net.gather_outputs(xs), y), xs)
    out: list[Tensor | None] = [None] * len(net.groups)
    for g in range(1, len(net.groups)):
        d = terms.lam_eff[g]  # None for a quiet group: lambda~ = 0
        if c[g] is not None:
            d = -c[g] if d is None else torch.sub(d, c[g])
        if dv[g] is not None:
            d = dv[g] if d is None else d + dv[g]
        if alpha is not None and alpha[g] is not None:
            d = d + alpha[g] * torch.sign(xs[g])
        out[g] = d
    return out


def lagrangian(net: Network, xs: Sequence[Tensor], lams: Sequence[Tensor | None], y: Tensor,
               loss: str, alpha: Sequence[Tensor | float | None] | None = None,
               rho: float = 0.0) -> Tensor:
    """The value of L (Eq. 2, plus the augmented term when rho > 0), summed over the batch."""
    terms = evaluate(net, xs, lams, rho)
    total = loss_value(loss, net.gather_outputs(xs), y).sum()
    for g in range(1, len(net.groups)):
        total = total + (lams[g] * terms.G[g]).sum() + 0.5 * rho * (terms.G[g] ** 2).sum()
        if alpha is not None and alpha[g] is not None:
            total = total + (alpha[g] * xs[g].abs()).sum()
    return total


def soft_threshold(x: Tensor, t: Tensor | float) -> Tensor:
    """The proximal map of t*|x|: sign(x) * max(|x| - t, 0) (gives exact zeros)."""
    return torch.sign(x) * torch.clamp(x.abs() - t, min=0)
