"""Tests for nn.preprocess.to_mnist: drawings/photos -> MNIST-style 28x28."""
import io
import subprocess
import sys
import time
import zlib

import numpy as np
import pytest
from PIL import Image

from canvas_sim import MODES, draw_digit, random_render, render_on_canvas
from nn.preprocess import to_mnist

ROWS, COLS = np.mgrid[:28, :28]


def centre_of_mass(img):
    """(row, col) centre of mass in pixel-index coordinates (MNIST mean: 14, 14)."""
    m = img.sum()
    return (img * ROWS).sum() / m, (img * COLS).sum() / m


def ink_span(img, level):
    rows = np.flatnonzero((img > level).any(axis=1))
    cols = np.flatnonzero((img > level).any(axis=0))
    return rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1


def similar(a, b, mad=0.05, corr=0.9):
    assert a is not None and b is not None
    diff = float(np.abs(a - b).mean())
    r = float(np.corrcoef(a.ravel(), b.ravel())[0, 1])
    assert diff < mad and r > corr, f"mean abs diff {diff:.3f}, correlation {r:.3f}"


def reference(kind="7"):
    return to_mnist(render_on_canvas(draw_digit(kind), stroke=4, mode="opaque"))


# ---------------------------------------------------------------- output contract

@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", ["0", "1", "4", "7", "L"])
def test_output_contract(kind, mode):
    rng = np.random.default_rng(zlib.crc32(f"{kind}/{mode}".encode()))
    for _ in range(4):
        out = to_mnist(random_render(draw_digit(kind), rng, mode=mode))
        assert out.shape == (28, 28) and out.dtype == np.float32
        assert out.min() >= 0.0 and out.max() == 1.0
        cy, cx = centre_of_mass(out)
        assert abs(cy - 14) < 0.5 and abs(cx - 14) < 0.5, (cy, cx)
        h, w = ink_span(out, 0.25)          # digit fitted into 20x20 (+1 px anti-aliasing)
        assert max(h, w) <= 21 and max(h, w) >= 19, (h, w)
        h, w = ink_span(out, 0.0)
        assert max(h, w) <= 22, (h, w)


def test_input_not_modified():
    canvas = render_on_canvas(draw_digit("4"), mode="dark_on_light")
    before = canvas.copy()
    to_mnist(canvas)
    assert np.array_equal(canvas, before)


def test_mnist_digit_roundtrip():
    """A digit already in MNIST form comes back (almost) unchanged."""
    digit = draw_digit("4")
    similar(to_mnist(digit), digit / digit.max(), mad=0.05, corr=0.93)


# ---------------------------------------------------------------- invariances

@pytest.mark.parametrize("kind", ["0", "4", "7"])
def test_size_and_position_invariance(kind):
    digit = draw_digit(kind)
    small = render_on_canvas(digit, scale=3, offset=(8, 200), stroke=1)     # ~60 px, bottom-left
    large = render_on_canvas(digit, scale=12, offset=(20, 20), stroke=6)    # ~240 px, centred
    similar(to_mnist(small), to_mnist(large))


@pytest.mark.parametrize("kind", ["1", "4", "7"])
def test_representations_agree(kind):
    outs = [to_mnist(render_on_canvas(draw_digit(kind), scale=7, offset=(90, 50), stroke=5, mode=m))
            for m in MODES]
    similar(outs[0], outs[1], mad=0.01, corr=0.99)
    similar(outs[0], outs[2], mad=0.03, corr=0.97)


def test_black_strokes_on_transparent_canvas():
    canvas = render_on_canvas(draw_digit("7"), stroke=4, mode="transparent")
    canvas[:, :, :3] = 0  # black ink, only alpha tells it from the background
    similar(to_mnist(canvas), reference("7"), mad=0.01, corr=0.99)


def test_black_ink_on_white_opaque_canvas():
    canvas = render_on_canvas(draw_digit("7"), stroke=4, mode="opaque")
    canvas[:, :, :3] = 255 - canvas[:, :, :3]
    similar(to_mnist(canvas), reference("7"), mad=0.01, corr=0.99)


def test_noise_does_not_move_the_digit():
    rng = np.random.default_rng(3)
    canvas = render_on_canvas(draw_digit("7"), scale=5, offset=(100, 100), stroke=3)
    noisy = canvas[:, :, 0] + rng.normal(0, 8, canvas.shape[:2])  # sensor/JPEG-like noise
    clean = to_mnist(canvas)
    similar(to_mnist(np.clip(noisy, 0, 255).astype(np.uint8)), clean, mad=0.02, corr=0.98)


def test_stained_noisy_paper_photo():
    """Paper texture and a faint shadow must not become ink (weak values are zeroed)."""
    ink = render_on_canvas(draw_digit("7"), scale=6, stroke=3)[:, :, 0] / 255.0
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[:280, :280]
    stain = 25 * np.exp(-((yy - 140) ** 2 + (xx - 150) ** 2) / (2 * 60.0 ** 2))
    paper = 230 - stain + rng.normal(0, 10, ink.shape)
    photo = np.clip(paper * (1 - ink) + 30 * ink, 0, 255).astype(np.uint8)
    clean = to_mnist(render_on_canvas(draw_digit("7"), scale=6, stroke=3))
    similar(to_mnist(photo), clean, mad=0.03, corr=0.98)


