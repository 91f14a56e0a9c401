"""lagprop report: the PNGs are real images, report.md links them and quotes the run's figures."""

from __future__ import annotations

import json
import re

import matplotlib.image as mpimg
import pytest

from lagprop.cli import main
from lagprop.report import make_report, read_metrics

RUN = ["train", "--dataset", "xor", "--hidden", "12", "--batch-size", "64", "--quiet", "--device", "cpu"]


@pytest.fixture(scope="module")
def l1_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("rep") / "run"
    assert main(RUN + ["--epochs", "3", "--l1", "0.01", "--out", str(run)]) == 0
    return run


def _image_ok(path) -> None:
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
    assert img[..., :3].std() > 0.01  # not a blank canvas


def test_report_writes_plots_and_summary(l1_run, capsys):
    assert main(["report", str(l1_run)]) == 0
    out = l1_run / "report"
    pngs = ["learning_curves.png", "constraint.png", "lambda.png", "support_map.png"]
    for name in pngs:
        _image_ok(out / name)
    md = (out / "report.md").read_text()
    for name in pngs:
        assert f"]({name})" in md
    summary = json.loads((l1_run / "summary.json").read_text())
    assert f"| test_accuracy | {summary['test_accuracy']:.4g} |" in md
    assert "| l1 | 0.01 |" in md
    rows = read_metrics(l1_run / "metrics.csv")
    assert len(re.findall(r"^\| [123] \|", md, flags=re.M)) == len(rows) == 3


def test_report_without_checkpoint_or_l1(tmp_path):
    run = tmp_path / "run"
    assert main(RUN + ["--epochs", "2", "--checkpoint-every", "0", "--out", str(run)]) == 0
    md = make_report(run, tmp_path / "rep").read_text()
    assert (tmp_path / "rep" / "learning_curves.png").exists() and not (tmp_path / "rep" / "support_map.png").exists()
    assert "no checkpoint read" in md
    _image_ok(tmp_path / "rep" / "lambda.png")  # the per-epoch statistics are in metrics.csv


def test_report_backprop(tmp_path):
    run = tmp_path / "bp"
    assert main(RUN + ["--epochs", "2", "--method", "backprop", "--out", str(run)]) == 0
    md = make_report(run).read_text()
    assert "backprop has no multipliers" in md and not (run / "report" / "lambda.png").exists()


def test_report_on_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "metrics.csv" in err and err.count("\n") == 1
    assert main(["report", str(tmp_path / "missing")]) == 2


def test_own_support_map_without_lagprop_support(l1_run, tmp_path, monkeypatch):
    """Without lagprop.support the report draws its own map (straw = hidden x = 0 in the forward pass)."""
    import sys
    monkeypatch.setitem(sys.modules, "lagprop.support", None)  # import fails
    md = make_report(l1_run, tmp_path / "own").read_text()
    _image_ok(tmp_path / "own" / "support_map.png")
    assert "](support_map.png)" in md
