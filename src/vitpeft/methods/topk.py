"""Top-k: the last k transformer blocks, the final norm and the head train."""

from torch import nn

from vitpeft.methods.common import freeze, train_head
from vitpeft.methods.arguments import TopK as Config


def apply(model: nn.Module, cfg: Config) -> None:
    freeze(model)
    for block in model.blocks[-cfg.k:]:
        block.requires_grad_(True)
    model.norm.requires_grad_(True)
    model.fc_norm.requires_grad_(True)  # the identity for token pooling; the final norm of avg-pooled ViTs
    train_head(model)
