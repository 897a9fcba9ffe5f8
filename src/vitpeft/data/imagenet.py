"""ImageNet-1k from the user's ImageFolder copy into sharded store folders, one independent job per shard.

Layout of the ImageNet cache OUT: OUT/bank (from train/) and OUT/queries
(from val/), each a sharded store dataset (vitpeft.data.store):

    OUT/bank/shard-00003-of-00016/{images.npy, labels.npy, meta.json}   one per `prepare-imagenet-shard`
    OUT/bank/meta.json                                                  the index, from `index-imagenet`

Every shard job computes the same plan alone from directory listings: the
sorted (class, file) list of its split after the per-class cap, cut into N
contiguous, near-equal ranges. A shard appears by one rename when complete,
so a killed job leaves nothing that counts; the index checks that all N
shards exist and come from one plan. Decoding runs in spawned worker
processes that import only PIL (vitpeft.data.imagenet_decode).
"""

import contextlib
import errno
import hashlib
import math
import multiprocessing
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vitpeft.data import store
from vitpeft.errors import VitpeftError
from vitpeft.fileio import atomic_path, explained_os_errors, read_json, write_json
from vitpeft.data.imagenet_decode import write_rows
from vitpeft.progress import Progress

PARTS = {"train": "bank", "val": "queries"}  # split of the ImageNet copy -> folder of the cache
# torchvision's ImageFolder extensions
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
# Shards of one split must agree on these to form one dataset.
PLAN_KEYS = ("split", "per_class", "resize", "crop", "total", "listing_sha256", "classes")
CHUNK = 32  # images per worker task: small enough for smooth progress, large enough to keep IPC negligible
# By default glibc hands each image's freed buffers back to the OS and maps fresh zeroed pages for
# the next (0.7-0.9 ms of kernel time per ImageNet-sized image, measured here). Kept in the heap
# (mmap threshold at glibc's 32 MiB maximum), a worker needs about 7% less CPU per image
# (decode_ratio_* in benchmarks/results/imagenet-scale-cpu.json) for a few MB more memory.
WORKER_MALLOC = "glibc.malloc.trim_threshold=67108864:glibc.malloc.mmap_threshold=33554432"


# ---------------------------------------------------------------- layout


def check_imagenet(root) -> dict:
    """Check root/train and root/val hold the same class folders, none empty; cheap (directory listings only).

    Returns {"classes": [...], "train": count, "val": count}.
    """
    root = Path(root)
    listings = {split: _class_listing(root, split) for split in PARTS}
    _check_same_classes(root, list(listings["train"]), list(listings["val"]))
    return {
        "classes": sorted(listings["train"]),
        **{split: sum(len(files) for files in listing.values()) for split, listing in listings.items()},
    }


def _class_folders(root: Path, split: str) -> list:
    """Sorted class folder names of root/split."""
    if not root.is_dir():
        raise VitpeftError(f"ImageNet root not found: {root}")
    folder = root / split
    if not folder.is_dir():
        raise VitpeftError(f"{root} lacks {split}/ (expected ImageFolder layout: {split}/<class>/<image>)")
    with os.scandir(folder) as entries:
        entries = [e for e in entries if not e.name.startswith(".")]
    classes = sorted(e.name for e in entries if e.is_dir())
    if not classes:
        loose = sum(e.is_file() for e in entries)
        hint = f" but {loose} loose files: sort them into class folders" if loose else ""
        raise VitpeftError(f"{folder} has no class folders{hint}")
    return classes


def _class_listing(root: Path, split: str) -> dict:
    """{class name: sorted image file names} for root/split, refusing empty classes."""
    listing = {name: _images_in(root / split / name) for name in _class_folders(root, split)}
    empty = [name for name, files in listing.items() if not files]
    if empty:
        raise VitpeftError(f"{root / split}: {len(empty)} class folders hold no images, e.g. {empty[0]}")
    return listing


def _images_in(folder: Path) -> list:
    with os.scandir(folder) as entries:
        return sorted(e.name for e in entries if e.name.lower().endswith(IMAGE_EXTENSIONS) and e.is_file())


def _check_same_classes(root: Path, train: list, val: list) -> None:
    if set(train) != set(val):
        only_train, only_val = sorted(set(train) - set(val)), sorted(set(val) - set(train))
        raise VitpeftError(
            f"{root}: train/ and val/ have different class folders "
            f"({len(only_train)} only in train, e.g. {only_train[:3]}; {len(only_val)} only in val, e.g. {only_val[:3]})"
        )


