"""What a training run costs: FLOPs per image, peak memory, trained and stored parameters.

FLOPs are counted, not estimated: torch.utils.flop_counter.FlopCounterMode over one training step as
the method runs it (forward, cross-entropy, backward), on the meta device (no memory, no arithmetic) at
the run's own input size and batch, divided by the batch. It counts the matrix products that autograd
really runs: the Linear layers, the attention's two batched products and the patch embedding's
convolution, forward and backward; so linear probing's backward stops at the head, LoRA's computes
activation gradients through frozen weights but no weight gradients for them, and full fine-tuning's
both. Norms, softmax, elementwise ops and the optimiser are not counted (a few % at ViT-B). At ViT-B/16,
224 px, one forward counts 35.1 GFLOPs: 33.7 in the weights' matrix products, 1.4 in attention's.
LP-FT's two stages are counted apart and weighted by their steps.

Peak memory: the analytic estimate `vitpeft check --gpu` makes (vitpeft.training.gpu_check.training_bytes:
weights, gradients, momentum, Korthikanti et al.'s activations of every block backprop reaches), named
as an estimate; a run on a GPU records the measured peak beside it (torch.cuda.max_memory_allocated).

Parameters: trained (what the optimiser updates: the run folder stores exactly these) and stored (every
parameter of the model as it is scored: the pretrained backbone, the method's additions, the head).
"""

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from vitpeft.methods import registry
from vitpeft.models.backbone import build_model
from vitpeft.training import gpu_check, stages

COUNTER = "torch.utils.flop_counter.FlopCounterMode on the meta device (matrix products, forward and backward)"


def meta_model(spec: dict):
    """The run's model with its method applied, on the meta device (the method's random draws leave the CPU's)."""
    with torch.random.fork_rng(devices=[]):
        return registry.apply(build_model(spec["model"], spec["num_classes"], device="meta"), spec["method"],
                              spec["args"])


def step_flops(spec: dict, stage: stages.Stage, model=None) -> tuple:
    """(forward, forward + backward) FLOPs per image of one training step of `stage` (LP-FT's probe: the head)."""
    model = (model or meta_model(spec)).train()
    batch, size = spec["train"]["batch_size"], spec["model"]["img_size"]
    images = torch.empty(batch, 3, size, size, device="meta")
    labels = torch.zeros(batch, dtype=torch.long, device="meta")
    with torch.random.fork_rng(devices=[]), stages.trains(model, stage), FlopCounterMode(display=False) as counter:
        loss = F.cross_entropy(model(images), labels)
        forward = counter.get_total_flops()
        loss.backward()
    return forward // batch, counter.get_total_flops() // batch


def training_flops(spec: dict, model=None) -> dict:
    """FLOPs per image of a forward pass and of a training step (the mean over the run's steps), and the run's total."""
    plan, model = stages.plan(spec), model or meta_model(spec)
    counted = {}
    for stage in plan:  # one count per kind of stage: LP-FT's probe and fine-tuning differ, not its steps
        if stage.head_only not in counted:
            counted[stage.head_only] = step_flops(spec, stage, model)
    steps, batch = spec["train"]["steps"], spec["train"]["batch_size"]
    total = sum(stage.steps * batch * counted[stage.head_only][1] for stage in plan)
    return {
        "forward_flops_per_image": counted[plan[0].head_only][0],  # the same model in every stage
        "train_flops_per_image": total // (steps * batch),
        "train_flops": total,
    }


def record(spec: dict, measured_bytes: int | None = None) -> dict:
    """A run's cost, each figure named as what it is (the summary.json `cost` section)."""
    model = meta_model(spec)
    return {
        **training_flops(spec, model),
        "flops_counted_by": COUNTER,
        "trained_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "stored_params": sum(p.numel() for p in model.parameters()),
        "memory_estimate_bytes": gpu_check.training_bytes(spec, model),
        "memory_measured_bytes": measured_bytes,  # a GPU's peak (torch.cuda.max_memory_allocated), else None
    }
