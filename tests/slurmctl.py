"""Helpers for the SLURM and DVC tests: a real one-node SLURM, throw-away
copies of the project, Snakemake runs with hard time limits, and a parser for
what `snakemake -n` would run.

Nothing here is mocked: `slurm_cluster` starts the real daemons with
scripts/slurm-up.sh (and fails the test with its output when it cannot), and
every run is the real `snakemake` / `dvc` command line a user would type.
"""

import copy
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the venv's bin: snakemake, dvc, vitpeft

# What a checkout of the project needs to run the workflow (and to be a DVC repo).
PROJECT_FILES = (
    "Snakefile", "workflow", "config", "envs", "slurm", "profiles", "scripts",
    ".gitignore", ".dvcignore", ".dvc/config", ".dvc/.gitignore", "data.dvc", "results.dvc", "cache.dvc",
)


# ---------------------------------------------------------------- processes


def env(**extra) -> dict:
    """The environment of a user with the venv active (SLURM jobs inherit it via --export=ALL)."""
    out = dict(os.environ)
    out["PATH"] = f"{BIN}{os.pathsep}{out.get('PATH', '')}"
    out["DVC_NO_ANALYTICS"] = "1"
    out.pop("SLURM_JOB_ID", None)  # never look like we run inside a job
    out.update({k: str(v) for k, v in extra.items()})
    return out


def run(cmd, cwd, timeout, check=True, **env_extra) -> subprocess.CompletedProcess:
    """Run `cmd` (a list) with stdout+stderr together; kill its whole process group at `timeout`.

    A timeout fails the test with the output so far (a hang is a failure, never a wait).
    """
    proc = subprocess.Popen(
        [str(c) for c in cmd], cwd=cwd, env=env(**env_extra), text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        out, _ = proc.communicate()
        pytest.fail(f"{' '.join(map(str, cmd))} did not finish within {timeout}s:\n{tail(out)}")
    result = subprocess.CompletedProcess(proc.args, proc.returncode, out, None)
    if check and proc.returncode != 0:
        pytest.fail(f"{' '.join(map(str, cmd))} exited {proc.returncode}:\n{tail(out)}")
    return result


def start(cmd, cwd, log_path, **env_extra) -> subprocess.Popen:
    """Start `cmd` in the background, its output going to `log_path`."""
    log = open(log_path, "w")
    return subprocess.Popen(
        [str(c) for c in cmd], cwd=cwd, env=env(**env_extra), text=True,
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )


def kill_group(proc: subprocess.Popen) -> None:
    """Stop a process we started, and its children (the process group we gave it)."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        except ProcessLookupError:
            pass


def tail(text: str, lines: int = 80) -> str:
    return "\n".join((text or "").splitlines()[-lines:])


def wait_for(predicate, timeout: float, what: str, interval: float = 0.5):
    """Poll `predicate` until it returns something truthy; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout}s waiting for {what}")


# ---------------------------------------------------------------- SLURM


def slurm_up(timeout: int = 900, fake_gpus: int = 1) -> str:
    """Start (or find running) the one-node SLURM; fail the test with the script's output if it cannot.

    Its node has `fake_gpus` GPU generic resources backed by stand-in device files (where the
    machine has no NVIDIA GPU): jobs that ask for GPUs are scheduled as on a GPU cluster, and
    torch inside them sees no CUDA, as on a node whose driver is too old for the torch build.
    """
    script = REPO / "scripts" / "slurm-up.sh"
    try:
        proc = subprocess.run(
            ["bash", str(script)], cwd=REPO, env=env(SLURM_FAKE_GPUS=fake_gpus), text=True,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout,
        )
    except subprocess.TimeoutExpired as error:
        pytest.fail(f"scripts/slurm-up.sh did not finish within {timeout}s:\n{error.output or ''}")
    if proc.returncode != 0:
        pytest.fail(f"scripts/slurm-up.sh failed (exit {proc.returncode}); SLURM is required for these tests:\n"
                    f"{proc.stdout}")
    return proc.stdout


def squeue_states(run_uuid: str | None = None) -> dict:
    """{slurm job id: (state, comment)} of jobs SLURM still remembers (MinJobAge), optionally of one Snakemake run."""
    cmd = ["squeue", "--states=all", "--noheader", "--format=%i|%T|%k"]
    if run_uuid:
        cmd += ["--name", run_uuid]
    out = subprocess.run(cmd, text=True, capture_output=True, check=True).stdout
    rows = (line.split("|", 2) for line in out.splitlines() if line.strip())
    return {job: (state, comment) for job, state, comment in rows}


SUBMITTED = re.compile(r"Job \d+ has been submitted with SLURM jobid (\d+) \(log: (.*?)\)\.?$", re.M)
RUN_ID = re.compile(r"SLURM run ID: (\S+)")


def submissions(log: str) -> dict:
    """{SLURM job id: (rule, wildcards)} of the jobs Snakemake reports having submitted, in order.

    The plugin's log path names both: .snakemake/slurm_logs/rule_<rule>[/<wildcard values>]/<id>.log,
    the values joined by "_" in the output pattern's order (train: synthetic_lora_r4_0_<key>).
    """
    found = {}
    for match in SUBMITTED.finditer(log):
        job, path = match.group(1), Path(match.group(2))
        parts = path.parts[path.parts.index("slurm_logs") + 1:-1]
        found[job] = (parts[0].removeprefix("rule_"), parts[1] if len(parts) > 1 else "")
    return found


def run_ids(log: str) -> list[str]:
    return RUN_ID.findall(log)


# ---------------------------------------------------------------- projects


