"""Tiny copies of each target dataset in the on-disk layout torchvision's class reads.

Each writer fills `root` (torchvision's `root` argument) and returns a Fake:
the labels per split in the order the images should come out, the class
names, and the md5 of every file torchvision checks (passed as `md5s` so the
real check runs against these small files). Image files hold one colour per
class (`colour(label)`), so a stored image shows which label it carries.
"""

import hashlib
import json
import pickle
import sys
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

SIZES = [(9, 7), (6, 11), (8, 8)]  # varied sizes and aspect ratios: the store squashes them


@dataclass
class Fake:
    splits: dict  # split -> labels, in torchvision's order
    classes: list
    md5s: dict = field(default_factory=dict)  # file name -> md5, for the files torchvision checks
    arrays: dict = field(default_factory=dict)  # split -> uint8 N x H x W x 3, for datasets shipped as arrays


def worker_imports_torch(_) -> bool:
    """Run in a decoding worker: has that process imported torch?"""
    return "torch" in sys.modules


def colour(label: int) -> tuple:
    return (label * 37 % 256, label * 91 % 256, (label * 53 + 128) % 256)


def md5(path) -> str:
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


def write_jpeg(path: Path, label: int, index: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    width, height = SIZES[index % len(SIZES)]
    Image.fromarray(np.full((height, width, 3), colour(label), dtype=np.uint8)).save(path, quality=95)


def one_per_class(classes: int, splits) -> dict:
    """Every class once in every split, in a shuffled order (so order mistakes show)."""
    rng = np.random.default_rng(0)
    return {split: rng.permutation(classes).tolist() for split in splits}


def savemat(path: Path, content: dict) -> None:
    from scipy.io import savemat as write

    path.parent.mkdir(parents=True, exist_ok=True)
    write(str(path), content)


def tar_gz(path: Path, folder: Path, arcname: str) -> Path:
    """`folder` packed as `arcname` inside a .tar.gz, as the official archives are."""
    with tarfile.open(path, "w:gz") as tar:
        tar.add(folder, arcname=arcname)
    return path


# ---------------------------------------------------------------- arrays: CIFAR, STL-10


def cifar10(root: Path) -> Fake:
    """cifar-10-batches-py/: data_batch_1..5, test_batch, batches.meta (protocol-2 pickles, bytes keys).

    Each batch holds every class once, in its own order.
    """
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    fake = Fake(splits={"train": [], "test": []}, classes=[f"thing{i}" for i in range(10)])
    arrays = {"train": [], "test": []}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        split = "test" if name == "test_batch" else "train"
        labels = rng.permutation(10).tolist()
        rows = rng.integers(0, 256, (len(labels), 3072), dtype=np.uint8)  # channel-major rows, as in the real files
        batch = {b"batch_label": name.encode(), b"labels": labels, b"data": rows,
                 b"filenames": [f"{name}_{i}.png".encode() for i in range(len(labels))]}  # fmt: skip
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
        fake.splits[split] += labels
        arrays[split].append(rows.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    meta = {b"num_cases_per_batch": 10, b"label_names": [c.encode() for c in fake.classes], b"num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    fake.arrays = {split: np.concatenate(parts) for split, parts in arrays.items()}
    fake.md5s = {path.name: md5(path) for path in folder.iterdir()}
    return fake


def cifar_archive(folder: Path, writer, inner: str, archive_name: str) -> tuple:
    """The official archive (`archive_name`) holding `inner`/ as `writer` makes it, and the Fake with its md5."""
    fake = writer(folder / "unpacked")
    archive = tar_gz(folder / archive_name, folder / "unpacked" / inner, inner)
    fake.md5s[archive.name] = md5(archive)
    return archive, fake


def cifar10_archive(folder: Path) -> tuple:
    return cifar_archive(folder, cifar10, "cifar-10-batches-py", "cifar-10-python.tar.gz")


def cifar100(root: Path) -> Fake:
    """cifar-100-python/: train, test, meta (fine_labels, fine_label_names)."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(3)
    fake = Fake(splits=one_per_class(100, ("train", "test")), classes=[f"fine{i:02d}" for i in range(100)])
    for split, labels in fake.splits.items():
        rows = rng.integers(0, 256, (len(labels), 3072), dtype=np.uint8)
        part = {b"filenames": [b"x.png"] * len(labels), b"batch_label": split.encode(), b"fine_labels": labels,
                b"coarse_labels": [label // 5 for label in labels], b"data": rows}  # fmt: skip
        (folder / split).write_bytes(pickle.dumps(part, protocol=2))
        fake.arrays[split] = rows.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    meta = {b"fine_label_names": [c.encode() for c in fake.classes], b"coarse_label_names": [b"c"] * 20}
    (folder / "meta").write_bytes(pickle.dumps(meta, protocol=2))
    fake.md5s = {path.name: md5(path) for path in folder.iterdir()}
    return fake


def cifar100_archive(folder: Path) -> tuple:
    return cifar_archive(folder, cifar100, "cifar-100-python", "cifar-100-python.tar.gz")


def stl10(root: Path) -> Fake:
    """stl10_binary/: {train,test}_X.bin (N x 3 x 96 x 96, each channel column-major), _y.bin (1-based), unlabeled."""
    folder = root / "stl10_binary"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(2)
    fake = Fake(splits=one_per_class(10, ("train", "test")), classes=[f"animal{i}" for i in range(10)])
    for split, labels in fake.splits.items():
        images = rng.integers(0, 256, (len(labels), 96, 96, 3), dtype=np.uint8)
        (folder / f"{split}_X.bin").write_bytes(images.transpose(0, 3, 2, 1).tobytes())  # channel, column, row
        (folder / f"{split}_y.bin").write_bytes((np.asarray(labels, dtype=np.uint8) + 1).tobytes())
        fake.arrays[split] = images
    (folder / "unlabeled_X.bin").write_bytes(rng.integers(0, 256, 3 * 96 * 96, dtype=np.uint8).tobytes())
    (folder / "class_names.txt").write_text("\n".join(fake.classes) + "\n")
    fake.md5s = {path.name: md5(path) for path in folder.glob("*.bin")}
    return fake


# ---------------------------------------------------------------- image files


def flowers102(root: Path) -> Fake:
    """flowers-102/: jpg/image_NNNNN.jpg, imagelabels.mat (1-based labels), setid.mat (trnid, valid, tstid)."""
    import torchvision

    folder = root / "flowers-102"
    classes = list(torchvision.datasets.Flowers102.classes)
    fake = Fake(splits=one_per_class(102, ("train", "val", "test")), classes=classes)
    ids, labels = {}, []
    for split, split_labels in fake.splits.items():
        ids[split] = []
        for label in split_labels:
            labels.append(label + 1)
            ids[split].append(len(labels))
            write_jpeg(folder / "jpg" / f"image_{len(labels):05d}.jpg", label, len(labels))
    savemat(folder / "imagelabels.mat", {"labels": np.asarray([labels], dtype=np.uint8)})
    keys = {"trnid": "train", "valid": "val", "tstid": "test"}
    savemat(folder / "setid.mat", {key: np.asarray([ids[split]], dtype=np.uint16) for key, split in keys.items()})
    fake.md5s = {name: md5(folder / name) for name in ("imagelabels.mat", "setid.mat")}
    return fake


def food101(root: Path) -> Fake:
    """food-101/: images/<class>/<id>.jpg and meta/{train,test}.json ({class: ["class/id", ...]})."""
    folder = root / "food-101"
    classes = sorted(f"dish_{i:03d}" for i in range(101))
    fake = Fake(splits={}, classes=classes)
    for split in ("train", "test"):
        listing = {name: [f"{name}/{split}{i}" for i in range(1 + (c % 2))] for c, name in enumerate(classes)}
        for c, name in enumerate(classes):
            for i, entry in enumerate(listing[name]):
                write_jpeg(folder / "images" / f"{entry}.jpg", c, i)
        (folder / "meta").mkdir(parents=True, exist_ok=True)
        (folder / "meta" / f"{split}.json").write_text(json.dumps(listing))
        fake.splits[split] = [c for c, name in enumerate(classes) for _ in listing[name]]
    return fake


def pets37(root: Path) -> Fake:
    """oxford-iiit-pet/: images/<Breed_name>_<n>.jpg and annotations/{trainval,test}.txt ("id class species breed")."""
    folder = root / "oxford-iiit-pet"
    breeds = [f"breed_{chr(97 + i // 26)}{chr(97 + i % 26)}" for i in range(37)]
    fake = Fake(splits=one_per_class(37, ("train", "test")), classes=[b.replace("_", " ").title() for b in breeds])
    for split, file in (("train", "trainval.txt"), ("test", "test.txt")):
        lines = []
        for n, label in enumerate(fake.splits[split]):
            image_id = f"{breeds[label]}_{split}{n}"
            write_jpeg(folder / "images" / f"{image_id}.jpg", label, n)
            lines.append(f"{image_id} {label + 1} {1 + label % 2} {label // 2 + 1}")
        (folder / "annotations").mkdir(parents=True, exist_ok=True)
        (folder / "annotations" / file).write_text("\n".join(lines) + "\n")
    return fake


def dtd(root: Path) -> Fake:
    """dtd/dtd/: images/<class>/<class>_NNNN.jpg and labels/{train,val,test}1.txt ("class/file.jpg")."""
    folder = root / "dtd" / "dtd"
    classes = sorted(f"texture{i:02d}" for i in range(47))
    fake = Fake(splits=one_per_class(47, ("train", "val", "test")), classes=classes)
    (folder / "labels").mkdir(parents=True)
    for split, labels in fake.splits.items():
        entries = [f"{classes[label]}/{classes[label]}_{split}{n}.jpg" for n, label in enumerate(labels)]
        for n, (entry, label) in enumerate(zip(entries, labels)):
            write_jpeg(folder / "images" / entry, label, n)
        (folder / "labels" / f"{split}1.txt").write_text("\n".join(entries) + "\n")
    return fake


def dtd_archive(folder: Path) -> tuple:
    """dtd-r1.0.1.tar.gz holding dtd/ (images/, labels/), and the Fake with the archive's md5."""
    fake = dtd(folder / "unpacked")
    archive = tar_gz(folder / "dtd-r1.0.1.tar.gz", folder / "unpacked" / "dtd" / "dtd", "dtd")
    fake.md5s = {archive.name: md5(archive)}
    return archive, fake


def aircraft(root: Path) -> Fake:
    """fgvc-aircraft-2013b/data/: images/<id>.jpg, variants.txt, images_variant_{train,val,test}.txt ("id Variant")."""
    folder = root / "fgvc-aircraft-2013b" / "data"
    classes = [f"Jet {i:02d}-{100 + i}" for i in range(100)]  # names with spaces, as "Boeing 737-700"
    fake = Fake(splits=one_per_class(100, ("train", "val", "test")), classes=classes)
    folder.mkdir(parents=True)
    (folder / "variants.txt").write_text("\n".join(classes) + "\n")
    for split, labels in fake.splits.items():
        lines = []
        for n, label in enumerate(labels):
            image_id = f"{split[:2]}{n:05d}"
            write_jpeg(folder / "images" / f"{image_id}.jpg", label, n)
            lines.append(f"{image_id} {classes[label]}")
        (folder / f"images_variant_{split}.txt").write_text("\n".join(lines) + "\n")
    return fake


def cars(root: Path) -> Fake:
    """stanford_cars/: devkit/{cars_meta,cars_train_annos}.mat, cars_test_annos_withlabels.mat, cars_{train,test}/."""
    folder = root / "stanford_cars"
    classes = [f"Maker Model {i} 2012" for i in range(196)]
    fake = Fake(splits=one_per_class(196, ("train", "test")), classes=classes)
    savemat(folder / "devkit" / "cars_meta.mat", {"class_names": np.asarray([classes], dtype=object)})
    fields = [("bbox_x1", "O"), ("bbox_y1", "O"), ("bbox_x2", "O"), ("bbox_y2", "O"), ("class", "O"), ("fname", "O")]
    for split, annos in (("train", "devkit/cars_train_annos.mat"), ("test", "cars_test_annos_withlabels.mat")):
        records = np.zeros((1, len(fake.splits[split])), dtype=fields)
        for n, label in enumerate(fake.splits[split]):
            fname = f"{n + 1:05d}.jpg"
            write_jpeg(folder / f"cars_{split}" / fname, label, n)
            records[0, n] = (1, 1, 5, 5, label + 1, fname)
        savemat(folder / annos, {"annotations": records})
    return fake


def imagefolder(root: Path, splits=("train", "val", "test")) -> Fake:
    """train/<class>/*.jpg and val/, test/ alike; labels follow the sorted class folders."""
    classes = ["ant", "bee", "cicada"]
    fake = Fake(splits={}, classes=classes)
    for s, split in enumerate(splits):
        fake.splits[split] = []
        for label, name in enumerate(classes):
            for i in range(1 + (label + s) % 2):
                write_jpeg(root / split / name / f"{name}_{i}.jpg", label, i)
                fake.splits[split].append(label)
    return fake


WRITERS = {
    "cifar10": cifar10, "cifar100": cifar100, "stl10": stl10, "flowers102": flowers102, "food101": food101,
    "pets37": pets37, "dtd": dtd, "aircraft": aircraft, "cars": cars, "imagefolder": imagefolder,
}  # fmt: skip
