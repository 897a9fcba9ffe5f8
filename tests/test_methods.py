"""Fine-tuning methods: exact paper counts, function-preserving init, routed views, weights round trip."""

import pytest
import torch
from peft.tuners.tuners_utils import BaseTunerLayer
from safetensors.torch import save_file

from vitpeft import digests
from vitpeft.methods import registry
from vitpeft.training import model as model_lib
from vitpeft.study import spec as spec_lib
from vitpeft.models.backbone import build_model
from vitpeft.errors import VitpeftError
from vitpeft.methods import arguments as configs
from vitpeft.methods import block_expansion
from vitpeft.methods.qkv import SplitQKV, split_qkv

VIT_B = {"name": "vit_base_patch16_224", "img_size": 224, "kwargs": {}}

PAPER_COUNTS = [  # docs/protocol.md, ViT-B/16 with a 100-class head
    ("full", {}, 85_875_556),
    ("topk", {"k": 3}, 21_342_052),
    ("linear", {}, 76_900),
    ("lora", {"r": 4}, 224_356),
    ("lora", {"r": 8}, 371_812),
    ("lora", {"r": 16}, 666_724),
    ("block_expansion", {"p": 1}, 7_164_772),
    ("block_expansion", {"p": 2}, 14_252_644),
    ("block_expansion", {"p": 3}, 21_340_516),
    ("block_expansion", {"p": 4}, 28_428_388),
    # same count as the paper's LoRA at equal r, by construction (3 * 768 r + 768 r vs 2 * (768 r + 768 r))
    ("lora_qkv", {"r": 8}, 371_812),
    ("peft", {"peft_type": "LORA", "r": 8}, 371_812),
]


def make_spec(model_cfg, method, args=None, checkpoint=None, num_classes=10):
    return spec_lib.resolve({
        "name": "test", "method": method, "args": args or {}, "model": model_cfg,
        "checkpoint": checkpoint, "num_classes": num_classes, "data": {"train": "unused"},
    })


@pytest.fixture
def tiny(tiny_model_cfg):
    def make(seed=0):
        """A tiny ViT whose every weight, biases and norms included, is non-trivial, as after pretraining
        (timm initialises biases to zero, which would hide a method that forgets them)."""
        torch.manual_seed(seed)
        model = build_model(tiny_model_cfg, num_classes=10).eval()
        with torch.no_grad():
            for param in model.parameters():
                param.add_(0.05 * torch.randn(param.shape))
        return model
    return make


@pytest.fixture
def images():
    return torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(7))


def outputs(model, x):
    with torch.no_grad():
        return model(x)


def trainable_names(model):
    return {name for name, p in model.named_parameters() if p.requires_grad}


