"""The offline demo's two procedural domains, built so that fine-tuning must forget.

SOURCE (the stand-in for ImageNet): the class is a TEXTURE or SHAPE (gratings,
checkerboard, rings, disk, ...) drawn in two random colours at a random
position, phase and scale, with pixel noise. Colour carries no information, so
a backbone pretrained on it learns texture features and ignores colour.

TARGET (the stand-in for CIFAR-100): every image is again a random source
texture, but the class is the unordered PAIR OF COLOURS it is painted in (from
a small palette, with jitter). Texture is now the nuisance and colour the
signal: the features the target needs are exactly those the source pretraining
learned to ignore, so training the whole backbone on the target overwrites the
source features (catastrophic forgetting), while a linear probe cannot reach
far on the target alone.

Both domains are flip-invariant (no class depends on left/right), so the
training loop's horizontal flips never change a label. Everything is numpy,
vectorised per pattern, and seeded: equal configs give equal bytes.
"""

import itertools
from pathlib import Path

import numpy as np

from vitpeft.data import store
from vitpeft.errors import VitpeftError

DEFAULTS = {
    "seed": 0,
    "image_size": 32,
    "source_classes": 10,
    "target_classes": 10,
    "train_per_class": 300,
    "test_per_class": 100,
}

NOISE_STD = 12.0  # pixel noise (uint8 units): no class is separable by exact pixel values
MIN_CONTRAST = 120.0  # smallest RGB distance between a source image's two colours
PALETTE = np.array(  # the target's colours: far apart, so each pair is a clear class
    [[230, 40, 40], [40, 200, 60], [50, 80, 230], [235, 215, 40], [200, 60, 220], [40, 210, 220]],
    dtype=np.float64,
)
PALETTE_JITTER = 25.0  # per-channel jitter of a target colour, uint8 units


# --- source textures: each maps per-image random parameters to an N x S x S mask in [0, 1] ---


def _grid(n, size):
    """Pixel-centre coordinates in [0, 1), shaped 1 x S x S for broadcasting against N x 1 x 1."""
    axis = (np.arange(size) + 0.5) / size
    yy, xx = np.meshgrid(axis, axis, indexing="ij")
    return yy[None], xx[None]


def _u(rng, n, lo, hi):
    return rng.uniform(lo, hi, size=(n, 1, 1))


def _stripes(rng, n, size, along):
    yy, xx = _grid(n, size)
    coord = yy if along == "y" else xx
    freq, phase = _u(rng, n, 3, 6), _u(rng, n, 0, 2 * np.pi)
    return (np.sin(2 * np.pi * freq * coord + phase) > 0).astype(float)


def horizontal_stripes(rng, n, size):
    return _stripes(rng, n, size, "y")


def vertical_stripes(rng, n, size):
    return _stripes(rng, n, size, "x")


def checkerboard(rng, n, size):
    yy, xx = _grid(n, size)
    freq, py, px = _u(rng, n, 2, 4), _u(rng, n, 0, 1), _u(rng, n, 0, 1)
    cells = np.floor(freq * yy + py) + np.floor(freq * xx + px)
    return (cells % 2).astype(float)


def _centre(rng, n, margin=0.3):
    return _u(rng, n, margin, 1 - margin), _u(rng, n, margin, 1 - margin)


def _radius(rng, n, size):
    yy, xx = _grid(n, size)
    cy, cx = _centre(rng, n)
    return np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)


def rings(rng, n, size):
    freq, phase = _u(rng, n, 4, 7), _u(rng, n, 0, 2 * np.pi)
    return (np.sin(2 * np.pi * freq * _radius(rng, n, size) + phase) > 0).astype(float)


def disk(rng, n, size):
    return (_radius(rng, n, size) < _u(rng, n, 0.15, 0.3)).astype(float)


def square_outline(rng, n, size):
    yy, xx = _grid(n, size)
    cy, cx = _centre(rng, n)
    half, width = _u(rng, n, 0.15, 0.28), _u(rng, n, 0.05, 0.08)
    chebyshev = np.maximum(np.abs(yy - cy), np.abs(xx - cx))
    return (np.abs(chebyshev - half) < width / 2).astype(float)


