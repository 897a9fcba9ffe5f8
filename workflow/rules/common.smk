# The workflow's Python: the validated config, where everything lives, and the
# named input functions the rules use. No science here: rules call `vitpeft`.
#
# Rerun only what changed, also on a fresh clone after `dvc pull`:
# - every job reads its settings from small files (specs/<exp>.yaml,
#   stages/<stage>.yaml) rewritten only when their content changes;
# - every job leaves a stamp (stamps/...sha256): the sha256 of the settings
#   files and upstream stamps it read, plus a run token;
# - at each start, vitpeft.config.settle dates 1970 every settings file and
#   stamp that all stamps recorded as it is now. Data passed between jobs is
#   ancient(); the stamps carry change from job to job instead.
# So a job reruns when its settings changed or an upstream job reran, never
# because of the order in which files were written.
import os
import re

from snakemake.exceptions import WorkflowError

from vitpeft import config as vitpeft_config
from vitpeft.errors import VitpeftError
from vitpeft.spec import write_if_changed


def _config_file():
    """The one config file in force (Snakemake would merge several key by key; we refuse that)."""
    given = list(workflow.overwrite_configfiles)
    if workflow.config_settings.config:
        keys = ", ".join(workflow.config_settings.config)
        raise WorkflowError(f"--config {keys}: not read (the config is validated as one file); edit a copy instead")
    if len(given) > 1:
        raise WorkflowError(f"give one --configfile, not {len(given)}: {', '.join(map(str, given))}")
    return given[0] if given else workflow.configfiles[-1]


try:  # validate before any job is scheduled; the message names the key at fault
    CFG = vitpeft_config.load(_config_file())
    SPECS = vitpeft_config.experiment_specs(CFG)
except VitpeftError as error:
    raise WorkflowError(f"invalid config: {error}") from None

PRETRAINED = vitpeft_config.PRETRAINED
EXPERIMENTS = list(SPECS)
EVALUATED = EXPERIMENTS + [PRETRAINED]
PATHS = vitpeft_config.paths(CFG)
RESULTS = f"results/{CFG['name']}"
LOGS = f"logs/{CFG['name']}"
SOURCE_ON = CFG["source"]["enabled"]
SYNTHETIC_TARGET = CFG["target"]["dataset"] == "synthetic"
SYNTHETIC_SOURCE = CFG["source"]["dataset"] == "synthetic"
ENV = "../../envs/vitpeft.yaml"  # relative to this folder, for --sdm conda


def _alternation(names):
    return "|".join(re.escape(name) for name in names) or "(?!)"


wildcard_constraints:
    exp=_alternation(EVALUATED),


# ---------------------------------------------------------------- paths


def spec_path(name):
    return f"{RESULTS}/specs/{name}.yaml"


def run_path(name):
    return f"{RESULTS}/runs/{name}"


def stage_path(stage):
    return f"{RESULTS}/stages/{stage}.yaml"


def metrics_path(name, column):
    return f"{RESULTS}/metrics/{name}/{column}.json"


def data_stamp(job):
    """Stamps of the data jobs live with the data (data/ is shared and tracked on its own)."""
    return f"{CFG['data_dir']}/stamps/{job}.sha256"


def result_stamp(job, name=None):
    return f"{RESULTS}/stamps/{job}.sha256" if name is None else f"{RESULTS}/stamps/{job}/{name}.sha256"


# The resolved config (defaults filled) at a fixed path: the commands that read a whole
# config get this file, so running a renamed copy of a config changes no job's params.
RESOLVED_CONFIG = stage_path("config")
REPORT_FILES = [f"{RESULTS}/{name}" for name in ("table.md", "table.csv", "table.tex", "tradeoff.png")]
# The dataset folders that rules produce (a rule output must be matched whole, not a subfolder of it).
TARGET_DATA = PATHS["synthetic"] if SYNTHETIC_TARGET else PATHS["cifar100"]
SOURCE_DATA = PATHS["synthetic"] if SYNTHETIC_SOURCE else PATHS["imagenet"]
TARGET_STAMP = data_stamp("make_synthetic" if SYNTHETIC_TARGET else "prepare_cifar100")
SOURCE_STAMP = data_stamp("make_synthetic" if SYNTHETIC_SOURCE else "prepare_imagenet")
BACKBONE_STAMP = data_stamp("pretrain_backbone" if CFG["backbone"]["pretrain"] else "fetch_checkpoint")
# Every rule's command ends with `stamp OUT FILES...`: the sha256 of the settings files and
# upstream stamps the job read, and a token of this run (so a remade job always reads as new).
shell.prefix(
    "set -euo pipefail; "
    # (braces doubled: Snakemake formats the prefix like a command)
    'stamp() {{ out=$1; shift; {{ sha256sum "$@"; echo "run $(date -u +%Y-%m-%dT%H:%M:%S.%NZ)"; }} > "$out"; }}; '
)


