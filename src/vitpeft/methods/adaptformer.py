"""AdaptFormer (Chen et al. 2022, arXiv 2205.13535): a bottleneck beside each block's MLP; only it and the head train.

Each block computes x' = x + attention, then x' + MLP(norm2(x')) + scale * up(dropout(ReLU(down(x')))): the
adapter reads the residual stream x' (not norm2's output) and is added beside the MLP branch, outside its
LayerScale and stochastic depth, as the authors' Block (ShoufaChen/AdaptFormer models/custom_modules.py,
ffn_option "parallel"). Their image setting (main_image.py) is the one built: no LayerNorm inside the adapter
(ffn_adapter_layernorm_option "none"), a fixed scale (ffn_adapter_scalar "0.1", not their learnt-scalar
option), "lora" initialisation (down: Kaiming-uniform with a = sqrt(5), up: zero, both biases zero), dropout
0.1 after the ReLU. The up projection's zeros make the adapted model compute the pretrained function at init.

The timm block keeps its modules and names: the adapter is `blocks.<i>.adaptmlp` (the authors' name) and
enters through hooks (norm2's input is the residual stream x'; the block's output gets the adapter's term).
Routed view: the adapters step aside, and the model computes exactly the pretrained function.
"""

import math

from torch import nn

from vitpeft.methods.arguments import AdaptFormer as Config
from vitpeft.methods.common import device_of, freeze, switched_off, train_head

ATTR = "adaptmlp"


class ParallelAdapter(nn.Module):
    """down -> ReLU -> dropout -> up, times `scale`, added to its block's output from the block's residual stream."""

    def __init__(self, width: int, bottleneck: int, scale: float, dropout: float, device):
        super().__init__()
        self.down_proj = nn.Linear(width, bottleneck, device=device)
        self.up_proj = nn.Linear(bottleneck, width, device=device)
        self.dropout = nn.Dropout(dropout)
        self.scale, self.enabled, self._stream = scale, True, None
        nn.init.kaiming_uniform_(self.down_proj.weight, a=math.sqrt(5))
        for tensor in (self.down_proj.bias, self.up_proj.weight, self.up_proj.bias):
            nn.init.zeros_(tensor)

    def forward(self, x):
        return self.up_proj(self.dropout(self.down_proj(x).relu())) * self.scale

    def read(self, norm2, args):
        """norm2's input is the block's residual stream after attention: keep it for the block's output."""
        self._stream = args[0] if self.enabled else None

    def add(self, block, args, output):
        stream, self._stream = self._stream, None
        return None if stream is None else output + self(stream)


def apply(model: nn.Module, cfg: Config) -> None:
    freeze(model)
    for block in model.blocks:
        adapter = ParallelAdapter(block.norm2.normalized_shape[0], cfg.bottleneck, cfg.scale, cfg.dropout,
                                  device_of(model))
        setattr(block, ATTR, adapter.train(model.training))  # in the model's mode, as its other modules
        block.norm2.register_forward_pre_hook(adapter.read)
        block.register_forward_hook(adapter.add)
    train_head(model)


def adapters(model: nn.Module) -> list:
    return [getattr(block, ATTR) for block in model.blocks]


def routed(model: nn.Module):
    """Yield `model` with every adapter off (the pretrained function, exactly); restore on exit."""
    return switched_off(model, adapters(model))
