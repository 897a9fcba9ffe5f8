"""Does the optimised training path learn the same as the plain one?

    python benchmarks/loss_parity.py --scale small --steps 60     # CPU: bf16 autocast vs fp32
    python benchmarks/loss_parity.py --steps 300                  # GPU: bf16 + torch.compile vs fp32 eager

Both runs see the same batches and augmentations (vitpeft's seeded streams)
and start from the same weights, so their loss curves differ only by numerics.
Prints both curves (means over windows of --window steps) and the largest
window difference, and writes them as JSON under benchmarks/results/.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from throughput import SCALES, synthetic_cifar  # noqa: E402

from vitpeft.study import spec as spec_lib
from vitpeft.training import draws, train  # noqa: E402


def learnable_cifar(n: int, seed: int = 0):
    """Random images whose class shifts the mean colour, so the loss really falls."""
    images, labels = synthetic_cifar(n, seed)
    labels = labels % 10
    tint = (np.stack([labels * 25, 250 - labels * 25, (labels * 77) % 256], axis=1) // 2).astype(np.uint8)
    return (images // 2 + tint[:, None, None, :]).astype(np.uint8), labels


def losses(scale: dict, steps: int, precision: str, compile_model: bool, device) -> list:
    spec = spec_lib.resolve({
        "name": "parity", "method": "full", "model": scale["model"], "num_classes": 10,
        "data": {"train": "(synthetic, in memory)"},
        "train": {"steps": steps, "batch_size": scale["batch_size"], "warmup_steps": max(1, steps // 10),
                  "lr": 0.01, "precision": precision, "compile": compile_model},
    })
    images, labels = learnable_cifar(max(8 * scale["batch_size"], 2048))
    data = draws.Data(torch.from_numpy(images).to(device), torch.from_numpy(labels).to(device))
    run = train.Run(spec, data, device)
    run.model.train()
    cache, generator, curve = {}, torch.Generator(device), []
    for step in range(steps):
        run.step = step
        generator.manual_seed(draws.derive_seed(0, draws.STREAM_AUGMENT, step))
        indices = draws.batch_indices(step, len(labels), scale["batch_size"], 0, cache, device)
        curve.append(run.train_step(indices, generator))
    run.check_finite()
    return [float(x) for x in torch.stack(curve).cpu()]


def windows(curve: list, size: int) -> list:
    return [float(np.mean(curve[i : i + size])) for i in range(0, len(curve), size)]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", choices=["auto", *SCALES], default="auto")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--window", type=int, default=20)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    scale_name = args.scale if args.scale != "auto" else ("full" if device.type == "cuda" else "small")
    scale = SCALES[scale_name]
    optimised = losses(scale, args.steps, "bf16", device.type == "cuda", device)
    plain = losses(scale, args.steps, "fp32", False, device)
    fast, slow = windows(optimised, args.window), windows(plain, args.window)
    for i, (a, b) in enumerate(zip(fast, slow)):
        print(f"steps {i * args.window:5d}-{(i + 1) * args.window - 1:5d}  optimised {a:.4f}  plain {b:.4f}  diff {a - b:+.4f}")
    worst = max(abs(a - b) for a, b in zip(fast, slow))
    print(f"largest window difference {worst:.4f}; loss fell {slow[0]:.3f} -> {slow[-1]:.3f} (plain)")
    out = args.out or Path(__file__).parent / "results" / f"loss_parity-{scale_name}-{device.type}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu", "torch": torch.__version__,
        "scale": scale_name, "steps": args.steps, "window": args.window,
        "optimised": {"precision": "bf16", "compile": device.type == "cuda", "window_means": fast},
        "plain": {"precision": "fp32", "compile": False, "window_means": slow},
        "largest_window_difference": worst,
    }, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
