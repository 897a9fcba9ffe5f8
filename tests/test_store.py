"""Prepared dataset folders and atomic writes: whole or absent, never half-written."""

import shutil

import numpy as np
import pytest

from vitpeft.data import store
from vitpeft.errors import VitpeftError
from vitpeft.fileio import atomic_path


def test_round_trip_and_memory_map(tmp_path):
    images = np.arange(4 * 8 * 8 * 3, dtype=np.uint8).reshape(4, 8, 8, 3)
    store.save(tmp_path / "d", images, [0, 1, 2, 1], ["a", "b", "c"], source="test")
    loaded = store.load(tmp_path / "d", mmap=True)
    assert isinstance(loaded.images, np.memmap)
    assert np.array_equal(loaded.images, images) and loaded.labels.tolist() == [0, 1, 2, 1]
    assert loaded.classes == ["a", "b", "c"] and len(loaded) == 4


def test_bad_arrays_and_missing_files_are_named(tmp_path):
    with pytest.raises(VitpeftError, match="uint8"):
        store.save(tmp_path / "d", np.zeros((2, 8, 8, 3), np.float32), [0, 1], ["a", "b"])
    with pytest.raises(VitpeftError, match="2 images but 3 labels"):
        store.save(tmp_path / "d", np.zeros((2, 8, 8, 3), np.uint8), [0, 1, 1], ["a", "b"])
    assert not (tmp_path / "d").exists()
    (tmp_path / "e").mkdir()
    with pytest.raises(VitpeftError, match="missing images.npy, labels.npy, meta.json"):
        store.load(tmp_path / "e")


def test_atomic_path_leaves_the_old_version_when_the_block_fails(tmp_path):
    target = tmp_path / "run"
    with atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "weights").write_text("v1")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.mkdir()
            (tmp / "weights").write_text("half")
            raise RuntimeError("killed mid-write")
    assert (target / "weights").read_text() == "v1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    with atomic_path(target) as tmp:  # a folder replaces a folder
        tmp.mkdir()
        (tmp / "weights").write_text("v2")
    assert (target / "weights").read_text() == "v2"


def sharded(tmp_path, sizes=(3, 1, 4), classes=("a", "b", "c")):
    """A sharded dataset of consecutive images split into shards of `sizes`; returns (folder, images, labels)."""
    total = sum(sizes)
    images = np.arange(total * 2 * 2 * 3, dtype=np.uint32).astype(np.uint8).reshape(total, 2, 2, 3)
    labels = np.arange(total) % len(classes)
    folder, names, start = tmp_path / "bank", [], 0
    for i, size in enumerate(sizes):
        names.append(f"part{i}")
        store.save(folder / names[-1], images[start : start + size], labels[start : start + size], classes, source="t")
        start += size
    assert store.write_index(folder, names, source="test", split="train") == total
    return folder, images, labels


def test_sharded_dataset_reads_like_one_array(tmp_path):
    folder, images, labels = sharded(tmp_path)
    data = store.load(folder, mmap=True)
    assert isinstance(data.images, store.ShardedImages)
    assert len(data) == len(data.images) == 8 and data.images.shape == (8, 2, 2, 3) and data.images.dtype == np.uint8
    assert data.labels.tolist() == labels.tolist() and data.classes == ["a", "b", "c"]
    for key in (slice(0, 8), slice(2, 5), slice(3, 4), slice(1, 100), slice(-3, None), slice(5, 2), slice(0, 8, 3)):
        batch = data.images[key]
        assert isinstance(batch, np.ndarray) and np.array_equal(batch, images[key]), key
    for row in (0, 3, 4, 7, -1, -8):
        assert np.array_equal(data.images[row], images[row])
    assert np.array_equal(data.images[np.array([7, 0, 4, 3, -1])], images[[7, 0, 4, 3, -1]])
    assert np.array_equal(np.asarray(data.images), images) and np.array_equal(np.stack(list(data.images)), images)
    with pytest.raises(IndexError):
        data.images[8]
    # Without mmap the shards are read into one in-RAM array.
    in_ram = store.load(folder)
    assert type(in_ram.images) is np.ndarray and np.array_equal(in_ram.images, images)


def test_sharded_dataset_refuses_missing_or_mismatched_shards(tmp_path):
    folder, images, labels = sharded(tmp_path)
    store.save(folder / "part1", images[3:4], labels[3:4], ["a", "b", "z"])
    with pytest.raises(VitpeftError, match=r"bank/part1 lists other classes than .*bank/meta.json"):
        store.load(folder, mmap=True)
    store.save(folder / "part1", np.zeros((1, 3, 3, 3), np.uint8), [0], ["a", "b", "c"])
    with pytest.raises(VitpeftError, match=r"bank/part1 holds \(3, 3, 3\) images, .*bank/part0 \(2, 2, 3\)"):
        store.load(folder, mmap=True)
    store.save(folder / "part1", images[3:5], labels[3:5], ["a", "b", "c"])
    with pytest.raises(VitpeftError, match=r"bank: its shards hold 9 images, meta.json says 8"):
        store.load(folder, mmap=True)
    shutil.rmtree(folder / "part2")
    with pytest.raises(VitpeftError, match=r"bank/part2 is not a prepared dataset \(missing images.npy"):
        store.load(folder, mmap=True)
