"""Dataset preparation from the real formats: CIFAR-100's pickle archive and an ImageNet ImageFolder."""

import hashlib
import io
import json
import pickle
import tarfile

import numpy as np
import pytest
from httpserver import serve
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from vitpeft import cli, datasets, store
from vitpeft.errors import VitpeftError

# ---------------------------------------------------------------- CIFAR-100


def cifar_split(n, seed):
    rng = np.random.default_rng(seed)
    return {
        b"filenames": [f"img_{i}.png".encode() for i in range(n)],
        b"batch_label": b"training batch 1 of 1",
        b"fine_labels": [int(v) for v in rng.integers(0, 100, n)],
        b"coarse_labels": [int(v) for v in rng.integers(0, 20, n)],
        b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),  # channel-major rows, as in the real file
    }


def cifar_meta():
    return {
        b"fine_label_names": [f"fine{i:02d}".encode() for i in range(100)],
        b"coarse_label_names": [f"coarse{i:02d}".encode() for i in range(20)],
    }


def write_cifar_archive(path, members):
    """A cifar-100-python.tar.gz: protocol-2 pickles under cifar-100-python/, like the official one."""
    with tarfile.open(path, "w:gz") as tar:
        for name, content in members.items():
            data = pickle.dumps(content, protocol=2)
            info = tarfile.TarInfo(f"cifar-100-python/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture
def cifar(tmp_path):
    parts = {"train": cifar_split(12, seed=0), "test": cifar_split(5, seed=1), "meta": cifar_meta()}
    return write_cifar_archive(tmp_path / "cifar-100-python.tar.gz", parts), parts


def test_download_then_prepare_cifar100_end_to_end(tmp_path, cifar):
    archive, parts = cifar
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    downloaded, out = tmp_path / "dl" / "cifar.tar.gz", tmp_path / "cifar100"
    with serve(archive.parent) as url:
        assert cli.main(["download", "--url", f"{url}/{archive.name}", "--out", str(downloaded), "--md5", md5]) == 0
    assert cli.main(["prepare-cifar100", "--archive", str(downloaded), "--out", str(out)]) == 0
    for split, n in (("train", 12), ("test", 5)):
        data = store.load(out / split)
        assert data.images.shape == (n, 32, 32, 3) and data.images.dtype == np.uint8
        assert data.labels.tolist() == parts[split][b"fine_labels"]
        assert data.classes == [f"fine{i:02d}" for i in range(100)]
        rows = parts[split][b"data"]
        # Row layout: 1024 red, then 1024 green, then 1024 blue values, each row-major over 32 x 32.
        for image, row in ((data.images[0], rows[0]), (data.images[-1], rows[-1])):
            assert image[0, 0].tolist() == [row[0], row[1024], row[2048]]
            assert image[2, 5].tolist() == [row[2 * 32 + 5], row[1024 + 2 * 32 + 5], row[2048 + 2 * 32 + 5]]


def test_truncated_archive_is_named_and_writes_nothing(tmp_path, cifar):
    archive, _ = cifar
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(VitpeftError, match=r"cut\.tar\.gz is not a readable CIFAR-100 archive"):
        datasets.prepare_cifar100(cut, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_corrupt_archive_is_named_and_writes_nothing(tmp_path, capsys):
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    assert cli.main(["prepare-cifar100", "--archive", str(junk), "--out", str(tmp_path / "out")]) == 2
    assert "junk.tar.gz is not a readable CIFAR-100 archive" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_missing_member_is_named(tmp_path):
    archive = write_cifar_archive(tmp_path / "nometa.tar.gz", {"train": cifar_split(3, 0), "test": cifar_split(2, 1)})
    with pytest.raises(VitpeftError, match=r"nometa\.tar\.gz lacks cifar-100-python/meta"):
        datasets.prepare_cifar100(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()


class RunsCode:
    def __reduce__(self):
        import os

        return (os.system, ("echo pwned",))


def test_pickles_that_would_run_code_are_refused(tmp_path):
    archive = write_cifar_archive(
        tmp_path / "evil.tar.gz", {"train": {b"data": RunsCode()}, "test": cifar_split(2, 1), "meta": cifar_meta()}
    )
    with pytest.raises(VitpeftError, match=r"cifar-100-python/train is not a readable CIFAR pickle.*refusing"):
        datasets.prepare_cifar100(archive, tmp_path / "out")


def test_wrong_data_shape_is_named(tmp_path):
    bad = cifar_split(3, 0)
    bad[b"data"] = bad[b"data"][:, :100]
    archive = write_cifar_archive(tmp_path / "c.tar.gz", {"train": bad, "test": cifar_split(2, 1), "meta": cifar_meta()})
    with pytest.raises(VitpeftError, match=r"train has data \(3, 100\)"):
        datasets.prepare_cifar100(archive, tmp_path / "out")


# ---------------------------------------------------------------- ImageNet

CLASSES = ["n01", "n02", "n03"]
COLOURS = {"n01": (200, 30, 30), "n02": (30, 200, 30), "n03": (30, 30, 200)}


def write_jpeg(path, colour, size, seed):
    """A JPEG of one colour plus mild noise, so every file is distinct."""
    rng = np.random.default_rng(seed)
    pixels = np.clip(np.array(colour) + rng.integers(-10, 10, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, quality=95)


@pytest.fixture
def imagenet(tmp_path):
    """train: 4 images per class, val: 2 (3 for n02), of varied sizes and aspect ratios."""
    root = tmp_path / "imagenet"
    sizes = [(40, 30), (30, 50), (33, 33), (64, 24)]
    for c, name in enumerate(CLASSES):
        for i in range(4):
            write_jpeg(root / "train" / name / f"{name}_{i}.JPEG", COLOURS[name], sizes[i], seed=10 * c + i)
        for i in range(3 if name == "n02" else 2):
            write_jpeg(root / "val" / name / f"val_{c}{i}.JPEG", COLOURS[name], sizes[-1 - i], seed=100 + 10 * c + i)
    return root


def test_prepare_imagenet_shapes_labels_and_dino_preprocessing(tmp_path, imagenet):
    out = tmp_path / "cache"
    argv = ["prepare-imagenet", "--root", str(imagenet), "--out", str(out), "--bank-per-class", "3",
            "--resize", "20", "--crop", "16", "--workers", "2"]  # fmt: skip
    assert cli.main(argv) == 0
    bank, queries = store.load(out / "bank", mmap=True), store.load(out / "queries")
    assert bank.images.shape == (9, 16, 16, 3) and queries.images.shape == (7, 16, 16, 3)
    assert bank.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert queries.labels.tolist() == [0, 0, 1, 1, 1, 2, 2]
    assert bank.classes == queries.classes == CLASSES
    # Per-class limit keeps the first files in sorted order; pixels are DINO's Resize(bicubic) + CenterCrop.
    with Image.open(imagenet / "train" / "n02" / "n02_2.JPEG") as image:
        expected = TF.center_crop(TF.resize(image.convert("RGB"), 20, interpolation=InterpolationMode.BICUBIC), 16)
    assert np.array_equal(bank.images[5], np.asarray(expected))
    for image, label in zip(queries.images, queries.labels):
        assert np.abs(image.mean(axis=(0, 1)) - COLOURS[CLASSES[label]]).max() < 12
    meta = json.loads((out / "bank" / "meta.json").read_text())
    assert meta["count"] == 9


def test_unreadable_image_is_named_and_writes_nothing(tmp_path, imagenet):
    broken = imagenet / "val" / "n03" / "val_21.JPEG"
    broken.write_bytes(broken.read_bytes()[:200])  # a truncated JPEG
    with pytest.raises(VitpeftError, match=r"cannot read image .*val_21\.JPEG"):
        datasets.prepare_imagenet(imagenet, tmp_path / "cache", resize=20, crop=16, workers=1)
    assert not (tmp_path / "cache").exists()


def test_check_imagenet_summary_via_cli(imagenet, capsys):
    assert cli.main(["check-imagenet", "--root", str(imagenet)]) == 0
    assert json.loads(capsys.readouterr().out) == {"classes": 3, "train": 12, "val": 7}


def remove_tree(path):
    for child in path.iterdir():
        child.unlink()
    path.rmdir()


def test_missing_val_is_named(imagenet, capsys):
    for folder in list((imagenet / "val").iterdir()):
        remove_tree(folder)
    (imagenet / "val").rmdir()
    assert cli.main(["check-imagenet", "--root", str(imagenet)]) == 2
    assert "lacks val/" in capsys.readouterr().err


def test_class_mismatch_is_named(imagenet):
    (imagenet / "val" / "n03").rename(imagenet / "val" / "n04")
    with pytest.raises(VitpeftError, match=r"different class folders \(1 only in train, e.g. \['n03'\]; 1 only in val"):
        datasets.check_imagenet(imagenet)


def test_empty_class_is_named(imagenet):
    remove_tree(imagenet / "train" / "n02")
    (imagenet / "train" / "n02").mkdir()
    with pytest.raises(VitpeftError, match=r"train: 1 class folders hold no images, e.g. n02"):
        datasets.check_imagenet(imagenet)


def test_flat_val_folder_gets_a_hint(imagenet):
    for image in (imagenet / "val").rglob("*.JPEG"):
        image.rename(imagenet / "val" / image.name)
    for folder in [p for p in (imagenet / "val").iterdir() if p.is_dir()]:
        folder.rmdir()
    with pytest.raises(VitpeftError, match=r"val has no class folders but 7 loose files: sort them into class folders"):
        datasets.check_imagenet(imagenet)


def test_bad_limits_are_refused_before_work(tmp_path, imagenet):
    with pytest.raises(VitpeftError, match="--bank-per-class must be positive"):
        datasets.prepare_imagenet(imagenet, tmp_path / "cache", bank_per_class=0)
    with pytest.raises(VitpeftError, match="crop <= resize"):
        datasets.prepare_imagenet(imagenet, tmp_path / "cache", resize=16, crop=20)
    assert not (tmp_path / "cache").exists()


def test_not_enough_disk_is_refused_before_decoding(tmp_path, imagenet):
    # 19 images at 10^6 x 10^6 pixels need 57 TB: refused up front, not a SIGBUS mid-write.
    with pytest.raises(VitpeftError, match=r"needs 57000\.0 GB but only .* GB are free"):
        datasets.prepare_imagenet(imagenet, tmp_path / "cache", resize=10**6, crop=10**6)
    assert not (tmp_path / "cache").exists()
