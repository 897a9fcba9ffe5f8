"""Specs and run folders for evaluation tests, as `vitpeft train` would leave them (tiny ViTs)."""

import numpy as np
import torch
from safetensors.torch import save_file

from vitpeft import digests
from vitpeft.models import backbone
from vitpeft.methods import registry
from vitpeft.training import model as models
from vitpeft.data import store
from vitpeft.study import spec as spec_lib

NUM_CLASSES = 10


def make_spec(tiny_model_cfg, method, args=None, train_dir="unused", checkpoint=None, name=None):
    raw = {"name": name or f"t_{method}", "method": method, "args": args or {}, "model": tiny_model_cfg,
           "num_classes": NUM_CLASSES, "data": {"train": str(train_dir)}, "checkpoint": checkpoint}  # fmt: skip
    return spec_lib.resolve(raw)


def write_spec(spec, path):
    path.write_text(spec_lib.dump(spec))
    return path


def write_run(spec, run_dir, change=None):
    """A run folder: the trainable weights (optionally changed by `change`), a summary and their digests."""
    model = models.for_training(spec)
    if change:
        change(model)
    run_dir.mkdir()
    save_file(registry.trainable_state(model), str(run_dir / models.TRAINABLE_FILE))
    (run_dir / "summary.json").write_text(f'{{"selected_step": {spec["train"]["steps"]}}}\n')
    digests.seal(run_dir)
    return run_dir


def perturb(model, scale=0.5, seed=7):
    """Move every trainable weight by Gaussian noise of `scale`."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(torch.randn(param.shape, generator=generator) * scale)


def write_checkpoint(tiny_model_cfg, path, seed=0):
    """A backbone checkpoint (.safetensors) of a tiny ViT initialised with `seed`."""
    torch.manual_seed(seed)
    model = backbone.build_model(tiny_model_cfg, NUM_CLASSES)
    state = {k: v.contiguous() for k, v in model.state_dict().items() if not k.startswith(backbone.HEAD_PREFIX)}
    save_file(state, str(path))
    return path


def random_dataset(folder, n, seed, num_classes=NUM_CLASSES):
    """Random images, labels cycling through the classes: k-NN near chance, sensitive to every feature."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
    store.save(folder, images, np.arange(n) % num_classes, [f"c{i}" for i in range(num_classes)], source="random")
    return folder
