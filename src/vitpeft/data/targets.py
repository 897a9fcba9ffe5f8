"""Target datasets (the public code's list), from torchvision's files into vitpeft's uint8 store.

Which datasets there are, and how each is stored, is vitpeft.data.catalogue
(torch-free, read while planning); here torchvision downloads and reads them.

`download` runs torchvision's own download and md5 code into a staging folder
that appears at --root only once every file is in and checked: torchvision
writes in place and, for Food-101, Pets, DTD and Aircraft, takes any existing
folder as a finished download, so a killed run would otherwise count as done.

`prepare` reads each official split with torchvision's class (CIFAR with our
own pickle reader, see cifar.unpickle_cifar), checks the class count,
decodes every image once and writes out/train, out/test (and out/val where the
dataset has one) together. CIFAR (32x32) and STL-10 (96x96) keep their native
size; every other image is squashed, without a crop, to size x size (default
256) with PIL's antialiased bicubic filter, as the public code's test
transform squashes to 224 (on-device resizing brings 256 to the model's size).
"""

import contextlib
import functools
import http.client
import importlib.util
import inspect
import os
import shutil
import sys
import tarfile
import urllib.error
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vitpeft.data import store
from vitpeft.data.catalogue import DEFAULT_SIZE, REGISTRY, check_needs, get, stored_side
from vitpeft.data.cifar import cifar_arrays, unpickle_cifar
from vitpeft.errors import VitpeftError
from vitpeft.fileio import atomic_path, write_json

POOL_MIN = 2000  # fewer images decode in-process: starting a pool would cost more than it saves
REPORT_EVERY = 10000


# ---------------------------------------------------------------- torchvision's classes, pointed at a mirror


@dataclass
class _Source:
    cls: type  # torchvision's class, or a subclass with other URLs and md5s
    md5s: dict  # file name -> the md5 torchvision checks it against
    urls: dict  # file name -> where torchvision downloads it from


def _source(name: str, mirror: str | None = None, md5s: dict | None = None) -> _Source:
    """torchvision's class for `name`, subclassed so its files come from `mirror` and their md5s from `md5s`.

    Each class keeps its URLs and md5s in class attributes of its own naming;
    overriding them on a subclass leaves torchvision's download and check code
    as it is. `md5s` maps file names to expected md5s (tests, re-packed mirrors).
    """
    import torchvision.datasets

    base = getattr(torchvision.datasets, get(name).torchvision)
    wanted, expected, urls = dict(md5s or {}), {}, {}

    def md5(file, default):
        expected[file] = wanted.pop(file, default)
        return expected[file]

    def url(address):
        file = address.rsplit("/", 1)[1]
        urls[file] = f"{mirror.rstrip('/')}/{file}" if mirror else address
        return urls[file]

    attrs = {}
    if hasattr(base, "tgz_md5"):  # CIFAR10/100, STL10: one archive, then an md5 per extracted file
        attrs["url"], attrs["tgz_md5"] = url(base.url), md5(base.filename, base.tgz_md5)
        for listing in ("train_list", "test_list"):
            attrs[listing] = [[file, md5(file, value)] for file, value in getattr(base, listing)]
        if isinstance(getattr(base, "meta", None), dict):  # CIFAR's label names
            attrs["meta"] = {**base.meta, "md5": md5(base.meta["filename"], base.meta["md5"])}
    if hasattr(base, "_file_dict"):  # Flowers102: three files under one prefix
        attrs["_file_dict"] = {key: (file, md5(file, value)) for key, (file, value) in base._file_dict.items()}
        attrs["_download_url_prefix"] = f"{mirror.rstrip('/')}/" if mirror else base._download_url_prefix
        urls.update({file: attrs["_download_url_prefix"] + file for file, _ in attrs["_file_dict"].values()})
    if hasattr(base, "_URL"):  # Food101, DTD, FGVCAircraft (the last with no md5)
        attrs["_URL"] = url(base._URL)
        if hasattr(base, "_MD5"):
            attrs["_MD5"] = md5(base._URL.rsplit("/", 1)[1], base._MD5)
    if hasattr(base, "_RESOURCES"):  # OxfordIIITPet: two archives
        attrs["_RESOURCES"] = tuple(
            (url(address), md5(address.rsplit("/", 1)[1], value)) for address, value in base._RESOURCES
        )
    if wanted:
        raise VitpeftError(
            f"{name}: torchvision checks no md5 for {', '.join(sorted(wanted))}; "
            f"files with one: {', '.join(expected) or 'none'}"
        )
    # Same class name: DTD names its folder after it.
    return _Source(type(base.__name__, (base,), attrs) if attrs else base, expected, urls)


