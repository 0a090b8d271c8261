"""User input -> the (28, 28) image the network reads, or a message saying why not.

Both paths end in ``nn.preprocess.to_mnist``, which crops, scales and centres
the digit the way MNIST digits were prepared. Uploads first go through
``nn.preprocess.load_image``, which refuses files that are too large, not
PNG/JPEG/GIF/BMP/WebP, truncated, or that declare too many pixels (checked
from the header, before anything is decoded).

The functions return ``(img28, error)`` rather than raising, because the page
shows the error as a message next to the input and carries on.
"""

import nn.preprocess

__all__ = ["MAX_UPLOAD_MB", "MAX_UPLOAD_BYTES", "MAX_UPLOAD_PIXELS", "read_upload",
           "read_drawing"]

MAX_UPLOAD_MB = 5
MAX_UPLOAD_BYTES = MAX_UPLOAD_MB * 2**20
MAX_UPLOAD_PIXELS = 40_000_000


def read_upload(name, size, read, max_bytes=MAX_UPLOAD_BYTES, max_pixels=MAX_UPLOAD_PIXELS):
    """An uploaded file -> ``(img28 or None, error message or None)``.

    ``size`` is the file's size in bytes as the upload reports it; ``read()``
    returns its bytes and is called only after ``size`` has passed the limit,
    so an oversized file is never read. ``img28`` is float32 (28, 28) in
    [0, 1]; it is None without an error when the image holds no digit.
    """
    if size > max_bytes:
        return None, (f"“{name}” is {size / 2**20:.1f} MB; photos up to "
                      f"{max_bytes / 2**20:g} MB are accepted.")
    try:
        image = nn.preprocess.load_image(read(), max_bytes=max_bytes, max_pixels=max_pixels)
        return nn.preprocess.to_mnist(image), None
    except ValueError as e:
        return None, f"“{name}” could not be used: {e}. Upload a PNG or JPEG photo of one digit."


def read_drawing(rgba):
    """The canvas's RGBA array (280, 280, 4) uint8 -> ``(img28 or None, error or None)``.

    ``img28`` is None (without an error) for a blank canvas.
    """
    if rgba is None:
        return None, None
    try:
        return nn.preprocess.to_mnist(rgba), None
    except ValueError as e:
        return None, f"Could not read the drawing: {e}"
