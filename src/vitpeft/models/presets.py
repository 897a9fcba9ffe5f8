"""Pretrained backbones to start from: a plain table of presets, readable without torch.

The workflow reads this module while planning, and planning must not import
torch (5-8 s), so everything here is plain data; only `describe` of an
architecture that no preset uses builds a model (on the meta device).

A preset names a timm architecture, the input size the study feeds it, its
shape (the method checks and the hand counts in the tests use it), one official
checkpoint and how to read it, the normalisation the model was trained with,
and the feature DINO's weighted k-NN scores:

  arch, img_size             timm model name and input resolution (build_model's model section)
  patch_size, depth, embed_dim, num_heads, mlp_ratio
  prefix_tokens              tokens before the patches: CLS + registers (CLS is always token 0)
  registers                  register tokens (DINOv2 "with registers"); timm gives them no position
  layer_scale                blocks scale both residual branches (ls1, ls2: DINOv2)
  url, layout                the official checkpoint file and its key layout (LAYOUTS)
  timm_hub                   timm's copy on the Hugging Face hub (layout "timm"; `vitpeft fetch-checkpoint
                             --timm-hub`), None where timm has none
  mean, std                  input normalisation of pretraining
  feature                    the k-NN feature (FEATURES)
  about                      what the weights are; "public code" names the paper code's HF model id

No sha256 is given: we found none published for these files (set the
config's sha256 once you have verified a download).
"""

import copy

from vitpeft.errors import VitpeftError

LAYOUTS = {
    "timm": "a state dict with timm's names (DINO's .pth files, MAE without wrapper, timm hub .safetensors)",
    "dinov2": "facebookresearch/dinov2 .pth: timm's names plus mask_token, register_tokens, a CLS position",
    "mae": "facebookresearch/mae .pth: {'model': state dict with timm's names}",
    "npz": "Google's JAX .npz (Transformer/encoderblock_N/...), read by timm's _load_weights",
}
FEATURES = {
    "cls_norm": "the CLS token after the final norm (DINO's and DINOv2's k-NN, MAE's linear probe, ViT's head input)",
}

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
HALF = [0.5, 0.5, 0.5]  # Google's ViTs see inputs scaled to [-1, 1]


def _shape(patch_size, depth, embed_dim, num_heads, layer_scale=False, registers=0):
    return {"patch_size": patch_size, "depth": depth, "embed_dim": embed_dim, "num_heads": num_heads,
            "mlp_ratio": 4.0, "prefix_tokens": 1 + registers, "registers": registers, "layer_scale": layer_scale}


# Shape of every architecture a preset uses; tests/test_backbones.py checks each against timm.
ARCHITECTURES = {
    "vit_small_patch16_224": _shape(16, 12, 384, 6),
    "vit_small_patch8_224": _shape(8, 12, 384, 6),
    "vit_base_patch16_224": _shape(16, 12, 768, 12),
    "vit_base_patch8_224": _shape(8, 12, 768, 12),
    "vit_large_patch16_224": _shape(16, 24, 1024, 16),
    "vit_base_patch14_dinov2": _shape(14, 12, 768, 12, layer_scale=True),
    "vit_base_patch14_reg4_dinov2": _shape(14, 12, 768, 12, layer_scale=True, registers=4),
}

DINO = "https://dl.fbaipublicfiles.com/dino"
DINOV2 = "https://dl.fbaipublicfiles.com/dinov2"
VIT_21K = "https://storage.googleapis.com/vit_models/imagenet21k"
VIT_21K_1K = "https://storage.googleapis.com/vit_models/imagenet21k%2Bimagenet2012"  # folder imagenet21k+imagenet2012
AUGREG = "https://storage.googleapis.com/vit_models/augreg"


def _preset(arch, url, layout, timm_hub, mean, std, about, img_size=224):
    return {"arch": arch, "img_size": img_size, **ARCHITECTURES[arch], "url": url, "layout": layout,
            "timm_hub": timm_hub, "mean": list(mean), "std": list(std), "feature": "cls_norm", "about": about}


