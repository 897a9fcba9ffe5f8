"""The CPU kernel pin: the same bits whatever the outer environment says the kernels should be."""

import json
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file

from conftest import TINY_MODEL
from vitpeft.data import store
from vitpeft.study import spec as spec_lib
from vitpeft.training import kernels

BIN = Path(sys.executable).parent
# What makes kernels pick another code path on another machine, set in the outer environment.
OTHER_MACHINE = {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "COMPATIBLE", "ONEDNN_MAX_CPU_ISA": "SSE41"}


@pytest.fixture(scope="module")
def spec_file(tmp_path_factory):
    """A demo-like training job: full fine-tuning of a tiny ViT, 40 SGD steps from a fixed seed."""
    root = tmp_path_factory.mktemp("kernels")
    rng = np.random.default_rng(0)
    store.save(root / "data", rng.integers(0, 256, (64, 32, 32, 3), dtype=np.uint8), np.arange(64) % 4, list("abcd"))
    spec = spec_lib.resolve({
        "name": "pin", "method": "full", "model": TINY_MODEL, "num_classes": 4, "data": {"train": str(root / "data")},
        "train": {"steps": 40, "batch_size": 16, "warmup_steps": 4, "lr": 0.05, "log_every": 20, "precision": "fp32"},
    })
    (root / "spec.yaml").write_text(spec_lib.dump(spec))
    return root / "spec.yaml"


def train(spec_file, out: Path, **env) -> dict:
    """`vitpeft train` as a rule runs it (one thread), in a process whose outer environment is `env`."""
    import os

    outer = {k: v for k, v in os.environ.items() if k not in (*OTHER_MACHINE, kernels.CPU_SWITCH)}
    done = subprocess.run(
        [BIN / "vitpeft", "train", "--spec", spec_file, "--out", out, "--resume-dir", out.parent / f"{out.name}-resume",
         "--device", "cpu"],
        env={**outer, "OMP_NUM_THREADS": "1", **env}, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr
    return load_file(out / "trainable.safetensors")


def same_bits(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)


def test_pinned_runs_give_the_same_bits_whatever_the_outer_environment(spec_file, tmp_path):
    here = train(spec_file, tmp_path / "here")
    elsewhere = train(spec_file, tmp_path / "elsewhere", **OTHER_MACHINE)
    assert same_bits(here, elsewhere)
    record = json.loads((tmp_path / "here" / "summary.json").read_text())["kernels"]
    assert record["pinned"] and record["reference_bits"] and record["pin"] == kernels.PIN, record
    assert record["mkldnn"] is False and record["threads"] == 1 and record["why_not"] is None


def test_without_the_pin_the_same_pair_differs(spec_file, tmp_path):
    """So the test above can fail: the outer environment does change the bits when nothing pins it."""
    here = train(spec_file, tmp_path / "here", VITPEFT_CPU_PIN="0")
    elsewhere = train(spec_file, tmp_path / "elsewhere", VITPEFT_CPU_PIN="0", **OTHER_MACHINE)
    assert not same_bits(here, elsewhere)
    record = json.loads((tmp_path / "here" / "summary.json").read_text())["kernels"]
    assert not record["pinned"] and not record["reference_bits"]
    assert record["why_not"] == "the pin is turned off (reproducibility.cpu_pin: false)"


@pytest.mark.parametrize("machine, flags, why", [
    ("aarch64", None, "not an x86-64 CPU (aarch64): its kernels are its own"),
    ("x86_64", "fpu sse4_2 avx", "this CPU has no AVX2: its kernels fall back to another path"),
])
def test_a_machine_that_cannot_take_the_pin_runs_and_says_so(monkeypatch, tmp_path, machine, flags, why):
    monkeypatch.setattr(platform, "machine", lambda: machine)
    if flags is not None:
        cpuinfo = tmp_path / "cpuinfo"
        cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
        real_open = open
        monkeypatch.setattr("builtins.open", lambda path, *a, **k: real_open(
            cpuinfo if path == "/proc/cpuinfo" else path, *a, **k))
    assert kernels._unsupported() == why
