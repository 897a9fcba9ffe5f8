"""An experiment spec: everything one training run depends on, and nothing else.

The workflow writes one spec file per experiment; `vitpeft train` reads it. A
spec is a nested dict; every key left out takes the paper's default
(PROTOCOL.md), an unknown key or a missing required one is an error naming it.
Evaluation settings are not part of a spec, so changing them never retrains.
"""

import copy
import hashlib
import json
import math
from pathlib import Path

import yaml

from vitpeft.errors import VitpeftError

REQUIRED = object()  # marks a key that has no default

# The paper's protocol on real data (see PROTOCOL.md); None means "not set".
DEFAULTS = {
    "name": REQUIRED,
    "method": REQUIRED,
    "args": {},  # method arguments, checked by the method's own config
    "model": {
        "name": "vit_base_patch16_224",
        "img_size": 224,
        "kwargs": {},  # extra timm arguments (embed_dim, depth, patch_size, ...)
    },
    "checkpoint": None,  # backbone weights (.pth or .safetensors); None = random init
    "num_classes": REQUIRED,
    "data": {
        "train": REQUIRED,  # prepared dataset folder (vitpeft.data format)
        "test": None,  # only needed by selection: best_test
        "mean": [0.5, 0.5, 0.5],
        "std": [0.5, 0.5, 0.5],
    },
    "train": {
        "steps": 10000,
        "batch_size": 128,
        "lr": 0.005,
        "momentum": 0.9,
        "weight_decay": 0.0,
        "warmup_steps": 500,
        "crop_scale": [0.08, 1.0],
        "hflip": 0.5,
        "selection": "last",  # last | best_val | best_test
        "val_fraction": 0.1,  # held-out slice of train, used by best_val
        "val_every": 500,
        "checkpoint_every": 500,  # resume checkpoint period in steps
        "seed": 0,
        "precision": "auto",  # auto (bf16 on GPU, fp32 on CPU) | fp32 | bf16 | fp16
        "compile": False,
        "log_every": 10,
    },
}

SELECTIONS = ("last", "best_val", "best_test")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def resolve(raw: dict, where: str = "spec") -> dict:
    """Fill defaults into `raw`, refusing unknown and missing keys."""
    if not isinstance(raw, dict):
        raise VitpeftError(f"{where}: expected a mapping, got {type(raw).__name__}")
    spec = _merge(DEFAULTS, raw, where)
    _check_values(spec, where)
    return spec


def _merge(defaults: dict, raw: dict, where: str) -> dict:
    unknown = sorted(set(raw) - set(defaults))
    if unknown:
        raise VitpeftError(f"{where}: unknown key {where_key(where, unknown[0])!r} (allowed: {', '.join(defaults)})")
    merged = {}
    for key, default in defaults.items():
        path = where_key(where, key)
        if key not in raw:
            if default is REQUIRED:
                raise VitpeftError(f"{where}: missing required key {path!r}")
            merged[key] = _without_required(default, path)
        elif isinstance(default, dict) and default and key != "args":
            if not isinstance(raw[key], dict):
                raise VitpeftError(f"{where}: {path!r} must be a mapping")
            merged[key] = _merge(default, raw[key], path)
        else:
            merged[key] = copy.deepcopy(raw[key])
    return merged


def _without_required(default, path):
    if isinstance(default, dict):
        missing = [k for k, v in default.items() if v is REQUIRED]
        if missing:
            raise VitpeftError(f"missing required key {where_key(path, missing[0])!r}")
        return {k: _without_required(v, where_key(path, k)) for k, v in default.items()}
    return copy.deepcopy(default)


def where_key(where: str, key: str) -> str:
    return key if where == "spec" else f"{where}.{key}"


def _check_values(spec: dict, where: str) -> None:
    train, scale = spec["train"], spec["train"]["crop_scale"]
    checks = [
        (train["selection"] in SELECTIONS, "train.selection", f"one of {SELECTIONS}"),
        (train["precision"] in PRECISIONS, "train.precision", f"one of {PRECISIONS}"),
        *[(_positive_int(train[key]), f"train.{key}", "a positive integer")
          for key in ("steps", "batch_size", "log_every", "val_every", "checkpoint_every")],
        (_number(train["lr"]) and train["lr"] > 0, "train.lr", "a positive number"),
        (_int(train["warmup_steps"]) and train["warmup_steps"] >= 0, "train.warmup_steps", "an integer >= 0"),
        (_number(train["val_fraction"]) and 0 < train["val_fraction"] < 1, "train.val_fraction", "between 0 and 1"),
        (isinstance(scale, list) and len(scale) == 2 and all(_number(v) for v in scale)
         and 0 < scale[0] <= scale[1] <= 1, "train.crop_scale", "[low, high] with 0 < low <= high <= 1"),
        (_number(train["hflip"]) and 0 <= train["hflip"] <= 1, "train.hflip", "a probability in [0, 1]"),
        (_number(train["momentum"]) and 0 <= train["momentum"] < 1, "train.momentum", "in [0, 1)"),
        (_number(train["weight_decay"]) and train["weight_decay"] >= 0, "train.weight_decay", ">= 0"),
        (_int(train["seed"]) and train["seed"] >= 0, "train.seed", "an integer >= 0"),
        (isinstance(train["compile"], bool), "train.compile", "true or false"),
        (_positive_int(spec["num_classes"]), "num_classes", "a positive integer"),
        (isinstance(spec["args"], dict), "args", "a mapping"),
        (train["selection"] != "best_test" or spec["data"]["test"], "data.test", "set when selection is best_test"),
    ]
    for ok, key, expected in checks:
        if not ok:
            value = _lookup(spec, key)
            raise VitpeftError(f"{where}: {key!r} must be {expected}, got {value!r}")


def _lookup(spec: dict, dotted: str):
    for part in dotted.split("."):
        spec = spec[part]
    return spec


def _int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _positive_int(value) -> bool:
    return _int(value) and value > 0


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def load(path) -> dict:
    """Read and resolve a spec file."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise VitpeftError(f"spec file not found: {path}") from None
    except yaml.YAMLError as error:
        raise VitpeftError(f"spec file {path} is not valid YAML: {error}") from None
    try:
        return resolve(raw)
    except VitpeftError as error:
        raise VitpeftError(f"{path}: {error}") from None


def dump(spec: dict) -> str:
    """Canonical YAML text: equal specs give equal bytes."""
    return yaml.safe_dump(spec, sort_keys=True, default_flow_style=False)


def spec_hash(spec: dict) -> str:
    """Short content hash of a resolved spec (keys resume checkpoints)."""
    canonical = json.dumps(spec, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def write_if_changed(spec: dict, path) -> bool:
    """Write `spec` to `path` only if its content differs, so its mtime tracks its content.

    Snakemake reruns a job when an input is newer than its outputs; a spec file
    rewritten on every parse would rerun everything.
    """
    path = Path(path)
    text = dump(spec)
    if path.exists() and path.read_text() == text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return True