def perturb_trainable(model, seed=3):
    """Stand-in for training: move every trainable weight."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.1 * torch.randn(p.shape, generator=generator))


@pytest.mark.parametrize("method,args,expected", PAPER_COUNTS)
def test_trainable_counts_match_the_paper_at_vit_b_scale(method, args, expected):
    spec = make_spec(VIT_B, method, args, num_classes=100)
    assert registry.count_trainable(spec) == expected


# --- which weights train ---------------------------------------------------

def test_full_trains_everything_and_linear_only_the_head(tiny):
    full = registry.apply(tiny(), "full", {})
    assert trainable_names(full) == {name for name, _ in full.named_parameters()}
    linear = registry.apply(tiny(), "linear", {})
    assert trainable_names(linear) == {"head.weight", "head.bias"}


def test_topk_trains_last_k_blocks_final_norm_and_head(tiny):
    model = registry.apply(tiny(), "topk", {"k": 2})
    prefixes = {name.split(".")[0] + ("." + name.split(".")[1] if name.startswith("blocks.") else "")
                for name in trainable_names(model)}
    assert prefixes == {"blocks.10", "blocks.11", "norm", "head"}


def test_lora_adapts_q_and_v_of_every_block_and_trains_the_head(tiny):
    model = registry.apply(tiny(), "lora", {"r": 2})
    names = trainable_names(model)
    assert {n for n in names if n.startswith("head.")} == {"head.weight", "head.bias"}
    adapted = {n.split(".lora_")[0] for n in names if ".lora_" in n}
    assert adapted == {f"blocks.{i}.attn.qkv.{part}" for i in range(12) for part in ("q", "v")}
    assert names - {"head.weight", "head.bias"} == {n for n in names if ".lora_" in n}
    lora_a = model.blocks[0].attn.qkv.q.lora_A["default"]
    assert lora_a.weight.shape == (2, 32)
    assert model.blocks[0].attn.qkv.q.scaling["default"] == 1.0  # alpha = r


def test_the_method_is_recorded_and_cannot_be_applied_twice(tiny):
    model = registry.apply(tiny(), "linear", {})
    assert model.vitpeft_method == "linear"
    with pytest.raises(VitpeftError, match="already has method 'linear'"):
        registry.apply(model, "lora", {})


# --- function preserved at init --------------------------------------------

def test_qkv_split_computes_the_same_function(tiny, images):
    model = tiny()
    before = outputs(model, images)
    fused = model.blocks[3].attn.qkv
    split_qkv(model)
    assert isinstance(model.blocks[3].attn.qkv, SplitQKV)
    tokens = torch.randn(2, 5, 32)
    with torch.no_grad():
        torch.testing.assert_close(model.blocks[3].attn.qkv(tokens), fused(tokens), atol=1e-6, rtol=0)
    torch.testing.assert_close(outputs(model, images), before, atol=1e-6, rtol=0)


@pytest.mark.parametrize("method,args", [
    ("lora", {"r": 4}),
    ("lora_qkv", {"r": 4}),
    ("block_expansion", {"p": 3}),
    ("peft", {"peft_type": "LORA", "r": 4, "use_dora": True}),
    ("peft", {"peft_type": "IA3"}),
    ("peft", {"peft_type": "LOHA", "r": 2}),
    ("adaptformer", {"bottleneck": 8}),  # its up projection starts at zero
    ("bitfit", {}),
    ("ln_tune", {}),
])
def test_method_leaves_the_function_unchanged_at_init(tiny, images, method, args):
    reference = outputs(tiny(), images)
    model = registry.apply(tiny(), method, args)
    torch.testing.assert_close(outputs(model, images), reference, atol=1e-6, rtol=0)


# --- block expansion -------------------------------------------------------

def test_block_interval_reproduces_the_papers_choices_on_12_blocks():
    assert [configs.block_interval(p, 12) for p in (1, 2, 3, 4)] == [11, 6, 4, 3]
    assert block_expansion.Config(p=1).insert_after(12) == [11]
    assert block_expansion.Config(p=4).insert_after(12) == [3, 6, 9, 12]


@pytest.mark.parametrize("depth", [1, 2, 5, 12, 24])
def test_block_interval_places_exactly_p_blocks_for_every_p(depth):
    for p in range(1, depth + 1):
        after = block_expansion.Config(p=p).insert_after(depth)
        assert len(set(after)) == p and min(after) >= 1 and max(after) <= depth, (p, after)


def test_block_expansion_inserts_zeroed_copies_and_trains_only_them(tiny):
    model = tiny()
    originals = list(model.blocks)
    registry.apply(model, "block_expansion", {"p": 2})
    assert len(model.blocks) == 14
    assert model.vitpeft_new_blocks == [6, 13]  # after original blocks 6 and 12 (1-based)
    for new in model.vitpeft_new_blocks:
        block, source = model.blocks[new], model.blocks[new - 1]
        for linear in (block.attn.proj, block.mlp.fc2):
            assert not linear.weight.any() and not linear.bias.any()
        assert torch.equal(block.attn.qkv.weight, source.attn.qkv.weight)
        assert block.attn.qkv.weight.data_ptr() != source.attn.qkv.weight.data_ptr()  # a copy, not shared
    assert [b for i, b in enumerate(model.blocks) if i not in model.vitpeft_new_blocks] == originals
    assert {n.split(".")[0] + "." + n.split(".")[1] for n in trainable_names(model)} == {
        "blocks.6", "blocks.13", "head.weight", "head.bias"}


def test_block_expansion_explicit_interval(tiny):
    model = registry.apply(tiny(), "block_expansion", {"p": 5, "interval": 2})
    assert model.vitpeft_new_blocks == [2, 5, 8, 11, 14]


# --- routed (source-domain) views ------------------------------------------

@pytest.mark.parametrize("method,args", [
    ("lora", {"r": 4}),
    ("lora_qkv", {"r": 4}),
    ("block_expansion", {"p": 2}),
    ("peft", {"peft_type": "LORA", "r": 4, "use_dora": True}),
    ("vpt_shallow", {"length": 3}),
    ("vpt_deep", {"length": 3}),
    ("adaptformer", {"bottleneck": 8}),
    ("ssf", {}),
])
def test_routed_view_computes_the_pretrained_function_and_restores(tiny, images, method, args):
    pretrained = outputs(tiny(), images)
    model = registry.apply(tiny(), method, args)
    perturb_trainable(model)
    with torch.no_grad():
        model.head.weight.copy_(tiny().head.weight)
        model.head.bias.copy_(tiny().head.bias)  # compare backbones through the same head
    tuned = outputs(model, images)
    assert not torch.allclose(tuned, pretrained, atol=1e-3)
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    with registry.routed(model) as view:
        assert view is model
        torch.testing.assert_close(outputs(view, images), pretrained, atol=1e-5, rtol=0)
    torch.testing.assert_close(outputs(model, images), tuned)
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags


def test_routed_view_is_restored_after_an_exception(tiny, images):
    model = registry.apply(tiny(), "lora", {"r": 2})
    perturb_trainable(model)
    tuned = outputs(model, images)
    with pytest.raises(RuntimeError):
        with registry.routed(model):
            raise RuntimeError("evaluation failed")
    torch.testing.assert_close(outputs(model, images), tuned)
    assert not any(layer.disable_adapters for layer in model.modules() if isinstance(layer, BaseTunerLayer))


@pytest.mark.parametrize("method", ["full", "topk", "linear", "bitfit", "ln_tune"])
def test_methods_without_a_pretrained_path_route_to_none(tiny, method):
    with registry.routed(registry.apply(tiny(), method, {})) as view:
        assert view is None
    with registry.routed(tiny()) as view:  # no method applied: nothing to route
        assert view is None


# --- bad input -------------------------------------------------------------

@pytest.mark.parametrize("method,args,message", [
    ("nope", {}, "unknown method 'nope' .*full, topk, linear, lora"),
    ("lora", {"r": 0}, "r must be a positive integer, got 0"),
    ("lora", {"r": -4}, "r must be a positive integer"),
    ("lora", {"r": True}, "r must be a positive integer"),
    ("lora", {"r": 4, "alpha": 0}, "alpha must be a positive number"),
    ("lora", {"r": 4, "dropout": 1.0}, "dropout must be in"),
    ("lora", {"rank": 4}, "unknown argument 'rank'"),
    ("lora", {"target_modules": "q"}, "target_modules must be a non-empty list"),
    ("block_expansion", {"p": 0}, "p must be an integer >= 1, got 0"),
    ("block_expansion", {"p": 13}, "p=13 exceeds the model's 12 blocks"),
    ("block_expansion", {"p": 4, "interval": 4}, "do not fit in 12 blocks"),
    ("topk", {"k": 13}, "k=13 exceeds the model's 12 blocks"),
    ("topk", {"k": 0}, "k must be an integer >= 1"),
    ("linear", {"k": 1}, "unknown argument 'k'"),
    ("peft", {}, "missing argument 'peft_type'"),
    ("peft", {"peft_type": "NOPE"}, "unknown peft_type 'NOPE'"),
    ("peft", {"peft_type": "LORA", "rank": 4}, "bad LORA options"),
    ("peft", {"peft_type": "PROMPT_TUNING", "num_virtual_tokens": 4, "task_type": "SEQ_CLS"}, "PROMPT_TUNING is prompt learning"),
    ("vpt_shallow", {"length": 0}, "method 'vpt_shallow': length must be an integer >= 1, got 0"),
    ("vpt_deep", {"length": 2.5}, "method 'vpt_deep': length must be an integer >= 1"),
    ("vpt_deep", {"dropout": 1.0}, "method 'vpt_deep': dropout must be in"),
    ("adaptformer", {"bottleneck": 0}, "method 'adaptformer': bottleneck must be an integer >= 1, got 0"),
    ("adaptformer", {"scale": float("nan")}, "method 'adaptformer': scale must be a finite number > 0, got nan"),
    ("adaptformer", {"scale": float("inf")}, "scale must be a finite number > 0, got inf"),
    ("adaptformer", {"scale": 0}, "scale must be a finite number > 0"),
    ("ssf", {"init": 1}, "method 'ssf': unknown argument 'init'"),
    ("bitfit", {"norms": True}, "method 'bitfit': unknown argument 'norms'"),
])
def test_bad_arguments_are_refused_by_check(method, args, message):
    with pytest.raises(VitpeftError, match=message):
        registry.check(method, args, depth=12)


@pytest.mark.parametrize("method,targets", [("lora", ["query"]), ("lora_qkv", ["q"]), ("peft", ["qkv"])])
def test_unknown_target_module_is_refused_before_the_model_changes(tiny, method, targets):
    model = tiny()
    args = {"target_modules": targets, **({"peft_type": "LORA"} if method == "peft" else {})}
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(VitpeftError, match=f"target module {targets[0]!r} is no Linear layer"):
        registry.apply(model, method, args)
    assert model.state_dict().keys() == state.keys()  # no split, no adapters
    assert not hasattr(model, "vitpeft_method")


def test_lora_can_target_other_linear_layers(tiny, images):
    model = registry.apply(tiny(), "lora", {"r": 2, "target_modules": ["k", "fc1"]})
    adapted = {n.split(".lora_")[0].split(".", 2)[2] for n in trainable_names(model) if ".lora_" in n}
    assert adapted == {"attn.qkv.k", "mlp.fc1"}


# --- trainable weights round trip, model builders ---------------------------

@pytest.mark.parametrize("method,args", [
    ("lora", {"r": 2}), ("block_expansion", {"p": 2}), ("topk", {"k": 1}), ("vpt_deep", {"length": 2}),
    ("adaptformer", {"bottleneck": 4}), ("ssf", {}), ("bitfit", {}),
])
def test_trainable_state_round_trips_into_a_fresh_model(tiny, images, method, args):
    model = registry.apply(tiny(), method, args)
    perturb_trainable(model)
    expected = outputs(model, images)
    state = registry.trainable_state(model)
    assert set(state) == trainable_names(model)
    assert all(t.device.type == "cpu" and t.is_contiguous() and not t.requires_grad for t in state.values())
    perturb_trainable(model, seed=4)  # training goes on: the snapshot must not follow
    fresh = registry.apply(tiny(), method, args)
    assert not torch.allclose(outputs(fresh, images), expected)
    registry.load_trainable(fresh, state)
    torch.testing.assert_close(outputs(fresh, images), expected)


def test_lora_trainable_state_holds_only_adapters_and_head(tiny):
    state = registry.trainable_state(registry.apply(tiny(), "lora", {"r": 2}))
    assert sum(t.numel() for t in state.values()) == 12 * 2 * (2 * 32 + 2 * 32) + 32 * 10 + 10


def test_load_trainable_refuses_wrong_keys_and_shapes(tiny):
    model = registry.apply(tiny(), "lora", {"r": 2})
    state = registry.trainable_state(model)
    with pytest.raises(VitpeftError, match="1 missing"):
        registry.load_trainable(model, {k: v for k, v in state.items() if k != "head.bias"})
    with pytest.raises(VitpeftError, match="1 unexpected"):
        registry.load_trainable(model, {**state, "extra": torch.zeros(1)})
    with pytest.raises(VitpeftError, match=r"'head.bias' has shape \(11,\), the model expects \(10,\)"):
        registry.load_trainable(model, {**state, "head.bias": torch.zeros(11)})
    other = registry.trainable_state(registry.apply(tiny(), "lora", {"r": 4}))
    with pytest.raises(VitpeftError, match="has shape"):
        registry.load_trainable(model, other)


def test_for_training_loads_the_checkpoint_and_trained_loads_the_run(tmp_path, tiny, tiny_model_cfg, images):
    source = tiny(seed=5)
    torch.save({k: v for k, v in source.state_dict().items() if not k.startswith("head.")}, tmp_path / "dino.pth")
    spec = make_spec(tiny_model_cfg, "lora", {"r": 2}, checkpoint=str(tmp_path / "dino.pth"))

    model = model_lib.for_training(spec, "cpu").eval()
    assert model.vitpeft_method == "lora"
    assert torch.equal(model.blocks[0].attn.qkv.q.base_layer.weight, source.blocks[0].attn.qkv.weight[:32])
    pretrained = model_lib.pretrained(spec, "cpu").eval()
    assert not hasattr(pretrained, "vitpeft_method")
    torch.testing.assert_close(outputs(model, images), outputs(pretrained, images), atol=1e-6, rtol=0)
    # the same spec gives the same starting model (seeded head and adapters)
    again = model_lib.for_training(spec, "cpu")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))

    perturb_trainable(model)
    run = tmp_path / "run"
    run.mkdir()
    save_file(registry.trainable_state(model), run / "trainable.safetensors")
    digests.seal(run)  # as vitpeft train records the run's files
    trained = model_lib.trained(spec, run, "cpu").eval()
    torch.testing.assert_close(outputs(trained, images), outputs(model, images))


def test_trained_without_weights_or_with_another_methods_weights_is_an_error(tmp_path, tiny_model_cfg):
    spec = make_spec(tiny_model_cfg, "lora", {"r": 2})
    with pytest.raises(VitpeftError, match="trainable.safetensors is missing"):
        model_lib.trained(spec, tmp_path, "cpu")
    linear = model_lib.for_training(make_spec(tiny_model_cfg, "linear"), "cpu")
    save_file(registry.trainable_state(linear), tmp_path / "trainable.safetensors")
    digests.seal(tmp_path)
    with pytest.raises(VitpeftError, match="trainable.safetensors: trained weights do not fit"):
        model_lib.trained(spec, tmp_path, "cpu")


def test_for_training_checks_arguments_before_reading_the_checkpoint(tmp_path, tiny_model_cfg):
    spec = make_spec(tiny_model_cfg, "topk", {"k": 20}, checkpoint=str(tmp_path / "absent.pth"))
    with pytest.raises(VitpeftError, match="k=20 exceeds"):
        model_lib.for_training(spec, "cpu")


@pytest.mark.parametrize("method,args", [
    ("full", {}), ("topk", {"k": 2}), ("linear", {}), ("lora", {"r": 2}),
    ("block_expansion", {"p": 2}), ("peft", {"peft_type": "LORA", "r": 2, "use_dora": True}),
    ("vpt_shallow", {"length": 2}), ("vpt_deep", {"length": 2}), ("adaptformer", {"bottleneck": 4}), ("ssf", {}),
    ("bitfit", {}), ("ln_tune", {}),
])
def test_one_training_step_moves_exactly_the_trainable_weights(tiny, images, method, args):
    model = registry.apply(tiny(), method, args).train()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(trainable, lr=0.5)
    for _ in range(2):  # LoRA's B starts at zero, so A only moves from the second step on
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(images), torch.arange(4)).backward()
        optimizer.step()
    moved = {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}
    assert moved == trainable_names(model)


# --- the visual PEFT families ---------------------------------------------

def vit_b_parameters(select) -> int:
    """Parameters of timm's own ViT-B/16 (no method applied) that `select(name, module, param_name)` picks."""
    model = build_model(VIT_B, num_classes=100, device="meta")
    return sum(param.numel() for name, module in model.named_modules() if not name.startswith("head")
               for param_name, param in module.named_parameters(recurse=False) if select(name, module, param_name))


