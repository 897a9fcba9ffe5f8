"""A run's interpolation curve: target top-1 and source k-NN at every alpha, one model load for all.

theta_alpha between the pretrained model (alpha = 0) and the run (alpha = 1),
per method as vitpeft.methods.interpolation defines it, the run's own head at
every alpha. The source k-NN is scored on the bank and queries given, in the
workflow the curve's class-balanced subsample (a full k-NN per alpha would
cost a pass over the whole bank each): the output says so (`source_data`), and
the report keeps the run's full-bank score beside the subsample's alpha = 1.
"""

import time

from vitpeft.errors import VitpeftError
from vitpeft.evaluation import evaluate, features, knn
from vitpeft.methods import interpolation
from vitpeft.training import devices
from vitpeft.training import model as models


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
    batch_size=256,
    precision="fp32",
    source_data="given",
) -> dict:
    """{"points": [{"alpha", "target_acc", "source_acc", "source_knn"}], ...} in the order of `alphas`."""
    if not alphas or any(not 0 <= alpha <= 1 for alpha in alphas):
        raise VitpeftError(f"interpolation: alphas must be a non-empty list in [0, 1], got {list(alphas)}")
    if not interpolation.supports(spec["method"]):
        raise VitpeftError(f"{spec['name']}: method {spec['method']!r} has no interpolation (its backbone never moves)")
    started, device = time.monotonic(), devices.pick(device)
    target, data, ks = evaluate.sweep_data(spec, target_dir, bank_dir, queries_dir, mean, std, precision, ks, temperature)
    model = models.trained(spec, run_dir, device)
    pretrained = None
    if interpolation.needs_pretrained(spec["method"]):
        pretrained = {name: value.to(device) for name, value in models.pretrained(spec).state_dict().items()}
    best, size, whose = evaluate.headline(ks), spec["model"]["img_size"], features.weights_name(spec, run_dir)
    scored = []
    for alpha in alphas:
        knn.log(f"{spec['name']}: alpha {alpha}")
        with interpolation.interpolated(model, alpha, pretrained) as view:
            target_acc, _ = evaluate.classifier_scores(view, target, spec, device, batch_size)
            source = None
            if data is not None:
                feats = features.compute(view, data, size, device, batch_size, f"{whose} at alpha {alpha}")
                source = evaluate.knn_scores(data, feats, ks, temperature, device)
        scored.append({"alpha": alpha, "target_acc": target_acc, "source_acc": source[best] if source else None,
                       "source_knn": evaluate.keyed(source) if source else None})  # fmt: skip
    return {
        "points": scored,
        "source_data": source_data if data is not None else None,
        **evaluate.knn_settings(best, ks, temperature, mean, std, precision),
        "target_count": len(target),
        "bank_count": len(data.bank) if data is not None else None,
        "query_count": len(data.queries) if data is not None else None,
        **evaluate.provenance(spec, run_dir, device),
        "seconds": round(time.monotonic() - started, 1),
    }
