"""The study's two numbers for one run: accuracy on the target domain, and what the backbone kept of the source.

Target (CIFAR-100 test): top-1/top-5 of the trained classifier. The untouched
pretrained backbone has no trained head, so without a run the target figure
is DINO's weighted k-NN on the target domain instead (train as bank, test as
queries), flagged as "metric": "knn".

Source (ImageNet-1k): DINO's weighted k-NN with the fine-tuned backbone that
the target head uses ("knn"), and, for methods that keep the pretrained
function reachable (LoRA adapters off, block expansion's new blocks out), the
same with that routed view ("routed"; null otherwise).
"""

import sys
import time
from pathlib import Path

import torch

from vitpeft import devices, knn, methods, model as models, store
from vitpeft.errors import VitpeftError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HEADLINE_K = 20  # DINO's headline k


def eval_target(
    spec, run_dir, data_dir, device="cpu", batch_size=256, ks=knn.DINO_KS, temperature=knn.DINO_TEMPERATURE
) -> dict:
    """Top-1/top-5 (%) of the run's classifier on the prepared test set `data_dir`; k-NN when run_dir is None."""
    started, device = time.monotonic(), devices.pick(device)
    test = _load(data_dir, "target test set")
    _check_labels(test, spec["num_classes"], data_dir)
    if run_dir is None:
        result = _target_knn(spec, test, ks, temperature, device, batch_size)
    else:
        top1, top5 = _classifier_scores(models.trained(spec, run_dir, device), test, spec, device, batch_size)
        result = {"metric": "classifier", "top1": top1, "top5": top5}
    return {**result, **_provenance(spec, run_dir), "count": len(test), "seconds": round(time.monotonic() - started, 1)}


def _target_knn(spec, test, ks, temperature, device, batch_size) -> dict:
    """The head-less pretrained backbone's target figure: weighted k-NN, bank = the target train set."""
    bank = _load(spec["data"]["train"], "target train set (the k-NN bank)")
    ks = knn.check_settings(ks, temperature, len(bank))
    model = models.pretrained(spec, device)
    mean, std = spec["data"]["mean"], spec["data"]["std"]
    scores = _knn_scores(model, bank, test, ks, temperature, mean, std, spec, device, batch_size)
    return {
        "metric": "knn",
        "top1": scores[_headline(ks)],
        "top5": None,
        "knn": _keyed(scores),
        "headline_k": _headline(ks),
        "ks": ks,
        "temperature": temperature,
        "bank_count": len(bank),
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
    batch_size=256,
) -> dict:
    """DINO's weighted k-NN (%) per k on the source domain, with the shared backbone and its routed view."""
    started, device = time.monotonic(), devices.pick(device)
    _check_mean_std(mean, std)
    bank, queries = _load(bank_dir, "source bank"), _load(queries_dir, "source queries")
    if bank.classes != queries.classes:
        raise VitpeftError(f"{bank_dir} and {queries_dir} list different classes: prepare them together")
    ks = knn.check_settings(ks, temperature, len(bank))
    model = models.trained(spec, run_dir, device) if run_dir is not None else models.pretrained(spec, device)
    _log(f"{spec['name']}: shared backbone")
    shared = _knn_scores(model, bank, queries, ks, temperature, mean, std, spec, device, batch_size)
    routed = None
    with methods.routed(model) as view:
        if view is not None:
            _log(f"{spec['name']}: routed view ({spec['method']} without its additions)")
            routed = _knn_scores(view, bank, queries, ks, temperature, mean, std, spec, device, batch_size)
    headline = _headline(ks)
    return {
        "metric": "knn",
        "knn": _keyed(shared),
        "routed": _keyed(routed) if routed is not None else None,
        "top1": shared[headline],
        "routed_top1": routed[headline] if routed is not None else None,
        "headline_k": headline,
        "ks": ks,
        "temperature": temperature,
        "mean": list(mean),
        "std": list(std),
        "bank_count": len(bank),
        "query_count": len(queries),
        "num_classes": len(bank.classes),
        **_provenance(spec, run_dir),
        "seconds": round(time.monotonic() - started, 1),
    }


def _load(folder, what: str) -> store.Dataset:
    if folder is None:
        raise VitpeftError(f"no {what} given")
    if not Path(folder).is_dir():
        raise VitpeftError(f"{what} not found: {folder}")
    return store.load(folder, mmap=True)


def _check_labels(data: store.Dataset, num_classes: int, folder) -> None:
    if len(data) and (data.labels.min() < 0 or data.labels.max() >= num_classes):
        raise VitpeftError(f"{folder} has labels outside 0..{num_classes - 1} (spec num_classes = {num_classes})")


def _check_mean_std(mean, std) -> None:
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise VitpeftError(f"mean and std need 3 values each, std positive; got mean {list(mean)}, std {list(std)}")


def _knn_scores(model, bank, queries, ks, temperature, mean, std, spec, device, batch_size) -> dict:
    size, started = spec["model"]["img_size"], time.monotonic()
    bank_features = knn.extract(model, bank.images, size, mean, std, batch_size, device)
    query_features = knn.extract(model, queries.images, size, mean, std, batch_size, device)
    _log(f"features of {len(bank)} bank and {len(queries)} query images in {time.monotonic() - started:.0f} s")
    num_classes = max(len(bank.classes), int(bank.labels.max()) + 1, int(queries.labels.max()) + 1)
    scores = knn.weighted_knn(
        bank_features, bank.labels, query_features, queries.labels, ks, temperature, num_classes, device=device
    )
    _log("k-NN top-1: " + ", ".join(f"k={k} {acc:.2f}%" for k, acc in scores.items()))
    return scores


def _log(message: str) -> None:
    # Extracting an ImageNet bank takes minutes: a line per phase shows a job's progress in its log.
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _classifier_scores(model, data, spec, device, batch_size):
    """Top-1 and top-5 accuracy (%) of the model's own head."""
    k = min(5, spec["num_classes"])
    top_k = lambda x: model(x).float().topk(k, dim=1).indices  # noqa: E731
    size, mean, std = spec["model"]["img_size"], spec["data"]["mean"], spec["data"]["std"]
    predictions = torch.cat(knn.map_batches(model, top_k, data.images, size, mean, std, batch_size, device))
    hits = predictions == torch.as_tensor(data.labels).view(-1, 1)
    return 100.0 * hits[:, 0].double().mean().item(), 100.0 * hits.any(dim=1).double().mean().item()


def _headline(ks) -> int:
    return HEADLINE_K if HEADLINE_K in ks else ks[0]


def _keyed(scores: dict) -> dict:
    return {str(k): value for k, value in scores.items()}  # JSON keys are strings


def _provenance(spec, run_dir) -> dict:
    return {"name": spec["name"], "method": spec["method"], "run": str(run_dir) if run_dir is not None else None}
