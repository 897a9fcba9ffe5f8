"""The workflow through a real SLURM (one node, started by scripts/slurm-up.sh),
with the project's own profile: `snakemake --profile slurm all` from the root of
a copy of the project, as a user types it.

The module's run is a small cluster day: two experiments of the demo grid, and
the longer training job is cancelled with `scancel` while it runs (what a
preemption does). Snakemake must resubmit it (profile `retries`), the new job
must continue from the resume checkpoint, and its trained weights must equal
those of a run that was never interrupted.
"""

import filecmp
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml
from safetensors.torch import load_file

import slurmctl
from slurmctl import REPO

pytestmark = pytest.mark.slurm

NAME = "slurmtest"
EXPERIMENTS = ("linear", "lora_r4")
CANCELLED = "lora_r4"  # trains long enough to be cancelled mid-run
FAST_POLL = ("--slurm-init-seconds-before-status-checks", "2")


def config() -> dict:
    cfg = slurmctl.reduced_demo(NAME, EXPERIMENTS, steps=8)
    slow = next(exp for exp in cfg["experiments"] if exp["name"] == CANCELLED)
    slow.setdefault("train", {}).update(steps=400, checkpoint_every=10, log_every=50, val_every=200)
    return cfg


@pytest.fixture(scope="session")
def slurm_cluster():
    return slurmctl.slurm_up()


@pytest.fixture(scope="module")
def cluster_run(slurm_cluster, tmp_path_factory):
    """Run the reduced demo through SLURM, cancelling the long training job once it has a resume checkpoint."""
    project = slurmctl.make_project(tmp_path_factory.mktemp("slurm") / "project")
    cfg_path = slurmctl.write_config(project, config())
    log_path = project.parent / "snakemake.log"
    proc = slurmctl.start(
        [slurmctl.BIN / "snakemake", "--profile", "slurm", "--configfile", cfg_path, *FAST_POLL, "all"],
        cwd=project, log_path=log_path,
    )
    try:
        def running_with_checkpoint():
            if proc.poll() is not None:
                pytest.fail(f"snakemake ended before the cancel:\n{slurmctl.tail(log_path.read_text())}")
            if not list((project / ".resume").glob(f"{CANCELLED}-*/last.pt")):
                return None
            jobs = [job for job, (state, comment) in slurmctl.squeue_states().items()
                    if state == "RUNNING" and comment == f"rule_train_wildcards_{CANCELLED}"]
            return jobs[0] if jobs else None

        victim = slurmctl.wait_for(running_with_checkpoint, 900, f"{CANCELLED}'s training job to run with a resume checkpoint")
        subprocess.run(["scancel", victim], check=True)
        proc.wait(timeout=1200)
    except subprocess.TimeoutExpired:
        pytest.fail(f"snakemake did not finish:\n{slurmctl.tail(log_path.read_text())}")
    finally:
        slurmctl.kill_group(proc)
    log = log_path.read_text()
    # what SLURM knows of this run's jobs (it keeps finished ones visible for MinJobAge)
    states = {run_id: slurmctl.squeue_states(run_id) for run_id in set(slurmctl.run_ids(log))}
    if proc.returncode != 0:
        logs = "\n".join(f"--- {p}\n{slurmctl.tail(p.read_text(), 30)}" for p in sorted(project.glob("logs/**/*.log")))
        pytest.fail(f"snakemake --profile slurm failed (exit {proc.returncode}):\n{slurmctl.tail(log, 150)}\n{logs}")
    return {"project": project, "config": cfg_path, "log": log, "victim": victim, "states": states}


def test_the_real_profile_is_the_one_used(cluster_run):
    project = cluster_run["project"]
    assert filecmp.cmp(project / "slurm" / "config.yaml", REPO / "slurm" / "config.yaml", shallow=False)
    assert "Using profile slurm for setting default command line arguments" in cluster_run["log"]
    profile = yaml.safe_load((REPO / "slurm" / "config.yaml").read_text())
    assert profile["executor"] == "slurm" and profile["slurm-status-command"] == "squeue"
    assert profile["retries"] >= 1


