"""Batched image ops that run where the images already are (GPU or CPU).

Inputs are uint8 N x H x W x 3 tensors (the store's layout); outputs are float
N x 3 x size x size in [0, 1]. Doing the crop, flip and resize as one
`grid_sample` per batch keeps a GPU fed without a pool of PIL workers.
"""

import math

import torch
import torch.nn.functional as F

from vitpeft.errors import VitpeftError

CROP_TRIES = 10  # torchvision's RandomResizedCrop gives up after 10 tries


def to_float_nchw(images_u8: torch.Tensor) -> torch.Tensor:
    """uint8 N x H x W x 3 -> float N x 3 x H x W in [0, 1]."""
    if images_u8.dtype != torch.uint8 or images_u8.ndim != 4 or images_u8.shape[-1] != 3:
        raise VitpeftError(f"expected uint8 N x H x W x 3, got {images_u8.dtype} {tuple(images_u8.shape)}")
    return images_u8.permute(0, 3, 1, 2).float().div_(255)


def resize(images_u8: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resize to size x size (evaluation; e.g. CIFAR 32 -> 224)."""
    x = to_float_nchw(images_u8)
    if x.shape[-2:] == (size, size):
        return x
    # antialias only matters when shrinking; it keeps a downscale from aliasing.
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def normalize(x: torch.Tensor, mean, std) -> torch.Tensor:
    """Per-channel (x - mean) / std on N x 3 x H x W.

    mean/std may be lists; in a hot loop pass tensors already on x's device
    (a list becomes a host -> GPU copy, which waits for the GPU, on every call).
    """
    mean = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    std = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x - mean) / std


def random_resized_crop_flip(
    images_u8: torch.Tensor,
    size: int,
    scale=(0.08, 1.0),
    ratio=(3 / 4, 4 / 3),
    hflip: float = 0.5,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """RandomResizedCrop(size, scale, ratio) + RandomHorizontalFlip(hflip), per sample, batched.

    Boxes follow torchvision's sampling rule; the same generator state gives
    the same batch.
    """
    x = to_float_nchw(images_u8)
    n, _, height, width = x.shape
    device = generator.device if generator is not None else x.device
    top, left, h, w = sample_boxes(n, height, width, scale, ratio, generator, device)
    flip = torch.rand(n, generator=generator, device=device) < hflip
    theta = box_to_theta(top, left, h, w, height, width, flip).to(x.device)
    grid = F.affine_grid(theta, [n, 3, size, size], align_corners=False)
    # "border" matches F.interpolate at the edges (it clamps instead of blending in zeros).
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def sample_boxes(n, height, width, scale, ratio, generator, device):
    """Crop boxes (top, left, h, w) in whole pixels, as torchvision samples them, vectorised.

    Each sample draws CROP_TRIES candidate (area, aspect) pairs and keeps the
    first that fits; samples where none fits take the centre fallback.
    """
    area = height * width
    u_area = torch.rand(n, CROP_TRIES, generator=generator, device=device, dtype=torch.float64)
    u_ratio = torch.rand(n, CROP_TRIES, generator=generator, device=device, dtype=torch.float64)
    target_area = area * (scale[0] + (scale[1] - scale[0]) * u_area)
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * u_ratio)
    w = torch.sqrt(target_area * aspect).round()
    h = torch.sqrt(target_area / aspect).round()
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = fits.int().argmax(dim=1, keepdim=True)  # index of the first fitting try (0 if none)
    w, h = w.gather(1, first).squeeze(1), h.gather(1, first).squeeze(1)

    fallback_h, fallback_w = centre_fallback(height, width, ratio)
    found = fits.any(dim=1)
    h = torch.where(found, h, torch.full_like(h, fallback_h))
    w = torch.where(found, w, torch.full_like(w, fallback_w))

    # torchvision: randint(0, H - h + 1); the fallback is centred instead.
    u_top = torch.rand(n, generator=generator, device=device, dtype=torch.float64)
    u_left = torch.rand(n, generator=generator, device=device, dtype=torch.float64)
    top = torch.where(found, (u_top * (height - h + 1)).floor(), ((height - h) / 2).floor())
    left = torch.where(found, (u_left * (width - w + 1)).floor(), ((width - w) / 2).floor())
    return top, left, h, w


def centre_fallback(height, width, ratio):
    """torchvision's fallback box size: the whole image, trimmed to the allowed aspect range."""
    in_ratio = width / height
    if in_ratio < min(ratio):
        return round(width / min(ratio)), width
    if in_ratio > max(ratio):
        return height, round(height * max(ratio))
    return height, width


def box_to_theta(top, left, h, w, height, width, flip):
    """Affine matrices mapping output coords in [-1, 1] onto each box (align_corners=False).

    A box [left, left + w) maps to normalised x in [2 left / W - 1, 2 (left + w) / W - 1]:
    its centre is the translation and w / W the scale; a flip negates the scale.
    """
    scale_x = (w / width) * torch.where(flip, -1.0, 1.0).to(w.dtype)
    scale_y = h / height
    shift_x = 2 * (left + w / 2) / width - 1
    shift_y = 2 * (top + h / 2) / height - 1
    zero = torch.zeros_like(scale_x)
    theta = torch.stack([scale_x, zero, shift_x, zero, scale_y, shift_y], dim=1).view(-1, 2, 3)
    return theta.float()
