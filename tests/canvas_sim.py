"""Test helper: redraw an MNIST 28x28 digit the way a user would draw it on a canvas.

`render_on_canvas` enlarges the digit, turns it into a pen-like stroke with
anti-aliased edges, optionally thickens it (disk max-filter, NumPy only) and
puts it on a square canvas in one of three representations:

* "opaque":        RGBA uint8, black background, white ink, alpha 255 everywhere
* "transparent":   RGBA uint8, (0,0,0,0) background, white strokes with alpha = ink
                   (what streamlit-drawable-canvas returns with a transparent background)
* "dark_on_light": RGB uint8, grey paper (~230) with Gaussian noise (sd ~8), ink ~30
"""
import numpy as np
from PIL import Image

MODES = ("opaque", "transparent", "dark_on_light")


def _bbox(img, level=0.1):
    rows, cols = np.nonzero(img > level)
    return rows.min(), rows.max() + 1, cols.min(), cols.max() + 1


def _dilate(ink, radius):
    """Grey-level dilation with a disk of `radius` pixels (max filter)."""
    if radius <= 0:
        return ink
    r = int(radius)
    h, w = ink.shape
    padded = np.zeros((h + 2 * r, w + 2 * r), ink.dtype)
    padded[r:r + h, r:r + w] = ink
    out = ink.copy()
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            if dy * dy + dx * dx <= radius * radius and (dy or dx):
                np.maximum(out, padded[r + dy:r + dy + h, r + dx:r + dx + w], out=out)
    return out


