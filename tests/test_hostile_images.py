"""Hostile images: whatever a visitor uploads or a caller passes, the upload path
(``nn.preprocess.load_image`` on the file's bytes, then ``to_mnist``) either
returns a result or raises ``ValueError`` with a message that says what was
wrong; it never crashes with another exception, never hangs and never
decodes a decompression bomb.

Exact outcomes, one test per case:

* not an image / text / empty / truncated header -> ValueError "not a readable image" / "empty";
* truncated pixel data -> ValueError "damaged or incomplete";
* a header declaring too many pixels (bomb) -> ValueError "too large", before anything
  is decoded and before any pixel memory is allocated (also when Pillow's own guard
  is switched off);
* 1x1, all-white, all-black -> None (no ink); 20000x1 with a line -> a valid image;
* 16-bit, palette, CMYK, animated (first frame), EXIF-rotated -> the same digit as a plain PNG;
* pure uniform noise: **None** for grey or RGB noise (it is indistinguishable
  from its own background: the noise threshold, 6 robust sigmas, is above
  full scale), but a **valid image** for RGBA noise, because a partly
  transparent image is read with the canvas convention "alpha is ink";
  never an exception;
* NaN / inf floats, wrong rank -> ValueError naming the problem.

No test reads a clock: a bomb is refused "quickly" because nothing is decoded
and no pixel memory is allocated, and that is what is checked
(``helpers.Usage``: Pillow's decodes and image allocations, tracemalloc).
"""
import io
import struct

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from canvas_sim import draw_digit, render_on_canvas
from helpers import Usage, encode, png_bomb
from nn.preprocess import MAX_PIXELS, WORK_SIDE, load_image, to_mnist


# ---------------------------------------------------------------- helpers

def digit_gray(kind="7"):
    """White ink on black, uint8 (280, 280)."""
    return render_on_canvas(draw_digit(kind), stroke=4, mode="opaque")[:, :, 0]


def digit_paper(kind="7"):
    """Dark ink on light paper, RGB uint8 (280, 280, 3), like a photo."""
    return render_on_canvas(draw_digit(kind), stroke=4, mode="dark_on_light")


def reference(kind="7"):
    return to_mnist(digit_gray(kind))


def upload(data):
    """What the app does with an uploaded file: bytes -> image -> 28x28 (or None)."""
    return to_mnist(load_image(data))


def assert_valid(out):
    assert out is not None
    assert out.shape == (28, 28) and out.dtype == np.float32
    assert np.isfinite(out).all() and out.min() >= 0.0 and out.max() == 1.0


def assert_same_digit(out, ref, mad=0.05, corr=0.9):
    assert_valid(out)
    diff = float(np.abs(out - ref).mean())
    r = float(np.corrcoef(out.ravel(), ref.ravel())[0, 1])
    assert diff < mad and r > corr, f"mean abs diff {diff:.3f}, correlation {r:.3f}"


def refused_quickly(fn, match):
    """fn() raises ValueError matching `match` without decoding anything and without
    allocating pixel memory: Pillow's image allocations are counted (a decode of
    100M+ pixels would first allocate them), NumPy's and Python's are traced."""
    with Usage() as usage:
        with pytest.raises(ValueError, match=match):
            fn()
    assert usage.decoded == 0, "it decoded the image"
    assert usage.pixels == 0, f"Pillow allocated {usage.pixels:,} pixels"
    assert usage.peak < 5 * 2**20, f"allocated {usage.peak / 2**20:.1f} MiB"


# ---------------------------------------------------------------- not an image

def test_random_bytes():
    data = np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    with pytest.raises(ValueError, match="not a readable image.*unknown file format"):
        load_image(data)


def test_text_file():
    with pytest.raises(ValueError, match="not a readable image.*unknown file format"):
        load_image(b"this is not a photo of a digit\n" * 20)


def test_empty_bytes():
    with pytest.raises(ValueError, match=r"empty \(0 bytes\)"):
        load_image(b"")


@pytest.mark.parametrize("bad", [None, "digit.png", 7, np.zeros(10, np.uint8)],
                         ids=["None", "str", "int", "array"])
def test_not_bytes(bad):
    with pytest.raises(ValueError, match="expected the file's bytes"):
        load_image(bad)


