"""Support and straw neurons (paper section 4): analysis, pruning, building by learning.

With the l1 term alpha*|x| on hidden outputs, at the end of learning each hidden neuron i
is, for each example kappa, either

* a **support** neuron: x_ki != 0 and lambda_ki != 0; with v = 0 the paper's Eq. 7 says
  alpha sign(x_ki) + lambda_ki = 0; in general (loss not at 0, deep nets) the stationarity
  condition of Eq. 4 keeps the child sum:
  alpha sign(x_ki) + lambda_ki - sum_r lambda_kr sigma'(a_kr) w_ri = 0; or
* a **straw** neuron: x_ki = 0 (exactly, thanks to the proximal step), or
* neither (x_ki != 0 but lambda_ki = 0 within the tolerance, or mid-learning states).

Tolerances (stated, and stored with every analysis): support needs |x| > x_tol and
|lambda| > lam_tol; straw needs |x| <= x_tol (x_tol = 0: exactly zero).

Two straw criteria differ until the state has converged (MATH.md), so both are offered:

* ``'relaxed'``: x of the relaxed state (what the saddle dynamics hold: the stored x, or the
  forward pass followed by the K relaxation steps with the stored lambda, as a training
  batch sees it) is zero;
* ``'forward'``: the neuron is inactive in the feed-forward pass, sigma(a_ki) = 0.

A hidden neuron that is straw *in the forward pass* for every training example sends
w_ri * 0 to every child, so removing it (with its arcs) leaves every training output
unchanged: this is what :func:`prune_straw` removes by default.  Removing neurons straw only
by the relaxed criterion may change outputs; the change is measured and reported.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from .dynamics import Dynamics, forward_state, relax_step
from .errors import ConfigError, GraphError
from .graph import Graph
from .lagrangian import evaluate, loss_grad
from .network import Network

STRAW, NEITHER, SUPPORT = 0, 1, 2
CRITERIA = ("forward", "relaxed", "both")


# ------------------------------------------------------------------ states
def hidden_columns(net: Network, xs: Sequence[Tensor | None]) -> Tensor:
    """The hidden neurons' values as ``(batch, |H|)`` in the graph's hidden order."""
    cols = [xs[net.where[i][0]][:, net.where[i][1]] for i in net.graph.hidden]
    if not cols:
        return xs[0].new_zeros(xs[0].shape[0], 0)
    return torch.stack(cols, 1)


@torch.no_grad()
def forward_hidden(net: Network, X: Tensor) -> Tensor:
    """sigma(a) of every hidden neuron in the feed-forward pass, ``(n, |H|)``."""
    return torch.cat([hidden_columns(net, net.forward_all(c)) for c in X.split(8192)])


@torch.no_grad()
def relaxed_state(trainer) -> tuple[list, list]:
    """The saddle state of every training example as the trainer's next batch would see it.

    x: the stored x (``state='stored'``, visited examples), else the forward pass; lambda:
    the stored lambda, else 0; then ``relax_steps`` relaxation steps with the l1 prox.
    For the stored-state modes the stored x is already relaxed and is used as it is.
    """
    net, cfg, st = trainer.net, trainer.cfg, trainer.state
    if st is None:
        raise ConfigError("the relaxed straw criterion needs a Lagrangian method (it reads x and "
                          "lambda); backprop has none: use the 'forward' criterion")
    x_in = net.split_inputs(trainer.X)
    base = net.input_contribution(x_in)
    stored_x = cfg.state == "stored" and st.x[1] is not None and bool(st.visited.all())
    lam_stored = cfg.lambda_init == "stored" and st.lam[1] is not None
    xs = [x_in] + st.get_x(None)[1:] if stored_x else forward_state(net, x_in, base)
    lams = [None] + (st.get_lambda(None)[1:] if lam_stored else [torch.zeros_like(t) for t in xs[1:]])
    if not stored_x:
        alpha = trainer.alpha.for_batch(len(net.groups), None) if trainer.alpha else None
        for _ in range(getattr(trainer, "relax_steps", None) or cfg.relax_steps or 1):  # 0 in cfg: the depth
            xs, lams = relax_step(net, xs, lams, trainer.Y, trainer.dyn, alpha, base)
    return xs, lams


# ---------------------------------------------------------------- analysis
@dataclass
class SupportAnalysis:
    """Support / straw / neither for every (training example, hidden neuron)."""

    codes: np.ndarray             # (n_examples, |H|) int8: STRAW, NEITHER or SUPPORT
    hidden: list[int]             # graph indices of the hidden neurons (columns of codes)
    x_tol: float
    lam_tol: float
    criterion: str                # which x decided straw: 'relaxed' or 'forward'
    residuals: dict = field(default_factory=dict)

    @property
    def support_fraction(self) -> np.ndarray:
        return (self.codes == SUPPORT).mean(0)

    @property
    def straw_fraction(self) -> np.ndarray:
        return (self.codes == STRAW).mean(0)

    @property
    def straw_all(self) -> np.ndarray:
        """Per hidden neuron: straw for every example (prunable)."""
        return (self.codes == STRAW).all(0)

    def summary(self) -> dict:
        return {"criterion": self.criterion, "x_tol": self.x_tol, "lambda_tol": self.lam_tol,
                "support_entries": float((self.codes == SUPPORT).mean()),
                "straw_entries": float((self.codes == STRAW).mean()),
                "neither_entries": float((self.codes == NEITHER).mean()),
                "straw_for_all_examples": int(self.straw_all.sum()),
                "never_straw": int((self.straw_fraction == 0).sum()), **self.residuals}


def classify(x: Tensor, lam: Tensor, x_tol: float = 0.0, lam_tol: float = 1e-6) -> np.ndarray:
    """Codes for ``(n, |H|)`` x and lambda: straw |x| <= x_tol; support |x| > x_tol and |lambda| > lam_tol."""
    straw = x.abs() <= x_tol
    support = ~straw & (lam.abs() > lam_tol)
    codes = torch.full(x.shape, NEITHER, dtype=torch.int8, device=x.device)
    codes[straw] = STRAW
    codes[support] = SUPPORT
    return codes.cpu().numpy()


@torch.no_grad()
def stationarity_residuals(net: Network, xs: Sequence[Tensor], lams: Sequence[Tensor | None], y: Tensor,
                           dyn: Dynamics, alpha: Sequence[Tensor | float | None] | None,
                           x_tol: float = 0.0) -> dict:
    """Residuals of the l1 stationarity conditions at state (x, lambda), over hidden neurons.

    * ``eq7``: |alpha sign(x) + lambda| on support entries (x != 0): the paper's Eq. 7, which
      assumes v = 0 (output lambdas vanish) and drops the child sum;
    * ``kkt_support``: |alpha sign(x) + lambda~ - sum_r lambda~_r sigma'_r w_ri| on x != 0
      (Eq. 4 = 0 with the loss term included);
    * ``kkt_straw``: how far |lambda~ - child sum| exceeds alpha on x = 0 (0 when the
      subdifferential condition holds);
    * ``violation``: max |G|; ``output_lambda``: max |lambda| on the outputs.
    Each as max and mean of |.|.
    """
    terms = evaluate(net, xs, lams, dyn.rho)
    c = net.child_sums(terms.m, xs[0].shape[0])
    dv = net.scatter_outputs(loss_grad(dyn.loss, net.gather_outputs(xs), y), xs)
    e7, ks, kz, outl = [], [], [], []
    for g in range(1, len(net.groups)):
        if net.groups[g].role == "hidden":
            a = 0.0 if alpha is None or alpha[g] is None else alpha[g]
            a = torch.as_tensor(a, dtype=xs[g].dtype, device=xs[g].device).expand_as(xs[g])
            sup = xs[g].abs() > x_tol
            smooth = terms.lam_eff[g] - (c[g] if c[g] is not None else 0)
            e7.append((a * torch.sign(xs[g]) + lams[g])[sup].abs())
            ks.append((a * torch.sign(xs[g]) + smooth)[sup].abs())
            kz.append((smooth.abs() - a).clamp(min=0)[~sup])
        if dv[g] is not None:
            outl.append(lams[g].abs().flatten())
    out = {}
    for name, parts in (("eq7", e7), ("kkt_support", ks), ("kkt_straw", kz), ("output_lambda", outl)):
        v = torch.cat(parts) if parts else torch.zeros(0)
        out[f"{name}_max"] = float(v.max()) if v.numel() else 0.0
        out[f"{name}_mean"] = float(v.mean()) if v.numel() else 0.0
    out["violation_max"] = max(float(terms.G[g].abs().max()) for g in range(1, len(net.groups)))
    return out


@torch.no_grad()
def analyse(trainer, criterion: str = "relaxed", x_tol: float = 0.0, lam_tol: float = 1e-6) -> SupportAnalysis:
    """Support / straw / neither of every training example and hidden neuron, with residuals.

    ``criterion='relaxed'`` decides straw from the relaxed state's x, ``'forward'`` from the
    forward pass; lambda always comes from the relaxed state (backprop: no lambda, so
    nothing is support and only the forward criterion applies).
    """
    if criterion not in ("relaxed", "forward"):
        raise ConfigError(f"straw criterion must be 'relaxed' or 'forward', got {criterion!r}")
    net = trainer.net
    if trainer.state is None:
        if criterion == "relaxed":
            relaxed_state(trainer)  # raises the explanatory error
        x = forward_hidden(net, trainer.X)
        return SupportAnalysis(classify(x, torch.zeros_like(x), x_tol, lam_tol), net.graph.hidden, x_tol,
                               lam_tol, criterion)
    xs, lams = relaxed_state(trainer)
    alpha = trainer.alpha.for_batch(len(net.groups), None) if trainer.alpha else None
    res = stationarity_residuals(net, xs, lams, trainer.Y, trainer.dyn, alpha, x_tol)
    x = hidden_columns(net, xs) if criterion == "relaxed" else forward_hidden(net, trainer.X)
    return SupportAnalysis(classify(x, hidden_columns(net, lams), x_tol, lam_tol), net.graph.hidden,
                           x_tol, lam_tol, criterion, res)


def straw_neurons(trainer, criterion: str = "forward", x_tol: float = 0.0) -> list[int]:
    """Graph indices of the hidden neurons straw for every training example.

    ``'forward'``: inactive in the forward pass (pruning them cannot change a training
    output); ``'relaxed'``: x = 0 in the relaxed state; ``'both'``: both at once.
    """
    if criterion not in CRITERIA:
        raise ConfigError(f"--prune-criterion must be one of {', '.join(CRITERIA)}, got {criterion!r}")
    hidden = np.array(trainer.net.graph.hidden)
    masks = []
    if criterion in ("forward", "both"):
        masks.append((forward_hidden(trainer.net, trainer.X).abs() <= x_tol).all(0).cpu().numpy())
    if criterion in ("relaxed", "both"):
        xs, _ = relaxed_state(trainer)
        masks.append((hidden_columns(trainer.net, xs).abs() <= x_tol).all(0).cpu().numpy())
    return hidden[np.logical_and.reduce(masks)].tolist()


# ----------------------------------------------------------------- pruning
def _slots(net: Network) -> tuple[Tensor, Tensor, Tensor]:
    s = torch.tensor(net.arc_slot, dtype=torch.long).reshape(-1, 3)
    return s[:, 0], s[:, 1], s[:, 2]


def get_arc_weights(net: Network) -> Tensor:
    """Every arc's weight in graph arc order (vectorised :meth:`Network.arc_weights`)."""
    p, r, c = _slots(net)
    out = torch.empty(len(p), dtype=net.dtype, device=net.device)
    with torch.no_grad():
        for k, w in enumerate(net.weights):
            sel = torch.nonzero(p == k).flatten()
            out[sel] = w[r[sel], c[sel]] if w.ndim == 2 else w[r[sel]]
    return out


