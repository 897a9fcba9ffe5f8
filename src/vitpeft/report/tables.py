"""The study's report as data and text: the table (Markdown, CSV, LaTeX), every run, the forgetting curve.

It reads exactly the metrics files a `Plan` names (never a folder listing: old
outputs under other keys may lie beside them) and nothing else.

Rows: one block per target dataset (config order), the untouched backbone
(`pretrained`) first, then the experiments grouped by family as in the paper
(Standard fine-tuning, LoRA, Block Expansion). Target = top-1 of the trained
classifier (the pretrained row, which has no trained head, shows its weighted
k-NN); Source = DINO's weighted k-NN of the backbone on the pre-training
domain at the headline k; Mean = their average, the paper's ranking figure;
Routed = the source k-NN with the pretrained function switched back in (LoRA
off, new blocks skipped) where a method has it. The paper's figures and our
differences appear on the rows they describe: the `cifar100` block, or every
row when the study has a single target dataset (the demo shows them for shape).

Seeds: every figure is the mean over seeds, with the sample standard deviation
(ddof=1, blank for one seed) beside it in `<figure>_std` and as `mean ± std`
in table.md; per_seed.csv keeps every single run.

The forgetting curve (config `curve.steps`): curve.csv has the columns
experiment, seed, step, target_acc, source_acc (with a leading `dataset`
column when the study has more than one target dataset), from the curve's
steps; the source figures there are k-NN on the curve's class-balanced
subsample, so the final weights' score on that subsample is kept as
`source_acc_subsample` beside the table's. `early_source_loss` is the
paper's "fine-tuning all weights for only 10 iterations loses over 70% of the
ImageNet accuracy" as a number: the percentage of the run's own step-0 source
k-NN lost at the first curve step at or after 10 (`early_step`).

The plots are vitpeft.report.plots; the files and their provenance vitpeft.report.provenance.
"""

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from vitpeft.study import config as config_lib
from vitpeft.errors import VitpeftError
from vitpeft.study.plan import PRETRAINED

PAPER_DATASET = "cifar100"  # the target dataset the paper's figures belong to
EARLY_STEP = 10  # the paper's claim is about 10 iterations of fine-tuning
FAMILIES = {  # method -> the paper's group, in the paper's order
    "full": "Standard fine-tuning",
    "topk": "Standard fine-tuning",
    "linear": "Standard fine-tuning",
    "lora": "LoRA",
    "lora_qkv": "LoRA",
    "peft": "LoRA",
    "block_expansion": "Block Expansion",
    "lpft": "Forgetting mitigation",
    "l2sp": "Forgetting mitigation",
}
MITIGATION = "Forgetting mitigation"  # lpft, l2sp, and each interpolated experiment's best-mean alpha
FAMILY_ORDER = ["Pretrained", "Standard fine-tuning", "LoRA", "Block Expansion", MITIGATION]
AVERAGED = ["target_acc", "source_acc", "source_acc_routed", "mean", "source_acc_subsample", "early_source_loss"]
RUN_COLUMNS = [
    "dataset", "experiment", "method", "family", "seed", "key", "trainable_params", "selected_step", "target_metric",
    "target_acc", "source_acc", "source_acc_routed", "mean", "source_acc_subsample", "early_step", "early_source_loss",
]  # fmt: skip
PAPER_COLUMNS = [
    "paper_params", "paper_target_acc", "paper_source_acc", "paper_mean", "diff_target_acc", "diff_source_acc",
    "diff_mean",
]  # fmt: skip
TABLE_COLUMNS = [
    "dataset", "experiment", "method", "family", "n_seeds", "trainable_params", "target_metric",
    *[name for figure in AVERAGED[:5] for name in (figure, f"{figure}_std")],
    "early_step", "early_source_loss", "early_source_loss_std", *PAPER_COLUMNS,
]  # fmt: skip
CURVE_COLUMNS = ["experiment", "seed", "step", "target_acc", "source_acc"]
INTERPOLATION_COLUMNS = ["dataset", "experiment", "seed", "alpha", "target_acc", "source_acc"]
INDEX_COLUMNS = ["dataset", "experiment", "seed", "key", "run", "spec", "target", "source", "curve", "config"]
COUNTS = ["n_seeds", "trainable_params", "selected_step", "early_step", "seed"]  # whole numbers, blank when absent
WRITERS = {  # what each input is, and the command that writes it
    "target": ("target metrics", "vitpeft eval-target"),
    "source": ("source metrics", "vitpeft eval-source"),
    "curve": ("forgetting curve", "vitpeft eval-curve"),
    "interpolation": ("interpolation curve", "vitpeft eval-interpolation"),
    "summary": ("run summary", "vitpeft train"),
}


