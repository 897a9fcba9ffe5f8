"""The training loop on tiny ViTs: outputs, learning, frozen weights, divergence, selection, schedule."""

import csv
import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import TINY_MODEL
from test_resume import StopAtStep
from vitpeft.data import augment
from vitpeft.methods import registry
from vitpeft.training import resume
from vitpeft.data import store
from vitpeft.training import model as model_lib
from vitpeft.study import spec as spec_lib
from vitpeft.errors import VitpeftError
from vitpeft.training.draws import batch_indices, load_data, lr_at
from vitpeft.training.train import RUN_FILES, Run, Selection, train


def make_spec(data, method="full", args=None, test=None, val=None, **train_overrides):
    return spec_lib.resolve({
        "name": f"tiny_{method}", "method": method, "args": args or {}, "model": TINY_MODEL, "num_classes": 4,
        "data": {"train": str(data), "test": test and str(test), "val": val and str(val)},
        "train": {"steps": 20, "batch_size": 16, "warmup_steps": 2, "lr": 0.05, "log_every": 5, **train_overrides},
    })


@pytest.fixture
def colours(tmp_path):
    """A learnable task: the class is the dominant colour (red, green, blue, light), under pixel noise."""
    rng = np.random.default_rng(0)
    labels = np.arange(96) % 4
    images = rng.integers(0, 80, (96, 32, 32, 3))
    for channel in range(3):
        images[labels == channel, :, :, channel] += 170
    images[labels == 3] += 100
    store.save(tmp_path / "colours", images.clip(0, 255).astype(np.uint8), labels, ["r", "g", "b", "light"])
    return tmp_path / "colours"


def read_log(run_dir):
    with open(run_dir / "train_log.csv") as handle:
        return list(csv.DictReader(handle))


def test_run_dir_holds_exactly_the_listed_files_and_they_describe_the_run(tmp_path, colours):
    spec = make_spec(colours, checkpoint_every=5)
    out = train(spec, tmp_path / "run", tmp_path / ".resume", device="cpu")
    assert sorted(p.name for p in out.iterdir()) == sorted(RUN_FILES)
    assert spec_lib.load(out / "spec.yaml") == spec
    assert [int(row["step"]) for row in read_log(out)] == [5, 10, 15, 20]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 20 and summary["selection"] == "last" and summary["selected_step"] == 20
    assert summary["device"] == "cpu" and summary["precision"] == "float32" and summary["resumed_from_step"] == 0
    model = model_lib.for_training(spec)
    assert summary["trainable_params"] == sum(p.numel() for p in model.parameters())  # full: everything
    assert list((tmp_path / ".resume").iterdir()) == []  # a finished run removes its resume folder


def test_loss_falls_clearly_on_a_learnable_task(tmp_path, colours):
    out = train(make_spec(colours), tmp_path / "run", tmp_path / ".resume", device="cpu")
    losses = [float(row["loss"]) for row in read_log(out)]
    assert losses[-1] < 0.1 * math.log(4)  # chance level is ln 4
    assert losses[-1] < losses[0]


def test_lora_artifact_holds_only_the_trainable_tensors(tmp_path, colours):
    full = train(make_spec(colours, steps=2), tmp_path / "full", tmp_path / ".resume", device="cpu")
    lora_spec = make_spec(colours, "lora", {"r": 2}, steps=2)
    lora = train(lora_spec, tmp_path / "lora", tmp_path / ".resume", device="cpu")
    saved = load_file(str(lora / "trainable.safetensors"))
    model = model_lib.for_training(lora_spec)
    assert saved.keys() == {n for n, p in model.named_parameters() if p.requires_grad}
    assert all("lora" in name or name.startswith("head.") for name in saved)
    size = lambda run: (run / "trainable.safetensors").stat().st_size  # noqa: E731
    assert size(lora) < 0.1 * size(full)


def run_in_process(spec, tmp_path):
    """The real Run object (as train() drives it), so the test can look at the model afterwards."""
    run = Run(spec, load_data(spec, torch.device("cpu")), torch.device("cpu"))
    with resume.StopFlag() as stop:
        run.loop(stop, tmp_path / ".resume")
    return run


