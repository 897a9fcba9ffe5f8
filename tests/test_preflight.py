"""Unwritable folders and full disks: refused before step 1, or one line with the path and free space.

Tests run as root, and permission bits do not stop root, so every case is made
real another way: a path through a regular file (ENOTDIR), and small tmpfs
mounts, full (ENOSPC) or remounted read-only (EROFS).
"""

import os
import re
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from conftest import TINY_MODEL
from vitpeft import cli
from vitpeft.methods import registry
from vitpeft.study import preflight
from vitpeft.training import resume
from vitpeft.data import store
from vitpeft.study import spec as spec_lib
from vitpeft.errors import VitpeftError
from vitpeft.training.train import disk_estimate


@pytest.fixture
def tmpfs(tmp_path):
    """Factory: a fresh tmpfs of `kib` KiB, mounted under tmp_path (needs root, as these tests run)."""
    points = []

    def mount(kib: int, read_only: bool = False):
        point = tmp_path / f"mount{len(points)}"
        point.mkdir()
        options = f"size={kib}k" + (",ro" if read_only else "")
        command = ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)]
        done = subprocess.run(command, capture_output=True, text=True)
        assert done.returncode == 0, f"these tests mount a tmpfs and need root: {done.stderr.strip()}"
        points.append(point)
        return point

    yield mount
    for point in points:
        subprocess.run(["umount", "-l", str(point)], check=True)


@pytest.fixture
def spec_file(tmp_path):
    """A small full fine-tuning spec (every weight trains: the biggest checkpoints) and its data."""
    rng = np.random.default_rng(0)
    store.save(tmp_path / "data", rng.integers(0, 256, (32, 32, 32, 3), dtype=np.uint8), np.arange(32) % 4,
               list("abcd"))
    spec = spec_lib.resolve({
        "name": "disk", "method": "full", "model": TINY_MODEL, "num_classes": 4,
        "data": {"train": str(tmp_path / "data")},
        "train": {"steps": 60, "batch_size": 8, "warmup_steps": 2, "lr": 0.01, "log_every": 10, "checkpoint_every": 10},
    })
    (tmp_path / "spec.yaml").write_text(spec_lib.dump(spec))
    return tmp_path / "spec.yaml"


def train_cli(spec_file, out, resume_dir) -> list:
    return ["train", "--spec", str(spec_file), "--out", str(out), "--resume-dir", str(resume_dir), "--device", "cpu"]


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.strip().splitlines()[-1]


def test_a_file_in_the_output_path_is_refused_before_step_1(tmp_path, spec_file, capsys):
    (tmp_path / "notes.txt").write_text("a file, not a folder")
    assert cli.main(train_cli(spec_file, tmp_path / "notes.txt" / "run", tmp_path / ".resume")) == 2
    line = one_error_line(capsys)
    assert f"notes.txt{os.sep}run" in line and "notes.txt is a file, not a folder" in line and "--out" in line
    assert not (tmp_path / ".resume").exists()

    assert cli.main(train_cli(spec_file, tmp_path / "run", tmp_path / "notes.txt" / "resume")) == 2
    assert "resume checkpoints (--resume-dir)" in one_error_line(capsys)
    assert not (tmp_path / "run").exists()


def test_a_read_only_file_system_is_refused_before_step_1(tmp_path, spec_file, tmpfs, capsys):
    read_only = tmpfs(1024, read_only=True)
    assert cli.main(train_cli(spec_file, read_only / "run", tmp_path / ".resume")) == 2
    line = one_error_line(capsys)
    assert str(read_only / "run") in line and "read-only" in line
    assert cli.main(train_cli(spec_file, tmp_path / "run", read_only / ".resume")) == 2
    assert "read-only" in one_error_line(capsys)
    assert not (tmp_path / "run").exists() and not (tmp_path / ".resume").exists()


