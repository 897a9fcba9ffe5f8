"""The workflow config: one study's grid and protocol, validated before any job is scheduled.

`load` checks a config against `config.schema.yaml` (the one schema; every key
typed, described and defaulted there), fills the defaults, and turns the first
problem into one VitpeftError naming the key. `experiment_specs` turns the grid
into resolved training specs; `paths` fixes where every dataset lives.

`spec.write_if_changed` and `settle` are how the workflow reruns only what changed: each
job's settings go to a small file rewritten only when they change; each job
leaves a stamp with the sha256 of the settings and upstream stamps it read; a
file every stamp saw as it is now is dated 1970, so the arbitrary mtimes a
`dvc pull` leaves never look like a change, while an edited file does.
"""

import copy
import hashlib
import os
from importlib import resources
from pathlib import Path

import jsonschema
import yaml

from vitpeft import spec as spec_lib
from vitpeft.errors import VitpeftError

PRETRAINED = "pretrained"  # the untouched backbone's pseudo-experiment
ANCIENT = 86400  # mtime (1970-01-02) for files every job that read them saw as they are now; not 0,
# which Snakemake takes for "no output" and then skips its input checks
_ValidatorBase = jsonschema.Draft202012Validator


def schema() -> dict:
    return yaml.safe_load(resources.files("vitpeft").joinpath("config.schema.yaml").read_text())


# ---------------------------------------------------------------- validation


def _with_defaults(validator_class):
    """A validator that fills each missing property's `default` before checking it."""
    check_properties = validator_class.VALIDATORS["properties"]

    def fill_then_check(validator, properties, instance, schema):
        if validator.is_type(instance, "object"):
            for key, sub in properties.items():
                if key not in instance and "default" in sub:
                    instance[key] = copy.deepcopy(sub["default"])
        yield from check_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": fill_then_check})


_Validator = _with_defaults(_ValidatorBase)


def load(source, check_files: bool = True) -> dict:
    """Validate a config (a YAML path or a dict), fill its defaults and check what the schema cannot.

    `check_files=False` skips what needs this machine's files (the ImageNet
    folder, where the checkpoint comes from): for commands that only read the
    grid, such as counting parameters.
    """
    where, raw = _read(source)
    cfg = copy.deepcopy(raw) if raw is not None else {}
    _validate(cfg, schema(), where)
    _check_experiments(cfg, where)
    _check_synthetic(cfg, where)
    if check_files:
        _check_backbone(cfg, where)
        _check_source(cfg, where)
    return cfg


def _read(source):
    if isinstance(source, dict):
        return "config", source
    path = Path(source)
    try:
        return path.name, yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise VitpeftError(f"config file not found: {path}") from None
    except yaml.YAMLError as error:
        raise VitpeftError(f"{path.name} is not valid YAML: {error}") from None


def _validate(instance, sch: dict, where: str, prefix: str = "") -> None:
    error = jsonschema.exceptions.best_match(_Validator(sch).iter_errors(instance))
    if error is not None:
        raise VitpeftError(f"{where}: {_describe(error, prefix)}")


def key_path(parts, prefix: str = "") -> str:
    """experiments, 3, method -> 'experiments[3].method'."""
    text = prefix
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _describe(error, prefix: str) -> str:
    path = key_path(error.absolute_path, prefix)
    if error.validator == "additionalProperties":
        allowed = ", ".join(error.schema.get("properties", {}))
        unknown = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        return f"{key_path([unknown[0]], path)}: unknown key (allowed here: {allowed})"
    if error.validator == "required":
        return f"{path or 'top level'}: {error.message}"
    return f"{path or 'top level'}: {error.message}"


def _check_experiments(cfg: dict, where: str) -> None:
    seen = set()
    depth = None
    train_schema = {**schema(), "$ref": "#/$defs/train", "properties": {}, "additionalProperties": True}
    for i, exp in enumerate(cfg["experiments"]):
        here = f"experiments[{i}]"
        if exp["name"] in seen or exp["name"] == PRETRAINED:
            reason = "is reserved for the untouched backbone" if exp["name"] == PRETRAINED else "is used twice"
            raise VitpeftError(f"{where}: {here}.name: {exp['name']!r} {reason}; experiment names must be unique")
        seen.add(exp["name"])
        _validate(_merged_train(cfg, exp), train_schema, where, f"{here}.train")
        depth = depth or _model_depth(cfg["backbone"]["model"], where)
        _check_method(exp, depth, where, here)


