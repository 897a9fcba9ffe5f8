"""Resume checkpoints: atomic rotation, damaged files, foreign specs, signals, and real kills."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import TINY_MODEL, UNPINNED
from vitpeft import cli, digests
from vitpeft.training import resume
from vitpeft.data import store
from vitpeft.study import spec as spec_lib
from vitpeft.errors import VitpeftError
from vitpeft.training.draws import load_data
from vitpeft.training.train import Run, train


def make_spec(data="data", method="full", **train_overrides):
    return spec_lib.resolve({
        "name": f"tiny_{method}", "method": method, "model": TINY_MODEL, "num_classes": 4, "data": {"train": str(data)},
        "train": {"steps": 60, "batch_size": 8, "warmup_steps": 5, "lr": 0.01, "checkpoint_every": 10,
                  "log_every": 10, **train_overrides},
    })


def fake_state(spec, step):
    return {"spec_hash": spec_lib.spec_hash(spec), "step": step, "trainable": {"w": torch.full((3,), float(step))},
            "optimizer": {}, "scaler": {}, "selection": {}, "log": [{"step": step}], "pending_loss": torch.zeros(()),
            "wall_seconds": 1.0}


# ---------------------------------------------------------------- the checkpoint files


def test_save_rotates_last_into_prev_and_load_reads_the_newest(tmp_path):
    spec = make_spec()
    resume.save(tmp_path / "r", fake_state(spec, 10))
    resume.save(tmp_path / "r", fake_state(spec, 20))
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == ["SHA256SUMS", "last.pt", "prev.pt"]
    assert digests.recorded(tmp_path / "r") == {name: digests.file_sha256(tmp_path / "r" / name)
                                                 for name in ("last.pt", "prev.pt")}  # each file's own digest
    assert resume.load(spec, folder=tmp_path / "r")["step"] == 20
    assert torch.load(tmp_path / "r" / "prev.pt", weights_only=True)["step"] == 10


def test_flipped_bytes_in_last_fall_back_to_prev_naming_the_digests(tmp_path):
    """torch.load would read these bytes: the recorded sha256 is what refuses them."""
    spec = make_spec()
    resume.save(tmp_path, fake_state(spec, 10))
    resume.save(tmp_path, fake_state(spec, 20))
    data = bytearray((tmp_path / "last.pt").read_bytes())
    offset = data.index(torch.full((3,), 20.0).numpy().tobytes())  # inside the tensor's bytes, the archive intact
    data[offset:offset + 4] = torch.full((1,), 21.0).numpy().tobytes()
    (tmp_path / "last.pt").write_bytes(bytes(data))
    assert torch.load(tmp_path / "last.pt", weights_only=True)["trainable"]["w"][0] == 21.0  # read as if whole
    with pytest.warns(resume.ResumeWarning, match=f"last.pt is corrupt: its sha256 is {digests.file_sha256(tmp_path / 'last.pt')}"):
        state = resume.load(spec, folder=tmp_path)
    assert state["step"] == 10


def test_a_kill_inside_the_rotation_leaves_a_checkpoint_that_loads(tmp_path):
    """The two states a kill can leave between save's steps (each digest moves to its name before the file does)."""
    spec = make_spec()
    resume.save(tmp_path / "a", fake_state(spec, 10))
    resume.save(tmp_path / "a", fake_state(spec, 20))
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    # a: killed after prev.pt's digest became last.pt's, before last.pt was renamed to prev.pt
    digests.record(tmp_path / "a", "prev.pt", digests.recorded(tmp_path / "a")["last.pt"])
    assert resume.load(spec, folder=tmp_path / "a")["step"] == 20
    # b: killed after the rename, before the new last.pt was moved into place
    digests.record(tmp_path / "b", "prev.pt", digests.recorded(tmp_path / "b")["last.pt"])
    os.replace(tmp_path / "b" / "last.pt", tmp_path / "b" / "prev.pt")
    digests.record(tmp_path / "b", "last.pt", "0" * 64)
    with pytest.warns(resume.ResumeWarning, match="last.pt missing; resuming from"):
        assert resume.load(spec, folder=tmp_path / "b")["step"] == 20