def counted(method, args=None):
    """What the method trains at ViT-B/16, outside the 100-class head."""
    return registry.count_trainable(make_spec(VIT_B, method, args, num_classes=100)) - (768 * 100 + 100)


def test_bitfit_and_ln_tune_count_timm_vit_b16s_own_biases_and_layernorms():
    biases = vit_b_parameters(lambda name, module, param: param == "bias")
    norms = vit_b_parameters(lambda name, module, param: isinstance(module, torch.nn.LayerNorm))
    assert (biases, norms) == (102_912, 38_400)  # BitFit's and LayerNorm tuning's published ViT-B/16 counts
    assert counted("bitfit") == biases and counted("ln_tune") == norms


def test_prompt_and_adapter_counts_follow_their_formulas_at_vit_b16():
    width, depth = 768, 12
    for length in (1, 5, 50):
        assert counted("vpt_shallow", {"length": length}) == length * width
        assert counted("vpt_deep", {"length": length}) == length * width * depth
    for bottleneck in (8, 64):  # down (width x b + b) and up (b x width + width) per block
        per_block = 2 * width * bottleneck + bottleneck + width
        assert counted("adaptformer", {"bottleneck": bottleneck}) == depth * per_block
    assert counted("adaptformer") == 1_189_632


def test_ssf_counts_a_scale_and_a_shift_per_channel_of_every_linear_layernorm_and_the_patch_embedding():
    channels = vit_b_parameters(lambda name, module, param: param == "bias"
                                and isinstance(module, (torch.nn.Linear, torch.nn.LayerNorm, torch.nn.Conv2d)))
    assert channels == 102_912 and counted("ssf") == 2 * channels == 205_824  # 134 x 768 channels, x 2


