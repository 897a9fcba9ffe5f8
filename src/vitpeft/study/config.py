"""The workflow config: one study's grid and protocol, validated before any job is scheduled.

`load` fills a backbone preset's keys, checks the config against the schema
(config.schema.yaml: every key typed, described and defaulted there), fills
the defaults, checks what the schema cannot say (method arguments against the
model's depth among them), and turns the first problem into one VitpeftError
naming the key. It imports neither torch nor timm, so planning stays instant:
the depth comes from the model's kwargs or the presets' table, and for another
timm architecture from the `describe` its caller passes
(vitpeft.models.shapes.describe builds the model once on the meta device; the
Snakefile and the CLI pass it). What only the libraries can check (peft's own
fields) is vitpeft.cli.check.check_models, run wherever torch is loaded
anyway (`vitpeft check`).
"""

import copy
from pathlib import Path

import yaml

from vitpeft.data import catalogue, synthetic
from vitpeft.methods import arguments
from vitpeft.models import presets
from vitpeft.study import schema
from vitpeft.errors import VitpeftError
from vitpeft.study.spec import check_curve_steps, check_relations

PRETRAINED = "pretrained"  # the untouched backbone's pseudo-experiment, reserved as an experiment name

WORKFLOW_FILLED = {"seed": "the top-level `seeds` list", "curve_steps": "`curve.steps`"}


def load(source, describe=None) -> dict:
    """Validate a config (a YAML path or a dict) and return it with every default filled.

    `describe(model section) -> shape` tells the depth of an architecture outside the
    presets' table (vitpeft.models.shapes.describe); without it such a config is refused.
    """
    where, raw = _read(source)
    raw = copy.deepcopy(raw) if raw is not None else {}
    _check_workflow_filled(raw, where)
    _apply_preset(raw, where)
    cfg = schema.apply(raw, where)
    _check_backbone(cfg, where)
    _check_experiments(cfg, where)
    _check_methods(cfg, where, describe)
    _check_curve(cfg, where)
    _check_interpolation(cfg, where)
    _check_relations(cfg, where)
    _check_datasets(cfg, where)
    _check_sequence(cfg, where)
    return cfg


def _read(source):
    """(how messages name the config: the path as given, its parsed YAML)."""
    if isinstance(source, dict):
        return "config", source
    path = Path(source)
    try:
        return str(source), schema.read_yaml(path.read_text())
    except FileNotFoundError:
        raise VitpeftError(f"config file not found: {source}") from None
    except IsADirectoryError:
        raise VitpeftError(f"config file {source} is a folder") from None
    except yaml.YAMLError as error:
        raise VitpeftError(f"{source}: not valid YAML: {yaml_problem(error)}") from None


def yaml_problem(error: yaml.YAMLError) -> str:
    """PyYAML's complaint with the line and column in the file ("<unicode string>" and 0-based lines dropped)."""
    mark, problem = getattr(error, "problem_mark", None), getattr(error, "problem", None)
    if mark is None or problem is None:
        return str(error)
    text = f"line {mark.line + 1}, column {mark.column + 1}: {problem}"
    context, start = getattr(error, "context", None), getattr(error, "context_mark", None)
    if context and start is not None:
        text += f" ({context} at line {start.line + 1}, column {start.column + 1})"
    return text


def _apply_preset(raw: dict, where: str) -> None:
    """Fill what backbone.preset names (model, url, layout, source mean/std) wherever the config is silent."""
    backbone = raw.get("backbone")
    if not isinstance(backbone, dict) or backbone.get("preset") is None:
        return
    try:
        preset = presets.get(backbone["preset"])
    except VitpeftError as error:
        raise VitpeftError(f"{where}: backbone.preset: {error}") from None
    backbone.setdefault("model", presets.model_cfg(backbone["preset"]))
    if not any(backbone.get(key) for key in ("url", "timm_hub", "checkpoint")):
        backbone["url"] = preset["url"]
    hub_copy = backbone.get("timm_hub") and not backbone.get("checkpoint")
    backbone.setdefault("layout", "timm" if hub_copy else preset["layout"])
    source = raw.setdefault("source", {})
    if isinstance(source, dict):
        source.setdefault("mean", preset["mean"])
        source.setdefault("std", preset["std"])


