"""Training is a pure function of its spec, stochastic layers included: a SIGKILL and a rerun change nothing.

The spec trains LoRA adapters with dropout 0.1 inside a ViT with stochastic
depth (timm's drop_path_rate 0.1): both draw from torch's global generator,
which the loop reseeds from (seed, step) before every step.
"""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import TINY_MODEL, UNPINNED
from vitpeft import cli
from vitpeft.training import resume
from vitpeft.data import store
from vitpeft.study import spec as spec_lib
from vitpeft.training.train import train

STEPS, CHECKPOINT_EVERY = 30, 10
CURVE = [0, 5, 20, 30]
DEPTH = 4  # fewer blocks than conftest's TINY_MODEL: the kill test runs five trainings


def stochastic_spec(data, dropout=0.1, drop_path=0.1) -> dict:
    return spec_lib.resolve({
        "name": "stochastic", "method": "lora", "args": {"r": 2, "dropout": dropout},
        "model": {**TINY_MODEL, "kwargs": {**TINY_MODEL["kwargs"], "depth": DEPTH, "drop_path_rate": drop_path}},
        "num_classes": 4, "data": {"train": str(data)},
        "train": {"steps": STEPS, "batch_size": 8, "warmup_steps": 5, "lr": 0.05, "log_every": 10,
                  "checkpoint_every": CHECKPOINT_EVERY, "curve_steps": CURVE},
    })


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """Data, the spec file, and one uninterrupted reference run."""
    root = tmp_path_factory.mktemp("determinism")
    rng = np.random.default_rng(0)
    store.save(root / "data", rng.integers(0, 256, (48, 32, 32, 3), dtype=np.uint8), np.arange(48) % 4, list("abcd"))
    spec = stochastic_spec(root / "data")
    (root / "spec.yaml").write_text(spec_lib.dump(spec))
    train(spec, root / "reference", root / ".resume-reference", device="cpu")
    return root


def weights(run_dir, name="trainable.safetensors") -> dict:
    return load_file(str(run_dir / name))


def assert_bit_identical(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), f"{key} differs"


def test_two_runs_agree_bitwise_whatever_the_callers_random_state(workdir):
    torch.manual_seed(1234)  # a caller that used the global generator differently
    torch.rand(1000)
    before = torch.get_rng_state()
    again = train(stochastic_spec(workdir / "data"), workdir / "again", workdir / ".resume-again", device="cpu")
    assert torch.equal(torch.get_rng_state(), before)  # training gives the caller's generator back untouched
    assert_bit_identical(weights(again), weights(workdir / "reference"))

    # Not vacuous: dropout and drop-path really act (without them the weights differ).
    plain = train(stochastic_spec(workdir / "data", dropout=0.0, drop_path=0.0),
                  workdir / "plain", workdir / ".resume-plain", device="cpu")
    reference, deterministic = weights(workdir / "reference"), weights(plain)
    assert any(not torch.equal(reference[k], deterministic[k]) for k in reference)


def cli_args(root, out: str) -> list:
    return ["train", "--spec", str(root / "spec.yaml"), "--out", str(root / out),
            "--resume-dir", str(root / ".resume"), "--device", "cpu"]


def test_sigkill_mid_run_then_the_same_command_gives_bit_identical_weights_log_and_curve(workdir):
    env = {**os.environ, "OMP_NUM_THREADS": "1", **UNPINNED}  # as the reference and the rerun here
    process = subprocess.Popen([sys.executable, "-m", "vitpeft.cli", *cli_args(workdir, "killed")],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300  # a hang guard only: the machine may be shared and slow
    while not list((workdir / ".resume").glob("*/last.pt")):
        assert process.poll() is None, f"training ended before its first checkpoint: {process.communicate()[1][-2000:]}"
        assert time.monotonic() < deadline, "no resume checkpoint within 300 s"
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    [folder] = (workdir / ".resume").glob("*")
    killed_at = resume.load(stochastic_spec(workdir / "data"), folder=folder)["step"]  # prev.pt if killed mid-rotation
    assert killed_at >= CHECKPOINT_EVERY and {s for s in CURVE if s <= killed_at} <= set(resume.snapshots(folder))
    assert not (workdir / "killed").exists()

    assert cli.main(cli_args(workdir, "killed")) == 0
    killed, reference = workdir / "killed", workdir / "reference"
    assert json.loads((killed / "summary.json").read_text())["resumed_from_step"] == killed_at  # steps 0, 5 not redone
    assert_bit_identical(weights(killed), weights(reference))
    for step in CURVE:  # those kept before the kill survived it, the rest were made after
        name = f"curve/{resume.snapshot_name(step)}"
        assert_bit_identical(weights(killed, name), weights(reference, name))
    logs = [(d / "train_log.csv").read_text().splitlines() for d in (killed, reference)]
    assert [row.split(",")[:3] for row in logs[0]] == [row.split(",")[:3] for row in logs[1]]  # step, loss, lr
