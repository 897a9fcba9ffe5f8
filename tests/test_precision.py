"""bf16 autocast, fp16 with the gradient scaler, and torch.compile, on the CPU.

Each trains a few steps and lands within a stated distance of the fp32 run,
and a run preempted midway and resumed is bit-identical to an uninterrupted
run of the same setting.

Distance: ||w - w_fp32|| / ||w_fp32 - w_start|| over all trainable tensors,
i.e. the error as a share of what fp32 training moved. Measured on this
setup by benchmarks/precision_cpu.py (2 shared CPU cores, torch 2.14.1):
bf16 0.0175, fp16 0.0020, compile 1.1e-06; the tolerances (0.05, 0.006,
1e-05) leave 3x to 9x room for other CPUs' kernels.
"""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import TINY_MODEL
from test_resume import StopAtStep
from vitpeft.methods import registry
from vitpeft.training import resume
from vitpeft.data import store
from vitpeft.training import model as model_lib
from vitpeft.study import spec as spec_lib
from vitpeft.training.draws import load_data
from vitpeft.training.train import Run, train

TOLERANCE = {"bf16": 0.05, "fp16": 0.006, "compile": 1e-5}
SETTINGS = {  # name: (method, depth, train overrides, summary's precision)
    "bf16": ("lora", 2, {"precision": "bf16"}, "bfloat16"),
    "fp16": ("lora", 2, {"precision": "fp16"}, "float16"),
    # Linear probing on one block: the smallest graph inductor must build and compile with gcc.
    "compile": ("linear", 1, {"compile": True}, "float32"),
}
STEPS, STOP_AT = 10, 6


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("precision")
    rng = np.random.default_rng(0)
    store.save(root / "data", rng.integers(0, 256, (48, 32, 32, 3), dtype=np.uint8), np.arange(48) % 4, list("abcd"))
    return root / "data"


def make_spec(data, method, depth, **overrides) -> dict:
    return spec_lib.resolve({
        "name": f"precision_{method}", "method": method, "args": {"r": 2} if method == "lora" else {},
        "model": {**TINY_MODEL, "kwargs": {**TINY_MODEL["kwargs"], "depth": depth}}, "num_classes": 4,
        "data": {"train": str(data)},
        "train": {"steps": STEPS, "batch_size": 16, "warmup_steps": 2, "lr": 0.05, "log_every": 5,
                  "precision": "fp32", **overrides},
    })


def flat(state: dict) -> torch.Tensor:
    return torch.cat([state[k].flatten().double() for k in sorted(state)])


def preempt_then_resume(spec, tmp_path):
    """Stop after STOP_AT steps (checkpoint written, as on SIGTERM), then train() picks it up."""
    cpu = torch.device("cpu")
    run = Run(spec, load_data(spec, cpu), cpu)
    with pytest.raises(resume.Preempted):
        run.loop(StopAtStep(run, STOP_AT), resume.folder_for(tmp_path / ".resume", spec))
    checkpoint = resume.load(spec, folder=resume.folder_for(tmp_path / ".resume", spec))
    out = train(spec, tmp_path / "resumed", tmp_path / ".resume", device="cpu")
    return out, checkpoint


@pytest.mark.parametrize("setting", SETTINGS)
def test_setting_stays_near_fp32_and_resumes_bit_identically(data, tmp_path, setting):
    method, depth, overrides, precision = SETTINGS[setting]
    fp32_spec, spec = make_spec(data, method, depth), make_spec(data, method, depth, **overrides)
    start = registry.trainable_state(model_lib.for_training(fp32_spec))
    fp32 = load_file(str(train(fp32_spec, tmp_path / "fp32", tmp_path / ".resume", device="cpu")
                         / "trainable.safetensors"))
    whole = train(spec, tmp_path / "whole", tmp_path / ".resume", device="cpu")
    resumed, checkpoint = preempt_then_resume(spec, tmp_path)

    assert json.loads((whole / "summary.json").read_text())["precision"] == precision
    assert json.loads((resumed / "summary.json").read_text())["resumed_from_step"] == STOP_AT
    if setting == "fp16":
        assert checkpoint["scaler"]["scale"] > 0  # the scaler's state travels with the checkpoint
    a, b = load_file(str(whole / "trainable.safetensors")), load_file(str(resumed / "trainable.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a), "the resumed run differs from the uninterrupted one"

    distance = ((flat(a) - flat(fp32)).norm() / (flat(fp32) - flat(start)).norm()).item()
    assert distance <= TOLERANCE[setting]
    if setting != "compile":
        assert distance > 0  # autocast really computed in lower precision
