"""DINO's weighted k-NN: how well a backbone's features still separate a domain.

`extract` turns uint8 images into L2-normalised CLS features; `weighted_knn`
scores queries against a labelled bank exactly as DINO's eval_knn.py does:
the k most similar bank entries (cosine similarity) vote for their class with
weight exp(similarity / T), and the class with the largest summed weight wins.
Memory stays bounded: the bank streams through in chunks while every query
keeps a running top-k, so an ImageNet-sized bank never forms a full
similarity matrix, and the bank crosses to the GPU once.
"""

import concurrent.futures
import contextlib

import numpy as np
import torch
import torch.nn.functional as F

from vitpeft import augment, backbone
from vitpeft.errors import VitpeftError

DINO_KS = (10, 20, 100, 200)
DINO_TEMPERATURE = 0.07


def extract(model, images, size, mean, std, batch_size=256, device="cpu") -> torch.Tensor:
    """Features of uint8 N x H x W x 3 `images` (numpy, may be memory-mapped): float32 [N, D] on CPU, unit norm."""
    unit_features = lambda x: F.normalize(backbone.features(model, x).float(), dim=1)  # noqa: E731
    features = torch.cat(map_batches(model, unit_features, images, size, mean, std, batch_size, device))
    if not torch.isfinite(features).all():
        raise VitpeftError("the backbone produced NaN or infinite features (diverged weights?)")
    return features


def map_batches(model, fn, images, size, mean, std, batch_size=256, device="cpu") -> list:
    """[fn(x).cpu() for each batch x]: resized to `size`, normalised, on `device`, model in eval mode, no grad."""
    if batch_size < 1:
        raise VitpeftError(f"batch size must be positive, got {batch_size}")
    if len(images) == 0:
        raise VitpeftError("cannot evaluate on an empty dataset")
    device = torch.device(device)
    model.eval()
    outputs = []
    with torch.inference_mode(), _autocast(device):
        for batch in _prefetched_batches(images, batch_size):
            x = torch.from_numpy(batch).to(device, non_blocking=True)
            outputs.append(fn(augment.normalize(augment.resize(x, size), mean, std)).cpu())
    return outputs


def _autocast(device: torch.device):
    # bf16 on CUDA halves the time and matches how the backbone trains; CPU stays fp32.
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _prefetched_batches(images, batch_size):
    """Yield in-RAM uint8 batches, reading the next one from disk while the current one computes."""
    read = lambda start: np.array(images[start : start + batch_size])  # noqa: E731  (a writable copy)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(read, 0)
        for start in range(0, len(images), batch_size):
            batch = pending.result()
            if start + batch_size < len(images):
                pending = pool.submit(read, start + batch_size)
            yield batch


def weighted_knn(
    bank,
    bank_labels,
    queries,
    query_labels,
    ks=DINO_KS,
    temperature=DINO_TEMPERATURE,
    num_classes=None,
    chunk=1024,
    bank_chunk=65536,
    device=None,
) -> dict:
    """Top-1 accuracy in percent for each k: {k: accuracy}."""
    query_labels = torch.as_tensor(query_labels).long()
    predictions = knn_predict(bank, bank_labels, queries, ks, temperature, num_classes, chunk, bank_chunk, device)
    return {k: 100.0 * (pred.cpu() == query_labels).double().mean().item() for k, pred in predictions.items()}


def knn_predict(
    bank,
    bank_labels,
    queries,
    ks=DINO_KS,
    temperature=DINO_TEMPERATURE,
    num_classes=None,
    chunk=1024,
    bank_chunk=65536,
    device=None,
) -> dict:
    """Predicted class of every query for each k: {k: int64 tensor [Nq]}.

    `bank` [Nb, D] and `queries` [Nq, D] must already be L2-normalised.
    """
    bank, queries = torch.as_tensor(bank), torch.as_tensor(queries)
    bank_labels = torch.as_tensor(bank_labels).long()
    ks = _check_knn_args(bank, bank_labels, queries, ks, temperature, chunk, bank_chunk)
    num_classes = int(bank_labels.max()) + 1 if num_classes is None else num_classes
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    similarities, indices = _top_neighbours(bank, queries, max(ks), chunk, bank_chunk, device)
    neighbour_labels = bank_labels.to(device)[indices]
    return {k: _vote(similarities[:, :k], neighbour_labels[:, :k], temperature, num_classes).cpu() for k in ks}


def check_settings(ks, temperature, bank_size: int) -> list:
    """Sorted distinct ks, or an error when a k or the temperature cannot work with this bank."""
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1:
        raise VitpeftError(f"k must be positive integers, got {ks}")
    if ks[-1] > bank_size:
        raise VitpeftError(f"k={ks[-1]} exceeds the bank size ({bank_size} entries)")
    if not temperature > 0:
        raise VitpeftError(f"temperature must be positive, got {temperature}")
    return ks


def _check_knn_args(bank, bank_labels, queries, ks, temperature, chunk, bank_chunk) -> list:
    ks = check_settings(ks, temperature, len(bank))
    if chunk < 1 or bank_chunk < 1:
        raise VitpeftError(f"chunk sizes must be positive, got {chunk} and {bank_chunk}")
    if bank.ndim != 2 or queries.ndim != 2 or bank.shape[1] != queries.shape[1]:
        raise VitpeftError(f"bank {tuple(bank.shape)} and queries {tuple(queries.shape)} must be [N, D] with equal D")
    if len(bank_labels) != len(bank):
        raise VitpeftError(f"{len(bank)} bank features but {len(bank_labels)} labels")
    return ks


def _top_neighbours(bank, queries, k, chunk, bank_chunk, device):
    """Similarities [Nq, k] (descending) and bank indices [Nq, k] of each query's k nearest entries.

    The outer loop over bank chunks moves each bank row to the device once;
    every query keeps its running top-k, merged with each chunk's own top-k.
    """
    queries = queries.to(device, torch.float32)
    best_sim = torch.full((len(queries), k), -float("inf"), device=device)
    best_idx = torch.zeros((len(queries), k), dtype=torch.long, device=device)
    for bank_start in range(0, len(bank), bank_chunk):
        block = bank[bank_start : bank_start + bank_chunk].to(device, torch.float32)
        block_k = min(k, len(block))
        for q in range(0, len(queries), chunk):
            sim, idx = (queries[q : q + chunk] @ block.T).topk(block_k, dim=1)
            merged_sim = torch.cat([best_sim[q : q + chunk], sim], dim=1)
            merged_idx = torch.cat([best_idx[q : q + chunk], idx + bank_start], dim=1)
            best_sim[q : q + chunk], pick = merged_sim.topk(k, dim=1)
            best_idx[q : q + chunk] = merged_idx.gather(1, pick)
    return best_sim, best_idx


def _vote(similarities, labels, temperature, num_classes):
    """DINO's vote: each neighbour adds exp(sim / T) to its class; the largest class total wins."""
    weights = (similarities / temperature).exp()
    scores = torch.zeros((len(labels), num_classes), dtype=weights.dtype, device=weights.device)
    scores.scatter_add_(1, labels, weights)
    return scores.argmax(dim=1)
