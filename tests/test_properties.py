"""Property-based tests (hypothesis): arbitrary input never breaks the contracts.

* ``to_mnist`` over arrays of any rank (0-4), size (0-300 per side), dtype
  (uint8, uint16, int32, float32, float64, bool, object, complex) and values
  (NaN and inf included), and over PIL images of every mode filled with random
  bytes: the result is None, a valid (28, 28) float32 image in [0, 1] with
  maximum 1, or a ValueError; nothing else, and never costly.
* ``load_image`` over damaged PNG/JPEG/GIF bytes: an image or a ValueError.
* ``nn.load`` over a valid model file (both formats: version 2 and the legacy
  version 1) with flipped bytes, truncation, inserted garbage or overwritten
  structure: a valid, usable model (a harmless change, e.g. in a zip
  timestamp) or ``nn.ModelFileError``; nothing else.

No example is timed: what would make one slow is checked directly instead
(``helpers.Usage``): the memory a call holds at its peak, the pixels Pillow
decodes and allocates, the bytes read from a model file and inflated out of
its members. The number of examples is modest so the file runs in well under
30 s. Under CI the search is derandomised (the same examples every run);
locally each run explores new ones, and DIGITLAB_FUZZ_SCALE=20 runs twenty
times as many.
"""
import os
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

import nn
from canvas_sim import draw_digit, render_on_canvas
from conftest import IN_CI
from helpers import FORMATS, Usage, encode, small_model, write_model
from nn.preprocess import MAX_PIXELS, load_image, to_mnist

SETTINGS = dict(deadline=None, derandomize=IN_CI, database=None,
                phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
MiB = 2**20
SCALE = float(os.environ.get("DIGITLAB_FUZZ_SCALE", "1"))  # e.g. 20 for a long local hunt


def examples(n):
    return max(1, int(n * SCALE))


def check_mnist_result(out):
    """The to_mnist contract for a returned value."""
    if out is None:
        return
    assert isinstance(out, np.ndarray)
    assert out.shape == (28, 28) and out.dtype == np.float32
    assert np.isfinite(out).all()
    assert out.min() >= 0.0 and out.max() == 1.0


def run_to_mnist(image):
    """to_mnist(image) keeps its contract, and its cost stays bounded by its input:
    it never decodes an image again, and the memory it holds at its peak is a few
    times the input's (a 300x300x4 complex array at most: 5.5 MB) plus a
    constant, never an image blown up to a larger size."""
    with Usage() as usage:
        try:
            out = to_mnist(image)
        except ValueError:
            out = None
    check_mnist_result(out)
    assert usage.decoded == 0
    size = image.nbytes if isinstance(image, np.ndarray) else 8 * len(image.getbands()) * \
        image.width * image.height
    assert usage.peak < 16 * size + 4 * MiB, f"held {usage.peak / MiB:.1f} MiB"


# ---------------------------------------------------------------- to_mnist over arrays

MAX_ELEMENTS = 300 * 300 * 4


@st.composite
def shapes(draw):
    """Rank 0-4, each side 0-300, at most MAX_ELEMENTS elements in all."""
    rank = draw(st.integers(0, 4))
    shape, budget = [], MAX_ELEMENTS
    for _ in range(rank):
        side = draw(st.integers(0, min(300, budget)))
        shape.append(side)
        budget = budget // side if side else budget
    return tuple(shape)


NUMERIC = [np.uint8, np.uint16, np.int32, np.float32, np.float64, np.bool_, np.complex128]


@st.composite
def arrays(draw):
    shape = draw(shapes())
    if draw(st.integers(0, 7)) == 0:  # object arrays: Python objects of any kind
        elements = st.one_of(st.none(), st.integers(-300, 300), st.floats(), st.text(max_size=3))
        return draw(hnp.arrays(object, shape, elements=elements))
    dtype = np.dtype(draw(st.sampled_from(NUMERIC)))
    if dtype.kind == "f" and draw(st.booleans()):  # plausible pixel floats, sometimes NaN/inf
        elements = st.one_of(st.floats(0, 1, width=8 * dtype.itemsize),
                             st.sampled_from([np.nan, np.inf, -np.inf, 255.0, -1.0]))
    else:
        elements = hnp.from_dtype(dtype, allow_nan=True, allow_infinity=True) if dtype.kind in "fc" \
            else hnp.from_dtype(dtype)
    fill = draw(st.one_of(st.just(np.zeros((), dtype)[()]), elements))
    return draw(hnp.arrays(dtype, shape, elements=elements, fill=st.just(fill)))


@settings(max_examples=examples(250), **SETTINGS)
@given(arrays())
def test_to_mnist_any_array(arr):
    before = arr.copy()
    run_to_mnist(arr)
    if arr.dtype != object:
        np.testing.assert_array_equal(arr, before)  # the input is never modified


@settings(max_examples=examples(60), **SETTINGS)
@given(st.integers(1, 300), st.integers(1, 300), st.sampled_from(["uint8", "float32", "bool"]),
       st.integers(0, 2**32 - 1))
def test_to_mnist_random_pixels(h, w, dtype, seed):
    """Dense random content (hypothesis' arrays are mostly fill): None or valid."""
    rng = np.random.default_rng(seed)
    arr = {"uint8": lambda: rng.integers(0, 256, (h, w), dtype=np.uint8),
           "float32": lambda: rng.random((h, w), dtype=np.float32) ** 3,
           "bool": lambda: rng.random((h, w)) < 0.05}[dtype]()
    run_to_mnist(arr)


PIL_MODES = ["1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr",
             "LAB", "HSV", "I", "F", "I;16", "I;16B", "I;16L"]


@settings(max_examples=examples(80), **SETTINGS)
@given(st.sampled_from(PIL_MODES), st.integers(1, 200), st.integers(1, 200),
       st.integers(0, 2**32 - 1))
def test_to_mnist_any_pil_image(mode, w, h, seed):
    """PIL images of every mode with random bytes (so F images hold NaN and inf)."""
    probe = Image.new(mode, (1, 1))
    nbytes = len(probe.tobytes()) * w * h
    raw = np.random.default_rng(seed).integers(0, 256, nbytes, dtype=np.uint8).tobytes()
    run_to_mnist(Image.frombytes(mode, (w, h), raw))


# ---------------------------------------------------------------- load_image over damaged files

def _encoded():
    img = Image.fromarray(render_on_canvas(draw_digit("4"), size=64, stroke=2, mode="dark_on_light"))
    return {fmt: encode(img, fmt, **kw)
            for fmt, kw in (("PNG", {}), ("JPEG", {"quality": 90}), ("GIF", {}))}


ENCODED = _encoded()


@st.composite
def damaged(draw, files):
    data = bytearray(files[draw(st.sampled_from(sorted(files)))])
    for _ in range(draw(st.integers(1, 4))):
        how = draw(st.sampled_from(["flip", "truncate", "insert", "overwrite"]))
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        if how == "flip":
            data[at] ^= draw(st.integers(1, 255))
        elif how == "truncate":
            del data[at:]
        elif how == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=64))
        else:
            chunk = draw(st.binary(min_size=1, max_size=16))
            data[at:at + len(chunk)] = chunk
    return bytes(data)


