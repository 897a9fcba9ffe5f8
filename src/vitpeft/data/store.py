"""The prepared-dataset format every command shares.

A dataset is a folder holding `images.npy` (uint8, N x H x W x 3, decoded and
resized once), `labels.npy` (int64, N) and `meta.json` (class names and where
the data came from). `.npy` can be memory-mapped, so an ImageNet-sized bank
never has to fit in RAM.

A sharded dataset is a folder of such folders plus a `meta.json` whose
"shards" lists them in order (written by `write_index`): ImageNet is prepared
as independent shard jobs, and `load` reads the shards as one dataset without
copying them into one file.
"""

import operator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vitpeft.errors import VitpeftError
from vitpeft.fileio import atomic_path, read_json, write_json

FILES = ("images.npy", "labels.npy", "meta.json")


@dataclass
class Dataset:
    images: "np.ndarray | ShardedImages"  # uint8, N x H x W x 3
    labels: np.ndarray  # int64, N
    classes: list

    def __len__(self) -> int:
        return len(self.labels)


class ShardedImages:
    """Memory-mapped shards read as one N x H x W x 3 array: len(), shape, [i], [a:b], [index array].

    Indexing returns an in-RAM numpy array (a slice may span shard boundaries).
    """

    def __init__(self, parts: list):
        self.parts = parts
        self.starts = np.cumsum([0] + [len(part) for part in parts])
        self.shape = (int(self.starts[-1]), *parts[0].shape[1:])
        self.dtype = parts[0].dtype
        self.ndim = len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key):
        if isinstance(key, slice):
            start, stop, step = key.indices(len(self))
            return self._slice(start, stop) if step == 1 else self._take(np.arange(start, stop, step))
        if isinstance(key, np.ndarray) or isinstance(key, list):
            rows = np.asarray(key)
            if rows.dtype == bool or rows.ndim != 1:
                raise TypeError("sharded images take an int, a slice or a 1-D integer array")
            return self._take(np.where(rows < 0, rows + len(self), rows))
        row = operator.index(key)
        row = row + len(self) if row < 0 else row
        if not 0 <= row < len(self):
            raise IndexError(f"index {key} is out of bounds for {len(self)} images")
        part = int(np.searchsorted(self.starts, row, side="right")) - 1
        return np.asarray(self.parts[part][row - self.starts[part]])

    def __array__(self, dtype=None, copy=None):
        return self[:] if dtype is None else self[:].astype(dtype)

    def __iter__(self):
        for part in self.parts:
            yield from part

    def _slice(self, start: int, stop: int) -> np.ndarray:
        out = np.empty((max(stop - start, 0), *self.shape[1:]), self.dtype)
        for part, first in zip(self.parts, self.starts):
            lo, hi = max(start, first), min(stop, first + len(part))
            if lo < hi:
                out[lo - start : hi - start] = part[lo - first : hi - first]
        return out

    def _take(self, rows: np.ndarray) -> np.ndarray:
        if len(rows) and (rows.min() < 0 or rows.max() >= len(self)):
            raise IndexError(f"indices out of bounds for {len(self)} images")
        which = np.searchsorted(self.starts, rows, side="right") - 1
        out = np.empty((len(rows), *self.shape[1:]), self.dtype)
        for part in np.unique(which):
            mask = which == part
            out[mask] = self.parts[part][rows[mask] - self.starts[part]]
        return out


def save(folder, images: np.ndarray, labels: np.ndarray, classes, source: str = "") -> None:
    """Write a dataset folder atomically."""
    images, labels = np.asarray(images), np.asarray(labels, dtype=np.int64)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise VitpeftError(f"images must be uint8 N x H x W x 3, got {images.dtype} {images.shape}")
    if len(images) != len(labels):
        raise VitpeftError(f"{len(images)} images but {len(labels)} labels")
    with atomic_path(folder) as tmp:
        tmp.mkdir()
        np.save(tmp / "images.npy", images)
        np.save(tmp / "labels.npy", labels)
        write_json(tmp / "meta.json", {"classes": list(classes), "source": source, "count": len(labels)})


def load(folder, mmap: bool = False) -> Dataset:
    """Read a dataset folder, plain or sharded; `mmap=True` leaves the images on disk."""
    folder = Path(folder)
    meta_file = folder / "meta.json"
    if meta_file.exists() and "shards" in (meta := read_json(meta_file)):
        return _load_sharded(folder, meta, mmap)
    return _load_plain(folder, mmap)


def _load_plain(folder: Path, mmap: bool) -> Dataset:
    missing = [n for n in FILES if not (folder / n).exists()]
    if missing:
        raise VitpeftError(f"{folder} is not a prepared dataset (missing {', '.join(missing)})")
    images = np.load(folder / "images.npy", mmap_mode="r" if mmap else None)
    labels = np.load(folder / "labels.npy")
    meta = read_json(folder / "meta.json")
    if len(images) != len(labels):
        raise VitpeftError(f"{folder}: {len(images)} images but {len(labels)} labels")
    return Dataset(images=images, labels=labels, classes=meta["classes"])


def _load_sharded(folder: Path, meta: dict, mmap: bool) -> Dataset:
    shards = _check_shards(folder, meta["shards"], meta["classes"])
    if sum(len(shard) for shard in shards) != meta["count"]:
        raise VitpeftError(f"{folder}: its shards hold {sum(map(len, shards))} images, meta.json says {meta['count']}")
    labels = np.concatenate([shard.labels for shard in shards])
    if not mmap:
        return Dataset(np.concatenate([np.asarray(s.images) for s in shards]), labels, meta["classes"])
    return Dataset(images=ShardedImages([shard.images for shard in shards]), labels=labels, classes=meta["classes"])


def _check_shards(folder: Path, names: list, classes: list) -> list:
    """Each shard loaded (memory-mapped), refusing missing ones, other classes or other image sizes."""
    if not names:
        raise VitpeftError(f"{folder}: meta.json lists no shards")
    shards = [_load_plain(folder / name, mmap=True) for name in names]
    for name, shard in zip(names, shards):
        if shard.classes != classes:
            raise VitpeftError(f"{folder / name} lists other classes than {folder / 'meta.json'}: prepare them together")
        if shard.images.shape[1:] != shards[0].images.shape[1:]:
            raise VitpeftError(
                f"{folder / name} holds {shard.images.shape[1:]} images, {folder / names[0]} {shards[0].images.shape[1:]}"
            )
    return shards


def write_index(folder, names: list, source: str = "", **extra) -> int:
    """Make `folder` a sharded dataset of its sub-folders `names` (in order); returns the image count."""
    folder = Path(folder)
    classes = _load_plain(folder / names[0], mmap=True).classes if names else []
    count = sum(len(shard) for shard in _check_shards(folder, names, classes))
    write_json(folder / "meta.json", {**extra, "classes": classes, "source": source, "count": count, "shards": list(names)})
    return count
