"""The report on disk: every file written atomically, index.csv (where each run lives), then the provenance record.

provenance/report-<key>.json names the config (path and sha256), the report key
and every input read with its sha256; it is written last, so it exists only
beside a whole report, and older report-*.json beside it are removed.
"""

import hashlib
import json
from pathlib import Path

import pandas as pd

from vitpeft import code_version, digests
from vitpeft.fileio import atomic_path, write_json
from vitpeft.report import runtimes
from vitpeft.report.plots import cost_figure, curve_figure, interpolation_figure, tradeoff_figure
from vitpeft.report.tables import CURVE_COLUMNS, INDEX_COLUMNS, INTERPOLATION_COLUMNS, Report, _counts, html, latex, \
    markdown
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
    _write_text(out_dir / "table.html", html(report, f"{plan.name}: the results table"))
    _write_csv(out_dir / "per_seed.csv", report.per_seed)
    _write_csv(out_dir / "index.csv", index(plan, config_path))
    _write_figure(out_dir / "tradeoff.png", tradeoff_figure(report))
    _write_figure(out_dir / "cost.png", cost_figure(report))
    if report.curve is not None:
        several = report.table["dataset"].nunique() > 1
        _write_csv(out_dir / "curve.csv", report.curve if several else report.curve[CURVE_COLUMNS])
        _write_figure(out_dir / "curve.png", curve_figure(report))
    if report.interpolation is not None:
        several = report.table["dataset"].nunique() > 1
        columns = INTERPOLATION_COLUMNS if several else INTERPOLATION_COLUMNS[1:]
        _write_csv(out_dir / "interpolation.csv", report.interpolation[columns])
        _write_figure(out_dir / "interpolation.png", interpolation_figure(report))
    jobs = runtimes.collect(out_dir / "benchmarks", plan.grid_keys(), set(plan.targets))
    _write_csv(out_dir / "runtimes.csv", jobs)
    _write_text(out_dir / "runtimes.html", runtimes.html(jobs, f"{plan.name}: runtimes of the grid's jobs"))
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
            "interpolation": run.interpolation.path if run.interpolation else "",
            "wise": run.wise.path if run.wise else "",
        })  # fmt: skip
    frame = _counts(pd.DataFrame(rows, columns=INDEX_COLUMNS))
    frame["config"] = str(config_path)
    return frame


def write_provenance(path, report: Report, config_path, plan) -> None:
    """Every input read with its sha256, the config, the report key, and what computed the runs: their kernels and
    code (and the report's own code); older report-*.json beside it go."""
    path, config_path = Path(path), Path(config_path)
    for stale in path.parent.glob("report-*.json"):
        if stale.name != path.name:
            stale.unlink()  # it described an earlier version of the study
    write_json(path, {
        "name": plan.name,
        "config": config_record(config_path),
        "report_key": plan.report.key,
        "inputs": report.inputs,
        **computed_by(run.train.path for run in plan.runs.values()),
    })  # fmt: skip


def config_record(config_path) -> dict:
    if config_path is None:
        return {"path": None, "sha256": None}
    return {"path": str(config_path), "sha256": hashlib.sha256(Path(config_path).read_bytes()).hexdigest()}


def computed_by(run_folders) -> dict:
    """The distinct kernel records (vitpeft.training.kernels) and code records (vitpeft.code_version) of the training
    runs in `run_folders`, the report's own code added: for `vitpeft compare` to tell a pin turned off, another torch
    or other code from a broken install."""
    found = {"kernels": [], "code": []}
    for folder in run_folders:
        summary = Path(folder) / "summary.json"
        if not summary.is_file():
            continue
        digests.verify(folder, [summary.name])
        record = json.loads(summary.read_text())
        for key, records in found.items():
            if record.get(key) is not None and record[key] not in records:
                records.append(record[key])
    if code_version.describe() not in found["code"]:
        found["code"].append(code_version.describe())
    return found


def _write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def _write_csv(path: Path, frame: pd.DataFrame) -> None:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, float_format="%.4f")


def _write_figure(path: Path, fig) -> None:
    """The figure as PNG at `path`, and as PDF beside it (vector, for a paper; no date inside, so reruns match)."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=130, format="png")
    with atomic_path(path.with_suffix(".pdf")) as tmp:
        fig.savefig(tmp, format="pdf", metadata={"CreationDate": None})