def test_curve_snapshots_hold_the_trainable_weights_after_each_listed_step(tmp_path, colours):
    spec = make_spec(colours, "lora", {"r": 2}, steps=12, curve_steps=[0, 7, 12])
    out = train(spec, tmp_path / "run", tmp_path / ".resume", device="cpu")
    assert sorted(p.name for p in out.iterdir()) == sorted([*RUN_FILES, "curve"])
    names = ["step_000000.safetensors", "step_000007.safetensors", "step_000012.safetensors"]
    assert sorted(p.name for p in (out / "curve").iterdir()) == names
    curve = {step: load_file(str(out / "curve" / name)) for step, name in zip((0, 7, 12), names)}
    final = load_file(str(out / "trainable.safetensors"))
    assert all(snapshot.keys() == final.keys() for snapshot in curve.values())

    untouched = registry.trainable_state(model_lib.for_training(spec))  # step 0: fresh adapters and head
    cpu = torch.device("cpu")
    run = Run(spec, load_data(spec, cpu), cpu)
    with pytest.raises(resume.Preempted):
        run.loop(StopAtStep(run, 7), tmp_path / ".resume-stopped")  # seven optimiser steps, then stop
    for step, expected in ((0, untouched), (7, run.trainable()), (12, final)):
        assert all(torch.equal(curve[step][k], expected[k]) for k in final), f"step {step}"
    assert not torch.equal(curve[7]["head.weight"], curve[12]["head.weight"])


def test_frozen_weights_do_not_move_and_trainable_ones_do(tmp_path, colours):
    spec = make_spec(colours, "lora", {"r": 2}, weight_decay=0.1)  # decay must not touch frozen weights either
    before = {n: p.detach().clone() for n, p in model_lib.for_training(spec).named_parameters()}
    run = run_in_process(spec, tmp_path)
    for name, param in run.model.named_parameters():
        if param.requires_grad:
            assert not torch.equal(param, before[name]), f"trainable {name} did not change"
        else:
            assert torch.equal(param, before[name]), f"frozen {name} changed"


def test_linear_probing_leaves_the_backbone_bit_identical(tmp_path, colours):
    spec = make_spec(colours, "linear")
    pretrained = model_lib.pretrained(spec).state_dict()
    trained = run_in_process(spec, tmp_path).model.state_dict()
    backbone = [k for k in pretrained if not k.startswith("head.")]
    assert backbone and all(torch.equal(trained[k], pretrained[k]) for k in backbone)
    assert not torch.equal(trained["head.weight"], pretrained["head.weight"])


def test_divergence_names_the_step_and_leaves_nothing(tmp_path, colours):
    # lr 1e30: step 1's loss is finite, its update blows the weights up, step 2's loss is not.
    # A checkpoint is due at step 3, so a missing guard would save the diverged state there.
    spec = make_spec(colours, lr=1e30, warmup_steps=0, steps=10, log_every=100, checkpoint_every=3)
    with pytest.raises(VitpeftError, match="non-finite at step 2"):
        train(spec, tmp_path / "run", tmp_path / ".resume", device="cpu")
    assert not (tmp_path / "run").exists()
    assert not list((tmp_path / ".resume").glob("*/*.pt"))


def test_best_val_keeps_the_best_evaluated_weights(tmp_path, colours):
    spec = make_spec(colours, "linear", selection="best_val", val_every=4, val_fraction=0.25, steps=12, lr=0.02)
    out = train(spec, tmp_path / "run", tmp_path / ".resume", device="cpu")
    summary = json.loads((out / "summary.json").read_text())
    history = summary["val_history"]
    assert [step for step, _ in history] == [4, 8, 12]
    best_step, best_acc = max(history, key=lambda entry: entry[1])  # first of equal maxima, like the loop
    assert (summary["selected_step"], summary["best_val_acc"]) == (best_step, best_acc)
    # The saved weights score the selected accuracy on the held-out split.
    data = load_data(spec, torch.device("cpu"))
    model = model_lib.trained(spec, out).eval()
    x = augment.normalize(augment.resize(data.eval_x, 32), spec["data"]["mean"], spec["data"]["std"])
    with torch.no_grad():
        accuracy = 100.0 * (model(x).argmax(1) == data.eval_y).float().mean().item()
    assert accuracy == pytest.approx(best_acc)


