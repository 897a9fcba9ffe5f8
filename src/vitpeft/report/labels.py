"""Point labels that never cover each other: each label goes to the free spot nearest its point.

Matplotlib places an annotation where it is told, so two experiments with
nearby scores print their names over each other. `place` measures every
label with the figure's renderer and tries offsets in rings of growing radius
around its point (then, if the rings are full, every spot of the axes, nearest
first), keeping the first where the label lies inside the axes and clear of
every label placed before it and of every point's marker; a label set away
from its point gets a thin leader line. Points that coincide (two experiments
with the same scores) share one label, "a = b". `overlaps` is what the tests
check: no two label boxes of a figure intersect.

Call it after the figure's layout is final (after tight_layout): it works in
display coordinates, which the layout moves.
"""

import itertools
import math
from dataclasses import dataclass

GAP = 3.0  # pixels kept clear around every label and marker
RINGS = (3, 8, 14, 22, 32, 44, 58, 74, 92, 112)  # offsets tried first, in pixels from the point
GRID = 6  # pixels between the spots tried when no ring has room


@dataclass
class Label:
    x: float  # data coordinates of the point
    y: float
    text: str
    colour: object = "black"
    marker: float = 6.0  # the marker's radius in points, kept clear of every label


def renderer_of(figure):
    """The figure's renderer (an Agg canvas is attached when the figure has none that can measure text)."""
    if not hasattr(figure.canvas, "get_renderer"):
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        FigureCanvasAgg(figure)
    return figure.canvas.get_renderer()


def merged(labels: list, ax) -> list:
    """Labels of points that coincide on screen (within a pixel) joined into one: 'lora_r8 = lora_r8_per_task'."""
    groups = {}
    for label in labels:
        if any(math.isnan(value) for value in (label.x, label.y)):
            continue  # a point that is not drawn has no label
        where = tuple(round(value) for value in ax.transData.transform((label.x, label.y)))
        groups.setdefault(where, []).append(label)
    return [Label(group[0].x, group[0].y, " = ".join(label.text for label in group), group[0].colour,
                  max(label.marker for label in group)) for group in groups.values()]  # fmt: skip


def place(ax, labels: list, fontsize: float = 7.0) -> list:
    """Annotate every point of `labels` on `ax` without overlaps; returns the annotations."""
    renderer = renderer_of(ax.figure)
    ax.figure.draw_without_rendering()  # the axes' limits and layout as they will be drawn
    labels = merged(labels, ax)
    frame = ax.get_window_extent(renderer)
    scale = ax.figure.dpi / 72  # points to pixels
    anchors = [ax.transData.transform((label.x, label.y)) for label in labels]
    taken = [_box(x - r, y - r, x + r, y + r) for (x, y), r in
             ((anchor, label.marker * scale) for anchor, label in zip(anchors, labels))]  # fmt: skip
    placed = []
    for label, (x, y) in sorted(zip(labels, anchors), key=lambda pair: (pair[1][0], pair[1][1])):
        style = {"fontsize": fontsize, "color": label.colour, "ha": "left", "va": "bottom", "zorder": 5}
        probe = ax.annotate(label.text, (label.x, label.y), **style)
        extent = probe.get_window_extent(renderer)
        probe.remove()
        width, height, own = extent.width, extent.height, label.marker * scale
        dx, dy = _free_spot(x, y, width, height, own, frame, taken)
        far = math.hypot(dx + width / 2, dy + height / 2) > own + 2 * height  # far from its point: a leader line
        leader = {"arrowstyle": "-", "lw": 0.5, "color": label.colour, "shrinkA": 1, "shrinkB": label.marker}
        placed.append(ax.annotate(label.text, (label.x, label.y), xytext=(dx / scale, dy / scale),
                                  textcoords="offset points", arrowprops=leader if far else None, **style))
        taken.append(_box(x + dx, y + dy, x + dx + width, y + dy + height))
    return placed


def _free_spot(x, y, width, height, own, frame, taken) -> tuple:
    """The offset (pixels, of the label's lower-left corner from its point) of the nearest free spot."""
    for candidate in itertools.chain(_rings(width, height, own), _grid(x, y, frame)):
        box = _box(x + candidate[0], y + candidate[1], x + candidate[0] + width, y + candidate[1] + height)
        if _inside(box, frame) and not any(_hit(box, other) for other in taken):
            return candidate
    return own, own  # the axes are full: beside the point (the tests would tell)


def _rings(width, height, own):
    for radius in RINGS:
        r = own + radius
        yield from ((r, -height / 2), (-r - width, -height / 2), (r * 0.7, r * 0.7), (-r * 0.7 - width, r * 0.7),
                    (r * 0.7, -r * 0.7 - height), (-r * 0.7 - width, -r * 0.7 - height), (-width / 2, r),
                    (-width / 2, -r - height))  # fmt: skip


def _grid(x, y, frame):
    spots = [(gx - x, gy - y) for gx in _steps(frame.x0, frame.x1) for gy in _steps(frame.y0, frame.y1)]
    return sorted(spots, key=lambda spot: math.hypot(*spot))


def _steps(low, high):
    count = int((high - low) // GRID)
    return [low + GRID * i for i in range(count + 1)]


def _box(x0, y0, x1, y1) -> tuple:
    return (x0 - GAP / 2, y0 - GAP / 2, x1 + GAP / 2, y1 + GAP / 2)


def _inside(box, frame) -> bool:
    return box[0] >= frame.x0 and box[1] >= frame.y0 and box[2] <= frame.x1 and box[3] <= frame.y1


def _hit(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def overlaps(figure) -> list:
    """Every pair of text labels drawn inside the figure's axes whose boxes intersect: [(text, text)]."""
    from matplotlib.text import Text

    renderer = renderer_of(figure)
    figure.draw_without_rendering()
    found = []
    for ax in figure.axes:  # the text's own box: an annotation's would hold its leader line too
        boxes = [(text.get_text(), Text.get_window_extent(text, renderer)) for text in ax.texts if text.get_text()]
        for (a, box_a), (b, box_b) in itertools.combinations(boxes, 2):
            if box_a.x0 < box_b.x1 and box_b.x0 < box_a.x1 and box_a.y0 < box_b.y1 and box_b.y0 < box_a.y1:
                found.append((a, b))
    return found
