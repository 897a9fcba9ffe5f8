"""A task sequence through the real Snakemake workflow: it finishes, and an edit reruns only what it changes.

A reduced demo (tiny ViT, 10 steps) with a three-task synthetic sequence and three experiments (full and
LoRA shared, LoRA per task; lora_r4_pt trains in the grid exactly as lora_r4) runs to the end once; the
rerun checks are dry runs against its outputs. `budget: steps` gives every task the same 10 steps (the
synthetic tasks differ in size), so each edit below changes only what it names.
"""

import csv
import json
import re
import shutil
from collections import Counter

import pytest

import slurmctl

pytestmark = pytest.mark.workflow

NAME = "seqwf"
TASKS = ["synthetic", "synthetic_orientation", "synthetic_hue"]
CHAINS = ["full", "lora_r4", "lora_r4_pt"]


def sequence_config(tasks=TASKS) -> dict:
    cfg = slurmctl.reduced_demo(NAME, experiments=("full", "lora_r4"), steps=10)
    cfg["experiments"].append({**cfg["experiments"][1], "name": "lora_r4_pt"})
    cfg["sequence"] = {"tasks": list(tasks), "per_task": ["lora_r4_pt"], "budget": "steps"}
    return cfg


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    project = slurmctl.make_project(tmp_path_factory.mktemp("sequence") / "project")
    config = slurmctl.write_config(project, sequence_config())
    slurmctl.snakemake(project, "all", "--cores", "2", "--configfile", config, timeout=1500)
    return project, config


def dry_run(project, config) -> tuple:
    """(Counter of rule -> jobs, Counter of (rule, step) for the sequence's step jobs) of `snakemake -n all`."""
    out = slurmctl.snakemake(project, "-n", "--configfile", config, "--cores", "1", "all").stdout
    jobs = Counter()
    for (rule, _), n in slurmctl.parse_dry_run(out).items():
        jobs[rule] += n if rule != "all" else 0
    jobs = +jobs  # without the zero count of `all`
    steps = Counter()
    for rule, wildcards in re.findall(r"^(?:local)?rule (\w+):\n(?:    .*\n)*?    wildcards: (.*)$", out, re.M):
        found = re.search(r"step=(\d+)", wildcards)
        if found:
            steps[(rule, int(found.group(1)))] += 1
    return jobs, steps


def test_the_sequence_finishes_with_its_matrix_and_router(finished):
    project, _ = finished
    folder = project / "results" / NAME / "sequence"
    rows = (folder / "matrix.csv").read_text().splitlines()
    assert len(rows) == 1 + len(CHAINS) * (len(TASKS) + 1) * (len(TASKS) + 1)  # header + steps 0..3 x columns
    summary = (folder / "summary.md").read_text()
    assert all(f"| {name} |" in summary for name in CHAINS)
    assert all((folder / f"heatmap-{name}.png").stat().st_size > 0 for name in CHAINS)
    assert len(list((folder / "metrics" / "lora_r4_pt" / "seed0").glob("router-*.json"))) == 1


def test_the_rendered_report_shows_the_sequence_summary_and_the_heatmaps(finished, tmp_path):
    """In a real browser (headless Chromium): the summary's measures and every heatmap are in the HTML report."""
    import browser

    project, config = finished
    html = tmp_path / "report.html"
    result = slurmctl.snakemake(project, "--report", html, "--configfile", config, timeout=600)
    assert "warning" not in result.stdout.lower(), result.stdout
    summary = list(csv.DictReader(open(project / "results" / NAME / "sequence" / "summary.csv")))
    with browser.opened(html) as page:
        rendered = browser.shown(page, "3. Task sequence", "summary.html").locator("table").first.inner_text()
        for name in CHAINS:
            browser.shown(page, "3. Task sequence", f"heatmap-{name}.png")
            assert page.locator("img[src^='data:image/png']").count() >= 1, name
    for row in summary:
        line = next(line for line in rendered.splitlines() if line.startswith(f"{row['experiment']}\t"))
        assert f"{float(row['acc']):.2f}" in line and f"{float(row['bwt']):.2f}" in line, line


def test_a_finished_sequence_has_nothing_to_do(finished):
    assert dry_run(*finished) == (Counter(), Counter())


def test_editing_the_last_task_reruns_its_step_only(finished):
    project, _ = finished
    edited = slurmctl.write_config(project, sequence_config([*TASKS[:2], "dtd"]), "last.yaml")
    jobs, steps = dry_run(project, edited)
    chains = len(CHAINS)
    assert jobs == Counter({"download_target": 1, "prepare_target": 1, "train_step": chains, "eval_step": chains,
                            "route": 1, "sequence_report": 1})
    assert steps == Counter({("train_step", 3): chains, ("eval_step", 3): chains})