def put_arc_weights(net: Network, values: Tensor) -> None:
    p, r, c = _slots(net)
    with torch.no_grad():
        for k, w in enumerate(net.weights):
            sel = torch.nonzero(p == k).flatten()
            if w.ndim == 2:
                w[r[sel], c[sel]] = values[sel].to(w)
            else:
                w[r[sel]] = values[sel].to(w)


def neuron_biases(net: Network) -> Tensor:
    """The bias of every neuron in graph order (0 for inputs and for neurons without one)."""
    out = torch.zeros(net.graph.n, dtype=net.dtype, device=net.device)
    with torch.no_grad():
        for i in range(net.graph.n):
            g, col = net.where[i]
            if g > 0 and net.graph.bias[i]:
                out[i] = net.bias_of(g)[col]
    return out


def count_weights(net: Network) -> int:
    """Learnable numbers: one per arc plus one per neuron with a bias."""
    return net.num_arcs() + sum(net.graph.bias)


def prune(net: Network, remove: Sequence[int]) -> Network:
    """A new, smaller network without the hidden neurons ``remove`` (graph indices) and their arcs.

    The remaining neurons keep their order, names, activations, biases and weights; an MLP's
    layer structure is kept, so its blocks stay dense matrices.
    """
    g = net.graph
    drop = set(int(i) for i in remove)
    bad = [i for i in drop if not 0 <= i < g.n or g.roles[i] != "hidden"]
    if bad:
        raise GraphError(f"only hidden neurons can be pruned; {bad[:5]} are not hidden neurons")
    keep = [i for i in range(g.n) if i not in drop]
    new_id = {old: k for k, old in enumerate(keep)}
    arc_keep = [a for a, (t, h) in enumerate(g.arcs) if t not in drop and h not in drop]
    layers = None
    if g.layers is not None:
        layers = [[new_id[i] for i in layer if i not in drop] for layer in g.layers]
        if any(not layer for layer in layers):
            raise GraphError("pruning would empty a whole layer; keep at least one neuron per layer")
        layers = [layer for layer in layers if layer]
    small = Graph([g.roles[i] for i in keep], [(new_id[g.arcs[a][0]], new_id[g.arcs[a][1]]) for a in arc_keep],
                  [g.activations[i] for i in keep], [g.bias[i] for i in keep], [g.names[i] for i in keep], layers)
    out = Network(small, dtype=net.dtype).to(net.device)
    put_arc_weights(out, get_arc_weights(net)[torch.tensor(arc_keep, dtype=torch.long, device=net.device)])
    b = neuron_biases(net)
    with torch.no_grad():
        for k, old in enumerate(keep):
            gi, col = out.where[k]
            if gi > 0:
                out.bias_of(gi)[col] = b[old]
    return out


