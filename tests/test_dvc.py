"""Sharing data and results through DVC: a teammate's fresh clone pulls them and
reruns nothing; an edit reruns only what it touches; a corrupted remote fails loudly.

A module-scoped "origin" repository (a copy of the project's files, with the
project's own .dvc/config, git-initialised) runs the reduced demo, then does
what README tells a user after a run: `dvc add data results`, `dvc push`,
commit the pointers. The remote is a folder in tmp_path.
"""

import hashlib
import shutil
from collections import Counter

import pytest
import yaml

import slurmctl
from slurmctl import BIN

pytestmark = pytest.mark.dvc

NAME = "dvctest"
EXPERIMENTS = ("linear", "lora_r4")
TRAINED = f"results/{NAME}/runs/lora_r4/trainable.safetensors"


def git(cwd, *args):
    return slurmctl.run(["git", "-c", "user.name=vitpeft-test", "-c", "user.email=test@example.invalid", *args],
                        cwd=cwd, timeout=120)


def dvc(cwd, *args, check=True, timeout=300):
    return slurmctl.run([BIN / "dvc", *args], cwd=cwd, timeout=timeout, check=check)


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


def experiment_jobs(exp) -> Counter:
    return slurmctl.jobs_of(("train", exp), ("eval_target", exp), ("eval_source", exp), ("report", None))


def set_lr(name, lr):
    def change(cfg):
        exp = next(e for e in cfg["experiments"] if e["name"] == name)
        exp.setdefault("train", {})["lr"] = lr
    return change


def add_experiment(cfg):
    demo = yaml.safe_load((slurmctl.REPO / "config" / "demo.yaml").read_text())
    new = next(e for e in demo["experiments"] if e["name"] == "block_p1")
    new.get("train", {}).pop("warmup_steps", None)
    cfg["experiments"].append(new)


def md5(path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def origin(tmp_path_factory):
    """The repository where the demo ran, its data and results pushed and their pointers committed."""
    root = tmp_path_factory.mktemp("dvc")
    project = slurmctl.make_project(root / "origin")
    slurmctl.write_config(project, config())
    remote = root / "remote"
    git(project, "init", "-q", "-b", "main")
    # The project's remote, pointed at the team's storage for everybody (README: DVC remote setup).
    dvc(project, "remote", "modify", "storage", "url", remote)
    slurmctl.snakemake(project, "--configfile", cfg_path(project), "--cores", "2", "all", timeout=1200)
    dvc(project, "add", "data", "results")
    dvc(project, "push")
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "demo run: data and results pointers")
    return {"project": project, "remote": remote, "root": root}


@pytest.fixture
def clone(origin, tmp_path):
    """A teammate's fresh clone after `dvc pull`."""
    project = tmp_path / "clone"
    git(tmp_path, "clone", "-q", origin["project"], project)
    dvc(project, "pull")
    return project


def test_pointers_are_committed_and_the_remote_verifies(origin):
    project = origin["project"]
    tracked = git(project, "ls-files").stdout.split()
    for path in ("data.dvc", "results.dvc", ".dvc/config", ".dvcignore", f"config/{NAME}.yaml"):
        assert path in tracked, path
    assert dvc(project, "config", "remote.storage.verify").stdout.strip() == "true"
    assert dvc(project, "config", "core.remote").stdout.strip() == "storage"
    assert "Data and pipelines are up to date" in dvc(project, "status").stdout


def test_a_fresh_clone_pulls_everything_and_reruns_nothing(origin, clone):
    for rel in (TRAINED, f"results/{NAME}/table.csv", f"data/{NAME}/backbone/pretrained.safetensors"):
        assert md5(clone / rel) == md5(origin["project"] / rel), rel
    assert not (clone / ".snakemake").exists()
    assert would_run(clone) == Counter()


def test_in_a_clone_changing_one_learning_rate_reruns_only_that_experiment(clone):
    edit(clone, set_lr("lora_r4", 0.02))
    assert would_run(clone) == experiment_jobs("lora_r4")


def test_in_a_clone_adding_an_experiment_runs_only_its_jobs(clone):
    edit(clone, add_experiment)
    assert would_run(clone) == experiment_jobs("block_p1")


def test_in_the_original_checkout_edits_rerun_only_what_they_touch(origin):
    project = origin["project"]
    original = cfg_path(project).read_text()
    try:
        assert would_run(project) == Counter()
        edit(project, set_lr("linear", 0.02))
        assert would_run(project) == experiment_jobs("linear")
        cfg_path(project).write_text(original)
        edit(project, add_experiment)
        assert would_run(project) == experiment_jobs("block_p1")
    finally:
        cfg_path(project).write_text(original)
    assert would_run(project) == Counter()  # going back to the recorded settings reruns nothing


def test_a_corrupted_remote_object_fails_the_pull_instead_of_restoring_bad_data(origin, tmp_path):
    # Corrupt a copy of the remote, so the other tests keep a sound one.
    remote = tmp_path / "remote"
    shutil.copytree(origin["remote"], remote)
    good = md5(origin["project"] / TRAINED)
    obj = remote / "files" / "md5" / good[:2] / good[2:]
    assert obj.is_file(), "the pushed object of the trained weights is not where DVC keeps it"
    data = bytearray(obj.read_bytes())
    size = len(data)
    for i in (size // 3, size // 2, size - 1):  # same size, bytes flipped in place
        data[i] ^= 0xFF
    obj.chmod(0o644)
    obj.write_bytes(bytes(data))
    assert obj.stat().st_size == size

    def fresh_clone(where, *local_settings):
        git(tmp_path, "clone", "-q", origin["project"], where)
        dvc(where, "remote", "modify", "--local", "storage", "url", remote)
        for key, value in local_settings:
            dvc(where, "remote", "modify", "--local", "storage", key, value)
        return dvc(where, "pull", check=False)

    checked = tmp_path / "checked"
    result = fresh_clone(checked)
    assert result.returncode != 0, result.stdout
    assert "failed to pull data" in result.stdout and "results" in result.stdout, result.stdout
    assert not (checked / TRAINED).exists(), "corrupted weights were restored"
    assert dvc(checked, "pull", check=False).returncode != 0, "a second pull must not accept the bad object either"

    # What `verify = true` prevents: without it, the same pull "succeeds" with the bad bytes.
    unchecked = tmp_path / "unchecked"
    result = fresh_clone(unchecked, ("verify", "false"))
    assert result.returncode == 0, result.stdout
    assert md5(unchecked / TRAINED) != good
