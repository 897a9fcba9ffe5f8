"""ImageNet from an ImageFolder copy: the layout check, torch-free decoding identical to torchvision,
independent shard jobs, their index, and the faults a cluster run meets (corrupt files, killed jobs)."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import worker_probe
from PIL import Image
from torchvision.datasets.folder import pil_loader
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from vitpeft import cli
from vitpeft.data import imagenet
from vitpeft import progress
from vitpeft.data import store
from vitpeft.errors import VitpeftError
from vitpeft.data.imagenet_decode import decode, write_rows

CLASSES = ["n01", "n02", "n03"]
COLOURS = {"n01": (200, 30, 30), "n02": (30, 200, 30), "n03": (30, 30, 200)}


def write_jpeg(path, colour, size, seed):
    """A JPEG of one colour plus mild noise, so every file is distinct."""
    rng = np.random.default_rng(seed)
    pixels = np.clip(np.array(colour) + rng.integers(-10, 10, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, quality=95)


def photo(size, seed) -> Image.Image:
    """Smooth colour gradients plus texture, so bicubic resampling sees edges and detail as in a photo."""
    width, height = size
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(size)
    phases = rng.uniform(0, 6.3, 3)
    smooth = np.stack([np.sin(7 * x + 3 * y + p) for p in phases], axis=-1) * 90 + 128
    pixels = smooth + rng.normal(0, 25, (height, width, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def torchvision_pixels(path, resize, crop) -> np.ndarray:
    """What the landed code and DINO compute: ImageFolder's loader, Resize(bicubic), CenterCrop."""
    resized = TF.resize(pil_loader(str(path)), resize, interpolation=InterpolationMode.BICUBIC)
    return np.asarray(TF.center_crop(resized, crop))


@pytest.fixture
def imagenet_copy(tmp_path):
    """train: 4 images per class, val: 2 (3 for n02), of varied sizes and aspect ratios."""
    root = tmp_path / "imagenet"
    sizes = [(40, 30), (30, 50), (33, 33), (64, 24)]
    for c, name in enumerate(CLASSES):
        for i in range(4):
            write_jpeg(root / "train" / name / f"{name}_{i}.JPEG", COLOURS[name], sizes[i], seed=10 * c + i)
        for i in range(3 if name == "n02" else 2):
            write_jpeg(root / "val" / name / f"val_{c}{i}.JPEG", COLOURS[name], sizes[-1 - i], seed=100 + 10 * c + i)
    return root


def shard_argv(root, out, split, shard, shards, *extra):
    return ["prepare-imagenet-shard", "--root", str(root), "--split", split, "--shard", str(shard),
            "--shards", str(shards), "--out", str(out), "--resize", "20", "--crop", "16", "--workers", "1", *extra]  # fmt: skip


# ---------------------------------------------------------------- decoding


# (size, how the file is stored): ImageNet holds all of these (CMYK and grayscale JPEGs, a PNG among JPEGs).
ODD_IMAGES = {
    "landscape.JPEG": ((517, 343), "RGB", "JPEG"),
    "portrait.JPEG": ((301, 451), "RGB", "JPEG"),
    "small_upscaled.JPEG": ((40, 27), "RGB", "JPEG"),
    "grayscale.JPEG": ((390, 288), "L", "JPEG"),
    "cmyk.JPEG": ((333, 500), "CMYK", "JPEG"),
    "alpha.png": ((300, 260), "RGBA", "PNG"),
    "palette.png": ((280, 300), "P", "PNG"),
    "no_resize_offset_16.5.JPEG": ((257, 256), "RGB", "JPEG"),  # round(16.5) = 16 (half to even)
    "no_resize_offset_17.5.JPEG": ((256, 259), "RGB", "JPEG"),  # round(17.5) = 18
}


@pytest.mark.parametrize("name", sorted(ODD_IMAGES))
def test_decoding_is_byte_identical_to_torchvision(tmp_path, name):
    size, mode, file_format = ODD_IMAGES[name]
    image = photo(size, seed=len(name))
    if mode == "RGBA":
        image.putalpha(Image.fromarray(np.linspace(0, 255, size[0] * size[1]).astype(np.uint8).reshape(size[::-1])))
    else:
        image = image.convert(mode)
    image.save(tmp_path / name, file_format, **({"quality": 90} if file_format == "JPEG" else {}))
    with Image.open(tmp_path / name) as stored:
        assert stored.mode == ("RGB" if mode == "RGB" else mode)
    expected = torchvision_pixels(tmp_path / name, 256, 224)
    assert expected.shape == (224, 224, 3)
    assert decode(tmp_path / name, 256, 224) == expected.tobytes()