def test_damaged_last_falls_back_to_prev_with_a_warning(tmp_path):
    spec = make_spec()
    resume.save(tmp_path, fake_state(spec, 10))
    resume.save(tmp_path, fake_state(spec, 20))
    (tmp_path / "last.pt").write_bytes((tmp_path / "last.pt").read_bytes()[:100])  # truncated mid-write
    with pytest.warns(resume.ResumeWarning, match="last.pt is corrupt"):
        state = resume.load(spec, folder=tmp_path)
    assert state["step"] == 10


def test_both_damaged_is_an_error_not_a_silent_restart(tmp_path):
    spec = make_spec()
    (tmp_path / "last.pt").write_bytes(b"garbage")
    (tmp_path / "prev.pt").write_bytes(b"garbage")
    with pytest.raises(VitpeftError, match="no readable resume checkpoint"):
        resume.load(spec, folder=tmp_path)


def test_absent_folder_means_a_fresh_start_but_an_absent_explicit_path_is_an_error(tmp_path):
    assert resume.load(make_spec(), folder=tmp_path / "nothing") is None
    with pytest.raises(VitpeftError, match="not found"):
        resume.load(make_spec(), path=tmp_path / "nothing.pt")


def test_checkpoint_of_another_spec_is_refused(tmp_path):
    resume.save(tmp_path, fake_state(make_spec(lr=0.5), 10))
    with pytest.raises(VitpeftError, match="different spec"):
        resume.load(make_spec(), path=tmp_path / "last.pt")
    with pytest.raises(VitpeftError, match="different spec"):
        resume.load(make_spec(), folder=tmp_path)  # a folder edited or copied by hand


def test_folder_name_carries_the_spec_hash(tmp_path):
    a, b = resume.folder_for(tmp_path, make_spec()), resume.folder_for(tmp_path, make_spec(lr=0.5))
    assert a != b and a.name.startswith("tiny_full-")


def test_stop_flag_catches_sigterm_and_sigusr1_then_restores_handlers():
    before = signal.getsignal(signal.SIGTERM)
    for sig in (signal.SIGTERM, signal.SIGUSR1):
        with resume.StopFlag() as stop:
            assert stop.requested is None
            os.kill(os.getpid(), sig)
            time.sleep(0.05)
            assert stop.requested == sig.name
    assert signal.getsignal(signal.SIGTERM) is before


