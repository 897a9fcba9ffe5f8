"""What `prepare-target` costs per image on a dataset of photos (CPU only).

    python benchmarks/targets_decode.py                 # 400 photo-like JPEGs: about a minute
    python benchmarks/targets_decode.py --images 100    # a quick look

Food-101 (101,000 images, longest side 512) is the largest target. On an
ImageFolder of photo-like JPEGs of such sizes (smooth colour fields plus
texture, quality 90: noise would compress unlike photos), measures:

- decode_cpu_ms_per_image: CPU ms of vitpeft.data.targets._decode (PIL open, RGB,
  bicubic squash to --size) in this process, median of rounds;
- pool_start_s: wall seconds from starting 2 spawned workers to their first
  decoded image (what a pool costs before it saves anything; median of rounds);
- end_to_end: the real `targets.prepare` (listing through torchvision's
  ImageFolder, decoding, writing the store) with 1 and with 2 worker
  processes: wall seconds and CPU seconds (parent + workers) per image;
- projection: Food-101's decoding CPU time from the per-image figure, and its
  stored size (N x size x size x 3 bytes).

Writes benchmarks/results/targets-decode-cpu.json. A benchmark, not a test:
nothing asserts a speed.
"""

import argparse
import datetime
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

FOOD101_IMAGES = 101_000
SIZES = [(512, 384), (384, 512), (512, 512), (512, 341), (512, 288)]  # Food-101: longest side 512


def photo_like(rng, width, height) -> Image.Image:
    """Smooth colour fields (a coarse grid upsampled) with finer texture on top."""
    coarse = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize((width, height), Image.BICUBIC)
    texture = rng.normal(0, 12, (height // 4, width // 4, 3))
    texture = np.asarray(Image.fromarray(np.uint8(np.clip(texture + 128, 0, 255))).resize((width, height)), float) - 128
    return Image.fromarray(np.uint8(np.clip(np.asarray(coarse, float) + texture, 0, 255)))


def write_folder(root: Path, images: int, classes: int = 5) -> list:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(images):
        split = "test" if i % 4 == 3 else "train"
        path = root / split / f"class{i % classes}" / f"{i:05d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        photo_like(rng, *SIZES[i % len(SIZES)]).save(path, quality=90)
        paths.append(str(path))
    return paths


def cpu_seconds(who) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def decode_ms(paths: list, size: int, rounds: int) -> list:
    from vitpeft.data.targets import _decode

    per_round = []
    for _ in range(rounds):
        start = cpu_seconds(resource.RUSAGE_SELF)
        for path in paths:
            _decode(path, size)
        per_round.append(1000 * (cpu_seconds(resource.RUSAGE_SELF) - start) / len(paths))
    return per_round


def pool_start_s(path: str, size: int, rounds: int) -> list:
    from vitpeft.data.targets import _mapper

    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        with _mapper(2, 2) as mapper:
            list(mapper(_decode_one, [(path, size)] * 2))
        times.append(time.perf_counter() - start)
    return times


def _decode_one(job):
    from vitpeft.data.targets import _decode

    return _decode(*job).shape


def end_to_end(root: Path, out: Path, size: int, workers: int, images: int) -> dict:
    from vitpeft.data import targets

    cpu = cpu_seconds(resource.RUSAGE_SELF) + cpu_seconds(resource.RUSAGE_CHILDREN)
    wall = time.perf_counter()
    targets.prepare("imagefolder", root, out, size=size, workers=workers)
    wall = time.perf_counter() - wall
    cpu = cpu_seconds(resource.RUSAGE_SELF) + cpu_seconds(resource.RUSAGE_CHILDREN) - cpu
    return {"workers": workers, "wall_s": round(wall, 2), "cpu_ms_per_image": round(1000 * cpu / images, 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "targets-decode-cpu.json"))
    args = parser.parse_args()

    import torchvision  # noqa: F401  (imported once up front: the listing needs it, and its import is not decoding)

    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch) / "photos"
        paths = write_folder(root, args.images)
        per_round = decode_ms(paths, args.size, args.rounds)
        starts = pool_start_s(paths[0], args.size, args.rounds)
        runs = [end_to_end(root, Path(scratch) / f"out{w}", args.size, w, args.images) for w in (1, 2)]
    ms = statistics.median(per_round)
    result = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": f"{os.cpu_count()} CPU cores (shared with other jobs), {platform.machine()}",
        "python": platform.python_version(),
        "images": args.images,
        "image_sizes": [f"{w}x{h}" for w, h in SIZES],
        "stored_size": args.size,
        "decode_cpu_ms_per_image": round(ms, 2),
        "decode_cpu_ms_rounds": [round(v, 2) for v in per_round],
        "pool_start_s": round(statistics.median(starts), 2),
        "pool_start_s_rounds": [round(v, 2) for v in starts],
        "end_to_end": runs,
        "projection": {
            "food101_decode_cpu_minutes": round(FOOD101_IMAGES * ms / 1000 / 60, 1),
            "food101_stored_gb": round(FOOD101_IMAGES * args.size * args.size * 3 / 1e9, 1),
            "arithmetic": f"{FOOD101_IMAGES} images x {ms:.2f} CPU ms; {FOOD101_IMAGES} x {args.size}^2 x 3 bytes",
        },
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
