"""What preparing ImageNet costs per image, before and after sharded, torch-free decoding (CPU only).

    python benchmarks/imagenet_scale.py                       # 2,000 photo-like JPEGs + a full-size listing
    python benchmarks/imagenet_scale.py --images 200 --listing-scale 0.01   # a quick look

On a folder of photo-like JPEGs of ImageNet's typical sizes (500x375 and
similar, quality 90; noise would compress unlike photos, so: smooth colour
fields plus texture at several scales), measures on one core each:

- decode_ms_per_image_before / _after: CPU ms per image inside one worker
  process: the landed path (commit LANDED's datasets._Decoder: torchvision
  Resize + CenterCrop on PIL) against vitpeft.data.imagenet_decode.write_rows
  (same pixels, PIL only, written into the .npy) with the malloc settings the
  pool gives its workers (vitpeft.data.imagenet.WORKER_MALLOC), and without them.
  The workers take turns on the same chunks of 50 images; each figure is the
  median over chunks, and decode_ratio_* the median of per-chunk ratios (the
  machine is shared: its load moves every absolute figure);
- worker_rss_mb and worker_import_s: a worker's peak RSS and what it pays
  before its first image;
- end_to_end: whole commands with one worker (parent and worker CPU), at two
  train sizes: the difference is the CPU per extra image (the parent's share
  included), the rest each command's fixed cost; plus a one-image shard job;
- draft_mode and crop_before_resize: PIL shortcuts, their time and their pixel
  difference from exact preprocessing (kept only if identical: they are not);
- listing: one shard job's plan (scan + sort + hash) of a full-size ImageFolder
  tree of empty files: time and peak RSS of the parent;
- projection: 1.33M images on 16 single-CPU jobs, with the arithmetic;
- imagenet_passes_paper_grid: ImageNet feature passes in the paper grid's
  dry-run plan (was 18), and vote_peak_rss_gib: the k-NN vote's peak memory at
  a scaled bank (both alone with --grid-only).

Results are merged by key into benchmarks/results/imagenet-scale-cpu.json
(read-modify-write), so other benchmarks may add their own keys to that file.
A benchmark, not a test: nothing here asserts a speed. Top-level imports are
stdlib only, so the worker processes this script starts carry nothing extra.
"""

import argparse
import heapq
import json
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LANDED = "60cc619"  # the last commit with the torchvision decoder in a forked pool
IMAGENET = {"train": 1281167, "val": 50000, "classes": 1000}  # ILSVRC2012
SIZES = [(500, 375), (500, 375), (375, 500), (500, 333), (500, 400), (333, 500)]  # ImageNet's common shapes
RESULTS = Path(__file__).parent / "results" / "imagenet-scale-cpu.json"
REPO = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------- the photo-like folder


