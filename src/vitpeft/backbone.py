"""The backbone: a timm VisionTransformer, its pretrained weights, and DINO's k-NN feature."""

from pathlib import Path

import timm
import torch
from torch import nn

from vitpeft.errors import VitpeftError

HEAD_PREFIX = "head."  # the classifier is always fresh: a checkpoint may or may not carry one
WRAPPER_PREFIXES = ("module.", "backbone.")  # DDP and DINO's teacher/student wrappers
SHOWN_KEYS = 5  # how many offending keys an error message lists


def build_model(model_cfg: dict, num_classes: int, device="cpu") -> nn.Module:
    """A timm model from the spec's `model` section with a `num_classes` head.

    On the meta device no memory is allocated (parameter counts of ViT-B in a
    second). Elsewhere the model is built on the CPU and then moved, so its
    random initialisation does not depend on the device.
    """
    def create():
        try:
            return timm.create_model(
                model_cfg["name"],
                pretrained=False,
                num_classes=num_classes,
                img_size=model_cfg["img_size"],
                **model_cfg["kwargs"],
            )
        except (RuntimeError, TypeError, ValueError, AssertionError) as error:
            raise VitpeftError(f"cannot build model {model_cfg['name']!r} with {model_cfg}: {error}") from None

    if str(device) == "meta":
        with torch.device("meta"):
            return create()
    return create().to(device)


def read_state_dict(path) -> dict:
    """Tensors from a .pth/.pt (loaded with weights_only: no arbitrary unpickling) or .safetensors file."""
    path = Path(path)
    if not path.is_file():
        raise VitpeftError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        state = _read_safetensors(path)
    elif path.suffix in (".pth", ".pt"):
        state = _read_torch(path)
    else:
        raise VitpeftError(f"checkpoint {path}: unknown format {path.suffix!r} (expected .pth, .pt or .safetensors)")
    return _strip_wrapper_prefix(state)


def _read_safetensors(path: Path) -> dict:
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except Exception as error:  # safetensors raises its own error types for corrupt headers
        raise VitpeftError(f"checkpoint {path} is not a readable safetensors file: {error}") from None


def _read_torch(path: Path) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated zip, refused pickle, not a torch file at all
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise VitpeftError(f"checkpoint {path} cannot be read as a weights-only torch file: {first_line}") from None
    if not isinstance(state, dict):
        raise VitpeftError(f"checkpoint {path}: expected a state dict, found a {type(state).__name__}")
    not_tensors = [key for key, value in state.items() if not isinstance(value, torch.Tensor)]
    if not_tensors:
        raise VitpeftError(
            f"checkpoint {path}: expected a plain state dict of tensors, but {not_tensors[0]!r} is not a tensor "
            "(a training checkpoint? extract its backbone state dict first, e.g. DINO's 'teacher')"
        )
    return state


def _strip_wrapper_prefix(state: dict) -> dict:
    for prefix in WRAPPER_PREFIXES:
        if state and all(key.startswith(prefix) for key in state):
            state = {key[len(prefix):]: value for key, value in state.items()}
    return state


def load_backbone(model: nn.Module, path) -> None:
    """Load every non-head weight of `model` from `path`; the head keeps its fresh initialisation."""
    state = {k: v for k, v in read_state_dict(path).items() if not k.startswith(HEAD_PREFIX)}
    expected = {k: v for k, v in model.state_dict().items() if not k.startswith(HEAD_PREFIX)}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing:
        raise VitpeftError(f"checkpoint {path} lacks {len(missing)} weights of the model: {_shown(missing)}")
    if unexpected:
        raise VitpeftError(f"checkpoint {path} has {len(unexpected)} weights the model lacks: {_shown(unexpected)}")
    for key, value in state.items():
        if value.shape != expected[key].shape:
            raise VitpeftError(
                f"checkpoint {path}: {key!r} has shape {tuple(value.shape)}, the model expects {tuple(expected[key].shape)}"
            )
    model.load_state_dict(state, strict=False)


def _shown(keys: list) -> str:
    more = f" ... (+{len(keys) - SHOWN_KEYS} more)" if len(keys) > SHOWN_KEYS else ""
    return ", ".join(keys[:SHOWN_KEYS]) + more


def features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """DINO's k-NN feature: the CLS token after the final norm, not normalised.

    For timm's token-pooled ViT, forward_features ends with the final norm and
    forward_head(pre_logits=True) takes token 0 (fc_norm is the identity).
    """
    return model.forward_head(model.forward_features(x), pre_logits=True)