def test_jobs_ran_as_slurm_jobs_and_the_table_came_out(cluster_run):
    project, log, states = cluster_run["project"], cluster_run["log"], cluster_run["states"]
    submitted = slurmctl.submissions(log)
    for exp in EXPERIMENTS:
        for rule in ("train", "eval_target", "eval_source"):
            assert (rule, exp) in submitted.values(), (rule, exp, submitted)
    ((run_id, states),) = states.items()  # one Snakemake run, one SLURM job name
    assert set(states) == set(submitted), (states, submitted)
    for job, (rule, wildcards) in submitted.items():
        # SLURM itself knows the job, under this run's name and the rule in its comment ...
        state, comment = states[job]
        assert comment == f"rule_{rule}" + (f"_wildcards_{wildcards}" if wildcards else ""), (job, comment)
        assert state == ("CANCELLED" if job == cluster_run["victim"] else "COMPLETED"), (job, state, comment)
        # ... and slurmd wrote its output where the plugin asked (the profile keeps successful logs)
        assert (project / ".snakemake" / "slurm_logs" / f"rule_{rule}" / wildcards / f"{job}.log").is_file()

    table = pd.read_csv(project / "results" / NAME / "table.csv")
    assert set(EXPERIMENTS) <= set(table.iloc[:, 1]) | set(table.iloc[:, 0])
    for exp in EXPERIMENTS:
        assert (project / "results" / NAME / "runs" / exp / "trainable.safetensors").is_file()


def test_a_cancelled_training_job_is_resubmitted_and_resumes(cluster_run):
    project, log, victim = cluster_run["project"], cluster_run["log"], cluster_run["victim"]
    assert f"SLURM-job '{victim}' failed, SLURM status is: 'CANCELLED'" in log
    assert "Trying to restart job" in log
    submitted = slurmctl.submissions(log)
    train_jobs = [job for job, what in submitted.items() if what == ("train", CANCELLED)]
    assert len(train_jobs) == 2 and train_jobs[0] == victim, train_jobs

    run_dir = project / "results" / NAME / "runs" / CANCELLED
    summary = yaml.safe_load((run_dir / "summary.json").read_text())
    assert 0 < summary["resumed_from_step"] < summary["steps"] == 400, summary
    assert not list((project / ".resume").glob(f"{CANCELLED}-*/last.pt")), "resume state not cleared after success"

    # The same spec trained in one go, on the same data and thread count as the rule.
    reference = project.parent / "uninterrupted"
    slurmctl.run(
        [slurmctl.BIN / "vitpeft", "train", "--spec", project / "results" / NAME / "specs" / f"{CANCELLED}.yaml",
         "--out", reference, "--resume-dir", project.parent / "reference-resume", "--device", "cpu"],
        cwd=project, timeout=900, OMP_NUM_THREADS=1,
    )
    resumed, uninterrupted = load_file(run_dir / "trainable.safetensors"), load_file(reference / "trainable.safetensors")
    assert resumed.keys() == uninterrupted.keys()
    for key in resumed:
        assert resumed[key].dtype == uninterrupted[key].dtype and resumed[key].equal(uninterrupted[key]), key


# ---------------------------------------------------------------- failures surface, they do not hang


@pytest.fixture
def prepared_project(cluster_run, tmp_path):
    """A fresh copy of the project with the module run's data: its first jobs are cluster jobs."""
    project = slurmctl.make_project(tmp_path / "project")
    shutil.copytree(cluster_run["project"] / "data", project / "data")
    cfg = config()
    cfg["experiments"] = cfg["experiments"][:1]
    return project, slurmctl.write_config(project, cfg)


def failed_jobs(log: str) -> dict:
    """{rule: [error block, ...]} of the "Error in rule <rule>:" blocks of a Snakemake log.

    A block runs to the next timestamp line ("[Sat Nov ...]") or the next error.
    """
    found = {}
    for block in re.split(r"\n(?=\[\w{3} \w{3} |Error in rule )", log):
        head = re.match(r"Error in rule (\w+):", block)
        if head:
            found.setdefault(head.group(1), []).append(block)
    return found


def names_the_job(log: str, rule: str, output: str, message: str) -> bool:
    """Some error block of `rule` names `output` (the job) and carries `message` (the cause)."""
    return any(output in block and message in block for block in failed_jobs(log).get(rule, []))


