# The table (Markdown, CSV, LaTeX, HTML), per-seed results, the index, the figures (PNG and PDF)
# and the runtimes of the grid's jobs, ours beside the paper's; the provenance file's name holds
# the key of everything the report read, so any change to the grid (a seed removed, too) remakes
# it. `snakemake --report` shows these files through workflow/rules/study_report.smk instead.


rule report:
    input:
        report_inputs,
    output:
        files=PLAN.report_files(),
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