def keep_one_per_layer(net: Network, remove: Sequence[int], x_train: Tensor) -> list[int]:
    """Drop from ``remove`` the most active neuron of any layer that ``remove`` would empty.

    A layer whose every neuron is straw passes only its children's biases on; keeping one
    of its (inactive) neurons leaves the outputs the same and the graph valid.
    """
    layers = net.graph.layers
    if layers is None:
        return list(remove)
    drop = set(remove)
    h = forward_hidden(net, x_train).abs().sum(0)
    col = {i: k for k, i in enumerate(net.graph.hidden)}
    for layer in layers:
        if layer and all(i in drop for i in layer):
            drop.discard(max(layer, key=lambda i: float(h[col[i]])))
    return sorted(drop)


@torch.no_grad()
def prune_straw(trainer, criterion: str = "forward", x_tol: float = 0.0) -> tuple[Network, dict]:
    """Remove the hidden neurons straw for every training example; report what changed.

    Returns the pruned network and figures: neurons and weights before and after, test
    accuracy before and after, and the largest change of any training output (0 up to
    rounding for the forward criterion).
    """
    net = trainer.net
    remove = keep_one_per_layer(net, straw_neurons(trainer, criterion, x_tol), trainer.X)
    small = prune(net, remove)
    out_before, out_after = predict(net, trainer.X), predict(small, trainer.X)
    info = {
        "prune_criterion": criterion, "prune_x_tol": x_tol,
        "hidden_before": len(net.graph.hidden), "hidden_after": len(small.graph.hidden),
        "weights_before": count_weights(net), "weights_after": count_weights(small),
        "arcs_before": net.num_arcs(), "arcs_after": small.num_arcs(),
        "train_output_max_change": float((out_before - out_after).abs().max()) if len(out_before) else 0.0,
    }
    if trainer.data.n_classes is not None:
        info["test_accuracy_before_prune"] = accuracy(net, trainer.Xt, trainer.Yt)
        info["train_accuracy_before_prune"] = accuracy(net, trainer.X, trainer.Y)
        info["test_accuracy"] = accuracy(small, trainer.Xt, trainer.Yt)
        info["train_accuracy"] = accuracy(small, trainer.X, trainer.Y)
    else:
        info["test_mse_before_prune"] = float(((predict(net, trainer.Xt) - trainer.Yt) ** 2).mean())
        info["test_mse"] = float(((predict(small, trainer.Xt) - trainer.Yt) ** 2).mean())
    return small, info


