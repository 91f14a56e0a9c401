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


# ------------------------------------------------------------------ training loop
class SeqTrainer:
    """The :class:`~lagprop.train.Trainer` loop for sequences (same config, same summary keys).

    Lagrangian methods, per mini-batch: x and o by the forward pass through time
    (``state='predicted'``) or stored per example and step (``'stored'``); lambda and mu
    stored (``lambda_init='stored'``) or zero; ``relax_steps`` Jacobi sweeps over all steps
    at once (0: T + 1, the depth of the unrolled graph); one weight step with dL/dw / batch
    at the relaxed state.  ``backprop`` is BPTT by autograd on the same cell, batches and
    optimizer.  The loss follows the task: mse for regression, soft-max cross-entropy at
    every target step for classification.  ``cfg.extra``: ``lr_schedule`` ('constant' or
    'cosine') and ``clip`` (gradient-norm clipping, both methods alike; 0 is off).
    """

    def __init__(self, cell: RNNCell, data, cfg) -> None:
        from .train import LAGRANGIAN_METHODS, make_optimizer
        cfg.loss = "mse" if data.n_classes is None else "ce"
        cfg.validate()
        if cfg.method not in LAGRANGIAN_METHODS + ("backprop",):
            raise ConfigError(f"method {cfg.method!r} is not available for sequences; use mdmm, bdmm "
                              "or backprop (BPTT)")
        if cfg.x_init not in ("forward", "zero"):
            raise ConfigError("--x-init must be 'forward' or 'zero'")
        self.cfg, self.cell, self.data = cfg, cell, data
        dev, dt = cell.W.device, cell.W.dtype
        self.steps = torch.tensor(data.steps, dtype=torch.long, device=dev)
        self.U, self.Y = self._tensors(data.U_train, data.Y_train, dev, dt)
        self.Ut, self.Yt = self._tensors(data.U_test, data.Y_test, dev, dt)
        self.n = len(self.U)
        self.opt = make_optimizer(cfg, cell.parameters())
        sched = cfg.extra.get("lr_schedule", "constant")
        if sched not in ("constant", "cosine"):
            raise ConfigError(f"--lr-schedule must be constant or cosine, got {sched!r}")
        # cosine: the learning rate falls from --lr to 0 over --epochs (settles the noisy end of training)
        self.sched = torch.optim.lr_scheduler.CosineAnnealingLR(self.opt, max(cfg.epochs, 1)) \
            if sched == "cosine" else None
        self.rho = 0.0 if cfg.method == "bdmm" else cfg.rho
        # K = 0: the depth of the unrolled graph (T cell steps and the readout), as for DAGs
        self.relax_steps = cfg.relax_steps or data.seq_len + 1
        self.epoch, self.seconds = 0, 0.0
        self.history: list[dict[str, float]] = []
        self.gen = torch.Generator().manual_seed(cfg.seed + 1)
        self.store: SeqState | None = None
        self.visited = torch.zeros(self.n, dtype=torch.bool, device=dev)
        if cfg.method != "backprop":
            B, T, S = self.n, data.seq_len, len(data.steps)
            z = {"dtype": dt, "device": dev}
            bx = B if cfg.state == "stored" else 0         # keep only what is stored
            bl = B if cfg.lambda_init == "stored" else 0
            self.store = SeqState(torch.zeros(bx, T, cell.hidden, **z), torch.zeros(bx, S, data.n_outputs, **z),
                                  torch.zeros(bl, T, cell.hidden, **z), torch.zeros(bl, S, data.n_outputs, **z))
        self._acc = [0.0, 0]

    def _tensors(self, U, Y, dev, dt) -> tuple[Tensor, Tensor]:
        u = torch.as_tensor(U, dtype=dt, device=dev)
        if self.data.n_classes is not None:
            y = torch.nn.functional.one_hot(torch.as_tensor(Y, dtype=torch.long), self.data.n_classes)
            return u, y.to(dev, dt)
        return u, torch.as_tensor(Y, dtype=dt, device=dev)

    # ------------------------------------------------------------------ steps
    def step(self, idx: Tensor) -> None:
        cfg, cell, u, y = self.cfg, self.cell, self.U[idx], self.Y[idx]
        self.opt.zero_grad(set_to_none=True)
        if cfg.method == "backprop":
            grads = bptt_grads(cell, u, y, self.steps, cfg.loss)
            for p, g in zip(cell.parameters(), grads):
                p.grad = g
            self._weight_step()
            return
        with torch.no_grad():
            inp = u @ cell.U.t() + cell.b
            st = self._initial_state(idx, u)
            for _ in range(self.relax_steps):
                st = relax_step_seq(cell, u, y, self.steps, st, cfg.mu_x, cfg.mu_lambda, self.rho, cfg.loss, inp)
            terms = weight_grads_seq(cell, u, self.steps, st, self.rho, 1.0 / len(idx), inp)
            self._acc[0] += float((terms.G ** 2).sum() + (terms.H ** 2).sum())
            self._acc[1] += terms.G.numel() + terms.H.numel()
            s = self.store
            if cfg.state == "stored":
                s.x[idx], s.o[idx] = st.x, st.o
                self.visited[idx] = True
            if cfg.lambda_init == "stored":
                s.lam[idx], s.mu[idx] = st.lam, st.mu
        self._weight_step()

    def _weight_step(self) -> None:
        clip = float(self.cfg.extra.get("clip", 0.0))
        if clip > 0:  # the usual RNN safeguard, applied alike to both methods
            torch.nn.utils.clip_grad_norm_(list(self.cell.parameters()), clip)
        self.opt.step()

    def _initial_state(self, idx: Tensor, u: Tensor) -> SeqState:
        cfg, s = self.cfg, self.store
        if cfg.state == "predicted":
            x, o = self.cell.forward_states(u, self.steps)
        else:
            x, o = s.x[idx], s.o[idx]
            fresh = ~self.visited[idx]
            if bool(fresh.any()):
                if cfg.x_init == "forward":
                    fx, fo = self.cell.forward_states(u, self.steps)
                else:
                    fx, fo = torch.zeros_like(x), torch.zeros_like(o)
                x = torch.where(fresh[:, None, None], fx, x)
                o = torch.where(fresh[:, None, None], fo, o)
        if cfg.lambda_init == "stored":
            return SeqState(x, o, s.lam[idx], s.mu[idx])
        return SeqState(x, o, torch.zeros_like(x), torch.zeros_like(o))

    # ------------------------------------------------------------------ loop
    def train_epoch(self) -> dict[str, float]:
        import time
        self._acc = [0.0, 0]
        start = time.perf_counter()
        bs = self.cfg.batch_size or self.n
        for idx in torch.randperm(self.n, generator=self.gen).to(self.U.device).split(bs):
            self.step(idx)
        if self.U.device.type == "cuda":
            torch.cuda.synchronize()
        if self.sched is not None:
            self.sched.step()
        self.seconds += time.perf_counter() - start
        self.epoch += 1
        m = self.evaluate()
        m["epoch"], m["seconds"] = self.epoch, self.seconds
        self.history.append(m)
        bad = [k for k, v in m.items() if not math.isfinite(v)]
        if bad or not all(bool(torch.isfinite(p).all()) for p in self.cell.parameters()):
            from .errors import DivergenceError
            raise DivergenceError(f"training diverged at epoch {self.epoch} ({', '.join(bad) or 'weights'} "
                                  "not finite); lower --lr, --mu-x or --mu-lambda, or raise --rho")
        return m

    def fit(self, epochs: int | None = None, callback=None) -> list[dict[str, float]]:
        while self.epoch < (self.cfg.epochs if epochs is None else epochs):
            m = self.train_epoch()
            if callback is not None:
                callback(self, m)
        return self.history

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        m: dict[str, float] = {}
        for split, U, Y in (("train", self.U, self.Y), ("test", self.Ut, self.Yt)):
            out = torch.cat([self.cell.forward_states(c, self.steps)[1] for c in U.split(4096)])
            B, S, K = out.shape
            m[f"{split}_loss"] = float(loss_value(self.cfg.loss, out.reshape(-1, K), Y.reshape(-1, K)).mean())
            if self.data.n_classes is not None:
                m[f"{split}_accuracy"] = float((out.argmax(2) == Y.argmax(2)).float().mean())
                m[f"{split}_last_step_accuracy"] = float((out[:, -1].argmax(1) == Y[:, -1].argmax(1)).float().mean())
            else:
                m[f"{split}_mse"] = float(((out - Y) ** 2).mean())
        m["constraint_violation"] = self._acc[0] / self._acc[1] if self._acc[1] else 0.0
        return m

    def summary(self) -> dict:
        last = self.history[-1] if self.history else self.evaluate()
        out = {"method": self.cfg.method, "epochs": self.epoch, "seconds": self.seconds}
        out.update({k: v for k, v in last.items() if k not in ("epoch", "seconds")})
        out["seconds_per_epoch"] = self.seconds / max(self.epoch, 1)
        out["dataset"] = self.data.name
        out["seq_len"] = self.data.seq_len
        out["state_size"] = self.cell.hidden
        out["parameters"] = sum(p.numel() for p in self.cell.parameters())
        if self.store is not None:
            out["state_numbers"] = sum(t.numel() for t in (self.store.x, self.store.o, self.store.lam, self.store.mu))
        return out
