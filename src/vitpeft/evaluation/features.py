"""k-NN features: the bank and queries an evaluation scores, and the untouched backbone's features cached once.

`pretrained`, `linear` (training leaves the backbone alone) and every routed
view (LoRA off, new blocks out) score the same features: the untouched
backbone's. `extract_pretrained` writes them once, with their provenance:
everything that decides their values (checkpoint bytes, model, preprocessing,
which images, precision). An evaluation uses the cache only when that
provenance equals what it would compute itself; otherwise it recomputes and
says why in its log. k and T are not part of it: they act after the features.

Cache folder: bank.npy, queries.npy ([N, D] unit features, fp32 or fp16),
bank_labels.npy, query_labels.npy, provenance.json and SHA256SUMS; written
atomically. A cache whose files do not match their digests is refused, naming
the file (vitpeft.digests): it is never read, nor silently recomputed.
"""

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vitpeft.evaluation import knn
from vitpeft.training import model as models
from vitpeft.data import store
from vitpeft import digests
from vitpeft.errors import VitpeftError
from vitpeft.fileio import atomic_path, read_json, write_json

FORMAT = 1  # the cache layout; bump on change
RESIZE = "bilinear, antialiased, to img_size x img_size (augment.resize)"
HASH_BLOCK = 1 << 20


@dataclass
class KnnData:
    """A labelled bank and its queries, as one evaluation reads them: folders, data, preprocessing, precision."""

    bank_dir: Path
    queries_dir: Path
    bank: store.Dataset
    queries: store.Dataset
    mean: list
    std: list
    precision: str  # how features are stored for the vote: a key of knn.STORAGE

    @property
    def num_classes(self) -> int:
        return max(len(self.bank.classes), int(self.bank.labels.max()) + 1, int(self.queries.labels.max()) + 1)


def load_prepared(folder, what: str) -> store.Dataset:
    """A prepared dataset folder (memory-mapped), or an error naming `what` it was meant to be."""
    if folder is None:
        raise VitpeftError(f"no {what} given")
    if not Path(folder).is_dir():
        raise VitpeftError(f"{what} not found: {folder}")
    data = store.load(folder, mmap=True)
    if len(data) == 0:
        raise VitpeftError(f"{what} {folder} is empty")
    return data


def load_source(bank_dir, queries_dir, mean, std, precision="fp32", what="source") -> KnnData:
    """Bank and queries checked against each other, with the preprocessing and precision they will be read with."""
    check_mean_std(mean, std)
    if precision not in knn.STORAGE:
        raise VitpeftError(f"precision must be one of {', '.join(knn.STORAGE)}, got {precision!r}")
    bank, queries = load_prepared(bank_dir, f"{what} bank"), load_prepared(queries_dir, f"{what} queries")
    if bank.classes != queries.classes:
        raise VitpeftError(f"{bank_dir} and {queries_dir} list different classes: prepare them together")
    return KnnData(Path(bank_dir), Path(queries_dir), bank, queries, list(mean), list(std), precision)


def check_mean_std(mean, std) -> None:
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise VitpeftError(
            f"mean and std need 3 values each, std positive; got mean {list(mean)}, std {list(std)} "
            "(e.g. --mean 0.485 0.456 0.406 --std 0.229 0.224 0.225)"
        )


def compute(model, data: KnnData, img_size: int, device, batch_size: int, whose: str) -> tuple:
    """(bank, query) features through `model`; NaN or infinite ones are an error naming `whose` weights."""
    dtype, out = knn.STORAGE[data.precision], []
    parts = (("bank", data.bank_dir, data.bank.images), ("query", data.queries_dir, data.queries.images))
    for name, folder, images in parts:
        try:
            label = f"{name} features"
            out.append(knn.extract(model, images, img_size, data.mean, data.std, batch_size, device, dtype, label))
        except knn.NonFiniteFeatures:
            raise VitpeftError(
                f"{whose} gives NaN or infinite features on {folder}: the weights are broken "
                "(a diverged run: retrain it, e.g. with a lower train.lr)"
            ) from None
    return tuple(out)


def provenance(spec: dict, data: KnnData, device) -> dict:
    """Everything that decides the untouched backbone's feature values for `data` on `device` (JSON types)."""
    checkpoint = spec["checkpoint"]
    weights = (
        {"checkpoint_sha256": _file_sha256(checkpoint)}
        if checkpoint is not None  # seeded random weights otherwise (model.pretrained)
        else {"random_init": {"seed": spec["train"]["seed"], "num_classes": spec["num_classes"]}}
    )
    record = {
        "format": FORMAT,
        "backbone": {**weights, "layout": spec.get("layout"), "model": spec["model"]},  # layout: how keys are read
        "preprocessing": {"img_size": spec["model"]["img_size"], "mean": data.mean, "std": data.std, "resize": RESIZE},
        "bank": _identity(data.bank_dir, data.bank),
        "queries": _identity(data.queries_dir, data.queries),
        "precision": {"storage": data.precision, "compute": knn.compute_precision(device)},
    }
    return json.loads(json.dumps(record))  # tuples -> lists, as read back from provenance.json