def _check_backbone(cfg: dict, where: str) -> None:
    backbone = cfg["backbone"]
    if not (backbone["pretrain"] or backbone["checkpoint"] or backbone["url"] or backbone["timm_hub"]):
        raise VitpeftError(
            f"{where}: backbone: no weights: set backbone.url, backbone.timm_hub or backbone.checkpoint "
            "(a local file), or backbone.preset"
        )


def _check_workflow_filled(raw, where: str) -> None:
    """Keys of a spec's `train` that the workflow fills per run: a config naming them gets the reason."""
    if not isinstance(raw, dict):
        return
    sections = [(("train",), raw.get("train"))]
    experiments = raw.get("experiments")
    if isinstance(experiments, list):
        sections += [(("experiments", i, "train"), exp.get("train")) for i, exp in enumerate(experiments)
                     if isinstance(exp, dict)]
    for here, train in sections:
        for key, hint in WORKFLOW_FILLED.items():
            if isinstance(train, dict) and key in train:
                raise VitpeftError(f"{where}: {schema.key_path((*here, key), root=raw)}: "
                                   f"set by the workflow from {hint}, not here")


def _check_experiments(cfg: dict, where: str) -> None:
    seen = {}
    for i, exp in enumerate(cfg["experiments"]):
        if exp["name"] in seen or exp["name"] == PRETRAINED:
            reason = ("is reserved for the untouched backbone" if exp["name"] == PRETRAINED
                      else f"is used twice (also experiments[{seen[exp['name']]}])")
            raise VitpeftError(f"{where}: experiments[{i}].name: {exp['name']!r} {reason}; "
                               "experiment names must be unique")
        seen[exp["name"]] = i
        here = schema.key_path(("experiments", i, "train"), root=cfg)
        schema.check(exp["train"], where, "train", here)  # the shared section is already checked


def merged_train(cfg: dict, exp: dict) -> dict:
    """An experiment's training settings: its overrides over the shared section, nested sections key by key."""
    return deep_merge(cfg["train"], exp["train"])


def deep_merge(base: dict, override: dict) -> dict:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        is_section = isinstance(value, dict) and isinstance(merged.get(key), dict)
        merged[key] = deep_merge(merged[key], value) if is_section else copy.deepcopy(value)
    return merged


def _check_curve(cfg: dict, where: str) -> None:
    steps = cfg["curve"]["steps"]
    check_curve_steps(steps, cfg["train"]["steps"], f"{where}: curve.steps")
    for exp in cfg["experiments"]:
        own = exp["train"].get("steps")
        if own is not None and steps and steps[-1] > own:
            raise VitpeftError(
                f"{where}: curve.steps: {steps[-1]} is beyond the train.steps ({own}) of experiment "
                f"{exp['name']!r}; keep curve steps within every experiment's steps"
            )


def _check_interpolation(cfg: dict, where: str) -> None:
    """The alpha grid: not empty, each alpha a finite number in [0, 1], none twice."""
    alphas = cfg["interpolation"]["alphas"]
    if not alphas:
        raise VitpeftError(f"{where}: interpolation.alphas: empty; give at least one alpha in [0, 1] "
                           "(or set interpolation.enabled: false)")
    for i, alpha in enumerate(alphas):
        if not (arguments.is_number(alpha) and 0 <= alpha <= 1):
            raise VitpeftError(f"{where}: interpolation.alphas[{i}]: {alpha!r} is outside [0, 1]")
    if len(set(alphas)) != len(alphas):
        raise VitpeftError(f"{where}: interpolation.alphas: {alphas} names an alpha twice")


def _check_relations(cfg: dict, where: str) -> None:
    """What the schema cannot say of training (crop_scale's order, two augmentations at once) for the shared
    section and each experiment overriding it, named here: the plan would name a run, not the file."""
    shared = {"train": {**cfg["train"], "curve_steps": cfg["curve"]["steps"]}, "data": {"test": True}}
    check_relations(shared, where)
    for i, exp in enumerate(cfg["experiments"]):
        if exp["train"]:  # the rest are the shared section's, checked above
            own = {**shared, "train": {**merged_train(cfg, exp), "curve_steps": cfg["curve"]["steps"]}}
            check_relations(own, f"{where}: {schema.key_path(('experiments', i), root=cfg)}")


