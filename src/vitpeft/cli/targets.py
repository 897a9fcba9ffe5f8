"""Target dataset subcommands: list-targets, download-target, prepare-target."""

import re

from vitpeft.data import catalogue
from vitpeft.data import targets
from vitpeft.errors import VitpeftError

MD5 = re.compile(r"^([^=]+)=([0-9a-fA-F]{32})$")


def register(subparsers) -> None:
    _register_list(subparsers)
    _register_download(subparsers)
    _register_prepare(subparsers)


def _add_md5(parser) -> None:
    parser.add_argument(
        "--md5", action="append", default=[], metavar="FILE=MD5",
        help="expected md5 of FILE in place of torchvision's (a mirror serving re-packed files); repeatable",
    )  # fmt: skip


def _md5s(pairs: list) -> dict:
    parsed = [MD5.match(pair) for pair in pairs]
    bad = [pair for pair, match in zip(pairs, parsed) if not match]
    if bad:
        raise VitpeftError(f"--md5 takes FILE=MD5 with 32 hex digits, got {bad[0]!r}")
    return {match[1]: match[2].lower() for match in parsed}


def _register_list(subparsers) -> None:
    parser = subparsers.add_parser("list-targets", help="the target datasets: classes, splits, stored size, source")
    parser.set_defaults(func=_list)


def _list(args) -> int:
    print("| dataset | torchvision | classes | splits | stored as | obtained | terms | page |")
    print("|---|---|---|---|---|---|---|---|")
    for name, target in catalogue.REGISTRY.items():
        side = target.native or catalogue.DEFAULT_SIZE
        stored = f"{side}x{side} native" if target.native else f"{side}x{side} squash (--size)"
        splits = " / ".join(target.splits) + (" (as present)" if target.classes is None else "")
        obtained = "download" if target.download else "placed by you"
        row = [name, target.torchvision, target.classes or "yours", splits, stored, obtained, target.terms, target.page]
        print("| " + " | ".join(map(str, row)) + " |")
    return 0


def _register_download(subparsers) -> None:
    parser = subparsers.add_parser(
        "download-target", help="download a target dataset with torchvision's code and md5 checks",
        description="Download DATASET into ROOT with torchvision's own download and md5 checks. ROOT appears "
        "only once every file arrived and passed; if ROOT exists, its files are checked instead.",
    )  # fmt: skip
    parser.add_argument("--dataset", required=True, help=f"one of {', '.join(catalogue.REGISTRY)}")
    parser.add_argument("--root", required=True, help="folder to download into (e.g. data/downloads/NAME)")
    parser.add_argument("--mirror", help="base URL that replaces the dataset's own (its files under their usual names)")
    _add_md5(parser)
    parser.set_defaults(func=_download)


def _download(args) -> int:
    root = targets.download(args.dataset, args.root, mirror=args.mirror, md5s=_md5s(args.md5))
    print(f"{args.dataset}: {root} holds every file torchvision reads, checked")
    return 0


def _register_prepare(subparsers) -> None:
    parser = subparsers.add_parser(
        "prepare-target", help="decode a target dataset's official splits once into OUT/train, OUT/val, OUT/test",
        description="Read DATASET's official splits from ROOT with torchvision's class, check its class count, "
        "decode every image once and write OUT/train, OUT/test and, where the dataset has one, OUT/val "
        "(all or nothing). CIFAR and STL-10 keep their native size; other images are squashed (no crop) "
        "to SIZE x SIZE with PIL's bicubic filter.",
    )  # fmt: skip
    parser.add_argument("--dataset", required=True, help=f"one of {', '.join(catalogue.REGISTRY)}")
    parser.add_argument("--root", required=True, help="the downloaded (or placed) dataset")
    parser.add_argument("--out", required=True, help="folder to write (one store folder per split inside)")
    parser.add_argument(
        "--size", type=int, default=None,
        help=f"side of the stored squares, bicubic squash (default {catalogue.DEFAULT_SIZE}); "
        "CIFAR and STL-10 keep their native size",
    )  # fmt: skip
    parser.add_argument("--workers", type=int, default=None, help="decoding processes (default: CPUs, at most 16)")
    _add_md5(parser)
    parser.set_defaults(func=_prepare)


def _prepare(args) -> int:
    counts = targets.prepare(args.dataset, args.root, args.out, args.size, md5s=_md5s(args.md5), workers=args.workers)
    print(f"wrote {args.out}: " + ", ".join(f"{n} {split}" for split, n in counts.items()) + " images")
    return 0
