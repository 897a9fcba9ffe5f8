"""Which code path torch's CPU kernels take: pinned, so the same inputs give the same bits on Intel and AMD x86-64.

ATen, MKL, oneDNN and NNPACK each pick kernels by the CPU they find (AVX-512
on one machine, AVX2 on another, cache sizes for their blocking) and their
results differ in the last bits, which training amplifies into another table.
The `vitpeft` command pins them before torch loads (each library reads its
variable at its first call):

    ATEN_CPU_CAPABILITY=avx2   ATen's vectorised kernels: the same AVX2+FMA code on every x86-64 with AVX2
    MKL_CBWR=COMPATIBLE        MKL's one SSE2 code path without the approximate rcpps/rsqrtps, which
                               MKL honours on Intel and AMD alike (a named branch such as AVX2 is
                               Intel-only: on an AMD CPU MKL silently runs its AUTO branch instead)
    MKL_DYNAMIC=FALSE          MKL uses the threads it is given, as its reproducibility conditions ask
    ONEDNN_MAX_CPU_ISA=AVX2    oneDNN's instruction set, should anything still reach it

and, when a command picks the CPU, turns oneDNN and NNPACK off (both choose
their blocking by the CPU's cache sizes, so their sums group differently on
another CPU; their work goes to ATen and MKL), routes ATen's exp, log, sqrt,
erfinv and tanh around MKL's vector math, which MKL_CBWR does not pin
(`vector_math`), and sets the intra-op threads to the job's own count
(OMP_NUM_THREADS, which every rule sets to its threads).
`VITPEFT_CPU_PIN=0` (the config's `reproducibility.cpu_pin: false`) leaves the
fastest kernels of this CPU.

What a record says is read back from the libraries, never assumed from the
variables set: the branch MKL reports it runs (`mkl_serv_cbwr_get`, exported by
libtorch_cpu), the capability ATen dispatches to, whether oneDNN and NNPACK are
on, the threads, the CPU. `reference_bits` is true only when all of them are
what the pin asks for.

On CUDA, `VITPEFT_CUDA_DETERMINISTIC=1` (`reproducibility.cuda_deterministic`)
asks for deterministic algorithms, cuBLAS's fixed workspace and no cuDNN
autotuning: reruns on the same GPU model give the same bits.
"""

import ctypes
import functools
import os
import platform
import sys

PIN = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "COMPATIBLE", "MKL_DYNAMIC": "FALSE", "ONEDNN_MAX_CPU_ISA": "AVX2"}
# What the libraries must report for the pinned bits: MKL's branch and ATen's capability, as they name them.
EXPECTED = {"mkl_branch": "COMPATIBLE", "aten_capability": "AVX2"}
CPU_SWITCH = "VITPEFT_CPU_PIN"  # "0": no pin
CUDA_SWITCH = "VITPEFT_CUDA_DETERMINISTIC"  # "1": deterministic CUDA algorithms
CUBLAS = {"CUBLAS_WORKSPACE_CONFIG": ":4096:8"}
# MKL's CNR branches by the number mkl_cbwr_get returns (oneMKL's "Named Constants for CNR Control").
MKL_BRANCHES = {0: "OFF", 1: "BRANCH_OFF", 2: "AUTO", 3: "COMPATIBLE", 4: "SSE2", 5: "SSE3", 6: "SSSE3", 7: "SSE4_1",
                8: "SSE4_2", 9: "AVX", 10: "AVX2", 11: "AVX512_MIC", 12: "AVX512", 13: "AVX512_MIC_E1", 14: "AVX512_E1"}
MKL_CBWR_BRANCH = 1  # mkl_cbwr_get's option: the branch alone
INTEL = "GenuineIntel"
VM_BYPASSED = "ATen (MKL VM bypassed)"  # the record's vector_math once vector_math.replace() ran

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
    _state.update(pinned=True, why_not=None)


def use(device) -> None:
    """Settle the kernels for a command that computes on `device` (after torch loads)."""
    import torch

    if device.type == "cpu" and _state["pinned"]:
        torch.backends.mkldnn.enabled = False
        torch.backends.nnpack.set_flags(False)
        from vitpeft.training import vector_math  # imports torch: never before the pin

        vector_math.replace()
        threads = os.environ.get("OMP_NUM_THREADS", "")
        if threads.isdigit() and int(threads) > 0:
            torch.set_num_threads(int(threads))
    if device.type == "cuda" and os.environ.get(CUDA_SWITCH) == "1":
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False


# ---------------------------------------------------------------- what the libraries report


def observe() -> dict:
    """What this process's CPU kernels are, as the libraries report it (after torch loads)."""
    import torch

    from vitpeft.training import vector_math

    return {
        "mkl_branch": mkl_branch(),
        "mkl_auto_branch": mkl_branch(auto=True),  # what MKL would run here unpinned: tells CPUs apart
        "aten_capability": torch.backends.cpu.get_cpu_capability(),
        "mkldnn": torch.backends.mkldnn.enabled,
        "nnpack": torch._C._get_nnpack_enabled(),
        "vector_math": VM_BYPASSED if vector_math.replaced() else "MKL VM",
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cpu": cpu(),
    }


