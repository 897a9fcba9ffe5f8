"""The demo's stand-in for DINO: a tiny ViT pretrained on the synthetic source domain.

DINO's ViT-B/16 cannot be downloaded offline, so the demo makes its own
"pretrained backbone": the config's `backbone.model` trained with supervised
cross-entropy on the source train set (texture classes, random colours), with
the same on-device crop/flip augmentation the fine-tuning loop uses. Its
weights are saved WITHOUT the classifier, as DINO's file is, so
`layouts.load_backbone` reads it exactly like the real checkpoint.

AdamW with warm-up and cosine decay: a ViT trained from scratch needs an
adaptive optimiser to converge in a few hundred steps (SGD is for the
fine-tuning, as in the paper).
"""

import math
import time

import numpy as np
import torch
import torch.nn.functional as F

from vitpeft.data import augment
from vitpeft.models import backbone
from vitpeft.data import store
from vitpeft.errors import VitpeftError
from vitpeft.fileio import atomic_path

# Measured on the demo's synthetic source under the pinned kernels (MKL COMPATIBLE): at lr 0.002 a width-48 ViT
# stalled on the loss plateau (2.3 -> 1.8 in 600 steps, source k-NN 26%) where the earlier kernels' last bits let it
# escape; at 0.001 widths 48 (pretraining seeds 0, 1, 2) and 32 (seeds 0, 1) converged, width 32 to k-NN 82 and 76%.
DEFAULTS = {"steps": 600, "batch_size": 64, "lr": 0.001, "seed": 0}
MEAN = STD = (0.5, 0.5, 0.5)  # the fine-tuning default normalisation (spec.DEFAULTS), so features match
CROP_SCALE = (0.35, 1.0)  # smaller crops can cut a shape (disk, plus) out of the image
WEIGHT_DECAY = 0.05
WARMUP_FRACTION = 0.1
LOG_EVERY = 50


def check(cfg: dict) -> dict:
    """The `pretrain` config section with defaults filled; a bad value is an error naming it."""
    unknown = sorted(set(cfg) - set(DEFAULTS))
    if unknown:
        raise VitpeftError(f"pretrain: unknown key {unknown[0]!r} (allowed: {', '.join(DEFAULTS)})")
    cfg = {**DEFAULTS, **cfg}
    for key in ("steps", "batch_size"):
        if not isinstance(cfg[key], int) or isinstance(cfg[key], bool) or cfg[key] < 1:
            raise VitpeftError(f"pretrain.{key} must be a positive integer, got {cfg[key]!r}")
    if not isinstance(cfg["seed"], int) or isinstance(cfg["seed"], bool) or cfg["seed"] < 0:
        raise VitpeftError(f"pretrain.seed must be a non-negative integer, got {cfg['seed']!r}")
    if not isinstance(cfg["lr"], (int, float)) or isinstance(cfg["lr"], bool) or not cfg["lr"] > 0:
        raise VitpeftError(f"pretrain.lr must be a positive number, got {cfg['lr']!r}")
    return cfg


def lr_at(step: int, steps: int, peak: float) -> float:
    """Linear warm-up over the first WARMUP_FRACTION of the steps, then cosine decay to zero."""
    warmup = max(1, int(WARMUP_FRACTION * steps))
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return peak * 0.5 * (1 + math.cos(math.pi * progress))


def pretrain(cfg: dict, model_cfg: dict, data_dir, device="cpu", log=print) -> torch.nn.Module:
    """Train `model_cfg` on the dataset in `data_dir` (supervised); returns the model, head included."""
    cfg = check(cfg)
    data = store.load(data_dir)
    if len(data) == 0:
        raise VitpeftError(f"{data_dir}: the source train set is empty")
    torch.manual_seed(cfg["seed"])  # the head's and blocks' initialisation
    model = backbone.build_model(model_cfg, num_classes=len(data.classes), device=device)
    optimiser = torch.optim.AdamW(model.parameters(), lr=cfg["lr"], weight_decay=WEIGHT_DECAY)
    images = torch.from_numpy(np.ascontiguousarray(data.images)).to(device)
    labels = torch.from_numpy(data.labels).to(device)
    generator = torch.Generator(device=device).manual_seed(cfg["seed"])
    model.train()
    started = time.time()
    for step in range(cfg["steps"]):
        pick = torch.randint(len(labels), (cfg["batch_size"],), generator=generator, device=device)
        x = augment.random_resized_crop_flip(images[pick], model_cfg["img_size"], scale=CROP_SCALE, generator=generator)
        loss = F.cross_entropy(model(augment.normalize(x, MEAN, STD)), labels[pick])
        if not torch.isfinite(loss):  # before the update and before anything is saved
            raise VitpeftError(
                f"pretraining diverged: the loss became {loss.item()} at step {step + 1} of {cfg['steps']}; "
                f"lower pretrain.lr (now {cfg['lr']:g}); nothing was saved"
            )
        for group in optimiser.param_groups:
            group["lr"] = lr_at(step, cfg["steps"], cfg["lr"])
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        if (step + 1) % LOG_EVERY == 0 or step + 1 == cfg["steps"]:
            log(f"pretrain step {step + 1}/{cfg['steps']} loss {loss.item():.4f} ({time.time() - started:.0f}s)")
    return model.eval()


def save_backbone(model: torch.nn.Module, path) -> None:
    """Every weight except the classifier, as safetensors, written atomically."""
    from safetensors.torch import save_file

    state = {
        key: value.detach().cpu().contiguous()
        for key, value in model.state_dict().items()
        if not key.startswith(backbone.HEAD_PREFIX)
    }
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt", "origin": "vitpeft pretrain (synthetic source)"})
