"""Backbone presets: the table against timm, official checkpoint layouts loaded into tiny models, methods on every family."""

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from timm.layers import Attention
from timm.models import get_pretrained_cfg

from vitpeft.models import presets
from vitpeft.methods import registry
from vitpeft.study import spec as spec_lib
from vitpeft.models.backbone import build_model, features, shape_of
from vitpeft.models.layouts import load_backbone
from vitpeft.models import shapes
from vitpeft.errors import VitpeftError
from vitpeft.methods import block_expansion

PRESETS = sorted(presets.PRESETS)
OFFICIAL_HOSTS = ("https://dl.fbaipublicfiles.com/", "https://storage.googleapis.com/")
NUM_CLASSES = 100


# --- the table against timm -------------------------------------------------------------------

@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_is_the_timm_architecture_it_claims(name):
    preset = presets.PRESETS[name]
    assert timm.is_model(preset["arch"])
    model = build_model(presets.model_cfg(name), num_classes=0, device="meta")
    assert shape_of(model) == {key: preset[key] for key in presets.SHAPE_KEYS}
    assert model.patch_embed.img_size == (preset["img_size"], preset["img_size"])
    assert preset["layout"] in presets.LAYOUTS and preset["feature"] in presets.FEATURES
    assert Path(preset["url"]).suffix == (".npz" if preset["layout"] == "npz" else ".pth")


@pytest.mark.parametrize("name", [name for name in PRESETS if presets.PRESETS[name]["timm_hub"]])
def test_hub_ids_normalisation_and_urls_agree_with_timms_pretrained_configs(name):
    preset = presets.PRESETS[name]
    tag = preset["timm_hub"].removeprefix("timm/")
    cfg = get_pretrained_cfg(tag)
    assert cfg is not None and cfg.hf_hub_id == preset["timm_hub"]
    assert tag.split(".")[0] == preset["arch"]
    assert (list(cfg.mean), list(cfg.std)) == (preset["mean"], preset["std"])
    if cfg.url.startswith(OFFICIAL_HOSTS):  # timm's own re-uploads (GitHub releases) are not the official file
        assert cfg.url == preset["url"]


def test_the_default_preset_is_the_papers_backbone():
    preset = presets.get(presets.DEFAULT)
    assert presets.model_cfg(presets.DEFAULT) == {"name": "vit_base_patch16_224", "img_size": 224, "kwargs": {}}
    assert preset["url"] == "https://dl.fbaipublicfiles.com/dino/dino_vitbase16_pretrain/dino_vitbase16_pretrain.pth"


def test_unknown_preset_is_an_error_listing_the_known_ones():
    with pytest.raises(VitpeftError, match="unknown backbone preset 'dino_vitz'.*dinov2_vitb14_reg"):
        presets.get("dino_vitz")


