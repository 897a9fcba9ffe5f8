"""The backbone: a timm VisionTransformer, its pretrained weights, and DINO's k-NN feature."""

import _compat_pickle
import io
import pickletools
import zipfile
from pathlib import Path

import timm
import torch
from torch import nn

from vitpeft.errors import VitpeftError

HEAD_PREFIX = "head."  # the classifier is always fresh: a checkpoint may or may not carry one
WRAPPER_PREFIXES = ("module.", "backbone.")  # DDP and DINO's teacher/student wrappers
SHOWN_KEYS = 5  # how many offending keys an error message lists
CHECKPOINT_SUFFIXES = (".pth", ".pt", ".safetensors")
ZIP_MAGIC, PICKLE_PROTO = b"PK\x03\x04", b"\x80"  # torch.save's zip format; its legacy format starts with a pickle
LEGACY_PICKLES = 5  # torch's legacy format: magic number, protocol, system info, the data, storage keys
TORCH_ADVICE = ("weights_only", "Weights only load failed", "safe_globals", "trust", "documentation", "file an issue")


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


def read_state_dict(path, *, suffix=None, name=None) -> dict:
    """Tensors from a .pth/.pt (loaded with weights_only: no arbitrary unpickling) or .safetensors file.

    A download staged under a temporary name is read with its destination's `suffix` (which picks the
    format) and reported under `name` (e.g. its URL), so no error ever names the temporary file.
    """
    path = Path(path)
    suffix = path.suffix if suffix is None else suffix
    name = path if name is None else name
    if not path.is_file():
        raise VitpeftError(f"checkpoint not found: {name}")
    if suffix not in CHECKPOINT_SUFFIXES:
        raise VitpeftError(f"checkpoint {name}: unknown format {suffix!r} (expected .pth, .pt or .safetensors)")
    try:
        state = _read_safetensors(path) if suffix == ".safetensors" else _read_torch(path)
    except _Unreadable as why:
        raise VitpeftError(f"checkpoint {name} {why}") from None
    return _strip_wrapper_prefix(state)


class _Unreadable(Exception):
    """Why a file is no usable state dict, worded to follow the file's name."""


def _read_safetensors(path: Path) -> dict:
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except Exception as error:  # safetensors raises its own error types for corrupt headers
        raise _Unreadable(f"is not a readable safetensors file ({error}): it is damaged or cut short") from None


