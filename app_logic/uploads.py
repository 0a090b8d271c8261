"""Uploaded photos -> the network's (28, 28) input, decoded where a hostile file can do no harm.

Why this exists: decoding an upload in the server's own process let one
visitor, within the stated limits, take the server down for everyone: a
500 KB progressive JPEG whose last scan repeats 34,000 times cost 86 s of
CPU, a 21 KB run-length-encoded BMP named ``.png`` 14 s, a 40-megapixel PNG
650 MB, and each was decoded again on every rerun of the page. So:

1. Here, on the bytes alone, before any decoder runs (microseconds): the
   size (``MAX_BYTES``, checked first); the format from the magic number,
   never the name: PNG, JPEG or WebP, anything else is refused saying what it
   is; the pixel count from the header (``MAX_PIXELS``); and for a JPEG the
   number of scans (``MAX_JPEG_SCANS``; a camera JPEG has 1, a progressive
   one about 10).
2. In a short-lived worker process (``app_logic._decode_worker``) that first
   limits itself to ``CPU_SECONDS`` of CPU and ``MEMORY_BYTES`` of address
   space, and that this side kills after ``WALL_SECONDS``: the magic number
   and header again, then decode (a large JPEG at 1/2..1/8 scale in libjpeg,
   "draft" mode), box-average to at most 1000 px a side, EXIF orientation,
   ``nn.preprocess.to_mnist`` and a PNG thumbnail of our own making. At most
   ``MAX_CONCURRENT_DECODES`` workers run at once in the whole server.
3. Back here, the reply is checked as if it were hostile too (layout, sizes,
   shape, finiteness and range, the PNG signature and the thumbnail's size)
   before it becomes a ``DecodedUpload``.

``UploadCache`` (one per browser session) decodes each upload once, errors
included, so a rerun of the page costs a SHA-256 of the bytes.

Measured on the 2-core server (Python 3.11, Pillow 13, libjpeg-turbo 3.2);
peak RSS is the worker's, read from ``RUSAGE_CHILDREN`` in a small fresh
process (whose own ~40 MB it includes):

* worker start-up, the round trip for a tiny PNG: 0.13 s wall, 41 MB;
* a 12 MP phone photo (4032x3024 JPEG, 2.2 MB): 0.19 s, 61 MB; 16 MP
  (4608x3456, 2.8 MB): 0.21 s, 65 MB; the same saved progressive: 0.27 s, 103 MB;
* the heaviest legal inputs: a 16 MP RGBA PNG 0.41 s, 116 MB; an 8 MP WebP
  0.25 s, 163 MB RSS and 248 MiB of address space (libwebp, as Pillow drives
  it, holds two extra full-size canvases: hence ``MAX_WEBP_PIXELS``);
* hostile: the progressive JPEG with 34,000 repeated scans (0.5 MB, 45 s of
  CPU in-process), the RLE BMP named ``.png``, the 40 MP PNG and a
  100,000 x 100,000 PNG bomb are refused here in microseconds, no worker
  started; with this side's checks switched off, the worker is killed by the
  CPU limit after 2.0 s (48 MB), refuses the 40 MP PNG from its header in
  0.13 s (39 MB), and a 16 MP WebP fails at the address-space limit in 0.14 s.

Hence the limits: 2 s of CPU (over four times the slowest legal input), 4 s wall
(so that a hostile case is over within 5 s even on a busy machine), 280 MiB of
address space (the worker's RSS can never reach 300 MB; about 120 MiB of it is
the interpreter with NumPy and Pillow loaded).
"""

import hashlib
import json
import logging
import os
import struct
import subprocess
import sys
import threading
from collections import OrderedDict
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["DecodedUpload", "UploadError", "UploadCache", "decode_upload", "sniff_format",
           "pixel_limit", "ACCEPTED_FORMATS", "MAX_BYTES", "MAX_PIXELS", "MAX_WEBP_PIXELS",
           "MAX_JPEG_SCANS", "THUMB_SIDE", "CPU_SECONDS", "WALL_SECONDS", "MEMORY_BYTES",
           "MAX_CONCURRENT_DECODES"]

log = logging.getLogger("digitlab")