def test_a_disk_too_small_for_the_checkpoints_is_refused_before_step_1(tmp_path, spec_file, tmpfs, capsys):
    small = tmpfs(1024)
    spec = spec_lib.load(spec_file)
    run_bytes, resume_bytes = disk_estimate(spec, registry.count_trainable(spec))
    assert run_bytes < 2**20 < run_bytes + resume_bytes  # the run folder alone fits in 1 MiB, with checkpoints not
    assert cli.main(train_cli(spec_file, small / "run", small / ".resume")) == 2
    line = one_error_line(capsys)
    assert "not enough disk space for the run folder in" in line and "and resume checkpoints in" in line
    assert "MiB free" in line and "needs about" in line
    assert os.listdir(small) == []  # not even a resume folder

    # The same run fits when its resume checkpoints go to a roomy disk: needs are per disk.
    assert cli.main(train_cli(spec_file, small / "run", tmp_path / ".resume")) == 0
    assert os.listdir(small) == ["run"]


def fill(folder) -> None:
    """Write a file until the disk is full."""
    with open(folder / "filler", "wb", buffering=0) as handle:
        try:
            while True:
                handle.write(b"\0" * 4096)
        except OSError as error:
            assert error.errno == 28  # ENOSPC


def test_a_disk_that_fills_up_mid_run_ends_in_one_line_and_the_rerun_continues(tmp_path, spec_file, tmpfs):
    disk = tmpfs(16 * 1024)
    args = train_cli(spec_file, disk / "run", disk / ".resume")
    process = subprocess.Popen([sys.executable, "-m", "vitpeft.cli", *args], env={**os.environ, "OMP_NUM_THREADS": "1"},
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300  # a hang guard only: the machine is shared
    while not list((disk / ".resume").glob("*/last.pt")):
        assert process.poll() is None, process.communicate()[1][-2000:]
        assert time.monotonic() < deadline, "no resume checkpoint within 300 s"
        time.sleep(0.01)
    fill(disk)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 2, stderr[-2000:]
    last = stderr.strip().splitlines()[-1]
    assert "Traceback" not in stderr and "unexpected pos" not in stderr
    assert last.startswith(f"vitpeft train: error: cannot write {disk}") and "the disk is full (" in last
    assert " free on " in last and "free some space there" in last
    assert not (disk / "run").exists()

    (disk / "filler").unlink()  # space again: the same command continues from the last checkpoint
    assert cli.main(args) == 0
    assert (disk / "run" / "trainable.safetensors").exists()


def test_a_checkpoint_on_a_full_disk_names_the_disk_not_torchs_writer(tmpfs):
    disk = tmpfs(64)
    state = {"spec_hash": "x", "step": 1, "trainable": {"w": torch.zeros(100_000)}, "optimizer": {}, "scaler": {},
             "selection": {}, "log": [], "pending_loss": torch.zeros(()), "wall_seconds": 0.0}
    with pytest.raises(VitpeftError, match=re.escape(f"cannot write {disk / 'r' / 'last.pt'}: the disk is full")):
        resume.save(disk / "r", state)
    with pytest.raises(VitpeftError, match="the disk is full"):
        resume.save_snapshot(disk / "r", 10, {"w": torch.zeros(100_000)})
    assert os.listdir(disk / "r") in ([], [resume.CURVE])  # no temporaries left
    assert not list((disk / "r").rglob("*.safetensors"))


def test_preflight_checks_create_nothing_and_add_up_needs_on_one_disk(tmp_path, tmpfs):
    preflight.writable(tmp_path / "not" / "yet")
    assert os.listdir(tmp_path) == []  # probed where it will be made, and removed
    free = shutil.disk_usage(tmp_path).free
    with pytest.raises(VitpeftError, match=f"not enough disk space for features in {tmp_path}: needs about"):
        preflight.free_space(tmp_path, free + 2**30, "features")

    disk = tmpfs(1024)  # 1 MiB: 600 KiB fits, twice 600 KiB on the same disk does not
    preflight.room_for([(disk / "a", 600 * 1024, "a"), (tmp_path, 600 * 1024, "b")])
    with pytest.raises(VitpeftError, match=f"a in {disk / 'a'} and b in {disk / 'b'}"):
        preflight.room_for([(disk / "a", 600 * 1024, "a"), (disk / "b", 600 * 1024, "b")])
