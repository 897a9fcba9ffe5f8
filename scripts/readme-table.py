"""Rewrite the demo tables of README.md from the references (between their markers).

    python scripts/readme-table.py     (`make demo-reference` and `make demo-continual-reference` run it;
                                        tests/test_docs.py fails while a table and its reference differ)

The demo's table is reference/demo/table.md's; the task-sequence demo's is the
first table of reference/demo-continual/summary.md.
"""

from pathlib import Path

from vitpeft.report import compare

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
# marker name -> (reference folder, what the markers say they hold)
BLOCKS = {
    "demo-table": ("demo", "reference/demo/table.md"),
    "continual-table": ("demo-continual", "the first table of reference/demo-continual/summary.md"),
}


def markers(name: str) -> tuple[str, str]:
    return (f"<!-- {name}:begin (scripts/readme-table.py writes this table from {BLOCKS[name][1]}) -->",
            f"<!-- {name}:end -->")


def table(name: str) -> str:
    """The table a block holds, read from its reference."""
    reference = ROOT / "reference" / BLOCKS[name][0]
    if name == "demo-table":
        return compare.markdown_table(reference)
    return compare.first_table(reference / "summary.md")


def main() -> None:
    text = README.read_text()
    for name in BLOCKS:
        begin, end = markers(name)
        head, rest = text.split(begin)
        _, tail = rest.split(end)
        text = f"{head}{begin}\n{table(name)}{end}{tail}"
    README.write_text(text)


if __name__ == "__main__":
    main()
