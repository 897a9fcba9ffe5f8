"""A SLURM profile's warning signal against the runtime of the rule it is sent to.

The profile asks SLURM to send SIGUSR1 some seconds before the time limit of
every job that can run long (`--signal=USR1@300`): training and evaluation
then save what they have done and exit, and the job is resubmitted. A runtime at or under that lead makes every attempt stop at
its first step and burns all retries, so a runtime must be well above it: at
least MIN_RATIO times the lead, so that each attempt trains at least as long
as it waits for the signal. Torch-free: planning and `vitpeft check` use it.
"""

import math
import re

MIN_RATIO = 2
SIGNAL = re.compile(r"--signal[= ](?:[A-Z]+:)?(?:SIG)?[A-Z0-9]+@(\d+)")


def lead_seconds(slurm_extra) -> int | None:
    """The lead time of a `--signal=[B:]SIG@SECONDS` in sbatch's extra arguments, or None."""
    found = SIGNAL.search(str(slurm_extra or ""))
    return int(found.group(1)) if found else None


GROUPS = {"train": "train", "train_step": "train", "pretrain_backbone": "train", "extract_features": "evaluate",
          "route": "evaluate", "prepare_target": "prepare", "prepare_imagenet_shard": "shard"}


def config_group(rule: str) -> str | None:
    """Which `resources:` group of the workflow config a rule takes its runtime from (every eval_* rule: evaluate)."""
    return GROUPS.get(rule) or ("evaluate" if rule.startswith("eval_") else None)


def minutes(value) -> int | None:
    """A runtime as Snakemake takes it (minutes, as a number or a string of digits); None for other forms."""
    text = str(value).strip().strip("'\"")
    return int(text) if text.isdigit() else None


def problems(set_resources: dict, resources: dict) -> list:
    """One message per rule whose runtime is not well above the warning signal the profile gives it.

    `set_resources`: {rule: {resource: value}} as the profile (or --set-resources) gives them;
    `resources`: the workflow config's `resources:` section.
    """
    found = []
    for rule, settings in (set_resources or {}).items():
        lead = lead_seconds((settings or {}).get("slurm_extra"))
        group = config_group(rule)
        runtime = minutes(settings.get("runtime")) if "runtime" in settings else None
        if runtime is None and group is not None:
            runtime = resources[group]["runtime"]
        if lead is None or runtime is None or runtime * 60 >= MIN_RATIO * lead:
            continue
        where = f"resources.{group}.runtime" if group and "runtime" not in settings else f"set-resources {rule}:runtime"
        found.append(
            f"rule {rule}: runtime {runtime} min ({runtime * 60} s) is not well above the SLURM warning signal's "
            f"lead time ({lead} s, --signal=...@{lead}): each attempt would stop after at most "
            f"{max(0, runtime * 60 - lead)} s of work and be resubmitted until the retries run out; "
            f"set {where} to at least {math.ceil(MIN_RATIO * lead / 60)} min, or lower the lead"
        )
    return found