def test_bytearray_and_memoryview_accepted():
    data = encode(Image.fromarray(digit_gray()), "PNG")
    assert_same_digit(upload(bytearray(data)), reference())
    assert_same_digit(upload(memoryview(data)), reference())


def test_file_too_large_refused_before_opening():
    data = encode(Image.fromarray(digit_gray()), "PNG")
    with pytest.raises(ValueError, match=r"too large: 0\.0 MB \(limit 0\.001 MB\)"):
        load_image(data, max_bytes=1000)
    big = b"\x89PNG\r\n\x1a\n" + b"\0" * 5_000_001  # over the default 5 MB
    with pytest.raises(ValueError, match=r"too large: 5\.0 MB \(limit 5 MB\)"):
        load_image(big)


def test_eps_is_not_opened():
    """EPS would be rendered by Ghostscript (an interpreter): never opened from an upload."""
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n"
    with pytest.raises(ValueError, match="not a readable image.*unknown file format"):
        load_image(eps)


def test_other_formats_refused():
    tiff = encode(Image.fromarray(digit_gray()), "TIFF")
    assert Image.open(io.BytesIO(tiff)).format == "TIFF"  # Pillow itself would open it
    with pytest.raises(ValueError, match="not a readable image"):
        load_image(tiff)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "BMP", "WEBP"])
def test_accepted_formats(fmt):
    img = Image.fromarray(digit_gray())
    assert_same_digit(upload(encode(img, fmt)), reference())


# ---------------------------------------------------------------- truncated / damaged

def test_truncated_png_header():
    data = encode(Image.fromarray(digit_gray()), "PNG")
    with pytest.raises(ValueError, match="not a readable image"):
        load_image(data[:20])  # signature + part of IHDR