def _check_datasets(cfg: dict, where: str) -> None:
    """Every target dataset is built in, the demo's, or defined under imagefolders; mirrors are for built-ins."""
    target = cfg["target"]
    built_in = [name for name in catalogue.REGISTRY if name != "imagefolder"]
    for section, allowed in (("imagefolders", None), ("mirrors", built_in)):
        for name in target[section]:
            if schema.SAFE_NAME.fullmatch(name) is None:
                raise VitpeftError(f"{where}: target.{section}.{name}: not a safe name (letters, digits, _ - .)")
            if allowed is not None and name not in allowed:
                raise VitpeftError(f"{where}: target.{section}.{name}: mirrors are for built-in datasets "
                                   f"({', '.join(allowed)})")
            if section == "imagefolders" and name in built_in + ["synthetic"]:
                raise VitpeftError(f"{where}: target.imagefolders.{name}: the name of a built-in dataset; rename it")
    for i, name in enumerate(target["datasets"]):
        if name not in (*built_in, "synthetic", *target["imagefolders"]):
            raise VitpeftError(
                f"{where}: target.datasets[{i}]: unknown dataset {name!r} (built in: {', '.join(built_in)}, "
                "synthetic; or define it under target.imagefolders)"
            )


# ---------------------------------------------------------------- a task sequence (vitpeft.study.sequence plans it)


def _check_sequence(cfg: dict, where: str) -> None:
    """What the schema cannot say of `sequence`: tasks known and distinct, experiments known, variants possible,
    per-task settings for tasks of the sequence, and every step's settings valid (each experiment on each task)."""
    section = cfg.get("sequence")
    if section is None:
        return
    _check_tasks(cfg, section["tasks"], where)
    methods = {exp["name"]: exp["method"] for exp in cfg["experiments"]}
    chosen = section["experiments"] if section["experiments"] is not None else list(methods)
    for i, name in enumerate(section["experiments"] or []):
        if name not in methods:
            raise VitpeftError(f"{where}: sequence.experiments[{i}]: no experiment named {name!r}")
    for i, name in enumerate(section["per_task"]):
        if name not in chosen:
            raise VitpeftError(f"{where}: sequence.per_task[{i}]: {name!r} is not an experiment that runs the "
                               "sequence (sequence.experiments)")
        try:  # a per-task variant swaps the method's additions: only a method with a routed view has them
            arguments.routed_view(methods[name])
        except VitpeftError as error:
            raise VitpeftError(f"{where}: sequence.per_task[{i}]: experiment {name!r} has no per-task variant: "
                               f"{error}") from None
    if not chosen:
        raise VitpeftError(f"{where}: sequence.experiments: no experiment runs the sequence")
    for task, settings in section["train"].items():
        if task not in section["tasks"]:
            raise VitpeftError(f"{where}: sequence.train.{task}: not one of sequence.tasks ({', '.join(section['tasks'])})")
        schema.check(settings, where, "train", f"sequence.train.{task}")
    for exp in cfg["experiments"]:
        if exp["name"] in chosen:
            for index, task in enumerate(section["tasks"]):
                _check_step(cfg, exp, index, f"{where}: experiment {exp['name']!r} on sequence task {task!r}")


def _check_tasks(cfg: dict, tasks: list, where: str) -> None:
    if len(tasks) < 2:
        raise VitpeftError(f"{where}: sequence.tasks: a sequence needs at least two tasks, got {len(tasks)} "
                           f"({', '.join(tasks) or 'none'}); for one task use target.datasets")
    first = {}
    known = known_datasets(cfg)
    for i, name in enumerate(tasks):
        if name in first:
            raise VitpeftError(f"{where}: sequence.tasks[{i}]: {name!r} twice (also sequence.tasks[{first[name]}]); "
                               "each task appears once")
        first[name] = i
        if name not in known:
            raise VitpeftError(f"{where}: sequence.tasks[{i}]: unknown dataset {name!r} (known: {', '.join(known)}; "
                               "or define it under target.imagefolders)")
        if name == "synthetic" and "synthetic" not in (*cfg["target"]["datasets"], cfg["source"]["dataset"]):
            raise VitpeftError(f"{where}: sequence.tasks[{i}]: synthetic is the synthetic domains' target: it needs "
                               "target.datasets or source.dataset synthetic (which make those domains)")


def _check_step(cfg: dict, exp: dict, index: int, where: str) -> None:
    """One experiment's settings on one task: the relations between keys, and a method's own step limits."""
    train = task_train(cfg, exp, index, where)
    check_relations({"train": {**train, "curve_steps": []}, "data": {"test": True}}, where)
    checked = arguments.config_from_args(exp["method"], exp["args"])
    if hasattr(checked, "check_steps"):  # lpft: its probe shares the step's steps
        try:
            checked.check_steps(train["steps"])
        except VitpeftError as error:
            raise VitpeftError(f"{where}: {error}; give that task its own steps (sequence.train)") from None


