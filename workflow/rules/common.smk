# The workflow's Python: the validated config, where everything lives, and the
# named input functions the rules use. No science here: rules call `vitpeft`.
import re

from snakemake.exceptions import WorkflowError

from vitpeft import config as vitpeft_config
from vitpeft.errors import VitpeftError


def _config_file():
    """The one config file in force (Snakemake would merge several key by key; we refuse that)."""
    given = list(workflow.overwrite_configfiles)
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
ENV = "../../envs/vitpeft.yaml"  # relative to this folder, for --sdm conda


def _alternation(names):
    return "|".join(re.escape(name) for name in names) or "(?!)"


wildcard_constraints:
    exp=_alternation(EVALUATED),


# ---------------------------------------------------------------- paths


def spec_path(name):
    return f"{RESULTS}/specs/{name}.yaml"


def run_path(name):
    return f"{RESULTS}/pretrained" if name == PRETRAINED else f"{RESULTS}/runs/{name}"


def stage_path(stage):
    return f"{RESULTS}/stages/{stage}.yaml"


def stamp_path(output):
    """A finished job's copy of the settings it ran with, beside its output."""
    return f"{output}.settings.yaml"


def metrics_path(name, column):
    return f"{RESULTS}/metrics/{name}/{column}.json"


REPORT_FILES = [f"{RESULTS}/{name}" for name in ("table.md", "table.csv", "table.tex", "tradeoff.png")]
# The dataset folders that rules produce (a rule output must be matched whole, not a subfolder of it).
TARGET_DATA = PATHS["synthetic"] if CFG["target"]["dataset"] == "synthetic" else PATHS["cifar100"]
SOURCE_DATA = PATHS["synthetic"] if CFG["source"]["dataset"] == "synthetic" else PATHS["imagenet"]


# ---------------------------------------------------------------- settings files (rerun only what changed)


def _sync_settings_files():
    """Write every job's settings file; see vitpeft.config.sync_stage for why this survives `dvc pull`."""
    specs = {**SPECS, PRETRAINED: vitpeft_config.pretrained_spec(CFG)}
    for name, spec in specs.items():
        vitpeft_config.sync_stage(spec, spec_path(name), [f"{run_path(name)}/spec.yaml"])
    stamped_outputs = {
        "synthetic": [PATHS["synthetic"]],
        "pretrain": [PATHS["checkpoint"]],
        "imagenet": [PATHS["imagenet"]],
        "source_eval": [metrics_path(name, "source") for name in EVALUATED],
        "report": [RESULTS + "/report"],
    }
    for stage, settings in vitpeft_config.stage_settings(CFG).items():
        witnesses = [stamp_path(output) for output in stamped_outputs[stage]]
        vitpeft_config.sync_stage(settings, stage_path(stage), witnesses)


_sync_settings_files()


# ---------------------------------------------------------------- named input functions and params


def train_spec(wildcards):
    return spec_path(wildcards.exp)


def run_input(wildcards):
    """The trained run, or the record of the untouched backbone's spec; ancient: a spec change reruns it upstream."""
    name = wildcards.exp
    return ancient(f"{run_path(name)}/spec.yaml" if name == PRETRAINED else run_path(name))


def eval_spec(wildcards):
    return spec_path(wildcards.exp)


def run_arg(wildcards):
    """Without --run the evaluations score the untouched pretrained backbone."""
    return "" if wildcards.exp == PRETRAINED else f"--run {run_path(wildcards.exp)}"


def report_metrics(wildcards):
    columns = ["target", "source"] if SOURCE_ON else ["target"]
    return ancient([metrics_path(name, column) for name in EVALUATED for column in columns])


def report_runs(wildcards):
    return ancient([run_path(name) for name in EXPERIMENTS])


def fetch_source_args():
    backbone = CFG["backbone"]
    if backbone["timm_hub"]:
        return f"--timm-hub {backbone['timm_hub']}"
    if not backbone["url"]:
        raise WorkflowError("config: backbone.url and backbone.timm_hub are both unset, and backbone.pretrain is false")
    return f"--url {backbone['url']}" + (f" --sha256 {backbone['sha256']}" if backbone["sha256"] else "")


def words(values):
    return " ".join(str(value) for value in values)


def resource(group, key):
    return CFG["resources"][group][key]