def test_describe_reads_the_table_without_importing_torch():
    code = (
        "import sys; from vitpeft.models import shapes; "
        "d = shapes.describe({'name': 'vit_large_patch16_224', 'img_size': 224, 'kwargs': {}}); "
        "assert 'torch' not in sys.modules, 'torch imported'; print(d['depth'], d['embed_dim'], d['img_size'])"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["24", "1024", "224"]


def test_describe_builds_other_models_on_the_meta_device(tiny_model_cfg):
    described = shapes.describe(tiny_model_cfg)  # kwargs change the architecture: timm builds it
    assert described == {"patch_size": 4, "depth": 12, "embed_dim": 32, "num_heads": 2, "mlp_ratio": 4.0,
                         "prefix_tokens": 1, "registers": 0, "layer_scale": False, "img_size": 32}
    eva = shapes.describe({"name": "eva02_tiny_patch14_224", "img_size": 224, "kwargs": {}})
    assert (eva["depth"], eva["embed_dim"], eva["patch_size"]) == (12, 192, 14)


# --- exact trainable counts per method and preset, by hand ------------------------------------

def block_params(d, layer_scale):
    # norm1 2d, qkv 3d^2+3d, proj d^2+d, norm2 2d, fc1 4d^2+4d, fc2 4d^2+d; LayerScale ls1, ls2: 2d
    return 12 * d * d + 13 * d + (2 * d if layer_scale else 0)


def hand_counts(preset):
    d, depth, patch = preset["embed_dim"], preset["depth"], preset["patch_size"]
    head = d * NUM_CLASSES + NUM_CLASSES
    block = block_params(d, preset["layer_scale"])
    grid = (preset["img_size"] // patch) ** 2
    positions = grid + (0 if preset["registers"] else 1)  # timm's register models give CLS no position
    embedding = d * 3 * patch * patch + d + preset["prefix_tokens"] * d + positions * d
    return {
        "full": embedding + depth * block + 2 * d + head,
        "topk": 3 * block + 2 * d + head,
        "linear": head,
        "lora": depth * 2 * (8 * d + d * 8) + head,  # r=8 on q and on v: A is r x d, B is d x r
        "block_expansion": 2 * block + head,
    }


GRID = {"full": {}, "topk": {"k": 3}, "linear": {}, "lora": {"r": 8}, "block_expansion": {"p": 2}}


def count(preset_name, method, args):
    spec = spec_lib.resolve({"name": method, "method": method, "args": args, "model": presets.model_cfg(preset_name),
                             "num_classes": NUM_CLASSES, "data": {"train": "unused"}})
    return registry.count_trainable(spec)


# Presets of one architecture build the same model (checked above), so one preset per architecture is counted.
ONE_PER_ARCH = sorted({presets.PRESETS[name]["arch"]: name for name in reversed(PRESETS)}.values())


@pytest.mark.parametrize("name", ONE_PER_ARCH)
def test_trainable_counts_of_every_method_match_the_hand_count(name):
    counts = {method: count(name, method, args) for method, args in GRID.items()}
    assert counts == hand_counts(presets.PRESETS[name])


def test_hand_count_of_vit_b16_is_the_papers():
    assert hand_counts(presets.PRESETS["dino_vitb16"])["full"] == 85_875_556
    assert hand_counts(presets.PRESETS["dino_vitb16"])["topk"] == 21_342_052


def test_block_expansion_interval_follows_a_24_block_depth():
    after = {p: block_expansion.Config(p=p).insert_after(24) for p in (1, 2, 3, 4)}
    assert after == {1: [23], 2: [12, 24], 3: [8, 16, 24], 4: [6, 12, 18, 24]}
    vit_l = presets.PRESETS["sup_vitl16_in21k"]
    assert count("sup_vitl16_in21k", "block_expansion", {"p": 4}) == (
        4 * block_params(1024, False) + 1024 * NUM_CLASSES + NUM_CLASSES)
    assert vit_l["depth"] == 24
    with pytest.raises(VitpeftError, match="p=25 exceeds the model's 24 blocks"):
        count("sup_vitl16_in21k", "block_expansion", {"p": 25})


@pytest.mark.parametrize("arch", sorted(presets.ARCHITECTURES))
def test_every_architecture_uses_timms_fused_qkv_attention(arch):
    """LoRA splits attn.qkv into q, k, v: every block of every preset must have that fused Linear."""
    model = build_model({"name": arch, "img_size": 224, "kwargs": {}}, num_classes=0, device="meta")
    for block in model.blocks:
        assert type(block.attn) is Attention
        assert block.attn.qkv.out_features == 3 * model.embed_dim


# --- tiny models of each family, official files -----------------------------------------------

TINY_KWARGS = {"patch_size": 4, "embed_dim": 32, "depth": 2, "num_heads": 2}
TINY_IMG = 32  # an 8x8 patch grid


def tiny_cfg(preset_name, img_size=TINY_IMG):
    return {"name": presets.PRESETS[preset_name]["arch"], "img_size": img_size, "kwargs": dict(TINY_KWARGS)}


def tiny(preset_name, seed=0, img_size=TINY_IMG):
    torch.manual_seed(seed)
    return build_model(tiny_cfg(preset_name, img_size), num_classes=10).eval()


def official_state(preset, grid, seed=1, d=32, depth=2, patch=4):
    """Random weights under the key names the preset's official (PyTorch) file uses: DINO, MAE, DINOv2."""
    generator = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.randn(*shape, generator=generator) * 0.2

    dinov2 = preset["layout"] == "dinov2"
    state = {"cls_token": rand(1, 1, d), "pos_embed": rand(1, 1 + grid * grid, d),  # CLS position included
             "patch_embed.proj.weight": rand(d, 3, patch, patch), "patch_embed.proj.bias": rand(d),
             "norm.weight": 1 + rand(d), "norm.bias": rand(d)}
    for i in range(depth):
        layers = {"norm1": (d,), "attn.qkv": (3 * d, d), "attn.proj": (d, d), "norm2": (d,),
                  "mlp.fc1": (4 * d, d), "mlp.fc2": (d, 4 * d)}
        for layer, shape in layers.items():
            state[f"blocks.{i}.{layer}.weight"] = rand(*shape) + (1 if layer.startswith("norm") else 0)
            state[f"blocks.{i}.{layer}.bias"] = rand(shape[0])
        if dinov2:
            state[f"blocks.{i}.ls1.gamma"] = rand(d)
            state[f"blocks.{i}.ls2.gamma"] = rand(d)
    if dinov2:
        state["mask_token"] = rand(1, d)
        if preset["registers"]:
            state["register_tokens"] = rand(1, preset["registers"], d)
    return state


def in_timms_names(preset, official):
    """What the official weights are called in timm's model: DINOv2's registers and CLS position move."""
    state = {k: v for k, v in official.items() if k not in ("mask_token", "register_tokens")}
    if preset["registers"]:
        state["reg_token"] = official["register_tokens"]
        state["cls_token"] = official["cls_token"] + official["pos_embed"][:, :1]
        state["pos_embed"] = official["pos_embed"][:, 1:]
    return state


def google_npz(state, path, heads=2, classes=21):
    """timm-named ViT weights written as Google's original ViT .npz (with its head and pre_logits layer)."""
    d = state["cls_token"].shape[-1]
    arrays = {
        "embedding/kernel": state["patch_embed.proj.weight"].permute(2, 3, 1, 0),  # OIHW -> HWIO
        "embedding/bias": state["patch_embed.proj.bias"],
        "cls": state["cls_token"],
        "Transformer/posembed_input/pos_embedding": state["pos_embed"],
        "Transformer/encoder_norm/scale": state["norm.weight"],
        "Transformer/encoder_norm/bias": state["norm.bias"],
        "pre_logits/kernel": torch.randn(d, d), "pre_logits/bias": torch.randn(d),
        "head/kernel": torch.randn(d, classes), "head/bias": torch.randn(classes),
    }
    depth = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
    for i in range(depth):
        b, g = f"blocks.{i}.", f"Transformer/encoderblock_{i}/"
        attention = g + "MultiHeadDotProductAttention_1/"
        for name, rows in zip(("query", "key", "value"), state[b + "attn.qkv.weight"].chunk(3)):
            arrays[attention + f"{name}/kernel"] = rows.T.reshape(d, heads, d // heads)
        for name, rows in zip(("query", "key", "value"), state[b + "attn.qkv.bias"].chunk(3)):
            arrays[attention + f"{name}/bias"] = rows.reshape(heads, d // heads)
        arrays[attention + "out/kernel"] = state[b + "attn.proj.weight"].T.reshape(heads, d // heads, d)
        arrays[attention + "out/bias"] = state[b + "attn.proj.bias"]
        for norm, ours in (("LayerNorm_0", "norm1"), ("LayerNorm_2", "norm2")):
            arrays[g + f"{norm}/scale"] = state[b + f"{ours}.weight"]
            arrays[g + f"{norm}/bias"] = state[b + f"{ours}.bias"]
        for dense, ours in (("Dense_0", "fc1"), ("Dense_1", "fc2")):
            arrays[g + f"MlpBlock_3/{dense}/kernel"] = state[b + f"mlp.{ours}.weight"].T
            arrays[g + f"MlpBlock_3/{dense}/bias"] = state[b + f"mlp.{ours}.bias"]
    np.savez(path, **{key: value.contiguous().numpy() for key, value in arrays.items()})


def official_file(name, folder, grid=TINY_IMG // 4, seed=1):
    """A tiny checkpoint of preset `name` in its official layout and format, under the official file name.

    Returns the path and the weights it must put into timm's model."""
    preset = presets.PRESETS[name]
    official = official_state(preset, grid, seed)
    path = Path(folder) / Path(preset["url"]).name.replace("%2B", "+")
    if preset["layout"] == "npz":
        google_npz(official, path)
    elif preset["layout"] == "mae":
        torch.save({"model": official}, path)
    else:
        torch.save(official, path)
    return path, in_timms_names(preset, official)


def assert_all_loaded(model, expected):
    state = model.state_dict()
    assert set(state) - {"head.weight", "head.bias"} == set(expected)
    for key, value in expected.items():
        assert torch.equal(state[key], value), key


@pytest.mark.parametrize("name", PRESETS)
def test_a_tiny_model_of_each_preset_loads_every_weight_from_its_official_layout(tmp_path, name):
    path, expected = official_file(name, tmp_path)
    model = tiny(name)
    head = model.head.weight.clone()
    load_backbone(model, path, layout=presets.PRESETS[name]["layout"])
    assert_all_loaded(model, expected)
    assert torch.equal(model.head.weight, head)  # Google's files carry a head: it is not loaded


def dinov2_reference(official, model, x, patch=4):
    """DINOv2's own token layout (CLS + position, then registers after CLS), through the loaded blocks."""
    patches = F.conv2d(x, official["patch_embed.proj.weight"], official["patch_embed.proj.bias"], stride=patch)
    tokens = torch.cat([official["cls_token"].expand(len(x), -1, -1), patches.flatten(2).transpose(1, 2)], dim=1)
    tokens = tokens + official["pos_embed"]
    if "register_tokens" in official:
        registers = official["register_tokens"].expand(len(x), -1, -1)
        tokens = torch.cat([tokens[:, :1], registers, tokens[:, 1:]], dim=1)
    return model.norm(model.blocks(tokens))[:, 0]


@pytest.mark.parametrize("name", ["dinov2_vitb14", "dinov2_vitb14_reg"])
def test_dinov2_features_are_the_cls_token_dinov2_itself_computes(tmp_path, name):
    preset = presets.PRESETS[name]
    official = official_state(preset, grid=8)
    torch.save(official, tmp_path / "w.pth")
    model = tiny(name)
    load_backbone(model, tmp_path / "w.pth", layout="dinov2")
    x = torch.randn(2, 3, TINY_IMG, TINY_IMG)
    with torch.no_grad():
        torch.testing.assert_close(features(model, x), dinov2_reference(official, model, x))


def resampled(grid, size):
    """The patch grid of a (1, cells, d) position table resized bicubically with antialiasing (torch alone)."""
    side = math.isqrt(grid.shape[1])
    image = grid.reshape(1, side, side, -1).permute(0, 3, 1, 2)
    image = F.interpolate(image, size=(size, size), mode="bicubic", antialias=True, align_corners=False)
    return image.permute(0, 2, 3, 1).reshape(1, size * size, -1)


@pytest.mark.parametrize("name", ["dinov2_vitb14", "dinov2_vitb14_reg"])
def test_dinov2s_larger_position_grid_is_resampled_to_the_models(tmp_path, name):
    """Official DINOv2 files are at 518 px (37x37 patches); here a 12x12 file loads into an 8x8 model."""
    path, expected = official_file(name, tmp_path, grid=12)
    model = tiny(name)
    load_backbone(model, path, layout="dinov2")
    prefix = 0 if presets.PRESETS[name]["registers"] else 1
    pos = model.pos_embed.detach()
    assert pos.shape == (1, 64 + prefix, 32)
    assert torch.equal(pos[:, :prefix], expected["pos_embed"][:, :prefix])
    torch.testing.assert_close(pos[:, prefix:], resampled(expected["pos_embed"][:, prefix:], 8))
    assert_all_loaded(model, {**expected, "pos_embed": model.pos_embed.detach()})


def test_a_timm_hub_file_of_a_register_model_at_518_px_fits_the_model(tmp_path):
    """`fetch-checkpoint --timm-hub` writes timm's names at the pretrained size; registers have no position."""
    source = tiny("dinov2_vitb14_reg", seed=3, img_size=48)  # a 12x12 grid, as 37x37 for the real one
    state = {k: v.contiguous() for k, v in source.state_dict().items() if not k.startswith("head.")}
    save_file(state, tmp_path / "vit_base_patch14_reg4_dinov2.safetensors")
    model = tiny("dinov2_vitb14_reg")
    load_backbone(model, tmp_path / "vit_base_patch14_reg4_dinov2.safetensors")
    torch.testing.assert_close(model.pos_embed.detach(), resampled(state["pos_embed"], 8))
    assert_all_loaded(model, {**state, "pos_embed": model.pos_embed.detach()})


# --- wrong layouts and mismatched checkpoints: one line naming the file and the keys ----------

def one_line_error(model, path, layout):
    with pytest.raises(VitpeftError) as error:
        load_backbone(model, path, layout=layout)
    message = str(error.value)
    assert "\n" not in message and str(path) in message
    return message


def test_a_dinov2_file_read_as_timm_names_its_keys_and_the_right_layout(tmp_path):
    path, _ = official_file("dinov2_vitb14_reg", tmp_path)
    message = one_line_error(tiny("dinov2_vitb14_reg"), path, "timm")
    assert "mask_token, register_tokens" in message and "set its layout to 'dinov2'" in message


def test_a_timm_file_read_as_dinov2_is_refused(tmp_path):
    path, _ = official_file("dino_vitb16", tmp_path)
    message = one_line_error(tiny("dinov2_vitb14"), path, "dinov2")
    assert "lacks 'mask_token'" in message and "cls_token" in message


def test_a_plain_state_dict_read_as_mae_shows_its_top_level_keys(tmp_path):
    path, _ = official_file("dino_vitb16", tmp_path)
    message = one_line_error(tiny("mae_vitb16"), path, "mae")
    assert "not in the mae layout" in message and "cls_token, pos_embed" in message


@pytest.mark.parametrize("suffix, layout", [(".npz", "timm"), (".pth", "npz")])
def test_a_layout_that_does_not_fit_the_file_format_is_refused(tmp_path, suffix, layout):
    path = tmp_path / f"w{suffix}"
    path.write_bytes(b"anything")
    assert f"layout {layout!r} does not fit a {suffix} file" in one_line_error(tiny("dino_vitb16"), path, layout)


def test_an_unknown_layout_is_refused(tmp_path):
    path, _ = official_file("dino_vitb16", tmp_path)
    assert "unknown layout 'jax'" in one_line_error(tiny("dino_vitb16"), path, "jax")


def test_a_register_checkpoint_for_a_model_without_registers_names_reg_token(tmp_path):
    path, _ = official_file("dinov2_vitb14_reg", tmp_path)
    assert "weights the model lacks: reg_token" in one_line_error(tiny("dinov2_vitb14"), path, "dinov2")


def test_an_npz_of_another_width_names_its_patch_kernel(tmp_path):
    official = official_state(presets.PRESETS["sup_vitb16_in21k"], grid=8, d=48)
    google_npz(official, tmp_path / "ViT-B_16.npz", heads=3)
    message = one_line_error(tiny("sup_vitb16_in21k"), tmp_path / "ViT-B_16.npz", "npz")
    assert "'embedding/kernel' has shape (4, 4, 3, 48), the model expects (4, 4, 3, 32)" in message


def test_an_npz_with_more_blocks_than_the_model_names_them(tmp_path):
    official = official_state(presets.PRESETS["sup_vitb16_in21k"], grid=8, depth=3)
    google_npz(official, tmp_path / "ViT-B_16.npz")
    message = one_line_error(tiny("sup_vitb16_in21k"), tmp_path / "ViT-B_16.npz", "npz")
    assert "has 3 blocks, the model 2: 1 blocks the model lacks: Transformer/encoderblock_2" in message


def test_an_npz_missing_a_weight_names_it(tmp_path):
    path, _ = official_file("sup_vitb16_in21k", tmp_path)
    arrays = dict(np.load(path))
    del arrays["Transformer/encoderblock_1/MlpBlock_3/Dense_1/bias"]
    np.savez(path, **arrays)
    model = tiny("sup_vitb16_in21k")
    before = model.blocks[0].attn.qkv.weight.clone()
    assert "Transformer/encoderblock_1/MlpBlock_3/Dense_1/bias" in one_line_error(model, path, "npz")
    assert torch.equal(model.blocks[0].attn.qkv.weight, before)  # nothing half-loaded


def test_a_register_model_cannot_take_googles_layout(tmp_path):
    """Google's files have no register tokens or layer scales: those weights are named as missing."""
    official = official_state(presets.PRESETS["sup_vitb16_in21k"], grid=8)
    google_npz({**official, "pos_embed": official["pos_embed"][:, 1:]}, tmp_path / "ViT-B_16.npz")
    message = one_line_error(tiny("dinov2_vitb14_reg"), tmp_path / "ViT-B_16.npz", "npz")
    assert "lacks" in message and "blocks.0.ls1.gamma" in message and "reg_token" in message


def test_an_unreadable_npz_is_one_line(tmp_path):
    (tmp_path / "ViT-B_16.npz").write_bytes(b"not a zip archive")
    assert "not a readable .npz archive" in one_line_error(tiny("sup_vitb16_in21k"), tmp_path / "ViT-B_16.npz", "npz")


# --- methods on the families: identity at init, adapters where the paper puts them -----------

def with_random_layer_scale(model):
    """Pretrained LayerScale gammas are far from timm's 1e-5 init; an identity test must not lean on that."""
    with torch.no_grad():
        for block in model.blocks:
            block.ls1.gamma.uniform_(0.5, 1.5)
            block.ls2.gamma.uniform_(0.5, 1.5)
    return model


@pytest.mark.parametrize("name", ["dinov2_vitb14", "dinov2_vitb14_reg"])
@pytest.mark.parametrize("p", [1, 2])
def test_block_expansion_computes_exactly_the_original_at_init_with_layer_scale(name, p):
    model = with_random_layer_scale(tiny(name))
    x = torch.randn(2, 3, TINY_IMG, TINY_IMG)
    with torch.no_grad():
        before = model(x)
        registry.apply(model, "block_expansion", {"p": p})
        after = model(x)
    assert len(model.blocks) == 2 + p
    assert torch.equal(after, before)
    new = [model.blocks[i] for i in getattr(model, block_expansion.NEW_BLOCKS_ATTR)]
    assert all(block.ls1.gamma.requires_grad and block.attn.proj.weight.requires_grad for block in new)


@pytest.mark.parametrize("name", ["dinov2_vitb14_reg", "mae_vitb16"])
def test_lora_adapts_q_and_v_of_every_block_and_starts_as_the_original(name):
    model = with_random_layer_scale(tiny(name)) if presets.PRESETS[name]["layer_scale"] else tiny(name)
    x = torch.randn(2, 3, TINY_IMG, TINY_IMG)
    with torch.no_grad():
        before = model(x)
        registry.apply(model, "lora", {"r": 4})
        after = model(x)
    torch.testing.assert_close(after, before)  # B starts at zero; the split qkv computes the fused one
    adapted = sorted(name for name, param in model.named_parameters() if "lora_A" in name)
    assert adapted == sorted(f"blocks.{i}.attn.qkv.{part}.lora_A.default.weight" for i in range(2) for part in "qv")


def test_topk_on_a_register_model_trains_blocks_norm_and_head_but_not_the_tokens():
    model = registry.apply(tiny("dinov2_vitb14_reg"), "topk", {"k": 1})
    trainable = {name.split(".")[0] + ("." + name.split(".")[1] if name.startswith("blocks.") else "")
                 for name, param in model.named_parameters() if param.requires_grad}
    assert trainable == {"blocks.1", "norm", "head"}


@pytest.mark.parametrize("name", ["dino_vitb16", "dinov2_vitb14", "mae_vitb16", "sup_vitb16_in21k"])
def test_fetch_checkpoint_accepts_each_official_layout_from_a_server_and_refuses_the_wrong_one(tmp_path, name):
    """What the workflow's fetch job runs: the file must read in the preset's layout before it counts as done."""
    from httpserver import serve

    from vitpeft.models import fetch

    public = tmp_path / "public"
    public.mkdir()
    path, _ = official_file(name, public)
    layout = presets.PRESETS[name]["layout"]
    wrong = {"timm": "dinov2", "dinov2": "timm", "mae": "timm", "npz": "timm"}[layout]
    with serve(public) as url:
        fetched = fetch.fetch_checkpoint(f"{url}/{path.name}", tmp_path / "got" / path.name, layout=layout)
        assert fetched.read_bytes() == path.read_bytes()
        out = tmp_path / "wrong" / (path.stem + (".npz" if wrong == "npz" else ".pth"))
        with pytest.raises(VitpeftError, match=f"{url}/{path.name}") as caught:
            fetch.fetch_checkpoint(f"{url}/{path.name}", out, layout=wrong)
    assert "nothing was written" in str(caught.value) and not out.exists()


def test_list_backbones_prints_every_preset(capsys):
    from vitpeft.cli import main

    assert main(["list-backbones"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ") and "---" not in line]
    assert [row.split(" | ")[0].strip("| ") for row in rows[1:]] == list(presets.PRESETS)
