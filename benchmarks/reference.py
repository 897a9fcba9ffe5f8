"""A reference-style training pipeline, the baseline vitpeft's own path is held against.

It mirrors the paper's public code: a Hugging Face ViT with eager attention,
fp16 autocast with a GradScaler, and per-image PIL transforms
(RandomResizedCrop, flip, ToTensor, Normalize) in DataLoader workers.
"""

import time

import numpy as np
import torch
from PIL import Image
from torchvision import transforms


class PilImages(torch.utils.data.Dataset):
    """uint8 NHWC images served one PIL image at a time, as torchvision datasets do."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])


def hf_vit(img_size: int, patch_size: int, width: int, depth: int, heads: int, num_classes: int):
    from transformers import ViTConfig, ViTForImageClassification

    config = ViTConfig(
        image_size=img_size, patch_size=patch_size, hidden_size=width, num_hidden_layers=depth,
        num_attention_heads=heads, intermediate_size=4 * width, num_labels=num_classes,
    )
    config._attn_implementation = "eager"
    return ViTForImageClassification(config)


def loader(images, labels, img_size: int, batch_size: int, workers: int):
    transform = transforms.Compose([
        transforms.RandomResizedCrop(img_size, scale=(0.08, 1.0)),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    ])
    return torch.utils.data.DataLoader(
        PilImages(images, labels, transform), batch_size=batch_size, shuffle=True, drop_last=True,
        num_workers=workers, pin_memory=torch.cuda.is_available(), persistent_workers=workers > 0,
    )


def measure(images, labels, model_shape: dict, batch_size: int, steps: int, warmup: int,
            workers: int, device: torch.device) -> float:
    """Training images/s of the reference pipeline (full fine-tuning, SGD)."""
    model = hf_vit(num_classes=int(labels.max()) + 1, **model_shape).to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.005, momentum=0.9)
    use_fp16 = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_fp16)
    batches = iter(_forever(loader(images, labels, model_shape["img_size"], batch_size, workers)))
    for step in range(warmup + steps):
        if step == warmup:
            _sync(device)
            start = time.perf_counter()
        x, y = next(batches)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.float16, enabled=use_fp16):
            loss = torch.nn.functional.cross_entropy(model(pixel_values=x).logits, y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        loss.item()  # the reference logs every step, which syncs the host
    _sync(device)
    return steps * batch_size / (time.perf_counter() - start)


def _forever(iterable):
    while True:
        yield from iterable


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()
