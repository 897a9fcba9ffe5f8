"""The report's figures: the trade-off (tradeoff), the interpolation curves (interpolation), the forgetting curve
(curve), what each run keeps for what it costs (cost); each saved as PNG and PDF.

Every figure keeps one protocol per axis and says which: tradeoff.png places
each row of the table (whole-bank source k-NN) with the paper's hollow markers
and each WiSE row at its chosen alpha; interpolation.png draws each run's
alpha curve on the subsample it was swept on (a marker shape per alpha, the
chosen alpha ringed, the Pareto front of all curves dashed), one panel per
method family; curve.png draws source and target over fine-tuning steps;
cost.png the share of the pretrained source k-NN each run keeps against the
FLOPs of its training (log scale), marker area by its peak training memory
(the estimate). Colours: one colour family per method family (blues for
standard fine-tuning, oranges LoRA, greens block expansion, pinks prompt
tuning, yellow-browns adapters, green-blues scale and shift, purples the
mitigations), a shade per experiment. Labels never cover each other (vitpeft.report.labels).
matplotlib is imported only when drawing.
"""

import math

import numpy as np
import pandas as pd

from vitpeft.report import labels as labels_lib
from vitpeft.report.tables import FAMILY_ORDER, MITIGATION, Report, interpolation_stats, is_missing
from vitpeft.study.plan import PRETRAINED

FAMILY_MAPS = {"Standard fine-tuning": "Blues", "LoRA": "Oranges", "Block Expansion": "Greens",
               "Prompt tuning": "RdPu", "Adapters": "YlOrBr", "Scale and shift": "GnBu",
               MITIGATION: "Purples"}  # fmt: skip
OTHER_MAP = "Greys"
ALPHA_MARKERS = ["o", "s", "^", "D", "v", "P", "X", "<", ">", "p", "h", "8", "*", "d", "H"]


def colours(table: pd.DataFrame) -> dict:
    """{experiment: colour}: a shade of its family's colour map per trained experiment, darker down the family;
    a WiSE row takes its run's colour (its `method`'s experiment is the one it interpolates)."""
    from matplotlib import colormaps

    trained = table[(table["experiment"] != PRETRAINED) & table["alpha"].isna()]
    found = {}
    for family, group in trained.groupby("family", sort=False):
        names = list(dict.fromkeys(group["experiment"]))
        shades = np.linspace(0.5, 0.9, len(names)) if len(names) > 1 else [0.7]
        cmap = colormaps[FAMILY_MAPS.get(family, OTHER_MAP)]
        found.update({name: cmap(shade) for name, shade in zip(names, shades)})
    for row in table[table["alpha"].notna()].itertuples():
        found[row.experiment] = found.get(base_experiment(row.experiment), "black")
    return found


def base_experiment(name: str) -> str:
    """The trained experiment a WiSE row interpolates ('full WiSE (test-chosen)' -> 'full')."""
    return name.split(" WiSE")[0]


# ---------------------------------------------------------------- tradeoff.png


def tradeoff_figure(report: Report):
    """Target accuracy (plasticity) against whole-bank source k-NN (stability), one panel per target dataset."""
    from matplotlib.figure import Figure

    table = report.table
    datasets = list(dict.fromkeys(table["dataset"]))
    fig = Figure(figsize=(8.5 * len(datasets), 6.2))
    axes = fig.subplots(1, len(datasets), squeeze=False)[0]
    runs = table[table["experiment"] != PRETRAINED]
    # Each set is scaled by its own largest model: the demo's tiny ViT and the paper's ViT-B differ 250-fold.
    scales = _area_scale(runs["trainable_params"]), _area_scale(runs["paper_params"])
    shade = colours(table)
    for ax, dataset in zip(axes, datasets):
        _tradeoff_panel(ax, table[table["dataset"] == dataset], scales, shade)
        ax.set_title(f"{dataset}: stability-plasticity trade-off")
    seeds = len(report.seeds)
    fig.suptitle(wrapped(
        f"Whole-bank source k-NN on every point; marker area ~ sqrt(trainable params); hollow = the paper; "
        f"{'error bars = sample std over ' + str(seeds) + ' seeds' if seeds > 1 else 'one seed'}"
        + ("; diamonds: each run at its chosen WiSE alpha, a dotted line from the run"
           if report.interpolation is not None else ""), fig), fontsize=9)
    fig.tight_layout()
    for ax, dataset in zip(axes, datasets):
        _label_points(ax, table[(table["dataset"] == dataset) & (table["experiment"] != PRETRAINED)], scales[0],
                      shade)
    return fig


