"""The real Snakemake workflow at demo scale: the science holds, reruns touch only what changed, plans touch nothing.

One session-scoped run (the `finished` fixture in conftest.py) of config/demo.yaml's settings (synthetic domains, the
tiny ViT pretrained on the source domain, 300 steps, the 5-point curve) on
four of its rows feeds every test. The science tests assert what the demo
exists to show; the rerun checks are dry runs against its outputs, in the
order a user meets them.
"""

import base64
import copy
import os
import random
import shutil
import time
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

import slurmctl
from conftest import WORKFLOW_EXPERIMENTS as EXPERIMENTS
from conftest import WORKFLOW_NAME as NAME
from conftest import demo_grid

pytestmark = pytest.mark.workflow


def planned(project, config) -> Counter:
    """The jobs `snakemake -n all` would run, without the target rule itself (listed whenever anything runs)."""
    jobs = slurmctl.scheduled(project, config)
    jobs.pop(("all", ""), None)
    return jobs


CHANCE = 100 / 10  # the synthetic target domain has 10 classes

# Margins measured over seeds 0 and 1 of this grid with demo.yaml's settings (2 CPU cores, kernels pinned, 2026-12-07):
# - target: the untouched backbone's k-NN scores 40.6; linear probing (lr 1.0) 46.4 / 46.8 (the smallest gap,
#   5.8 points), lora_r4 83.8 / 86.0, block_p1 87.7 / 86.3, full 98.4 / 99.0;
# - source: linear probing keeps 81.9 exactly; full fine-tuning ends at 22.0 / 19.7 (60 points below).
# The bars sit well inside what every seed cleared.
LEARNS_OVER_PRETRAINED_KNN = 3.0
FORGETS_AT_LEAST = 20.0


def results(project) -> Path:
    return project / "results" / NAME


def edited(project, change, filename) -> Path:
    cfg = demo_grid()
    change(cfg)
    return slurmctl.write_config(project, cfg, filename)


def jobs(*pairs) -> Counter:
    return slurmctl.jobs_of(*pairs)


INTERPOLATED = [name for name in EXPERIMENTS if name != "linear"]  # an untouched backbone has nothing to interpolate


def experiment_jobs(name) -> Counter:
    interpolates = ["eval_source", "eval_interpolation", "eval_wise"]  # linear's backbone is the pretrained one
    rules = ["train", "eval_target", "eval_curve"] + ([] if name == "linear" else interpolates)
    return jobs(*[(rule, name) for rule in rules])


# ---------------------------------------------------------------- the outputs and the science


def test_the_report_holds_every_row_seed_and_curve_point(finished):
    project, _ = finished
    folder = results(project)
    for name in ("table.md", "table.csv", "table.tex", "table.html", "per_seed.csv", "index.csv", "tradeoff.png",
                 "tradeoff.pdf", "cost.png", "cost.pdf", "curve.csv", "curve.png", "curve.pdf", "interpolation.csv", "interpolation.png",
                 "interpolation.pdf", "runtimes.csv", "runtimes.html"):
        assert (folder / name).stat().st_size > 0, name
    index = pd.read_csv(folder / "index.csv").set_index("experiment")
    for name in EXPERIMENTS:  # the index names the folder a user looks for
        assert (project / index.loc[name, "run"] / "trainable.safetensors").is_file(), name
        assert (project / index.loc[name, "spec"]).is_file() and (project / index.loc[name, "target"]).is_file()
    assert len(list((folder / "provenance").glob("report-*.json"))) == 1
    table = pd.read_csv(folder / "table.csv").set_index("experiment")
    wise = [f"{name} WiSE" for name in INTERPOLATED]  # each interpolated experiment at its chosen alpha
    assert list(table.index[: len(EXPERIMENTS) + 1]) == ["pretrained"] + EXPERIMENTS
    assert list(table.index[len(EXPERIMENTS) + 1:]) == wise
    assert set(table.loc[table.index[len(EXPERIMENTS) + 1:], "family"]) == {"Forgetting mitigation"}
    assert (table.loc[EXPERIMENTS, "n_seeds"] == 1).all()
    curve = pd.read_csv(folder / "curve.csv")
    assert list(curve.columns) == ["experiment", "seed", "step", "target_acc", "source_acc"]
    assert sorted(set(curve["step"])) == [0, 10, 30, 100, 300]
    assert len(curve) == len(EXPERIMENTS) * 5
    for name in EXPERIMENTS:
        run = next((folder / "runs" / "synthetic" / name).glob("seed0-*"))
        assert sorted(p.name for p in (run / "curve").iterdir()) == [
            f"step_{step:06d}.safetensors" for step in (0, 10, 30, 100, 300)]


