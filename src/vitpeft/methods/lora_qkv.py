"""LoRA on timm's fused qkv Linear: one adapter for q, k and v together.

Not the paper's method (it adapts q and v apart) though it has the same
parameter count at equal r; offered to measure what the difference costs.
"""

from dataclasses import dataclass, field
from typing import Optional

from torch import nn

from vitpeft.methods import adapters
from vitpeft.methods.lora import check_lora_args, lora_config

NAME = "lora_qkv"


@dataclass(frozen=True)
class Config:
    r: int = 8
    alpha: Optional[float] = None  # None = r
    dropout: float = 0.0
    target_modules: list = field(default_factory=lambda: ["qkv"])

    def __post_init__(self):
        check_lora_args(self, NAME)


def apply(model: nn.Module, cfg: Config) -> None:
    adapters.check_targets(model, cfg.target_modules, NAME, split=False)
    adapters.inject(model, lora_config(cfg), NAME)


routed = adapters.disabled