def test_train_refuses_a_foreign_checkpoint_before_building_anything(tmp_path, make_dataset):
    data = make_dataset(n=32, num_classes=4)
    resume.save(tmp_path / "foreign", fake_state(make_spec(data, lr=0.5), 10))
    with pytest.raises(VitpeftError, match="different spec"):
        train(make_spec(data), tmp_path / "run", tmp_path / ".resume", device="cpu",
              resume_from=tmp_path / "foreign" / "last.pt")
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------- real processes, real signals


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A dataset, a spec file and the weights of an uninterrupted run, shared by the kill tests."""
    root = tmp_path_factory.mktemp("resume")
    rng = np.random.default_rng(0)
    store.save(root / "data", rng.integers(0, 256, (48, 32, 32, 3), dtype=np.uint8), np.arange(48) % 4,
               ["a", "b", "c", "d"])
    spec = make_spec(root / "data")
    (root / "spec.yaml").write_text(spec_lib.dump(spec))
    train(spec, root / "reference", root / ".resume-reference", device="cpu")
    return root


def cli_args(root: Path, out: str) -> list:
    return ["train", "--spec", str(root / "spec.yaml"), "--out", str(root / out),
            "--resume-dir", str(root / ".resume"), "--device", "cpu"]


def start_training(root: Path, out: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", **UNPINNED}  # as the reference and the rerun here
    return subprocess.Popen([sys.executable, "-m", "vitpeft.cli", *cli_args(root, out)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_checkpoint(root: Path, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while not list((root / ".resume").glob("*/last.pt")):
        assert process.poll() is None, f"training ended before its first checkpoint: {process.communicate()[1][-2000:]}"
        assert time.monotonic() < deadline, "no resume checkpoint within 60 s"
        time.sleep(0.01)


def assert_same_weights(run_a: Path, run_b: Path) -> None:
    a, b = load_file(str(run_a / "trainable.safetensors")), load_file(str(run_b / "trainable.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), f"{key} differs"


def finish(root: Path, out: str) -> dict:
    """Rerun the same command (in this process: saves a second torch start-up) to the end."""
    assert cli.main(cli_args(root, out)) == 0
    assert not list((root / ".resume").glob("*")), "a finished run leaves its resume folder behind"
    return json.loads((root / out / "summary.json").read_text())


def test_sigkill_then_rerun_gives_bit_identical_weights(workdir):
    process = start_training(workdir, "killed")
    wait_for_checkpoint(workdir, process)
    process.kill()
    process.wait()
    assert not (workdir / "killed").exists()  # nothing half-written

    summary = finish(workdir, "killed")
    assert 0 < summary["resumed_from_step"] < 60  # it really continued, it did not start over
    assert_same_weights(workdir / "killed", workdir / "reference")


def test_sigterm_checkpoints_exits_75_and_the_rerun_continues(workdir):
    process = start_training(workdir, "terminated")
    wait_for_checkpoint(workdir, process)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == resume.EXIT_PREEMPTED, stderr[-2000:]
    assert "stopped by SIGTERM" in stderr
    [folder] = (workdir / ".resume").glob("*")
    stopped_at = torch.load(folder / "last.pt", weights_only=True)["step"]
    assert not (workdir / "terminated").exists()

    summary = finish(workdir, "terminated")
    assert summary["resumed_from_step"] == stopped_at
    assert_same_weights(workdir / "terminated", workdir / "reference")
    log = (workdir / "terminated" / "train_log.csv").read_text().splitlines()
    assert [int(row.split(",")[0]) for row in log[1:]] == list(range(10, 61, 10))  # no rows lost or repeated


class StopAtStep:
    """Stands in for the signal source: a stop request arrives once `run` has done `step` steps."""

    def __init__(self, run, step):
        self.run, self.step = run, step

    @property
    def requested(self):
        return "SIGUSR1" if self.run.step >= self.step else None


def test_best_val_resume_keeps_the_best_so_far_and_its_history(tmp_path, make_dataset):
    data = make_dataset(n=48, num_classes=4)
    spec = make_spec(data, method="linear", steps=12, selection="best_val", val_every=3, val_fraction=0.25)
    train(spec, tmp_path / "reference", tmp_path / ".resume-reference", device="cpu")

    cpu = torch.device("cpu")
    run = Run(spec, load_data(spec, cpu), cpu)
    with pytest.raises(resume.Preempted, match="stopped by SIGUSR1 at step 7"):
        run.loop(StopAtStep(run, 7), resume.folder_for(tmp_path / ".resume", spec))
    saved = resume.load(spec, folder=resume.folder_for(tmp_path / ".resume", spec))
    assert saved["step"] == 7 and [s for s, _ in saved["selection"]["history"]] == [3, 6]

    out = train(spec, tmp_path / "resumed", tmp_path / ".resume", device="cpu")
    assert_same_weights(out, tmp_path / "reference")
    resumed, reference = (json.loads((d / "summary.json").read_text()) for d in (out, tmp_path / "reference"))
    for key in ("val_history", "selected_step", "best_val_acc"):
        assert resumed[key] == reference[key]
    assert resumed["resumed_from_step"] == 7


# ---------------------------------------------------------------- --resume-from, wrong files, the fallback


@pytest.fixture(scope="module")
def stopped(tmp_path_factory):
    """A linear run with curve snapshots: its uninterrupted reference, and its resume folder after a stop at step 7."""
    root = tmp_path_factory.mktemp("stopped")
    rng = np.random.default_rng(0)
    store.save(root / "data", rng.integers(0, 256, (48, 32, 32, 3), dtype=np.uint8), np.arange(48) % 4, list("abcd"))
    spec = make_spec(root / "data", method="linear", steps=12, checkpoint_every=3, curve_steps=[0, 5, 12])
    (root / "spec.yaml").write_text(spec_lib.dump(spec))
    train(spec, root / "reference", root / ".resume-reference", device="cpu")
    cpu = torch.device("cpu")
    run = Run(spec, load_data(spec, cpu), cpu)
    with pytest.raises(resume.Preempted):
        run.loop(StopAtStep(run, 7), resume.folder_for(root / ".resume", spec))
    return root, spec, resume.folder_for(root / ".resume", spec)


def copy_of(folder, to):
    shutil.copytree(folder, to)
    return to


def resume_cli(root, out, resume_from) -> list:
    """`vitpeft train --resume-from`, with the automatic resume folder beside the run (not the stopped one's)."""
    return ["train", "--spec", str(root / "spec.yaml"), "--out", str(out), "--resume-dir", str(out.parent / ".resume"),
            "--device", "cpu", "--resume-from", str(resume_from)]


def test_resume_from_a_copied_checkpoint_continues_it_with_its_curve_snapshots(stopped, tmp_path):
    root, spec, folder = stopped
    saved = copy_of(folder, tmp_path / "saved")
    assert sorted(resume.snapshots(saved)) == [0, 5]
    assert cli.main(resume_cli(root, tmp_path / "run", saved / resume.LAST)) == 0
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["resumed_from_step"] == 7
    assert_same_weights(tmp_path / "run", root / "reference")
    for step in (0, 5, 12):
        name = f"{resume.CURVE}/{resume.snapshot_name(step)}"
        a, b = load_file(str(tmp_path / "run" / name)), load_file(str(root / "reference" / name))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_resume_from_without_the_earlier_curve_snapshots_is_refused_before_training(stopped, tmp_path, capsys):
    root, spec, folder = stopped
    saved = copy_of(folder, tmp_path / "saved")
    (saved / resume.CURVE / resume.snapshot_name(5)).unlink()
    assert cli.main(resume_cli(root, tmp_path / "run", saved)) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"resume checkpoint {saved} is at step 7, but the curve snapshot of step 5" in line
    assert not (tmp_path / "run").exists() and not (tmp_path / ".resume").exists()  # nothing copied either


def test_a_file_that_is_no_resume_checkpoint_is_refused_by_name(stopped, tmp_path, capsys):
    root, _, _ = stopped
    weights = tmp_path / "weights.pt"
    torch.save({"head.weight": torch.zeros(4, 32)}, weights)  # a state dict, not a resume checkpoint
    assert cli.main(resume_cli(root, tmp_path / "run", weights)) == 2
    assert f"{tmp_path} has no SHA256SUMS to check weights.pt against" in capsys.readouterr().err
    digests.record(tmp_path, "weights.pt", digests.file_sha256(weights))  # whole, but the wrong content
    assert cli.main(resume_cli(root, tmp_path / "run", weights)) == 2
    assert f"resume checkpoint {weights} is not a vitpeft resume checkpoint" in capsys.readouterr().err
    noise = tmp_path / "noise.pt"
    noise.write_bytes(os.urandom(4096))
    digests.record(tmp_path, "noise.pt", digests.file_sha256(noise))
    assert cli.main(resume_cli(root, tmp_path / "run", noise)) == 2
    assert f"resume checkpoint {noise} is unreadable" in capsys.readouterr().err
    assert not (tmp_path / "run").exists() and not (tmp_path / ".resume").exists()


def test_with_only_the_previous_checkpoint_left_the_rerun_resumes_from_it(stopped, tmp_path):
    root, spec, folder = stopped
    resume_root = tmp_path / ".resume"
    kept = copy_of(folder, resume.folder_for(resume_root, spec))
    (kept / resume.LAST).unlink()  # e.g. lost with a node's local disk, or deleted by hand
    with pytest.warns(resume.ResumeWarning, match="last.pt missing; resuming from .*prev.pt"):
        out = train(spec, tmp_path / "run", resume_root, device="cpu")
    assert json.loads((out / "summary.json").read_text())["resumed_from_step"] == 6  # prev: the checkpoint at 6
    assert_same_weights(out, root / "reference")