def test_every_fine_tuned_row_learns_the_target(finished):
    """Each method beats the untouched backbone's target k-NN and chance by a margin (measured over 3 seeds)."""
    table = pd.read_csv(results(finished[0]) / "table.csv").set_index("experiment")
    untouched = table.loc["pretrained", "target_acc"]
    for name in EXPERIMENTS:
        assert table.loc[name, "target_acc"] >= untouched + LEARNS_OVER_PRETRAINED_KNN, name
        assert table.loc[name, "target_acc"] >= CHANCE + 20, name


def test_full_fine_tuning_forgets_what_linear_probing_keeps(finished):
    table = pd.read_csv(results(finished[0]) / "table.csv").set_index("experiment")
    assert table.loc["linear", "source_acc"] == table.loc["pretrained", "source_acc"]  # untouched: exactly
    assert table.loc["full", "source_acc"] <= table.loc["linear", "source_acc"] - FORGETS_AT_LEAST
    for name in ("lora_r4", "block_p1"):  # switching the additions off gives the pretrained backbone back
        assert table.loc[name, "source_acc_routed"] == table.loc["pretrained", "source_acc"], name


def test_interpolation_ends_are_the_run_and_the_untouched_backbone(finished):
    """alpha = 1 gives the table's target accuracy exactly; alpha = 0 the untouched backbone's source k-NN on the
    subsample, which the curve scores at step 0 of linear probing (its backbone never moves)."""
    folder = results(finished[0])
    points = pd.read_csv(folder / "interpolation.csv")
    assert list(points.columns) == ["experiment", "seed", "alpha", "target_acc", "val_acc", "source_acc_subsample",
                                    "chosen"]  # fmt: skip
    assert sorted(set(points["experiment"])) == sorted(INTERPOLATED)
    assert sorted(set(points["alpha"])) == [0, 0.25, 0.5, 0.75, 1]
    assert points["val_acc"].notna().all()  # the held-out slice of train, scored at every alpha
    points = points.set_index(["experiment", "alpha"])
    table = pd.read_csv(folder / "table.csv").set_index("experiment")
    untouched = pd.read_csv(folder / "curve.csv").set_index(["experiment", "step"]).loc[("linear", 0), "source_acc"]
    for name in INTERPOLATED:
        assert points.loc[(name, 1), "target_acc"] == table.loc[name, "target_acc"], name
        assert points.loc[(name, 0), "source_acc_subsample"] == untouched, name


def test_each_wise_row_is_its_runs_chosen_alpha_scored_on_the_whole_bank(finished):
    """The row's target and subsample figures are the sweep's at the chosen alpha (marked in interpolation.csv);
    its source figure is the whole bank's, which at alpha = 1 is the run's own table figure, bit for bit."""
    folder = results(finished[0])
    points = pd.read_csv(folder / "interpolation.csv")
    chosen = points[points["chosen"]].set_index("experiment")
    table = pd.read_csv(folder / "table.csv").set_index("experiment")
    per_seed = pd.read_csv(folder / "per_seed.csv").set_index("experiment")
    assert sorted(chosen.index) == sorted(INTERPOLATED)  # one alpha per run (one seed here)
    for name in INTERPOLATED:
        row, point = table.loc[f"{name} WiSE"], chosen.loc[name]
        assert (row["alpha"], row["target_acc"]) == (point["alpha"], point["target_acc"]), name
        assert row["source_acc_subsample"] == point["source_acc_subsample"], name
        assert per_seed.loc[f"{name} WiSE", "chosen_on"].startswith("target: held-out 0.1 of train"), name
        if point["alpha"] == 1:
            assert row["source_acc"] == table.loc[name, "source_acc"], name


