"""Graph neural networks trained by the Lagrangian method (LP-GNN, Tiezzi et al. 2020).

Every node v of a (batch of) graph(s) carries one state per state layer k = 1..K, and the
state is a free variable constrained to equal the state transition of its neighbourhood::

    z^1_v = l_v,   z^k_v = [x^{k-1}_v, l_v]                          (layer input)
    a^k_v = W1^k agg_{u in ne(v)} x^k_u + W2^k z^k_v + b^k           (pre-activation)
    G^k_v = x^k_v - sigma(a^k_v)                                     (constraint, = 0 at a fixed point)

agg is the sum or the mean over the in-neighbours (arcs u -> v; an undirected edge is two
arcs).  A readout g maps the last state layer to outputs, node by node
(o_v = g([s_v, l_v])) or per graph after pooling (o_G = g(pool_{v in G} [s_v, l_v]),
pool = sum or mean: the graph-level readout the public LP-GNN code lacks).  By default
s_v = sigma(a^K_v), the transition's output, as in LP-GNN's code (``readout_from='transition'``;
'state' reads x^K_v); the two agree at a fixed point, but reading the transition keeps the
loss from dragging the free states x away from the constraints (the readout otherwise learns
on displaced states that inference never produces).  The Lagrangian, with MDMM's augmented
term (rho = 0: plain BDMM), is::

    L = sum_{supervised t} v(o_t, y_t) + sum_k sum_v [ lambda^k_v . G^k_v + rho/2 |G^k_v|^2 ]

and, with lambda~ = lambda + rho G and m^k = lambda~^k * sigma'(a^k) (the same shapes as the
feed-forward Eqs. 3-5 of the paper, the arcs now being the graph's)::

    dL/dx^k      = lambda~^k - A^T (m^k W1^k) - [k < K] (m^{k+1} W2^{k+1})[:, :d_k]
    dL/dlambda^k = G^k
    dL/dW1^k = -(m^k)^T (A x^k),   dL/dW2^k = -(m^k)^T z^k,   dL/db^k = -sum_v m^k_v

with A the (weighted) adjacency (A x)_v = agg_{u in ne(v)} x_u (for 'state', dv/dx^K is
added to dL/dx^K; for 'transition', m^K <- m^K - dv/ds * sigma'(a^K): the loss acts on
sigma(a^K) exactly where -lambda~^K does).  Everything is vectorised
over all nodes of all graphs: a batch of graphs is one big disjoint graph, and A and A^T are
``index_add_`` over the arc list, never a Python loop over nodes.  Inference on a new graph
is a relaxation with frozen weights: the fixed-point iteration x^k <- sigma(a^k(x)), with a
report (:class:`Relaxed`) saying whether it converged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import networkx as nx
import numpy as np
import torch
from torch import Tensor, nn

from .activations import get_activation
from .errors import ConfigError, DataError
from .lagrangian import loss_grad, loss_value

AGGREGATIONS = ("sum", "mean")
LEVELS = ("node", "graph")


@dataclass
class GraphBatch:
    """Many graphs as one disjoint graph: node features, arcs src -> dst, targets."""

    features: Tensor              # (N, F) node labels l_v
    src: Tensor                   # (E,) arc tails (long)
    dst: Tensor                   # (E,) arc heads (long): messages flow src -> dst
    graph_index: Tensor           # (N,) which graph each node belongs to
    n_graphs: int
    node_y: Tensor | None = None  # (N,) node classes (long), for node-level tasks
    node_mask: Tensor | None = None  # (N,) bool: nodes whose class enters the loss / the score
    graph_y: Tensor | None = None    # (n_graphs,) graph classes, for graph-level tasks

    @property
    def n_nodes(self) -> int:
        return self.features.shape[0]

    def to(self, device: str | torch.device, dtype: torch.dtype | None = None) -> GraphBatch:
        f = self.features.to(device, dtype) if dtype is not None else self.features.to(device)
        mv = (lambda t: None if t is None else t.to(device))
        return GraphBatch(f, self.src.to(device), self.dst.to(device), self.graph_index.to(device),
                          self.n_graphs, mv(self.node_y), mv(self.node_mask), mv(self.graph_y))

    def with_mask(self, mask: Tensor) -> GraphBatch:
        """The same graphs, with another set of supervised nodes (transductive splits)."""
        return GraphBatch(self.features, self.src, self.dst, self.graph_index, self.n_graphs,
                          self.node_y, mask, self.graph_y)


def batch_graphs(graphs: Sequence[nx.Graph], features: Sequence[np.ndarray],
                 node_y: Sequence[np.ndarray] | None = None,
                 graph_y: Sequence[int] | None = None) -> GraphBatch:
    """Join networkx graphs (nodes relabelled 0..n-1 in ``graph.nodes`` order) into one batch."""
    if not graphs:
        raise DataError("no graphs to batch")
    src, dst, gidx, offset = [], [], [], 0
    for g, G in enumerate(graphs):
        index = {v: i for i, v in enumerate(G.nodes)}
        e = np.array([(index[u], index[v]) for u, v in G.edges], dtype=np.int64).reshape(-1, 2)
        if not G.is_directed():
            e = np.concatenate([e, e[:, ::-1]])
        src.append(e[:, 0] + offset)
        dst.append(e[:, 1] + offset)
        gidx.append(np.full(len(index), g, dtype=np.int64))
        offset += len(index)
    feats = np.concatenate([np.asarray(f, np.float32).reshape(len(f), -1) for f in features])
    if feats.shape[0] != offset:
        raise DataError(f"{feats.shape[0]} feature rows for {offset} nodes")
    ny = torch.as_tensor(np.concatenate(node_y), dtype=torch.long) if node_y is not None else None
    return GraphBatch(torch.as_tensor(feats), torch.as_tensor(np.concatenate(src)),
                      torch.as_tensor(np.concatenate(dst)), torch.as_tensor(np.concatenate(gidx)),
                      len(graphs), ny, None if ny is None else torch.ones_like(ny, dtype=torch.bool),
                      None if graph_y is None else torch.as_tensor(np.asarray(graph_y), dtype=torch.long))


class GNN(nn.Module):
    """The state transitions f_w (one per state layer) and the readout g (node or graph level)."""

    def __init__(self, n_features: int, n_classes: int, state_dims: Sequence[int] = (16,),
                 readout_hidden: int = 16, activation: str = "tanh", aggregation: str = "sum",
                 level: str = "node", pool: str = "sum", generator: torch.Generator | None = None,
                 readout_from: str = "transition") -> None:
        super().__init__()
        if aggregation not in AGGREGATIONS or pool not in AGGREGATIONS:
            raise ConfigError(f"aggregation and pooling must be one of {AGGREGATIONS}")
        if level not in LEVELS:
            raise ConfigError(f"readout level must be one of {LEVELS}, got {level!r}")
        if not state_dims or min(state_dims) < 1 or readout_hidden < 0:
            raise ConfigError("--state-dim must be >= 1 and --state-layers >= 1; --readout-hidden >= 0")
        if readout_from not in ("transition", "state"):
            raise ConfigError(f"readout_from must be 'transition' or 'state', got {readout_from!r}")
        self.readout_from = readout_from
        self.dims, self.n_features, self.n_classes = list(state_dims), n_features, n_classes
        self.act, self.aggregation, self.level, self.pool = get_activation(activation), aggregation, level, pool
        self.activation_name = activation
        self.W1, self.W2, self.b = nn.ParameterList(), nn.ParameterList(), nn.ParameterList()
        for k, d in enumerate(self.dims):
            d_in = n_features + (self.dims[k - 1] if k else 0)
            # neighbour weights start small so that the initial transition is a contraction
            self.W1.append(nn.Parameter(_uniform((d, d), 0.5 / math.sqrt(d), generator)))
            self.W2.append(nn.Parameter(_uniform((d, d_in), 1 / math.sqrt(d_in), generator)))
            self.b.append(nn.Parameter(torch.zeros(d)))
        r_in = self.dims[-1] + n_features
        h = readout_hidden or n_classes
        self.U1 = nn.Parameter(_uniform((h, r_in), 1 / math.sqrt(r_in), generator))
        self.c1 = nn.Parameter(torch.zeros(h))
        self.readout_hidden = readout_hidden
        if readout_hidden:
            self.U2 = nn.Parameter(_uniform((n_classes, h), 1 / math.sqrt(h), generator))
            self.c2 = nn.Parameter(torch.zeros(n_classes))

    # -- the arc sums: (A x)_v = agg_{u -> v} x_u and its transpose --------------------
    def arc_weights(self, batch: GraphBatch) -> Tensor:
        if self.aggregation == "sum":
            return torch.ones(batch.src.shape[0], dtype=batch.features.dtype, device=batch.features.device)
        deg = torch.zeros(batch.n_nodes, dtype=batch.features.dtype, device=batch.features.device)
        deg.index_add_(0, batch.dst, torch.ones_like(batch.dst, dtype=deg.dtype))
        return 1.0 / deg[batch.dst]

    @staticmethod
    def agg(batch: GraphBatch, w: Tensor, x: Tensor) -> Tensor:
        return torch.zeros_like(x).index_add_(0, batch.dst, x[batch.src] * w[:, None])

    @staticmethod
    def agg_t(batch: GraphBatch, w: Tensor, y: Tensor) -> Tensor:
        return torch.zeros_like(y).index_add_(0, batch.src, y[batch.dst] * w[:, None])

    def layer_input(self, k: int, xs: Sequence[Tensor], batch: GraphBatch) -> Tensor:
        return batch.features if k == 0 else torch.cat([xs[k - 1], batch.features], 1)

    def preactivation(self, k: int, xs: Sequence[Tensor], batch: GraphBatch, w: Tensor) -> Tensor:
        return self.agg(batch, w, xs[k]) @ self.W1[k].T + self.layer_input(k, xs, batch) @ self.W2[k].T + self.b[k]

    def max_in_weight(self, batch: GraphBatch) -> float:
        """||A||_inf: the largest total arc weight into a node (max in-degree for 'sum', 1 for 'mean')."""
        tot = torch.zeros(batch.n_nodes, dtype=batch.features.dtype, device=batch.features.device)
        return float(tot.index_add_(0, batch.dst, self.arc_weights(batch)).max()) if batch.src.numel() else 0.0

    @torch.no_grad()
    def project_contractive_(self, gamma: float, max_in_weight: float) -> None:
        """Rescale each W1^k so that ||W1^k||_2 * ||A||_inf <= gamma < 1.

        With a 1-Lipschitz activation (tanh, relu) the map x^k -> sigma(a^k(x)) is then a
        contraction in max_v ||x_v||_2 on every graph whose ||A||_inf is at most
        ``max_in_weight``: its fixed point exists, is unique, and the iteration reaches it
        (Banach); the original GNN enforced the same property with a penalty.
        """
        if max_in_weight <= 0:
            return
        for W in self.W1:
            norm = float(torch.linalg.matrix_norm(W, 2))
            if norm * max_in_weight > gamma:
                W.mul_(gamma / (norm * max_in_weight))

    def zero_state(self, batch: GraphBatch) -> list[Tensor]:
        f = batch.features
        return [torch.zeros(batch.n_nodes, d, dtype=f.dtype, device=f.device) for d in self.dims]

    # -- readout g ----------------------------------------------------------------------
    def readout_input(self, xs: Sequence[Tensor], batch: GraphBatch, last: Tensor | None = None) -> Tensor:
        """[x^K_v, l_v] per node (pooled per graph); with readout_from='transition' sigma(a^K_v)
        replaces x^K_v (``last``, when the caller has it), which is x^K_v at a fixed point."""
        if last is None:
            last = xs[-1] if self.readout_from == "state" else self.act.fn(
                self.preactivation(len(self.dims) - 1, xs, batch, self.arc_weights(batch)))
        r = torch.cat([last, batch.features], 1)
        if self.level == "node":
            return r
        pooled = torch.zeros(batch.n_graphs, r.shape[1], dtype=r.dtype, device=r.device)
        pooled.index_add_(0, batch.graph_index, r)
        return pooled / self.graph_sizes(batch)[:, None] if self.pool == "mean" else pooled

    def graph_sizes(self, batch: GraphBatch) -> Tensor:
        n = torch.zeros(batch.n_graphs, dtype=batch.features.dtype, device=batch.features.device)
        return n.index_add_(0, batch.graph_index, torch.ones_like(batch.graph_index, dtype=n.dtype))

    def readout(self, xs: Sequence[Tensor], batch: GraphBatch) -> Tensor:
        """Outputs (logits): one row per node, or per graph for a graph-level readout."""
        h = self.readout_input(xs, batch) @ self.U1.T + self.c1
        return torch.tanh(h) @ self.U2.T + self.c2 if self.readout_hidden else h

    def targets(self, batch: GraphBatch) -> tuple[Tensor, Tensor]:
        """(one-hot targets, 0/1 row weights) aligned with :meth:`readout`'s rows."""
        y = batch.node_y if self.level == "node" else batch.graph_y
        if y is None:
            raise DataError(f"the batch has no {self.level}-level targets")
        mask = batch.node_mask if self.level == "node" and batch.node_mask is not None else torch.ones_like(y)
        onehot = torch.nn.functional.one_hot(y, self.n_classes).to(batch.features.dtype)
        return onehot, mask.to(batch.features.dtype)


