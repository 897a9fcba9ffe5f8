"""The report, from hand-written metrics files at the paths a real Plan names.

Stds are sample stds (ddof=1): for two seeds a and b, |a - b| / sqrt(2).
"""

import hashlib
import json
import io
import math
import os
from pathlib import Path

import pandas as pd
import pytest
import yaml
from matplotlib.container import ErrorbarContainer
from PIL import Image

from vitpeft.study import config
from vitpeft.report import labels, plots, provenance, tables
from vitpeft.cli import main
from vitpeft.errors import VitpeftError
from vitpeft import digests
from vitpeft.digests import write_json  # metrics carry their digest, as the eval commands write them
from vitpeft.fileio import write_json as write_plain_json
from vitpeft.study.plan import Plan

SQRT2 = math.sqrt(2)


def unsealed(path) -> dict:
    """A metrics file's record without its digest, to edit and write again (write_json seals it anew)."""
    return {key: value for key, value in json.loads(Path(path).read_text()).items() if key != digests.JSON_KEY}

EXPERIMENTS = [  # config order; the report regroups them by family
    {"name": "block_p1", "method": "block_expansion", "args": {"p": 1},
     "paper": {"params": 7200000, "target": 82.72, "source": 75.75}},
    {"name": "full", "method": "full", "paper": {"params": 85900000, "target": 88.13, "source": 25.24}},
    {"name": "lora_r4", "method": "lora", "args": {"r": 4},
     "paper": {"params": 301000, "target": 87.91, "source": 66.82}},
    {"name": "linear", "method": "linear"},
]  # fmt: skip
# name: (trainable params, {seed: (target top1, source k=20 or None = the untouched backbone's, routed k=20)})
FIGURES = {
    "full": (85875556, {0: (90.0, 30.0, None), 1: (92.0, 34.0, None)}),
    "linear": (76900, {0: (80.0, None, None), 1: (82.0, None, None)}),
    "lora_r4": (224356, {0: (88.0, 60.0, 75.5), 1: (86.0, 62.0, 75.5)}),
    "block_p1": (7164772, {0: (84.0, 74.0, 76.0), 1: (84.0, 72.0, 76.0)}),
}
PRETRAINED_SOURCE, PRETRAINED_TARGET = 76.0, 40.0
CIFAR_SHIFT = 1.0  # cifar100's target figures are synthetic's + 1, so the blocks tell apart
# (experiment, seed): source k-NN on the curve's subsample at steps 0, 5, 10, 20 and for the kept weights
CURVES = {
    ("full", 0): (80.0, 40.0, 20.0, 10.0, 12.0),  # 75% lost at step 10
    ("full", 1): (60.0, 30.0, 21.0, 15.0, 14.0),  # 65% lost at step 10
}
STEADY = (80.0, 79.0, 78.0, 77.0, 76.0)  # the other runs: 2.5% lost at step 10
# name: a run's summary.json `cost` (vitpeft.training.cost.record's keys); block_p1 stands for a run trained before
# costs were recorded (none)
COSTS = {
    "full": {"forward_flops_per_image": 12_240_000, "train_flops_per_image": 36_431_424, "train_flops": 699_483_340_800,
             "memory_estimate_bytes": 53_477_376, "memory_measured_bytes": None, "trained_params": 85875556,
             "stored_params": 85875556},
    "linear": {"forward_flops_per_image": 12_240_000, "train_flops_per_image": 12_240_000, "train_flops": 235_008_000_000,
               "memory_estimate_bytes": 5_242_880, "memory_measured_bytes": None, "trained_params": 76900,
               "stored_params": 85875556},
    "lora_r4": {"forward_flops_per_image": 12_560_000, "train_flops_per_image": 25_550_000, "train_flops": 490_560_000_000,
                "memory_estimate_bytes": 50_331_648, "memory_measured_bytes": None, "trained_params": 224356,
                "stored_params": 86023012},
}  # fmt: skip


def study(datasets=("synthetic", "cifar100"), seeds=(0, 1), curve=True, source=True, interpolation=None) -> dict:
    return {
        **({"interpolation": interpolation} if interpolation else {}),
        "name": "t",
        "seeds": list(seeds),
        "backbone": {"pretrain": True},
        "target": {"datasets": list(datasets)},
        "source": {"dataset": "synthetic", "enabled": source, "k": [10, 20]},
        "train": {"steps": 50},
        "curve": {"steps": [5, 10, 20] if curve else []},
        "experiments": EXPERIMENTS,
    }


def _source(top20, routed20=None) -> dict:
    routed = None if routed20 is None else {"10": routed20 - 1, "20": routed20}
    return {"metric": "knn", "knn": {"10": top20 - 1, "20": top20}, "routed": routed, "headline_k": 20}


def _curve(sources, target_final) -> dict:
    points = [
        {"step": step, "target_acc": 10.0 + step, "source_acc": acc, "source_knn": {"20": acc}, "final": False}
        for step, acc in zip((0, 5, 10, 20), sources)
    ]
    points.append({"step": 50, "target_acc": target_final, "source_acc": sources[-1], "final": True})
    return {"points": points, "headline_k": 20}