def known_datasets(cfg: dict) -> list:
    """Every dataset a sequence task can name: built-in ones, the demo's synthetic domains, the config's own."""
    built_in = [name for name in catalogue.REGISTRY if name != "imagefolder"]
    return [*built_in, "synthetic", *synthetic.TASK_DOMAINS, *cfg["target"]["imagefolders"]]


def train_images(cfg: dict, dataset: str) -> int | None:
    """Images in a dataset's training split, known without reading it; None for an imagefolder that does not say."""
    if dataset in cfg["target"]["imagefolders"]:
        return cfg["target"]["imagefolders"][dataset]["train_images"]
    if dataset == "synthetic":
        return cfg["synthetic"]["train_per_class"] * cfg["synthetic"]["target_classes"]
    if dataset in synthetic.TASK_DOMAINS:
        return cfg["synthetic"]["train_per_class"] * synthetic.TASK_CLASSES
    return catalogue.get(dataset).train_images


def task_train(cfg: dict, exp: dict, index: int, where: str = "config") -> dict:
    """An experiment's training settings on sequence task `index` (0-based): its own, then the task's
    `sequence.train` over them; steps the task does not set follow `sequence.budget` (epochs: the first task's
    epochs on this task's images), and a warm-up it does not set keeps the experiment's share of the steps."""
    section = cfg["sequence"]
    base = merged_train(cfg, exp)
    first, task = (deep_merge(base, section["train"].get(name, {})) for name in (section["tasks"][0],
                                                                               section["tasks"][index]))
    own = section["train"].get(section["tasks"][index], {})
    if "steps" not in own and section["budget"] == "epochs" and index > 0:
        sizes = [_sized(cfg, section["tasks"][i], where) for i in (0, index)]
        epochs = first["steps"] * first["batch_size"] / sizes[0]
        task["steps"] = max(1, round(epochs * sizes[1] / task["batch_size"]))
    if "warmup_steps" not in own:
        task["warmup_steps"] = round(base["warmup_steps"] * task["steps"] / base["steps"])
    return task


def _sized(cfg: dict, dataset: str, where: str) -> int:
    size = train_images(cfg, dataset)
    if size is None:
        raise VitpeftError(f"{where}: sequence.budget epochs scales the steps by each task's training images, and "
                           f"imagefolder {dataset!r} does not say how many it has: set "
                           f"target.imagefolders.{dataset}.train_images, or give the task its steps in "
                           "sequence.train, or set sequence.budget: steps")
    return size


def _check_methods(cfg: dict, where: str, describe) -> None:
    """Every experiment's method arguments against the model's depth (torch-free: vitpeft.methods.arguments)."""
    depth = model_depth(cfg["backbone"]["model"], where, describe)
    for i, exp in enumerate(cfg["experiments"]):
        try:
            checked = arguments.check(exp["method"], exp["args"], depth)
            if hasattr(checked, "check_steps"):  # lpft: its probe shares the experiment's own steps
                checked.check_steps(merged_train(cfg, exp)["steps"])
        except VitpeftError as error:
            raise VitpeftError(f"{where}: {schema.key_path(('experiments', i, 'args'), root=cfg)}: {error}") from None


def model_depth(model_cfg: dict, where: str, describe=None) -> int:
    """Blocks of the configured model: from kwargs or the presets' table; else from `describe` (timm)."""
    if arguments.is_int(model_cfg["kwargs"].get("depth")):
        return model_cfg["kwargs"]["depth"]
    known = presets.table_shape(model_cfg)
    if known is not None:
        return known["depth"]
    if describe is None:
        raise VitpeftError(
            f"{where}: backbone.model: {model_cfg['name']!r} is no preset's architecture (or kwargs change it): "
            "set backbone.model.kwargs.depth, or load the config with describe=vitpeft.models.shapes.describe"
        )
    try:
        return describe(model_cfg)["depth"]
    except VitpeftError as error:
        raise VitpeftError(f"{where}: backbone.model: {error}") from None


def paper_figures(cfg: dict) -> dict:
    """{experiment name: {"params", "target", "source"}} for rows the paper publishes."""
    return {exp["name"]: dict(exp["paper"]) for exp in cfg["experiments"] if exp.get("paper")}