def _uniform(shape: tuple[int, int], bound: float, generator: torch.Generator | None) -> Tensor:
    return (torch.rand(shape, generator=generator) * 2 - 1) * bound


# -- the Lagrangian, by autograd-friendly forward ops (the oracle) and by explicit formulas --
def lagrangian(model: GNN, batch: GraphBatch, xs: Sequence[Tensor], lams: Sequence[Tensor],
               rho: float = 0.0, loss: str = "ce") -> Tensor:
    """L = sum of the supervised losses + sum_k sum_v (lambda.G + rho/2 |G|^2), a scalar."""
    w = model.arc_weights(batch)
    y, mask = model.targets(batch)
    total = (loss_value(loss, model.readout(xs, batch), y) * mask).sum()
    for k in range(len(model.dims)):
        G = xs[k] - model.act.fn(model.preactivation(k, xs, batch, w))
        total = total + (lams[k] * G).sum() + 0.5 * rho * (G * G).sum()
    return total


@dataclass
class Gradients:
    dx: list[Tensor]          # dL/dx^k
    G: list[Tensor]           # dL/dlambda^k (the constraint residuals)
    dw: list[Tensor]          # dL/dw, aligned with model.parameters()
    loss: Tensor              # the supervised loss (summed)


@torch.no_grad()
def gradients(model: GNN, batch: GraphBatch, xs: Sequence[Tensor], lams: Sequence[Tensor],
              rho: float = 0.0, loss: str = "ce") -> Gradients:
    """The partial derivatives of :func:`lagrangian`, by the explicit formulas of the module doc."""
    K, w = len(model.dims), model.arc_weights(batch)
    Ax = [model.agg(batch, w, xs[k]) for k in range(K)]
    z = [model.layer_input(k, xs, batch) for k in range(K)]
    G, m, dsig = [], [], []
    for k in range(K):
        a = Ax[k] @ model.W1[k].T + z[k] @ model.W2[k].T + model.b[k]
        s = model.act.fn(a)
        G.append(xs[k] - s)
        dsig.append(model.act.derivative(a, s))
        m.append((lams[k] + rho * G[k]) * dsig[k])     # lambda~ sigma'(a)
    # readout: an ordinary small net, differentiated by hand (o = U2 tanh(U1 r + c1) + c2)
    y, mask = model.targets(batch)
    r = model.readout_input(xs, batch, last=s if model.readout_from == "transition" else xs[-1])
    h = r @ model.U1.T + model.c1
    if model.readout_hidden:
        t = torch.tanh(h)
        o = t @ model.U2.T + model.c2
        do = loss_grad(loss, o, y) * mask[:, None]
        dU2, dc2 = do.T @ t, do.sum(0)
        dh = (do @ model.U2) * (1 - t * t)
    else:
        o = h
        dh = loss_grad(loss, o, y) * mask[:, None]
    dU1, dc1 = dh.T @ r, dh.sum(0)
    dr = (dh @ model.U1)[:, :model.dims[-1]]
    if model.level == "graph":
        if model.pool == "mean":
            dr = dr / model.graph_sizes(batch)[:, None]
        dr = dr[batch.graph_index]
    if model.readout_from == "transition":
        m[-1] = m[-1] - dr * dsig[-1]   # the loss reaches sigma(a^K) like -lambda: m^K <- m^K - dv/ds sigma'
    dx = []
    for k in range(K):
        d = lams[k] + rho * G[k] - model.agg_t(batch, w, m[k] @ model.W1[k])
        if k + 1 < K:
            d = d - (m[k + 1] @ model.W2[k + 1])[:, :model.dims[k]]
        dx.append(d)
    if model.readout_from == "state":
        dx[-1] = dx[-1] + dr
    dW1 = [-(m[k].T @ Ax[k]) for k in range(K)]
    dW2 = [-(m[k].T @ z[k]) for k in range(K)]
    db = [-m[k].sum(0) for k in range(K)]
    by_param = {id(p): g for p, g in zip(model.W1, dW1)}
    by_param.update({id(p): g for p, g in zip(model.W2, dW2)})
    by_param.update({id(p): g for p, g in zip(model.b, db)})
    by_param.update({id(model.U1): dU1, id(model.c1): dc1})
    if model.readout_hidden:
        by_param.update({id(model.U2): dU2, id(model.c2): dc2})
    total_loss = (loss_value(loss, o, y) * mask).sum()
    return Gradients(dx, G, [by_param[id(p)] for p in model.parameters()], total_loss)


