"""All: every weight trains."""

from torch import nn

from vitpeft.method_args import Full as Config


def apply(model: nn.Module, cfg: Config) -> None:
    model.requires_grad_(True)
