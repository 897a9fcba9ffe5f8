"""Dataset preparation from the real formats: CIFAR-100's pickle archive (ImageNet: tests/test_imagenet.py)."""

import hashlib
import io
import pickle
import tarfile

import numpy as np
import pytest
from httpserver import serve

from vitpeft import cli
from vitpeft.data import cifar
from vitpeft.data import store
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
def cifar_archive(tmp_path):
    parts = {"train": cifar_split(12, seed=0), "test": cifar_split(5, seed=1), "meta": cifar_meta()}
    return write_cifar_archive(tmp_path / "cifar-100-python.tar.gz", parts), parts


def test_download_then_prepare_cifar100_end_to_end(tmp_path, cifar_archive):
    archive, parts = cifar_archive
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


def test_truncated_archive_is_named_and_writes_nothing(tmp_path, cifar_archive):
    archive, _ = cifar_archive
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(VitpeftError, match=r"cut\.tar\.gz is not a readable CIFAR-100 archive"):
        cifar.prepare_cifar100(cut, tmp_path / "out")
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
        cifar.prepare_cifar100(archive, tmp_path / "out")
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
        cifar.prepare_cifar100(archive, tmp_path / "out")


def test_wrong_data_shape_is_named(tmp_path):
    bad = cifar_split(3, 0)
    bad[b"data"] = bad[b"data"][:, :100]
    archive = write_cifar_archive(tmp_path / "c.tar.gz", {"train": bad, "test": cifar_split(2, 1), "meta": cifar_meta()})
    with pytest.raises(VitpeftError, match=r"train has data \(3, 100\)"):
        cifar.prepare_cifar100(archive, tmp_path / "out")
