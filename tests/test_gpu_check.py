"""`vitpeft check --gpu`: the verdicts on a node's driver, GPUs and memory, from facts made by hand."""

import pytest
import torch

from vitpeft import cli
from vitpeft.study import config
from vitpeft.training import gpu_check
from vitpeft.training.gpu_check import Facts, Gpu
from vitpeft.study.plan import Plan

GiB = 2**30
H100 = Gpu("NVIDIA H100 80GB HBM3", (9, 0), 79 * GiB, 80 * GiB)


def verdicts(facts, need=10 * GiB, bf16=True) -> dict:
    return {what: (status, detail) for status, what, detail in gpu_check.judge(facts, need, bf16)}


def test_a_current_driver_and_gpu_pass():
    found = verdicts(Facts("2.14.1+cu130", "13.0", "580.65.06", "0", [H100]))
    assert {status for status, _ in found.values()} == {"ok"}, found
    assert "580.65.06 runs torch 2.14.1+cu130 (CUDA 13.0) (needs >= 580)" in found["driver"][1]


def test_a_driver_older_than_the_torch_build_fails_naming_both_and_the_fix():
    status, detail = verdicts(Facts("2.14.1+cu130", "13.0", "535.104.05", "0", []))["driver"]
    assert status == "FAIL" and "535.104.05 is older than torch 2.14.1+cu130 (CUDA 13.0) needs (>= 580)" in detail
    assert "make setup TORCH_CUDA=cu126" in detail


def test_a_gpu_without_bf16_fails_when_the_config_computes_in_bf16():
    v100 = Gpu("Tesla V100-SXM2-32GB", (7, 0), 30 * GiB, 32 * GiB)
    facts = Facts("2.14.1+cu126", "12.6", "535.104.05", "0", [v100])
    status, detail = verdicts(facts)[f"gpu 0 ({v100.name})"]
    assert status == "FAIL" and "compute capability 7.0 has no native bf16" in detail
    assert verdicts(facts, bf16=False)[f"gpu 0 ({v100.name})"][0] == "ok"  # precision: fp32 or fp16 is fine


def test_too_little_free_memory_fails_with_both_numbers():
    busy = Gpu("NVIDIA A100-SXM4-40GB", (8, 0), 6 * GiB, 40 * GiB)
    status, detail = verdicts(Facts("2.14.1+cu130", "13.0", "580.65.06", "0", [busy]))[f"gpu 0 ({busy.name}) memory"]
    assert status == "FAIL" and detail == "6.0 GiB free of 40.0; the largest job needs about 10.0 GiB"


def test_training_memory_of_full_vit_b16_is_weights_optimizer_and_every_blocks_activations():
    """ViT-B/16 at 224 px, batch 128, bf16: 12 bytes per parameter + Korthikanti et al.'s activations per block."""
    cfg = config.load("config/config.yaml")
    plan = Plan(cfg)
    spec = next(run.spec for run in plan.runs.values() if run.experiment == "full")
    params, tokens, width, heads = 85_875_556, 197, 768, 12  # docs/protocol.md's count; 14x14 patches + CLS
    per_block = tokens * width * (34 + 5 * heads * tokens / width)
    assert gpu_check.training_bytes(spec) == int(12 * params + 128 * per_block * 12)
    by_name = {run.experiment: gpu_check.training_bytes(run.spec) for run in plan.runs.values()}
    # frozen blocks keep no activations: linear < top3 < full; LoRA backpropagates through every block
    assert by_name["linear"] < by_name["top3"] < by_name["full"]
    assert by_name["lora_r8"] > 0.9 * by_name["full"] - 12 * params


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_check_gpu_on_a_node_without_cuda_fails_naming_why(capsys):
    assert cli.main(["check", "--config", "config/demo.yaml", "--gpu"]) == 2
    out = capsys.readouterr().out
    assert "FAIL  gpu: torch sees no CUDA device: node " in out, out
    assert "FAIL  driver: " in out, out


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_plain_check_inside_a_job_granted_a_gpu_checks_the_gpu_by_itself(monkeypatch, capsys):
    """`vitpeft check` in a SLURM job with a GPU no longer says all is well when torch sees no CUDA."""
    from vitpeft.cli.check import run_checks

    without = {finding.what for finding in run_checks("config/demo.yaml")}
    assert "gpu" not in without
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    monkeypatch.setenv("SLURM_GPUS_ON_NODE", "1")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    gpu = next(finding for finding in run_checks("config/demo.yaml") if finding.what == "gpu")
    assert gpu.status == "FAIL" and "CUDA_VISIBLE_DEVICES='0'" in gpu.detail and "SLURM GPUs on node: 1" in gpu.detail
