"""How long every job of a study took: Snakemake's benchmark files (results/<name>/benchmarks/), tabulated.

Every rule writes one benchmark file per job, named after its output's key (or,
for a download, its dataset). A report reads the files of the jobs its plan
holds now (`keys`, `names`): files of older keys lie beside them and are left
out. They live under results/, so they travel with `dvc pull`, unlike
Snakemake's own records. A report's own job is not among them: it is still
running when it writes the table.
"""

import re
from pathlib import Path

import pandas as pd

KEY = re.compile(r"(?<![0-9a-z])[0-9a-f]{12}(?![0-9a-z])")
JOB_COLUMNS = ["rule", "job", "seconds", "cpu_seconds", "max_rss_mb"]


def collect(folder, keys: set, names: set) -> pd.DataFrame:
    """One row per job (JOB_COLUMNS): its rule, its benchmark file's name under `folder`, wall and CPU seconds, peak
    memory. A file counts when every key in its name is in `keys`, or, with none, when a part of it is in `names`."""
    folder, rows = Path(folder), []
    for path in sorted(folder.rglob("*.tsv")) if folder.is_dir() else []:
        relative = path.relative_to(folder).with_suffix("")
        found = KEY.findall(str(relative))
        if not (set(found) <= keys if found else names & {*relative.parts, relative.stem}):
            continue
        rows.append({"rule": rule_of(relative), "job": str(relative), **_figures(path)})
    return pd.DataFrame(rows, columns=JOB_COLUMNS)


def rule_of(relative: Path) -> str:
    """A benchmark file's rule: its first folder (eval_source/...), or its name before the key (report-<key>)."""
    return relative.parts[0] if len(relative.parts) > 1 else KEY.sub("", relative.name).rstrip("-")


def _figures(path: Path) -> dict:
    """Wall seconds, CPU seconds and peak RSS (MB) of a benchmark file's first run; NaN where unreadable."""
    try:
        first = pd.read_csv(path, sep="\t").iloc[0]
    except (ValueError, IndexError, OSError, pd.errors.ParserError):
        first = pd.Series(dtype=float)
    number = lambda name: pd.to_numeric(first.get(name), errors="coerce")  # noqa: E731  ("-" where not measured)
    return {"seconds": number("s"), "cpu_seconds": number("cpu_time"), "max_rss_mb": number("max_rss")}


def by_rule(jobs: pd.DataFrame) -> pd.DataFrame:
    """Per rule: jobs, total, mean and longest wall seconds, total CPU seconds, peak RSS; the costliest first."""
    groups = jobs.groupby("rule")
    summary = pd.DataFrame({
        "jobs": groups.size(), "total_seconds": groups["seconds"].sum(), "mean_seconds": groups["seconds"].mean(),
        "max_seconds": groups["seconds"].max(), "cpu_seconds": groups["cpu_seconds"].sum(min_count=1),
        "max_rss_mb": groups["max_rss_mb"].max(),
    })  # fmt: skip
    return summary.sort_values("total_seconds", ascending=False).reset_index()


def html(jobs: pd.DataFrame, title: str) -> str:
    """runtimes.html: the rules' summary, then every job, with what the figures are."""
    from vitpeft.report import pages

    rules = by_rule(jobs)
    note = (f"{len(jobs)} jobs of {len(rules)} rules, from Snakemake's benchmark files (wall and CPU seconds, peak "
            "resident memory in MB of the job's process; under `vitpeft warm` memory and CPU count the small client "
            "process, not the job). The report's own job is not listed: it was running when this was written.")
    return pages.page(title, "\n".join([
        pages.notes([note]), pages.heading("Per rule"), _html_table(rules), pages.heading("Per job"), _html_table(jobs),
    ]))


def _html_table(frame: pd.DataFrame) -> str:
    from vitpeft.report import pages

    cells = [["" if pd.isna(value) else f"{value:.1f}" if isinstance(value, float) else str(value) for value in row]
             for row in frame.itertuples(index=False)]  # fmt: skip
    return pages.table(list(frame.columns), cells)