def _tradeoff_panel(ax, table: pd.DataFrame, scales, shade: dict) -> None:
    ours_area, paper_area = scales
    runs = table[(table["experiment"] != PRETRAINED) & table["alpha"].isna()]
    wise = table[table["alpha"].notna()]
    for family, group in runs.groupby("family", sort=False):
        tones = [shade[name] for name in group["experiment"]]
        _errorbars(ax, group, tones)
        ax.scatter(group["target_acc"].astype(float), group["source_acc"].astype(float), s=ours_area(
            group["trainable_params"]), c=tones, alpha=0.85, edgecolors="black", linewidths=0.5, label=family,
            zorder=3)  # fmt: skip
        paper = group[group["paper_target_acc"].notna() & group["paper_source_acc"].notna()]
        if len(paper):
            ax.scatter(paper["paper_target_acc"], paper["paper_source_acc"], s=paper_area(paper["paper_params"]),
                       facecolors="none", edgecolors=[shade[name] for name in paper["experiment"]], linewidths=1.2,
                       label=f"{family} (paper)", zorder=3)  # fmt: skip
    if len(wise):
        start = runs.set_index("experiment")
        for row in wise.itertuples():
            origin = start.loc[base_experiment(row.experiment)] if base_experiment(row.experiment) in start.index \
                else None
            if origin is not None:
                ax.plot([origin["target_acc"], row.target_acc], [origin["source_acc"], row.source_acc], color=shade[
                    row.experiment], linewidth=0.8, linestyle=":", zorder=2)  # fmt: skip
        _errorbars(ax, wise, [shade[name] for name in wise["experiment"]])
        ax.scatter(wise["target_acc"].astype(float), wise["source_acc"].astype(float), s=40, marker="D",
                   c=[shade[name] for name in wise["experiment"]], edgecolors="black", linewidths=0.5,
                   label="WiSE, chosen alpha", zorder=3)  # fmt: skip
    pretrained = table[table["experiment"] == PRETRAINED]
    if len(pretrained) and not is_missing(pretrained["source_acc"].iloc[0]):
        level = pretrained["source_acc"].iloc[0]
        ax.axhline(level, color="gray", linestyle="--", linewidth=1, label=f"pretrained backbone ({level:.1f})")
    ax.set_xlabel("target accuracy (%)  - plasticity")
    ax.set_ylabel("source k-NN accuracy (%), whole bank  - stability")
    ax.grid(alpha=0.3)
    ax.margins(0.12)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), markerscale=0.5, borderaxespad=0)


def _errorbars(ax, group: pd.DataFrame, tones: list) -> None:
    """Std over seeds in both directions, in each point's own colour (nothing for one seed)."""
    for row, tone in zip(group.itertuples(), tones):
        if not (is_missing(row.target_acc_std) and is_missing(row.source_acc_std)):
            ax.errorbar(row.target_acc, row.source_acc, xerr=np.nan_to_num(row.target_acc_std),
                        yerr=np.nan_to_num(row.source_acc_std), fmt="none", ecolor=tone, elinewidth=1, capsize=3,
                        alpha=0.8)  # fmt: skip


