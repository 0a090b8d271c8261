"""Images and charts for the page, fast enough to redo on every canvas stroke.

A matplotlib ``Figure`` costs 10-100 ms to draw; the Draw tab redraws its
pictures on every stroke, so they are built here from NumPy arrays instead
(about a millisecond each): a 28x28 image is enlarged with ``np.kron`` (every
pixel becomes a ``scale`` x ``scale`` block, so the pixels stay visible, as
with PIL's NEAREST filter), coloured with a matplotlib colormap *object*
(a lookup table, no figure) and encoded as a PNG.

The probability bars are a Vega-Lite spec (a dict) and an Arrow table for
``st.vega_lite_chart``: the browser draws the chart, and building it costs a
fraction of a millisecond (``st.bar_chart`` builds an Altair chart first,
about 10 ms).

``figure_png`` is kept for the figures that are drawn once per network and
cached (training curves, confusion matrix, weights).
"""

import io

import matplotlib
import numpy as np
import pyarrow as pa
from PIL import Image

__all__ = ["enlarge", "gray_rgb", "saliency_rgb", "outline", "preview_png", "saliency_png",
           "saliency_panel_png", "png_bytes", "figure_png", "probability_chart"]

SCALE = 7                      # 28 x 7 = 196 pixels a side
# Show these images at their own size: st.image re-samples (and re-encodes) any
# image wider than the width it is given, which would blur the pixels.
OUTLINE_RGB = (40, 40, 40)     # the drawing's outline on the saliency map
GAP_RGB = (255, 255, 255)
_RDBU = matplotlib.colormaps["RdBu_r"]  # a copy, fetched once: blue < 0 < red


def enlarge(image, scale=SCALE):
    """(h, w) or (h, w, c) -> (h*scale, w*scale[, c]): each pixel a ``scale``-pixel block."""
    image = np.asarray(image)
    block = np.ones((scale, scale) + (1,) * (image.ndim - 2), dtype=image.dtype)
    return np.kron(image, block)


def gray_rgb(img28):
    """(28, 28) floats in [0, 1] -> (28, 28, 3) uint8 grey levels (0 black, 1 white)."""
    g = np.clip(np.asarray(img28, dtype=np.float32), 0.0, 1.0)
    g = np.rint(g * 255).astype(np.uint8)
    return np.repeat(g[:, :, None], 3, axis=2)


def saliency_rgb(grad):
    """A gradient map (28, 28) -> (28, 28, 3) uint8 on a symmetric red/blue scale.

    Zero is white; the largest absolute value is full red (positive) or full
    blue (negative), so the colours show where the evidence is, whatever its
    overall size.
    """
    grad = np.asarray(grad, dtype=np.float64).reshape(28, 28)
    lim = float(np.abs(grad).max()) or 1.0
    return _RDBU(0.5 + 0.5 * grad / lim, bytes=True)[:, :, :3]


def outline(mask):
    """Boundary pixels of a boolean mask (H, W): set where a pixel is in the mask and
    one of its four neighbours is not (the edge of the drawn strokes)."""
    m = np.pad(mask, 1, constant_values=False)
    inner = m[1:-1, 1:-1] & m[:-2, 1:-1] & m[2:, 1:-1] & m[1:-1, :-2] & m[1:-1, 2:]
    return mask & ~inner


def png_bytes(rgb, compress_level=1):
    """(H, W) or (H, W, 3) uint8 -> PNG bytes (fast compression: the images are tiny)."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buf, format="PNG",
                                                    compress_level=compress_level)
    return buf.getvalue()


def preview_png(img28, scale=SCALE):
    """What the network sees: the (28, 28) input enlarged, as PNG bytes."""
    return png_bytes(enlarge(gray_rgb(img28), scale))


def _saliency_big(img28, grad, scale):
    rgb = enlarge(saliency_rgb(grad), scale)
    ink = enlarge(np.asarray(img28).reshape(28, 28) >= 0.5, scale)
    rgb[outline(ink)] = OUTLINE_RGB
    return rgb


def saliency_png(img28, grad, scale=SCALE):
    """The saliency map of ``grad`` (28, 28) with the outline of the drawing
    ``img28`` (pixels >= 0.5) on top, enlarged, as PNG bytes."""
    return png_bytes(_saliency_big(img28, grad, scale))


def saliency_panel_png(img28, grad, scale=SCALE, gap=16):
    """The input and its saliency map side by side (a ``gap``-pixel white strip
    between them), as PNG bytes of shape (28*scale, 56*scale + gap, 3)."""
    left = enlarge(gray_rgb(img28), scale)
    middle = np.full((left.shape[0], gap, 3), GAP_RGB, np.uint8)
    return png_bytes(np.concatenate([left, middle, _saliency_big(img28, grad, scale)], axis=1))


def figure_png(fig, dpi=110):
    """A matplotlib ``Figure`` -> PNG bytes (for the figures cached per network)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def probability_chart(probs, height=190):
    """The ten probabilities (10,) as a bar chart: ``(data, spec)`` for
    ``st.vega_lite_chart(data, spec)``. Bars in %, the winner in red, each
    labelled with its value.

    ``data`` is a ``pyarrow.Table`` (columns digit, probability, label, top):
    Arrow is what Streamlit sends to the browser, so handing it a table skips a
    pandas round trip (0.1 ms instead of 0.7 ms per stroke).
    """
    probs = np.asarray(probs, dtype=float)
    best = int(probs.argmax())
    data = pa.table({"digit": [str(k) for k in range(len(probs))],
                     "probability": np.round(100 * probs, 2),
                     "label": [f"{100 * p:.0f}%" if p >= 0.005 else "" for p in probs],
                     "top": [k == best for k in range(len(probs))]})
    x = {"field": "digit", "type": "ordinal", "sort": None,
         "axis": {"labelAngle": 0, "title": "digit"}}
    y = {"field": "probability", "type": "quantitative", "scale": {"domain": [0, 100]},
         "axis": {"title": "probability (%)"}}
    spec = {
        "height": height,
        "encoding": {"x": x, "y": y},
        "layer": [
            {"mark": {"type": "bar"},
             "encoding": {"color": {"condition": {"test": "datum.top", "value": "#d62728"},
                                    "value": "#9ecae1"},
                          "tooltip": [{"field": "digit"},
                                      {"field": "probability", "format": ".2f",
                                       "title": "probability (%)"}]}},
            {"mark": {"type": "text", "dy": -7, "fontSize": 11},
             "encoding": {"text": {"field": "label"}}},
        ],
    }
    return data, spec
