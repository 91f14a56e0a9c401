"""A run's folder: configuration, per-epoch metrics, summary and the trained model.

Layout of ``--out DIR``::

    config.json    the full configuration (data, graph, method, hyperparameters)
    metrics.csv    one row per epoch
    summary.json   the final figures (method, epochs, test_accuracy, seconds, ...)
    model.pt       the graph and its weights, for ``lagprop predict``
    checkpoint.pt  the state to continue from (``lagprop train --resume DIR``), and
    checkpoint.prev.pt  the one before it (lagprop.checkpoint)
    tensorboard/   event files, when tensorboard is installed

Every file is written atomically (to a temporary name, then renamed), so a crash never
leaves a half-written file behind.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from .errors import ConfigError


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def atomic_torch_save(path: Path, obj: Any) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


class RunDir:
    """Writes the files of one run into ``path``."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if self.path.exists() and not self.path.is_dir():
            raise ConfigError(f"--out {str(self.path)!r} is a file; give a folder")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ConfigError(f"cannot create the output folder {str(self.path)!r}: {e.strerror}") from None
        self._tb = None  # TensorBoard writer: None = not tried yet, False = tensorboard not installed

    def write_config(self, config: dict[str, Any]) -> None:
        atomic_write_json(self.path / "config.json", config)

    def write_summary(self, summary: dict[str, Any]) -> None:
        atomic_write_json(self.path / "summary.json", summary)

    def write_metrics(self, history: list[dict[str, float]]) -> None:
        if not history:
            return
        keys = list(dict.fromkeys(k for row in history for k in row))
        keys.remove("epoch")
        keys.insert(0, "epoch")
        buf = io.StringIO()
        w = csv.DictWriter(buf, keys)
        w.writeheader()
        w.writerows(history)
        atomic_write_bytes(self.path / "metrics.csv", buf.getvalue().encode())

    def save_checkpoint(self, payload: dict[str, Any]) -> None:
        """checkpoint.pt (the previous one kept as checkpoint.prev.pt): lagprop.checkpoint."""
        from .checkpoint import write_checkpoint
        write_checkpoint(self.path, payload)

    def write_tensorboard(self, metrics: dict[str, float]) -> None:
        """One epoch's metrics as TensorBoard scalars under tensorboard/, if tensorboard is installed."""
        if self._tb is None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except Exception:  # ImportError, or tensorboard's own import-time errors: optional
                self._tb = False
            else:
                self._tb = SummaryWriter(log_dir=str(self.path / "tensorboard"))
        if self._tb:
            step = int(metrics.get("epoch", 0))
            for k, v in metrics.items():
                if k != "epoch":
                    self._tb.add_scalar(k, v, step)
            self._tb.flush()

    def save_model(self, net, data_info: dict[str, Any]) -> None:
        atomic_torch_save(self.path / "model.pt", {
            "graph": net.graph.to_dict(), "weights": net.state_dict(), "data": data_info,
            "dtype": str(net.dtype).replace("torch.", "")})
