"""The study's two numbers for one run: accuracy on the target domain, and what the backbone kept of the source.

Target (CIFAR-100 test): top-1/top-5 of the trained classifier. The untouched
pretrained backbone has no trained head, so without a run the target figure
is DINO's weighted k-NN on the target domain instead (train as bank, test as
queries), flagged as "metric": "knn".

Source (ImageNet-1k): DINO's weighted k-NN with the fine-tuned backbone that
the target head uses ("knn"), and, for methods that keep the pretrained
function reachable (LoRA adapters off, block expansion's new blocks out), the
same with that routed view ("routed"; null otherwise). Those views, and the
shared one of a backbone training left alone (`linear`, no run), compute the
untouched backbone's features: with a cache from `vitpeft extract-features`
whose provenance matches (vitpeft.evaluation.features), they are scored from it.
"""

import time

import torch

from vitpeft.models import backbone
from vitpeft.models import presets
from vitpeft.training import devices, kernels
from vitpeft.evaluation import features
from vitpeft.evaluation import knn
from vitpeft.methods import registry
from vitpeft.training import model as models
from vitpeft.errors import VitpeftError
from vitpeft import code_version

IMAGENET_MEAN = tuple(presets.IMAGENET_MEAN)
IMAGENET_STD = tuple(presets.IMAGENET_STD)
HEADLINE_K = 20  # DINO's headline k


def eval_target(
    spec, run_dir, data_dir, device="cpu", batch_size=None, ks=knn.DINO_KS, temperature=knn.DINO_TEMPERATURE
) -> dict:
    """Top-1/top-5 (%) of the run's classifier on the prepared test set `data_dir`; k-NN when run_dir is None."""
    started, device = time.monotonic(), devices.pick(device)
    test = features.load_prepared(data_dir, "target test set")
    check_labels(test, spec["num_classes"], data_dir)
    if run_dir is None:
        result = _target_knn(spec, data_dir, ks, temperature, device, batch_size)
    else:
        top1, top5 = classifier_scores(models.trained(spec, run_dir, device), test, spec, device, batch_size)
        result = {"metric": "classifier", "top1": top1, "top5": top5}
    seconds = round(time.monotonic() - started, 1)
    return {**result, **provenance(spec, run_dir, device), "count": len(test), "seconds": seconds}


def _target_knn(spec, test_dir, ks, temperature, device, batch_size) -> dict:
    """The head-less pretrained backbone's target figure: weighted k-NN, bank = the target train set."""
    mean, std = spec["data"]["mean"], spec["data"]["std"]
    data = features.load_source(spec["data"]["train"], test_dir, mean, std, what="target")
    ks = knn.check_settings(ks, temperature, len(data.bank))
    model = models.pretrained(spec, device)
    feats = features.compute(model, data, spec["model"]["img_size"], device, batch_size, features.weights_name(spec))
    scores = knn_scores(data, feats, ks, temperature, device)
    return {
        "metric": "knn",
        "top1": scores[headline(ks)],
        "top5": None,
        "knn": keyed(scores),
        "headline_k": headline(ks),
        "ks": ks,
        "temperature": temperature,
        "bank_count": len(data.bank),
    }


def eval_source(
    spec,
    run_dir,
    bank_dir,
    queries_dir,
    ks=knn.DINO_KS,
    temperature=knn.DINO_TEMPERATURE,
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
    device="cpu",
    batch_size=None,
    precision="fp32",
    pretrained_features=None,
) -> dict:
    """DINO's weighted k-NN (%) per k on the source domain, with the shared backbone and its routed view.

    With `pretrained_features` (a folder from extract_pretrained), the views
    that compute the untouched backbone's features (the routed view; the
    shared one when training left the backbone alone) are scored from that
    cache, if its provenance matches this evaluation.
    """
    started, device = time.monotonic(), devices.pick(device)
    data = features.load_source(bank_dir, queries_dir, mean, std, precision)
    ks = knn.check_settings(ks, temperature, len(data.bank))
    keeps_backbone = not changes_backbone(spec, run_dir)
    untouched = None
    # full and topk have no view computing the untouched backbone: reading (and hashing) the cache is waste there
    if pretrained_features is not None and (keeps_backbone or registry.has_routed_view(spec["method"])):
        untouched = features.cached(pretrained_features, features.provenance(spec, data, device), device)
    score = lambda feats: knn_scores(data, feats, ks, temperature, device)  # noqa: E731
    if untouched is not None and keeps_backbone:
        shared, routed = score(untouched), None  # no model to load at all
    else:
        shared, routed = _model_scores(spec, run_dir, data, untouched, score, device, batch_size)
    best = headline(ks)
    return {
        "metric": "knn",
        "knn": keyed(shared),
        "routed": keyed(routed) if routed is not None else None,
        "top1": shared[best],
        "routed_top1": routed[best] if routed is not None else None,
        **knn_settings(best, ks, temperature, mean, std, precision),
        "bank_count": len(data.bank),
        "query_count": len(data.queries),
        "num_classes": len(data.bank.classes),
        "pretrained_features": str(pretrained_features) if untouched is not None else None,
        **provenance(spec, run_dir, device),
        "seconds": round(time.monotonic() - started, 1),
    }


