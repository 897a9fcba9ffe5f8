"""WiSE-FT-style interpolation of a trained model with the pretrained one (Wortsman et al. 2022, arXiv 2109.01903).

WiSE-FT: theta_alpha = (1 - alpha) theta_0 + alpha theta_ft. DINO has no
zero-shot head, so theta_0 of the classifier is the run's own trained head at
every alpha (the advice of WiSE-FT's authors where there is no zero-shot head,
mlfoundations/wise-ft issue 8): what moves with alpha is the backbone, so the
source k-NN at alpha = 0 is the pretrained backbone's and the target accuracy
there is the run's head reading pretrained features.

Per method (`interpolated(model, alpha, pretrained)`, restored on exit):
- full, topk, lpft, l2sp, and any method whose trained weights keep their
  pretrained names: every trained backbone weight is (1 - alpha) w_0 + alpha
  w_ft (`pretrained`: the untouched model's state dict);
- lora, lora_qkv, and peft with plain LoRA: W_0 + alpha * DeltaW, by scaling
  each adapter's `scaling` (huggingface/peft issue 1940);
- other peft adapters (IA3, LoHa, LoKr, DoRA, ...): their merged weight
  W_0 + alpha (W_merged - W_0), the adapter switched off (peft issue 1940: for
  DoRA this scales the merged update, not the magnitude vector);
- block_expansion: the new blocks' residual branches scaled by alpha (their
  attention and MLP output projections, whose zero init made them the identity);
- adaptformer: each adapter's term scaled by alpha (its up projection, zero at
  init: the same lerp from the pretrained-equivalent adapter with up = 0);
- ssf: gamma -> 1 + alpha (gamma - 1), beta -> alpha beta, which is WiSE-FT's
  lerp of the merged weights exactly (W' = diag(gamma) W is linear in gamma);
- bitfit, ln_tune: their trained weights keep their pretrained names (the first case);
- vpt_shallow, vpt_deep: none (prompts have no pretrained counterpart;
  methods.arguments.NO_INTERPOLATION).
alpha = 1 is the trained model and alpha = 0 the untouched backbone (or the
routed view) exactly, bit for bit: the endpoints never go through arithmetic
that could round (tests/test_interpolation.py).
"""

import contextlib
import warnings

import torch
from torch import nn

from vitpeft.errors import VitpeftError
from vitpeft.methods import adapters
from vitpeft.methods import arguments
from vitpeft.methods import registry
from vitpeft.methods.adaptformer import adapters as adaptformer_adapters
from vitpeft.methods.block_expansion import NEW_BLOCKS_ATTR
from vitpeft.methods.ssf import scale_shifts
from vitpeft.models.backbone import HEAD_PREFIX

ADAPTERS = {"lora", "lora_qkv", "peft"}
ADDED = ADAPTERS | {"block_expansion", "adaptformer", "ssf"}  # methods that add modules: interpolated through them


def supports(method: str) -> bool:
    """Whether `method`'s runs have an interpolation (arguments.NO_INTERPOLATION says why not)."""
    return method is not None and arguments.interpolates(method)


def needs_pretrained(method: str) -> bool:
    """Whether interpolating needs the untouched weights beside the trained model (weight-space methods do)."""
    return method not in ADDED


@contextlib.contextmanager
def interpolated(model: nn.Module, alpha: float, pretrained: dict | None = None):
    """Yield `model` computing theta_alpha; every weight and setting restored on exit."""
    if not 0 <= alpha <= 1:
        raise VitpeftError(f"interpolation: alpha must be in [0, 1], got {alpha!r}")
    method = getattr(model, registry.METHOD_ATTR, None)
    if not supports(method):
        why = arguments.NO_INTERPOLATION.get(method, "no method applied")
        raise VitpeftError(f"interpolation: method {method!r} has no interpolation ({why})")
    if method == "block_expansion":
        tensors = [t for i in getattr(model, NEW_BLOCKS_ATTR) for linear in (model.blocks[i].attn.proj,
                   model.blocks[i].mlp.fc2) for t in (linear.weight, linear.bias) if t is not None]  # fmt: skip
        with _scaled(tensors, alpha):
            yield model
    elif method in ADAPTERS | {"adaptformer", "ssf"} and alpha == 0:
        with registry.routed(model) as view:
            yield view
    elif method in ADAPTERS:
        with _adapters_scaled(model, alpha):
            yield model
    elif method == "adaptformer":
        ups = [t for adapter in adaptformer_adapters(model) for t in (adapter.up_proj.weight, adapter.up_proj.bias)]
        with _scaled(ups, alpha):
            yield model
    elif method == "ssf":
        with _ssf_scaled(scale_shifts(model), alpha):
            yield model
    else:
        if pretrained is None:
            raise VitpeftError(f"interpolation of {method!r} needs the pretrained weights")
        with _lerped(model, pretrained, alpha):
            yield model


