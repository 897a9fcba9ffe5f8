"""DINO's evaluation preprocessing of one image, without torch: what decoding workers run.

torchvision's `Resize(256, bicubic)` + `CenterCrop(224)` on a PIL image are
two PIL calls wrapped in torchvision's size arithmetic (torchvision 0.29:
`_compute_resized_output_size`, `center_crop`); this module repeats that
arithmetic, so its output is byte-identical while a worker process imports
only PIL (torch would cost each worker about 400 MB and 3.7 s to import).

Workers write each image straight into the shard's `images.npy` at its row's
offset (`os.pwrite`), so no pixels travel back through the parent, the
worker's memory stays flat (no growing file mapping) and a full disk is an
OSError rather than the SIGBUS a memory map would raise.
"""

import os

from PIL import Image


def read_rgb(path) -> Image.Image:
    """The file decoded to RGB, as torchvision's ImageFolder loader does; raises for an unreadable file."""
    with Image.open(path) as image:
        image.load()
        # convert("RGB") of an RGB image is a copy of the same pixels: skip it.
        return image if image.mode == "RGB" else image.convert("RGB")


def resize_center_crop(image: Image.Image, resize: int, crop: int) -> Image.Image:
    """torchvision's Resize(resize, BICUBIC) then CenterCrop(crop), for resize >= crop."""
    width, height = image.size
    short, long = (width, height) if width <= height else (height, width)
    new_long = int(resize * long / short)  # torchvision truncates
    size = (resize, new_long) if width <= height else (new_long, resize)
    if size != image.size:  # torchvision returns the image untouched when the size already matches
        image = image.resize(size, Image.BICUBIC)
    # torchvision rounds with Python's round(): half to even, so 16.5 -> 16 and 17.5 -> 18.
    top = int(round((size[1] - crop) / 2.0))
    left = int(round((size[0] - crop) / 2.0))
    return image.crop((left, top, left + crop, top + crop))


def decode(path, resize: int, crop: int) -> bytes:
    """One image's crop x crop x 3 uint8 pixels, row-major (the .npy row layout)."""
    return resize_center_crop(read_rgb(path), resize, crop).tobytes()


def write_rows(task) -> tuple:
    """Decode `paths` into rows first_row.. of the .npy file; returns (count, [(path, error text)]).

    A file that cannot be decoded is reported, not raised, so the parent can
    name every bad file of the shard at once.
    """
    images_file, data_offset, first_row, paths, resize, crop = task
    row_bytes = crop * crop * 3
    failed = []
    fd = os.open(images_file, os.O_WRONLY)
    try:
        for row, path in enumerate(paths, start=first_row):
            try:
                pixels = decode(path, resize, crop)
            except Exception as error:  # PIL raises many types (OSError, SyntaxError, ValueError...) for bad files
                failed.append((path, f"{type(error).__name__}: {error}"))
                continue
            _write_all(fd, pixels, data_offset + row * row_bytes)
    finally:
        os.close(fd)
    return len(paths), failed


def _write_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:  # pwrite may write less than asked (signals, some filesystems)
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written
