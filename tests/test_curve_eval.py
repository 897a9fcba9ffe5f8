"""The forgetting curve: class-balanced subsets, and every saved step scored as the table scores a run."""

import json
import shutil

import numpy as np
import pytest
import torch
from conftest import TINY_MODEL
from runs import make_spec, perturb, random_dataset, write_run, write_spec
from safetensors.torch import load_file, save_file

from vitpeft import cli, digests
from vitpeft.evaluation import curve
from vitpeft.evaluation import evaluate
from vitpeft.training import model as models
from vitpeft.data import store

KS = (1, 5)


def run_cli(argv, capsys):
    code = cli.main([str(a) for a in argv])
    return code, capsys.readouterr().err.strip().splitlines()


def uneven(folder, counts, seed=0):
    """A dataset with `counts[c]` images of class c, classes interleaved, each image tagged by its index."""
    labels = np.concatenate([np.full(n, c) for c, n in enumerate(counts)])
    labels = labels[np.random.default_rng(seed).permutation(len(labels))]
    images = np.zeros((len(labels), 4, 4, 3), dtype=np.uint8)
    images[:, 0, 0, 0], images[:, 0, 0, 1] = np.arange(len(labels)) % 256, np.arange(len(labels)) // 256
    store.save(folder, images, labels, [f"c{c}" for c in range(len(counts))], source="uneven")
    return folder


def test_subsample_keeps_k_per_class_seeded_in_original_order(tmp_path, capsys):
    data = uneven(tmp_path / "data", [7, 5, 9])
    code, _ = run_cli(["subsample", "--data", data, "--per-class", 3, "--out", tmp_path / "sub", "--seed", 4], capsys)
    assert code == 0
    original, sub = store.load(data), store.load(tmp_path / "sub")
    assert sub.classes == original.classes and np.bincount(sub.labels).tolist() == [3, 3, 3]
    kept = sub.images[:, 0, 0, 0].astype(int) + 256 * sub.images[:, 0, 0, 1].astype(int)  # each image's index in `data`
    assert (np.diff(kept) > 0).all()  # original order
    assert np.array_equal(original.images[kept], sub.images) and np.array_equal(original.labels[kept], sub.labels)
    for out, seed in (("again", 4), ("other", 5)):
        argv = ["subsample", "--data", data, "--per-class", 3, "--out", tmp_path / out, "--seed", seed]
        assert run_cli(argv, capsys)[0] == 0
    assert np.array_equal(store.load(tmp_path / "again").images, sub.images)  # same seed, same subset
    assert not np.array_equal(store.load(tmp_path / "other").images, sub.images)


def test_subsample_refuses_more_than_the_smallest_class(tmp_path, capsys):
    data = uneven(tmp_path / "data", [7, 5, 9])
    code, err = run_cli(["subsample", "--data", data, "--per-class", 6, "--out", tmp_path / "sub"], capsys)
    assert code == 2 and len(err) == 1
    assert f"{data}: class 'c1' has only 5 images" in err[0] and "--per-class 5 or less" in err[0]
    assert not (tmp_path / "sub").exists()


@pytest.fixture
def domains(tmp_path):
    return {
        "target": random_dataset(tmp_path / "target_test", 20, seed=3),
        "bank": random_dataset(tmp_path / "bank", 40, seed=1),
        "queries": random_dataset(tmp_path / "queries", 20, seed=2),
    }


def curve_argv(spec_file, run, domains, out):
    return ["eval-curve", "--spec", spec_file, "--run", run, "--target-data", domains["target"], "--bank",
            domains["bank"], "--queries", domains["queries"], "--out", out, "--k", *KS, "--device", "cpu"]  # fmt: skip


def add_point(run, step, state):
    (run / "curve").mkdir(exist_ok=True)
    save_file(state, str(run / "curve" / f"step_{step:06d}.safetensors"))
    digests.seal(run)  # as vitpeft train records it


def run_state(run):
    return load_file(str(run / models.TRAINABLE_FILE))


def test_points_come_in_step_order_then_the_final_weights(tmp_path):
    run = tmp_path / "run"
    (run / "curve").mkdir(parents=True)
    for name in ("step_000100.safetensors", "step_000020.safetensors", ".step_000300.safetensors.tmp-1", "notes.txt"):
        (run / "curve" / name).write_bytes(b"")  # names only: points() reads no weights
    (run / models.TRAINABLE_FILE).write_bytes(b"")
    (run / "summary.json").write_text('{"selected_step": 250}')
    digests.seal(run)
    assert [(p.step, p.final, p.path.name) for p in curve.points(run)] == [
        (20, False, "step_000020.safetensors"), (100, False, "step_000100.safetensors"),
        (250, True, models.TRAINABLE_FILE)]  # fmt: skip


