"""weighted_knn must reproduce DINO's vote exactly, however it is chunked."""

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F

from vitpeft import knn
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
    gpu = knn.extract(model.cuda(), images, 32, (0.5,) * 3, (0.5,) * 3, device="cuda")
    assert gpu.device.type == "cpu" and (cpu * gpu).sum(dim=1).min() > 0.99  # bf16 autocast: cosine ~ 1
