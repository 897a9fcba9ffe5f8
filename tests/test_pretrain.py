"""The demo's stand-in for DINO: a head-less safetensors backbone that load_backbone reads like DINO's file."""

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from vitpeft.models import backbone
from vitpeft.models import layouts
from vitpeft.models import pretrain
from vitpeft.data import synthetic
from vitpeft.cli import main
from vitpeft.errors import VitpeftError

FEW_STEPS = {"steps": 3, "batch_size": 8, "lr": 0.001, "seed": 0}


@pytest.fixture(scope="module")
def source_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic")
    cfg = {"source_classes": 4, "target_classes": 3, "train_per_class": 8, "test_per_class": 2, "image_size": 32}
    synthetic.write_domains(synthetic.make_domains(cfg), out)
    return out / "source"


def test_pretrain_writes_a_headless_backbone_that_load_backbone_accepts(source_dir, tiny_model_cfg, tmp_path):
    model = pretrain.pretrain(FEW_STEPS, tiny_model_cfg, source_dir / "train", log=lambda line: None)
    path = tmp_path / "backbone.safetensors"
    pretrain.save_backbone(model, path)

    saved = load_file(str(path))
    assert not any(key.startswith("head.") for key in saved)
    assert set(saved) == {k for k in model.state_dict() if not k.startswith("head.")}

    fresh = backbone.build_model(tiny_model_cfg, num_classes=7)  # another task's head: must not matter
    layouts.load_backbone(fresh, path)
    for key, value in saved.items():
        torch.testing.assert_close(fresh.state_dict()[key], value, rtol=0, atol=0)


def test_pretraining_changes_the_weights_and_is_deterministic(source_dir, tiny_model_cfg):
    torch.manual_seed(0)
    untrained = backbone.build_model(tiny_model_cfg, num_classes=4)
    first = pretrain.pretrain(FEW_STEPS, tiny_model_cfg, source_dir / "train", log=lambda line: None)
    second = pretrain.pretrain(FEW_STEPS, tiny_model_cfg, source_dir / "train", log=lambda line: None)
    for key, value in first.state_dict().items():
        torch.testing.assert_close(value, second.state_dict()[key], rtol=0, atol=0)
    moved = [k for k, v in first.state_dict().items() if not torch.equal(v, untrained.state_dict()[k])]
    assert "blocks.0.attn.qkv.weight" in moved and "patch_embed.proj.weight" in moved


def test_learning_rate_warms_up_then_decays_to_zero():
    rates = [pretrain.lr_at(step, 100, 1.0) for step in range(100)]
    assert rates[0] == pytest.approx(0.1) and rates[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(rates[9:], rates[10:]))
    assert rates[-1] < 0.01


def test_bad_pretrain_settings_are_refused_by_name():
    with pytest.raises(VitpeftError, match="pretrain.steps"):
        pretrain.check({"steps": 0})
    with pytest.raises(VitpeftError, match="pretrain.lr"):
        pretrain.check({"lr": -1})
    with pytest.raises(VitpeftError, match="epochs"):
        pretrain.check({"epochs": 3})


def write_config(folder, model_cfg, pretrain_section: str):
    """A workflow config for the demo's pretraining on the tiny model."""
    config = folder / "c.yaml"
    config.write_text(
        "name: t\n"
        f"backbone: {{pretrain: true, model: {{name: {model_cfg['name']}, img_size: 32, "
        f"kwargs: {model_cfg['kwargs']}}}}}\n"
        "target: {datasets: [synthetic]}\nsource: {dataset: synthetic}\n"
        "synthetic: {source_classes: 4, target_classes: 3}\n"
        f"pretrain: {pretrain_section}\n"
        "experiments: [{name: lin, method: linear}]\n"
    )
    return config


def test_pretrain_command_writes_the_checkpoint(source_dir, tiny_model_cfg, tmp_path):
    config = write_config(tmp_path, tiny_model_cfg, "{steps: 2, batch_size: 4, lr: 0.001}")
    out = tmp_path / "pre.safetensors"
    args = ["pretrain", "--config", str(config), "--data", str(source_dir), "--device", "cpu"]
    assert main([*args, "--out", str(out)]) == 0
    model = backbone.build_model(tiny_model_cfg, num_classes=3)
    layouts.load_backbone(model, out)
    assert np.isfinite(load_file(str(out))["norm.weight"].numpy()).all()
    assert main([*args, "--out", str(tmp_path / "pre.pth")]) == 2  # not safetensors
    assert not (tmp_path / "pre.pth").exists()


def test_pretraining_that_diverges_stops_with_one_line_and_writes_nothing(source_dir, tiny_model_cfg, tmp_path, capsys):
    # lr 1e30: the first update throws the weights to ~1e30, so the second step's logits overflow.
    with pytest.raises(VitpeftError, match=r"pretraining diverged: the loss became (nan|inf) at step 2 of 3; lower"):
        pretrain.pretrain({**FEW_STEPS, "lr": 1e30}, tiny_model_cfg, source_dir / "train", log=lambda line: None)

    config = write_config(tmp_path, tiny_model_cfg, "{steps: 3, batch_size: 4, lr: 1.0e+30}")
    out = tmp_path / "pre.safetensors"
    args = ["pretrain", "--config", str(config), "--data", str(source_dir), "--device", "cpu", "--out", str(out)]
    assert main(args) == 2
    assert "pretraining diverged" in capsys.readouterr().err.strip().splitlines()[-1]
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml"]
