"""Backpropagation and the Lagrangian methods side by side, from the same start.

A fair comparison needs the same initial weights, the same data order and the same
optimizer for every method, so that the only difference is how the weight gradient is
obtained (autograd of the loss, or dL/dw at a relaxed saddle state).  Every method gets a
network built from the same seed (:func:`lagprop.cli.common.build_network`) and a
:class:`~lagprop.train.Trainer`, whose shuffling generator is seeded from the same seed.

The methods are trained *interleaved*, one epoch of each in turn, rather than one after
the other: on a shared machine the load changes over minutes, and interleaving exposes
every method to the same load, so the ratio of their seconds per epoch is meaningful even
when the absolute seconds are noisy.  Seconds count training only (not evaluation).

Results: a per-epoch table (test accuracy or MSE, test loss, cumulative seconds), a JSON
and a CSV of every number, and a PNG with accuracy against epochs and against seconds.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from .data import Dataset
from .errors import ConfigError, DivergenceError
from .graph import Graph
from .runs import atomic_write_bytes, atomic_write_json
from .train import TrainConfig, Trainer


@dataclass
class Comparison:
    """The per-epoch history of every method (epoch 0 is the untrained network)."""

    dataset: str
    graph: str
    config: dict[str, Any]
    methods: list[str]
    histories: dict[str, list[dict[str, float]]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)   # method -> why it stopped
    state_numbers: dict[str, int] = field(default_factory=dict)
    configs: dict[str, dict[str, Any]] = field(default_factory=dict)  # label -> its TrainConfig

    @property
    def metric(self) -> str:
        """'test_accuracy' for classification, 'test_mse' for regression."""
        for h in self.histories.values():
            if h:
                return "test_accuracy" if "test_accuracy" in h[0] else "test_mse"
        return "test_accuracy"

    def final(self, method: str) -> dict[str, float]:
        h = self.histories[method]
        return h[-1] if h else {}

    def seconds_per_epoch(self, method: str) -> float:
        h = self.histories[method]
        epochs = h[-1]["epoch"] if h else 0
        return h[-1]["seconds"] / epochs if epochs else float("nan")

    def ratios(self, reference: str = "backprop") -> dict[str, dict[str, float]]:
        """Per method: seconds per epoch over the reference's, and the final metric's difference."""
        if reference not in self.histories or not self.histories[reference]:
            return {}
        ref_spe = self.seconds_per_epoch(reference)
        ref_m = self.final(reference).get(self.metric, float("nan"))
        out = {}
        for m in self.methods:
            if m == reference or not self.histories.get(m):
                continue
            out[m] = {"seconds_per_epoch_ratio": self.seconds_per_epoch(m) / ref_spe if ref_spe else float("nan"),
                      f"{self.metric}_minus_{reference}": self.final(m).get(self.metric, float("nan")) - ref_m}
        return out

    # ------------------------------------------------------------ reports
    def table(self) -> str:
        """The side-by-side text table: one row per epoch, three columns per method."""
        short = "acc" if self.metric == "test_accuracy" else "mse"
        width = 27
        head1 = "epoch " + "".join(f"| {m[:width - 2]:<{width - 2}}" for m in self.methods)
        head2 = "      " + "".join(f"| {'test ' + short:>9} {'loss':>7} {'sec':>7}" for _ in self.methods)
        lines = [head1, head2, "-" * len(head2)]
        n = max((len(h) for h in self.histories.values()), default=0)
        for e in range(n):
            cells = []
            for m in self.methods:
                h = self.histories.get(m, [])
                if e < len(h):
                    r = h[e]
                    cells.append(f"| {r[self.metric]:>9.4f} {r['test_loss']:>7.4f} {r['seconds']:>7.2f}")
                else:
                    cells.append(f"| {'-':>9} {'-':>7} {'-':>7}")
            lines.append(f"{e:>5} " + "".join(cells))
        for m, why in self.errors.items():
            lines.append(f"{m}: stopped: {why}")
        for m, r in self.ratios().items():
            diff = r[f"{self.metric}_minus_backprop"]
            lines.append(f"{m} vs backprop: {r['seconds_per_epoch_ratio']:.2f}x the seconds per epoch, "
                         f"{self.metric} {'+' if diff >= 0 else ''}{diff * (100 if short == 'acc' else 1):.2f}"
                         f"{' points' if short == 'acc' else ''}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "graph": self.graph, "config": self.config,
                "methods": self.methods, "metric": self.metric, "errors": self.errors,
                "state_numbers": self.state_numbers, "configs": self.configs,
                "seconds_per_epoch": {m: self.seconds_per_epoch(m) for m in self.methods if self.histories.get(m)},
                "ratios_vs_backprop": self.ratios(), "histories": self.histories}

    def csv_text(self) -> str:
        keys: list[str] = ["method"]
        for h in self.histories.values():
            for row in h:
                keys += [k for k in row if k not in keys]
        if "epoch" in keys:
            keys.remove("epoch")
        keys.insert(1, "epoch")
        buf = io.StringIO()
        w = csv.DictWriter(buf, keys)
        w.writeheader()
        for m in self.methods:
            for row in self.histories.get(m, []):
                w.writerow({"method": m, **row})
        return buf.getvalue()

    def plot_png(self) -> bytes:
        """Accuracy (or MSE) against epochs and against training seconds, as PNG bytes."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure  # no pyplot: no global state, no display needed

        fig = Figure(figsize=(11, 4.2), dpi=110)
        FigureCanvasAgg(fig)
        axes = fig.subplots(1, 2)
        label = "test accuracy" if self.metric == "test_accuracy" else "test MSE"
        for m in self.methods:
            h = self.histories.get(m, [])
            if not h:
                continue
            ys = [r[self.metric] for r in h]
            axes[0].plot([r["epoch"] for r in h], ys, marker="o", ms=3, label=m)
            axes[1].plot([r["seconds"] for r in h], ys, marker="o", ms=3, label=m)
        # epoch 0 (the untrained net) would squash the interesting range: zoom on epochs >= 1
        later = [r[self.metric] for h in self.histories.values() for r in h[1:]]
        if later:
            lo, hi = min(later), max(later)
            pad = max(0.1 * (hi - lo), 0.005)
            for ax in axes:
                ax.set_ylim(lo - pad, hi + pad)
        axes[0].xaxis.get_major_locator().set_params(integer=True)
        for ax, xl in zip(axes, ("epoch", "training seconds")):
            ax.set_xlabel(xl)
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
            ax.legend()
        fig.suptitle(f"{self.dataset}, {self.graph}")
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        return buf.getvalue()

    def write(self, out: str | Path) -> dict[str, Path]:
        """Write compare.json, compare.csv, table.txt and compare.png into ``out``."""
        out = Path(out)
        paths = {"json": out / "compare.json", "csv": out / "compare.csv",
                 "table": out / "table.txt", "png": out / "compare.png"}
        atomic_write_json(paths["json"], self.to_dict())
        atomic_write_bytes(paths["csv"], self.csv_text().encode())
        atomic_write_bytes(paths["table"], (self.table() + "\n").encode())
        atomic_write_bytes(paths["png"], self.plot_png())
        return paths


