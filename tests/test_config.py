"""The workflow config: schema errors name the key, defaults come from the schema, the grids resolve."""

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

from vitpeft.study import config
from vitpeft.cli.check import check_models
from vitpeft.methods import arguments, registry
from vitpeft.models import shapes
from vitpeft.study import schema
from vitpeft.study import spec
from vitpeft.data import synthetic
from vitpeft.errors import VitpeftError
from vitpeft.study.plan import Plan

REPO = Path(__file__).resolve().parents[1]
PAPER = REPO / "config" / "config.yaml"
DEMO = REPO / "config" / "demo.yaml"
PAPER_NAMES = ["full", "top3", "linear", "lora_r4", "lora_r8", "lora_r16",
               "block_p1", "block_p2", "block_p3", "block_p4"]


def paper_raw(**changes) -> dict:
    raw = yaml.safe_load(PAPER.read_text())
    raw.update(changes)
    return raw


def write(tmp_path, raw, name="config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw))
    return path


def error_of(source) -> str:
    with pytest.raises(VitpeftError) as caught:
        config.load(source)
    return str(caught.value)


# ---------------------------------------------------------------- one message naming the key


def test_unknown_method_names_the_experiment_by_its_name_and_the_file_as_given(tmp_path, monkeypatch):
    raw = paper_raw()
    raw["experiments"][3]["method"] = "lorra"
    (tmp_path / "config").mkdir()
    write(tmp_path / "config", raw, "mine.yaml")
    monkeypatch.chdir(tmp_path)
    message = error_of("config/mine.yaml")
    assert message.startswith("config/mine.yaml: experiment 'lora_r4': method: 'lorra' is not one of")
    assert "'lora'" in message


def test_wrong_type_names_the_key(tmp_path):
    raw = paper_raw()
    raw["train"]["steps"] = "many"
    path = write(tmp_path, raw)
    assert error_of(path) == f"{path}: train.steps: 'many' is not of type 'integer'"


def test_unknown_key_is_refused_at_any_depth():
    raw = paper_raw()
    raw["backbone"]["model"] = {"name": "vit_base_patch16_224", "depht": 12}
    message = error_of(raw)
    assert message.startswith("config: backbone.model.depht: unknown key")
    assert "img_size" in message
    assert error_of({"source": {"enabled": False}, "nmae": "x"}).startswith("config: nmae: unknown key")


def test_per_experiment_train_override_is_checked_like_the_shared_section():
    raw = paper_raw()
    raw["experiments"][0]["train"] = {"lr": 0}
    assert error_of(raw).startswith("config: experiment 'full': train.lr: 0 is less than or equal to the minimum")
    raw["experiments"][0]["train"] = {"learning_rate": 0.1}
    assert error_of(raw).startswith("config: experiment 'full': train.learning_rate: unknown key")
    raw["experiments"][0]["train"] = {}
    raw["experiments"][0]["nmae"] = "x"
    assert error_of(raw).startswith("config: experiment 'full': nmae: unknown key (allowed here: args, method,")


def test_duplicate_and_reserved_names_are_refused():
    raw = paper_raw()
    raw["experiments"][4]["name"] = "lora_r4"
    assert error_of(raw) == (
        "config: experiments[4].name: 'lora_r4' is used twice (also experiments[3]); experiment names must be unique"
    )
    raw["experiments"][4]["name"] = "pretrained"
    assert "experiments[4].name: 'pretrained' is reserved" in error_of(raw)


def models_error_of(raw) -> str:
    with pytest.raises(VitpeftError) as caught:
        check_models(config.load(raw))
    return str(caught.value)


def test_method_arguments_are_checked_against_the_model():
    raw = paper_raw()
    raw["experiments"][1]["args"] = {"k": 13}  # top-k on a 12-block ViT-B
    assert models_error_of(raw) == "config: experiment 'top3': args: method 'topk': k=13 exceeds the model's 12 blocks"
    raw["experiments"][1]["args"] = {"rank": 4}
    assert models_error_of(raw).startswith("config: experiment 'top3': args: method 'topk': unknown argument 'rank'")


def test_planning_needs_no_imagenet_no_checkpoint_and_no_torch(tmp_path):
    """The paper's config plans on a machine with nothing: no ImageNet, no weights, and torch never imported."""
    code = (
        "import sys; from vitpeft.study import config; from vitpeft.study.plan import Plan; "
        f"plan = Plan(config.load({str(PAPER)!r})); "
        "print(len(plan.runs), [m for m in ('torch', 'timm', 'peft') if m in sys.modules])"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert done.stdout.split(None, 1) == ["10", "[]\n"]


def test_unknown_target_datasets_are_named():
    raw = paper_raw()
    raw["target"]["datasets"] = ["cifar100", "cifar1000"]
    assert error_of(raw).startswith("config: target.datasets[1]: unknown dataset 'cifar1000'")


def test_seed_and_curve_steps_come_from_their_own_sections():
    raw = paper_raw()
    raw["train"]["seed"] = 3
    assert error_of(raw) == "config: train.seed: set by the workflow from the top-level `seeds` list, not here"
    raw = paper_raw()
    raw["experiments"][0]["train"] = {"curve_steps": [1]}
    assert error_of(raw).startswith("config: experiment 'full': train.curve_steps: set by the workflow from `curve.steps`")
    assert error_of(paper_raw(seeds=[])).startswith("config: seeds: [] should be non-empty")
    assert error_of(paper_raw(seeds=[0, 0])).startswith("config: seeds: [0, 0] has non-unique elements")


@pytest.mark.parametrize(
    "steps, message",
    [
        ([10, 5], "config: curve.steps: [10, 5] must be strictly increasing"),
        ([0, 10, 20000], "config: curve.steps: [0, 10, 20000] must lie within 0..10000 (train.steps)"),
        ([-1, 10], "config: curve.steps[0]: -1 is less than the minimum of 0"),
    ],
)
def test_bad_curve_steps_are_named_before_any_job(steps, message):
    raw = paper_raw(curve={"steps": steps})
    assert error_of(raw) == message


def test_curve_steps_must_fit_every_experiment():
    raw = paper_raw(curve={"steps": [0, 10, 1000]})
    raw["experiments"][2]["train"]["steps"] = 100
    assert error_of(raw).startswith("config: curve.steps: 1000 is beyond the train.steps (100) of experiment 'linear'")


@pytest.mark.parametrize("name", ["..", ".", ".hidden", "a/b", "../../etc", "-rf", "", "x" * 65, "a b"])
def test_hostile_names_are_refused_naming_the_key(name):
    raw = paper_raw()
    raw["experiments"][0]["name"] = name
    assert error_of(raw).startswith(f"config: experiments[0].name: {name!r} is not a safe name")
    assert error_of(paper_raw(name=name)).startswith(f"config: name: {name!r} is not a safe name")
    raw = paper_raw()
    raw["target"]["datasets"] = [name]
    assert error_of(raw).startswith(f"config: target.datasets[0]: {name!r} is not a safe name")


def test_invalid_yaml_and_missing_file_are_named_with_the_path_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ntrain: [unclosed\nseeds: [0]\n")
    assert error_of(bad) == (f"{bad}: not valid YAML: line 3, column 6: did not find expected ',' or ']' "
                             "(while parsing a flow sequence at line 2, column 8)")
    assert error_of(tmp_path / "absent.yaml") == f"config file not found: {tmp_path / 'absent.yaml'}"


NON_FINITE = [float("nan"), float("inf"), float("-inf")]


@pytest.mark.parametrize("value", NON_FINITE, ids=repr)
@pytest.mark.parametrize("where, key", [
    (("train", "lr"), "train.lr"),
    (("train", "crop_scale", 0), "train.crop_scale[0]"),
    (("source", "temperature"), "source.temperature"),
    (("source", "mean", 1), "source.mean[1]"),
    (("target", "std", 2), "target.std[2]"),
    (("pretrain", "lr"), "pretrain.lr"),
    (("experiments", 4, "train", "lr"), "experiment 'lora_r8': train.lr"),
    (("experiments", 4, "train", "hflip"), "experiment 'lora_r8': train.hflip"),
    (("experiments", 4, "args", "alpha"), "experiment 'lora_r8': args.alpha"),
    (("experiments", 4, "paper", "source"), "experiment 'lora_r8': paper.source"),
])  # fmt: skip
def test_nan_and_infinity_are_refused_for_every_number_naming_the_key(tmp_path, where, key, value):
    raw = paper_raw()
    node = raw
    for part in where[:-1]:
        node = node.setdefault(part, {}) if isinstance(part, str) else node[part]
    node[where[-1]] = value
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))  # written as YAML's .nan / .inf, read back as a user's file is
    assert error_of(path) == f"{path}: {key}: {value!r} is not a finite number"


def test_training_settings_that_contradict_each_other_name_the_file_and_the_experiment(tmp_path):
    raw = paper_raw()
    raw["experiments"][3]["train"] = {"crop_scale": [0.9, 0.1]}
    path = write(tmp_path, raw)
    assert error_of(path) == f"{path}: experiment 'lora_r4': train.crop_scale: [0.9, 0.1] must be [low, high] with low <= high"
    raw = paper_raw()
    raw["train"]["augment"] = {"trivial_augment": True, "rand_augment": {"n": 2}}
    assert error_of(write(tmp_path, raw)).startswith(f"{path}: train.augment: trivial_augment and rand_augment.n > 0")


def test_a_spec_refuses_nan_too():
    raw = {"name": "x", "method": "full", "num_classes": 10, "data": {"train": "t"}, "train": {"momentum": float("nan")}}
    with pytest.raises(VitpeftError, match=r"^spec: train.momentum: nan is not a finite number$"):
        spec.resolve(raw)


# ---------------------------------------------------------------- defaults and the grids


def test_every_default_comes_from_the_schema():
    cfg = config.load({})
    assert cfg["name"] == "paper" and cfg["experiments"] == [] and cfg["seeds"] == [0]
    train_defaults = schema.schema()["$defs"]["train_settings"]["properties"]
    assert cfg["train"]["augment"] == {"rand_augment": {"n": 0, "m": 9}, "trivial_augment": False, "erasing": 0.0}
    assert {key: cfg["train"][key] for key in train_defaults if key != "augment"} == {
        key: rule["default"] for key, rule in train_defaults.items() if key != "augment"}
    assert cfg["source"]["k"] == [10, 20, 100, 200] and cfg["source"]["temperature"] == 0.07
    assert cfg["resources"]["evaluate"] == {"gpu": 1, "cpus": 8, "mem_mb": 64000, "runtime": 120}
    assert cfg["synthetic"] == synthetic.DEFAULTS
    partial = config.load({"resources": {"evaluate": {"gpu": 0}}})
    assert partial["resources"]["evaluate"] == {"gpu": 0, "cpus": 8, "mem_mb": 64000, "runtime": 120}


def test_config_readme_holds_the_schemas_key_table_as_generated():
    """Every key documented, with the schema's own type, default and meaning (scripts/config-keys.py writes it)."""
    readme = (REPO / "config" / "README.md").read_text()
    assert schema.key_table() in readme, "config/README.md's key table is stale: run python scripts/config-keys.py"
    for key, *_ in schema.key_rows():
        assert f"| `{key}` |" in readme


def test_the_args_description_names_every_method_and_its_arguments():
    text = schema.schema()["$defs"]["experiment"]["properties"]["args"]["description"]
    for method, config_cls in arguments.CONFIGS.items():
        names = ["peft_type"] if method == "peft" else [field.name for field in dataclasses.fields(config_cls)]
        for word in (method, *names):
            assert re.search(rf"\b{word}\b", text), f"experiments[].args does not mention {method}'s {word}"


def test_schema_method_names_are_the_registry():
    item = schema.schema()["$defs"]["experiment"]["properties"]["method"]
    assert sorted(item["enum"]) == sorted(registry.REGISTRY)


KEYWORDS = {"description", "type", "default", "enum", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
            "items", "minItems", "maxItems", "uniqueItems", "pattern", "minLength", "properties",
            "additionalProperties", "unevaluatedProperties", "required", "$ref"}


def test_every_schema_key_is_described_with_known_keywords_only():
    # A stray keyword is silently ignored by JSON Schema (e.g. a YAML flow mapping split at a comma).
    jsonschema.Draft202012Validator.check_schema(schema.schema())

    def walk(node, path):
        for key, sub in node.get("properties", {}).items():
            assert sub.get("description"), f"{path}.{key} has no description"
            assert set(sub) <= KEYWORDS, f"{path}.{key} has unknown keywords {set(sub) - KEYWORDS}"
            walk(sub, f"{path}.{key}")

    whole = schema.schema()
    walk(whole, "config")
    for name, definition in whole["$defs"].items():
        walk(definition, f"$defs.{name}")


def test_paper_config_resolves_to_the_paper_grid():
    plan = Plan(config.load(paper_raw()))
    specs = {name: run.spec for (_, name, _), run in plan.runs.items()}
    assert list(specs) == PAPER_NAMES
    lrs = {name: s["train"]["lr"] for name, s in specs.items()}
    assert lrs == {"full": 0.005, "top3": 0.005, "linear": 0.005, "lora_r4": 0.05, "lora_r8": 0.005,
                   "lora_r16": 0.05, "block_p1": 0.05, "block_p2": 0.05, "block_p3": 0.05, "block_p4": 0.05}
    assert specs["linear"]["train"]["warmup_steps"] == 100 and specs["full"]["train"]["warmup_steps"] == 500
    assert specs["top3"]["args"] == {"k": 3} and specs["block_p3"]["method"] == "block_expansion"
    assert specs["full"]["data"]["train"] == f"{plan.targets['cifar100'].path}/train"
    assert specs["full"]["checkpoint"].endswith("/dino_vitbase16_pretrain.pth")
    assert all(s["train"]["steps"] == 10000 and s["train"]["batch_size"] == 128 for s in specs.values())
    assert specs == {name: spec.resolve(s) for name, s in specs.items()}  # already resolved, nothing to add


def test_paper_figures_ride_along():
    figures = config.paper_figures(config.load(paper_raw()))
    assert list(figures) == PAPER_NAMES
    assert figures["full"] == {"params": 85900000, "target": 88.13, "source": 25.24}
    assert figures["block_p3"] == {"params": 21300000, "target": 88.58, "source": 74.61}
    published = {  # docs/protocol.md, the paper's table: (CIFAR-100, IN-1K)
        "full": (88.13, 25.24), "top3": (84.56, 74.15), "linear": (80.57, 76.11), "lora_r4": (87.91, 66.82),
        "lora_r8": (88.27, 65.99), "lora_r16": (87.84, 65.06), "block_p1": (82.72, 75.75),
        "block_p2": (86.70, 75.54), "block_p3": (88.58, 74.61), "block_p4": (89.09, 72.28),
    }
    assert {name: (f["target"], f["source"]) for name, f in figures.items()} == published


def test_demo_config_is_the_same_grid_offline():
    cfg = config.load(DEMO)
    plan = Plan(cfg)
    visual_peft = ["vpt_deep", "ssf"]  # two of the visual PEFT families
    assert list(dict.fromkeys(name for _, name, _ in plan.runs)) == PAPER_NAMES + ["lpft", "l2sp"] + visual_peft
    assert cfg["seeds"] == [0] and plan.curve_steps() == [0, 10, 30, 100, 300]
    assert cfg["interpolation"] == {"enabled": True, "alphas": [0, 0.25, 0.5, 0.75, 1], "choose_on": "validation"}
    interpolated = {name for (_, name, _), run in plan.runs.items() if run.interpolation is not None}
    assert interpolated == set(PAPER_NAMES + ["lpft", "l2sp", "ssf"]) - {"linear"}  # not linear's backbone, nor VPT
    assert all((run.wise is not None) == (run.interpolation is not None) for run in plan.runs.values())
    # the synthetic target has no validation split: every run (linear too) trains without the held-out slice
    assert all(run.spec["train"]["hold_out"] is True for run in plan.runs.values())
    assert cfg["backbone"]["pretrain"] and cfg["target"]["datasets"] == ["synthetic"]
    run = plan.find("synthetic", "full", 0)
    assert run.spec["data"]["train"] == f"{plan.synthetic.path}/target/train"
    assert plan.source.info["bank"] == f"{plan.synthetic.path}/source/train"
    assert cfg["resources"]["train"]["gpu"] == 0


def test_the_paper_config_plans_no_mitigation_and_the_mitigation_config_adds_it():
    paper, mitigation = Plan(config.load(PAPER)), Plan(config.load(REPO / "config" / "mitigation.yaml"))
    assert not paper.interpolates and all(run.interpolation is None for run in paper.runs.values())
    assert paper.report_files() == [f"results/paper/{name}" for name in (
        "table.md", "table.csv", "table.tex", "table.html", "per_seed.csv", "index.csv", "tradeoff.png", "tradeoff.pdf",
        "cost.png", "cost.pdf", "runtimes.csv", "runtimes.html")]
    assert not any("hold_out" in run.spec["train"] for run in paper.runs.values())  # the paper's runs, as before
    names = [name for _, name, _ in mitigation.runs]
    assert names == [name for _, name, _ in paper.runs] + ["lpft", "l2sp"]
    assert mitigation.interpolates and mitigation.curve_data is not None  # the sweep's subsample, without a curve
    assert sum(run.interpolation is not None for run in mitigation.runs.values()) == len(names) - 1


def test_interpolation_and_mitigation_arguments_are_refused_while_planning_naming_the_key():
    raw = yaml.safe_load(DEMO.read_text())
    cases = [
        ({"interpolation": {"alphas": []}}, "config: interpolation.alphas: empty; give at least one alpha in [0, 1]"),
        ({"interpolation": {"alphas": [0, 1.5]}}, "config: interpolation.alphas[1]: 1.5 is outside [0, 1]"),
        ({"interpolation": {"alphas": [-0.5]}}, "config: interpolation.alphas[0]: -0.5 is outside [0, 1]"),
        ({"interpolation": {"alphas": [0.5, 0.5]}}, "config: interpolation.alphas: [0.5, 0.5] names an alpha twice"),
    ]
    for change, message in cases:
        with pytest.raises(VitpeftError) as error:
            config.load({**raw, **change})
        assert str(error.value).startswith(message), str(error.value)
    lpft = {**raw, "experiments": raw["experiments"][:1] + [{"name": "lp", "method": "lpft", "args": {"probe_steps": 300}}]}
    with pytest.raises(VitpeftError) as error:
        config.load(lpft)
    assert str(error.value) == ("config: experiment 'lp': args: method 'lpft': probe_steps=300 must be below the "
                                "run's train.steps (300), which the probe and the fine-tuning share")
    l2sp = {**raw, "experiments": [{"name": "reg", "method": "l2sp", "args": {"beta": -1}}]}
    with pytest.raises(VitpeftError) as error:
        config.load(l2sp)
    assert str(error.value) == "config: experiment 'reg': args: method 'l2sp': beta must be a finite number >= 0, got -1"


@pytest.mark.parametrize("experiment, message", [
    ({"name": "vpt", "method": "vpt_shallow", "args": {"length": 0}},
     "config: experiment 'vpt': args: method 'vpt_shallow': length must be an integer >= 1, got 0"),
    ({"name": "vpt", "method": "vpt_deep", "args": {"length": -5}},
     "config: experiment 'vpt': args: method 'vpt_deep': length must be an integer >= 1, got -5"),
    ({"name": "af", "method": "adaptformer", "args": {"bottleneck": 0}},
     "config: experiment 'af': args: method 'adaptformer': bottleneck must be an integer >= 1, got 0"),
    ({"name": "af", "method": "adaptformer", "args": {"scale": float("nan")}},
     "config: experiment 'af': args.scale: nan is not a finite number"),
    ({"name": "af", "method": "adaptformer", "args": {"scale": float("-inf")}},
     "config: experiment 'af': args.scale: -inf is not a finite number"),
    ({"name": "af", "method": "adaptformer", "args": {"scale": 0}},
     "config: experiment 'af': args: method 'adaptformer': scale must be a finite number > 0, got 0"),
    ({"name": "b", "method": "bitfit", "args": {"norms": True}},
     "config: experiment 'b': args: method 'bitfit': unknown argument 'norms' (allowed: none)"),
])
def test_visual_peft_arguments_out_of_range_are_refused_while_planning_naming_the_key(experiment, message):
    raw = yaml.safe_load(DEMO.read_text())
    with pytest.raises(VitpeftError) as error:
        config.load({**raw, "experiments": [experiment]})
    assert str(error.value) == message


@pytest.mark.parametrize(
    "target, message",
    [
        ({"datasets": ["mine"]}, "target.datasets[0]: unknown dataset 'mine' (built in: cifar10, cifar100"),
        ({"datasets": ["cifar100"], "mirrors": {"mine": {"url": "http://x"}}}, "target.mirrors.mine: mirrors are for"),
        ({"datasets": ["cifar10"], "imagefolders": {"cifar10": {"root": "/x", "num_classes": 2}}},
         "target.imagefolders.cifar10: the name of a built-in dataset"),
        ({"datasets": ["x"], "imagefolders": {"..": {"root": "/x", "num_classes": 2}}}, "target.imagefolders...: not"),
        ({"datasets": ["x"], "imagefolders": {"x": {"root": "/x"}}}, "'num_classes' is a required property"),
        ({"mirrors": {"cifar100": {"url": "ftp://x"}}}, "target.mirrors.cifar100.url: 'ftp://x' does not match"),
    ],
)
def test_target_dataset_settings_are_checked_naming_the_key(target, message):
    assert message in error_of(paper_raw(target=target))


def test_the_safe_name_pattern_is_the_schemas():
    assert schema.SAFE_NAME.pattern == schema.schema()["$defs"]["safe_name"]["pattern"].strip("^$")


def test_an_unknown_timm_architecture_is_refused_when_the_config_is_read():
    raw = paper_raw()
    raw["backbone"] = {"model": {"name": "vit_base_patch16_2244"}, "url": "https://example.org/w.pth"}
    with pytest.raises(VitpeftError) as caught:
        config.load(raw, describe=shapes.describe)
    assert str(caught.value).startswith("config: backbone.model: cannot build model 'vit_base_patch16_2244'")


def test_a_preset_fills_the_backbone_and_the_source_normalisation_but_what_is_written_wins():
    raw = paper_raw()
    raw["backbone"] = {"preset": "sup_vitb16_in21k"}
    cfg = config.load(raw)
    assert cfg["backbone"]["layout"] == "npz" and cfg["backbone"]["url"].endswith("ViT-B_16.npz")
    assert cfg["source"]["mean"] == cfg["source"]["std"] == [0.5, 0.5, 0.5]
    raw["backbone"]["timm_hub"] = "timm/vit_base_patch16_224.orig_in21k"
    assert config.load(raw)["backbone"]["layout"] == "timm"  # the hub copy is in timm's names
    raw["source"]["mean"] = [0.4, 0.4, 0.4]
    assert config.load(raw)["source"]["mean"] == [0.4, 0.4, 0.4]
    assert "backbone.preset: unknown backbone preset 'dino_vitb17'" in error_of(paper_raw(backbone={"preset": "dino_vitb17"}))


def test_a_backbone_without_weights_is_refused_naming_the_keys():
    raw = paper_raw(backbone={"preset": None, "url": None, "timm_hub": None, "checkpoint": None})
    assert error_of(raw) == ("config: backbone: no weights: set backbone.url, backbone.timm_hub or "
                             "backbone.checkpoint (a local file), or backbone.preset")