def texture_base(seed: int, width: int = 1400, height: int = 1000):
    """Smooth colour fields plus detail at five scales: a 500x375 window JPEG-compresses (q90) to about
    105 KB, like ImageNet's photos (ILSVRC2012_img_train.tar: about 138 GB for 1,281,167 images)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    out = np.full((height, width, 3), 128.0, np.float32)
    for cells, amplitude in ((4, 90), (16, 60), (64, 50), (250, 80), (700, 60)):
        small = rng.normal(0, 1, (max(2, cells * height // width), cells, 3))
        small = ((small - small.min()) / np.ptp(small) * 255).astype(np.uint8)
        layer = np.asarray(Image.fromarray(small).resize((width, height), Image.BICUBIC), np.float32)
        out += (layer - 128) * amplitude / 128
    out += rng.normal(0, 18, out.shape)
    return np.clip(out, 0, 255).astype(np.uint8)


def make_folder(root: Path, images: int, classes: int, val_per_class: int) -> dict:
    """root/train/<class>/*.JPEG (`images` in all) and root/val/<class>/*.JPEG: windows of a few textured bases."""
    import numpy as np
    from PIL import Image

    bases = [texture_base(seed) for seed in range(8)]
    rng = np.random.default_rng(0)
    sizes = []

    def write(path: Path, i: int) -> None:
        width, height = SIZES[i % len(SIZES)]
        base = bases[i % len(bases)]
        top, left = rng.integers(0, base.shape[0] - height), rng.integers(0, base.shape[1] - width)
        window = base[top : top + height, left : left + width]
        Image.fromarray(window[:, ::-1] if i % 2 else window).save(path, quality=90)
        sizes.append(path.stat().st_size)

    for split, count in (("train", images), ("val", classes * val_per_class)):
        for i in range(count):
            folder = root / split / f"n{i % classes:08d}"
            folder.mkdir(parents=True, exist_ok=True)
            write(folder / f"n{i % classes:08d}_{i}.JPEG", i)
    return {"train": images, "val": classes * val_per_class, "classes": classes, "sizes": SIZES,
            "jpeg_quality": 90, "mean_file_kb": round(sum(sizes) / len(sizes) / 1024, 1)}  # fmt: skip


def make_empty_tree(root: Path, scale: float) -> dict:
    """A full-size (times `scale`) ImageFolder tree of empty files: only the listing's cost is of interest."""
    counts = {split: round(IMAGENET[split] * scale) for split in ("train", "val")}
    for split, count in counts.items():
        for c in range(IMAGENET["classes"]):
            folder = root / split / f"n{c:08d}"
            folder.mkdir(parents=True)
            for i in range(c * count // IMAGENET["classes"], (c + 1) * count // IMAGENET["classes"]):
                (folder / f"n{c:08d}_{i}.JPEG").touch()
    return counts


# ---------------------------------------------------------------- measurements in fresh processes


def run_self(*args) -> dict:
    """Run this script's hidden mode in a fresh interpreter (one core, one thread); returns its JSON."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, env=env, cwd=REPO)
    if done.returncode != 0:
        sys.exit(f"{args[0]} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def worker_mode(kind: str, paths_file: str, landed_file: str, rows_file: str, offset: int, resize: int, crop: int):
    """One decoding worker as the landed code or vitpeft runs it, serving chunks of images on request.

    Prints its import cost, then reads "start stop" lines and answers each with
    the CPU ms per image of paths[start:stop]; "end" makes it print its peak RSS.
    """
    paths = Path(paths_file).read_text().split("\n")
    started = time.process_time()
    if kind == "before":
        import importlib.util

        from PIL import Image  # noqa: F401  the landed worker's imports, paid once
        from torchvision.transforms import functional  # noqa: F401

        spec = importlib.util.spec_from_file_location("landed_datasets", landed_file)
        landed = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(landed)
        decoder = landed._Decoder(resize, crop)

        def decode_chunk(start, stop):
            for path in paths[start:stop]:
                decoder(path)  # the array then travels to the parent by pickle: not counted here
    else:
        from vitpeft.data.imagenet_decode import write_rows

        def decode_chunk(start, stop):  # decode and write into the .npy, as a shard job's worker does
            write_rows((rows_file, offset, start, paths[start:stop], resize, crop))

    print(json.dumps({"import_s": round(time.process_time() - started, 3)}), flush=True)
    for line in sys.stdin:
        if line.strip() == "end":
            break
        start, stop = map(int, line.split())
        began = time.process_time()
        decode_chunk(start, stop)
        print((time.process_time() - began) * 1000 / (stop - start), flush=True)
    print(json.dumps({"peak_rss_mb": peak_rss_mb(), "torch_imported": "torch" in sys.modules}), flush=True)


def interleaved_workers(kinds: dict, worker_args: list, images: int, chunk: int, passes: int) -> dict:
    """Every kind's worker decodes the same chunk in turn, chunk after chunk: a busy spell of the shared
    machine then hits all kinds alike, and the median over chunks leaves such spells out."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    procs = {
        kind: subprocess.Popen([sys.executable, __file__, "_worker", kind.split("_")[0], *worker_args], cwd=REPO,
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env={**env, **extra})
        for kind, extra in kinds.items()
    }  # fmt: skip
    results = {kind: json.loads(proc.stdout.readline()) for kind, proc in procs.items()}
    per_chunk = {kind: [] for kind in kinds}
    for _ in range(passes):
        for start in range(0, images, chunk):
            for kind, proc in procs.items():
                proc.stdin.write(f"{start} {min(start + chunk, images)}\n")
                proc.stdin.flush()
                per_chunk[kind].append(float(proc.stdout.readline()))
    for kind, proc in procs.items():
        proc.stdin.write("end\n")
        proc.stdin.flush()
        results[kind].update(json.loads(proc.stdout.readline()))
        proc.wait()
        results[kind]["ms_per_image"] = statistics.median(per_chunk[kind])
        results[kind]["ms_per_image_mean"] = round(statistics.mean(per_chunk[kind]), 3)
    first = next(iter(kinds))
    for kind in kinds:  # the per-chunk ratio is what the interleaving makes robust
        results[kind][f"ratio_to_{first}"] = round(
            statistics.median(a / b for a, b in zip(per_chunk[kind], per_chunk[first])), 3
        )
    return results


def peak_rss_mb() -> float:
    """This process's peak RSS. Not ru_maxrss: Linux carries that over exec from the forking parent."""
    status = Path("/proc/self/status").read_text()
    return round(int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))) / 1024, 1)


def plan_mode(root: str, shards: int) -> dict:
    """What one train shard job's parent does before decoding: scan, sort, cap, hash, its paths."""
    from vitpeft.data import imagenet

    started, cpu = time.monotonic(), time.process_time()
    plan = imagenet.plan_split(root, "train")
    _ = plan.listing_sha256, plan.paths(imagenet.shard_range(len(plan.files), shards, 0))
    return {
        "files": len(plan.files),
        "wall_s": round(time.monotonic() - started, 2),
        "cpu_s": round(time.process_time() - cpu, 2),
        "peak_rss_mb": peak_rss_mb(),
    }


def landed_prepare_mode(landed_file: str, root: str, out: str, per_class: str) -> dict:
    import importlib.util

    spec = importlib.util.spec_from_file_location("landed_datasets", landed_file)
    landed = importlib.util.module_from_spec(spec)
    sys.modules["landed_datasets"] = landed  # so its forked workers can unpickle its _Decoder
    spec.loader.exec_module(landed)
    return landed.prepare_imagenet(root, out, bank_per_class=int(per_class), workers=1)


def end_to_end(work: Path, landed_file: Path, args) -> dict:
    """Whole commands with one worker, CPU of the process and its workers, at two train sizes.

    The difference between the sizes is the cost per extra image (the parent's
    share included); what is left is each command's fixed cost. After: one
    prepare-imagenet-shard job (train). Before: the landed prepare-imagenet
    (train and val; the val part and its pool are the same at both sizes).
    A tiny shard job (one val image) gives a shard job's own fixed cost.
    """
    photos, per_class, out = work / "photos", args.images // args.classes, work / "e2e"
    sizes = {"full": per_class, "quarter": per_class // 4}

    def after(k, name):
        return [sys.executable, "-m", "vitpeft.cli", "prepare-imagenet-shard", "--root", str(photos), "--split", "train",
                "--shard", "0", "--shards", "1", "--per-class", str(k), "--out", str(out / name), "--workers", "1"]  # fmt: skip

    def before(k, name):
        return [sys.executable, __file__, "_landed_prepare", str(landed_file), str(photos), str(out / name), str(k)]

    tries = {(kind, size): [] for kind in ("before", "after") for size in sizes}
    for _ in range(args.repeats):  # interleaved; the least disturbed try of each is kept
        for kind, size in tries:
            command = (before if kind == "before" else after)(sizes[size], f"{kind}-{size}")
            tries[kind, size].append(timed_children(command))
            shutil.rmtree(out, ignore_errors=True)
    result = {}
    for kind in ("before", "after"):
        runs = {size: min(tries[kind, size], key=lambda run: run["cpu_s"]) for size in sizes}
        extra_images = (sizes["full"] - sizes["quarter"]) * args.classes
        marginal_s = (runs["full"]["cpu_s"] - runs["quarter"]["cpu_s"]) / extra_images
        result[kind] = {
            "runs": {size: {**run, "train_images": sizes[size] * args.classes} for size, run in runs.items()},
            "cpu_ms_per_extra_image": round(marginal_s * 1000, 3),
            "fixed_cpu_s": round(runs["quarter"]["cpu_s"] - marginal_s * sizes["quarter"] * args.classes, 2),
        }
    tiny = [sys.executable, "-m", "vitpeft.cli", "prepare-imagenet-shard", "--root", str(photos), "--split", "val",
            "--shard", "0", "--shards", str(args.classes * args.val_per_class), "--out", str(out / "tiny"), "--workers", "1"]  # fmt: skip
    result["shard_job_fixed_cpu_s"] = timed_children(tiny)["cpu_s"]
    return result


def timed_children(argv: list) -> dict:
    """Wall and CPU seconds (the process and every child it reaped) of one command."""
    before, started = resource.getrusage(resource.RUSAGE_CHILDREN), time.monotonic()
    done = subprocess.run(argv, capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    wall, after = time.monotonic() - started, resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        sys.exit(f"{argv} failed:\n{done.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "stderr_tail": done.stderr.strip().splitlines()[-1:]}


# ---------------------------------------------------------------- PIL shortcuts against exact preprocessing


def shortcuts(paths: list, resize: int, crop: int) -> dict:
    """Draft mode (JPEG DCT scaling) on images at least twice the resize, and resizing only the crop's box."""
    import numpy as np
    from PIL import Image

    from vitpeft.data.imagenet_decode import read_rgb, resize_center_crop

    def cpu_ms(fn, items):
        started = time.process_time()
        out = [fn(item) for item in items]
        return (time.process_time() - started) * 1000 / len(items), out

    def exact(path):
        return np.asarray(resize_center_crop(read_rgb(path), resize, crop))

    def draft(path):
        with Image.open(path) as image:
            width, height = image.size
            scale = resize / min(width, height)
            image.draft("RGB", (round(width * scale), round(height * scale)))
            image = image.convert("RGB")
        return np.asarray(resize_center_crop(image, resize, crop))

    def box(path):
        image = read_rgb(path)
        width, height = image.size
        short, long = min(width, height), max(width, height)
        size = (resize, int(resize * long / short)) if width <= height else (int(resize * long / short), resize)
        top, left = int(round((size[1] - crop) / 2.0)), int(round((size[0] - crop) / 2.0))
        sx, sy = width / size[0], height / size[1]
        region = (left * sx, top * sy, (left + crop) * sx, (top + crop) * sy)
        return np.asarray(image.resize((crop, crop), Image.BICUBIC, box=region))

    def compare(fn, items):
        times, diffs = {"exact": [], "shortcut": []}, []
        for item in items:  # image by image, alternating, so both see the same machine
            exact_ms, reference = cpu_ms(exact, [item])
            ms, result = cpu_ms(fn, [item])
            times["exact"].append(exact_ms)
            times["shortcut"].append(ms)
            diffs.append(np.abs(reference[0].astype(int) - result[0]))
        return {
            "images": len(items),
            "exact_ms_per_image": round(statistics.median(times["exact"]), 3),
            "shortcut_ms_per_image": round(statistics.median(times["shortcut"]), 3),
            "identical_images": sum(int(d.max() == 0) for d in diffs),
            "max_abs_diff": int(max(d.max() for d in diffs)),
            "mean_abs_diff": round(float(np.mean([d.mean() for d in diffs])), 4),
            "differing_values_pct": round(float(np.mean([(d > 0).mean() for d in diffs])) * 100, 2),
        }

    large = Path(tempfile.mkdtemp())
    bases = [texture_base(seed, 1400, 1050) for seed in range(4)]
    large_paths = []
    for i in range(40):  # 1024x768: short side 768 >= 2 x 256, so draft decodes at half size
        path = large / f"{i}.JPEG"
        top, left = (i * 7) % 200, (i * 11) % 300
        Image.fromarray(bases[i % 4][top : top + 768, left : left + 1024]).save(path, quality=90)
        large_paths.append(path)
    try:
        return {
            "draft_mode": {**compare(draft, large_paths), "image_size": [1024, 768], "kept": False,
                           "why": "not identical to torchvision's Resize+CenterCrop: exact preprocessing kept"},
            "crop_before_resize": {**compare(box, paths), "kept": False,
                                   "why": "PIL's resize(box=) rounds the box to float32: not identical, not kept"},
        }  # fmt: skip
    finally:
        shutil.rmtree(large)


# ---------------------------------------------------------------- the run


def machine() -> dict:
    import PIL

    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "pillow": PIL.__version__,
        "note": "a shared machine: other jobs ran alongside; CPU seconds (not wall) are the per-image figures",
    }


def measure(args) -> dict:
    import numpy as np

    work = Path(tempfile.mkdtemp(prefix="imagenet-scale-"))
    try:
        landed_file = work / "landed_datasets.py"
        landed_file.write_text(subprocess.run(["git", "show", f"{LANDED}:src/vitpeft/datasets.py"], cwd=REPO,
                                              capture_output=True, text=True, check=True).stdout)  # fmt: skip
        results = {"machine": machine()}
        print(f"making {args.images} photo-like JPEGs ...", file=sys.stderr)
        results["images"] = make_folder(work / "photos", args.images, args.classes, args.val_per_class)
        paths = sorted(str(p) for p in (work / "photos" / "train").rglob("*.JPEG"))
        (work / "paths.txt").write_text("\n".join(paths))

        rows = np.lib.format.open_memmap(work / "rows.npy", mode="w+", dtype=np.uint8,
                                         shape=(len(paths), args.crop, args.crop, 3))  # fmt: skip
        worker_args = [str(work / "paths.txt"), str(landed_file), str(work / "rows.npy"), str(rows.offset),
                       str(args.resize), str(args.crop)]  # fmt: skip
        del rows
        from vitpeft.data.imagenet import WORKER_MALLOC

        kinds = {"before": {}, "after": {"GLIBC_TUNABLES": WORKER_MALLOC}, "after_default_malloc": {}}
        workers = interleaved_workers(kinds, worker_args, len(paths), 50, args.repeats)
        print(f"workers: {workers}", file=sys.stderr)
        results["decode_ratio_after_to_before"] = workers["after"]["ratio_to_before"]
        results["decode_ratio_default_malloc_to_before"] = workers["after_default_malloc"]["ratio_to_before"]
        results["decode_ms_per_image_before"] = round(workers["before"]["ms_per_image"], 3)
        results["decode_ms_per_image_after"] = round(workers["after"]["ms_per_image"], 3)
        results["decode_ms_per_image_after_default_malloc"] = round(workers.pop("after_default_malloc")["ms_per_image"], 3)
        results["worker_rss_mb"] = {kind: workers[kind]["peak_rss_mb"] for kind in workers}
        results["worker_import_s"] = {kind: workers[kind]["import_s"] for kind in workers}
        results["worker_imports_torch"] = {kind: workers[kind]["torch_imported"] for kind in workers}

        results["end_to_end"] = end_to_end(work, landed_file, args)
        print(f"end to end: {results['end_to_end']}", file=sys.stderr)

        print("draft mode and crop-before-resize ...", file=sys.stderr)
        results.update(shortcuts(paths[: args.shortcut_images], args.resize, args.crop))

        if args.listing_scale > 0:
            print(f"listing: an empty-file tree at {args.listing_scale} x ImageNet ...", file=sys.stderr)
            started = time.monotonic()
            counts = make_empty_tree(work / "tree", args.listing_scale)
            made = time.monotonic() - started
            results["listing"] = {**run_self("_plan", str(work / "tree"), str(args.shards)), "scale": args.listing_scale,
                                  "tree": counts, "tree_made_in_s": round(made, 1)}  # fmt: skip
        results["projection"] = projection(results, args.shards, args.query_shards, args.jobs)
        results["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
        return results
    finally:
        shutil.rmtree(work, ignore_errors=True)


def paper_grid_passes() -> dict:
    """ImageNet feature passes in the paper grid's plan: `snakemake -n` on config/config.yaml, counted by rule.

    A pass is a job that runs a backbone over the whole bank and queries: the untouched backbone's
    feature cache (extract_features) and each fine-tuned backbone's eval_source.
    """
    done = subprocess.run([sys.executable, "-m", "snakemake", "-n", "all", "--cores", "1"], cwd=REPO,
                          capture_output=True, text=True, check=True)  # fmt: skip
    stats = dict(re.findall(r"^(\w+)\s+(\d+)\s*$", done.stdout.split("Job stats:", 1)[1], re.MULTILINE))
    passes = {rule: int(stats.get(rule, 0)) for rule in ("extract_features", "eval_source")}
    return {"imagenet_passes_paper_grid": sum(passes.values()), "imagenet_passes_by_rule": passes,
            "imagenet_passes_before": 18, "imagenet_passes_counted_from": "snakemake -n all (config/config.yaml)"}


def vote_peak(bank: int, queries: int, dtype: str) -> dict:
    """The k-NN vote's peak RSS at a scaled bank (benchmarks/knn_memory.py's measurement, in a fresh process)."""
    sys.path.insert(0, str(Path(__file__).parent))
    import knn_memory

    measured = knn_memory.in_subprocess(bank, queries, dtype)
    return {"vote_peak_rss_gib": measured["vote_peak_rss_gib"], "vote_bank_size": bank, "vote_query_count": queries,
            "vote_dtype": dtype, "vote_working_set_gib": measured["vote_working_set_gib"]}


def makespan(durations: list, slots: int) -> float:
    """Wall time of independent jobs on `slots` CPUs, longest first onto the least loaded (as a queue fills them)."""
    loads = [0.0] * slots
    for duration in sorted(durations, reverse=True):
        heapq.heapreplace(loads, loads[0] + duration)
    return max(loads)


def shard_jobs(image_ms: float, job_s: float, shards: int, query_shards: int) -> list:
    """Seconds of every shard job: its fixed cost plus its images (ranges as vitpeft.data.imagenet.shard_range cuts)."""
    sizes = [IMAGENET["train"] * (i + 1) // shards - IMAGENET["train"] * i // shards for i in range(shards)]
    sizes += [IMAGENET["val"] * (i + 1) // query_shards - IMAGENET["val"] * i // query_shards for i in range(query_shards)]
    return [job_s + n * image_ms / 1000 for n in sizes]


def projection(results: dict, shards: int, query_shards: int, jobs: int) -> dict:
    """ImageNet's wall time: before as one job with `jobs` workers, after as single-CPU shard jobs on `jobs` CPUs."""
    images = IMAGENET["train"] + IMAGENET["val"]
    listing = results.get("listing")
    plan_s = listing["cpu_s"] / listing["scale"] if listing else 0.0  # a train job's plan at full size
    ends = results["end_to_end"]
    worker_ms = results["decode_ms_per_image_before"]
    image_ms = {kind: ends[kind]["cpu_ms_per_extra_image"] for kind in ("before", "after")}
    parent_ms = max(image_ms["before"] - worker_ms, 0.0)
    # Before: the parent receives every decoded array, so it caps the rate whatever the worker count.
    before_s = max(images * worker_ms / 1000 / jobs, images * parent_ms / 1000)
    job_s = ends["shard_job_fixed_cpu_s"] + plan_s
    after_s = makespan(shard_jobs(image_ms["after"], job_s, shards, query_shards), jobs)
    table = {
        f"{n} + {q} shards on {slots} CPUs": round(makespan(shard_jobs(image_ms["after"], job_s, n, q), slots))
        for n, q in ((16, 16), (32, 32), (32, 4), (64, 8)) for slots in (16, 32, 64)
    }  # fmt: skip
    return {
        "images": images,
        "before": {
            "setup": f"one job, {jobs} workers (the landed prepare-imagenet)",
            "wall_s": round(before_s),
            "arithmetic": f"max({images} images x {worker_ms:.3f} ms in workers / {jobs}, "
            f"{images} images x {parent_ms:.3f} ms in the parent) = {before_s:.0f} s ({before_s / 60:.1f} min), "
            f"all or nothing; the parent's share = end-to-end {image_ms['before']:.3f} ms - worker {worker_ms:.3f} ms",
        },
        "after": {
            "setup": f"{shards} train + {query_shards} val single-CPU shard jobs on {jobs} CPUs",
            "wall_s": round(after_s),
            "cpu_hours": round(sum(shard_jobs(image_ms["after"], job_s, shards, query_shards)) / 3600, 2),
            "arithmetic": f"a shard job of n images takes {ends['shard_job_fixed_cpu_s']:.2f} s start + {plan_s:.1f} s "
            f"plan + n x {image_ms['after']:.3f} ms; {shards} train shards of {IMAGENET['train'] // shards} images = "
            f"{job_s + IMAGENET['train'] / shards * image_ms['after'] / 1000:.0f} s each; scheduled longest first "
            f"on {jobs} CPUs: {after_s:.0f} s ({after_s / 60:.1f} min)",
        },
        "wall_s_by_shards_and_cpus": table,
    }


def merge(path: Path, results: dict) -> None:
    """Read-modify-write by key: keys other benchmarks wrote stay."""
    from vitpeft.fileio import write_json

    current = json.loads(path.read_text()) if path.exists() else {}
    write_json(path, {**current, **results})


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_worker":
        kind, paths_file, landed_file, rows_file, offset, resize, crop = argv[1:]
        worker_mode(kind, paths_file, landed_file, rows_file, int(offset), int(resize), int(crop))
        return 0
    if argv and argv[0] == "_plan":
        print(json.dumps(plan_mode(argv[1], int(argv[2]))))
        return 0
    if argv and argv[0] == "_landed_prepare":
        print(json.dumps(landed_prepare_mode(*argv[1:])))
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2000, help="train images in the photo-like folder")
    parser.add_argument("--classes", type=int, default=20)
    parser.add_argument("--val-per-class", type=int, default=5)
    parser.add_argument("--resize", type=int, default=256)
    parser.add_argument("--crop", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=2,
                        help="passes over the images for the worker figures; tries of each end-to-end command")  # fmt: skip
    parser.add_argument("--shortcut-images", type=int, default=200, help="images for the crop-before-resize check")
    parser.add_argument("--listing-scale", type=float, default=1.0, help="size of the empty-file tree (0: skip)")
    parser.add_argument("--shards", type=int, default=16, help="train shards in the projection")
    parser.add_argument("--query-shards", type=int, default=16, help="val shards in the projection")
    parser.add_argument("--jobs", type=int, default=16, help="single-CPU jobs running at once in the projection")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--grid-only", action="store_true",
                        help="measure only the paper grid's ImageNet passes and the vote's peak memory")
    parser.add_argument("--vote-bank", type=int, default=128_000, help="bank size of the vote's memory figure")
    args = parser.parse_args(argv)
    results = {"grid_measured_on": machine(), **paper_grid_passes(), **vote_peak(args.vote_bank, 5_000, "fp16")}
    if not args.grid_only:
        results.update(measure(args))
    merge(args.out, results)
    if args.grid_only:
        print(json.dumps(results, indent=2))
        return 0
    print(json.dumps({k: results[k] for k in ("decode_ms_per_image_before", "decode_ms_per_image_after",
                                              "worker_rss_mb", "end_to_end", "projection")}, indent=2))  # fmt: skip
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
