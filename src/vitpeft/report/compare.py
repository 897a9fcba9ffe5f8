"""A report's table against a reference: cell by cell, exactly, and the likely reasons where they differ.

A reference is a folder holding what a finished study wrote: `table.csv` and
`table.md` as the report wrote them, and `provenance.json`, a copy of its
`provenance/report-<key>.json` (`make demo-reference` writes reference/demo/).

Cells are the CSV's text, so "matches" means the same figures to the last digit
the report keeps (4 decimals). A figure and its `_std` are one cell, shown
"mean ± std"; a differing one says how far its mean moved. The `diff_*` columns
are left out: each follows from the figure beside it and the paper's, so a
changed figure is listed once. Rows are matched by (dataset, experiment).

The likely reasons come from the two provenance records: another config (the
report key differs), and each run's CPU-kernel record where both have them
("kernels": pinned or not and why, torch, threads, oneDNN). A mismatch is a
finding, not an error; a reference or table that cannot be read is (one line).
"""

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from vitpeft.errors import VitpeftError

KEYS = ("dataset", "experiment")
DERIVED = "diff_"  # ours - paper: follows from the cells beside it
STD = "_std"
GENERIC_REASONS = [
    "a CPU without AVX2, or not x86-64: the pinned kernels need AVX2, other CPUs compute in their own order",
    "other package versions than requirements.lock's (`make setup` installs exactly those; torch above all)",
    "the CPU pin turned off (VITPEFT_CPU_PIN=0, or the config's reproducibility.cpu_pin: false)",
]


@dataclass
class Difference:
    row: str
    column: str
    yours: str  # the cell's text, "" where blank
    reference: str

    def line(self) -> str:
        delta = _delta(self.yours, self.reference)
        moved = "" if delta is None else f", difference {delta:+.4f}"
        yours, reference = self.yours or "(blank)", self.reference or "(blank)"
        return f"{self.row}, {self.column}: yours {yours}, reference {reference}{moved}"


@dataclass
class Comparison:
    table: str
    reference: str
    cells: int = 0  # cells compared: the rows and columns both tables have
    differences: list = field(default_factory=list)  # Difference per differing cell
    unmatched: list = field(default_factory=list)  # "row X: only in yours", "column Y: only in the reference"
    reasons: list = field(default_factory=list)

    def matches(self) -> bool:
        return not self.differences and not self.unmatched

    def text(self) -> str:
        if self.matches():
            return f"{self.table} matches the reference {self.reference} exactly ({self.cells} cells)."
        count = f" in {len(self.differences)} of {self.cells} cells" if self.differences else ""
        lines = [f"{self.table} differs from the reference {self.reference}{count}:"]
        lines += [f"  {line}" for line in self.unmatched]
        lines += [f"  {difference.line()}" for difference in self.differences]
        lines.append("Likely reasons:")
        lines += [f"  - {reason}" for reason in self.reasons]
        return "\n".join(lines)


def compare(table, reference) -> Comparison:
    """Compare the table.csv at `table` with the one in the `reference` folder; the reasons from both provenances."""
    table, reference = Path(table), Path(reference)
    yours = read_table(table, "your table")
    theirs_provenance = _reference_provenance(reference)
    theirs = read_table(reference / "table.csv", "the reference's table")
    comparison = Comparison(str(table), str(reference))
    columns = _cells(next(iter(yours.values()))), _cells(next(iter(theirs.values())))
    comparison.unmatched += _one_sided("column", columns[0], columns[1])
    several = len({dataset for dataset, _ in (*yours, *theirs)}) > 1
    label = {key: f"{key[0]} / {key[1]}" if several else key[1] for key in (*yours, *theirs)}
    comparison.unmatched += _one_sided("row", [label[key] for key in yours], [label[key] for key in theirs])
    for key in (key for key in yours if key in theirs):
        for column in (column for column in columns[0] if column in columns[1]):
            mine, ref = _cell(yours[key], column), _cell(theirs[key], column)
            comparison.cells += 1
            if mine != ref:
                comparison.differences.append(Difference(label[key], column, mine, ref))
    if not comparison.matches():
        comparison.reasons = reasons(_your_provenance(table), theirs_provenance)
    return comparison


def _one_sided(what: str, yours: list, theirs: list) -> list:
    return [f"{what} {name}: only in yours" for name in yours if name not in theirs] + [
        f"{what} {name}: only in the reference" for name in theirs if name not in yours
    ]


def read_table(path: Path, what: str) -> dict:
    """{(dataset, experiment): {column: text}} of a report's table.csv; one line naming the file if it cannot be."""
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise VitpeftError(f"{what} {path} does not exist") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise VitpeftError(f"{what} {path} cannot be read as CSV ({str(error).strip()})") from None
    missing = [key for key in KEYS if key not in frame.columns]
    if missing or frame.empty:
        found = f"no {' and no '.join(map(repr, missing))} column" if missing else "no rows"
        raise VitpeftError(f"{what} {path} is not a report's table.csv: {found}")
    return {(row["dataset"], row["experiment"]): row for row in frame.to_dict("records")}


def _cells(row: dict) -> list:
    """A table's cells per row: every column but the keys, the derived ones and the stds (shown with their figure)."""
    return [column for column in row if column not in KEYS and not column.startswith(DERIVED)
            and not (column.endswith(STD) and column[: -len(STD)] in row)]  # fmt: skip


