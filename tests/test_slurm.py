"""The workflow through a real SLURM (one node, started by scripts/slurm-up.sh),
with the project's own profile: `snakemake --profile slurm all` from the root of
a copy of the project, as a user types it.

The module's run is a small cluster day: two experiments of the demo grid, and
the longer training job is cancelled with `scancel` while it runs (what a
preemption does). Snakemake must resubmit it (profile `retries`), the new job
must continue from the resume checkpoint, and its trained weights must equal
those of a run that was never interrupted. The other tests reuse its data,
caches and trained runs.

Job names: the plugin puts `rule_<rule>_wildcards_<values>` in each job's
comment, the values joined by "_" in the output pattern's order, e.g.
`rule_train_wildcards_synthetic_lora_r4_0_<key>` (dataset, experiment, seed,
key); the keys come from the study's plan (vitpeft.study.plan).
"""

import filecmp
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from safetensors.torch import load_file

import slurmctl
from slurmctl import REPO
from vitpeft.study import signal_lead

pytestmark = pytest.mark.slurm

NAME = "slurmtest"
DATASET = "synthetic"
EXPERIMENTS = ("linear", "lora_r4")
CANCELLED = "lora_r4"  # trains long enough to be cancelled mid-run
FAST_POLL = ("--slurm-init-seconds-before-status-checks", "2")


def config() -> dict:
    cfg = slurmctl.reduced_demo(NAME, EXPERIMENTS, steps=8)
    slow = next(exp for exp in cfg["experiments"] if exp["name"] == CANCELLED)
    slow.setdefault("train", {}).update(steps=400, checkpoint_every=10, log_every=50, val_every=200)
    return cfg


def cluster_jobs(plan) -> set:
    """(rule, wildcard values) of every job of the study that goes to SLURM.

    Making the data, pretraining the backbone and the report are local rules; each
    run trains and is scored on the target, and on the source when training changed
    the backbone; the untouched backbone's source features are extracted once.
    """
    jobs = {("extract_features", ""), ("eval_source_pretrained", "")}
    jobs |= {("eval_target_pretrained", f"{dataset}_{node.key}") for dataset, node in plan.pretrained_target.items()}
    for run in plan.runs.values():
        values = f"{run.dataset}_{run.experiment}_{run.seed}"
        nodes = {"train": run.train, "eval_target": run.target, "eval_source": run.source}
        jobs |= {(rule, f"{values}_{node.key}") for rule, node in nodes.items() if node is not None}
    return jobs


def run_of(plan, exp):
    return plan.runs[(DATASET, exp, 0)]


def train_wildcards(plan, exp) -> str:
    return f"{DATASET}_{exp}_0_{run_of(plan, exp).train.key}"


def comment(rule: str, wildcards: str) -> str:
    return f"rule_{rule}" + (f"_wildcards_{wildcards}" if wildcards else "")


@pytest.fixture(scope="session")
def slurm_cluster():
    return slurmctl.slurm_up()


@pytest.fixture(scope="module")
def cluster_run(slurm_cluster, tmp_path_factory):
    """Run the reduced demo through SLURM, cancelling the long training job once it has a resume checkpoint."""
    project = slurmctl.make_project(tmp_path_factory.mktemp("slurm") / "project")
    cfg_path = slurmctl.write_config(project, config())
    plan = slurmctl.plan_of(cfg_path)
    victim_comment = comment("train", train_wildcards(plan, CANCELLED))
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
                    if state == "RUNNING" and comment == victim_comment]
            return jobs[0] if jobs else None

        victim = slurmctl.wait_for(running_with_checkpoint, 900,
                                   f"{CANCELLED}'s training job to run with a resume checkpoint")
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
    return {"project": project, "config": cfg_path, "plan": plan, "log": log, "victim": victim, "states": states}