def test_each_point_scores_as_the_table_scores_its_weights(tmp_path, tiny_model_cfg, domains, capsys):
    spec = make_spec(tiny_model_cfg, "block_expansion", {"p": 2})
    run = write_run(spec, tmp_path / "run", lambda model: perturb(model, 0.5, seed=1))
    add_point(run, 2, {name: 0.05 * value for name, value in run_state(run).items()})  # an early step: near identity
    out = tmp_path / "curve.json"
    assert run_cli(curve_argv(write_spec(spec, tmp_path / "s.yaml"), run, domains, out), capsys)[0] == 0
    result = json.loads(out.read_text())
    assert [(p["step"], p["final"]) for p in result["points"]] == [(2, False), (spec["train"]["steps"], True)]
    assert result["headline_k"] == 1 and result["ks"] == [1, 5] and result["query_count"] == 20
    # Each point equals eval-target and eval-source of a run folder holding that point's weights.
    for point, weights in zip(result["points"], [run / "curve" / "step_000002.safetensors", run / models.TRAINABLE_FILE]):
        alone = tmp_path / f"alone_{point['step']}"
        alone.mkdir()
        shutil.copy(weights, alone / models.TRAINABLE_FILE)
        digests.seal(alone)
        target = evaluate.eval_target(spec, alone, domains["target"], "cpu")
        source = evaluate.eval_source(spec, alone, domains["bank"], domains["queries"], ks=KS, device="cpu")
        assert point["target_acc"] == target["top1"]
        assert point["source_knn"] == source["knn"] and point["source_acc"] == source["top1"]
    assert result["points"][0]["source_knn"] != result["points"][1]["source_knn"]  # the backbone moved in between


def test_a_run_without_a_curve_scores_its_final_weights(tmp_path, tiny_model_cfg, domains, capsys):
    spec = make_spec(tiny_model_cfg, "linear")
    run = write_run(spec, tmp_path / "run", perturb)
    (run / "summary.json").write_text('{"selected_step": 250}')
    digests.seal(run)
    out = tmp_path / "curve.json"
    assert run_cli(curve_argv(write_spec(spec, tmp_path / "s.yaml"), run, domains, out), capsys)[0] == 0
    (point,) = json.loads(out.read_text())["points"]
    assert point["step"] == 250 and point["final"] is True
    assert point["source_knn"] == evaluate.eval_source(spec, None, domains["bank"], domains["queries"], ks=KS)["knn"]


def foreign_point(run, tiny_model_cfg):
    """A curve file of another model: one tensor of another shape."""
    state = run_state(run)
    state["head.bias"] = torch.zeros(3)
    add_point(run, 5, state)
    return run / "curve" / "step_000005.safetensors", "does not fit the spec's model"


def misnamed_point(run, tiny_model_cfg):
    (run / "curve").mkdir()
    shutil.copy(run / models.TRAINABLE_FILE, run / "curve" / "step_last.safetensors")
    return run / "curve" / "step_last.safetensors", "not a curve point"


def missing_summary(run, tiny_model_cfg):
    (run / "summary.json").unlink()
    return run / "summary.json", "is missing"


@pytest.fixture(scope="module")
def block_run(tmp_path_factory):
    """A finished block-expansion run (spec, run folder), written once; tests break copies of it."""
    spec = make_spec(TINY_MODEL, "block_expansion", {"p": 1})
    return spec, write_run(spec, tmp_path_factory.mktemp("block") / "run")


@pytest.mark.parametrize("breakage", [foreign_point, misnamed_point, missing_summary])
def test_a_broken_run_is_one_line_naming_the_file_and_no_curve(tmp_path, tiny_model_cfg, domains, capsys, block_run,
                                                               breakage):  # fmt: skip
    spec, run = block_run[0], shutil.copytree(block_run[1], tmp_path / "run")
    named, says = breakage(run, tiny_model_cfg)
    out = tmp_path / "curve.json"
    code, err = run_cli(curve_argv(write_spec(spec, tmp_path / "s.yaml"), run, domains, out), capsys)
    errors = [line for line in err if "error:" in line]
    assert code == 2 and len(errors) == 1 and str(named) in errors[0] and says in errors[0]
    assert not out.exists()


def test_without_a_source_bank_the_curve_scores_the_target_only(tmp_path, tiny_model_cfg, domains, capsys):
    """A study with source.enabled false still gets its curve: target accuracy per step, no source figure."""
    spec = make_spec(tiny_model_cfg, "lora", {"r": 2})
    run = write_run(spec, tmp_path / "run", lambda model: perturb(model, 0.5, seed=1))
    add_point(run, 2, run_state(run))
    spec_file, out = write_spec(spec, tmp_path / "s.yaml"), tmp_path / "curve.json"
    argv = ["eval-curve", "--spec", spec_file, "--run", run, "--target-data", domains["target"], "--out", out,
            "--device", "cpu"]
    assert run_cli(argv, capsys)[0] == 0
    points = json.loads(out.read_text())["points"]
    assert [p["step"] for p in points] == [2, spec["train"]["steps"]]
    assert all(p["source_acc"] is None and 0 <= p["target_acc"] <= 100 for p in points)
    code, message = run_cli(argv[:-2] + ["--bank", domains["bank"], "--out", tmp_path / "x.json"], capsys)
    assert code == 2 and "give --bank and --queries together" in message[-1]
