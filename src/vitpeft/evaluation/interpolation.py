"""A run interpolated with the pretrained model: every alpha scored once, then one alpha chosen and scored in full.

theta_alpha between the pretrained model (alpha = 0) and the run (alpha = 1),
per method as vitpeft.methods.interpolation defines it, the run's own head at
every alpha.

`eval_interpolation` (one model load) scores every alpha: target top-1 on the
test set, target top-1 on the held-out data the alpha is chosen on (the
dataset's validation split, or the slice of train the run was trained without:
vitpeft.training.draws.validation_set), and the source k-NN on the bank and
queries given, in the workflow the curve's class-balanced subsample (a full
k-NN per alpha would cost a pass over the whole bank each): the output says so
(`source_data`).

`eval_wise` chooses the run's alpha from that sweep (`choose_alpha`: the
highest (target + source) / 2, target on the held-out data, or on the test set
for the named upper bound) and scores the source k-NN at that alpha on the
whole bank, so the table's source column is one protocol for every row. Its
output records the choice and the data it was made on.
"""

import time

from vitpeft.errors import VitpeftError
from vitpeft.evaluation import evaluate, features, knn
from vitpeft import digests
from vitpeft.methods import arguments, interpolation
from vitpeft.training import devices, draws
from vitpeft.training import model as models

CHOICES = {"validation": "val_acc", "test": "target_acc"}  # interpolation.choose_on -> the target figure it reads


def eval_interpolation(
    spec,
    run_dir,
    target_dir,
    alphas,
    bank_dir=None,
    queries_dir=None,
    ks=knn.DINO_KS,
    temperature=knn.DINO_TEMPERATURE,
    mean=evaluate.IMAGENET_MEAN,
    std=evaluate.IMAGENET_STD,
    device="cpu",
    batch_size=None,
    precision="fp32",
    source_data="given",
) -> dict:
    """{"points": [{"alpha", "target_acc", "val_acc", "source_acc", "source_knn"}], ...} in the order of `alphas`."""
    if not alphas or any(not 0 <= alpha <= 1 for alpha in alphas):
        raise VitpeftError(f"interpolation: alphas must be a non-empty list in [0, 1], got {list(alphas)}")
    _check_method(spec)
    started, device = time.monotonic(), devices.pick(device)
    target, data, ks = evaluate.sweep_data(spec, target_dir, bank_dir, queries_dir, mean, std, precision, ks, temperature)
    held_out = draws.validation_set(spec)
    model, pretrained = _models(spec, run_dir, device)
    best, size, whose = evaluate.headline(ks), spec["model"]["img_size"], features.weights_name(spec, run_dir)
    scored = []
    for alpha in alphas:
        knn.log(f"{spec['name']}: alpha {alpha}")
        with interpolation.interpolated(model, alpha, pretrained) as view:
            target_acc, _ = evaluate.classifier_scores(view, target, spec, device, batch_size)
            val_acc = evaluate.classifier_scores(view, held_out, spec, device, batch_size)[0] if held_out else None
            source = None
            if data is not None:
                feats = features.compute(view, data, size, device, batch_size, f"{whose} at alpha {alpha}")
                source = evaluate.knn_scores(data, feats, ks, temperature, device)
        scored.append({"alpha": alpha, "target_acc": target_acc, "val_acc": val_acc,
                       "source_acc": source[best] if source else None,
                       "source_knn": evaluate.keyed(source) if source else None})  # fmt: skip
    return {
        "points": scored,
        "source_data": source_data if data is not None else None,
        "val_data": draws.validation_words(spec),
        **evaluate.knn_settings(best, ks, temperature, mean, std, precision),
        "target_count": len(target),
        "val_count": len(held_out) if held_out else None,
        "bank_count": len(data.bank) if data is not None else None,
        "query_count": len(data.queries) if data is not None else None,
        **evaluate.provenance(spec, run_dir, device),
        "seconds": round(time.monotonic() - started, 1),
    }


