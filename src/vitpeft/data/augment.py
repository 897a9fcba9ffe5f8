"""Batched image ops that run where the images already are (GPU or CPU).

Inputs are uint8 N x H x W x 3 tensors (the store's layout); outputs are float
N x 3 x size x size in [0, 1]. Doing the crop, flip and resize as one
`grid_sample` per batch keeps a GPU fed without a pool of PIL workers.
`apply_policy` adds the public code's optional RandAugment, TrivialAugmentWide
and RandomErasing on the cropped float batch, per image.
"""

import functools
import math

import torch
import torch.nn.functional as F
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

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


# ----- the public code's optional policies: RandAugment, TrivialAugmentWide, RandomErasing
#
# A policy is the config's `train.augment` section:
#   {"rand_augment": {"n": 0, "m": 9}, "trivial_augment": False, "erasing": 0.0}
# The public code applies them per image (torchvision transforms in a DataLoader);
# here every image still draws its own ops, but images that drew the same op are
# transformed together in one call, with their own magnitudes as a tensor.

DEFAULT_POLICY = {"rand_augment": {"n": 0, "m": 9}, "trivial_augment": False, "erasing": 0.0}

# torchvision's own tables (op -> (magnitude bins(num_bins, height, width), signed)),
# in the float-image form of transforms.v2 (Solarize thresholds in [0, 1]).
SPACES = {
    "rand_augment": v2.RandAugment._AUGMENTATION_SPACE,
    "trivial_augment": v2.TrivialAugmentWide._AUGMENTATION_SPACE,
}
NUM_BINS = 31  # torchvision's default num_magnitude_bins for both
ERASE_SCALE, ERASE_RATIO, ERASE_TRIES = (0.02, 0.33), (0.3, 3.3), 10  # torchvision's RandomErasing defaults


def apply_policy(x: torch.Tensor, policy: dict, generator: torch.Generator, erase_value=0.0) -> torch.Tensor:
    """The policy's ops on float N x 3 x S x S in [0, 1] (after crop/flip, before normalisation).

    Every image gets its own ops and magnitudes, drawn only from `generator`.
    `erase_value` fills erased boxes; pass the normalisation mean to match the
    public code, which erases after Normalize with value 0. The default policy
    returns `x` itself: no copy, no draw. With RandAugment or TrivialAugmentWide
    on, grouping images by op reads the group sizes on the host (one sync).
    """
    rand, erasing = policy["rand_augment"], policy["erasing"]
    if policy["trivial_augment"]:
        x = _policy_layers(x, "trivial_augment", 1, None, generator)
    elif rand["n"] > 0:
        x = _policy_layers(x, "rand_augment", rand["n"], rand["m"], generator)
    if erasing > 0:
        x = random_erase(x, erasing, erase_value, generator)
    return x


def _policy_layers(x, space_name, layers, fixed_bin, generator):
    """`layers` rounds of one random op per image; fixed_bin None draws a magnitude bin per image."""
    n, _, height, width = x.shape
    table, signed = magnitude_table(space_name, height, width, x.device)
    names = list(SPACES[space_name])
    device = generator.device
    ops = torch.randint(len(names), (layers, n), generator=generator, device=device)
    if fixed_bin is None:
        bins = torch.randint(NUM_BINS, (layers, n), generator=generator, device=device)
    else:
        bins = torch.full((layers, n), fixed_bin, device=device)
    negate = torch.rand(layers, n, generator=generator, device=device) < 0.5
    ops, bins, negate = ops.to(x.device), bins.to(x.device), negate.to(x.device)
    magnitudes = table[ops, bins]
    magnitudes = torch.where(signed[ops] & negate, -magnitudes, magnitudes)

    counts = F.one_hot(ops, len(names)).sum(dim=1).tolist()  # the one host sync
    order = ops.argsort(dim=1, stable=True)
    for layer in range(layers):
        out = torch.empty_like(x)
        for name, count, idx in zip(names, counts[layer], order[layer].split(counts[layer])):
            if count:
                out[idx] = OPS[name](x[idx], magnitudes[layer, idx])
        x = out
    return x


@functools.cache
def magnitude_table(space_name: str, height: int, width: int, device: torch.device):
    """torchvision's bins as one (ops x NUM_BINS) float tensor (0 for ops without a magnitude) and the signed flags."""
    space = SPACES[space_name]
    rows = [fn(NUM_BINS, height, width) for fn, _ in space.values()]
    table = torch.stack([torch.zeros(NUM_BINS) if r is None else r.float() for r in rows])
    signed = torch.tensor([is_signed for _, is_signed in space.values()])
    return table.to(device), signed.to(device)


# Each op takes a group of images and one magnitude per image, as torchvision's
# _apply_image_or_video_transform reads it (interpolation nearest, fill 0, as there).


def _blend_op(at_zero):
    """torchvision's colour ops blend the image with a degenerate one (the op at factor 0)
    by factor 1 + magnitude; one lerp blends every image with its own factor."""

    def op(x, m):
        factor = (1 + m).to(x.dtype).view(-1, 1, 1, 1)
        return torch.lerp(at_zero(x, 0.0), x, factor).clamp_(0, 1)

    return op


def _posterize(x, bits):
    # transforms.v2's float posterize, with bits per image
    levels = torch.exp2(bits).to(x.dtype).view(-1, 1, 1, 1)
    return x.mul(levels).floor_().clamp_(min=0).minimum(levels - 1).div_(levels)


def _solarize(x, threshold):
    return torch.where(x >= threshold.to(x.dtype).view(-1, 1, 1, 1), TF.invert(x), x)


