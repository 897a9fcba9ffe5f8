"""The report's figures: the trade-off plot (tradeoff.png) and the forgetting curve (curve.png).

tradeoff.png: target accuracy (plasticity) against source k-NN (stability), one
panel per target dataset, marker area by trainable parameters. curve.png: source
k-NN and target accuracy against the step, one line per experiment, shaded
band = std over seeds, one row of panels per target dataset. Both are drawn from
a vitpeft.report.tables.Report; matplotlib is imported only when drawing.
"""

import math

import numpy as np
import pandas as pd

from vitpeft.report.tables import MITIGATION, Report, interpolation_stats, is_missing
from vitpeft.study.plan import PRETRAINED


FAMILY_COLOURS = {"Standard fine-tuning": "tab:blue", "LoRA": "tab:orange", "Block Expansion": "tab:green",
                  MITIGATION: "tab:red"}


def tradeoff_figure(report: Report):
    """Target accuracy (plasticity) against source k-NN (stability), one panel per target dataset."""
    from matplotlib.figure import Figure

    table = report.table
    table = table[table["experiment"].isin([PRETRAINED, *report.per_seed["experiment"]])]  # best-alpha rows: on curves
    datasets = list(dict.fromkeys(table["dataset"]))
    fig = Figure(figsize=(7.5 * len(datasets), 5.8 if report.interpolation is None else 6.6))
    axes = fig.subplots(1, len(datasets), squeeze=False)[0]
    runs = table[table["experiment"] != PRETRAINED]
    # Each set is scaled by its own largest model: the demo's tiny ViT and the paper's ViT-B differ 250-fold.
    scales = _area_scale(runs["trainable_params"]), _area_scale(runs["paper_params"])
    stats = interpolation_stats(report.interpolation) if report.interpolation is not None else None
    for ax, dataset in zip(axes, datasets):
        if stats is not None:  # under the points
            _alpha_curves(ax, stats[stats["dataset"] == dataset], table[table["dataset"] == dataset])
        _tradeoff_panel(ax, table[table["dataset"] == dataset], scales)
        ax.set_title(f"{dataset}: stability-plasticity trade-off")
    seeds = len(report.seeds)
    fig.suptitle(
        f"Marker area ~ sqrt(trainable params); hollow = the paper; "
        f"{'error bars = sample std over ' + str(seeds) + ' seeds' if seeds > 1 else 'one seed'}"
        + ("\nthin lines: each experiment interpolated with the pretrained model from alpha 0 (dot, left) to 1;"
           "\ntheir source k-NN is on the subsample; dashed black: the Pareto front of those curves"
           if stats is not None else ""),
        fontsize=9,
    )
    fig.tight_layout()
    return fig


def _tradeoff_panel(ax, table: pd.DataFrame, scales) -> None:
    ours_area, paper_area = scales
    runs = table[table["experiment"] != PRETRAINED]
    for family, group in runs.groupby("family", sort=False):
        colour = FAMILY_COLOURS.get(family, "tab:gray")
        x, y = group["target_acc"].astype(float), group["source_acc"].astype(float)
        xerr, yerr = group["target_acc_std"].astype(float), group["source_acc_std"].astype(float)
        if xerr.notna().any() or yerr.notna().any():
            ax.errorbar(x, y, xerr=xerr.fillna(0), yerr=yerr.fillna(0), fmt="none", ecolor=colour, elinewidth=1,
                        capsize=3, alpha=0.8)  # fmt: skip
        ax.scatter(x, y, s=ours_area(group["trainable_params"]), color=colour, alpha=0.75, edgecolors="black",
                   linewidths=0.5, label=f"{family} (ours)")  # fmt: skip
        paper = group[group["paper_target_acc"].notna() & group["paper_source_acc"].notna()]
        if len(paper):
            ax.scatter(paper["paper_target_acc"], paper["paper_source_acc"], s=paper_area(paper["paper_params"]),
                       facecolors="none", edgecolors=colour, linewidths=1.2, label=f"{family} (paper)")  # fmt: skip
        for row in group.itertuples():
            ax.annotate(row.experiment, (row.target_acc, row.source_acc), fontsize=8,
                        xytext=(4, 4), textcoords="offset points")  # fmt: skip
    pretrained = table[table["experiment"] == PRETRAINED]
    if len(pretrained) and not is_missing(pretrained["source_acc"].iloc[0]):
        level = pretrained["source_acc"].iloc[0]
        ax.axhline(level, color="gray", linestyle="--", linewidth=1, label=f"pretrained backbone ({level:.1f})")
    ax.set_xlabel("target accuracy (%)  - plasticity")
    ax.set_ylabel("source k-NN accuracy (%)  - stability")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best", markerscale=0.5)