@torch.no_grad()
def predict(net: Network, X: Tensor) -> Tensor:
    return torch.cat([net(c) for c in X.split(8192)]) if len(X) else X.new_zeros(0, len(net.graph.outputs))


def accuracy(net: Network, X: Tensor, Y: Tensor) -> float:
    """Classification accuracy; ``Y`` one-hot (as the trainer holds it) or class indices."""
    y = Y.argmax(1) if Y.ndim == 2 else Y
    return float((predict(net, X).argmax(1) == y).float().mean())


# ------------------------------------------------------- after a training run
def prune_after_training(trainer, out_dir=None, criterion: str = "forward", x_tol: float = 0.0,
                         lam_tol: float = 1e-6) -> tuple[Network, dict]:
    """What ``lagprop train --prune`` does after training: analyse, prune, plot.

    Replaces ``trainer.net`` by the pruned network and returns it with the figures for
    ``summary.json``.  With ``out_dir``, writes ``support_map.png``, ``lambda_hist.png``,
    ``accuracy_vs_size.png`` and ``prune_curve.json`` there.
    """
    from . import support_plots as plots
    from .runs import atomic_write_json
    from .support_build import removal_curve

    net = trainer.net
    lagrangian = trainer.state is not None
    info: dict = {"straw_all_forward": len(straw_neurons(trainer, "forward", x_tol))}
    an = analyse(trainer, "relaxed" if lagrangian else "forward", x_tol, lam_tol)
    if lagrangian:
        info["straw_all_relaxed"] = int(an.straw_all.sum())
    info["support"] = an.summary()
    curve = removal_curve(net, trainer.X, trainer.Y, trainer.Xt, trainer.Yt) \
        if trainer.data.n_classes is not None else []
    small, pruned = prune_straw(trainer, criterion, x_tol)
    info.update(pruned)
    info["hidden"], info["arcs"] = len(small.graph.hidden), small.num_arcs()
    if out_dir is not None:
        from pathlib import Path
        out = Path(out_dir)
        plots.support_map(an, out / "support_map.png")
        if lagrangian:
            _, lams = relaxed_state(trainer)
            alpha = trainer.cfg.l1 or None
            plots.lambda_histograms([(f"{g} ({len(net.groups[g].neurons)} neurons)", lams[g].cpu().numpy())
                                     for g in range(1, len(net.groups)) if net.groups[g].role == "hidden"],
                                    alpha, out / "lambda_hist.png")
        if curve:
            marks = {"before pruning": (info["hidden_before"], info["test_accuracy_before_prune"]),
                     "after pruning": (info["hidden_after"], info["test_accuracy"])}
            plots.accuracy_vs_size({"removing least-contributing neurons (no retraining)": curve},
                                   out / "accuracy_vs_size.png", marks=marks)
            atomic_write_json(out / "prune_curve.json", curve)
    trainer.net = small
    return small, info


