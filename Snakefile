# vitpeft: how much does fine-tuning make a self-supervised ViT forget?
#   snakemake --cores 4 all                                 the paper's grid (config/config.yaml)
#   snakemake all --cores 2 --configfile config/demo.yaml   any other config (targets before --configfile,
#                                                           which takes every word after it)
#   snakemake --profile slurm all                           one cluster job per training and evaluation
#   snakemake -n all                                        the plan: writes nothing, needs no data
#   snakemake --report report.html                          the finished study as one HTML file
# The config is validated (src/vitpeft/config.schema.yaml) before anything is scheduled.
from snakemake.utils import min_version

min_version("9.0")


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"


if REPORTING:  # --report: the finished study's files with their captions, nothing to run

    include: "workflow/rules/study_report.smk"

    rule all:  # here: with `all` in an included file, Snakemake 9.27's report fails on an empty rule graph
        input:
            study_items(),

else:

    include: "workflow/rules/data.smk"
    include: "workflow/rules/backbone.smk"
    include: "workflow/rules/train.smk"
    include: "workflow/rules/evaluate.smk"
    include: "workflow/rules/interpolate.smk"
    include: "workflow/rules/report.smk"
    include: "workflow/rules/sequence_common.smk"
    include: "workflow/rules/sequence.smk"

    rule all:
        input:
            PLAN.report_files(),
            PLAN.report.path,
            sequence_files(),
        default_target: True


localrules:
    all,