# ---------------------------------------------------------------- download


def download(name: str, root, mirror: str | None = None, md5s: dict | None = None) -> Path:
    """Fetch `name` into `root` with torchvision's download and md5 code; a no-op check if `root` is there.

    `root` appears only once everything arrived and passed its checks, so a
    killed or failed download leaves no `root` and the next run starts afresh.
    """
    root = Path(root)
    check_needs(name)
    if root.exists() or not get(name).download:  # finished (it only ever appears whole), or placed by the user
        check(name, root, md5s)
        return root
    source = _source(name, mirror, md5s)
    with atomic_path(root) as tmp:
        tmp.mkdir()
        _fetch(name, source, tmp, root)
        # torchvision's own checks after a download vary (STL10 ignores its result): check every file here.
        fix = f"the source at {_where(source)} serves other files than torchvision expects; nothing was kept at {root}"
        _check_files(name, tmp, root, source.md5s, fix)
    return root


def _fetch(name: str, source: _Source, tmp: Path, root: Path) -> None:
    from torchvision.datasets.utils import download_and_extract_archive

    target = get(name)
    try:
        if target.torchvision in ("CIFAR10", "CIFAR100"):
            # CIFAR10.download's own step, without the constructor's plain pickle.load of the batches.
            cls = source.cls
            download_and_extract_archive(cls.url, str(tmp), filename=cls.filename, md5=cls.tgz_md5)
        else:
            source.cls(str(tmp), download=True, **next(iter(target.splits.values())))
    except urllib.error.HTTPError as error:
        raise VitpeftError(f"{name}: download of {error.url} failed: HTTP {error.code} {error.reason}") from None
    except urllib.error.URLError as error:
        raise VitpeftError(f"{name}: cannot download from {_where(source)}: {error.reason}") from None
    except RuntimeError as error:  # torchvision's "File not found or corrupted." after an md5 mismatch
        raise VitpeftError(_failed_md5(name, source, tmp, root) or f"{name}: download failed: {error}") from None
    except (OSError, EOFError, tarfile.TarError, zlib.error, http.client.HTTPException) as error:
        raise VitpeftError(
            f"{name}: download from {_where(source)} broke off or does not extract ({type(error).__name__}: {error}); "
            f"nothing was kept at {root}: run again"
        ) from None


def _where(source: _Source) -> str:
    return ", ".join(source.urls.values())


def _failed_md5(name: str, source: _Source, tmp: Path, root: Path) -> str | None:
    """Which downloaded file failed torchvision's md5 check, as a message."""
    from torchvision.datasets.utils import check_integrity

    for path in (p for pattern in ("*", "*/*") for p in tmp.glob(pattern)):
        if path.name in source.urls and not check_integrity(str(path), source.md5s.get(path.name)):
            return (
                f"{name}: {path.name} downloaded from {source.urls[path.name]} does not match torchvision's md5 "
                f"{source.md5s[path.name]} (a broken transfer, or the server sends another file); "
                f"nothing was kept at {root}: run again"
            )
    return None


# ---------------------------------------------------------------- locating and checking files


