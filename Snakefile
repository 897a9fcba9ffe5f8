# vitpeft: how much does fine-tuning make a self-supervised ViT forget?
#   snakemake --cores 4 all                                   the paper's grid (config/config.yaml)
#   snakemake --cores 2 --configfile config/demo.yaml all     the offline demo
#   snakemake --profile slurm all                             one cluster job per experiment
# The config is validated (src/vitpeft/config.schema.yaml) before anything is scheduled.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/backbone.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"


localrules:
    all,


rule all:
    input:
        REPORT_FILES,
    default_target: True
