# The table (Markdown, CSV, LaTeX), per-seed results, the trade-off plot and the forgetting
# curve, ours beside the paper's; the provenance file's name holds the key of everything
# the report read, so any change to the grid (a seed removed, too) remakes it.

REPORT = "workflow/report"


rule report:
    input:
        report_inputs,
    output:
        table_md=f"{RESULTS}/table.md",
        table=report(f"{RESULTS}/table.csv", caption=f"../report/table.rst", category="Results"),
        table_tex=f"{RESULTS}/table.tex",
        per_seed=report(f"{RESULTS}/per_seed.csv", caption=f"../report/per_seed.rst", category="Results"),
        index=report(f"{RESULTS}/index.csv", caption=f"../report/index.rst", category="Results"),
        tradeoff=report(f"{RESULTS}/tradeoff.png", caption=f"../report/tradeoff.rst", category="Figures"),
        curve=[report(path, caption=f"../report/curve.rst", category="Figures") for path in PLAN.curve_files()],
        interpolation=[report(path, caption=f"../report/interpolation.rst", category="Results")
                       for path in PLAN.interpolation_files()],
        provenance=PLAN.report.path,
    log:
        f"{LOGS}/report-{PLAN.report.key}.log",
    benchmark:
        f"{BENCH}/report-{PLAN.report.key}.tsv"
    params:
        config=CONFIG,
        out=report_folder,
    conda:
        ENV
    shell:
        logged("vitpeft report --config {params.config} --out {params.out} --provenance {output.provenance}")


localrules:
    report,