def _identity(folder: Path, data: store.Dataset) -> dict:
    """Which images, without reading them all: the folder's meta.json, count, image shape and a hash of the labels."""
    labels = np.ascontiguousarray(data.labels, dtype="<i8")
    return {
        "meta": read_json(folder / "meta.json"),
        "count": len(data),
        "image_shape": list(data.images[0:1].shape[1:]),
        "labels_sha256": hashlib.sha256(labels.tobytes()).hexdigest(),
    }


def _file_sha256(path) -> str:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            while block := handle.read(HASH_BLOCK):
                digest.update(block)
    except FileNotFoundError:
        raise VitpeftError(f"checkpoint not found: {path}") from None
    return digest.hexdigest()


def extract_pretrained(spec: dict, data: KnnData, out, device, batch_size: int | None = None) -> dict:
    """Write the untouched backbone's features of `data` with their provenance to the folder `out`; return it."""
    record = provenance(spec, data, device)
    model = models.pretrained(spec, device)
    bank, queries = compute(model, data, spec["model"]["img_size"], device, batch_size, weights_name(spec))
    with atomic_path(out) as tmp:
        tmp.mkdir()
        np.save(tmp / "bank.npy", bank.cpu().numpy())
        np.save(tmp / "queries.npy", queries.cpu().numpy())
        np.save(tmp / "bank_labels.npy", np.asarray(data.bank.labels, dtype=np.int64))
        np.save(tmp / "query_labels.npy", np.asarray(data.queries.labels, dtype=np.int64))
        write_json(tmp / "provenance.json", record)
        digests.seal(tmp)
    knn.log(f"wrote the untouched backbone's features to {out}")
    return record


def weights_name(spec: dict, run_dir=None) -> str:
    """Whose weights compute the features, for messages: the run, else the spec's checkpoint."""
    if run_dir is not None:
        return f"run {run_dir}"
    return f"checkpoint {spec['checkpoint']}" if spec["checkpoint"] is not None else "the randomly initialised backbone"


def cached(folder, expected: dict, device):
    """(bank, query) features from the cache `folder` if its provenance is exactly `expected`, else None.

    Why a cache is not used (missing, unreadable, another provenance) goes to
    the log; the caller then computes the features itself.
    """
    folder = Path(folder)
    if folder.is_dir():
        digests.verify(folder, ["provenance.json", "bank.npy", "queries.npy"])
    try:
        found = read_json(folder / "provenance.json")
    except (OSError, ValueError) as error:
        return _unused(folder, f"no readable provenance.json ({type(error).__name__})")
    differing = _differences(found, expected)
    if differing:
        return _unused(folder, f"its provenance differs in {', '.join(differing)}")
    try:
        # Copy-on-write memory maps: on the CPU the vote reads the cache from disk chunk by chunk.
        bank, queries = (torch.from_numpy(np.load(folder / f, mmap_mode="c")) for f in ("bank.npy", "queries.npy"))
    except (OSError, ValueError) as error:
        return _unused(folder, f"its features cannot be read ({error})")
    shapes_ok = (len(bank), len(queries)) == (expected["bank"]["count"], expected["queries"]["count"])
    if not shapes_ok or bank.dtype != knn.STORAGE[expected["precision"]["storage"]]:
        return _unused(folder, f"its features have shapes {tuple(bank.shape)}, {tuple(queries.shape)} and {bank.dtype}")
    knn.log(f"the untouched backbone's features: from the cache {folder}")
    return bank.to(device), queries.to(device)


def _unused(folder: Path, why: str) -> None:
    knn.log(f"not using the feature cache {folder}: {why}; computing the features instead")
    return None


def _differences(found, expected, prefix="") -> list:
    """Dotted keys whose values differ between two JSON objects (e.g. ['bank.labels_sha256'])."""
    if not isinstance(found, dict) or not isinstance(expected, dict):
        return [] if found == expected else [prefix.rstrip(".") or "(whole file)"]
    keys = sorted(set(found) | set(expected))
    return [d for key in keys for d in _differences(found.get(key), expected.get(key), f"{prefix}{key}.")]