ACCEPTED_FORMATS = ("PNG", "JPEG", "WEBP")
MAX_BYTES = 5 * 2**20          # checked first, before anything else
MAX_PIXELS = 16_000_000        # a 12-16 MP phone photo; judged from the header
MAX_WEBP_PIXELS = 8_000_000    # Pillow's WebP decoding holds ~16 bytes a pixel (16 MP: 290 MB)
MAX_JPEG_SCANS = 100           # SOS markers; a normal progressive JPEG has about 10
THUMB_SIDE = 320               # the thumbnail's longest side
CPU_SECONDS = 2                # worker: SIGXCPU after this much CPU (SIGKILL 1 s later)
WALL_SECONDS = 4.0             # worker: killed after this long, CPU or not
MEMORY_BYTES = 280 * 2**20     # worker: RLIMIT_AS, so its RSS stays under 300 MB
MAX_CONCURRENT_DECODES = 2     # workers at once in the whole server (one per core)
QUEUE_SECONDS = 10.0           # wait at most this long for a free worker slot
MAX_THUMB_BYTES = 2**20        # a 320x320 RGBA PNG of pure noise is about 410 KB

REPLY_MAGIC = b"DIGITLAB-DECODE/1\n"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_IMG28_BYTES = 28 * 28 * 4
_ROOT = str(Path(__file__).resolve().parents[1])  # where app_logic and nn are importable
_SLOTS = threading.BoundedSemaphore(MAX_CONCURRENT_DECODES)


@dataclass(frozen=True, eq=False)
class DecodedUpload:
    """What an upload holds, ready for the page.

    img28: float32 (28, 28) in [0, 1], read-only, or None when no digit was found.
    photo_png: a PNG thumbnail (longest side <= THUMB_SIDE, upright) made by the
        worker from the decoded pixels, safe for the page to show.
    width, height: the uploaded image's size in pixels, upright.
    format: "PNG", "JPEG" or "WEBP", from the file's contents.
    """
    img28: np.ndarray | None = field(repr=False)
    photo_png: bytes = field(repr=False)
    width: int
    height: int
    format: str


class UploadError(ValueError):
    """An upload that cannot be used; ``str(error)`` tells the visitor what is wrong and what to do.

    ``transient`` is True when the file itself may be fine (the server was busy):
    ``UploadCache`` does not remember those.
    """

    def __init__(self, message, transient=False):
        super().__init__(message)
        self.transient = transient


def sniff_format(data):
    """"PNG", "JPEG" or "WEBP" from the first bytes (the magic number), else None."""
    if data[:8] == _PNG_SIGNATURE:
        return "PNG"
    if data[:3] == b"\xff\xd8\xff":
        return "JPEG"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


