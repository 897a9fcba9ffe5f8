"""The workflow config: schema errors name the key, defaults come from the schema, the grids resolve."""

import os
from pathlib import Path

import jsonschema
import pytest
import yaml

from vitpeft import config, methods, spec, synthetic
from vitpeft.errors import VitpeftError

REPO = Path(__file__).resolve().parents[1]
PAPER = REPO / "config" / "config.yaml"
DEMO = REPO / "config" / "demo.yaml"
PAPER_NAMES = ["full", "top3", "linear", "lora_r4", "lora_r8", "lora_r16",
               "block_p1", "block_p2", "block_p3", "block_p4"]


def paper_raw(**changes) -> dict:
    raw = yaml.safe_load(PAPER.read_text())
    raw["source"]["enabled"] = False  # no ImageNet on test machines
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


def test_unknown_method_names_the_experiment_and_key(tmp_path):
    raw = paper_raw()
    raw["experiments"][3]["method"] = "lorra"
    message = error_of(write(tmp_path, raw))
    assert message.startswith("config.yaml: experiments[3].method: 'lorra' is not one of")
    assert "'lora'" in message


def test_wrong_type_names_the_key(tmp_path):
    raw = paper_raw()
    raw["train"]["steps"] = "many"
    assert error_of(write(tmp_path, raw)) == "config.yaml: train.steps: 'many' is not of type 'integer'"


def test_unknown_key_is_refused_at_any_depth():
    raw = paper_raw()
    raw["backbone"]["model"]["depht"] = 12
    message = error_of(raw)
    assert message.startswith("config: backbone.model.depht: unknown key")
    assert "img_size" in message
    assert error_of({"source": {"enabled": False}, "nmae": "x"}).startswith("config: nmae: unknown key")


def test_per_experiment_train_override_is_checked_like_the_shared_section():
    raw = paper_raw()
    raw["experiments"][0]["train"] = {"lr": 0}
    assert error_of(raw).startswith("config: experiments[0].train.lr: 0 is less than or equal to the minimum")
    raw["experiments"][0]["train"] = {"learning_rate": 0.1}
    assert error_of(raw).startswith("config: experiments[0].train.learning_rate: unknown key")


def test_duplicate_and_reserved_names_are_refused():
    raw = paper_raw()
    raw["experiments"][4]["name"] = "lora_r4"
    assert error_of(raw) == (
        "config: experiments[4].name: 'lora_r4' is used twice; experiment names must be unique"
    )
    raw["experiments"][4]["name"] = "pretrained"
    assert "experiments[4].name: 'pretrained' is reserved" in error_of(raw)


def test_method_arguments_are_checked_before_any_work():
    raw = paper_raw()
    raw["experiments"][1]["args"] = {"k": 13}  # top-k on a 12-block ViT-B
    assert error_of(raw) == "config: experiments[1].args: method 'topk': k=13 exceeds the model's 12 blocks"
    raw["experiments"][1]["args"] = {"rank": 4}
    assert error_of(raw).startswith("config: experiments[1].args: method 'topk': unknown argument 'rank'")


def test_source_evaluation_needs_an_imagenet_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no prepared ImageNet cache here
    raw = paper_raw()
    raw["source"]["enabled"] = True
    assert error_of(raw).startswith("config: source.imagenet_dir: not set while source.enabled is true")
    raw["source"]["imagenet_dir"] = str(tmp_path / "nowhere")
    assert error_of(raw).startswith(f"config: source.imagenet_dir: {str(tmp_path / 'nowhere')!r} is not a folder")
    (tmp_path / "imagenet" / "train").mkdir(parents=True)
    raw["source"]["imagenet_dir"] = str(tmp_path / "imagenet")
    assert error_of(raw).startswith("config: source.imagenet_dir:")  # no val/: the layout check speaks


