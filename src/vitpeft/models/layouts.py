"""Official checkpoint key layouts (vitpeft.models.presets.LAYOUTS) read into timm's names, at the model's input size.

timm's own converters do the renaming: DINOv2 files go through
`_convert_dinov2` (the DINOv2 branch of timm's `checkpoint_filter_fn`: drops
mask_token; for register models moves register_tokens to reg_token and folds
the CLS position into the CLS token, since timm gives neither a position),
Google's .npz through `_load_weights` (timm's .npz loader). MAE's wrapper is
taken off here, as timm's filter does with `state_dict.get('model')`. The whole
`checkpoint_filter_fn` is not used: it guesses the layout from the keys and
silently resamples a patch embedding of another patch size, which would hide a
wrong checkpoint.

A checkpoint trained at another resolution (DINOv2's: 518 px, 37x37 patches)
gets its position embedding resampled to the model's grid with timm's
`resample_abs_pos_embed`, bicubic and antialiased as timm's filter does
(DINOv2's own code interpolates at run time instead, bicubic with a 0.1 offset:
close, not bit-identical). `_load_weights` resamples .npz grids itself.
"""

import copy
import math
import re
from pathlib import Path

import torch
from torch import nn

from vitpeft.models.backbone import HEAD_PREFIX, read_state_dict, shown_keys
from vitpeft.models.presets import LAYOUTS
from vitpeft.errors import VitpeftError

DINOV2_MARK = "mask_token"  # in every official DINOv2 file; no timm model has it
NPZ_BLOCK = re.compile(r"Transformer/encoderblock_(\d+)/")


def read(path, layout: str, model: nn.Module) -> dict:
    """The checkpoint at `path`, written in `layout`, as a state dict with `model`'s names and position grid."""
    if layout not in LAYOUTS:
        raise VitpeftError(f"checkpoint {path}: unknown layout {layout!r} (known: {', '.join(LAYOUTS)})")
    path = Path(path)
    if (path.suffix == ".npz") != (layout == "npz"):
        raise VitpeftError(
            f"checkpoint {path}: layout {layout!r} does not fit a {path.suffix or 'suffix-less'} file "
            "(Google's .npz files have layout 'npz'; .pth and .safetensors files 'timm', 'dinov2' or 'mae')"
        )
    return fit_pos_embed(READERS[layout](path, model), model)


def load_backbone(model: nn.Module, path, layout: str = "timm") -> None:
    """Load every non-head weight of `model` from `path`, a checkpoint in key layout `layout`.

    Layouts are vitpeft.models.presets.LAYOUTS; `read` above renames them to
    timm's and resamples a position grid of another resolution. Then every
    weight must be there with its shape, or nothing is loaded. The head keeps
    its fresh initialisation.
    """
    state = {k: v for k, v in read(path, layout, model).items() if not k.startswith(HEAD_PREFIX)}
    expected = {k: v for k, v in model.state_dict().items() if not k.startswith(HEAD_PREFIX)}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing:
        raise VitpeftError(f"checkpoint {path} lacks {len(missing)} weights of the model: {shown_keys(missing)}")
    if unexpected:
        raise VitpeftError(f"checkpoint {path} has {len(unexpected)} weights the model lacks: {shown_keys(unexpected)}")
    for key, value in state.items():
        if value.shape != expected[key].shape:
            raise VitpeftError(
                f"checkpoint {path}: {key!r} has shape {tuple(value.shape)}, the model expects {tuple(expected[key].shape)}"
            )
    model.load_state_dict(state, strict=False)


def _timm(path: Path, model: nn.Module) -> dict:
    state = read_state_dict(path)
    if DINOV2_MARK in state:
        raise VitpeftError(
            f"checkpoint {path} has DINOv2's key names ({_dinov2_keys(state)}), which timm's models lack: "
            "set its layout to 'dinov2'"
        )
    return state


def _dinov2(path: Path, model: nn.Module) -> dict:
    from timm.models.vision_transformer import _convert_dinov2

    state = read_state_dict(path)
    if DINOV2_MARK not in state:
        raise VitpeftError(
            f"checkpoint {path} is not in the dinov2 layout: it lacks {DINOV2_MARK!r}, which every official "
            f"DINOv2 file has (its first keys: {shown_keys(list(state))}); a timm or hub file has layout 'timm'"
        )
    return _convert_dinov2(dict(state), model)  # it pops keys: give it a copy


def _dinov2_keys(state: dict) -> str:
    return ", ".join(key for key in (DINOV2_MARK, "register_tokens") if key in state)


def _mae(path: Path, model: nn.Module) -> dict:
    if path.suffix not in (".pth", ".pt"):
        raise VitpeftError(f"checkpoint {path}: the mae layout is a .pth file, not {path.suffix or 'suffix-less'}")
    return _mae_state(path, path)


