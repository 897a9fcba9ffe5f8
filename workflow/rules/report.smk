# The table (Markdown, CSV, LaTeX) and the stability-plasticity plot, ours beside the paper's.


rule report:
    input:
        settings=RESOLVED_CONFIG,
        stamps=report_stamps,
        data=report_data,
    output:
        tables=REPORT_FILES,
        stamp=result_stamp("report"),
    log:
        f"{LOGS}/report.log",
    params:
        metrics=f"{RESULTS}/metrics",
        runs=f"{RESULTS}/runs",
        out=report_dir,
    conda:
        ENV
    shell:
        "vitpeft report --config {input.settings} --metrics {params.metrics} --runs {params.runs}"
        " --out {params.out} > {log} 2>&1"
        " && stamp {output.stamp} {input.settings} {input.stamps}"


localrules:
    report,
