"""Recurrent networks over sequences: the constraints written for every time step.

The paper closes by saying the method extends to recurrent networks "by expressing the
corresponding constraints induced by the given data structure".  For a sequence
u_1..u_T (h_0 = 0, a datum) and the steps S that carry a target::

    a_t = W x_{t-1} + U u_t + b            G_t = x_t - sigma(a_t)          t = 1..T
    c_t = V x_t + c                        H_t = o_t - sigma_o(c_t)        t in S
    L   = sum_{t in S} v(o_t, y_t) + sum_t lambda_t G_t + sum_{t in S} mu_t H_t
          + (rho/2) (sum_t |G_t|^2 + sum_{t in S} |H_t|^2)                  (Eq. 2 in time)

The hidden states x_t, the outputs o_t and their multipliers lambda_t, mu_t are the
variables, per example and per step.  With lambda~ = lambda + rho G, mu~ = mu + rho H,
m_t = lambda~_t sigma'(a_t) and n_t = mu~_t sigma_o'(c_t), the partial derivatives are::

    dL/dx_t      = lambda~_t - W^T m_{t+1} [t < T] - V^T n_t [t in S]           (Eq. 4)
    dL/do_t      = dv/do_t + mu~_t                                              (Eq. 4)
    dL/dlambda_t = G_t,   dL/dmu_t = H_t                                        (Eq. 5)
    dL/dW = -sum_t m_t x_{t-1}^T,  dL/dU = -sum_t m_t u_t^T,  dL/db = -sum_t m_t
    dL/dV = -sum_{t in S} n_t x_t^T,  dL/dc = -sum_{t in S} n_t                  (Eq. 3)

Each term reads only step t and its neighbours t-1, t+1: the dynamics is local in time as
well as in space, so one Jacobi sweep updates every step of every example at once (one
batched matrix product over all (example, step) pairs), where backpropagation through
time must walk the steps one after another.  At the stationary point with G = H = 0 the
multipliers are the BPTT adjoints and dL/dw is the BPTT gradient (Eq. 6 in time).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .activations import Activation, get_activation
from .errors import ConfigError
from .lagrangian import loss_grad, loss_value


class RNNCell(nn.Module):
    """x_t = sigma(W x_{t-1} + U u_t + b), o_t = sigma_o(V x_t + c).

    ``init='orthogonal'`` starts W orthogonal (times ``gain``), which keeps tanh units
    away from both vanishing and exploding states over tens of steps; ``'identity'``
    starts W = gain * I (the IRNN init for ReLU units); ``'uniform'`` is the usual
    U(-1/sqrt(H), 1/sqrt(H)).
    """

    def __init__(self, n_in: int, hidden: int, n_out: int, activation: str = "tanh",
                 output_activation: str = "identity", init: str = "orthogonal", gain: float = 1.0,
                 dtype: torch.dtype = torch.float32, generator: torch.Generator | None = None) -> None:
        super().__init__()
        if min(n_in, hidden, n_out) < 1:
            raise ConfigError(f"sizes must be >= 1, got inputs {n_in}, state {hidden}, outputs {n_out}")
        self.act: Activation = get_activation(activation)
        self.out_act: Activation = get_activation(output_activation)
        self.activation, self.output_activation = activation, output_activation
        g = generator

        def unif(*shape: int, fan: int) -> Tensor:
            return (torch.rand(*shape, generator=g, dtype=dtype) * 2 - 1) / math.sqrt(fan)

        if init == "orthogonal":
            q, r = torch.linalg.qr(torch.randn(hidden, hidden, generator=g, dtype=torch.float64))
            W = (q * torch.sign(torch.diagonal(r))).to(dtype) * gain
        elif init == "identity":
            W = torch.eye(hidden, dtype=dtype) * gain
        elif init == "uniform":
            W = unif(hidden, hidden, fan=hidden)
        else:
            raise ConfigError(f"unknown --rnn-init {init!r}; choose orthogonal, identity or uniform")
        self.W = nn.Parameter(W)
        self.U = nn.Parameter(unif(hidden, n_in, fan=n_in))
        self.b = nn.Parameter(torch.zeros(hidden, dtype=dtype))
        self.V = nn.Parameter(unif(n_out, hidden, fan=hidden))
        self.c = nn.Parameter(torch.zeros(n_out, dtype=dtype))

    @property
    def hidden(self) -> int:
        return self.W.shape[0]

    def forward_states(self, u: Tensor, steps: Tensor) -> tuple[Tensor, Tensor]:
        """The forward pass through time: x (B, T, H) and the outputs o (B, |S|, n_out).

        Differentiable, so it is also the BPTT baseline (autograd through the loop).
        """
        B, T, _ = u.shape
        inp = u @ self.U.t() + self.b  # (B, T, H): the part of a_t that x does not change
        h = u.new_zeros(B, self.hidden)
        xs = []
        for t in range(T):
            h = self.act.fn(inp[:, t] + h @ self.W.t())
            xs.append(h)
        X = torch.stack(xs, 1)
        return X, self.out_act.fn(X[:, steps] @ self.V.t() + self.c)


@dataclass
class SeqState:
    """The variables of a batch: x, lambda (B, T, H) and o, mu (B, |S|, n_out)."""

    x: Tensor
    o: Tensor
    lam: Tensor
    mu: Tensor


@dataclass
class SeqTerms:
    """Residuals and child-sum factors at one state."""

    G: Tensor   # (B, T, H)
    H: Tensor   # (B, |S|, n_out)
    m: Tensor   # lambda~ sigma'(a)
    n: Tensor   # mu~ sigma_o'(c)
    lam_eff: Tensor
    mu_eff: Tensor


def _prev(x: Tensor) -> Tensor:
    """x_{t-1} for every t (x_0 = 0)."""
    return torch.cat([x.new_zeros(x.shape[0], 1, x.shape[2]), x[:, :-1]], 1)


def evaluate_seq(cell: RNNCell, u: Tensor, steps: Tensor, st: SeqState, rho: float,
                 inp: Tensor | None = None) -> SeqTerms:
    """G, H and m, n at the state (all steps at once).  ``inp`` = U u + b, if precomputed."""
    if inp is None:
        inp = u @ cell.U.t() + cell.b
    a = inp + _prev(st.x) @ cell.W.t()
    s = cell.act.fn(a)
    G = st.x - s
    c = st.x[:, steps] @ cell.V.t() + cell.c
    so = cell.out_act.fn(c)
    H = st.o - so
    lam_eff = st.lam + rho * G if rho else st.lam
    mu_eff = st.mu + rho * H if rho else st.mu
    return SeqTerms(G, H, lam_eff * cell.act.derivative(a, s), mu_eff * cell.out_act.derivative(c, so),
                    lam_eff, mu_eff)


def x_grads_seq(cell: RNNCell, st: SeqState, terms: SeqTerms, y: Tensor, steps: Tensor,
                loss: str) -> tuple[Tensor, Tensor]:
    """dL/dx (B, T, H) and dL/do (B, |S|, n_out), Eq. 4 in time."""
    dx = terms.lam_eff.clone()
    dx[:, :-1] -= terms.m[:, 1:] @ cell.W          # - W^T m_{t+1}
    dx[:, steps] -= terms.n @ cell.V               # - V^T n_t at the target steps
    B, S, K = st.o.shape
    dv = loss_grad(loss, st.o.reshape(B * S, K), y.reshape(B * S, K)).reshape(B, S, K)
    return dx, dv + terms.mu_eff


def relax_step_seq(cell: RNNCell, u: Tensor, y: Tensor, steps: Tensor, st: SeqState, mu_x: float,
                   mu_lambda: float, rho: float, loss: str, inp: Tensor | None = None) -> SeqState:
    """One Jacobi sweep over every example and step: x, o descend; lambda, mu ascend."""
    terms = evaluate_seq(cell, u, steps, st, rho, inp)
    dx, do = x_grads_seq(cell, st, terms, y, steps, loss)
    return SeqState(st.x - mu_x * dx, st.o - mu_x * do, st.lam + mu_lambda * terms.G,
                    st.mu + mu_lambda * terms.H)


def weight_grads_seq(cell: RNNCell, u: Tensor, steps: Tensor, st: SeqState, rho: float,
                     scale: float = 1.0, inp: Tensor | None = None) -> SeqTerms:
    """Write dL/dw * scale (Eq. 3 in time) into the cell's ``.grad`` fields."""
    terms = evaluate_seq(cell, u, steps, st, rho, inp)
    m, n = terms.m, terms.n
    H, nin = cell.hidden, u.shape[2]
    cell.W.grad = -scale * (m.reshape(-1, H).t() @ _prev(st.x).reshape(-1, H))
    cell.U.grad = -scale * (m.reshape(-1, H).t() @ u.reshape(-1, nin))
    cell.b.grad = -scale * m.sum((0, 1))
    K = n.shape[2]
    cell.V.grad = -scale * (n.reshape(-1, K).t() @ st.x[:, steps].reshape(-1, H))
    cell.c.grad = -scale * n.sum((0, 1))
    return terms


