"""Split timm's fused attention `qkv` Linear into separate `q`, `k`, `v` Linears.

The paper adapts the query and value projections separately (as in HF
transformers' ViT). timm computes them with one fused Linear, so adapters are
put on three Linears sliced from it; their concatenated output is the fused
one's, so the model computes the same function.
"""

import torch
from torch import nn

PARTS = ("q", "k", "v")


class SplitQKV(nn.Module):
    """Drop-in replacement for a fused qkv Linear: q, k and v computed apart, then concatenated."""

    def __init__(self, fused: nn.Linear):
        super().__init__()
        width = fused.out_features // len(PARTS)
        for index, name in enumerate(PARTS):
            part = nn.Linear(
                fused.in_features, width, bias=fused.bias is not None,
                device=fused.weight.device, dtype=fused.weight.dtype,
            )
            rows = slice(index * width, (index + 1) * width)
            with torch.no_grad():
                part.weight.copy_(fused.weight[rows])
                if fused.bias is not None:
                    part.bias.copy_(fused.bias[rows])
            part.weight.requires_grad_(fused.weight.requires_grad)
            if part.bias is not None:
                part.bias.requires_grad_(fused.bias.requires_grad)
            setattr(self, name, part)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.q(x), self.k(x), self.v(x)], dim=-1)


def split_qkv(model: nn.Module) -> None:
    """Replace every block's `attn.qkv` Linear by a SplitQKV, in place."""
    for block in model.blocks:
        if isinstance(block.attn.qkv, nn.Linear):
            block.attn.qkv = SplitQKV(block.attn.qkv)
