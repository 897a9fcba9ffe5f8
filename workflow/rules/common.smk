# The workflow's Python: the validated config, its plan (vitpeft.study.plan: every job's
# output path holds a key that hashes what it depends on), and the named input
# functions the rules use. No science here: rules call `vitpeft`. Nothing is
# written while planning: a dry run, --lint or --dag leaves the checkout as it was.
import os
import sys

from snakemake.exceptions import WorkflowError

from vitpeft.errors import VitpeftError
from vitpeft.models import shapes
from vitpeft.study import config as vitpeft_config
from vitpeft.study import signal_lead
from vitpeft.study.plan import PRETRAINED, Plan


DEFAULT_CONFIG = "config/config.yaml"  # read by vitpeft itself; Snakemake's `config` dict is not used


def refuse(message):
    """Stop before any job with the message alone: an exception raised here would add this file's frames."""
    sys.exit(message)


def as_given(path):
    """A --configfile as the user typed it, near enough: Snakemake made it absolute; relative here when inside."""
    relative = os.path.relpath(path)
    return str(path) if relative.split(os.sep)[0] == os.pardir else relative


def _config_file():
    """The one config in force (Snakemake would merge several key by key; we refuse that)."""
    given = [as_given(path) for path in workflow.overwrite_configfiles]
    if workflow.config_settings.config:
        keys = ", ".join(workflow.config_settings.config)
        refuse(f"--config {keys}: not read (the config is validated as one file); edit a copy instead")
    if len(given) > 1:
        refuse(
            f"give one --configfile, not {len(given)}: {', '.join(given)} (targets go before --configfile, "
            "which takes every following word: snakemake all --cores 2 --configfile config/demo.yaml)"
        )
    return given[0] if given else DEFAULT_CONFIG


CONFIG = _config_file()
try:  # validate before any job is scheduled; the message names the key at fault
    PLAN = Plan(vitpeft_config.load(CONFIG, describe=shapes.describe))
except VitpeftError as error:
    refuse(f"invalid config: {error}")
CLASH = PLAN.name_clash(CONFIG) if workflow.is_main_process else None  # once, not in every job's log
if CLASH:
    print(f"warning: {CLASH}", file=sys.stderr)


def asks_for_report():
    """Whether this is `snakemake --report FILE` (Snakemake tells a Snakefile nothing of it: its arguments do)."""
    words = sys.argv[1:]
    return "--report-after-run" not in words and any(w == "--report" or w.startswith("--report=") for w in words)


REPORTING = asks_for_report()  # the Snakefile then shows the finished study (workflow/rules/study_report.smk)


def _unfinished():
    """What a report of the study lacks: the grid's report (with its interpolation), the task sequence's."""
    missing = [] if os.path.exists(PLAN.report.path) else [f"{PLAN.results}/ holds no report of {CONFIG} as it stands"]
    if PLAN.sequence is not None and not os.path.exists(PLAN.sequence.report.path):
        missing.append(f"{PLAN.sequence.folder}/ holds no task-sequence report of it")
    return missing


if workflow.is_main_process and REPORTING and _unfinished():
    # Snakemake would fail on the first missing table after a warning per output; say what must run instead.
    given = "" if CONFIG == DEFAULT_CONFIG else f" --configfile {CONFIG}"
    writers = "last job writes it" if len(_unfinished()) == 1 else "last jobs write them"
    refuse(
        f"--report: {'; '.join(_unfinished())} (the workflow's {writers}): "
        f"run `snakemake all --cores N{given}` first (`snakemake -n all{given}` lists what is left to run), "
        "then --report again"
    )

CFG = PLAN.cfg


def _set_resources():
    """{rule: {resource: value as written}} of the profile's set-resources (or --set-resources) in force."""
    given = workflow.resource_settings.overwrite_resources
    return {rule: {name: getattr(value, "raw", value) for name, value in dict(values).items()}
            for rule, values in given.items()}


_too_short = signal_lead.problems(_set_resources(), CFG["resources"])
if _too_short:  # every attempt would stop at its first steps and burn the retries
    refuse(f"{CONFIG}: " + "; ".join(_too_short))

RESULTS = PLAN.results
LOGS = f"logs/{PLAN.name}"
BENCH = f"{RESULTS}/benchmarks"
ENV = "../../envs/vitpeft.yaml"  # relative to this folder, for --sdm conda
NAME = "[A-Za-z0-9_][A-Za-z0-9_.-]*"  # vitpeft's safe names: one path component, never . or ..


