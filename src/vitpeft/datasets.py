"""Turn the official dataset files into prepared store folders (vitpeft.store format).

CIFAR-100 is read straight from its python-pickle archive (the safe pickle
reader is shared with vitpeft.targets, which reads CIFAR-10/100 as
torchvision extracts them); ImageNet from the user's ImageFolder copy
(train/ and val/ with one folder per class), each image decoded once with
DINO's evaluation preprocessing (Resize(256, bicubic), CenterCrop(224)) and
written into a memory-mapped .npy, so the 1.28M-image bank never has to fit
in RAM.
"""

import io
import multiprocessing
import os
import pickle
import shutil
import sys
import tarfile
import zlib
from pathlib import Path

import numpy as np

from vitpeft import store
from vitpeft.errors import VitpeftError
from vitpeft.fileio import atomic_path, write_json

CIFAR_MEMBERS = {"train": "cifar-100-python/train", "test": "cifar-100-python/test", "meta": "cifar-100-python/meta"}
CIFAR_CLASSES = 100
# torchvision's ImageFolder extensions
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


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


# ---------------------------------------------------------------- ImageNet layout


def check_imagenet(root) -> dict:
    """Check root/train and root/val hold the same class folders, none empty; cheap (directory listings only).

    Returns {"classes": [...], "train": count, "val": count}.
    """
    listings = _scan_imagenet(Path(root))
    return {
        "classes": sorted(listings["train"]),
        **{split: sum(len(files) for files in listing.values()) for split, listing in listings.items()},
    }


def _scan_imagenet(root: Path) -> dict:
    """{"train": {class: sorted image names}, "val": {...}}, refusing a malformed layout."""
    if not root.is_dir():
        raise VitpeftError(f"ImageNet root not found: {root}")
    listings = {split: _class_listing(root, split) for split in ("train", "val")}
    train, val = (set(listings[split]) for split in ("train", "val"))
    if train != val:
        only_train, only_val = sorted(train - val), sorted(val - train)
        raise VitpeftError(
            f"{root}: train/ and val/ have different class folders "
            f"({len(only_train)} only in train, e.g. {only_train[:3]}; {len(only_val)} only in val, e.g. {only_val[:3]})"
        )
    return listings


def _class_listing(root: Path, split: str) -> dict:
    """{class name: sorted image file names} for root/split."""
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
    listing = {name: _images_in(folder / name) for name in classes}
    empty = [name for name, files in listing.items() if not files]
    if empty:
        raise VitpeftError(f"{folder}: {len(empty)} class folders hold no images, e.g. {empty[0]}")
    return listing


def _images_in(folder: Path) -> list:
    with os.scandir(folder) as entries:
        return sorted(e.name for e in entries if e.name.lower().endswith(IMAGE_EXTENSIONS) and e.is_file())


# ---------------------------------------------------------------- ImageNet caches


def prepare_imagenet(root, out, bank_per_class=None, query_per_class=None, resize=256, crop=224, workers=None) -> dict:
    """Write out/bank (from train/) and out/queries (from val/), decoded and cropped once.

    Labels index the sorted class folders (torchvision's ImageFolder order);
    a per-class limit keeps the first N files in sorted order.
    """
    root, out = Path(root), Path(out)
    for name, value in (("bank-per-class", bank_per_class), ("query-per-class", query_per_class)):
        if value is not None and value < 1:
            raise VitpeftError(f"--{name} must be positive, got {value}")
    if crop < 1 or resize < crop:
        raise VitpeftError(f"need 1 <= crop <= resize, got resize {resize}, crop {crop}")
    listings = _scan_imagenet(root)
    classes = sorted(listings["train"])
    plan = {
        "bank": ("train", *_file_list(root / "train", listings["train"], classes, bank_per_class)),
        "queries": ("val", *_file_list(root / "val", listings["val"], classes, query_per_class)),
    }
    _check_free_space(out, sum(len(paths) for _, paths, _ in plan.values()) * crop * crop * 3)
    workers = workers or min(os.cpu_count() or 1, 16)
    with atomic_path(out) as tmp:
        tmp.mkdir()
        for part, (split, paths, labels) in plan.items():
            _write_decoded(tmp / part, paths, labels, classes, resize, crop, workers, source=str(root / split))
    return {part: len(paths) for part, (_, paths, _) in plan.items()}


def _check_free_space(out: Path, needed: int) -> None:
    # The images go into a memory-mapped file: a full disk would kill the process (SIGBUS), not raise.
    existing = next((p for p in (out, *out.parents) if p.exists()), Path("."))
    free = shutil.disk_usage(existing).free
    if needed > free:
        raise VitpeftError(f"{out} needs {needed / 1e9:.1f} GB but only {free / 1e9:.1f} GB are free there")


def _file_list(folder: Path, listing: dict, classes: list, per_class):
    paths, labels = [], []
    for index, name in enumerate(classes):
        files = listing[name][:per_class]
        paths += [str(folder / name / f) for f in files]
        labels += [index] * len(files)
    return paths, np.asarray(labels, dtype=np.int64)


def _write_decoded(folder: Path, paths, labels, classes, resize, crop, workers, source) -> None:
    """The store's format (images.npy, labels.npy, meta.json), with images filled in place on disk."""
    folder.mkdir()
    images = np.lib.format.open_memmap(folder / "images.npy", mode="w+", dtype=np.uint8, shape=(len(paths), crop, crop, 3))
    decode = _Decoder(resize, crop)
    context = multiprocessing.get_context("spawn" if sys.platform == "darwin" else "fork")
    with context.Pool(workers) as pool:
        for i, (path, image) in enumerate(pool.imap(decode, paths, chunksize=32)):
            if isinstance(image, str):
                raise VitpeftError(f"cannot read image {path}: {image}")
            images[i] = image
            if (i + 1) % 10000 == 0:
                print(f"{folder.name}: {i + 1}/{len(paths)} images", file=sys.stderr, flush=True)
    images.flush()
    del images
    np.save(folder / "labels.npy", labels)
    write_json(folder / "meta.json", {"classes": classes, "source": source, "count": len(labels)})


class _Decoder:
    """DINO's evaluation transform: Resize(resize, bicubic) of the shorter side, then CenterCrop(crop).

    Runs in pool workers; returns (path, uint8 array) or (path, error text) so
    the parent can name the file.
    """

    def __init__(self, resize: int, crop: int):
        self.resize, self.crop = resize, crop

    def __call__(self, path: str):
        from PIL import Image
        from torchvision.transforms import InterpolationMode
        from torchvision.transforms import functional as TF

        try:
            with Image.open(path) as image:
                image = image.convert("RGB")
        except Exception as error:  # PIL raises many types for bad files
            return path, f"{type(error).__name__}: {error}"
        image = TF.resize(image, self.resize, interpolation=InterpolationMode.BICUBIC)
        return path, np.asarray(TF.center_crop(image, self.crop), dtype=np.uint8)
