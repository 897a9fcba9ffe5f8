"""`vitpeft check-bits`: will this machine reproduce a reference's bits? Seconds before a demo spends minutes."""

import sys


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "check-bits",
        help="run a fixed computation of a few seconds and say whether this machine reproduces a reference's bits",
        description="Run the kernel check (vitpeft.training.kernel_check: MKL's GEMM, ATen's kernels and a few SGD "
        "steps of a tiny ViT on inputs made from integers) under the pinned CPU kernels, and compare its digests "
        "with REFERENCE/kernel-check.json. Prints one line: this machine reproduces the reference's bits, or it "
        "will not, and why (MKL's branch, ATen's capability, torch, or the part whose bits moved). `make demo` "
        "starts with it. A mismatch exits 0 (the workflow still runs); a reference that cannot be read exits 2. "
        "--write makes this machine's digests the reference's (`make demo-reference`).",
    )
    parser.add_argument("--reference", required=True, help="the reference folder (reference/demo)")
    parser.add_argument("--threads", type=int, default=1,
                        help="intra-op threads, as the reference's jobs ran (default 1: every demo job's)")
    parser.add_argument("--write", action="store_true", help="write REFERENCE/kernel-check.json from this machine")
    parser.set_defaults(func=run)


def run(args) -> int:
    from vitpeft.errors import VitpeftError
    from vitpeft.training import kernel_check

    if args.threads < 1:
        raise VitpeftError(f"--threads must be at least 1, not {args.threads}")
    theirs = None if args.write else kernel_check.read(args.reference)  # an unreadable reference: before any work
    found = kernel_check.run(args.threads)
    if args.write:
        print(f"vitpeft check-bits: wrote {kernel_check.write(args.reference, found)}", file=sys.stderr)
        return 0
    print(f"vitpeft check-bits: {kernel_check.verdict(found, theirs, args.reference).line}")
    return 0
