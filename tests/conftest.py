"""Shared test fixtures: tiny ViTs and small random datasets in the store format."""

import numpy as np
import pytest
import torch

from vitpeft.data import store

# For a `vitpeft` subprocess whose bits are compared with training in this process: torch loaded
# here before any pin could act, so this process computes on the machine's own kernels, and so
# must the subprocess (the pin itself, across environments: tests/test_kernels.py).
UNPINNED = {"VITPEFT_CPU_PIN": "0"}

# A ViT with the paper's depth (12 blocks) but tiny width, on 32x32 images.
TINY_MODEL = {
    "name": "vit_base_patch16_224",
    "img_size": 32,
    "kwargs": {"patch_size": 4, "embed_dim": 32, "depth": 12, "num_heads": 2},
}


@pytest.fixture(autouse=True)
def _few_threads():
    # Tests share a 2-core machine; one thread keeps them deterministic and fair.
    torch.set_num_threads(1)


@pytest.fixture
def tiny_model_cfg():
    return {**TINY_MODEL, "kwargs": dict(TINY_MODEL["kwargs"])}


@pytest.fixture
def make_dataset(tmp_path):
    """Factory: a random uint8 dataset folder with n images of size x size."""

    def make(name="data", n=64, size=32, num_classes=10, seed=0):
        rng = np.random.default_rng(seed)
        images = rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)
        labels = np.arange(n) % num_classes
        folder = tmp_path / name
        store.save(folder, images, labels, [f"c{i}" for i in range(num_classes)], source="random")
        return folder

    return make


# ---------------------------------------------------------------- the demo-scale study, run once per session

WORKFLOW_NAME = "wf"
WORKFLOW_EXPERIMENTS = ["full", "linear", "lora_r4", "block_p1"]


def demo_grid() -> dict:
    """config/demo.yaml's settings (300 steps, the 5-point curve) on four of its rows, one seed."""
    import yaml

    from slurmctl import REPO

    cfg = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
    cfg["name"] = WORKFLOW_NAME
    cfg["seeds"] = [0]
    cfg["experiments"] = [exp for exp in cfg["experiments"] if exp["name"] in WORKFLOW_EXPERIMENTS]
    return cfg


@pytest.fixture(scope="session")
def finished(tmp_path_factory):
    """A project copy in which the demo-scale grid has run to the end (shared by the workflow and docs tests).

    Under `vitpeft warm`, as `make demo` runs it; the SLURM tests run every job as a fresh process.
    """
    import slurmctl

    project = slurmctl.make_project(tmp_path_factory.mktemp("workflow") / "project")
    config = slurmctl.write_config(project, demo_grid())
    slurmctl.snakemake(project, "all", "--cores", "2", "--configfile", config, timeout=1500, warm=True)
    return project, config
