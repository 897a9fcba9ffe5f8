"""The report on disk: every file written atomically, index.csv (where each run lives), then the provenance record.

provenance/report-<key>.json names the config (path and sha256), the report key
and every input read with its sha256; it is written last, so it exists only
beside a whole report, and older report-*.json beside it are removed.
"""

import hashlib
import json
from pathlib import Path

import pandas as pd

from vitpeft.fileio import atomic_path, write_json
from vitpeft.report.plots import curve_figure, tradeoff_figure
from vitpeft.report.tables import CURVE_COLUMNS, INDEX_COLUMNS, INTERPOLATION_COLUMNS, Report, _counts, latex, markdown
from vitpeft.study.plan import PRETRAINED


def write(report: Report, out_dir, provenance, config_path, plan) -> str:
    """Write every report file under `out_dir`, then the provenance file (last: it marks the report done).

    Returns the Markdown table.
    """
    out_dir = Path(out_dir)
    text = markdown(report)
    _write_text(out_dir / "table.md", text)
    _write_csv(out_dir / "table.csv", report.table)
    _write_text(out_dir / "table.tex", latex(report))
    _write_csv(out_dir / "per_seed.csv", report.per_seed)
    _write_csv(out_dir / "index.csv", index(plan, config_path))
    _write_figure(out_dir / "tradeoff.png", tradeoff_figure(report))
    if report.curve is not None:
        several = report.table["dataset"].nunique() > 1
        _write_csv(out_dir / "curve.csv", report.curve if several else report.curve[CURVE_COLUMNS])
        _write_figure(out_dir / "curve.png", curve_figure(report))
    if report.interpolation is not None:
        several = report.table["dataset"].nunique() > 1
        columns = INTERPOLATION_COLUMNS if several else INTERPOLATION_COLUMNS[1:]
        _write_csv(out_dir / "interpolation.csv", report.interpolation[columns])
    write_provenance(provenance, report, config_path, plan)
    return text


def index(plan, config_path) -> pd.DataFrame:
    """Where each planned run and score of the study lives now: run folders hold keys no one can guess, and
    folders of older keys stay beside them. One row per run, and one per dataset for the untouched backbone."""
    rows = []
    for dataset, node in plan.pretrained_target.items():
        source = plan.pretrained_source.path if plan.pretrained_source else ""
        rows.append({"dataset": dataset, "experiment": PRETRAINED, "target": node.path, "source": source})
    for run in plan.runs.values():
        source = plan.source_metrics(run)
        rows.append({
            "dataset": run.dataset, "experiment": run.experiment, "seed": run.seed, "key": run.train.key,
            "run": run.train.path, "spec": f"{run.train.path}/spec.yaml", "target": run.target.path,
            "source": source.path if source else "", "curve": run.curve.path if run.curve else "",
        })  # fmt: skip
    frame = _counts(pd.DataFrame(rows, columns=INDEX_COLUMNS))
    frame["config"] = str(config_path)
    return frame


def write_provenance(path, report: Report, config_path, plan) -> None:
    """Every input read with its sha256, the config and the report key; older report-*.json beside it go."""
    path, config_path = Path(path), Path(config_path)
    for stale in path.parent.glob("report-*.json"):
        if stale.name != path.name:
            stale.unlink()  # it described an earlier version of the study
    write_json(path, {
        "name": plan.name,
        "config": {"path": str(config_path), "sha256": hashlib.sha256(config_path.read_bytes()).hexdigest()},
        "report_key": plan.report.key,
        "inputs": report.inputs,
        "kernels": run_kernels(plan),
    })  # fmt: skip


def run_kernels(plan) -> list:
    """The distinct CPU/GPU kernel records of the study's training runs (vitpeft.training.kernels), for
    `vitpeft compare` to tell a pin turned off or another torch from a broken install."""
    records = []
    for run in plan.runs.values():
        summary = Path(run.train.path) / "summary.json"
        record = json.loads(summary.read_text()).get("kernels") if summary.is_file() else None
        if record is not None and record not in records:
            records.append(record)
    return records


def _write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def _write_csv(path: Path, frame: pd.DataFrame) -> None:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, float_format="%.4f")


def _write_figure(path: Path, fig) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=130, format="png")