@dataclass
class Report:
    table: pd.DataFrame  # one row per dataset x experiment (and the untouched backbone per dataset)
    per_seed: pd.DataFrame  # one row per run
    curve: pd.DataFrame | None  # one row per run x curve step; None without curve.steps
    inputs: dict  # {path read: sha256}
    seeds: list
    early_step: int | None  # the curve step the early source loss is read at; None: no curve step >= EARLY_STEP
    interpolation: pd.DataFrame | None = None  # one row per run x alpha (INTERPOLATION_COLUMNS); None when off
    subsample_gap: float | None = None  # mean |source k-NN at alpha = 1 on the subsample - the run's full-bank one|


# ---------------------------------------------------------------- reading the metrics files


class Inputs:
    """The JSON files the report reads: each read once, its sha256 taken from the very bytes parsed."""

    def __init__(self):
        self.digests, self._parsed = {}, {}

    def read(self, path: str, kind: str) -> dict:
        what, writer = WRITERS[kind]
        if path not in self._parsed:
            try:
                data = Path(path).read_bytes()
            except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
                raise VitpeftError(f"{what} missing: {path}; `{writer}` writes it (run the workflow first)") from None
            try:
                parsed = json.loads(data)
            except ValueError as error:
                raise VitpeftError(
                    f"{what} {path} is not valid JSON ({error}); delete it and rerun the workflow (`{writer}`)"
                ) from None
            if not isinstance(parsed, dict):
                raise VitpeftError(f"{what} {path}: expected a JSON object, found {type(parsed).__name__}")
            self.digests[path], self._parsed[path] = hashlib.sha256(data).hexdigest(), parsed
        return self._parsed[path]


def _number(value, path: str, key: str, nullable: bool = False) -> float:
    """A finite number from a metrics file (NaN for an allowed null); anything else names the file and key."""
    if value is None and nullable:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise VitpeftError(
            f"{path}: expected a number under {key!r}, found {value!r}; delete the file and rerun the workflow"
        )
    return float(value)


def _source_figures(source: dict | None, path: str | None) -> tuple:
    """(k-NN accuracy, routed k-NN accuracy or NaN) at the file's headline k; NaNs with the source column off."""
    if source is None:
        return math.nan, math.nan
    k = str(source.get("headline_k", 20))
    knn, routed = source.get("knn"), source.get("routed")
    if not isinstance(knn, dict) or k not in knn:
        raise VitpeftError(f"{path}: no k-NN accuracy for the headline k={k} under 'knn'; rerun `vitpeft eval-source`")
    routed_acc = _number(routed[k], path, f"routed.{k}") if isinstance(routed, dict) and k in routed else math.nan
    return _number(knn[k], path, f"knn.{k}"), routed_acc


@dataclass(frozen=True)
class Point:
    step: int
    target_acc: float
    source_acc: float  # NaN when the curve has no source score
    final: bool  # the run's kept weights, scored on the curve's subsample


def curve_points(curve: dict, path: str, steps: list) -> list:
    """A curve file's points, checked: numbers, one final point, and exactly the planned `steps` besides."""
    points = curve.get("points")
    if not isinstance(points, list) or not points:
        raise VitpeftError(f"{path}: expected a non-empty list under 'points'; rerun `vitpeft eval-curve`")
    parsed = []
    for i, point in enumerate(points):
        where = f"points[{i}]"
        if not isinstance(point, dict):
            raise VitpeftError(f"{path}: {where} is not a JSON object; rerun `vitpeft eval-curve`")
        step = point.get("step")
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise VitpeftError(f"{path}: expected a step (a whole number >= 0) under '{where}.step', found {step!r}")
        target = _number(point.get("target_acc"), path, f"{where}.target_acc")
        source = _number(point.get("source_acc"), path, f"{where}.source_acc", nullable=True)
        parsed.append(Point(step, target, source, point.get("final") is True))
    finals = sum(point.final for point in parsed)
    if finals != 1:
        raise VitpeftError(f"{path}: expected one point with \"final\": true (the kept weights), found {finals}")
    found = sorted(point.step for point in parsed if not point.final)
    if found != steps:
        raise VitpeftError(f"{path}: curve steps {found}, but the study plans {steps}; rerun `vitpeft eval-curve`")
    return parsed


