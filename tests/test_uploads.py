"""Uploads (``app_logic.uploads``): every hostile file is refused, or decoded in a
limited worker, within 5 s and 300 MB; real photos read the same as in-process.

Every file is built here (no binary fixtures). Exact outcomes:

* refused here, before any worker starts: a BMP (run-length encoded) named
  ``digit.png``, GIF, TIFF, SVG, HEIC, zip, more than 5 MiB, a 40 MP PNG,
  decompression bombs declaring 10^10 pixels (PNG, JPEG, WebP), and the
  progressive JPEG whose last scan repeats 34,000 times (by its scan count);
* refused by the worker: the same progressive JPEG with the scan check off
  (killed by the CPU limit), the 40 MP PNG with this side's pixel check off,
  truncated PNG / JPEG;
* decoded: a photo-like JPEG (``img28`` equal to ``to_mnist`` in-process), the
  same photo EXIF-rotated, a 12 MP phone photo, and the heaviest legal inputs
  (16 MP RGBA PNG, 8 MP WebP);
* a worker that hangs, crashes, runs out of memory or replies garbage -> UploadError;
* ``UploadCache``: one worker run per distinct upload, errors included, also
  with several threads asking at once.

Worker-side cases run in a fresh, small Python process (``measure``): there
``RUSAGE_CHILDREN.ru_maxrss`` is the worker's peak RSS. (In pytest itself it
would not be: a child's high-water mark starts from its parent's, since the
child is forked from it.) The small process's own ~40 MB is included, so the
figure is an upper bound.
"""
import io
import json
import os
import signal
import struct
import subprocess
import sys
import threading
import time
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from app_logic import _decode_worker, uploads
from app_logic.uploads import DecodedUpload, UploadCache, UploadError, decode_upload
from nn.preprocess import load_image, to_mnist

ROOT = Path(__file__).resolve().parents[1]
LIMIT_S = 5.0      # every hostile case is over within this (wall time)
LIMIT_MB = 300.0   # ... and the worker's peak RSS stays under this


# ---------------------------------------------------------------- files

def encode(img, fmt, **kw):
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


SEVEN = ((0.38, 0.30), (0.62, 0.30), (0.45, 0.72))
ONE = ((0.50, 0.25), (0.50, 0.75))
FOUR = ((0.55, 0.75), (0.55, 0.25), (0.35, 0.55), (0.65, 0.55))


def photo(w, h, stroke=SEVEN, seed=0):
    """A photo of a digit: light paper, uneven light, sensor noise, dark ink. RGB (h, w)."""
    rng = np.random.default_rng(seed)
    light = (np.linspace(215, 185, w, dtype=np.float32)[None, :]
             + np.linspace(-10, 10, h, dtype=np.float32)[:, None])
    img = Image.fromarray(light.astype(np.uint8)).convert("RGB")
    ImageDraw.Draw(img).line([(x * w, y * h) for x, y in stroke], fill=(30, 30, 40),
                             width=max(3, min(w, h) // 25), joint="curve")
    noisy = np.asarray(img, np.int16) + rng.normal(0, 4, (h, w, 1)).astype(np.int16)
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def progressive_bomb(repeats=34_000):
    """A valid progressive JPEG (2000x2000, 16 KB) whose last scan is repeated ``repeats`` times."""
    data = encode(Image.new("L", (2000, 2000), 200), "JPEG", progressive=True)
    last = data.rfind(b"\xff\xda")
    assert data.endswith(b"\xff\xd9") and last > 0
    return data[:-2] + data[last:-2] * repeats + b"\xff\xd9"


def rle8_bmp(w=8000, h=5000):
    """A 21 KB run-length-encoded (BI_RLE8) BMP, 40 MP: each row is one pixel, then end-of-line.

    Pillow pads every row to its end one byte at a time in Python (1.3 s of CPU
    for 3200x5000 here); it is refused by its magic number before that.
    """
    pixels = b"\x01\x00\x00\x00" * h + b"\x00\x01"  # (1 pixel, colour 0), end of line; ... end
    palette = b"".join(bytes([i, i, i, 0]) for i in range(256))
    offset = 14 + 40 + len(palette)
    return (b"BM" + struct.pack("<IHHI", offset + len(pixels), 0, 0, offset)
            + struct.pack("<IiiHHIIiiII", 40, w, h, 1, 8, 1, len(pixels), 2835, 2835, 256, 0)
            + palette + pixels)


def png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(side=100_000):
    """A 5 KB PNG declaring side x side grey pixels."""
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)  # 8-bit grey
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header)
            + png_chunk(b"IDAT", zlib.compress(b"\x00" * (side + 1) * 50, 9))
            + png_chunk(b"IEND", b""))


