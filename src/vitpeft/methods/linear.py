"""Linear probing: only the classifier trains; the backbone stays the pretrained one."""

from dataclasses import dataclass

from torch import nn

from vitpeft.methods.common import freeze, train_head


@dataclass(frozen=True)
class Config:
    """No arguments."""


def apply(model: nn.Module, cfg: Config) -> None:
    freeze(model)
    train_head(model)
