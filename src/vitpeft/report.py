"""The study's table (Markdown, CSV, LaTeX) and its stability-plasticity plot, ours beside the paper's.

One row per experiment plus the untouched pretrained backbone first, grouped
by family as in the paper (Standard fine-tuning, LoRA, Block Expansion).
Target = accuracy on the new domain (the pretrained row, which has no trained
head, shows its weighted k-NN instead); Source = DINO's weighted k-NN of the
backbone on the pretraining domain at the headline k; Mean = their average,
the paper's ranking figure. "Routed" is the source k-NN with the pretrained
function switched back in (LoRA off, new blocks skipped) where a method has it.
"""

import math
from pathlib import Path

import numpy as np
import pandas as pd

from vitpeft import config as config_lib
from vitpeft.errors import VitpeftError
from vitpeft.fileio import atomic_path, read_json

PRETRAINED = config_lib.PRETRAINED
FAMILIES = {  # method -> the paper's group, in the paper's order
    "full": "Standard fine-tuning",
    "topk": "Standard fine-tuning",
    "linear": "Standard fine-tuning",
    "lora": "LoRA",
    "lora_qkv": "LoRA",
    "peft": "LoRA",
    "block_expansion": "Block Expansion",
}
FAMILY_ORDER = ["Pretrained", "Standard fine-tuning", "LoRA", "Block Expansion"]
COLUMNS = [
    "experiment", "method", "family", "trainable_params", "target_metric", "target_acc", "source_acc",
    "source_acc_routed", "mean", "paper_params", "paper_target_acc", "paper_source_acc", "paper_mean",
    "diff_target_acc", "diff_source_acc", "diff_mean",
]  # fmt: skip
FILES = ("table.md", "table.csv", "table.tex", "tradeoff.png")


# ---------------------------------------------------------------- the table as data


def build_table(cfg: dict, metrics_dir, runs_dir) -> pd.DataFrame:
    """One row per evaluated experiment (pretrained first), with the paper's figures and our differences."""
    metrics_dir, runs_dir = Path(metrics_dir), Path(runs_dir)
    source_on = cfg["source"]["enabled"]
    paper = config_lib.paper_figures(cfg)
    rows = [_row(PRETRAINED, None, metrics_dir, None, source_on, {})]
    for exp in cfg["experiments"]:
        rows.append(_row(exp["name"], exp["method"], metrics_dir, runs_dir, source_on, paper.get(exp["name"], {})))
    table = pd.DataFrame(rows, columns=COLUMNS)
    order = table["family"].map(_family_rank)
    return table.iloc[np.argsort(order.to_numpy(), kind="stable")].reset_index(drop=True)


def _family_rank(family: str) -> int:
    return FAMILY_ORDER.index(family) if family in FAMILY_ORDER else len(FAMILY_ORDER)


def _row(name, method, metrics_dir, runs_dir, source_on, paper) -> dict:
    target = _read(metrics_dir / name / "target.json")
    source = _read(metrics_dir / name / "source.json") if source_on else None
    target_acc = _number(target, "top1", metrics_dir / name / "target.json")
    source_acc, routed = _source_figures(source, metrics_dir / name / "source.json")
    paper_target, paper_source = paper.get("target", math.nan), paper.get("source", math.nan)
    row = {
        "experiment": name,
        "method": method or "",
        "family": "Pretrained" if name == PRETRAINED else FAMILIES.get(method, method),
        "trainable_params": math.nan if runs_dir is None else _trainable_params(runs_dir / name / "summary.json"),
        "target_metric": target.get("metric", "classifier"),
        "target_acc": target_acc,
        "source_acc": source_acc,
        "source_acc_routed": routed,
        "mean": (target_acc + source_acc) / 2,
        "paper_params": paper.get("params", math.nan),
        "paper_target_acc": paper_target,
        "paper_source_acc": paper_source,
        "paper_mean": (paper_target + paper_source) / 2,
    }
    for key in ("target_acc", "source_acc", "mean"):
        row[f"diff_{key}"] = row[key] - row[f"paper_{key}"]  # NaN wherever the paper has no figure
    return row


def _read(path: Path, what: str = "metrics file", writer: str = "the evaluation") -> dict:
    if not path.is_file():
        raise VitpeftError(f"{what} missing: {path} (run {writer} that writes it first)")
    try:
        return read_json(path)
    except ValueError as error:
        raise VitpeftError(f"{what} {path} is not valid JSON: {error}") from None


def _number(data: dict, key: str, path) -> float:
    value = data.get(key)
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise VitpeftError(f"{path}: expected a number under {key!r}, found {value!r}")
    return float(value)


def _source_figures(source, path) -> tuple:
    """(k-NN accuracy, routed k-NN accuracy or NaN) at the file's headline k."""
    if source is None:
        return math.nan, math.nan
    k = str(source.get("headline_k", 20))
    knn = source.get("knn") or {}
    if k not in knn:
        raise VitpeftError(f"{path}: no k-NN accuracy for the headline k={k} under 'knn'")
    routed = source.get("routed")
    return float(knn[k]), float(routed[k]) if routed and k in routed else math.nan


def _trainable_params(path: Path) -> float:
    summary = _read(path, "run summary", "`vitpeft train`")
    return _number(summary, "trainable_params", path)


# ---------------------------------------------------------------- the table as text


def human_count(count) -> str:
    """85875556 -> '85.9M', 224356 -> '224K', 76900 -> '76.9K' (three significant digits); NaN -> ''."""
    if count is None or (isinstance(count, float) and math.isnan(count)):
        return ""
    for size, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if count >= size:
            return f"{_three_digits(count / size)}{suffix}"
    return str(int(count))