def reduced_demo(name: str, experiments=("linear", "lora_r4"), steps: int = 10, **train) -> dict:
    """config/demo.yaml shrunk to seconds of CPU: fewer experiments, smaller data, model and step counts."""
    cfg = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
    cfg["name"] = name
    cfg["data_dir"], cfg["cache_dir"] = f"data/{name}", f"cache/{name}"
    cfg["seeds"] = [0]
    cfg["curve"] = {"steps": []}
    cfg["interpolation"] = {"enabled": False}  # tests/test_workflow.py runs the demo's interpolation
    cfg["backbone"]["model"]["kwargs"] = {"patch_size": 8, "embed_dim": 16, "depth": 12, "num_heads": 2}
    cfg["synthetic"].update(source_classes=4, target_classes=4, train_per_class=16, test_per_class=8)
    cfg["source"]["k"] = [5]
    cfg["pretrain"].update(steps=5, batch_size=16)
    every = max(1, steps // 2)
    cfg["train"].update(steps=steps, batch_size=16, warmup_steps=2, val_every=every,
                        checkpoint_every=every, log_every=every)
    cfg["train"].update(train)
    for group in cfg["resources"].values():
        group.update(gpu=0, cpus=1, mem_mb=1000)
    by_name = {exp["name"]: exp for exp in cfg["experiments"]}
    missing = [e for e in experiments if e not in by_name]
    assert not missing, f"demo.yaml has no experiments {missing}"
    cfg["experiments"] = [copy.deepcopy(by_name[e]) for e in experiments]
    for exp in cfg["experiments"]:  # the demo's per-row warm-up may exceed the reduced step count
        exp.get("train", {}).pop("warmup_steps", None)
    return cfg


def write_config(project: Path, cfg: dict, filename: str | None = None) -> Path:
    path = project / "config" / (filename or f"{cfg['name']}.yaml")
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def make_project(dest: Path, extra=()) -> Path:
    """A copy of the project's workflow files (what a clone has), without data, results or state."""
    dest.mkdir(parents=True, exist_ok=True)
    for rel in (*PROJECT_FILES, *extra):
        src = REPO / rel
        if not src.exists():
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, target)
    return dest


def plan_of(configfile: Path):
    """The study's plan as the workflow builds it: every job's key and output path."""
    from vitpeft.study import config
    from vitpeft.study.plan import Plan

    return Plan(config.load(configfile))


def snakemake(project: Path, *args, timeout: int = 600, check: bool = True, warm: bool = False, **env_extra):
    """Snakemake in `project`; with warm, under `vitpeft warm` as `make demo` runs it."""
    command = [BIN / "snakemake", *args]
    return run([BIN / "vitpeft", "warm", *command] if warm else command, cwd=project, timeout=timeout, check=check,
               **env_extra)


# ---------------------------------------------------------------- what would run


JOB_HEADER = re.compile(r"^(?:local)?rule (\w+):\s*$")
WILDCARDS = re.compile(r"^\s+wildcards: (.*)$")
STATS_ROW = re.compile(r"^(\w+)\s+(\d+)\s*$")


def parse_dry_run(output: str) -> Counter:
    """Jobs in `snakemake -n` output as a Counter of (rule, wildcards) with wildcards 'k=v,...' ('' if none).

    Cross-checked against the "Job stats" table Snakemake prints, so a change in
    the output format fails loudly instead of reading as "nothing to do".
    """
    jobs = Counter()
    current = None
    for line in output.splitlines():
        header = JOB_HEADER.match(line)
        if header:
            if current:
                jobs[current] += 1
            current = (header.group(1), "")
            continue
        if current:
            wildcards = WILDCARDS.match(line)
            if wildcards:
                current = (current[0], short_wildcards(wildcards.group(1)))
            elif line and not line.startswith((" ", "\t")):
                jobs[current] += 1
                current = None
    if current:
        jobs[current] += 1

    stats = Counter()
    if "Job stats:" in output:
        table = output.split("Job stats:", 1)[1].splitlines()
        for line in table[3:]:  # header, rule, dashes
            row = STATS_ROW.match(line.strip())
            if not row:
                break
            if row.group(1) != "total":
                stats[row.group(1)] = int(row.group(2))
    by_rule = Counter()
    for (rule, _), n in jobs.items():
        by_rule[rule] += n
    if by_rule != stats:
        raise AssertionError(
            f"could not parse the dry run: job blocks {dict(by_rule)} vs job stats {dict(stats)}:\n{output}"
        )
    if not jobs and "Nothing to be done" not in output:
        raise AssertionError(f"dry run shows no jobs but does not say 'Nothing to be done':\n{output}")
    return jobs


def short_wildcards(text: str) -> str:
    """'dataset=synthetic, exp=linear, seed=0, key=...' -> 'exp=linear' (keys and the one dataset left out)."""
    pairs = dict(pair.strip().split("=", 1) for pair in text.split(",") if "=" in pair)
    return f"exp={pairs['exp']}" if "exp" in pairs else ""


def scheduled(project: Path, configfile: Path, *extra, timeout: int = 300) -> Counter:
    """What `snakemake -n all` would run in `project` with `configfile`."""
    result = snakemake(project, "-n", "--configfile", configfile, "--cores", "1", *extra, "all", timeout=timeout)
    return parse_dry_run(result.stdout)


def jobs_of(*pairs) -> Counter:
    """Counter of (rule, 'exp=<name>') / (rule, '') from ('train', 'linear'), ('report', None), ..."""
    return Counter((rule, f"exp={exp}" if exp else "") for rule, exp in pairs)
