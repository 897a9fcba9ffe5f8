"""What checking every artifact where it is read costs (vitpeft.digests): at demo scale and at ViT-B/16 scale.

    python benchmarks/digest_cost.py          # CPU, one thread: a few minutes

Demo scale, measured inside real jobs: the demo's synthetic domains and its
settings (tiny ViT, 300 steps, the 5-point curve, checkpoints every 100
steps); `vitpeft train` for full and lora_r8, then extract-features,
eval-target, eval-source (lora_r8 reads the feature cache), eval-curve and
eval-interpolation on them, each through the command line in this process.
Every call into vitpeft.digests is timed (nested calls once), in wall and
CPU seconds, beside each job's own, and reading back each metrics file as the
report does. CPU seconds are the figures to compare on a shared machine.

ViT-B/16 scale: the sha256 of a file as large as full fine-tuning's trainable
weights (85,875,556 fp32 parameters with a 100-class head: 343.5 MB), from the
page cache (a file just written or just pulled) and from disk (its pages
dropped with posix_fadvise first, this file's only), median of 5, in wall and
CPU seconds. What the other ViT-B/16 artifacts cost follows from their sizes
at the measured rate per CPU second (said as such: projected). Writes
benchmarks/results/digest-cost-cpu.json. A benchmark: nothing asserts a speed.
"""

import functools
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
import yaml

from vitpeft import cli, digests
from vitpeft.data import synthetic
from vitpeft.methods import registry
from vitpeft.study import spec as spec_lib

REPO = Path(__file__).resolve().parents[1]
ROUNDS = 5
MB = 1e6
TIMED = ("seal", "record", "verify", "write_json", "read_json", "parse_json", "file_sha256", "bytes_sha256")


class DigestClock:
    """Wraps vitpeft.digests' functions: (wall, CPU) seconds spent in them, a call inside another counted once."""

    def __init__(self):
        self.seconds, self._depth = [0.0, 0.0], 0
        for name in TIMED:
            setattr(digests, name, self._timed(getattr(digests, name)))

    def _timed(self, function):
        @functools.wraps(function)
        def timed(*args, **kwargs):
            self._depth += 1
            wall, cpu = time.perf_counter(), time.process_time()
            try:
                return function(*args, **kwargs)
            finally:
                self._depth -= 1
                if self._depth == 0:
                    self.seconds[0] += time.perf_counter() - wall
                    self.seconds[1] += time.process_time() - cpu

        return timed

    def lap(self) -> tuple:
        seconds, self.seconds = tuple(self.seconds), [0.0, 0.0]
        return seconds


def machine() -> dict:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    return {"cpu": model, "cores": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
            "load_average_at_start": list(os.getloadavg())}


def demo_specs(root: Path) -> dict:
    """The demo's full and lora_r8 runs (its model and train settings) on its synthetic target domain."""
    cfg = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
    synthetic.write_domains(synthetic.make_domains(cfg["synthetic"]), root / "data")
    train = {**cfg["train"], "curve_steps": cfg["curve"]["steps"]}
    specs = {}
    for name, method, args in (("full", "full", {}), ("lora_r8", "lora", {"r": 8})):
        specs[name] = spec_lib.resolve({
            "name": name, "method": method, "args": args, "model": cfg["backbone"]["model"], "num_classes": 10,
            "data": {"train": str(root / "data" / "target" / "train"), "mean": cfg["target"]["mean"],
                     "std": cfg["target"]["std"]},
            "train": train,
        })  # fmt: skip
        (root / f"{name}.yaml").write_text(spec_lib.dump(specs[name]))
    return specs


def demo_jobs(root: Path) -> dict:
    data, runs = root / "data", {name: root / "runs" / name for name in ("full", "lora_r8")}
    source = ["--bank", data / "source" / "train", "--queries", data / "source" / "test", "--k", "10", "20",
              "--mean", "0.5", "0.5", "0.5", "--std", "0.5", "0.5", "0.5"]
    cpu = ["--device", "cpu"]
    jobs = {f"train {name}": ["train", "--spec", root / f"{name}.yaml", "--out", run, "--resume-dir", root / ".resume",
                              *cpu] for name, run in runs.items()}
    jobs["extract-features"] = ["extract-features", "--spec", root / "full.yaml", *source[:4], *source[7:],
                                "--out", root / "features", *cpu]
    for name, run in runs.items():
        spec = ["--spec", run / "spec.yaml", "--run", run, *cpu]
        metrics = root / "metrics" / name
        jobs[f"eval-target {name}"] = ["eval-target", *spec, "--data", data / "target" / "test",
                                       "--out", metrics / "target.json"]
        jobs[f"eval-source {name}"] = ["eval-source", *spec, *source, "--pretrained-features", root / "features",
                                       "--out", metrics / "source.json"]
    spec = ["--spec", runs["full"] / "spec.yaml", "--run", runs["full"], *cpu]
    jobs["eval-curve full"] = ["eval-curve", *spec, "--target-data", data / "target" / "test", *source,
                               "--out", root / "metrics" / "full" / "curve.json"]
    jobs["eval-interpolation full"] = ["eval-interpolation", *spec, "--target-data", data / "target" / "test",
                                       "--alphas", "0", "0.25", "0.5", "0.75", "1", *source,
                                       "--out", root / "metrics" / "full" / "interpolation.json"]
    return jobs