def early_step(steps: list) -> int | None:
    """The first curve step at or after EARLY_STEP (None when there is none)."""
    return next((step for step in sorted(steps) if step >= EARLY_STEP), None)


def early_source_loss(points: list) -> tuple:
    """(step, % of the step-0 source k-NN lost there) at the first curve step >= EARLY_STEP; NaN where unmeasurable."""
    source = {point.step: point.source_acc for point in points if not point.final}
    step = early_step(list(source))
    if step is None or 0 not in source:
        return math.nan, math.nan
    start = source[0]
    return step, 100 * (start - source[step]) / start if start > 0 else math.nan  # a NaN start gives NaN


# ---------------------------------------------------------------- the figures as data


def build(plan) -> Report:
    """Read every metrics file the plan names and turn them into the table, the per-run rows and the curve."""
    inputs, runs, curve = Inputs(), [], []
    for run in plan.runs.values():
        row, points = _run_row(plan, run, inputs)
        runs.append(row)
        curve += [
            {"dataset": run.dataset, "experiment": run.experiment, "seed": run.seed, "step": point.step,
             "target_acc": point.target_acc, "source_acc": point.source_acc}
            for point in sorted(points, key=lambda point: point.step) if not point.final
        ]  # fmt: skip
    pretrained = [_pretrained_row(plan, dataset, inputs) for dataset in plan.targets]
    per_seed = _counts(pd.DataFrame(runs, columns=RUN_COLUMNS))
    interpolation = _interpolation(plan, inputs) if plan.interpolates else None
    table = _summarise(per_seed, pretrained)
    if interpolation is not None:
        table = pd.concat([table, best_alpha_rows(interpolation, per_seed)], ignore_index=True)
    table = _with_paper(table, plan.cfg)
    steps = plan.curve_steps()
    curve = pd.DataFrame(curve, columns=["dataset", *CURVE_COLUMNS]) if steps else None
    table = _ordered(table, list(plan.targets))
    gap = subsample_gap(interpolation, per_seed) if interpolation is not None else None
    return Report(table, per_seed, curve, inputs.digests, list(plan.cfg["seeds"]), early_step(steps), interpolation,
                  gap)


# ---------------------------------------------------------------- interpolation (WiSE-FT) and its best alpha


def _interpolation(plan, inputs: Inputs) -> pd.DataFrame:
    """Every interpolated run's points, checked: the planned alphas exactly, in the planned order."""
    alphas, rows = list(plan.cfg["interpolation"]["alphas"]), []
    for run in plan.runs.values():
        if run.interpolation is None:
            continue
        path = run.interpolation.path
        points = inputs.read(path, "interpolation").get("points")
        found = [point.get("alpha") for point in points] if isinstance(points, list) else None
        if found != alphas or not all(isinstance(point, dict) for point in points):
            raise VitpeftError(
                f"{path}: alphas {found}, but the study plans {alphas}; rerun `vitpeft eval-interpolation`")
        rows += [{"dataset": run.dataset, "experiment": run.experiment, "seed": run.seed, "alpha": point["alpha"],
                  "target_acc": _number(point.get("target_acc"), path, f"points[{i}].target_acc"),
                  "source_acc": _number(point.get("source_acc"), path, f"points[{i}].source_acc", nullable=True)}
                 for i, point in enumerate(points)]  # fmt: skip
    return pd.DataFrame(rows, columns=INTERPOLATION_COLUMNS)


def interpolation_stats(interpolation: pd.DataFrame) -> pd.DataFrame:
    """Mean and sample std over seeds per dataset x experiment x alpha, with the mean of (target + source) / 2."""
    frame = interpolation.assign(mean=(interpolation["target_acc"] + interpolation["source_acc"]) / 2)
    groups = frame.groupby(["dataset", "experiment", "alpha"], sort=False)[["target_acc", "source_acc", "mean"]]
    stats = pd.concat([groups.mean(), groups.std(ddof=1).add_suffix("_std"), groups.size().rename("n_seeds")], axis=1)
    return stats.reset_index()