def _three_digits(value: float) -> str:
    decimals = 0 if value >= 100 else 1 if value >= 10 else 2
    return f"{value:.{decimals}f}"


def _fmt(value, signed=False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{value:+.2f}" if signed else f"{value:.2f}"


def display_rows(table: pd.DataFrame) -> tuple:
    """(headers, rows of strings): the paper's layout, the family named on its first row only."""
    headers = [
        "Family", "Experiment", "N. params", "(paper)", "Target acc.", "(paper)", "(diff)",
        "Source k-NN", "(paper)", "(diff)", "Source routed", "Mean", "(paper)", "(diff)",
    ]  # fmt: skip
    rows, previous = [], None
    for row in table.itertuples():
        target = _fmt(row.target_acc) + (" (k-NN)" if row.target_metric == "knn" else "")
        rows.append([
            row.family if row.family != previous else "",
            row.experiment,
            human_count(row.trainable_params),
            human_count(row.paper_params),
            target, _fmt(row.paper_target_acc), _fmt(row.diff_target_acc, signed=True),
            _fmt(row.source_acc), _fmt(row.paper_source_acc), _fmt(row.diff_source_acc, signed=True),
            _fmt(row.source_acc_routed),
            _fmt(row.mean), _fmt(row.paper_mean), _fmt(row.diff_mean, signed=True),
        ])  # fmt: skip
        previous = row.family
    return headers, rows


def markdown(table: pd.DataFrame) -> str:
    from tabulate import tabulate

    headers, rows = display_rows(table)
    notes = (
        "\n\nTarget: top-1 of the fine-tuned classifier (the pretrained row: weighted k-NN). "
        "Source: DINO's weighted k-NN (CLS after the final norm, T = 0.07) at the headline k. "
        "Routed: the same with the pretrained path switched back in (LoRA off / new blocks skipped). "
        "Mean = (target + source) / 2. diff = ours - paper.\n"
    )
    return tabulate(rows, headers, tablefmt="github", disable_numparse=True) + notes


def latex(table: pd.DataFrame) -> str:
    from tabulate import tabulate

    headers, rows = display_rows(table)
    return tabulate(rows, headers, tablefmt="latex_booktabs", disable_numparse=True) + "\n"


# ---------------------------------------------------------------- the plot


FAMILY_COLOURS = {"Standard fine-tuning": "tab:blue", "LoRA": "tab:orange", "Block Expansion": "tab:green"}


def plot_tradeoff(table: pd.DataFrame, path) -> None:
    """Target accuracy (plasticity) against source k-NN (stability); marker area ~ sqrt(trainable params)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = table[table["experiment"] != PRETRAINED]
    fig, ax = plt.subplots(figsize=(7.5, 5.5))
    # Each set is scaled by its own largest model: the demo's tiny ViT and the paper's ViT-B differ 250-fold.
    ours_area, paper_area = _area_scale(runs["trainable_params"]), _area_scale(runs["paper_params"])
    for family, group in runs.groupby("family", sort=False):
        colour = FAMILY_COLOURS.get(family, "tab:gray")
        ax.scatter(group["target_acc"], group["source_acc"], s=ours_area(group["trainable_params"]), color=colour,
                   alpha=0.75, edgecolors="black", linewidths=0.5, label=f"{family} (ours)")  # fmt: skip
        paper = group[group["paper_target_acc"].notna() & group["paper_source_acc"].notna()]
        if len(paper):
            ax.scatter(paper["paper_target_acc"], paper["paper_source_acc"], s=paper_area(paper["paper_params"]),
                       facecolors="none", edgecolors=colour, linewidths=1.2, label=f"{family} (paper)")  # fmt: skip
        for row in group.itertuples():
            ax.annotate(row.experiment, (row.target_acc, row.source_acc), fontsize=8,
                        xytext=(4, 4), textcoords="offset points")  # fmt: skip
    pretrained = table[table["experiment"] == PRETRAINED]
    if len(pretrained) and not math.isnan(pretrained["source_acc"].iloc[0]):
        level = pretrained["source_acc"].iloc[0]
        ax.axhline(level, color="gray", linestyle="--", linewidth=1, label=f"pretrained backbone ({level:.1f})")
    ax.set_xlabel("target accuracy (%)  - plasticity")
    ax.set_ylabel("source k-NN accuracy (%)  - stability")
    ax.set_title("Stability-plasticity trade-off (marker area ~ sqrt(trainable params))")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best", markerscale=0.5)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=130, format="png")
    plt.close(fig)


def _area_scale(params: pd.Series):
    """Marker area ~ sqrt(params / largest): linear probing stays visible beside full fine-tuning."""
    largest = params.max(skipna=True)
    largest = largest if largest and not math.isnan(largest) else 1.0
    return lambda values: 30 + 600 * np.sqrt(np.nan_to_num(values.to_numpy(dtype=float), nan=0.0) / largest)


# ---------------------------------------------------------------- all files


def write_report(table: pd.DataFrame, out_dir) -> str:
    """Write table.md, table.csv, table.tex and tradeoff.png under `out_dir`; returns the Markdown."""
    out_dir = Path(out_dir)
    text = markdown(table)
    with atomic_path(out_dir / "table.md") as tmp:
        tmp.write_text(text)
    with atomic_path(out_dir / "table.csv") as tmp:
        table.to_csv(tmp, index=False, float_format="%.4f")
    with atomic_path(out_dir / "table.tex") as tmp:
        tmp.write_text(latex(table))
    plot_tradeoff(table, out_dir / "tradeoff.png")
    return text