def _mae_state(path: Path, name) -> dict:
    """The state dict inside MAE's {'model': ...} wrapper; `name` is what messages call the file."""
    if not path.is_file():
        raise VitpeftError(f"checkpoint not found: {name}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # the plain reader makes the same weights-only load and explains why it fails
        read_state_dict(path, suffix=".pth", name=name)
        raise
    state = checkpoint.get("model") if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        found = shown_keys(list(checkpoint)) if isinstance(checkpoint, dict) else f"a {type(checkpoint).__name__}"
        raise VitpeftError(
            f"checkpoint {name} is not in the mae layout {{'model': state dict}}: its top level holds {found} "
            "(a plain state dict has layout 'timm')"
        )
    not_tensors = [key for key, value in state.items() if not isinstance(value, torch.Tensor)]
    if not_tensors:
        raise VitpeftError(f"checkpoint {name}: 'model' holds entries that are not tensors: {shown_keys(not_tensors)}")
    return state


def _npz(path: Path, model: nn.Module) -> dict:
    """Google's .npz through timm's _load_weights, into a copy of the model whose weights start as NaN.

    _load_weights reads what it knows and ignores the rest, so the file's depth
    and patch embedding are checked first, and every weight still NaN afterwards
    is one the file lacks.
    """
    from timm.models.vision_transformer import _load_weights

    _check_npz_shape(path, model)
    scratch = copy.deepcopy(model)
    with torch.no_grad():
        for param in scratch.parameters():
            param.fill_(math.nan)
    try:
        _load_weights(scratch, str(path))
    except KeyError as error:
        raise VitpeftError(f"checkpoint {path} lacks {error.args[0]} (not a ViT of this model's layout?)") from None
    except (RuntimeError, ValueError) as error:
        raise VitpeftError(f"checkpoint {path} does not fit the model: {str(error).strip().splitlines()[0]}") from None
    state = scratch.state_dict()
    unset = [key for key, value in state.items()
             if not key.startswith(HEAD_PREFIX) and value.is_floating_point() and value.isnan().any()]
    if unset:
        raise VitpeftError(f"checkpoint {path} lacks {len(unset)} weights of the model: {shown_keys(unset)}")
    return state


def _check_npz_shape(path: Path, model: nn.Module) -> None:
    """The file's blocks and patch embedding against the model's, named as the file names them."""
    import numpy as np

    if not path.is_file():
        raise VitpeftError(f"checkpoint not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as archive:
            names = list(archive.files)
            kernel = next((name for name in names if name.endswith("embedding/kernel")), None)
            kernel_shape = archive[kernel].shape if kernel else None
    except Exception as error:  # zipfile, numpy and OS errors alike: the file is no .npz archive
        raise VitpeftError(f"checkpoint {path} is not a readable .npz archive: {error}") from None
    width, channels, height, breadth = model.patch_embed.proj.weight.shape
    expected = (height, breadth, channels, width)  # Google stores convolution kernels HWIO
    if kernel_shape is not None and tuple(kernel_shape) != expected:
        raise VitpeftError(
            f"checkpoint {path}: {kernel!r} has shape {tuple(kernel_shape)}, the model expects {expected} "
            f"(patch {height}, width {width})"
        )
    depth = len(model.blocks)
    blocks = sorted({int(match.group(1)) for match in map(NPZ_BLOCK.search, names) if match})
    extra = [f"Transformer/encoderblock_{index}" for index in blocks if index >= depth]
    if extra:
        raise VitpeftError(
            f"checkpoint {path} has {len(blocks)} blocks, the model {depth}: {len(extra)} blocks the model lacks: "
            f"{shown_keys(extra)}"
        )


READERS = {"timm": _timm, "dinov2": _dinov2, "mae": _mae, "npz": _npz}
SUFFIXES = {"timm": (".pth", ".pt", ".safetensors"), "dinov2": (".pth", ".pt", ".safetensors"),
            "mae": (".pth", ".pt"), "npz": (".npz",)}


def suffixes_text(layout: str) -> str:
    """'.pth, .pt or .safetensors' for the suffixes a layout's files have."""
    *rest, last = SUFFIXES[layout]
    return f"{', '.join(rest)} or {last}" if rest else last


def check_file(path, layout: str, suffix: str, name: str) -> None:
    """That `path` reads as a checkpoint in `layout`, without a model: what a download must pass to count.

    `suffix` and `name` are the destination's (a staged download has a temporary
    name, which no message may show).
    """
    if suffix not in SUFFIXES.get(layout, ()):
        raise VitpeftError(f"checkpoint {name}: layout {layout!r} is a {suffixes_text(layout)} file, "
                           f"not {suffix or 'suffix-less'}")
    if layout == "npz":
        import numpy as np

        try:
            with np.load(path, allow_pickle=False) as archive:
                blocks = [key for key in archive.files if NPZ_BLOCK.search(key)]
        except Exception as error:  # zipfile, numpy and OS errors alike: not an .npz archive
            raise VitpeftError(f"checkpoint {name} is not a readable .npz archive: {error}") from None
        if not blocks:
            raise VitpeftError(f"checkpoint {name} holds no Transformer/encoderblock_N arrays: not a Google ViT .npz")
        return
    if layout == "mae":
        state = _mae_state(Path(path), name)
    else:
        state = read_state_dict(path, suffix=suffix, name=name)
    if (DINOV2_MARK in state) != (layout == "dinov2"):
        other = "dinov2" if DINOV2_MARK in state else "timm"
        raise VitpeftError(f"checkpoint {name} is in the {other!r} layout, not {layout!r}: set backbone.layout")


def fit_pos_embed(state: dict, model: nn.Module) -> dict:
    """`state` with its position embedding resampled to `model`'s patch grid, when it is a square grid of another size.

    Anything else that does not fit is left for load_backbone's shape check to name.
    """
    from timm.layers import resample_abs_pos_embed

    old, new = state.get("pos_embed"), getattr(model, "pos_embed", None)
    if old is None or new is None or old.shape == new.shape or old.ndim != 3 or old.shape[-1] != new.shape[-1]:
        return state
    prefix = 0 if model.no_embed_class else model.num_prefix_tokens  # tokens with a position but no grid cell
    cells = old.shape[1] - prefix
    side = math.isqrt(cells) if cells > 0 else 0
    if side * side != cells:
        return state
    resampled = resample_abs_pos_embed(
        old, new_size=list(model.patch_embed.grid_size), old_size=[side, side], num_prefix_tokens=prefix,
        interpolation="bicubic", antialias=True,
    )
    return {**state, "pos_embed": resampled}