def test_decoding_workers_never_import_torch(tmp_path, imagenet_copy):
    plan = imagenet.plan_split(imagenet_copy, "train")
    rows = np.lib.format.open_memmap(tmp_path / "rows.npy", mode="w+", dtype=np.uint8, shape=(12, 16, 16, 3))
    task = (str(tmp_path / "rows.npy"), rows.offset, 0, plan.paths(range(12)), 20, 16)
    with imagenet.decode_pool(1) as pool:
        count, failed = pool.apply(write_rows, (task,))
        modules = pool.apply(worker_probe.imported_modules)  # the same (only) worker
        tunables = pool.apply(os.getenv, ("GLIBC_TUNABLES",))
    assert tunables == imagenet.WORKER_MALLOC and "GLIBC_TUNABLES" not in os.environ  # the parent's is restored
    assert (count, failed) == (12, [])
    assert np.array_equal(rows[7], torchvision_pixels(imagenet_copy / "train" / plan.files[7], 20, 16))
    assert "PIL.Image" in modules and "vitpeft.data.imagenet_decode" in modules
    assert [m for m in modules if m.split(".")[0] in ("torch", "torchvision")] == []
    assert "torch" in sys.modules  # this test process has torch: spawned workers do not inherit it


# ---------------------------------------------------------------- the shard plan


def test_shard_ranges_are_contiguous_near_equal_and_cover_every_image():
    for total, shards in ((10, 3), (1281167, 16), (50000, 16), (7, 7), (5, 1)):
        ranges = [imagenet.shard_range(total, shards, i) for i in range(shards)]
        assert ranges[0].start == 0 and ranges[-1].stop == total
        assert all(a.stop == b.start for a, b in zip(ranges, ranges[1:]))
        assert max(map(len, ranges)) - min(map(len, ranges)) <= 1
    assert [list(r) for r in (imagenet.shard_range(10, 3, i) for i in range(3))] == [[0, 1, 2], [3, 4, 5], [6, 7, 8, 9]]


def test_plan_is_sorted_capped_and_labelled_by_train_class_order(imagenet_copy):
    plan = imagenet.plan_split(imagenet_copy, "val", per_class=2)
    assert plan.classes == CLASSES
    assert plan.files == ["n01/val_00.JPEG", "n01/val_01.JPEG", "n02/val_10.JPEG", "n02/val_11.JPEG",
                          "n03/val_20.JPEG", "n03/val_21.JPEG"]  # fmt: skip
    assert plan.labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert imagenet.plan_split(imagenet_copy, "val", per_class=2).listing_sha256 == plan.listing_sha256
    assert imagenet.plan_split(imagenet_copy, "val").listing_sha256 != plan.listing_sha256


# ---------------------------------------------------------------- shards and the index


def test_shard_jobs_and_the_index_make_one_dataset(tmp_path, imagenet_copy, capsys):
    out = tmp_path / "cache"
    for split, shards in (("train", 3), ("val", 2)):
        for shard in reversed(range(shards)):  # jobs finish in any order
            assert cli.main(shard_argv(imagenet_copy, out, split, shard, shards)) == 0
    assert (out / "bank" / "shard-00002-of-00003" / "meta.json").is_file()
    assert cli.main(["index-imagenet", "--out", str(out), "--shards", "3", "--query-shards", "2"]) == 0
    assert "indexed" in capsys.readouterr().out

    bank, queries = store.load(out / "bank", mmap=True), store.load(out / "queries", mmap=True)
    assert isinstance(bank.images, store.ShardedImages) and len(bank.images) == len(bank) == 12
    assert bank.images.shape == (12, 16, 16, 3) and queries.images.shape == (7, 16, 16, 3)
    assert bank.labels.tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2]
    assert queries.labels.tolist() == [0, 0, 1, 1, 1, 2, 2]
    assert bank.classes == queries.classes == CLASSES
    files = sorted((imagenet_copy / "train").rglob("*.JPEG"))
    for row in (0, 3, 4, 11):  # shard 0 holds rows 0-3, shard 1 rows 4-7
        assert np.array_equal(bank.images[row], torchvision_pixels(files[row], 20, 16))

    # One process with one shard per split writes the same images.
    one = tmp_path / "one"
    assert cli.main(["prepare-imagenet", "--root", str(imagenet_copy), "--out", str(one),
                     "--resize", "20", "--crop", "16", "--workers", "2"]) == 0  # fmt: skip
    whole = store.load(one / "bank")
    assert isinstance(whole.images, np.ndarray) and np.array_equal(np.asarray(bank.images), whole.images)
    assert np.array_equal(bank.images[2:9], whole.images[2:9])  # across two shard boundaries
    assert np.array_equal(store.load(out / "queries").images, store.load(one / "queries").images)
    meta = json.loads((out / "bank" / "meta.json").read_text())
    assert meta["shards"] == [f"shard-0000{i}-of-00003" for i in range(3)] and meta["count"] == 12


