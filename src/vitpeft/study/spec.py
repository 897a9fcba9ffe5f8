"""An experiment spec: everything one training run depends on, and nothing else.

`vitpeft train` reads one (from the workflow config, or a file), and writes it
beside the weights as spec.yaml. Its keys, types, ranges and defaults are the
schema's `$defs/spec` (config.schema.yaml, the one place they are written);
what JSON Schema cannot say (an ordered range, a key needed by another) is
checked here. Evaluation settings are not part of a spec, so changing them
never retrains.
"""

import copy
import hashlib
import json
from pathlib import Path

import yaml

from vitpeft.study import schema
from vitpeft.errors import VitpeftError


def resolve(raw: dict, where: str = "spec") -> dict:
    """A copy of `raw` with every default filled, refusing unknown keys and bad values."""
    if not isinstance(raw, dict):
        raise VitpeftError(f"{where}: expected a mapping, got {type(raw).__name__}")
    spec = schema.apply(copy.deepcopy(raw), where, "spec")
    check_relations(spec, where)
    return spec


def build(cfg: dict, backbone, target, name: str, method: str, args: dict, train: dict) -> dict:
    """A run's raw spec in a study: its method and training settings, the study's backbone (`backbone`, its
    node) and model, and the prepared splits of `target` (the dataset's node). Unchecked: every value comes from
    the validated config, so only the relations between keys need check_relations."""
    splits = {"train": f"{target.path}/train", "test": f"{target.path}/test"}
    splits["val"] = f"{target.path}/val" if target.info.get("val") else None
    return {
        "name": name,
        "method": method,
        "args": copy.deepcopy(args),
        "model": copy.deepcopy(cfg["backbone"]["model"]),
        "checkpoint": backbone.path,
        "layout": backbone.info["layout"],
        "num_classes": target.info["num_classes"],
        "data": {**splits, "mean": list(cfg["target"]["mean"]), "std": list(cfg["target"]["std"])},
        "train": copy.deepcopy(train),
    }


def check_relations(spec: dict, where: str) -> None:
    """What JSON Schema cannot say: an ordered range, a key another key needs, curve steps within the run."""
    train = spec["train"]
    low, high = train["crop_scale"]
    if low > high:
        raise VitpeftError(f"{where}: train.crop_scale: [{low}, {high}] must be [low, high] with low <= high")
    if train["selection"] == "best_test" and not spec["data"]["test"]:
        raise VitpeftError(f"{where}: data.test: must be set when train.selection is best_test")
    check_curve_steps(train["curve_steps"], train["steps"], f"{where}: train.curve_steps")
    augment = train["augment"]
    if augment["trivial_augment"] and augment["rand_augment"]["n"] > 0:
        raise VitpeftError(
            f"{where}: train.augment: trivial_augment and rand_augment.n > 0 both set; the public code silently "
            "uses only TrivialAugmentWide then: choose one"
        )


def check_curve_steps(steps: list, last: int, key: str) -> None:
    """Curve steps must increase strictly and stay within 0..last (the training's step count)."""
    if any(b <= a for a, b in zip(steps, steps[1:])):
        raise VitpeftError(f"{key}: {steps} must be strictly increasing")
    if steps and (steps[0] < 0 or steps[-1] > last):
        raise VitpeftError(f"{key}: {steps} must lie within 0..{last} (train.steps)")


def load(path) -> dict:
    """Read and resolve a spec file."""
    path = Path(path)
    try:
        raw = schema.read_yaml(path.read_text())
    except FileNotFoundError:
        raise VitpeftError(f"spec file not found: {path}") from None
    except yaml.YAMLError as error:
        raise VitpeftError(f"spec file {path} is not valid YAML: {error}") from None
    return resolve(raw, where=str(path))


def dump(spec: dict) -> str:
    """Canonical YAML text: equal specs give equal bytes."""
    return yaml.safe_dump(spec, sort_keys=True, default_flow_style=False)


def spec_hash(spec: dict) -> str:
    """Short content hash of a resolved spec (keys resume checkpoints)."""
    canonical = json.dumps(spec, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]