def test_editing_the_first_task_reruns_what_starts_from_it(finished):
    """Task 1 becomes hue, task 3 colour pairs: the shared chains (full, lora_r4) retrain every step; LoRA per
    task retrains step 1 only (shared with lora_r4's, one job): its step 2 (orientation from the pretrained
    backbone) is trained already, and its step 3 (colour pairs from the pretrained backbone) is the grid's
    lora_r4 run. Every row is scored again (each scores task 1); row 1 once for both LoRA chains."""
    project, _ = finished
    edited = slurmctl.write_config(project, sequence_config(["synthetic_hue", *TASKS[1:2], "synthetic"]), "first.yaml")
    jobs, steps = dry_run(project, edited)
    assert jobs == Counter({"train_step": 6, "eval_step": 8, "route": 1, "sequence_report": 1})
    assert steps == Counter({("train_step", 1): 2, ("train_step", 2): 2, ("train_step", 3): 2,
                             ("eval_step", 1): 2, ("eval_step", 2): 3, ("eval_step", 3): 3})


def test_a_first_step_is_the_grids_run_read_from_its_folder(finished):
    """No training of the sequence's own for step 1: every chain's first row scores the grid's run, and its
    task-1 accuracy is the grid's target score of that run."""
    project, config = finished
    plan = slurmctl.plan_of(config)
    assert not list((project / "results" / NAME / "sequence" / "runs").glob("*/seed0/step1-*"))
    for name in CHAINS:
        grid = plan.runs[("synthetic", name.removesuffix("_pt"), 0)]
        row = json.loads((project / plan.sequence.chain(name, 0)[0].metrics.path).read_text())
        target = json.loads((project / grid.target.path).read_text())
        assert row["run"] == grid.train.path and row["tasks"]["synthetic"] == target["top1"], name
    assert plan.runs[("synthetic", "lora_r4_pt", 0)].train is plan.runs[("synthetic", "lora_r4", 0)].train


def test_a_failed_sequence_report_leaves_the_previous_one_in_place(finished, tmp_path):
    """The sequence changes so that only its report runs again (no router: a new report key), and a row of the
    matrix is truncated: the report job fails in one line naming the file and the fix; Snakemake puts back the
    report files it had set aside (update()), vitpeft wrote none of them, and the previous record stays."""
    project = tmp_path / "copy"
    shutil.copytree(finished[0], project, symlinks=True)
    before = slurmctl.plan_of(project / "config" / finished[1].name).sequence
    kept = {path: (project / path).read_bytes() for path in [*before.files(), before.report.path]}
    cfg = sequence_config()
    cfg["sequence"]["router"] = False
    config = slurmctl.write_config(project, cfg, "norouter.yaml")
    plan = slurmctl.plan_of(config)
    assert dry_run(project, config)[0] == Counter({"sequence_report": 1})
    row = project / plan.sequence.chain("full", 0)[1].metrics.path
    row.write_text(row.read_text()[:40])
    result = slurmctl.snakemake(project, "all", "--cores", "1", "--configfile", config, check=False)
    assert result.returncode != 0, result.stdout
    log = (project / "logs" / NAME / f"sequence_report-{plan.sequence.report.key}.log").read_text()
    errors = [line for line in log.splitlines() if "error" in line]
    assert len(errors) == 1, log
    assert errors[0].startswith(f"vitpeft sequence-report: error: step metrics {row.relative_to(project)} is "
                                "corrupt: not valid JSON (") and errors[0].endswith("delete it and rerun the workflow "
                                                                      "(`vitpeft eval-step`)"), log
    assert "Restored previous version of" in result.stdout, result.stdout
    assert {path: (project / path).read_bytes() for path in kept} == kept
    assert not (project / plan.sequence.report.path).exists()


@pytest.mark.parametrize("config, trainings, total", [("continual.yaml", (5, 14), 127),
                                                      ("demo-continual.yaml", (3, 10), 44)])
def test_the_continual_dry_run_plans_each_distinct_training_once(tmp_path, config, trainings, total):
    """README: config/continual.yaml asks for 28 ViT-B trainings (7 grid runs, 7 chains of 3 steps) of which 19
    are distinct; its plan holds 19 training jobs, each with its own folder, and 127 jobs in all. The demo's
    asks for 20 (5 grid runs, 5 chains of 3) of which 13 are distinct, in 44 jobs."""
    project = slurmctl.make_project(tmp_path / "project")
    out = slurmctl.snakemake(project, "-n", "all", "--cores", "1", "--configfile", f"config/{config}").stdout
    jobs = Counter()
    for (rule, _), n in slurmctl.parse_dry_run(out).items():
        jobs[rule] += n
    assert (jobs["train"], jobs["train_step"]) == trainings and sum(jobs.values()) == total, jobs
    folders = re.findall(r"^rule (?:train|train_step):\n(?:    .*\n)*?    output: (\S+)$", out, re.M)
    assert len(folders) == len(set(folders)) == sum(trainings)
