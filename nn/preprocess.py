"""Turn an arbitrary drawing or photo of one digit into an MNIST-style 28x28 image.

Why this exists: a network trained on MNIST only works on inputs that look like
MNIST.  Simply shrinking a 280x280 canvas to 28x28 gives roughly a quarter to
a third accuracy on real drawings (23-26% measured on MNIST test digits redrawn
on a canvas, with a 97% classifier), because MNIST digits were not "the whole picture":
each one was (1) cropped to its ink, (2) scaled to fit a 20x20 box keeping the
aspect ratio, with anti-aliasing, and (3) placed in a 28x28 field so that its
centre of mass sits at the centre (pixel index 14, 14 in row/column order; the
measured MNIST test-set mean is 13.99, 14.01).  A digit drawn small, in a
corner, or with a thick brush looks nothing like that until the same recipe
is applied.  `to_mnist` applies it, after deciding which pixels are ink:

* RGBA/LA with transparent regions (drawing canvases): ink = alpha, so white,
  black or coloured strokes on a transparent background all work.
* Otherwise luminance; if the background (median of the border pixels) is
  light, it is dark ink on paper and is inverted.  The background level is
  subtracted, contrast below max(0.12, 6 * noise sigma) is treated as paper,
  the strong ink level (99th percentile) is scaled to 1 and values below 0.15
  of it are zeroed, so paper texture and JPEG noise do not become ink.
  When the border's brightness varies (a shadow over part of the sheet, a
  lamp on one side), the background is not one level but the paper's own
  brightness under each pixel (``_background``), so a shadowed corner is not
  taken for ink.

Uploaded files go through `load_image` first: it refuses files that are too
large, not images, truncated or decompression bombs with a ValueError whose
message says which, and never runs a decoder that could execute code (only
PNG, JPEG, GIF, BMP and WebP are opened; no EPS/Ghostscript).

Only NumPy and Pillow are used; nothing here imports UI code.
"""
import io
import math

import numpy as np
from PIL import Image, ImageOps

MAX_PIXELS = 40_000_000   # refuse larger images before doing any heavy work
MAX_BYTES = 5_000_000     # load_image: refuse larger files before opening them
# Formats load_image opens (Pillow names; "JPEG" also opens phones' multi-picture
# JPEGs, format "MPO"). Never EPS (Ghostscript) or the other exotic plugins.
UPLOAD_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP")
WORK_SIDE = 1000          # larger images are block-averaged down to about this
MIN_CONTRAST = 0.12       # ink must differ from the background by this much (0..1)
UNEVEN_LIGHT = 0.1        # brightness differences along the border that mean a shadow
NOISE_SIGMAS = 6.0        # ... and by this many background noise sigmas
WEAK_INK = 0.15           # normalised values below this are zeroed
BOX_INK = 0.3             # pixels at or above this define the bounding box
MIN_INK_PIXELS = 4        # fewer ink pixels than this (or than this
MIN_INK_FRACTION = 1e-5   # fraction of the image) means "blank"
FIT, SIDE, CENTRE = 20, 28, 14.0


