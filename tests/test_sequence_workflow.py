"""A task sequence through the real Snakemake workflow: it finishes, and an edit reruns only what it changes.

A reduced demo (tiny ViT, 10 steps) with a three-task synthetic sequence and three experiments (full and
LoRA shared, LoRA per task) runs to the end once; the rerun checks are dry runs against its outputs.
"""

import re
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
    cfg["sequence"] = {"tasks": list(tasks), "per_task": ["lora_r4_pt"]}
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


def test_editing_the_first_task_reruns_the_chain(finished):
    project, _ = finished
    edited = slurmctl.write_config(project, sequence_config(["synthetic_hue", *TASKS[1:2], "synthetic"]), "first.yaml")
    jobs, steps = dry_run(project, edited)
    chains = len(CHAINS)
    assert jobs == Counter({"train_step": 3 * chains, "eval_step": 3 * chains, "route": 1, "sequence_report": 1})
    assert all(steps[("train_step", i)] == chains for i in (1, 2, 3))
