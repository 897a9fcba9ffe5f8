"""DINO's weighted k-NN: how well a backbone's features still separate a domain.

`extract` turns uint8 images into L2-normalised CLS features; `weighted_knn`
scores queries against a labelled bank exactly as DINO's eval_knn.py does:
the k most similar bank entries (cosine similarity) vote for their class with
weight exp(similarity / T), and the class with the largest summed weight wins.

Extraction never waits for the device batch by batch: a reader thread fills
the next host buffer (pinned on CUDA, copied with non_blocking) while the
device computes, features land in one preallocated tensor on the device, and
the finiteness check runs once at the end. The vote streams the bank in
chunks and the queries in chunks, so its memory stays bounded (knn_predict).
"""

import concurrent.futures
import contextlib
import sys
import time

import torch
import torch.nn.functional as F

from vitpeft.data import augment
from vitpeft.evaluation import passes
from vitpeft.models import backbone
from vitpeft.errors import VitpeftError
from vitpeft.progress import duration

DINO_KS = (10, 20, 100, 200)
DINO_TEMPERATURE = 0.07
STORAGE = {"fp32": torch.float32, "fp16": torch.float16}  # how extracted features are kept for the vote
PROGRESS_SECONDS = 30.0  # a progress line at most this often


class NonFiniteFeatures(VitpeftError):
    """The backbone produced NaN or infinite features (broken or diverged weights)."""


def log(message: str) -> None:
    """A timestamped line on stderr: evaluation jobs take minutes, their log files show where they are."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# Images per forward pass when a command is given none. On the CPU, 64 runs the demo's ViT about 15% faster per
# image than 256 (its activations stay in cache); on a GPU a large batch fills the device. The batch size can move
# the last bits of a score (MKL blocks a product by its rows), so each device keeps one default.
EVAL_BATCH = {"cpu": 64, "cuda": 256}


def extract(
    model, images, size, mean, std, batch_size=None, device="cpu", dtype=torch.float32, label="features"
) -> torch.Tensor:
    """Unit-norm CLS features of uint8 N x H x W x 3 `images` as [N, D] `dtype` on `device`.

    `images` needs only len() and contiguous slices (a memory-mapped or sharded
    store). Features are computed in fp32 (bf16 autocast on CUDA) and
    normalised in fp32 before they are stored in `dtype`.
    """
    unit_features = lambda x: F.normalize(backbone.features(model, x).float(), dim=1)  # noqa: E731
    features = map_batches(model, unit_features, images, size, mean, std, batch_size, device, dtype, label)
    if not torch.isfinite(features).all():  # the one host synchronisation
        raise NonFiniteFeatures("the backbone produced NaN or infinite features (diverged weights?)")
    return features


def map_batches(
    model, fn, images, size, mean, std, batch_size=None, device="cpu", dtype=None, label=None
) -> torch.Tensor:
    """fn(x) for every batch x (resized to `size`, normalised, model in eval mode, no grad), stacked on `device`.

    The result is preallocated from the first batch's output (in `dtype`, default
    fn's own); with a `label`, progress lines go to stderr (log). `batch_size`
    None takes the device's (EVAL_BATCH). Inside an evaluation job made resumable (vitpeft.evaluation.passes), rows saved by a
    stopped attempt are taken back, and a stop request saves and stops after a batch.
    """
    device = torch.device(device)
    batch_size = EVAL_BATCH[device.type] if batch_size is None else batch_size
    if batch_size < 1:
        raise VitpeftError(f"batch size must be positive, got {batch_size}")
    if len(images) == 0:
        raise VitpeftError("cannot evaluate on an empty dataset")
    job = passes.active()
    index, saved = job.begin(len(images)) if job else (None, None)
    out, first = None, 0
    if saved is not None:
        values, first = saved
        out = torch.empty((len(images), *values.shape[1:]), dtype=values.dtype, device=device)
        out[:first] = values.to(device)
        log(f"{label or 'pass'}: {first} of {len(images)} images taken back from the stopped attempt")
    # On the device once: a list would be copied to the GPU, and waited for, on every batch.
    mean, std = (torch.tensor(v, dtype=torch.float32, device=device) for v in (mean, std))
    progress = Progress(len(images), label) if label else None
    model.eval()
    with torch.inference_mode(), _autocast(device):
        for start, batch in _device_batches(images, batch_size, device, first):
            y = fn(augment.normalize(augment.resize(batch, size), mean, std))
            if out is None:
                out = torch.empty((len(images), *y.shape[1:]), dtype=dtype or y.dtype, device=device)
            out[start : start + len(y)] = y
            if progress:
                progress.update(start + len(y))
            if job:
                job.progress(index, out, start + len(y))
    return out


def _autocast(device: torch.device):
    # bf16 on CUDA halves the time and matches how the backbone trains; CPU stays fp32.
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def compute_precision(device) -> str:
    """What extract computes in on `device` (features differ between the two)."""
    return "bf16 autocast" if torch.device(device).type == "cuda" else "fp32"


def _device_batches(images, batch_size, device, first=0):
    """Yield (start, uint8 batch on `device`) from image `first` on, while a thread reads the next batch into the
    other host buffer.

    On CUDA the two buffers are pinned and copied with non_blocking; before a
    buffer is refilled, the host waits for the copy out of it (queued two
    batches earlier), never for the whole device.
    """
    cuda = device.type == "cuda"
    buffers, copied = [None, None], [None, None]  # host buffers; CUDA events "the device has buffer i's batch"

    def read(slot, start):
        batch = images[start : start + batch_size]
        if buffers[slot] is None:
            buffers[slot] = torch.empty((batch_size, *batch.shape[1:]), dtype=torch.uint8, pin_memory=cuda)
        host = buffers[slot][: len(batch)]
        host.numpy()[...] = batch
        return host

    starts = range(first, len(images), batch_size)
    if not starts:  # a pass a stopped attempt finished
        return
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(read, 0, starts[0])
        for i, start in enumerate(starts):
            slot, host = i % 2, pending.result()
            if i + 1 < len(starts):
                if copied[1 - slot] is not None:
                    copied[1 - slot].synchronize()
                pending = pool.submit(read, 1 - slot, starts[i + 1])
            batch = host.to(device, non_blocking=True)  # on the CPU: the buffer itself
            if cuda:
                copied[slot] = torch.cuda.Event()
                copied[slot].record()
            yield start, batch


class Progress:
    """`label: done/total images, rate img/s, time left`, at most every PROGRESS_SECONDS and at the end.

    On CUDA `done` counts batches handed to the device, at most two ahead of it.
    """

    def __init__(self, total: int, label: str, seconds: float | None = None):
        self.total, self.label = total, label
        self.seconds = PROGRESS_SECONDS if seconds is None else seconds
        self.started = self.last = time.monotonic()

    def update(self, done: int) -> None:
        now = time.monotonic()
        if now - self.last < self.seconds and done < self.total:
            return
        self.last = now
        rate = done / max(now - self.started, 1e-9)
        log(f"{self.label}: {done}/{self.total} images, {rate:,.0f} img/s, {duration((self.total - done) / rate)} left")


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

    `bank` [Nb, D] and `queries` [Nq, D] must already be L2-normalised; any
    float dtype, any device: each chunk is upcast to fp32 on `device`, so the
    memory it takes is bounded by vote_bytes (the stored features plus a
    working set that grows with Nq and Nb only through small per-row terms).
    """
    bank, queries = torch.as_tensor(bank), torch.as_tensor(queries)
    bank_labels = torch.as_tensor(bank_labels).long()
    ks = _check_knn_args(bank, bank_labels, queries, ks, temperature, chunk, bank_chunk)
    num_classes = int(bank_labels.max()) + 1 if num_classes is None else num_classes
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    similarities, indices = _top_neighbours(bank, queries, max(ks), chunk, bank_chunk, device)
    bank_labels = bank_labels.to(device)
    predictions = {k: torch.empty(len(queries), dtype=torch.long, device=device) for k in ks}
    for q in range(0, len(queries), chunk):
        labels = bank_labels[indices[q : q + chunk]]
        for k in ks:
            sims = similarities[q : q + chunk, :k]
            predictions[k][q : q + chunk] = _vote(sims, labels[:, :k], temperature, num_classes)
    return {k: prediction.cpu() for k, prediction in predictions.items()}


