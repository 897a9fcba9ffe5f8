"""The `vitpeft` command line: one subcommand module per concern (vitpeft.commands.*)."""

import argparse
import importlib
import sys

from vitpeft.errors import VitpeftError

# Each module defines register(subparsers); a subcommand sets `func` to its runner.
COMMAND_MODULES = ["params", "train", "evaluate", "data", "demo", "report", "check", "targets", "backbones"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vitpeft", description=__doc__)
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(f"vitpeft.commands.{name}").register(subparsers)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except VitpeftError as error:
        print(f"vitpeft {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
