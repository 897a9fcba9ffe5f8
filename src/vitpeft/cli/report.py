"""`vitpeft report`: the tables, the per-run rows and the plots from the metrics files the study's plan names."""

from pathlib import Path


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "report",
        help="build the results tables, the figures and the runtimes",
        description="Read the metrics file of every run the config plans (and of the untouched backbone), "
        "write OUT/table.md, table.csv, table.tex, table.html (each with its notes), per_seed.csv, index.csv, "
        "tradeoff.png, cost.png (source kept against training FLOPs); with curve.steps curve.csv and curve.png; with interpolation interpolation.csv and "
        "interpolation.png (every figure also as PDF); runtimes.csv and runtimes.html from OUT/benchmarks/; then "
        "PROVENANCE, listing every file read with its sha256 (older report-*.json beside it are removed). Prints "
        "the Markdown table.",
    )
    parser.add_argument("--config", required=True, help="workflow config YAML (paths in it are relative to here)")
    parser.add_argument("--out", required=True, help="folder to write the report files into (results/<name>)")
    parser.add_argument(
        "--provenance", required=True, help="JSON file to write last (results/<name>/provenance/report-<key>.json)"
    )
    parser.set_defaults(func=run)


def run(args) -> int:
    from vitpeft.study import config
    from vitpeft.models import shapes
    from vitpeft.study import preflight
    from vitpeft.report import provenance, tables
    from vitpeft.study.plan import Plan

    preflight.writable(args.out, "--out")
    preflight.writable(Path(args.provenance).parent, "--provenance")
    plan = Plan(config.load(args.config, describe=shapes.describe))
    print(provenance.write(tables.build(plan), args.out, args.provenance, args.config, plan))
    return 0