def lagrangian_seq(cell: RNNCell, u: Tensor, y: Tensor, steps: Tensor, st: SeqState, loss: str,
                   rho: float = 0.0) -> Tensor:
    """The value of L (summed over the batch): the oracle that autograd differentiates."""
    terms = evaluate_seq(cell, u, steps, SeqState(st.x, st.o, st.lam, st.mu), 0.0)
    B, S, K = st.o.shape
    v = loss_value(loss, st.o.reshape(B * S, K), y.reshape(B * S, K)).sum()
    return (v + (st.lam * terms.G).sum() + (st.mu * terms.H).sum()
            + 0.5 * rho * ((terms.G ** 2).sum() + (terms.H ** 2).sum()))


def predicted_state(cell: RNNCell, u: Tensor, steps: Tensor) -> SeqState:
    """x and o by the forward pass through time, multipliers zero."""
    with torch.no_grad():
        X, out = cell.forward_states(u, steps)
    return SeqState(X, out, torch.zeros_like(X), torch.zeros_like(out))


def bptt_grads(cell: RNNCell, u: Tensor, y: Tensor, steps: Tensor, loss: str) -> list[Tensor]:
    """The BPTT gradient of the mean (over examples) summed (over steps) loss, by autograd."""
    _, out = cell.forward_states(u, steps)
    B, S, K = out.shape
    total = loss_value(loss, out.reshape(B * S, K), y.reshape(B * S, K)).sum() / B
    return list(torch.autograd.grad(total, list(cell.parameters())))
