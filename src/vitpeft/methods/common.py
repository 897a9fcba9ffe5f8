"""Helpers every method shares: freezing, model depth, the head."""

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