def _read_torch(path: Path) -> dict:
    with open(path, "rb") as file:
        header = file.read(len(ZIP_MAGIC))
    if not header:
        raise _Unreadable("is empty (0 bytes)")
    if not header.startswith((ZIP_MAGIC, PICKLE_PROTO)):
        raise _Unreadable("is not a torch checkpoint (no zip archive / pickle header)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated zip, refused pickle, garbage after a plausible header
        raise _Unreadable(_why_torch_refused(path, header, error)) from None
    if not isinstance(state, dict):
        raise _Unreadable(f"holds a {type(state).__name__}, not a state dict")
    not_tensors = [key for key, value in state.items() if not isinstance(value, torch.Tensor)]
    if not_tensors:
        raise _Unreadable(
            f"is not a plain state dict of tensors: {not_tensors[0]!r} is not a tensor "
            "(a training checkpoint? extract its backbone state dict first, e.g. DINO's 'teacher')"
        )
    return state


def _why_torch_refused(path: Path, header: bytes, error: Exception) -> str:
    """The real reason torch.load failed; torch's own text leads with advice to load unsafely."""
    if header == ZIP_MAGIC and not zipfile.is_zipfile(path):
        return "is a damaged zip archive (its end is missing: cut short?); get the file again"
    refused = [name for name in _pickled_globals(path, header) if name not in _weights_only_globals()]
    if refused:
        return (
            f"tries to load {', '.join(dict.fromkeys(refused))}, which a weights-only load refuses: "
            "it is not a plain state dict; use a checkpoint of tensors only (e.g. the official release)"
        )
    kept = [line.strip() for line in str(error).splitlines() if line.strip() and not _is_torch_advice(line)]
    return f"cannot be read by torch ({' '.join(kept) or type(error).__name__}): it is damaged or not a checkpoint"


def _is_torch_advice(line: str) -> bool:
    return any(phrase in line for phrase in TORCH_ADVICE)


def _weights_only_globals() -> set:
    from torch import _weights_only_unpickler  # torch's own allowlist, so this agrees with what it refused

    return set(_weights_only_unpickler._get_allowed_globals())


def _pickled_globals(path: Path, header: bytes) -> list:
    """'module.name' of every global the file's pickles import, found without unpickling anything."""
    if header == ZIP_MAGIC:
        try:
            with zipfile.ZipFile(path) as archive:
                pickles = [archive.read(n) for n in archive.namelist() if n.endswith("data.pkl")]
        except zipfile.BadZipFile:  # a damaged member: torch's own reason says more
            return []
    else:  # the legacy format: five pickles in a row, then raw storage bytes (never scanned: not a pickle)
        pickles = [path.read_bytes()]
    found = []
    for data in pickles:
        stream = io.BytesIO(data)
        for _ in range(LEGACY_PICKLES):
            if stream.tell() == len(data) or not _scan_one_pickle(stream, found):
                break
    return found


def _scan_one_pickle(stream, found: list) -> bool:
    """Append the globals of the pickle at `stream`'s position; False once the bytes stop being a pickle."""
    strings = []  # the latest pushed strings: STACK_GLOBAL takes its module and name from them
    try:
        for opcode, arg, _ in pickletools.genops(stream):
            if opcode.name == "GLOBAL":
                found.append(_modern_name(*arg.split(" ", 1)))
            elif opcode.name == "STACK_GLOBAL":
                found.append(_modern_name(*strings[-2:]) if len(strings) >= 2 else "a global it names indirectly")
                strings.clear()
            elif isinstance(arg, str):
                strings.append(arg)
            elif opcode.name not in ("MEMOIZE", "PUT", "BINPUT", "LONG_BINPUT"):
                strings.clear()
    except ValueError:  # not (or no longer) a pickle
        return False
    return True


def _modern_name(module: str, name: str) -> str:
    # Protocol-2 pickles name Python 3 globals by their Python 2 names (__builtin__.getattr).
    module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
    return f"{_compat_pickle.IMPORT_MAPPING.get(module, module)}.{name}"


def _strip_wrapper_prefix(state: dict) -> dict:
    for prefix in WRAPPER_PREFIXES:
        if state and all(key.startswith(prefix) for key in state):
            state = {key[len(prefix):]: value for key, value in state.items()}
    return state


def shown_keys(keys: list) -> str:
    more = f" ... (+{len(keys) - SHOWN_KEYS} more)" if len(keys) > SHOWN_KEYS else ""
    return ", ".join(keys[:SHOWN_KEYS]) + more


def shape_of(model: nn.Module) -> dict:
    """What vitpeft.models.presets records of a timm ViT (its SHAPE_KEYS); None where a block is not timm's Block."""
    from timm.layers import LayerScale

    block = model.blocks[0]
    fc1 = getattr(getattr(block, "mlp", None), "fc1", None)
    return {
        "patch_size": model.patch_embed.patch_size[0],
        "depth": len(model.blocks),
        "embed_dim": model.embed_dim,
        "num_heads": getattr(block.attn, "num_heads", None),
        "mlp_ratio": fc1.out_features / model.embed_dim if isinstance(fc1, nn.Linear) else None,
        "prefix_tokens": model.num_prefix_tokens,
        "registers": getattr(model, "num_reg_tokens", 0),
        "layer_scale": isinstance(getattr(block, "ls1", None), LayerScale),
    }


def features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """DINO's k-NN feature: the CLS token after the final norm, not normalised.

    Every preset's feature (vitpeft.models.presets.FEATURES "cls_norm"). For timm's
    token-pooled ViT, forward_features ends with the final norm and
    forward_head(pre_logits=True) takes token 0 (fc_norm is the identity);
    register tokens come after the CLS token, so token 0 is the CLS token there too.
    """
    return model.forward_head(model.forward_features(x), pre_logits=True)
