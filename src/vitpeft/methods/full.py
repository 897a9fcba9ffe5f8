"""All: every weight trains."""

from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class Config:
    """No arguments."""


def apply(model: nn.Module, cfg: Config) -> None:
    model.requires_grad_(True)