def _label_points(ax, rows: pd.DataFrame, area, shade: dict) -> None:
    radius = np.sqrt(area(rows["trainable_params"]) / math.pi)  # scatter sizes are areas in points^2
    labels = [labels_lib.Label(float(row.target_acc), float(row.source_acc), row.experiment, shade[row.experiment],
                               float(r) if math.isnan(row.alpha) else 4.0)
              for row, r in zip(rows.itertuples(), radius)]  # fmt: skip
    labels_lib.place(ax, labels)


def _area_scale(params: pd.Series):
    """Marker area ~ sqrt(params / largest): linear probing stays visible beside full fine-tuning."""
    values = params.astype(float)
    largest = values.max(skipna=True)
    largest = largest if largest and not math.isnan(largest) else 1.0
    return lambda column: 30 + 600 * np.sqrt(np.nan_to_num(column.astype(float).to_numpy(), nan=0.0) / largest)


# ---------------------------------------------------------------- interpolation.png


def interpolation_figure(report: Report):
    """Each run's alpha curve (mean over seeds, std as error bars) on the subsample, a panel per dataset and family:
    test top-1 against the subsample's source k-NN, a marker shape per alpha, the chosen alphas ringed."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    stats = interpolation_stats(report.interpolation)
    family = dict(zip(report.table["experiment"], report.table["family"]))
    stats["family"] = stats["experiment"].map(family)
    datasets = list(dict.fromkeys(stats["dataset"]))
    families = [name for name in FAMILY_ORDER if name in set(stats["family"])]
    alphas = sorted(set(stats["alpha"]))
    markers = {alpha: ALPHA_MARKERS[i % len(ALPHA_MARKERS)] for i, alpha in enumerate(alphas)}
    shade = colours(report.table)
    columns = min(2, len(families))
    rows = math.ceil(len(families) / columns)  # per dataset
    fig = Figure(figsize=(5.2 * columns + 1.9, 4.0 * rows * len(datasets) + 0.6))
    grid = fig.subplots(rows * len(datasets), columns, squeeze=False)
    panels = []  # (ax, dataset, family)
    for d, dataset in enumerate(datasets):
        here = stats[stats["dataset"] == dataset]
        front = pareto_front(here["target_acc"].astype(float).to_numpy(), here["source_acc"].astype(float).to_numpy())
        for i, name in enumerate(families):
            ax = grid[d * rows + i // columns][i % columns]
            _alpha_panel(ax, here[here["family"] == name], front, markers, shade)
            ax.set_title(f"{dataset}: {name}", fontsize=9)
            ax.set_xlabel("target accuracy (%), test split", fontsize=8)
            ax.set_ylabel("source k-NN (%), subsample", fontsize=8)
            panels.append((ax, here[here["family"] == name]))
        for i in range(len(families), rows * columns):
            grid[d * rows + i // columns][i % columns].set_visible(False)
    handles = [Line2D([], [], marker=markers[alpha], color="gray", linestyle="none", label=f"alpha = {alpha:g}")
               for alpha in alphas]  # fmt: skip
    handles += [Line2D([], [], marker="o", markersize=11, markerfacecolor="none", markeredgecolor="black",
                       linestyle="none", label=f"chosen alpha\n({report.choose_on})"),
                Line2D([], [], color="black", linestyle="--", linewidth=1, label="Pareto front\nof all curves")]
    fig.legend(handles=handles, loc="center right", fontsize=8, frameon=False)
    seeds = len(report.seeds)
    fig.suptitle(wrapped(
        "Each run interpolated with the pretrained model (WiSE-FT): alpha 0 = the pretrained backbone, 1 = the run; "
        f"mean over {seeds} seed{'s' * (seeds > 1)}{', error bars = sample std' if seeds > 1 else ''}. Source "
        f"k-NN on the sweep's subsample ({report.subsample}); the table's is the whole bank.", fig), fontsize=9)
    fig.tight_layout(rect=(0, 0, 1 - 1.7 / fig.get_figwidth(), 1))
    for ax, curves in panels:
        ends = curves[curves["alpha"] == max(alphas)]
        labels_lib.place(ax, [labels_lib.Label(float(end.target_acc), float(end.source_acc), end.experiment,
                                               shade.get(end.experiment, "black")) for end in ends.itertuples()])
    return fig


def wrapped(text: str, fig) -> str:
    """A figure title broken into lines that fit the figure's width (about 15 characters per inch at 9 pt)."""
    import textwrap

    return textwrap.fill(text, width=int(15 * fig.get_figwidth()))