def write_metrics(plan: Plan) -> None:
    """Every file the plan names, with the figures above (a real run's formats)."""
    for dataset, node in plan.pretrained_target.items():
        write_json(node.path, {"metric": "knn", "top1": PRETRAINED_TARGET, "top5": None})
    if plan.pretrained_source:
        write_json(plan.pretrained_source.path, _source(PRETRAINED_SOURCE))
    for (dataset, name, seed), run in plan.runs.items():
        params, seeds = FIGURES[name]
        target, source, routed = seeds[seed]
        target += CIFAR_SHIFT if dataset == "cifar100" else 0.0
        write_json(run.target.path, {"metric": "classifier", "top1": target, "top5": 99.0})
        if run.source:
            write_json(run.source.path, _source(source, routed))
        cost = {"cost": COSTS[name]} if name in COSTS else {}
        write_plain_json(f"{run.train.path}/summary.json", {"trainable_params": params, "selected_step": 50, **cost})
        digests.seal(run.train.path)  # the run folder's SHA256SUMS, as vitpeft train writes it
        if run.curve:
            write_json(run.curve.path, _curve(CURVES.get((name, seed), STEADY), target))


@pytest.fixture
def made(tmp_path, monkeypatch):
    """make(**study settings) -> the Plan, with every metrics file written (paths relative to tmp_path)."""
    monkeypatch.chdir(tmp_path)

    def make(**settings) -> Plan:
        plan = Plan(config.load(study(**settings)))
        write_metrics(plan)
        return plan

    return make


def row(table: pd.DataFrame, dataset: str, experiment: str):
    return table.set_index(["dataset", "experiment"]).loc[(dataset, experiment)]


# ---------------------------------------------------------------- seeds


def test_the_table_holds_means_sample_stds_and_seed_counts(made):
    table = tables.build(made()).table
    full = row(table, "synthetic", "full")
    assert (full.n_seeds, full.trainable_params) == (2, 85875556)
    assert (full.target_acc, full.source_acc, full["mean"]) == (91.0, 32.0, 61.5)
    assert full.target_acc_std == pytest.approx(SQRT2)  # 90 and 92
    assert full.source_acc_std == pytest.approx(2 * SQRT2)  # 30 and 34
    assert full.mean_std == pytest.approx(3 / SQRT2)  # 60 and 63
    assert math.isnan(full.source_acc_routed)
    linear = row(table, "synthetic", "linear")  # the untouched backbone's source score, both seeds
    assert (linear.source_acc, linear.source_acc_std) == (PRETRAINED_SOURCE, 0.0)
    lora = row(table, "synthetic", "lora_r4")
    assert (lora.source_acc_routed, lora.source_acc_routed_std) == (75.5, 0.0)
    pretrained = row(table, "synthetic", "pretrained")
    assert (pretrained.n_seeds, pretrained.target_metric, pretrained["mean"]) == (1, "knn", 58.0)
    assert math.isnan(pretrained.target_acc_std) and pd.isna(pretrained.trainable_params)


def test_per_seed_rows_keep_every_run_with_the_key_of_its_folder(made):
    plan = made()
    per_seed = tables.build(plan).per_seed
    assert len(per_seed) == 2 * 4 * 2  # datasets x experiments x seeds
    full = per_seed.set_index(["dataset", "experiment", "seed"]).loc[("cifar100", "full", 1)]
    assert (full.target_acc, full.source_acc, full.selected_step, full.method) == (93.0, 34.0, 50, "full")
    assert plan.runs[("cifar100", "full", 1)].train.path.endswith(f"/cifar100/full/seed1-{full.key}")


def test_one_seed_leaves_the_stds_blank(made):
    table = tables.build(made(seeds=[1])).table
    assert table["n_seeds"].eq(1).all() and table["target_acc_std"].isna().all()
    assert row(table, "synthetic", "full").target_acc == 92.0


# ---------------------------------------------------------------- datasets and the paper


def test_one_block_per_dataset_each_led_by_the_untouched_backbone(made):
    table = tables.build(made()).table
    order = ["pretrained", "full", "linear", "lora_r4", "block_p1"]  # families in the paper's order
    assert list(zip(table["dataset"], table["experiment"])) == [
        *[("synthetic", name) for name in order], *[("cifar100", name) for name in order]
    ]
    assert table["family"].tolist()[:5] == [
        "Pretrained", "Standard fine-tuning", "Standard fine-tuning", "LoRA", "Block Expansion"
    ]  # fmt: skip
    assert row(table, "cifar100", "full").target_acc == 92.0  # the cifar100 files, not synthetic's


def test_paper_figures_sit_on_cifar100_rows_only_when_there_are_several_datasets(made):
    table = tables.build(made()).table
    full = row(table, "cifar100", "full")
    assert (full.paper_params, full.paper_target_acc, full.paper_source_acc) == (85900000, 88.13, 25.24)
    assert full.paper_mean == pytest.approx(56.685)
    assert full.diff_target_acc == pytest.approx(92.0 - 88.13)
    assert full.diff_mean == pytest.approx(62.0 - 56.685)
    assert table[table["dataset"] == "synthetic"][["paper_target_acc", "diff_mean"]].isna().all().all()


def test_a_single_dataset_shows_the_paper_on_every_row(made):
    table = tables.build(made(datasets=["synthetic"])).table
    assert row(table, "synthetic", "full").paper_source_acc == 25.24
    assert math.isnan(row(table, "synthetic", "linear").paper_target_acc)  # the config gives it none