def test_the_curve_shows_when_full_fine_tuning_forgets(finished):
    curve = pd.read_csv(results(finished[0]) / "curve.csv").set_index(["experiment", "step"])
    start = curve.loc[("full", 0), "source_acc"]
    assert curve.loc[("linear", 300), "source_acc"] == curve.loc[("linear", 0), "source_acc"] == start
    assert curve.loc[("full", 300), "source_acc"] <= start - FORGETS_AT_LEAST
    assert curve.loc[("full", 300), "target_acc"] > curve.loc[("full", 0), "target_acc"]


# ---------------------------------------------------------------- rerun only what changed


def test_a_finished_workflow_has_nothing_to_do(finished):
    project, config = finished
    assert planned(project, config) == Counter()


def test_editing_one_experiment_reruns_only_it_and_the_report(finished):
    project, _ = finished

    def change(cfg):
        cfg["experiments"][2].setdefault("train", {})["lr"] = 0.02  # lora_r4

    plan = planned(project, edited(project, change, "edited.yaml"))
    assert plan == experiment_jobs("lora_r4") + jobs(("report", None))


def test_adding_an_experiment_or_a_seed_runs_only_its_jobs_and_the_report(finished):
    project, _ = finished

    def add(cfg):
        cfg["experiments"].append({"name": "top1", "method": "topk", "args": {"k": 1}})

    assert planned(project, edited(project, add, "added.yaml")) == (
        experiment_jobs("top1") + jobs(("report", None)))

    def seed(cfg):
        cfg["seeds"] = [0, 1]

    expected = sum((experiment_jobs(name) for name in EXPERIMENTS), Counter()) + jobs(("report", None))
    assert planned(project, edited(project, seed, "seeded.yaml")) == expected


def test_changing_knn_settings_reruns_only_the_source_scores(finished):
    project, _ = finished

    def change(cfg):
        cfg["source"]["temperature"] = 0.1

    expected = jobs(*[("eval_source", name) for name in EXPERIMENTS if name != "linear"],
                    *[("eval_curve", name) for name in EXPERIMENTS],
                    *[(rule, name) for name in INTERPOLATED for rule in ("eval_interpolation", "eval_wise")],
                    ("eval_source_pretrained", None), ("eval_target_pretrained", None), ("report", None))
    assert planned(project, edited(project, change, "knn.yaml")) == expected


def test_changing_the_alpha_grid_reruns_only_the_interpolations_and_the_report(finished):
    project, _ = finished

    def change(cfg):
        cfg["interpolation"]["alphas"] = [0, 0.1, 0.9, 1]

    expected = jobs(*[(rule, name) for name in INTERPOLATED for rule in ("eval_interpolation", "eval_wise")],
                    ("report", None))
    assert planned(project, edited(project, change, "alphas.yaml")) == expected


def test_choosing_alpha_on_the_test_split_reruns_training_without_the_held_out_slice(finished):
    """The synthetic target has no validation split: the held-out choice keeps a slice of train out of every run,
    and the test-chosen upper bound gives it back, so every run trains again; nothing else of the data reruns."""
    project, _ = finished

    def change(cfg):
        cfg["interpolation"]["choose_on"] = "test"

    expected = sum((experiment_jobs(name) for name in EXPERIMENTS), Counter()) + jobs(("report", None))
    assert planned(project, edited(project, change, "on_test.yaml")) == expected


