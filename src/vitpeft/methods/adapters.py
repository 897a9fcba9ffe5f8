"""Inject peft adapters into a timm model in place, and switch them off for the source-domain view.

`peft.inject_adapter_in_model` adds the adapter layers without wrapping the
model in a PeftModel, so the result stays a timm VisionTransformer (features,
forward_head, blocks all keep working).
"""

import contextlib

import peft
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn

from vitpeft.errors import VitpeftError
from vitpeft.methods.common import freeze, train_head
from vitpeft.methods.qkv import PARTS


def linear_names(model: nn.Module, split: bool) -> list:
    """Names of the model's Linear layers, as they will be once the qkv split (if any) is done."""
    names = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    if not split:
        return names
    split_names = []
    for name in names:
        if name.endswith("attn.qkv"):
            split_names += [f"{name}.{part}" for part in PARTS]
        else:
            split_names.append(name)
    return split_names


def check_targets(model: nn.Module, targets, method: str, split: bool) -> None:
    """Every target must name (the end of) some Linear layer, as peft matches them."""
    names = linear_names(model, split)
    for target in targets:
        if not any(name == target or name.endswith("." + target) for name in names):
            suffixes = sorted({name.rsplit(".", 1)[-1] for name in names})
            raise VitpeftError(
                f"method {method!r}: target module {target!r} is no Linear layer of this model "
                f"(Linear layer names: {', '.join(suffixes)})"
            )


def inject(model: nn.Module, peft_config, method: str) -> None:
    """Freeze the model, add the adapters (which train), then let the head train in full."""
    freeze(model)
    try:
        peft.inject_adapter_in_model(peft_config, model)
    except (ValueError, TypeError, NotImplementedError) as error:
        raise VitpeftError(f"method {method!r}: peft cannot inject {peft_config.peft_type}: {error}") from None
    train_head(model)


def adapter_layers(model: nn.Module) -> list:
    return [module for module in model.modules() if isinstance(module, BaseTunerLayer)]


@contextlib.contextmanager
def disabled(model: nn.Module):
    """Yield `model` computing without its adapters (the pretrained function); restore on exit.

    peft's enable_adapters also flips requires_grad of adapter weights, so the
    flags are saved and put back exactly.
    """
    layers = [layer for layer in adapter_layers(model) if not layer.disable_adapters]
    flags = {name: param.requires_grad for name, param in model.named_parameters()}
    for layer in layers:
        layer.enable_adapters(False)
    try:
        yield model
    finally:
        for layer in layers:
            layer.enable_adapters(True)
        for name, param in model.named_parameters():
            param.requires_grad_(flags[name])