# -- inference: relaxation with frozen weights ----------------------------------------
@dataclass
class Relaxed:
    """The states after a fixed-point iteration, and whether it converged."""

    xs: list[Tensor]
    converged: bool
    iterations: int
    step: float         # max |x_new - x| of the last iteration
    residual: float     # max |G| at the returned states (substitution into the constraints)

    def describe(self) -> str:
        if self.converged:
            return f"fixed point reached in {self.iterations} iterations (max |G| = {self.residual:.2e})"
        return (f"fixed-point iteration did NOT converge in {self.iterations} iterations: last step "
                f"{self.step:.2e}, max |G| = {self.residual:.2e}; raise --max-iter or make the "
                f"transition contractive (smaller weights, --aggregation mean)")


def transition_sweep(model: GNN, batch: GraphBatch, xs: list[Tensor], w: Tensor) -> list[Tensor]:
    """One sweep x^k <- sigma(a^k(x)), layer after layer (layer k reads the new x^{k-1})."""
    new: list[Tensor] = []
    for k in range(len(model.dims)):
        cur = new + xs[k:]
        new.append(model.act.fn(model.preactivation(k, cur, batch, w)))
    return new


@torch.no_grad()
def residual(model: GNN, batch: GraphBatch, xs: Sequence[Tensor]) -> float:
    """max_k,v |G^k_v|: how far the states are from satisfying the constraints."""
    w = model.arc_weights(batch)
    return max(float((xs[k] - model.act.fn(model.preactivation(k, xs, batch, w))).abs().max())
               for k in range(len(model.dims))) if batch.n_nodes else 0.0


