"""The experiment spec: defaults, refusals naming the key, canonical hashing, change-aware writes."""

import os

import pytest

from vitpeft import spec as spec_lib
from vitpeft.errors import VitpeftError

MINIMAL = {"name": "lora_r8", "method": "lora", "num_classes": 100, "data": {"train": "data/cifar100/train"}}


def test_defaults_are_the_papers_protocol():
    spec = spec_lib.resolve(MINIMAL)
    train = spec["train"]
    assert (train["steps"], train["batch_size"], train["lr"], train["momentum"]) == (10000, 128, 0.005, 0.9)
    assert (train["warmup_steps"], train["weight_decay"], train["selection"]) == (500, 0.0, "last")
    assert spec["data"]["mean"] == spec["data"]["std"] == [0.5, 0.5, 0.5]
    assert spec["model"]["name"] == "vit_base_patch16_224" and spec["model"]["img_size"] == 224


@pytest.mark.parametrize(
    "raw, named",
    [
        ({k: v for k, v in MINIMAL.items() if k != "method"}, "'method'"),
        ({**MINIMAL, "data": {}}, "'data.train'"),
        ({**MINIMAL, "learning_rate": 0.1}, "'learning_rate'"),
        ({**MINIMAL, "train": {"lr": 0.1, "stpes": 3}}, "'train.stpes'"),
        ({**MINIMAL, "train": {"lr": -1}}, "'train.lr'"),
        ({**MINIMAL, "train": {"steps": 0}}, "'train.steps'"),
        ({**MINIMAL, "train": {"log_every": 0}}, "'train.log_every'"),
        ({**MINIMAL, "train": {"crop_scale": [0.9, 0.1]}}, "'train.crop_scale'"),
        ({**MINIMAL, "train": {"hflip": 2}}, "'train.hflip'"),
        ({**MINIMAL, "train": {"selection": "best"}}, "'train.selection'"),
        ({**MINIMAL, "train": {"selection": "best_test"}}, "'data.test'"),
        ({**MINIMAL, "model": "vit"}, "'model'"),
    ],
)
def test_bad_specs_are_refused_naming_the_key(raw, named):
    with pytest.raises(VitpeftError, match=named):
        spec_lib.resolve(raw)


def test_load_names_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\nmethod: full\n")
    with pytest.raises(VitpeftError, match=r"bad.yaml.*'num_classes'"):
        spec_lib.load(path)
    with pytest.raises(VitpeftError, match="not found"):
        spec_lib.load(tmp_path / "missing.yaml")


def test_hash_depends_on_content_not_key_order():
    a = spec_lib.resolve(MINIMAL)
    b = spec_lib.resolve(dict(reversed(list(MINIMAL.items()))))
    assert spec_lib.spec_hash(a) == spec_lib.spec_hash(b)
    changed = spec_lib.resolve({**MINIMAL, "train": {"lr": 0.05}})
    assert spec_lib.spec_hash(changed) != spec_lib.spec_hash(a)


def test_write_if_changed_keeps_mtime_of_unchanged_content(tmp_path):
    path = tmp_path / "specs" / "lora_r8.yaml"
    spec = spec_lib.resolve(MINIMAL)
    assert spec_lib.write_if_changed(spec, path)
    os.utime(path, (1, 1))
    assert not spec_lib.write_if_changed(spec, path)
    assert path.stat().st_mtime == 1
    assert spec_lib.load(path) == spec
    assert spec_lib.write_if_changed(spec_lib.resolve({**MINIMAL, "train": {"lr": 0.05}}), path)
    assert path.stat().st_mtime > 1