def _check_method(exp: dict, depth: int, where: str, here: str) -> None:
    from vitpeft import methods

    try:
        methods.check(exp["method"], exp["args"], depth)
    except VitpeftError as error:
        raise VitpeftError(f"{where}: {here}.args: {error}") from None


def _model_depth(model_cfg: dict, where: str) -> int:
    """Blocks of the configured model: from kwargs when given, else built on the meta device (no memory)."""
    depth = model_cfg["kwargs"].get("depth")
    if isinstance(depth, int):
        return depth
    from vitpeft.backbone import build_model

    try:
        return len(build_model(model_cfg, 2, device="meta").blocks)
    except Exception as error:  # timm's own message says what is wrong with the model settings
        raise VitpeftError(f"{where}: backbone.model: cannot build {model_cfg['name']!r}: {error}") from None


def _check_synthetic(cfg: dict, where: str) -> None:
    classes = cfg["synthetic"]["target_classes"]
    if cfg["target"]["dataset"] == "synthetic" and cfg["target"]["num_classes"] != classes:
        raise VitpeftError(
            f"{where}: target.num_classes: {cfg['target']['num_classes']} but the synthetic target domain "
            f"has synthetic.target_classes = {classes}; set them equal"
        )


def _check_backbone(cfg: dict, where: str) -> None:
    backbone = cfg["backbone"]
    if backbone["pretrain"] or backbone["url"] or backbone["timm_hub"] or Path(backbone["checkpoint"]).is_file():
        return
    raise VitpeftError(
        f"{where}: backbone.url: not set, nor backbone.timm_hub, and backbone.checkpoint "
        f"{backbone['checkpoint']!r} does not exist; say where the weights come from"
    )


def _check_source(cfg: dict, where: str) -> None:
    """ImageNet must be reachable when the source column is on and not yet prepared (a pulled cache suffices)."""
    source = cfg["source"]
    if not source["enabled"] or source["dataset"] != "imagenet" or _prepared(paths(cfg)["source_bank"]):
        return
    root = source["imagenet_dir"]
    hint = "point it at your ILSVRC2012 copy (train/ and val/ class folders) or set source.enabled: false"
    if root is None:
        raise VitpeftError(f"{where}: source.imagenet_dir: not set while source.enabled is true; {hint}")
    if not Path(root).is_dir():
        raise VitpeftError(f"{where}: source.imagenet_dir: {root!r} is not a folder; {hint}")
    try:
        from vitpeft.datasets import check_imagenet
    except ImportError:  # datasets.py not installed yet: the folder check above is all we can do
        return
    try:
        check_imagenet(root)
    except VitpeftError as error:
        raise VitpeftError(f"{where}: source.imagenet_dir: {error}") from None


def _prepared(folder: str) -> bool:
    return (Path(folder) / "meta.json").exists()


# ---------------------------------------------------------------- what the workflow reads


def paths(cfg: dict) -> dict:
    """Where every prepared dataset and the checkpoint live (relative to the working directory)."""
    data = Path(cfg["data_dir"])
    synthetic = data / "synthetic"
    target = synthetic / "target" if cfg["target"]["dataset"] == "synthetic" else data / "cifar100"
    if cfg["source"]["dataset"] == "synthetic":
        bank, queries = synthetic / "source" / "train", synthetic / "source" / "test"
    else:
        bank, queries = data / "imagenet" / "bank", data / "imagenet" / "queries"
    return {
        "cifar100_archive": str(data / "downloads" / "cifar-100-python.tar.gz"),
        "cifar100": str(data / "cifar100"),
        "synthetic": str(synthetic),
        "imagenet": str(data / "imagenet"),
        "target": str(target),
        "target_train": str(target / "train"),
        "target_test": str(target / "test"),
        "source_bank": str(bank),
        "source_queries": str(queries),
        "checkpoint": cfg["backbone"]["checkpoint"],
    }


def _merged_train(cfg: dict, exp: dict) -> dict:
    return {**cfg["train"], **exp.get("train", {})}