def test_the_real_profile_is_the_one_used(cluster_run):
    project = cluster_run["project"]
    assert filecmp.cmp(project / "slurm" / "config.yaml", REPO / "slurm" / "config.yaml", shallow=False)
    # the SLURM profile and the workflow's own (profiles/default: rerun triggers) together
    assert "Using profiles slurm and workflow specific profile profiles/default" in cluster_run["log"]
    profile = yaml.safe_load((REPO / "slurm" / "config.yaml").read_text())
    assert profile["executor"] == "slurm" and profile["slurm-status-command"] == "squeue"
    assert profile["retries"] >= 1


def test_jobs_ran_as_slurm_jobs_and_the_table_came_out(cluster_run):
    project, log, states, plan = cluster_run["project"], cluster_run["log"], cluster_run["states"], cluster_run["plan"]
    submitted = slurmctl.submissions(log)
    assert set(submitted.values()) == cluster_jobs(plan), submitted  # the local rules stayed local
    ((run_id, states),) = states.items()  # one Snakemake run, one SLURM job name
    assert set(states) == set(submitted), (states, submitted)
    for job, (rule, wildcards) in submitted.items():
        # SLURM itself knows the job, under this run's name and the rule and wildcards in its comment ...
        state, job_comment = states[job]
        assert job_comment == comment(rule, wildcards), (job, job_comment)
        assert state == ("CANCELLED" if job == cluster_run["victim"] else "COMPLETED"), (job, state, job_comment)
        # ... and slurmd wrote its output where the plugin asked (the profile keeps successful logs)
        assert (project / ".snakemake" / "slurm_logs" / f"rule_{rule}" / wildcards / f"{job}.log").is_file()

    table = pd.read_csv(project / "results" / NAME / "table.csv")
    assert all(table.isin([exp]).any().any() for exp in EXPERIMENTS), table
    for run in plan.runs.values():
        assert (project / run.train.path / "trainable.safetensors").is_file()


def test_a_cancelled_training_job_is_resubmitted_and_resumes(cluster_run):
    project, log, victim, plan = cluster_run["project"], cluster_run["log"], cluster_run["victim"], cluster_run["plan"]
    assert f"SLURM-job '{victim}' failed, SLURM status is: 'CANCELLED'" in log
    assert "Trying to restart job" in log
    submitted = slurmctl.submissions(log)
    train_jobs = [job for job, what in submitted.items() if what == ("train", train_wildcards(plan, CANCELLED))]
    assert len(train_jobs) == 2 and train_jobs[0] == victim, train_jobs

    run = run_of(plan, CANCELLED)
    run_dir = project / run.train.path
    summary = json.loads((run_dir / "summary.json").read_text())
    assert 0 < summary["resumed_from_step"] < summary["steps"] == 400, summary
    # gpu: 0 on a node with a GPU: the CPU, and the run, its log and its metrics say so
    assert summary["device"] == "cpu" and summary["precision"] == "float32", summary
    for column in ("target", "source"):
        metrics = json.loads((project / getattr(run, column).path).read_text())
        assert metrics["device"] == "cpu" and metrics["compute_precision"] == "fp32", metrics
    # the retry appended to the cancelled attempt's log: both attempts are there, in order
    log_path = project / "logs" / NAME / "train" / DATASET / CANCELLED / f"seed0-{run.train.key}.log"
    train_log = log_path.read_text()
    assert ATTEMPT.findall(train_log) == train_jobs, train_log
    stopped, resumed = train_log.index("stopped by SIGTERM at step"), train_log.index("resuming at step")
    assert train_log.index(f"SLURM job {train_jobs[1]}") < resumed and stopped < resumed, train_log
    assert train_log.count(f"{CANCELLED}: training on cpu, precision float32") == 2, train_log
    assert not list((project / ".resume").glob(f"{CANCELLED}-*/last.pt")), "resume state not cleared after success"

    # The run's own spec (README: `vitpeft train --spec` reruns it) trained in one go, on the same
    # data and thread count as the rule.
    reference = project.parent / "uninterrupted"
    slurmctl.run(
        [slurmctl.BIN / "vitpeft", "train", "--spec", run_dir / "spec.yaml",
         "--out", reference, "--resume-dir", project.parent / "reference-resume", "--device", "cpu"],
        cwd=project, timeout=900, OMP_NUM_THREADS=1,
    )
    resumed = load_file(run_dir / "trainable.safetensors")
    uninterrupted = load_file(reference / "trainable.safetensors")
    assert resumed.keys() == uninterrupted.keys()
    for key in resumed:
        assert resumed[key].dtype == uninterrupted[key].dtype and resumed[key].equal(uninterrupted[key]), key


