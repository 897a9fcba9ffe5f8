"""Block expansion (LLaMA Pro): insert p identity-initialised copies of blocks; only they and the head train.

Placement. With interval s, a new block goes after original blocks s, 2s, ..., ps
(1-based), each a copy of the block before it; s follows the paper's rule
(configs.block_interval: 11, 6, 4, 3 for p = 1..4 on 12 blocks) unless the
`interval` argument sets it.

Identity at init: the copy's attention output projection and MLP output
projection (weights and biases) are zero, so both residual branches add 0.
"""

import contextlib
import copy

import torch
from torch import nn

from vitpeft.methods.common import freeze, train_head
from vitpeft.methods.arguments import BlockExpansion as Config

NEW_BLOCKS_ATTR = "vitpeft_new_blocks"  # indices into model.blocks of the inserted blocks


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
    after = set(cfg.insert_after(len(original)))
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
