"""`vitpeft check --gpu`: what this node's GPU offers against what the study's jobs need.

Run it where the jobs will run (`srun --gpus=1 vitpeft check --gpu`): the
driver against the CUDA version torch was built for, the compute capability
against what bf16 needs, and free memory against an estimate of the config's
largest job. `read_facts` asks torch and the driver; `judge` only compares, so
every verdict is testable without a GPU.
"""

import os
from dataclasses import dataclass, field

from vitpeft.training import devices

BF16_CAPABILITY = (8, 0)  # Ampere and newer compute in bf16 natively
# Activation bytes one image keeps per transformer block for backprop in 16-bit arithmetic:
# tokens * width * (34 + 5 * heads * tokens / width) (Korthikanti et al. 2022, eq. 2); fp32 doubles it.
ACTIVATION_BYTES = 34
ATTENTION_BYTES = 5
OPTIMIZER_BYTES = 8  # fp32 gradient + SGD momentum per trainable parameter, beside the fp32 weight itself


@dataclass
class Gpu:
    name: str
    capability: tuple
    free: int
    total: int


@dataclass
class Facts:
    torch_version: str
    torch_cuda: str | None
    driver: str | None
    visible: str | None
    gpus: list = field(default_factory=list)


def read_facts() -> Facts:
    import torch

    gpus = []
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            free, total = torch.cuda.mem_get_info(index)
            props = torch.cuda.get_device_properties(index)
            gpus.append(Gpu(props.name, (props.major, props.minor), free, total))
    return Facts(torch.__version__, torch.version.cuda, devices.driver_version(),
                 os.environ.get("CUDA_VISIBLE_DEVICES"), gpus)


def judge(facts: Facts, need: int, wants_bf16: bool) -> list:
    """[(status, what, detail)] for the driver, each GPU's bf16 support and its free memory."""
    found = [_driver(facts)]
    if not facts.gpus:
        found.append(("FAIL", "gpu", f"torch sees no CUDA device: {devices.why_no_cuda()}"))
        return found
    for index, gpu in enumerate(facts.gpus):
        what = f"gpu {index} ({gpu.name})"
        cc = ".".join(map(str, gpu.capability))
        if wants_bf16 and tuple(gpu.capability) < BF16_CAPABILITY:
            found.append(("FAIL", what, f"compute capability {cc} has no native bf16 (needs >= 8.0): set "
                                        "train.precision: fp16 (with loss scaling) or fp32"))
        else:
            found.append(("ok", what, f"compute capability {cc}" + (", bf16 native" if wants_bf16 else "")))
        status = "ok" if gpu.free >= need else "FAIL"
        found.append((status, f"{what} memory", f"{gpu.free / 2**30:.1f} GiB free of {gpu.total / 2**30:.1f}; "
                                                f"the largest job needs about {need / 2**30:.1f} GiB"))
    return found


def _driver(facts: Facts) -> tuple:
    built = f"torch {facts.torch_version} (CUDA {facts.torch_cuda})"
    if facts.torch_cuda is None:
        return "FAIL", "driver", f"torch {facts.torch_version} is a CPU-only build: {devices.SETUP_HINT}"
    needed = devices.required_driver(facts.torch_cuda)
    if facts.driver is None:
        return "FAIL", "driver", f"no NVIDIA driver found on {devices.node_name()}; {built} needs >= {needed}"
    if needed and devices.driver_major(facts.driver) < needed:
        return "FAIL", "driver", (f"{facts.driver} is older than {built} needs (>= {needed}): "
                                  f"{devices.SETUP_HINT}")
    return "ok", "driver", f"{facts.driver} runs {built}" + (f" (needs >= {needed})" if needed else "")


def training_bytes(spec: dict, model=None) -> int:
    """About how much GPU memory training `spec` takes: weights, gradients, momentum and saved activations.

    `model`: the spec's model with its method applied, on the meta device, if the caller has it already.
    """
    from vitpeft.methods import registry, vpt
    from vitpeft.models.backbone import build_model

    if model is None:
        model = registry.apply(build_model(spec["model"], spec["num_classes"], device="meta"), spec["method"],
                               spec["args"])
    params = list(model.parameters())
    weights = 4 * sum(p.numel() for p in params) + OPTIMIZER_BYTES * sum(p.numel() for p in params if p.requires_grad)
    kept = max(backprop_blocks(model), 1)  # a frozen backbone still holds one block's activations in its forward
    first = model.blocks[0]
    width, heads = first.norm1.normalized_shape[0], first.attn.num_heads
    prompts = getattr(model, vpt.ATTR, None)  # VPT's tokens lengthen the sequence of every block
    tokens = model.patch_embed.num_patches + model.num_prefix_tokens + (prompts.tokens.shape[1] if prompts else 0)
    per_block = tokens * width * (ACTIVATION_BYTES + ATTENTION_BYTES * heads * tokens / width)
    scale = 1 if spec["train"]["precision"] in ("auto", "bf16", "fp16") else 2
    return int(weights + spec["train"]["batch_size"] * per_block * kept * scale)


def backprop_blocks(model) -> int:
    """Blocks whose activations the backward pass needs: every block from the first one gradients must reach.

    A trained weight before the blocks (the patch embedding's bias or scale, VPT's prompts) reaches them all;
    otherwise the first block with a trained weight; none when only the final norm or head train.
    """
    names = [name for name, param in model.named_parameters() if param.requires_grad]
    if any(not name.startswith(("blocks.", "norm.", "fc_norm.", "head.")) for name in names):
        return len(model.blocks)
    trained = {int(name.split(".")[1]) for name in names if name.startswith("blocks.")}
    return len(model.blocks) - min(trained) if trained else 0