def best_alpha_rows(interpolation: pd.DataFrame, per_seed: pd.DataFrame) -> pd.DataFrame:
    """Per dataset x experiment, the alpha of the highest mean (target + source) / 2 over seeds, as a table row.

    Ties go to the larger alpha (the less interpolated model). The alpha is chosen on the very figures it shows,
    so the row is an upper bound of what WiSE-FT offers, not a held-out choice; its source k-NN is on the subsample.
    """
    stats = interpolation_stats(interpolation)
    rows = []
    for (dataset, experiment), group in stats.groupby(["dataset", "experiment"], sort=False):
        if group["mean"].isna().all():
            continue  # no source score: no mean to choose by
        best = group.sort_values("alpha", ascending=False).loc[lambda g: g["mean"].idxmax()]
        run = per_seed[(per_seed["dataset"] == dataset) & (per_seed["experiment"] == experiment)].iloc[0]
        rows.append({
            "dataset": dataset, "experiment": wise_name(experiment, best["alpha"]), "method": run["method"],
            "family": MITIGATION, "n_seeds": best["n_seeds"], "trainable_params": run["trainable_params"],
            "target_metric": "classifier",
            **{name: best[name] for name in ("target_acc", "target_acc_std", "source_acc", "source_acc_std", "mean",
                                             "mean_std")},
            "source_acc_subsample": best["source_acc"], "source_acc_subsample_std": best["source_acc_std"],
        })  # fmt: skip
    return pd.DataFrame(rows).reindex(columns=TABLE_COLUMNS)


def wise_name(experiment: str, alpha: float) -> str:
    """The table's name of an experiment's best-mean interpolation: 'full WiSE a=0.5'."""
    return f"{experiment} WiSE a={alpha:g}"


def subsample_gap(interpolation: pd.DataFrame, per_seed: pd.DataFrame) -> float | None:
    """Mean |subsample k-NN - full-bank k-NN| over runs at alpha = 1 (the run itself): what the subsample costs."""
    ends = interpolation[interpolation["alpha"] == 1].merge(
        per_seed[["dataset", "experiment", "seed", "source_acc"]], on=["dataset", "experiment", "seed"],
        suffixes=("", "_full"),
    )  # fmt: skip
    gaps = (ends["source_acc"] - ends["source_acc_full"]).abs().dropna()
    return float(gaps.mean()) if len(gaps) else None


def _run_row(plan, run, inputs: Inputs) -> tuple:
    """One run's figures, and its curve points ([] without a curve)."""
    target = inputs.read(run.target.path, "target")
    source_node = plan.source_metrics(run)  # the untouched backbone's for methods that leave it so
    source_path = source_node.path if source_node else None
    source = inputs.read(source_path, "source") if source_node else None
    summary_path = f"{run.train.path}/summary.json"
    summary = inputs.read(summary_path, "summary")
    points = curve_points(inputs.read(run.curve.path, "curve"), run.curve.path, plan.curve_steps()) if run.curve else []
    target_acc = _number(target.get("top1"), run.target.path, "top1")
    source_acc, routed = _source_figures(source, source_path)
    final = [point.source_acc for point in points if point.final]
    early_step, early_loss = early_source_loss(points) if points else (math.nan, math.nan)
    return {
        "dataset": run.dataset,
        "experiment": run.experiment,
        "method": run.method,
        "family": FAMILIES.get(run.method, run.method),
        "seed": run.seed,
        "key": run.train.key,
        "trainable_params": _number(summary.get("trainable_params"), summary_path, "trainable_params"),
        "selected_step": _number(summary.get("selected_step"), summary_path, "selected_step", nullable=True),
        "target_metric": target.get("metric", "classifier"),
        "target_acc": target_acc,
        "source_acc": source_acc,
        "source_acc_routed": routed,
        "mean": (target_acc + source_acc) / 2,
        "source_acc_subsample": final[0] if final else math.nan,
        "early_step": early_step,
        "early_source_loss": early_loss,
    }, points


def _pretrained_row(plan, dataset: str, inputs: Inputs) -> dict:
    """The untouched backbone on one target dataset: evaluated once, never trained."""
    target_path = plan.pretrained_target[dataset].path
    target = inputs.read(target_path, "target")
    source_path = plan.pretrained_source.path if plan.pretrained_source else None
    source = inputs.read(source_path, "source") if source_path else None
    target_acc = _number(target.get("top1"), target_path, "top1")
    source_acc, routed = _source_figures(source, source_path)
    return {
        "dataset": dataset,
        "experiment": PRETRAINED,
        "method": "",
        "family": "Pretrained",
        "n_seeds": 1,
        "target_metric": target.get("metric", "classifier"),
        "target_acc": target_acc,
        "source_acc": source_acc,
        "source_acc_routed": routed,
        "mean": (target_acc + source_acc) / 2,
    }