def test_a_finished_shard_is_not_redone(tmp_path, imagenet_copy, capsys):
    out = tmp_path / "cache"
    assert cli.main(shard_argv(imagenet_copy, out, "train", 1, 2)) == 0
    images = out / "bank" / "shard-00001-of-00002" / "images.npy"
    written = images.stat().st_mtime_ns
    capsys.readouterr()
    assert cli.main(shard_argv(imagenet_copy, out, "train", 1, 2)) == 0
    assert "is already prepared" in capsys.readouterr().err
    assert images.stat().st_mtime_ns == written
    # Other settings are another shard: it is written again.
    assert cli.main(shard_argv(imagenet_copy, out, "train", 1, 2, "--per-class", "3")) == 0
    assert images.stat().st_mtime_ns != written


def test_the_index_names_missing_shards_and_shards_of_another_plan(tmp_path, imagenet_copy, capsys):
    out = tmp_path / "cache"
    for shard in range(2):
        assert cli.main(shard_argv(imagenet_copy, out, "val", shard, 2)) == 0
    assert cli.main(shard_argv(imagenet_copy, out, "train", 0, 2)) == 0
    capsys.readouterr()
    assert cli.main(["index-imagenet", "--out", str(out), "--shards", "2"]) == 2
    error = capsys.readouterr().err
    assert "bank lacks 1 of 2 shards (shard-00001-of-00002)" in error
    assert "--split train --shards 2 --shard I` for I in 1," in error
    assert len(error.strip().splitlines()) == 1
    assert not (out / "bank" / "meta.json").exists() and not (out / "queries" / "meta.json").exists()

    assert cli.main(shard_argv(imagenet_copy, out, "train", 1, 2, "--per-class", "3")) == 0
    assert cli.main(["index-imagenet", "--out", str(out), "--shards", "2"]) == 2
    assert "shard-00001-of-00002 was prepared with other per_class, total, listing_sha256 than" in capsys.readouterr().err
    with pytest.raises(VitpeftError, match=r"bank lacks 4 of 4 shards .*for I in 0 1 2 3, then index again"):
        imagenet.index_imagenet(out, 4)


def test_a_corrupt_image_names_file_and_shard_and_nothing_counts(tmp_path, imagenet_copy, capsys):
    broken = imagenet_copy / "val" / "n03" / "val_21.JPEG"
    broken.write_bytes(broken.read_bytes()[:200])  # a truncated JPEG
    (imagenet_copy / "val" / "n01" / "val_00.JPEG").write_bytes(b"not an image")
    out = tmp_path / "cache"
    assert cli.main(shard_argv(imagenet_copy, out, "val", 1, 2)) == 2
    error = capsys.readouterr().err
    assert len(error.strip().splitlines()) == 1
    assert f"shard 1/2 val: 1 image cannot be read: {broken} (OSError: " in error
    assert "Replace each with a good copy" in error
    assert not (out / "queries").exists() or list((out / "queries").iterdir()) == []
    assert cli.main(shard_argv(imagenet_copy, out, "val", 0, 2)) == 2
    assert "val_00.JPEG (UnidentifiedImageError: cannot identify image file" in capsys.readouterr().err


