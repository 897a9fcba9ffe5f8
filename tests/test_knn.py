"""weighted_knn must reproduce DINO's vote exactly, however it is chunked; extract, however it reads."""

import re

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F

from vitpeft.evaluation import knn
from vitpeft.errors import VitpeftError


def brute_force_predictions(bank, bank_labels, queries, k, temperature, num_classes):
    """DINO's eval_knn.py, written plainly: full similarity matrix, top-k, one-hot weighted sum."""
    similarity = queries @ bank.T
    top_sim, top_idx = similarity.topk(k, dim=1)
    one_hot = F.one_hot(bank_labels[top_idx], num_classes).double()
    weights = (top_sim.double() / temperature).exp()
    scores = (one_hot * weights.unsqueeze(-1)).sum(dim=1)
    return scores.argmax(dim=1)


def random_features(n, dim, seed):
    generator = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, dim, generator=generator), dim=1)


@pytest.fixture
def problem():
    bank = random_features(500, 16, seed=1)
    queries = random_features(120, 16, seed=2)
    bank_labels = torch.randint(0, 7, (500,), generator=torch.Generator().manual_seed(3))
    return bank, bank_labels, queries


@pytest.mark.parametrize("chunk, bank_chunk", [(1024, 65536), (7, 33), (50, 64), (3, 500)])
def test_predictions_equal_brute_force_for_any_chunking(problem, chunk, bank_chunk):
    bank, bank_labels, queries = problem
    ks = (1, 5, 20, 50)
    got = knn.knn_predict(bank, bank_labels, queries, ks, 0.07, 7, chunk=chunk, bank_chunk=bank_chunk, device="cpu")
    assert sorted(got) == list(ks)
    for k in ks:
        expected = brute_force_predictions(bank, bank_labels, queries, k, 0.07, 7)
        assert torch.equal(got[k], expected), f"k={k}"


def test_predictions_depend_on_k_and_temperature(problem):
    # Guards the test above against a vote that ignores k or T (all-equal predictions would pass it vacuously).
    bank, bank_labels, queries = problem
    preds = knn.knn_predict(bank, bank_labels, queries, (1, 50), 0.07, 7, device="cpu")
    assert not torch.equal(preds[1], preds[50])
    hot = knn.knn_predict(bank, bank_labels, queries, (50,), 100.0, 7, device="cpu")[50]
    assert torch.equal(hot, brute_force_predictions(bank, bank_labels, queries, 50, 100.0, 7))
    assert not torch.equal(hot, preds[50])


def test_accuracy_is_percent_of_correct_predictions(problem):
    bank, bank_labels, queries = problem
    query_labels = torch.randint(0, 7, (len(queries),), generator=torch.Generator().manual_seed(4))
    accuracy = knn.weighted_knn(bank, bank_labels, queries, query_labels, (5, 20), 0.07, 7, chunk=16, bank_chunk=100)
    for k in (5, 20):
        expected = brute_force_predictions(bank, bank_labels, queries, k, 0.07, 7)
        assert accuracy[k] == pytest.approx(100.0 * (expected == query_labels).double().mean().item())


def test_queries_equal_to_bank_entries_are_recognised():
    bank = random_features(300, 32, seed=5)
    labels = torch.arange(300) % 10
    accuracy = knn.weighted_knn(bank, labels, bank[::3], labels[::3], ks=(1,), num_classes=10, bank_chunk=64)
    assert accuracy == {1: 100.0}


def test_bad_arguments_are_refused_before_work(problem):
    bank, bank_labels, queries = problem
    with pytest.raises(VitpeftError, match="k=501 exceeds the bank size"):
        knn.knn_predict(bank, bank_labels, queries, (20, 501))
    with pytest.raises(VitpeftError, match="temperature"):
        knn.knn_predict(bank, bank_labels, queries, (20,), temperature=0)
    with pytest.raises(VitpeftError, match="equal D"):
        knn.knn_predict(bank, bank_labels, queries[:, :8], (20,))


def tiny_vit(tiny_model_cfg):
    torch.manual_seed(0)
    cfg = tiny_model_cfg
    return timm.create_model(cfg["name"], img_size=cfg["img_size"], num_classes=0, **cfg["kwargs"])


def test_extract_gives_unit_features_independent_of_batching(tiny_model_cfg, tmp_path):
    images = np.random.default_rng(0).integers(0, 256, size=(10, 16, 16, 3), dtype=np.uint8)
    np.save(tmp_path / "images.npy", images)
    on_disk = np.load(tmp_path / "images.npy", mmap_mode="r")
    model = tiny_vit(tiny_model_cfg)
    mean, std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
    whole = knn.extract(model, on_disk, 32, mean, std, batch_size=64)
    batched = knn.extract(model, on_disk, 32, mean, std, batch_size=3)
    assert whole.shape == (10, 32) and whole.dtype == torch.float32
    assert torch.allclose(whole.norm(dim=1), torch.ones(10), atol=1e-5)
    assert torch.allclose(whole, batched, atol=1e-5)
    assert not torch.allclose(whole[0], whole[1])  # different images, different features


