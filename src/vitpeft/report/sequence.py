"""A task sequence's report: the accuracy matrix, the continual-learning measures, heatmaps.

R[i][j] is the top-1 accuracy (%) on task j after training step i (tasks
1..T); column 0 is the source domain's k-NN (row 0: the pretrained backbone).
Per experiment and seed, over the tasks only (the source has its own column):

- ACC, average accuracy: (1/T) sum_j R[T][j].
- BWT, backward transfer (Lopez-Paz & Ranzato, GEM, NeurIPS 2017; as in
  aimagelab/mammoth utils/metrics.py): 1/(T-1) sum_{j<T} (R[T][j] - R[j][j]).
- Forgetting as Chaudhry et al. define it (RWalk, ECCV 2018; Mammoth,
  LAMDA-PILOT): f_j = max_{l<T} R[l][j] - R[T][j], averaged over j < T (the
  max over the steps l >= j, where task j has a score).
- Forgetting as Avalanche computes it (evaluation/metrics/forgetting_bwt.py):
  accuracy right after training on task j minus the final one, R[j][j] -
  R[T][j], averaged over j < T: the negative of BWT, and never above
  Chaudhry's (the max includes R[j][j]). Side by side because the toolboxes disagree.
- Source retention after each step: R[i][0]; and its drop R[0][0] - R[T][0].

Mean ± sample std over seeds. Torch-free; matplotlib only when drawing.

Every input is read and checked, and every output made in memory, before the
first file is replaced: a missing or damaged input ends in one line naming the
file and the fix, and leaves the previous report as it was.
"""

import csv
import io
import math
import statistics
from pathlib import Path

from vitpeft import digests
from vitpeft.errors import VitpeftError
from vitpeft.fileio import atomic_path, write_json
from vitpeft.report import pages, provenance, runtimes
from vitpeft.study.sequence import SOURCE

MEASURES = ("acc", "bwt", "forgetting_chaudhry", "forgetting_avalanche")
ROUTER = ("routing", "routed", "task_id")


# ---------------------------------------------------------------- the measures (R: rows 1..T, tasks 1..T, 0-based)


def _check(matrix) -> int:
    count = len(matrix)
    if count < 2 or any(len(row) < i + 1 for i, row in enumerate(matrix)):
        raise VitpeftError(f"an accuracy matrix needs T >= 2 rows, row i scoring tasks 1..i; got {count} rows")
    return count


def average_accuracy(matrix) -> float:
    last = _check(matrix) - 1
    return sum(matrix[last][: last + 1]) / (last + 1)


def backward_transfer(matrix) -> float:
    last = _check(matrix) - 1
    return sum(matrix[last][j] - matrix[j][j] for j in range(last)) / last


def forgetting_chaudhry(matrix) -> float:
    last = _check(matrix) - 1
    return sum(max(matrix[l][j] for l in range(j, last)) - matrix[last][j] for j in range(last)) / last


def forgetting_avalanche(matrix) -> float:
    last = _check(matrix) - 1
    return sum(matrix[j][j] - matrix[last][j] for j in range(last)) / last


def measures(matrix) -> dict:
    return {"acc": average_accuracy(matrix), "bwt": backward_transfer(matrix),
            "forgetting_chaudhry": forgetting_chaudhry(matrix), "forgetting_avalanche": forgetting_avalanche(matrix)}


# ---------------------------------------------------------------- reading the study


INPUTS = {  # what each input is, and the command that writes it
    "step": ("step metrics", "vitpeft eval-step"),
    "router": ("router metrics", "vitpeft route"),
    "source": ("source metrics", "vitpeft eval-source"),
}


