"""Tests for nn.preprocess.to_mnist: drawings/photos -> MNIST-style 28x28."""
import io
import subprocess
import tracemalloc
import sys
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


def test_large_photo_is_downscaled_before_the_work():
    small = render_on_canvas(draw_digit("4"), stroke=3, mode="dark_on_light")
    photo = np.asarray(Image.fromarray(small).resize((2400, 2400), Image.Resampling.BILINEAR))
    tracemalloc.start()
    try:
        out = to_mnist(photo)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # Block-averaged to about 1000 px first: converting the 2400x2400x3 photo to float at
    # full size would take 66 MB; the work at ~800 px takes 12 MB.
    assert peak < 24 * 2**20, f"{peak / 2**20:.0f} MB"
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

def test_a_canvas_costs_no_large_intermediate():
    """What keeps a canvas fast (benchmarks/bench.py times it): no work on a copy larger
    than a few canvases: 1.6 MB measured, the canvas itself is 0.3 MB."""
    canvas = render_on_canvas(draw_digit("4"), stroke=5, mode="transparent")
    to_mnist(canvas)
    tracemalloc.start()
    try:
        to_mnist(canvas)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * 2**20, f"{peak / 2**20:.1f} MB"


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


# ---------------------------------------------------------------- draw_strokes: pen strokes -> canvas

from nn.strokes import MAX_STROKE_POINTS, MAX_STROKES, draw_strokes  # noqa: E402


def capsule_coverage(strokes, size, width, ss=12):
    """Independent reference for draw_strokes: per pixel, the fraction of ss x ss
    sample points within width/2 of a stroke's polyline (exact round caps and joins)."""
    c = (np.arange(size * ss) + 0.5) / ss
    y, x = np.meshgrid(c, c, indexing="ij")
    inside = np.zeros(x.shape, bool)
    for stroke in strokes:
        p = np.asarray(stroke, float)
        for a, b in zip(p, p[1:] if len(p) > 1 else p):
            d = b - a
            t = np.clip(((x - a[0]) * d[0] + (y - a[1]) * d[1]) / max(d @ d, 1e-12), 0, 1)
            inside |= (x - a[0] - t * d[0]) ** 2 + (y - a[1] - t * d[1]) ** 2 <= (width / 2) ** 2
    return inside.reshape(size, ss, size, ss).mean(axis=(1, 3))


def ink(canvas):
    """The ink channel of a draw_strokes canvas, in [0, 1]."""
    return canvas[:, :, 0] / 255.0


@pytest.mark.parametrize("strokes", [[], (), [np.zeros((0, 2))]], ids=["list", "tuple", "empty-stroke"])
def test_draw_strokes_blank_canvas(strokes):
    out = draw_strokes(strokes)
    assert out.shape == (280, 280, 4) and out.dtype == np.uint8
    assert (out == np.uint8([0, 0, 0, 255])).all()
    assert draw_strokes(strokes, size=8).shape == (8, 8, 4)


def test_draw_strokes_white_ink_on_opaque_black():
    out = draw_strokes([[(40.3, 50.2), (200.7, 230.1), (230, 60)], [(100, 100)]], size=256)
    assert out.shape == (256, 256, 4) and out.dtype == np.uint8
    assert (out[:, :, 3] == 255).all()
    assert (out[:, :, 0] == out[:, :, 1]).all() and (out[:, :, 0] == out[:, :, 2]).all()
    assert out[0, 0, 0] == 0 and out.max() == 255 and (out[:, :, 0] == 255).sum() > 1000


@pytest.mark.parametrize("width, y", [(18, 100.0), (18, 100.25), (18, 100.5), (18, 100.125),
                                      (7, 60.0), (7, 60.375), (1, 30.5), (40, 140.0)])
def test_horizontal_line_has_the_pen_width(width, y):
    out = ink(draw_strokes([[(50.0, y), (200.0, y)]], width=width))
    thickness = out[:, 60:190].sum(axis=0)  # ink per column, away from the caps
    np.testing.assert_allclose(thickness, width, atol=0.01)
    rows = np.flatnonzero(out[:, 120])
    centre = (out[rows, 120] @ (rows + 0.5)) / out[rows, 120].sum()
    assert abs(centre - y) <= 0.126 and len(rows) <= width + 2  # snapped to the 1/4 px grid
    if width == 18 and y == 100.0:  # rows 91..108 exactly: [91, 109) is centred on 100
        assert list(rows) == list(range(91, 109)) and (out[rows, 120] == 1).all()


