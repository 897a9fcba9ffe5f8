"""LP-FT (Kumar et al. 2022): a linear probe, then full fine-tuning from the probe's head.

Every weight is trainable (the run folder keeps them all, as `full`'s); the
training loop freezes the backbone during the probe's steps
(vitpeft.training.stages), so the second stage starts from the probe's head
and the untouched backbone.
"""

import contextlib

from torch import nn

from vitpeft.methods.arguments import Lpft as Config
from vitpeft.methods.common import freeze, train_head


def apply(model: nn.Module, cfg: Config) -> None:
    model.requires_grad_(True)


@contextlib.contextmanager
def head_only(model: nn.Module):
    """The probe stage: only the head takes gradients; every flag restored on exit (so checkpoints keep all)."""
    flags = {name: param.requires_grad for name, param in model.named_parameters()}
    freeze(model)
    train_head(model)
    try:
        yield model
    finally:
        for name, param in model.named_parameters():
            param.requires_grad_(flags[name])
