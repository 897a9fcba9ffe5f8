"""`vitpeft compare`: a report's table against a reference, cell by cell; `make demo` ends with it."""


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "compare",
        help="compare a report's table.csv with a reference's, cell by cell (make demo ends with it)",
        description="Compare TABLE with REFERENCE/table.csv cell by cell (a figure and its std are one cell) and "
        "print either that it matches the reference exactly, or one line per differing cell (row, column, yours, "
        "the reference's, the difference of the means) and the likely reasons, judged from the report's "
        "provenance (TABLE's folder/provenance/report-<key>.json) and REFERENCE/provenance.json: another config, "
        "unpinned CPU kernels, another torch or thread count. A mismatch exits 0; a reference or table that "
        "cannot be read exits 2.",
    )
    parser.add_argument("--table", required=True, help="your report's table.csv (results/demo/table.csv)")
    parser.add_argument(
        "--reference", required=True, help="the reference folder: table.csv, table.md, provenance.json (reference/demo)"
    )
    parser.set_defaults(func=run)


def run(args) -> int:
    from vitpeft.report import compare

    print(compare.compare(args.table, args.reference).text())
    return 0
