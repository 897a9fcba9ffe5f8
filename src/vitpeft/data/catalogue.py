"""The target datasets (the public code's list): a torch-free table, read while planning.

`REGISTRY` names each dataset's torchvision class, its official splits, its
class count and how its images are stored; `stored_side` is the side a
prepared dataset's images have. vitpeft.data.targets downloads and prepares them.
"""

import importlib.util
from dataclasses import dataclass

from vitpeft.errors import VitpeftError

DEFAULT_SIZE = 256


@dataclass(frozen=True)
class Target:
    torchvision: str  # class name in torchvision.datasets
    splits: dict  # stored split -> that class's keyword arguments for it
    classes: int | None  # None: the user's class folders decide
    train_images: int | None  # the official train split's size (a task sequence scales its steps by it); None: yours
    files: tuple = ()  # what the class reads, relative to --root; a trailing "/" marks a folder
    native: int | None = None  # side of fixed-size originals, stored as they are
    download: bool = True  # False: torchvision cannot fetch it; the user places the files
    needs: tuple = ()  # modules torchvision's class imports only once it reads (scipy for .mat files)
    page: str = ""
    terms: str = ""
    how_to_get: str = ""  # for data the user places


def _batches(folder, names):
    return tuple(f"{folder}/{name}" for name in names)


REGISTRY = {
    "cifar10": Target(
        "CIFAR10", {"train": {"train": True}, "test": {"train": False}}, 10, 50_000,
        _batches("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]),
        native=32, page="https://www.cs.toronto.edu/~kriz/cifar.html", terms="see its page",
    ),
    "cifar100": Target(
        "CIFAR100", {"train": {"train": True}, "test": {"train": False}}, 100, 50_000,
        _batches("cifar-100-python", ["train", "test", "meta"]),
        native=32, page="https://www.cs.toronto.edu/~kriz/cifar.html", terms="see its page",
    ),
    "flowers102": Target(
        "Flowers102", {"train": {"split": "train"}, "val": {"split": "val"}, "test": {"split": "test"}}, 102, 1_020,
        ("flowers-102/jpg/", "flowers-102/imagelabels.mat", "flowers-102/setid.mat"), needs=("scipy",),
        page="https://www.robots.ox.ac.uk/~vgg/data/flowers/102/", terms="see its page",
    ),
    "food101": Target(
        "Food101", {"train": {"split": "train"}, "test": {"split": "test"}}, 101, 75_750,
        ("food-101/images/", "food-101/meta/train.json", "food-101/meta/test.json"),
        page="https://data.vision.ee.ethz.ch/cvl/datasets_extra/food-101/", terms="see its page",
    ),
    "pets37": Target(
        "OxfordIIITPet", {"train": {"split": "trainval"}, "test": {"split": "test"}}, 37, 3_680,
        ("oxford-iiit-pet/images/", "oxford-iiit-pet/annotations/trainval.txt", "oxford-iiit-pet/annotations/test.txt"),
        page="https://www.robots.ox.ac.uk/~vgg/data/pets/", terms="see its page",
    ),
    "stl10": Target(
        "STL10", {"train": {"split": "train"}, "test": {"split": "test"}}, 10, 5_000,
        _batches("stl10_binary", ["train_X.bin", "train_y.bin", "test_X.bin", "test_y.bin", "unlabeled_X.bin"]),
        native=96, page="https://cs.stanford.edu/~acoates/stl10/", terms="see its page (images from ImageNet)",
    ),
    "dtd": Target(
        "DTD",
        {split: {"split": split, "partition": 1} for split in ("train", "val", "test")}, 47, 1_880,
        ("dtd/dtd/images/", "dtd/dtd/labels/train1.txt", "dtd/dtd/labels/val1.txt", "dtd/dtd/labels/test1.txt"),
        page="https://www.robots.ox.ac.uk/~vgg/data/dtd/", terms="see its page",
    ),
    "aircraft": Target(
        "FGVCAircraft",
        {split: {"split": split, "annotation_level": "variant"} for split in ("train", "val", "test")}, 100, 3_334,
        _batches("fgvc-aircraft-2013b/data", ["images/", "variants.txt"] + [
            f"images_variant_{split}.txt" for split in ("train", "val", "test")]),
        page="https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/",
        terms="non-commercial research only; photographers keep the copyright (its README)",
    ),
    "cars": Target(
        "StanfordCars", {"train": {"split": "train"}, "test": {"split": "test"}}, 196, 8_144,
        _batches("stanford_cars", ["devkit/cars_meta.mat", "devkit/cars_train_annos.mat", "cars_train/",
                                   "cars_test_annos_withlabels.mat", "cars_test/"]),
        download=False, needs=("scipy",), page="https://ai.stanford.edu/~jkrause/cars/car_dataset.html (offline)",
        terms="see the copy you obtain",
        how_to_get=(
            "torchvision cannot download Stanford Cars (its original URL is gone and StanfordCars.download "
            "refuses): get the images and devkit, with cars_test_annos_withlabels.mat, from a copy you trust "
            "and place them as ROOT/stanford_cars/{devkit/cars_meta.mat, devkit/cars_train_annos.mat, "
            "cars_train/, cars_test_annos_withlabels.mat, cars_test/}"
        ),
    ),
    "imagefolder": Target(
        "ImageFolder", {"train": {}, "val": {}, "test": {}}, None, None, ("train/",),
        download=False, terms="yours",
        how_to_get=(
            "place your images as ROOT/train/<class>/<image> and ROOT/val/<class>/... and/or ROOT/test/<class>/..."
        ),
    ),
}  # fmt: skip


def get(name: str) -> Target:
    if name not in REGISTRY:
        raise VitpeftError(f"unknown target dataset {name!r}; known: {', '.join(REGISTRY)}")
    return REGISTRY[name]


def check_needs(name: str) -> None:
    # Before any download: torchvision imports these only after fetching, to read what it fetched.
    missing = [module for module in get(name).needs if importlib.util.find_spec(module) is None]
    if missing:
        needed = " ".join(missing)
        raise VitpeftError(f"{name}: torchvision needs {needed} to read it: pip install {needed}")


def stored_side(name: str, size: int | None = None) -> int:
    """The side of the stored images: the native one for CIFAR and STL-10, else `size` (default 256)."""
    target = get(name)
    if target.native:
        if size not in (None, target.native):
            raise VitpeftError(f"{name} is stored at its native {target.native}x{target.native}; leave out --size")
        return target.native
    size = DEFAULT_SIZE if size is None else size
    if size < 1:
        raise VitpeftError(f"--size must be positive, got {size}")
    return size
