"""Fine-tuning methods: a name -> module registry and the operations the rest of vitpeft uses.

A method's arguments are a dataclass in `vitpeft.methods.arguments` (torch-free, so
planning can check them); its module here has an `apply(model, cfg)` that
freezes and injects in place and, where the method keeps the pretrained
function reachable, a `routed(model)` context manager giving the source-domain view.
"""

import contextlib
import importlib

import torch
from torch import nn

from vitpeft.methods import arguments
from vitpeft.errors import VitpeftError

# method name -> its module in this package, imported when first used (peft costs a second per job);
# the methods are arguments.CONFIGS', and a module is named after its method except `peft`'s
# (a module `peft` here would shadow the peft library) and VPT's two variants' (one module, `vpt`).
MODULES = {"peft": "generic_peft", "vpt_shallow": "vpt", "vpt_deep": "vpt"}
REGISTRY = {name: MODULES.get(name, name) for name in arguments.CONFIGS}
METHOD_ATTR = "vitpeft_method"  # set on a model by apply()
ARGS_ATTR = "vitpeft_method_args"  # the method's arguments, set beside it


def module_for(method: str):
    if method not in REGISTRY:
        raise VitpeftError(f"unknown method {method!r} (known: {', '.join(REGISTRY)})")
    return importlib.import_module(f"vitpeft.methods.{REGISTRY[method]}")


def check(method: str, args: dict, depth: int):
    """Validate a method's arguments for a model with `depth` blocks (peft's own fields too); return its config."""
    cfg = arguments.check(method, args, depth)
    if method == "peft":
        module_for(method).peft_config(cfg)
    return cfg


def apply(model: nn.Module, method: str, args: dict) -> nn.Module:
    """Freeze/inject `method` into `model` in place and return it, tagged with the method's name."""
    if hasattr(model, METHOD_ATTR):
        raise VitpeftError(f"model already has method {getattr(model, METHOD_ATTR)!r} applied")
    cfg = check(method, args, len(model.blocks))
    module_for(method).apply(model, cfg)
    setattr(model, METHOD_ATTR, method)
    setattr(model, ARGS_ATTR, dict(args))
    return model


def trainable_state(model: nn.Module) -> dict:
    """A snapshot of the weights that training changes (requires_grad): detached CPU copies, contiguous.

    Copies even on the CPU, so a kept snapshot (best step so far) does not move with training.
    """
    return {
        name: param.detach().to("cpu", copy=True).contiguous()
        for name, param in model.named_parameters()
        if param.requires_grad
    }


def load_trainable(model: nn.Module, state: dict, leave_out: str | None = None) -> None:
    """Load a trainable_state into a model prepared the same way; keys and shapes must match exactly.

    `leave_out`: a name prefix (the head's) neither loaded nor expected, on either side.
    """
    params = {name: param for name, param in model.named_parameters() if param.requires_grad}
    if leave_out is not None:
        params = {name: param for name, param in params.items() if not name.startswith(leave_out)}
        state = {name: value for name, value in state.items() if not name.startswith(leave_out)}
    missing, unexpected = sorted(set(params) - set(state)), sorted(set(state) - set(params))
    if missing or unexpected:
        raise VitpeftError(
            f"trained weights do not fit the model: {len(missing)} missing {missing[:5]}, "
            f"{len(unexpected)} unexpected {unexpected[:5]} (was it trained with another method or model?)"
        )
    for name, param in params.items():
        if state[name].shape != param.shape:
            raise VitpeftError(
                f"trained weight {name!r} has shape {tuple(state[name].shape)}, the model expects {tuple(param.shape)}"
            )
    with torch.no_grad():
        for name, param in params.items():
            param.copy_(state[name])


@contextlib.contextmanager
def routed(model: nn.Module):
    """The source-domain view: yields the model computing its pretrained function, or None.

    LoRA/peft and AdaptFormer adapters are switched off, block expansion's new
    blocks taken out, VPT's prompts left out, SSF's scales and shifts turned off;
    methods that train pretrained weights in place (full, topk, bitfit, ln_tune,
    ...) and linear have no such view (None; arguments.routed_view says why).
    Restored on exit.
    """
    method = getattr(model, METHOD_ATTR, None)
    view = getattr(module_for(method), "routed", None) if method else None
    if view is None:
        yield None
        return
    with view(model) as routed_model:
        yield routed_model


def has_routed_view(method: str) -> bool:
    """Whether `method` has a source-domain view (see `routed`)."""
    return hasattr(module_for(method), "routed")


def count_trainable(spec: dict) -> int:
    """Trainable parameters of `spec`'s method at its model's scale, built on the meta device (no memory)."""
    from vitpeft.models.backbone import build_model

    model = build_model(spec["model"], spec["num_classes"], device="meta")
    apply(model, spec["method"], spec["args"])
    return sum(param.numel() for param in model.parameters() if param.requires_grad)



def penalty(model: nn.Module, anchor: nn.Module | None = None):
    """The method's loss penalty (L2-SP's) around the weights of `anchor` (default: the model's own now), or None:
    built before training."""
    method = getattr(model, METHOD_ATTR, None)
    make = getattr(module_for(method), "penalty", None) if method else None
    if make is None:
        return None
    return make(model, arguments.config_from_args(method, getattr(model, ARGS_ATTR)), anchor)
