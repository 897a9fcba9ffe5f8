# The table (Markdown, CSV, LaTeX) and the stability-plasticity plot, ours beside the paper's.


rule report:
    input:
        settings=stage_path("report"),
        metrics=report_metrics,
        runs=report_runs,
    output:
        tables=REPORT_FILES,
        stamp=stamp_path(f"{RESULTS}/report"),
    log:
        f"{LOGS}/report.log",
    params:
        metrics=f"{RESULTS}/metrics",
        runs=f"{RESULTS}/runs",
        out=RESULTS,
    conda:
        ENV
    shell:
        "vitpeft report --config {input.settings} --metrics {params.metrics} --runs {params.runs}"
        " --out {params.out} > {log} 2>&1"
        " && cp {input.settings} {output.stamp}"


localrules:
    report,
