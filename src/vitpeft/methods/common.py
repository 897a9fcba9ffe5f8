"""Helpers every method shares: configs from spec args, freezing, model depth."""

import dataclasses

from torch import nn

from vitpeft.errors import VitpeftError


def config_from_args(config_cls, args: dict, method: str):
    """Build a method's config dataclass from a spec's `args`, naming any unknown key."""
    if not isinstance(args, dict):
        raise VitpeftError(f"method {method!r}: args must be a mapping, got {type(args).__name__}")
    if hasattr(config_cls, "from_args"):
        return config_cls.from_args(args)
    allowed = [field.name for field in dataclasses.fields(config_cls)]
    unknown = sorted(set(args) - set(allowed))
    if unknown:
        raise VitpeftError(
            f"method {method!r}: unknown argument {unknown[0]!r} (allowed: {', '.join(allowed) or 'none'})"
        )
    return config_cls(**args)


def is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def depth(model: nn.Module) -> int:
    return len(model.blocks)


def freeze(model: nn.Module) -> None:
    model.requires_grad_(False)


def train_head(model: nn.Module) -> None:
    """The classifier is new for the target task, so it always trains in full."""
    model.get_classifier().requires_grad_(True)
