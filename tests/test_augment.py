"""On-device augmentation: geometry, ranges, determinism, torchvision's box rule."""

import math

import pytest
import torch
import torch.nn.functional as F

from vitpeft import augment
from vitpeft.errors import VitpeftError


def images(n=6, size=32, seed=0):
    return torch.randint(0, 256, (n, size, size, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_output_shape_dtype_and_range():
    out = augment.random_resized_crop_flip(images(), 48, generator=gen())
    assert out.shape == (6, 3, 48, 48) and out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 1
    assert out.std() > 0.1  # real pixels, not a blank fill


def test_same_generator_seed_same_batch_other_seed_other_batch():
    x = images()
    a = augment.random_resized_crop_flip(x, 32, generator=gen(3))
    b = augment.random_resized_crop_flip(x, 32, generator=gen(3))
    c = augment.random_resized_crop_flip(x, 32, generator=gen(4))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_full_scale_without_flip_is_a_plain_resize():
    x = images()
    out = augment.random_resized_crop_flip(x, 56, scale=(1.0, 1.0), hflip=0.0, generator=gen())
    torch.testing.assert_close(out, augment.resize(x, 56), atol=1e-5, rtol=0)


def test_resize_matches_bilinear_interpolation_and_keeps_same_size():
    x = images()
    as_float = x.permute(0, 3, 1, 2).float() / 255
    expected = F.interpolate(as_float, size=(224, 224), mode="bilinear", align_corners=False)
    torch.testing.assert_close(augment.resize(x, 224), expected, atol=1e-5, rtol=0)
    assert torch.equal(augment.resize(x, 32), as_float)


def test_flip_always_mirrors_the_resize():
    x = images()
    out = augment.random_resized_crop_flip(x, 40, scale=(1.0, 1.0), hflip=1.0, generator=gen())
    torch.testing.assert_close(out, augment.resize(x, 40).flip(-1), atol=1e-5, rtol=0)


def test_box_at_its_own_size_is_an_exact_pixel_crop():
    x = augment.to_float_nchw(images(n=2))
    top, left, h, w = (torch.tensor([v, v], dtype=torch.float64) for v in (3.0, 5.0, 8.0, 8.0))
    theta = augment.box_to_theta(top, left, h, w, 32, 32, torch.tensor([False, True]))
    grid = F.affine_grid(theta, [2, 3, 8, 8], align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    crop = x[:, :, 3:11, 5:13]
    torch.testing.assert_close(out[0], crop[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(out[1], crop[1].flip(-1), atol=1e-5, rtol=0)


def test_boxes_fit_the_image_and_follow_the_area_and_aspect_limits():
    scale, ratio = (0.08, 1.0), (3 / 4, 4 / 3)
    top, left, h, w = augment.sample_boxes(4000, 32, 32, scale, ratio, gen(), "cpu")
    assert (top >= 0).all() and (left >= 0).all()
    assert (top + h <= 32).all() and (left + w <= 32).all()
    area = h * w / (32 * 32)
    # rounding to whole pixels moves area and aspect a little past the nominal range
    assert area.min() >= 0.05 and area.max() <= 1.0
    aspect = w / h
    assert aspect.min() >= 3 / 4 * 0.8 and aspect.max() <= 4 / 3 * 1.25
    # log-uniform aspect over a range symmetric in log space: no bias to tall or wide
    assert abs(torch.log(aspect).mean().item()) < 0.05
    assert len(set(zip(top.tolist(), left.tolist()))) > 100  # offsets really vary


def test_no_fitting_try_falls_back_to_the_centre_crop_like_torchvision():
    # A 2:1 image with aspect fixed at 1 and full area never fits: torchvision takes the
    # widest allowed centred box, h = height, w = round(height * max(ratio)).
    top, left, h, w = augment.sample_boxes(5, 16, 32, (1.0, 1.0), (1.0, 1.0), gen(), "cpu")
    assert h.tolist() == [16.0] * 5 and w.tolist() == [16.0] * 5
    assert top.tolist() == [0.0] * 5 and left.tolist() == [8.0] * 5


def test_matches_torchvision_box_distribution():
    from torchvision.transforms import RandomResizedCrop as rrc

    torch.manual_seed(0)
    boxes = torch.tensor([rrc.get_params(torch.zeros(3, 24, 40), [0.08, 1.0], [3 / 4, 4 / 3]) for _ in range(3000)])
    theirs = (boxes[:, 2] * boxes[:, 3]).double()
    _, _, h, w = augment.sample_boxes(3000, 24, 40, (0.08, 1.0), (3 / 4, 4 / 3), gen(), "cpu")
    ours = h * w
    assert math.isclose(ours.mean().item(), theirs.mean().item(), rel_tol=0.05)
    assert math.isclose(ours.std().item(), theirs.std().item(), rel_tol=0.1)


def test_normalize_per_channel():
    x = torch.full((1, 3, 2, 2), 0.5)
    out = augment.normalize(x, [0.5, 0.25, 0.0], [0.5, 0.25, 0.5])
    assert out[0, :, 0, 0].tolist() == [0.0, 1.0, 1.0]


def test_refuses_non_uint8_nhwc():
    with pytest.raises(VitpeftError, match="uint8 N x H x W x 3"):
        augment.resize(torch.zeros(2, 3, 32, 32), 32)
