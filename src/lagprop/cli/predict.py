"""``lagprop predict --model DIR --input FILE.csv [--output preds.csv]``: apply a trained model.

The model is ``DIR/model.pt`` as ``lagprop train`` writes it: the graph, its weights and
the training data's standardisation (mean and std per feature), feature names, label
column name and class labels.  The input CSV goes through the same checks as training
data (:func:`lagprop.data.read_csv`: a header, numeric and finite cells, equal rows).

Which columns are features:

* when the model knows its feature names (CSV training data) and the header holds all of
  them, they are taken by name (any order); the training label column, if present, is
  ignored; any other extra column is an error (it would be silently dropped otherwise);
* otherwise the columns are taken by position and their number must equal the model's
  inputs (the training label column, if present by name, is dropped first).

Output: one row per input row.  Classification: ``prediction`` (in the training data's
own labels) and ``score_<label>`` per class (soft-max probabilities for the ce loss, the
raw outputs for mse).  Regression: ``prediction`` (or ``prediction_<k>`` per output).
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data import read_csv, read_npz
from ..errors import ConfigError, DataError


def add_parser(sub) -> None:
    p = sub.add_parser("predict", help="predict with a trained model",
                       description="Apply DIR/model.pt to the rows of a CSV file (same checks as training data).")
    p.add_argument("--model", required=True, metavar="DIR", help="a run folder (or its model.pt)")
    p.add_argument("--input", required=True, metavar="FILE.csv", help="CSV with a header line and the feature columns")
    p.add_argument("--output", default=None, metavar="FILE.csv", help="where to write (default: standard output)")
    p.set_defaults(run=run)


def training_labels(dataset: str, target: str | None) -> dict[str, Any]:
    """The label column's name and the original class labels of a CSV / NPZ training set.

    Saved in model.pt so that predictions come out in the user's own labels.  Built-in
    data sets have labels 0..k-1 already.
    """
    path = Path(dataset)
    if path.suffix.lower() not in (".csv", ".npz") or not path.is_file():
        return {}
    if path.suffix.lower() == ".npz":
        _, y, _ = read_npz(path)
        name = None
    else:
        values, _, header = read_csv(path, require_target=False)
        t = header.index(target) if target is not None else len(header) - 1
        y, name = values[:, t], header[t]
    info: dict[str, Any] = {"target": name}
    if y.ndim == 1 and np.all(y == np.round(y)):
        info["classes"] = [int(v) for v in np.unique(y)]
    return info


def load_model(where: str | Path) -> dict[str, Any]:
    path = Path(where)
    if path.is_dir():
        path = path / "model.pt"
    if not path.is_file():
        raise ConfigError(f"no model at {str(where)!r}; give a run folder written by 'lagprop train' "
                          "(it holds model.pt once training has finished)")
    try:
        model = torch.load(path, map_location="cpu", weights_only=True)
        for key in ("graph", "weights", "data"):
            model[key]
    except Exception as e:
        raise ConfigError(f"{path} is not a readable lagprop model ({type(e).__name__}); retrain or "
                          "give another folder") from None
    return model


def select_features(values: np.ndarray, header: list[str], info: dict[str, Any], n_inputs: int,
                    where: str) -> np.ndarray:
    """The feature columns of ``values`` in the model's order (see the module docstring)."""
    feats = list(info.get("features") or [])
    target = info.get("target")
    if feats and len(feats) == n_inputs and all(f in header for f in feats):
        extra = [h for h in header if h not in feats and h != target]
        if extra:
            raise DataError(f"{where}: columns {extra} were not features in training (the model takes "
                            f"{feats}); remove them")
        return values[:, [header.index(f) for f in feats]]
    if target is not None and target in header and len(header) == n_inputs + 1:
        keep = [i for i, h in enumerate(header) if h != target]
        return values[:, keep]
    if len(header) != n_inputs:
        named = f" ({', '.join(feats[:8])}{', ...' if len(feats) > 8 else ''})" if feats else ""
        raise DataError(f"{where}: {len(header)} columns but the model takes {n_inputs} inputs{named}; give "
                        "exactly the training features (the training label column may be included)")
    return values


def predict_rows(model: dict[str, Any], X: np.ndarray) -> tuple[list[str], np.ndarray, np.ndarray | None]:
    """Run the network on raw features; returns (column names, scores, predicted labels or None)."""
    from ..graph import Graph
    from ..network import Network

    info = model["data"]
    dtype = getattr(torch, model.get("dtype", "float32"))
    net = Network(Graph.from_dict(model["graph"]), dtype=dtype)
    try:
        net.load_state_dict(model["weights"])
    except RuntimeError:
        raise ConfigError("model.pt's weights do not fit its graph; the file is damaged, retrain") from None
    mean = np.asarray(info.get("mean"), np.float64)
    std = np.asarray(info.get("std"), np.float64)
    Xs = (X - mean) / std if mean.shape == (X.shape[1],) else X
    with torch.no_grad():
        out = net(torch.as_tensor(Xs, dtype=dtype))
    n_classes = info.get("n_classes")
    if n_classes is None:
        k = out.shape[1]
        return (["prediction"] if k == 1 else [f"prediction_{j}" for j in range(k)]), out.numpy(), None
    classes = list(info.get("classes") or range(n_classes))
    if len(classes) != n_classes:
        classes = list(range(n_classes))
    loss = info.get("loss") or "ce"
    scores = torch.softmax(out, 1) if loss == "ce" else out
    labels = np.asarray(classes)[out.argmax(1).numpy()]
    return [f"score_{c}" for c in classes], scores.numpy(), labels


def run(args: argparse.Namespace) -> int:
    model = load_model(args.model)
    if not Path(args.input).is_file():
        raise DataError(f"--input {args.input!r} does not exist; give a CSV file with a header line")
    values, _, header = read_csv(args.input, require_target=False)
    n_inputs = sum(1 for r in model["graph"]["roles"] if r == "input")
    X = select_features(values, header, model["data"], n_inputs, args.input)
    cols, scores, labels = predict_rows(model, X)
    buf = io.StringIO()
    head = (["prediction"] if labels is not None else []) + cols
    buf.write(",".join(head) + "\n")
    for i in range(len(X)):
        cells = ([str(labels[i])] if labels is not None else []) + [f"{v:.6g}" for v in scores[i]]
        buf.write(",".join(cells) + "\n")
    if args.output:
        from ..runs import atomic_write_bytes
        atomic_write_bytes(Path(args.output), buf.getvalue().encode())
        print(f"wrote {len(X)} predictions to {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(buf.getvalue())
    return 0
