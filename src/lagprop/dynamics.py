"""The saddle dynamics: descent on x and w, ascent on lambda (paper Algorithm 1).

One *relaxation step* updates x and lambda of every example in a batch and every neuron
at once from the old state (a Jacobi sweep)::

    x      <- x      - mu_x      * dL/dx        (Eq. 4; then the l1 proximal step on hidden x)
    lambda <- lambda + mu_lambda * dL/dlambda   (Eq. 5: + mu_lambda * G)

and a *weight step* hands dL/dw (Eq. 3), divided by the batch size, at the state after the
step to any ``torch.optim`` optimizer.  Algorithm 1 proper is one relaxation step and one
weight step per sweep over the whole training set.  ``rho = 0`` is BDMM as in the paper;
``rho > 0`` adds Platt and Barr's (rho/2) sum G^2 (MDMM), the default, because plain BDMM
oscillates and diverges (MATH.md).

Also here: relaxation with frozen weights (inference on cyclic graphs, the stationary
point of Eq. 6) and the local fixed-point solve of Eq. 6.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from .errors import ConfigError
from .lagrangian import LOSSES, Terms, evaluate, loss_grad, soft_threshold, x_grads
from .network import Network

State = list  # list[Tensor | None] per group; index 0 holds the inputs for x, None for lambda


@dataclass
class Dynamics:
    """Step sizes and variant of the saddle search."""

    mu_x: float = 0.5
    mu_lambda: float = 0.5
    rho: float = 1.0
    loss: str = "ce"
    l1_mode: str = "prox"  # 'prox' (soft threshold: exact zeros) or 'subgradient' (the paper)

    def __post_init__(self) -> None:
        for name in ("mu_x", "mu_lambda"):
            v = getattr(self, name)
            if not v > 0 or v != v or v == float("inf"):
                raise ConfigError(f"--{name.replace('_', '-')} must be a positive number, got {v}")
        if self.rho < 0:
            raise ConfigError(f"--rho must be >= 0 (0 is plain BDMM), got {self.rho}")
        if self.loss not in LOSSES:
            raise ConfigError(f"unknown loss {self.loss!r}; choose one of {LOSSES}")
        if self.l1_mode not in ("prox", "subgradient"):
            raise ConfigError("--l1-mode must be 'prox' or 'subgradient'")


def forward_state(net: Network, x_in: Tensor, base: Sequence[Tensor | None] | None = None,
                  return_preactivations: bool = False):
    """x of every group by the feed-forward pass (the 'predicted' x); reuses ``base``.

    With ``return_preactivations`` also returns the pre-activations, which the first
    relaxation step can reuse (they are those of this very state).
    """
    if not net.acyclic:
        net.forward_all(x_in)  # raises CycleError with the explanation
    if base is None:
        base = net.input_contribution(x_in)
    xs: State = [x_in]
    pre: list[Tensor | None] = [None]
    by_dst: dict[int, list] = {}
    for blk in net.blocks:
        if blk.src != 0:
            by_dst.setdefault(blk.dst, []).append(blk)
    for g in range(1, len(net.groups)):
        a = base[g]
        for blk in by_dst.get(g, []):
            a = net._block_apply(blk, xs[blk.src], a)
        pre.append(a)
        xs.append(net.acts[g].fn(a))
    return (xs, pre) if return_preactivations else xs


def zero_state(net: Network, x_in: Tensor) -> State:
    return [x_in] + [x_in.new_zeros(x_in.shape[0], s) for s in net.sizes[1:]]


def relax_step(net: Network, xs: State, lams: State, y: Tensor, dyn: Dynamics,
               alpha: Sequence[Tensor | float | None] | None = None,
               base: Sequence[Tensor | None] | None = None,
               a: Sequence[Tensor | None] | None = None,
               cache: dict | None = None, return_terms: bool = False,
               quiet: set[int] | frozenset[int] = frozenset()):
    """One Jacobi sweep of x-descent and lambda-ascent over a batch (weights fixed).

    ``a``, when given, are the pre-activations at ``xs`` (e.g. from the forward pass);
    ``cache`` keeps sigma and sigma' of unchanged pre-activations (see ``evaluate``).
    Returns the new x and lambda, and with ``return_terms`` also the terms at ``xs``.
    ``quiet`` groups sit at the forward pass with lambda = 0 (see ``evaluate``): their
    lambda stays 0 and their x moves only by what their children send.
    """
    terms = evaluate(net, xs, lams, dyn.rho, base, a, cache, quiet)
    sub = alpha if dyn.l1_mode == "subgradient" else None
    dx = x_grads(net, xs, terms, y, dyn.loss, sub)
    new_x: State = [xs[0]]
    new_l: State = [None]
    for g in range(1, len(net.groups)):
        x = xs[g] if dx[g] is None else torch.add(xs[g], dx[g], alpha=-dyn.mu_x)  # Eq. 4 descent
        if dyn.l1_mode == "prox" and alpha is not None and alpha[g] is not None:
            x = soft_threshold(x, dyn.mu_x * alpha[g])
        new_x.append(x)
        G = terms.G[g]
        lam = lams[g]  # None: exactly 0
        new_l.append(lam if G is None else G * dyn.mu_lambda if lam is None
                     else torch.add(lam, G, alpha=dyn.mu_lambda))  # Eq. 5 ascent
    return (new_x, new_l, terms) if return_terms else (new_x, new_l)


def first_step_from_forward(net: Network, xs: State, y: Tensor, dyn: Dynamics) -> State:
    """The first relaxation step from a forward-pass x with lambda = 0 and no l1 term.

    There G = 0 and lambda = 0, so lambda~ = 0, every child sum is 0, the lambda step adds
    mu_lambda * G = 0 and the only non-zero term of Eq. 4 is dv/dx at the outputs: the
    step is exactly ``x_out <- x_out - mu_x dv/dx`` and nothing else moves.  Computing it
    this way gives the same numbers as :func:`relax_step` without its zero products.
    """
    dv = net.scatter_outputs(loss_grad(dyn.loss, net.gather_outputs(xs), y), xs)
    return [x if d is None else torch.add(x, d, alpha=-dyn.mu_x) for x, d in zip(xs, dv)]


def weight_grads(net: Network, xs: State, lams: State, dyn: Dynamics,
                 base: Sequence[Tensor | None] | None = None, cache: dict | None = None) -> Terms:
    """Write dL/dw / batch (Eq. 3, with lambda~ = lambda + rho G) into the ``.grad`` fields."""
    terms = evaluate(net, xs, lams, dyn.rho, base, cache=cache)
    net.weight_grads(xs, terms.m, scale=1.0 / xs[0].shape[0])
    return terms


def relax(net: Network, x_in: Tensor, y: Tensor, dyn: Dynamics, steps: int,
          tol: float = 0.0, init: str = "forward",
          alpha: Sequence[Tensor | float | None] | None = None) -> tuple[State, State, dict]:
    """Relax x and lambda with frozen weights by the saddle dynamics.

    Stops after ``steps`` sweeps or when the largest |G| and |dL/dx| fall below ``tol``.
    Returns the state and ``{'steps', 'violation', 'grad_x', 'converged'}``.
    """
    with torch.no_grad():
        base = net.input_contribution(x_in)
        xs = forward_state(net, x_in, base) if init == "forward" else zero_state(net, x_in)
        lams: State = [None] + [torch.zeros_like(t) for t in xs[1:]]
        info = {"steps": 0, "violation": float("inf"), "grad_x": float("inf"), "converged": False}
        for k in range(steps):
            xs, lams = relax_step(net, xs, lams, y, dyn, alpha, base)
            info["steps"] = k + 1
            if tol > 0 and (k % 10 == 9 or k == steps - 1):
                info.update(_residuals(net, xs, lams, y, dyn, base, alpha))
                if info["violation"] <= tol and info["grad_x"] <= tol:
                    info["converged"] = True
                    break
        if tol <= 0:
            info.update(_residuals(net, xs, lams, y, dyn, base, alpha))
    return xs, lams, info


def _residuals(net, xs, lams, y, dyn, base, alpha) -> dict:
    terms = evaluate(net, xs, lams, dyn.rho, base)
    dx = x_grads(net, xs, terms, y, dyn.loss, alpha)
    v = max(float(terms.G[g].abs().max()) for g in range(1, len(net.groups)))
    d = max(float(dx[g].abs().max()) for g in range(1, len(net.groups)))
    return {"violation": v, "grad_x": d}


def solve_stationary(net: Network, x_in: Tensor, y: Tensor, loss: str = "ce",
                     max_sweeps: int = 10_000, tol: float = 1e-12) -> tuple[State, State, dict]:
    """The stationary point of L in (x, lambda) for frozen weights, alpha = 0 (Eq. 6).

    Two local fixed-point iterations, each neuron reading only its neighbours: x <- sigma(a)
    until G = 0, then lambda <- lambda - dL/dx (that is, lambda_i <- sum_r sigma'_r w_ri
    lambda_r - [i in O] dv/dx_i) until dL/dx = 0.  On a DAG each converges exactly in depth
    sweeps; on a cyclic graph it converges when the map is a contraction.
    """
    info = {"sweeps_x": 0, "sweeps_lambda": 0, "converged": False}
    with torch.no_grad():
        base = net.input_contribution(x_in)
        xs = zero_state(net, x_in)
        for k in range(max_sweeps):
            a = net.preactivations(xs, skip_src=0, base=base)
            new = [x_in] + [net.acts[g].fn(a[g]) for g in range(1, len(net.groups))]
            delta = max(float((n - o).abs().max()) for n, o in zip(new[1:], xs[1:]))
            xs = new
            info["sweeps_x"] = k + 1
            if delta <= tol:
                break
        lams: State = [None] + [torch.zeros_like(t) for t in xs[1:]]
        terms = evaluate(net, xs, lams, 0.0, base)
        dv = net.scatter_outputs(loss_grad(loss, net.gather_outputs(xs), y), xs)
        batch = x_in.shape[0]
        for k in range(max_sweeps):
            m = [None] + [lams[g] * terms.ds[g] for g in range(1, len(net.groups))]
            c = net.child_sums(m, batch)
            new = [None]
            for g in range(1, len(net.groups)):
                v = torch.zeros_like(xs[g]) if c[g] is None else c[g]
                new.append(v - dv[g] if dv[g] is not None else v)
            delta = max(float((n - o).abs().max()) for n, o in zip(new[1:], lams[1:]))
            lams = new
            info["sweeps_lambda"] = k + 1
            if delta <= tol:
                info["converged"] = True
                break
    return xs, lams, info


def stationary_weight_grad(net: Network, x_in: Tensor, y: Tensor, loss: str = "ce",
                           method: str = "solve", dyn: Dynamics | None = None,
                           steps: int = 5000) -> list[Tensor]:
    """dL/dw / batch at the stationary point for frozen weights (Eq. 6: backprop's gradient).

    ``method='solve'`` uses :func:`solve_stationary`; ``'relax'`` runs the saddle dynamics
    for ``steps`` sweeps.  Returns one gradient per parameter, in ``net.parameters()`` order.
    """
    if method == "solve":
        xs, lams, _ = solve_stationary(net, x_in, y, loss)
        rho = 0.0
    else:
        dyn = dyn or Dynamics(loss=loss)
        xs, lams, _ = relax(net, x_in, y, dyn, steps)
        rho = dyn.rho
    with torch.no_grad():
        terms = evaluate(net, xs, lams, rho)
        net.weight_grads(xs, terms.m, scale=1.0 / x_in.shape[0])
    return [p.grad.clone() for p in net.parameters()]