def test_selection_keeps_the_snapshot_of_the_best_step_not_the_last():
    selection = Selection("best_val", every=10)
    for step, accuracy in [(10, 50.0), (20, 80.0), (30, 70.0), (40, 80.0)]:
        selection.update(step, accuracy, lambda: {"w": torch.tensor([float(step)])})
    assert (selection.best_step, selection.best_acc) == (20, 80.0)  # a tie does not replace the earlier best
    assert selection.best_state["w"].item() == 20.0
    assert [selection.due(s, 45) for s in (10, 15, 45)] == [True, False, True]  # every 10 steps and at the end
    assert not Selection("last", every=10).due(10, 45)


def test_best_val_holds_out_a_seeded_slice_that_training_never_sees(make_dataset):
    spec = make_spec(make_dataset(n=40, num_classes=4), selection="best_val", val_fraction=0.25, batch_size=8)
    data = load_data(spec, torch.device("cpu"))
    fingerprint = lambda images: {bytes(image.numpy()) for image in images}  # noqa: E731
    train_set, val_set = fingerprint(data.train_x), fingerprint(data.eval_x)
    assert len(val_set) == 10 and len(train_set) == 30 and not train_set & val_set
    assert fingerprint(load_data(spec, torch.device("cpu")).eval_x) == val_set  # same seed, same split


def test_best_val_uses_the_official_validation_split_when_there_is_one(make_dataset):
    train_dir, val_dir = make_dataset("train", n=40, num_classes=4), make_dataset("val", n=12, num_classes=4, seed=1)
    spec = make_spec(train_dir, val=val_dir, selection="best_val", val_fraction=0.25, batch_size=8)
    data = load_data(spec, torch.device("cpu"))
    assert len(data.train_y) == 40  # nothing held out of train
    assert torch.equal(data.eval_x, torch.from_numpy(store.load(val_dir).images))


def test_best_test_selects_on_the_named_test_split(tmp_path, colours, make_dataset):
    test = make_dataset("test", n=12, num_classes=4)
    spec = make_spec(colours, "linear", test=test, selection="best_test", val_every=5, steps=10)
    out = train(spec, tmp_path / "run", tmp_path / ".resume", device="cpu")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["selection"] == "best_test" and [s for s, _ in summary["val_history"]] == [5, 10]


def test_bad_inputs_are_refused_before_any_work(tmp_path, make_dataset):
    too_few = make_spec(make_dataset("few", n=8, num_classes=4))
    with pytest.raises(VitpeftError, match="fewer than train.batch_size 16"):
        train(too_few, tmp_path / "run", tmp_path / ".resume", device="cpu")
    wrong_labels = make_spec(make_dataset("many", n=32, num_classes=10))  # labels up to 9, spec says 4 classes
    with pytest.raises(VitpeftError, match="labels span 0..9, but num_classes is 4"):
        train(wrong_labels, tmp_path / "run", tmp_path / ".resume", device="cpu")
    assert not (tmp_path / "run").exists() and not (tmp_path / ".resume").exists()


@pytest.mark.parametrize("key, value", [
    ("checkpoint_every", 0), ("crop_scale", [0.9, 0.1]), ("hflip", 1.5), ("seed", -1),
    ("curve_steps", [10, 5]), ("curve_steps", [0, 21]),  # not increasing; past train.steps (20)
])
def test_loop_settings_are_checked_before_any_work(tmp_path, make_dataset, key, value):
    # spec.resolve refuses them (naming the key), so neither `vitpeft train` nor the workflow gets that far.
    with pytest.raises(VitpeftError, match=f"train.{key}"):
        make_spec(make_dataset(n=32, num_classes=4), **{key: value})
    assert not (tmp_path / "run").exists()


