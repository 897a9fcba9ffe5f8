"""`vitpeft check`: a preflight of everything a real run of a config needs."""

import sys


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "check",
        help="check data, checkpoint, free disk and the SLURM profile before a real run",
        description="Check what a real run of CONFIG needs: the config and its methods against the model, the "
        "target datasets, ImageNet (source.imagenet_dir), the backbone checkpoint, free disk for what the run "
        "will write, the SLURM profile's partition, GPUs, MinJobAge and warning signal against the rules' "
        "runtimes, and with --gpu this node's GPU. One line per check; exit 2 if any check FAILs.",
    )
    parser.add_argument("--config", default="config/config.yaml", help="workflow config (default config/config.yaml)")
    parser.add_argument("--profile", default="slurm/config.yaml", help="SLURM profile (default slurm/config.yaml)")
    parser.add_argument("--gpu", action="store_true", default=None,
                        help="also check this node's GPU: driver vs torch's CUDA build, bf16 support, free memory "
                             "vs the largest job (run it on a GPU node: srun --gpus=1 vitpeft check --gpu); "
                             "on by itself inside a job granted GPUs")
    parser.set_defaults(func=run)


def run(args) -> int:
    from vitpeft.check import FAIL, run_checks

    findings = run_checks(args.config, args.profile, args.gpu)
    for finding in findings:
        print(finding.line())
    failed = [finding for finding in findings if finding.status == FAIL]
    if failed:
        print(f"vitpeft check: {len(failed)} check(s) failed", file=sys.stderr)
        return 2
    return 0
