"""Peak memory of the weighted k-NN vote on CPU, against the bound knn.vote_bytes states.

    python benchmarks/knn_memory.py                          # bank 128,000 x 768 fp16, 5,000 queries (+ half the bank)
    python benchmarks/knn_memory.py --bank 64000 --queries 2000 --dtype fp32

Each size runs in its own process: random unit features are written into a
preallocated tensor in small pieces, the kernel's peak-RSS mark is reset
(/proc/self/clear_refs), the vote runs, and the peak is read back (VmHWM).
The working set is that peak minus the RSS just before the vote. Writes
benchmarks/results/knn-memory-cpu.json with the measured figures, the bound
for the same sizes, and the bound projected to ImageNet (1,281,167 x 768,
50,000 queries). A benchmark, not a test: nothing here asserts a size.
"""

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from vitpeft.evaluation import knn

GIB = 2**30
DIM, NUM_CLASSES, KS = 768, 1000, knn.DINO_KS
IMAGENET = {"bank": 1_281_167, "queries": 50_000}


def machine() -> str:
    memory = next(line.split()[1] for line in open("/proc/meminfo") if line.startswith("MemTotal"))
    return (
        f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"{int(memory) / 2**20:.0f} GiB RAM, shared with other jobs), torch {torch.__version__}, "
        f"{torch.get_num_threads()} thread(s)"
    )


def unit_features(n: int, dtype, seed: int) -> torch.Tensor:
    """Random unit vectors, made 8,192 rows at a time so the setup's own peak stays small."""
    out, generator = torch.empty((n, DIM), dtype=dtype), torch.Generator().manual_seed(seed)
    for start in range(0, n, 8192):
        rows = min(8192, n - start)
        out[start : start + rows] = F.normalize(torch.randn(rows, DIM, generator=generator), dim=1)
    return out


def rss_kib(field: str) -> int:
    return int(next(line.split()[1] for line in open("/proc/self/status") if line.startswith(field + ":")))


def measure(bank_size: int, query_count: int, dtype_name: str) -> dict:
    """One size, in this process: peak RSS of knn_predict over what was resident before it."""
    torch.set_num_threads(1)
    dtype = knn.STORAGE[dtype_name]
    bank, queries = unit_features(bank_size, dtype, 1), unit_features(query_count, dtype, 2)
    labels = torch.randint(0, NUM_CLASSES, (bank_size,), generator=torch.Generator().manual_seed(3))
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak-RSS mark (Linux)
    before = rss_kib("VmRSS")
    started = time.perf_counter()
    knn.knn_predict(bank, labels, queries, KS, knn.DINO_TEMPERATURE, NUM_CLASSES, device="cpu")
    seconds = time.perf_counter() - started
    peak = rss_kib("VmHWM")
    bound = knn.vote_bytes(bank_size, query_count, DIM, KS, NUM_CLASSES, dtype.itemsize)
    return {
        "bank_size": bank_size,
        "query_count": query_count,
        "dim": DIM,
        "dtype": dtype_name,
        "ks": list(KS),
        "num_classes": NUM_CLASSES,
        "rss_before_vote_gib": round(before / 2**20, 3),
        "vote_peak_rss_gib": round(peak / 2**20, 3),
        "vote_working_set_gib": round((peak - before) / 2**20, 3),
        "bound_features_gib": round(bound["features"] / GIB, 3),
        "bound_working_gib": round(bound["working"] / GIB, 3),
        "vote_seconds": round(seconds, 1),
        "machine": machine(),
    }


def in_subprocess(bank_size: int, query_count: int, dtype_name: str) -> dict:
    command = [sys.executable, __file__, "--one", "--bank", str(bank_size), "--queries", str(query_count),
               "--dtype", dtype_name]  # fmt: skip
    return json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bank", type=int, default=128_000)
    parser.add_argument("--queries", type=int, default=5_000)
    parser.add_argument("--dtype", choices=sorted(knn.STORAGE), default="fp16")
    parser.add_argument("--one", action="store_true", help="measure one size in this process, print its JSON")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "knn-memory-cpu.json")
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(measure(args.bank, args.queries, args.dtype)))
        return 0
    main_run = in_subprocess(args.bank, args.queries, args.dtype)
    half_bank = in_subprocess(args.bank // 2, args.queries, args.dtype)  # how the working set scales with Nb
    storage_bytes = knn.STORAGE[args.dtype].itemsize
    projected = knn.vote_bytes(IMAGENET["bank"], IMAGENET["queries"], DIM, KS, NUM_CLASSES, storage_bytes)
    result = {
        **main_run,
        "date": datetime.date.today().isoformat(),
        "half_bank": half_bank,
        "imagenet_projection": {
            "bank_size": IMAGENET["bank"],
            "query_count": IMAGENET["queries"],
            "dtype": args.dtype,
            "bound_features_gib": round(projected["features"] / GIB, 3),
            "bound_working_gib": round(projected["working"] / GIB, 3),
            "bound_total_gib": round(projected["total"] / GIB, 3),
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
