"""Which spec a command works on: a spec file, or one run of a workflow config.

`--spec FILE` reads a spec as written (the run folder's spec.yaml is one);
`--config C --experiment E [--dataset D] [--seed S]` resolves it from a study's
config exactly as the workflow planned it (`pretrained` is the untouched
backbone); `--key K` refuses to work when the config no longer plans that run.
"""

from vitpeft.errors import VitpeftError


def add_options(parser) -> None:
    chosen = parser.add_argument_group("which run (give --spec, or --config with --experiment)")
    chosen.add_argument("--spec", metavar="FILE", help="experiment spec YAML (e.g. RUN/spec.yaml)")
    chosen.add_argument("--config", metavar="C", help="workflow config YAML of the study")
    chosen.add_argument("--experiment", metavar="E", help="experiment name in the config ('pretrained': the untouched backbone)")
    chosen.add_argument("--dataset", metavar="D", help="target dataset (default: the config's first)")
    chosen.add_argument("--seed", metavar="S", type=int, help="seed (default: the config's first)")
    chosen.add_argument("--key", metavar="K", help="the run's planned key; refuse if the config plans another")


def _check_run_spec(spec, run) -> None:
    """A run folder's spec.yaml (`--spec RUN/spec.yaml`) is checked against the run's digests before it is read."""
    from pathlib import Path

    from vitpeft import digests

    folder = Path(spec).resolve().parent
    if (run is not None and folder == Path(run).resolve()) or (folder / digests.MANIFEST).is_file():
        digests.verify(folder, [Path(spec).name])


def spec_from(args) -> dict:
    """The resolved spec the arguments name, or one VitpeftError saying which arguments are missing."""
    from vitpeft.study import spec as spec_lib

    if args.spec and args.config:
        raise VitpeftError("give --spec or --config, not both")
    if args.spec:
        _check_run_spec(args.spec, getattr(args, "run", None))
        return spec_lib.load(args.spec)
    if not (args.config and args.experiment):
        raise VitpeftError("say which run: --spec FILE, or --config C --experiment E [--dataset D] [--seed S]")
    from vitpeft.study import config
    from vitpeft.models import shapes
    from vitpeft.study.plan import PRETRAINED, Plan

    plan = Plan(config.load(args.config, describe=shapes.describe))
    dataset = args.dataset or next(iter(plan.targets))
    if dataset not in plan.targets:
        raise VitpeftError(f"--dataset {dataset}: not in {args.config} (target.datasets: {', '.join(plan.targets)})")
    if args.experiment == PRETRAINED:
        return plan.pretrained_spec(dataset)
    seed = args.seed if args.seed is not None else plan.cfg["seeds"][0]
    return plan.find(dataset, args.experiment, seed, args.key).spec