@torch.no_grad()
def relax(model: GNN, batch: GraphBatch, xs: Sequence[Tensor] | None = None, tol: float = 1e-5,
          max_iter: int = 500) -> Relaxed:
    """Fixed-point iteration of the state constraints with frozen weights, from ``xs`` (or 0)."""
    w = model.arc_weights(batch)
    cur = [x.clone() for x in xs] if xs is not None else model.zero_state(batch)
    step, it = math.inf, 0
    while it < max_iter:
        new = transition_sweep(model, batch, cur, w)
        step = max(float((a - b).abs().max()) for a, b in zip(new, cur)) if batch.n_nodes else 0.0
        cur, it = new, it + 1
        if not math.isfinite(step) or step <= tol:
            break
    return Relaxed(cur, math.isfinite(step) and step <= tol, it, step, residual(model, batch, cur))


def unrolled(model: GNN, batch: GraphBatch, iterations: int) -> list[Tensor]:
    """T sweeps from x = 0, differentiable: the backpropagation baseline's states."""
    w = model.arc_weights(batch)
    xs = model.zero_state(batch)
    for _ in range(iterations):
        xs = transition_sweep(model, batch, xs, w)
    return xs


def accuracy(model: GNN, batch: GraphBatch, xs: Sequence[Tensor]) -> float:
    """Fraction of the supervised rows (masked nodes, or graphs) classified correctly."""
    y, mask = model.targets(batch)
    with torch.no_grad():
        hit = (model.readout(xs, batch).argmax(1) == y.argmax(1)).to(mask.dtype) * mask
    return float(hit.sum() / mask.sum().clamp(min=1))