def test_truncated_png_data():
    data = encode(Image.fromarray(digit_gray()), "PNG")
    with pytest.raises(ValueError, match="damaged or incomplete.*truncated"):
        load_image(data[: len(data) // 2])


def test_png_bad_checksum():
    data = bytearray(encode(Image.fromarray(digit_gray()), "PNG"))
    at = data.index(b"IDAT") + 20
    data[at] ^= 0xFF  # inside the compressed pixels: CRC (and zlib) no longer match
    with pytest.raises(ValueError, match="damaged or incomplete"):
        load_image(bytes(data))


def test_truncated_jpeg_header():
    data = encode(Image.fromarray(digit_paper()), "JPEG", quality=90)
    with pytest.raises(ValueError, match="not a readable image"):
        load_image(data[:300])  # cut inside the quantisation/huffman tables


def test_truncated_jpeg_data():
    noisy = np.random.default_rng(0).integers(0, 256, (280, 280, 3), dtype=np.uint8)
    data = encode(Image.fromarray(noisy), "JPEG", quality=95)
    with pytest.raises(ValueError, match="damaged or incomplete.*truncated"):
        load_image(data[: len(data) // 2])


def test_png_text_chunk_bomb():
    """A zTXt chunk that inflates to 50 MB (Pillow caps text chunks)."""
    info = PngImagePlugin.PngInfo()
    info.add_text("comment", "A" * 50_000_000, zip=True)
    data = encode(Image.new("L", (10, 10)), "PNG", pnginfo=info)
    assert len(data) < 100_000
    refused_quickly(lambda: load_image(data), "not a readable image.*too large")


# ---------------------------------------------------------------- decompression bombs

def test_bomb_over_pillow_limit():
    """30000x30000 = 900M pixels: Pillow's own guard fires inside Image.open;
    load_image turns it into a ValueError that gives the size."""
    data = png_bomb(30000, 30000)
    assert len(data) < 200
    with pytest.raises(Image.DecompressionBombError):
        Image.open(io.BytesIO(data))
    refused_quickly(lambda: load_image(data), r"too large.*900000000 pixels")


def test_bomb_between_limits():
    """10000x10000 = 100M: Pillow only warns; load_image refuses by pixel count."""
    data = png_bomb(10000, 10000, bit_depth=16, colour_type=6)  # would be 800 MB decoded
    with pytest.warns(Image.DecompressionBombWarning):
        refused_quickly(lambda: load_image(data), r"too large: 10000x10000 = 100,000,000 pixels")


def test_bomb_under_pillow_limit():
    """8000x6000 = 48M: Pillow is silent; our 40M limit applies before decoding."""
    data = png_bomb(8000, 6000, colour_type=2)
    refused_quickly(lambda: load_image(data),
                    r"too large: 8000x6000 = 48,000,000 pixels \(limit 40,000,000\)")
    assert 8000 * 6000 > MAX_PIXELS


def test_pixel_limit_is_a_parameter():
    data = encode(Image.fromarray(digit_gray()), "PNG")
    with pytest.raises(ValueError, match=r"too large: 280x280 = 78,400 pixels \(limit 10,000\)"):
        load_image(data, max_pixels=10_000)


def test_to_mnist_refuses_bomb_image_without_decoding():
    """A lazily opened PIL image: to_mnist checks the declared size before .load()."""
    img = Image.open(io.BytesIO(png_bomb(8000, 6000)))
    refused_quickly(lambda: to_mnist(img), r"too large: 6000x8000 = 48,000,000 pixels")


def test_to_mnist_refuses_bomb_with_pillow_guard_off(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # someone switched Pillow's guard off
    img = Image.open(io.BytesIO(png_bomb(30000, 30000)))
    assert img.size == (30000, 30000)
    refused_quickly(lambda: to_mnist(img), r"too large: 30000x30000 = 900,000,000 pixels")
    refused_quickly(lambda: load_image(png_bomb(30000, 30000)), r"too large: 30000x30000")


def test_bmp_bomb():
    header = bytearray(encode(Image.new("L", (4, 4)), "BMP"))
    struct.pack_into("<ii", header, 18, 20000, 20000)  # BITMAPINFOHEADER width, height
    refused_quickly(lambda: load_image(bytes(header)), r"too large")


def test_gif_bomb():
    gif = bytearray(encode(Image.new("L", (4, 4)), "GIF"))
    struct.pack_into("<HH", gif, 6, 65535, 65535)  # logical screen size
    refused_quickly(lambda: load_image(bytes(gif)), r"too large")


# ---------------------------------------------------------------- odd sizes

def test_one_by_one():
    img = load_image(encode(Image.new("L", (1, 1), 255), "PNG"))
    assert img.size == (1, 1)
    assert to_mnist(img) is None  # one pixel is not a digit


def test_twenty_thousand_by_one():
    line = np.zeros((1, 20000), np.uint8)
    line[0, 8000:12000] = 255
    img = load_image(encode(Image.fromarray(line), "PNG"))
    assert img.size == (20000, 1)
    out = to_mnist(img)
    assert_valid(out)
    rows = np.flatnonzero(out.max(axis=1) > 0.25)
    cols = np.flatnonzero(out.max(axis=0) > 0.25)
    assert len(rows) <= 2 and 19 <= len(cols) <= 21  # a horizontal bar fitted to 20 px


def test_one_by_twenty_thousand_blank():
    assert upload(encode(Image.new("L", (1, 20000), 0), "PNG")) is None


# ---------------------------------------------------------------- modes and formats

def test_16_bit_png():
    gray16 = digit_gray().astype(np.uint16) * 257
    data = encode(Image.fromarray(gray16), "PNG")
    img = load_image(data)
    assert img.mode in ("I;16", "I")
    assert_same_digit(to_mnist(img), reference(), mad=0.01, corr=0.99)


def test_palette_png():
    img = Image.fromarray(digit_paper()).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    loaded = load_image(encode(img, "PNG"))
    assert loaded.mode == "P"
    assert_same_digit(to_mnist(loaded), reference())


def test_cmyk_jpeg():
    img = Image.fromarray(digit_paper()).convert("CMYK")
    loaded = load_image(encode(img, "JPEG", quality=95))
    assert loaded.mode == "CMYK"
    assert_same_digit(to_mnist(loaded), reference())


def test_animated_gif_first_frame():
    frames = [Image.fromarray(digit_gray(k)) for k in ("7", "0")]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)
    img = load_image(data)
    assert img.n_frames == 2
    out = to_mnist(img)
    assert_same_digit(out, reference("7"))
    assert np.abs(out - reference("0")).mean() > 0.1


def test_exif_rotated_jpeg():
    upright = digit_paper("7")
    stored = Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display"
    out = upload(encode(stored, "JPEG", quality=95, exif=exif.tobytes()))
    assert_same_digit(out, reference("7"))
    assert np.abs(out - to_mnist(np.asarray(stored))).mean() > 0.1  # the rotation mattered


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
def test_corrupt_exif_is_ignored():
    exif = b"Exif\x00\x00" + b"MM\x00\x2a\x00\x00\x00\x08" + b"\xff" * 40  # IFD entry count 65535
    data = encode(Image.fromarray(digit_paper("7")), "JPEG", quality=95, exif=exif)
    assert_same_digit(upload(data), reference("7"))


def test_large_jpeg_decoded_at_reduced_scale():
    """A 6000x6000 phone-size JPEG is decoded by libjpeg at 1/4 scale (draft mode):
    once, into no more than 1500x1500 pixels, and to_mnist decodes nothing again."""
    big = Image.fromarray(digit_paper("4")).resize((6000, 6000), Image.Resampling.BILINEAR)
    data = encode(big, "JPEG", quality=80)
    with Usage() as usage:
        img = load_image(data)
    assert max(img.size) <= 3000
    assert usage.decoded == 1 and usage.pixels <= (6000 // 4) ** 2 < 6000 ** 2 // 10
    assert max(img.size) >= WORK_SIDE  # reduced, but still fine enough to read
    with Usage() as usage:
        out = to_mnist(img)
    assert usage.decoded == 0 and usage.pixels < 6000 ** 2 // 10
    assert_same_digit(out, reference("4"))


# ---------------------------------------------------------------- content

@pytest.mark.parametrize("value", [0, 255], ids=["all-black", "all-white"])
@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA"])
def test_uniform_images_are_blank(value, mode):
    fill = value if mode == "L" else (value,) * len(mode)
    assert upload(encode(Image.new(mode, (280, 280), fill), "PNG")) is None
    assert to_mnist(np.full((280, 280), value, np.uint8)) is None


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("shape", [(280, 280), (3, 3), (5, 2000), (1000, 1000)])
def test_gray_and_rgb_noise_is_blank(shape, seed):
    rng = np.random.default_rng(seed)
    assert to_mnist(rng.integers(0, 256, shape, dtype=np.uint8)) is None
    assert to_mnist(rng.random(shape)) is None
    assert to_mnist(rng.integers(0, 256, (*shape, 3), dtype=np.uint8)) is None


def test_noise_upload_is_blank():
    noise = np.random.default_rng(0).integers(0, 256, (280, 280, 3), dtype=np.uint8)
    assert upload(encode(Image.fromarray(noise), "PNG")) is None
    assert upload(encode(Image.fromarray(noise), "JPEG")) is None


@pytest.mark.parametrize("seed", range(3))
def test_rgba_noise_reads_alpha_as_ink(seed):
    noise = np.random.default_rng(seed).integers(0, 256, (280, 280, 4), dtype=np.uint8)
    assert_valid(to_mnist(noise))


# ---------------------------------------------------------------- bad arrays

@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_non_finite_floats(value, dtype):
    arr = np.zeros((28, 28), dtype)
    arr[10:20, 14] = 1.0
    arr[3, 3] = value
    with pytest.raises(ValueError, match="NaN or infinite"):
        to_mnist(arr)


@pytest.mark.parametrize("shape", [(), (784,), (1, 28, 28, 1), (2, 2, 2, 2, 2)])
def test_wrong_rank(shape):
    with pytest.raises(ValueError, match="expected a 2-D"):
        to_mnist(np.zeros(shape, np.uint8))


def test_wrong_channel_count():
    with pytest.raises(ValueError, match="expected 1, 2, 3 or 4 channels"):
        to_mnist(np.zeros((28, 28, 7), np.uint8))


def test_huge_array_refused_without_allocating():
    huge = np.broadcast_to(np.uint8(255), (20000, 20000))  # zero-stride: 400M pixels, no memory
    refused_quickly(lambda: to_mnist(huge), r"too large: 20000x20000")
