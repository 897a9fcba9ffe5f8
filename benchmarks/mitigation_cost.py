"""What L2-SP and LP-FT cost per training step, beside full fine-tuning, and L2-SP's reference at ViT-B/16.

    python benchmarks/mitigation_cost.py          # CPU, one thread: about a minute

One step as vitpeft trains it (vitpeft.training.train.Run.train_step: crop/flip,
forward, cross-entropy, backward, the L2-SP gradient where there is one, SGD) on
the demo's tiny ViT (depth 12, width 48, 32x32 images, batch 64), for full,
l2sp and lpft in its probe stage and in its second stage. Methods are measured
in interleaved rounds and the median kept (the machine is shared); the CPU time
of the process is given beside wall time (one thread: it counts the work done,
whatever else runs). L2-SP's extra memory is its reference copy of the
backbone: counted on the meta device at ViT-B/16. Writes
benchmarks/results/mitigation-cost-cpu.json. A benchmark: nothing asserts a speed.
"""

import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from vitpeft.data import store
from vitpeft.methods import registry
from vitpeft.study import spec as spec_lib
from vitpeft.training.draws import load_data
from vitpeft.training.train import Run

MODEL = {"name": "vit_base_patch16_224", "img_size": 32,
         "kwargs": {"patch_size": 8, "embed_dim": 48, "depth": 12, "num_heads": 3}}  # the demo's
STEPS, ROUNDS = 10, 5


def spec(data, method, args=None):
    return spec_lib.resolve({
        "name": method, "method": method, "args": args or {}, "model": MODEL, "num_classes": 10,
        "data": {"train": str(data)}, "train": {"steps": 40, "batch_size": 64, "lr": 0.05, "warmup_steps": 2},
    })  # fmt: skip


def timed(run, start):
    """(wall, cpu) seconds per step of STEPS steps from `start`."""
    wall, cpu = time.perf_counter(), time.process_time()
    for step in range(start, start + STEPS):
        run.step = step
        indices = torch.arange(64) % len(run.data.train_y)
        run.train_step(indices, torch.Generator().manual_seed(step))
    return (time.perf_counter() - wall) / STEPS, (time.process_time() - cpu) / STEPS


def main():
    torch.set_num_threads(1)
    folder = Path("/tmp/vitpeft-mitigation-cost")
    rng = np.random.default_rng(0)
    store.save(folder, rng.integers(0, 256, (256, 32, 32, 3), dtype=np.uint8), np.arange(256) % 10,
               [f"c{i}" for i in range(10)], source="random")  # fmt: skip
    cases = {"full": (spec(folder, "full"), 0), "l2sp": (spec(folder, "l2sp"), 0),
             "lpft probe": (spec(folder, "lpft", {"probe_steps": 20}), 0),
             "lpft fine-tuning": (spec(folder, "lpft", {"probe_steps": 20}), 20)}  # fmt: skip
    runs = {name: Run(s, load_data(s, torch.device("cpu")), torch.device("cpu")) for name, (s, _) in cases.items()}
    samples = {name: [] for name in cases}
    for _ in range(ROUNDS):
        for name, (_, start) in cases.items():
            samples[name].append(timed(runs[name], start))
    vit_b = {"method": "l2sp", "args": {}, "model": {"name": "vit_base_patch16_224", "img_size": 224, "kwargs": {}},
             "num_classes": 100}  # fmt: skip
    from vitpeft.models.backbone import HEAD_PREFIX, build_model

    model = build_model(vit_b["model"], 100, device="meta")
    backbone = sum(p.numel() for n, p in model.named_parameters() if not n.startswith(HEAD_PREFIX))
    result = {
        "machine": platform.processor() or platform.machine(), "threads": 1, "steps_per_sample": STEPS,
        "rounds": ROUNDS, "torch": torch.__version__,
        "ms_per_step_wall": {n: round(1000 * statistics.median(w for w, _ in v), 2) for n, v in samples.items()},
        "ms_per_step_cpu": {n: round(1000 * statistics.median(c for _, c in v), 2) for n, v in samples.items()},
        "l2sp_reference_bytes_vit_b16_fp32": 4 * backbone,
        "vit_b16_trainable": registry.count_trainable(vit_b),
    }
    out = Path(__file__).parent / "results" / "mitigation-cost-cpu.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
