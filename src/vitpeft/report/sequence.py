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
"""

import csv
import math
import statistics
from pathlib import Path

from vitpeft.errors import VitpeftError
from vitpeft.fileio import atomic_path, read_json, write_json
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


def matrices(plan) -> dict:
    """{(experiment, seed): {"tasks": T x T list (None above the diagonal), "source": [row 0 .. T]}}."""
    seq = plan.sequence
    pretrained = read_json(plan.pretrained_source.path)["top1"] if plan.pretrained_source else None
    found = {}
    for (experiment, seed), chain in seq.chains.items():
        rows, source = [], [pretrained]
        for step in chain:
            row = read_json(step.metrics.path)
            rows.append([row["tasks"].get(task) for task in seq.tasks])
            source.append(row["source"]["top1"] if row["source"] else None)
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
        routers = [read_json(seq.routers[(experiment, s)].path) for s in seeds if (experiment, s) in seq.routers]
        for name in ROUTER:
            row[f"router_{name}"], row[f"router_{name}_std"] = _mean_std([r["mean"][name] for r in routers])
        rows.append(row)
    return rows


# ---------------------------------------------------------------- writing


def write(plan, record, config_path=None) -> dict:
    """matrix.csv, summary.csv, summary.md, heatmap-<experiment>.png, then the keyed record; returns the paths."""
    seq = plan.sequence
    folder = Path(seq.folder)
    folder.mkdir(parents=True, exist_ok=True)
    found = matrices(plan)
    rows = summary(plan, found)
    with atomic_path(folder / "matrix.csv") as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["experiment", "seed", "step", "trained_on", "column", "accuracy"])
        for (experiment, seed), m in found.items():
            for i in range(len(seq.tasks) + 1):
                trained_on = seq.tasks[i - 1] if i else "pretrained"
                writer.writerow([experiment, seed, i, trained_on, SOURCE, _cell(m["source"][i])])
                for j, task in enumerate(seq.tasks):
                    value = m["tasks"][i - 1][j] if i else None
                    writer.writerow([experiment, seed, i, trained_on, task, _cell(value)])
    with atomic_path(folder / "summary.csv") as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows([{k: _cell(v) for k, v in row.items()} for row in rows])
    text = markdown(plan, found, rows)
    with atomic_path(folder / "summary.md") as tmp:
        tmp.write_text(text)
    for experiment in dict.fromkeys(e for e, _ in seq.chains):
        heatmap(plan, found, experiment, folder / f"heatmap-{experiment}.png")
    write_json(record, {"config": {"path": str(config_path)}, "tasks": seq.tasks,
                        "metrics": [s.metrics.path for c in seq.chains.values() for s in c],
                        "routers": [n.path for n in seq.routers.values()]})
    return {"folder": str(folder), "summary": text}


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


def markdown(plan, found: dict, rows: list) -> str:
    seq = plan.sequence
    tasks = " -> ".join(seq.tasks)
    seeds = rows[0]["seeds"]
    lines = [f"## Task sequence {tasks}: mean ± std over {seeds} seed{'s' * (seeds > 1)}", "",
             "| experiment | variant | ACC | BWT | forgetting (Chaudhry) | forgetting (Avalanche) | "
             + " | ".join(f"source after {i}" for i in range(len(seq.tasks) + 1))
             + " | routing | routed | task id |",
             "|---|---|" + "---|" * (4 + len(seq.tasks) + 1 + 3)]
    for row in rows:
        cells = [row["experiment"], row["variant"]] + [_pm(row[m], row[f"{m}_std"]) for m in MEASURES]
        cells += [_pm(row[f"source_{i}"], row[f"source_{i}_std"]) for i in range(len(seq.tasks) + 1)]
        cells += [_pm(row[f"router_{n}"], row[f"router_{n}_std"]) for n in ROUTER]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Accuracy matrix R[i][j] (%), mean over seeds: row i = after step i (0 = pretrained), "
              f"column 0 = source k-NN, then {', '.join(seq.tasks)}.", ""]
    header = "| experiment | step | " + " | ".join([SOURCE, *seq.tasks]) + " |"
    lines += [header, "|---|---|" + "---|" * (len(seq.tasks) + 1)]
    for row in rows:
        for i, values in enumerate(mean_matrix(plan, found, row["experiment"])):
            lines.append(f"| {row['experiment']} | {i} | " + " | ".join(_pm(v, None) for v in values) + " |")
    return "\n".join(lines) + "\n"


def heatmap(plan, found: dict, experiment: str, path) -> None:
    """The mean accuracy matrix of one experiment, annotated."""
    import numpy as np
    from matplotlib.figure import Figure

    seq = plan.sequence
    values = np.array([[np.nan if v is None else v for v in row] for row in mean_matrix(plan, found, experiment)])
    fig = Figure(figsize=(1.6 + 1.3 * values.shape[1], 1.2 + 0.6 * values.shape[0]))
    ax = fig.subplots()
    ax.imshow(values, vmin=0, vmax=100, cmap="viridis")
    for (i, j), value in np.ndenumerate(values):
        if not np.isnan(value):
            ax.text(j, i, f"{value:.1f}", ha="center", va="center", color="white" if value < 60 else "black", fontsize=8)
    ax.set_xticks(range(values.shape[1]), [SOURCE, *seq.tasks], rotation=20, fontsize=8)
    ax.set_yticks(range(values.shape[0]), ["pretrained", *[f"after {i}" for i in range(1, values.shape[0])]], fontsize=8)
    ax.set_title(f"{experiment}: accuracy (%) after each step", fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
