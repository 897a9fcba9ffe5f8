"""LoRA (peft) on the attention query and value projections, as in the paper.

rank r, alpha = r, dropout 0, no bias; the fused qkv is split first so q and v
get separate adapters; the head trains in full.
"""

from peft import LoraConfig
from torch import nn

from vitpeft.methods import adapters
from vitpeft.methods.arguments import Lora as Config
from vitpeft.methods.qkv import split_qkv

NAME = "lora"


def lora_config(cfg) -> LoraConfig:
    return LoraConfig(
        r=cfg.r,
        lora_alpha=cfg.r if cfg.alpha is None else cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=list(cfg.target_modules),
        bias="none",
    )


def apply(model: nn.Module, cfg: Config) -> None:
    adapters.check_targets(model, cfg.target_modules, NAME, split=True)
    split_qkv(model)
    adapters.inject(model, lora_config(cfg), NAME)


routed = adapters.disabled
