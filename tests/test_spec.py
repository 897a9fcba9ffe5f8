"""The experiment spec: defaults from the one schema, refusals naming the key, canonical hashing."""

import pytest

from vitpeft.study import spec as spec_lib
from vitpeft.errors import VitpeftError

MINIMAL = {"name": "lora_r8", "method": "lora", "num_classes": 100, "data": {"train": "data/cifar100/train"}}


def test_defaults_are_the_papers_protocol():
    spec = spec_lib.resolve(MINIMAL)
    train = spec["train"]
    assert (train["steps"], train["batch_size"], train["lr"], train["momentum"]) == (10000, 128, 0.005, 0.9)
    assert (train["warmup_steps"], train["weight_decay"], train["selection"]) == (500, 0.0, "last")
    assert spec["data"]["mean"] == spec["data"]["std"] == [0.5, 0.5, 0.5]
    assert spec["model"]["name"] == "vit_base_patch16_224" and spec["model"]["img_size"] == 224
    assert train["seed"] == 0 and train["curve_steps"] == [] and spec["data"]["val"] is None


def test_every_spec_default_is_the_schemas():
    """One source of truth: the spec's training defaults are the config schema's, key for key."""
    from vitpeft.study import config
    from vitpeft.study import schema

    settings = schema.schema()["$defs"]["train_settings"]["properties"]
    train = spec_lib.resolve(MINIMAL)["train"]
    shared = config.load({})["train"]
    assert {key: train[key] for key in settings} == shared
    assert {key: shared[key] for key in settings if key != "augment"} == {
        key: rule["default"] for key, rule in settings.items() if key != "augment"}


@pytest.mark.parametrize(
    "raw, named",
    [
        ({k: v for k, v in MINIMAL.items() if k != "method"}, "top level: 'method' is a required property"),
        ({**MINIMAL, "data": {}}, "data: 'train' is a required property"),
        ({**MINIMAL, "learning_rate": 0.1}, "learning_rate: unknown key"),
        ({**MINIMAL, "train": {"lr": 0.1, "stpes": 3}}, "train.stpes: unknown key"),
        ({**MINIMAL, "train": {"lr": -1}}, "train.lr: -1 is less than or equal to the minimum"),
        ({**MINIMAL, "train": {"steps": 0}}, "train.steps: 0 is less than the minimum"),
        ({**MINIMAL, "train": {"log_every": 0}}, "train.log_every"),
        ({**MINIMAL, "train": {"crop_scale": [0.9, 0.1]}}, r"train.crop_scale: \[0.9, 0.1\] must be \[low, high\]"),
        ({**MINIMAL, "train": {"hflip": 2}}, "train.hflip"),
        ({**MINIMAL, "train": {"selection": "best"}}, "train.selection: 'best' is not one of"),
        ({**MINIMAL, "train": {"selection": "best_test"}}, "data.test: must be set when train.selection is best_test"),
        ({**MINIMAL, "model": "vit"}, "model: 'vit' is not of type 'object'"),
        ({**MINIMAL, "train": {"steps": 20, "curve_steps": [0, 30]}}, r"train.curve_steps: \[0, 30\] must lie within 0..20"),
        ({**MINIMAL, "train": {"curve_steps": [10, 5]}}, r"train.curve_steps: \[10, 5\] must be strictly increasing"),
        ({**MINIMAL, "train": {"seed": -1}}, "train.seed"),
        ({**MINIMAL, "train": {"augment": {"rand_augment": {"n": -1}}}}, "train.augment.rand_augment.n: -1 is less"),
        ({**MINIMAL, "train": {"augment": {"rand_augment": {"m": 31}}}}, "train.augment.rand_augment.m: 31 is greater"),
        ({**MINIMAL, "train": {"augment": {"erasing": 1.5}}}, "train.augment.erasing: 1.5 is greater"),
        ({**MINIMAL, "train": {"augment": {"erasing": "0.2"}}}, "train.augment.erasing: '0.2' is not of type"),
        ({**MINIMAL, "train": {"augment": {"rand_augment": {"n": 2}, "trivial_augment": True}}},
         "train.augment: trivial_augment and rand_augment.n > 0 both set"),
    ],
)
def test_bad_specs_are_refused_naming_the_key(raw, named):
    with pytest.raises(VitpeftError, match=named):
        spec_lib.resolve(raw)


def test_load_names_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\nmethod: full\n")
    with pytest.raises(VitpeftError, match=r"bad.yaml: top level: 'num_classes' is a required property"):
        spec_lib.load(path)
    with pytest.raises(VitpeftError, match="not found"):
        spec_lib.load(tmp_path / "missing.yaml")


def test_hash_depends_on_content_not_key_order():
    a = spec_lib.resolve(MINIMAL)
    b = spec_lib.resolve(dict(reversed(list(MINIMAL.items()))))
    assert spec_lib.spec_hash(a) == spec_lib.spec_hash(b)
    changed = spec_lib.resolve({**MINIMAL, "train": {"lr": 0.05}})
    assert spec_lib.spec_hash(changed) != spec_lib.spec_hash(a)
