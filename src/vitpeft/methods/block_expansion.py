"""Block expansion (LLaMA Pro): insert p identity-initialised copies of blocks; only they and the head train.

Placement. With interval s, a new block goes after original blocks s, 2s, ..., ps
(1-based), each a copy of the block before it. The paper's configs on 12 blocks
use s = 11, 6, 4, 3 for p = 1, 2, 3, 4, which is s = ceil((depth - 1) / p).
That rule reaches past the last block for some p (p = 5 on 12 blocks gives
s = 3, and 5 x 3 > 12); s then falls back to depth // p, the widest interval
that fits p insertions. `interval` overrides the rule.

Identity at init: the copy's attention output projection and MLP output
projection (weights and biases) are zero, so both residual branches add 0.
"""

import contextlib
import copy
import math
from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from vitpeft.errors import VitpeftError
from vitpeft.methods.common import freeze, is_int, train_head

NEW_BLOCKS_ATTR = "vitpeft_new_blocks"  # indices into model.blocks of the inserted blocks


@dataclass(frozen=True)
class Config:
    p: int = 1
    interval: Optional[int] = None  # None = the paper's rule (module docstring)

    def __post_init__(self):
        if not is_int(self.p) or self.p < 1:
            raise VitpeftError(f"method 'block_expansion': p must be an integer >= 1, got {self.p!r}")
        if self.interval is not None and (not is_int(self.interval) or self.interval < 1):
            raise VitpeftError(f"method 'block_expansion': interval must be an integer >= 1, got {self.interval!r}")

    def check_depth(self, depth: int) -> None:
        if self.p > depth:
            raise VitpeftError(f"method 'block_expansion': p={self.p} exceeds the model's {depth} blocks")
        if self.interval is not None and self.p * self.interval > depth:
            raise VitpeftError(
                f"method 'block_expansion': p={self.p} blocks every {self.interval} do not fit in {depth} blocks"
            )


def interval(p: int, depth: int) -> int:
    """The paper's interval s for p new blocks in `depth` original blocks (module docstring)."""
    s = math.ceil((depth - 1) / p) if depth > 1 else 1
    return s if p * s <= depth else depth // p


def insert_after(cfg: Config, depth: int) -> list:
    """1-based indices of the original blocks that get a copy right after them."""
    s = cfg.interval or interval(cfg.p, depth)
    return [s * (i + 1) for i in range(cfg.p)]


def identity_copy(block: nn.Module) -> nn.Module:
    new = copy.deepcopy(block)
    with torch.no_grad():
        for linear in (new.attn.proj, new.mlp.fc2):
            linear.weight.zero_()
            if linear.bias is not None:
                linear.bias.zero_()
    return new


def apply(model: nn.Module, cfg: Config) -> None:
    original = list(model.blocks)
    cfg.check_depth(len(original))
    after = set(insert_after(cfg, len(original)))
    blocks, new_indices = [], []
    for position, block in enumerate(original, start=1):
        blocks.append(block)
        if position in after:
            new_indices.append(len(blocks))
            blocks.append(identity_copy(block))
    model.blocks = nn.Sequential(*blocks)
    setattr(model, NEW_BLOCKS_ATTR, new_indices)
    freeze(model)
    for index in new_indices:
        model.blocks[index].requires_grad_(True)
    train_head(model)


@contextlib.contextmanager
def routed(model: nn.Module):
    """Yield `model` with its new blocks taken out (the pretrained path); restore on exit."""
    expanded = model.blocks
    new = set(getattr(model, NEW_BLOCKS_ATTR))
    model.blocks = nn.Sequential(*[block for i, block in enumerate(expanded) if i not in new])
    try:
        yield model
    finally:
        model.blocks = expanded
