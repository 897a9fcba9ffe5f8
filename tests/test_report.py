"""The report: table values, grouping and paper differences from hand-written metric files."""

import math

import pandas as pd
import pytest
from PIL import Image

from vitpeft import config, report
from vitpeft.cli import main
from vitpeft.errors import VitpeftError
from vitpeft.fileio import write_json

CONFIG = """
name: t
backbone: {pretrain: true}
target: {dataset: synthetic, num_classes: 10}
source: {dataset: synthetic}
synthetic: {target_classes: 10}
experiments:
  - {name: block_p1, method: block_expansion, args: {p: 1}, paper: {params: 7200000, target: 82.72, source: 75.75}}
  - {name: full, method: full, paper: {params: 85900000, target: 88.13, source: 25.24}}
  - {name: lora_r4, method: lora, args: {r: 4}, paper: {params: 301000, target: 87.91, source: 66.82}}
  - {name: linear, method: linear}
"""

# name: (trainable params, target top1, source k=20, routed k=20 or None)
FIGURES = {
    "full": (85875556, 90.0, 30.0, None),
    "linear": (76900, 80.0, 76.0, None),
    "lora_r4": (224356, 88.0, 60.0, 75.5),
    "block_p1": (7164772, 84.0, 74.0, 76.0),
}


@pytest.fixture
def results(tmp_path):
    path = tmp_path / "demo.yaml"
    path.write_text(CONFIG)
    metrics, runs = tmp_path / "metrics", tmp_path / "runs"
    write_json(metrics / "pretrained" / "target.json", {"metric": "knn", "top1": 40.0, "top5": None})
    write_json(metrics / "pretrained" / "source.json", _source(76.0, None))
    for name, (params, target, source, routed) in FIGURES.items():
        write_json(metrics / name / "target.json", {"metric": "classifier", "top1": target, "top5": 99.0})
        write_json(metrics / name / "source.json", _source(source, routed))
        write_json(runs / name / "summary.json", {"trainable_params": params})
    return path, metrics, runs


def _source(top20, routed20):
    routed = None if routed20 is None else {"10": routed20 - 1, "20": routed20}
    return {"metric": "knn", "knn": {"10": top20 - 1, "20": top20}, "routed": routed, "headline_k": 20}


def test_rows_are_grouped_as_in_the_paper_with_pretrained_first(results):
    path, metrics, runs = results
    table = report.build_table(config.load(path), metrics, runs)
    assert table["experiment"].tolist() == ["pretrained", "full", "linear", "lora_r4", "block_p1"]
    assert table["family"].tolist() == ["Pretrained", "Standard fine-tuning", "Standard fine-tuning", "LoRA", "Block Expansion"]


def test_values_means_and_paper_differences(results):
    path, metrics, runs = results
    table = report.build_table(config.load(path), metrics, runs).set_index("experiment")
    full = table.loc["full"]
    assert (full.trainable_params, full.target_acc, full.source_acc) == (85875556, 90.0, 30.0)
    assert full["mean"] == 60.0
    assert full.paper_mean == pytest.approx(56.685)
    assert full.diff_target_acc == pytest.approx(90.0 - 88.13)
    assert full.diff_source_acc == pytest.approx(30.0 - 25.24)
    assert full.diff_mean == pytest.approx(60.0 - 56.685)
    assert math.isnan(full.source_acc_routed)
    assert table.loc["lora_r4"].source_acc_routed == 75.5
    linear = table.loc["linear"]  # no paper figures in this config
    assert math.isnan(linear.paper_target_acc) and math.isnan(linear.diff_mean)
    pretrained = table.loc["pretrained"]
    assert pretrained.target_metric == "knn" and pretrained["mean"] == 58.0
    assert math.isnan(pretrained.trainable_params)


def test_human_readable_counts():
    assert report.human_count(85875556) == "85.9M"
    assert report.human_count(224356) == "224K"
    assert report.human_count(76900) == "76.9K"
    assert report.human_count(7164772) == "7.16M"
    assert report.human_count(490) == "490"
    assert report.human_count(math.nan) == ""


def test_report_command_writes_every_file_and_prints_the_table(results, tmp_path, capsys):
    path, metrics, runs = results
    out = tmp_path / "out"
    assert main(["report", "--config", str(path), "--metrics", str(metrics), "--runs", str(runs), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    markdown = (out / "table.md").read_text()
    assert printed.strip() == markdown.strip()
    lines = [line for line in markdown.splitlines() if line.startswith("|")]
    full = next(line for line in lines if "| full " in line)
    cells = [cell.strip() for cell in full.strip("|").split("|")]
    assert cells[:7] == ["Standard fine-tuning", "full", "85.9M", "85.9M", "90.00", "88.13", "+1.87"]
    assert cells[7:10] == ["30.00", "25.24", "+4.76"]
    assert "40.00 (k-NN)" in next(line for line in lines if "| pretrained " in line)
    linear = [cell.strip() for cell in next(line for line in lines if "| linear " in line).strip("|").split("|")]
    assert linear[0] == ""  # the family is named once, on its first row

    csv = pd.read_csv(out / "table.csv")
    needed = {"experiment", "method", "family", "trainable_params", "target_acc", "source_acc", "source_acc_routed",
              "mean", "paper_params", "paper_target_acc", "paper_source_acc", "paper_mean"}  # fmt: skip
    assert needed <= set(csv.columns) and len(csv) == 5
    assert csv.set_index("experiment").loc["block_p1", "source_acc_routed"] == 76.0
    assert pd.isna(csv.set_index("experiment").loc["full", "source_acc_routed"])

    tex = (out / "table.tex").read_text()
    assert "\\toprule" in tex and "85.9M" in tex
    with Image.open(out / "tradeoff.png") as image:
        assert image.format == "PNG" and image.width > 400


def test_a_missing_metrics_file_is_named(results):
    path, metrics, runs = results
    (metrics / "lora_r4" / "source.json").unlink()
    with pytest.raises(VitpeftError, match=r"lora_r4[/\\]source\.json"):
        report.build_table(config.load(path), metrics, runs)


def test_a_missing_run_summary_is_named(results):
    path, metrics, runs = results
    (runs / "full" / "summary.json").unlink()
    with pytest.raises(VitpeftError, match=r"run summary missing: .*full[/\\]summary\.json"):
        report.build_table(config.load(path), metrics, runs)


def test_a_missing_headline_k_is_named(results):
    path, metrics, runs = results
    write_json(metrics / "full" / "source.json", {"knn": {"10": 30.0}, "routed": None, "headline_k": 20})
    with pytest.raises(VitpeftError, match="k=20"):
        report.build_table(config.load(path), metrics, runs)


def test_source_column_off_leaves_source_figures_empty(results):
    path, metrics, runs = results
    cfg = config.load(path)
    cfg["source"]["enabled"] = False
    for name in [*FIGURES, "pretrained"]:
        (metrics / name / "source.json").unlink()
    table = report.build_table(cfg, metrics, runs)
    assert table["source_acc"].isna().all() and table["target_acc"].notna().all()