def _alpha_panel(ax, stats: pd.DataFrame, front: list, markers: dict, shade: dict) -> None:
    for experiment, curve in stats.groupby("experiment", sort=False):
        curve = curve.sort_values("alpha")
        x, y = curve["target_acc"].astype(float), curve["source_acc"].astype(float)
        if y.isna().all():
            continue
        colour = shade.get(experiment, "black")
        ax.errorbar(x, y, xerr=curve["target_acc_std"].astype(float).fillna(0),
                    yerr=curve["source_acc_std"].astype(float).fillna(0), color=colour, linewidth=1, elinewidth=0.5,
                    alpha=0.8, zorder=2)  # fmt: skip
        for point in curve.itertuples():
            ax.plot(point.target_acc, point.source_acc, marker=markers[point.alpha], color=colour, markersize=5,
                    markeredgecolor="black", markeredgewidth=0.4, linestyle="none", zorder=3)  # fmt: skip
            if point.chosen:
                ax.plot(point.target_acc, point.source_acc, marker="o", markersize=11, markerfacecolor="none",
                        markeredgecolor="black", markeredgewidth=0.8 + 0.4 * (point.chosen - 1), linestyle="none",
                        zorder=4)  # fmt: skip
    ax.grid(alpha=0.3)
    ax.margins(0.15)
    if len(front) > 1:  # for reference, without widening the panel beyond its own curves
        limits = ax.get_xlim(), ax.get_ylim()
        ax.plot(*zip(*front), linestyle="--", color="black", linewidth=1, zorder=1)
        ax.set_xlim(*limits[0])
        ax.set_ylim(*limits[1])


def pareto_front(target, source) -> list:
    """The (target, source) points no other point beats in both, by rising target."""
    points = sorted((t, s) for t, s in zip(target, source) if not (math.isnan(t) or math.isnan(s)))
    front, best = [], -math.inf
    for t, s in reversed(points):
        if s > best:
            front.append((t, s))
            best = s
    return front[::-1]


# ---------------------------------------------------------------- curve.png


CURVE_PANELS = (("source_acc", "source k-NN accuracy (%) on the subsample"), ("target_acc", "target accuracy (%)"))


def curve_figure(report: Report):
    """Source k-NN and target accuracy against the step, one line per experiment, one row per target dataset."""
    from matplotlib.figure import Figure

    curve = report.curve
    datasets = list(dict.fromkeys(curve["dataset"]))
    shade = colours(report.table)
    fig = Figure(figsize=(13, 4.8 * len(datasets)))
    for axes, dataset in zip(fig.subplots(len(datasets), 2, squeeze=False), datasets):
        for ax, (column, label) in zip(axes, CURVE_PANELS):
            _curve_panel(ax, curve[curve["dataset"] == dataset], column, shade)
            ax.set_ylabel(label)
            ax.set_title(f"{dataset}: {label.split(' (')[0]} over fine-tuning")
        axes[1].legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5), title="experiment")
    seeds = len(report.seeds)
    fig.suptitle(wrapped(
        f"Forgetting curve: mean over {seeds} seed{'s' * (seeds > 1)}"
        f"{'; shaded band = sample std' if seeds > 1 else ''}; step 0 = the untouched model with its fresh head; "
        "a colour family per method family", fig), fontsize=9)
    fig.tight_layout()
    return fig