def pull_like(folder: Path) -> None:
    """What a fresh clone + `dvc pull` leaves: no Snakemake metadata, every file re-dated in random order."""
    shutil.rmtree(folder / ".snakemake")
    files = list(folder.rglob("*"))
    random.Random(0).shuffle(files)
    pulled = time.time() - 3600
    for offset, path in enumerate(files):
        os.utime(path, (pulled + offset, pulled + offset))


def test_a_pulled_copy_reruns_nothing_and_still_sees_edits(finished, tmp_path):
    project, config = finished
    copy_ = tmp_path / "pulled"
    shutil.copytree(project, copy_, symlinks=True)
    pull_like(copy_)
    assert planned(copy_, copy_ / config.relative_to(project)) == Counter()

    def change(cfg):
        cfg["experiments"][1].setdefault("train", {})["lr"] = 0.02  # linear

    assert planned(copy_, edited(copy_, change, "edited_after_pull.yaml")) == (
        experiment_jobs("linear") + jobs(("report", None)))


# ---------------------------------------------------------------- plans touch nothing


def snapshot(folder: Path) -> dict:
    """Every path under `folder` with its size and modification time (what any write would change).

    Snakemake's own state folder, .snakemake/, is left out: Snakemake creates it on every invocation and a
    dry run stores its input/output cache there (git- and DVC-ignored; it never holds results or settings).
    """
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if ".snakemake" not in p.relative_to(folder).parts}


@pytest.mark.parametrize("flags", [["-n"], ["--lint"], ["--dag"], ["--rulegraph"], ["--summary"]])
def test_planning_writes_nothing_in_a_fresh_clone_or_a_finished_one(finished, tmp_path, flags):
    fresh = slurmctl.make_project(tmp_path / "fresh")
    for project, config in ((fresh, Path("config/config.yaml")), (finished[0], finished[1])):
        before = snapshot(project)
        slurmctl.snakemake(project, "all", *flags, "--cores", "1", "--configfile", config, timeout=300)
        assert snapshot(project) == before, (project, flags)


# ---------------------------------------------------------------- the report a researcher forwards


GRID_RULES = {"make_synthetic", "pretrain_backbone", "subsample_source", "extract_features", "eval_source_pretrained",
              "train", "eval_target", "eval_source", "eval_curve", "eval_interpolation",
              "eval_wise"}  # every rule of the demo-scale grid but the report (eval_target_pretrained files as eval_target)


def test_snakemake_report_holds_the_table_the_figures_and_their_captions(finished, tmp_path):
    project, config = finished
    html = tmp_path / "report.html"
    result = slurmctl.snakemake(project, "--report", html, "--configfile", config, timeout=600)
    assert "Missing metadata" not in result.stdout and "warning" not in result.stdout.lower(), result.stdout
    text = html.read_text()
    folder = results(project)
    for name in ("table.html", "table.csv", "per_seed.csv", "index.csv", "tradeoff.png", "curve.csv", "curve.png",
                 "interpolation.png", "interpolation.csv", "runtimes.html"):
        content = base64.b64encode((folder / name).read_bytes()).decode()
        assert content[:2000] in text, f"{name} is not embedded in the report"
    for caption in ("The results table", "Every single run", "Where every run", "Stability-plasticity trade-off",
                    "Forgetting over", "interpolated with the pretrained model", "How long every job"):
        assert caption in text, caption
    assert "how much fine-tuning" in text and "Task sequence" in text  # the description of the whole study


