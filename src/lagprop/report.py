"""``lagprop report DIR``: plots and a one-page Markdown summary of a finished (or stopped) run.

Reads what ``lagprop train`` wrote (config.json, metrics.csv, summary.json and the newest
loadable checkpoint) and writes into ``DIR/report/``:

* ``learning_curves.png``   train / test loss and accuracy (or mse) per epoch
* ``constraint.png``        mean squared constraint violation G^2 and mean |dL/dx| per epoch
* ``lambda.png``            lambda per layer: the distribution in the checkpoint's example
                            state (histograms) and mean / max |lambda| per epoch (metrics)
* ``support_map.png``       with l1 > 0: support / straw / neither per example and hidden
                            neuron (lagprop.support), from the checkpoint's state
* ``report.md``             configuration, final figures, the plots, a per-epoch table

Everything the report needs beyond the metrics is optional: a run without a checkpoint
gets the curves only, and the report says what it could not draw and why.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .checkpoint import CheckpointError, read_checkpoint  # noqa: E402
from .errors import ConfigError, LagpropError  # noqa: E402


def read_metrics(path: Path) -> list[dict[str, float]]:
    """metrics.csv as a list of rows (numbers; empty cells dropped)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    out = []
    for r in rows:
        row = {}
        for k, v in r.items():
            if k is None or v in (None, ""):
                continue
            try:
                row[k] = float(v)
            except ValueError:
                continue
        out.append(row)
    return out


def _load_json(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path} cannot be read ({e}); is it a run folder written by 'lagprop train'?") from None


def _series(rows: list[dict[str, float]], key: str) -> tuple[list[float], list[float]]:
    pts = [(r["epoch"], r[key]) for r in rows if key in r and "epoch" in r]
    return [p[0] for p in pts], [p[1] for p in pts]


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ------------------------------------------------------------------ plots
def plot_learning_curves(rows: list[dict[str, float]], path: Path, title: str = "") -> Path:
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.8))
    for split, style in (("train", "-"), ("test", "--")):
        a1.plot(*_series(rows, f"{split}_loss"), style, marker="o", ms=3, label=f"{split} loss")
    a1.set_xlabel("epoch")
    a1.set_ylabel("loss")
    a1.set_title("loss", fontsize=10)
    metric = "accuracy" if any("test_accuracy" in r for r in rows) else "mse"
    for split, style in (("train", "-"), ("test", "--")):
        a2.plot(*_series(rows, f"{split}_{metric}"), style, marker="o", ms=3, label=f"{split} {metric}")
    a2.set_xlabel("epoch")
    a2.set_ylabel(metric)
    a2.set_title(metric, fontsize=10)
    for a in (a1, a2):
        a.grid(alpha=0.3)
        a.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def _positive(ys: list[float]) -> bool:
    return bool(ys) and all(y > 0 and math.isfinite(y) for y in ys)


def plot_constraint(rows: list[dict[str, float]], path: Path) -> Path:
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, key, label in ((a1, "constraint_violation", "mean G^2 (constraint violation)"),
                           (a2, "grad_x", "mean |dL/dx| (last relaxation step)")):
        xs, ys = _series(rows, key)
        if ys:
            ax.plot(xs, ys, marker="o", ms=3, color="#c03020" if key == "grad_x" else "#2060b0")
            if _positive(ys):
                ax.set_yscale("log")
        else:
            ax.text(0.5, 0.5, "not recorded for this method", ha="center", va="center", transform=ax.transAxes)
        ax.set_xlabel("epoch")
        ax.set_title(label, fontsize=10)
        ax.grid(alpha=0.3, which="both")
    return _save(fig, path)


def _layer_names(payload: dict | None, n_groups: int) -> list[str]:
    """A label per group: role and size, from the graph when the checkpoint is there."""
    names = [f"group {g}" for g in range(n_groups)]
    if payload is None:
        return names
    try:
        from .graph import Graph
        from .network import Network
        net = Network(Graph.from_dict(payload["graph"]))
        return [f"{grp.role} {g} ({len(grp.neurons)})" for g, grp in enumerate(net.groups)]
    except Exception:  # a label is not worth failing the report for
        return names