def check(name: str, root, md5s: dict | None = None) -> None:
    """Check `root` holds every file torchvision reads for `name`, each passing torchvision's md5 where it has one."""
    root = Path(root)
    if name == "imagefolder":
        _imagefolder_layout(root)
        return
    if not root.is_dir():
        raise VitpeftError(f"{root} not found: {_how_to_get(name, root)}")
    _check_files(name, root, root, _source(name, None, md5s).md5s, _repair(name, root))


def _check_files(name: str, folder: Path, root: Path, md5s: dict, fix: str) -> None:
    """Missing files, then md5 mismatches, named under `root` (what the user sees, never a staging folder)."""
    from torchvision.datasets.utils import check_integrity

    files = get(name).files
    missing = [f for f in files if not ((folder / f).is_dir() if f.endswith("/") else (folder / f).is_file())]
    if missing:
        raise VitpeftError(f"{root} lacks {', '.join(missing)}: {fix}")
    for file in files:
        expected = md5s.get(file.rsplit("/", 1)[-1])
        if expected and not check_integrity(str(folder / file), expected):
            raise VitpeftError(
                f"{root / file} does not match torchvision's md5 {expected} (corrupt, or another release): {fix}"
            )


def _how_to_get(name: str, root: Path) -> str:
    target = get(name)
    if target.download:
        return f"run `vitpeft download-target --dataset {name} --root {root}`"
    return target.how_to_get.replace("ROOT", str(root))


def _repair(name: str, root: Path) -> str:
    # download-target only checks an existing root, so a bad download is fixed by removing all of it.
    return f"delete {root} and {_how_to_get(name, root)}" if get(name).download else _how_to_get(name, root)


# ---------------------------------------------------------------- reading the official splits


@dataclass
class _Split:
    classes: list
    labels: np.ndarray  # int64
    source: str  # what was read, for meta.json
    images: np.ndarray | None = None  # uint8 N x H x W x 3 for datasets shipped as arrays
    paths: list | None = None  # image files otherwise


def _read_splits(name: str, root: Path, md5s: dict | None) -> dict:
    target = get(name)
    if name == "imagefolder":
        return _imagefolder_splits(root)
    check(name, root, md5s)
    cls = _source(name, None, md5s).cls
    if target.torchvision in ("CIFAR10", "CIFAR100"):
        return {split: _cifar(name, cls, root, kwargs["train"]) for split, kwargs in target.splits.items()}
    return {split: _torchvision_split(name, cls, root, split, kwargs) for split, kwargs in target.splits.items()}


def _cifar(name: str, cls, root: Path, train: bool) -> _Split:
    folder = root / cls.base_folder

    def read(file):
        return unpickle_cifar((folder / file).read_bytes(), str(folder / file))

    arrays = [cifar_arrays(read(file), str(folder / file), get(name).classes)
              for file, _ in (cls.train_list if train else cls.test_list)]  # fmt: skip
    try:
        classes = [label.decode() for label in read(cls.meta["filename"])[cls.meta["key"].encode()]]
    except KeyError:
        raise VitpeftError(f"{folder / cls.meta['filename']} lacks {cls.meta['key']!r}") from None
    return _Split(
        classes, np.concatenate([labels for _, labels in arrays]), f"{folder} ({'train' if train else 'test'})",
        images=np.concatenate([images for images, _ in arrays]),
    )