def to_mnist(image):
    """Convert one digit image to MNIST format.

    image: numpy array (H, W) grayscale, (H, W, C) with C in {1: gray,
        2: gray+alpha, 3: RGB, 4: RGBA}; uint8/uint16/int/bool, or float in
        [0, 1] (floats in [0, 255] are also accepted); or a PIL.Image of any
        mode (EXIF orientation applied, first frame of animations).
    Returns float32 (28, 28) in [0, 1] with max 1, digit fitted into 20x20 and
    centre of mass at (row 14, col 14); or None when there is no ink.
    Raises ValueError for input it cannot read.
    """
    ink = _ink_map(_to_array(image))
    if ink is None:
        return None
    strong = ink >= BOX_INK
    rows, cols = np.flatnonzero(strong.any(axis=1)), np.flatnonzero(strong.any(axis=0))
    crop = ink[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    return _fit_and_centre(crop)


def load_image(data, max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS, formats=UPLOAD_FORMATS):
    """Open an uploaded file's bytes as a decoded PIL image, or raise ValueError.

    Checks, in this order, each with its own message: the data are bytes and
    not empty; at most ``max_bytes`` long; a PNG/JPEG/GIF/BMP/WebP image
    (``formats``); at most ``max_pixels`` pixels, judged from the header
    *before* anything is decoded (so a small file declaring 30000x30000
    pixels allocates nothing); and decodable to the end (truncated or
    damaged files are refused). Returns the loaded image (first frame of an
    animation), ready for ``to_mnist``.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ValueError(f"expected the file's bytes, got {type(data).__name__}")
    size = len(data)
    if size == 0:
        raise ValueError("the file is empty (0 bytes)")
    if size > max_bytes:
        raise ValueError(f"the file is too large: {size / 1e6:.1f} MB "
                         f"(limit {max_bytes / 1e6:g} MB)")
    Image.init()  # register every plugin once, so that only unavailable formats are skipped
    try:
        img = Image.open(io.BytesIO(data), formats=[f for f in formats if f in Image.OPEN])
    except Image.DecompressionBombError as exc:  # Pillow's own guard (> 2 x MAX_IMAGE_PIXELS)
        raise ValueError(f"image too large: {exc}") from None
    except Exception as exc:  # UnidentifiedImageError, or a header damaged enough to upset a plugin
        raise ValueError(f"not a readable image (PNG, JPEG, GIF, BMP or WebP): "
                         f"{_describe(exc)}") from None
    w, h = img.size
    if w * h > max_pixels:
        raise ValueError(f"image too large: {w}x{h} = {w * h:,} pixels "
                         f"(limit {max_pixels:,})")
    if w * h == 0:
        raise ValueError(f"empty image ({w}x{h} pixels)")
    try:
        if img.format in ("JPEG", "MPO") and max(w, h) > 2 * WORK_SIDE:
            img.draft(None, (WORK_SIDE, WORK_SIDE))  # let libjpeg decode at 1/2..1/8 scale
        img.load()
    except Exception as exc:  # truncated data, bad checksums, decoder errors
        raise ValueError(f"the image data are damaged or incomplete: {_describe(exc)}") from None
    return img


def _describe(exc):
    text = str(exc)
    if "cannot identify image file" in text:
        return "unknown file format"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _to_array(image):
    """Validate the input and return an (H, W) or (H, W, C) numeric array."""
    if isinstance(image, Image.Image):
        return _pil_to_array(image)
    if image is None or isinstance(image, (str, bytes, dict, set)):
        raise ValueError(f"cannot read an image from {type(image).__name__}")
    try:
        arr = np.asarray(image)
    except Exception as exc:  # e.g. ragged nested lists
        raise ValueError(f"cannot read an image from {type(image).__name__}: {exc}") from exc
    if arr.dtype.kind not in "buif":
        raise ValueError(f"unsupported pixel dtype {arr.dtype} (need bool, integer or float)")
    if arr.ndim not in (2, 3):
        raise ValueError(f"expected a 2-D (H, W) or 3-D (H, W, C) image, got shape {arr.shape}")
    if arr.ndim == 3 and arr.shape[2] not in (1, 2, 3, 4):
        raise ValueError(f"expected 1, 2, 3 or 4 channels, got {arr.shape[2]} (shape {arr.shape})")
    if arr.size == 0:
        raise ValueError(f"empty image (shape {arr.shape})")
    _check_size(arr.shape[0], arr.shape[1])
    return arr


def _check_size(h, w):
    if h * w > MAX_PIXELS:
        raise ValueError(f"image too large: {h}x{w} = {h * w:,} pixels (limit {MAX_PIXELS:,})")


def _pil_to_array(img):
    """PIL image -> array: first frame, EXIF orientation applied, a mode NumPy reads."""
    _check_size(img.height, img.width)
    original = img
    frame = img.tell() if getattr(img, "n_frames", 1) > 1 else 0
    if frame:
        original.seek(0)
    try:
        img = ImageOps.exif_transpose(original)  # a new, loaded image
    except Exception:  # corrupt EXIF: use the pixels as stored
        img = original.copy()
    finally:
        if frame:  # leave the caller's image on the frame it was on
            original.seek(frame)
    if img.width * img.height == 0:
        raise ValueError(f"empty image (size {img.size})")
    mode = img.mode
    if "transparency" in img.info and mode in ("P", "L", "RGB"):
        img = img.convert("RGBA")
    elif mode in ("1", "L", "I", "F") or mode.startswith("I;16"):
        img = img.convert("L") if mode == "1" else img
    elif mode in ("LA", "La", "PA"):
        img = img.convert("LA")
    elif mode in ("P", "RGBA", "RGBa"):
        img = img.convert("RGBA")
    else:  # RGB, CMYK, YCbCr, LAB, HSV, ...
        img = img.convert("RGB")
    return np.asarray(img)


def _full_scale(arr):
    """Validate pixel values; return the value that means "full intensity"."""
    kind = arr.dtype.kind
    if kind == "b":
        return 1.0
    if kind == "f":
        if not np.isfinite(arr).all():
            raise ValueError("image contains NaN or infinite values")
        lo, hi = float(arr.min()), float(arr.max())
        if lo < -1e-3 or hi > 255.0:
            raise ValueError(f"float pixels must be in [0, 1] (or [0, 255]), got [{lo:g}, {hi:g}]")
        return 255.0 if hi > 1.0 + 1e-3 else 1.0
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0:
        raise ValueError(f"integer pixels must be non-negative, got minimum {lo}")
    if arr.dtype == np.uint8 or (arr.dtype != np.uint16 and hi <= 255):
        return 255.0
    if arr.dtype == np.uint16 or hi <= 65535:
        return 65535.0
    return float(hi)


def _unit_scale(arr):
    """Validated (H, W[, C]) array -> float32 in [0, 1], block-averaged if large."""
    top = _full_scale(arr)
    work = _block_mean(arr) if max(arr.shape[:2]) > WORK_SIDE else arr.astype(np.float32)
    work *= np.float32(1.0 / top)
    return np.clip(work, 0.0, 1.0, out=work)


def _block_mean(arr):
    """Average f x f blocks so the longer side is at most about WORK_SIDE."""
    f = math.ceil(max(arr.shape[:2]) / WORK_SIDE)
    fy, fx = min(f, arr.shape[0]), min(f, arr.shape[1])  # thin images: per-axis
    h, w = arr.shape[0] // fy * fy, arr.shape[1] // fx * fx
    a = arr[:h, :w].reshape(h // fy, fy, w // fx, fx, *arr.shape[2:])
    return a.mean(axis=(1, 3), dtype=np.float32)


def _ink_map(arr):
    """(H, W[, C]) array -> (H, W) float32 ink in [0, 1] (0 = background), or None."""
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    arr = _unit_scale(arr)
    if arr.ndim == 3 and arr.shape[2] in (2, 4) and (arr[:, :, -1] < 0.5).mean() > 0.01:
        contrast = arr[:, :, -1]  # canvas with a transparent background: alpha is the ink
        threshold = MIN_CONTRAST
    else:
        if arr.ndim == 3:
            arr = arr[:, :, 0] if arr.shape[2] == 2 else (
                arr[:, :, 0] * 0.299 + arr[:, :, 1] * 0.587 + arr[:, :, 2] * 0.114)
        border = np.concatenate([arr[0], arr[-1], arr[:, 0], arr[:, -1]])
        bg = float(np.median(border))
        light_paper = bg > 0.5  # dark ink on it
        if min(arr.shape) >= 32 and _uneven(border):
            bg = _background(arr, light_paper)  # a shadow or a lamp: the paper's own level
            edge = np.concatenate([bg[0], bg[-1], bg[:, 0], bg[:, -1]])
            sigma = 1.4826 * float(np.median(np.abs(border - edge)))
        else:
            sigma = 1.4826 * float(np.median(np.abs(border - bg)))
        contrast = (bg - arr) if light_paper else (arr - bg)
        threshold = max(MIN_CONTRAST, NOISE_SIGMAS * sigma)
    candidates = contrast[contrast > threshold]
    if candidates.size < max(MIN_INK_PIXELS, MIN_INK_FRACTION * contrast.size):
        return None
    k = int(0.99 * (candidates.size - 1))
    strong = float(np.partition(candidates, k)[k])
    ink = contrast * np.float32(1.0 / strong)
    np.clip(ink, 0.0, 1.0, out=ink)
    ink[ink < WEAK_INK] = 0.0
    return ink


def _uneven(border, pieces=16):
    """True when the light changes along the border (a shadow, a lamp on one side):
    the medians of ``pieces`` stretches of it differ by more than ``UNEVEN_LIGHT``.
    Medians of stretches, so that paper grain and sensor noise do not count."""
    n = len(border) // pieces * pieces
    if n == 0:
        return False
    medians = np.median(border[:n].reshape(pieces, -1), axis=1)
    return float(medians.max() - medians.min()) > UNEVEN_LIGHT


def _background(gray, light_paper, side=64, window=7):
    """The paper's brightness under each pixel of ``gray`` (H, W), for photos lit
    unevenly: on a copy shrunk to about ``side`` pixels, a grey-level closing
    (light paper: the maximum, then the minimum, over ``window`` x ``window``)
    erases every stroke thinner than the window and keeps the slow changes of the
    light; enlarged back smoothly. Dark paper: the opening instead."""
    h, w = gray.shape
    f = max(1, math.ceil(max(h, w) / side))
    fy, fx = min(f, h), min(f, w)          # thin images: per axis
    hh, ww = h // fy * fy, w // fx * fx
    small = gray[:hh, :ww].reshape(hh // fy, fy, ww // fx, fx).mean(axis=(1, 3))
    first, second = (np.max, np.min) if light_paper else (np.min, np.max)
    for reduce in (first, second):
        pad = np.pad(small, window // 2, mode="edge")
        small = reduce(np.lib.stride_tricks.sliding_window_view(pad, (window, window)), axis=(2, 3))
    out = Image.fromarray(small.astype(np.float32), "F").resize((w, h), Image.Resampling.BILINEAR)
    return np.asarray(out, dtype=np.float32)


def _fit_and_centre(crop):
    """Scale the cropped ink to fit 20x20 and centre its mass in 28x28 (one resampling)."""
    h, w = crop.shape
    s = FIT / max(h, w)                      # output pixels per input pixel
    mass = crop.sum(dtype=np.float64)
    cy = float(crop.sum(axis=1, dtype=np.float64) @ np.arange(h)) / mass + 0.5
    cx = float(crop.sum(axis=0, dtype=np.float64) @ np.arange(w)) / mass + 0.5
    # Source window (continuous coords) that maps onto the 28x28 output so the
    # centre of mass lands on pixel CENTRE (continuous CENTRE + 0.5).
    span = SIDE / s
    y0, x0 = cy - (CENTRE + 0.5) / s, cx - (CENTRE + 0.5) / s
    margin = math.ceil(2.0 / s) + 2          # room for the filter's support
    top, left = max(0, math.ceil(-y0)) + margin, max(0, math.ceil(-x0)) + margin
    bottom = max(0, math.ceil(y0 + span - h)) + margin
    right = max(0, math.ceil(x0 + span - w)) + margin
    padded = np.zeros((h + top + bottom, w + left + right), np.float32)
    padded[top:top + h, left:left + w] = crop
    box = (x0 + left, y0 + top, x0 + left + span, y0 + top + span)
    out = np.asarray(Image.fromarray(padded, "F").resize((SIDE, SIDE), Image.Resampling.BILINEAR, box=box))
    out = np.clip(out, 0.0, None)
    out[out < 1e-3] = 0.0
    peak = out.max()
    if peak <= 0:
        return None
    return (out / peak).astype(np.float32)


# ---------------------------------------------------------------- drawing strokes
