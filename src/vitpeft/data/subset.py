"""Class-balanced subsets of a prepared dataset: the small bank and queries a forgetting curve is scored on.

K per class, the first K of each class in a seeded random order, kept in the
original order (so reading them back is sequential). Only len() and contiguous
slices of the images are used, so memory-mapped and sharded stores both work,
and the images go straight to disk: an ImageNet-sized subset never sits in RAM.
"""

import numpy as np

from vitpeft.data import store
from vitpeft.errors import VitpeftError
from vitpeft.fileio import atomic_path, write_json


def balanced_indices(labels: np.ndarray, classes: list, per_class: int, seed: int, folder) -> np.ndarray:
    """Sorted indices of `per_class` items of every class, chosen by a permutation seeded with `seed`."""
    if per_class < 1:
        raise VitpeftError(f"--per-class must be a positive integer, got {per_class}")
    counts = np.bincount(labels, minlength=len(classes))
    smallest = int(counts.argmin())
    if per_class > counts[smallest]:
        raise VitpeftError(
            f"{folder}: class {classes[smallest]!r} has only {counts[smallest]} images, fewer than --per-class "
            f"{per_class}; use --per-class {counts[smallest]} or less"
        )
    order = np.random.default_rng(seed).permutation(len(labels))
    by_class = order[np.argsort(labels[order], kind="stable")]  # seeded order within each class
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return np.sort(np.concatenate([by_class[start : start + per_class] for start in starts]))


def write(data_dir, per_class: int, out, seed: int = 0) -> int:
    """Write the class-balanced subset of the prepared dataset `data_dir` to `out` (atomic); return its size."""
    data = store.load(data_dir, mmap=True)
    if len(data) and (data.labels.min() < 0 or data.labels.max() >= len(data.classes)):
        raise VitpeftError(f"{data_dir}: labels outside 0..{len(data.classes) - 1}, the classes its meta.json lists")
    keep = balanced_indices(data.labels, data.classes, per_class, seed, data_dir)
    first = data.images[0:1]
    with atomic_path(out) as tmp:
        tmp.mkdir()
        shape = (len(keep), *first.shape[1:])
        images = np.lib.format.open_memmap(tmp / "images.npy", mode="w+", dtype=np.uint8, shape=shape)
        for at, (start, stop) in _runs(keep):
            images[at : at + stop - start] = data.images[start:stop]
        images.flush()
        del images
        np.save(tmp / "labels.npy", data.labels[keep].astype(np.int64))
        source = f"{data_dir}: {per_class} per class, seed {seed}"
        write_json(tmp / "meta.json", {"classes": data.classes, "source": source, "count": len(keep)})
    return len(keep)


def _runs(indices: np.ndarray):
    """(position in the subset, (start, stop)) of each run of consecutive indices: one contiguous slice each."""
    breaks = np.flatnonzero(np.diff(indices) != 1) + 1
    bounds = np.concatenate([[0], breaks, [len(indices)]])
    for a, b in zip(bounds[:-1], bounds[1:]):
        yield int(a), (int(indices[a]), int(indices[b - 1]) + 1)
