"""Throughput of vitpeft's own training step per method, of a reference-style pipeline, and of k-NN.

    python benchmarks/throughput.py                # auto: full scale on a GPU, small on CPU
    python benchmarks/throughput.py --scale small  # tiny ViT on 32x32 images (minutes on 2 CPU cores)

Full scale is the paper's: ViT-B/16 at 224, batch 128, CIFAR-format (32x32
uint8) images upscaled on the device. Writes one JSON under
benchmarks/results/ with the device, torch version and every figure.
A benchmark, not a test: nothing here asserts a speed.
"""

import argparse
import datetime
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
import reference  # noqa: E402

from vitpeft.evaluation import knn
from vitpeft.study import spec as spec_lib
from vitpeft.training import draws, train  # noqa: E402

METHODS = {
    "full": ("full", {}),
    "top3": ("topk", {"k": 3}),
    "linear": ("linear", {}),
    "lora_r8": ("lora", {"r": 8}),
    "block_p3": ("block_expansion", {"p": 3}),
}

SCALES = {
    "full": {
        "model": {"name": "vit_base_patch16_224", "img_size": 224, "kwargs": {}},
        "hf_shape": {"img_size": 224, "patch_size": 16, "width": 768, "depth": 12, "heads": 12},
        "batch_size": 128, "steps": 50, "warmup": 10, "knn_images": 8192, "knn_batch": 1024,
        "bank": 262144, "queries": 16384, "workers": 4,
    },
    "small": {
        "model": {"name": "vit_base_patch16_224", "img_size": 32,
                  "kwargs": {"patch_size": 4, "embed_dim": 64, "depth": 12, "num_heads": 2}},
        "hf_shape": {"img_size": 32, "patch_size": 4, "width": 64, "depth": 12, "heads": 2},
        "batch_size": 32, "steps": 60, "warmup": 5, "knn_images": 1024, "knn_batch": 256,
        "bank": 20000, "queries": 2000, "workers": 2,
    },
}


def method_spec(name: str, scale: dict, steps: int, compile_model: bool) -> dict:
    method, args = METHODS[name]
    return spec_lib.resolve({
        "name": f"bench_{name}", "method": method, "args": args, "model": scale["model"],
        "num_classes": 100, "data": {"train": "(synthetic, in memory)"},
        "train": {"steps": steps, "batch_size": scale["batch_size"], "warmup_steps": 1, "compile": compile_model},
    })


def synthetic_cifar(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), rng.integers(0, 100, n)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_method(name, scale, device, compile_model) -> tuple[float, float | None]:
    """Images/s and peak memory (GiB, CUDA only) of vitpeft's own training step."""
    steps, warmup, batch = scale["steps"], scale["warmup"], scale["batch_size"]
    images, labels = synthetic_cifar(max(4 * batch, 2048))
    data = draws.Data(torch.from_numpy(images).to(device), torch.from_numpy(labels).to(device))
    run = train.Run(method_spec(name, scale, warmup + steps, compile_model), data, device)
    run.model.train()
    cache, generator = {}, torch.Generator(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for step in range(warmup + steps):
        if step == warmup:
            sync(device)
            start = time.perf_counter()
        run.step = step
        generator.manual_seed(step)
        run.train_step(draws.batch_indices(step, len(labels), batch, 0, cache, device), generator)
    sync(device)
    seconds = time.perf_counter() - start
    run.check_finite()
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return steps * batch / seconds, peak


def measure_knn_extract(scale, device) -> float:
    """Feature extraction images/s from a prepared uint8 cache (already at the model's size)."""
    spec = method_spec("linear", scale, 1, False)
    from vitpeft.training import model as model_lib

    backbone = model_lib.pretrained(spec, device)
    size = scale["model"]["img_size"]
    cache = np.random.default_rng(0).integers(0, 256, (scale["knn_images"], size, size, 3), dtype=np.uint8)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    knn.extract(backbone, cache[: scale["knn_batch"]], size, mean, std, scale["knn_batch"], device)  # warm-up
    sync(device)
    start = time.perf_counter()
    knn.extract(backbone, cache, size, mean, std, scale["knn_batch"], device)
    sync(device)
    return len(cache) / (time.perf_counter() - start)


def measure_knn_vote(scale, device) -> float:
    """Queries/s of the weighted k-NN vote against a bank of random unit features."""
    generator = torch.Generator().manual_seed(0)
    width = 768
    bank = torch.nn.functional.normalize(torch.randn(scale["bank"], width, generator=generator), dim=1)
    queries = torch.nn.functional.normalize(torch.randn(scale["queries"], width, generator=generator), dim=1)
    labels = torch.randint(0, 1000, (scale["bank"],), generator=generator)
    start = time.perf_counter()
    knn.knn_predict(bank, labels, queries, num_classes=1000, device=device)
    sync(device)
    return scale["queries"] / (time.perf_counter() - start)


def device_label(device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", choices=["auto", *SCALES], default="auto")
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS))
    parser.add_argument("--no-compile", action="store_true", help="train without torch.compile")
    parser.add_argument("--no-reference", action="store_true", help="skip the reference-style pipeline")
    parser.add_argument("--out", type=Path, help="JSON path (default: benchmarks/results/<scale>-<device>.json)")
    args = parser.parse_args(argv)

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    scale_name = args.scale if args.scale != "auto" else ("full" if device.type == "cuda" else "small")
    scale = SCALES[scale_name]
    compile_model = device.type == "cuda" and not args.no_compile

    result = {
        "device": device_label(device), "torch": torch.__version__, "scale": scale_name,
        "batch_size": scale["batch_size"], "model": scale["model"], "compile": compile_model,
        "date": datetime.date.today().isoformat(), "train_img_per_s": {}, "peak_mem_gib": {},
    }
    for name in args.methods:
        img_per_s, peak = measure_method(name, scale, device, compile_model)
        result["train_img_per_s"][name] = round(img_per_s, 1)
        result["peak_mem_gib"][name] = None if peak is None else round(peak, 2)
        print(f"train {name:9s} {img_per_s:10.1f} img/s" + (f"  peak {peak:.1f} GiB" if peak else ""), flush=True)
    if not args.no_reference:
        images, labels = synthetic_cifar(max(8 * scale["batch_size"], 2048))
        ref = reference.measure(images, labels, scale["hf_shape"], scale["batch_size"], scale["steps"],
                                scale["warmup"], scale["workers"], device)
        result["reference_train_img_per_s"] = round(ref, 1)
        print(f"train reference {ref:10.1f} img/s (HF ViT, eager attention, PIL transforms)", flush=True)
    result["knn_extract_img_per_s"] = round(measure_knn_extract(scale, device), 1)
    result["knn_vote_queries_per_s"] = round(measure_knn_vote(scale, device), 1)
    print(f"k-NN extract {result['knn_extract_img_per_s']:.1f} img/s, vote {result['knn_vote_queries_per_s']:.1f} queries/s")

    out = args.out or Path(__file__).parent / "results" / f"{scale_name}-{device.type}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