def lambda_values(payload: dict | None) -> tuple[list[tuple[int, np.ndarray]], str]:
    """lambda per group for every training example, and where the numbers come from.

    The checkpoint's stored lambda when the run keeps one (--lambda-init stored); otherwise
    the lambda the next epoch would reach: K relaxation steps from the forward pass with
    lambda = 0 (the 'predicted' state) at the checkpoint's weights.
    """
    if payload is None:
        return [], "no checkpoint"
    st = (payload.get("trainer") or {}).get("example_state") or {}
    stored = [(g, t.float().numpy().ravel()) for g, t in enumerate(st.get("lam") or [])
              if t is not None and t.numel()]
    if stored:
        return stored, "stored in the checkpoint"
    try:
        trainer = rebuild_trainer(payload)
    except LagpropError as e:
        return [], f"not computed: the run's data could not be reloaded ({e})"
    if trainer.state is None:
        return [], "backprop has no multipliers"
    import torch

    from .dynamics import relax, solve_stationary
    net = trainer.net
    x_in = net.split_inputs(trainer.X)
    if net.acyclic and trainer.alpha is None:
        # lambda predicted as 0 each visit is not kept; what the multipliers mean is their
        # value at the stationary point for these weights (Eq. 6: minus backprop's delta)
        _, lams, _ = solve_stationary(net, x_in, trainer.Y, trainer.cfg.loss)
        where = "at the stationary point of L in (x, lambda) for the checkpoint's weights (Eq. 6)"
    else:
        steps = getattr(trainer, "relax_steps", None) or trainer.cfg.relax_steps or 1
        alpha = trainer.alpha.for_batch(len(net.groups), None) if trainer.alpha else None
        with torch.no_grad():
            _, lams, _ = relax(net, x_in, trainer.Y, trainer.dyn, steps, alpha=alpha)
        where = f"after {steps} relaxation steps from the forward pass, at the checkpoint's weights"
    return [(g, t.float().cpu().numpy().ravel()) for g, t in enumerate(lams) if t is not None], where


def plot_lambda(rows: list[dict[str, float]], payload: dict | None, path: Path) -> tuple[Path | None, str]:
    """Histograms of lambda per layer (top) and |lambda| statistics per epoch (bottom)."""
    groups = sorted({int(k.rsplit("_", 1)[1]) for r in rows for k in r if k.startswith("lambda_mean_abs_")})
    lams, source = lambda_values(payload) if groups else ([], "")
    if not groups and not lams:
        return None, ""
    n_groups = max([g for g, _ in lams] + groups) + 1
    names = _layer_names(payload, n_groups)
    ncol = max(len(lams), 1)
    nrow = 2 if lams else 1
    fig, axes = plt.subplots(nrow, ncol, figsize=(max(4.6 * ncol, 6.5), 3.6 * nrow), squeeze=False)
    for ax, (g, v) in zip(axes[0], lams):
        ax.hist(v, bins=80, color="#2060b0", log=True)
        ax.set_title(f"lambda, {names[g]}: {v.size} values\nmean |lambda| {np.abs(v).mean():.3g}, "
                     f"max {np.abs(v).max():.3g}", fontsize=9)
        ax.set_xlabel("lambda")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(5))
    if lams:
        fig.text(0.5, 0.995, f"lambda of every training example, {source}", ha="center", va="top", fontsize=8)
    bottom = axes[-1][0]
    for k, g in enumerate(groups):
        color = f"C{k}"
        bottom.plot(*_series(rows, f"lambda_mean_abs_{g}"), "-", marker="o", ms=3, color=color,
                    label=f"mean |lambda|, {names[g]}")
        bottom.plot(*_series(rows, f"lambda_max_abs_{g}"), ":", color=color, label=f"max |lambda|, {names[g]}")
    bottom.set_yscale("symlog", linthresh=1e-4)
    bottom.legend(fontsize=7)
    bottom.set_xlabel("epoch")
    bottom.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    bottom.set_title("|lambda| per layer and epoch (metrics.csv)", fontsize=9)
    bottom.grid(alpha=0.3)
    for ax in axes[-1][1:]:
        ax.axis("off")
    fig.tight_layout(rect=(0, 0, 1, 0.97) if lams else None)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path, source


