"""Sharing data and results through DVC: separate pointers for results/, data/ and
cache/, a pull script that says what to configure when the remote is not there,
clones that rerun nothing, edits that rerun only what they touch, and a
corrupted remote object that fails the pull.

A module-scoped "origin" repository (a copy of the project's files, with the
project's own .dvc/config, git-initialised) runs the reduced demo, then does
what README tells a user after a run (`make push`): `dvc add data results
cache`, `dvc push`, commit the pointers. The remote is a folder in tmp_path.
Clones pull with `scripts/dvc-pull.sh`, what `make pull` runs.
"""

import hashlib
import shutil
from collections import Counter

import pytest
import yaml

import slurmctl
from slurmctl import BIN, REPO

pytestmark = pytest.mark.dvc

NAME = "dvctest"
EXPERIMENTS = ("linear", "lora_r4")
POINTERS = ("results.dvc", "data.dvc", "cache.dvc")


def git(cwd, *args):
    return slurmctl.run(["git", "-c", "user.name=vitpeft-test", "-c", "user.email=test@example.invalid", *args],
                        cwd=cwd, timeout=120)


def dvc(cwd, *args, check=True, timeout=300):
    return slurmctl.run([BIN / "dvc", *args], cwd=cwd, timeout=timeout, check=check)


def pull(project, *pointers, check=True):
    """What a teammate runs: `make pull` is `scripts/dvc-pull.sh` without pointers."""
    return slurmctl.run(["bash", project / "scripts" / "dvc-pull.sh", *pointers], cwd=project, timeout=300,
                        check=check)


def config() -> dict:
    return slurmctl.reduced_demo(NAME, EXPERIMENTS, steps=6)


def cfg_path(project):
    return project / "config" / f"{NAME}.yaml"


def edit(project, change) -> None:
    """Edit the study's config in place, as a user would."""
    cfg = yaml.safe_load(cfg_path(project).read_text())
    change(cfg)
    cfg_path(project).write_text(yaml.safe_dump(cfg, sort_keys=False))


def would_run(project) -> Counter:
    jobs = slurmctl.scheduled(project, cfg_path(project))
    jobs.pop(("all", ""), None)  # the target rule itself, always listed when anything runs
    return jobs


def experiment_jobs(project, exp) -> Counter:
    """An experiment's jobs and the report: train, eval_target, and eval_source unless it is linear probing
    (whose backbone is the untouched one, scored once for every row)."""
    cfg = yaml.safe_load(cfg_path(project).read_text())
    method = next(e["method"] for e in cfg["experiments"] if e["name"] == exp)
    rules = ["train", "eval_target"] + (["eval_source"] if method != "linear" else [])
    return slurmctl.jobs_of(*[(rule, exp) for rule in rules], ("report", None))


def set_lr(name, lr):
    def change(cfg):
        exp = next(e for e in cfg["experiments"] if e["name"] == name)
        exp.setdefault("train", {})["lr"] = lr
    return change


def add_experiment(cfg):
    demo = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
    new = next(e for e in demo["experiments"] if e["name"] == "block_p1")
    new.get("train", {}).pop("warmup_steps", None)
    cfg["experiments"].append(new)


