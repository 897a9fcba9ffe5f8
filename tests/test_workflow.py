"""The real Snakemake workflow on a shrunken demo grid: it runs end to end, and reruns only what changed.

One module-scoped run (three experiments, a few steps) feeds every test; the
rerun checks are dry runs against its outputs, in the order a user meets them.
"""

import os
import random
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

pytestmark = pytest.mark.workflow

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = ["linear", "lora_r4", "block_p1"]
NAME = "wf"


def small_config() -> dict:
    """demo.yaml with three of its experiments and everything shrunk to seconds."""
    cfg = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
    cfg["name"] = NAME
    cfg["backbone"]["model"]["kwargs"] = {"patch_size": 8, "embed_dim": 32, "depth": 12, "num_heads": 2}
    cfg["synthetic"].update(source_classes=4, target_classes=4, train_per_class=16, test_per_class=8)
    cfg["target"]["num_classes"] = 4
    cfg["pretrain"].update(steps=5, batch_size=16)
    cfg["train"].update(steps=4, batch_size=16, warmup_steps=1, val_every=2, checkpoint_every=2, log_every=1)
    cfg["source"]["k"] = [5]
    cfg["experiments"] = [exp for exp in cfg["experiments"] if exp["name"] in EXPERIMENTS]
    for exp in cfg["experiments"]:  # the demo's per-row warm-up may exceed the reduced step count
        exp.get("train", {}).pop("warmup_steps", None)
    return cfg


def write_config(workdir: Path, cfg: dict, name: str) -> Path:
    path = workdir / name
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def snakemake(workdir: Path, config: Path, *args) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    command = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
               "--directory", str(workdir), "--configfile", str(config), "--cores", "2", *args]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    if done.returncode != 0:
        logs = "\n".join(f"--- {log}\n{log.read_text()[-2000:]}" for log in sorted(workdir.glob("logs/**/*.log")))
        pytest.fail(f"snakemake {' '.join(args)} failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}\n{logs}")
    return done.stdout + done.stderr


def scheduled(workdir: Path, config: Path) -> set:
    """The jobs a dry run would execute, as {(rule, experiment or None)}."""
    output = snakemake(workdir, config, "--dry-run", "all")
    jobs, current = set(), None
    for line in output.splitlines():
        rule = re.match(r"^(?:local)?rule (\w+):", line)
        if rule:
            current = rule.group(1)
            jobs.add((current, None))
        exp = re.match(r"^\s+wildcards: exp=(\S+)", line)
        if exp and current:
            jobs.discard((current, None))
            jobs.add((current, exp.group(1).rstrip(",")))
    jobs.discard(("all", None))
    return jobs


def experiment_jobs(name: str) -> set:
    return {("train", name), ("eval_target", name), ("eval_source", name)}


