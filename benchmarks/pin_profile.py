"""Where the CPU pin's time goes: the demo's full fine-tuning for a few steps, pinned and not, under torch's profiler.

    python benchmarks/pin_profile.py --demo DIR [--steps 40]     # DIR: a finished demo (a clone where make demo ran)

Each setting runs in its own process (the pin must be set before torch loads), one thread, the seed-0 run's spec
of `full` with its steps cut to --steps (no curve, no validation, no checkpoint inside them). Reports the wall time
of `vitpeft.training.train.train` and the self CPU time and calls of the heaviest ATen ops. Writes
benchmarks/results/pin-profile-cpu.json. A benchmark: nothing asserts a speed.
"""

import argparse
import glob
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OPS = 8  # the heaviest ops kept per setting


def measure(demo: Path, steps: int, pinned: bool) -> dict:
    """One setting, in this process (run by main in a child)."""
    from vitpeft.training import kernels

    if pinned:
        kernels.pin_environment()
    import torch
    import yaml
    from torch.profiler import ProfilerActivity, profile

    from vitpeft.study import spec as spec_lib
    from vitpeft.training.train import train

    if pinned:
        kernels.use(torch.device("cpu"))
    torch.set_num_threads(1)
    spec = yaml.safe_load(open(glob.glob(str(demo / "results/demo/runs/synthetic/full/seed0-*/spec.yaml"))[0]))
    spec = spec_lib.resolve(spec)
    spec["train"].update(steps=steps, curve_steps=[], warmup_steps=max(1, steps // 20), val_every=10**6,
                         checkpoint_every=10**6)
    with tempfile.TemporaryDirectory() as scratch, profile(activities=[ProfilerActivity.CPU]) as prof:
        started = time.perf_counter()
        train(spec, Path(scratch) / "run", Path(scratch) / "resume", device="cpu")
        wall = time.perf_counter() - started
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)[:OPS]
    return {"wall_s": round(wall, 2), "kernels": kernels.record(torch.device("cpu")),
            "ops": {e.key: {"self_cpu_ms": round(e.self_cpu_time_total / 1e3, 1), "calls": e.count,
                            "us_per_call": round(e.self_cpu_time_total / e.count, 1)} for e in events}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", type=Path, required=True, help="a clone where `make demo` finished")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--child", choices=["pinned", "unpinned"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.demo.resolve(), args.steps, args.child == "pinned")))
        return
    found = {}
    for setting in ("pinned", "unpinned"):
        env = {"VITPEFT_CPU_PIN": "1" if setting == "pinned" else "0", "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
        out = subprocess.run([sys.executable, __file__, "--demo", str(args.demo), "--steps", str(args.steps),
                              "--child", setting], env=env, capture_output=True, text=True, check=True).stdout
        found[setting] = json.loads(out.strip().splitlines()[-1])
        print(setting, found[setting]["wall_s"], "s", flush=True)
    record = {"machine": f"{platform.machine()}, {found['pinned']['kernels']['cpu'].get('model')}", "steps": args.steps,
              "threads": 1, **found}
    out = REPO / "benchmarks" / "results" / "pin-profile-cpu.json"
    out.write_text(json.dumps(record, indent=1) + "\n")
    print("wrote", out)


if __name__ == "__main__":
    main()
