"""What each training step sees, as pure functions of (seed, step): the data, the batch, the rate, the precision.

The training set sits on the device as one uint8 tensor (`load_data`, with the
validation split drawn from the seed when the spec holds one out). The batch
order is a permutation per epoch drawn from (seed, epoch); the augmentation and
the layers' own randomness (dropout, stochastic depth) are reseeded from (seed,
step) through `derive_seed`, each on its own stream. So a resumed run replays
exactly what an uninterrupted one computes, with no RNG state saved.
"""

import contextlib
import math
from dataclasses import dataclass

import numpy as np
import torch

from vitpeft.data import store
from vitpeft.errors import VitpeftError

STREAM_SPLIT, STREAM_EPOCH, STREAM_AUGMENT, STREAM_LAYERS = 0, 1, 2, 3


@dataclass
class Data:
    """Training images (uint8 N x H x W x 3) and labels on the device, plus the selection split (or None)."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    eval_x: torch.Tensor | None = None
    eval_y: torch.Tensor | None = None


def load_data(spec: dict, device) -> Data:
    """Load train (and the selection split) to `device`, checking labels and sizes first."""
    cfg = spec["train"]
    train = _checked(spec["data"]["train"], spec["num_classes"])
    images, labels = torch.from_numpy(train.images), torch.from_numpy(train.labels)
    eval_x = eval_y = None
    if cfg["selection"] == "best_val" and spec["data"]["val"]:  # the dataset's official validation split
        val = _checked(spec["data"]["val"], spec["num_classes"])
        eval_x, eval_y = torch.from_numpy(val.images), torch.from_numpy(val.labels)
    elif holds_out(spec):
        val, keep = held_out_split(len(labels), cfg)
        held_x, held_y, images, labels = images[val], labels[val], images[keep], labels[keep]
        if cfg["selection"] == "best_val":
            eval_x, eval_y = held_x, held_y
    if cfg["selection"] == "best_test":
        test = _checked(spec["data"]["test"], spec["num_classes"])
        eval_x, eval_y = torch.from_numpy(test.images), torch.from_numpy(test.labels)
    if len(labels) < cfg["batch_size"]:
        held_out = " (after the validation hold-out)" if len(labels) < len(train) else ""
        raise VitpeftError(
            f"{spec['data']['train']}: {len(labels)} training images{held_out} "
            f"are fewer than train.batch_size {cfg['batch_size']}"
        )
    to = lambda t: None if t is None else t.to(device)  # noqa: E731
    return Data(to(images), to(labels), to(eval_x), to(eval_y))


def holds_out(spec: dict) -> bool:
    """Whether training leaves a slice of train out: best_val without a validation split, or `train.hold_out`."""
    cfg = spec["train"]
    return not spec["data"]["val"] and (cfg["selection"] == "best_val" or cfg.get("hold_out", False))


def held_out_split(count: int, cfg: dict) -> tuple:
    """(held-out, kept) indices of a train split of `count` images: val_fraction of them, drawn from the seed."""
    order = torch.randperm(count, generator=_generator(cfg["seed"], STREAM_SPLIT))
    n_val = max(1, round(cfg["val_fraction"] * count))
    return order[:n_val], order[n_val:]


def validation_set(spec: dict) -> store.Dataset | None:
    """The target images the run never trained on besides test: its validation split, or the slice training held
    out (`holds_out`); None when it has neither."""
    if spec["data"]["val"]:
        return _checked(spec["data"]["val"], spec["num_classes"])
    if not holds_out(spec):
        return None
    train = _checked(spec["data"]["train"], spec["num_classes"])
    held = held_out_split(len(train), spec["train"])[0].numpy()
    return store.Dataset(train.images[held], train.labels[held], train.classes)


def validation_words(spec: dict) -> str | None:
    """What `validation_set` is, in words (None when there is none)."""
    if spec["data"]["val"]:
        return f"validation split {spec['data']['val']}"
    if not holds_out(spec):
        return None
    cfg = spec["train"]
    return f"held-out {cfg['val_fraction']} of train {spec['data']['train']} (drawn from seed {cfg['seed']})"


def _checked(folder, num_classes: int) -> store.Dataset:
    dataset = store.load(folder)
    if len(dataset) == 0:
        raise VitpeftError(f"{folder}: dataset is empty")
    low, high = int(dataset.labels.min()), int(dataset.labels.max())
    if low < 0 or high >= num_classes:
        raise VitpeftError(f"{folder}: labels span {low}..{high}, but num_classes is {num_classes}")
    return dataset


def derive_seed(*keys) -> int:
    """A 63-bit seed hashed from `keys` (e.g. seed, stream, step): distinct keys give unrelated streams."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1, dtype=np.uint64)[0] >> 1)


def _generator(*keys) -> torch.Generator:
    return torch.Generator().manual_seed(derive_seed(*keys))


@contextlib.contextmanager
def own_global_rng(device: torch.device):
    """Torch's global generators (CPU and `device`) as they were before the block, whatever it draws or seeds."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        yield


def batch_indices(step: int, n: int, batch_size: int, seed: int, cache: dict, device) -> torch.Tensor:
    """Indices of step `step`'s batch: epoch-wise permutations seeded by (seed, epoch), last partial batch dropped.

    The permutation is drawn on the CPU (same batches on every device) and
    copied to `device` once per epoch, not once per step.
    """
    per_epoch = n // batch_size
    epoch, position = divmod(step, per_epoch)
    if cache.get("epoch") != epoch:
        order = torch.randperm(n, generator=_generator(seed, STREAM_EPOCH, epoch))
        cache["epoch"], cache["order"] = epoch, order.to(device)
    return cache["order"][position * batch_size : (position + 1) * batch_size]


def lr_at(step: int, base_lr: float, warmup_steps: int, steps: int) -> float:
    """Learning rate of 0-based step `step`: linear warm-up to base_lr, then cosine decay towards 0."""
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, steps - warmup_steps)
    return base_lr * 0.5 * (1 + math.cos(math.pi * progress))


def autocast_dtype(precision: str, device: torch.device):
    """The autocast dtype, or None for plain fp32. auto = bf16 on CUDA (no loss scaling needed), fp32 on CPU."""
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