def vote_bytes(bank_size, query_count, dim, ks, num_classes, storage_bytes, chunk=1024, bank_chunk=65536) -> dict:
    """Upper bound of knn_predict's memory on its device, in bytes: the stored features and the working set.

    With Nb, Nq, D, k = max(ks), C classes, s bytes per stored value,
    Qc = min(chunk, Nq), Bc = min(bank_chunk, Nb):
        features = s D (Nb + Nq)
        working  = 12 Nq k            running top-k per query (fp32 similarity + int64 index)
                 + 8 Nb               bank labels (int64)
                 + 4 Bc D             one bank chunk upcast to fp32
                 + 4 Qc (Bc + D + C)  one similarity block, one query chunk in fp32, one vote
                 + 64 Qc k            a chunk's top-k, merged with the running one (indices, gathers)
                 + 8 Nq len(ks)       the predictions
    """
    k, chunk, bank_chunk = max(ks), min(chunk, query_count), min(bank_chunk, bank_size)
    features = storage_bytes * dim * (bank_size + query_count)
    working = (
        12 * query_count * k
        + 8 * bank_size
        + 4 * bank_chunk * dim
        + 4 * chunk * (bank_chunk + dim + num_classes)
        + 64 * chunk * k
        + 8 * query_count * len(ks)
    )
    return {"features": features, "working": working, "total": features + working}


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

    The outer loop over bank chunks upcasts (and moves) each bank row once;
    every query keeps its running top-k, merged with each chunk's own top-k.
    """
    best_sim = torch.full((len(queries), k), -float("inf"), device=device)
    best_idx = torch.zeros((len(queries), k), dtype=torch.long, device=device)
    for bank_start in range(0, len(bank), bank_chunk):
        block = bank[bank_start : bank_start + bank_chunk].to(device, torch.float32)
        block_k = min(k, len(block))
        for q in range(0, len(queries), chunk):
            sim, idx = (queries[q : q + chunk].to(device, torch.float32) @ block.T).topk(block_k, dim=1)
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