def _spec(cfg: dict, name: str, method: str, args: dict, train: dict) -> dict:
    where = paths(cfg)
    raw = {
        "name": name,
        "method": method,
        "args": args,
        "model": cfg["backbone"]["model"],
        "checkpoint": cfg["backbone"]["checkpoint"],
        "num_classes": cfg["target"]["num_classes"],
        "data": {
            "train": where["target_train"],
            "test": where["target_test"],
            "mean": cfg["target"]["mean"],
            "std": cfg["target"]["std"],
        },
        "train": train,
    }
    return spec_lib.resolve(raw, where=name)


def experiment_specs(cfg: dict) -> dict:
    """{experiment name: resolved spec}: the experiment merged over the config's shared settings."""
    return {
        exp["name"]: _spec(cfg, exp["name"], exp["method"], exp["args"], _merged_train(cfg, exp))
        for exp in cfg["experiments"]
    }


def pretrained_spec(cfg: dict) -> dict:
    """The untouched backbone as a spec (method linear: nothing but a head changes, and it is never trained).

    Its `train` section is left at the defaults: it is never trained, so a
    change of the shared training settings must not rerun its evaluations.
    """
    return _spec(cfg, PRETRAINED, "linear", {}, {})


def paper_figures(cfg: dict) -> dict:
    """{experiment name: {"params", "target", "source"}} for rows the paper publishes."""
    return {exp["name"]: dict(exp["paper"]) for exp in cfg["experiments"] if exp.get("paper")}


def stage_settings(cfg: dict) -> dict:
    """{stage: the settings its job depends on}, for the stages this config uses.

    A change in one reruns that job, and, through the job's stamp, what depends on it.
    """
    source, synthetic = cfg["source"], "synthetic" in (cfg["target"]["dataset"], cfg["source"]["dataset"])
    stages = {"config": cfg}  # the whole resolved config: what the report depends on
    if synthetic:
        stages["synthetic"] = cfg["synthetic"]
    if cfg["target"]["dataset"] == "cifar100":
        stages["cifar100"] = {key: cfg["target"][key] for key in ("url", "md5")}
    if not cfg["backbone"]["pretrain"]:
        stages["checkpoint"] = {key: cfg["backbone"][key] for key in ("url", "sha256", "timm_hub")}
    if cfg["backbone"]["pretrain"]:
        stages["pretrain"] = {"model": cfg["backbone"]["model"], "pretrain": cfg["pretrain"]}
    # The k-NN settings: every source score, and the head-less backbone's target score, use them.
    stages["knn"] = {key: source[key] for key in ("mean", "std", "k", "temperature")}
    if source["enabled"]:
        if source["dataset"] == "imagenet":
            # imagenet_dir is left out on purpose: the same images at another path are the same bank.
            stages["imagenet"] = {key: source[key] for key in ("bank_per_class", "query_per_class", "resize", "crop")}
    return stages


# ---------------------------------------------------------------- rerun only what changed


def read_stamp(path) -> dict:
    """{input path: sha256} from a job's stamp (`sha256sum` lines; other lines, e.g. the run token, are skipped)."""
    recorded = {}
    for line in Path(path).read_text().splitlines():
        digest, _, name = line.partition("  ")
        if len(digest) == 64 and name:
            recorded[os.path.normpath(name)] = digest
    return recorded


def sha256(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def settle(tracked, stamps) -> list:
    """Date ANCIENT each tracked file whose content every existing stamp recorded; return those files.

    `tracked` are the files that carry change between jobs (settings files and
    the jobs' stamps); `stamps` are the stamps, each listing the sha256 of the
    tracked files its job read. A file that every job reading it saw as it is
    now has changed nothing, so it must not look newer than any output,
    whatever dates a `dvc pull` or a copy gave it. A file some job saw
    differently keeps its date (when it was rewritten) and reruns that job.
    """
    seen = {}
    for stamp in stamps:
        if Path(stamp).is_file():
            for name, digest in read_stamp(stamp).items():
                seen.setdefault(name, set()).add(digest)
    settled = []
    for path in tracked:
        if Path(path).is_file() and seen.get(os.path.normpath(path), set()) <= {sha256(path)}:
            os.utime(path, (ANCIENT, ANCIENT))
            settled.append(str(path))
    return settled