def _alpha_curves(ax, stats: pd.DataFrame, table: pd.DataFrame) -> None:
    """Each experiment's interpolation curve (mean over seeds, std as error bars), and their Pareto front."""
    family = dict(zip(table["experiment"], table["family"]))
    for experiment, curve in stats.groupby("experiment", sort=False):
        curve = curve.sort_values("alpha")
        colour = FAMILY_COLOURS.get(family.get(experiment), "tab:gray")
        x, y = curve["target_acc"].astype(float), curve["source_acc"].astype(float)
        if y.isna().all():
            continue
        ax.errorbar(x, y, xerr=curve["target_acc_std"].astype(float).fillna(0),
                    yerr=curve["source_acc_std"].astype(float).fillna(0), color=colour, linewidth=0.8, alpha=0.6,
                    elinewidth=0.5, marker=".", markersize=3)  # fmt: skip
        ax.plot(x.iloc[:1], y.iloc[:1], "o", color=colour, markersize=2)
        middle = len(curve) // 2  # named at its middle alpha: the ends crowd at the pretrained point and the runs
        ax.annotate(experiment, (x.iloc[middle], y.iloc[middle]), fontsize=6, color=colour, alpha=0.9,
                    xytext=(-6, -9), textcoords="offset points")  # fmt: skip
    front = pareto_front(stats["target_acc"].astype(float).to_numpy(), stats["source_acc"].astype(float).to_numpy())
    if len(front) > 1:
        ax.plot(*zip(*front), linestyle="--", color="black", linewidth=1, label="Pareto front (interpolations)")


def pareto_front(target, source) -> list:
    """The (target, source) points no other point beats in both, by rising target."""
    points = sorted((t, s) for t, s in zip(target, source) if not (math.isnan(t) or math.isnan(s)))
    front, best = [], -math.inf
    for t, s in reversed(points):
        if s > best:
            front.append((t, s))
            best = s
    return front[::-1]


def _area_scale(params: pd.Series):
    """Marker area ~ sqrt(params / largest): linear probing stays visible beside full fine-tuning."""
    values = params.astype(float)
    largest = values.max(skipna=True)
    largest = largest if largest and not math.isnan(largest) else 1.0
    return lambda column: 30 + 600 * np.sqrt(np.nan_to_num(column.astype(float).to_numpy(), nan=0.0) / largest)


CURVE_PANELS = (("source_acc", "source k-NN accuracy (%) on the subsample"), ("target_acc", "target accuracy (%)"))


def curve_figure(report: Report):
    """Source k-NN and target accuracy against the step, one line per experiment, one row per target dataset."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    curve = report.curve
    datasets = list(dict.fromkeys(curve["dataset"]))
    experiments = list(dict.fromkeys(curve["experiment"]))
    palette = colormaps["tab10" if len(experiments) <= 10 else "tab20"]
    colours = {name: palette(i % palette.N) for i, name in enumerate(experiments)}
    fig = Figure(figsize=(13, 4.8 * len(datasets)))
    for axes, dataset in zip(fig.subplots(len(datasets), 2, squeeze=False), datasets):
        for ax, (column, label) in zip(axes, CURVE_PANELS):
            _curve_panel(ax, curve[curve["dataset"] == dataset], column, colours)
            ax.set_ylabel(label)
            ax.set_title(f"{dataset}: {label.split(' (')[0]} over fine-tuning")
        axes[1].legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5), title="experiment")
    seeds = len(report.seeds)
    fig.suptitle(
        f"Forgetting curve: mean over {seeds} seed{'s' * (seeds > 1)}"
        f"{'; shaded band = sample std' if seeds > 1 else ''}; step 0 = the untouched model with its fresh head",
        fontsize=9,
    )
    fig.tight_layout()
    return fig


def _curve_panel(ax, curve: pd.DataFrame, column: str, colours: dict) -> None:
    for experiment, runs in curve.groupby("experiment", sort=False):
        stats = runs.groupby("step")[column].agg(["mean", "std"])
        if stats["mean"].isna().all():
            continue  # no source score on this curve
        steps, mean, std = stats.index.to_numpy(), stats["mean"].to_numpy(), stats["std"].to_numpy()
        ax.plot(steps, mean, marker="o", markersize=3, color=colours[experiment], label=experiment)
        if not np.isnan(std).all():
            ax.fill_between(steps, mean - std, mean + std, color=colours[experiment], alpha=0.2, linewidth=0)
    ax.set_xscale("symlog", linthresh=1)  # logarithmic, yet step 0 (the untouched model) stays on the axis
    ax.set_xlim(left=0)
    ax.set_xlabel("fine-tuning step (log scale; 0 = untouched)")
    ax.grid(alpha=0.3, which="both")