def test_source_column_off_leaves_the_source_figures_blank(made):
    built = tables.build(made(source=False, curve=False))
    assert built.table["source_acc"].isna().all() and built.table["target_acc"].notna().all()
    assert built.curve is None


# ---------------------------------------------------------------- the curve and the claim


def test_curve_rows_come_from_the_curve_steps_with_the_final_point_in_the_table(made):
    built = tables.build(made())
    curve = built.curve.set_index(["dataset", "experiment", "seed"])
    full = curve.loc[("synthetic", "full", 0)]
    assert full["step"].tolist() == [0, 5, 10, 20]  # the final point is not a curve step
    assert full["source_acc"].tolist() == [80.0, 40.0, 20.0, 10.0]
    assert full["target_acc"].tolist() == [10.0, 15.0, 20.0, 30.0]
    per_seed = built.per_seed.set_index(["dataset", "experiment", "seed"])
    assert per_seed.loc[("synthetic", "full", 1), "source_acc_subsample"] == 14.0
    full_row = row(built.table, "synthetic", "full")
    assert (full_row.source_acc_subsample, full_row.source_acc_subsample_std) == (13.0, pytest.approx(SQRT2))


def test_the_early_source_loss_reads_the_papers_claim(made):
    table = tables.build(made()).table
    full = row(table, "synthetic", "full")
    # seed 0: (80 - 20) / 80 = 75%; seed 1: (60 - 21) / 60 = 65% -> 70 ± 5 * sqrt(2)
    assert (full.early_step, full.early_source_loss) == (10, pytest.approx(70.0))
    assert full.early_source_loss_std == pytest.approx(5 * SQRT2)
    assert row(table, "cifar100", "lora_r4").early_source_loss == pytest.approx(2.5)  # (80 - 78) / 80
    assert pd.isna(row(table, "synthetic", "pretrained").early_step)


def test_the_early_step_is_the_first_curve_step_at_or_after_ten():
    points = [tables.Point(step, 0.0, acc, False) for step, acc in ((0, 50.0), (4, 45.0), (16, 40.0), (32, 10.0))]
    assert tables.early_source_loss(points) == (16, pytest.approx(20.0))
    assert all(math.isnan(value) for value in tables.early_source_loss(points[:2]))  # no step >= 10


def test_a_curve_ending_before_step_ten_says_the_claim_cannot_be_read(made):
    plan = Plan(config.load({**study(), "curve": {"steps": [5]}}))
    write_metrics(plan)
    for run in plan.runs.values():
        write_json(run.curve.path, {"points": [
            {"step": 0, "target_acc": 1.0, "source_acc": 80.0, "final": False},
            {"step": 5, "target_acc": 2.0, "source_acc": 70.0, "final": False},
            {"step": 50, "target_acc": 3.0, "source_acc": 60.0, "final": True},
        ]})  # fmt: skip
    built = tables.build(plan)
    assert built.early_step is None and built.table["early_source_loss"].isna().all()
    assert "no step at or after 10: add one to curve.steps" in tables.markdown(built)


def test_curve_csv_has_exactly_the_five_columns_for_one_dataset(made, tmp_path):
    plan = made(datasets=["synthetic"])
    provenance.write(tables.build(plan), "out", "prov/report-x.json", _config_file(tmp_path, plan), plan)
    curve = pd.read_csv("out/curve.csv")
    assert curve.columns.tolist() == ["experiment", "seed", "step", "target_acc", "source_acc"]
    assert len(curve) == 4 * 2 * 4  # experiments x seeds x curve steps


def test_curve_csv_leads_with_the_dataset_when_there_are_several(made, tmp_path):
    plan = made()
    provenance.write(tables.build(plan), "out", "prov/report-x.json", _config_file(tmp_path, plan), plan)
    curve = pd.read_csv("out/curve.csv")
    assert curve.columns.tolist() == ["dataset", "experiment", "seed", "step", "target_acc", "source_acc"]
    assert set(curve["dataset"]) == {"synthetic", "cifar100"}
    with Image.open("out/curve.png") as image:
        assert image.format == "PNG" and image.height > image.width / 2  # two rows of panels


def test_without_curve_steps_no_curve_files_and_no_claim(made, tmp_path):
    plan = made(curve=False)
    text = provenance.write(tables.build(plan), "out", "prov/report-x.json", _config_file(tmp_path, plan), plan)
    assert not os.path.exists("out/curve.csv") and not os.path.exists("out/curve.png")
    assert "Forgetting early" not in text and "Source lost" not in text


# ---------------------------------------------------------------- the plots


def test_the_tradeoff_plot_draws_error_bars_with_seeds_and_one_panel_per_dataset(made):
    figure = plots.tradeoff_figure(tables.build(made()))
    axes = figure.axes
    assert [ax.get_title() for ax in axes] == [
        "synthetic: stability-plasticity trade-off", "cifar100: stability-plasticity trade-off"
    ]  # fmt: skip
    bars = [container for container in axes[0].containers if isinstance(container, ErrorbarContainer)]
    assert len(bars) == 4  # one per experiment, each in its own colour
    assert "target accuracy (%)" in axes[0].get_xlabel() and "(%)" in axes[0].get_ylabel()


