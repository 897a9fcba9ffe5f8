"""Device choice: the device follows what the job was given, and a missing CUDA is one line saying why."""

import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import TINY_MODEL
from vitpeft import cli
from vitpeft.training import devices
from vitpeft.data import store
from vitpeft.study import spec as spec_lib
from vitpeft.errors import VitpeftError

REPO = Path(__file__).resolve().parents[1]
NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")


def test_device_auto_is_cpu_here_and_cpu_is_cpu():
    assert devices.pick("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert devices.pick("cpu").type == "cpu"
    assert devices.describe("cpu") == "cpu"


@NO_CUDA
def test_cuda_without_a_device_names_node_grant_build_driver_and_fix(monkeypatch):
    """What a SLURM job granted a GPU that torch cannot see reports (the GPU-cluster issue's first case)."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    monkeypatch.setenv("SLURM_GPUS_ON_NODE", "1")
    monkeypatch.setenv("SLURMD_NODENAME", "gpu-node-7")
    with pytest.raises(VitpeftError) as refused:
        devices.pick("cuda")
    line = str(refused.value)
    assert "\n" not in line
    for fact in ("--device cuda was asked for, but torch sees no CUDA device", "node gpu-node-7",
                 "CUDA_VISIBLE_DEVICES='0'", "SLURM GPUs on node: 1", f"torch {torch.__version__}",
                 "NVIDIA driver", "Fix: "):
        assert fact in line, (fact, line)


def test_the_fix_follows_from_what_was_found():
    assert "driver 535.104.05 is older than CUDA 13.0 needs (>= 580)" in devices.fix("13.0", "535.104.05", "0")
    assert "make setup TORCH_CUDA=" in devices.fix("13.0", "535.104.05", "0")
    assert devices.fix("12.6", "535.104.05", "0").startswith("check `nvidia-smi`")  # new enough: look at the node
    assert "install a CUDA build of torch" in devices.fix(None, None, None)
    assert "sbatch --gpus=1" in devices.fix("13.0", None, None)  # nothing granted
    assert "no NVIDIA driver loaded" in devices.fix("13.0", None, "0")  # granted, but no driver
    assert devices.required_driver("13.0") == 580 and devices.required_driver("12.4") == 525
    assert devices.required_driver(None) is None and devices.required_driver("99.0") is None


@NO_CUDA
@pytest.mark.parametrize("command", ["train", "eval-target"])
def test_a_job_asking_for_cuda_fails_before_writing_anything(tmp_path, command, capsys):
    """`--device cuda` (what the rules pass when resources ask for a GPU) never falls back to the CPU."""
    rng = np.random.default_rng(0)
    store.save(tmp_path / "data", rng.integers(0, 256, (16, 32, 32, 3), dtype=np.uint8), np.arange(16) % 4,
               list("abcd"))
    spec = spec_lib.resolve({"name": "gpu", "method": "linear", "model": TINY_MODEL, "num_classes": 4,
                             "data": {"train": str(tmp_path / "data")},
                             "train": {"steps": 4, "batch_size": 4, "warmup_steps": 1, "log_every": 2}})
    (tmp_path / "spec.yaml").write_text(spec_lib.dump(spec))
    out = tmp_path / ("run" if command == "train" else "metrics.json")
    args = {"train": ["--resume-dir", str(tmp_path / "resume")], "eval-target": ["--data", str(tmp_path / "data")]}
    code = cli.main([command, "--spec", str(tmp_path / "spec.yaml"), "--out", str(out), "--device", "cuda",
                     *args[command]])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "torch sees no CUDA device" in err[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "spec.yaml"]  # nothing written


def make_dry_run(*variables) -> str:
    done = subprocess.run(["make", "-n", "setup", "VENV=/nonexistent/venv", *variables], cwd=REPO,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_make_setup_installs_the_locked_torch_for_an_older_driver_when_asked():
    """`make setup TORCH_CUDA=cu126`: the lock's torch and torchvision versions from PyTorch's cu126 index.

    This machine reaches only the default registry, so the test checks the command that results.
    """
    lock = (REPO / "requirements.lock").read_text().splitlines()
    pins = [line for line in lock if line.startswith(("torch==", "torchvision=="))]
    assert len(pins) == 2
    variant = make_dry_run("TORCH_CUDA=cu126")
    assert f"pip install -q --force-reinstall --index-url https://download.pytorch.org/whl/cu126 {' '.join(pins)}" \
        in variant, variant
    assert "touch /nonexistent/venv/.installed-cu126" in variant
    default = make_dry_run()
    assert "--index-url" not in default and "touch /nonexistent/venv/.installed\n" in default


def test_make_setup_refuses_a_variant_that_is_not_one_before_installing_anything(tmp_path):
    done = subprocess.run(["make", "setup", f"VENV={tmp_path / 'venv'}", "TORCH_CUDA=cuda12"], cwd=REPO,
                          capture_output=True, text=True)
    assert done.returncode != 0
    assert "TORCH_CUDA=cuda12 is not a CUDA variant of PyTorch's wheel index" in done.stderr
    assert not (tmp_path / "venv").exists()
