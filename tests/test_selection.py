"""Which weights a run keeps (last, best_val, best_test), checked where the three must differ.

The expected step of each mode is computed here, independently of the
training loop's own bookkeeping: every evaluated step's weights are kept as a
curve snapshot, scored by a plain forward pass on the split in question, and
the best one (the first of equal maxima) is what the run must have kept.

The splits are made so that the modes disagree: the validation labels are what
the untouched model predicts, the test labels what the model predicts halfway
through training, and the training labels are the true ones. So validation
accuracy peaks early, test accuracy halfway, training accuracy late; a run that
selected on the wrong split would keep the wrong step.
"""

import json

import numpy as np
import pytest
import torch

from conftest import TINY_MODEL
from vitpeft.methods import registry
from vitpeft.data import store
from vitpeft.training import model as model_lib
from vitpeft.study import spec as spec_lib
from vitpeft.training.train import train

STEPS, EVERY = 24, 3
EVALUATED = list(range(EVERY, STEPS + 1, EVERY))  # the steps a best_* run scores
MIDDLE = EVALUATED[len(EVALUATED) // 2 - 1]


def colour_images(n: int, seed: int):
    """Images whose class is their dominant colour (red, green, blue, light), under strong pixel noise.

    The signal is weak enough that the classes are learnt one after another, so
    the predictions change from one evaluation to the next.
    """
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 4
    images = rng.integers(0, 80, (n, 32, 32, 3))
    for channel in range(3):
        images[labels == channel, :, :, channel] += 60
    images[labels == 3] += 35
    return images.clip(0, 255).astype(np.uint8), labels


def make_spec(root, selection="last") -> dict:
    return spec_lib.resolve({
        "name": f"select_{selection}", "method": "linear",
        "model": {**TINY_MODEL, "kwargs": {**TINY_MODEL["kwargs"], "depth": 2}}, "num_classes": 4,
        "data": {"train": str(root / "train"), "val": str(root / "val"), "test": str(root / "test")},
        "train": {"steps": STEPS, "batch_size": 16, "warmup_steps": 2, "lr": 0.01, "log_every": EVERY,
                  "selection": selection, "val_every": EVERY, "curve_steps": EVALUATED},
    })


def predictions(model, images: np.ndarray) -> torch.Tensor:
    """A plain forward pass (32x32 inputs at the model's size: no resize), normalised with the spec's 0.5/0.5."""
    x = (torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.5
    with torch.no_grad():
        return model.eval()(x).argmax(dim=1)


def accuracy(model, dataset) -> float:
    return 100.0 * (predictions(model, dataset.images) == torch.from_numpy(dataset.labels)).float().mean().item()


def first_best(scores: dict) -> int:
    best = max(scores.values())
    return min(step for step, score in scores.items() if score == best)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """Train/val/test splits built so that the modes must disagree (see the module's docstring)."""
    root = tmp_path_factory.mktemp("selection")
    images, labels = colour_images(96, seed=0)
    store.save(root / "train", images, labels, list("rgbl"))
    val_images, _ = colour_images(48, seed=1)
    test_images, _ = colour_images(48, seed=2)

    spec = make_spec(root)  # selection last: val and test are not read yet
    untouched = predictions(model_lib.for_training(spec), val_images).numpy()
    probe = train(spec, root / "probe", root / ".resume", device="cpu")
    halfway = predictions(model_lib.trained(spec, probe, step=MIDDLE), test_images).numpy()
    store.save(root / "val", val_images, untouched, list("rgbl"))
    store.save(root / "test", test_images, halfway, list("rgbl"))
    return root


def expected_steps(spec, run_dir) -> dict:
    """Per split, the first best evaluated step, from the run's own snapshots scored here."""
    splits = {name: store.load(spec["data"][name]) for name in ("train", "val", "test")}
    scores = {name: {} for name in splits}
    for step in EVALUATED:
        model = model_lib.trained(spec, run_dir, step=step)
        for name, dataset in splits.items():
            scores[name][step] = accuracy(model, dataset)
    return {name: first_best(per_step) for name, per_step in scores.items()}, scores


@pytest.mark.parametrize("selection, split", [("last", None), ("best_val", "val"), ("best_test", "test")])
def test_each_mode_keeps_the_step_its_split_prefers(root, tmp_path, selection, split):
    spec = make_spec(root, selection)
    run = train(spec, tmp_path / "run", tmp_path / ".resume", device="cpu")
    expected, scores = expected_steps(spec, run)
    # The construction works: selecting on any other split (or taking the last step) keeps another step.
    assert len({expected["val"], expected["test"], expected["train"], STEPS}) == 4, scores

    step = STEPS if split is None else expected[split]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["selected_step"] == step
    kept = model_lib.trained(spec, run).state_dict()
    at_step = model_lib.trained(spec, run, step=step).state_dict()
    trainable = registry.trainable_state(model_lib.for_training(spec)).keys()
    assert all(torch.equal(kept[k], at_step[k]) for k in trainable)
    if split is not None:
        assert [s for s, _ in summary["val_history"]] == EVALUATED
        assert summary["best_val_acc"] == pytest.approx(scores[split][step])
        assert summary["selected_on"].endswith(spec["data"][split])
