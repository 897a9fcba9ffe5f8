"""Where `make demo`'s time goes, per rule: a fresh clone of a revision runs the demo workflow, timed.

    python benchmarks/demo_time.py --rev HEAD --label warm             # writes benchmarks/results/demo-time-warm.json
    python benchmarks/demo_time.py --rev HEAD --label cold --cold      # every job a fresh process (before `vitpeft warm`)
    python benchmarks/demo_time.py --rev HEAD --label nopin --no-pin   # with reproducibility.cpu_pin: false

Per rule: jobs, job-seconds (Snakemake's benchmark files: each job's wall time),
and how much of it vitpeft itself measured inside the job (training's loop,
`wall_seconds`; an evaluation's `seconds`, from its start to its scores). The
rest of a job is process start-up (Python, torch, timm) and what vitpeft does
before and after it measures (reading the model, writing files). The workflow's
wall time is what a user waits for: `vitpeft warm snakemake all --cores 2 ...`, as
`make demo` runs it (every job forked from one process that loaded torch once),
or with --cold plain `snakemake all --cores 2 ...` (every job a fresh process).
Beside wall times, which another load on the machine stretches, the CPU seconds
of every process the workflow ran (Snakemake, jobs, a warm server), which it
barely changes.
"""

import argparse
import csv
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def run_demo(rev: str, pin: bool, cores: int, warm: bool) -> tuple[Path, float, float]:
    """A fresh clone of `rev` with the demo run in it; returns the clone, the workflow's wall seconds and the
    CPU seconds of every process it ran (Snakemake, the jobs, a warm server: all reaped descendants)."""
    clone = Path(tempfile.mkdtemp(prefix="demo-time-")) / "vitpeft"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    subprocess.run(["git", "-C", str(clone), "checkout", "-q", rev], check=True)
    config = clone / "config" / "demo.yaml"
    if not pin:
        config.write_text(config.read_text() + "\nreproducibility: {cpu_pin: false}\n")
    env = {"PATH": f"{BIN}:/usr/bin:/bin", "PYTHONPATH": str(clone / "src"), "HOME": str(Path.home())}
    started, cpu = time.monotonic(), _children_cpu()
    command = [BIN / "snakemake", "all", "--cores", str(cores), "--configfile", "config/demo.yaml"]
    subprocess.run([BIN / "vitpeft", "warm", *command] if warm else command,
                   cwd=clone, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return clone, time.monotonic() - started, _children_cpu() - cpu


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def inner_seconds(clone: Path, rule: str, tsv: Path) -> float | None:
    """What vitpeft measured inside the job whose benchmark file is `tsv` (None where it measures nothing)."""
    results = clone / "results" / "demo"
    rel = tsv.relative_to(results / "benchmarks" / rule).with_suffix("")
    if rule == "train":
        summary = results / "runs" / rel / "summary.json"
        return json.loads(summary.read_text())["wall_seconds"] if summary.is_file() else None
    column = {"eval_target": "target", "eval_source": "source", "eval_curve": "curve"}.get(rule)
    if column is None:
        return None
    if len(rel.parts) != 3:
        return None  # the untouched backbone's scores: no run folder
    dataset, exp, stem = rel.parts
    seed, key = stem.split("-", 1)
    metrics = results / "metrics" / dataset / exp / seed / f"{column}-{key}.json"
    return json.loads(metrics.read_text()).get("seconds") if metrics.is_file() else None


def per_rule(clone: Path) -> dict:
    rules = defaultdict(lambda: {"jobs": 0, "job_seconds": 0.0, "inner_seconds": 0.0})
    bench = clone / "results" / "demo" / "benchmarks"
    for tsv in sorted(bench.rglob("*.tsv")):
        rule = tsv.relative_to(bench).parts[0]
        rule = rule.split("-")[0] if rule.endswith(".tsv") else rule
        with open(tsv) as handle:
            row = next(csv.DictReader(handle, delimiter="\t"))
        entry = rules[rule]
        entry["jobs"] += 1
        entry["job_seconds"] += float(row["s"])
        inner = inner_seconds(clone, rule, tsv) if tsv.parent != bench else None
        entry["inner_seconds"] += inner or 0.0
    return {rule: {k: round(v, 1) if isinstance(v, float) else v for k, v in entry.items()}
            for rule, entry in sorted(rules.items())}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rev", default="HEAD", help="git revision to clone and run (default HEAD)")
    parser.add_argument("--label", required=True, help="names the JSON: benchmarks/results/demo-time-LABEL.json")
    parser.add_argument("--no-pin", action="store_true", help="reproducibility.cpu_pin: false")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--cold", action="store_true", help="every job a fresh process (no `vitpeft warm`)")
    args = parser.parse_args(argv)
    rev = subprocess.run(["git", "-C", str(REPO), "rev-parse", args.rev], capture_output=True, text=True,
                         check=True).stdout.strip()
    clone, wall, cpu = run_demo(rev, not args.no_pin, args.cores, not args.cold)
    rules = per_rule(clone)
    table = (clone / "results" / "demo" / "table.csv").read_text()
    record = {
        "rev": rev, "label": args.label, "pin": not args.no_pin, "warm": not args.cold, "cores": args.cores,
        "machine": f"{platform.processor() or platform.machine()}, {_cpu_model()}",
        "workflow_wall_seconds": round(wall, 1),
        "workflow_cpu_seconds": round(cpu, 1),
        "job_seconds": round(sum(r["job_seconds"] for r in rules.values()), 1),
        "jobs": sum(r["jobs"] for r in rules.values()),
        "rules": rules, "table_csv": table,
    }
    out = REPO / "benchmarks" / "results" / f"demo-time-{args.label}.json"
    out.write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps({k: v for k, v in record.items() if k not in ("rules", "table_csv")}, indent=1))
    print(f"wrote {out} (clone kept at {clone})")
    return 0


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            return next(line.split(":", 1)[1].strip() for line in handle if line.startswith("model name"))
    except (OSError, StopIteration):
        return "unknown CPU"


if __name__ == "__main__":
    sys.exit(main())