def _summarise(per_seed: pd.DataFrame, pretrained: list) -> pd.DataFrame:
    """Mean and sample std (ddof=1) over seeds per dataset x experiment, after the untouched backbone's rows."""
    groups = per_seed.groupby(["dataset", "experiment"], sort=False)
    same = groups[["method", "family", "trainable_params", "target_metric", "early_step"]].first()
    means = groups[AVERAGED].mean()
    stds = groups[AVERAGED].std(ddof=1).add_suffix("_std")
    runs = pd.concat([same, groups.size().rename("n_seeds"), means, stds], axis=1).reset_index()
    return pd.concat([pd.DataFrame(pretrained), runs], ignore_index=True).reindex(columns=TABLE_COLUMNS)


def _with_paper(table: pd.DataFrame, cfg: dict) -> pd.DataFrame:
    """The paper's figures and our differences, on the rows they describe only."""
    paper = config_lib.paper_figures(cfg)
    single = len(cfg["target"]["datasets"]) == 1
    figures = [
        paper.get(row.experiment, {}) if single or row.dataset == PAPER_DATASET else {} for row in table.itertuples()
    ]
    table["paper_params"] = [figure.get("params", math.nan) for figure in figures]
    table["paper_target_acc"] = [figure.get("target", math.nan) for figure in figures]
    table["paper_source_acc"] = [figure.get("source", math.nan) for figure in figures]
    table["paper_mean"] = (table["paper_target_acc"] + table["paper_source_acc"]) / 2
    for key in ("target_acc", "source_acc", "mean"):
        table[f"diff_{key}"] = table[key] - table[f"paper_{key}"]  # NaN wherever the paper has no figure
    return _counts(table)


def _ordered(table: pd.DataFrame, datasets: list) -> pd.DataFrame:
    """Dataset blocks in config order; in each, the families in the paper's order (config order within)."""
    family = table["family"].map(lambda name: FAMILY_ORDER.index(name) if name in FAMILY_ORDER else len(FAMILY_ORDER))
    order = np.lexsort((family.to_numpy(), table["dataset"].map(datasets.index).to_numpy()))
    return table.iloc[order].reset_index(drop=True)


def _counts(frame: pd.DataFrame) -> pd.DataFrame:
    """Whole-number columns as integers (blank when absent), so the CSV says 85875556, not 85875556.0000."""
    for column in COUNTS:
        if column in frame:
            frame[column] = frame[column].astype("Int64")
    return frame


# ---------------------------------------------------------------- the table as text


def human_count(count) -> str:
    """85875556 -> '85.9M', 224356 -> '224K', 76900 -> '76.9K' (three significant digits); NaN -> ''."""
    if is_missing(count):
        return ""
    for size, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if count >= size:
            return f"{_three_digits(count / size)}{suffix}"
    return str(int(count))


def _three_digits(value: float) -> str:
    decimals = 0 if value >= 100 else 1 if value >= 10 else 2
    return f"{value:.{decimals}f}"


def is_missing(value) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def _fmt(value, signed=False) -> str:
    if is_missing(value):
        return ""
    return f"{value:+.2f}" if signed else f"{value:.2f}"


def _pm(mean, std) -> str:
    """'90.00 ± 1.41'; the mean alone for one seed."""
    return _fmt(mean) + ("" if is_missing(std) or is_missing(mean) else f" ± {std:.2f}")