def _curve_panel(ax, curve: pd.DataFrame, column: str, shade: dict) -> None:
    for experiment, runs in curve.groupby("experiment", sort=False):
        stats = runs.groupby("step")[column].agg(["mean", "std"])
        if stats["mean"].isna().all():
            continue  # no source score on this curve
        steps, mean, std = stats.index.to_numpy(), stats["mean"].to_numpy(), stats["std"].to_numpy()
        colour = shade.get(experiment, "black")
        ax.plot(steps, mean, marker="o", markersize=3, color=colour, label=experiment)
        if not np.isnan(std).all():
            ax.fill_between(steps, mean - std, mean + std, color=colour, alpha=0.2, linewidth=0)
    ax.set_xscale("symlog", linthresh=1)  # logarithmic, yet step 0 (the untouched model) stays on the axis
    ax.set_xlim(left=0)
    ax.set_xlabel("fine-tuning step (log scale; 0 = untouched)")
    ax.grid(alpha=0.3, which="both")


def cost_figure(report: Report):
    """Source retention (% of the pretrained source k-NN kept) against training FLOPs, one panel per dataset."""
    from matplotlib.figure import Figure

    table = report.table
    datasets = list(dict.fromkeys(table["dataset"]))
    fig = Figure(figsize=(7.5 * len(datasets), 5.8))
    axes = fig.subplots(1, len(datasets), squeeze=False)[0]
    trained = table[table["experiment"].isin(report.per_seed["experiment"])]  # every run, and each WiSE row
    area = _area_scale(trained["memory_estimate_bytes"])
    for ax, dataset in zip(axes, datasets):
        _cost_panel(ax, table[table["dataset"] == dataset], trained[trained["dataset"] == dataset], area,
                    colours(table))
        ax.set_title(f"{dataset}: what each method keeps for what it costs")
    fig.suptitle("Training FLOPs: torch's FlopCounterMode (forward + backward, matrix products)\n"
                 "marker area ~ sqrt(peak training memory, estimate); a WiSE row: its run's training", fontsize=9)
    fig.tight_layout()
    return fig


def _cost_panel(ax, block: pd.DataFrame, runs: pd.DataFrame, area, shades: dict) -> None:
    pretrained = block.loc[block["experiment"] == PRETRAINED, "source_acc"]
    level = float(pretrained.iloc[0]) if len(pretrained) and not is_missing(pretrained.iloc[0]) else math.nan
    costed = runs[runs["train_flops"].notna()]
    runs = costed[costed["source_acc"].notna()] if not math.isnan(level) else costed.iloc[0:0]
    labels = []
    if runs.empty:
        why = ("no run recorded its cost\n(trained before vitpeft recorded costs: retrain to add them)" if costed.empty
               else "no source k-NN to keep\n(source.enabled: false, or the source jobs have not run)")
        ax.text(0.5, 0.5, why, ha="center", va="center", transform=ax.transAxes)
    for family, group in runs.groupby("family", sort=False):
        x = group["train_flops"].astype(float)
        y = 100 * group["source_acc"].astype(float) / level
        sizes = area(group["memory_estimate_bytes"])
        ax.scatter(x, y, s=sizes, color=[shades[name] for name in group["experiment"]], alpha=0.75,
                   edgecolors="black", linewidths=0.5, label=family)  # fmt: skip
        labels += [labels_lib.Label(float(xi), float(yi), name, shades[name], float(np.sqrt(size / math.pi)))
                   for name, xi, yi, size in zip(group["experiment"], x, y, sizes)]  # fmt: skip
    ax.axhline(100, color="gray", linestyle="--", linewidth=1, label="the pretrained backbone (100%)")
    if not runs.empty:
        ax.set_xscale("log")
    ax.set_xlabel("training FLOPs of the run (log scale)")
    ax.set_ylabel("source k-NN kept (% of the pretrained backbone's)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="best", markerscale=0.5)
    labels_lib.place(ax, labels)  # last: where the points are drawn, on the log scale
