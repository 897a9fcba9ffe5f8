"""WiSE-FT-style interpolation on tiny ViTs: alpha = 1 is the run, alpha = 0 the untouched backbone, bit for bit."""

import pytest
import torch
from runs import make_spec, perturb, random_dataset, write_checkpoint, write_run

from vitpeft.errors import VitpeftError
from vitpeft.evaluation import evaluate
from vitpeft.models import backbone
from vitpeft.evaluation.interpolation import eval_interpolation
from vitpeft.methods import interpolation, registry
from vitpeft.training import model as models

KS = (1, 3)
METHODS = [
    ("full", {}), ("topk", {"k": 3}), ("lpft", {}), ("l2sp", {}), ("lora", {"r": 2}), ("block_expansion", {"p": 2}),
    ("peft", {"peft_type": "IA3", "target_modules": ["q", "v"]}),
]  # fmt: skip


@pytest.fixture
def data(tmp_path):
    return {"bank": random_dataset(tmp_path / "bank", 40, seed=1), "queries": random_dataset(tmp_path / "q", 20, seed=2),
            "test": random_dataset(tmp_path / "test", 20, seed=3)}  # fmt: skip


@pytest.mark.parametrize("method,args", METHODS, ids=[m for m, _ in METHODS])
def test_alpha_one_is_the_run_and_alpha_zero_the_pretrained_backbone_exactly(tmp_path, tiny_model_cfg, data, method,
                                                                             args):
    checkpoint = write_checkpoint(tiny_model_cfg, tmp_path / "pretrained.safetensors")
    spec = make_spec(tiny_model_cfg, method, args, checkpoint=str(checkpoint))
    run = write_run(spec, tmp_path / "run", change=lambda model: perturb(model, scale=0.2))
    knn_args = dict(ks=KS, mean=(0.5,) * 3, std=(0.5,) * 3)
    result = eval_interpolation(spec, run, data["test"], [0, 0.5, 1], data["bank"], data["queries"], **knn_args)
    zero, half, one = result["points"]

    trained_target = evaluate.eval_target(spec, run, data["test"])["top1"]
    trained_source = evaluate.eval_source(spec, run, data["bank"], data["queries"], **knn_args)
    pretrained_source = evaluate.eval_source(spec, None, data["bank"], data["queries"], **knn_args)
    assert one["target_acc"] == trained_target
    assert one["source_knn"] == trained_source["knn"]
    assert zero["source_knn"] == pretrained_source["knn"]
    # Scores near chance can agree by luck: the features themselves, bit for bit, and a middle that is neither.
    model, x = models.trained(spec, run), torch.randn(4, 3, 32, 32)
    pretrained = models.pretrained(spec).state_dict() if interpolation.needs_pretrained(method) else None
    with torch.no_grad():
        trained_feats, untouched = features(model, x), features(models.pretrained(spec), x)
        assert not torch.equal(trained_feats, untouched)
        for alpha, expected in ((1, trained_feats), (0, untouched)):
            with interpolation.interpolated(model, alpha, pretrained) as view:
                assert torch.equal(features(view, x), expected), alpha
        with interpolation.interpolated(model, 0.5, pretrained) as view:
            middle = features(view, x)
        assert not torch.equal(middle, trained_feats) and not torch.equal(middle, untouched)
        assert torch.equal(features(model, x), trained_feats)  # restored


def features(model, x):
    return backbone.features(model.eval(), x)


def test_weights_are_interpolated_and_restored(tmp_path, tiny_model_cfg):
    spec = make_spec(tiny_model_cfg, "full")
    run = write_run(spec, tmp_path / "run", change=perturb)
    model, pretrained = models.trained(spec, run), models.pretrained(spec).state_dict()
    before = {name: value.clone() for name, value in model.state_dict().items()}
    name = "blocks.3.mlp.fc1.weight"
    with interpolation.interpolated(model, 0.25, pretrained) as view:
        torch.testing.assert_close(view.state_dict()[name], 0.75 * pretrained[name] + 0.25 * before[name])
        assert torch.equal(view.state_dict()["head.weight"], before["head.weight"])  # the run's head at every alpha
    assert all(torch.equal(before[key], value) for key, value in model.state_dict().items())


def test_lora_update_is_scaled_and_block_branches_too(tmp_path, tiny_model_cfg):
    spec = make_spec(tiny_model_cfg, "lora", {"r": 2})
    model = models.trained(spec, write_run(spec, tmp_path / "lora", change=perturb))
    x = torch.randn(2, 3, 32, 32)
    layer = model.blocks[0].attn.qkv.q
    tokens = torch.randn(4, 32)
    with torch.no_grad():
        base, full = layer.base_layer(tokens), layer(tokens)
        assert not torch.allclose(base, full)
        with interpolation.interpolated(model, 0.3):
            torch.testing.assert_close(layer(tokens), base + 0.3 * (full - base))
    spec = make_spec(tiny_model_cfg, "block_expansion", {"p": 1})
    model = models.trained(spec, write_run(spec, tmp_path / "block", change=perturb))
    with torch.no_grad(), interpolation.interpolated(model, 0.0) as view:
        zero = view(x)
    with torch.no_grad(), registry.routed(model) as routed:
        assert torch.equal(zero, routed(x))


def test_linear_and_bad_alphas_are_refused(tmp_path, tiny_model_cfg, data):
    spec = make_spec(tiny_model_cfg, "linear")
    run = write_run(spec, tmp_path / "run")
    with pytest.raises(VitpeftError, match="has no interpolation"):
        eval_interpolation(spec, run, data["test"], [0, 1])
    spec = make_spec(tiny_model_cfg, "full")
    with pytest.raises(VitpeftError, match=r"alphas must be a non-empty list in \[0, 1\]"):
        eval_interpolation(spec, run, data["test"], [0, 1.5])