def test_one_seed_draws_no_error_bars_and_another_picture(made, tmp_path):
    one = plots.tradeoff_figure(tables.build(made(seeds=[0], datasets=["synthetic"])))
    assert not any(isinstance(c, ErrorbarContainer) for ax in one.axes for c in ax.containers)
    two = plots.tradeoff_figure(tables.build(made(seeds=[0, 1], datasets=["synthetic"])))
    one.savefig(tmp_path / "one.png", format="png")
    two.savefig(tmp_path / "two.png", format="png")
    assert (tmp_path / "one.png").read_bytes() != (tmp_path / "two.png").read_bytes()


def test_the_curve_plot_has_a_source_and_a_target_panel_per_dataset_with_bands(made):
    figure = plots.curve_figure(tables.build(made()))
    assert len(figure.axes) == 4
    source = figure.axes[0]
    assert source.get_xscale() == "symlog" and source.get_xlim()[0] == 0  # step 0 on the log axis
    assert "source k-NN accuracy (%)" in source.get_ylabel()
    assert [line.get_label() for line in source.get_lines()] == ["block_p1", "full", "lora_r4", "linear"]
    assert len(source.collections) == 4  # a std band per experiment


# ---------------------------------------------------------------- text


def test_human_readable_counts():
    assert tables.human_count(85875556) == "85.9M"
    assert tables.human_count(224356) == "224K"
    assert tables.human_count(76900) == "76.9K"
    assert tables.human_count(7164772) == "7.16M"
    assert tables.human_count(490) == "490"
    assert tables.human_count(math.nan) == ""


def test_markdown_shows_mean_and_std_per_dataset_block_and_the_claim(made):
    built = tables.build(made())
    text = tables.markdown(built)
    lines = [line for line in text.splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    assert header[:3] == ["Dataset", "Family", "Experiment"] and header[-1] == "Source lost at step 10 (%)"
    cells = [cell.strip() for cell in next(line for line in lines if "| full " in line).strip("|").split("|")]
    assert cells[:8] == ["", "Standard fine-tuning", "full", "85.9M", "", "91.00 ± 1.41", "", ""]
    assert cells[-1] == "70.00 ± 7.07"
    cifar = [cell.strip() for cell in lines[2 + 5 + 1].strip("|").split("|")]  # cifar100's full row
    assert cifar[:6] == ["", "Standard fine-tuning", "full", "85.9M", "85.9M", "92.00 ± 1.41"]
    assert cifar[6:9] == ["88.13", "+3.87", "32.00 ± 2.83"]
    pretrained = [cell.strip() for cell in lines[2].strip("|").split("|")]  # each block opens with it
    assert pretrained[:3] == ["synthetic", "Pretrained", "pretrained"] and pretrained[5] == "40.00 (k-NN)"
    assert lines[7].strip("| ").startswith("cifar100")
    assert "mean ± sample std (ddof=1) over 2 seeds (0, 1)" in text
    assert "lost at step 10, the first curve step ≥ 10" in text
    assert "- synthetic / full: 70.00 ± 7.07%\n" in text
    assert "- cifar100 / lora_r4: 2.50 ± 0.00%\n" in text


def test_latex_writes_plus_minus_as_math(made):
    tex = tables.latex(tables.build(made()))
    assert "\\toprule" in tex and "91.00 $\\pm$ 1.41" in tex and "±" not in tex


# ---------------------------------------------------------------- the command


def _config_file(tmp_path, plan) -> str:
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study(
        datasets=plan.cfg["target"]["datasets"], seeds=plan.cfg["seeds"], curve=bool(plan.cfg["curve"]["steps"])
    )))  # fmt: skip
    return "study.yaml"


def test_report_command_writes_every_file_then_the_provenance(made, tmp_path, capsys):
    plan = made()
    path = _config_file(tmp_path, plan)
    provenance = plan.report.path
    write_plain_json(f"{os.path.dirname(provenance)}/report-0123456789ab.json", {"old": True})  # an earlier version's
    args = ["report", "--config", path, "--out", plan.results, "--provenance", provenance]
    assert main(args) == 0

    printed = capsys.readouterr().out
    assert printed.strip() == (tmp_path / plan.results / "table.md").read_text().strip()
    outputs = [tmp_path / name for name in plan.report_files()]
    for output in outputs:
        assert output.stat().st_size > 0, output
    assert (tmp_path / provenance).stat().st_mtime_ns >= max(output.stat().st_mtime_ns for output in outputs)
    assert os.listdir(os.path.dirname(provenance)) == [os.path.basename(provenance)]  # the stale one is gone

    record = json.loads((tmp_path / provenance).read_text())
    assert (record["name"], record["report_key"]) == ("t", plan.report.key)
    assert record["config"] == {"path": path, "sha256": _sha256(path)}
    expected = {node.path for node in (plan.pretrained_source, *plan.pretrained_target.values())}
    for run in plan.runs.values():
        expected |= {run.target.path, f"{run.train.path}/summary.json", run.curve.path}
        expected |= {run.source.path} if run.source else set()
    assert set(record["inputs"]) == expected
    assert all(digest == _sha256(name) for name, digest in record["inputs"].items())

    table = pd.read_csv(tmp_path / plan.results / "table.csv")
    assert {"dataset", "n_seeds", "target_acc_std", "source_acc_std", "early_step", "early_source_loss",
            "source_acc_subsample"} <= set(table.columns)  # fmt: skip
    assert table["trainable_params"].dropna().astype(int).tolist()[:2] == [85875556, 76900]
    assert len(pd.read_csv(tmp_path / plan.results / "per_seed.csv")) == 16
    with Image.open(tmp_path / plan.results / "tradeoff.png") as image:
        assert image.format == "PNG" and image.width > 2 * image.height  # two panels side by side