wildcard_constraints:
    dataset=NAME,
    exp=NAME,
    seed=r"\d+",
    key="[0-9a-f]{12}",
    split="bank|queries",


def shard_cache(wildcards, output):
    """The ImageNet cache folder a shard or index job writes into: two levels above its first output."""
    return os.path.dirname(os.path.dirname(output[0]))


def report_folder(wildcards, output):
    """The study's results folder, where the report's first file (table.md) goes: from the output, as --lint asks."""
    return os.path.dirname(output[0])


def words(values):
    return " ".join(str(value) for value in values)


def resource(group, key):
    return CFG["resources"][group][key]


def device(group):
    """`--device` for a rule's jobs: CUDA when its resources ask for GPUs (a job without one fails at once,
    saying why), else the CPU (never a GPU the job was not given)."""
    return "--device cuda" if resource(group, "gpu") else "--device cpu"


# Snakemake deletes a job's log before each attempt, so the log is a link to a file it does not
# know of, LOG.attempts, to which every attempt appends under a header of its own: after a retry
# or a SLURM requeue the log still holds what the attempt before said ("stopped by SIGTERM at step N").
ATTEMPT_HEADER = (
    'ln -sfn "$(basename {log}).attempts" {log}; '
    'echo "=== attempt started $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(hostname)'
    '${{SLURM_JOB_ID:+ (SLURM job $SLURM_JOB_ID${{SLURM_RESTART_COUNT:+, restart $SLURM_RESTART_COUNT}})}}"'
    " >> {log}; "
)


# vitpeft pins the CPU kernels itself (vitpeft.training.kernels); these switches come from the config.
KERNELS = "".join((
    "" if CFG["reproducibility"]["cpu_pin"] else "export VITPEFT_CPU_PIN=0; ",
    "export VITPEFT_CUDA_DETERMINISTIC=1; " if CFG["reproducibility"]["cuda_deterministic"] else "",
))


def logged(command):
    """A rule's shell command: the attempt's header, then the command (with the config's kernel switches)
    and its output appended to the log."""
    return "".join((ATTEMPT_HEADER, KERNELS, command, " >> {log} 2>&1"))


KNN_ARGS = f"--k {words(CFG['source']['k'])} --temperature {CFG['source']['temperature']}"
NORM_ARGS = (
    f"--mean {words(CFG['source']['mean'])} --std {words(CFG['source']['std'])} --precision {CFG['source']['precision']}"
)


# ---------------------------------------------------------------- inputs: none for what is made already


def unless_made(output, needs):
    """`needs`, or nothing when `output` exists: a keyed output that exists is complete and current.

    Its key hashes everything that made it, and every vitpeft output appears whole or not at all, so
    its job needs none of its inputs. Without this, Snakemake would rerun a finished job because an
    input it once read has to be remade (a clone that pulled results/ alone, or data/ without cache/).
    """
    return type(needs)() if os.path.exists(output) else needs


def made_or(output, needs):
    """unless_made for rules whose output and inputs are fixed when the workflow is planned."""

    def inputs(wildcards):
        return unless_made(output, needs)

    return inputs


# ---------------------------------------------------------------- runs, found from wildcards


def run_of(wildcards):
    """The planned run a job's wildcards name (its training key must be the planned one)."""
    return PLAN.find(wildcards.dataset, wildcards.exp, wildcards.seed, getattr(wildcards, "key", None))


def run_by_eval(wildcards, column):
    """The run whose `column` evaluation (target, source, curve) has the key in this output's name."""
    return PLAN.evaluated(column, wildcards.dataset, wildcards.exp, wildcards.seed, wildcards.key)


def train_inputs(wildcards):
    run = run_of(wildcards)
    target = PLAN.targets[run.dataset]
    return unless_made(run.train.path, {"data": ancient(target.output), "checkpoint": ancient(PLAN.backbone.path)})


def eval_inputs(column):
    def inputs(wildcards):
        run = run_by_eval(wildcards, column)
        needs = {"run": ancient(run.train.path), "data": ancient(PLAN.targets[run.dataset].output),
                 "checkpoint": ancient(PLAN.backbone.path)}
        if column == "source":
            needs.update(source=ancient(PLAN.source.output), features=ancient(PLAN.features.path))
        if column == "curve" and PLAN.curve_data is not None:
            needs.update(subset=ancient(PLAN.curve_data.path))
        return unless_made(getattr(run, column).path, needs)

    inputs.__name__ = f"{column}_inputs"
    return inputs