# ---------------------------------------------------------------- failures surface, they do not hang


def copy_data(cluster_run, tmp_path):
    """A fresh copy of the project with the module run's data and caches: its first jobs are cluster jobs."""
    project = slurmctl.make_project(tmp_path / "project")
    for top in ("data", "cache"):
        shutil.copytree(cluster_run["project"] / top, project / top)
    return project


@pytest.fixture
def prepared_project(cluster_run, tmp_path):
    """A one-experiment (linear) study with its data ready and nothing trained."""
    project = copy_data(cluster_run, tmp_path)
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
    linear = run_of(slurmctl.plan_of(cfg_path), "linear").train.path
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
    assert names_the_job(out, "train", f"output: {linear}", "invalid partition specified"), out
    assert not slurmctl.submissions(out), "nothing may have been submitted"


def test_an_unreachable_controller_is_a_clear_error_not_a_hang(prepared_project, tmp_path):
    project, cfg_path = prepared_project
    linear = run_of(slurmctl.plan_of(cfg_path), "linear").train.path
    conf = Path("/etc/slurm/slurm.conf").read_text()
    # The same cluster, but the controller's port has nobody listening; each client gives up
    # after 1 s instead of SLURM's default 9 s (MessageTimeout 10).
    dead = re.sub(r"(?m)^SlurmctldHost=.*$", "SlurmctldHost=nowhere(127.0.0.1)\nSlurmctldPort=6999", conf)
    dead += "\nMessageTimeout=2\n"
    (tmp_path / "dead.conf").write_text(dead)

    result = slurmctl.snakemake(project, "--profile", "slurm", "--configfile", cfg_path, *FAST_POLL, "all",
                                timeout=600, check=False, SLURM_CONF=tmp_path / "dead.conf")
    out = result.stdout
    assert result.returncode != 0, out
    assert "Unable to contact slurm controller" in out, out
    assert names_the_job(out, "train", f"output: {linear}", "Unable to contact slurm controller"), out


def test_check_reports_an_unreachable_controller_at_once_in_slurms_own_words(slurm_cluster, tmp_path, monkeypatch):
    """`vitpeft check` with the controller's port unanswered (SLURM's default MessageTimeout: sinfo retries 9 s)."""
    from vitpeft.cli.check import run_checks

    dead = tmp_path / "dead.conf"
    dead.write_text(re.sub(r"(?m)^SlurmctldHost=.*$", "SlurmctldHost=nowhere(127.0.0.1)\nSlurmctldPort=6999",
                           Path("/etc/slurm/slurm.conf").read_text()))
    monkeypatch.setenv("SLURM_CONF", str(dead))
    cfg_path = slurmctl.write_config(slurmctl.make_project(tmp_path / "project"), config())
    profile = REPO / "slurm" / "config.yaml"
    run_checks(cfg_path, profile)  # imports what the checks use, so the timing below is SLURM's part
    started = time.monotonic()
    findings = [finding.line() for finding in run_checks(cfg_path, profile) if "slurm" in finding.what]
    assert time.monotonic() - started < 3
    assert findings == [f"FAIL  slurm controller: unreachable (scontrol ping: Slurmctld(primary) at nowhere is DOWN); "
                        f"start slurmctld, or check SlurmctldHost in {dead}"]
    monkeypatch.delenv("SLURM_CONF")  # the live controller: its partitions are read again
    live = [finding.line() for finding in run_checks(cfg_path, profile) if finding.what == "slurm partition"]
    assert len(live) == 1 and live[0].startswith("ok    slurm partition: none set in the profile: the cluster's "
                                                 "default '"), live


