"""The prepared-dataset format every command shares.

A dataset is a folder holding `images.npy` (uint8, N x H x W x 3, decoded and
resized once), `labels.npy` (int64, N) and `meta.json` (class names and where
the data came from). `.npy` can be memory-mapped, so an ImageNet-sized bank
never has to fit in RAM.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vitpeft.errors import VitpeftError
from vitpeft.fileio import atomic_path, read_json, write_json


@dataclass
class Dataset:
    images: np.ndarray  # uint8, N x H x W x 3
    labels: np.ndarray  # int64, N
    classes: list

    def __len__(self) -> int:
        return len(self.labels)


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
    """Read a dataset folder; `mmap=True` leaves the images on disk."""
    folder = Path(folder)
    missing = [n for n in ("images.npy", "labels.npy", "meta.json") if not (folder / n).exists()]
    if missing:
        raise VitpeftError(f"{folder} is not a prepared dataset (missing {', '.join(missing)})")
    images = np.load(folder / "images.npy", mmap_mode="r" if mmap else None)
    labels = np.load(folder / "labels.npy")
    meta = read_json(folder / "meta.json")
    if len(images) != len(labels):
        raise VitpeftError(f"{folder}: {len(images)} images but {len(labels)} labels")
    return Dataset(images=images, labels=labels, classes=meta["classes"])
