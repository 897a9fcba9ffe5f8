"""What the optional augmentation policies cost: training throughput and the ops alone.

    python benchmarks/augment_cost.py            # CPU, one thread: a few minutes

Training: the tiny ViT of `throughput.py --scale small` (32x32 images, batch
32), one step as vitpeft trains (crop/flip, policy, normalise, forward,
cross-entropy, backward, SGD), full fine-tuning and linear probing (the
cheapest step, where augmentation weighs most). Policies are measured in
interleaved rounds and the median kept, since the machine is shared; on CPU
the process's CPU time is reported beside wall time (with one thread it counts
the work done, whatever else the machine runs).
The ops alone: milliseconds per batch of 32 at 32x32 and 224x224 for each
policy and for each op of the tables. Writes
benchmarks/results/augment-cost-<device>.json. A benchmark: nothing asserts a speed.
"""

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vitpeft.data import augment
from vitpeft.models import backbone
from vitpeft.methods import registry

# throughput.py --scale small's model (kept in step by hand: importing it pulls the whole training stack)
SMALL_MODEL = {
    "name": "vit_base_patch16_224", "img_size": 32,
    "kwargs": {"patch_size": 4, "embed_dim": 64, "depth": 12, "num_heads": 2},
}
BATCH = 32
MEAN = STD = (0.5, 0.5, 0.5)  # the public code's normalisation

POLICIES = {
    "default": augment.DEFAULT_POLICY,
    "rand_augment_n2_m9": {"rand_augment": {"n": 2, "m": 9}, "trivial_augment": False, "erasing": 0.0},
    "trivial_augment": {"rand_augment": {"n": 0, "m": 9}, "trivial_augment": True, "erasing": 0.0},
    "erasing_p0.25": {"rand_augment": {"n": 0, "m": 9}, "trivial_augment": False, "erasing": 0.25},
}


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def uint8_images(n, size, device, seed=0):
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)).to(device)


class Step:
    """One training step as train.Run.train_step takes it, with the policy between crop and normalise."""

    def __init__(self, method, device):
        self.model = backbone.build_model(SMALL_MODEL, 100, device)
        registry.apply(self.model, method, {})
        self.model.train()
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.SGD(params, lr=0.001, momentum=0.9)
        self.mean = torch.tensor(MEAN, device=device)
        self.std = torch.tensor(STD, device=device)
        self.images = uint8_images(2048, 32, device)
        self.labels = torch.randint(0, 100, (2048,), generator=torch.Generator().manual_seed(0)).to(device)

    def __call__(self, step, policy, generator):
        indices = torch.arange(step * BATCH, (step + 1) * BATCH, device=self.labels.device) % len(self.labels)
        x = augment.random_resized_crop_flip(self.images[indices], SMALL_MODEL["img_size"], generator=generator)
        x = augment.apply_policy(x, policy, generator, erase_value=self.mean)
        x = augment.normalize(x, self.mean, self.std)
        loss = F.cross_entropy(self.model(x), self.labels[indices])
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()


def clocks():
    return time.perf_counter(), time.process_time()


def train_img_per_s(step_fn, policy, steps, warmup, device) -> tuple[float, float]:
    """Images per wall second and per CPU second of the process."""
    generator = torch.Generator(device)
    for i in range(warmup + steps):
        if i == warmup:
            sync(device)
            wall, cpu = clocks()
        generator.manual_seed(i)
        step_fn(i, policy, generator)
    sync(device)
    wall_end, cpu_end = clocks()
    return steps * BATCH / (wall_end - wall), steps * BATCH / (cpu_end - cpu)


def ms_per_call(fn, reps, device) -> tuple[float, float]:
    """Median wall and CPU milliseconds of fn() over reps calls (after one warm-up)."""
    fn()
    walls, cpus = [], []
    for _ in range(reps):
        sync(device)
        wall, cpu = clocks()
        fn()
        sync(device)
        wall_end, cpu_end = clocks()
        walls.append(1000 * (wall_end - wall))
        cpus.append(1000 * (cpu_end - cpu))
    return statistics.median(walls), statistics.median(cpus)