def test_vertical_line_is_the_horizontal_one_transposed():
    horizontal = draw_strokes([[(50, 100.25), (200, 100.25)]])
    vertical = draw_strokes([[(100.25, 50), (100.25, 200)]])
    assert np.array_equal(vertical[:, :, 0], horizontal[:, :, 0].T)


@pytest.mark.parametrize("width", [18, 9.5, 3])
def test_dot_is_a_round_disc_of_the_pen_width(width):
    x, y = 140.3, 99.6
    out = ink(draw_strokes([[(x, y)]], width=width))
    assert out.sum() == pytest.approx(np.pi * width ** 2 / 4, rel=0.03)
    rows, cols = np.nonzero(out)
    mass = out[rows, cols]
    assert abs(mass @ (cols + 0.5) / mass.sum() - x) <= 0.126  # snapped to the 1/4 px grid
    assert abs(mass @ (rows + 0.5) / mass.sum() - y) <= 0.126
    r = np.hypot(*np.meshgrid(np.arange(280) + 0.5 - x, np.arange(280) + 0.5 - y))
    assert (out[r < width / 2 - 1] == 1).all() and (out[r > width / 2 + 1] == 0).all()
    same = draw_strokes([[(x, y)] * 5], width=width)  # a pen put down without moving
    assert np.array_equal(ink(same), out)


def test_caps_are_round():
    """A 100 px segment with 18 px pen: 100 x 18 plus a disc (caps of radius 9), not
    the 100 x 18 of butt caps or the 118 x 18 of square caps."""
    out = ink(draw_strokes([[(80, 140), (180, 140)]]))
    assert out.sum() == pytest.approx(100 * 18 + np.pi * 81, rel=0.01)
    assert out[131, 71] == 0 and out[140, 71] > 0.5  # beyond the end, off the axis: no ink


@pytest.mark.parametrize("strokes, width", [
    ([[(10, 10), (30, 50), (50, 10)]], 9),                      # a V: round join
    ([[(10, 30), (50, 32), (12, 34)]], 9),                      # a hairpin
    ([[(12.3, 40.1), (50.2, 20.7)], [(20, 8), (44, 56)]], 6.5), # two crossing strokes
    ([np.c_[32 + 20 * np.cos(np.linspace(0, 5, 30)), 32 + 15 * np.sin(np.linspace(0, 5, 30))]], 5),
    ([[(31.3, 30.8)], [(10, 50), (10, 50)]], 11),               # dots
], ids=["vee", "hairpin", "crossing", "arc", "dots"])
def test_draw_strokes_matches_an_exact_rendering(strokes, width):
    out = ink(draw_strokes(strokes, size=64, width=width))
    ref = capsule_coverage(strokes, 64, width)
    assert np.abs(out - ref).max() < 0.35  # vertices snap to a 1/4 px grid
    assert out.sum() == pytest.approx(ref.sum(), rel=0.03)


def test_edges_are_anti_aliased():
    out = draw_strokes([[(30.2, 40.7), (250.9, 180.3)]])[:, :, 0]
    grey = out[(out > 0) & (out < 255)]
    assert len(np.unique(grey)) >= 10 and len(grey) > 200
    assert 0 < draw_strokes([[(50, 100.5), (200, 100.5)]])[91, 120, 0] < 255  # half-covered row


def test_strokes_past_the_edges_are_clipped():
    strokes = [[(-40.0, 30.3), (60.2, 70.9), (130.0, -25.0)], [(95.5, 95.5)]]
    small = draw_strokes(strokes, size=100)
    shifted = [np.asarray(s) + 50 for s in strokes]  # the same drawing, 50 px inside a 200 px canvas
    assert np.array_equal(small, draw_strokes(shifted, size=200)[50:150, 50:150])
    assert small[:, 0, 0].max() == 255  # ink reaches the edge
    off = draw_strokes([[(-500, -500), (-300, -20)], [(2000, 140)]])
    assert (off == np.uint8([0, 0, 0, 255])).all()
    far = draw_strokes([[(-27000, 140), (27000, 140)]])  # 100 x the canvas is allowed
    assert (far[131:149, :, 0] == 255).all() and far[:131, :, 0].max() == 0


def test_draw_strokes_accepts_array_likes_and_leaves_them_alone():
    pts = np.array([[[10, 10], [200, 240]], [[240, 20], [30, 250]]], np.int32)  # (2 strokes, 2, 2)
    before = pts.copy()
    out = draw_strokes(pts)
    assert np.array_equal(pts, before)
    as_lists = draw_strokes([[(10.0, 10.0), (200.0, 240.0)], ((240, 20), (30, 250))])
    assert np.array_equal(out, as_lists)
    assert np.array_equal(draw_strokes(list(pts.astype(np.float32)), width=np.float32(18)), out)


