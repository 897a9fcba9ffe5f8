"""Which device a command runs on: the GPU when there is one, unless told otherwise."""

from vitpeft.errors import VitpeftError

CHOICES = ["auto", "cpu", "cuda"]


def pick(name=None):
    """'auto' (or None) -> CUDA when available, else CPU; asking for CUDA without one is an error."""
    import torch  # here, so that `vitpeft --help` and the option parsing never load torch

    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise VitpeftError("--device cuda was asked for, but no CUDA device is available")
    return device


def add_option(parser) -> None:
    parser.add_argument("--device", default="auto", choices=CHOICES, help="default: the GPU when there is one")
