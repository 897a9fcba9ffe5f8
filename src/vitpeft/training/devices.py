"""Which device a command runs on, and why CUDA is missing when it was asked for.

The workflow passes `--device cuda` to every job whose rule asks for GPUs and
`--device cpu` to the others, so a job never falls back to the CPU on its own
and never takes a GPU it was not given. By hand, `auto` picks the GPU when
torch sees one.
"""

import os
import re
import socket
import subprocess

from vitpeft.errors import VitpeftError
from vitpeft.training import kernels

CHOICES = ["auto", "cpu", "cuda"]

# The oldest Linux driver each CUDA major version of a torch build runs on (NVIDIA's
# CUDA compatibility table, minor-version compatibility): older drivers see no GPU.
MIN_DRIVER = {11: 450, 12: 525, 13: 580}
# What `make setup TORCH_CUDA=<variant>` installs instead of the lock file's build.
SETUP_HINT = "make setup TORCH_CUDA=cu126 (CUDA 12.6 build, driver >= 525; README: 'GPU clusters')"


def pick(name=None):
    """'auto' (or None) -> CUDA when available, else CPU; 'cuda' without one is one error saying why."""
    import torch  # here, so that `vitpeft --help` and the option parsing never load torch

    if name in (None, "auto"):
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise VitpeftError(f"--device cuda was asked for, but torch sees no CUDA device: {why_no_cuda()}")
    kernels.use(device)
    return device


def why_no_cuda() -> str:
    """One line: the node, what SLURM granted, torch's CUDA build, the driver, and the likely fix."""
    import torch

    granted = os.environ.get("CUDA_VISIBLE_DEVICES")
    slurm = os.environ.get("SLURM_GPUS_ON_NODE") or os.environ.get("SLURM_JOB_GPUS")
    facts = [
        f"node {node_name()}",
        f"CUDA_VISIBLE_DEVICES={granted!r}" if granted is not None else "CUDA_VISIBLE_DEVICES unset",
        f"SLURM GPUs on node: {slurm}" if slurm else "no GPU granted by SLURM",
        f"torch {torch.__version__} built for CUDA {torch.version.cuda}" if torch.version.cuda
        else f"torch {torch.__version__} is a CPU-only build",
        f"NVIDIA driver {driver_version() or 'not found (no /proc/driver/nvidia/version, no nvidia-smi)'}",
    ]
    return "; ".join(facts) + f". Fix: {fix(torch.version.cuda, driver_version(), granted)}"


def fix(torch_cuda: str | None, driver: str | None, granted: str | None) -> str:
    """What to do, from what was found."""
    if torch_cuda is None:
        return f"install a CUDA build of torch: {SETUP_HINT}"
    if driver is None:
        if granted in (None, "", "-1", "NoDevFiles"):
            return "run on a GPU node with a GPU granted (sbatch --gpus=1; the profile sets it from resources.*.gpu)"
        return "this node has no NVIDIA driver loaded: ask your admins, or set resources.*.gpu: 0 to run on CPUs"
    needed = required_driver(torch_cuda)
    if needed and driver_major(driver) < needed:
        return (f"driver {driver} is older than CUDA {torch_cuda} needs (>= {needed}): install a torch build "
                f"for your driver, e.g. {SETUP_HINT}")
    return "check `nvidia-smi` on the node and that CUDA_VISIBLE_DEVICES names a GPU it lists"


def required_driver(torch_cuda: str | None) -> int | None:
    """The oldest driver major version a torch build for `torch_cuda` ('13.0') needs, where known."""
    if not torch_cuda:
        return None
    return MIN_DRIVER.get(int(torch_cuda.split(".")[0]))


def driver_major(version: str) -> int:
    return int(version.split(".")[0])


def driver_version() -> str | None:
    """The NVIDIA kernel driver's version ('580.65.06'), or None when no driver can be read."""
    try:
        with open("/proc/driver/nvidia/version") as handle:
            found = re.search(r"Kernel Module\s+(?:for \S+\s+)?(\d+\.\d+(?:\.\d+)?)", handle.read())
        if found:
            return found.group(1)
    except OSError:
        pass
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10, check=True).stdout.split()
        return out[0] if out else None
    except (OSError, subprocess.SubprocessError):
        return None


def node_name() -> str:
    return os.environ.get("SLURMD_NODENAME") or socket.gethostname()


def describe(device) -> str:
    """The device as provenance records it: 'cpu', or 'cuda (NVIDIA H100 80GB HBM3)'."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return device.type


def add_option(parser) -> None:
    parser.add_argument("--device", default="auto", choices=CHOICES,
                        help="default: the GPU when there is one (the workflow passes cuda or cpu from its resources)")


def add_batch_option(parser) -> None:
    """--batch-size for a command that only runs forward passes (vitpeft.evaluation.knn.EVAL_BATCH by default)."""
    parser.add_argument("--batch-size", type=int, default=None,
                        help="images per forward pass (default: 64 on the CPU, 256 on a GPU; another size can move the "
                        "last bits of a score)")