def test_wide_shape_fits_the_box_horizontally():
    canvas = np.zeros((280, 280), np.uint8)
    canvas[120:160, 30:250] = 255  # 220 wide, 40 tall
    h, w = ink_span(to_mnist(canvas), 0.25)
    assert 19 <= w <= 21 and h <= 6, (h, w)


def test_one_keeps_its_aspect_ratio():
    canvas = np.zeros((280, 280), np.uint8)
    canvas[40:240, 130:146] = 255  # a 200 x 16 vertical stroke
    h, w = ink_span(to_mnist(canvas), 0.25)
    assert h >= 19 and w <= 4, (h, w)
    h, w = ink_span(to_mnist(render_on_canvas(draw_digit("1"), stroke=2)), 0.25)
    assert h >= 19 and w <= 6, (h, w)


# ---------------------------------------------------------------- blank input

def _paper(noise):
    rng = np.random.default_rng(0)
    return np.clip(230 + rng.normal(0, noise, (280, 280, 3)), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("canvas", [
    np.zeros((280, 280, 4), np.uint8) + np.uint8([0, 0, 0, 255]),   # opaque black
    np.zeros((280, 280, 4), np.uint8),                              # fully transparent
    np.full((280, 280, 4), [255, 255, 255, 0], np.uint8),           # transparent, white rgb
    np.full((280, 280, 3), 255, np.uint8),                          # white paper
    _paper(8),                                                      # grey paper with noise
    _paper(3),
    np.clip(230 + np.random.default_rng(1).normal(0, 10, (280, 280)), 0, 255).astype(np.uint8),
    np.pad(np.full((50, 120), 20, np.uint8), ((100, 130), (80, 80))),  # faint smudge (8%)
    np.full((50, 50), 0.5, np.float32),                             # flat grey
], ids=["opaque", "transparent", "transparent-white", "white", "paper-noise8", "paper-noise3",
                         "grey-paper-noise10", "faint-smudge", "grey"])
def test_blank_is_none(canvas):
    assert to_mnist(canvas) is None


def test_single_speck_is_none():
    canvas = np.zeros((280, 280), np.uint8)
    canvas[100, 100] = 255
    assert to_mnist(canvas) is None


# ---------------------------------------------------------------- input types

def test_array_dtypes_agree():
    gray = render_on_canvas(draw_digit("4"), stroke=3)[:, :, 0]
    ref = to_mnist(gray)
    for arr in (gray.astype(np.uint16) * 257, gray / np.float32(255), gray.astype(np.float64),
                gray.astype(np.int64), gray[:, :, None], np.dstack([gray] * 3)):
        similar(to_mnist(arr), ref, mad=1e-3, corr=0.999)
    similar(to_mnist(gray > 127), ref, mad=0.02, corr=0.98)


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "P", "LA", "I;16", "I;16B", "I", "F", "CMYK", "1", "YCbCr"])
def test_pil_modes(mode):
    canvas = render_on_canvas(draw_digit("4"), stroke=3, mode="opaque")
    rgb = Image.fromarray(canvas[:, :, :3], "RGB")
    gray16 = canvas[:, :, 0].astype(np.uint16) * 257
    if mode.startswith("I;16"):
        img = Image.frombytes(mode, rgb.size, gray16.astype("<u2" if mode == "I;16" else ">u2").tobytes())
    else:
        img = rgb.convert(mode)
    assert img.mode == mode
    similar(to_mnist(img), to_mnist(canvas), mad=0.02, corr=0.98)


def test_pil_transparent_modes():
    canvas = render_on_canvas(draw_digit("4"), stroke=3, mode="transparent")
    ref = to_mnist(render_on_canvas(draw_digit("4"), stroke=3, mode="opaque"))
    rgba = Image.fromarray(canvas, "RGBA")
    for img in (rgba, rgba.convert("LA"), rgba.convert("PA"), rgba.convert("P")):
        similar(to_mnist(img), ref, mad=0.02, corr=0.98)


def test_exif_orientation_applied():
    upright = render_on_canvas(draw_digit("7"), stroke=4, mode="dark_on_light")
    # Stored rotated 90 degrees counter-clockwise; Orientation 6 says "rotate
    # 90 clockwise to display", which exif_transpose undoes.
    stored = Image.fromarray(upright, "RGB").transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    stored.save(buf, "JPEG", quality=95, exif=exif.tobytes())
    buf.seek(0)
    out = to_mnist(Image.open(buf))
    similar(out, to_mnist(upright))
    assert np.abs(out - to_mnist(np.asarray(stored))).mean() > 0.1  # rotation mattered