def _torchvision_split(name: str, cls, root: Path, split: str, kwargs: dict) -> _Split:
    """One split's image paths and labels from torchvision's class, nothing decoded yet."""
    takes_loader = "loader" in inspect.signature(cls.__init__).parameters
    described = f"torchvision.datasets.{cls.__name__}({', '.join(f'{k}={v!r}' for k, v in kwargs.items())})"
    try:
        # loader=str: an item is (path, label), so listing decodes nothing.
        dataset = cls(str(root), download=False, **kwargs, **({"loader": str} if takes_loader else {}))
        classes = list(getattr(dataset, "classes", None) or map(str, range(get(name).classes)))
        if get(name).native:  # STL10: N x 3 x 96 x 96 arrays
            return _Split(classes, np.asarray(dataset.labels, dtype=np.int64), f"{described} at {root}",
                          images=np.ascontiguousarray(dataset.data.transpose(0, 2, 3, 1)))  # fmt: skip
        if takes_loader:
            items = [dataset[i] for i in range(len(dataset))]
        else:  # OxfordIIITPet opens its images itself: its listing is only in private attributes
            items = list(zip(dataset._images, dataset._labels))
    except Exception as error:  # torchvision and its parsers (scipy, json) raise many types
        raise VitpeftError(f"{name}: {described} cannot read {root}: {type(error).__name__}: {error}") from None
    paths = [str(path) for path, _ in items]
    labels = np.asarray([label for _, label in items], dtype=np.int64)
    return _Split(classes, labels, f"{described} at {root}", paths=paths)


def _imagefolder_layout(root: Path) -> list:
    """The splits present under root, refusing a missing train/ or an absent evaluation split."""
    if not root.is_dir():
        raise VitpeftError(f"{root} not found: {_how_to_get('imagefolder', root)}")
    if not (root / "train").is_dir():
        raise VitpeftError(f"{root} lacks train/: {_how_to_get('imagefolder', root)}")
    splits = [split for split in ("train", "val", "test") if (root / split).is_dir()]
    if len(splits) == 1:
        raise VitpeftError(f"{root} has train/ but neither val/ nor test/: {_how_to_get('imagefolder', root)}")
    return splits


def _imagefolder_splits(root: Path) -> dict:
    from torchvision.datasets import ImageFolder

    splits = {}
    for split in _imagefolder_layout(root):
        try:
            folder = ImageFolder(str(root / split), loader=str, allow_empty=True)
        except FileNotFoundError:  # torchvision: no class folder at all
            raise VitpeftError(f"{root / split} has no class folders (expected {split}/<class>/<image>)") from None
        labels = np.asarray(folder.targets, dtype=np.int64)
        empty = [c for c, n in zip(folder.classes, np.bincount(labels, minlength=len(folder.classes))) if not n]
        if empty:
            raise VitpeftError(f"{root / split}: {len(empty)} class folders hold no images, e.g. {empty[0]}")
        splits[split] = _Split(folder.classes, labels, f"torchvision.datasets.ImageFolder at {root / split}",
                               paths=[path for path, _ in folder.samples])  # fmt: skip
    train = splits["train"].classes
    for split, part in splits.items():
        if part.classes != train:
            only_train, only_here = sorted(set(train) - set(part.classes)), sorted(set(part.classes) - set(train))
            raise VitpeftError(
                f"{root}: train/ and {split}/ have different class folders ({len(only_train)} only in train, "
                f"e.g. {only_train[:3]}; {len(only_here)} only in {split}, e.g. {only_here[:3]})"
            )
    if "test" not in splits:  # train/ and val/ only: val/ is what the study scores (best_val holds out train)
        splits["test"] = splits.pop("val")
    return splits


def _check_split(name: str, root: Path, split: str, part: _Split) -> None:
    """The class count the registry promises, every class present, every listed image on disk."""
    expected = get(name).classes or len(part.classes)
    if len(part.classes) != expected:
        raise VitpeftError(f"{name} {split} at {root} has {len(part.classes)} classes, expected {expected}")
    labels = part.labels
    if len(labels) == 0 or labels.min() < 0 or labels.max() >= expected:
        raise VitpeftError(f"{name} {split} at {root} has no images or labels outside 0..{expected - 1}")
    absent = [part.classes[i] for i in np.flatnonzero(np.bincount(labels, minlength=expected) == 0)]
    if absent:
        raise VitpeftError(
            f"{name} {split} at {root} has no images of {len(absent)} of its {expected} classes "
            f"(e.g. {absent[:3]}): the copy is incomplete; {_repair(name, root)}"
        )
    missing = [path for path in part.paths or () if not os.path.isfile(path)]
    if missing:
        raise VitpeftError(
            f"{name} {split}: {len(missing)} of the {len(labels)} listed images are not on disk, e.g. {missing[0]}: "
            f"the copy at {root} is incomplete; {_repair(name, root)}"
        )