def rebuild_trainer(payload: dict):
    """The trainer of a checkpoint (data reloaded from the saved flags), for analyses."""
    import argparse

    from .checkpoint import restore
    from .cli.common import build_network, config_from_args, load_data
    from .graph import Graph
    from .train import Trainer

    args = argparse.Namespace(**payload["args"])
    args.device = "cpu"
    cfg = config_from_args(args)
    data = load_data(args)
    net = build_network(Graph.from_dict(payload["graph"]), cfg, getattr(args, "dtype", "float32"))
    trainer = Trainer(net, data, cfg)
    restore(trainer, payload)
    return trainer


def plot_support(payload: dict, path: Path) -> tuple[Path | None, str]:
    """The support map of the checkpoint's state (lagprop.support); a note when it cannot be drawn."""
    try:
        trainer = rebuild_trainer(payload)
    except LagpropError as e:
        return None, f"support map not drawn: the run's data or state could not be rebuilt ({e})"
    if not trainer.net.graph.hidden:
        return None, "support map not drawn: the network has no hidden neurons"
    try:
        from .support import analyse
        from .support_plots import support_map
    except ImportError:
        return _own_support_map(trainer, path), ""
    criterion = "relaxed" if trainer.state is not None else "forward"
    an = analyse(trainer, criterion)
    return support_map(an, path), ""


def _own_support_map(trainer, path: Path) -> Path:
    """Straw (x = 0 in the forward pass) per example and hidden neuron, when lagprop.support is absent."""
    import torch
    net = trainer.net
    with torch.no_grad():
        xs = net.forward_all(net.split_inputs(trainer.X))
    cols = [xs[g] for g, grp in enumerate(net.groups) if grp.role == "hidden"]
    straw = (torch.cat(cols, 1) == 0).cpu().numpy()
    order = np.argsort(trainer.data.y_train, kind="stable") if trainer.data.n_classes else np.arange(len(straw))
    fig, ax = plt.subplots(figsize=(9, 5))
    ax.imshow(straw[order].T, aspect="auto", interpolation="nearest", cmap="Greys_r")
    ax.set_title(f"hidden x = 0 (straw, black) per training example; {int(straw.all(0).sum())} of "
                 f"{straw.shape[1]} neurons straw for every example", fontsize=9)
    ax.set_xlabel("training example (by class)")
    ax.set_ylabel("hidden neuron")
    return _save(fig, path)


# ------------------------------------------------------------------ the report
def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, list):
        return ",".join(str(x) for x in v) if v else "none"
    return str(v)