def render_on_canvas(img28, size=280, scale=None, offset=None, stroke=0, mode="opaque", rng=None):
    """Draw a 28x28 digit (values in [0,1], or uint8) on a size x size canvas.

    scale:  magnification of the digit (canvas pixels per MNIST pixel); default
            makes the digit's ink box 70% of the canvas tall.
    offset: (x, y) canvas position of the top-left corner of the digit's ink
            bounding box; default centres it.  Ink falling off the canvas is cut.
    stroke: extra thickness: the ink is dilated by a disk of this radius (px).
    mode:   "opaque" | "transparent" | "dark_on_light" (see module docstring).
    rng:    numpy Generator for the paper noise (default: seeded with 0).
    Returns uint8 (size, size, 4) for the RGBA modes, (size, size, 3) otherwise.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}")
    img = np.asarray(img28, dtype=np.float32).reshape(28, 28)
    if img.max() > 1.0:
        img = img / 255.0
    r0, r1, c0, c1 = _bbox(img)
    digit = np.pad(img[r0:r1, c0:c1], 1)
    if scale is None:
        scale = 0.7 * size / (r1 - r0)
    out_w = max(1, round(digit.shape[1] * scale))
    out_h = max(1, round(digit.shape[0] * scale))
    up = np.asarray(Image.fromarray(digit, "F").resize((out_w, out_h), Image.Resampling.BILINEAR))
    ink = np.clip((up - 0.5) * 4.0 + 0.5, 0.0, 1.0)   # pen-like stroke, soft edge
    ink = _dilate(ink, stroke)
    if offset is None:
        offset = ((size - (c1 - c0) * scale) / 2, (size - (r1 - r0) * scale) / 2)
    x = round(offset[0] - scale)  # the 1-pixel pad added above
    y = round(offset[1] - scale)
    canvas = np.zeros((size, size), np.float32)
    ys, xs = max(0, y), max(0, x)
    ye, xe = min(size, y + out_h), min(size, x + out_w)
    if ye > ys and xe > xs:
        canvas[ys:ye, xs:xe] = ink[ys - y:ye - y, xs - x:xe - x]
    return _represent(canvas, mode, rng)


def _represent(ink, mode, rng):
    if mode == "opaque":
        v = np.round(ink * 255).astype(np.uint8)
        return np.dstack([v, v, v, np.full_like(v, 255)])
    if mode == "transparent":
        a = np.round(ink * 255).astype(np.uint8)
        rgb = np.where(a > 0, 255, 0).astype(np.uint8)
        return np.dstack([rgb, rgb, rgb, a])
    rng = np.random.default_rng(0) if rng is None else rng
    paper = 230.0 + rng.normal(0.0, 8.0, ink.shape)
    v = paper * (1.0 - ink) + 30.0 * ink
    v = np.clip(np.round(v), 0, 255).astype(np.uint8)
    return np.dstack([v, v, v])


def random_render(img28, rng, size=280, height=(60, 250), mode="opaque", stroke=None):
    """Draw the digit at a random height (px, of its ink box), position and stroke."""
    img = np.asarray(img28, dtype=np.float32).reshape(28, 28)
    r0, r1, c0, c1 = _bbox(img)
    h = rng.uniform(*height)
    scale = h / (r1 - r0)
    if stroke is None:
        stroke = rng.uniform(0.0, max(1.0, 0.04 * h))
    scale = min(scale, (size - 2 * stroke - 4) / max(r1 - r0, c1 - c0))
    room_x = size - (c1 - c0) * scale - 2 * stroke - 2
    room_y = size - (r1 - r0) * scale - 2 * stroke - 2
    offset = (stroke + 1 + rng.uniform(0, max(0.0, room_x)), stroke + 1 + rng.uniform(0, max(0.0, room_y)))
    return render_on_canvas(img, size=size, scale=scale, offset=offset, stroke=stroke, mode=mode, rng=rng)


# Stroke paths for a few synthetic digits, in a 0..1 box (x right, y down).
_PATHS = {
    "1": [[(0.55, 0.05), (0.55, 0.95)]],
    "7": [[(0.15, 0.08), (0.85, 0.08), (0.4, 0.95)]],
    "4": [[(0.6, 0.05), (0.1, 0.65), (0.9, 0.65)], [(0.65, 0.3), (0.65, 0.95)]],
    "L": [[(0.25, 0.05), (0.25, 0.9), (0.85, 0.9)]],
    "0": [[(0.5 + 0.32 * np.sin(t), 0.5 - 0.45 * np.cos(t)) for t in np.linspace(0, 2 * np.pi, 33)]],
}


def draw_digit(kind="7", width=0.12):
    """A synthetic MNIST-like 28x28 float32 digit (no dataset needed).

    kind: one of "0", "1", "4", "7", "L"; width: stroke width as a fraction of the
    box.  Drawn at 8x and box-filtered down, inside the central 20x20 area.
    """
    from PIL import ImageDraw

    big = Image.new("L", (224, 224), 0)
    draw = ImageDraw.Draw(big)
    px = lambda p: (32 + p[0] * 160, 32 + p[1] * 160)  # noqa: E731  (20x20 box at 8x)
    w = max(1, round(width * 160))
    for path in _PATHS[kind]:
        pts = [px(p) for p in path]
        draw.line(pts, fill=255, width=w, joint="curve")
        for p in (pts[0], pts[-1]):
            draw.ellipse([p[0] - w / 2, p[1] - w / 2, p[0] + w / 2, p[1] + w / 2], fill=255)
    return np.asarray(big.resize((28, 28), Image.Resampling.BOX), np.float32) / 255.0


def fabric_json(kind="7", box=(0.2, 0.15, 0.6, 0.7), width=18, size=280, steps=12):
    """The stroke data the canvas component sends for a digit drawn by a person:
    fabric.js JSON with one "Path" object per stroke (its points as M, Q and L
    commands in canvas pixels), like streamlit-drawable-canvas 0.13 sends.

    ``kind`` names one of the paths above; ``box`` is (left, top, width, height)
    of the digit as fractions of the canvas; each straight piece of a path is
    drawn as ``steps`` pen positions, as a mouse moving along it would be.
    """
    left, top, bw, bh = box
    objects = []
    for path in _PATHS[kind]:
        points = []
        for a, b in zip(path[:-1], path[1:]):
            for t in np.linspace(0, 1, steps, endpoint=False):
                points.append((a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t))
        points.append(path[-1])
        pix = [(size * (left + x * bw), size * (top + y * bh)) for x, y in points]
        commands = [["M", *pix[0]]]
        # fabric's pencil: a quadratic curve through the midpoint of each pair of points
        for p, q in zip(pix[:-1], pix[1:]):
            commands.append(["Q", p[0], p[1], (p[0] + q[0]) / 2, (p[1] + q[1]) / 2])
        commands.append(["L", *pix[-1]])
        xs, ys = [p[0] for p in pix], [p[1] for p in pix]
        objects.append({"type": "Path", "version": "7.4.0", "originX": "center", "originY": "center",
                        "left": (min(xs) + max(xs)) / 2, "top": (min(ys) + max(ys)) / 2,
                        "stroke": "#FFFFFF", "strokeWidth": width,
                        "strokeLineCap": "round", "strokeLineJoin": "round", "scaleX": 1,
                        "scaleY": 1, "angle": 0, "skewX": 0, "skewY": 0, "fill": None,
                        "path": [[c[0], *map(float, c[1:])] for c in commands]})
    return {"version": "7.4.0", "objects": objects, "background": "#000000"}
