"""LayerNorm tuning: only every LayerNorm's scale and shift, and the head, train.

Each block's norm1 and norm2 and the final norm (38,400 parameters at ViT-B/16): pretrained weights trained in
place, so there is no routed view; WiSE-FT interpolates them by name like full fine-tuning's weights.
"""

from torch import nn

from vitpeft.methods.arguments import LnTune as Config
from vitpeft.methods.common import freeze, train_head


def apply(model: nn.Module, cfg: Config) -> None:
    freeze(model)
    for module in model.modules():
        if isinstance(module, nn.LayerNorm):
            module.requires_grad_(True)
    train_head(model)
