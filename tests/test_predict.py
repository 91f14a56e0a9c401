"""lagprop predict: predictions in the user's labels, same data checks as training, column rules."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from lagprop.cli import main


def write_csv(path, header, rows) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A model of the rule label = 7 if a + b > 0 else 3 (labels not 0..k-1 on purpose)."""
    d = tmp_path_factory.mktemp("pred")
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 3))
    y = np.where(X[:, 0] + X[:, 1] > 0, 7, 3)
    write_csv(d / "train.csv", ["a", "b", "c", "label"], [[*r, t] for r, t in zip(X.round(4), y)])
    run = d / "run"
    assert main(["train", "--dataset", str(d / "train.csv"), "--hidden", "16", "--epochs", "12", "--lr", "0.03",
                 "--quiet", "--device", "cpu", "--out", str(run)]) == 0
    Xn = rng.normal(size=(200, 3)).round(4)
    return d, run, Xn, np.where(Xn[:, 0] + Xn[:, 1] > 0, 7, 3)


def read_preds(path):
    with open(path) as f:
        rows = list(csv.DictReader(f))
    return np.array([int(r["prediction"]) for r in rows]), np.array(
        [[float(r["score_3"]), float(r["score_7"])] for r in rows])


def test_predictions_follow_the_rule(trained):
    d, run, Xn, yn = trained
    write_csv(d / "new.csv", ["a", "b", "c"], Xn)
    assert main(["predict", "--model", str(run), "--input", str(d / "new.csv"), "--output", str(d / "p.csv")]) == 0
    pred, scores = read_preds(d / "p.csv")
    assert set(pred) <= {3, 7}
    assert (pred == yn).mean() > 0.9  # the true rule is the oracle
    assert np.allclose(scores.sum(1), 1, atol=1e-4)
    assert np.array_equal(pred, np.where(scores[:, 1] > scores[:, 0], 7, 3))


def test_columns_by_name_and_label_ignored(trained):
    d, run, Xn, yn = trained
    write_csv(d / "new.csv", ["a", "b", "c"], Xn)
    write_csv(d / "perm.csv", ["c", "label", "a", "b"], [[r[2], 0, r[0], r[1]] for r in Xn])
    for name in ("new", "perm"):
        assert main(["predict", "--model", str(run), "--input", str(d / f"{name}.csv"),
                     "--output", str(d / f"{name}.out")]) == 0
    assert (d / "new.out").read_text() == (d / "perm.out").read_text()


@pytest.mark.parametrize("header,rows,msg", [
    (["a", "b"], [[1, 2]], "2 columns but the model takes 3"),
    (["a", "b", "c", "extra"], [[1, 2, 3, 4]], "were not features"),
    (["a", "b", "c"], [[1, "x", 3]], "not a number"),
    (["a", "b", "c"], [[1, "nan", 3]], "missing and infinite"),
    (["a", "b", "c"], [[1, 2]], "cells but the header has"),
])
def test_bad_input_files(trained, tmp_path, capsys, header, rows, msg):
    _, run, _, _ = trained
    write_csv(tmp_path / "in.csv", header, rows)
    assert main(["predict", "--model", str(run), "--input", str(tmp_path / "in.csv"),
                 "--output", str(tmp_path / "o.csv")]) == 2
    err = capsys.readouterr().err
    assert msg in err and err.count("\n") == 1 and not (tmp_path / "o.csv").exists()


def test_missing_or_broken_model(trained, tmp_path, capsys):
    d, _, Xn, _ = trained
    write_csv(tmp_path / "in.csv", ["a", "b", "c"], Xn[:3])
    assert main(["predict", "--model", str(tmp_path), "--input", str(tmp_path / "in.csv")]) == 2
    assert "no model" in capsys.readouterr().err
    (tmp_path / "model.pt").write_bytes(b"garbage")
    assert main(["predict", "--model", str(tmp_path), "--input", str(tmp_path / "in.csv")]) == 2
    assert "not a readable lagprop model" in capsys.readouterr().err


def test_regression_predictions(tmp_path):
    """A float target makes a regression model; its predictions track y = a - 2b."""
    rng = np.random.default_rng(1)
    X = rng.normal(size=(300, 2)).round(4)
    y = X[:, 0] - 2 * X[:, 1]
    write_csv(tmp_path / "r.csv", ["a", "b", "y"], [[*r, round(t, 4) + 0.00001] for r, t in zip(X, y)])
    run = tmp_path / "run"
    assert main(["train", "--dataset", str(tmp_path / "r.csv"), "--hidden", "8", "--epochs", "15", "--lr", "0.03",
                 "--loss", "mse", "--output-activation", "identity", "--quiet", "--device", "cpu",
                 "--out", str(run)]) == 0
    Xn = rng.normal(size=(100, 2)).round(4)
    write_csv(tmp_path / "n.csv", ["a", "b"], Xn)
    assert main(["predict", "--model", str(run), "--input", str(tmp_path / "n.csv"),
                 "--output", str(tmp_path / "p.csv")]) == 0
    with open(tmp_path / "p.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["prediction"]
    pred = np.array([float(r["prediction"]) for r in rows])
    assert np.corrcoef(pred, Xn[:, 0] - 2 * Xn[:, 1])[0, 1] > 0.9