def test_the_rendered_report_shows_the_tables_values_and_its_notes(finished, tmp_path):
    """In a real browser (headless Chromium): the table is a table on the page, holding table.csv's figures."""
    import browser

    project, config = finished
    html = tmp_path / "report.html"
    slurmctl.snakemake(project, "--report", html, "--configfile", config, timeout=600)
    table = pd.read_csv(results(project) / "table.csv")
    with browser.opened(html) as page:
        frame = browser.shown(page, "1. Results", "table.html")
        rendered = frame.locator("table").inner_text()
        notes = frame.locator("body").inner_text()
        browser.shown(page, "2. Figures", "tradeoff.png")
        image = page.locator("img[src^='data:image/png']").first.get_attribute("src")
        runtimes = browser.shown(page, "4. Runtimes", "runtimes.html").locator("table").first.inner_text()
    for row in table.itertuples():
        line = next(line for line in rendered.splitlines() if f"\t{row.experiment}\t" in f"\t{line}\t")
        assert f"{row.target_acc:.2f}" in line and f"{row.source_acc:.2f}" in line, (row.experiment, line)
        if not pd.isna(row.source_acc_subsample):
            assert f"{row.source_acc_subsample:.2f}" in line, (row.experiment, line)
    assert len(rendered.splitlines()) == 1 + len(table)  # the header, then every row of table.csv
    assert "Source k-NN on the subsample: the same k-NN" in notes and "each run at its own alpha" in notes
    assert image and image.startswith("data:image/png")
    assert "eval_wise" in runtimes and "train" in runtimes


def test_the_runtimes_list_every_rule_that_ran(finished):
    jobs = pd.read_csv(results(finished[0]) / "runtimes.csv")
    assert set(jobs["rule"]) == GRID_RULES
    assert jobs.groupby("rule").size().to_dict()["eval_wise"] == len(INTERPOLATED)
    assert (jobs["seconds"] > 0).all()
    assert "<td>train</td>" in (results(finished[0]) / "runtimes.html").read_text()


def test_a_pulled_copy_gets_its_report_without_a_warning(finished, tmp_path):
    """Results fetched with `dvc pull` come without Snakemake's records: the report needs none of them."""
    project, config = finished
    copy_ = tmp_path / "pulled"
    shutil.copytree(project, copy_, symlinks=True)
    pull_like(copy_)
    result = slurmctl.snakemake(copy_, "--report", tmp_path / "pulled.html", "--configfile",
                                copy_ / config.relative_to(project), timeout=600)
    assert "Missing metadata" not in result.stdout and "warning" not in result.stdout.lower(), result.stdout
    assert "runtimes.html" in (tmp_path / "pulled.html").read_text()


# ---------------------------------------------------------------- refusals


def refused(project, config, *args) -> str:
    result = slurmctl.snakemake(project, "-n", "all", "--cores", "1", "--configfile", *config, *args,
                                check=False, timeout=300)
    assert result.returncode != 0, result.stdout
    return result.stdout


def test_an_invalid_config_stops_before_any_job_with_one_message(tmp_path):
    """The message names the experiment and the file as the user gave it, and nothing of the workflow's insides."""
    project = slurmctl.make_project(tmp_path / "p")
    cfg = demo_grid()
    cfg["experiments"][0]["method"] = "lorra"
    slurmctl.write_config(project, cfg, "bad.yaml")
    cfg["experiments"][0]["method"] = "full"
    cfg["experiments"][2]["train"] = {"lr": float("nan")}
    slurmctl.write_config(project, cfg, "nan.yaml")
    for config, message in (("config/bad.yaml", "experiment 'full': method: 'lorra' is not one of ['full',"),
                            ("config/nan.yaml", "experiment 'lora_r4': train.lr: nan is not a finite number")):
        output = refused(project, [config])
        assert f"invalid config: {config}: {message}" in output
        assert output.count(config) == 1 and output.count("\n") <= 2, output  # the profile's line, then ours
        assert "common.smk" not in output and "Traceback" not in output and "WorkflowError" not in output, output
    assert not (project / "results").exists()


def test_a_report_asked_for_before_the_sequence_ran_says_what_must_run_first(tmp_path):
    project = slurmctl.make_project(tmp_path / "p")
    cfg = demo_grid()
    cfg["sequence"] = {"tasks": ["synthetic", "synthetic_hue"]}
    slurmctl.write_config(project, cfg)
    result = slurmctl.snakemake(project, "--report", "report.html", "--configfile", "config/wf.yaml",
                                check=False, timeout=120)
    assert result.returncode != 0
    assert (f"--report: results/{NAME}/ holds no report of config/wf.yaml as it stands; results/{NAME}/sequence/ "
            "holds no task-sequence report of it (the workflow's last jobs write them): run `snakemake all") in \
        result.stdout, result.stdout
    assert not (project / "report.html").exists() and not (project / "results").exists()