def test_each_epoch_visits_every_image_once_in_a_seeded_order():
    cache = {}
    epoch0 = torch.cat([batch_indices(s, 20, 5, seed=0, cache=cache, device="cpu") for s in range(4)])
    epoch1 = torch.cat([batch_indices(s, 20, 5, seed=0, cache=cache, device="cpu") for s in range(4, 8)])
    assert sorted(epoch0.tolist()) == list(range(20)) == sorted(epoch1.tolist())
    assert not torch.equal(epoch0, epoch1)
    assert torch.equal(batch_indices(5, 20, 5, seed=0, cache={}, device="cpu"), epoch1[5:10])  # no history needed
    assert not torch.equal(batch_indices(0, 20, 5, seed=1, cache={}, device="cpu"), epoch0[:5])


def test_learning_rate_warms_up_linearly_then_decays_by_cosine():
    lrs = [lr_at(step, 1.0, warmup_steps=10, steps=110) for step in range(110)]
    assert lrs[:10] == pytest.approx([(s + 1) / 10 for s in range(10)])
    assert lrs[10] == 1.0 and lrs[60] == pytest.approx(0.5)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:])) and lrs[-1] < 1e-3


@pytest.mark.gpu
def test_bf16_training_on_cuda(tmp_path, colours):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    out = train(make_spec(colours), tmp_path / "run", tmp_path / ".resume", device="cuda")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["precision"] == "bfloat16" and summary["device"].startswith("cuda")
    assert float(read_log(out)[-1]["loss"]) < 0.1 * math.log(4)
    measured = summary["cost"]["memory_measured_bytes"]  # the GPU's peak, beside the estimate
    assert 0 < measured <= torch.cuda.get_device_properties(0).total_memory


def test_augmentation_policy_reaches_training_and_keeps_it_a_function_of_the_spec(tmp_path, colours):
    """train.augment changes what the model sees (other weights), yet two runs of one spec stay bit-identical."""
    from safetensors.torch import load_file

    def weights(name, **augment):
        spec = make_spec(colours, "linear", steps=6, augment=augment)
        return load_file(str(train(spec, tmp_path / name, tmp_path / ".resume", device="cpu") / "trainable.safetensors"))

    plain = weights("plain")
    policy = {"rand_augment": {"n": 2, "m": 9}, "erasing": 0.5}
    augmented, again = weights("a", **policy), weights("b", **policy)
    assert all(torch.equal(augmented[key], again[key]) for key in augmented)
    assert not all(torch.equal(augmented[key], plain[key]) for key in plain)
    trivial = weights("t", trivial_augment=True)
    assert not all(torch.equal(trivial[key], plain[key]) for key in plain)


@pytest.mark.parametrize("method", ["vpt_shallow", "vpt_deep", "adaptformer", "ssf", "bitfit", "ln_tune"])
def test_each_visual_peft_method_trains_and_moves_the_target_accuracy(tmp_path, colours, method):
    """From the fresh head's guess to the colours learnt: the whole loop (train, then eval-target) for each family.

    At lr 0.01: at this file's 0.05 SSF and BitFit do not learn from a random backbone (measured: 25%, chance)."""
    from vitpeft.evaluation import evaluate
    from vitpeft.training import cost

    spec = make_spec(colours, method, test=colours, steps=40, lr=0.01)
    start = model_lib.for_training(spec).eval()
    before, _ = evaluate.classifier_scores(start, store.load(colours), spec, torch.device("cpu"), None)
    out = train(spec, tmp_path / "run", tmp_path / ".resume", device="cpu")
    after = evaluate.eval_target(spec, out, colours)["top1"]
    assert after >= max(before + 30, 80), (before, after)  # chance is 25%
    moved = load_file(out / "trainable.safetensors")
    initial = registry.trainable_state(start)
    assert all(not torch.equal(moved[name], initial[name]) for name in initial)  # the method's own weights trained
    assert json.loads((out / "summary.json").read_text())["cost"] == cost.record(spec)  # measured_bytes: None on a CPU