def eval_run_dir(wildcards):
    return run_by_eval(wildcards, "target").train.path


def eval_source_run_dir(wildcards):
    return run_by_eval(wildcards, "source").train.path


def eval_curve_run_dir(wildcards):
    return run_by_eval(wildcards, "curve").train.path


def target_test(wildcards):
    return f"{PLAN.targets[wildcards.dataset].path}/test"


def pretrained_target_inputs(wildcards):
    node = PLAN.pretrained_target[wildcards.dataset]
    needs = {"data": ancient(PLAN.targets[wildcards.dataset].output), "checkpoint": ancient(PLAN.backbone.path)}
    return unless_made(node.path, needs)


def pretrained_target_key(wildcards):
    node = PLAN.pretrained_target.get(wildcards.dataset)
    if node is None or node.key != wildcards.key:
        raise WorkflowError(f"no planned target k-NN of the pretrained backbone on {wildcards.dataset} ({wildcards.key})")
    return node.key


def target_node(wildcards):
    node = PLAN.targets.get(wildcards.dataset)
    if node is None and PLAN.sequence is not None:  # a task of the sequence only
        node = PLAN.sequence.task_node(wildcards.dataset)
    if node is None:
        raise WorkflowError(f"{wildcards.dataset} is not a target dataset of this study")
    return node


def _md5_args(info):
    return "".join(f" --md5 {name}={digest}" for name, digest in sorted(info["md5"].items()))


def download_target_args(wildcards):
    info = target_node(wildcards).info
    mirror = f" --mirror {info['mirror']}" if info["mirror"] else ""
    return f"--dataset {info['kind']}{mirror}{_md5_args(info)}"


def prepare_target_inputs(wildcards):
    node = target_node(wildcards)
    downloads = node.info.get("downloads")
    return unless_made(node.path, {"root": ancient(downloads)} if downloads else {})


def prepare_target_args(wildcards):
    info = target_node(wildcards).info
    root = info.get("downloads") or info["root"]
    return f"--dataset {info['kind']} --root {root} --size {info['size']}{_md5_args(info)}"


def imagenet_split(wildcards):
    from vitpeft.data.imagenet import PARTS

    return {folder: split for split, folder in PARTS.items()}[wildcards.part]


def imagenet_per_class(wildcards):
    limit = CFG["source"]["bank_per_class" if wildcards.part == "bank" else "query_per_class"]
    return f"--per-class {limit}" if limit else ""


# ---------------------------------------------------------------- the report's inputs


def report_inputs(wildcards):
    nodes = [PLAN.pretrained_source, *PLAN.pretrained_target.values()]
    for run in PLAN.runs.values():
        nodes += [run.train, run.target, run.source, run.curve, run.interpolation, run.wise]
    return unless_made(PLAN.report.path, [ancient(node.path) for node in nodes if node is not None])


# ---------------------------------------------------------------- interpolation (rules/interpolate.smk)


def interpolation_inputs(wildcards):
    run = run_by_eval(wildcards, "interpolation")
    needs = {"run": ancient(run.train.path), "data": ancient(PLAN.targets[run.dataset].output),
             "checkpoint": ancient(PLAN.backbone.path)}
    if PLAN.curve_data is not None:
        needs.update(subset=ancient(PLAN.curve_data.path))
    return unless_made(run.interpolation.path, needs)


def interpolation_run_dir(wildcards):
    return run_by_eval(wildcards, "interpolation").train.path


def wise_inputs(wildcards):
    run = run_by_eval(wildcards, "wise")
    needs = {"run": ancient(run.train.path), "sweep": ancient(run.interpolation.path),
             "source": ancient(PLAN.source.output), "checkpoint": ancient(PLAN.backbone.path)}
    return unless_made(run.wise.path, needs)


def wise_run_dir(wildcards):
    return run_by_eval(wildcards, "wise").train.path


def wise_sweep(wildcards):
    return run_by_eval(wildcards, "wise").interpolation.path


def interpolation_source_args():
    if PLAN.curve_data is None:
        return ""
    info, curve = PLAN.curve_data.info, CFG["curve"]
    described = f"subsample: {curve['bank_per_class']} bank and {curve['query_per_class']} query images per class"
    return f"--bank {info['bank']} --queries {info['queries']} --source-data '{described}' {KNN_ARGS} {NORM_ARGS}"
