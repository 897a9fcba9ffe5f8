"""Models as the rest of vitpeft needs them: ready to train, trained, or the untouched backbone.

Train/eval mode is the caller's business.
"""

from pathlib import Path

import torch
from torch import nn

from vitpeft.methods import arguments, registry
from vitpeft.training import resume
from vitpeft.models.backbone import build_model
from vitpeft.models.layouts import load_backbone
from vitpeft import digests
from vitpeft.errors import VitpeftError

TRAINABLE_FILE = "trainable.safetensors"


def pretrained(spec: dict, device="cpu") -> nn.Module:
    """The backbone as pretrained (spec's checkpoint), with a fresh head; no method applied."""
    # Seeded, so that without a checkpoint the "pretrained" random weights are the same every time.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec["train"]["seed"])
        model = build_model(spec["model"], spec["num_classes"], device="cpu")
    if spec["checkpoint"] is not None:
        load_backbone(model, spec["checkpoint"], spec["layout"])
    return model.to(device)


def for_training(spec: dict, device="cpu") -> nn.Module:
    """The backbone with the spec's method applied (frozen/injected), ready for the training loop.

    Everything random here (head, adapters) is seeded by spec.train.seed, so
    the same spec gives the same starting model.
    """
    registry.check(spec["method"], spec["args"], _depth(spec))  # fail before loading weights
    model = pretrained(spec, device="cpu")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec["train"]["seed"] + 1)
        registry.apply(model, spec["method"], spec["args"])
    if spec.get("start") is not None:
        start_from(model, spec)
    return model.to(device)


def penalty(spec: dict, model: nn.Module):
    """The method's penalty for training `model` (for_training(spec)), or None. L2-SP's anchor: the weights the
    model holds now (where it starts), or, for a step that starts from another run with `anchor: pretrained`
    (the default), the pretrained backbone's, built again here without the start."""
    cfg = arguments.config_from_args(spec["method"], spec["args"])
    if spec.get("start") is None or not hasattr(cfg, "anchors_at_start") or cfg.anchors_at_start():
        return registry.penalty(model)
    return registry.penalty(model, anchor=for_training({**spec, "start": None}, device="cpu"))


def start_from(model: nn.Module, spec: dict) -> None:
    """A task sequence's step: load the previous step's trained weights (`spec.start`), all but its head.

    The previous run must be there and must be the one this spec names (its spec hash): a missing or
    foreign one is refused, never replaced by a start from the pretrained backbone.
    """
    from vitpeft.models.backbone import HEAD_PREFIX
    from vitpeft.study import spec as spec_lib

    start, name = spec["start"], spec["name"]
    run = Path(start["run"])
    weights, written = run / TRAINABLE_FILE, run / "spec.yaml"
    if not (weights.is_file() and written.is_file()):
        raise VitpeftError(
            f"{name}: the previous step's run {run} is missing ({weights.name} and spec.yaml): run that step first "
            "(snakemake runs a sequence's steps in order); refusing to start this step from the pretrained backbone"
        )
    digests.verify(run, [written.name])
    found = spec_lib.spec_hash(spec_lib.load(written))
    if found != start["spec_hash"]:
        raise VitpeftError(
            f"{name}: the previous step's run {run} was trained from another spec (hash {found}, this config's is "
            f"{start['spec_hash']}): it belongs to another config; rerun snakemake to train the planned one"
        )
    state = weights_of(run)
    try:
        registry.load_trainable(model, state, leave_out=HEAD_PREFIX)
    except VitpeftError as error:
        raise VitpeftError(f"{name}: previous step {weights}: {error}") from None


def trained(spec: dict, run_dir, device="cpu", step=None) -> nn.Module:
    """for_training(spec) with the run's trained weights loaded.

    Those kept at the end (run_dir/trainable.safetensors), or with `step` the
    forgetting curve's snapshot after that many steps (run_dir/curve/step_XXXXXX.safetensors).
    """
    name = TRAINABLE_FILE if step is None else f"{resume.CURVE}/{resume.snapshot_name(step)}"
    state = weights_of(run_dir, name)
    model = for_training(spec, device="cpu")
    try:
        registry.load_trainable(model, state)
    except VitpeftError as error:
        raise VitpeftError(f"{Path(run_dir) / name}: {error}") from None
    return model.to(device)


def weights_of(run_dir, name: str = TRAINABLE_FILE) -> dict:
    """The tensors of a run's weights file (`name` inside `run_dir`), checked against the run's SHA256SUMS first."""
    from safetensors.torch import load_file

    path = Path(run_dir) / name
    if not path.is_file():
        raise VitpeftError(f"no trained weights in run {run_dir}: {path} is missing")
    digests.verify(run_dir, [name])
    try:
        return load_file(str(path), device="cpu")
    except Exception as error:  # safetensors' own error types for corrupt files
        raise VitpeftError(f"trained weights {path} are not a readable safetensors file: {error}") from None


def _depth(spec: dict) -> int:
    return len(build_model(spec["model"], spec["num_classes"], device="meta").blocks)