# -- training: the saddle search (MDMM / BDMM) and its backpropagation baseline ---------
@dataclass
class GNNTrainConfig:
    method: str = "mdmm"        # mdmm, bdmm (rho = 0) or backprop (through `unroll` sweeps)
    epochs: int = 1000
    lr: float = 0.01            # Adam on the weights
    weight_decay: float = 0.0
    mu_x: float = 0.5           # step on the node states (descent)
    mu_lambda: float = 0.5      # step on the multipliers (ascent)
    rho: float = 1.0
    relax_steps: int = 1        # state/multiplier steps per weight step (the last one is joint)
    unroll: int = 10            # backprop: sweeps from x = 0 differentiated through
    max_iter: int = 500         # inference: fixed-point iterations at most
    tol: float = 1e-5           # inference: stop when max |x_new - x| <= tol
    eval_every: int = 50
    loss: str = "ce"
    contraction: float = 0.9    # keep ||W1|| ||A||_inf <= this after every weight step (0: off)
    lr_schedule: str = "cosine"  # 'cosine' (lr to 0 over the epochs) or 'constant'
    predict_sweeps: int = 0     # x predicted by this many fixed-point sweeps from the stored x (0: pure LP-GNN)

    def validate(self) -> None:
        if self.method not in ("mdmm", "bdmm", "backprop"):
            raise ConfigError(f"unknown method {self.method!r} for a graph task; choose mdmm, bdmm or backprop")
        for name in ("epochs", "relax_steps", "unroll", "max_iter", "eval_every", "predict_sweeps"):
            if getattr(self, name) < (0 if name in ("epochs", "predict_sweeps") else 1):
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.lr_schedule not in ("cosine", "constant"):
            raise ConfigError(f"--lr-schedule must be 'cosine' or 'constant', got {self.lr_schedule!r}")
        if not 0 <= self.contraction < 1:
            raise ConfigError(f"--contraction must be in [0, 1) (0: off), got {self.contraction}")
        if not (self.lr > 0 and self.mu_x > 0 and self.mu_lambda >= 0 and self.rho >= 0):
            raise ConfigError("--lr and --mu-x must be > 0, --mu-lambda and --rho >= 0")


