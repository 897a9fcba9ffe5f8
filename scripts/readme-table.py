"""Rewrite the demo table of README.md from reference/demo/table.md (between its demo-table markers).

    python scripts/readme-table.py     (`make demo-reference` runs it; tests/test_docs.py fails while the two differ)
"""

from pathlib import Path

from vitpeft.report import compare

ROOT = Path(__file__).resolve().parents[1]
README, REFERENCE = ROOT / "README.md", ROOT / "reference" / "demo"
BEGIN = "<!-- demo-table:begin (scripts/readme-table.py writes this table from reference/demo/table.md) -->"
END = "<!-- demo-table:end -->"


def main() -> None:
    text = README.read_text()
    head, rest = text.split(BEGIN)
    _, tail = rest.split(END)
    README.write_text(f"{head}{BEGIN}\n{compare.markdown_table(REFERENCE)}{END}{tail}")


if __name__ == "__main__":
    main()
