"""Target datasets: each one's official layout prepared into the store, downloads through torchvision's real code.

The files are tiny copies in the layout torchvision's class reads
(tests/fake_datasets.py); where torchvision checks md5s, the expected md5s of
these files are passed in (`md5s`), so torchvision's own check runs on them.
Downloads come from a real HTTP server on 127.0.0.1 (tests/httpserver.py).
"""

import json
import os
import re
import subprocess
import sys
import time

import numpy as np
import pytest
import fake_datasets as fakes
from httpserver import serve
from PIL import Image

from vitpeft import cli
from vitpeft.data import store
from vitpeft.data import catalogue
from vitpeft.data import targets
from vitpeft.errors import VitpeftError

SIZE = 8  # stored side for the datasets that are resized: tiny keeps the tests fast


def assert_prepared(out, name, fake, side):
    """Every split written with its labels in order, the class names, and each image showing its label's colour."""
    assert sorted(p.name for p in out.iterdir()) == sorted(fake.splits)
    for split, labels in fake.splits.items():
        data = store.load(out / split)
        assert data.labels.tolist() == labels
        assert data.classes == fake.classes
        assert name == "imagefolder" or len(data.classes) == catalogue.REGISTRY[name].classes
        assert data.images.shape == (len(labels), side, side, 3) and data.images.dtype == np.uint8
        if fake.arrays:
            assert np.array_equal(data.images, fake.arrays[split])  # native size, pixels untouched
        else:
            means = data.images.reshape(len(labels), -1, 3).mean(axis=1)
            assert np.abs(means - [fakes.colour(label) for label in labels]).max() < 4


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "stl10"])
def test_array_datasets_keep_their_native_size_and_pixels(tmp_path, name):
    fake = fakes.WRITERS[name](tmp_path / "root")
    counts = targets.prepare(name, tmp_path / "root", tmp_path / "out", md5s=fake.md5s)
    assert counts == {split: len(labels) for split, labels in fake.splits.items()}
    assert_prepared(tmp_path / "out", name, fake, catalogue.REGISTRY[name].native)


@pytest.mark.parametrize("name", ["flowers102", "food101", "pets37", "dtd", "aircraft", "cars", "imagefolder"])
def test_image_datasets_are_squashed_to_the_stored_size(tmp_path, name):
    fake = fakes.WRITERS[name](tmp_path / "root")
    counts = targets.prepare(name, tmp_path / "root", tmp_path / "out", size=SIZE, md5s=fake.md5s)
    assert counts == {split: len(labels) for split, labels in fake.splits.items()}
    assert_prepared(tmp_path / "out", name, fake, SIZE)


def test_stored_pixels_are_a_bicubic_squash_without_crop(tmp_path):
    fake = fakes.flowers102(tmp_path / "root")
    photo = tmp_path / "root" / "flowers-102" / "jpg" / "image_00002.jpg"  # the second train image
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (30, 50, 3), dtype=np.uint8)).save(photo)  # 50 wide, 30 high
    targets.prepare("flowers102", tmp_path / "root", tmp_path / "out", size=12, md5s=fake.md5s)
    with Image.open(photo) as image:
        expected = np.asarray(image.convert("RGB").resize((12, 12), Image.Resampling.BICUBIC))
    assert np.array_equal(store.load(tmp_path / "out" / "train").images[1], expected)
    meta = json.loads((tmp_path / "out" / "train" / "meta.json").read_text())
    assert "Flowers102(split='train')" in meta["source"] and "squashed to 12x12, PIL bicubic" in meta["source"]


def test_decoding_in_a_process_pool_gives_the_same_store(tmp_path):
    fake = fakes.food101(tmp_path / "root")
    targets.prepare("food101", tmp_path / "root", tmp_path / "one", size=SIZE, workers=1)
    targets.prepare("food101", tmp_path / "root", tmp_path / "pool", size=SIZE, workers=2)
    for split in fake.splits:
        assert np.array_equal(store.load(tmp_path / "one" / split).images, store.load(tmp_path / "pool" / split).images)


def test_decoding_workers_do_not_import_torch():
    import torch  # noqa: F401  (the parent has it, as prepare's does: the workers must not inherit it)

    with targets._mapper(workers=2, count=2) as mapper:
        assert list(mapper(fakes.worker_imports_torch, [0, 1])) == [False, False]


