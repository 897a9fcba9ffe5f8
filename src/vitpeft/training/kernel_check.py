"""Seconds that say whether this machine will reproduce a reference's bits: a fixed computation, hashed.

The computation reaches every kernel library a CPU job reaches, each on inputs
made exactly from integers (a normal draw's fill is itself a vectorised kernel,
so none is used): MKL's GEMM (the Linear layers and attention), ATen's
vectorised kernels (GELU, softmax, LayerNorm, exp, log, sqrt, erfinv, tanh,
the k-NN's normalise and top-k), a few SGD steps of a tiny ViT of the demo's
shape (the patch convolution, attention, backward, the optimiser), and the
pretraining's own path: the seeded initialisation (trunc_normal_'s erfinv),
the crop-and-flip augmentation and AdamW (its sqrt), the calls that reached
MKL's CPU-dependent vector math before `vector_math` routed them around it. Its three digests are
committed beside a reference (`<reference>/kernel-check.json`, written by
`vitpeft check-bits --write`) with the kernel record of the machine that made
them, so a mismatch is explained by what differs: MKL's branch, ATen's
capability, torch, or (all of these alike) the part whose bits moved.
"""

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from vitpeft import code_version
from vitpeft.data import augment
from vitpeft.errors import VitpeftError
from vitpeft.fileio import write_json
from vitpeft.models.backbone import build_model
from vitpeft.training import kernels

FILE = "kernel-check.json"
COMPUTATION = "vitpeft.training.kernel_check/3"  # bump when the computation changes: old digests no longer apply
MODEL = {"name": "vit_base_patch16_224", "img_size": 32,
         "kwargs": {"patch_size": 8, "embed_dim": 32, "depth": 12, "num_heads": 2}}  # config/demo.yaml's  # fmt: skip
PARTS = {"gemm": "MKL's GEMM", "aten": "ATen's vectorised kernels", "training": "the tiny ViT's SGD steps",
         "pretraining": "the tiny ViT's initialisation, augmentation and AdamW steps"}  # fmt: skip
STEPS, BATCH, CLASSES = 4, 16, 10


def exact(generator: torch.Generator, *shape) -> torch.Tensor:
    """Floats in [-1.4, 1.4) with every mantissa bit used, the same bits on any machine: integers below 2^24 (exact
    in fp32) divided by 3,000,000 (one correctly rounded IEEE division each). Sums of such floats round, so their
    bits depend on the order a kernel adds in, which is what the check is for."""
    return torch.randint(-(2**22), 2**22, shape, generator=generator).float() / 3_000_000.0


def digest(*tensors) -> str:
    hashed = hashlib.sha256()
    for tensor in tensors:
        hashed.update(tensor.detach().contiguous().numpy().tobytes())
    return hashed.hexdigest()


def gemm(g: torch.Generator) -> str:
    a, b = exact(g, 257, 131), exact(g, 131, 67)
    return digest(a @ b, torch.addmm(exact(g, 67), a, b), torch.bmm(exact(g, 5, 17, 16), exact(g, 5, 16, 17)),
                  exact(g, 64, 32) @ exact(g, 300, 32).T)


def aten(g: torch.Generator) -> str:
    x = exact(g, 64, 17, 32)
    top = x[:, 0].topk(20, dim=1)
    return digest(F.gelu(x), x.softmax(-1), F.layer_norm(x, (32,)), F.normalize(x, dim=-1), (top.values / 0.07).exp(),
                  top.indices.float(), x.sum(dim=(1, 2)), x.abs().sqrt(), x.abs().log(), (x / 1.5).erfinv(), x.tanh(),
                  x.double().exp())  # fmt: skip


def training(g: torch.Generator) -> str:
    model = build_model(MODEL, CLASSES)
    with torch.no_grad():
        for _, parameter in sorted(model.named_parameters()):
            parameter.copy_(exact(g, *parameter.shape) / 64)
    optimiser = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for _ in range(STEPS):
        images, labels = exact(g, BATCH, 3, 32, 32), torch.randint(0, CLASSES, (BATCH,), generator=g)
        optimiser.zero_grad()
        F.cross_entropy(model(images), labels).backward()
        optimiser.step()
    return digest(*(parameter for _, parameter in sorted(model.named_parameters())))