def test_the_index_maps_every_run_and_seed_to_its_current_folder_and_files(made, tmp_path):
    plan = made()
    path = _config_file(tmp_path, plan)
    old = plan.runs[("synthetic", "full", 0)].train.path.replace("seed0-", "seed0-0") + "_old"
    os.makedirs(old)  # an earlier key's folder stays beside the current one
    assert main(["report", "--config", path, "--out", plan.results, "--provenance", plan.report.path]) == 0
    index = pd.read_csv(tmp_path / plan.results / "index.csv", dtype=str, keep_default_na=False)
    assert list(index.columns) == ["dataset", "experiment", "seed", "key", "run", "spec", "target", "source",
                                   "curve", "interpolation", "wise", "config"]  # fmt: skip
    assert len(index) == 2 + 2 * 4 * 2  # the untouched backbone per dataset, then every run
    assert set(index["config"]) == {path}
    rows = index.set_index(["dataset", "experiment", "seed"])
    for (dataset, name, seed), run in plan.runs.items():
        row = rows.loc[(dataset, name, str(seed))]
        assert (row.key, row.run, row.spec, row.target) == (
            run.train.key, run.train.path, f"{run.train.path}/spec.yaml", run.target.path)
        assert row.source == plan.source_metrics(run).path and row.curve == run.curve.path
        assert os.path.isfile(row.target) and os.path.isfile(row.source) and os.path.isfile(row.curve)
    assert old not in set(index["run"])
    pretrained = rows.loc[("cifar100", "pretrained", "")]
    assert (pretrained.target, pretrained.source) == (plan.pretrained_target["cifar100"].path,
                                                      plan.pretrained_source.path)


