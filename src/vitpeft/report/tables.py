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

Every column is one protocol. Source is the whole bank on every row;
`source_acc_subsample` (its own column, "Source k-NN on the subsample") is the
curve's class-balanced subsample: a trained row's kept weights there, a WiSE
row's chosen alpha there. With interpolation, each interpolated run adds a row
`E WiSE` per seed (per_seed.csv) and in the table: the run at the alpha chosen
on held-out data (vitpeft.evaluation.interpolation.eval_wise; `alpha` and
`chosen_on` record it), its target test top-1 and whole-bank source k-NN there.
An early loss read inside a stage that trains the head alone (LP-FT's probe)
is 0 by construction: `early_frozen` marks it, and the text tables say so.

The notes travel with every table (`notes`: table.md, table.tex, table.html).
Cost (from each run's summary.json, written by `vitpeft train`, vitpeft.training.cost): training FLOPs per
image as the method runs (forward and backward, counted by torch's FlopCounterMode at the run's own shape)
and for the whole run, peak training memory as an estimate (and as measured, on a GPU only), and the
stored parameters (every parameter of the model as scored) beside the trained ones. A run trained before
costs were recorded has them blank.

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
from vitpeft import digests
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
    "vpt_shallow": "Prompt tuning",
    "vpt_deep": "Prompt tuning",
    "adaptformer": "Adapters",
    "ssf": "Scale and shift",  # the three train per-channel scales and/or shifts: new ones, the biases, the norms'
    "bitfit": "Scale and shift",
    "ln_tune": "Scale and shift",
    "lpft": "Forgetting mitigation",
    "l2sp": "Forgetting mitigation",
}
MITIGATION = "Forgetting mitigation"  # lpft, l2sp, and each interpolated experiment at its chosen alpha
FAMILY_ORDER = ["Pretrained", "Standard fine-tuning", "LoRA", "Block Expansion", "Prompt tuning", "Adapters",
                "Scale and shift", MITIGATION]
COST_COLUMNS = ["train_flops_per_image", "train_flops", "memory_estimate_bytes", "memory_measured_bytes",
                "stored_params"]  # a run's cost (summary.json's `cost`, the same key names)
AVERAGED = ["target_acc", "source_acc", "source_acc_routed", "mean", "source_acc_subsample", "early_source_loss",
            "alpha"]
RUN_COLUMNS = [
    "dataset", "experiment", "method", "family", "seed", "key", "trainable_params", "selected_step", "target_metric",
    "target_acc", "source_acc", "source_acc_routed", "mean", "source_acc_subsample", "early_step", "early_source_loss",
    "early_frozen", "alpha", "chosen_on", *COST_COLUMNS,
]  # fmt: skip
PAPER_COLUMNS = [
    "paper_params", "paper_target_acc", "paper_source_acc", "paper_mean", "diff_target_acc", "diff_source_acc",
    "diff_mean",
]  # fmt: skip
TABLE_COLUMNS = [
    "dataset", "experiment", "method", "family", "n_seeds", "trainable_params", "target_metric",
    *[name for figure in AVERAGED[:5] for name in (figure, f"{figure}_std")],
    "early_step", "early_source_loss", "early_source_loss_std", "early_frozen", "alpha", "alpha_std", "chosen_on",
    *PAPER_COLUMNS, *COST_COLUMNS,
]  # fmt: skip
CURVE_COLUMNS = ["experiment", "seed", "step", "target_acc", "source_acc"]
INTERPOLATION_COLUMNS = ["dataset", "experiment", "seed", "alpha", "target_acc", "val_acc", "source_acc_subsample",
                         "chosen"]
INDEX_COLUMNS = ["dataset", "experiment", "seed", "key", "run", "spec", "target", "source", "curve", "interpolation",
                 "wise", "config"]
COUNTS = ["n_seeds", "trainable_params", "selected_step", "early_step", "seed", *COST_COLUMNS]  # whole numbers, blank when absent
WRITERS = {  # what each input is, and the command that writes it
    "target": ("target metrics", "vitpeft eval-target"),
    "source": ("source metrics", "vitpeft eval-source"),
    "curve": ("forgetting curve", "vitpeft eval-curve"),
    "interpolation": ("interpolation curve", "vitpeft eval-interpolation"),
    "wise": ("chosen-alpha score", "vitpeft eval-wise"),
    "summary": ("run summary", "vitpeft train"),
}
WISE = {"validation": "{} WiSE", "test": "{} WiSE (test-chosen)"}  # interpolation.choose_on -> the rows' names


@dataclass
class Report:
    table: pd.DataFrame  # one row per dataset x experiment (and the untouched backbone per dataset)
    per_seed: pd.DataFrame  # one row per run
    curve: pd.DataFrame | None  # one row per run x curve step; None without curve.steps
    inputs: dict  # {path read: sha256}
    seeds: list
    early_step: int | None  # the curve step the early source loss is read at; None: no curve step >= EARLY_STEP
    interpolation: pd.DataFrame | None = None  # one row per run x alpha (INTERPOLATION_COLUMNS); None when off
    subsample_gap: float | None = None  # mean |subsample k-NN - whole-bank k-NN| over the runs that have both
    subsample: str | None = None  # the curve's subsample in words; None when nothing is scored on it
    choose_on: str | None = None  # interpolation.choose_on; None without interpolation
    held_out: dict | None = None  # {dataset: val_fraction} where every run trained without its held-out slice


# ---------------------------------------------------------------- reading the metrics files


class Inputs:
    """The JSON files the report reads: each read once, checked against its digest (vitpeft.digests: the metrics'
    own, the run folder's SHA256SUMS for a summary), its sha256 taken from the very bytes parsed."""

    def __init__(self):
        self.digests, self._parsed = {}, {}

    def read(self, path: str, kind: str) -> dict:
        what, writer = WRITERS[kind]
        if path not in self._parsed:
            try:
                data = Path(path).read_bytes()
            except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
                raise VitpeftError(f"{what} missing: {path}; `{writer}` writes it (run the workflow first)") from None
            fix = f"delete it and rerun the workflow (`{writer}` writes it), or `dvc pull` it again"
            try:
                if kind == "summary":  # inside its run folder, whose SHA256SUMS holds its digest
                    digests.verify(Path(path).parent, [Path(path).name])
                    parsed = json.loads(data)
                else:
                    parsed = digests.parse_json(data, path, fix)
            except ValueError as error:
                raise VitpeftError(f"{what} {path} is not valid JSON ({error}); {fix}") from None
            except digests.Corrupt as error:
                raise VitpeftError(f"{what} {error}") from None
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
    inputs, runs, curve, wise = Inputs(), [], [], []
    for run in plan.runs.values():
        row, points = _run_row(plan, run, inputs)
        runs.append(row)
        if run.wise is not None:
            wise.append(_wise_row(plan, run, row, inputs))
        curve += [
            {"dataset": run.dataset, "experiment": run.experiment, "seed": run.seed, "step": point.step,
             "target_acc": point.target_acc, "source_acc": point.source_acc}
            for point in sorted(points, key=lambda point: point.step) if not point.final
        ]  # fmt: skip
    pretrained = [_pretrained_row(plan, dataset, inputs) for dataset in plan.targets]
    per_seed = _counts(pd.DataFrame(runs + wise, columns=RUN_COLUMNS))
    interpolation = _interpolation(plan, inputs, per_seed) if plan.interpolates else None
    table = _with_paper(_summarise(per_seed, pretrained), plan.cfg)
    steps = plan.curve_steps()
    curve = pd.DataFrame(curve, columns=["dataset", *CURVE_COLUMNS]) if steps else None
    table = _ordered(table, list(plan.targets))
    subsample = None
    if plan.curve_data is not None:
        subsample = (f"{plan.cfg['curve']['bank_per_class']} bank and {plan.cfg['curve']['query_per_class']} "
                     "query images per class")
    held_out = {run.dataset: run.spec["train"]["val_fraction"] for run in plan.runs.values()
                if run.spec["train"].get("hold_out")}
    return Report(table, per_seed, curve, inputs.digests, list(plan.cfg["seeds"]), early_step(steps), interpolation,
                  subsample_gap(per_seed), subsample, plan.choose_on if plan.interpolates else None, held_out or None)


# ---------------------------------------------------------------- interpolation (WiSE-FT) and the chosen alpha


def _interpolation(plan, inputs: Inputs, per_seed: pd.DataFrame) -> pd.DataFrame:
    """Every interpolated run's points, checked: the planned alphas exactly, in the planned order; `chosen` marks
    the run's chosen alpha (per_seed's WiSE rows)."""
    alphas, rows = list(plan.cfg["interpolation"]["alphas"]), []
    chosen = per_seed.dropna(subset=["alpha"]).set_index("key")["alpha"]  # a run's key names it alone
    for run in plan.runs.values():
        if run.interpolation is None:
            continue
        path = run.interpolation.path
        points = inputs.read(path, "interpolation").get("points")
        found = [point.get("alpha") for point in points] if isinstance(points, list) else None
        if found != alphas or not all(isinstance(point, dict) for point in points):
            raise VitpeftError(
                f"{path}: alphas {found}, but the study plans {alphas}; rerun `vitpeft eval-interpolation`")
        pick = chosen.get(run.train.key)
        rows += [{"dataset": run.dataset, "experiment": run.experiment, "seed": run.seed, "alpha": point["alpha"],
                  "target_acc": _number(point.get("target_acc"), path, f"points[{i}].target_acc"),
                  "val_acc": _number(point.get("val_acc"), path, f"points[{i}].val_acc", nullable=True),
                  "source_acc_subsample": _number(point.get("source_acc"), path, f"points[{i}].source_acc",
                                                  nullable=True),
                  "chosen": pick is not None and point["alpha"] == pick}
                 for i, point in enumerate(points)]  # fmt: skip
    return pd.DataFrame(rows, columns=INTERPOLATION_COLUMNS)


def interpolation_stats(interpolation: pd.DataFrame) -> pd.DataFrame:
    """Mean and sample std over seeds per dataset x experiment x alpha of the test top-1 and the subsample k-NN,
    and how many seeds chose each alpha (`chosen`)."""
    frame = interpolation.rename(columns={"source_acc_subsample": "source_acc"})
    groups = frame.groupby(["dataset", "experiment", "alpha"], sort=False)
    figures = groups[["target_acc", "source_acc"]]
    stats = pd.concat([figures.mean(), figures.std(ddof=1).add_suffix("_std"), groups.size().rename("n_seeds"),
                       groups["chosen"].sum().astype(int)], axis=1)  # fmt: skip
    return stats.reset_index()


def wise_name(experiment: str, choose_on: str) -> str:
    """The name of an experiment's rows at its chosen alpha: 'full WiSE', or 'full WiSE (test-chosen)'."""
    return WISE[choose_on].format(experiment)


def _wise_row(plan, run, trained: dict, inputs: Inputs) -> dict:
    """A run at its chosen alpha (vitpeft eval-wise's file): test top-1 and whole-bank k-NN there, and the choice."""
    path = run.wise.path
    wise = inputs.read(path, "wise")
    alpha = _number(wise.get("alpha"), path, "alpha")
    if alpha not in plan.cfg["interpolation"]["alphas"] or wise.get("choose_on") != plan.choose_on:
        raise VitpeftError(f"{path}: alpha {alpha} chosen on {wise.get('choose_on')!r}, but the study plans alphas "
                           f"{plan.cfg['interpolation']['alphas']} chosen on {plan.choose_on!r}; rerun `vitpeft eval-wise`")
    target_acc = _number(wise.get("target_acc"), path, "target_acc")
    source_acc, _ = _source_figures(wise, path)
    chosen_on = wise.get("chosen_on") if isinstance(wise.get("chosen_on"), dict) else {}
    return {
        **{key: trained[key] for key in ("dataset", "method", "seed", "key", "trainable_params", "selected_step",
                                         *COST_COLUMNS)},  # the run's training: interpolating trains nothing
        "experiment": wise_name(run.experiment, plan.choose_on),
        "family": MITIGATION,
        "target_metric": "classifier",
        "target_acc": target_acc,
        "source_acc": source_acc,
        "source_acc_routed": math.nan,
        "mean": (target_acc + source_acc) / 2,
        "source_acc_subsample": _number(wise.get("source_acc_subsample"), path, "source_acc_subsample"),
        "early_step": math.nan,
        "early_source_loss": math.nan,
        "alpha": alpha,
        "chosen_on": f"target: {chosen_on.get('target')}; source: {chosen_on.get('source')}",
    }


def subsample_gap(per_seed: pd.DataFrame) -> float | None:
    """Mean |subsample k-NN - whole-bank k-NN| over the runs (and chosen alphas) scored on both: the subsample's
    distance from the table's source column."""
    gaps = (per_seed["source_acc_subsample"] - per_seed["source_acc"]).abs().dropna()
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
    frozen = not is_missing(early_step) and head_only_at(summary.get("stages"), early_step)
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
        "early_frozen": frozen,
        "alpha": math.nan,
        "chosen_on": "",
        **cost_figures(summary, summary_path),
    }, points


