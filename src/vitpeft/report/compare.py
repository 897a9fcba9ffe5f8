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
report key differs), each run's CPU-kernel record where both have them
("kernels": whether the libraries ran the pinned paths, as MKL and ATen report
them, and why not; torch, threads, oneDNN, NNPACK, the CPU) and the code that
made them ("code": version, commit, modified). A mismatch is a finding, not an
error; a reference or table that cannot be read is (one line).
"""

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from vitpeft import code_version
from vitpeft.errors import VitpeftError

# What can be compared, by file name: its row keys and the provenance record its report writes beside it.
KINDS = {
    "table.csv": {"keys": ("dataset", "experiment"), "provenance": "report-*.json", "by": "`vitpeft report`"},
    "summary.csv": {"keys": ("experiment",), "provenance": "sequence-*.json", "by": "`vitpeft sequence-report`"},
}
DERIVED = "diff_"  # ours - paper: follows from the cells beside it
STD = "_std"
GENERIC_REASONS = [
    "a CPU without AVX2, or not x86-64: the pinned kernels need AVX2, other CPUs compute in their own order",
    "MKL refusing the pinned branch (it reports which it ran: `vitpeft check-bits --reference <folder>` says it)",
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
    """Compare `table` (a report's table.csv or a sequence's summary.csv) with the file of the same name in the
    `reference` folder; the reasons from both provenances."""
    table, reference = Path(table), Path(reference)
    kind = _kind(table)
    yours = read_table(table, "your table", kind["keys"])
    theirs_provenance = _reference_provenance(reference)
    theirs = read_table(reference / table.name, "the reference's table", kind["keys"])
    comparison = Comparison(str(table), str(reference))
    columns = _cells(next(iter(yours.values())), kind["keys"]), _cells(next(iter(theirs.values())), kind["keys"])
    comparison.unmatched += _one_sided("column", columns[0], columns[1])
    label = _labels([*yours, *theirs])
    comparison.unmatched += _one_sided("row", [label[key] for key in yours], [label[key] for key in theirs])
    for key in (key for key in yours if key in theirs):
        for column in (column for column in columns[0] if column in columns[1]):
            mine, ref = _cell(yours[key], column), _cell(theirs[key], column)
            comparison.cells += 1
            if mine != ref:
                comparison.differences.append(Difference(label[key], column, mine, ref))
    if not comparison.matches():
        comparison.reasons = reasons(_your_provenance(table, kind), theirs_provenance)
    return comparison


def _kind(table: Path) -> dict:
    if table.name not in KINDS:
        raise VitpeftError(f"{table}: compare reads a report's table.csv or a task sequence's summary.csv, "
                           f"not {table.name}")
    return KINDS[table.name]


def _labels(keys: list) -> dict:
    """Row names as a reader says them: the experiment, with its dataset where a table has several."""
    several = len({key[0] for key in keys}) > 1 and len(keys[0]) > 1
    return {key: " / ".join(key) if several else key[-1] for key in keys}


def _one_sided(what: str, yours: list, theirs: list) -> list:
    return [f"{what} {name}: only in yours" for name in yours if name not in theirs] + [
        f"{what} {name}: only in the reference" for name in theirs if name not in yours
    ]


def read_table(path: Path, what: str, keys=KINDS["table.csv"]["keys"]) -> dict:
    """{keys: {column: text}} of a report's table; one line naming the file if it cannot be read as one."""
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise VitpeftError(f"{what} {path} does not exist") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise VitpeftError(f"{what} {path} cannot be read as CSV ({str(error).strip()})") from None
    missing = [key for key in keys if key not in frame.columns]
    if missing or frame.empty:
        found = f"no {' and no '.join(map(repr, missing))} column" if missing else "no rows"
        raise VitpeftError(f"{what} {path} is not a report's {path.name}: {found}")
    return {tuple(row[key] for key in keys): row for row in frame.to_dict("records")}


