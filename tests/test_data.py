"""Data sets: the split, standardisation on the training part only, readers, missing data."""

from __future__ import annotations

import numpy as np
import pytest

from lagprop.cli import main
from lagprop.data import load_dataset
from lagprop.errors import DataError


def test_digits_split_is_stratified_seeded_and_standardised_on_train_only():
    from sklearn.datasets import load_digits

    d = load_dataset("digits")
    raw = load_digits()
    assert len(d.X_train) + len(d.X_test) == len(raw.data)
    # stratified: every class keeps about 20 % in the test part
    for c in range(10):
        frac = (d.y_test == c).sum() / (raw.target == c).sum()
        assert abs(frac - 0.2) < 0.02
    # standardised with the training part's statistics (oracle: numpy on the raw rows)
    assert np.allclose(d.X_train.mean(0), 0, atol=1e-5)
    assert not np.allclose(d.X_test.mean(0), 0, atol=1e-3)
    assert (load_dataset("digits").y_test == d.y_test).all()          # same split seed, same split
    assert not (load_dataset("digits", seed=1).y_test == d.y_test).all()


def test_csv_target_column_and_regression(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 3))
    y = X @ np.array([1.0, -2.0, 0.5])
    p = tmp_path / "r.csv"
    rows = ["y,a,b,c"] + [f"{t},{a},{b},{c}" for t, (a, b, c) in zip(y, X)]
    p.write_text("\n".join(rows) + "\n")
    d = load_dataset(str(p), target="y")
    assert d.n_classes is None and d.feature_names == ["a", "b", "c"] and d.n_outputs == 1
    with pytest.raises(DataError, match="no column named"):
        load_dataset(str(p), target="nope")


def test_missing_fashion_mnist_is_a_clear_error_with_exit_code_2(tmp_path, capsys):
    rc = main(["train", "--dataset", "fashion-mnist", "--data-dir", str(tmp_path), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and "apt-get install dataset-fashion-mnist" in err and "--data-dir" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