def cost_figures(summary: dict, path: str) -> dict:
    """A run's cost columns from its summary (blank for a run trained before costs were recorded)."""
    cost = summary.get("cost")
    if cost is None:
        return dict.fromkeys(COST_COLUMNS, math.nan)
    if not isinstance(cost, dict):
        raise VitpeftError(f"{path}: expected a JSON object under 'cost'; rerun `vitpeft train`")
    return {column: _number(cost.get(column), path, f"cost.{column}", nullable=column == "memory_measured_bytes")
            for column in COST_COLUMNS}


def head_only_at(stages, step: int) -> bool:
    """Whether `step` lies in a training stage that trains the head alone (LP-FT's probe; summary.json's `stages`),
    where the backbone, and so the source score, cannot move."""
    if not isinstance(stages, list):
        return False
    return any(isinstance(stage, dict) and stage.get("head_only") is True
               and stage.get("start", 0) <= step < stage.get("start", 0) + stage.get("steps", 0) for stage in stages)


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
    same = groups[["method", "family", "trainable_params", "target_metric", "early_step", "early_frozen",
                   "chosen_on", *COST_COLUMNS]].first()
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


SUBSAMPLE_HEADER = "Source k-NN on the subsample"
ALPHA_HEADER = "WiSE alpha"
FROZEN = " (in probe)"  # an early loss read while the backbone was frozen