def test_a_report_asked_for_before_the_run_says_what_must_run_first(tmp_path):
    project = slurmctl.make_project(tmp_path / "p")
    slurmctl.write_config(project, demo_grid())
    result = slurmctl.snakemake(project, "--report", "report.html", "--configfile", "config/wf.yaml",
                                check=False, timeout=120)
    assert result.returncode != 0
    assert ("--report: results/wf/ holds no report of config/wf.yaml as it stands (the workflow's last job "
            "writes it): run `snakemake all --cores N --configfile config/wf.yaml` first "
            "(`snakemake -n all --configfile config/wf.yaml` lists what is left to run)") in result.stdout
    assert "Missing metadata" not in result.stdout and "WorkflowError" not in result.stdout, result.stdout
    assert not (project / "report.html").exists() and not (project / "results").exists()


def test_a_second_config_with_a_studys_name_is_named_before_it_overwrites_the_table(tmp_path):
    """A copied config that keeps the study name would rewrite the other's table: said up front, naming both."""
    project = slurmctl.make_project(tmp_path / "p")
    slurmctl.write_config(project, demo_grid())
    copied = demo_grid()
    copied["train"]["lr"] = 0.01
    slurmctl.write_config(project, copied, "copy.yaml")
    # What the report of config/wf.yaml leaves (vitpeft.report.write_provenance's record)
    provenance = project / "results" / NAME / "provenance" / "report-0123456789ab.json"
    provenance.parent.mkdir(parents=True)
    provenance.write_text('{"name": "wf", "config": {"path": "config/wf.yaml", "sha256": "0"}, "inputs": {}}')
    warning = (f"warning: results/{NAME}/ holds the report of config/wf.yaml, and config/copy.yaml has the same "
               f"study name '{NAME}': running it rewrites that study's tables, index and plots")
    result = slurmctl.snakemake(project, "-n", "all", "--configfile", "config/copy.yaml", timeout=120)
    assert warning in result.stdout and result.stdout.index(warning) < result.stdout.index("Building DAG")
    own = slurmctl.snakemake(project, "-n", "all", "--configfile", "config/wf.yaml", timeout=120)
    assert "warning" not in own.stdout
    checked = slurmctl.run([slurmctl.BIN / "vitpeft", "check", "--config", "config/copy.yaml"], cwd=project,
                           timeout=120, check=False)
    assert f"warn  study name: {warning.removeprefix('warning: ')}" in checked.stdout


@pytest.mark.parametrize("name", ["..", "../../etc", "."])
def test_a_hostile_name_is_refused_before_anything_is_written(tmp_path, name):
    project = slurmctl.make_project(tmp_path / "p")
    cfg = demo_grid()
    cfg["experiments"][1]["name"] = name
    config = slurmctl.write_config(project, cfg, "hostile.yaml")
    assert f"experiments[1].name: {name!r} is not a safe name" in refused(project, [config])
    study = copy.deepcopy(demo_grid())
    study["name"] = name
    config = slurmctl.write_config(project, study, "hostile_study.yaml")
    assert f"name: {name!r} is not a safe name" in refused(project, [config])
    assert sorted(p.name for p in project.iterdir()) == sorted(p.name for p in slurmctl.make_project(
        tmp_path / "clean").iterdir())


def test_command_line_overrides_and_two_configfiles_are_refused_not_merged(tmp_path):
    project = slurmctl.make_project(tmp_path / "p")
    config = slurmctl.write_config(project, demo_grid())
    assert "--config name: not read" in refused(project, [config], "--config", "name=other")
    assert "give one --configfile, not 2" in refused(project, [config, project / "config" / "demo.yaml"])
