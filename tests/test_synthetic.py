"""The demo's synthetic domains: deterministic, balanced, and built on different class structure."""

import numpy as np
import pytest

from vitpeft.data import store
from vitpeft.data import synthetic
from vitpeft.cli import main
from vitpeft.errors import VitpeftError

SMALL = {"seed": 3, "image_size": 32, "source_classes": 10, "target_classes": 10, "train_per_class": 40, "test_per_class": 20}


@pytest.fixture(scope="module")
def domains():
    return synthetic.make_domains(SMALL)


def test_same_config_gives_identical_images_and_another_seed_does_not(domains):
    again = synthetic.make_domains(SMALL)
    other = synthetic.make_domains({**SMALL, "seed": 4})
    for name in ("source", "target"):
        for split, split_again, split_other in zip(domains[name], again[name], other[name]):
            np.testing.assert_array_equal(split.images, split_again.images)
            np.testing.assert_array_equal(split.labels, split_again.labels)
            assert not np.array_equal(split.images, split_other.images)


def test_splits_are_balanced_uint8_of_the_configured_shape(domains):
    for name in ("source", "target"):
        classes = SMALL[f"{name}_classes"]
        for split, per_class in zip(domains[name], (SMALL["train_per_class"], SMALL["test_per_class"])):
            assert split.images.dtype == np.uint8 and split.labels.dtype == np.int64
            assert split.images.shape == (classes * per_class, 32, 32, 3)
            assert np.bincount(split.labels, minlength=classes).tolist() == [per_class] * classes
            assert len(split.classes) == classes and len(set(split.classes)) == classes
            assert split.images.std() > 30  # real content, not a flat fill


def test_train_and_test_images_differ(domains):
    train, test = domains["source"]
    assert not any((test.images[:20, None] == train.images[None]).all(axis=(2, 3, 4)).any(axis=1))


def _nearest_centroid_accuracy(train, test, features):
    x_train, x_test = features(train.images), features(test.images)
    centroids = np.stack([x_train[train.labels == c].mean(0) for c in range(len(train.classes))])
    distances = ((x_test[:, None] - centroids[None]) ** 2).sum(-1)
    return (distances.argmin(1) == test.labels).mean()


def mean_colour(images):
    return images.reshape(len(images), -1, 3).mean(1)


def texture_energy(images):
    """Orientation-sensitive colour-blind texture statistics: mean absolute gradients of grey levels."""
    grey = images.astype(float).mean(-1)
    grey = (grey - grey.mean((1, 2), keepdims=True)) / (grey.std((1, 2), keepdims=True) + 1e-6)
    dy, dx = np.abs(np.diff(grey, axis=1)), np.abs(np.diff(grey, axis=2))
    return np.stack([dy.mean((1, 2)), dx.mean((1, 2)), (dy[:, :, :-1] * dx[:, :-1, :]).mean((1, 2))], 1)


def test_colour_is_the_target_class_but_says_nothing_about_the_source_class(domains):
    """Mean colour nearly solves the target and is at chance on the source: the domains need different features."""
    chance = 1 / SMALL["source_classes"]
    assert _nearest_centroid_accuracy(*domains["target"], mean_colour) > 0.6
    assert _nearest_centroid_accuracy(*domains["source"], mean_colour) < chance + 0.1


def test_colour_blind_texture_statistics_tell_source_classes_apart(domains):
    assert _nearest_centroid_accuracy(*domains["source"], texture_energy) > 2.5 / SMALL["source_classes"]


def test_a_pixel_classifier_of_one_domain_does_not_transfer_to_the_other(domains):
    """Nearest centroids fit on raw target pixels label source images no better than chance (and vice versa)."""
    def fit_and_score(fit_on, score_on):
        flat = lambda images: images.reshape(len(images), -1).astype(float)  # noqa: E731
        centroids = np.stack([flat(fit_on.images)[fit_on.labels == c].mean(0) for c in range(len(fit_on.classes))])
        predicted = ((flat(score_on.images)[:, None] - centroids[None]) ** 2).sum(-1).argmin(1)
        return (predicted == score_on.labels).mean()

    source_train, source_test = domains["source"]
    target_train, target_test = domains["target"]
    assert fit_and_score(target_train, target_test) > 0.5  # colour layout is visible in pixels
    assert fit_and_score(target_train, source_test) < 0.2
    assert fit_and_score(source_train, target_test) < 0.2


def test_bad_settings_are_refused_by_name():
    with pytest.raises(VitpeftError, match="source_classes"):
        synthetic.make_domains({"source_classes": 99})
    with pytest.raises(VitpeftError, match="train_per_class"):
        synthetic.make_domains({"train_per_class": 0})
    with pytest.raises(VitpeftError, match="colour"):
        synthetic.make_domains({"colour": 1})


def test_make_synthetic_writes_four_prepared_splits(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(
        "name: t\nbackbone: {pretrain: true}\ntarget: {datasets: [synthetic]}\n"
        "source: {dataset: synthetic}\n"
        "synthetic: {source_classes: 5, target_classes: 4, train_per_class: 6, test_per_class: 3, image_size: 16}\n"
        "experiments: [{name: lin, method: linear}]\n"
    )
    assert main(["make-synthetic", "--config", str(config), "--out", str(tmp_path / "syn")]) == 0
    for domain, classes in (("source", 5), ("target", 4)):
        for split, per_class in (("train", 6), ("test", 3)):
            data = store.load(tmp_path / "syn" / domain / split)
            assert data.images.shape == (classes * per_class, 16, 16, 3)
            assert len(data.classes) == classes