def test_vpt_inserts_prompts_after_cls_and_deep_replaces_them_at_every_block(tiny, images):
    model = registry.apply(tiny(), "vpt_deep", {"length": 3})
    seen = []
    for block in model.blocks:
        block.register_forward_pre_hook(lambda block, args: seen.append(args[0].detach().clone()))
    outputs(model, images)
    prompts, patches = model.vpt.tokens, model.patch_embed.num_patches
    assert prompts.shape == (12, 3, 32) and [x.shape[1] for x in seen] == [1 + 3 + patches] * 12
    for i, x in enumerate(seen):  # every block sees its own prompts right after [CLS], as given
        assert torch.equal(x[:, 1:4], prompts[i].expand(4, -1, -1))
    shallow = registry.apply(tiny(), "vpt_shallow", {"length": 3})
    assert shallow.vpt.tokens.shape == (1, 3, 32)
    with torch.no_grad():  # the final norm and the head see the model's own [CLS] and patch tokens
        assert shallow.forward_features(images).shape == tiny().forward_features(images).shape == (4, 1 + patches, 32)


def test_adaptformer_adds_its_scaled_bottleneck_of_the_residual_stream_beside_the_mlp(tiny):
    model = registry.apply(tiny(), "adaptformer", {"bottleneck": 4, "scale": 0.5}).eval()
    perturb_trainable(model)
    block, x = model.blocks[2], torch.randn(2, 1 + model.patch_embed.num_patches, 32)
    adapter = block.adaptmlp
    with torch.no_grad():
        stream = x + block.attn(block.norm1(x))
        expected = stream + block.mlp(block.norm2(stream)) + 0.5 * adapter.up_proj(adapter.down_proj(stream).relu())
        torch.testing.assert_close(block(x), expected, atol=1e-6, rtol=0)


