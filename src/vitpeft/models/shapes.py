"""The shape of the model a spec's `model` section builds, for every architecture timm knows.

A preset's architecture is read from the presets' table (vitpeft.models.presets:
instant, no torch); any other is built once by timm on the meta device, so
torch is imported only then. Planning (vitpeft.study) never imports this module:
its callers pass `describe` to vitpeft.study.config.load.
"""

from vitpeft.models import presets


def describe(model: dict) -> dict:
    """SHAPE_KEYS and img_size: from the table when the architecture is a preset's and no kwargs change it."""
    known = presets.table_shape(model)
    if known is not None:
        return known
    from vitpeft.models.backbone import build_model, shape_of  # torch: only for architectures outside the table

    return {**shape_of(build_model(model, num_classes=0, device="meta")), "img_size": model["img_size"]}
