"""Every artifact checked where it is read: flipped bytes in weights, specs, summaries, snapshots or features stop
the job that reads them, in one line naming the file, the recorded sha256 and the fix, and it writes nothing.

A real `vitpeft train` run (tiny ViT, a curve) and a real feature cache are damaged as a disk or a transfer
would damage them: bytes flipped in place, file sizes and headers intact.
"""

import hashlib
import shutil
import subprocess

import numpy as np
import pytest
import torch
from conftest import TINY_MODEL
from runs import make_spec, random_dataset, write_checkpoint, write_spec

from vitpeft import cli
from vitpeft.training.train import train

KS = ["1", "3"]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A finished full fine-tuning run with curve snapshots, its data, and the untouched backbone's feature cache."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("integrity")
    data = {name: random_dataset(root / name, n, seed) for name, n, seed in
            (("train", 40, 0), ("test", 20, 3), ("bank", 40, 1), ("queries", 20, 2))}
    checkpoint = write_checkpoint(TINY_MODEL, root / "backbone.safetensors")
    spec = make_spec(TINY_MODEL, "full", train_dir=data["train"], checkpoint=str(checkpoint))
    spec["train"].update(steps=6, batch_size=8, warmup_steps=1, log_every=3, checkpoint_every=3, curve_steps=[0, 3])
    train(spec, root / "run", root / ".resume", device="cpu")
    pretrained = write_spec(make_spec(TINY_MODEL, "linear", checkpoint=str(checkpoint), name="pretrained"),
                            root / "pretrained.yaml")
    argv = ["extract-features", "--spec", pretrained, "--bank", data["bank"], "--queries", data["queries"],
            "--out", root / "features", "--device", "cpu"]
    assert cli.main([str(a) for a in argv]) == 0
    return {"run": root / "run", "data": data, "features": root / "features", "spec": spec, "pretrained": pretrained}


def flip(path, count=64) -> str:
    """Flip `count` bytes in the middle of `path` in place (its size unchanged); return its sha256 from before."""
    data = bytearray(path.read_bytes())
    before = hashlib.sha256(data).hexdigest()
    middle = len(data) // 2
    data[middle:middle + count] = bytes(b ^ 0x5A for b in data[middle:middle + count])
    path.write_bytes(bytes(data))
    return before


def readers(run, data, features, out) -> dict:
    """Every job that reads a run folder, as the workflow calls it."""
    spec = ["--spec", run / "spec.yaml", "--run", run, "--device", "cpu"]
    source = ["--bank", data["bank"], "--queries", data["queries"], "--k", *KS]
    return {
        "eval-target": ["eval-target", *spec, "--data", data["test"], "--out", out],
        "eval-source": ["eval-source", *spec, *source, "--pretrained-features", features, "--out", out],
        "eval-curve": ["eval-curve", *spec, "--target-data", data["test"], *source, "--out", out],
        "eval-interpolation": ["eval-interpolation", *spec, "--target-data", data["test"], "--alphas", "0", "0.5", "1",
                               *source, "--out", out],
    }


def refused(argv, capsys) -> str:
    """Run the command; it must exit 2 with one error line, which is returned."""
    capsys.readouterr()
    code = cli.main([str(a) for a in argv])
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert code == 2 and len(errors) == 1, errors
    return errors[0]


@pytest.mark.parametrize("reader", ["eval-target", "eval-source", "eval-curve", "eval-interpolation"])
def test_flipped_bytes_inside_the_weights_stop_every_job_that_reads_them(study, tmp_path, capsys, reader):
    """The issue's case: 64 bytes flipped mid-file, the safetensors header intact; the job refuses, writing nothing."""
    run = shutil.copytree(study["run"], tmp_path / "run")
    out = tmp_path / "metrics.json"
    argv = readers(run, study["data"], study["features"], out)[reader]
    assert cli.main([str(a) for a in argv]) == 0  # whole: the job runs
    out.unlink()
    recorded = flip(run / "trainable.safetensors")
    line = refused(argv, capsys)
    assert f"{run / 'trainable.safetensors'} is corrupt" in line and f"records {recorded}" in line
    assert f"delete {run} and rerun" in line and "dvc pull" in line
    assert not out.exists()


@pytest.mark.parametrize("damaged", ["spec.yaml", "summary.json", "curve/step_000003.safetensors"])
def test_a_damaged_spec_summary_or_curve_snapshot_is_refused_by_name(study, tmp_path, capsys, damaged):
    run = shutil.copytree(study["run"], tmp_path / "run")
    recorded = flip(run / damaged, count=4)
    out = tmp_path / "curve.json"
    line = refused(readers(run, study["data"], study["features"], out)["eval-curve"], capsys)
    assert f"{run / damaged} is corrupt" in line and f"records {recorded}" in line
    assert not out.exists()


def test_a_damaged_feature_cache_is_refused_not_read_nor_recomputed(study, tmp_path, capsys):
    features = shutil.copytree(study["features"], tmp_path / "features")
    recorded = flip(features / "bank.npy", count=16)  # inside the features, the .npy header intact
    assert np.load(features / "bank.npy").shape == np.load(study["features"] / "bank.npy").shape
    out, data = tmp_path / "source.json", study["data"]
    argv = ["eval-source", "--spec", study["pretrained"], "--bank", data["bank"], "--queries", data["queries"],
            "--k", *KS, "--pretrained-features", features, "--out", out, "--device", "cpu"]  # the untouched backbone
    line = refused(argv, capsys)
    assert f"{features / 'bank.npy'} is corrupt" in line and f"records {recorded}" in line
    assert f"delete {features} and rerun" in line
    assert not out.exists()


def test_a_damaged_curve_snapshot_in_the_resume_folder_is_refused_before_training(study, tmp_path, capsys):
    """A run stopped at step 4 kept snapshots 0 and 3 beside its checkpoint; one damaged since is refused on resume."""
    from test_resume import StopAtStep

    from vitpeft.training import resume
    from vitpeft.training.draws import load_data
    from vitpeft.training.train import Run

    spec, cpu = study["spec"], torch.device("cpu")
    folder = resume.folder_for(tmp_path / ".resume", spec)
    stopped = Run(spec, load_data(spec, cpu), cpu)
    with pytest.raises(resume.Preempted):
        stopped.loop(StopAtStep(stopped, 4), folder)
    recorded = flip(folder / "curve" / "step_000000.safetensors", count=4)
    argv = ["train", "--spec", study["run"] / "spec.yaml", "--out", tmp_path / "run", "--resume-dir",
            tmp_path / ".resume", "--device", "cpu"]
    line = refused(argv, capsys)
    assert f"{folder / 'curve' / 'step_000000.safetensors'} is corrupt" in line and f"records {recorded}" in line
    assert f"delete {folder} to train the run from the start" in line
    assert not (tmp_path / "run").exists()


def test_run_and_feature_folders_check_with_sha256sum_itself(study):
    """`sha256sum -c SHA256SUMS` in the folder, as the README shows: every file listed, and every one OK."""
    for folder in (study["run"], study["features"]):
        checked = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=folder, capture_output=True, text=True)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert all(line.endswith(": OK") for line in checked.stdout.splitlines())
        listed = {line.rsplit(": ", 1)[0] for line in checked.stdout.splitlines()}
        assert listed == {p.relative_to(folder).as_posix() for p in folder.rglob("*")
                          if p.is_file() and p.name != "SHA256SUMS"}