def _model_scores(spec, run_dir, data, untouched, score, device, batch_size) -> tuple:
    """Scores of the run's shared backbone and of its routed view (None without one; from `untouched` if given)."""
    model = models.trained(spec, run_dir, device) if run_dir is not None else models.pretrained(spec, device)
    size, whose = spec["model"]["img_size"], features.weights_name(spec, run_dir)
    knn.log(f"{spec['name']}: shared backbone")
    shared = score(features.compute(model, data, size, device, batch_size, whose))
    with registry.routed(model) as view:
        if view is None:
            return shared, None
        knn.log(f"{spec['name']}: routed view ({spec['method']} without its additions)")
        if untouched is None:
            untouched = features.compute(view, data, size, device, batch_size, f"{whose} (routed view)")
        return shared, score(untouched)


def sweep_data(spec, target_dir, bank_dir, queries_dir, mean, std, precision, ks, temperature) -> tuple:
    """(target test set, source k-NN data or None without a bank, checked ks) for a sweep over one run's models."""
    target = features.load_prepared(target_dir, "target test set")
    check_labels(target, spec["num_classes"], target_dir)
    data = features.load_source(bank_dir, queries_dir, mean, std, precision) if bank_dir is not None else None
    ks = knn.check_settings(ks, temperature, len(data.bank)) if data is not None else sorted(ks)
    return target, data, ks


def changes_backbone(spec: dict, run_dir) -> bool:
    """Whether training `spec` changes any weight the features depend on (anything but the head).

    Decided on the meta device: no memory, no weights read.
    """
    if run_dir is None:
        return False
    model = backbone.build_model(spec["model"], spec["num_classes"], device="meta")
    return trains_backbone(registry.apply(model, spec["method"], spec["args"]))


def trains_backbone(model) -> bool:
    """Whether any weight but the head's trains in this prepared model."""
    return any(p.requires_grad for name, p in model.named_parameters() if not name.startswith(backbone.HEAD_PREFIX))


def check_labels(data, num_classes: int, folder) -> None:
    low, high = int(data.labels.min()), int(data.labels.max())
    if low < 0 or high >= num_classes:
        raise VitpeftError(
            f"{folder} has labels {low}..{high}, outside 0..{num_classes - 1} "
            f"(the spec's num_classes = {num_classes}): is it the target dataset the spec was trained for?"
        )


def knn_scores(data: features.KnnData, feats: tuple, ks, temperature, device) -> dict:
    """Weighted k-NN top-1 (%) per k of the (bank, query) features `feats`."""
    bank, queries = feats
    scores = knn.weighted_knn(
        bank, data.bank.labels, queries, data.queries.labels, ks, temperature, data.num_classes, device=device
    )
    knn.log("k-NN top-1: " + ", ".join(f"k={k} {acc:.2f}%" for k, acc in scores.items()))
    return scores


def classifier_scores(model, data, spec, device, batch_size):
    """Top-1 and top-5 accuracy (%) of the model's own head."""
    k = min(5, spec["num_classes"])
    top_k = lambda x: model(x).float().topk(k, dim=1).indices  # noqa: E731
    size, mean, std = spec["model"]["img_size"], spec["data"]["mean"], spec["data"]["std"]
    predictions = knn.map_batches(model, top_k, data.images, size, mean, std, batch_size, device).cpu()
    hits = predictions == torch.as_tensor(data.labels).view(-1, 1)
    return 100.0 * hits[:, 0].double().mean().item(), 100.0 * hits.any(dim=1).double().mean().item()


def headline(ks) -> int:
    return HEADLINE_K if HEADLINE_K in ks else ks[0]


def knn_settings(best: int, ks, temperature, mean, std, precision) -> dict:
    """What a k-NN score was computed with, recorded beside it."""
    return {"headline_k": best, "ks": ks, "temperature": temperature, "mean": list(mean), "std": list(std),
            "precision": precision}


def keyed(scores: dict) -> dict:
    return {str(k): value for k, value in scores.items()}  # JSON keys are strings


def provenance(spec, run_dir, device) -> dict:
    """Whose score it is, and the device, arithmetic and code that computed it."""
    return {"name": spec["name"], "method": spec["method"], "run": str(run_dir) if run_dir is not None else None,
            "compute_precision": knn.compute_precision(device), **computed_by(device)}


def computed_by(device) -> dict:
    """The device, its kernels as the libraries report them, and the code: what every metrics file records."""
    return {"device": devices.describe(device), "kernels": kernels.record(device), "code": code_version.describe()}
