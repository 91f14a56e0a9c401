"""Pictures of support and straw neurons (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402

from .support import NEITHER, STRAW, SUPPORT, SupportAnalysis  # noqa: E402


def support_map(an: SupportAnalysis, path: str | Path, max_examples: int = 1500) -> Path:
    """Hidden neurons (rows, most often support first) x training examples (columns, by class)."""
    codes = an.codes
    if codes.shape[0] > max_examples:
        codes = codes[np.linspace(0, codes.shape[0] - 1, max_examples).round().astype(int)]
    order = np.lexsort((-(codes == STRAW).mean(0), -(codes == SUPPORT).mean(0)))
    fig, ax = plt.subplots(figsize=(9, 5))
    cmap = ListedColormap(["#f2f2f2", "#f0a030", "#2060b0"])  # straw, neither, support
    ax.imshow(codes[:, order].T, aspect="auto", interpolation="nearest", cmap=cmap, vmin=STRAW, vmax=SUPPORT)
    n_straw = int(an.straw_all.sum())
    ax.set_title(f"support map ({an.criterion} x; straw |x|<={an.x_tol:g}, support |lambda|>{an.lam_tol:g}): "
                 f"{n_straw} of {codes.shape[1]} neurons straw for every example", fontsize=9)
    ax.set_xlabel("training example")
    ax.set_ylabel("hidden neuron (sorted)")
    handles = [plt.Rectangle((0, 0), 1, 1, color=cmap(k)) for k in (STRAW, NEITHER, SUPPORT)]
    ax.legend(handles, ["straw", "neither", "support"], loc="upper right", fontsize=8)
    return _save(fig, path)


def lambda_histograms(lams_by_layer: Sequence[tuple[str, np.ndarray]], alpha: float | None,
                      path: str | Path) -> Path:
    """Histogram of the hidden lambdas, one panel per hidden layer (Eq. 7: spikes at -alpha)."""
    n = max(len(lams_by_layer), 1)
    fig, axes = plt.subplots(1, n, figsize=(4.5 * n, 3.5), squeeze=False)
    for ax, (name, lam) in zip(axes[0], lams_by_layer):
        lam = np.asarray(lam).ravel()
        ax.hist(lam, bins=100, color="#2060b0", log=True)
        if alpha:
            ax.axvline(-alpha, color="#c03020", lw=1, ls="--", label=f"-alpha = {-alpha:g}")
            ax.legend(fontsize=8)
        ax.set_title(f"lambda, layer {name} ({lam.size} values)", fontsize=9)
        ax.set_xlabel("lambda")
    return _save(fig, path)


def accuracy_vs_size(curves: dict[str, list[dict]], path: str | Path, baseline: float | None = None,
                     marks: dict[str, tuple[int, float]] | None = None, x: str = "hidden") -> Path:
    """Test accuracy against network size, one line per curve; ``marks`` label single points."""
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for label, rows in curves.items():
        rows = sorted(rows, key=lambda r: r[x])
        ax.plot([r[x] for r in rows], [r["test_accuracy"] for r in rows], marker="o", ms=3, label=label)
    for label, (size, acc) in (marks or {}).items():
        ax.plot([size], [acc], marker="*", ms=12, ls="none", label=label)
    if baseline is not None:
        ax.axhline(baseline, color="grey", lw=0.8, ls=":", label=f"reference {baseline:.4f}")
        ax.axhline(baseline - 0.01, color="grey", lw=0.8, ls="--", label="reference - 1 point")
    ax.set_xlabel("hidden neurons" if x == "hidden" else "weights")
    ax.set_ylabel("held-out accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
