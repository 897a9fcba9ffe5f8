"""LoRA on timm's fused qkv Linear: one adapter for q, k and v together.

Not the paper's method (it adapts q and v apart) though it has the same
parameter count at equal r; offered to measure what the difference costs.
"""

from torch import nn

from vitpeft.methods import adapters
from vitpeft.methods.arguments import LoraQKV as Config
from vitpeft.methods.lora import lora_config

NAME = "lora_qkv"


def apply(model: nn.Module, cfg: Config) -> None:
    adapters.check_targets(model, cfg.target_modules, NAME, split=False)
    adapters.inject(model, lora_config(cfg), NAME)


routed = adapters.disabled