def parse_methods(text: str | Sequence[str]) -> list[str]:
    """``'backprop,mdmm'`` -> ``['backprop', 'mdmm']``; repeats and empty names are errors."""
    names = [s.strip() for s in (text.split(",") if isinstance(text, str) else text)]
    if not names or any(not s for s in names):
        raise ConfigError(f"--methods must be a comma-separated list such as backprop,mdmm; got {text!r}")
    if len(set(names)) != len(names):
        raise ConfigError(f"--methods names a method twice: {text!r}")
    return names


def compare(data: Dataset, graph: Graph, cfg: TrainConfig, methods: Sequence[str],
            dtype: str = "float32",
            on_epoch: Callable[[str, dict[str, float]], None] | None = None) -> Comparison:
    """Train every method in ``methods`` from the same initial weights and data order.

    ``cfg`` supplies everything but the method.  A method that diverges stops (its error is
    kept in :attr:`Comparison.errors`); the others go on.
    """
    configs = {m: replace(cfg, method=m, extra=dict(cfg.extra)) for m in methods}
    return compare_configs(data, graph, configs, dtype, on_epoch)


def compare_configs(data: Dataset, graph: Graph, configs: dict[str, TrainConfig], dtype: str = "float32",
                    on_epoch: Callable[[str, dict[str, float]], None] | None = None,
                    stop_when: Callable[[dict[str, float]], bool] | None = None) -> Comparison:
    """Like :func:`compare`, for labelled configurations (e.g. variants of one method).

    The configurations must share the seed (hence the initial weights and the data order);
    each trains for its own ``epochs``.  ``stop_when(row)`` true ends a label's training
    early (e.g. on reaching a target accuracy).
    """
    from .cli.common import build_network

    labels = list(configs)
    if not labels:
        raise ConfigError("nothing to compare: give at least one method")
    trainers: dict[str, Trainer] = {}
    for label, mcfg in configs.items():
        mcfg.validate()
        trainers[label] = Trainer(build_network(graph, mcfg, dtype), data, mcfg)
    _check_same_start(trainers)
    first_cfg = configs[labels[0]]
    result = Comparison(data.name, graph.summary(), first_cfg.to_dict(), labels)
    result.configs = {label: c.to_dict() for label, c in configs.items()}
    for label, t in trainers.items():
        first = t.evaluate()
        first.update(epoch=0, seconds=0.0)
        result.histories[label] = [first]
        if t.state is not None:
            result.state_numbers[label] = t.state.numbers()
    running = [label for label in labels if configs[label].epochs > 0]
    while running:
        for label in list(running):
            t = trainers[label]
            try:
                row = t.train_epoch()
            except DivergenceError as e:
                result.errors[label] = str(e)
                running.remove(label)
                continue
            result.histories[label].append(dict(row))
            if on_epoch is not None:
                on_epoch(label, row)
            if t.epoch >= configs[label].epochs or (stop_when is not None and stop_when(row)):
                running.remove(label)
    return result


def _check_same_start(trainers: dict[str, Trainer]) -> None:
    """Guard the premise of the comparison: identical initial weights for every method."""
    nets = [t.net for t in trainers.values()]
    for net in nets[1:]:
        for p, q in zip(nets[0].parameters(), net.parameters()):
            if p.shape != q.shape or not torch.equal(p.detach().cpu(), q.detach().cpu()):
                raise ConfigError("the methods did not start from the same weights; "
                                  "this is a bug in lagprop compare")