# ---------------------------------------------------------------- the plan every shard job computes alone


@dataclass(frozen=True)
class Plan:
    """One split's images in order: `files` relative to root/split ("class/name"), labels by train/'s class order."""

    root: Path
    split: str
    per_class: "int | None"
    classes: list
    files: list
    labels: np.ndarray

    @property
    def listing_sha256(self) -> str:
        return hashlib.sha256("\n".join(self.files).encode()).hexdigest()

    def paths(self, rows: range) -> list:
        folder = self.root / self.split
        return [str(folder / name) for name in self.files[rows.start : rows.stop]]


def plan_split(root, split: str, per_class=None) -> Plan:
    """The sorted (class, file) list of root/split, first `per_class` files of each class (directory scans only)."""
    root = Path(root)
    if split not in PARTS:
        raise VitpeftError(f"split must be one of {', '.join(PARTS)}, got {split!r}")
    if per_class is not None and per_class < 1:
        raise VitpeftError(f"--per-class must be positive, got {per_class}")
    listing = _class_listing(root, split)
    # Labels index train/'s sorted class folders (torchvision's ImageFolder order), the same for val.
    classes = list(listing) if split == "train" else _class_folders(root, "train")
    _check_same_classes(root, classes, list(listing))
    kept = [listing[name][:per_class] for name in classes]
    files = [f"{name}/{file}" for name, names in zip(classes, kept) for file in names]
    labels = np.repeat(np.arange(len(classes), dtype=np.int64), [len(names) for names in kept])
    return Plan(root, split, per_class, classes, files, labels)


def shard_range(total: int, shards: int, index: int) -> range:
    """Rows of shard `index` of `shards`: contiguous, sizes differ by at most one, together exactly 0..total."""
    return range(index * total // shards, (index + 1) * total // shards)


def shard_name(index: int, shards: int) -> str:
    return f"shard-{index:05d}-of-{shards:05d}"


# ---------------------------------------------------------------- one shard


def prepare_shard(root, split, shard, shards, out, per_class=None, resize=256, crop=224, workers=None) -> dict:
    """Write OUT/<bank|queries>/shard-I-of-N (a store folder) unless it is already done; returns its meta."""
    _check_sizes(resize, crop)
    _check_workers(workers)
    _check_shard_numbers(shard, shards)
    return _write_shard(plan_split(root, split, per_class), shard, shards, Path(out), resize, crop, workers)


def _check_sizes(resize: int, crop: int) -> None:
    if crop < 1 or resize < crop:
        raise VitpeftError(f"need 1 <= crop <= resize, got resize {resize}, crop {crop}")


def _check_workers(workers) -> None:
    if workers is not None and workers < 1:
        raise VitpeftError(f"--workers must be positive, got {workers}")


def _check_shard_numbers(shard: int, shards: int) -> None:
    if shards < 1:
        raise VitpeftError(f"--shards must be positive, got {shards}")
    if not 0 <= shard < shards:
        raise VitpeftError(f"--shard must be in 0..{shards - 1} (shards are numbered from 0), got {shard}")


def _write_shard(plan: Plan, shard: int, shards: int, out: Path, resize: int, crop: int, workers) -> dict:
    label = f"shard {shard}/{shards} {plan.split}"
    if shards > len(plan.files):
        raise VitpeftError(
            f"{label}: {plan.root / plan.split} has {len(plan.files)} images (after the per-class cap), "
            f"fewer than --shards {shards}: use at most {len(plan.files)} shards"
        )
    rows = shard_range(len(plan.files), shards, shard)
    folder = out / PARTS[plan.split] / shard_name(shard, shards)
    meta = _shard_meta(plan, rows, shard, shards, resize, crop)
    if _is_done(folder, meta):
        print(f"{label}: {folder} is already prepared", file=sys.stderr)
        return meta
    _check_free_space(folder, len(rows) * crop * crop * 3)
    # Only the final rename makes the shard count as done; a killed job's temporary is removed by the
    # next write of this shard (atomic_path). A refused write (a worker's too) becomes one line.
    with explained_os_errors(folder), atomic_path(folder) as tmp:
        tmp.mkdir()
        images_file, offset = _empty_npy(tmp / "images.npy", (len(rows), crop, crop, 3))
        np.save(tmp / "labels.npy", plan.labels[rows.start : rows.stop])
        failed = _decode_into(images_file, offset, plan.paths(rows), resize, crop, workers, label)
        if failed:
            raise VitpeftError(_unreadable_message(label, failed))
        for name in ("images.npy", "labels.npy"):
            _fsync(tmp / name)  # the pixels are on disk before the shard can count as done
        write_json(tmp / "meta.json", meta)
    return meta


def _shard_meta(plan: Plan, rows: range, shard: int, shards: int, resize: int, crop: int) -> dict:
    return {
        "classes": plan.classes,
        "source": str(plan.root / plan.split),
        "count": len(rows),
        "split": plan.split,
        "per_class": plan.per_class,
        "resize": resize,
        "crop": crop,
        "total": len(plan.files),
        "listing_sha256": plan.listing_sha256,
        "shard": {"index": shard, "of": shards, "start": rows.start, "stop": rows.stop},
    }


def _is_done(folder: Path, meta: dict) -> bool:
    """A finished shard of this very plan (the root's path may differ: same images elsewhere are the same shard)."""
    if not (folder / "meta.json").is_file():
        return False
    done = read_json(folder / "meta.json")
    return all(done.get(key) == meta[key] for key in (*PLAN_KEYS, "shard", "count"))


def _check_free_space(out: Path, needed: int) -> None:
    existing = next((p for p in (out, *out.parents) if p.exists()), Path("."))
    free = shutil.disk_usage(existing).free
    if needed > free:
        raise VitpeftError(
            f"{out} needs {needed / 1e9:.1f} GB but only {free / 1e9:.1f} GB are free there: "
            "free some space or write the cache elsewhere"
        )


def _empty_npy(path: Path, shape: tuple) -> tuple:
    """A uint8 .npy of `shape` with its blocks reserved; returns (path, offset of the first row)."""
    images = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=shape)
    offset = images.offset
    del images
    fd = os.open(path, os.O_RDWR)
    try:
        # Reserving the blocks now turns a disk that other shard jobs fill meanwhile into an error here.
        os.posix_fallocate(fd, 0, offset + math.prod(shape))
    except OSError as error:
        if error.errno not in (errno.EOPNOTSUPP, errno.EINVAL):  # these: the file system cannot reserve
            raise
    finally:
        os.close(fd)
    return str(path), offset


