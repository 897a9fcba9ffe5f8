"""What the CPU pin costs per rule: one job of each of the demo's rules, under each pin, CPU seconds.

    python benchmarks/pin_cost.py --demo DIR [--rounds 3]     # DIR: a finished demo (a clone where make demo ran)

Each job runs as its rule runs it (`vitpeft <command>`, OMP_NUM_THREADS=1, a
fresh process, outputs to a scratch folder) under three kernel settings:

    pinned      the pin (vitpeft.training.kernels): MKL's COMPATIBLE branch, ATen AVX2, oneDNN and NNPACK off,
                exp/log/sqrt/erfinv/tanh around MKL's vector math (vitpeft.training.vector_math)
    mkl_vm      the pin with those five left on MKL's vector math (what the replacement costs)
    unpinned    this CPU's own fastest kernels (VITPEFT_CPU_PIN=0)

in interleaved rounds, the median kept. The figure is the CPU time of the
job's process (rusage of the child: one thread, so it counts the work done
whatever else the machine runs; wall time beside it). The jobs are the demo's:
full fine-tuning and LoRA r=8 training (300 steps), and for full fine-tuning's
seed-0 run its target accuracy, source k-NN, curve (5 points) and interpolation
(5 alphas) scores. Writes benchmarks/results/pin-cost-cpu.json. A benchmark:
nothing asserts a speed.
"""

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[1]
# How each setting starts `vitpeft`: the pin's tables changed before main() pins the environment.
SETTINGS = {
    "pinned": "",
    # a stand-in module whose replace() does nothing: importing the real one would load torch before the pin
    "mkl_vm": "import sys, types; sys.modules['vitpeft.training.vector_math'] = types.SimpleNamespace("
              "replace=lambda: None, replaced=lambda: False)",
    "unpinned": "import os; os.environ['VITPEFT_CPU_PIN'] = '0'",
}
KNN = ["--k", "10", "20", "--temperature", "0.07", "--mean", "0.5", "0.5", "0.5", "--std", "0.5", "0.5", "0.5"]


def jobs(demo: Path, scratch: Path) -> dict:
    """rule -> the `vitpeft` arguments of one of the demo's jobs, writing under `scratch`."""
    index = {(row["experiment"], row["seed"]): row for row in _csv(demo / "results/demo/index.csv")}
    full, lora = index[("full", "0")], index[("lora_r8", "0")]
    data = next((demo / "data/demo/synthetic").iterdir())
    subset = next((demo / "cache/demo/subsets").iterdir())
    features = next((demo / "cache/demo/features").iterdir())
    run = demo / full["run"]
    common = ["--device", "cpu", "--spec", f"{run}/spec.yaml", "--run", str(run)]
    sample = ["--bank", f"{subset}/bank", "--queries", f"{subset}/queries", *KNN]
    return {
        "train (full)": ["train", "--device", "cpu", "--spec", f"{run}/spec.yaml", "--out", f"{scratch}/full",
                         "--resume-dir", f"{scratch}/resume"],
        "train (lora_r8)": ["train", "--device", "cpu", "--spec", f"{demo / lora['run']}/spec.yaml", "--out",
                            f"{scratch}/lora", "--resume-dir", f"{scratch}/resume"],
        "eval_target": ["eval-target", *common, "--data", f"{data}/target/test", "--out", f"{scratch}/t.json"],
        "eval_source": ["eval-source", *common, "--bank", f"{data}/source/train", "--queries", f"{data}/source/test",
                        "--pretrained-features", str(features), *KNN, "--out", f"{scratch}/s.json"],
        "eval_curve": ["eval-curve", *common, "--target-data", f"{data}/target/test", *sample,
                       "--out", f"{scratch}/c.json"],
        "eval_interpolation": ["eval-interpolation", *common, "--target-data", f"{data}/target/test", "--alphas",
                               "0", "0.25", "0.5", "0.75", "1", *sample, "--out", f"{scratch}/i.json"],
    }  # fmt: skip


def _csv(path: Path) -> list:
    import csv

    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def timed(setting: str, args: list, cwd: Path) -> tuple[float, float]:
    """(CPU, wall) seconds of one `vitpeft` process under `setting`."""
    code = f"from vitpeft.training import kernels\n{SETTINGS[setting]}\nfrom vitpeft.cli import main\nraise SystemExit(main())"
    before, started = _children_cpu(), time.monotonic()
    subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, check=True, env={"OMP_NUM_THREADS": "1",
                   "PATH": f"{BIN}:/usr/bin:/bin", "HOME": str(Path.home())}, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)  # fmt: skip
    return _children_cpu() - before, time.monotonic() - started


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--demo", type=Path, required=True, help="a folder where the demo finished")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rules", nargs="+", help="only these rules; the others' figures in the JSON stay")
    args = parser.parse_args()
    out = REPO / "benchmarks" / "results" / "pin-cost-cpu.json"
    results = json.loads(out.read_text())["rules"] if args.rules and out.is_file() else {}
    with tempfile.TemporaryDirectory(prefix="pin-cost-") as scratch:
        for rule, command in jobs(args.demo.resolve(), Path(scratch)).items():
            if args.rules and rule not in args.rules:
                continue
            samples = {setting: [] for setting in SETTINGS}
            for _ in range(args.rounds):
                for setting in SETTINGS:
                    samples[setting].append(timed(setting, command, args.demo))
                    subprocess.run(["rm", "-rf", f"{scratch}/full", f"{scratch}/lora", f"{scratch}/resume"])
            results[rule] = {setting: {"cpu_s": round(statistics.median(s[0] for s in runs), 2),
                                       "wall_s": round(statistics.median(s[1] for s in runs), 2)}
                             for setting, runs in samples.items()}  # fmt: skip
            cpu = results[rule]
            out.write_text(json.dumps({"rules": results}, indent=1) + "\n")  # so far: a later --rules run keeps it
            print(f"{rule}: CPU s " + ", ".join(f"{setting} {cpu[setting]['cpu_s']}" for setting in SETTINGS), flush=True)
    record = {"machine": f"{platform.machine()}, {_model()}", "rounds": args.rounds, "threads": 1, "rules": results}
    out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {out}")


def _model() -> str:
    with open("/proc/cpuinfo") as handle:
        return next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), "?")


if __name__ == "__main__":
    main()