def make_report(run_dir: str | Path, out: str | Path | None = None, support: bool = True) -> Path:
    """Write the plots and ``report.md`` for the run in ``run_dir``; returns the Markdown file."""
    run = Path(run_dir)
    if not run.is_dir():
        raise ConfigError(f"{str(run)!r} is not a folder; give the --out folder of a 'lagprop train' run")
    if not (run / "metrics.csv").exists():
        raise ConfigError(f"{run} has no metrics.csv; is it the --out folder of a 'lagprop train' run "
                          "that finished at least one epoch?")
    out = Path(out) if out is not None else run / "report"
    out.mkdir(parents=True, exist_ok=True)
    rows = read_metrics(run / "metrics.csv")
    if not rows:
        raise ConfigError(f"{run}/metrics.csv holds no epochs yet")
    config = _load_json(run / "config.json")
    summary = _load_json(run / "summary.json")
    notes: list[str] = []
    try:
        payload, used = read_checkpoint(run)
    except CheckpointError as e:
        payload, used = None, None
        notes.append(f"no checkpoint read ({e}); lambda histograms and the support map need one")
    train_cfg = config.get("train") or (payload or {}).get("trainer", {}).get("config", {})
    method = train_cfg.get("method", summary.get("method", "?"))
    data_name = summary.get("dataset") or (config.get("data") or {}).get("dataset", "?")
    images = [("Learning curves", plot_learning_curves(rows, out / "learning_curves.png",
                                                       f"{data_name}, {method}")),
              ("Constraint violation and |dL/dx|", plot_constraint(rows, out / "constraint.png"))]
    lam_png, source = plot_lambda(rows, payload, out / "lambda.png")
    if lam_png is not None:
        images.append(("lambda per layer", lam_png))
        if source.startswith(("no ", "not ")):
            notes.append(f"lambda histograms: {source}")
    else:
        notes.append("no lambda statistics (backprop has no multipliers)")
    l1 = float(train_cfg.get("l1", 0) or 0)
    if support and l1 > 0:
        if payload is None:
            notes.append("support map not drawn: no checkpoint")
        else:
            png, note = plot_support(payload, out / "support_map.png")
            if png is not None:
                images.append((f"Support map (l1 alpha = {l1:g})", png))
            if note:
                notes.append(note)
    md = out / "report.md"
    md.write_text(_markdown(run, rows, config, summary, train_cfg, images, notes, used))
    return md


def _markdown(run: Path, rows, config, summary, train_cfg, images, notes, used) -> str:
    last = rows[-1]
    status = "finished" if summary else "stopped before the end (no summary.json)"
    lines = [f"# Run report: `{run}`", "",
             f"{summary.get('dataset', (config.get('data') or {}).get('dataset', '?'))}, "
             f"method **{train_cfg.get('method', '?')}**, {int(last.get('epoch', len(rows)))} epochs, {status}; "
             f"graph: {config.get('graph', '?')}.", ""]
    keys = [k for k in ("test_accuracy", "train_accuracy", "test_mse", "train_mse", "test_loss", "train_loss",
                        "constraint_violation", "grad_x", "seconds") if k in last]
    lines += ["## Final figures", "", "| figure | value |", "| --- | --- |"]
    lines += [f"| {k} | {_fmt(last[k])} |" for k in keys]
    if summary.get("seconds_per_epoch") is not None:
        lines.append(f"| seconds per epoch | {_fmt(summary['seconds_per_epoch'])} |")
    if used is not None:
        lines.append(f"| checkpoint | `{used.name}` (resume: `lagprop train --resume {run}`) |")
    lines += ["", "## Plots", ""]
    for title, png in images:
        lines += [f"### {title}", "", f"![{title}]({png.name})", ""]
    if notes:
        lines += ["## Notes", ""] + [f"* {n}" for n in notes] + [""]
    lines += ["## Configuration", "", "| flag | value |", "| --- | --- |"]
    shown = config.get("args") or train_cfg
    lines += [f"| {k} | {_fmt(v)} |" for k, v in sorted(shown.items()) if k != "extra"]
    cols = ["epoch"] + [k for k in ("train_loss", "test_loss", "train_accuracy", "test_accuracy", "test_mse",
                                    "constraint_violation", "grad_x") if k in last]
    step = max(1, math.ceil(len(rows) / 20))
    lines += ["", "## Per epoch" + (f" (every {step}th)" if step > 1 else ""), "",
              "| " + " | ".join(cols) + " |", "|" + " --- |" * len(cols)]
    for r in rows[::step] + ([rows[-1]] if (len(rows) - 1) % step else []):
        lines.append("| " + " | ".join(_fmt(r.get(c, float("nan"))) if c != "epoch" else str(int(r["epoch"]))
                                       for c in cols) + " |")
    return "\n".join(lines) + "\n"