def _sha256(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_old_outputs_beside_the_planned_files_are_never_read(made):
    plan = made()
    run = plan.runs[("synthetic", "full", 0)]
    stale = os.path.join(os.path.dirname(run.target.path), "target-000000000000.json")
    with open(stale, "w") as handle:
        handle.write("{broken")
    built = tables.build(plan)
    assert row(built.table, "synthetic", "full").target_acc == 91.0 and stale not in built.inputs


# ---------------------------------------------------------------- bad input: one message naming the file


def test_a_missing_metrics_file_is_named_with_the_command_that_writes_it(made):
    plan = made()
    path = plan.runs[("cifar100", "lora_r4", 1)].source.path
    os.remove(path)
    with pytest.raises(VitpeftError) as error:
        tables.build(plan)
    expected = f"source metrics missing: {path}; `vitpeft eval-source` writes it (run the workflow first)"
    assert str(error.value) == expected


def test_a_missing_run_summary_is_named(made):
    plan = made()
    path = f"{plan.runs[('synthetic', 'full', 0)].train.path}/summary.json"
    os.remove(path)
    with pytest.raises(VitpeftError, match=f"run summary missing: {path}; `vitpeft train` writes it"):
        tables.build(plan)


def test_a_missing_curve_is_named(made):
    plan = made()
    path = plan.runs[("synthetic", "linear", 1)].curve.path
    os.remove(path)
    with pytest.raises(VitpeftError, match=f"forgetting curve missing: {path}; `vitpeft eval-curve` writes it"):
        tables.build(plan)


def test_a_figure_changed_in_a_metrics_file_is_refused_but_its_layout_may_change(made):
    """The digest inside each metrics file covers its content: a flipped digit is refused, re-indenting is not."""
    plan = made()
    path = plan.runs[("synthetic", "full", 0)].target.path
    text = Path(path).read_text()
    recorded = json.loads(text)["sha256"]
    Path(path).write_text(json.dumps(json.loads(text)))  # one line instead of indented: the same content
    tables.build(plan)
    at = text.index('"top1": ') + len('"top1": ')
    Path(path).write_text(text[:at] + ("1" if text[at] != "1" else "2") + text[at + 1:])  # one digit flipped
    with pytest.raises(VitpeftError, match=f"target metrics {path} is corrupt: .* it records {recorded}; delete it"):
        tables.build(plan)


def test_invalid_json_is_named(made):
    plan = made()
    path = plan.pretrained_target["cifar100"].path
    with open(path, "w") as handle:
        handle.write('{"metric": "knn", "top1": ')
    with pytest.raises(VitpeftError, match=f"target metrics {path} is corrupt: not valid JSON .*delete it and rerun"):
        tables.build(plan)


@pytest.mark.parametrize("value", ["90.0", True, None, [90.0], float("nan")])
def test_a_non_numeric_accuracy_is_refused(made, value):
    plan = made()
    path = plan.runs[("synthetic", "full", 1)].target.path
    write_json(path, {"metric": "classifier", "top1": value})
    with pytest.raises(VitpeftError, match=f"{path}: expected a number under 'top1', found"):
        tables.build(plan)


def test_a_non_numeric_curve_point_is_refused(made):
    plan = made()
    path = plan.runs[("synthetic", "full", 0)].curve.path
    curve = _curve(STEADY, 90.0)
    curve["points"][2]["source_acc"] = "78"
    write_json(path, curve)
    with pytest.raises(VitpeftError, match=rf"{path}: expected a number under 'points\[2\]\.source_acc', found '78'"):
        tables.build(plan)


def test_a_curve_without_its_final_point_is_refused(made):
    plan = made()
    path = plan.runs[("synthetic", "full", 0)].curve.path
    curve = _curve(STEADY, 90.0)
    curve["points"].pop()
    write_json(path, curve)
    with pytest.raises(VitpeftError, match=f'{path}: expected one point with "final": true .*found 0'):
        tables.build(plan)


def test_a_curve_with_other_steps_than_planned_is_refused(made):
    plan = made()
    path = plan.runs[("cifar100", "block_p1", 0)].curve.path
    curve = _curve(STEADY, 90.0)
    del curve["points"][0]  # step 0, the untouched model every loss is relative to
    write_json(path, curve)
    with pytest.raises(VitpeftError, match=rf"{path}: curve steps \[5, 10, 20\], but the study plans \[0, 5, 10, 20\]"):
        tables.build(plan)


def test_a_missing_headline_k_is_named(made):
    plan = made()
    path = plan.runs[("synthetic", "full", 0)].source.path
    write_json(path, {"knn": {"10": 30.0}, "routed": None, "headline_k": 20})
    with pytest.raises(VitpeftError, match=f"{path}: no k-NN accuracy for the headline k=20"):
        tables.build(plan)


def test_the_command_prints_one_line_and_exits_2_before_writing(made, tmp_path, capsys):
    plan = made()
    path = _config_file(tmp_path, plan)
    os.remove(plan.pretrained_source.path)
    args = ["report", "--config", path, "--out", "out", "--provenance", plan.report.path]
    assert main(args) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and plan.pretrained_source.path in error
    assert not os.path.exists("out") and not os.path.exists(plan.report.path)


def test_an_out_folder_that_is_a_file_is_refused_before_writing(made, tmp_path, capsys):
    plan = made()
    path = _config_file(tmp_path, plan)
    (tmp_path / "notes").write_text("mine")
    args = ["report", "--config", path, "--out", str(tmp_path / "notes" / "out"), "--provenance", plan.report.path]
    assert main(args) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "--out" in error and "notes is a file, not a folder" in error
    assert (tmp_path / "notes").read_text() == "mine" and not os.path.exists(plan.report.path)



# ---------------------------------------------------------------- interpolation: every column one protocol

ALPHAS = [0, 0.5, 1]
WHOLE_BANK_GAP = 3.0  # eval-wise's whole-bank k-NN here: the subsample's at the chosen alpha + 3, so they differ
CHOSEN = {"full": 0.5, "lora_r4": 1, "block_p1": 0.5}  # what eval-wise chose (seed 1 of full chose 0 instead)


def sweep_point(name, seed, alpha) -> dict:
    """A sweep's point: test top-1, held-out top-1 and subsample k-NN, distinct per run and alpha."""
    shift = 10 * ALPHAS.index(alpha) + seed
    return {"alpha": alpha, "target_acc": 60.0 + shift, "val_acc": 55.0 + shift, "source_acc": 70.0 - shift,
            "source_knn": {"20": 70.0 - shift}}


def write_interpolation(plan) -> dict:
    """Every interpolated run's sweep and chosen-alpha file; {(dataset, experiment, seed): (alpha, point)}."""
    chosen = {}
    for (dataset, name, seed), run in plan.runs.items():
        if run.interpolation is None:
            continue
        points = [sweep_point(name, seed, alpha) for alpha in ALPHAS]
        write_json(run.interpolation.path, {"points": points, "source_data": "subsample: 10 and 10 per class",
                                            "val_data": "held-out 0.1 of train"})
        alpha = 0 if (name, seed) == ("full", 1) else CHOSEN[name]
        point = points[ALPHAS.index(alpha)]
        whole = point["source_acc"] + WHOLE_BANK_GAP
        write_json(run.wise.path, {
            "alpha": alpha, "choose_on": "validation", "target_acc": point["target_acc"],
            "source_acc_subsample": point["source_acc"], "knn": {"10": whole - 1, "20": whole}, "headline_k": 20,
            "top1": whole, "chosen_on": {"target": "held-out 0.1 of train", "source": "subsample: 10 and 10 per class"},
        })  # fmt: skip
        chosen[(dataset, name, seed)] = (alpha, point)
    return chosen


@pytest.fixture
def interpolated(made):
    plan = made(interpolation={"enabled": True, "alphas": ALPHAS})
    return plan, write_interpolation(plan)


def test_wise_rows_show_the_whole_bank_in_the_source_column_and_the_subsample_in_its_own(interpolated):
    plan, chosen = interpolated
    built = tables.build(plan)
    full = row(built.table, "synthetic", "full WiSE")  # seed 0 chose 0.5, seed 1 chose 0
    picks = [chosen[("synthetic", "full", seed)][1] for seed in (0, 1)]
    assert full.source_acc == pytest.approx(sum(p["source_acc"] + WHOLE_BANK_GAP for p in picks) / 2)
    assert full.source_acc_subsample == pytest.approx(sum(p["source_acc"] for p in picks) / 2)
    assert full.target_acc == pytest.approx(sum(p["target_acc"] for p in picks) / 2)  # the test split's, there
    assert full["mean"] == pytest.approx((full.target_acc + full.source_acc) / 2)
    assert (full.family, full.n_seeds, full.alpha) == ("Forgetting mitigation", 2, 0.25)
    assert "not" not in str(row(built.table, "cifar100", "lora_r4 WiSE").chosen_on)  # the choice's data, per row
    assert "linear WiSE" not in set(built.table["experiment"])  # an untouched backbone has nothing to interpolate
    per_seed = built.per_seed.set_index(["dataset", "experiment", "seed"])
    assert per_seed.loc[("synthetic", "full WiSE", 1), "alpha"] == 0
    assert per_seed.loc[("synthetic", "full WiSE", 1), "chosen_on"].startswith("target: held-out 0.1 of train")

    headers, rows = tables.display_rows(built)
    cells = dict(zip(headers, next(cells for cells in rows if cells[2] == "full WiSE")))
    assert cells["Source k-NN"] == f"{full.source_acc:.2f} ± {full.source_acc_std:.2f}"  # the whole bank
    assert cells[tables.SUBSAMPLE_HEADER].startswith(f"{full.source_acc_subsample:.2f} ± ")
    assert cells[tables.ALPHA_HEADER] == "0.5 / 0"  # each seed's own alpha, in seed order
    trained = dict(zip(headers, next(cells for cells in rows if cells[2] == "full")))
    assert trained[tables.SUBSAMPLE_HEADER] == "13.00 ± 1.41" and trained[tables.ALPHA_HEADER] == ""

    text, tex, page = tables.markdown(built), tables.latex(built), tables.html(built, "t")
    assert "Source k-NN: DINO's weighted k-NN" in text and "the whole source bank and query set, on every row" in text
    assert "Source k-NN on the subsample: the same k-NN on the curve's class-balanced subsample" in text
    assert "each run at its own alpha" in text and "with the target top-1 on held-out data" in text
    assert "\\caption{" in tex and "Source k-NN on the subsample: the same k-NN" in tex and "±" not in tex
    assert "\\_" in tex and "full WiSE" in tex  # experiment names escaped for LaTeX
    assert f"<td>{cells['Source k-NN']}</td>" in page and "on the curve&#x27;s class-balanced subsample" in page


def test_interpolation_csv_marks_each_runs_chosen_alpha(interpolated, tmp_path):
    plan, chosen = interpolated
    provenance.write(tables.build(plan), "out", "prov/report-x.json", _config_file(tmp_path, plan), plan)
    points = pd.read_csv("out/interpolation.csv")
    assert list(points.columns) == tables.INTERPOLATION_COLUMNS
    marked = points[points["chosen"]].set_index(["dataset", "experiment", "seed"])["alpha"]
    assert marked.to_dict() == {key: alpha for key, (alpha, _) in chosen.items()}
    for name in ("tradeoff", "interpolation"):
        assert Path(f"out/{name}.pdf").read_bytes().startswith(b"%PDF") and Path(f"out/{name}.png").stat().st_size


def test_a_chosen_alpha_outside_the_planned_grid_is_refused(interpolated):
    plan, _ = interpolated
    path = plan.runs[("synthetic", "full", 0)].wise.path
    write_json(path, {**unsealed(path), "alpha": 0.75})
    with pytest.raises(VitpeftError, match=f"{path}: alpha 0.75 chosen on 'validation', but the study plans alphas"):
        tables.build(plan)


def test_test_chosen_rows_are_named_as_the_upper_bound_they_are(made):
    plan = made(interpolation={"enabled": True, "alphas": ALPHAS, "choose_on": "test"})
    write_interpolation(plan)
    for run in plan.runs.values():
        if run.wise:
            write_json(run.wise.path, {**unsealed(run.wise.path), "choose_on": "test"})
    built = tables.build(plan)
    assert "full WiSE (test-chosen)" in set(built.table["experiment"])
    assert "an upper bound of what WiSE-FT offers, not a held-out result" in tables.markdown(built)


def test_an_early_loss_inside_a_probe_stage_says_it_is_zero_by_construction(made):
    plan = made()
    for (dataset, name, seed), run in plan.runs.items():
        if name == "full":  # as an LP-FT run records its stages: the probe covers step 10
            write_plain_json(f"{run.train.path}/summary.json", {"trainable_params": 85875556, "selected_step": 50,
                             "stages": [{"start": 0, "steps": 25, "head_only": True},
                                        {"start": 25, "steps": 25, "head_only": False}]})  # fmt: skip
            digests.seal(run.train.path)
    built = tables.build(plan)
    assert row(built.table, "synthetic", "full").early_frozen is True
    assert row(built.table, "synthetic", "lora_r4").early_frozen is False
    text = tables.markdown(built)
    full = next(line for line in text.splitlines() if "| full " in line)
    assert "| 70.00 ± 7.07 (in probe) " in full and "- synthetic / full: 70.00 ± 7.07% (in probe)" in text
    assert "(in probe): step 10 lies in the run's linear-probe stage" in text


# ---------------------------------------------------------------- figures a paper can use


def test_no_two_labels_overlap_even_where_points_coincide(interpolated):
    plan, _ = interpolated
    for run in plan.runs.values():  # lora_r4 scores exactly as block_p1: one label names both
        if run.experiment == "lora_r4":
            twin = plan.runs[(run.dataset, "block_p1", run.seed)]
            for node in (run.target, run.source):
                Path(node.path).write_text(Path(getattr(twin, node.path.split("/")[-1].split("-")[0]).path).read_text())
    built = tables.build(plan)
    figure = plots.tradeoff_figure(built)
    texts = [text.get_text() for text in figure.axes[0].texts]
    assert "lora_r4 = block_p1" in texts or "block_p1 = lora_r4" in texts
    assert labels.overlaps(figure) == []
    assert labels.overlaps(plots.interpolation_figure(built)) == []


def test_labels_of_a_crowd_of_points_stay_apart_and_inside_the_axes():
    import numpy as np
    from matplotlib.figure import Figure
    from matplotlib.text import Text

    rng = np.random.default_rng(0)
    figure = Figure(figsize=(6, 4.5))
    ax = figure.subplots()
    x, y = rng.normal(80, 3, 30), rng.normal(60, 3, 30)  # 30 points in a few label widths
    ax.scatter(x, y)
    ax.margins(0.15)
    placed = labels.place(ax, [labels.Label(a, b, f"experiment_{i}") for i, (a, b) in enumerate(zip(x, y))])
    assert len(placed) == 30 and labels.overlaps(figure) == []
    frame = ax.get_window_extent(labels.renderer_of(figure))
    for text in placed:
        box = Text.get_window_extent(text, labels.renderer_of(figure))
        assert frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1


def test_colours_follow_the_method_families(made):
    built = tables.build(made())
    shade = plots.colours(built.table)
    blue, green = shade["full"], shade["block_p1"]
    assert blue[2] > blue[0] and green[1] > green[0] and green[1] > green[2]  # Blues and Greens
    assert shade["full"] != shade["linear"]  # a shade per experiment within its family
# ---------------------------------------------------------------- what each run costs


def test_each_run_s_cost_reaches_the_table_and_an_older_run_without_one_stays_blank(made):
    table = tables.build(made()).table
    full, lora, block = (row(table, "synthetic", name) for name in ("full", "lora_r4", "block_p1"))
    for figures, expected in ((full, COSTS["full"]), (lora, COSTS["lora_r4"])):
        assert {column: figures[column] for column in tables.COST_COLUMNS} == {
            column: (pd.NA if expected[column] is None else expected[column]) for column in tables.COST_COLUMNS}
    assert all(pd.isna(block[column]) for column in tables.COST_COLUMNS)
    assert all(pd.isna(row(table, "synthetic", "pretrained")[column]) for column in tables.COST_COLUMNS)


def test_markdown_names_the_estimate_and_shows_a_measured_column_only_where_a_gpu_measured(made, tmp_path):
    plan = made(datasets=("synthetic",))
    text = tables.markdown(tables.build(plan))
    header = text.splitlines()[0]
    assert "| Train FLOPs/img" in header and "| Peak mem. (estimate)" in header and "(measured)" not in header
    full = next(line for line in text.splitlines() if "| full " in line)
    assert "| 36.4M " in full and "| 699G " in full and "| 51.0 MiB " in full
    assert "no run here was measured on a GPU" in text and "FlopCounterMode" in text
    run = plan.runs[("synthetic", "full", 0)]
    write_plain_json(f"{run.train.path}/summary.json", {"trainable_params": 85875556, "selected_step": 50,
                                                        "cost": {**COSTS["full"], "memory_measured_bytes": 2**30}})
    digests.seal(run.train.path)
    text = tables.markdown(tables.build(plan))
    assert "| Peak mem. (measured)" in text.splitlines()[0] and "| 1.00 GiB " in text
    assert "as measured on the GPU" in text


def test_a_non_numeric_cost_is_refused_naming_the_file_and_key(made):
    plan = made()
    run = plan.runs[("synthetic", "full", 0)]
    path = f"{run.train.path}/summary.json"
    write_plain_json(path, {"trainable_params": 1, "selected_step": 50, "cost": {**COSTS["full"], "train_flops": "many"}})
    digests.seal(run.train.path)
    with pytest.raises(VitpeftError, match=f"{path}: expected a number under 'cost.train_flops', found 'many'"):
        tables.build(plan)


def test_the_cost_plot_of_a_study_without_the_source_column_says_so_instead_of_failing(made):
    """source.enabled: false leaves nothing to keep: each panel says why (a real report job failed on a log axis
    with no finite point before)."""
    fig = plots.cost_figure(tables.build(made(source=False, curve=False)))
    fig.savefig(io.BytesIO(), format="png")  # drawing is what failed
    axes = [ax for ax in fig.axes if ax.get_xlabel()]
    assert all(not ax.collections for ax in axes)
    assert all("no source k-NN to keep" in " ".join(t.get_text() for t in ax.texts) for ax in axes)


def test_the_cost_plot_has_one_panel_per_dataset(made):
    fig = plots.cost_figure(tables.build(made()))
    axes = [ax for ax in fig.axes if ax.get_xlabel()]
    assert len(axes) == 2 and all(ax.get_xscale() == "log" for ax in axes)
    assert "kept" in axes[0].get_ylabel()
    assert len(axes[0].collections) == 2  # one scatter per family with costs: standard, LoRA (block_p1 has none)
    assert labels.overlaps(fig) == []