def jpeg_bomb():
    """A small baseline JPEG whose frame header claims 60000 x 60000 pixels."""
    data = bytearray(encode(Image.new("L", (40, 30), 128), "JPEG"))
    sof = data.find(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", 60000, 60000)
    return bytes(data)


def webp_bomb():
    """A small lossy WebP whose frame header claims 16383 x 16383 pixels."""
    data = bytearray(encode(Image.new("RGB", (40, 30), (200, 0, 0)), "WEBP", quality=80))
    assert data[12:16] == b"VP8 " and data[23:26] == b"\x9d\x01\x2a"
    data[26:30] = struct.pack("<HH", 16383, 16383)
    return bytes(data)


def png40():
    """A 40-megapixel (8000 x 5000) one-bit PNG of a digit stroke, about 30 KB."""
    img = Image.new("1", (8000, 5000), 1)
    ImageDraw.Draw(img).line((3000, 1000, 5000, 4000), fill=0, width=300)
    return encode(img, "PNG")


def zip_file():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("digit.png", encode(Image.new("L", (28, 28)), "PNG"))
    return buf.getvalue()


@pytest.fixture(scope="module")
def small_jpeg():
    return encode(photo(800, 600), "JPEG", quality=90)


@pytest.fixture(scope="module")
def rgba16_png():
    """The heaviest legal PNG for memory: 16 MP RGBA (64 MB decoded)."""
    img = Image.new("RGBA", (4000, 4000), (255, 255, 255, 255))
    ImageDraw.Draw(img).line((1500, 800, 2500, 3200), fill=(0, 0, 0, 255), width=200)
    return encode(img, "PNG")


# ---------------------------------------------------------------- a clean process to measure in

MEASURE = r"""
import json, resource, subprocess, sys, time
from app_logic import uploads
path, name, overrides = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
for key, value in overrides.items():
    setattr(uploads, key, value)
runs, run_worker = [], uploads._run_worker  # each worker's exit status, or "timeout"
def counted(data):
    try:
        done = run_worker(data)
    except subprocess.TimeoutExpired:
        runs.append("timeout")
        raise
    runs.append(done.returncode)
    return done
uploads._run_worker = counted
data = open(path, "rb").read()
start = time.perf_counter()
try:
    got = uploads.decode_upload(data, name)
    out = {"ok": True, "width": got.width, "height": got.height, "format": got.format,
           "img28": None if got.img28 is None else got.img28.tolist()}
except uploads.UploadError as exc:
    out = {"ok": False, "message": str(exc)}
out["seconds"] = time.perf_counter() - start
out["workers"] = runs
out["peak_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print(json.dumps(out))
"""


def measure(tmp_path, data, name="upload.png", **overrides):
    """decode_upload(data, name) in a fresh process: its outcome, wall time, the workers' exit
    statuses and their peak RSS, with ``overrides`` of the uploads module's constants there."""
    path = tmp_path / "upload.bin"
    path.write_bytes(data)
    env = dict(os.environ, PYTHONPATH=str(ROOT), OPENBLAS_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", MEASURE, str(path), name, json.dumps(overrides)],
                          capture_output=True, text=True, env=env, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def assert_within_limits(result):
    assert result["seconds"] < LIMIT_S, result
    assert result["peak_mb"] < LIMIT_MB, result


@pytest.fixture
def no_worker(monkeypatch):
    def forbidden(data):
        raise AssertionError("a worker was started for a file that should be refused before")
    monkeypatch.setattr(uploads, "_run_worker", forbidden)


@pytest.fixture
def worker_runs(monkeypatch):
    """A list that gets one entry per worker started."""
    runs, real = [], uploads._run_worker
    monkeypatch.setattr(uploads, "_run_worker", lambda data: runs.append(1) or real(data))
    return runs


def children():
    """Process ids whose parent is this one (left running, or not yet reaped)."""
    found = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            lines = status.read_text().splitlines()
            fields = dict(line.split(":\t", 1) for line in lines if ":\t" in line)
        except OSError:
            continue
        if fields.get("PPid", "").strip() == str(os.getpid()):
            found.append(status.parent.name)
    return found


# ---------------------------------------------------------------- refused before any decoder runs

REFUSED_HERE = {
    "rle8 bmp named digit.png": (rle8_bmp, "digit.png", ["BMP", "whatever its name says"]),
    "gif": (lambda: encode(Image.new("L", (28, 28)), "GIF"), "seven.gif", ["GIF"]),
    "tiff": (lambda: encode(Image.new("L", (28, 28)), "TIFF"), "seven.tif", ["TIFF"]),
    "svg": (lambda: b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="28" '
            b'height="28"><text y="20">7</text></svg>', "seven.svg", ["SVG"]),
    "heic": (lambda: b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(200),
             "IMG_0001.HEIC", ["HEIC", "Most Compatible"]),
    "zip": (zip_file, "digits.zip", ["zip"]),
    "over 5 MiB": (lambda: b"\x89PNG\r\n\x1a\n" + bytes(uploads.MAX_BYTES), "big.png",
                   ["5.0 MB", "limited to 5 MB"]),
    "bmp over 5 MiB: size first": (lambda: b"BM" + bytes(uploads.MAX_BYTES), "big.bmp",
                                   ["limited to 5 MB"]),
    "40 MP png": (png40, "digit.png", ["8,000 x 5,000", "40.0 megapixels"]),
    "png bomb": (png_bomb, "bomb.png", ["100,000 x 100,000"]),
    "jpeg bomb": (jpeg_bomb, "bomb.jpg", ["60,000 x 60,000"]),
    "webp bomb": (webp_bomb, "bomb.webp", ["16,383 x 16,383"]),
    "progressive jpeg, 34000 scans": (progressive_bomb, "digit.jpg", ["34,0", "scans"]),
    "empty": (lambda: b"", "digit.png", ["empty"]),
}


@pytest.mark.parametrize("case", REFUSED_HERE)
def test_refused_before_any_decoder_runs(case, no_worker):
    make, name, words = REFUSED_HERE[case]
    data = make()
    start = time.perf_counter()
    with pytest.raises(UploadError) as caught:
        decode_upload(data, name)
    assert time.perf_counter() - start < LIMIT_S
    message = str(caught.value)
    assert name in message or "The file" in message
    for word in words:
        assert word in message, message
    if "PNG, JPEG and WebP" not in message:  # the size messages say what to do instead
        assert any(w in message for w in ("Upload", "upload", "Resize", "Save")), message


def test_hostile_files_are_what_they_claim():
    """The fixtures above are the real attacks, read from their headers only (nothing decoded)."""
    bmp = Image.open(io.BytesIO(rle8_bmp()))
    assert bmp.format == "BMP" and bmp.info["compression"] == 1 and bmp.size == (8000, 5000)
    assert len(rle8_bmp()) < 22_000
    prog = Image.open(io.BytesIO(progressive_bomb()))
    assert prog.format == "JPEG" and prog.info.get("progressive")
    assert progressive_bomb().count(b"\xff\xda") > 34_000 and len(progressive_bomb()) < 5 * 2**20
    assert Image.open(io.BytesIO(png40())).size == (8000, 5000)
    assert uploads._header_size(jpeg_bomb(), "JPEG") == (60000, 60000)


# ---------------------------------------------------------------- refused by the worker

def test_progressive_bomb_is_stopped_by_the_cpu_limit(tmp_path):
    """With the scan count check off, the worker is killed by RLIMIT_CPU (in-process: ~45 s)."""
    got = measure(tmp_path, progressive_bomb(), "digit.jpg", MAX_JPEG_SCANS=10**9)
    assert not got["ok"] and "takes too long or too much memory" in got["message"], got
    assert got["workers"] in ([-signal.SIGXCPU], [-signal.SIGKILL])  # not the wall-clock timeout
    assert_within_limits(got)


def test_40mp_png_is_refused_by_the_worker_too(tmp_path):
    got = measure(tmp_path, png40(), "digit.png", MAX_PIXELS=10**9)
    assert not got["ok"] and got["workers"] == [0], got
    assert_within_limits(got)


@pytest.mark.parametrize("cut", ["png", "jpeg", "png header"])
def test_truncated_files_are_refused(tmp_path, cut):
    img = photo(200, 150)
    data = encode(img, "JPEG" if cut == "jpeg" else "PNG")
    data = data[:30] if cut == "png header" else data[:len(data) * 6 // 10]
    got = measure(tmp_path, data, f"digit.{cut[:4]}")
    assert not got["ok"] and "damaged or incomplete" in got["message"], got
    assert got["workers"] == [0]
    assert_within_limits(got)


# ---------------------------------------------------------------- photos are read

def test_photo_jpeg_reads_as_in_process(small_jpeg):
    got = decode_upload(small_jpeg, "digit.jpg")
    assert isinstance(got, DecodedUpload)
    assert (got.width, got.height, got.format) == (800, 600, "JPEG")
    expected = to_mnist(Image.open(io.BytesIO(small_jpeg)))
    assert expected is not None and got.img28.dtype == np.float32
    np.testing.assert_array_equal(got.img28, expected)
    assert not got.img28.flags.writeable
    thumb = Image.open(io.BytesIO(got.photo_png))
    assert thumb.format == "PNG" and thumb.size == (320, 240) and thumb.mode == "RGB"
    assert not thumb.info.get("exif") and not thumb.info.get("icc_profile")


def test_exif_orientation_is_applied():
    img = photo(800, 600)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored on its side: turn 90 degrees clockwise to view
    data = encode(img, "JPEG", quality=90, exif=exif)
    got = decode_upload(data, "phone.jpg")
    assert (got.width, got.height) == (600, 800)
    assert Image.open(io.BytesIO(got.photo_png)).size == (240, 320)
    np.testing.assert_array_equal(got.img28, to_mnist(Image.open(io.BytesIO(data))))
    assert not np.array_equal(got.img28, to_mnist(img))  # the orientation did matter


def test_blank_paper_is_no_digit():
    got = decode_upload(encode(Image.new("RGB", (300, 200), (235, 235, 230)), "PNG"), "blank.png")
    assert got.img28 is None and (got.width, got.height, got.format) == (300, 200, "PNG")


def test_phone_photo_12mp_within_limits(tmp_path, record_property):
    data = encode(photo(4032, 3024), "JPEG", quality=90)
    assert 1e6 < len(data) < uploads.MAX_BYTES
    got = measure(tmp_path, data, "IMG_0001.jpg")
    assert got["ok"] and (got["width"], got["height"], got["format"]) == (4032, 3024, "JPEG"), got
    assert_within_limits(got)
    record_property("decode_s", round(got["seconds"], 3))
    record_property("worker_peak_mb", round(got["peak_mb"], 1))
    reference = to_mnist(load_image(data))  # in-process: libjpeg draft, to_mnist's own averaging
    assert np.abs(np.asarray(got["img28"], np.float32) - reference).mean() < 0.01


@pytest.mark.parametrize("kind", ["16 MP RGBA png", "8 MP webp"])
def test_heaviest_legal_inputs_fit_the_limits(tmp_path, kind, rgba16_png):
    if kind.endswith("png"):
        data = rgba16_png
    else:
        img = Image.new("RGB", (2828, 2828), (255, 255, 255))
        ImageDraw.Draw(img).line((1000, 500, 1800, 2300), fill=(0, 0, 0), width=150)
        data = encode(img, "WEBP", quality=80)
    got = measure(tmp_path, data, "big")
    assert got["ok"] and got["img28"] is not None, got
    assert_within_limits(got)


# ---------------------------------------------------------------- the worker misbehaves

def test_memory_limit_stops_the_worker(monkeypatch, rgba16_png):
    monkeypatch.setattr(uploads, "MEMORY_BYTES", 160 * 2**20)  # the baseline is ~120 MiB of it
    with pytest.raises(UploadError, match="takes too long or too much memory"):
        decode_upload(rgba16_png, "big.png")


def test_hung_worker_is_killed(monkeypatch, small_jpeg):
    monkeypatch.setattr(uploads, "WALL_SECONDS", 0.5)
    monkeypatch.setattr(uploads, "_worker_argv",
                        lambda: [sys.executable, "-c", "import time; time.sleep(60)"])
    before = set(children())  # e.g. a session-wide app server started by the browser tests
    start = time.perf_counter()
    with pytest.raises(UploadError, match="takes too long or too much memory"):
        decode_upload(small_jpeg, "digit.jpg")
    assert time.perf_counter() - start < LIMIT_S
    assert set(children()) - before == set()


def test_crashed_worker(monkeypatch, small_jpeg):
    monkeypatch.setattr(uploads, "_worker_argv",
                        lambda: [sys.executable, "-c", "import os; os.abort()"])
    with pytest.raises(UploadError, match="takes too long or too much memory"):
        decode_upload(small_jpeg, "digit.jpg")


def valid_reply():
    png = encode(Image.new("L", (32, 24), 255), "PNG")
    img28 = np.zeros((28, 28), "<f4")
    img28[10:18, 12:16] = 1.0
    head = {"ok": True, "format": "PNG", "width": 40, "height": 30, "digit": True,
            "png_bytes": len(png)}
    return head, img28, png


def mutate(change):
    head, img28, png = valid_reply()
    if change == "garbage":
        return b"Segmentation fault"
    if change == "nan pixel":
        img28[0, 0] = np.nan
    elif change == "pixel above 1":
        img28[0, 0] = 2.0
    elif change == "thumbnail too big":
        png = encode(Image.new("L", (4000, 30)), "PNG")
        head["png_bytes"] = len(png)
    elif change == "thumbnail not png":
        png = b"<svg onload=alert(1)>" + png[21:]
    elif change == "other format":
        head["format"] = "GIF"
    elif change == "too many pixels":
        head["width"] = head["height"] = 10**6
    elif change == "width is bool":
        head["width"] = True
    elif change == "extra bytes":
        png += b"\x00" * 10
    elif change == "unknown error":
        head = {"ok": False, "error": "<b>pwned</b>"}
        return _decode_worker.reply(head)
    elif change == "huge header length":
        out = _decode_worker.reply(head, img28.tobytes() + png)
        n = len(uploads.REPLY_MAGIC)
        return out[:n] + b"\xff\xff\xff\xff" + out[n + 4:]
    return _decode_worker.reply(head, img28.tobytes() + png)


@pytest.mark.parametrize("change", ["none", "garbage", "nan pixel", "pixel above 1",
                                    "thumbnail too big", "thumbnail not png", "other format",
                                    "too many pixels", "width is bool", "extra bytes",
                                    "unknown error", "huge header length"])
def test_worker_reply_is_checked_as_hostile(monkeypatch, tmp_path, change):
    path = tmp_path / "reply.bin"
    path.write_bytes(mutate(change))
    script = "import sys; sys.stdout.buffer.write(open(sys.argv[1], 'rb').read())"
    monkeypatch.setattr(uploads, "_worker_argv", lambda: [sys.executable, "-c", script, str(path)])
    upload = encode(Image.new("L", (40, 30), 255), "PNG")
    if change == "none":
        got = decode_upload(upload, "x.png")
        assert got.img28.sum() == 32 and (got.width, got.height) == (40, 30)
        return
    with pytest.raises(UploadError, match="could not be decoded"):
        decode_upload(upload, "x.png")


# ---------------------------------------------------------------- UploadCache

def test_cache_decodes_each_upload_once(worker_runs, small_jpeg):
    cache = UploadCache()
    first = cache.get_or_decode(small_jpeg, "digit.jpg")
    again = cache.get_or_decode(small_jpeg, "digit.jpg")
    assert again is first and len(worker_runs) == 1


def test_cache_remembers_errors(worker_runs, monkeypatch):
    cache = UploadCache()
    truncated = encode(photo(200, 150), "PNG")[:3000]
    messages = []
    for _ in range(3):
        with pytest.raises(UploadError) as caught:
            cache.get_or_decode(truncated, "digit.png")
        messages.append(str(caught.value))
    assert len(worker_runs) == 1 and len(set(messages)) == 1 and "damaged" in messages[0]

    calls, real = [], uploads.decode_upload
    monkeypatch.setattr(uploads, "decode_upload", lambda *a: calls.append(1) or real(*a))
    for _ in range(3):
        with pytest.raises(UploadError, match="BMP"):
            cache.get_or_decode(rle8_bmp(), "digit.png")
    assert len(calls) == 1 and len(worker_runs) == 1


def test_cache_is_bounded_and_forgets_transient_errors(worker_runs, monkeypatch):
    files = [encode(photo(120, 90, seed=i), "PNG") for i in range(3)]
    cache = UploadCache(size=2)
    for data in files:
        cache.get_or_decode(data)
    assert len(cache) == 2 and len(worker_runs) == 3
    cache.get_or_decode(files[2])
    assert len(worker_runs) == 3
    cache.get_or_decode(files[0])  # was evicted
    assert len(worker_runs) == 4

    real = uploads._run_worker

    def busy_once(data):
        monkeypatch.setattr(uploads, "_run_worker", real)
        raise OSError(11, "Resource temporarily unavailable")
    monkeypatch.setattr(uploads, "_run_worker", busy_once)
    with pytest.raises(UploadError, match="busy") as caught:
        cache.get_or_decode(files[1])
    assert caught.value.transient
    assert cache.get_or_decode(files[1]).width == 120  # tried again, not remembered


def test_threads_share_one_cache(worker_runs):
    """Six threads at once, three distinct uploads: three worker runs, every answer right."""
    strokes = [SEVEN, ONE, FOUR]
    files = [encode(photo(400, 300, stroke, seed=i), "JPEG", quality=90)
             for i, stroke in enumerate(strokes)]
    expected = [to_mnist(Image.open(io.BytesIO(data))) for data in files]
    assert not np.array_equal(expected[0], expected[1])
    cache, barrier = UploadCache(), threading.Barrier(6)
    results, errors = [None] * 6, []

    def visitor(i):
        try:
            barrier.wait()
            results[i] = cache.get_or_decode(files[i % 3], f"digit{i}.jpg")
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=visitor, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors and len(worker_runs) == 3
    for i, got in enumerate(results):
        np.testing.assert_array_equal(got.img28, expected[i % 3])
