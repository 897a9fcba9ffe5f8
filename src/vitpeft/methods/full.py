"""All: every weight trains."""

from torch import nn

from vitpeft.methods.arguments import Full as Config


def apply(model: nn.Module, cfg: Config) -> None:
    model.requires_grad_(True)
