"""A run's forgetting curve: target top-1 and source k-NN at every saved step, one model load for all.

Training saves the trainable weights at train.curve_steps as
RUN/curve/step_NNNNNN.safetensors (the keys of RUN/trainable.safetensors).
`eval_curve` builds the model once; for each point in step order, then for
the run's final weights (its selected step, "final": true), it loads the
trainable state and scores the run's head on the target test set and the
backbone's weighted k-NN on the given bank and queries, usually class-balanced
subsets (vitpeft subsample). The final point is scored on the same subsets,
so the curve and the table's figure can be compared.
"""

import re
import time
from dataclasses import dataclass
from pathlib import Path

from vitpeft.training import devices
from vitpeft.evaluation import evaluate
from vitpeft.evaluation import features
from vitpeft.evaluation import knn
from vitpeft.methods import registry
from vitpeft.training import model as models
from vitpeft import digests
from vitpeft.errors import VitpeftError
from vitpeft.fileio import read_json

CURVE_DIR = "curve"
POINT_NAME = re.compile(r"step_(\d+)\.safetensors")


@dataclass(frozen=True)
class Point:
    step: int
    path: Path
    final: bool


def points(run_dir) -> list:
    """The run's curve points in step order, then its final weights at the selected step; every file checked."""
    run_dir = Path(run_dir)
    final = run_dir / models.TRAINABLE_FILE
    if not final.is_file():
        raise VitpeftError(f"no trained weights in run {run_dir}: {final} is missing")
    curve = []
    for path in (run_dir / CURVE_DIR).glob("step_*.safetensors"):
        match = POINT_NAME.fullmatch(path.name)
        if match is None:
            raise VitpeftError(f"{path}: not a curve point (expected step_NNNNNN.safetensors, as vitpeft train writes)")
        curve.append(Point(int(match[1]), path, final=False))
    read = [point.path.relative_to(run_dir).as_posix() for point in curve] + [final.name, "summary.json"]
    digests.verify(run_dir, read)
    return sorted(curve, key=lambda point: point.step) + [Point(_selected_step(run_dir), final, final=True)]


def _selected_step(run_dir: Path) -> int:
    path = run_dir / "summary.json"
    try:
        step = read_json(path)["selected_step"]
    except FileNotFoundError:
        raise VitpeftError(f"{path} is missing: is {run_dir} a run folder that `vitpeft train` finished?") from None
    except (ValueError, KeyError, TypeError):
        raise VitpeftError(f"{path} has no readable selected_step: rerun `vitpeft train` for {run_dir}") from None
    if not isinstance(step, int):
        raise VitpeftError(f"{path}: selected_step must be an integer, got {step!r}")
    return step


def check_files(model, curve: list) -> None:
    """Each point's file must hold exactly the model's trainable tensors: read from the headers, before scoring."""
    from safetensors import safe_open

    expected = {name: tuple(p.shape) for name, p in model.named_parameters() if p.requires_grad}
    for point in curve:
        try:
            with safe_open(str(point.path), framework="pt") as handle:
                found = {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}
        except Exception as error:  # safetensors' own error types for corrupt files
            raise VitpeftError(f"{point.path} is not a readable safetensors file: {error}") from None
        wrong = sorted(set(found) ^ set(expected)) or sorted(k for k in found if found[k] != expected[k])
        if wrong:
            raise VitpeftError(
                f"{point.path} does not fit the spec's model ({len(wrong)} tensors differ in name or shape, "
                f"e.g. {wrong[0]!r}): was it saved by a run of another method or model?"
            )


def eval_curve(
    spec,
    run_dir,
    target_dir,
    bank_dir,
    queries_dir,
    ks=knn.DINO_KS,
    temperature=knn.DINO_TEMPERATURE,
    mean=evaluate.IMAGENET_MEAN,
    std=evaluate.IMAGENET_STD,
    device="cpu",
    batch_size=None,
    precision="fp32",
) -> dict:
    """{"points": [{"step", "target_acc", "source_acc", "source_knn": {k: acc}, "final"}], ...} for one run.

    Without a bank (bank_dir None: the study's source column is off) every point has source_acc None.
    """
    started, device = time.monotonic(), devices.pick(device)
    target, data, ks = evaluate.sweep_data(spec, target_dir, bank_dir, queries_dir, mean, std, precision, ks, temperature)
    curve = points(run_dir)
    model = models.for_training(spec, device)
    check_files(model, curve)
    fixed_backbone, source, best = not evaluate.trains_backbone(model), None, evaluate.headline(ks)
    scored = []
    for point in curve:
        knn.log(f"{spec['name']}: step {point.step}" + (" (final weights)" if point.final else ""))
        registry.load_trainable(model, _read(point.path))
        target_acc, _ = evaluate.classifier_scores(model, target, spec, device, batch_size)
        if data is not None and (source is None or not fixed_backbone):  # an untouched backbone scores alike each time
            feats = features.compute(model, data, spec["model"]["img_size"], device, batch_size, str(point.path))
            source = evaluate.knn_scores(data, feats, ks, temperature, device)
        scored.append({"step": point.step, "final": point.final, "target_acc": target_acc,
                       "source_acc": source[best] if source else None,
                       "source_knn": evaluate.keyed(source) if source else None})  # fmt: skip
    return {
        "points": scored,
        **evaluate.knn_settings(best, ks, temperature, mean, std, precision),
        "target_count": len(target),
        "bank_count": len(data.bank) if data is not None else None,
        "query_count": len(data.queries) if data is not None else None,
        **evaluate.provenance(spec, run_dir, device),
        "seconds": round(time.monotonic() - started, 1),
    }


def _read(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path), device="cpu")
