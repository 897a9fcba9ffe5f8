"""The `vitpeft` command line: `main` here, one module per subcommand beside it (vitpeft.cli.<x>).

The top stage: it may import every other; nothing imports it.
"""

import argparse
import contextlib
import importlib
import sys

from vitpeft.cli import warm
from vitpeft.errors import VitpeftError
from vitpeft.training import kernels, resume

# Each module defines register(subparsers); a subcommand sets `func` to its runner.
COMMAND_MODULES = [
    "params", "train", "evaluate", "interpolate", "data", "demo", "report", "compare", "check", "targets", "backbones",
    "sequence", "warm", "bits",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vitpeft", description=__doc__)
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(f"vitpeft.cli.{name}").register(subparsers)
    return parser


def main(argv=None) -> int:
    kernels.pin_environment()  # before anything loads torch: its libraries read the pins at their first call
    if argv is None and (status := warm.delegate(sys.argv[1:])) is not None:
        return status  # run by a warm server (`vitpeft warm`): same work, without loading torch again
    args = build_parser().parse_args(argv)
    try:
        with _resumable(args):
            return args.func(args) or 0
    except VitpeftError as error:
        print(f"vitpeft {args.command}: error: {error}", file=sys.stderr)
        return 2
    except resume.Preempted as stopped:  # an evaluation asked to stop (training's commands say it themselves)
        print(f"vitpeft {args.command}: {stopped}", file=sys.stderr)
        return resume.EXIT_PREEMPTED


def _resumable(args):
    """An evaluation given --resume-dir runs with resumable image passes (vitpeft.evaluation.passes)."""
    if not (getattr(args, "resumable_passes", False) and args.resume_dir):
        return contextlib.nullcontext()
    from vitpeft.cli.evaluate import passes_folder
    from vitpeft.evaluation import passes

    return passes.resumable(passes_folder(args))