def test_animated_gif_uses_first_frame():
    frames = [Image.fromarray(render_on_canvas(draw_digit(k), stroke=3)[:, :, 0]) for k in ("7", "0")]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=100)
    buf.seek(0)
    img = Image.open(buf)
    assert img.n_frames == 2
    img.seek(1)
    similar(to_mnist(img), reference("7"), mad=0.05, corr=0.9)
    assert img.tell() == 1  # the caller's image is left on its frame


def test_large_photo_is_downscaled_quickly():
    small = render_on_canvas(draw_digit("4"), stroke=3, mode="dark_on_light")
    photo = np.asarray(Image.fromarray(small).resize((2400, 2400), Image.Resampling.BILINEAR))
    start = time.perf_counter()
    out = to_mnist(photo)
    assert time.perf_counter() - start < 5.0  # ~0.1 s idle; block-averaged, not full size
    similar(out, to_mnist(small))
    similar(to_mnist(photo[:, :, 0].astype(np.uint16) * 257), out, mad=1e-3, corr=0.999)
    similar(to_mnist(photo[:, :, 0] / np.float32(255)), out, mad=1e-3, corr=0.999)


@pytest.mark.parametrize("shape", [(1, 1), (1, 300), (300, 1), (2, 2), (3, 700), (700, 3)])
@pytest.mark.parametrize("value", [0, 255])
def test_thin_images_do_not_crash(shape, value):
    arr = np.zeros(shape, np.uint8)
    arr[..., shape[1] // 3: shape[1] // 2 + 1] = value
    out = to_mnist(arr)
    assert out is None or (out.shape == (28, 28) and out.max() == 1.0)


# ---------------------------------------------------------------- bad input

@pytest.mark.parametrize("bad", [
    np.zeros(10), np.zeros((2, 28, 28, 1)), np.zeros((0, 0)), np.zeros((28, 0, 3)),
    np.zeros((28, 28), object), np.array([["a", "b"]]), "digit.png", b"\x89PNG", None, 3.0,
    np.full((28, 28), np.nan), np.full((28, 28), np.inf), np.zeros((28, 28), complex),
    np.zeros((28, 28, 5)), -np.ones((28, 28)), np.full((28, 28), 1000.0), np.full((28, 28), -3),
    [[0, 1], [2]], {"pixels": 1},
], ids=lambda b: type(b).__name__ + str(getattr(b, "shape", "")) + str(getattr(b, "dtype", "")))
def test_bad_input_raises_value_error(bad):
    with pytest.raises(ValueError):
        to_mnist(bad)


def test_huge_image_refused_without_allocating():
    huge = np.broadcast_to(np.uint8(0), (8000, 6000, 4))  # 48M pixels, zero-stride
    with pytest.raises(ValueError, match="too large"):
        to_mnist(huge)
    with pytest.raises(ValueError, match="too large"):
        to_mnist(Image.new("1", (9000, 5000)))


# ---------------------------------------------------------------- speed, purity

def test_speed_on_canvas():
    canvas = render_on_canvas(draw_digit("4"), stroke=5, mode="transparent")
    to_mnist(canvas)
    times = []
    for _ in range(30):
        start = time.perf_counter()
        to_mnist(canvas)
        times.append(time.perf_counter() - start)
    assert np.median(times) < 0.02  # ~1 ms on a laptop; generous for busy CI machines


def test_no_ui_imports():
    code = ("import sys, nn.preprocess; bad = {'streamlit', 'matplotlib'} & set(sys.modules); "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=str(__import__("conftest").ROOT))


# ---------------------------------------------------------------- real digits

def test_redrawn_mnist_digits_classified(mnist, default_model):
    """500 MNIST test digits redrawn on a 280x280 canvas (height 60-250 px, random
    position and stroke) in each representation, then preprocessed and classified."""
    _, (X_test, y_test) = mnist
    rng = np.random.default_rng(2024)
    idx = rng.choice(len(X_test), 500, replace=False)
    for mode in MODES:
        draw_rng = np.random.default_rng(7)
        batch = []
        for i in idx:
            out = to_mnist(random_render(X_test[i].reshape(28, 28), draw_rng, mode=mode))
            assert out is not None
            batch.append(out.ravel())
        acc = float((default_model.predict(np.array(batch)) == y_test[idx]).mean())
        assert acc >= 0.96, f"{mode}: accuracy {acc:.3f} on redrawn digits"


def test_naive_shrink_baseline_is_far_worse(mnist, default_model):
    """The reason to_mnist exists: shrinking the whole canvas to 28x28 reads only a
    fraction of the same redrawn digits (benchmarks/preprocess_eval.py)."""
    sys.path.insert(0, str(__import__("conftest").ROOT / "benchmarks"))
    from preprocess_eval import evaluate

    _, (X_test, y_test) = mnist
    result = evaluate(default_model, X_test, y_test, n=300)
    assert result["naive_shrink_opaque"] < 0.6, result
    assert result["to_mnist_opaque"] >= 0.96, result
    assert result["to_mnist_opaque"] >= result["original"] - 0.03, result
