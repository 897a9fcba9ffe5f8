"""Linear probing: only the classifier trains; the backbone stays the pretrained one."""

from torch import nn

from vitpeft.methods.common import freeze, train_head
from vitpeft.methods.arguments import Linear as Config


def apply(model: nn.Module, cfg: Config) -> None:
    freeze(model)
    train_head(model)
