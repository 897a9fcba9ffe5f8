"""On-device augmentation: geometry, ranges, determinism, torchvision's box rule."""

import math

import pytest
import torch
import torch.nn.functional as F

from vitpeft.data import augment
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


# ----- the public code's optional policies (apply_policy)

OFF = augment.DEFAULT_POLICY


def policy(n=0, m=9, trivial=False, erasing=0.0):
    return {"rand_augment": {"n": n, "m": m}, "trivial_augment": trivial, "erasing": erasing}


def floats(n=16, size=16, seed=0):
    return augment.to_float_nchw(images(n, size, seed))


def torchvision_op(space_name, image, name, magnitude):
    """torchvision's own per-image op, as its RandAugment / TrivialAugmentWide call it."""
    from torchvision.transforms import v2

    transform = v2.RandAugment() if space_name == "rand_augment" else v2.TrivialAugmentWide()
    return transform._apply_image_or_video_transform(
        image, name, magnitude, interpolation=transform.interpolation, fill=transform._fill
    )


def candidate_magnitudes(space_name, name, size, bins):
    fn, signed = augment.SPACES[space_name][name]
    table = fn(augment.NUM_BINS, size, size)
    if table is None:
        return [0.0]
    values = [float(table[b]) for b in bins]
    return values + [-v for v in values] if signed else values


def which_op(space_name, image, out, bins):
    """The first (op, magnitude) of torchvision's table that turns `image` into `out`, or None."""
    size = image.shape[-1]
    candidates = (
        (name, mag) for name in augment.SPACES[space_name] for mag in candidate_magnitudes(space_name, name, size, bins)
    )
    return next(
        (c for c in candidates if torch.allclose(torchvision_op(space_name, image, *c), out, atol=1e-6, rtol=0)),
        None,
    )


def test_default_policy_returns_the_batch_itself_without_drawing():
    x, g = floats(), gen(1)
    state = g.get_state()
    assert augment.apply_policy(x, OFF, g, erase_value=0.5) is x
    assert torch.equal(g.get_state(), state)


@pytest.mark.parametrize(
    "on", [policy(n=2), policy(trivial=True), policy(erasing=0.5)], ids=["rand", "trivial", "erase"]
)
def test_same_seed_same_batch_other_seed_other_batch_and_no_global_rng(on):
    x = floats()
    before = torch.random.get_rng_state()
    a = augment.apply_policy(x, on, gen(3))
    b = augment.apply_policy(x, on, gen(3))
    c = augment.apply_policy(x, on, gen(4))
    assert torch.equal(torch.random.get_rng_state(), before)  # only the generator passed in was drawn from
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == x.shape and a.dtype == x.dtype


def test_rand_augment_gives_each_image_one_of_torchvisions_ops_at_magnitude_m():
    x = floats(n=32)
    out = augment.apply_policy(x, policy(n=1, m=9), gen(0))
    chosen = []
    for image, result in zip(x, out):
        match = which_op("rand_augment", image, result, bins=[9])
        assert match, "an image was changed by no op of torchvision's RandAugment table at m=9"
        chosen.append(match[0])
    # per image, not per batch: the 32 images drew many different ops
    assert len(set(chosen)) >= 8


def test_trivial_augment_gives_each_image_its_own_op_and_magnitude():
    x = floats(n=16)
    out = augment.apply_policy(x, policy(trivial=True), gen(0))
    chosen = []
    for image, result in zip(x, out):
        match = which_op("trivial_augment", image, result, bins=range(augment.NUM_BINS))
        assert match, "an image was changed by no op of torchvision's TrivialAugmentWide table"
        chosen.append(match)
    assert len({name for name, _ in chosen}) >= 6
    graded = ("Rotate", "ShearX", "ShearY", "Brightness", "Color", "Contrast")
    magnitudes = {mag for name, mag in chosen if name in graded}
    assert len(magnitudes) >= 3  # magnitudes drawn per image, not one per batch


def test_two_rand_augment_rounds_compose_per_image():
    x = floats(n=8)
    once = augment.apply_policy(x, policy(n=1), gen(5))
    twice = augment.apply_policy(x, policy(n=2), gen(5))
    assert not torch.equal(once, twice)
    changed = (twice - x).abs().flatten(1).amax(dim=1) > 0
    assert changed.float().mean() > 0.5


