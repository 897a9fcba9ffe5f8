"""A run's stages: which steps train what, at which learning rate.

Every method trains in one stage: train.steps steps, warm-up then cosine
(draws.lr_at). LP-FT (method `lpft`, Kumar et al. 2022) trains in two: the
probe (the first P steps, head only: the backbone stays the pretrained one)
on its own schedule (peak probe_lr, probe_warmup_steps), then every weight
from the probe's head on the run's schedule over the remaining steps, with
the optimiser's momentum started afresh, as a new optimiser would. The
stage is a function of the step alone, so a resumed run finds it again.
"""

import contextlib
from dataclasses import dataclass

from vitpeft.methods import arguments
from vitpeft.training.draws import lr_at


@dataclass(frozen=True)
class Stage:
    start: int  # first 0-based step
    steps: int
    lr: float
    warmup_steps: int
    head_only: bool

    def lr_at(self, step: int) -> float:
        return lr_at(step - self.start, self.lr, self.warmup_steps, self.steps)


def plan(spec: dict) -> list:
    """The run's stages in step order."""
    train = spec["train"]
    steps, lr, warmup = train["steps"], train["lr"], train["warmup_steps"]
    if spec["method"] != "lpft":
        return [Stage(0, steps, lr, warmup, head_only=False)]
    cfg = arguments.config_from_args("lpft", spec["args"])
    cfg.check_steps(steps)
    probe = cfg.probes(steps)
    probe_warmup = cfg.probe_warmup_steps
    if probe_warmup is None:  # the run's warm-up, scaled to the probe's share of the steps
        probe_warmup = round(warmup * probe / steps)
    rest = steps - probe
    return [
        Stage(0, probe, cfg.probe_lr if cfg.probe_lr is not None else lr, probe_warmup, head_only=True),
        Stage(probe, rest, lr, min(warmup, rest), head_only=False),
    ]


def at(stages: list, step: int) -> Stage:
    """The stage that 0-based step `step` belongs to."""
    return next(stage for stage in reversed(stages) if step >= stage.start)


def learning_rate(stages: list, step: int) -> float:
    return at(stages, step).lr_at(step)


@contextlib.contextmanager
def trains(model, stage: Stage):
    """What a step of `stage` trains: the head alone in a probe stage (lpft), else every trainable weight."""
    if not stage.head_only:
        yield model
        return
    from vitpeft.methods.lpft import head_only

    with head_only(model):
        yield model