# Geometric ops build each image's inverse matrix in float64 from its magnitude, as
# torchvision does in Python floats, so the float32 grids agree.


def _shear_x(x, m):
    # affine(shear=degrees(atan(m)), centre top-left): x_in = x + m (y + h/2) in centred coordinates
    m = m.double()
    one, zero = torch.ones_like(m), torch.zeros_like(m)
    return warp(x, torch.stack([one, m, m * x.shape[-2] / 2, zero, one, zero], 1))


def _shear_y(x, m):
    m = m.double()
    one, zero = torch.ones_like(m), torch.zeros_like(m)
    return warp(x, torch.stack([one, zero, zero, m, one, m * x.shape[-1] / 2], 1))


def _translate(axis):
    def op(x, m):
        m = m.double()
        shift = -m.trunc()  # torchvision translates by int(magnitude) pixels
        one, zero = torch.ones_like(m), torch.zeros_like(m)
        rows = [one, zero, shift, zero, one, zero] if axis == "x" else [one, zero, zero, zero, one, shift]
        return warp(x, torch.stack(rows, 1))

    return op


def _rotate(x, degrees):
    # rotate(angle) samples the input at the output point turned by -angle about the centre
    rad = torch.deg2rad(-(degrees.double() % 360))
    cos, sin, zero = torch.cos(rad), torch.sin(rad), torch.zeros_like(rad)
    return warp(x, torch.stack([cos, sin, zero, -sin, cos, zero], 1))


def warp(x: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
    """Nearest-neighbour affine warp with zero fill, one inverse matrix (N x 6, pixels, centred) per image.

    Builds the sampling grid as torchvision's tensor affine does (pixel centres
    relative to the image centre, mapped, then scaled by half the size), so each
    image matches F.affine / F.rotate on it alone.
    """
    n, _, height, width = x.shape
    theta = inverse.to(x.dtype).view(n, 2, 3).transpose(1, 2)
    theta = theta / torch.tensor([0.5 * width, 0.5 * height], dtype=x.dtype, device=x.device)
    grid = centred_pixels(height, width, x.dtype, x.device).matmul(theta).view(n, height, width, 2)
    return F.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False)


@functools.cache
def centred_pixels(height, width, dtype, device):
    """(x, y, 1) of every pixel centre relative to the image centre, 1 x HW x 3."""
    xs = torch.linspace((1.0 - width) * 0.5, (width - 1.0) * 0.5, width, device=device, dtype=dtype)
    ys = torch.linspace((1.0 - height) * 0.5, (height - 1.0) * 0.5, height, device=device, dtype=dtype)
    grid_x, grid_y = torch.meshgrid(xs, ys, indexing="xy")
    return torch.stack([grid_x, grid_y, torch.ones_like(grid_x)], -1).view(1, height * width, 3)


OPS = {
    "Identity": lambda x, m: x,
    "ShearX": _shear_x,
    "ShearY": _shear_y,
    "TranslateX": _translate("x"),
    "TranslateY": _translate("y"),
    "Rotate": _rotate,
    "Brightness": _blend_op(TF.adjust_brightness),
    "Color": _blend_op(TF.adjust_saturation),
    "Contrast": _blend_op(TF.adjust_contrast),
    "Sharpness": _blend_op(TF.adjust_sharpness),
    "Posterize": _posterize,
    "Solarize": _solarize,
    "AutoContrast": lambda x, m: TF.autocontrast(x),
    "Equalize": lambda x, m: TF.equalize(x),
}


def random_erase(x: torch.Tensor, p: float, value, generator: torch.Generator) -> torch.Tensor:
    """torchvision's RandomErasing(p, scale 0.02-0.33, ratio 0.3-3.3) per image, vectorised.

    Each image tries ERASE_TRIES (area, aspect) draws and erases the first box
    that fits strictly inside; when none fits it stays whole, as there.
    """
    n, channels, height, width = x.shape
    device = generator.device
    u = torch.rand(n, 2 * ERASE_TRIES + 3, generator=generator, device=device, dtype=torch.float64).to(x.device)
    u_area, u_ratio = u[:, :ERASE_TRIES], u[:, ERASE_TRIES : 2 * ERASE_TRIES]
    u_apply, u_top, u_left = u[:, -3], u[:, -2], u[:, -1]
    area = height * width * (ERASE_SCALE[0] + (ERASE_SCALE[1] - ERASE_SCALE[0]) * u_area)
    log_lo, log_hi = math.log(ERASE_RATIO[0]), math.log(ERASE_RATIO[1])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * u_ratio)
    h, w = torch.sqrt(area * aspect).round(), torch.sqrt(area / aspect).round()
    fits = (h < height) & (w < width)
    first = fits.int().argmax(dim=1, keepdim=True)
    h, w = h.gather(1, first), w.gather(1, first)  # n x 1
    erase = (u_apply < p) & fits.any(dim=1)
    top = (u_top.unsqueeze(1) * (height - h + 1)).floor()
    left = (u_left.unsqueeze(1) * (width - w + 1)).floor()
    rows = torch.arange(height, device=x.device)
    cols = torch.arange(width, device=x.device)
    in_rows = (rows >= top) & (rows < top + h)  # n x H
    in_cols = (cols >= left) & (cols < left + w)  # n x W
    mask = (in_rows.unsqueeze(2) & in_cols.unsqueeze(1) & erase.view(n, 1, 1)).unsqueeze(1)
    fill = torch.as_tensor(value, dtype=x.dtype, device=x.device).reshape(-1).expand(channels).view(1, channels, 1, 1)
    return torch.where(mask, fill, x)
