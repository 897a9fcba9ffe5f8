"""L2-SP (Li, Grandvalet, Davoine 2018): every weight trains, pulled back towards the pretrained ones.

(Or, with `anchor: start`, towards the weights the run starts from: a task sequence's later steps; see
vitpeft.methods.arguments.L2SP.)

loss = CE + alpha/2 ||w - w_0||^2 over the backbone + beta/2 ||w_head||^2.
The penalty's gradient, alpha (w - w_0) and beta w_head, is added to the
gradients in place after the backward pass (`Penalty.add_grad_`): no autograd
graph and no temporary the size of a weight. The reference w_0 is one copy of
the backbone's weights, in their own dtype on the training device (at ViT-B/16
in fp32: 85.8 M x 4 bytes = 343 MB), taken when training starts; the head needs
none (its reference is zero).
"""

import torch
from torch import nn

from vitpeft.methods.arguments import L2SP as Config
from vitpeft.models.backbone import HEAD_PREFIX


def apply(model: nn.Module, cfg: Config) -> None:
    model.requires_grad_(True)


class Penalty:
    """L2-SP's penalty around the weights `anchor` holds (by name; default `model` itself, before the first step)."""

    def __init__(self, model: nn.Module, cfg: Config, anchor: nn.Module | None = None):
        self.alpha, self.beta = float(cfg.alpha), float(cfg.beta)
        named = [(name, param) for name, param in model.named_parameters() if param.requires_grad]
        self.backbone = [param for name, param in named if not name.startswith(HEAD_PREFIX)]
        self.head = [param for name, param in named if name.startswith(HEAD_PREFIX)]
        held = dict((anchor or model).named_parameters())
        self.reference = [held[name].detach().to(param.device, param.dtype, copy=True)
                          for name, param in named if not name.startswith(HEAD_PREFIX)]

    def reference_bytes(self) -> int:
        return sum(ref.numel() * ref.element_size() for ref in self.reference)

    @torch.no_grad()
    def value(self) -> torch.Tensor:
        """alpha/2 ||w - w_0||^2 + beta/2 ||w_head||^2 (for logs and tests; training needs only the gradient)."""
        total = sum(((p.float() - r.float()) ** 2).sum() for p, r in zip(self.backbone, self.reference))
        head = sum((p.float() ** 2).sum() for p in self.head)
        return self.alpha / 2 * total + self.beta / 2 * head

    @torch.no_grad()
    def add_grad_(self) -> None:
        """grad += alpha (w - w_0) on the backbone, beta w on the head; in place (a missing grad starts at 0)."""
        for params, references, weight in ((self.backbone, self.reference, self.alpha), (self.head, None, self.beta)):
            if weight == 0:
                continue
            for i, param in enumerate(params):
                if param.grad is None:
                    param.grad = torch.zeros_like(param)
                param.grad.add_(param, alpha=weight)
                if references is not None:
                    param.grad.sub_(references[i], alpha=weight)


def penalty(model: nn.Module, cfg: Config, anchor: nn.Module | None = None) -> Penalty:
    return Penalty(model, cfg, anchor)