def read_input(path: str, kind: str) -> dict:
    """One JSON object the report reads, or one VitpeftError naming the file and the fix."""
    what, writer = INPUTS[kind]
    try:  # digests.read_json: valid JSON, an object, its recorded sha256 matching
        return digests.read_json(path, fix=f"delete it and rerun the workflow (`{writer}`)")
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise VitpeftError(f"{what} missing: {path}; `{writer}` writes it (run the workflow first)") from None
    except digests.Corrupt as error:
        raise VitpeftError(f"{what} {error}") from None


def figure(parsed: dict, path: str, *keys):
    """parsed[keys[0]][keys[1]]...: a finite number, else one error naming the file and the key."""
    value = parsed
    for key in keys:
        value = value.get(key) if isinstance(value, dict) else None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise VitpeftError(f"{path}: expected a number under {'.'.join(keys)!r}, found {value!r}; delete the file and "
                           "rerun the workflow")
    return float(value)


def matrices(plan) -> dict:
    """{(experiment, seed): {"tasks": T x T list (None above the diagonal), "source": [row 0 .. T]}}."""
    seq = plan.sequence
    node = plan.pretrained_source
    pretrained = figure(read_input(node.path, "source"), node.path, "top1") if node else None
    found = {}
    for (experiment, seed), chain in seq.chains.items():
        rows, source = [], [pretrained]
        for step in chain:
            path = step.metrics.path
            row = read_input(path, "step")
            rows.append([figure(row, path, "tasks", task) if j < step.index else None
                         for j, task in enumerate(seq.tasks)])
            source.append(figure(row, path, "source", "top1") if row.get("source") is not None else None)
        found[(experiment, seed)] = {"tasks": rows, "source": source}
    return found


def _mean_std(values) -> tuple:
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


def summary(plan, found: dict) -> list:
    """One row per experiment: measures, source after each step, router; mean and std over seeds."""
    seq = plan.sequence
    rows = []
    for experiment in dict.fromkeys(e for e, _ in seq.chains):
        seeds = [s for e, s in seq.chains if e == experiment]
        per_seed = [found[(experiment, s)] for s in seeds]
        row = {"experiment": experiment, "variant": seq.chains[(experiment, seeds[0])][0].variant, "seeds": len(seeds)}
        for name in MEASURES:
            row[name], row[f"{name}_std"] = _mean_std([measures(m["tasks"])[name] for m in per_seed])
        for i in range(len(seq.tasks) + 1):
            row[f"source_{i}"], row[f"source_{i}_std"] = _mean_std([m["source"][i] for m in per_seed])
        routers = [seq.routers[(experiment, s)].path for s in seeds if (experiment, s) in seq.routers]
        routers = {path: read_input(path, "router") for path in routers}
        for name in ROUTER:
            scores = [figure(router, path, "mean", name) for path, router in routers.items()]
            row[f"router_{name}"], row[f"router_{name}_std"] = _mean_std(scores)
        rows.append(row)
    return rows


# ---------------------------------------------------------------- writing


def write(plan, record, config_path=None) -> dict:
    """matrix.csv, summary.csv, summary.md, summary.html, heatmap-<experiment>.png and .pdf, runtimes.csv and
    runtimes.html, then the keyed record; returns the paths.

    All of them are made before the first is written, so a bad input leaves the previous report whole.
    """
    seq = plan.sequence
    folder = Path(seq.folder)
    found = matrices(plan)
    rows = summary(plan, found)
    text = markdown(plan, found, rows)
    made = {"matrix.csv": matrix_csv(plan, found), "summary.csv": _csv(rows), "summary.md": text.encode(),
            "summary.html": html(plan, found, rows).encode()}
    for experiment in seq.experiments():
        made[f"heatmap-{experiment}.png"], made[f"heatmap-{experiment}.pdf"] = heatmap(plan, found, experiment)
    jobs = runtimes.collect(Path(plan.results) / "benchmarks", seq.keys(), set(seq.tasks))
    made["runtimes.csv"] = jobs.to_csv(index=False, float_format="%.4f").encode()
    made["runtimes.html"] = runtimes.html(jobs, f"{plan.name}: runtimes of the task sequence's jobs").encode()
    for name, data in made.items():
        with atomic_path(folder / name) as tmp:
            tmp.write_bytes(data)
    steps = [step for chain in seq.chains.values() for step in chain]
    write_json(record, {"name": plan.name, "config": provenance.config_record(config_path), "report_key": seq.report.key,
                        "tasks": seq.tasks, "metrics": [step.metrics.path for step in steps],
                        "routers": [node.path for node in seq.routers.values()],
                        **provenance.computed_by(step.train.path for step in steps)})
    for stale in Path(record).parent.glob("sequence-*.json"):
        if stale.name != Path(record).name:
            stale.unlink()  # it described an earlier version of the sequence
    return {"folder": str(folder), "summary": text}


