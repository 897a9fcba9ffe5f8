"""SSF (Lian et al. 2022, arXiv 2210.08823): scale and shift every operation's output; only they and the head train.

y = gamma * x + beta, per channel, after every Linear and LayerNorm of the backbone and the patch embedding's
projection (at ViT-B/16: the patch embedding, each block's norm1, qkv, proj, norm2, fc1, fc2, and the final
norm: 134 x 768 channels, 205,824 parameters), as the authors' ViT (dongzelian/SSF models/vision_transformer.py),
with their initialisation: gamma ~ N(1, 0.02), beta ~ N(0, 0.02). So, unlike LoRA or AdaptFormer, the model
does not compute the pretrained function at init: the published recipe starts near it, not at it.

Two views of one trained model. Unmerged (what trains, and what the study scores): the pretrained weights stay
as they are and each gamma, beta is applied by a forward hook on its layer (`<layer>.ssf`); its routed view turns
them off and computes exactly the pretrained function. Merged (`merge`, SSF's re-parameterisation for
inference): each gamma, beta folded into the preceding layer's weight and bias (W' = diag(gamma) W, b' = gamma b
+ beta), the same function up to float rounding at no extra inference cost; merged weights have no routed view.
"""


import torch
from torch import nn

from vitpeft.errors import VitpeftError
from vitpeft.methods.arguments import SSF as Config
from vitpeft.methods.common import device_of, freeze, switched_off, train_head
from vitpeft.models.backbone import HEAD_PREFIX

ATTR = "ssf"
HOSTS = (nn.Linear, nn.LayerNorm, nn.Conv2d)  # layers whose output SSF scales and shifts
INIT_STD = 0.02  # the authors' init_ssf_scale_shift


class ScaleShift(nn.Module):
    """gamma * x + beta over the channels of its layer's output (the last dim; a convolution's is dim 1)."""

    def __init__(self, channels: int, channel_dim: int, device):
        super().__init__()
        self.scale = nn.Parameter(torch.empty(channels, device=device).normal_(1.0, INIT_STD))
        self.shift = nn.Parameter(torch.empty(channels, device=device).normal_(0.0, INIT_STD))
        self.channel_dim, self.enabled = channel_dim, True

    def forward(self, x):
        shape = [1] * x.dim()
        shape[self.channel_dim] = -1
        return x * self.scale.view(shape) + self.shift.view(shape)

    def hook(self, layer, args, output):
        return self(output) if self.enabled else None


def hosts(model: nn.Module) -> list:
    """(name, layer) of every layer SSF follows: the backbone's Linear, LayerNorm and Conv2d layers, not the head."""
    return [(name, module) for name, module in model.named_modules()
            if isinstance(module, HOSTS) and not (name + ".").startswith(HEAD_PREFIX)]


def channels(layer: nn.Module) -> tuple:
    """(output channels, their dim) of a host layer."""
    if isinstance(layer, nn.Linear):
        return layer.out_features, -1
    if isinstance(layer, nn.Conv2d):
        return layer.out_channels, 1
    return layer.normalized_shape[-1], -1


def apply(model: nn.Module, cfg: Config) -> None:
    freeze(model)
    device = device_of(model)
    for _, layer in hosts(model):
        ss = ScaleShift(*channels(layer), device)
        # a child of its layer (<layer>.ssf.scale), in the model's mode; the layer's own forward ignores it
        setattr(layer, ATTR, ss.train(model.training))
        layer.register_forward_hook(ss.hook)
    train_head(model)


def scale_shifts(model: nn.Module) -> list:
    return [module for module in model.modules() if isinstance(module, ScaleShift)]


def routed(model: nn.Module):
    """Yield `model` without its scales and shifts (the pretrained function, exactly); restore on exit."""
    return switched_off(model, scale_shifts(model))


@torch.no_grad()
def merge(model: nn.Module) -> nn.Module:
    """Fold every gamma, beta into its layer (W' = diag(gamma) W, b' = gamma b + beta) and turn it off, in place."""
    for _, layer in hosts(model):
        ss = getattr(layer, ATTR, None)
        if ss is None or not ss.enabled:
            continue
        if layer.weight is None or layer.bias is None:
            raise VitpeftError(f"SSF cannot merge into {type(layer).__name__} without an affine weight and bias")
        shape = [-1] + [1] * (layer.weight.dim() - 1)
        layer.weight.mul_(ss.scale.view(shape))
        layer.bias.mul_(ss.scale).add_(ss.shift)
        ss.enabled = False
    return model
