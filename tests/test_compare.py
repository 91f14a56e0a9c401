"""``lagprop compare``: same start for every method, the table, and the files it writes.

Oracles: single, separate :class:`~lagprop.train.Trainer` runs with the same configuration
(interleaving the methods must not change a single number), the batches each trainer
actually visited (recorded), and the file formats themselves (PNG signature, JSON, CSV).
"""

from __future__ import annotations

import csv
import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from lagprop.cli import main
from lagprop.cli.common import build_network
from lagprop.compare import compare, parse_methods
from lagprop.data import load_dataset
from lagprop.errors import ConfigError
from lagprop.graph import Graph
from lagprop.train import TrainConfig, Trainer


def test_cli_writes_table_json_csv_png(tmp_path, capsys):
    out = tmp_path / "cmp"
    rc = main(["compare", "--dataset", "digits", "--hidden", "16", "--epochs", "2", "--batch-size", "128",
               "--out", str(out), "--quiet"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "backprop" in text and "mdmm" in text and "test acc" in text
    assert "mdmm vs backprop:" in text
    png = (out / "compare.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    d = json.loads((out / "compare.json").read_text())
    assert d["methods"] == ["backprop", "mdmm"]
    assert [r["epoch"] for r in d["histories"]["mdmm"]] == [0, 1, 2]
    # the store holds x and/or lambda per training example and non-input neuron, as configured
    cfg = d["configs"]["mdmm"]
    kept = (cfg["state"] == "stored") + (cfg["lambda_init"] == "stored")
    assert d["state_numbers"]["mdmm"] == kept * len(load_dataset("digits").X_train) * (16 + 10)
    assert "backprop" not in d["state_numbers"]
    ratio = d["ratios_vs_backprop"]["mdmm"]["seconds_per_epoch_ratio"]
    assert ratio == pytest.approx(d["seconds_per_epoch"]["mdmm"] / d["seconds_per_epoch"]["backprop"])
    rows = list(csv.DictReader((out / "compare.csv").read_text().splitlines()))
    assert len(rows) == 6 and {r["method"] for r in rows} == {"backprop", "mdmm"}
    for r in rows:  # the CSV and the JSON hold the same numbers
        h = d["histories"][r["method"]][int(r["epoch"])]
        assert float(r["test_accuracy"]) == pytest.approx(h["test_accuracy"])
    assert (out / "table.txt").read_text().startswith("epoch")


def test_same_start_same_order_and_same_numbers_as_separate_runs(monkeypatch):
    data = load_dataset("digits")
    graph = Graph.mlp([data.n_inputs, 12, data.n_outputs])
    cfg = TrainConfig(epochs=2, batch_size=200, seed=4)
    seen: dict[int, list[list[int]]] = {}
    plain = Trainer.batches

    def recorded(self):
        out = plain(self)
        seen.setdefault(id(self), []).append([] if out == [None] else [int(i) for b in out for i in b])
        return out

    monkeypatch.setattr(Trainer, "batches", recorded)
    result = compare(data, graph, cfg, ["backprop", "mdmm", "bdmm"])
    orders = list(seen.values())
    assert len(orders) == 3 and orders[0] == orders[1] == orders[2]  # same data order
    assert orders[0][0] != orders[0][1]                               # and it is shuffled per epoch
    first = [result.histories[m][0] for m in result.methods]
    assert first[0]["test_loss"] == first[1]["test_loss"] == first[2]["test_loss"]  # same weights
    monkeypatch.setattr(Trainer, "batches", plain)
    for m in result.methods:  # interleaving changes nothing: each equals a run on its own
        mcfg = replace(cfg, method=m)
        alone = Trainer(build_network(graph, mcfg), data, mcfg).fit()
        got = result.histories[m][1:]
        assert [r["test_loss"] for r in got] == [r["test_loss"] for r in alone]
        assert [r["train_accuracy"] for r in got] == [r["train_accuracy"] for r in alone]


def test_methods_learn_different_things_from_the_same_start():
    data = load_dataset("digits")
    graph = Graph.mlp([data.n_inputs, 12, data.n_outputs])
    result = compare(data, graph, TrainConfig(epochs=2, batch_size=32), ["backprop", "mdmm"])
    assert result.histories["backprop"][1]["test_loss"] != result.histories["mdmm"][1]["test_loss"]
    for m in ("backprop", "mdmm"):  # both actually learned
        assert result.final(m)["test_accuracy"] > result.histories[m][0]["test_accuracy"] + 0.3


def test_regression_reports_mse(tmp_path, capsys):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(80, 3))
    np.savez(tmp_path / "reg.npz", X=X, y=X @ np.array([1.0, -2.0, 0.5]))
    rc = main(["compare", "--dataset", str(tmp_path / "reg.npz"), "--hidden", "8", "--loss", "mse",
               "--epochs", "1", "--out", str(tmp_path / "o"), "--quiet"])
    assert rc == 0
    assert "test mse" in capsys.readouterr().out
    assert json.loads((tmp_path / "o" / "compare.json").read_text())["metric"] == "test_mse"


@pytest.mark.parametrize("methods,needle", [("backprop,nosuch", "unknown method"),
                                            ("backprop,backprop", "twice"), ("backprop,,mdmm", "comma")])
def test_bad_methods_exit_2(tmp_path, capsys, methods, needle):
    rc = main(["compare", "--dataset", "xor", "--methods", methods, "--out", str(tmp_path / "x")])
    assert rc == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1
    assert not (tmp_path / "x").exists()


def test_a_diverging_method_stops_and_the_others_finish(tmp_path, capsys, monkeypatch):
    import lagprop.train as train_mod

    def exploding(trainer):  # a method whose weights become NaN: the trainer's guard must fire
        def step(idx):
            with torch.no_grad():
                for p in trainer.net.parameters():
                    p.fill_(float("nan"))
        return step

    monkeypatch.setitem(train_mod._EXTRA_METHODS, "exploding", exploding)
    rc = main(["compare", "--dataset", "xor", "--hidden", "8", "--methods", "backprop,exploding", "--epochs", "3",
               "--out", str(tmp_path / "d"), "--quiet"])
    assert rc == 3
    d = json.loads((tmp_path / "d" / "compare.json").read_text())
    assert "exploding" in d["errors"] and "diverged" in d["errors"]["exploding"]
    assert len(d["histories"]["backprop"]) == 4 and len(d["histories"]["exploding"]) == 1
    assert "exploding: stopped" in capsys.readouterr().out


def test_parse_methods():
    assert parse_methods("backprop, mdmm") == ["backprop", "mdmm"]
    with pytest.raises(ConfigError):
        parse_methods("")


def test_same_start_guard_catches_different_weights():
    from lagprop.compare import _check_same_start

    data = load_dataset("xor")
    graph = Graph.mlp([2, 4, 2])
    a = Trainer(build_network(graph, TrainConfig(seed=0)), data, TrainConfig(seed=0))
    b = Trainer(build_network(graph, TrainConfig(seed=1)), data, TrainConfig(seed=1))
    with pytest.raises(ConfigError):
        _check_same_start({"a": a, "b": b})
