"""How long Snakemake takes to plan a study of N experiments (a dry run), for N = 100, 1,000, 3,000.

Each grid is the demo config (one seed, no curve) with its ten experiments
repeated under new names (lr varied, so every run is distinct). The dry run runs in an empty folder, as
on a fresh clone: nothing exists, every job is planned. Writes
benchmarks/results/planning-<machine>.json with the seconds per size and the
seconds per experiment, which stays flat when planning grows linearly.

    python benchmarks/planning.py [--sizes 100 1000 3000] [--repeats 2]
"""

import argparse
import json
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def grid(size: int) -> dict:
    """demo.yaml with one seed and no curve (3 jobs per experiment, as the grid planning was first timed with)."""
    cfg = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
    cfg["seeds"], cfg["curve"] = [0], {"steps": []}
    base = cfg["experiments"]
    cfg["experiments"] = [
        {**base[i % len(base)], "name": f"e{i:05d}", "train": {"lr": 0.01 + i * 1e-6}} for i in range(size)
    ]
    return cfg


def dry_run_seconds(cfg: dict) -> tuple:
    """(wall seconds, jobs planned, CPU seconds of the snakemake process: user + system, which a machine shared
    with other work inflates far less than the wall time)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with tempfile.TemporaryDirectory() as folder:
        config = Path(folder) / "grid.yaml"
        config.write_text(yaml.safe_dump(cfg))
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", folder,
             "-n", "--quiet", "all", "--cores", "1", "--configfile", str(config)],
            capture_output=True, text=True, env=env, check=True,
        )
        seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    total = re.search(r"^total\s+(\d+)", done.stdout + done.stderr, re.MULTILINE)
    return seconds, int(total.group(1)) if total else None, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 3000])
    parser.add_argument("--repeats", type=int, default=2, help="best of this many dry runs per size")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "planning-cpu.json"))
    args = parser.parse_args()
    results = {}
    for size in args.sizes:
        runs = [dry_run_seconds(grid(size)) for _ in range(args.repeats)]
        seconds, cpu = min(run[0] for run in runs), min(run[2] for run in runs)
        results[str(size)] = {"seconds": round(seconds, 2), "cpu_seconds": round(cpu, 2), "jobs": runs[0][1],
                              "ms_per_experiment": round(1000 * seconds / size, 2)}
        print(f"{size:>6} experiments: {seconds:6.2f} s wall, {cpu:6.2f} s CPU, {runs[0][1]} jobs", flush=True)
    record = {
        "what": "snakemake -n all (dry run, fresh folder) on the demo grid (one seed, no curve) repeated to N experiments",
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()},
        "snakemake": subprocess.run([sys.executable, "-m", "snakemake", "--version"], capture_output=True,
                                    text=True).stdout.strip(),
        "sizes": results,
    }
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
