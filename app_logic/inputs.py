"""User input -> the (28, 28) image the network reads, or a message saying why not.

The canvas. The drawing component (streamlit-drawable-canvas) sends its
drawing two ways: the canvas's own stroke data (fabric.js JSON: one ``Path``
object per stroke, its points as ``M``/``Q``/``L`` commands in canvas pixels)
and, if asked, a PNG of the canvas. The app never asks for the PNG: a browser
controls every byte it sends, and a crafted "PNG" could be any image format,
of any size, decoded before any of our checks. Instead ``strokes_from_canvas``
reads the stroke data, checking every field (types, counts, finite
coordinates in a sane range), ``nn.strokes.draw_strokes`` draws them as the
canvas showed them, and ``nn.preprocess.to_mnist`` does the rest.

Uploads go through ``app_logic.uploads`` (a worker process with CPU and
memory limits, formats checked from the bytes, each upload decoded once).

The functions return ``(value, error)`` rather than raising, because the page
shows the error next to the input and carries on.
"""

import io
import math
import numbers

import numpy as np
from PIL import Image

import nn.preprocess
import nn.strokes

__all__ = ["CANVAS_SIZE", "strokes_from_canvas", "draw", "read_canvas", "undo", "thumbnail_png",
           "MAX_OBJECTS", "CURVE_STEPS", "THUMB_SIDE"]

CANVAS_SIZE = 280
MAX_OBJECTS = 200           # strokes on one canvas: far beyond a digit
CURVE_STEPS = 4             # points per quadratic curve segment when flattening
THUMB_SIDE = 56             # the small picture kept with a labelled drawing
_COORD_LIMIT = 10 * CANVAS_SIZE


def _number(v):
    if not isinstance(v, numbers.Real) or isinstance(v, bool):
        return False
    try:
        return math.isfinite(v)
    except OverflowError:  # a JSON integer with hundreds of digits
        return False


def _path_points(commands):
    """fabric.js path commands -> (k, 2) points: M/L are points, Q a quadratic curve
    (control point, end point) flattened into ``CURVE_STEPS`` points."""
    points = []
    for cmd in commands:
        if not isinstance(cmd, (list, tuple)) or not cmd or not isinstance(cmd[0], str):
            raise ValueError("a path command is not a list starting with a letter")
        op, args = cmd[0], cmd[1:]
        if op in ("M", "L") and len(args) == 2 and all(map(_number, args)):
            points.append(args)
        elif op == "Q" and len(args) == 4 and all(map(_number, args)):
            if not points:
                raise ValueError("a curve does not start at a point")
            (x0, y0), (cx, cy, x1, y1) = points[-1], args
            for t in np.linspace(0, 1, CURVE_STEPS + 1)[1:]:
                points.append(((1 - t) ** 2 * x0 + 2 * (1 - t) * t * cx + t * t * x1,
                               (1 - t) ** 2 * y0 + 2 * (1 - t) * t * cy + t * t * y1))
        else:
            raise ValueError(f"unsupported path command {op!r}")
        if len(points) > nn.strokes.MAX_STROKE_POINTS:
            raise ValueError("too many points")
    return points