def _decode_into(images_file: str, offset: int, paths: list, resize: int, crop: int, workers, label: str) -> list:
    """Decode every path into its row of images_file in a pool; returns [(path, error)] of unreadable files."""
    tasks = [(images_file, offset, i, paths[i : i + CHUNK], resize, crop) for i in range(0, len(paths), CHUNK)]
    progress, failed = Progress(label, len(paths)), []
    with decode_pool(min(workers or available_cpus(), len(tasks))) as pool:
        for count, errors in pool.imap_unordered(write_rows, tasks):
            failed += errors
            progress.advance(count)
    if not failed:
        progress.finish()
    return sorted(failed)


@contextlib.contextmanager
def decode_pool(workers: int):
    """Worker processes that import only what vitpeft.data.imagenet_decode needs (PIL): spawned, never forked.

    Forking would hand every worker the parent's imports (torch, when the
    caller has it) and any threads' locks. Workers start with WORKER_MALLOC.
    """
    previous = os.environ.get("GLIBC_TUNABLES")
    os.environ["GLIBC_TUNABLES"] = f"{WORKER_MALLOC}:{previous}" if previous else WORKER_MALLOC  # the user's win
    try:
        pool = multiprocessing.get_context("spawn").Pool(workers)  # workers start (and read it) here
    finally:
        if previous is None:
            del os.environ["GLIBC_TUNABLES"]
        else:
            os.environ["GLIBC_TUNABLES"] = previous
    with pool:
        yield pool