def test_an_unknown_partition_fails_the_submission_naming_the_job(prepared_project, tmp_path):
    project, cfg_path = prepared_project
    profile = yaml.safe_load((REPO / "slurm" / "config.yaml").read_text())
    profile["default-resources"]["slurm_partition"] = "'nosuchpartition'"
    bad = tmp_path / "profiles" / "badpartition"
    bad.mkdir(parents=True)
    (bad / "config.yaml").write_text(yaml.safe_dump(profile))

    result = slurmctl.snakemake(project, "--profile", bad, "--configfile", cfg_path, *FAST_POLL, "all",
                                timeout=600, check=False)
    out = result.stdout
    assert result.returncode != 0, out
    assert "SLURM sbatch failed" in out and "invalid partition specified: nosuchpartition" in out, out
    assert names_the_job(out, "train", f"output: results/{NAME}/runs/linear", "invalid partition specified"), out
    assert not slurmctl.submissions(out), "nothing may have been submitted"


def test_an_unreachable_controller_is_a_clear_error_not_a_hang(prepared_project, tmp_path):
    project, cfg_path = prepared_project
    conf = Path("/etc/slurm/slurm.conf").read_text()
    # The same cluster, but the controller's port has nobody listening.
    dead = re.sub(r"(?m)^SlurmctldHost=.*$", "SlurmctldHost=nowhere(127.0.0.1)\nSlurmctldPort=6999", conf)
    (tmp_path / "dead.conf").write_text(dead)

    result = slurmctl.snakemake(project, "--profile", "slurm", "--configfile", cfg_path, *FAST_POLL, "all",
                                timeout=600, check=False, SLURM_CONF=tmp_path / "dead.conf")
    out = result.stdout
    assert result.returncode != 0, out
    assert "Unable to contact slurm controller" in out, out
    assert names_the_job(out, "train", f"output: results/{NAME}/runs/linear", "Unable to contact slurm controller"), out


def test_the_time_limit_warning_signal_reaches_training_which_resumes(prepared_project):
    """The profile's `--signal=USR1@<s>` (step form, no "B:") reaches the training process under the plugin's srun.

    A 3-minute limit with the warning 120 s before it, on a run too long to
    finish: the job gets SIGUSR1 about a minute in, training saves a checkpoint
    and exits 75, Snakemake resubmits it, and the new job resumes at that step.
    Only the lead time differs from the profile (300 s).
    """
    project, _ = prepared_project
    cfg = config()
    cfg["experiments"] = [exp for exp in cfg["experiments"] if exp["name"] == CANCELLED]
    cfg["experiments"][0].setdefault("train", {}).update(steps=1_000_000, checkpoint_every=20, log_every=1000, val_every=1_000_000)
    cfg["resources"]["train"]["runtime"] = 3
    cfg_path = slurmctl.write_config(project, cfg)
    profile = yaml.safe_load((REPO / "slurm" / "config.yaml").read_text())
    assert profile["set-resources"]["train"]["slurm_extra"] == "'--signal=USR1@300'"

    snakemake_log = project.parent / "signal.log"
    train_log = project / "logs" / NAME / "train" / f"{CANCELLED}.log"
    proc = slurmctl.start(
        [slurmctl.BIN / "snakemake", f"results/{NAME}/runs/{CANCELLED}", "--profile", "slurm",
         "--configfile", cfg_path, *FAST_POLL, "--set-resources", "train:slurm_extra='--signal=USR1@120'"],
        cwd=project, log_path=snakemake_log,
    )

    def seen(pattern):
        def check():
            if proc.poll() is not None:
                pytest.fail(f"snakemake ended early:\n{slurmctl.tail(snakemake_log.read_text())}")
            match = re.search(pattern, train_log.read_text()) if train_log.exists() else None
            return match and int(match.group(1))
        return check

    try:
        stopped = slurmctl.wait_for(seen(r"stopped by SIGUSR1 at step (\d+)"), 400, "training to stop on SIGUSR1", 0.2)
        resumed = slurmctl.wait_for(seen(r"resuming at step (\d+)"), 400, "the resubmitted job to resume")
        log = snakemake_log.read_text()
    finally:
        slurmctl.kill_group(proc)
        for run_id in set(slurmctl.run_ids(snakemake_log.read_text())):
            subprocess.run(["scancel", "--name", run_id], check=False)
    assert resumed == stopped > 0
    train_jobs = [job for job, what in slurmctl.submissions(log).items() if what == ("train", CANCELLED)]
    assert len(train_jobs) >= 2 and f"SLURM-job '{train_jobs[0]}' failed" in log, log
    assert slurmctl.squeue_states()[train_jobs[0]][0] == "FAILED"  # exited (75) after the warning, not killed at the limit