PRESETS = {
    "dino_vits16": _preset(
        "vit_small_patch16_224", f"{DINO}/dino_deitsmall16_pretrain/dino_deitsmall16_pretrain.pth", "timm",
        "timm/vit_small_patch16_224.dino", IMAGENET_MEAN, IMAGENET_STD,
        "DINO ViT-S/16, self-supervised on ImageNet-1k (public code: facebook/dino-vits16)"),
    "dino_vits8": _preset(
        "vit_small_patch8_224", f"{DINO}/dino_deitsmall8_pretrain/dino_deitsmall8_pretrain.pth", "timm",
        "timm/vit_small_patch8_224.dino", IMAGENET_MEAN, IMAGENET_STD,
        "DINO ViT-S/8, self-supervised on ImageNet-1k (public code: facebook/dino-vits8)"),
    "dino_vitb16": _preset(
        "vit_base_patch16_224", f"{DINO}/dino_vitbase16_pretrain/dino_vitbase16_pretrain.pth", "timm",
        "timm/vit_base_patch16_224.dino", IMAGENET_MEAN, IMAGENET_STD,
        "DINO ViT-B/16, self-supervised on ImageNet-1k, the paper's backbone (public code: facebook/dino-vitb16)"),
    "dino_vitb8": _preset(
        "vit_base_patch8_224", f"{DINO}/dino_vitbase8_pretrain/dino_vitbase8_pretrain.pth", "timm",
        "timm/vit_base_patch8_224.dino", IMAGENET_MEAN, IMAGENET_STD,
        "DINO ViT-B/8, self-supervised on ImageNet-1k (public code: facebook/dino-vitb8)"),
    "sup_vitb16_in1k": _preset(
        "vit_base_patch16_224",
        f"{AUGREG}/B_16-i1k-300ep-lr_0.001-aug_strong2-wd_0.1-do_0.1-sd_0.1--imagenet2012-steps_20k-lr_0.01-res_224.npz",
        "npz", "timm/vit_base_patch16_224.augreg_in1k", HALF, HALF,
        "ViT-B/16 supervised on ImageNet-1k only (AugReg, Steiner et al. 2021)"),
    "sup_vitb16_in21k": _preset(
        "vit_base_patch16_224", f"{VIT_21K}/ViT-B_16.npz", "npz", "timm/vit_base_patch16_224.orig_in21k", HALF, HALF,
        "ViT-B/16 supervised on ImageNet-21k, original ViT release (public code: google/vit-base-patch16-224-in21k)"),
    "sup_vitb16_in21k_ft_in1k": _preset(
        "vit_base_patch16_224", f"{VIT_21K_1K}/ViT-B_16-224.npz", "npz",
        "timm/vit_base_patch16_224.orig_in21k_ft_in1k", HALF, HALF,
        "ViT-B/16 supervised on ImageNet-21k, fine-tuned on ImageNet-1k (public code: google/vit-base-patch16-224)"),
    "sup_vitl16_in21k": _preset(
        "vit_large_patch16_224", f"{VIT_21K}/ViT-L_16.npz", "npz", "timm/vit_large_patch16_224.orig_in21k", HALF, HALF,
        "ViT-L/16 supervised on ImageNet-21k, original ViT release (public code: google/vit-large-patch16-224-in21k)"),
    "sup_vitl16_in21k_ft_in1k": _preset(
        "vit_large_patch16_224", f"{VIT_21K_1K}/ViT-L_16-224.npz", "npz", None, HALF, HALF,
        "ViT-L/16 supervised on ImageNet-21k, fine-tuned on ImageNet-1k (public code: google/vit-large-patch16-224)"),
    "dinov2_vitb14": _preset(
        "vit_base_patch14_dinov2", f"{DINOV2}/dinov2_vitb14/dinov2_vitb14_pretrain.pth", "dinov2",
        "timm/vit_base_patch14_dinov2.lvd142m", IMAGENET_MEAN, IMAGENET_STD,
        "DINOv2 ViT-B/14 (LVD-142M); weights at 518 px, run at 224 as in DINOv2's k-NN protocol"),
    "dinov2_vitb14_reg": _preset(
        "vit_base_patch14_reg4_dinov2", f"{DINOV2}/dinov2_vitb14/dinov2_vitb14_reg4_pretrain.pth", "dinov2",
        "timm/vit_base_patch14_reg4_dinov2.lvd142m", IMAGENET_MEAN, IMAGENET_STD,
        "DINOv2 ViT-B/14 with 4 registers (LVD-142M); weights at 518 px, run at 224"),
    "mae_vitb16": _preset(
        "vit_base_patch16_224", "https://dl.fbaipublicfiles.com/mae/pretrain/mae_pretrain_vit_base.pth", "mae",
        "timm/vit_base_patch16_224.mae", IMAGENET_MEAN, IMAGENET_STD,
        "MAE ViT-B/16, self-supervised on ImageNet-1k (encoder only)"),
}
DEFAULT = "dino_vitb16"  # the paper's backbone

SHAPE_KEYS = ("patch_size", "depth", "embed_dim", "num_heads", "mlp_ratio", "prefix_tokens", "registers",
              "layer_scale")


def get(name: str) -> dict:
    """A copy of preset `name` (the table stays as written)."""
    if name not in PRESETS:
        raise VitpeftError(f"unknown backbone preset {name!r} (known: {', '.join(PRESETS)})")
    return copy.deepcopy(PRESETS[name])


def model_cfg(name: str) -> dict:
    """The spec `model` section that builds preset `name`."""
    preset = get(name)
    return {"name": preset["arch"], "img_size": preset["img_size"], "kwargs": {}}


def table_shape(model: dict) -> dict | None:
    """Shape of the model a spec's `model` section builds (SHAPE_KEYS and img_size), from the table alone.

    None when the architecture is no preset's or kwargs change it: then only timm
    can tell (vitpeft.models.shapes.describe builds it on the meta device).
    """
    known = ARCHITECTURES.get(model["name"])
    if known is not None and not model.get("kwargs"):
        return {**known, "img_size": model["img_size"]}
    return None
