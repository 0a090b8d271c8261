"""Every picture the app shows, built in one place.

Two kinds, chosen for what they show:

- **Charts** (curves, confusion matrices, per-class scores, the map of digits,
  the probability bars) are Vega-Lite specs: ``(data, spec)`` pairs for
  ``st.vega_lite_chart``. The browser draws them at the width it has, with
  text at a fixed, readable size (on a phone too) and the values as tooltips.
  ``data`` is a ``pyarrow.Table``, what Streamlit sends anyway (building one
  costs well under a millisecond).
- **Images** (the 28x28 input, saliency maps, weights, activations, galleries)
  are PNG bytes made straight from NumPy: each value becomes a block of
  pixels (``np.kron``), coloured through a matplotlib colormap's lookup table
  (no figure is drawn), so the ones redrawn on every pen stroke cost about a
  millisecond.

Figures drawn once per network go through ``app_logic.cache.cached``.
"""

import io

import matplotlib
import numpy as np
import pyarrow as pa
from PIL import Image, ImageDraw

__all__ = ["png_bytes", "enlarge", "gray_rgb", "diverging_rgb", "preview_png", "weights_png", "display_width",
           "saliency_png", "colour_bar_png", "mosaic_png", "strip_png", "probability_chart",
           "curves_chart", "confusion_chart", "confusion_difference_chart", "per_class_chart",
           "map_chart", "DIGIT_COLOURS"]

SCALE = 7                       # 28 x 7 = 196 pixels a side for the enlarged input
OUTLINE_RGB = (40, 40, 40)      # the drawing's outline on the saliency map
_RDBU = matplotlib.colormaps["RdBu_r"]        # blue < 0 < red, white at 0
_VIRIDIS = matplotlib.colormaps["viridis"]
#: One colour per digit (matplotlib's tab10), the same in every chart.
DIGIT_COLOURS = [matplotlib.colors.to_hex(c) for c in matplotlib.colormaps["tab10"].colors]
FONT = 13                       # chart text, px


# -- images -----------------------------------------------------------------------------------

