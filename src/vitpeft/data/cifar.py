"""Turn the official dataset files into prepared store folders (vitpeft.data.store format).

CIFAR-100 is read straight from its python-pickle archive (the safe pickle
reader is shared with vitpeft.data.targets, which reads CIFAR-10/100 as
torchvision extracts them). ImageNet lives in vitpeft.data.imagenet (sharded,
one job per shard).
"""

import io
import pickle
import tarfile
import zlib
from pathlib import Path

import numpy as np

from vitpeft.data import store
from vitpeft.errors import VitpeftError
from vitpeft.fileio import atomic_path

CIFAR_MEMBERS = {"train": "cifar-100-python/train", "test": "cifar-100-python/test", "meta": "cifar-100-python/meta"}
CIFAR_CLASSES = 100


# ---------------------------------------------------------------- CIFAR-100


def prepare_cifar100(archive, out) -> dict:
    """Write out/train and out/test from cifar-100-python.tar.gz; returns the image counts."""
    archive, out = Path(archive), Path(out)
    if not archive.is_file():
        raise VitpeftError(f"CIFAR-100 archive not found: {archive}")
    parts = _read_cifar_archive(archive)
    classes = [name.decode() for name in parts["meta"][b"fine_label_names"]]
    if len(classes) != CIFAR_CLASSES:
        raise VitpeftError(f"{archive}: meta lists {len(classes)} fine labels, expected {CIFAR_CLASSES}")
    splits = {split: cifar_arrays(parts[split], f"{archive}: {split}", CIFAR_CLASSES) for split in ("train", "test")}
    with atomic_path(out) as tmp:  # both splits appear together or not at all
        tmp.mkdir()
        for split, (images, labels) in splits.items():
            store.save(tmp / split, images, labels, classes, source=f"{archive.name}:{CIFAR_MEMBERS[split]}")
    return {split: len(labels) for split, (_, labels) in splits.items()}


def _read_cifar_archive(archive: Path) -> dict:
    """Unpickle the three members in memory (nothing extracted to disk)."""
    try:
        with tarfile.open(archive, "r:gz") as tar:
            return {part: _unpickle(tar, member, archive) for part, member in CIFAR_MEMBERS.items()}
    except (tarfile.TarError, EOFError, OSError, zlib.error) as error:
        raise VitpeftError(f"{archive} is not a readable CIFAR-100 archive (truncated or corrupt?): {error}") from None


def _unpickle(tar: tarfile.TarFile, member: str, archive: Path) -> dict:
    try:
        stream = tar.extractfile(member)
    except KeyError:
        raise VitpeftError(f"{archive} lacks {member}: is it cifar-100-python.tar.gz?") from None
    return unpickle_cifar(stream.read(), f"{archive}: {member}")


def unpickle_cifar(data: bytes, where: str) -> dict:
    """One CIFAR-10/100 python pickle (a batch or the label names), with no code run; `where` names it in errors.

    torchvision's CIFAR classes use plain pickle.load, which runs whatever a
    tampered file asks; this allow-list is why vitpeft keeps its own reader.
    """
    try:
        data = _CifarUnpickler(io.BytesIO(data), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as error:
        raise VitpeftError(f"{where} is not a readable CIFAR pickle: {error}") from None
    if not isinstance(data, dict):
        raise VitpeftError(f"{where} holds a {type(data).__name__}, expected a dict")
    return data


class _CifarUnpickler(pickle.Unpickler):
    """Allows only what the CIFAR pickles contain (dicts, lists, bytes and numpy arrays): no code runs."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # how Python 3 writes bytes into a protocol-2 pickle
    }

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def cifar_arrays(part: dict, where: str, num_classes: int):
    """A CIFAR batch's channel-major rows of 3072 bytes -> uint8 N x 32 x 32 x 3, and its labels.

    The labels are CIFAR-10's `labels` or CIFAR-100's `fine_labels` (torchvision's rule).
    """
    label_key = b"labels" if b"labels" in part else b"fine_labels"
    try:
        data = np.asarray(part[b"data"], dtype=np.uint8)
        labels = np.asarray(part[label_key], dtype=np.int64)
    except KeyError as error:
        raise VitpeftError(f"{where} lacks key {error.args[0]!r}") from None
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(labels):
        raise VitpeftError(f"{where} has data {data.shape} and {len(labels)} labels, expected N x 3072 and N")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise VitpeftError(f"{where} has labels outside 0..{num_classes - 1}")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy(), labels
