"""`vitpeft train`: fine-tune one experiment spec into a run folder."""

import sys

from vitpeft.training import devices
from vitpeft.training import resume
from vitpeft.cli import specs


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "train",
        help="fine-tune one experiment",
        description=(
            "Fine-tune one experiment spec and write RUN_DIR (trainable weights, spec, log, summary, and "
            "curve/step_XXXXXX.safetensors for each of train.curve_steps). Before the first step it checks that "
            "RUN_DIR and the resume folder are writable and that their disks hold what the run will write. "
            "A killed run continues from its resume checkpoint when the same command is rerun, to the same bits; "
            f"SIGTERM/SIGUSR1 checkpoint and exit {resume.EXIT_PREEMPTED}."
        ),
    )
    specs.add_options(parser)
    parser.add_argument("--out", required=True, metavar="RUN_DIR", help="run folder to write (appears whole or not at all)")
    parser.add_argument("--resume-dir", default=".resume", metavar="DIR",
                        help="where resume checkpoints live, one folder per spec name and hash (default .resume)")
    parser.add_argument("--resume-from", default=None, metavar="PATH",
                        help="continue from this checkpoint file or folder, and the curve/ snapshots beside it "
                             "(refused if written for another spec)")
    devices.add_option(parser)
    parser.set_defaults(func=run)


def run(args) -> int:
    from vitpeft.training.train import train  # torch/timm load only when this command runs

    spec = specs.spec_from(args)
    try:
        out = train(spec, args.out, args.resume_dir, device=args.device, resume_from=args.resume_from)
    except resume.Preempted as stopped:
        print(f"vitpeft train: {stopped}", file=sys.stderr)
        return resume.EXIT_PREEMPTED
    print(f"vitpeft train: wrote {out}", file=sys.stderr)
    return 0
