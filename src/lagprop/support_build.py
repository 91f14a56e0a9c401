"""Building the network by learning: accuracy against size, learn-and-prune, the transition.

* :func:`removal_curve`: one trained net, hidden neurons removed in order of their
  contribution (straw neurons first, as they contribute nothing on the training set),
  held-out accuracy after each removal, no retraining: a cheap accuracy-vs-size curve.
* :func:`learn_and_prune`: the paper's "building by learning": train with l1, prune the
  straw neurons, continue on the smaller net with a larger alpha, and so on; each round is
  a point of the curve, and :func:`smallest_within` picks the smallest net that keeps a
  target accuracy.  (Growing neurons where constraints cannot be met is not implemented.)
* :func:`stationary_lambda`: the paper's transition.  With alpha = 0 and v = 0 every lambda
  vanishes (no neuron is needed to hold a constraint); prune further and, once v = 0 cannot
  be met, lambda becomes non-zero on (nearly) every neuron.  Measured at the stationary
  point of Eq. 6 for the given weights.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import torch
from torch import Tensor

from .data import Dataset
from .dynamics import solve_stationary
from .lagrangian import loss_value
from .network import Network
from .support import (
    accuracy,
    count_weights,
    forward_hidden,
    get_arc_weights,
    hidden_columns,
    prune_straw,
    put_arc_weights,
)
from .train import TrainConfig, Trainer


@torch.no_grad()
def contributions(net: Network, X: Tensor) -> Tensor:
    """Per hidden neuron: mean |x| over ``X`` times the norm of its outgoing weights."""
    w = get_arc_weights(net)
    tails = torch.tensor([t for t, _ in net.graph.arcs], dtype=torch.long, device=w.device)
    out_norm = torch.zeros(net.graph.n, dtype=w.dtype, device=w.device).index_add(0, tails, w * w).sqrt()
    hid = torch.tensor(net.graph.hidden, dtype=torch.long, device=w.device)
    return forward_hidden(net, X).abs().mean(0) * out_norm[hid]


@torch.no_grad()
def removal_curve(net: Network, X: Tensor, Y: Tensor, Xt: Tensor, Yt: Tensor,
                  points: int = 24) -> list[dict]:
    """Held-out accuracy after removing the k least contributing hidden neurons, no retraining.

    Removal is done by zeroing the neurons' outgoing arcs, which is the same function as the
    pruned graph (a neuron with no outgoing weight reaches nothing).  Straw neurons (zero
    contribution on ``X``) go first, so the curve passes through the pruned size.
    """
    order = torch.argsort(contributions(net, X), stable=True).tolist()
    hidden = net.graph.hidden
    n_h = len(hidden)
    ks = sorted(set(np.linspace(0, n_h - 1, points).round().astype(int).tolist()) | {0})
    straw = int((forward_hidden(net, X).abs().sum(0) == 0).sum())
    ks = sorted(set(ks) | {straw} - {n_h})
    w0 = get_arc_weights(net)
    tails = torch.tensor([t for t, _ in net.graph.arcs], dtype=torch.long, device=w0.device)
    work = copy.deepcopy(net)
    weights_per = {i: 0 for i in range(net.graph.n)}
    for t, h in net.graph.arcs:
        weights_per[t] += 1
        weights_per[h] += 1
    rows = []
    for k in ks:
        gone = torch.zeros(net.graph.n, dtype=torch.bool, device=w0.device)
        gone[torch.tensor([hidden[j] for j in order[:k]], dtype=torch.long, device=w0.device)] = True
        put_arc_weights(work, torch.where(gone[tails], torch.zeros_like(w0), w0))
        lost = sum(weights_per[hidden[j]] + int(net.graph.bias[hidden[j]]) for j in order[:k])
        rows.append({"hidden": n_h - k, "weights": count_weights(net) - lost,
                     "test_accuracy": accuracy(work, Xt, Yt), "train_accuracy": accuracy(work, X, Y),
                     "straw_only": k <= straw})
    return rows


@torch.no_grad()
def stationary_lambda(net: Network, X: Tensor, Y: Tensor, loss: str = "ce", tol: float = 1e-3) -> dict:
    """Mean loss v and the hidden lambdas at the alpha = 0 stationary point (Eq. 6).

    ``support_fraction``: share of (example, hidden neuron) with |lambda| > tol, that is the
    neurons that "react" to hold a constraint; near 0 while v = 0 can be met.
    """
    xs, lams, _ = solve_stationary(net, net.split_inputs(X), Y, loss, max_sweeps=200, tol=0.0)
    lam = hidden_columns(net, lams).abs()
    return {"train_loss": float(loss_value(loss, net.gather_outputs(xs), Y).mean()),
            "mean_abs_lambda": float(lam.mean()) if lam.numel() else 0.0,
            "support_fraction": float((lam > tol).float().mean()) if lam.numel() else 0.0}


def learn_and_prune(net: Network, data: Dataset, cfg: TrainConfig, rounds: int = 5, growth: float = 2.0,
                    finetune_epochs: int = 0,
                    callback: Callable[[dict], None] | None = None) -> tuple[list[dict], list[Network]]:
    """Repeated learn-and-prune: each round trains ``cfg.epochs`` with l1 = ``cfg.l1``,
    prunes the neurons straw (forward criterion) for every training example, optionally
    fine-tunes the pruned net without l1, then multiplies alpha by ``growth``.

    Returns one row per round (alpha, hidden, weights, test accuracy, the transition
    figures) and the network after each round.
    """
    rows, nets = [], []
    alpha = cfg.l1
    for r in range(rounds):
        tr = Trainer(net, data, replace(cfg, l1=alpha))
        tr.fit()
        small, info = prune_straw(tr)
        if finetune_epochs > 0:
            ft = Trainer(small, data, replace(cfg, l1=0.0, epochs=finetune_epochs))
            ft.fit()
        row = {"round": r + 1, "alpha": alpha, "hidden": len(small.graph.hidden),
               "weights": count_weights(small), "test_accuracy_before_prune": info["test_accuracy_before_prune"],
               "test_accuracy_pruned": info["test_accuracy"],
               "test_accuracy": accuracy(small, tr.Xt, tr.Yt), "train_accuracy": accuracy(small, tr.X, tr.Y),
               "train_output_max_change": info["train_output_max_change"]}
        row.update(stationary_lambda(small, tr.X, tr.Y, cfg.loss))
        rows.append(row)
        nets.append(small)
        if callback is not None:
            callback(row)
        net = small
        alpha *= growth
    return rows, nets


def smallest_within(rows: list[dict], target: float, key: str = "test_accuracy") -> dict | None:
    """The row with the fewest hidden neurons whose ``key`` is at least ``target``."""
    ok = [r for r in rows if r[key] >= target]
    return min(ok, key=lambda r: (r["hidden"], -r[key])) if ok else None