def pull_like(workdir: Path) -> None:
    """What a fresh clone + `dvc pull` leaves: no Snakemake metadata, every file re-dated in random order."""
    shutil.rmtree(workdir / ".snakemake")
    files = list(workdir.rglob("*"))
    random.Random(0).shuffle(files)
    pulled = time.time() - 3600  # an hour ago, one second apart, in no particular order
    for offset, path in enumerate(files):
        os.utime(path, (pulled + offset, pulled + offset))


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A workdir in which the small grid has run to the end."""
    workdir = tmp_path_factory.mktemp("workflow")
    config = write_config(workdir, small_config(), "small.yaml")
    snakemake(workdir, config, "all")
    return workdir, config


def test_the_report_has_one_row_per_experiment_and_the_untouched_backbone(finished):
    workdir, _ = finished
    results = workdir / "results" / NAME
    for name in ("table.md", "table.csv", "table.tex", "tradeoff.png"):
        assert (results / name).stat().st_size > 0, name
    table = pd.read_csv(results / "table.csv").set_index("experiment")
    assert list(table.index) == ["pretrained"] + EXPERIMENTS
    for column in ("method", "trainable_params", "target_acc", "source_acc", "mean",
                   "paper_target_acc", "paper_source_acc"):
        assert column in table.columns, column
    assert table[["target_acc", "source_acc"]].stack().between(0, 100).all()
    paper = {exp["name"]: exp["paper"] for exp in small_config()["experiments"]}
    for name in EXPERIMENTS:
        assert table.loc[name, "paper_target_acc"] == pytest.approx(paper[name]["target"])
        assert table.loc[name, "paper_source_acc"] == pytest.approx(paper[name]["source"])
    # Linear probing leaves the backbone untouched, and switching LoRA off or taking the new blocks
    # out restores it: all three score the source domain exactly like the pretrained backbone.
    untouched = table.loc["pretrained", "source_acc"]
    assert table.loc["linear", "source_acc"] == untouched
    assert table.loc["lora_r4", "source_acc_routed"] == untouched
    assert table.loc["block_p1", "source_acc_routed"] == untouched
    for name in EXPERIMENTS:
        assert (results / "runs" / name / "trainable.safetensors").is_file()
        assert (workdir / "logs" / NAME / "train" / f"{name}.log").is_file()
        assert (results / "benchmarks" / "train" / f"{name}.tsv").is_file()


def test_a_finished_workflow_has_nothing_to_do(finished):
    workdir, config = finished
    assert scheduled(workdir, config) == set()


def test_editing_one_experiment_reruns_only_it_and_the_report(finished):
    workdir, _ = finished
    cfg = small_config()
    cfg["experiments"][1].setdefault("train", {})["lr"] = 0.02  # lora_r4
    edited = write_config(workdir, cfg, "edited.yaml")
    assert scheduled(workdir, edited) == experiment_jobs("lora_r4") | {("report", None)}


def test_adding_an_experiment_runs_only_its_jobs_and_the_report(finished):
    workdir, _ = finished
    cfg = small_config()
    cfg["experiments"].append({"name": "top1", "method": "topk", "args": {"k": 1}})
    added = write_config(workdir, cfg, "added.yaml")
    assert scheduled(workdir, added) == experiment_jobs("top1") | {("report", None)}


def test_changing_source_knn_settings_reruns_only_the_source_scores(finished):
    workdir, _ = finished
    cfg = small_config()
    cfg["source"]["temperature"] = 0.1
    changed = write_config(workdir, cfg, "knn.yaml")
    evaluated = EXPERIMENTS + ["pretrained"]
    source_scores = {("eval_source", name) for name in evaluated}
    # The head-less backbone's target score is a k-NN too; trained heads are not touched.
    assert scheduled(workdir, changed) == source_scores | {("eval_target", "pretrained"), ("report", None)}


def test_a_pulled_copy_reruns_nothing_and_still_sees_edits(finished):
    workdir, config = finished
    scheduled(workdir, config)  # back to the config the outputs were made with
    pull_like(workdir)
    assert scheduled(workdir, config) == set()
    cfg = small_config()
    cfg["experiments"][0].setdefault("train", {})["lr"] = 0.02  # linear
    edited = write_config(workdir, cfg, "edited_after_pull.yaml")
    assert scheduled(workdir, edited) == experiment_jobs("linear") | {("report", None)}


def refused(workdir: Path, config: Path, *args) -> str:
    """Run a dry run that must fail; return what Snakemake printed."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(
        [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir),
         "--configfile", str(config), "--cores", "1", "--dry-run", "all", *args],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert done.returncode != 0
    return done.stdout + done.stderr


def test_an_invalid_config_stops_before_any_job_with_one_message(tmp_path):
    cfg = small_config()
    cfg["experiments"][0]["method"] = "lorra"
    config = write_config(tmp_path, cfg, "bad.yaml")
    assert "bad.yaml: experiments[0].method: 'lorra' is not one of" in refused(tmp_path, config)
    assert not (tmp_path / "results").exists()


def test_command_line_overrides_are_refused_not_ignored(tmp_path):
    config = write_config(tmp_path, small_config(), "small.yaml")
    assert "--config name: not read" in refused(tmp_path, config, "--config", "name=other")


def _lock() -> dict:
    pins = {}
    for line in (REPO / "requirements.lock").read_text().splitlines():
        name, sep, version = line.split("#")[0].split(";")[0].strip().partition("==")
        if sep:
            pins[canonical(name)] = version.strip()
    return pins


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_the_conda_env_pins_every_runtime_dependency_as_the_lock_does():
    """envs/vitpeft.yaml (for --sdm conda) must install what the lock pins, transitive dependencies included."""
    from importlib import metadata

    from packaging.requirements import Requirement

    env = yaml.safe_load((REPO / "envs" / "vitpeft.yaml").read_text())
    assert "python=3.11" in env["dependencies"]
    pip = next(item["pip"] for item in env["dependencies"] if isinstance(item, dict))
    pinned = {canonical(name): version for name, _, version in (line.partition("==") for line in pip)}
    lock = _lock()
    assert {name: lock.get(name) for name in pinned} == pinned  # every pin is the lock's
    needed, todo = set(), ["vitpeft"]
    while todo:  # vitpeft's runtime closure as installed from the lock
        for text in metadata.distribution(todo.pop()).requires or []:
            requirement = Requirement(text)
            name = canonical(requirement.name)
            if (requirement.marker is None or requirement.marker.evaluate({"extra": ""})) and name not in needed:
                if name in lock:
                    needed.add(name)
                    todo.append(requirement.name)
    assert needed <= set(pinned), f"missing from envs/vitpeft.yaml: {sorted(needed - set(pinned))}"
