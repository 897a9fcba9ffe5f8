"""Task-sequence subcommands: make-synthetic-task, train-step, eval-step, route, sequence-report.

Each names its job by (--config, --experiment, --seed, --step) as the workflow
planned it (vitpeft.study.sequence) and refuses a --key the config no longer plans.
"""

import sys

from vitpeft.digests import write_json
from vitpeft.cli.evaluate import resumable_option
from vitpeft.errors import VitpeftError
from vitpeft.training import devices, resume


def register(subparsers) -> None:
    task = subparsers.add_parser(
        "make-synthetic-task", help="write one of the demo's further synthetic task domains",
        description="Generate a synthetic task domain (synthetic_orientation, synthetic_hue) from the config's "
        "`synthetic` section: OUT/train and OUT/test, atomically.")
    task.add_argument("--config", required=True, help="workflow config YAML (its `synthetic` section)")
    task.add_argument("--task", required=True, help="the domain's name")
    task.add_argument("--out", required=True, help="folder to write (appears whole or not at all)")
    task.set_defaults(func=_make_task)

    train = subparsers.add_parser(
        "train-step", help="train one step of a task sequence",
        description="Train step N of an experiment's task sequence (from the previous step's weights for the "
        "shared variants; refused when they are missing or belong to another config) into RUN_DIR; resumable "
        f"like `vitpeft train` (SIGTERM/SIGUSR1 checkpoint and exit {resume.EXIT_PREEMPTED}).")
    _which(train)
    train.add_argument("--out", required=True, metavar="RUN_DIR")
    train.add_argument("--resume-dir", default=".resume", metavar="DIR")
    devices.add_option(train)
    train.set_defaults(func=_train_step)

    score = subparsers.add_parser(
        "eval-step", help="one row of a task sequence's accuracy matrix",
        description="After step N: top-1 on the test set of every task seen so far, and the source domain's k-NN.")
    _which(score)
    _scoring(score)
    score.set_defaults(func=_eval_step)

    router = subparsers.add_parser(
        "route", help="route a mixed test stream to per-task adapters without the task id",
        description="Nearest class prototype on the pretrained features: routing and end-to-end accuracy per "
        "domain (every task's test set and the source queries), and the same with the task id given.")
    _which(router, step=False)
    _scoring(router)
    router.set_defaults(func=_route)

    report = subparsers.add_parser(
        "sequence-report", help="the accuracy matrix, its measures and heatmaps",
        description="matrix.csv, summary.csv, summary.md, summary.html, heatmap-<experiment>.png and .pdf, "
        "runtimes.csv and runtimes.html in the study's results/<name>/sequence/, and the keyed provenance record "
        "RECORD.")
    report.add_argument("--config", required=True)
    report.add_argument("--record", required=True, metavar="RECORD")
    report.set_defaults(func=_report)


def _which(parser, step=True) -> None:
    parser.add_argument("--config", required=True, help="workflow config YAML with a `sequence` section")
    parser.add_argument("--experiment", required=True)
    parser.add_argument("--seed", type=int, required=True)
    if step:
        parser.add_argument("--step", type=int, required=True, help="1-based")
    parser.add_argument("--key", help="the planned key; refused if the config plans another")


def _scoring(parser) -> None:
    parser.add_argument("--out", required=True, metavar="JSON")
    parser.add_argument("--pretrained-features", metavar="DIR", default=None,
                        help="the untouched backbone's source features (`vitpeft extract-features`), when they match")
    devices.add_batch_option(parser)
    resumable_option(parser)
    devices.add_option(parser)


def _plan(config_path):
    from vitpeft.models import shapes
    from vitpeft.study import config
    from vitpeft.study.plan import Plan

    plan = Plan(config.load(config_path, describe=shapes.describe))
    if plan.sequence is None:
        raise VitpeftError(f"{config_path} has no `sequence` section")
    return plan


def _make_task(args) -> int:
    from vitpeft.data import synthetic
    from vitpeft.fileio import atomic_path
    from vitpeft.study import config

    cfg = config.load(args.config)
    splits = synthetic.make_task(args.task, cfg["synthetic"])
    with atomic_path(args.out) as tmp:
        synthetic.write_task(splits, tmp, args.task)
    print(f"vitpeft make-synthetic-task: wrote {args.out} ({len(splits[0])} train / {len(splits[1])} test)",
          file=sys.stderr)
    return 0


def _train_step(args) -> int:
    from vitpeft.study import spec as spec_lib
    from vitpeft.training.train import train

    plan = _plan(args.config)
    step = plan.sequence.step(args.experiment, args.seed, args.step, args.key)
    spec = spec_lib.resolve(step.spec, where=step.label)
    try:
        out = train(spec, args.out, args.resume_dir, device=args.device)
    except resume.Preempted as stopped:
        print(f"vitpeft train-step: {stopped}", file=sys.stderr)
        return resume.EXIT_PREEMPTED
    print(f"vitpeft train-step: wrote {out}", file=sys.stderr)
    return 0


def _eval_step(args) -> int:
    from vitpeft.evaluation.sequence import score_step

    plan = _plan(args.config)
    plan.sequence.step(args.experiment, args.seed, args.step, args.key)
    row = score_step(plan, args.experiment, args.seed, args.step, args.device, args.batch_size,
                     args.pretrained_features)
    write_json(args.out, row)
    return 0


def _route(args) -> int:
    from vitpeft.evaluation.sequence import evaluate_router

    plan = _plan(args.config)
    node = plan.sequence.routers.get((args.experiment, args.seed))
    if node is None:
        raise VitpeftError(f"no router planned for {args.experiment}/seed{args.seed}: only per-task experiments "
                           "(sequence.per_task) with the source domain enabled and sequence.router true are routed")
    if args.key is not None and args.key != node.key:
        raise VitpeftError(f"the config changed since this job was planned (key {args.key}, now {node.key})")
    write_json(args.out, evaluate_router(plan, args.experiment, args.seed, args.device, args.batch_size,
                                         args.pretrained_features))
    return 0


def _report(args) -> int:
    from vitpeft.report import sequence as report

    plan = _plan(args.config)
    written = report.write(plan, args.record, config_path=args.config)
    print(report.summary_text(written), end="")
    return 0
