"""Tests for nn.data: IDX parsing, validation, caching, download and the real MNIST files."""

import gzip
import hashlib
import io
import os
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from helpers import idx_images, idx_labels, offline, write_mnist
from nn import data
from nn.data import DataError, load_mnist, mnist_available, one_hot, resolve_data_dir

assert offline  # no test may use the network or see a stale cache
pytestmark = pytest.mark.usefixtures("offline")
NAMES = data.FILES  # key -> file name


# ---------------------------------------------------------------- helpers
def synthetic(seed=0, n_train=7, n_test=3):
    rng = np.random.default_rng(seed)
    arrays = {
        "train_images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, n_train, dtype=np.uint8),
        "test_images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    arrays["train_images"][0, 0, 0], arrays["train_images"][0, 0, 1] = 0, 255
    return arrays


def raw_files(arrays):
    """{file name: raw (uncompressed) IDX bytes} for a synthetic dataset."""
    return {NAMES[k]: (idx_images(v) if "images" in k else idx_labels(v)) for k, v in arrays.items()}


def write_dataset(folder, arrays=None, overrides=None, compress=True):
    """Write the four files into folder; overrides maps file name -> raw IDX bytes. Returns arrays."""
    arrays = synthetic() if arrays is None else arrays
    raws = raw_files(arrays)
    raws.update(overrides or {})
    write_mnist(folder, raws, compress)
    return arrays


# ---------------------------------------------------------------- round trip
@pytest.mark.parametrize("compress", [True, False])
def test_round_trip(tmp_path, compress):
    arrays = write_dataset(tmp_path, compress=compress)
    (X, y), (Xt, yt) = load_mnist(tmp_path, download=False)
    assert X.shape == (7, 784) and Xt.shape == (3, 784)
    assert y.shape == (7,) and yt.shape == (3,)
    assert X.dtype == np.float32 and y.dtype == np.int64
    np.testing.assert_array_equal(X, arrays["train_images"].reshape(7, 784) / np.float32(255))
    np.testing.assert_array_equal(Xt * 255, arrays["test_images"].reshape(3, 784).astype(np.float32))
    np.testing.assert_array_equal(y, arrays["train_labels"])
    np.testing.assert_array_equal(yt, arrays["test_labels"])
    assert X.min() == 0.0 and X.max() == 1.0


def test_cached_and_read_only(tmp_path):
    write_dataset(tmp_path)
    first = load_mnist(tmp_path, download=False)
    assert load_mnist(str(tmp_path), download=False) is first
    (X, y), _ = first
    with pytest.raises(ValueError):
        X[0, 0] = 0.5
    with pytest.raises(ValueError):
        y[0] = 3


def test_cache_refreshes_when_files_change(tmp_path):
    write_dataset(tmp_path, synthetic(seed=1))
    (_, y1), _ = load_mnist(tmp_path, download=False)
    write_dataset(tmp_path, synthetic(seed=2, n_train=9))
    (_, y2), _ = load_mnist(tmp_path, download=False)
    assert len(y1) == 7 and len(y2) == 9


# ---------------------------------------------------------------- corruption
TRAIN_IMG, TRAIN_LBL = NAMES["train_images"], NAMES["train_labels"]
_arr = synthetic()
_img_raw, _lbl_raw = idx_images(_arr["train_images"]), idx_labels(_arr["train_labels"])

CORRUPTIONS = {
    "bad image magic": (TRAIN_IMG, idx_images(_arr["train_images"], magic=2049), "bad magic number 2049"),
    "bad label magic": (TRAIN_LBL, idx_labels(_arr["train_labels"], magic=2051), "bad magic number 2051"),
    "truncated images": (TRAIN_IMG, _img_raw[:-10], "truncated payload"),
    "truncated labels": (TRAIN_LBL, _lbl_raw[:-1], "truncated payload"),
    "truncated header": (TRAIN_IMG, _img_raw[:11], "truncated header"),
    "extra bytes": (TRAIN_IMG, _img_raw + b"\x00" * 5, "extra bytes"),
    "extra label bytes": (TRAIN_LBL, _lbl_raw + b"\x01", "extra bytes"),
    "wrong rows": (TRAIN_IMG, idx_images(_arr["train_images"].reshape(7, 49, 16)), "49x16"),
    "wrong cols header": (TRAIN_IMG, idx_images(_arr["train_images"], cols=27), "28x27"),
    "absurd count": (TRAIN_IMG, idx_images(_arr["train_images"], count=0xFFFFFFF0), "truncated payload"),
    "label 11": (TRAIN_LBL, idx_labels(np.r_[_arr["train_labels"][:-1], 11]), "label value 11"),
    "empty file": (TRAIN_IMG, b"", "empty"),
}


@pytest.mark.parametrize("case", list(CORRUPTIONS))
def test_corruption_raises(tmp_path, case):
    name, raw, problem = CORRUPTIONS[case]
    write_dataset(tmp_path, overrides={name: raw})
    with pytest.raises(DataError, match=f"{name}.*{problem}"):
        load_mnist(tmp_path, download=False)


def test_mismatched_counts(tmp_path):
    arrays = synthetic()
    arrays["train_labels"] = arrays["train_labels"][:5]
    write_dataset(tmp_path, arrays)
    with pytest.raises(DataError, match=f"{TRAIN_IMG} has 7 images but .*{TRAIN_LBL} has 5 labels"):
        load_mnist(tmp_path, download=False)


def test_corrupt_gzip(tmp_path):
    write_dataset(tmp_path)
    blob = bytearray((tmp_path / TRAIN_IMG).read_bytes())
    blob[len(blob) // 2: len(blob) // 2 + 20] = b"\xff" * 20
    (tmp_path / TRAIN_IMG).write_bytes(bytes(blob))
    with pytest.raises(DataError, match=f"{TRAIN_IMG}.*corrupt"):
        load_mnist(tmp_path, download=False)


@pytest.mark.parametrize("blob", [b"not gzip at all", b"", gzip.compress(_img_raw)[:-30]],
                         ids=["not-gzip", "zero-bytes", "cut-stream"])
def test_bad_gzip_files(tmp_path, blob):
    write_dataset(tmp_path)
    (tmp_path / TRAIN_IMG).write_bytes(blob)
    with pytest.raises(DataError, match=TRAIN_IMG):
        load_mnist(tmp_path, download=False)


def test_data_error_is_value_error():
    assert issubclass(DataError, ValueError)


# ---------------------------------------------------------------- missing files / download
def test_missing_without_download(tmp_path):
    write_dataset(tmp_path)
    (tmp_path / TRAIN_LBL).unlink()
    assert not mnist_available(tmp_path)
    with pytest.raises(DataError, match=f"missing in {tmp_path}: {TRAIN_LBL}.*MNIST_DATA") as info:
        load_mnist(tmp_path, download=False)
    assert TRAIN_IMG not in str(info.value).split("Set the")[0]  # only the missing one is listed


def test_network_unreachable(tmp_path, monkeypatch):
    calls = []

    def offline(url, timeout=None):
        calls.append((url, timeout))
        raise urllib.error.URLError("Name or service not known")
    monkeypatch.setattr(urllib.request, "urlopen", offline)
    folder = tmp_path / "mnist"
    messages = []
    with pytest.raises(DataError, match="could not download") as info:
        load_mnist(folder, progress=messages.append)
    text = str(info.value)
    assert str(folder) in text and "MNIST_DATA" in text and "--data" in text
    assert "Name or service not known" in text
    assert [u for u, _ in calls] == [m + TRAIN_IMG for m in data.MIRRORS]  # fails fast
    assert all(t is not None and t <= 30 for _, t in calls)
    assert list(folder.iterdir()) == []  # no partial or temp files
    assert messages and all(isinstance(m, str) for m in messages)


class FakeResponse(io.BytesIO):
    def __init__(self, payload, on_read=None):
        super().__init__(payload)
        self.headers = {"Content-Length": str(len(payload))}
        self.on_read = on_read

    def read(self, n=-1):
        if self.on_read:
            self.on_read()
        return super().read(n)


def serve(monkeypatch, blobs, fail_first_mirror=False, on_read=None):
    requested = []

    def fake_urlopen(url, timeout=None):
        requested.append(url)
        if fail_first_mirror and url.startswith(data.MIRRORS[0]):
            raise urllib.error.URLError("mirror down")
        return FakeResponse(blobs[url.rsplit("/", 1)[1]], on_read)
    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    return requested


@pytest.mark.parametrize("fail_first_mirror", [False, True])
def test_download_verifies_and_writes_atomically(tmp_path, monkeypatch, fail_first_mirror):
    arrays = synthetic()
    blobs = {name: gzip.compress(raw) for name, raw in raw_files(arrays).items()}
    monkeypatch.setattr(data, "MD5", {n: hashlib.md5(b).hexdigest() for n, b in blobs.items()})
    folder = tmp_path / "new" / "mnist"
    seen_during_read = []

    def check_atomic():  # while a file streams in, no final-named file may be half-written
        finals = {p.name for p in folder.iterdir() if not p.name.startswith(".")}
        seen_during_read.append(finals <= set(blobs))
        for f in finals:
            assert (folder / f).read_bytes() == blobs[f]
    requested = serve(monkeypatch, blobs, fail_first_mirror, on_read=check_atomic)
    replaced = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (replaced.append((a, b)), real_replace(a, b)))
    messages = []

    (X, y), (Xt, yt) = load_mnist(folder, progress=messages.append)

    assert sorted(p.name for p in folder.iterdir()) == sorted(blobs)  # no temp files left
    assert len(replaced) == 4 and all(Path(a).parent == folder for a, _ in replaced)
    assert seen_during_read and all(seen_during_read)
    np.testing.assert_array_equal(y, arrays["train_labels"])
    np.testing.assert_array_equal(Xt, arrays["test_images"].reshape(3, 784) / np.float32(255))
    assert len(requested) == (8 if fail_first_mirror else 4)
    assert any("Downloading" in m for m in messages)
    assert mnist_available(folder)


def test_download_only_missing_files(tmp_path, monkeypatch):
    arrays = write_dataset(tmp_path)
    (tmp_path / TRAIN_LBL).unlink()
    blob = gzip.compress(idx_labels(arrays["train_labels"]))
    monkeypatch.setattr(data, "MD5", {**data.MD5, TRAIN_LBL: hashlib.md5(blob).hexdigest()})
    requested = serve(monkeypatch, {TRAIN_LBL: blob})
    (_, y), _ = load_mnist(tmp_path)
    assert requested == [data.MIRRORS[0] + TRAIN_LBL]
    np.testing.assert_array_equal(y, arrays["train_labels"])


def test_download_wrong_md5_rejected(tmp_path, monkeypatch):
    blobs = {name: gzip.compress(raw) for name, raw in raw_files(synthetic()).items()}
    serve(monkeypatch, blobs)  # MD5 table keeps the real MNIST sums, so these can't match
    with pytest.raises(DataError, match="could not download.*MD5 mismatch"):
        load_mnist(tmp_path)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- folder resolution
def test_env_var_resolution(tmp_path, monkeypatch):
    monkeypatch.delenv("MNIST_DATA", raising=False)
    assert resolve_data_dir() == data.DEFAULT_DIR
    assert data.DEFAULT_DIR == Path(data.__file__).resolve().parents[1] / "data" / "mnist"
    monkeypatch.setenv("MNIST_DATA", str(tmp_path))
    assert resolve_data_dir() == tmp_path.resolve()
    other = tmp_path / "other"
    assert resolve_data_dir(other) == other.resolve()  # explicit path wins
    arrays = write_dataset(tmp_path)
    assert mnist_available()
    (_, y), _ = load_mnist(download=False)
    np.testing.assert_array_equal(y, arrays["train_labels"])


# ---------------------------------------------------------------- one_hot
def test_one_hot():
    out = one_hot(np.array([0, 3, 9]))
    assert out.shape == (3, 10) and out.dtype == np.float32
    np.testing.assert_array_equal(out.argmax(1), [0, 3, 9])
    assert out.sum() == 3
    assert one_hot([1, 0], n_classes=2).tolist() == [[0, 1], [1, 0]]
    assert one_hot(np.array([], dtype=np.int64)).shape == (0, 10)


@pytest.mark.parametrize("bad", [[0, 10], [-1, 2], [0.5, 1.0], [[1, 2]], ["a"]])
def test_one_hot_rejects(bad):
    with pytest.raises(ValueError):
        one_hot(bad)


# ---------------------------------------------------------------- the real thing
@pytest.fixture
def real_dir(mnist_dir):
    return mnist_dir


def test_real_mnist(real_dir):
    (X, y), (Xt, yt) = load_mnist(real_dir, download=False)
    assert X.shape == (60000, 784) and Xt.shape == (10000, 784)
    assert y.shape == (60000,) and yt.shape == (10000,)
    assert X.dtype == Xt.dtype == np.float32 and y.dtype == yt.dtype == np.int64
    assert X.min() == 0.0 and X.max() == 1.0 and Xt.min() == 0.0 and Xt.max() == 1.0
    counts = np.bincount(y, minlength=10)
    assert len(counts) == 10 and counts.sum() == 60000 and counts.min() > 5000
    assert np.bincount(yt, minlength=10).sum() == 10000
    assert y[0] == 5 and yt[0] == 7