# ---------------------------------------------------------------- settings files and stamps


def _all_stamps():
    jobs = ["make_synthetic", "download_cifar100", "prepare_cifar100", "prepare_imagenet",
            "pretrain_backbone", "fetch_checkpoint"]
    stamps = [data_stamp(job) for job in jobs] + [result_stamp("report")]
    stamps += [result_stamp("train", name) for name in EXPERIMENTS]
    stamps += [result_stamp(rule, name) for rule in ("eval_target", "eval_source") for name in EVALUATED]
    return stamps


def _write_settings_files():
    specs = {**SPECS, PRETRAINED: vitpeft_config.pretrained_spec(CFG)}
    files = []
    for name, spec in specs.items():
        write_if_changed(spec, spec_path(name))
        files.append(spec_path(name))
    for stage, settings in vitpeft_config.stage_settings(CFG).items():
        write_if_changed(settings, stage_path(stage))
        files.append(stage_path(stage))
    return files


vitpeft_config.settle(_write_settings_files() + _all_stamps(), _all_stamps())


# ---------------------------------------------------------------- named input functions and params


def experiment_spec(wildcards):
    return spec_path(wildcards.exp)


def train_stamps(wildcards):
    return [TARGET_STAMP, BACKBONE_STAMP]


def eval_target_settings(wildcards):
    """A trained head is scored as is; the head-less backbone by the k-NN, so its settings count too."""
    extra = [stage_path("knn")] if wildcards.exp == PRETRAINED else []
    return [spec_path(wildcards.exp)] + extra


def eval_source_settings(wildcards):
    return [spec_path(wildcards.exp), stage_path("knn")]


def _run_stamp(name):
    return [] if name == PRETRAINED else [result_stamp("train", name)]


def eval_target_stamps(wildcards):
    return _run_stamp(wildcards.exp) + [TARGET_STAMP, BACKBONE_STAMP]


def eval_source_stamps(wildcards):
    return _run_stamp(wildcards.exp) + [SOURCE_STAMP, BACKBONE_STAMP]


def eval_data(wildcards):
    """The trained run (ancient: its stamp carries change) and the data it is scored on."""
    return [] if wildcards.exp == PRETRAINED else [ancient(run_path(wildcards.exp))]


def run_arg(wildcards):
    """Without --run the evaluations score the untouched pretrained backbone."""
    return "" if wildcards.exp == PRETRAINED else f"--run {run_path(wildcards.exp)}"


def target_knn_arg(wildcards):
    return KNN_ARGS if wildcards.exp == PRETRAINED else ""


def _columns():
    return ["eval_target", "eval_source"] if SOURCE_ON else ["eval_target"]


def report_stamps(wildcards):
    return [result_stamp(rule, name) for rule in _columns() for name in EVALUATED]


def report_data(wildcards):
    metrics = [metrics_path(name, rule.removeprefix("eval_")) for rule in _columns() for name in EVALUATED]
    return [ancient(path) for path in metrics + [run_path(name) for name in EXPERIMENTS]]


def report_dir(wildcards, output):
    return os.path.dirname(output.tables[0])


def fetch_source_args():
    backbone = CFG["backbone"]
    if backbone["timm_hub"]:
        return f"--timm-hub {backbone['timm_hub']}"
    return f"--url {backbone['url']}" + (f" --sha256 {backbone['sha256']}" if backbone["sha256"] else "")


def words(values):
    return " ".join(str(value) for value in values)


KNN_ARGS = f"--k {words(CFG['source']['k'])} --temperature {CFG['source']['temperature']}"


def resource(group, key):
    return CFG["resources"][group][key]