def _cells(row: dict, keys) -> list:
    """A table's cells per row: every column but the keys, the derived ones and the stds (shown with their figure)."""
    return [column for column in row if column not in keys and not column.startswith(DERIVED)
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


def _your_provenance(table: Path, kind: dict) -> dict | str:
    """The provenance of the report beside `table` (its newest record); a sentence where there is none."""
    folder = table.parent / "provenance"
    found = sorted(folder.glob(kind["provenance"]), key=lambda path: path.stat().st_mtime_ns)
    if not found:
        return (f"your report has no provenance ({folder}/{kind['provenance'].replace('*', '<key>')}): "
                f"it was not written by a finished {kind['by']}, so what made it is unknown")  # fmt: skip
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
    found += kernels + _code_reasons(yours.get("code"), theirs.get("code"))
    if not found:
        found = ["both ran the pinned kernels as MKL and ATen report them, with the same torch, threads and code: the "
                 "difference comes from outside the pin (a package other than torch: compare `pip freeze` with "
                 "requirements.lock)" + _cpus(yours.get("kernels"), theirs.get("kernels"))]
    return found


def _config_reasons(yours: dict, theirs: dict) -> list:
    if yours.get("report_key") == theirs.get("report_key"):
        return []  # the same plan, every run's key included: the config cannot be the cause

    def named(record):
        config = record.get("config") or {}
        return (f"{config.get('path', '?')} (sha256 {str(config.get('sha256', '?'))[:12]}, "
                f"report key {record.get('report_key', '?')})")  # fmt: skip

    return [f"the reference is from another config: yours is {named(yours)}, the reference's {named(theirs)}; "
            "only a reference made from the same config can match"]  # fmt: skip


KERNEL_FACTS = (("mkl_branch", "MKL's CNR branch (as MKL reports it)"), ("aten_capability", "ATen's capability"),
                ("torch", "the torch version"), ("threads", "the intra-op thread count"),
                ("mkldnn", "whether oneDNN (mkldnn) is on"), ("nnpack", "whether NNPACK is on"),
                ("vector_math", "what computed exp, log, sqrt, erfinv and tanh"))  # fmt: skip


def _kernel_reasons(yours, theirs) -> list | None:
    """What the runs' CPU-kernel records say; None where either report has none."""
    if not isinstance(yours, list) or not isinstance(theirs, list):
        return None
    yours, theirs = [r for r in yours if isinstance(r, dict)], [r for r in theirs if isinstance(r, dict)]
    found = []
    for who, records in (("your", yours), ("the reference's", theirs)):
        unpinned = [record for record in records if not record.get("reference_bits")]
        for why in dict.fromkeys(record.get("why_not") or "no reason recorded" for record in unpinned):
            found.append(f"{who} runs did not run the pinned kernels: {why}")
    for key, what in KERNEL_FACTS:
        mine, ref = _values(yours, key), _values(theirs, key)
        if mine and ref and mine != ref:
            found.append(f"{what} differs: yours {', '.join(mine)}, the reference's {', '.join(ref)}")
    return found


def _code_reasons(yours, theirs) -> list:
    """Other code made the reference (another commit, or a modified checkout): named, with both versions."""
    if not isinstance(yours, list) or not isinstance(theirs, list):
        return []
    words = lambda records: ", ".join(code_version.words(r) for r in records if isinstance(r, dict))  # noqa: E731
    if yours == theirs and not any(isinstance(r, dict) and r.get("modified") for r in yours):
        return []
    return [f"the reference is from other code: yours ran {words(yours) or 'unrecorded code'}, the reference "
            f"{words(theirs) or 'unrecorded code'}; a change between them can move the figures"]


def _cpus(yours, theirs) -> str:
    """'; the CPUs differ: ...' where the records name different CPUs (context: under the pin, not a cause)."""
    mine, ref = _cpu_names(yours), _cpu_names(theirs)
    if not mine or not ref or mine == ref:
        return ""
    return f"; the CPUs differ: yours {', '.join(mine)}, the reference's {', '.join(ref)}"


def _cpu_names(records) -> list:
    cpus = [record.get("cpu") for record in records or [] if isinstance(record, dict)]
    return sorted({f"{cpu.get('vendor')} {cpu.get('model')}" for cpu in cpus if isinstance(cpu, dict)})


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


def first_table(path) -> str:
    """The first Markdown table of the file at `path` (a sequence's summary.md: the measures), for the README."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        raise VitpeftError(f"{path} does not exist; `make demo-continual-reference` writes it") from None
    start = next((i for i, line in enumerate(lines) if line.startswith("|")), None)
    if start is None:
        raise VitpeftError(f"{path} holds no Markdown table")
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    return "\n".join(lines[start:end]) + "\n"