def _cell(row: dict, column: str) -> str:
    """'mean ± std' for a figure with a std, its text otherwise."""
    std = row.get(column + STD, "")
    return f"{row[column]} ± {std}" if std else row[column]


def _delta(yours: str, reference: str) -> float | None:
    """How far the mean moved (the figure before ' ± '); None unless both are numbers."""
    try:
        delta = float(yours.split(" ± ")[0]) - float(reference.split(" ± ")[0])
    except ValueError:
        return None
    return delta if math.isfinite(delta) else None


# ---------------------------------------------------------------- the likely reasons


def _reference_provenance(reference: Path) -> dict:
    if not reference.is_dir():
        raise VitpeftError(f"the reference folder {reference} does not exist; the repository has reference/demo "
                           "(`make demo-reference` writes it from a finished demo)")
    path = reference / "provenance.json"
    try:
        record = json.loads(path.read_text())
    except (FileNotFoundError, IsADirectoryError):
        raise VitpeftError(f"the reference {reference} has no provenance.json; `make demo-reference` writes it") \
            from None
    except (ValueError, UnicodeDecodeError) as error:
        raise VitpeftError(f"the reference's {path} is not valid JSON ({error})") from None
    if not isinstance(record, dict):
        raise VitpeftError(f"the reference's {path}: expected a JSON object, found {type(record).__name__}")
    return record


def _your_provenance(table: Path) -> dict | str:
    """The provenance of the report beside `table` (its newest report-*.json); a sentence where there is none."""
    found = sorted((table.parent / "provenance").glob("report-*.json"), key=lambda path: path.stat().st_mtime_ns)
    if not found:
        return (f"your report has no provenance ({table.parent / 'provenance'}/report-<key>.json): "
                "it was not written by a finished `vitpeft report`, so what made it is unknown")  # fmt: skip
    try:
        record = json.loads(found[-1].read_text())
    except (ValueError, UnicodeDecodeError):
        return f"your report's provenance {found[-1]} is not valid JSON: what made the report is unknown"
    return record if isinstance(record, dict) else f"your report's provenance {found[-1]} is not a JSON object"


def reasons(yours, theirs: dict) -> list:
    """Why two tables differ, from their provenance records (`yours` may be a sentence: no record)."""
    if isinstance(yours, str):
        return [yours, *GENERIC_REASONS]
    found = _config_reasons(yours, theirs)
    kernels = _kernel_reasons(yours.get("kernels"), theirs.get("kernels"))
    if kernels is None:  # a record lacks them: name what usually makes the difference
        records = [who for who, record in (("your report", yours), ("the reference", theirs))
                   if not isinstance(record.get("kernels"), list)]  # fmt: skip
        have = "has" if len(records) == 1 else "have"
        return [*found, f"{' and '.join(records)} {have} no record of the CPU kernels (made before vitpeft recorded "
                        "them): whether the pin was on cannot be told", *GENERIC_REASONS]
    if not kernels and not found:
        kernels = ["both ran with the pinned kernels, the same torch and threads: the difference comes from outside "
                   "the pin (another version of a package other than torch, or a CPU the pin does not cover)"]
    return [*found, *kernels]


def _config_reasons(yours: dict, theirs: dict) -> list:
    if yours.get("report_key") == theirs.get("report_key"):
        return []  # the same plan, every run's key included: the config cannot be the cause

    def named(record):
        config = record.get("config") or {}
        return (f"{config.get('path', '?')} (sha256 {str(config.get('sha256', '?'))[:12]}, "
                f"report key {record.get('report_key', '?')})")  # fmt: skip

    return [f"the reference is from another config: yours is {named(yours)}, the reference's {named(theirs)}; "
            "only a reference made from the same config can match"]  # fmt: skip


def _kernel_reasons(yours, theirs) -> list | None:
    """What the runs' CPU-kernel records say; None where either report has none."""
    if not isinstance(yours, list) or not isinstance(theirs, list):
        return None
    yours, theirs = [r for r in yours if isinstance(r, dict)], [r for r in theirs if isinstance(r, dict)]
    found = []
    for who, records in (("your", yours), ("the reference's", theirs)):
        unpinned = [record for record in records if not record.get("reference_bits")]
        for why in dict.fromkeys(record.get("why_not") or "no reason recorded" for record in unpinned):
            found.append(f"{who} runs did not use the pinned kernels: {why}")
    for key, what in (("torch", "the torch version"), ("threads", "the intra-op thread count"),
                      ("mkldnn", "whether oneDNN (mkldnn) is on")):
        mine, ref = _values(yours, key), _values(theirs, key)
        if mine and ref and mine != ref:
            found.append(f"{what} differs: yours {', '.join(mine)}, the reference's {', '.join(ref)}")
    return found


def _values(records: list, key: str) -> list:
    return sorted({str(record[key]) for record in records if key in record})


# ---------------------------------------------------------------- the README's copy


def markdown_table(reference) -> str:
    """The table of the reference's table.md (its notes after the first blank line left out), for the README."""
    path = Path(reference) / "table.md"
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise VitpeftError(f"the reference {reference} has no table.md; `make demo-reference` writes it") from None
    return text.split("\n\n", 1)[0].rstrip("\n") + "\n"