@contextlib.contextmanager
def _kept(tensors: list):
    """Restore `tensors` to their values on entry."""
    saved = [t.detach().clone() for t in tensors]
    try:
        yield
    finally:
        with torch.no_grad():
            for tensor, value in zip(tensors, saved):
                tensor.copy_(value)


@contextlib.contextmanager
def _scaled(tensors: list, alpha: float):
    with _kept(tensors), torch.no_grad():
        if alpha != 1:
            for tensor in tensors:
                tensor.mul_(alpha)
        yield


@contextlib.contextmanager
def _ssf_scaled(scale_shifts: list, alpha: float):
    """gamma -> 1 + alpha (gamma - 1) and beta -> alpha beta: the lerp from the identity, the pretrained function."""
    with _kept([t for ss in scale_shifts for t in (ss.scale, ss.shift)]), torch.no_grad():
        if alpha != 1:
            for ss in scale_shifts:
                ss.scale.copy_(torch.lerp(torch.ones_like(ss.scale), ss.scale, alpha))
                ss.shift.mul_(alpha)
        yield


@contextlib.contextmanager
def _lerped(model: nn.Module, pretrained: dict, alpha: float):
    params = {n: p for n, p in model.named_parameters() if p.requires_grad and not n.startswith(HEAD_PREFIX)}
    missing = sorted(set(params) - set(pretrained))
    if missing:
        raise VitpeftError(f"interpolation: the pretrained weights lack {missing[0]!r} (a method that adds modules "
                           "needs its own interpolation in vitpeft.methods.interpolation)")
    with _kept(list(params.values())), torch.no_grad():
        if alpha != 1:
            for name, param in params.items():
                start = pretrained[name].to(param.device, param.dtype)
                param.copy_(start if alpha == 0 else torch.lerp(start, param, alpha))
        yield


@contextlib.contextmanager
def _adapters_scaled(model: nn.Module, alpha: float):
    """LoRA's update times alpha (its scaling); any other adapter through its merged weight."""
    layers = [layer for layer in adapters.adapter_layers(model) if not layer.disable_adapters]
    plain = [layer for layer in layers if _plain_lora(layer)]
    others = [layer for layer in layers if not _plain_lora(layer)]
    scalings = [dict(layer.scaling) for layer in plain]
    try:
        if alpha != 1:
            for layer in plain:
                for name in layer.scaling:
                    layer.scaling[name] = layer.scaling[name] * alpha
        with contextlib.ExitStack() as stack:
            if alpha != 1:
                for layer in others:
                    stack.enter_context(_merged_share(layer, alpha))
            yield
    finally:
        for layer, scaling in zip(plain, scalings):
            layer.scaling.clear()
            layer.scaling.update(scaling)


def _plain_lora(layer) -> bool:
    """A LoRA layer whose update is B A x times `scaling` (no DoRA or other variant)."""
    return hasattr(layer, "lora_A") and isinstance(getattr(layer, "scaling", None), dict) and not getattr(
        layer, "lora_variant", {})


@contextlib.contextmanager
def _merged_share(layer, alpha: float):
    """A non-LoRA adapter: the base weight becomes W_0 + alpha (W_merged - W_0), the adapter switched off."""
    base = layer.get_base_layer()
    tensors = [t for t in (base.weight, getattr(base, "bias", None)) if t is not None]
    flags = {id(p): p.requires_grad for p in layer.parameters()}
    with _kept(tensors), torch.no_grad():
        original = [t.detach().clone() for t in tensors]
        layer.merge()
        merged = [t.detach().clone() for t in tensors]
        with warnings.catch_warnings():  # IA3 warns that unmerging can round: the weights are put back from copies
            warnings.simplefilter("ignore", UserWarning)
            layer.unmerge()  # peft's own bookkeeping of what is merged
        for tensor, start, end in zip(tensors, original, merged):
            tensor.copy_(torch.lerp(start, end, alpha))
        layer.enable_adapters(False)
        try:
            yield
        finally:
            layer.enable_adapters(True)
            for p in layer.parameters():
                p.requires_grad_(flags[id(p)])
