"""LoRA (peft) on the attention query and value projections, as in the paper.

rank r, alpha = r, dropout 0, no bias; the fused qkv is split first so q and v
get separate adapters; the head trains in full.
"""

from dataclasses import dataclass, field
from typing import Optional

from peft import LoraConfig
from torch import nn

from vitpeft.errors import VitpeftError
from vitpeft.methods import adapters
from vitpeft.methods.common import is_int, is_number
from vitpeft.methods.qkv import split_qkv

NAME = "lora"


@dataclass(frozen=True)
class Config:
    r: int = 8
    alpha: Optional[float] = None  # None = r (the paper's choice)
    dropout: float = 0.0
    target_modules: list = field(default_factory=lambda: ["q", "v"])

    def __post_init__(self):
        check_lora_args(self, NAME)


def check_lora_args(cfg, method: str) -> None:
    if not is_int(cfg.r) or cfg.r <= 0:
        raise VitpeftError(f"method {method!r}: r must be a positive integer, got {cfg.r!r}")
    if cfg.alpha is not None and not (is_number(cfg.alpha) and cfg.alpha > 0):
        raise VitpeftError(f"method {method!r}: alpha must be a positive number, got {cfg.alpha!r}")
    if not (is_number(cfg.dropout) and 0 <= cfg.dropout < 1):
        raise VitpeftError(f"method {method!r}: dropout must be in [0, 1), got {cfg.dropout!r}")
    targets = cfg.target_modules
    if not isinstance(targets, list) or not targets or not all(isinstance(t, str) and t for t in targets):
        raise VitpeftError(f"method {method!r}: target_modules must be a non-empty list of names, got {targets!r}")


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