def plus(rng, n, size):
    yy, xx = _grid(n, size)
    cy, cx = _centre(rng, n)
    arm, width = _u(rng, n, 0.2, 0.35), _u(rng, n, 0.06, 0.12)
    vertical = (np.abs(xx - cx) < width / 2) & (np.abs(yy - cy) < arm)
    horizontal = (np.abs(yy - cy) < width / 2) & (np.abs(xx - cx) < arm)
    return (vertical | horizontal).astype(float)


def dots(rng, n, size):
    yy, xx = _grid(n, size)
    freq, py, px = _u(rng, n, 3, 5), _u(rng, n, 0, 1), _u(rng, n, 0, 1)
    fy, fx = (freq * yy + py) % 1 - 0.5, (freq * xx + px) % 1 - 0.5
    return (np.sqrt(fy**2 + fx**2) < 0.22).astype(float)


def grid_lines(rng, n, size):
    yy, xx = _grid(n, size)
    freq, py, px = _u(rng, n, 3, 5), _u(rng, n, 0, 1), _u(rng, n, 0, 1)
    near = lambda c, p: np.abs((freq * c + p) % 1 - 0.5) > 0.36  # noqa: E731  (thin line at each period)
    return (near(yy, py) | near(xx, px)).astype(float)


def diagonal_lattice(rng, n, size):
    yy, xx = _grid(n, size)
    freq, phase = _u(rng, n, 3, 5), _u(rng, n, 0, 1)
    u, v = (freq * (xx + yy) + phase) % 1, (freq * (xx - yy) + phase) % 1
    return ((np.abs(u - 0.5) > 0.36) | (np.abs(v - 0.5) > 0.36)).astype(float)


PATTERNS = {  # flip-invariant classes (a horizontal flip keeps every label)
    "horizontal_stripes": horizontal_stripes,
    "vertical_stripes": vertical_stripes,
    "checkerboard": checkerboard,
    "rings": rings,
    "disk": disk,
    "square_outline": square_outline,
    "plus": plus,
    "dots": dots,
    "grid_lines": grid_lines,
    "diagonal_lattice": diagonal_lattice,
}

COLOUR_PAIRS = list(itertools.combinations(range(len(PALETTE)), 2))  # the target's classes


# --- painting ---


def _paint(masks, fg, bg, rng):
    """Masks N x S x S in [0, 1] and colours N x 3 -> uint8 N x S x S x 3 with pixel noise."""
    image = bg[:, None, None, :] + masks[..., None] * (fg - bg)[:, None, None, :]
    image += rng.normal(0, NOISE_STD, size=image.shape)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def _random_contrasting_colours(rng, n):
    """Two random RGB colours per image, at least MIN_CONTRAST apart (redrawn until they are)."""
    fg, bg = rng.uniform(0, 255, (n, 3)), rng.uniform(0, 255, (n, 3))
    close = np.linalg.norm(fg - bg, axis=1) < MIN_CONTRAST
    while close.any():
        fg[close], bg[close] = rng.uniform(0, 255, (close.sum(), 3)), rng.uniform(0, 255, (close.sum(), 3))
        close = np.linalg.norm(fg - bg, axis=1) < MIN_CONTRAST
    return fg, bg


def _masks(rng, pattern_ids, size):
    """A texture mask per image for the given pattern indices (vectorised per pattern)."""
    masks = np.empty((len(pattern_ids), size, size))
    functions = list(PATTERNS.values())
    for pattern in np.unique(pattern_ids):
        where = np.flatnonzero(pattern_ids == pattern)
        masks[where] = functions[pattern](rng, len(where), size)
    return masks


def source_images(rng, labels, size, num_patterns):
    """Class = texture; colours random and uninformative. (`num_patterns`: shared signature, unused.)"""
    fg, bg = _random_contrasting_colours(rng, len(labels))
    return _paint(_masks(rng, labels, size), fg, bg, rng)


def target_images(rng, labels, size, num_patterns):
    """Class = unordered colour pair; texture (from the source's patterns) random and uninformative."""
    pairs = np.array(COLOUR_PAIRS)[labels]
    swap = rng.random(len(labels)) < 0.5  # either colour may be the foreground
    first, second = np.where(swap, pairs[:, 1], pairs[:, 0]), np.where(swap, pairs[:, 0], pairs[:, 1])
    jitter = lambda: rng.uniform(-PALETTE_JITTER, PALETTE_JITTER, (len(labels), 3))  # noqa: E731
    fg, bg = PALETTE[first] + jitter(), PALETTE[second] + jitter()
    textures = rng.integers(0, num_patterns, len(labels))
    return _paint(_masks(rng, textures, size), fg, bg, rng)


