"""Helpers every method shares: freezing, model depth, the head, a routed view's switch."""

import contextlib

from torch import nn


def depth(model: nn.Module) -> int:
    return len(model.blocks)


def freeze(model: nn.Module) -> None:
    model.requires_grad_(False)


def train_head(model: nn.Module) -> None:
    """The classifier is new for the target task, so it always trains in full."""
    model.get_classifier().requires_grad_(True)


def device_of(model: nn.Module):
    """Where the model's weights are (new parameters go there too: the meta device for counting)."""
    return next(model.parameters()).device


@contextlib.contextmanager
def switched_off(model: nn.Module, parts: list):
    """Yield `model` with each of `parts` (modules with an `enabled` flag) off; every one back on at exit."""
    for part in parts:
        part.enabled = False
    try:
        yield model
    finally:
        for part in parts:
            part.enabled = True
