"""The untouched backbone's feature cache: same numbers as computing them, used only when its provenance matches."""

import hashlib
import json

import numpy as np
import pytest
import torch
from conftest import TINY_MODEL
from runs import make_spec, perturb, random_dataset, write_checkpoint, write_run, write_spec

from vitpeft import cli
from vitpeft.evaluation import evaluate
from vitpeft.data import store

KS = (1, 5, 20)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A checkpoint, a bank and queries, and the cache the CLI extracts from them (made once: tests only read it)."""
    torch.set_num_threads(1)
    tmp_path, tiny_model_cfg = tmp_path_factory.mktemp("source"), TINY_MODEL
    checkpoint = write_checkpoint(tiny_model_cfg, tmp_path / "backbone.safetensors")
    bank, queries = random_dataset(tmp_path / "bank", 60, seed=1), random_dataset(tmp_path / "queries", 30, seed=2)
    spec_file = write_spec(make_spec(tiny_model_cfg, "linear", checkpoint=str(checkpoint), name="pretrained"),
                           tmp_path / "pretrained.yaml")  # fmt: skip
    cache = tmp_path / "cache"
    argv = ["extract-features", "--spec", spec_file, "--bank", bank, "--queries", queries, "--out", cache,
            "--device", "cpu", "--batch-size", "16"]  # fmt: skip
    assert cli.main([str(a) for a in argv]) == 0
    return {"checkpoint": checkpoint, "bank": bank, "queries": queries, "cache": cache}


def score(spec, run, source, **options):
    return evaluate.eval_source(spec, run, source["bank"], source["queries"], ks=KS, device="cpu", batch_size=16,
                                **options)  # fmt: skip


def test_cache_holds_features_labels_and_provenance(source):
    cache, checkpoint = source["cache"], source["checkpoint"]
    record = json.loads((cache / "provenance.json").read_text())
    assert record["backbone"]["checkpoint_sha256"] == hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    assert record["precision"] == {"storage": "fp32", "compute": "fp32"}
    assert record["preprocessing"]["img_size"] == 32 and record["preprocessing"]["mean"] == list(evaluate.IMAGENET_MEAN)
    bank = store.load(source["bank"])
    assert record["bank"]["count"] == 60 and record["bank"]["image_shape"] == [32, 32, 3]
    assert record["bank"]["meta"] == json.loads((source["bank"] / "meta.json").read_text())
    assert record["bank"]["labels_sha256"] == hashlib.sha256(bank.labels.astype("<i8").tobytes()).hexdigest()
    bank_features = np.load(cache / "bank.npy")
    assert bank_features.shape == (60, 32) and bank_features.dtype == np.float32
    assert np.allclose(np.linalg.norm(bank_features, axis=1), 1, atol=1e-5)
    assert np.array_equal(np.load(cache / "bank_labels.npy"), bank.labels)
    assert np.load(cache / "queries.npy").shape == (30, 32)
    assert sorted(p.name for p in cache.parent.iterdir() if p.name.startswith(".")) == []  # no temporaries left


@pytest.mark.parametrize(
    "method, args, from_cache",
    [(None, None, "knn"), ("linear", {}, "knn"), ("lora", {"r": 2}, "routed"), ("block_expansion", {"p": 2}, "routed")],
)
def test_scores_from_the_cache_equal_scores_computed_directly(tmp_path, tiny_model_cfg, source, capsys, method, args,
                                                             from_cache):  # fmt: skip
    spec = make_spec(tiny_model_cfg, method or "linear", args, checkpoint=str(source["checkpoint"]))
    run = write_run(spec, tmp_path / "run", perturb) if method else None
    direct = score(spec, run, source)
    capsys.readouterr()
    cached = score(spec, run, source, pretrained_features=source["cache"])
    assert f"from the cache {source['cache']}" in capsys.readouterr().err
    assert cached["pretrained_features"] == str(source["cache"]) and direct["pretrained_features"] is None
    assert (cached["knn"], cached["routed"]) == (direct["knn"], direct["routed"])  # every k, to the last digit
    assert cached[from_cache] is not None


@pytest.mark.parametrize("method, args", [("full", {}), ("topk", {"k": 1})])
def test_a_run_with_no_view_of_the_untouched_backbone_leaves_the_cache_unread(tmp_path, tiny_model_cfg, source,
                                                                              capsys, method, args):  # fmt: skip
    spec = make_spec(tiny_model_cfg, method, args, checkpoint=str(source["checkpoint"]))
    run = write_run(spec, tmp_path / "run", perturb)
    capsys.readouterr()
    result = score(spec, run, source, pretrained_features=source["cache"])
    assert "feature cache" not in capsys.readouterr().err and result["pretrained_features"] is None
    assert result["knn"] == score(spec, run, source)["knn"] and result["routed"] is None


def test_fp16_cache_scores_equal_fp16_features_computed_directly(tmp_path, tiny_model_cfg, source):
    spec = make_spec(tiny_model_cfg, "linear", checkpoint=str(source["checkpoint"]))
    spec_file = write_spec(spec, tmp_path / "s.yaml")
    cache = tmp_path / "cache16"
    argv = ["extract-features", "--spec", spec_file, "--bank", source["bank"], "--queries", source["queries"],
            "--out", cache, "--precision", "fp16", "--device", "cpu"]  # fmt: skip
    assert cli.main([str(a) for a in argv]) == 0
    assert np.load(cache / "bank.npy").dtype == np.float16
    spec = make_spec(tiny_model_cfg, "linear", checkpoint=str(source["checkpoint"]))
    cached = score(spec, None, source, precision="fp16", pretrained_features=cache)
    assert cached["pretrained_features"] == str(cache)
    assert cached["knn"] == score(spec, None, source, precision="fp16")["knn"]


def other_checkpoint(tmp_path, tiny_model_cfg, source):
    return {"spec": {"checkpoint": str(write_checkpoint(tiny_model_cfg, tmp_path / "other.safetensors", seed=1))}}


def other_mean(tmp_path, tiny_model_cfg, source):
    return {"options": {"mean": (0.5, 0.5, 0.5)}}


def fp16(tmp_path, tiny_model_cfg, source):
    return {"options": {"precision": "fp16"}}


def relabelled_bank(tmp_path, tiny_model_cfg, source):
    data = store.load(source["bank"])
    store.save(tmp_path / "bank2", data.images, (data.labels + 1) % 10, data.classes, source="random")
    return {"source": {"bank": tmp_path / "bank2"}}


def fewer_queries(tmp_path, tiny_model_cfg, source):
    data = store.load(source["queries"])
    store.save(tmp_path / "queries2", data.images[:20], data.labels[:20], data.classes, source="random")
    return {"source": {"queries": tmp_path / "queries2"}}


@pytest.mark.parametrize(
    "change, differing",
    [(other_checkpoint, "backbone.checkpoint_sha256"), (other_mean, "preprocessing.mean"),
     (fp16, "precision.storage"), (relabelled_bank, "bank.labels_sha256"), (fewer_queries, "queries.count")],
)  # fmt: skip
def test_a_cache_of_other_provenance_is_recomputed_never_used(tmp_path, tiny_model_cfg, source, capsys, change,
                                                              differing):  # fmt: skip
    changed = change(tmp_path, tiny_model_cfg, source)
    spec = make_spec(tiny_model_cfg, "linear", **{"checkpoint": str(source["checkpoint"]), **changed.get("spec", {})})
    here = {**source, **changed.get("source", {})}
    options = changed.get("options", {})
    capsys.readouterr()
    result = score(spec, None, here, pretrained_features=source["cache"], **options)
    log = capsys.readouterr().err
    assert f"not using the feature cache {source['cache']}" in log and differing in log
    assert result["pretrained_features"] is None
    assert result["knn"] == score(spec, None, here, **options)["knn"]


def test_a_missing_cache_is_computed_with_a_log_line(tmp_path, tiny_model_cfg, source, capsys):
    spec = make_spec(tiny_model_cfg, "linear", checkpoint=str(source["checkpoint"]))
    result = score(spec, None, source, pretrained_features=tmp_path / "nowhere")
    assert "not using the feature cache" in capsys.readouterr().err and result["pretrained_features"] is None


def test_extract_features_refuses_bad_input_in_one_line_and_writes_nothing(tmp_path, tiny_model_cfg, source, capsys):
    spec = make_spec(tiny_model_cfg, "linear", checkpoint=str(source["checkpoint"]))
    spec_file = write_spec(spec, tmp_path / "s.yaml")
    out = tmp_path / "cache_bad"
    base = ["extract-features", "--spec", spec_file, "--queries", source["queries"], "--out", out]
    assert cli.main([str(a) for a in base + ["--bank", source["bank"], "--std", "0", "1", "1"]]) == 2
    assert cli.main([str(a) for a in base + ["--bank", tmp_path / "no_bank"]]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "std positive" in err[0] and f"source bank not found: {tmp_path / 'no_bank'}" in err[1]
    assert not out.exists()