def decode_upload(data, filename=""):
    """An uploaded file's bytes -> ``DecodedUpload``, or raise ``UploadError``.

    ``filename`` only names the file in messages; the format comes from the
    bytes. The cheap checks run here, the decoding in a worker process with
    CPU, memory and time limits (see the module docstring).
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"expected the file's bytes, got {type(data).__name__}")
    name = _display_name(filename)
    data, fmt = _check_before_decoding(data, name, filename)
    done = _decode_in_worker(data, name)
    try:
        head, body = _read_reply(done.stdout, fmt)
    except (ValueError, TypeError, KeyError, RecursionError, struct.error) as exc:
        log.warning("upload decode: invalid worker reply for %s: %s", name, exc)
        raise UploadError(f"{name} could not be decoded. Upload it again as a PNG or JPEG "
                          "photo.") from None
    if not head["ok"]:
        raise UploadError(_worker_error(name, head, fmt))
    img28 = None
    if head["digit"]:
        img28 = np.frombuffer(body[:_IMG28_BYTES], "<f4").astype(np.float32).reshape(28, 28)
        img28.setflags(write=False)  # a cached result is shared by every rerun
    return DecodedUpload(img28, body[len(body) - head["png_bytes"]:],
                         head["width"], head["height"], fmt)


def _check_before_decoding(data, name, filename):
    """The checks on the bytes alone, in order: -> (bytes, format), or raise UploadError."""
    if len(data) > MAX_BYTES:
        raise UploadError(f"{name} is {len(data) / 2**20:.1f} MB; uploads are limited to "
                          f"{MAX_BYTES / 2**20:g} MB. Upload a smaller photo, or save it "
                          "as JPEG.")
    data = bytes(data)  # a bytearray or memoryview, copied once it is known to be small
    if not data:
        raise UploadError(f"{name} is empty (0 bytes). Choose the photo again and upload it.")
    fmt = sniff_format(data)
    if fmt is None:
        raise UploadError(_not_accepted(name, data, filename))
    size = _header_size(data, fmt)
    problem = _pixels_problem(name, *size, fmt) if size is not None else None
    if problem:
        raise UploadError(problem)
    scans = data.count(b"\xff\xda") if fmt == "JPEG" else 0
    if scans > MAX_JPEG_SCANS:
        raise UploadError(f"{name} is a JPEG made of {scans:,} scans (a photo has at most a "
                          "few dozen), which would take too long to decode. Save it again as "
                          "an ordinary JPEG or PNG and upload that.")
    return data, fmt


def _decode_in_worker(data, name):
    """Run one worker on ``data`` in a server-wide slot; its CompletedProcess if it exited 0."""
    if not _SLOTS.acquire(timeout=QUEUE_SECONDS):
        raise UploadError(_BUSY, transient=True)
    try:
        done = _run_worker(data)
    except subprocess.TimeoutExpired:  # subprocess.run has killed and reaped it
        log.warning("upload decode: worker passed %.1f s for %s", WALL_SECONDS, name)
        raise UploadError(_too_costly(name)) from None
    except OSError as exc:  # could not start a process: fork/exec failed under load
        log.warning("upload decode: worker did not start: %r", exc)
        raise UploadError(_BUSY, transient=True) from None
    finally:
        _SLOTS.release()
    if done.returncode != 0:  # killed by a limit (SIGXCPU, SIGKILL), out of memory, or a crash
        log.warning("upload decode: worker exit status %s for %s; stderr tail %r",
                    done.returncode, name, done.stderr[-300:])
        raise UploadError(_too_costly(name))
    return done


class UploadCache:
    """The last ``size`` uploads of one browser session, each decoded once.

    Keyed by the SHA-256 of the bytes, so a rerun of the page (a stroke, a tab
    switch) or the same file chosen again costs a hash, not a decode. An
    ``UploadError`` is remembered like a result and raised again, so a hostile
    file is decoded once, not on every rerun; only transient errors (server
    busy) are forgotten. Safe to call from several threads: a second caller
    with the same bytes waits for the first one's decode rather than starting
    its own.
    """

    def __init__(self, size=4):
        if size < 1:
            raise ValueError(f"size must be at least 1, got {size}")
        self.size = size
        self._lock = threading.Lock()
        # digest -> Future of (DecodedUpload, None) or (None, (message, transient))
        self._entries = OrderedDict()

    def __len__(self):
        with self._lock:
            return len(self._entries)

    def get_or_decode(self, data, filename=""):
        """Like ``decode_upload(data, filename)``, but at most once per distinct ``data``."""
        if len(data) > MAX_BYTES:  # refused at once: not worth hashing or remembering
            return decode_upload(data, filename)
        key = hashlib.sha256(data).digest()
        with self._lock:
            entry = self._entries.get(key)
            mine = entry is None
            if mine:
                entry = self._entries[key] = Future()
                while len(self._entries) > self.size:
                    self._entries.popitem(last=False)
            else:
                self._entries.move_to_end(key)
        if mine:
            self._fill(key, entry, data, filename)
        decoded, error = entry.result()
        if error is not None:  # a new exception each time, so that no traceback piles up
            raise UploadError(*error)
        return decoded

    def _fill(self, key, entry, data, filename):
        try:
            entry.set_result((decode_upload(data, filename), None))
        except UploadError as exc:
            if exc.transient:
                self._forget(key, entry)
            entry.set_result((None, (str(exc), exc.transient)))  # not exc: its frames hold data
        except BaseException as exc:  # a bug: tell every waiter, remember nothing
            self._forget(key, entry)
            entry.set_exception(exc)
            raise

    def _forget(self, key, entry):
        with self._lock:
            if self._entries.get(key) is entry:
                del self._entries[key]


# ---------------------------------------------------------------- the worker

def _worker_argv():
    return [sys.executable, "-m", "app_logic._decode_worker", str(CPU_SECONDS), str(MEMORY_BYTES)]


def _run_worker(data):
    """Run one worker on ``data``; on timeout ``subprocess.run`` kills and reaps it."""
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join(filter(None, [_ROOT, os.environ.get("PYTHONPATH")])))
    return subprocess.run(_worker_argv(), input=data, capture_output=True, env=env,
                          timeout=WALL_SECONDS, check=False)


def _read_reply(out, fmt):
    """Check a worker's stdout as hostile; return (header dict, body bytes) or raise ValueError."""
    start = len(REPLY_MAGIC) + 4
    if out[:len(REPLY_MAGIC)] != REPLY_MAGIC or len(out) < start:
        raise ValueError("no reply header")
    (n,) = struct.unpack(">I", out[len(REPLY_MAGIC):start])
    if n > 1024 or len(out) < start + n:
        raise ValueError(f"header length {n}")
    head, body = json.loads(out[start:start + n]), out[start + n:]
    if not isinstance(head, dict) or type(head.get("ok")) is not bool:
        raise ValueError("header is not an ok/error object")
    if head["ok"] is False:
        if head.get("error") not in _WORKER_ERRORS or body:
            raise ValueError(f"unknown error {head.get('error')!r}")
        for key in ("width", "height"):
            if key in head and not _is_int(head[key]):
                raise ValueError(f"{key} {head[key]!r}")
        return head, body
    w, h, png_bytes = head["width"], head["height"], head["png_bytes"]
    if not (_is_int(w) and _is_int(h) and w >= 1 and h >= 1 and w * h <= pixel_limit(fmt)):
        raise ValueError(f"size {w!r} x {h!r}")
    if head["format"] != fmt or type(head["digit"]) is not bool:
        raise ValueError(f"format {head['format']!r} (sent {fmt}) or digit {head['digit']!r}")
    pixels = _IMG28_BYTES if head["digit"] else 0
    if not (_is_int(png_bytes) and 0 < png_bytes <= MAX_THUMB_BYTES
            and len(body) == pixels + png_bytes):
        raise ValueError(f"body of {len(body)} bytes for {png_bytes!r} PNG bytes")
    if pixels:
        img28 = np.frombuffer(body[:pixels], "<f4")
        if not (np.isfinite(img28).all() and img28.min() >= 0.0 and img28.max() <= 1.0):
            raise ValueError("img28 not finite or outside [0, 1]")
    png = body[pixels:]
    if len(png) < 33 or png[:8] != _PNG_SIGNATURE or png[12:16] != b"IHDR":
        raise ValueError("thumbnail is not a PNG")
    tw, th = struct.unpack(">II", png[16:24])
    if not (1 <= tw <= THUMB_SIDE and 1 <= th <= THUMB_SIDE):
        raise ValueError(f"thumbnail {tw}x{th}")
    return head, body