def pretraining(g: torch.Generator) -> str:
    """The demo pretraining's path: seeded initialisation, crop-and-flip of integer images, AdamW."""
    torch.manual_seed(0)
    model = build_model(MODEL, CLASSES)
    initial = digest(*(parameter for _, parameter in sorted(model.named_parameters())))
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    for _ in range(STEPS):
        images = torch.randint(0, 256, (BATCH, 32, 32, 3), generator=g, dtype=torch.uint8)
        x = augment.random_resized_crop_flip(images, 32, scale=(0.35, 1.0), generator=g)
        labels = torch.randint(0, CLASSES, (BATCH,), generator=g)
        optimiser.zero_grad()
        F.cross_entropy(model(augment.normalize(x, (0.5,) * 3, (0.5,) * 3)), labels).backward()
        optimiser.step()
    return digest(torch.tensor([int(initial[:8], 16)]), *(parameter for _, parameter in sorted(model.named_parameters())))


def run(threads: int = 1) -> dict:
    """The computation at `threads` intra-op threads, on the kernels settled for the CPU: digests and records."""
    kernels.use(torch.device("cpu"))
    torch.set_num_threads(threads)
    started = time.monotonic()
    g = torch.Generator().manual_seed(0)
    digests = {"gemm": gemm(g), "aten": aten(g), "training": training(g), "pretraining": pretraining(g)}
    return {"computation": COMPUTATION, "threads": threads, "digests": digests,
            "seconds": round(time.monotonic() - started, 2), "kernels": kernels.record(torch.device("cpu")),
            "code": code_version.describe()}  # fmt: skip


# ---------------------------------------------------------------- against a reference


@dataclass
class Verdict:
    matches: bool
    line: str


def read(reference) -> dict:
    path = Path(reference) / FILE
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        raise VitpeftError(f"the reference {reference} has no {FILE}; `vitpeft check-bits --reference {reference} "
                           "--write` (run by `make demo-reference`) writes it") from None
    except (ValueError, UnicodeDecodeError) as error:
        raise VitpeftError(f"the reference's {path} is not valid JSON ({error}); restore it with git") from None
    if not isinstance(record, dict) or not isinstance(record.get("digests"), dict):
        raise VitpeftError(f"the reference's {path} is not a kernel check (no digests); restore it with git")
    return record


def write(reference, found: dict) -> Path:
    """Commit `found` as the reference's check; refused where this machine's kernels are not the pinned ones."""
    if not found["kernels"]["reference_bits"]:
        raise VitpeftError(f"this machine's CPU kernels are not the pinned ones ({found['kernels']['why_not']}): "
                           "a reference made here would not be reproducible elsewhere")
    path = Path(reference) / FILE
    write_json(path, found)
    return path


def verdict(found: dict, theirs: dict, reference) -> Verdict:
    """Does `found` (this machine) give the reference's bits? One line either way, naming the cause if not."""
    mine = found["kernels"]
    if theirs.get("computation") != found["computation"]:
        return Verdict(False, f"the kernel check of {reference} was made by another version of the check "
                              f"({theirs.get('computation')}, this one {found['computation']}): "
                              "`make demo-reference` rewrites it")  # fmt: skip
    moved = [part for part in PARTS if found["digests"][part] != theirs["digests"].get(part)]
    if not moved:
        return Verdict(True, f"this machine reproduces the bits of {reference}: the kernel check gives its committed "
                             f"digests ({kernels.describe(mine)}; {found['seconds']:.1f} s)")  # fmt: skip
    return Verdict(False, f"this machine will not reproduce the bits of {reference}: {cause(mine, theirs, moved)} "
                          f"(the check's {', '.join(PARTS[part] for part in moved)} gave other bits)")  # fmt: skip


def cause(mine: dict, theirs: dict, moved: list) -> str:
    """The first thing that explains why the bits moved, in the order a reader would check it."""
    reference = theirs.get("kernels") or {}
    if not mine["reference_bits"]:
        return mine["why_not"]
    if not reference.get("reference_bits", False):
        return f"the reference was made without the pinned kernels ({reference.get('why_not')})"
    for key, what in (("mkl_branch", "MKL ran its {} branch here, {} for the reference"),
                      ("aten_capability", "ATen ran its {} kernels here, {} for the reference"),
                      ("threads", "{} thread(s) here, {} for the reference")):
        if mine.get(key) != reference.get(key):
            return what.format(mine.get(key), reference.get(key))
    if mine["torch"] != reference.get("torch"):
        return f"torch {mine['torch']} here, {reference.get('torch')} in the reference (`make setup` installs the lock's)"
    return (f"with the same pinned kernels and torch, this {_cpu(mine)} computes other bits than the reference's "
            f"{_cpu(reference)}: a kernel path the pin does not cover; please report it with this line")


def _cpu(record: dict) -> str:
    cpu = record.get("cpu") or {}
    return f"{cpu.get('vendor') or '?'} CPU ({cpu.get('model') or '?'}, MKL would pick {record.get('mkl_auto_branch')})"