def test_a_killed_shard_job_never_counts_and_its_rerun_finishes(tmp_path):
    root, out = tmp_path / "imagenet", tmp_path / "cache"
    base = np.asarray(photo((640, 480), seed=0))
    for split, count in (("train", 120), ("val", 1)):
        (root / split / "n01").mkdir(parents=True)
        for i in range(count):  # enough work (about 0.5 s) to be killed in the middle of it
            Image.fromarray(np.roll(base, 5 * i, axis=1)).save(root / split / "n01" / f"{i:04d}.JPEG", quality=90)
    argv = [sys.executable, "-m", "vitpeft.cli", *shard_argv(root, out, "train", 0, 1)]
    argv[argv.index("--resize") + 1 : argv.index("--crop") + 2] = ["256", "--crop", "224"]
    job = subprocess.Popen(argv, start_new_session=True, stderr=subprocess.PIPE)
    temporary = out / "bank" / ".shard-00000-of-00001.tmp-{}".format(job.pid)
    deadline = time.monotonic() + 60
    while not (temporary / "images.npy").exists() and time.monotonic() < deadline:
        time.sleep(0.005)
    assert job.poll() is None, "the job finished before it could be killed"
    os.killpg(job.pid, signal.SIGKILL)  # as SLURM's time limit or the OOM killer would
    job.wait()
    assert not (out / "bank" / "shard-00000-of-00001").exists()
    assert temporary.exists()  # what a killed job leaves: never taken for a shard
    with pytest.raises(VitpeftError, match="bank lacks 1 of 1 shards"):
        imagenet.index_imagenet(out, 1)

    rerun = subprocess.run(argv, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert "shard 0/1 train: 120/120 images" in rerun.stderr
    assert sorted(p.name for p in (out / "bank").iterdir()) == ["shard-00000-of-00001"]
    shard = store.load(out / "bank" / "shard-00000-of-00001", mmap=True)
    for row in (0, 77, 119):
        assert np.array_equal(shard.images[row], torchvision_pixels(root / "train" / "n01" / f"{row:04d}.JPEG", 256, 224))


def test_a_refused_write_is_one_line_naming_the_shard(tmp_path, imagenet_copy, capsys):
    out = tmp_path / "cache"
    out.mkdir()
    (out / "bank").write_text("a file where the bank folder goes")
    assert cli.main(shard_argv(imagenet_copy, out, "train", 0, 2)) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1
    assert error.startswith(
        f"vitpeft prepare-imagenet-shard: error: cannot write {out / 'bank' / 'shard-00000-of-00002'}: "
        f"{out / 'bank'} is a file, not a folder ("
    )
    assert error.endswith("; choose another path")


def test_bad_shard_settings_are_refused_before_work(tmp_path, imagenet_copy, capsys):
    out = tmp_path / "cache"
    for argv, message in (
        (shard_argv(imagenet_copy, out, "train", 3, 3), "--shard must be in 0..2 (shards are numbered from 0), got 3"),
        (shard_argv(imagenet_copy, out, "train", 0, 0), "--shards must be positive, got 0"),
        (shard_argv(imagenet_copy, out, "val", 0, 8), "has 7 images (after the per-class cap), fewer than --shards 8"),
        (shard_argv(imagenet_copy, out, "train", 0, 2, "--per-class", "0"), "--per-class must be positive"),
        (shard_argv(imagenet_copy, out, "train", 0, 2, "--workers", "0"), "--workers must be positive, got 0"),
        (["index-imagenet", "--out", str(out), "--shards", "0"], "--shards must be positive"),
        (["index-imagenet", "--out", str(out), "--shards", "2", "--query-shards", "0"], "--query-shards must be positive"),
    ):
        assert cli.main(argv) == 2
        assert message in capsys.readouterr().err
    assert not out.exists()


# ---------------------------------------------------------------- progress


def test_progress_lines_give_count_rate_and_time_left(capsys):
    assert progress.progress_line("shard 3/16 train", 12000, 83000, 56.6) == (
        "shard 3/16 train: 12000/83000 images, 212 img/s, 5 min 35 s left"
    )
    assert progress.progress_line("shard 0/1 val", 10, 20, 5) == "shard 0/1 val: 10/20 images, 2 img/s, 5 s left"
    assert progress.progress_line("s", 1, 100000, 10) == "s: 1/100000 images, 0 img/s, 277 h 46 min left"
    now = [0.0]
    shard = progress.Progress("shard 1/2 train", 100, every_s=30, every_n=50, clock=lambda: now[0])
    for _ in range(4):
        now[0] += 10
        shard.advance(5)  # a line at 30 s
    shard.advance(45)  # and one at 50 images since the last line
    shard.finish()
    assert capsys.readouterr().err.splitlines() == [
        "shard 1/2 train: 15/100 images, 0 img/s, 2 min 50 s left",
        "shard 1/2 train: 65/100 images, 2 img/s, 22 s left",
        "shard 1/2 train: 65/100 images, 2 img/s, done in 40 s",
    ]


# ---------------------------------------------------------------- the one-process wrapper and the layout check


def test_prepare_imagenet_shapes_labels_and_dino_preprocessing(tmp_path, imagenet_copy):
    out = tmp_path / "cache"
    argv = ["prepare-imagenet", "--root", str(imagenet_copy), "--out", str(out), "--bank-per-class", "3",
            "--resize", "20", "--crop", "16", "--workers", "2", "--shards", "2"]  # fmt: skip
    assert cli.main(argv) == 0
    bank, queries = store.load(out / "bank", mmap=True), store.load(out / "queries")
    assert bank.images.shape == (9, 16, 16, 3) and queries.images.shape == (7, 16, 16, 3)
    assert bank.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert queries.labels.tolist() == [0, 0, 1, 1, 1, 2, 2]
    assert bank.classes == queries.classes == CLASSES
    # Per-class limit keeps the first files in sorted order; pixels are DINO's Resize(bicubic) + CenterCrop.
    assert np.array_equal(bank.images[5], torchvision_pixels(imagenet_copy / "train" / "n02" / "n02_2.JPEG", 20, 16))
    for image, label in zip(queries.images, queries.labels):
        assert np.abs(image.mean(axis=(0, 1)) - COLOURS[CLASSES[label]]).max() < 12
    meta = json.loads((out / "bank" / "meta.json").read_text())
    assert meta["count"] == 9 and meta["per_class"] == 3 and meta["resize"] == 20


def test_unreadable_image_is_named_and_writes_nothing(tmp_path, imagenet_copy):
    broken = imagenet_copy / "val" / "n03" / "val_21.JPEG"
    broken.write_bytes(broken.read_bytes()[:200])  # a truncated JPEG
    with pytest.raises(VitpeftError, match=r"shard 0/1 val: 1 image cannot be read: .*val_21\.JPEG"):
        imagenet.prepare_imagenet(imagenet_copy, tmp_path / "cache", resize=20, crop=16, workers=1)
    assert list(tmp_path.iterdir()) == [imagenet_copy]


def test_check_imagenet_summary_via_cli(imagenet_copy, capsys):
    assert cli.main(["check-imagenet", "--root", str(imagenet_copy)]) == 0
    assert json.loads(capsys.readouterr().out) == {"classes": 3, "train": 12, "val": 7}


def remove_tree(path):
    for child in path.iterdir():
        child.unlink()
    path.rmdir()


def test_missing_val_is_named(imagenet_copy, capsys):
    for folder in list((imagenet_copy / "val").iterdir()):
        remove_tree(folder)
    (imagenet_copy / "val").rmdir()
    assert cli.main(["check-imagenet", "--root", str(imagenet_copy)]) == 2
    assert "lacks val/" in capsys.readouterr().err


def test_class_mismatch_is_named(imagenet_copy):
    (imagenet_copy / "val" / "n03").rename(imagenet_copy / "val" / "n04")
    with pytest.raises(VitpeftError, match=r"different class folders \(1 only in train, e.g. \['n03'\]; 1 only in val"):
        imagenet.check_imagenet(imagenet_copy)
    with pytest.raises(VitpeftError, match=r"different class folders"):
        imagenet.plan_split(imagenet_copy, "val")


def test_empty_class_is_named(imagenet_copy):
    remove_tree(imagenet_copy / "train" / "n02")
    (imagenet_copy / "train" / "n02").mkdir()
    with pytest.raises(VitpeftError, match=r"train: 1 class folders hold no images, e.g. n02"):
        imagenet.check_imagenet(imagenet_copy)


def test_flat_val_folder_gets_a_hint(imagenet_copy):
    for image in (imagenet_copy / "val").rglob("*.JPEG"):
        image.rename(imagenet_copy / "val" / image.name)
    for folder in [p for p in (imagenet_copy / "val").iterdir() if p.is_dir()]:
        folder.rmdir()
    with pytest.raises(VitpeftError, match=r"val has no class folders but 7 loose files: sort them into class folders"):
        imagenet.check_imagenet(imagenet_copy)


def test_bad_limits_are_refused_before_work(tmp_path, imagenet_copy):
    with pytest.raises(VitpeftError, match="--bank-per-class must be positive"):
        imagenet.prepare_imagenet(imagenet_copy, tmp_path / "cache", bank_per_class=0)
    with pytest.raises(VitpeftError, match="crop <= resize"):
        imagenet.prepare_imagenet(imagenet_copy, tmp_path / "cache", resize=16, crop=20)
    assert not (tmp_path / "cache").exists()


def test_not_enough_disk_is_refused_before_decoding(tmp_path, imagenet_copy):
    # 19 images at 10^6 x 10^6 pixels need 57 TB: refused up front, not a SIGBUS mid-write.
    with pytest.raises(VitpeftError, match=r"needs 57000\.0 GB but only .* GB are free"):
        imagenet.prepare_imagenet(imagenet_copy, tmp_path / "cache", resize=10**6, crop=10**6)
    with pytest.raises(VitpeftError, match=r"shard-00000-of-00002 needs 18000\.0 GB but only .* GB are free"):
        imagenet.prepare_shard(imagenet_copy, "train", 0, 2, tmp_path / "cache", resize=10**6, crop=10**6)
    assert not (tmp_path / "cache").exists()