@pytest.mark.parametrize("name", [n for n in augment.OPS if n != "Identity"])
def test_each_op_on_a_group_matches_torchvision_on_each_image_alone(name):
    # the group call takes one magnitude per image; torchvision takes one per call
    x = floats(n=6, size=24, seed=1)
    for space_name in augment.SPACES:
        bins = [0, 5, 9, 17, 23, 30]
        mags = [candidate_magnitudes(space_name, name, 24, [b])[0] for b in bins]
        mags = [m * (-1) ** i for i, m in enumerate(mags)] if augment.SPACES[space_name][name][1] else mags
        group = augment.OPS[name](x, torch.tensor(mags, dtype=torch.float32))
        for image, mag, result in zip(x, mags, group):
            expected = torchvision_op(space_name, image, name, mag)
            torch.testing.assert_close(result, expected, atol=1e-6, rtol=0)


def test_rotation_by_right_angles_matches_torchvisions_exact_fast_path():
    x = floats(n=2, size=20)
    out = augment.OPS["Rotate"](x, torch.tensor([90.0, -90.0]))
    assert torch.equal(out[0], torch.rot90(x[0], 1, dims=(-2, -1)))
    assert torch.equal(out[1], torch.rot90(x[1], 3, dims=(-2, -1)))


def erased_boxes(x, out, value=-1.0):
    """Per image: erased pixel count and whether they form one filled rectangle."""
    mask = (out == value).all(dim=1)  # -1 is outside [0, 1], so only erasing makes it
    rows, cols = mask.any(dim=2).sum(dim=1), mask.any(dim=1).sum(dim=1)
    count = mask.sum(dim=(1, 2))
    assert torch.equal(torch.where(mask.unsqueeze(1), x, out), x)  # nothing else changed
    return count, count == rows * cols


def test_erasing_boxes_are_rectangles_with_torchvisions_area_distribution():
    from torchvision.transforms import RandomErasing

    x = floats(n=2000, size=32, seed=2)
    out = augment.apply_policy(x, policy(erasing=1.0), gen(0), erase_value=-1.0)
    count, rectangular = erased_boxes(x, out)
    assert rectangular.all()
    erased = count > 0
    assert erased.float().mean() > 0.97  # p = 1: all but images where no try fitted
    fraction = count[erased].double() / (32 * 32)
    # rounding to whole pixels moves the area a little past the nominal 0.02-0.33
    assert fraction.min() >= 0.015 and fraction.max() <= 0.36
    torch.manual_seed(0)  # torchvision's sampler draws from the global RNG
    theirs = torch.tensor([RandomErasing.get_params(x[0], (0.02, 0.33), (0.3, 3.3), [0.0])[2:4] for _ in range(2000)])
    theirs = (theirs[:, 0] * theirs[:, 1]).double() / (32 * 32)
    assert math.isclose(fraction.mean().item(), theirs.mean().item(), rel_tol=0.05)
    assert math.isclose(fraction.std().item(), theirs.std().item(), rel_tol=0.1)


def test_erasing_probability_and_fill_value():
    x = floats(n=2000, size=32, seed=3)
    out = augment.apply_policy(x, policy(erasing=0.25), gen(1), erase_value=-1.0)
    count, _ = erased_boxes(x, out)
    assert abs((count > 0).float().mean().item() - 0.25) < 0.03
    mean = (0.1, 0.2, 0.3)
    out = augment.apply_policy(x[:50], policy(erasing=1.0), gen(1), erase_value=mean)
    hit = (out != x[:50]).any(dim=1, keepdim=True).expand_as(out)
    fill = torch.tensor(mean).view(1, 3, 1, 1).expand_as(out)
    assert hit.any() and torch.equal(out[hit], fill[hit])  # erased pixels take the per-channel value




@pytest.mark.gpu
def test_policies_on_cuda_draw_from_the_device_generator():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    x = floats(n=16).cuda()
    for on in (policy(n=2, erasing=0.5), policy(trivial=True, erasing=0.5)):
        a = augment.apply_policy(x, on, torch.Generator("cuda").manual_seed(0), erase_value=0.5)
        b = augment.apply_policy(x, on, torch.Generator("cuda").manual_seed(0), erase_value=0.5)
        assert a.device.type == "cuda" and torch.equal(a, b)
    out = augment.apply_policy(x, policy(n=1), torch.Generator("cuda").manual_seed(0))
    for image, result in zip(x.cpu(), out.cpu()):
        assert which_op("rand_augment", image, result, bins=[9])