def matrix_csv(plan, found: dict) -> bytes:
    """The matrix in long format: experiment, seed, step, trained_on, column, accuracy."""
    seq = plan.sequence
    lines = [["experiment", "seed", "step", "trained_on", "column", "accuracy"]]
    for (experiment, seed), m in found.items():
        for i in range(len(seq.tasks) + 1):
            trained_on = seq.tasks[i - 1] if i else "pretrained"
            lines.append([experiment, seed, i, trained_on, SOURCE, _cell(m["source"][i])])
            for j, task in enumerate(seq.tasks):
                lines.append([experiment, seed, i, trained_on, task, _cell(m["tasks"][i - 1][j] if i else None)])
    handle = io.StringIO(newline="")
    csv.writer(handle).writerows(lines)
    return handle.getvalue().encode()


def _csv(rows: list) -> bytes:
    handle = io.StringIO(newline="")
    writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows([{k: _cell(v) for k, v in row.items()} for row in rows])
    return handle.getvalue().encode()


def summary_text(written: dict) -> str:
    return written["summary"]


def _cell(value):
    return "" if value is None else round(value, 4) if isinstance(value, float) else value


def _pm(mean, std) -> str:
    if mean is None:
        return "–"
    return f"{mean:.2f}" if std is None or math.isnan(std) else f"{mean:.2f} ± {std:.2f}"


def mean_matrix(plan, found: dict, experiment: str) -> list:
    """Rows 0..T, columns [source, task 1..T]: the mean over seeds (None where nothing is scored)."""
    seq = plan.sequence
    seeds = [found[(e, s)] for e, s in seq.chains if e == experiment]
    table = []
    for i in range(len(seq.tasks) + 1):
        row = [_mean_std([m["source"][i] for m in seeds])[0]]
        row += [_mean_std([m["tasks"][i - 1][j] if i else None for m in seeds])[0] for j in range(len(seq.tasks))]
        table.append(row)
    return table


def summary_rows(plan, rows: list) -> tuple:
    """(headers, cells) of the summary table: the measures, the source after each step, the router."""
    steps = len(plan.sequence.tasks) + 1
    headers = ["experiment", "variant", "ACC", "BWT", "forgetting (Chaudhry)", "forgetting (Avalanche)",
               *[f"source after {i}" for i in range(steps)], "routing", "routed", "task id"]
    cells = []
    for row in rows:
        line = [row["experiment"], row["variant"]] + [_pm(row[m], row[f"{m}_std"]) for m in MEASURES]
        line += [_pm(row[f"source_{i}"], row[f"source_{i}_std"]) for i in range(steps)]
        cells.append(line + [_pm(row[f"router_{n}"], row[f"router_{n}_std"]) for n in ROUTER])
    return headers, cells


def matrix_rows(plan, found: dict, rows: list) -> tuple:
    """(headers, cells) of every experiment's mean accuracy matrix, one line per step."""
    headers = ["experiment", "step", SOURCE, *plan.sequence.tasks]
    cells = [[row["experiment"], str(i), *[_pm(v, None) for v in values]]
             for row in rows for i, values in enumerate(mean_matrix(plan, found, row["experiment"]))]
    return headers, cells


