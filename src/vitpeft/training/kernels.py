"""Which code path torch's CPU kernels take: pinned, so the same inputs give the same bits on any x86-64 with AVX2.

ATen, MKL and oneDNN each pick kernels by the CPU they find (AVX-512 on one
machine, AVX2 on another) and their results differ in the last bits, which
training amplifies into another table. The `vitpeft` command pins them before
torch loads (each library reads its variable at its first call):

    ATEN_CPU_CAPABILITY=avx2   ATen's vectorised kernels
    MKL_CBWR=AVX2              MKL's conditional numerical reproducibility branch
    ONEDNN_MAX_CPU_ISA=AVX2    oneDNN's instruction set

and, when a command picks the CPU, turns oneDNN off (its kernels may also
choose their blocking by cache size) and sets the intra-op threads to the job's
own count (OMP_NUM_THREADS, which every rule sets to its threads). Every x86-64
server of the last decade has AVX2. `VITPEFT_CPU_PIN=0` (the config's
`reproducibility.cpu_pin: false`) leaves the fastest kernels of this CPU.

On CUDA, `VITPEFT_CUDA_DETERMINISTIC=1` (`reproducibility.cuda_deterministic`)
asks for deterministic algorithms, cuBLAS's fixed workspace and no cuDNN
autotuning: reruns on the same GPU model give the same bits.
"""

import os
import platform
import sys

PIN = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
CPU_SWITCH = "VITPEFT_CPU_PIN"  # "0": no pin
CUDA_SWITCH = "VITPEFT_CUDA_DETERMINISTIC"  # "1": deterministic CUDA algorithms
CUBLAS = {"CUBLAS_WORKSPACE_CONFIG": ":4096:8"}

_state = {"pinned": False, "why_not": "not started through the vitpeft command (torch was loaded first)"}


def pin_environment(environ=os.environ) -> None:
    """Set the pins in `environ`, overriding what the outer environment says; call before torch loads."""
    if environ.get(CUDA_SWITCH) == "1":
        environ.update(CUBLAS)
    if environ.get(CPU_SWITCH) == "0":
        _state.update(pinned=False, why_not="the pin is turned off (reproducibility.cpu_pin: false)")
        return
    if "torch" in sys.modules:
        return  # too late: the libraries may have read their variables already; the record says so
    environ.update(PIN)
    missing = _unsupported()
    _state.update(pinned=missing is None, why_not=missing)


def _unsupported() -> str | None:
    """Why this machine cannot take the pinned path (None when it can)."""
    machine = platform.machine().lower()
    if machine not in ("x86_64", "amd64"):
        return f"not an x86-64 CPU ({machine}): its kernels are its own"
    try:
        with open("/proc/cpuinfo") as handle:
            flags = next((line.split(":", 1)[1].split() for line in handle if line.startswith("flags")), [])
    except OSError:
        return None  # no /proc/cpuinfo: trust the x86-64 baseline of the last decade
    return None if "avx2" in flags else "this CPU has no AVX2: its kernels fall back to another path"


def use(device) -> None:
    """Settle the kernels for a command that computes on `device` (after torch loads)."""
    import torch

    if device.type == "cpu" and _state["pinned"]:
        torch.backends.mkldnn.enabled = False
        threads = os.environ.get("OMP_NUM_THREADS", "")
        if threads.isdigit() and int(threads) > 0:
            torch.set_num_threads(int(threads))
    if device.type == "cuda" and os.environ.get(CUDA_SWITCH) == "1":
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False


def record(device) -> dict:
    """What provenance says of the kernels: pinned or not (and why), threads, and whether the bits are the reference's."""
    import torch

    if device.type == "cuda":
        return {"cuda_deterministic": os.environ.get(CUDA_SWITCH) == "1", "torch": torch.__version__,
                "reference_bits": False, "why_not": "GPU kernels: a tolerance across GPU models, not a promise"}
    return {
        "pinned": _state["pinned"],
        "pin": dict(PIN) if _state["pinned"] else None,
        "mkldnn": torch.backends.mkldnn.enabled,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "reference_bits": _state["pinned"],
        "why_not": None if _state["pinned"] else _state["why_not"],
    }


def describe(record: dict) -> str:
    """The record in words, for a log line."""
    if "pinned" not in record:
        return "CUDA kernels" + (", deterministic" if record.get("cuda_deterministic") else "")
    if record["pinned"]:
        return f"CPU kernels pinned to AVX2 (oneDNN off), {record['threads']} thread(s)"
    return f"CPU kernels not pinned: {record['why_not']}; {record['threads']} thread(s)"