@settings(max_examples=examples(120), **SETTINGS)
@given(damaged(ENCODED))
def test_load_image_damaged_files(data):
    """A damaged header may declare any size: an image is decoded once at most, and
    never one of more than MAX_PIXELS (refused before decoding)."""
    with Usage() as usage:
        try:
            img = load_image(data)
        except ValueError:
            img = None
    assert usage.decoded <= 1
    assert usage.pixels <= MAX_PIXELS
    if img is not None:
        assert img.width * img.height <= MAX_PIXELS
        run_to_mnist(img)


# ---------------------------------------------------------------- nn.load over damaged models

class ModelFile(tuple):
    def __repr__(self):  # keep hypothesis' failure reports readable
        return f"ModelFile({self[0]}, {len(self[1])} bytes)"


@pytest.fixture(scope="module", params=FORMATS)
def model_file(tmp_path_factory, request):
    """A small valid model (784-6-10) with a history, metrics and a recipe, in each
    format (v2, and the legacy v1), as bytes, plus the byte ranges holding the zip
    structures and .npy headers (where damage matters)."""
    folder = tmp_path_factory.mktemp("model")
    path = write_model(small_model((6,), seed=3, trained=True), folder / "m.npz", request.param)
    data = path.read_bytes()
    with zipfile.ZipFile(path) as zf:
        infos, central_directory = zf.infolist(), zf.start_dir
    # each member's local header + .npy header (128 bytes), and the central directory + end record
    ranges = [(i.header_offset, i.header_offset + 30 + len(i.filename) + 128) for i in infos]
    ranges.append((central_directory, len(data)))
    return ModelFile((folder, data, [(max(0, a), min(len(data), b)) for a, b in ranges]))


@st.composite
def corruptions(draw, data, ranges):
    data = bytearray(data)
    for _ in range(draw(st.integers(1, 3))):
        how = draw(st.sampled_from(["flip", "flip", "truncate", "insert", "overwrite"]))
        if not data:
            break
        if draw(st.booleans()):  # aim at the structure: zip headers, central directory, npy headers
            lo, hi = draw(st.sampled_from(ranges))
            at = draw(st.integers(lo, max(lo, min(hi, len(data)) - 1)))
        else:
            at = draw(st.integers(0, len(data) - 1))
        at = min(at, len(data) - 1)
        if how == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7)) if draw(st.booleans()) else draw(st.integers(1, 255))
        elif how == "truncate":
            del data[at:]
        elif how == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=64))
        else:
            chunk = draw(st.sampled_from([b"\xff" * 8, b"\x00" * 8, b"\x7f\xff\xff\xff", b"PK\x03\x04",
                                          b"'shape': (99999999, 99999999), "]))
            data[at:at + len(chunk)] = chunk
    return bytes(data)


@settings(max_examples=examples(150), **SETTINGS)
@given(st.data())
def test_load_damaged_model(model_file, data):
    """A damaged file is refused or loads as a usable model; either way the loader
    holds little memory, reads the file a few times at most and inflates no member
    beyond the limits (a header: 4 MiB; this model's weights: 8 bytes each)."""
    folder, original, ranges = model_file
    blob = data.draw(corruptions(original, ranges))
    assume(blob != original)
    path = folder / "damaged.npz"
    path.write_bytes(blob)
    with Usage() as usage:
        try:
            model = nn.load(path)
        except nn.ModelFileError as e:
            assert str(e).startswith("damaged.npz: ")
            model = None
    assert usage.peak < 32 * MiB, f"held {usage.peak / MiB:.1f} MiB"
    assert usage.file_bytes <= 4 * len(blob) + 64 * 1024
    assert usage.member_bytes <= 4 * MiB + 8 * 4780 + 64 * 1024
    if model is not None:  # a harmless change: the model must be fully usable
        probs = model.predict_proba(np.zeros((2, 784), np.float32))
        assert probs.shape == (2, 10) and np.isfinite(probs).all()
        assert all(np.isfinite(w).all() for w in model.get_weights())
    assert sorted(os.listdir(folder)) == ["damaged.npz", "m.npz"]  # no leftovers