def _is_int(value):
    return type(value) is int


# ---------------------------------------------------------------- headers

_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _header_size(data, fmt):
    """(width, height) from the header without decoding, or None where it cannot tell.

    None leaves the decision to the worker, which asks Pillow (under its limits).
    """
    if fmt == "PNG":
        if data[12:16] == b"IHDR" and len(data) >= 24:
            return struct.unpack(">II", data[16:24])
    elif fmt == "WEBP":
        chunk = data[12:16]
        if chunk == b"VP8 " and data[23:26] == b"\x9d\x01\x2a" and len(data) >= 30:
            w, h = struct.unpack("<HH", data[26:30])
            return w & 0x3FFF, h & 0x3FFF
        if chunk == b"VP8L" and data[20:21] == b"\x2f" and len(data) >= 25:
            (bits,) = struct.unpack("<I", data[21:25])
            return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
        if chunk == b"VP8X" and len(data) >= 30:
            return (int.from_bytes(data[24:27], "little") + 1,
                    int.from_bytes(data[27:30], "little") + 1)
    elif fmt == "JPEG":
        i = 2
        for _ in range(1000):  # markers before the frame header; real files have a few dozen
            if i + 4 > len(data) or data[i] != 0xFF:
                return None
            marker = data[i + 1]
            if marker == 0xFF:  # fill byte
                i += 1
            elif marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
                i += 2
            elif marker in _JPEG_SOF:
                if i + 9 > len(data):
                    return None
                h, w = struct.unpack(">HH", data[i + 5:i + 9])
                return w, h
            elif marker == 0xDA:  # scan data before any frame header
                return None
            else:
                i += 2 + int.from_bytes(data[i + 2:i + 4], "big")
    return None