def class_names(domain: str, num_classes: int) -> list:
    if domain == "source":
        return list(PATTERNS)[:num_classes]
    names = ["red", "green", "blue", "yellow", "magenta", "cyan"]
    return [f"{names[a]}+{names[b]}" for a, b in COLOUR_PAIRS[:num_classes]]


# --- domains ---


def check(cfg: dict) -> dict:
    """The `synthetic` config section with defaults filled; a bad value is an error naming it."""
    unknown = sorted(set(cfg) - set(DEFAULTS))
    if unknown:
        raise VitpeftError(f"synthetic: unknown key {unknown[0]!r} (allowed: {', '.join(DEFAULTS)})")
    cfg = {**DEFAULTS, **cfg}
    for key, value in cfg.items():
        lowest, kind = (0, "non-negative") if key == "seed" else (1, "positive")
        if not isinstance(value, int) or isinstance(value, bool) or value < lowest:
            raise VitpeftError(f"synthetic.{key} must be a {kind} integer, got {value!r}")
    limits = {"source_classes": len(PATTERNS), "target_classes": len(COLOUR_PAIRS)}
    for key, limit in limits.items():
        if not 2 <= cfg[key] <= limit:
            raise VitpeftError(f"synthetic.{key} must be between 2 and {limit}, got {cfg[key]}")
    if cfg["image_size"] < 8:
        raise VitpeftError(f"synthetic.image_size must be at least 8, got {cfg['image_size']}")
    return cfg


def make_domains(cfg: dict) -> dict:
    """{"source": (train, test), "target": (train, test)} of store.Dataset, balanced and shuffled."""
    cfg = check(cfg)
    # One independent stream per (domain, split): changing one split's size leaves the others' images alone.
    streams = np.random.SeedSequence(cfg["seed"]).spawn(4)
    painters = {"source": source_images, "target": target_images}
    domains, stream = {}, iter(streams)
    for domain, painter in painters.items():
        num_classes = cfg[f"{domain}_classes"]
        splits = []
        for per_class in (cfg["train_per_class"], cfg["test_per_class"]):
            rng = np.random.default_rng(next(stream))
            labels = rng.permutation(np.repeat(np.arange(num_classes), per_class))
            images = painter(rng, labels, cfg["image_size"], cfg["source_classes"])
            names = class_names(domain, num_classes)
            splits.append(store.Dataset(images=images, labels=labels.astype(np.int64), classes=names))
        domains[domain] = tuple(splits)
    return domains


def write_domains(domains: dict, out_dir) -> None:
    """OUT/source/train, OUT/source/test, OUT/target/train, OUT/target/test in the store format."""
    for domain, splits in domains.items():
        for split, data in zip(("train", "test"), splits):
            store.save(Path(out_dir) / domain / split, data.images, data.labels, data.classes, source=f"synthetic {domain}")


# --- more target domains, for task sequences (vitpeft.study.sequence): each a new task for the same backbone ---
#
# Both look unlike the source and the first target, and, like them, keep their labels under horizontal
# flips and random crops: ORIENTATION, the class is the unsigned angle of a grey grating (0, 10, ..., 90
# degrees; a flip turns +a into -a, the same class); HUE, the class is the hue of a smooth single-hue
# cloud (10 hues 36 degrees apart), brightness and saturation random.

ORIENTATION_JITTER = 2.0  # degrees
HUE_JITTER = 6.0  # degrees