def titles(plan, rows: list) -> tuple:
    """(the summary's title, the matrix's caption)."""
    seq, seeds = plan.sequence, rows[0]["seeds"]
    return (f"Task sequence {' -> '.join(seq.tasks)}: mean ± std over {seeds} seed{'s' * (seeds > 1)}",
            "Accuracy matrix R[i][j] (%), mean over seeds: row i = after step i (0 = pretrained), "
            f"column 0 = source k-NN, then {', '.join(seq.tasks)}.")


def markdown(plan, found: dict, rows: list) -> str:
    title, caption = titles(plan, rows)
    lines = [f"## {title}", ""]
    lines += _markdown_table(*summary_rows(plan, rows)) + ["", caption, ""]
    lines += _markdown_table(*matrix_rows(plan, found, rows))
    return "\n".join(lines) + "\n"


def _markdown_table(headers: list, cells: list) -> list:
    return ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)] + ["| " + " | ".join(line) + " |"
                                                                                for line in cells]


def html(plan, found: dict, rows: list) -> str:
    """summary.html: the summary, the definitions, and every experiment's accuracy matrix."""
    title, caption = titles(plan, rows)
    definitions = (
        "ACC = (1/T) sum_j R[T][j]; BWT = 1/(T-1) sum_{j<T} (R[T][j] - R[j][j]); forgetting (Chaudhry) = mean over "
        "j<T of max_{l<T} R[l][j] - R[T][j]; forgetting (Avalanche) = mean over j<T of R[j][j] - R[T][j]; source "
        "after i = R[i][0], the source k-NN after step i (0 = the pretrained backbone); routing, routed, task id: the "
        "router without the task id (per-task experiments; – where there is none): the share of images sent to "
        "their own domain, end-to-end accuracy with the router, and with the task id given."
    )
    return pages.page(title, "\n".join([
        pages.table(*summary_rows(plan, rows)), pages.notes([definitions]), pages.heading("Accuracy matrix"),
        pages.notes([caption]), pages.table(*matrix_rows(plan, found, rows)),
    ]))


def heatmap(plan, found: dict, experiment: str) -> tuple:
    """heatmap_figure as PNG and PDF bytes (no date inside the PDF, so reruns match)."""
    fig = heatmap_figure(plan, found, experiment)
    png, pdf = io.BytesIO(), io.BytesIO()
    fig.savefig(png, format="png", dpi=110)
    fig.savefig(pdf, format="pdf", metadata={"CreationDate": None})
    return png.getvalue(), pdf.getvalue()


def heatmap_figure(plan, found: dict, experiment: str):
    """The mean accuracy matrix of one experiment, annotated, with its colour bar."""
    import numpy as np
    from matplotlib.figure import Figure

    seq = plan.sequence
    values = np.array([[np.nan if v is None else v for v in row] for row in mean_matrix(plan, found, experiment)])
    fig = Figure(figsize=(1.6 + 1.3 * values.shape[1], 1.2 + 0.6 * values.shape[0]))
    ax = fig.subplots()
    image = ax.imshow(values, vmin=0, vmax=100, cmap="viridis")
    fig.colorbar(image, ax=ax, label="accuracy (%)", shrink=0.9)
    for (i, j), value in np.ndenumerate(values):
        if not np.isnan(value):
            ax.text(j, i, f"{value:.1f}", ha="center", va="center", color="white" if value < 60 else "black", fontsize=8)
    ax.set_xticks(range(values.shape[1]), [SOURCE, *seq.tasks], rotation=20, fontsize=8)
    ax.set_yticks(range(values.shape[0]), ["pretrained", *[f"after {i}" for i in range(1, values.shape[0])]], fontsize=8)
    ax.set_title(f"{experiment}: accuracy (%) after each step", fontsize=9)
    fig.tight_layout()
    return fig