class GNNTrainer:
    """Full-batch training on one (disjoint) training graph; states kept per node (LP-GNN)."""

    def __init__(self, model: GNN, train: GraphBatch, cfg: GNNTrainConfig, test: GraphBatch | None = None):
        cfg.validate()
        self.model, self.train, self.test, self.cfg = model, train, test, cfg
        self.rho = 0.0 if cfg.method == "bdmm" else cfg.rho
        self.opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.sched = (torch.optim.lr_scheduler.CosineAnnealingLR(self.opt, max(cfg.epochs, 1))
                      if cfg.lr_schedule == "cosine" else None)
        self.xs = model.zero_state(train)                       # LP-GNN: x = lambda = 0 at the start
        self.lams = [torch.zeros_like(x) for x in self.xs]
        self.rows = float(model.targets(train)[1].sum().clamp(min=1))
        self.epoch, self.history, self.seconds, self.violation = 0, [], 0.0, math.nan
        self.max_in = model.max_in_weight(train)
        self.project()

    def project(self) -> None:
        if self.cfg.contraction > 0:
            self.model.project_contractive_(self.cfg.contraction, self.max_in)

    def step(self) -> None:
        cfg = self.cfg
        if cfg.method == "backprop":
            y, mask = self.model.targets(self.train)
            xs = unrolled(self.model, self.train, cfg.unroll)
            lv = (loss_value(cfg.loss, self.model.readout(xs, self.train), y) * mask).sum() / self.rows
            self.opt.zero_grad()
            lv.backward()
            self.opt.step()
            self.project()
            self.violation = residual(self.model, self.train, [x.detach() for x in xs])
            return
        with torch.no_grad():
            if cfg.predict_sweeps:  # "a sort of prediction" of x (MATH.md): sweeps with the current weights
                w = self.model.arc_weights(self.train)
                for _ in range(cfg.predict_sweeps):
                    self.xs = transition_sweep(self.model, self.train, self.xs, w)
            for r in range(cfg.relax_steps):
                g = gradients(self.model, self.train, self.xs, self.lams, self.rho, cfg.loss)
                if r == cfg.relax_steps - 1:       # joint Jacobi step: w, x and lambda from the same state
                    for p, d in zip(self.model.parameters(), g.dw):
                        p.grad = d / self.rows
                self.xs = [x - cfg.mu_x * d for x, d in zip(self.xs, g.dx)]             # descent on x
                self.lams = [lam + cfg.mu_lambda * G for lam, G in zip(self.lams, g.G)]  # ascent on lambda
            self.violation = float(sum((G * G).sum() for G in g.G) / sum(G.numel() for G in g.G))
        self.opt.step()
        self.project()
        if not math.isfinite(self.violation):
            from .errors import DivergenceError
            raise DivergenceError(f"GNN training diverged at epoch {self.epoch} (constraint violation "
                                  f"{self.violation}); lower --mu-x/--mu-lambda/--lr or raise --rho")

    def states(self, batch: GraphBatch) -> tuple[list[Tensor], Relaxed]:
        """Inference: relaxation to the fixed point; backprop's prediction is its own T sweeps."""
        rel = relax(self.model, batch, tol=self.cfg.tol, max_iter=self.cfg.max_iter)
        if self.cfg.method == "backprop":
            with torch.no_grad():
                return unrolled(self.model, batch, self.cfg.unroll), rel
        return rel.xs, rel

    def evaluate(self) -> dict[str, float]:
        xs, rel = self.states(self.train)
        m = {"epoch": self.epoch, "train_accuracy": accuracy(self.model, self.train, xs),
             "constraint_violation": self.violation, "train_converged": float(rel.converged),
             "train_fixed_point_residual": rel.residual, "seconds": self.seconds}
        if self.test is not None:
            xs, rel = self.states(self.test)
            m.update(test_accuracy=accuracy(self.model, self.test, xs), test_converged=float(rel.converged),
                     test_fixed_point_iterations=rel.iterations, test_fixed_point_residual=rel.residual)
            if self.cfg.method == "backprop":
                m["test_accuracy_fixed_point"] = accuracy(self.model, self.test, rel.xs)
        return m

    def fit(self, callback=None) -> dict[str, float]:
        import time
        while self.epoch < self.cfg.epochs:
            t0 = time.perf_counter()
            self.step()
            if self.sched is not None:
                self.sched.step()
            self.seconds += time.perf_counter() - t0
            self.epoch += 1
            if self.epoch % self.cfg.eval_every == 0 or self.epoch == self.cfg.epochs:
                self.history.append(self.evaluate())
                if callback is not None:
                    callback(self, self.history[-1])
        return self.history[-1] if self.history else self.evaluate()