def display_rows(report: Report) -> tuple:
    """(headers, rows of strings): the paper's layout; dataset and family named on their first row only."""
    table = report.table
    datasets = table["dataset"].nunique() > 1
    curve = report.curve is not None and report.early_step is not None  # the claim's column needs a step >= 10
    headers = [
        *(["Dataset"] if datasets else []), "Family", "Experiment", "N. params", "(paper)",
        "Target acc.", "(paper)", "(diff)", "Source k-NN", "(paper)", "(diff)", "Source routed",
        "Mean", "(paper)", "(diff)", *([f"Source lost at step {report.early_step} (%)"] if curve else []),
    ]  # fmt: skip
    rows, previous = [], (None, None)
    for row in table.itertuples():
        target = _pm(row.target_acc, row.target_acc_std) + (" (k-NN)" if row.target_metric == "knn" else "")
        cells = [
            row.family if (row.dataset, row.family) != previous else "",
            row.experiment,
            human_count(row.trainable_params), human_count(row.paper_params),
            target, _fmt(row.paper_target_acc), _fmt(row.diff_target_acc, signed=True),
            _pm(row.source_acc, row.source_acc_std), _fmt(row.paper_source_acc), _fmt(row.diff_source_acc, signed=True),
            _pm(row.source_acc_routed, row.source_acc_routed_std),
            _pm(row.mean, row.mean_std), _fmt(row.paper_mean), _fmt(row.diff_mean, signed=True),
        ]  # fmt: skip
        if datasets:
            cells.insert(0, row.dataset if row.dataset != previous[0] else "")
        if curve:
            cells.append(_pm(row.early_source_loss, row.early_source_loss_std))
        rows.append(cells)
        previous = (row.dataset, row.family)
    return headers, rows


def markdown(report: Report) -> str:
    from tabulate import tabulate

    headers, rows = display_rows(report)
    seeds = report.seeds
    notes = (
        f"\n\nFigures are the mean ± sample std (ddof=1) over {len(seeds)} seed{'s' * (len(seeds) > 1)} "
        f"({', '.join(map(str, seeds))}); the untouched backbone is evaluated once. "
        "Target: top-1 of the fine-tuned classifier (the pretrained row: weighted k-NN). "
        "Source: DINO's weighted k-NN (CLS after the final norm, T = 0.07) at the headline k. "
        "Routed: the same with the pretrained path switched back in (LoRA off / new blocks skipped). "
        "Mean = (target + source) / 2. diff = ours - paper.\n"
    )
    return (tabulate(rows, headers, tablefmt="github", disable_numparse=True) + notes + interpolation_note(report)
            + early_claim(report))


def interpolation_note(report: Report) -> str:
    """What the interpolation rows are and what their subsample costs ('' without interpolation)."""
    if report.interpolation is None:
        return ""
    gap = "" if report.subsample_gap is None else (
        f"; at alpha = 1 the subsample's k-NN differs from the full bank's by {report.subsample_gap:.2f} points on "
        "average over runs")
    return (
        "\nForgetting mitigation: lpft (LP-FT) and l2sp (L2-SP) are trained methods; a row `E WiSE a=A` is "
        "experiment E interpolated with the pretrained model at the alpha A of the highest mean over seeds "
        "(WiSE-FT; the run's own head at every alpha; interpolation.csv holds every alpha). Its alpha is chosen on "
        "the figures shown (an upper bound), and its source k-NN is on the curve's class-balanced subsample, "
        f"not the whole bank{gap}.\n"
    )


def early_claim(report: Report) -> str:
    """The paper's 10-iteration claim as numbers, one line per dataset and experiment ('' without a curve)."""
    if report.curve is None:
        return ""
    if report.early_step is None:
        return f"\nThe curve has no step at or after {EARLY_STEP}: add one to curve.steps to test the paper's claim.\n"
    lines = [
        f"\nForgetting early (the paper: fine-tuning all weights for only 10 iterations loses over 70% of the "
        f"ImageNet-1k k-NN accuracy): the share of each run's own step-0 source k-NN (on the curve's subsample) "
        f"lost at step {report.early_step}, the first curve step ≥ {EARLY_STEP}; mean ± std over seeds:\n"
    ]
    trained = report.table["experiment"].isin(report.per_seed["experiment"])  # not the interpolation rows
    runs = report.table[trained & (report.table["experiment"] != PRETRAINED)]
    for row in runs.itertuples():
        figure = _pm(row.early_source_loss, row.early_source_loss_std)
        lines.append(f"- {row.dataset} / {row.experiment}: " + (f"{figure}%" if figure else "no source score"))
    return "\n".join(lines) + "\n"


def latex(report: Report) -> str:
    from tabulate import tabulate

    headers, rows = display_rows(report)
    text = tabulate(rows, headers, tablefmt="latex_booktabs", disable_numparse=True)
    return text.replace("±", r"$\pm$").replace("≥", r"$\geq$") + "\n"