def available_cpus() -> int:
    """CPUs this process may run on (a SLURM job's allocation, not the node's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _unreadable_message(label: str, failed: list) -> str:
    shown = "; ".join(f"{path} ({error})" for path, error in failed[:5])
    more = f"; and {len(failed) - 5} more" if len(failed) > 5 else ""
    what = "1 image cannot be read" if len(failed) == 1 else f"{len(failed)} images cannot be read"
    return (
        f"{label}: {what}: {shown}{more}. Replace each with a good copy from the original archive and run this "
        "shard again (deleting a file changes the plan, so every shard of the split would have to be redone)"
    )


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ---------------------------------------------------------------- the index


def index_imagenet(out, shards: int, query_shards=None) -> dict:
    """Check OUT/bank and OUT/queries hold all their shards (`shards`; `query_shards` for val, default the
    same), each split's of one plan, then write their indexes.

    Returns {"bank": count, "queries": count}. Cheap: reads the shards' meta.json only.
    """
    out = Path(out)
    _check_shard_numbers(0, shards)
    if query_shards is not None and query_shards < 1:
        raise VitpeftError(f"--query-shards must be positive, got {query_shards}")
    counts = {"train": shards, "val": shards if query_shards is None else query_shards}
    names = {split: [shard_name(i, n) for i in range(n)] for split, n in counts.items()}
    plans = {split: _checked_plan(out / PARTS[split], split, names[split]) for split in PARTS}
    bank, queries = plans["train"], plans["val"]
    if bank["classes"] != queries["classes"] or (bank["resize"], bank["crop"]) != (queries["resize"], queries["crop"]):
        raise VitpeftError(f"{out}: bank and queries differ in class list or image size: prepare them together")
    indexed = {}
    for split, plan in plans.items():
        extra = {key: plan[key] for key in PLAN_KEYS if key != "classes"}
        indexed[PARTS[split]] = store.write_index(out / PARTS[split], names[split], source=plan["source"], **extra)
    return indexed


def _checked_plan(folder: Path, split: str, names: list) -> dict:
    """The plan the shards in folder share, refusing missing shards and shards of another plan."""
    shards = len(names)
    missing = [i for i, name in enumerate(names) if not (folder / name / "meta.json").is_file()]
    if missing:
        listed = ", ".join(names[i] for i in missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise VitpeftError(
            f"{folder} lacks {len(missing)} of {shards} shards ({listed}): prepare them with "
            f"`vitpeft prepare-imagenet-shard --split {split} --shards {shards} --shard I` for I in "
            f"{' '.join(map(str, missing[:20]))}{' ...' if len(missing) > 20 else ''}, then index again"
        )
    metas = [read_json(folder / name / "meta.json") for name in names]
    first = metas[0]
    for i, meta in enumerate(metas):
        differing = [key for key in PLAN_KEYS if meta.get(key) != first.get(key)]
        if differing:
            raise VitpeftError(
                f"{folder / names[i]} was prepared with other {', '.join(differing)} than {folder / names[0]}: "
                "prepare every shard with the same settings from the same ImageNet copy"
            )
        rows = shard_range(first["total"], shards, i)
        if meta["shard"] != {"index": i, "of": shards, "start": rows.start, "stop": rows.stop}:
            raise VitpeftError(f"{folder / names[i]} holds rows {meta['shard']}, expected {rows.start}..{rows.stop}")
    if first["split"] != split:
        raise VitpeftError(f"{folder} holds shards of {first['split']}/, expected {split}/")
    return first


# ---------------------------------------------------------------- everything in one process


def prepare_imagenet(root, out, bank_per_class=None, query_per_class=None, resize=256, crop=224, workers=None, shards=1):
    """Write OUT/bank and OUT/queries in one go (shard after shard, then the index); atomic as a whole.

    A convenience for small copies; a cluster runs the shards as separate jobs.
    Returns {"bank": count, "queries": count}.
    """
    root, out = Path(root), Path(out)
    for name, value in (("bank-per-class", bank_per_class), ("query-per-class", query_per_class)):
        if value is not None and value < 1:
            raise VitpeftError(f"--{name} must be positive, got {value}")
    _check_sizes(resize, crop)
    _check_workers(workers)
    _check_shard_numbers(0, shards)
    plans = [plan_split(root, "train", bank_per_class), plan_split(root, "val", query_per_class)]
    _check_free_space(out, sum(len(plan.files) for plan in plans) * crop * crop * 3)
    with atomic_path(out) as tmp:
        tmp.mkdir()
        for plan in plans:
            for shard in range(shards):
                _write_shard(plan, shard, shards, tmp, resize, crop, workers)
        return index_imagenet(tmp, shards)
