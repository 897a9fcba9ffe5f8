"""Both evaluations on a tiny ViT: target accuracy with the trained head, source k-NN with and without routing."""

import json

import numpy as np
import pytest
import torch
from runs import NUM_CLASSES, make_spec, perturb, write_run, write_spec

from vitpeft.data import augment
from vitpeft.models import backbone
from vitpeft import cli
from vitpeft.evaluation import evaluate
from vitpeft.evaluation import knn
from vitpeft.training import model as models
from vitpeft.data import store
from vitpeft.study import spec as spec_lib
from vitpeft.errors import VitpeftError

KS = (1, 3)


def separable(folder, per_class, seed):
    """Each class one flat colour plus faint noise: any sane feature separates them."""
    rng = np.random.default_rng(seed)
    colours = np.stack([rng.permutation(np.linspace(20, 235, NUM_CLASSES)) for _ in range(3)], axis=1)
    labels = np.repeat(np.arange(NUM_CLASSES), per_class)
    noise = rng.integers(-3, 4, (len(labels), 32, 32, 3))
    images = np.clip(colours[labels][:, None, None, :] + noise, 0, 255).astype(np.uint8)
    store.save(folder, images, labels, [f"c{i}" for i in range(NUM_CLASSES)], source="separable")
    return folder


@pytest.fixture
def target(tmp_path):
    # The same colour table (seed 0) for train and test, different noise.
    train = separable(tmp_path / "target_train", per_class=4, seed=0)
    rng_test = separable(tmp_path / "target_test", per_class=2, seed=0)
    return train, rng_test


def nearest_mean_head(spec, train_dir):
    """Set the head to a nearest-class-mean classifier on the backbone's features of the train set."""

    def change(model):
        data = store.load(train_dir)
        x = augment.normalize(augment.resize(torch.from_numpy(data.images), 32), spec["data"]["mean"], spec["data"]["std"])
        with torch.no_grad():
            feats = backbone.features(model.eval(), x)
            means = torch.stack([feats[torch.as_tensor(data.labels) == c].mean(0) for c in range(NUM_CLASSES)])
            model.head.weight.copy_(means)  # argmax of w.f - |w|^2/2 = nearest mean
            model.head.bias.copy_(-0.5 * (means**2).sum(1))

    return change


def test_eval_target_scores_the_trained_head_via_cli(tmp_path, tiny_model_cfg, target):
    train_dir, test_dir = target
    spec = make_spec(tiny_model_cfg, "linear", train_dir=train_dir)
    (tmp_path / "spec.yaml").write_text(spec_lib.dump(spec))
    good = write_run(spec, tmp_path / "good", nearest_mean_head(spec, train_dir))
    out = tmp_path / "metrics" / "target.json"
    argv = ["eval-target", "--spec", str(tmp_path / "spec.yaml"), "--run", str(good), "--data", str(test_dir),
            "--out", str(out), "--device", "cpu", "--batch-size", "7"]  # fmt: skip
    assert cli.main(argv) == 0
    result = json.loads(out.read_text())
    assert result["metric"] == "classifier" and result["count"] == 20 and result["run"] == str(good)
    assert result["top1"] == 100.0 and result["top5"] == 100.0
    # An untrained head on the same backbone is far from perfect: the score comes from the run's head.
    fresh = evaluate.eval_target(spec, write_run(spec, tmp_path / "fresh"), test_dir, "cpu", 64)
    assert fresh["top1"] < 50.0 and fresh["top5"] >= fresh["top1"]


def test_eval_target_without_run_reports_target_knn(tiny_model_cfg, target):
    train_dir, test_dir = target
    spec = make_spec(tiny_model_cfg, "full", train_dir=train_dir)
    result = evaluate.eval_target(spec, None, test_dir, "cpu", 16, ks=KS)
    assert result["metric"] == "knn" and result["top5"] is None and result["run"] is None
    assert result["knn"] == {"1": 100.0, "3": 100.0} and result["top1"] == 100.0
    assert result["bank_count"] == 40 and result["count"] == 20


def test_eval_source_pretrained_on_separable_data(tiny_model_cfg, target):
    bank_dir, queries_dir = target
    spec = make_spec(tiny_model_cfg, "linear")
    result = evaluate.eval_source(spec, None, bank_dir, queries_dir, ks=KS, device="cpu", batch_size=16)
    assert result["knn"] == {"1": 100.0, "3": 100.0}
    assert result["routed"] is None and result["routed_top1"] is None
    assert (result["bank_count"], result["query_count"], result["num_classes"]) == (40, 20, NUM_CLASSES)
    assert result["ks"] == [1, 3] and result["headline_k"] == 1 and result["temperature"] == 0.07
    assert result["mean"] == list(evaluate.IMAGENET_MEAN)