def pixel_limit(fmt):
    """The most pixels an image of format ``fmt`` ("PNG", "JPEG", "WEBP") may have."""
    return MAX_WEBP_PIXELS if fmt == "WEBP" else MAX_PIXELS


def _pixels_problem(name, w, h, fmt):
    """What is wrong with a w x h image, or None when the size is fine."""
    limit = pixel_limit(fmt)
    if w * h > limit:
        kind = "WebP images" if fmt == "WEBP" else "images"
        return (f"{name} is {w:,} x {h:,} pixels ({w * h / 1e6:.1f} megapixels); {kind} "
                f"up to {limit / 1e6:g} megapixels are accepted. Resize it, or "
                "take the photo at a lower resolution, and upload it again.")
    if w * h == 0:
        return f"{name} has no pixels ({w} x {h}). Upload a photo of one digit."
    return None


# ---------------------------------------------------------------- messages

_BUSY = ("The server is busy reading other uploads. Wait a few seconds and upload the "
         "photo again.")
_WORKER_ERRORS = ("bytes", "format", "pixels", "empty", "damaged", "memory")

# What else an upload often is, by its first bytes (the message names it).
_OTHER_KINDS = (
    (b"BM", "a BMP image"), (b"GIF8", "a GIF image"), (b"II*\x00", "a TIFF image"),
    (b"MM\x00*", "a TIFF image"), (b"%PDF", "a PDF document"), (b"%!PS", "a PostScript file"),
    (b"\xc5\xd0\xd3\xc6", "an EPS file"), (b"PK\x03\x04", "a zip archive or Office document"),
    (b"\x00\x00\x00\x0cjP  ", "a JPEG 2000 image"), (b"\xff\x4f\xff\x51", "a JPEG 2000 image"),
    (b"8BPS", "a Photoshop file"), (b"\x00\x00\x01\x00", "an icon file"),
    (b"\x1f\x8b", "a gzip archive"), (b"Rar!", "a RAR archive"), (b"7z\xbc\xaf", "a 7-Zip archive"),
)
_HEIF_BRANDS = (b"heic", b"heix", b"hevc", b"heim", b"heis", b"mif1", b"msf1", b"avif", b"avis")


def _not_accepted(name, data, filename):
    kind, hint = "not a PNG, JPEG or WebP image", ""
    for magic, what in _OTHER_KINDS:
        if data.startswith(magic):
            kind = what
            break
    else:
        if data[4:8] == b"ftyp" and data[8:12] in _HEIF_BRANDS:
            kind = "a HEIC/AVIF photo"
            hint = (" On an iPhone, choose Settings > Camera > Formats > Most Compatible, or "
                    "share the photo as JPEG.")
        elif data.lstrip(b"\xef\xbb\xbf \t\r\n")[:1] == b"<":
            kind = "an SVG, HTML or other text file"
    if str(filename).lower().endswith((".png", ".jpg", ".jpeg", ".jfif", ".webp")):
        kind += ", whatever its name says"
    return (f"{name} is {kind}. Digit Lab reads PNG, JPEG and WebP images only: save or "
            f"export the picture as PNG or JPEG and upload that.{hint}")


def _too_costly(name):
    return (f"{name} takes too long or too much memory to decode. Upload a smaller PNG or "
            "JPEG (an ordinary phone photo works).")


def _worker_error(name, head, fmt):
    kind = head["error"]
    if kind == "pixels" and "width" in head and "height" in head:
        return _pixels_problem(name, head["width"], head["height"], fmt) or _too_costly(name)
    if kind == "empty":
        return f"{name} has no pixels. Upload a photo of one digit."
    if kind == "format":
        return _not_accepted(name, b"", "")
    if kind in ("memory", "pixels", "bytes"):
        return _too_costly(name)
    return (f"{name} could not be read: the image data are damaged or incomplete (was the "
            "upload cut off?). Upload the file again, or export it again as PNG or JPEG.")


def _display_name(filename):
    """The file's name for a message: its last part, plain characters only, not too long."""
    base = str(filename).replace("\\", "/").rsplit("/", 1)[-1]
    clean = "".join(c if c.isalnum() or c in " ._-()+" else "_" for c in base).strip()
    if len(clean) > 60:
        clean = clean[:40] + "..." + clean[-15:]
    return f"“{clean}”" if clean else "The file"