def demo_scale(root: Path, clock: DigestClock) -> dict:
    demo_specs(root)
    measured = {}
    for name, argv in demo_jobs(root).items():
        clock.lap()
        wall, cpu = time.perf_counter(), time.process_time()
        assert cli.main([str(a) for a in argv]) == 0, name
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        spent_wall, spent_cpu = clock.lap()
        measured[name] = {"job_s": round(wall, 3), "job_cpu_s": round(cpu, 3), "digest_ms": round(1000 * spent_wall, 3),
                          "digest_cpu_ms": round(1000 * spent_cpu, 3), "cpu_share_pct": round(100 * spent_cpu / cpu, 4)}
    reads = []
    for path in sorted((root / "metrics").rglob("*.json")):
        started = time.perf_counter()
        digests.read_json(path)
        reads.append(time.perf_counter() - started)
    clock.lap()
    sizes = {"run_folder_full_bytes": sum(p.stat().st_size for p in (root / "runs" / "full").rglob("*") if p.is_file()),
             "feature_cache_bytes": sum(p.stat().st_size for p in (root / "features").rglob("*") if p.is_file())}
    total = {key: round(sum(m[key] for m in measured.values()), 3)
             for key in ("job_s", "job_cpu_s", "digest_ms", "digest_cpu_ms")}
    return {"jobs": measured, "metrics_read_ms_median": round(1000 * statistics.median(reads), 4), **sizes,
            "total": {**total, "cpu_share_pct": round(100 * total["digest_cpu_ms"] / 1000 / total["job_cpu_s"], 4)}}


def vit_b16_scale(folder: Path) -> dict:
    full = {"method": "full", "args": {}, "model": {"name": "vit_base_patch16_224", "img_size": 224, "kwargs": {}},
            "num_classes": 100}  # fmt: skip
    size = 4 * registry.count_trainable(full)
    path = folder / "trainable-vit-b16.bin"
    block = os.urandom(1 << 20)
    with open(path, "wb") as handle:
        for _ in range(size // len(block)):
            handle.write(block)
        handle.write(block[: size % len(block)])
        handle.flush()
        os.fsync(handle.fileno())
    warm, cold, cpu = [], [], []
    for _ in range(ROUNDS):
        digests.file_sha256(path)  # in the page cache now
        started, used = time.perf_counter(), time.process_time()
        digests.file_sha256(path)
        warm.append(time.perf_counter() - started)
        cpu.append(time.process_time() - used)
        fd = os.open(path, os.O_RDONLY)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # this file's pages only
        os.close(fd)
        started = time.perf_counter()
        digests.file_sha256(path)
        cold.append(time.perf_counter() - started)
    path.unlink()
    warm_s, cold_s, cpu_s = statistics.median(warm), statistics.median(cold), statistics.median(cpu)
    rate = size / cpu_s  # bytes per CPU second: what the hashing itself costs, however loaded the machine
    features = 1_281_167 * 768 * 2  # ImageNet train, fp16: the feature cache's bank
    checkpoint = 2 * size  # full fine-tuning's resume checkpoint: weights and SGD momentum
    return {
        "trainable_bytes": size, "sha256_s_page_cache": round(warm_s, 3), "sha256_s_from_disk": round(cold_s, 3),
        "sha256_cpu_s": round(cpu_s, 3), "mb_per_s_page_cache": round(size / warm_s / MB, 1),
        "mb_per_s_from_disk": round(size / cold_s / MB, 1), "mb_per_cpu_s": round(rate / MB, 1),
        "rounds": ROUNDS,
        "projected_cpu_s_at_that_rate": {
            "feature_cache_bank_fp16_bytes": features, "feature_cache_bank": round(features / rate, 2),
            "resume_checkpoint_bytes": checkpoint, "resume_checkpoint": round(checkpoint / rate, 2),
        },
    }


def main():
    torch.set_num_threads(1)
    result = {"machine": machine()}
    with tempfile.TemporaryDirectory(prefix="vitpeft-digest-cost-") as tmp:
        result["vit_b16"] = vit_b16_scale(Path(tmp))
        clock = DigestClock()
        result["demo"] = demo_scale(Path(tmp), clock)
    result["machine"]["load_average_at_end"] = list(os.getloadavg())
    out = Path(__file__).parent / "results" / "digest-cost-cpu.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