# ---------------------------------------------------------------- prepare


def prepare(
    name: str, root, out, size: int | None = None, md5s: dict | None = None, workers: int | None = None
) -> dict:
    """Write out/<split> for each official split of `name` read from `root`; returns the image counts.

    All splits are listed and checked before any image is decoded, and they
    appear at `out` together or not at all.
    """
    root, out = Path(root), Path(out)
    side = stored_side(name, size)
    check_needs(name)
    splits = _read_splits(name, root, md5s)
    for split, part in splits.items():
        _check_split(name, root, split, part)
    _check_free_space(out, sum(len(part.labels) for part in splits.values()) * side * side * 3)
    files = sum(len(part.paths or ()) for part in splits.values())
    with atomic_path(out) as tmp, _mapper(workers, files) as mapper:  # one pool for every split
        tmp.mkdir()
        for split, part in splits.items():
            _write(tmp / split, part, side, mapper)
    return {split: len(part.labels) for split, part in splits.items()}


def _check_free_space(out: Path, needed: int) -> None:
    # The images go into a memory-mapped file: a full disk would kill the process (SIGBUS), not raise.
    existing = next(p for p in (out.absolute(), *out.absolute().parents) if p.exists())
    free = shutil.disk_usage(existing).free
    if needed > free:
        raise VitpeftError(f"{out} needs {needed / 1e9:.1f} GB but only {free / 1e9:.1f} GB are free there")


def _write(folder: Path, part: _Split, side: int, mapper) -> None:
    if part.images is not None:  # CIFAR, STL-10: already uint8 arrays at their native size
        store.save(folder, part.images, part.labels, part.classes, source=part.source)
        return
    # The store's format, with images filled in place on disk: Food-101 at 256 is 20 GB.
    folder.mkdir()
    shape = (len(part.paths), side, side, 3)
    images = np.lib.format.open_memmap(folder / "images.npy", mode="w+", dtype=np.uint8, shape=shape)
    for i, (path, image) in enumerate(zip(part.paths, mapper(functools.partial(_decode, side=side), part.paths))):
        if isinstance(image, str):
            raise VitpeftError(f"cannot read image {path}: {image}")
        images[i] = image
        if (i + 1) % REPORT_EVERY == 0:
            print(f"{folder.name}: {i + 1}/{len(part.paths)} images", file=sys.stderr, flush=True)
    images.flush()
    del images
    np.save(folder / "labels.npy", part.labels)
    source = f"{part.source}; squashed to {side}x{side}, PIL bicubic"
    write_json(folder / "meta.json", {"classes": part.classes, "source": source, "count": len(part.labels)})


@contextlib.contextmanager
def _mapper(workers: int | None, count: int):
    """`map`, or a process pool's ordered imap; 'spawn' workers import this module, numpy and PIL, never torch."""
    from vitpeft.data.imagenet import available_cpus, decode_pool

    if workers is None:
        workers = 1 if count < POOL_MIN else min(available_cpus(), 16)
    if workers <= 1 or count == 0:
        yield map
        return
    with decode_pool(workers) as pool:
        yield functools.partial(pool.imap, chunksize=64)


def _decode(path: str, side: int):
    """The image as uint8 side x side x 3 (a squash, no crop), or the error text so the parent can name the file."""
    from PIL import Image

    from vitpeft.data.imagenet_decode import read_rgb

    try:
        return np.asarray(read_rgb(path).resize((side, side), Image.Resampling.BICUBIC), dtype=np.uint8)
    except Exception as error:  # PIL raises many types for bad files
        return f"{type(error).__name__}: {error}"