def human_flops(flops) -> str:
    """105_150_000_000 -> '105G' (three significant digits, SI: M, G, T, P, E); NaN -> ''."""
    if is_missing(flops):
        return ""
    for size, suffix in ((1e18, "E"), (1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M")):
        if flops >= size:
            return f"{_three_digits(flops / size)}{suffix}"
    return str(int(flops))


def human_bytes(count) -> str:
    """1_750_000_000 -> '1.63 GiB' (three significant digits, binary units); NaN -> ''."""
    if is_missing(count):
        return ""
    for size, suffix in ((2**40, "TiB"), (2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if count >= size:
            return f"{_three_digits(count / size)} {suffix}"
    return f"{int(count)} B"


def cost_headers(table: pd.DataFrame) -> list:
    measured = table["memory_measured_bytes"].notna().any()
    return ["Train FLOPs/img", "Train FLOPs (run)", "Peak mem. (estimate)",
            *(["Peak mem. (measured)"] if measured else []), "Stored params"]


def cost_cells(row, measured: bool) -> list:
    """A row's cost, as cost_headers names it."""
    cells = [human_flops(row.train_flops_per_image), human_flops(row.train_flops),
             human_bytes(row.memory_estimate_bytes)]
    return cells + ([human_bytes(row.memory_measured_bytes)] if measured else []) + [human_count(row.stored_params)]


def display_rows(report: Report) -> tuple:
    """(headers, rows of strings): the paper's layout; dataset and family named on their first row only. The
    subsample's figures, the early loss and the chosen alphas in their own columns, where the study has them."""
    table = report.table
    datasets = table["dataset"].nunique() > 1
    curve = report.curve is not None and report.early_step is not None  # the claim's column needs a step >= 10
    subsample = table["source_acc_subsample"].notna().any()
    alphas = report.interpolation is not None
    headers = [
        *(["Dataset"] if datasets else []), "Family", "Experiment", "N. params", "(paper)",
        "Target acc.", "(paper)", "(diff)", "Source k-NN", "(paper)", "(diff)", "Source routed",
        "Mean", "(paper)", "(diff)", *cost_headers(table), *([SUBSAMPLE_HEADER] if subsample else []),
        *([f"Source lost at step {report.early_step} (%)"] if curve else []), *([ALPHA_HEADER] if alphas else []),
    ]  # fmt: skip
    rows, previous = [], (None, None)
    measured = table["memory_measured_bytes"].notna().any()
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
            *cost_cells(row, measured),
        ]  # fmt: skip
        if datasets:
            cells.insert(0, row.dataset if row.dataset != previous[0] else "")
        if subsample:
            cells.append(_pm(row.source_acc_subsample, row.source_acc_subsample_std))
        if curve:
            early = _pm(row.early_source_loss, row.early_source_loss_std)
            cells.append(early + (FROZEN if early and row.early_frozen is True else ""))
        if alphas:
            cells.append(_alphas(report.per_seed, row.dataset, row.experiment))
        rows.append(cells)
        previous = (row.dataset, row.family)
    return headers, rows


def _alphas(per_seed: pd.DataFrame, dataset: str, experiment: str) -> str:
    """Each seed's chosen alpha ('0.75', or '0.5 / 0.75' in seed order when they differ); '' for other rows."""
    runs = per_seed[(per_seed["dataset"] == dataset) & (per_seed["experiment"] == experiment)].sort_values("seed")
    chosen = [f"{alpha:g}" for alpha in runs["alpha"].dropna()]
    return " / ".join(chosen) if len(set(chosen)) > 1 else "".join(chosen[:1])


def notes(report: Report) -> list:
    """What every column means and where its figures come from: paragraphs (str) and bullet lists (list of str),
    the same under table.md, in table.tex and in table.html."""
    seeds = report.seeds
    found = [
        f"Figures are the mean ± sample std (ddof=1) over {len(seeds)} seed{'s' * (len(seeds) > 1)} "
        f"({', '.join(map(str, seeds))}); the untouched backbone is evaluated once. "
        "Target acc.: top-1 of the fine-tuned classifier on the target test split (the pretrained row: weighted "
        "k-NN). Source k-NN: DINO's weighted k-NN (CLS after the final norm, T = 0.07) at the headline k, the "
        "whole source bank and query set, on every row. Routed: the same with the pretrained path switched back in "
        "(adapters off / new blocks skipped / no prompts / SSF's scales and shifts off). Mean = (target + source) / 2 "
        "of the two columns shown. diff = ours - paper.",
        cost_note(report),
    ]
    if report.table["source_acc_subsample"].notna().any():
        gap = "" if report.subsample_gap is None else (
            f"; on the runs scored on both, it differs from the whole bank's by {report.subsample_gap:.2f} points on "
            "average")
        found.append(
            f"{SUBSAMPLE_HEADER}: the same k-NN on the curve's class-balanced subsample ({report.subsample}), for a "
            "trained row its kept weights, for a WiSE row its chosen alpha. Its own protocol: compare it with "
            f"itself, never with the Source k-NN column{gap}."
        )
    if report.interpolation is not None:
        found.append(interpolation_note(report))
    found += early_claim(report)
    return found


def cost_note(report: Report) -> str:
    """What the cost columns count."""
    table = report.table
    measured = (", and as measured on the GPU (torch.cuda.max_memory_allocated)"
                if table["memory_measured_bytes"].notna().any() else "; no run here was measured on a GPU")
    ssf = (" SSF is scored unmerged (its scales and shifts apart from the weights, so its routed view exists); "
           "merged into the weights it computes the same function up to float rounding and stores the backbone's "
           "count." if (table["method"] == "ssf").any() else "")
    return (
        "Cost: training FLOPs per image of one step as the method runs it (forward and backward, counted by "
        "torch's FlopCounterMode at the run's own input size on the meta device: matrix products only; LP-FT's "
        "two stages weighted by their steps) and for the whole run (x batch x steps); peak training memory as an "
        "analytic estimate (weights, gradients, SGD momentum, and Korthikanti et al.'s activations of every block "
        f"backprop reaches: `vitpeft check --gpu`'s){measured}; stored params: every parameter of the model as "
        f"scored (backbone, the method's additions, head), beside N. params, those trained; a WiSE row repeats its "
        f"run's (interpolating trains nothing).{ssf}"
    )


def interpolation_note(report: Report) -> str:
    """What the mitigation rows are, and what each WiSE row's alpha was chosen on."""
    held = "; ".join(f"{dataset}: {fraction} of train, which every run on it trained without"
                     for dataset, fraction in (report.held_out or {}).items())  # fmt: skip
    if report.choose_on == "test":
        choice = (
            "the alpha of the highest (target + source) / 2 on the target test split and the subsample: chosen on "
            "the test figure the row reports, so the row is an upper bound of what WiSE-FT offers, not a held-out "
            "result (interpolation.choose_on: validation chooses on held-out data)"
        )
    else:
        choice = (
            "the alpha of the highest (target + source) / 2 with the target top-1 on held-out data (the dataset's "
            f"validation split{', or ' + held if held else ''}) and the source k-NN on the subsample (ties to the "
            "larger alpha); the row then reports the test split's top-1 and the whole bank's k-NN at that alpha"
        )
    return (
        "Forgetting mitigation: lpft (LP-FT) and l2sp (L2-SP) are trained methods. A row `E WiSE` is experiment E "
        "interpolated with the pretrained model (WiSE-FT; the run's own head at every alpha), each run at its own "
        f"alpha ({ALPHA_HEADER}, per seed; interpolation.csv holds every alpha and marks the chosen one): {choice}."
    )


def early_claim(report: Report) -> list:
    """The paper's 10-iteration claim as numbers: a paragraph and one item per dataset and experiment ([] without a
    curve)."""
    if report.curve is None:
        return []
    if report.early_step is None:
        return [f"The curve has no step at or after {EARLY_STEP}: add one to curve.steps to test the paper's claim."]
    trained = report.table["experiment"].isin(report.per_seed[report.per_seed["alpha"].isna()]["experiment"])
    runs = report.table[trained & (report.table["experiment"] != PRETRAINED)]
    items = []
    for row in runs.itertuples():
        figure = _pm(row.early_source_loss, row.early_source_loss_std)
        frozen = FROZEN if figure and row.early_frozen is True else ""
        items.append(f"{row.dataset} / {row.experiment}: " + (f"{figure}%{frozen}" if figure else "no source score"))
    text = (
        f"Forgetting early (the paper: fine-tuning all weights for only 10 iterations loses over 70% of the "
        f"ImageNet-1k k-NN accuracy): the share of each run's own step-0 source k-NN (on the curve's subsample) "
        f"lost at step {report.early_step}, the first curve step ≥ {EARLY_STEP}; mean ± std over seeds:"
    )
    if runs["early_frozen"].eq(True).any():
        text += (
            f" {FROZEN.strip()}: step {report.early_step} lies in the run's linear-probe stage (LP-FT trains its head "
            "alone first, the backbone frozen: summary.json's `stages`), so nothing of the source can be lost there "
            "yet; 0 by construction, not a measure of its fine-tuning stage."
        )
    return [text, items]


def markdown(report: Report) -> str:
    from tabulate import tabulate

    headers, rows = display_rows(report)
    blocks = []
    for note in notes(report):
        blocks.append("\n".join(f"- {item}" for item in note) if isinstance(note, list) else note)
    return tabulate(rows, headers, tablefmt="github", disable_numparse=True) + "\n\n" + "\n\n".join(blocks) + "\n"


LATEX_SPECIALS = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "±": r"$\pm$",
                  "≥": r"$\geq$", "`": ""}


def latex_text(text: str) -> str:
    """Plain text as LaTeX: its special characters escaped, ± and ≥ as math."""
    return "".join(LATEX_SPECIALS.get(char, char) for char in text)


def latex(report: Report) -> str:
    """A table float: the tabular (booktabs), a caption and the notes under it, so the table never travels alone."""
    from tabulate import tabulate

    headers, rows = display_rows(report)
    tabular = tabulate(rows, headers, tablefmt="latex_booktabs", disable_numparse=True)
    tabular = tabular.replace("±", r"$\pm$").replace("≥", r"$\geq$")
    body = []
    for note in notes(report):
        if isinstance(note, list):
            body += [r"\begin{itemize}", *[rf"\item {latex_text(item)}" for item in note], r"\end{itemize}"]
        else:
            body.append(latex_text(note) + r"\par")
    return "\n".join([
        "% vitpeft's results table (needs \\usepackage{booktabs} and graphicx); the notes say what every column means.",
        r"\begin{table*}[t]", r"\centering", r"\scriptsize",
        r"\caption{Target accuracy (plasticity) and source k-NN (stability) per fine-tuning method; "
        r"mean $\pm$ sample std over seeds. Notes below the table.}",
        r"\resizebox{\textwidth}{!}{%", tabular, "}", r"\par\smallskip", r"\begin{minipage}{\textwidth}\footnotesize",
        *body, r"\end{minipage}", r"\end{table*}",
    ]) + "\n"


def html(report: Report, title: str) -> str:
    """table.html: the table as an HTML table with its notes, a page of its own (the HTML report shows it)."""
    from vitpeft.report import pages

    headers, rows = display_rows(report)
    return pages.page(title, pages.table(headers, rows) + "\n" + pages.notes(notes(report)))