def test_reading_only_the_grid_needs_no_imagenet(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = config.load(PAPER, check_files=False)
    assert cfg["source"]["enabled"] and cfg["source"]["imagenet_dir"] is None
    assert list(config.experiment_specs(cfg)) == PAPER_NAMES


def test_source_evaluation_accepts_an_imagenet_layout_or_a_prepared_cache(tmp_path, monkeypatch, make_dataset):
    monkeypatch.chdir(tmp_path)
    for split in ("train", "val"):
        (tmp_path / "imagenet" / split / "n01440764").mkdir(parents=True)
        (tmp_path / "imagenet" / split / "n01440764" / "a.JPEG").write_bytes(b"")
    raw = paper_raw()
    raw["source"].update(enabled=True, imagenet_dir=str(tmp_path / "imagenet"))
    assert config.load(raw)["source"]["imagenet_dir"] == str(tmp_path / "imagenet")
    # A teammate who pulled the prepared bank needs no ImageNet copy.
    raw["source"]["imagenet_dir"] = None
    (tmp_path / "data" / "imagenet").mkdir(parents=True)
    make_dataset("bank").rename(tmp_path / "data" / "imagenet" / "bank")
    assert config.load(raw)["source"]["enabled"] is True


def test_synthetic_target_classes_must_match_the_head():
    raw = yaml.safe_load(DEMO.read_text())
    raw["target"]["num_classes"] = 7
    assert error_of(raw).startswith("config: target.num_classes: 7 but the synthetic target domain")


def test_invalid_yaml_and_missing_file_are_named(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    assert error_of(bad).startswith("bad.yaml is not valid YAML")
    assert error_of(tmp_path / "absent.yaml").startswith("config file not found")


# ---------------------------------------------------------------- defaults and the grids


def test_every_default_comes_from_the_schema():
    cfg = config.load({"source": {"enabled": False}})
    assert cfg["name"] == "paper" and cfg["experiments"] == []
    assert cfg["train"] == {key: value for key, value in spec.DEFAULTS["train"].items()}
    assert cfg["source"]["k"] == [10, 20, 100, 200] and cfg["source"]["temperature"] == 0.07
    assert cfg["resources"]["evaluate"] == {"gpu": 1, "cpus": 8, "mem_mb": 64000, "runtime": 120}
    assert cfg["synthetic"] == synthetic.DEFAULTS
    partial = config.load({"source": {"enabled": False}, "resources": {"evaluate": {"gpu": 0}}})
    assert partial["resources"]["evaluate"] == {"gpu": 0, "cpus": 8, "mem_mb": 64000, "runtime": 120}


def test_config_readme_explains_every_key():
    readme = (REPO / "config" / "README.md").read_text()

    def walk(node, path):
        for key, sub in node.get("properties", {}).items():
            name = f"{path}.{key}" if path else key
            assert f"`{name}`" in readme, f"config/README.md does not explain {name}"
            target = whole["$defs"][sub["$ref"].split("/")[-1]] if "$ref" in sub else sub
            walk(target, name)

    whole = config.schema()
    walk(whole, "")
    walk(whole["$defs"]["experiment"], "experiments[]")


def test_schema_method_names_are_the_registry():
    item = config.schema()["$defs"]["experiment"]["properties"]["method"]
    assert sorted(item["enum"]) == sorted(methods.REGISTRY)


KEYWORDS = {"description", "type", "default", "enum", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
            "items", "minItems", "maxItems", "uniqueItems", "pattern", "minLength", "properties",
            "additionalProperties", "required", "$ref"}


def test_every_schema_key_is_described_with_known_keywords_only():
    # A stray keyword is silently ignored by JSON Schema (e.g. a YAML flow mapping split at a comma).
    jsonschema.Draft202012Validator.check_schema(config.schema())

    def walk(node, path):
        for key, sub in node.get("properties", {}).items():
            assert sub.get("description"), f"{path}.{key} has no description"
            assert set(sub) <= KEYWORDS, f"{path}.{key} has unknown keywords {set(sub) - KEYWORDS}"
            walk(sub, f"{path}.{key}")

    whole = config.schema()
    walk(whole, "config")
    for name, definition in whole["$defs"].items():
        walk(definition, f"$defs.{name}")


def test_paper_config_resolves_to_the_paper_grid():
    cfg = config.load(paper_raw())
    specs = config.experiment_specs(cfg)
    assert list(specs) == PAPER_NAMES
    lrs = {name: s["train"]["lr"] for name, s in specs.items()}
    assert lrs == {"full": 0.005, "top3": 0.005, "linear": 0.005, "lora_r4": 0.05, "lora_r8": 0.005,
                   "lora_r16": 0.05, "block_p1": 0.05, "block_p2": 0.05, "block_p3": 0.05, "block_p4": 0.05}
    assert specs["linear"]["train"]["warmup_steps"] == 100 and specs["full"]["train"]["warmup_steps"] == 500
    assert specs["top3"]["args"] == {"k": 3} and specs["block_p3"]["method"] == "block_expansion"
    assert specs["full"]["data"]["train"] == "data/cifar100/train"
    assert specs["full"]["checkpoint"] == "data/backbone/dino_vitbase16_pretrain.pth"
    assert all(s["train"]["steps"] == 10000 and s["train"]["batch_size"] == 128 for s in specs.values())
    assert specs == {name: spec.resolve(s) for name, s in specs.items()}  # already resolved, nothing to add


def test_paper_figures_ride_along():
    figures = config.paper_figures(config.load(paper_raw()))
    assert list(figures) == PAPER_NAMES
    assert figures["full"] == {"params": 85900000, "target": 88.13, "source": 25.24}
    assert figures["block_p3"] == {"params": 21300000, "target": 88.58, "source": 74.61}
    published = {  # PROTOCOL.md, the paper's table: (CIFAR-100, IN-1K)
        "full": (88.13, 25.24), "top3": (84.56, 74.15), "linear": (80.57, 76.11), "lora_r4": (87.91, 66.82),
        "lora_r8": (88.27, 65.99), "lora_r16": (87.84, 65.06), "block_p1": (82.72, 75.75),
        "block_p2": (86.70, 75.54), "block_p3": (88.58, 74.61), "block_p4": (89.09, 72.28),
    }
    assert {name: (f["target"], f["source"]) for name, f in figures.items()} == published


def test_the_pretrained_spec_ignores_training_settings():
    cfg = config.load(paper_raw())
    changed = config.load({**paper_raw(), "train": {"steps": 5}})
    assert config.pretrained_spec(cfg) == config.pretrained_spec(changed)
    assert config.pretrained_spec(cfg)["checkpoint"] == cfg["backbone"]["checkpoint"]
    assert config.experiment_specs(changed)["full"]["train"]["steps"] == 5


def test_demo_config_is_the_same_grid_offline():
    cfg = config.load(DEMO)
    specs = config.experiment_specs(cfg)
    assert list(specs) == PAPER_NAMES
    assert cfg["backbone"]["pretrain"] and cfg["target"]["dataset"] == "synthetic"
    assert specs["full"]["data"]["train"] == "data/demo/synthetic/target/train"
    assert config.paths(cfg)["source_bank"] == "data/demo/synthetic/source/train"
    assert cfg["resources"]["train"]["gpu"] == 0


# ---------------------------------------------------------------- settings files for rerun-only-what-changed


def test_settings_files_are_rewritten_only_on_change(tmp_path):
    path = tmp_path / "specs" / "a.yaml"
    assert spec.write_if_changed({"lr": 0.1}, path) is True
    os.utime(path, (1000, 1000))
    assert spec.write_if_changed({"lr": 0.1}, path) is False
    assert path.stat().st_mtime == 1000  # untouched: Snakemake sees no change
    assert spec.write_if_changed({"lr": 0.2}, path) is True
    assert path.stat().st_mtime > 1000 and yaml.safe_load(path.read_text()) == {"lr": 0.2}


def stamp(path, *inputs):
    """What a rule's STAMP writes: `sha256sum` of what the job read, then a run token."""
    lines = [f"{config.sha256(name)}  {name}" for name in inputs] + ["run 2026-01-01T00:00:00.1Z"]
    Path(path).write_text("\n".join(lines) + "\n")


def test_settle_dates_1970_only_what_every_reader_saw_as_it_is(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # stamps name files relative to the working directory, as in the workflow
    spec.write_if_changed({"lr": 0.1}, "spec.yaml")
    spec.write_if_changed({"k": [20]}, "knn.yaml")
    stamp("train.sha256", "spec.yaml")
    stamp("eval.sha256", "spec.yaml", "knn.yaml", "train.sha256")
    tracked, stamps = ["spec.yaml", "knn.yaml", "train.sha256", "eval.sha256"], ["train.sha256", "eval.sha256"]
    assert config.settle(tracked, stamps) == tracked  # as after a pull: nothing changed
    assert all(os.stat(name).st_mtime == config.ANCIENT for name in tracked)

    spec.write_if_changed({"lr": 0.2}, "spec.yaml")  # an edit: both readers saw the old spec
    assert config.settle(tracked, stamps) == ["knn.yaml", "train.sha256", "eval.sha256"]
    assert os.stat("spec.yaml").st_mtime > config.ANCIENT

    stamp("train.sha256", "spec.yaml")  # retrained, then stopped before the evaluation
    assert config.settle(tracked, stamps) == ["knn.yaml", "eval.sha256"]
    assert os.stat("train.sha256").st_mtime > config.ANCIENT  # so the stale evaluation reruns


def test_settle_ignores_missing_files_and_reads_only_digest_lines(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec.write_if_changed({"lr": 0.1}, "spec.yaml")
    stamp("train.sha256", "spec.yaml")
    assert config.read_stamp("train.sha256") == {"spec.yaml": config.sha256("spec.yaml")}
    assert config.settle(["spec.yaml", "absent.yaml"], ["train.sha256", "absent.sha256"]) == ["spec.yaml"]


def test_stage_settings_leave_out_the_imagenet_path():
    base = config.load(paper_raw())
    base["source"].update(enabled=True, imagenet_dir="/site/a")
    other = {**base, "source": {**base["source"], "imagenet_dir": "/site/b"}}
    assert config.stage_settings(base)["imagenet"] == config.stage_settings(other)["imagenet"]
    assert "synthetic" not in config.stage_settings(base) and "pretrain" not in config.stage_settings(base)
