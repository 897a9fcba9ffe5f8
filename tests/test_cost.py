"""What a run costs: FLOPs counted at ViT-B/16 on the meta device, the memory estimate, trained and stored params."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from vitpeft.models.backbone import build_model
from vitpeft.study import spec as spec_lib
from vitpeft.training import cost, gpu_check, stages

VIT_B = {"name": "vit_base_patch16_224", "img_size": 224, "kwargs": {}}


def vit_b_spec(method, args=None, **train):
    return spec_lib.resolve({"name": method, "method": method, "args": args or {}, "model": VIT_B, "num_classes": 100,
                             "data": {"train": "unused"}, "train": {"batch_size": 2, **train}})  # fmt: skip


@pytest.fixture(scope="module")
def forward():
    """One forward of timm's ViT-B/16 at 224 px, per image, by operation (GFLOPs)."""
    with FlopCounterMode(display=False) as counter:
        build_model(VIT_B, 100, device="meta")(torch.empty(2, 3, 224, 224, device="meta"))
    return {str(op): flops / 2e9 for op, flops in counter.get_flop_counts()["Global"].items()}


def test_one_vit_b16_forward_counts_33_7_gflops_in_the_weights_and_1_4_in_attention(forward):
    weights = forward["aten.addmm"] + forward["aten.convolution"]  # the Linear layers, the head, the patch embedding
    assert weights == pytest.approx(33.7, abs=0.05) and forward["aten.bmm"] == pytest.approx(1.43, abs=0.01)
    assert cost.step_flops(vit_b_spec("full"), stages.plan(vit_b_spec("full"))[0])[0] / 1e9 == pytest.approx(
        sum(forward.values()), rel=1e-9)


@pytest.mark.parametrize("method,args,times", [("full", {}, 3), ("lora", {"r": 8}, 2), ("linear", {}, 1)])
def test_training_flops_stand_3_2_1_times_the_forward_as_backpropagation_predicts(forward, method, args, times):
    """Full: gradients of weights and activations (2x the forward); LoRA: activations only through frozen weights
    (1x); linear: nothing below the head (0x)."""
    counted = cost.training_flops(vit_b_spec(method, args))["train_flops_per_image"] / 1e9
    assert counted == pytest.approx(times * sum(forward.values()), rel=0.10)


def test_lpft_counts_its_probe_and_its_fine_tuning_by_their_steps():
    linear = cost.training_flops(vit_b_spec("linear", steps=100))["train_flops_per_image"]
    full = cost.training_flops(vit_b_spec("full", steps=100))["train_flops_per_image"]
    lpft = cost.training_flops(vit_b_spec("lpft", {"probe_steps": 25}, steps=100))
    assert lpft["train_flops"] == 2 * 100 * lpft["train_flops_per_image"]
    assert lpft["train_flops_per_image"] == (25 * linear + 75 * full) // 100


def test_the_record_names_what_it_counted_and_measures_nothing_on_a_cpu():
    record = cost.record(vit_b_spec("vpt_deep"))
    assert record["trained_params"] == 12 * 5 * 768 + 768 * 100 + 100
    assert record["stored_params"] == 85_875_556 + 12 * 5 * 768  # the backbone, the prompts, the head
    assert record["memory_measured_bytes"] is None and "FlopCounterMode" in record["flops_counted_by"]
    assert record["memory_estimate_bytes"] == gpu_check.training_bytes(vit_b_spec("vpt_deep"))


def test_the_memory_estimate_follows_backprop_and_prompts(forward):
    estimate = {method: gpu_check.training_bytes(vit_b_spec(method)) for method in
                ("linear", "full", "bitfit", "ln_tune", "ssf", "adaptformer", "vpt_shallow")}
    # every method that trains something before the first block, or in it, keeps every block's activations
    for method in ("bitfit", "ln_tune", "ssf", "adaptformer", "vpt_shallow"):
        assert estimate["linear"] < estimate[method] < estimate["full"], method
    tokens, prompts, width, heads = 197, 5, 768, 12  # VPT's 5 prompts lengthen every block's sequence
    per_block = lambda s: s * width * (34 + 5 * heads * s / width)  # noqa: E731
    weights_only = estimate["vpt_shallow"] - 2 * 12 * per_block(tokens + prompts)
    assert weights_only == pytest.approx(4 * 85_879_396 + 8 * (5 * 768 + 76_900), abs=2)