def test_the_time_limit_warning_signal_reaches_training_which_resumes(prepared_project):
    """The profile's `--signal=USR1@<s>` (step form, no "B:") reaches the training process under the plugin's srun.

    A 3-minute limit with the warning 90 s before it (the shortest lead planning accepts
    for that runtime: half of each attempt trains), on a run too long to finish: the job
    gets SIGUSR1 about a minute and a half in, training saves a checkpoint
    and exits 75, Snakemake resubmits it, and the new job resumes at that step.
    Only the lead time differs from the profile (300 s).
    """
    project, _ = prepared_project
    cfg = config()
    cfg["experiments"] = [exp for exp in cfg["experiments"] if exp["name"] == CANCELLED]
    cfg["experiments"][0].setdefault("train", {}).update(steps=1_000_000, checkpoint_every=20, log_every=1000,
                                                         val_every=1_000_000)
    cfg["resources"]["train"]["runtime"] = 3
    cfg_path = slurmctl.write_config(project, cfg)
    run = run_of(slurmctl.plan_of(cfg_path), CANCELLED)
    profile = yaml.safe_load((REPO / "slurm" / "config.yaml").read_text())
    assert profile["set-resources"]["train"]["slurm_extra"] == "'--signal=USR1@300'"

    snakemake_log = project.parent / "signal.log"
    train_log = project / "logs" / NAME / "train" / DATASET / CANCELLED / f"seed0-{run.train.key}.log"
    proc = slurmctl.start(
        [slurmctl.BIN / "snakemake", run.train.path, "--profile", "slurm",
         "--configfile", cfg_path, *FAST_POLL, "--set-resources", "train:slurm_extra='--signal=USR1@90'"],
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
    wildcards = f"{DATASET}_{CANCELLED}_0_{run.train.key}"
    train_jobs = [job for job, what in slurmctl.submissions(log).items() if what == ("train", wildcards)]
    assert len(train_jobs) >= 2 and f"SLURM-job '{train_jobs[0]}' failed" in log, log
    # exited (75) after the warning, not killed at the limit
    assert slurmctl.squeue_states()[train_jobs[0]][0] == "FAILED"


def test_when_snakemake_itself_dies_its_job_ends_and_the_readmes_steps_restart_without_redoing_it(prepared_project):
    """README, "When Snakemake itself stops": the snakemake process is killed (SIGKILL) while its training job
    runs. SLURM runs the job to its end and the run appears whole; the next snakemake stops on the lock until
    --unlock; then the same command plans what is left, not that training (its job recorded its own end)."""
    project, _ = prepared_project
    cfg = config()
    cfg["experiments"] = [exp for exp in cfg["experiments"] if exp["name"] == CANCELLED]
    cfg_path = slurmctl.write_config(project, cfg)
    plan = slurmctl.plan_of(cfg_path)
    run, victim = run_of(plan, CANCELLED), comment("train", train_wildcards(plan, CANCELLED))
    head = slurmctl.start([slurmctl.BIN / "snakemake", "--profile", "slurm", "--configfile", cfg_path, *FAST_POLL, "all"],
                          cwd=project, log_path=project.parent / "head.log")
    try:
        job = slurmctl.wait_for(lambda: next((job for job, (state, note) in slurmctl.squeue_states().items()
                                              if state == "RUNNING" and note == victim), None), 600,
                                "the training job to run")
    finally:
        os.killpg(head.pid, signal.SIGKILL)  # the head alone: its SLURM job is SLURM's
        head.wait()
    slurmctl.wait_for(lambda: slurmctl.squeue_states().get(job, ("",))[0] == "COMPLETED", 900,
                      "the orphaned training job to finish")
    assert (project / run.train.path / "trainable.safetensors").is_file()

    locked = slurmctl.snakemake(project, "--profile", "slurm", "--configfile", cfg_path, *FAST_POLL, "all",
                                timeout=300, check=False)
    assert locked.returncode != 0 and "cannot be locked" in locked.stdout, locked.stdout
    slurmctl.snakemake(project, "--unlock", "--configfile", cfg_path, timeout=300)
    left = slurmctl.scheduled(project, cfg_path, "--profile", "slurm")
    assert ("train", f"exp={CANCELLED}") not in left, left
    assert left[("eval_target", f"exp={CANCELLED}")] == left[("eval_source", f"exp={CANCELLED}")] == 1, left


# ---------------------------------------------------------------- every long job gets the warning signal


RESTARTED_WHOLE = {  # cluster jobs that need no warning: short, and written whole or not at all, so a retry redoes them
    "prepare_target": "decodes one target dataset once (minutes); a retry decodes it again",
    "prepare_imagenet_shard": "one ImageNet shard (resources.shard: 20 min at most); a retry redoes that shard",
    "subsample_source": "copies a class-balanced subset of the prepared bank (seconds)",
}
PLANNED_JOB = re.compile(r"^rule (\w+):\n(?:    .*\n)*?    resources: (.*)\nShell command: (.*)$", re.M)


def local_rules() -> set:
    """The rules the workflow runs where Snakemake runs (its `localrules:` declarations)."""
    text = "\n".join(path.read_text() for path in [REPO / "Snakefile", *(REPO / "workflow" / "rules").glob("*.smk")])
    return {name for block in re.findall(r"localrules:\n((?:\s+\w+,\n)+)", text) for name in re.findall(r"(\w+),", block)}


def test_every_rule_sent_to_slurm_gets_the_warning_signal_and_resumes_from_it(tmp_path):
    """The profile's plan of a study with every kind of job (the continual study with a curve and interpolation):
    each job that goes to SLURM is warned 300 s before its time limit and its command resumes (--resume-dir),
    unless it is a short one a retry redoes whole. A new rule that forgets the profile fails here."""
    project = slurmctl.make_project(tmp_path / "project")
    cfg = yaml.safe_load((REPO / "config" / "continual.yaml").read_text())
    cfg.update(curve={"steps": [0, 10, 100]}, interpolation={"enabled": True})
    config = slurmctl.write_config(project, cfg, "everything.yaml")
    out = slurmctl.snakemake(project, "-n", "all", "--profile", "slurm", "--configfile", config, timeout=300).stdout
    local = local_rules()
    planned = PLANNED_JOB.findall(out)
    assert len(planned) == sum(slurmctl.parse_dry_run(out).values())  # every job (`all` too, a local rule)
    sent = {}
    for rule, resources, command in planned:
        if rule not in local:
            sent.setdefault(rule, []).append((resources, command))
    long = set(sent) - set(RESTARTED_WHOLE)
    assert long == {"train", "train_step", "eval_target", "eval_target_pretrained", "extract_features", "eval_source",
                    "eval_source_pretrained", "eval_curve", "eval_interpolation", "eval_wise", "eval_step", "route"}, sorted(sent)
    for rule, jobs in sent.items():
        for resources, command in jobs:
            warned = "slurm_extra=--signal=USR1@300" in resources
            assert warned == (rule in long), (rule, resources)
            assert ("--resume-dir " in command) == (rule in long), (rule, command)
    profile = yaml.safe_load((REPO / "slurm" / "config.yaml").read_text())["set-resources"]
    assert set(profile) == long  # no rule left out, no stale name
    assert all(signal_lead.config_group(rule) for rule in profile)  # each runtime is checked against the lead


# ---------------------------------------------------------------- GPU requests


SBATCH_CALL = re.compile(r"^sbatch call: (sbatch .*)$", re.M)


def sbatch_calls(log: str) -> dict:
    """{job comment: [the sbatch arguments of each submission of that job]} from `snakemake --verbose` output."""
    calls = {}
    for call in SBATCH_CALL.findall(log):
        args = shlex.split(call)
        calls.setdefault(args[args.index("--comment") + 1], []).append(args)
    return calls


ATTEMPT = re.compile(r"^=== attempt started \S+ on \S+ \(SLURM job (\d+)", re.M)


def test_the_node_offers_a_gpu_like_a_gpu_cluster(slurm_cluster):
    nodes = subprocess.run(["scontrol", "show", "node"], text=True, capture_output=True, check=True).stdout
    assert re.search(r"\bGres=gpu:1\b", nodes), nodes


def test_a_job_given_a_gpu_that_torch_cannot_see_fails_at_once_naming_why(cluster_run, tmp_path):
    """`resources.train.gpu: 1` and `resources.evaluate.gpu: 1` make the plugin (2.8, utils.set_gres_string)
    add `--gpus=1` to the sbatch call of every training and evaluation job, beside the rule's CPUs.

    The study is the module run's with GPUs asked for (resources are in no key, so the plan is
    the same); its data, caches and lora_r4's run are there, linear is not trained: the jobs
    ready to go are linear's training, lora_r4's two evaluations and the untouched backbone's
    two. The node's GPU is a stand-in (no CUDA): SLURM grants it (CUDA_VISIBLE_DEVICES=0) and
    every job, asked by its rule for `--device cuda`, fails before writing anything, with one
    line that names the node, the grant, torch's CUDA build, the driver and the fix. One retry:
    the rule's log keeps both attempts.
    """
    project = copy_data(cluster_run, tmp_path)
    cfg = config()
    for group in ("train", "evaluate"):
        cfg["resources"][group]["gpu"] = 1
    cfg_path = slurmctl.write_config(project, cfg)
    plan = slurmctl.plan_of(cfg_path)
    assert plan.report.key == cluster_run["plan"].report.key, "the GPU count changed a key"
    trained = run_of(plan, CANCELLED)
    shutil.copytree(cluster_run["project"] / trained.train.path, project / trained.train.path)

    result = slurmctl.snakemake(project, "--profile", "slurm", "--configfile", cfg_path, *FAST_POLL, "--verbose",
                                "--retries", "1", "all", timeout=600, check=False)
    out = result.stdout
    calls = sbatch_calls(out)
    values = f"{DATASET}_{CANCELLED}_0"
    ready = {
        comment("train", train_wildcards(plan, "linear")),
        comment("eval_target", f"{values}_{trained.target.key}"),
        comment("eval_source", f"{values}_{trained.source.key}"),
        comment("eval_target_pretrained", f"{DATASET}_{plan.pretrained_target[DATASET].key}"),
        comment("eval_source_pretrained", ""),
    }
    assert set(calls) == ready, (set(calls), slurmctl.tail(out))
    for job, submissions in calls.items():
        assert len(submissions) == 2, (job, submissions)  # the first attempt and its retry
        for args in submissions:
            assert "--gpus=1" in args and "--cpus-per-task=1" in args, (job, args)
            assert "--signal=USR1@300" in args, (job, args)  # training and evaluations alike
    assert result.returncode != 0, out

    linear = run_of(plan, "linear")
    log = (project / "logs" / NAME / "train" / DATASET / "linear" / f"seed0-{linear.train.key}.log").read_text()
    attempts = ATTEMPT.findall(log)
    assert len(attempts) == 2 and attempts[0] != attempts[1], log
    errors = [line for line in log.splitlines() if "error:" in line]
    assert len(errors) == 2, log  # one line per attempt, nothing else
    for line in errors:
        assert line.startswith("vitpeft train: error: --device cuda was asked for, but torch sees no CUDA device"), line
        for fact in ("node ", "CUDA_VISIBLE_DEVICES='0'", "SLURM GPUs on node: 1", "built for CUDA",
                     "NVIDIA driver", "Fix: "):
            assert fact in line, (fact, line)
    # nothing written, nothing counted as done: the same jobs are planned again
    assert not (project / linear.train.path).exists()
    assert not list((project / ".resume").glob("linear-*"))
    for node in (trained.target, trained.source, plan.pretrained_source, plan.pretrained_target[DATASET]):
        assert not (project / node.path).exists(), node.path
    again = slurmctl.scheduled(project, cfg_path)
    assert {rule for rule, _ in again} >= {"train", "eval_target", "eval_source", "eval_target_pretrained",
                                           "eval_source_pretrained"}, again
