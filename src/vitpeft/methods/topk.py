"""Top-k: the last k transformer blocks, the final norm and the head train."""

from dataclasses import dataclass

from torch import nn

from vitpeft.errors import VitpeftError
from vitpeft.methods.common import freeze, is_int, train_head


@dataclass(frozen=True)
class Config:
    k: int = 3

    def __post_init__(self):
        if not is_int(self.k) or self.k < 1:
            raise VitpeftError(f"method 'topk': k must be an integer >= 1, got {self.k!r}")

    def check_depth(self, depth: int) -> None:
        if self.k > depth:
            raise VitpeftError(f"method 'topk': k={self.k} exceeds the model's {depth} blocks")


def apply(model: nn.Module, cfg: Config) -> None:
    freeze(model)
    for block in model.blocks[-cfg.k:]:
        block.requires_grad_(True)
    model.norm.requires_grad_(True)
    model.fc_norm.requires_grad_(True)  # the identity for token pooling; the final norm of avg-pooled ViTs
    train_head(model)