def test_ssf_merged_into_the_weights_computes_the_same_function_and_leaves_no_routed_view(tiny, images):
    from vitpeft.methods import ssf

    model = registry.apply(tiny(), "ssf", {}).eval()
    perturb_trainable(model)
    unmerged = outputs(model, images)
    ssf.merge(model)
    torch.testing.assert_close(outputs(model, images), unmerged, atol=1e-5, rtol=1e-5)
    assert not any(ss.enabled for ss in ssf.scale_shifts(model))


def test_every_method_with_a_routed_view_is_named_so_for_planning():
    """arguments.ROUTED_VIEWS (torch-free: planning reads it) is exactly the methods whose module has `routed`."""
    assert {method for method in registry.REGISTRY if registry.has_routed_view(method)} == set(configs.ROUTED_VIEWS)
    with pytest.raises(VitpeftError, match="method 'bitfit' has no routed view: it trains pretrained weights in place"):
        configs.routed_view("bitfit")
    with pytest.raises(VitpeftError, match="method 'linear' has no routed view: it trains only a head"):
        configs.routed_view("linear")
    assert configs.routed_view("vpt_deep") == "no prompts"


@pytest.mark.parametrize("method,args", [
    ("vpt_shallow", {"length": 3}), ("vpt_deep", {"length": 3}), ("adaptformer", {"bottleneck": 8}), ("ssf", {}),
    ("block_expansion", {"p": 2}),
])
def test_routed_view_gives_the_pretrained_features_bit_for_bit(tiny, images, method, args):
    """The source column's routed score is the untouched backbone's (its cached features): exactly, not nearly.
    (LoRA's view runs the split qkv, equal to the fused one within 1e-6: the test above.)"""
    from vitpeft.models.backbone import features

    with torch.no_grad():
        pretrained = features(tiny(), images)
        model = registry.apply(tiny(), method, args).eval()
        perturb_trainable(model)
        assert not torch.equal(features(model, images), pretrained)
        with registry.routed(model) as view:
            assert torch.equal(features(view, images), pretrained)
