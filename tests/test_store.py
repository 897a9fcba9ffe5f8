"""Prepared dataset folders and atomic writes: whole or absent, never half-written."""

import numpy as np
import pytest

from vitpeft import store
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