@pytest.mark.parametrize("strokes, kwargs, match", [
    ("abc", {}, "sequence"),
    (None, {}, "sequence"),
    (7, {}, "sequence"),
    ({"x": [1]}, {}, "sequence"),
    ((s for s in [[(1, 1)]]), {}, "sequence"),
    ([(1.0, 2.0), (3.0, 4.0)], {}, "single stroke goes in a list"),  # a stroke without its list
    ([[(1, 2, 3)]], {}, r"\(k, 2\)"),
    ([np.zeros((4, 2, 1))], {}, r"\(k, 2\)"),
    ([[("a", "b")]], {}, "numbers"),
    ([[(1, 2), (3,)]], {}, r"\(k, 2\)"),
    ([np.zeros((3, 2), complex)], {}, "numbers"),
    ([[(1.0, 2.0), (np.nan, 4.0)]], {}, "NaN or infinite"),
    ([[(1.0, 2.0)], [(np.inf, 4.0)]], {}, "NaN or infinite"),
    ([[(1.0, 2.0), (28_001.0, 4.0)]], {}, "beyond"),
    ([[(1.0, -1e300)]], {}, "beyond"),
    ([[(1, 1)]] * (MAX_STROKES + 1), {}, "too many strokes"),
    ([np.zeros((MAX_STROKE_POINTS // 2 + 1, 2))] * 2, {}, "too many points"),
    ([[(1, 1)]], {"width": 0.5}, "width"),
    ([[(1, 1)]], {"width": 101}, "width"),
    ([[(1, 1)]], {"width": float("nan")}, "width"),
    ([[(1, 1)]], {"width": "18"}, "width"),
    ([[(1, 1)]], {"width": True}, "width"),
    ([[(1, 1)]], {"size": 7}, "size"),
    ([[(1, 1)]], {"size": 2001}, "size"),
    ([[(1, 1)]], {"size": 280.0}, "size"),
], ids=lambda v: v if isinstance(v, str) and len(v) < 30 else None)
def test_draw_strokes_bad_input(strokes, kwargs, match):
    with pytest.raises(ValueError, match=match):
        draw_strokes(strokes, **kwargs)


def test_draw_strokes_limits_are_inclusive():
    assert draw_strokes([[(1, 1)]] * MAX_STROKES, size=8, width=1).shape == (8, 8, 4)
    assert draw_strokes([np.zeros((MAX_STROKE_POINTS, 2))], size=2000, width=100).shape == (2000, 2000, 4)


def _digit(label, cx, cy, s):
    """Hand-made strokes for a few digits, centred at (cx, cy), about s px tall."""
    t = np.linspace(0, 2 * np.pi, 60)
    arc = np.linspace(-1.4, 2.3, 20)
    shapes = {
        "0": [np.c_[cx + 0.33 * s * np.sin(t), cy - 0.5 * s * np.cos(t)]],  # an ellipse
        "1": [[(cx + 0.1 * s, cy - 0.5 * s), (cx - 0.05 * s, cy + 0.5 * s)]],
        "2": [np.r_[np.c_[cx + 0.3 * s * np.sin(arc), cy - 0.22 * s - 0.28 * s * np.cos(arc)],
                    [(cx - 0.35 * s, cy + 0.5 * s), (cx + 0.35 * s, cy + 0.5 * s)]]],
        "4": [[(cx + 0.15 * s, cy + 0.5 * s), (cx + 0.15 * s, cy - 0.5 * s),
               (cx - 0.35 * s, cy + 0.15 * s), (cx + 0.35 * s, cy + 0.15 * s)]],
        "7": [[(cx - 0.35 * s, cy - 0.5 * s), (cx + 0.35 * s, cy - 0.5 * s), (cx - 0.1 * s, cy + 0.5 * s)]],
    }
    return shapes[label]


@pytest.mark.parametrize("label", ["0", "1", "2", "4", "7"])
def test_drawn_strokes_are_read_by_the_shipped_network(label, default_model):
    """Strokes drawn as the canvas would (large and centred, small in a corner, thin
    or thick pen), through to_mnist, as the app does."""
    batch = [to_mnist(draw_strokes(_digit(label, cx, cy, s), width=w)).ravel()
             for cx, cy, s, w in [(140, 140, 200, 18), (70, 80, 100, 18), (200, 190, 120, 10),
                                  (140, 140, 230, 30)]]
    assert list(default_model.predict(np.array(batch))) == [int(label)] * 4