def png_bytes(rgb, compress_level=1):
    """(H, W) or (H, W, 3) uint8 -> PNG bytes (fast compression: the images are small)."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buf, format="PNG",
                                                    compress_level=compress_level)
    return buf.getvalue()


def enlarge(image, scale=SCALE):
    """(h, w) or (h, w, c) -> (h*scale, w*scale[, c]): each pixel a ``scale``-pixel block,
    so the pixels stay visible (st.image would blur a small image it enlarges)."""
    image = np.asarray(image)
    block = np.ones((scale, scale) + (1,) * (image.ndim - 2), dtype=image.dtype)
    return np.kron(image, block)


def gray_rgb(img):
    """Values in [0, 1] (h, w) -> (h, w, 3) uint8 grey levels (0 black, 1 white)."""
    g = np.rint(np.clip(np.asarray(img, dtype=np.float32), 0.0, 1.0) * 255).astype(np.uint8)
    return np.repeat(g[:, :, None], 3, axis=2)


def diverging_rgb(values, limit=None):
    """Signed values (h, w) -> (h, w, 3) uint8: white at 0, red positive, blue negative,
    full colour at +-``limit`` (default: the largest absolute value)."""
    values = np.asarray(values, dtype=np.float64)
    lim = float(np.abs(values).max()) if limit is None else float(limit)
    lim = lim or 1.0
    return _RDBU(np.clip(0.5 + 0.5 * values / lim, 0, 1), bytes=True)[..., :3]


def sequential_rgb(values, low=None, high=None):
    """Values (h, w) -> (h, w, 3) uint8 on viridis (dark: low, yellow: high)."""
    values = np.asarray(values, dtype=np.float64)
    low = float(values.min()) if low is None else low
    high = float(values.max()) if high is None else high
    span = (high - low) or 1.0
    return _VIRIDIS(np.clip((values - low) / span, 0, 1), bytes=True)[..., :3]


def preview_png(img28, scale=SCALE):
    """What the network sees: the (28, 28) input enlarged, as PNG bytes."""
    return png_bytes(enlarge(gray_rgb(np.asarray(img28).reshape(28, 28)), scale))


def _outline(mask):
    """Boundary pixels of a boolean mask: in the mask with a 4-neighbour outside it."""
    m = np.pad(mask, 1, constant_values=False)
    inner = m[1:-1, 1:-1] & m[:-2, 1:-1] & m[2:, 1:-1] & m[1:-1, :-2] & m[1:-1, 2:]
    return mask & ~inner


def saliency_png(img28, grad, scale=SCALE):
    """A saliency map (28, 28) on the red/blue scale, the drawing's outline (pixels
    >= 0.5) on top, enlarged, as PNG bytes."""
    rgb = enlarge(diverging_rgb(np.asarray(grad).reshape(28, 28)), scale)
    ink = enlarge(np.asarray(img28).reshape(28, 28) >= 0.5, scale)
    rgb[_outline(ink)] = OUTLINE_RGB
    return png_bytes(rgb)


def colour_bar_png(left, right, width=196, height=14, diverging=True):
    """A horizontal colour scale with its two end labels, as PNG bytes."""
    ramp = np.linspace(-1, 1, width)[None, :].repeat(height, 0)
    rgb = diverging_rgb(ramp, 1.0) if diverging else sequential_rgb(ramp)
    canvas = Image.new("RGB", (width, height + 16), "white")
    canvas.paste(Image.fromarray(rgb), (0, 0))
    draw = ImageDraw.Draw(canvas)
    draw.text((0, height + 2), left, fill=(60, 60, 60))
    w = draw.textlength(right)
    draw.text((width - w, height + 2), right, fill=(60, 60, 60))
    buf = io.BytesIO()
    canvas.save(buf, format="PNG")
    return buf.getvalue()


def mosaic_png(tiles, cols, scale=3, gap=2, diverging=True, shared_scale=False):
    """Small images side by side in rows of ``cols``: ``tiles`` (n, h, w) -> PNG bytes.

    Each tile on its own colour scale (or one for all with ``shared_scale``),
    red/blue around zero (``diverging``) or viridis. White gaps between tiles.
    """
    tiles = np.asarray(tiles, dtype=np.float64)
    n, h, w = tiles.shape
    rows = -(-n // cols)
    out = np.full((rows * (h * scale + gap) - gap, cols * (w * scale + gap) - gap, 3), 255, np.uint8)
    lim = np.abs(tiles).max() if shared_scale else None
    lo, hi = (tiles.min(), tiles.max()) if shared_scale else (None, None)
    for i, tile in enumerate(tiles):
        rgb = diverging_rgb(tile, lim) if diverging else sequential_rgb(tile, lo, hi)
        r, c = divmod(i, cols)
        y, x = r * (h * scale + gap), c * (w * scale + gap)
        out[y:y + h * scale, x:x + w * scale] = enlarge(rgb, scale)
    return png_bytes(out)


def display_width(png, most=700):
    """How wide to show PNG bytes: their own width in pixels (read from the header), so
    that a small picture is not stretched to the column with a long caption; "content"
    (as wide as fits) above ``most``."""
    width = int.from_bytes(png[16:20], "big")
    return width if width <= most else "content"


def weights_png(tiles):
    """First-layer weights (n, h, w) as PNG bytes: a dense layer's units as 28x28
    pictures, 16 a row; a convolution's small filters enlarged to about 36 px,
    8 a row, with room between them so that each reads as one filter (about 320 px
    wide in all: it fits a phone at its own size)."""
    tiles = np.asarray(tiles)
    if tiles.shape[1] > 10:
        return mosaic_png(tiles, cols=16, scale=3)
    return mosaic_png(tiles, cols=8, scale=max(3, 36 // tiles.shape[1]), gap=6)


def strip_png(values, per_row=64, scale=10):
    """A dense layer's activations (units,) as rows of coloured squares (viridis:
    dark = off, yellow = strongly on), ``per_row`` units a row, as PNG bytes."""
    values = np.asarray(values, dtype=np.float64).ravel()
    n = len(values)
    if n == 0:
        return png_bytes(np.full((scale, scale, 3), 255, np.uint8))
    cols = min(per_row, n)
    rows = -(-n // cols)
    grid = np.full(rows * cols, np.nan)
    grid[:n] = values
    grid = grid.reshape(rows, cols)
    rgb = sequential_rgb(np.nan_to_num(grid, nan=0.0), min(0.0, float(values.min())),
                         float(values.max()))
    rgb[np.isnan(grid)] = 255
    return png_bytes(enlarge(rgb, scale))


# -- charts -------------------------------------------------------------------------------------

def _base(height):
    return {"height": height, "config": {"axis": {"labelFontSize": FONT, "titleFontSize": FONT},
                                         "legend": {"labelFontSize": FONT, "titleFontSize": FONT},
                                         "title": {"fontSize": FONT + 1}}}


def probability_chart(probs, height=190):
    """The ten probabilities (10,) as bars in %, the winner in red, each labelled."""
    probs = np.asarray(probs, dtype=float)
    best = int(probs.argmax())
    data = pa.table({"digit": [str(k) for k in range(len(probs))],
                     "probability": np.round(100 * probs, 2),
                     "label": [f"{100 * p:.0f}%" if p >= 0.005 else "" for p in probs],
                     "top": [k == best for k in range(len(probs))]})
    spec = {**_base(height),
            "encoding": {"x": {"field": "digit", "type": "ordinal", "sort": None,
                               "axis": {"labelAngle": 0, "title": "digit"}},
                         "y": {"field": "probability", "type": "quantitative",
                               "scale": {"domain": [0, 100]},
                               "axis": {"title": "probability (%)"}}},
            "layer": [
                {"mark": {"type": "bar"},
                 "encoding": {"color": {"condition": {"test": "datum.top", "value": "#d62728"},
                                        "value": "#9ecae1"},
                              "tooltip": [{"field": "digit"},
                                          {"field": "probability", "format": ".2f",
                                           "title": "probability (%)"}]}},
                {"mark": {"type": "text", "dy": -8, "fontSize": FONT},
                 "encoding": {"text": {"field": "label"}}}]}
    return data, spec


def curves_chart(runs, metric, height=260):
    """Per-epoch curves of several runs on one chart.

    ``runs``: ``[(run label, history list)]``; ``metric``: "loss" or "accuracy".
    Colour tells the runs apart, a dashed line is validation, a solid one
    training. Accuracy is in %.
    """
    rows = {"epoch": [], "value": [], "run": [], "data": []}
    for label, history in runs:
        for record in history:
            for split, key in (("training", f"train_{metric[:3]}"), ("validation", f"val_{metric[:3]}")):
                key = {"train_los": "train_loss", "val_los": "val_loss"}.get(key, key)
                v = record.get(key)
                if v is None:
                    continue
                rows["epoch"].append(int(record["epoch"]))
                rows["value"].append(100 * v if metric == "accuracy" else v)
                rows["run"].append(label)
                rows["data"].append(split)
    title = "accuracy (%)" if metric == "accuracy" else "loss (cross-entropy)"
    spec = {**_base(height),
            "mark": {"type": "line", "point": True},
            "encoding": {
                "x": {"field": "epoch", "type": "quantitative", "axis": {"tickMinStep": 1}},
                "y": {"field": "value", "type": "quantitative", "title": title,
                      "scale": {"zero": False}},
                "color": {"field": "run", "type": "nominal", "legend": {"orient": "top",
                                                                         "title": None}},
                "strokeDash": {"field": "data", "type": "nominal",
                               "scale": {"domain": ["training", "validation"], "range": [[1, 0], [5, 3]]},
                               "legend": {"orient": "top", "title": None}},
                "tooltip": [{"field": "run"}, {"field": "data"}, {"field": "epoch"},
                            {"field": "value", "format": ".4f", "title": title}]}}
    if len(runs) == 1:
        spec["encoding"]["color"] = {"field": "data", "type": "nominal",
                                     "legend": {"orient": "top", "title": None}}
    return pa.table(rows), spec


def confusion_chart(cm, height=360):
    """The confusion matrix as an annotated heat map: rows are the true digits,
    columns the predictions. Colour is on a log scale, so the few mistakes off
    the diagonal stay visible next to the thousand right answers on it."""
    cm = np.asarray(cm)
    k = len(cm)
    true, pred = np.divmod(np.arange(k * k), k)
    counts = cm.ravel()
    data = pa.table({"true digit": [str(t) for t in true], "predicted": [str(p) for p in pred],
                     "count": counts.astype(np.int64),
                     "shown": np.where(counts > 0, counts, np.nan),
                     "dark": counts > np.sqrt(max(int(cm.max()), 1))})
    axis = {"labelAngle": 0}
    # In digit order, named: the log scale drops the empty cells, and an axis in data
    # order would then list the digits as their first mistake happens to come.
    order = [str(d) for d in range(k)]
    spec = {**_base(height), "width": "container",
            "encoding": {"x": {"field": "predicted", "type": "ordinal", "sort": order, "axis": axis,
                               "title": "predicted digit"},
                         "y": {"field": "true digit", "type": "ordinal", "sort": order,
                               "title": "true digit"}},
            "layer": [
                {"mark": "rect",
                 "encoding": {"color": {"field": "shown", "type": "quantitative",
                                        "scale": {"type": "log", "scheme": "blues"},
                                        "legend": {"title": "count (log)"}},
                              "tooltip": [{"field": "true digit"}, {"field": "predicted"},
                                          {"field": "count"}]}},
                {"mark": {"type": "text", "fontSize": FONT - 1},
                 "transform": [{"filter": "datum.count > 0"}],
                 "encoding": {"text": {"field": "count"},
                              "color": {"condition": {"test": "datum.dark", "value": "white"},
                                        "value": "black"}}}]}
    return data, spec


def confusion_difference_chart(cm_a, cm_b, height=360):
    """``cm_b - cm_a`` as a red/blue heat map with the differences written in.

    Off the diagonal blue is good (fewer mistakes in B); on the diagonal red
    is good (more right answers in B): the chart says so in its tooltip.
    """
    diff = np.asarray(cm_b, dtype=np.int64) - np.asarray(cm_a, dtype=np.int64)
    k = len(diff)
    true, pred = np.divmod(np.arange(k * k), k)
    d = diff.ravel()
    better = np.where(true == pred, d > 0, d < 0)
    data = pa.table({"true digit": [str(t) for t in true], "predicted": [str(p) for p in pred],
                     "change": d, "label": [f"{v:+d}" if v else "" for v in d],
                     "verdict": ["" if v == 0 else ("better" if b else "worse")
                                 for v, b in zip(d, better)]})
    lim = max(1, int(np.abs(diff).max()))
    order = [str(d) for d in range(k)]
    spec = {**_base(height), "width": "container",
            "encoding": {"x": {"field": "predicted", "type": "ordinal", "sort": order,
                               "axis": {"labelAngle": 0}, "title": "predicted digit"},
                         "y": {"field": "true digit", "type": "ordinal", "sort": order}},
            "layer": [
                {"mark": "rect",
                 "encoding": {"color": {"field": "change", "type": "quantitative",
                                        "scale": {"scheme": "redblue", "reverse": True,
                                                  "domain": [-lim, lim]},
                                        "legend": {"title": "B − A"}},
                              "tooltip": [{"field": "true digit"}, {"field": "predicted"},
                                          {"field": "change"}, {"field": "verdict"}]}},
                {"mark": {"type": "text", "fontSize": FONT - 1},
                 "encoding": {"text": {"field": "label"}}}]}
    return data, spec


def per_class_chart(per_class, height=280):
    """Precision, recall and F1 of each digit as grouped bars on a full 0-100% axis
    (not cut, which would exaggerate small differences); the legend sits above."""
    rows = {"digit": [], "score": [], "value": []}
    for key, name in (("precision", "precision"), ("recall", "recall"), ("f1", "F1")):
        for digit, v in enumerate(per_class[key]):
            rows["digit"].append(str(digit))
            rows["score"].append(name)
            rows["value"].append(round(100 * float(v), 2))
    spec = {**_base(height), "mark": "bar",
            "encoding": {"x": {"field": "digit", "type": "ordinal", "sort": None,
                               "axis": {"labelAngle": 0}},
                         "xOffset": {"field": "score", "sort": ["precision", "recall", "F1"]},
                         "y": {"field": "value", "type": "quantitative", "title": "%",
                               "scale": {"domain": [0, 100]}},
                         "color": {"field": "score", "type": "nominal",
                                   "sort": ["precision", "recall", "F1"],
                                   "legend": {"orient": "top", "title": None}},
                         "tooltip": [{"field": "digit"}, {"field": "score"},
                                     {"field": "value", "format": ".2f", "title": "%"}]}}
    return pa.table(rows), spec


def map_chart(points, labels, marker=None, neighbours=(), height=380):
    """The map of digits: ``points`` (n, 2) coloured by ``labels`` (n,), the drawing
    at ``marker`` (x, y) as a large black cross and its nearest neighbours ringed."""
    points = np.asarray(points, dtype=np.float64)
    data = {"x": points[:, 0], "y": points[:, 1], "digit": [str(int(v)) for v in labels],
            "kind": ["MNIST test digit"] * len(points)}
    layers = [{"mark": {"type": "circle", "size": 22, "opacity": 0.55},
               "transform": [{"filter": "datum.kind == 'MNIST test digit'"}],
               "encoding": {"color": {"field": "digit", "type": "nominal",
                                      "scale": {"domain": [str(d) for d in range(10)],
                                                "range": DIGIT_COLOURS},
                                      "legend": {"orient": "right", "title": "digit"}},
                            "tooltip": [{"field": "digit"}]}}]
    xs, ys, digits, kinds = list(data["x"]), list(data["y"]), list(data["digit"]), list(data["kind"])
    for i in neighbours:
        xs.append(points[i, 0]), ys.append(points[i, 1]), digits.append(str(int(labels[i])))
        kinds.append("nearest neighbour")
    if len(neighbours):
        layers.append({"mark": {"type": "point", "size": 160, "strokeWidth": 2, "color": "black"},
                       "transform": [{"filter": "datum.kind == 'nearest neighbour'"}],
                       "encoding": {"tooltip": [{"field": "digit"}, {"field": "kind"}]}})
    if marker is not None:
        xs.append(float(marker[0])), ys.append(float(marker[1])), digits.append("?")
        kinds.append("your drawing")
        layers.append({"mark": {"type": "point", "shape": "cross", "size": 420, "filled": True,
                                "color": "black"},
                       "transform": [{"filter": "datum.kind == 'your drawing'"}],
                       "encoding": {"tooltip": [{"field": "kind"}]}})
    table = pa.table({"x": xs, "y": ys, "digit": digits, "kind": kinds})
    spec = {**_base(height),
            "encoding": {"x": {"field": "x", "type": "quantitative", "title": "1st principal component",
                               "axis": {"labels": False, "ticks": False}},
                         "y": {"field": "y", "type": "quantitative", "title": "2nd principal component",
                               "axis": {"labels": False, "ticks": False}}},
            "layer": layers}
    return table, spec