def mkl_branch(auto: bool = False) -> str | None:
    """The CNR branch MKL runs (or, with `auto`, would pick by itself here), by its name; None without MKL."""
    function = _mkl_function("mkl_serv_cbwr_get_auto_branch" if auto else "mkl_serv_cbwr_get")
    if function is None:
        return None
    number = function() if auto else function(MKL_CBWR_BRANCH)
    return MKL_BRANCHES.get(number, f"branch {number}")


@functools.cache
def _mkl_function(name: str):
    """MKL's service function `name` from libtorch_cpu, which links MKL in; None where it has no MKL."""
    import torch

    library = os.path.join(os.path.dirname(torch.__file__), "lib", "libtorch_cpu.so")
    try:
        function = getattr(ctypes.CDLL(library), name)
    except (OSError, AttributeError):
        return None
    function.restype = ctypes.c_int
    if name == "mkl_serv_cbwr_get":
        function.argtypes = [ctypes.c_int]
    return function


@functools.cache
def cpu() -> dict:
    """The CPU's architecture, vendor and model (from /proc/cpuinfo where there is one)."""
    found = {"arch": platform.machine().lower(), "vendor": None, "model": None, "avx2": None}
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                key, value = key.strip(), value.strip()
                if key == "vendor_id" and found["vendor"] is None:
                    found["vendor"] = value
                elif key == "model name" and found["model"] is None:
                    found["model"] = value
                elif key == "flags" and found["avx2"] is None:
                    found["avx2"] = "avx2" in value.split()
    except OSError:
        pass
    return found


def why_not(observed: dict, pinned: bool = True, reason: str | None = None) -> str | None:
    """Why `observed` kernels do not give the pinned bits, in one sentence naming the cause; None when they do."""
    if not pinned:
        return reason
    machine = observed["cpu"]
    if machine["arch"] not in ("x86_64", "amd64"):
        return f"not an x86-64 CPU ({machine['arch']}): its kernels are its own"
    mkl, aten = observed["mkl_branch"], observed["aten_capability"]
    if mkl is None:
        return "MKL's branch cannot be read (libtorch_cpu exports no mkl_serv_cbwr_get: a torch built without MKL?)"
    if mkl != EXPECTED["mkl_branch"]:
        return f"MKL ran its {mkl} branch, not {EXPECTED['mkl_branch']}: {_mkl_cause(mkl, machine)}"
    if aten != EXPECTED["aten_capability"]:
        lacking = ": this CPU has no AVX2" if machine["avx2"] is False else ""
        return f"ATen ran its {aten} kernels, not {EXPECTED['aten_capability']}{lacking}"
    if observed["mkldnn"] or observed["nnpack"]:
        on = " and ".join(name for name in ("mkldnn", "nnpack") if observed[name])
        return f"{on} on: the command did not settle its CPU kernels (kernels.use)"
    if observed.get("vector_math") != VM_BYPASSED:
        return ("exp, log, sqrt, erfinv and tanh ran on MKL's vector math, whose kernels follow the CPU: the command "
                "did not settle its CPU kernels (kernels.use)")
    return None


def _mkl_cause(branch: str, machine: dict) -> str:
    asked = os.environ.get("MKL_CBWR")
    if asked is None or asked.split(",")[0] != EXPECTED["mkl_branch"]:
        return f"the environment asked for MKL_CBWR={asked} (set after the pin, or torch loaded before it)"
    named = f"{machine['vendor'] or 'unknown vendor'} CPU ({machine['model'] or 'unknown model'})"
    if branch == "AUTO" and machine["vendor"] != INTEL:
        return f"this is a non-Intel {named}, where MKL runs only AUTO and COMPATIBLE and fell back to AUTO"
    return f"MKL refused the branch on this {named} and fell back to {branch}"


# ---------------------------------------------------------------- the record


def record(device) -> dict:
    """What provenance says of the kernels: what the libraries report, and whether the bits are the pinned ones
    (and why not)."""
    import torch

    if device.type == "cuda":
        return {"cuda_deterministic": os.environ.get(CUDA_SWITCH) == "1", "torch": torch.__version__,
                "reference_bits": False, "why_not": "GPU kernels: a tolerance across GPU models, not a promise"}
    observed = observe()
    why = why_not(observed, _state["pinned"], _state["why_not"])
    return {"pinned": _state["pinned"], "pin": dict(PIN) if _state["pinned"] else None, **observed,
            "reference_bits": why is None, "why_not": why}  # fmt: skip


def describe(record: dict) -> str:
    """The record in words, for a log line."""
    if "pinned" not in record:
        return "CUDA kernels" + (", deterministic" if record.get("cuda_deterministic") else "")
    threads = f"{record['threads']} thread(s)"
    if record["reference_bits"]:
        return (f"CPU kernels pinned: MKL {record['mkl_branch']} (as MKL reports), ATen {record['aten_capability']}, "
                f"oneDNN and NNPACK off, {threads}")  # fmt: skip
    return f"CPU kernels not the pinned ones: {record['why_not']}; {threads}"