def policy_ms(size, reps, device) -> dict:
    """apply_policy alone on a cropped float batch of 32, and the crop/flip/normalise it sits between."""
    images = uint8_images(BATCH, 32, device, seed=1)
    generator = torch.Generator(device).manual_seed(0)
    mean = torch.tensor(MEAN, device=device)
    x = augment.random_resized_crop_flip(images, size, generator=generator)
    result = {"crop_flip_normalize": ms_per_call(
        lambda: augment.normalize(augment.random_resized_crop_flip(images, size, generator=generator), mean, mean),
        reps, device)}
    for name, policy in POLICIES.items():
        result[name] = ms_per_call(lambda: augment.apply_policy(x, policy, generator, erase_value=mean), reps, device)
    return result


def op_ms(size, reps, device) -> dict:
    """Each table op on the whole batch of 32 (TrivialAugmentWide's middle bin, positive sign)."""
    x = augment.random_resized_crop_flip(uint8_images(BATCH, 32, device, seed=2), size)
    table, _ = augment.magnitude_table("trivial_augment", size, size, x.device)
    result = {}
    for row, (name, op) in enumerate(augment.OPS.items()):
        magnitudes = table[row, augment.NUM_BINS // 2].expand(BATCH)
        result[name] = ms_per_call(lambda: op(x, magnitudes), reps, device)
    return result


def device_label(device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
                 platform.machine())
    return f"CPU ({model}, {torch.get_num_threads()} thread(s), machine shared with other jobs)"


def rounded(d: dict, digits: int) -> dict:
    return {k: round(v, digits) for k, v in d.items()}


def split(pairs: dict, digits: int) -> dict:
    """{name: (wall, cpu)} -> {"wall": {name: wall}, "cpu": {name: cpu}}."""
    return {clock: rounded({k: v[i] for k, v in pairs.items()}, digits) for i, clock in enumerate(("wall", "cpu"))}


def slowdown_pct(rates: dict) -> dict:
    return rounded({k: 100 * (1 - v / rates["default"]) for k, v in rates.items()}, 1)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: the machine is shared)")
    parser.add_argument("--steps", type=int, default=40, help="timed training steps per round")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per policy (median kept)")
    parser.add_argument("--reps", type=int, default=20, help="timed calls per augmentation-only figure")
    parser.add_argument("--out", type=Path, help="JSON path (default benchmarks/results/augment-cost-<device>.json)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    load_before = os.getloadavg()
    train = {}
    for method in ("full", "linear"):
        step_fn = Step(method, device)
        runs = {name: [] for name in POLICIES}
        for _ in range(args.rounds):
            for name, policy in POLICIES.items():
                runs[name].append(train_img_per_s(step_fn, policy, args.steps, 3, device))
        rates = {name: tuple(statistics.median(r[i] for r in rs) for i in (0, 1)) for name, rs in runs.items()}
        by_clock = split(rates, 1)
        train[method] = {
            "img_per_wall_s": by_clock["wall"], "img_per_cpu_s": by_clock["cpu"],
            "slowdown_vs_default_pct_wall": slowdown_pct(by_clock["wall"]),
            "slowdown_vs_default_pct_cpu": slowdown_pct(by_clock["cpu"]),
        }
        print(f"train {method} img per CPU s: {by_clock['cpu']}", flush=True)

    alone = {}
    for size in (32, 224):
        policies, ops = split(policy_ms(size, args.reps, device), 2), split(op_ms(size, args.reps, device), 2)
        alone[f"{size}x{size}"] = {
            "policy_wall_ms": policies["wall"], "policy_cpu_ms": policies["cpu"],
            "op_wall_ms": ops["wall"], "op_cpu_ms": ops["cpu"],
        }
        print(f"augment alone at {size}, CPU ms: {policies['cpu']}", flush=True)

    result = {
        "device": device_label(device), "torch": torch.__version__, "threads": torch.get_num_threads(),
        "date": datetime.date.today().isoformat(), "model": SMALL_MODEL, "batch_size": BATCH,
        "steps_per_round": args.steps, "rounds": args.rounds, "policies": POLICIES,
        "load_average_1_5_15min": {"before": [round(v, 2) for v in load_before],
                                   "after": [round(v, 2) for v in os.getloadavg()]},
        "train": train, "augment_alone_ms_per_batch_of_32": alone,
        "command": "python benchmarks/augment_cost.py " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    out = args.out or Path(__file__).parent / "results" / f"augment-cost-{device.type}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