@pytest.mark.parametrize("method, args", [("lora", {"r": 2}), ("block_expansion", {"p": 2})])
def test_routed_view_scores_like_the_pretrained_backbone(tmp_path, tiny_model_cfg, make_dataset, method, args):
    # Random images and labels: k-NN near chance, so its predictions are sensitive to every feature.
    bank_dir, queries_dir = make_dataset("bank", n=60, seed=1), make_dataset("queries", n=30, seed=2)
    spec = make_spec(tiny_model_cfg, method, args)
    (tmp_path / "spec.yaml").write_text(spec_lib.dump(spec))
    run = write_run(spec, tmp_path / "run", perturb)
    out = tmp_path / "source.json"
    argv = ["eval-source", "--spec", str(tmp_path / "spec.yaml"), "--run", str(run), "--bank", str(bank_dir),
            "--queries", str(queries_dir), "--out", str(out), "--k", "1", "5", "20", "--device", "cpu"]  # fmt: skip
    assert cli.main(argv) == 0
    tuned = json.loads(out.read_text())
    pretrained = evaluate.eval_source(spec, None, bank_dir, queries_dir, ks=(1, 5, 20), device="cpu")
    assert tuned["routed"] == pretrained["knn"]
    assert tuned["routed_top1"] == pretrained["top1"] and tuned["headline_k"] == 20
    # Non-vacuous: the shared (adapted) backbone really computes other features than the pretrained one.
    images = store.load(queries_dir).images
    model = models.trained(spec, run)
    shared = knn.extract(model, images, 32, evaluate.IMAGENET_MEAN, evaluate.IMAGENET_STD)
    original = knn.extract(models.pretrained(spec), images, 32, evaluate.IMAGENET_MEAN, evaluate.IMAGENET_STD)
    assert not torch.allclose(shared, original, atol=1e-3)


def test_bad_inputs_are_refused_before_any_model_is_built(tmp_path, tiny_model_cfg, make_dataset):
    bank, queries = make_dataset("bank", n=20), make_dataset("queries", n=10, num_classes=5)
    spec = make_spec(tiny_model_cfg, "linear")
    with pytest.raises(VitpeftError, match="different classes"):
        evaluate.eval_source(spec, None, bank, queries, ks=(1,))
    with pytest.raises(VitpeftError, match="k=200 exceeds the bank size"):
        evaluate.eval_source(spec, None, bank, bank, ks=(20, 200))
    with pytest.raises(VitpeftError, match="source queries not found"):
        evaluate.eval_source(spec, None, bank, tmp_path / "nowhere", ks=(1,))
    with pytest.raises(VitpeftError, match="no trained weights in run"):
        evaluate.eval_target(spec, tmp_path / "norun", bank, "cpu", 8)


def test_only_methods_that_train_beyond_the_head_change_the_backbone(tiny_model_cfg, tmp_path):
    changes = {m: evaluate.changes_backbone(make_spec(tiny_model_cfg, m, a), tmp_path)
               for m, a in [("linear", {}), ("topk", {"k": 3}), ("lora", {"r": 2})]}  # fmt: skip
    assert changes == {"linear": False, "topk": True, "lora": True}
    assert not evaluate.changes_backbone(make_spec(tiny_model_cfg, "full"), None)  # no run: the pretrained backbone


def run_cli(argv, capsys):
    """Exit code and stderr lines of `vitpeft argv`."""
    code = cli.main([str(a) for a in argv])
    return code, capsys.readouterr().err.strip().splitlines()


def test_target_labels_outside_the_specs_classes_are_one_line_and_no_metrics(tmp_path, tiny_model_cfg, make_dataset,
                                                                              capsys):  # fmt: skip
    spec = make_spec(tiny_model_cfg, "linear")
    run = write_run(spec, tmp_path / "run")
    wrong = make_dataset("cifar10_by_mistake", n=24, num_classes=12)  # labels up to 11, the spec has 10 classes
    out = tmp_path / "target.json"
    argv = ["eval-target", "--spec", write_spec(spec, tmp_path / "s.yaml"), "--run", run, "--data", wrong, "--out", out]
    code, err = run_cli(argv, capsys)
    assert code == 2 and len(err) == 1
    assert str(wrong) in err[0] and "0..11" in err[0] and "num_classes = 10" in err[0]
    assert not out.exists()


@pytest.mark.parametrize("flags, shown", [(["--std", "0.2", "0", "0.2"], "std [0.2, 0.0, 0.2]"),
                                          (["--mean", "0.5", "0.5", "0.5", "--std", "-1", "1", "1"], "std [-1.0")])
def test_bad_mean_or_std_is_one_line_and_no_metrics(tmp_path, tiny_model_cfg, make_dataset, capsys, flags, shown):
    bank = make_dataset("bank", n=20)
    out = tmp_path / "source.json"
    argv = ["eval-source", "--spec", write_spec(make_spec(tiny_model_cfg, "linear"), tmp_path / "s.yaml"),
            "--bank", bank, "--queries", bank, "--k", "1", "--out", out, *flags]  # fmt: skip
    code, err = run_cli(argv, capsys)
    assert code == 2 and len(err) == 1 and shown in err[0] and "std positive" in err[0]
    assert not out.exists()


def test_nan_features_of_a_diverged_run_are_one_line_naming_it_and_no_metrics(tmp_path, tiny_model_cfg, make_dataset,
                                                                               capsys):  # fmt: skip
    spec = make_spec(tiny_model_cfg, "full")

    def diverge(model):
        with torch.no_grad():
            model.blocks[5].attn.qkv.weight[0, 0] = float("nan")

    run = write_run(spec, tmp_path / "diverged", diverge)
    bank = make_dataset("bank", n=20)
    out = tmp_path / "source.json"
    argv = ["eval-source", "--spec", write_spec(spec, tmp_path / "s.yaml"), "--run", run, "--bank", bank,
            "--queries", bank, "--k", "1", "--out", out]  # fmt: skip
    code, err = run_cli(argv, capsys)
    errors = [line for line in err if "error:" in line]
    assert code == 2 and errors == [err[-1]]
    assert f"run {run} gives NaN or infinite features on {bank}" in err[-1] and "retrain" in err[-1]
    assert not out.exists()