def strokes_from_canvas(json_data):
    """The canvas's fabric.js JSON -> a list of ``(points, width)``: (k, 2) float
    arrays in canvas pixels and each stroke's pen width. ValueError says what is
    wrong with a drawing that is not what the freehand pen makes (``Path``
    objects, not moved, scaled or rotated): it is refused rather than drawn
    differently from what the user saw.
    """
    if json_data is None:
        return []
    if not isinstance(json_data, dict):
        raise ValueError("the drawing is not a JSON object")
    objects = json_data.get("objects", [])
    if not isinstance(objects, list):
        raise ValueError("the drawing's objects are not a list")
    if len(objects) > MAX_OBJECTS:
        raise ValueError(f"the drawing has {len(objects)} strokes (at most {MAX_OBJECTS})")
    strokes, total = [], 0
    for obj in objects:
        if not isinstance(obj, dict) or obj.get("type") not in ("Path", "path"):
            raise ValueError("the drawing holds something other than pen strokes")
        if any(obj.get(k, d) != d for k, d in (("scaleX", 1), ("scaleY", 1), ("angle", 0),
                                                ("skewX", 0), ("skewY", 0))):
            raise ValueError("a stroke was moved, scaled or rotated")
        width = obj.get("strokeWidth")
        if not (_number(width) and 1 <= width <= 100):
            raise ValueError("a stroke has no valid width")
        path = obj.get("path")
        if not isinstance(path, list) or not path:
            raise ValueError("a stroke has no points")
        points = np.asarray(_path_points(path), dtype=np.float64)
        if np.abs(points).max() > _COORD_LIMIT:
            raise ValueError("a stroke lies far outside the canvas")
        total += len(points)
        if total > nn.strokes.MAX_STROKE_POINTS:
            raise ValueError("the drawing has too many points")
        if _moved(obj, points):
            raise ValueError("a stroke was moved, scaled or rotated")
        strokes.append((points, float(width)))
    return strokes


def _moved(obj, points, tolerance=3.0):
    """True if a stroke's position (fabric's ``left``/``top``) is not where its points
    put it: it was dragged after it was drawn. The position refers to the stroke's
    box (points and half the pen around them) at its ``originX``/``originY``:
    "center" (streamlit-drawable-canvas 0.13), "left"/"top" (older fabric.js) or
    "right"/"bottom". Without a position the points are taken as they are."""
    if "left" not in obj and "top" not in obj:
        return False
    half = float(obj.get("strokeWidth", 0)) / 2
    lo, hi = points.min(axis=0), points.max(axis=0)
    expected = []
    for axis, key, origin in ((0, "left", obj.get("originX", "center")),
                              (1, "top", obj.get("originY", "center"))):
        where = {"center": (lo[axis] + hi[axis]) / 2, "left": lo[axis] - half,
                 "top": lo[axis] - half, "right": hi[axis] + half,
                 "bottom": hi[axis] + half}.get(origin)
        value = obj.get(key)
        if where is None or not _number(value) or abs(value - where) > tolerance:
            return True
        expected.append(where)
    return False


def draw(strokes):
    """``(points, width)`` strokes -> the (280, 280, 4) canvas image. Strokes of
    one width are drawn together; a width changed between strokes (the slider)
    draws each group with its own pen and keeps the brightest."""
    widths = sorted({w for _, w in strokes})
    layers = [nn.strokes.draw_strokes([p for p, w in strokes if w == width], CANVAS_SIZE, width)
              for width in widths]
    return layers[0] if len(layers) == 1 else np.maximum.reduce(layers)


def read_canvas(json_data):
    """Canvas JSON -> ``(img28 or None, error or None)``; None without an error for
    a blank canvas. ``img28`` is float32 (28, 28) in [0, 1]."""
    try:
        strokes = strokes_from_canvas(json_data)
        return (nn.preprocess.to_mnist(draw(strokes)) if strokes else None), None
    except ValueError as e:
        return None, f"Could not read the drawing: {e}."


def undo(json_data):
    """The drawing without its last stroke (what the Undo button restores)."""
    if not isinstance(json_data, dict) or not json_data.get("objects"):
        return {"objects": []}
    return {**json_data, "objects": list(json_data["objects"][:-1])}


def thumbnail_png(json_data, photo_png=None):
    """The drawing (or, given, the uploaded photo's thumbnail) as a small grey PNG of at
    most ``THUMB_SIDE`` pixels a side, to keep with its label. The photo is a PNG this
    app made (app_logic.uploads); the drawing is drawn again from its strokes."""
    if photo_png is not None:
        img = Image.open(io.BytesIO(photo_png)).convert("L")
    else:
        img = Image.fromarray(draw(strokes_from_canvas(json_data))[:, :, 0])
    img.thumbnail((THUMB_SIDE, THUMB_SIDE))
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return buf.getvalue()
