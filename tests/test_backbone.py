"""Backbone: building timm ViTs, reading checkpoints safely, and DINO's k-NN feature."""

import pathlib

import pytest
import torch
from safetensors.torch import save_file

from vitpeft.models.backbone import build_model, features, read_state_dict
from vitpeft.models.layouts import load_backbone
from vitpeft.errors import VitpeftError

VIT_B = {"name": "vit_base_patch16_224", "img_size": 224, "kwargs": {}}


def dino_state(model):
    """A state dict as DINO publishes it: timm key names, no classifier head."""
    return {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("head.")}


@pytest.fixture
def source(tiny_model_cfg):
    torch.manual_seed(1)
    return build_model(tiny_model_cfg, num_classes=10)


@pytest.fixture
def target(tiny_model_cfg):
    torch.manual_seed(2)
    return build_model(tiny_model_cfg, num_classes=10)


def test_vit_b_on_meta_has_the_papers_size_and_no_storage():
    model = build_model(VIT_B, num_classes=100, device="meta")
    assert sum(p.numel() for p in model.parameters()) == 85_875_556
    assert all(p.is_meta for p in model.parameters())
    assert len(model.blocks) == 12 and model.embed_dim == 768


def test_unknown_model_name_is_an_error():
    with pytest.raises(VitpeftError, match="no_such_vit"):
        build_model({"name": "no_such_vit", "img_size": 32, "kwargs": {}}, num_classes=10)


def test_dino_style_pth_loads_every_backbone_weight_and_keeps_the_fresh_head(tmp_path, source, target):
    path = tmp_path / "dino_vitbase16_pretrain.pth"
    torch.save(dino_state(source), path)
    head_before = target.head.weight.clone()
    load_backbone(target, path)
    for key, value in dino_state(source).items():
        assert torch.equal(target.state_dict()[key], value), key
    assert torch.equal(target.head.weight, head_before)


def test_safetensors_and_wrapper_prefixes_are_read(tmp_path, source):
    state = dino_state(source)
    save_file({f"module.{k}": v.contiguous() for k, v in state.items()}, tmp_path / "w.safetensors")
    torch.save({f"backbone.{k}": v for k, v in state.items()}, tmp_path / "w.pth")
    for name in ("w.safetensors", "w.pth"):
        read = read_state_dict(tmp_path / name)
        assert read.keys() == state.keys()
        assert all(torch.equal(read[k], state[k]) for k in state)


def test_a_head_in_the_checkpoint_is_ignored(tmp_path, source, target):
    torch.save(source.state_dict(), tmp_path / "with_head.pth")
    head_before = target.head.weight.clone()
    load_backbone(target, tmp_path / "with_head.pth")
    assert torch.equal(target.head.weight, head_before)
    assert torch.equal(target.blocks[0].attn.qkv.weight, source.blocks[0].attn.qkv.weight)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_truncated_checkpoint_is_an_error_naming_the_file(tmp_path, source, suffix):
    path = tmp_path / f"cut{suffix}"
    if suffix == ".pth":
        torch.save(dino_state(source), path)
    else:
        save_file({k: v.contiguous() for k, v in dino_state(source).items()}, path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(VitpeftError, match=str(path.name)):
        read_state_dict(path)


class Payload:
    """Unpickling this would create a file: what an attacker's checkpoint could do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def test_a_pickle_with_arbitrary_objects_is_refused_and_never_run(tmp_path, source):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({**dino_state(source), "payload": Payload(marker)}, path)
    with pytest.raises(VitpeftError, match="evil.pth"):
        read_state_dict(path)
    assert not marker.exists()


def test_a_non_tensor_entry_is_an_error(tmp_path, source):
    torch.save({**dino_state(source), "epoch": 3}, tmp_path / "ckpt.pth")
    with pytest.raises(VitpeftError, match="'epoch' is not a tensor"):
        read_state_dict(tmp_path / "ckpt.pth")


def test_missing_keys_are_listed_with_their_count(tmp_path, source, target):
    state = {k: v for k, v in dino_state(source).items() if not k.startswith("blocks.11.")}
    torch.save(state, tmp_path / "short.pth")
    before = target.blocks[0].attn.qkv.weight.clone()
    with pytest.raises(VitpeftError, match=r"lacks 12 weights.*blocks\.11\.") as error:
        load_backbone(target, tmp_path / "short.pth")
    assert "more" in str(error.value)  # only the first few are listed
    assert torch.equal(target.blocks[0].attn.qkv.weight, before)  # nothing loaded


def test_unexpected_keys_are_an_error(tmp_path, source, target):
    torch.save({**dino_state(source), "blocks.12.norm1.weight": torch.ones(32)}, tmp_path / "long.pth")
    with pytest.raises(VitpeftError, match=r"1 weights the model lacks: blocks\.12\.norm1\.weight"):
        load_backbone(target, tmp_path / "long.pth")


def test_wrong_shape_names_key_and_both_shapes(tmp_path, source, target):
    state = dino_state(source)
    state["pos_embed"] = torch.zeros(1, 18, 32)  # 17 patch positions: no square grid to resample
    torch.save(state, tmp_path / "other_size.pth")
    with pytest.raises(VitpeftError, match=r"'pos_embed' has shape \(1, 18, 32\), the model expects \(1, 65, 32\)"):
        load_backbone(target, tmp_path / "other_size.pth")


def test_missing_file_and_unknown_format_are_errors(tmp_path, target):
    with pytest.raises(VitpeftError, match="not found"):
        load_backbone(target, tmp_path / "absent.pth")
    (tmp_path / "w.bin").write_bytes(b"x")
    with pytest.raises(VitpeftError, match="unknown format '.bin'"):
        read_state_dict(tmp_path / "w.bin")


def test_features_are_the_normed_cls_token_that_feeds_the_head(source):
    source.eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        feats = features(source, x)
        tokens = source.norm(source.blocks(source._pos_embed(source.patch_embed(x))))
    assert feats.shape == (3, 32)
    torch.testing.assert_close(feats, tokens[:, 0])
    torch.testing.assert_close(source.head(feats), source(x))
    assert not torch.allclose(feats.norm(dim=1), torch.ones(3))  # left unnormalised: the k-NN normalises


def test_timm_vit_b_uses_dinos_published_key_names():
    """DINO's dino_vitbase16_pretrain.pth holds exactly these keys; a timm upgrade that renames one breaks loading."""
    dino = {"cls_token", "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias", "norm.weight", "norm.bias"}
    for i in range(12):
        for layer in ("norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2"):
            dino |= {f"blocks.{i}.{layer}.weight", f"blocks.{i}.{layer}.bias"}
    model = build_model(VIT_B, num_classes=100, device="meta")
    assert set(model.state_dict()) - {"head.weight", "head.bias"} == dino