def test_registry_is_read_without_importing_torch():
    code = (
        "import sys, vitpeft.data.catalogue as t; t.REGISTRY['dtd'].classes; t.stored_side('food101');"
        "print('torch' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_list_targets_prints_every_dataset(capsys):
    assert cli.main(["list-targets"]) == 0
    table = capsys.readouterr().out
    for name in catalogue.REGISTRY:
        assert f"| {name} |" in table
    assert "| flowers102 | Flowers102 | 102 | train / val / test | 256x256 squash (--size) | download |" in table


# ---------------------------------------------------------------- downloads through torchvision's code


def test_cifar10_downloads_from_a_local_server_then_prepares(tmp_path, capsys):
    archive, fake = fakes.cifar10_archive(tmp_path / "server")
    root, out = tmp_path / "downloads" / "cifar10", tmp_path / "prepared"
    md5s = [f"--md5={file}={value}" for file, value in fake.md5s.items()]
    with serve(archive.parent) as url:
        assert cli.main(["download-target", "--dataset", "cifar10", "--root", str(root), "--mirror", url, *md5s]) == 0
    assert (root / "cifar-10-python.tar.gz").is_file() and (root / "cifar-10-batches-py" / "data_batch_5").is_file()
    assert cli.main(["prepare-target", "--dataset", "cifar10", "--root", str(root), "--out", str(out), *md5s]) == 0
    assert "wrote" in capsys.readouterr().out
    assert_prepared(out, "cifar10", fake, 32)


def test_dtd_downloads_from_a_local_server_then_prepares(tmp_path):
    archive, fake = fakes.dtd_archive(tmp_path / "server")
    root = tmp_path / "downloads" / "dtd"
    with serve(archive.parent) as url:
        targets.download("dtd", root, mirror=url + "/", md5s=fake.md5s)
    targets.prepare("dtd", root, tmp_path / "out", size=SIZE)
    assert_prepared(tmp_path / "out", "dtd", fake, SIZE)


def test_a_finished_download_is_checked_not_fetched_again(tmp_path):
    archive, fake = fakes.dtd_archive(tmp_path / "server")
    root, requests = tmp_path / "dtd", []
    with serve(archive.parent, requests) as url:
        targets.download("dtd", root, mirror=url, md5s=fake.md5s)
        fetched = len(requests)
        assert targets.download("dtd", root, mirror=url, md5s=fake.md5s) == root
    assert fetched > 0 and len(requests) == fetched


def test_a_download_killed_midway_never_counts_as_done(tmp_path):
    archive, fake = fakes.dtd_archive(tmp_path / "server")
    root = tmp_path / "downloads" / "dtd"
    md5 = f"--md5=dtd-r1.0.1.tar.gz={fake.md5s['dtd-r1.0.1.tar.gz']}"
    with serve(archive.parent) as url:
        argv = ["download-target", "--dataset", "dtd", "--root", str(root), "--mirror", f"{url}/drip", md5]
        job = subprocess.Popen([sys.executable, "-m", "vitpeft.cli", *argv], stderr=subprocess.DEVNULL)
        try:
            while not list(root.parent.glob(".dtd.tmp-*/dtd/dtd-r1.0.1.tar.gz")):  # torchvision is writing the archive
                assert job.poll() is None, "the download ended before it could be killed"
                time.sleep(0.1)
        finally:
            job.kill()
            job.wait()
        assert not root.exists()  # killed with the archive half in: nothing at --root
        assert cli.main(["download-target", "--dataset", "dtd", "--root", str(root), "--mirror", url, md5]) == 0
    targets.prepare("dtd", root, tmp_path / "out", size=SIZE)
    assert_prepared(tmp_path / "out", "dtd", fake, SIZE)


def test_a_download_failing_its_md5_is_named_and_nothing_is_kept(tmp_path, capsys):
    archive, _ = fakes.cifar10_archive(tmp_path / "server")  # torchvision expects the real archive's md5
    root = tmp_path / "cifar10"
    with serve(archive.parent) as url:
        argv = ["download-target", "--dataset", "cifar10", "--root", str(root), "--mirror", url]
        assert cli.main(argv) == 2
    error = capsys.readouterr().err
    served = f"{url}/cifar-10-python.tar.gz"
    assert f"cifar-10-python.tar.gz downloaded from {served} does not match torchvision's md5" in error
    assert f"nothing was kept at {root}" in error and ".tmp-" not in error
    assert not root.exists() and os.listdir(tmp_path) == ["server"]


def test_a_broken_off_download_leaves_nothing_and_the_next_run_completes(tmp_path):
    archive, fake = fakes.dtd_archive(tmp_path / "server")
    root = tmp_path / "dtd"
    with serve(archive.parent) as url:
        with pytest.raises(VitpeftError, match=r"dtd-r1\.0\.1\.tar\.gz downloaded from .*/truncated/.* does not match"):
            targets.download("dtd", root, mirror=f"{url}/truncated", md5s=fake.md5s)  # sends half, then hangs up
        assert not root.exists()
        targets.download("dtd", root, mirror=url, md5s=fake.md5s)
    targets.prepare("dtd", root, tmp_path / "out", size=SIZE)
    assert_prepared(tmp_path / "out", "dtd", fake, SIZE)


def test_a_missing_file_on_the_server_is_named(tmp_path):
    with serve(tmp_path) as url:
        with pytest.raises(VitpeftError, match=rf"food101: download of {url}/food-101\.tar\.gz failed: HTTP 404"):
            targets.download("food101", tmp_path / "food101", mirror=url)
    assert not (tmp_path / "food101").exists()


def test_cars_cannot_be_downloaded_and_says_what_to_place(tmp_path):
    with pytest.raises(VitpeftError, match=r"cars not found: torchvision cannot download Stanford Cars.*"
                       r"stanford_cars/\{devkit/cars_meta\.mat, .*cars_test/\}"):  # fmt: skip
        targets.download("cars", tmp_path / "cars")
    fakes.cars(tmp_path / "cars")
    assert targets.download("cars", tmp_path / "cars") == tmp_path / "cars"  # placed: located and checked


# ---------------------------------------------------------------- bad input: named, nothing half-written


def test_a_corrupt_file_is_named_with_torchvisions_md5_and_nothing_is_written(tmp_path, capsys):
    fake = fakes.cifar10(tmp_path / "root")
    batch = tmp_path / "root" / "cifar-10-batches-py" / "data_batch_3"
    batch.write_bytes(batch.read_bytes()[:-10])
    md5s = [f"--md5={file}={value}" for file, value in fake.md5s.items()]
    argv = ["prepare-target", "--dataset", "cifar10", "--root", str(tmp_path / "root"), "--out", str(tmp_path / "out")]
    assert cli.main(argv + md5s) == 2
    error = capsys.readouterr().err
    assert f"{batch} does not match torchvision's md5 {fake.md5s['data_batch_3']}" in error
    assert f"delete {tmp_path / 'root'} and run `vitpeft download-target --dataset cifar10" in error
    assert not (tmp_path / "out").exists()


def test_a_missing_file_is_named_with_how_to_get_it(tmp_path):
    fake = fakes.flowers102(tmp_path / "root")
    (tmp_path / "root" / "flowers-102" / "setid.mat").unlink()
    message = (
        rf"root lacks flowers-102/setid\.mat: delete {re.escape(str(tmp_path / 'root'))} "
        r"and run `vitpeft download-target --dataset flowers102"
    )
    with pytest.raises(VitpeftError, match=message):
        targets.prepare("flowers102", tmp_path / "root", tmp_path / "out", md5s=fake.md5s)
    with pytest.raises(VitpeftError, match=message):  # and download-target, finding the copy, says the same
        targets.download("flowers102", tmp_path / "root", md5s=fake.md5s)
    assert not (tmp_path / "out").exists()


def test_an_unreadable_image_is_named_and_no_split_is_written(tmp_path):
    fakes.food101(tmp_path / "root")
    broken = tmp_path / "root" / "food-101" / "images" / "dish_050" / "test0.jpg"
    broken.write_bytes(broken.read_bytes()[:40])
    with pytest.raises(VitpeftError, match=r"cannot read image .*dish_050/test0\.jpg"):
        targets.prepare("food101", tmp_path / "root", tmp_path / "out", size=SIZE, workers=1)
    assert os.listdir(tmp_path) == ["root"]  # train was decoded first, yet nothing of it is left


def test_a_listed_image_missing_from_disk_is_named_before_decoding(tmp_path):
    fakes.dtd(tmp_path / "root")
    missing = next((tmp_path / "root" / "dtd" / "dtd" / "images" / "texture07").iterdir())
    missing.unlink()
    message = rf"dtd \w+: 1 of the 47 listed images are not on disk, e.g. {re.escape(str(missing))}: .* incomplete; delete"
    with pytest.raises(VitpeftError, match=message):
        targets.prepare("dtd", tmp_path / "root", tmp_path / "out", size=SIZE)
    assert not (tmp_path / "out").exists()


def test_a_wrong_class_count_is_refused(tmp_path):
    fakes.aircraft(tmp_path / "root")
    variants = tmp_path / "root" / "fgvc-aircraft-2013b" / "data" / "variants.txt"
    variants.write_text(variants.read_text() + "Jet 99-extra\n")
    with pytest.raises(VitpeftError, match=r"aircraft train at .* has 101 classes, expected 100"):
        targets.prepare("aircraft", tmp_path / "root", tmp_path / "out", size=SIZE)


def test_a_split_lacking_a_class_is_refused(tmp_path):
    fakes.pets37(tmp_path / "root")
    listing = tmp_path / "root" / "oxford-iiit-pet" / "annotations" / "test.txt"
    listing.write_text("".join(listing.read_text().splitlines(keepends=True)[:-1]))  # a cut-off list
    with pytest.raises(VitpeftError, match=r"pets37 test at .* has 36 classes, expected 37"):
        targets.prepare("pets37", tmp_path / "root", tmp_path / "out", size=SIZE)


def test_imagefolder_mistakes_are_named(tmp_path):
    root = tmp_path / "mine"
    fakes.imagefolder(root, splits=("train",))
    with pytest.raises(VitpeftError, match=r"mine has train/ but neither val/ nor test/"):
        targets.prepare("imagefolder", root, tmp_path / "out")
    fakes.imagefolder(root, splits=("val",))
    (root / "val" / "cicada").rename(root / "val" / "cricket")
    mismatch = r"train/ and val/ have different class folders \(1 only in train, e.g. \['cicada'\]"
    with pytest.raises(VitpeftError, match=mismatch):
        targets.prepare("imagefolder", root, tmp_path / "out")
    (root / "val" / "cricket").rename(root / "val" / "cicada")
    for image in (root / "train" / "bee").iterdir():
        image.unlink()
    with pytest.raises(VitpeftError, match=r"mine/train: 1 class folders hold no images, e.g. bee"):
        targets.prepare("imagefolder", root, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_with_train_and_val_only_val_is_the_imagefolders_test_split(tmp_path):
    """The study scores the test split; with no test/ folder, val/ is it (best_val then holds out train)."""
    fake = fakes.imagefolder(tmp_path / "mine", splits=("train", "val"))
    assert targets.prepare("imagefolder", tmp_path / "mine", tmp_path / "out", size=SIZE) == {"train": 4, "test": 5}
    fake.splits["test"] = fake.splits.pop("val")
    assert_prepared(tmp_path / "out", "imagefolder", fake, SIZE)


def test_a_missing_scipy_is_named_before_anything_is_fetched(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "scipy", None)  # as if scipy were not installed: its import fails
    requests = []
    with serve(tmp_path, requests) as url:
        with pytest.raises(VitpeftError, match="flowers102: torchvision needs scipy to read it: pip install scipy"):
            targets.download("flowers102", tmp_path / "flowers", mirror=url)
    assert requests == [] and not (tmp_path / "flowers").exists()
    with pytest.raises(VitpeftError, match="cars: torchvision needs scipy"):
        targets.prepare("cars", tmp_path / "cars", tmp_path / "out")


def test_unknown_dataset_lists_the_known_ones(tmp_path, capsys):
    argv = ["prepare-target", "--dataset", "mnist", "--root", str(tmp_path), "--out", str(tmp_path / "out")]
    assert cli.main(argv) == 2
    assert "unknown target dataset 'mnist'; known: cifar10, cifar100, flowers102" in capsys.readouterr().err


def test_bad_arguments_are_refused_before_work(tmp_path, capsys):
    with pytest.raises(VitpeftError, match="cifar10 is stored at its native 32x32; leave out --size"):
        targets.prepare("cifar10", tmp_path, tmp_path / "out", size=224)
    with pytest.raises(VitpeftError, match="torchvision checks no md5 for fgvc-aircraft-2013b.tar.gz"):
        targets.download("aircraft", tmp_path / "a", md5s={"fgvc-aircraft-2013b.tar.gz": "0" * 32})
    with pytest.raises(VitpeftError, match=r"nowhere not found: run `vitpeft download-target --dataset dtd"):
        targets.prepare("dtd", tmp_path / "nowhere", tmp_path / "out")
    argv = ["download-target", "--dataset", "dtd", "--root", str(tmp_path / "d"), "--md5", "dtd.tar.gz=xyz"]
    assert cli.main(argv) == 2
    assert "--md5 takes FILE=MD5 with 32 hex digits, got 'dtd.tar.gz=xyz'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists() and not (tmp_path / "a").exists() and not (tmp_path / "d").exists()
