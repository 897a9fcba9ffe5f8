"""How far bf16 autocast, fp16 + scaler and torch.compile land from fp32 on the CPU, and what they cost.

    python benchmarks/precision_cpu.py       # CPU, one thread: about a minute (compile: gcc builds kernels)

Trains exactly the runs of tests/test_precision.py (imported from there, so the
figures are those the test's tolerances were set from) and reports, per
setting, the distance ||w - w_fp32|| / ||w_fp32 - w_start|| over the trainable
tensors, and the wall and process CPU time of the fp32 and of the setting's
run (compile's first run includes building its kernels; its gcc children are
not in the CPU time). Writes benchmarks/results/precision-cpu.json. A
benchmark: nothing asserts here.
"""

import datetime
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_precision import SETTINGS, flat, make_spec  # noqa: E402

from vitpeft.methods import registry
from vitpeft.data import store  # noqa: E402
from vitpeft.fileio import write_json  # noqa: E402
from vitpeft.training import model as model_lib  # noqa: E402
from vitpeft.training.train import train  # noqa: E402


def timed_run(spec, root: Path, name: str):
    wall, cpu = time.perf_counter(), time.process_time()
    out = train(spec, root / name, root / ".resume", device="cpu")
    weights = registry.trainable_state(model_lib.trained(spec, out))
    return weights, round(time.perf_counter() - wall, 2), round(time.process_time() - cpu, 2)


def main() -> None:
    torch.set_num_threads(1)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        rng = np.random.default_rng(0)
        store.save(root / "data", rng.integers(0, 256, (48, 32, 32, 3), dtype=np.uint8), np.arange(48) % 4,
                   list("abcd"))
        for name, (method, depth, overrides, _) in SETTINGS.items():
            fp32_spec = make_spec(root / "data", method, depth)
            spec = make_spec(root / "data", method, depth, **overrides)
            start = flat(registry.trainable_state(model_lib.for_training(fp32_spec)))
            fp32, fp32_wall, fp32_cpu = timed_run(fp32_spec, root, f"{name}-fp32")
            weights, wall, cpu = timed_run(spec, root, name)
            distance = ((flat(weights) - flat(fp32)).norm() / (flat(fp32) - start).norm()).item()
            results[name] = {"method": method, "depth": depth, "overrides": overrides, "distance": distance,
                             "fp32_wall_s": fp32_wall, "fp32_cpu_s": fp32_cpu, "wall_s": wall, "cpu_s": cpu}
            print(f"{name}: distance {distance:.3g}, {wall} s wall ({cpu} s CPU) vs fp32 {fp32_wall} s", flush=True)
    record = {
        "device": f"CPU ({platform.machine()}, {os.cpu_count()} cores, shared), torch.set_num_threads(1)",
        "torch": torch.__version__, "date": datetime.date.today().isoformat(),
        "load_average_1min_at_end": round(os.getloadavg()[0], 2),
        "distance": "||w - w_fp32|| / ||w_fp32 - w_start|| over all trainable tensors after the run",
        "settings": results,
    }
    out = Path(__file__).parent / "results" / "precision-cpu.json"
    write_json(out, record)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