def orientation_images(rng, labels, size, num_classes):
    """Class c = a grating at +-c * 90 / (num_classes - 1) degrees, in two random greys."""
    n = len(labels)
    step = 90.0 / (num_classes - 1)
    angle = labels * step + rng.uniform(-ORIENTATION_JITTER, ORIENTATION_JITTER, n)
    angle = np.radians(np.where(rng.random(n) < 0.5, angle, -angle))[:, None, None]
    yy, xx = _grid(n, size)
    freq, phase = _u(rng, n, 3, 6), _u(rng, n, 0, 2 * np.pi)
    masks = (np.sin(2 * np.pi * freq * (xx * np.cos(angle) + yy * np.sin(angle)) + phase) > 0).astype(float)
    low, high = rng.uniform(0, 90, (n, 1)), rng.uniform(165, 255, (n, 1))
    swap = rng.random((n, 1)) < 0.5
    fg, bg = np.where(swap, low, high).repeat(3, axis=1), np.where(swap, high, low).repeat(3, axis=1)
    return _paint(masks, fg, bg, rng)


def _hsv_to_rgb(hue, saturation, value):
    """Arrays of hue (degrees), saturation and value in [0, 1] -> RGB in [0, 255] (last axis)."""
    h = (hue % 360.0) / 60.0
    c = value * saturation
    x = c * (1 - np.abs(h % 2 - 1))
    sector = np.floor(h).astype(int) % 6
    zero = np.zeros_like(c)
    table = [(c, x, zero), (x, c, zero), (zero, c, x), (zero, x, c), (x, zero, c), (c, zero, x)]
    rgb = np.stack([np.choose(sector, [row[i] for row in table]) for i in range(3)], axis=-1)
    return 255.0 * (rgb + (value - c)[..., None])


def hue_images(rng, labels, size, num_classes):
    """Class c = hue c * 360 / num_classes of a smooth cloud whose brightness varies across the image."""
    n = len(labels)
    yy, xx = _grid(n, size)
    field = np.zeros((n, size, size))
    for _ in range(3):  # a few low-frequency waves: a cloud, no texture of the source's
        freq, angle, phase = _u(rng, n, 0.5, 2), _u(rng, n, 0, np.pi), _u(rng, n, 0, 2 * np.pi)
        field += np.cos(2 * np.pi * freq * (xx * np.cos(angle) + yy * np.sin(angle)) + phase)
    value = 0.45 + 0.5 * (field - field.min(axis=(1, 2), keepdims=True)) / np.ptp(field, axis=(1, 2), keepdims=True)
    hue = labels * (360.0 / num_classes) + rng.uniform(-HUE_JITTER, HUE_JITTER, n)
    saturation = rng.uniform(0.6, 1.0, n)
    image = _hsv_to_rgb(hue[:, None, None] * np.ones_like(value), saturation[:, None, None] * np.ones_like(value),
                        np.clip(value, 0, 1))
    image += rng.normal(0, NOISE_STD, size=image.shape)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


TASK_DOMAINS = {"synthetic_orientation": orientation_images, "synthetic_hue": hue_images}
TASK_CLASSES = 10  # classes of each task domain


def task_class_names(name: str) -> list:
    if name == "synthetic_orientation":
        return [f"{round(c * 90 / (TASK_CLASSES - 1))}deg" for c in range(TASK_CLASSES)]
    return [f"hue{round(c * 360 / TASK_CLASSES)}" for c in range(TASK_CLASSES)]


def make_task(name: str, cfg: dict) -> tuple:
    """(train, test) store.Dataset of the task domain `name` (a key of TASK_DOMAINS), balanced and shuffled.

    Seeded by the `synthetic` section's seed and the domain's name: other domains' images never change with it.
    """
    if name not in TASK_DOMAINS:
        raise VitpeftError(f"unknown synthetic task domain {name!r} (known: {', '.join(TASK_DOMAINS)})")
    cfg = check(cfg)
    entropy = [cfg["seed"], *name.encode()]
    splits = []
    for stream, per_class in zip(np.random.SeedSequence(entropy).spawn(2), (cfg["train_per_class"], cfg["test_per_class"])):
        rng = np.random.default_rng(stream)
        labels = rng.permutation(np.repeat(np.arange(TASK_CLASSES), per_class))
        images = TASK_DOMAINS[name](rng, labels, cfg["image_size"], TASK_CLASSES)
        splits.append(store.Dataset(images=images, labels=labels.astype(np.int64), classes=task_class_names(name)))
    return tuple(splits)


def write_task(splits: tuple, out_dir, name: str) -> None:
    """OUT/train and OUT/test in the store format."""
    for split, data in zip(("train", "test"), splits):
        store.save(Path(out_dir) / split, data.images, data.labels, data.classes, source=name)
