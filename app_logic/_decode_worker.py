"""The decode worker: one upload's bytes on stdin -> one reply on stdout.

Only ``app_logic.uploads`` runs it, one short-lived process per upload:

    python -m app_logic._decode_worker CPU_SECONDS MEMORY_BYTES

It limits itself first (CPU seconds, address space, no core file), before it
reads a byte of the upload. The limits are set here rather than in a
``preexec_fn`` on purpose: the app's server is multi-threaded, and Python
documents ``preexec_fn`` as unsafe with threads (the child can deadlock
between fork and exec). The hostile bytes only arrive once the limits are in
place, so they bind just the same.

Then it checks the magic number and the header's size again (the parent did,
but this is the process that runs the decoders), decodes, and writes the
reply ``uploads._read_reply`` expects: ``REPLY_MAGIC``, a 4-byte big-endian
header length, a JSON header, then the raw little-endian float32 (28, 28)
image when a digit was found and the thumbnail PNG. Errors it can name
(``{"ok": false, "error": kind}``) are replies too, exit status 0; anything
else (killed by a limit, out of memory inside a C decoder, a crash) is a
non-zero exit status that the parent reports as "too costly to decode".
"""

import io
import json
import math
import resource
import struct
import sys
import warnings

import numpy as np
from PIL import Image, ImageOps

from app_logic.uploads import MAX_BYTES, REPLY_MAGIC, THUMB_SIDE, pixel_limit, sniff_format
from nn.preprocess import WORK_SIDE, to_mnist


def limit_self(cpu_seconds, memory_bytes):
    """CPU time (SIGXCPU at the soft limit, SIGKILL a second later), address space, no core file."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 1))
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))


def reply(head, body=b""):
    """The bytes the parent reads: magic, header length, JSON header, body."""
    text = json.dumps(head).encode()
    return REPLY_MAGIC + struct.pack(">I", len(text)) + text + body


def decode(data):
    """An upload's bytes -> reply bytes (see the module docstring)."""
    if len(data) > MAX_BYTES:
        return reply({"ok": False, "error": "bytes"})
    fmt = sniff_format(data)
    if fmt is None:
        return reply({"ok": False, "error": "format"})
    # Pillow's own bomb guard as a second net (it raises above twice this).
    Image.MAX_IMAGE_PIXELS = pixel_limit(fmt)
    warnings.simplefilter("ignore", Image.DecompressionBombWarning)
    try:
        img = Image.open(io.BytesIO(data), formats=[fmt])
    except Image.DecompressionBombError:
        return reply({"ok": False, "error": "pixels"})
    except MemoryError:
        return reply({"ok": False, "error": "memory"})
    except Exception:  # the magic number matched, but the header does not parse
        return reply({"ok": False, "error": "damaged"})
    width, height = img.size
    if width * height > pixel_limit(fmt):
        return reply({"ok": False, "error": "pixels", "width": width, "height": height})
    if width * height == 0:
        return reply({"ok": False, "error": "empty", "width": width, "height": height})
    if fmt == "JPEG" and max(width, height) > 2 * WORK_SIDE:
        img.draft(None, (WORK_SIDE, WORK_SIDE))  # libjpeg scales by 1/2..1/8, as load_image does
    try:
        img.load()
        img = reduce_to_work_side(img, WORK_SIDE)
    except MemoryError:
        return reply({"ok": False, "error": "memory"})
    except Exception:  # truncated data, bad checksums, decoder errors
        return reply({"ok": False, "error": "damaged"})
    try:
        turned = img.getexif().get(0x0112) in (5, 6, 7, 8)  # EXIF orientation: on its side
        upright = ImageOps.exif_transpose(img)
    except Exception:  # corrupt EXIF: the pixels as stored, as to_mnist does
        turned, upright = False, img
    if turned:  # report the size as the visitor sees the photo
        width, height = height, width
    try:
        img28 = to_mnist(upright)
    except ValueError:
        return reply({"ok": False, "error": "damaged"})
    png = thumbnail_png(upright, THUMB_SIDE)
    head = {"ok": True, "format": fmt, "width": width, "height": height,
            "digit": img28 is not None, "png_bytes": len(png)}
    pixels = b"" if img28 is None else np.ascontiguousarray(img28, "<f4").tobytes()
    return reply(head, pixels + png)


def reduce_to_work_side(img, work_side):
    """Box-average a large image down to at most ``work_side`` pixels a side.

    ``to_mnist`` block-averages anything larger than that anyway, but on a
    16 MP RGBA PNG its float copies need over 300 MB. Here the image is
    reduced a strip at a time, so no second full-size copy is ever made (not
    even the premultiplied one ``Image.reduce`` makes of RGBA, or an RGBA
    conversion of a palette image). The result differs from ``to_mnist``'s own
    averaging only by rounding to whole levels (1/255) and in partial blocks
    at the right and bottom edges.
    """
    factor = math.ceil(max(img.size) / work_side)
    if factor <= 1:
        return img
    mode = img.mode  # reduce has no "1", "P" or 16-bit modes: use what to_mnist converts them to
    if mode == "P":
        mode = "RGBA" if "transparency" in img.info else "RGB"
    elif mode == "1":
        mode = "L"
    elif mode.startswith("I;16"):
        mode = "I"  # keeps all 16 bits; converted back below so to_mnist's scale is the same
    w, h = img.size
    out = Image.new(mode, (-(-w // factor), -(-h // factor)))
    step = factor * max(1, 2**20 // (w * 4))  # strips of about 4 MB, whole blocks high
    for top in range(0, h, step):
        strip = img.crop((0, top, w, min(h, top + step)))
        out.paste(strip.convert(mode).reduce(factor), (0, top // factor))
    out.info = dict(img.info)  # EXIF orientation, transparency
    return out.convert("I;16") if img.mode.startswith("I;16") else out


def thumbnail_png(img, side):
    """A plain PNG of ``img``, longest side at most ``side``, no metadata copied from the upload."""
    if img.mode.startswith("I") or img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if arr.max() > 255 else 255.0
        img = Image.fromarray(np.clip(arr * (255.0 / top), 0, 255).astype(np.uint8))
    elif img.mode in ("LA", "La", "PA", "RGBA", "RGBa") or "transparency" in img.info:
        img = img.convert("RGBA")
    elif img.mode in ("1", "L"):
        img = img.convert("L")
    else:  # RGB, CMYK, YCbCr, P without transparency, ...
        img = img.convert("RGB")
    img.thumbnail((side, side), Image.Resampling.LANCZOS)
    img.info = {}  # no ICC profile, text or EXIF from the upload in what the page shows
    out = io.BytesIO()
    img.save(out, "PNG")
    return out.getvalue()


def main(argv):
    """Limit this process (argv: CPU seconds, address-space bytes), then stdin -> decode -> stdout."""
    cpu_seconds, memory_bytes = int(argv[1]), int(argv[2])
    limit_self(cpu_seconds, memory_bytes)
    data = sys.stdin.buffer.read(MAX_BYTES + 1)
    try:
        out = decode(data)
    except MemoryError:
        out = reply({"ok": False, "error": "memory"})
    sys.stdout.buffer.write(out)
    sys.stdout.buffer.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