def md5(path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def tree(folder) -> dict:
    """{relative path: md5} of every file under `folder`."""
    return {str(p.relative_to(folder)): md5(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def trained_weights(project) -> str:
    (path,) = (project / "results" / NAME / "runs" / "synthetic" / "lora_r4").glob("seed0-*/trainable.safetensors")
    return str(path.relative_to(project))


@pytest.fixture(scope="module")
def origin(tmp_path_factory):
    """The repository where the demo ran, its data, results and caches pushed and their pointers committed."""
    root = tmp_path_factory.mktemp("dvc")
    project = slurmctl.make_project(root / "origin")
    slurmctl.write_config(project, config())
    remote = root / "remote"
    git(project, "init", "-q", "-b", "main")
    # The project's remote, pointed at the team's storage for everybody (README: DVC remote setup).
    dvc(project, "remote", "modify", "storage", "url", remote)
    slurmctl.snakemake(project, "--configfile", cfg_path(project), "--cores", "2", "all", timeout=1200)
    dvc(project, "add", "data", "results", "cache")  # make push
    dvc(project, "push")
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "demo run: data, results and cache pointers")
    return {"project": project, "remote": remote, "root": root,
            "trees": {top: tree(project / top) for top in ("results", "data", "cache")}}


def fresh_clone(origin, where):
    git(where.parent, "clone", "-q", origin["project"], where)
    return where


@pytest.fixture
def clone(origin, tmp_path):
    """A teammate's fresh clone after pulling every pointer (the caches too)."""
    project = fresh_clone(origin, tmp_path / "clone")
    pull(project, *POINTERS)
    return project


def pulled(project) -> set:
    return {top for top in ("results", "data", "cache") if (project / top).exists()}


def test_pointers_are_committed_and_the_remote_verifies(origin):
    project = origin["project"]
    tracked = git(project, "ls-files").stdout.split()
    for path in (*POINTERS, ".dvc/config", ".dvcignore", f"config/{NAME}.yaml", "scripts/dvc-pull.sh"):
        assert path in tracked, path
    assert dvc(project, "config", "remote.storage.verify").stdout.strip() == "true"
    assert dvc(project, "config", "core.remote").stdout.strip() == "storage"
    assert "Data and pipelines are up to date" in dvc(project, "status").stdout
    assert all(origin["trees"].values()), "results/, data/ and cache/ each hold files"


@pytest.mark.parametrize("remote", ["missing folder", "none configured"])
def test_pulling_without_a_reachable_remote_says_what_to_configure(origin, tmp_path, remote):
    """The committed .dvc/config names a folder (as the project's does: /srv/dvc/vitpeft) that this
    machine does not have, or names no remote at all: one line naming the remote and the setting to
    make, the README section to read, exit 2, and nothing pulled."""
    project = fresh_clone(origin, tmp_path / "clone")
    nowhere = tmp_path / "no-such-storage" / "vitpeft-dvc"
    if remote == "missing folder":
        dvc(project, "remote", "modify", "storage", "url", nowhere)
    else:
        dvc(project, "remote", "default", "--unset")

    result = pull(project, check=False)
    lines = result.stdout.strip().splitlines()
    assert result.returncode == 2, result.stdout
    assert len(lines) == 1, result.stdout
    (line,) = lines
    assert line.startswith("dvc-pull: ") and "dvc remote modify storage url" in line, line
    if remote == "missing folder":
        assert f"the DVC remote 'storage' is {nowhere}, which is not a folder on this machine" in line, line
    else:
        assert "no default DVC remote is configured" in line, line
    section = line.rsplit("README.md, ", 1)[1].strip("'")
    assert section == "Share data and results with DVC", line
    assert any(row.lstrip("# ").endswith(section) for row in (REPO / "README.md").read_text().splitlines()
               if row.startswith("#")), f"README.md has no section {section!r}"
    assert pulled(project) == set() and not (project / ".dvc" / "cache").exists(), "something was pulled"


def test_the_results_alone_can_be_pulled_and_nothing_then_needs_to_run(origin, tmp_path):
    """`scripts/dvc-pull.sh results.dvc` fetches results/ (the trained weights, metrics and the
    table) and neither data/ nor cache/. Every evaluation's and the report's outputs are then present
    and every input is ancient(), so Snakemake plans nothing although the datasets, the backbone and
    the source features are absent: a results-only clone can read, plot and report, and the data
    would be made again only for a job that has to run."""
    project = fresh_clone(origin, tmp_path / "clone")
    pull(project, "results.dvc")
    assert pulled(project) == {"results"}
    assert tree(project / "results") == origin["trees"]["results"]
    assert would_run(project) == Counter()
    # An edit makes again only the data its own jobs read; the other experiment's finished outputs stay.
    edit(project, set_lr("lora_r4", 0.02))
    data_jobs = slurmctl.jobs_of(("make_synthetic", None), ("pretrain_backbone", None), ("extract_features", None))
    assert would_run(project) == experiment_jobs(project, "lora_r4") + data_jobs


def test_make_pull_fetches_results_and_data_but_not_the_caches(origin, tmp_path):
    """The caches (ImageNet's shards and the untouched backbone's features: about 200 GB for the
    paper) have their own pointer and stay on the remote; an edit that does not read them (linear
    probing has no source pass of its own) reruns only its experiment and the report."""
    project = fresh_clone(origin, tmp_path / "clone")
    assert (project / "cache.dvc").is_file()
    pull(project)
    assert pulled(project) == {"results", "data"}
    for top in ("results", "data"):
        assert tree(project / top) == origin["trees"][top], top
    assert would_run(project) == Counter()
    edit(project, set_lr("linear", 0.02))
    assert would_run(project) == experiment_jobs(project, "linear")


def test_a_fresh_clone_pulls_everything_and_reruns_nothing(origin, clone):
    for top, files in origin["trees"].items():
        assert tree(clone / top) == files, top
    assert not (clone / ".snakemake").exists()
    assert would_run(clone) == Counter()


def test_in_a_clone_changing_one_learning_rate_reruns_only_that_experiment(clone):
    edit(clone, set_lr("lora_r4", 0.02))
    assert would_run(clone) == experiment_jobs(clone, "lora_r4")


def test_in_a_clone_adding_an_experiment_runs_only_its_jobs(clone):
    edit(clone, add_experiment)
    assert would_run(clone) == experiment_jobs(clone, "block_p1")


def test_in_the_original_checkout_edits_rerun_only_what_they_touch(origin):
    project = origin["project"]
    original = cfg_path(project).read_text()
    try:
        assert would_run(project) == Counter()
        edit(project, set_lr("linear", 0.02))
        assert would_run(project) == experiment_jobs(project, "linear")
        cfg_path(project).write_text(original)
        edit(project, add_experiment)
        assert would_run(project) == experiment_jobs(project, "block_p1")
    finally:
        cfg_path(project).write_text(original)
    assert would_run(project) == Counter()  # going back to the recorded settings reruns nothing


def test_a_corrupted_remote_object_fails_the_pull_instead_of_restoring_bad_data(origin, tmp_path):
    # Corrupt a copy of the remote, so the other tests keep a sound one.
    remote = tmp_path / "remote"
    shutil.copytree(origin["remote"], remote)
    weights = trained_weights(origin["project"])
    good = md5(origin["project"] / weights)
    obj = remote / "files" / "md5" / good[:2] / good[2:]
    assert obj.is_file(), "the pushed object of the trained weights is not where DVC keeps it"
    data = bytearray(obj.read_bytes())
    size = len(data)
    for i in (size // 3, size // 2, size - 1):  # same size, bytes flipped in place
        data[i] ^= 0xFF
    obj.chmod(0o644)
    obj.write_bytes(bytes(data))
    assert obj.stat().st_size == size

    def clone_and_pull(where, *local_settings):
        fresh_clone(origin, where)
        dvc(where, "remote", "modify", "--local", "storage", "url", remote)
        for key, value in local_settings:
            dvc(where, "remote", "modify", "--local", "storage", key, value)
        return pull(where, "results.dvc", check=False)

    checked = tmp_path / "checked"
    result = clone_and_pull(checked)
    assert result.returncode == 2, result.stdout
    assert "failed to pull data" in result.stdout, result.stdout
    assert "dvc-pull: pulling results.dvc from 'storage'" in result.stdout.splitlines()[-1], result.stdout
    assert not (checked / weights).exists(), "corrupted weights were restored"
    assert pull(checked, "results.dvc", check=False).returncode == 2, "a second pull must not accept the bad object"

    # What `verify = true` prevents: without it, the same pull "succeeds" with the bad bytes.
    unchecked = tmp_path / "unchecked"
    result = clone_and_pull(unchecked, ("verify", "false"))
    assert result.returncode == 0, result.stdout
    assert md5(unchecked / weights) != good
    # Even then no job reads them as whole: the run folder's SHA256SUMS was pulled with them.
    pull(unchecked, "data.dvc")
    from vitpeft.models import shapes
    from vitpeft.study import config as config_lib
    from vitpeft.study.plan import Plan

    plan = Plan(config_lib.load(str(cfg_path(unchecked)), describe=shapes.describe))
    run = plan.runs[("synthetic", "lora_r4", 0)].train.path
    job = slurmctl.run([BIN / "vitpeft", "eval-target", "--spec", f"{run}/spec.yaml", "--run", run, "--data",
                        f"{plan.targets['synthetic'].path}/test", "--out", "target.json", "--device", "cpu"],
                       cwd=unchecked, timeout=300, check=False)
    assert job.returncode == 2, job.stdout
    assert f"{weights} is corrupt: its sha256 is" in job.stdout and "dvc pull" in job.stdout, job.stdout
    assert not (unchecked / "target.json").exists()
