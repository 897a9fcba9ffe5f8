"""WiSE-FT-style interpolation on tiny ViTs: alpha = 1 is the run, alpha = 0 the untouched backbone, bit for bit."""

import pytest
import torch
from runs import make_spec, perturb, random_dataset, write_checkpoint, write_run

from vitpeft import digests
from vitpeft.errors import VitpeftError
from vitpeft.evaluation import evaluate
from vitpeft.models import backbone
from vitpeft.evaluation.interpolation import choose_alpha, eval_interpolation, eval_wise
from vitpeft.methods import interpolation, registry
from vitpeft.training import draws
from vitpeft.training import model as models

KS = (1, 3)
METHODS = [
    ("full", {}), ("topk", {"k": 3}), ("lpft", {}), ("l2sp", {}), ("lora", {"r": 2}), ("block_expansion", {"p": 2}),
    ("peft", {"peft_type": "IA3", "target_modules": ["q", "v"]}), ("adaptformer", {"bottleneck": 4}), ("ssf", {}),
    ("bitfit", {}), ("ln_tune", {}),
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


def test_ssf_interpolation_is_wise_ft_of_its_merged_weights(tmp_path, tiny_model_cfg):
    """gamma -> 1 + a (gamma - 1), beta -> a beta equals the lerp of the merged weights (W' = diag(gamma) W)."""
    from vitpeft.methods import ssf

    spec = make_spec(tiny_model_cfg, "ssf")
    run = write_run(spec, tmp_path / "run", change=lambda model: perturb(model, scale=0.2))
    model, x = models.trained(spec, run), torch.randn(4, 3, 32, 32)
    merged = ssf.merge(models.trained(spec, run)).state_dict()
    lerped = models.pretrained(spec)
    start = lerped.state_dict()
    lerped.load_state_dict({name: torch.lerp(value, merged[name], 0.3) if not name.startswith("head.") else
                            merged[name] for name, value in start.items()})  # fmt: skip
    with torch.no_grad(), interpolation.interpolated(model, 0.3) as view:
        torch.testing.assert_close(features(view, x), features(lerped, x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("method,why", [("linear", "its backbone never moves"),
                                        ("vpt_deep", "its prompts have no pretrained counterpart")])
def test_methods_without_an_interpolation_are_refused_saying_why(tmp_path, tiny_model_cfg, data, method, why):
    spec = make_spec(tiny_model_cfg, method)
    run = write_run(spec, tmp_path / "run")
    with pytest.raises(VitpeftError, match=f"has no interpolation \\({why}"):
        eval_interpolation(spec, run, data["test"], [0, 1])


def test_bad_alphas_are_refused(tmp_path, tiny_model_cfg, data):
    spec = make_spec(tiny_model_cfg, "linear")
    run = write_run(spec, tmp_path / "run")
    spec = make_spec(tiny_model_cfg, "full")
    with pytest.raises(VitpeftError, match=r"alphas must be a non-empty list in \[0, 1\]"):
        eval_interpolation(spec, run, data["test"], [0, 1.5])


# ---------------------------------------------------------------- the alpha, chosen on held-out data


def test_the_alpha_is_chosen_on_validation_when_its_best_differs_from_the_tests():
    points = [  # validation's best mean is at 0.5 (70), the test split's at 1 (75); the source is the same
        {"alpha": 0, "target_acc": 40.0, "val_acc": 42.0, "source_acc": 80.0},
        {"alpha": 0.5, "target_acc": 60.0, "val_acc": 70.0, "source_acc": 70.0},
        {"alpha": 1, "target_acc": 90.0, "val_acc": 64.0, "source_acc": 60.0},
    ]
    assert choose_alpha(points, "validation")["alpha"] == 0.5
    assert choose_alpha(points, "test")["alpha"] == 1
    tie = [{**point, "val_acc": 140.0 - point["source_acc"]} for point in points]  # every mean 70
    assert choose_alpha(tie, "validation")["alpha"] == 1  # ties go to the less interpolated model
    with pytest.raises(VitpeftError, match="alpha 0 has no val_acc .*no validation split and no held-out slice"):
        choose_alpha([{**points[0], "val_acc": None}], "validation", "sweep.json")


def test_the_sweep_scores_the_held_out_slice_training_never_saw_and_eval_wise_scores_its_choice(tmp_path,
                                                                                            tiny_model_cfg, data):
    train_dir = random_dataset(tmp_path / "train", 50, seed=4)
    checkpoint = write_checkpoint(tiny_model_cfg, tmp_path / "pretrained.safetensors")
    spec = make_spec(tiny_model_cfg, "full", train_dir=train_dir, checkpoint=str(checkpoint))
    spec["train"].update(hold_out=True, val_fraction=0.2, batch_size=8)
    held = draws.validation_set(spec)  # the slice `train.hold_out` keeps out of training
    trained_on = draws.load_data(spec, torch.device("cpu")).train_x
    assert len(held) == 10 and len(trained_on) == 40
    seen = {bytes(image.numpy()) for image in trained_on}
    assert not any(bytes(image) in seen for image in held.images)

    run = write_run(spec, tmp_path / "run", change=lambda model: perturb(model, scale=0.2))
    knn_args = dict(ks=KS, mean=(0.5,) * 3, std=(0.5,) * 3)
    sweep = eval_interpolation(spec, run, data["test"], [0, 0.5, 1], data["bank"], data["queries"], **knn_args)
    model = models.trained(spec, run)
    assert sweep["points"][-1]["val_acc"] == evaluate.classifier_scores(model, held, spec, "cpu", 256)[0]
    assert sweep["val_data"].startswith("held-out 0.2 of train") and sweep["val_count"] == 10

    # validation favours alpha 0.5, the test split alpha 1: eval-wise takes validation's, then scores it in full
    for point, val, test in zip(sweep["points"], (0.0, 100.0, 0.0), (0.0, 0.0, 100.0)):
        point.update(val_acc=val, target_acc=test)
    path = tmp_path / "sweep.json"
    digests.write_json(path, sweep)  # as eval-interpolation writes it: with its digest, which eval-wise checks
    wise = eval_wise(spec, run, path, "validation", data["bank"], data["queries"], **knn_args)
    assert (wise["alpha"], wise["target_acc"]) == (0.5, 0.0)
    assert wise["knn"] == sweep["points"][1]["source_knn"]  # the same bank here: the sweep's figure at 0.5
    assert wise["chosen_on"]["target"].startswith("held-out 0.2 of train") and len(wise["choice"]) == 3
    assert eval_wise(spec, run, path, "test", data["bank"], data["queries"], **knn_args)["alpha"] == 1
