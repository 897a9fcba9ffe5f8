"""`vitpeft report`: the table (md, csv, tex) and the stability-plasticity plot from the metrics files."""


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "report",
        help="build the results table and trade-off plot",
        description="Collect METRICS/<exp>/{target,source}.json and RUNS/<exp>/summary.json for every experiment "
        "of the config (plus METRICS/pretrained), write OUT/table.md, table.csv, table.tex and tradeoff.png, "
        "and print the Markdown table.",
    )
    parser.add_argument("--config", required=True, help="workflow config YAML")
    parser.add_argument("--metrics", required=True, help="folder of per-experiment metrics (results/<cfg>/metrics)")
    parser.add_argument("--runs", required=True, help="folder of run folders (results/<cfg>/runs)")
    parser.add_argument("--out", required=True, help="folder to write the report files into")
    parser.set_defaults(func=run)


def run(args) -> int:
    from vitpeft import config, report

    table = report.build_table(config.load(args.config), args.metrics, args.runs)
    print(report.write_report(table, args.out))
    return 0