class SlicesOnly:
    """Images as a sharded store offers them to extract: len() and contiguous slices, nothing else."""

    def __init__(self, images):
        self.images = images

    def __len__(self):
        return len(self.images)

    def __getitem__(self, key):
        if not isinstance(key, slice) or key.step not in (None, 1):
            raise TypeError(f"only contiguous slices, got {key!r}")
        return self.images[key].copy()


def test_extract_needs_only_len_and_slices_and_stores_in_the_given_dtype(tiny_model_cfg):
    images = np.random.default_rng(1).integers(0, 256, size=(11, 32, 32, 3), dtype=np.uint8)
    model, mean, std = tiny_vit(tiny_model_cfg), (0.5,) * 3, (0.5,) * 3
    plain = knn.extract(model, images, 32, mean, std, batch_size=4)
    sliced = knn.extract(model, SlicesOnly(images), 32, mean, std, batch_size=4)
    assert torch.equal(plain, sliced)
    half = knn.extract(model, SlicesOnly(images), 32, mean, std, batch_size=4, dtype=torch.float16)
    assert half.dtype == torch.float16 and torch.equal(half, plain.half())  # fp32 features, stored in fp16


def test_extract_refuses_non_finite_features(tiny_model_cfg):
    model = tiny_vit(tiny_model_cfg)
    with torch.no_grad():
        model.blocks[3].mlp.fc1.weight[0, 0] = float("nan")
    images = np.zeros((5, 32, 32, 3), dtype=np.uint8)
    with pytest.raises(knn.NonFiniteFeatures, match="NaN or infinite"):
        knn.extract(model, images, 32, (0.5,) * 3, (0.5,) * 3, batch_size=2)


def test_extract_logs_count_rate_and_time_left(tiny_model_cfg, monkeypatch, capsys):
    monkeypatch.setattr(knn, "PROGRESS_SECONDS", 0.0)  # a line per batch
    images = np.zeros((10, 32, 32, 3), dtype=np.uint8)
    knn.extract(tiny_vit(tiny_model_cfg), images, 32, (0.5,) * 3, (0.5,) * 3, batch_size=4, label="bank features")
    lines = capsys.readouterr().err.splitlines()
    pattern = r"\[\d\d:\d\d:\d\d\] bank features: (\d+)/10 images, [\d,]+ img/s, \d+ s left"
    assert [re.fullmatch(pattern, line)[1] for line in lines] == ["4", "8", "10"]
    assert lines[-1].endswith(" 0 s left")


def test_durations_read_like_a_person_would_say_them():
    assert [knn.duration(s) for s in (42, 502, 3900)] == ["42 s", "8 min 22 s", "1 h 05 min"]


def test_fp16_bank_and_queries_vote_like_fp32():
    # Clustered features, as a trained backbone gives: fp16 storage must not change a single prediction.
    generator = torch.Generator().manual_seed(6)
    centres = F.normalize(torch.randn(12, 64, generator=generator), dim=1)
    labels = torch.arange(2400) % 12
    points = F.normalize(centres[labels] + 0.3 * torch.randn(2400, 64, generator=generator), dim=1)
    bank, queries = points[:2000], points[2000:]
    full = knn.knn_predict(bank, labels[:2000], queries, (1, 20, 100), 0.07, 12, chunk=64, bank_chunk=500, device="cpu")
    half = knn.knn_predict(bank.half(), labels[:2000], queries.half(), (1, 20, 100), 0.07, 12, chunk=64, bank_chunk=500,
                           device="cpu")  # fmt: skip
    assert all(torch.equal(full[k], half[k]) for k in full)
    assert (full[20] == labels[2000:]).float().mean() > 0.5  # a real vote, not all-equal predictions


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_vote_and_bf16_features_agree_with_cpu(problem, tiny_model_cfg):
    bank, bank_labels, queries = problem
    on_gpu = knn.knn_predict(bank, bank_labels, queries, (5, 20), 0.07, 7, chunk=16, bank_chunk=100, device="cuda")
    for k in (5, 20):
        assert torch.equal(on_gpu[k], brute_force_predictions(bank, bank_labels, queries, k, 0.07, 7))
    images = np.random.default_rng(0).integers(0, 256, size=(8, 32, 32, 3), dtype=np.uint8)
    model = tiny_vit(tiny_model_cfg)
    cpu = knn.extract(model, images, 32, (0.5,) * 3, (0.5,) * 3, device="cpu")
    gpu = knn.extract(model.cuda(), SlicesOnly(images), 32, (0.5,) * 3, (0.5,) * 3, batch_size=3, device="cuda")
    assert gpu.device.type == "cuda" and gpu.dtype == torch.float32  # kept on the device for the vote
    assert (cpu * gpu.cpu()).sum(dim=1).min() > 0.99  # bf16 autocast: cosine ~ 1
    half = knn.extract(model, images, 32, (0.5,) * 3, (0.5,) * 3, batch_size=3, device="cuda", dtype=torch.float16)
    assert half.dtype == torch.float16 and torch.allclose(half.float(), gpu, atol=1e-3)
