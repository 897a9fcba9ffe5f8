"""Rewrite the key table of config/README.md from the schema (between its keys:begin and keys:end markers).

    python scripts/config-keys.py          (tests/test_config.py fails while the two differ)
"""

from pathlib import Path

from vitpeft.study import schema

README = Path(__file__).resolve().parents[1] / "config" / "README.md"
BEGIN, END = "<!-- keys:begin (scripts/config-keys.py writes this table) -->", "<!-- keys:end -->"


def main() -> None:
    text = README.read_text()
    head, rest = text.split(BEGIN)
    _, tail = rest.split(END)
    README.write_text(f"{head}{BEGIN}\n{schema.key_table()}{END}{tail}")


if __name__ == "__main__":
    main()
