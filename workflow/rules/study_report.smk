# `snakemake --report report.html`: the finished study's files, each with its caption (workflow/report/).
# The Snakefile's `all` then takes study_items() and no other rule is defined: the files are the study's as they stand, so no job's Snakemake metadata
# is needed (a `dvc pull` brings none, and Snakemake would warn for each file); the runtimes of every job come
# from the benchmark files the reports tabulate (runtimes.html), which travel with results/. Asked before the
# reports exist, common.smk says what to run first.

CAPTIONS = "workflow/report"  # from the Snakefile, where `all` calls study_items()


def shown(path, caption, category, subcategory=None):
    return report(path, caption=f"{CAPTIONS}/{caption}", category=category, subcategory=subcategory)


def study_items():
    """Every file the HTML report shows, in the order a reader meets them."""
    items = [
        shown(f"{RESULTS}/table.html", "table.rst", "1. Results"),
        shown(f"{RESULTS}/table.csv", "table_csv.rst", "1. Results"),
        shown(f"{RESULTS}/per_seed.csv", "per_seed.rst", "1. Results"),
        shown(f"{RESULTS}/index.csv", "index.rst", "1. Results"),
        shown(f"{RESULTS}/tradeoff.png", "tradeoff.rst", "2. Figures"),
        shown(f"{RESULTS}/cost.png", "cost.rst", "2. Figures"),
        shown(f"{RESULTS}/runtimes.html", "runtimes.rst", "4. Runtimes"),
    ]
    if CFG["curve"]["steps"]:
        items += [shown(f"{RESULTS}/curve.png", "curve.rst", "2. Figures"),
                  shown(f"{RESULTS}/curve.csv", "curve_csv.rst", "1. Results")]
    if PLAN.interpolates:
        items += [shown(f"{RESULTS}/interpolation.png", "interpolation_figure.rst", "2. Figures"),
                  shown(f"{RESULTS}/interpolation.csv", "interpolation.rst", "1. Results")]
    if PLAN.sequence is not None:
        folder = PLAN.sequence.folder
        items += [shown(f"{folder}/summary.html", "sequence_summary.rst", "3. Task sequence"),
                  shown(f"{folder}/matrix.csv", "sequence_matrix.rst", "3. Task sequence"),
                  shown(f"{folder}/runtimes.html", "sequence_runtimes.rst", "4. Runtimes")]
        items += [shown(f"{folder}/heatmap-{name}.png", "sequence_heatmap.rst", "3. Task sequence")
                  for name in PLAN.sequence.experiments()]
    return items