def choose_alpha(points: list, choose_on: str, where: str = "interpolation") -> dict:
    """The point of the highest (target + source) / 2, target on `choose_on`'s figure; ties go to the larger alpha
    (the less interpolated model). Refuses a sweep without the figures the choice needs, naming `where`."""
    figure = CHOICES[choose_on]
    for point in points:
        if point.get(figure) is None or point.get("source_acc") is None:
            missing = figure if point.get(figure) is None else "source_acc"
            held_out = " (the run has no held-out target data: no validation split and no held-out slice)" if (
                figure == "val_acc") else ""
            raise VitpeftError(f"{where}: alpha {point.get('alpha')} has no {missing}{held_out}; the alpha cannot be "
                               f"chosen on {choose_on} (rerun `vitpeft eval-interpolation`)")
    return max(points, key=lambda point: ((point[figure] + point["source_acc"]) / 2, point["alpha"]))


def eval_wise(
    spec,
    run_dir,
    sweep_path,
    choose_on,
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
    """The run at the alpha chosen from its sweep (`sweep_path`, eval_interpolation's output), its source k-NN on the
    whole bank and queries given; the choice, what it was made on and the sweep's test figure at that alpha."""
    if choose_on not in CHOICES:
        raise VitpeftError(f"choose on {choose_on!r}: expected one of {', '.join(CHOICES)}")
    _check_method(spec)
    started, device = time.monotonic(), devices.pick(device)
    try:
        sweep = digests.read_json(sweep_path)  # its own sha256 first: no choice made from a corrupt sweep
    except (OSError, ValueError) as error:
        raise VitpeftError(f"{sweep_path}: cannot read the interpolation sweep ({error}); `vitpeft eval-interpolation` "
                           "writes it") from None
    points = sweep.get("points") if isinstance(sweep, dict) else None
    if not isinstance(points, list) or not points or not all(isinstance(point, dict) for point in points):
        raise VitpeftError(f"{sweep_path}: expected a non-empty list of points; rerun `vitpeft eval-interpolation`")
    chosen = choose_alpha(points, choose_on, str(sweep_path))
    data = features.load_source(bank_dir, queries_dir, mean, std, precision)
    ks = knn.check_settings(ks, temperature, len(data.bank))
    model, pretrained = _models(spec, run_dir, device)
    alpha, best = chosen["alpha"], evaluate.headline(ks)
    knn.log(f"{spec['name']}: alpha {alpha} (chosen on {choose_on}) on the whole bank")
    with interpolation.interpolated(model, alpha, pretrained) as view:
        feats = features.compute(view, data, spec["model"]["img_size"], device, batch_size,
                                 f"{features.weights_name(spec, run_dir)} at alpha {alpha}")
        scores = evaluate.knn_scores(data, feats, ks, temperature, device)
    figure = CHOICES[choose_on]
    return {
        "alpha": alpha,
        "choose_on": choose_on,
        "chosen_on": {"target": sweep.get("val_data") if choose_on == "validation" else "the test split (an upper "
                      "bound: chosen on the figure it reports)", "source": sweep.get("source_data")},
        "choice": [{"alpha": point["alpha"], "target": point[figure], "source": point["source_acc"],
                    "mean": (point[figure] + point["source_acc"]) / 2} for point in points],  # fmt: skip
        "target_acc": chosen["target_acc"],  # the test split, at the chosen alpha
        "source_acc_subsample": chosen["source_acc"],
        "top1": scores[best],
        "knn": evaluate.keyed(scores),
        **evaluate.knn_settings(best, ks, temperature, mean, std, precision),
        "bank_count": len(data.bank),
        "query_count": len(data.queries),
        "sweep": str(sweep_path),
        **evaluate.provenance(spec, run_dir, device),
        "seconds": round(time.monotonic() - started, 1),
    }


def _check_method(spec) -> None:
    if not interpolation.supports(spec["method"]):
        why = arguments.NO_INTERPOLATION.get(spec["method"], "unknown method")
        raise VitpeftError(f"{spec['name']}: method {spec['method']!r} has no interpolation ({why})")


def _models(spec, run_dir, device) -> tuple:
    """(the trained model, the pretrained weights on `device` where the method interpolates towards them, or None)."""
    model = models.trained(spec, run_dir, device)
    pretrained = None
    if interpolation.needs_pretrained(spec["method"]):
        pretrained = {name: value.to(device) for name, value in models.pretrained(spec).state_dict().items()}
    return model, pretrained