def prune_and_finetune(trainer, criterion: str = "forward", finetune_epochs: int = 0, out_dir=None,
                       summary: dict | None = None) -> Network:
    """``lagprop train --prune``: prune after training, optionally retrain without l1.

    Updates ``summary`` in place (``hidden_before``, ``hidden_after``,
    ``test_accuracy_before_prune``, ``test_accuracy`` after pruning (and after the
    fine-tuning, if any; ``test_accuracy_pruned`` is the figure right after pruning), ...)
    and returns the network to save.
    """
    from dataclasses import replace

    if finetune_epochs < 0:
        raise ConfigError(f"--prune-finetune must be >= 0 epochs, got {finetune_epochs}")
    small, info = prune_after_training(trainer, out_dir, criterion)
    if "test_accuracy" in info:
        info["test_accuracy_pruned"] = info["test_accuracy"]
    if finetune_epochs:
        from .train import Trainer
        ft = Trainer(small, trainer.data, replace(trainer.cfg, l1=0.0, epochs=finetune_epochs))
        ft.fit()
        last = ft.history[-1]
        info.update({k: v for k, v in last.items() if k.startswith(("test_", "train_"))})
        info["prune_finetune_epochs"] = finetune_epochs
        info["seconds"] = (summary or {}).get("seconds", 0.0) + ft.seconds
    if summary is not None:
        summary.update(info)
    return small
