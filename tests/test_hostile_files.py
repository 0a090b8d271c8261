"""Hostile model and dataset files that tests/test_serialize.py and tests/test_data.py
do not already cover. Each one must be refused with the loader's own exception
(``nn.ModelFileError`` / ``nn.data.DataError``) and a message naming the file and
the problem, quickly, without allocating what the file claims, without running
anything from it, and without changing any file in its folder (every test hashes
the folder before and after).

Model files: a .npy member whose own header lies about its shape (terabytes,
or an integer overflow), a garbled .npy header, an unknown .npy version,
zip features zipfile cannot read (unknown compression, encryption, a future
zip version), zip bombs (a deflated header or weight array that would inflate
past the limits), members outside the archive's namespace (``../``) or not
arrays, deeply nested JSON, an overflowing seed, a symlink to a device.

MNIST IDX files: little-endian magic, image and label files swapped, a gzip
bomb after a valid payload, garbage after the gzip stream, mismatched counts
in the test split, and a present-but-corrupt folder with downloads enabled
(never re-downloaded, never deleted or rewritten).
"""
import gzip
import hashlib
import io
import json
import os
import struct
import time
import tracemalloc
import urllib.request
import zipfile
import zlib

import numpy as np
import pytest

import nn
from nn import data
from nn.data import DataError, load_mnist
from nn.serialize import ModelFileError

FAST_S = 1.0


# ---------------------------------------------------------------- helpers

def folder_state(folder):
    """{relative path: (size, sha256)} of every file under ``folder``."""
    state = {}
    for root, _, files in os.walk(folder):
        for name in files:
            p = os.path.join(root, name)
            if os.path.islink(p):
                state[os.path.relpath(p, folder)] = ("link", os.readlink(p))
                continue
            with open(p, "rb") as f:
                state[os.path.relpath(p, folder)] = (os.path.getsize(p), hashlib.sha256(f.read()).hexdigest())
    return state


_FROZEN = {}


@pytest.fixture
def folder(tmp_path):
    """A folder for the hostile file(s). The test calls ``freeze(folder)`` once they are
    written; at the end nothing in the folder may have changed, appeared or vanished."""
    work = tmp_path / "files"
    work.mkdir()
    yield work
    before = _FROZEN.pop(work)
    assert folder_state(work) == before, "a loader changed, added or removed a file"


def freeze(folder):
    _FROZEN[folder] = folder_state(folder)


def npy_bytes(array):
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.asarray(array), allow_pickle=False)
    return buf.getvalue()


def small_model(**kw):
    model = nn.Network(hidden=(6,), seed=1, **kw)
    model.history = [{"epoch": 1, "train_loss": 0.5, "train_acc": 0.8, "val_loss": 0.6,
                      "val_acc": 0.75, "seconds": 0.1, "lr": 0.001}]
    model.metrics = {"accuracy": 0.75, "n": 10}
    return model


def members_of(model):
    """The members ``save`` would write: {name.npy: .npy bytes}."""
    header = {"format": "digitlab-mlp", "format_version": 1, "config": model.config,
              "seed": model.seed, "hyperparams": {}, "history": model.history,
              "metrics": model.metrics, "train_seconds": 0.0}
    out = {"header.npy": npy_bytes(np.frombuffer(json.dumps(header).encode(), np.uint8))}
    for i, layer in enumerate(model.dense_layers):
        out[f"W{i}.npy"] = npy_bytes(layer.W)
        out[f"b{i}.npy"] = npy_bytes(layer.b)
    return out


def write_zip(path, members, compression=zipfile.ZIP_STORED):
    with zipfile.ZipFile(path, "w", compression=compression) as zf:
        for name, blob in members.items():
            zf.writestr(name, blob)
    return path


def lying_npy(array, shape):
    """.npy bytes whose header declares ``shape`` (as text) but whose data are ``array``'s."""
    blob = npy_bytes(array)
    hlen = struct.unpack("<H", blob[8:10])[0]
    header = blob[10:10 + hlen].decode("latin1")
    fake = header.replace(repr(array.shape), shape).rstrip(" \n")
    assert fake != header.rstrip(" \n")
    fake = fake.ljust(hlen - 1) + "\n"
    assert len(fake) == hlen, "pick a shorter fake shape"
    return blob[:10] + fake.encode("latin1") + blob[10 + hlen:]


def patch_central_directory(path, offset, fmt, value, member=None):
    """Overwrite a field of the central-directory entry of ``member`` (default: all)."""
    blob = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        start = zf.start_dir
    at = start
    while blob[at:at + 4] == b"PK\x01\x02":
        name_len, extra_len, comment_len = struct.unpack_from("<HHH", blob, at + 28)
        name = bytes(blob[at + 46:at + 46 + name_len]).decode()
        if member is None or name == member:
            struct.pack_into(fmt, blob, at + offset, value)
        at += 46 + name_len + extra_len + comment_len
    path.write_bytes(bytes(blob))


def refused(path, match, fast=True):
    """nn.load(path) raises ModelFileError naming the file and matching ``match``,
    quickly and without a large allocation."""
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(ModelFileError, match=match) as info:
            nn.load(path)
        elapsed = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert str(info.value).startswith(f"{path.name}: not a valid model file: ")
    if fast:
        assert elapsed < FAST_S, f"took {elapsed:.2f}s"
    assert peak < 32 * 2**20, f"allocated {peak / 2**20:.0f} MiB while refusing the file"
    return info.value


# ---------------------------------------------------------------- model files: lying .npy headers

def test_valid_handmade_model_loads(folder):
    """The helpers build files nn.load accepts, so each refusal below is about its one change."""
    model = small_model()
    path = write_zip(folder / "ok.npz", members_of(model))
    freeze(folder)
    loaded = nn.load(path)
    np.testing.assert_array_equal(loaded.dense_layers[0].W, model.dense_layers[0].W)


@pytest.mark.parametrize("shape", ["(784, 1000000000)", "(784000, 400000)",
                                   "(9999999999999999,)", "(99999999999999999999,)",
                                   "(-1, 6)", "(784, 3, 2)"])
def test_npy_header_lies_about_weight_shape(folder, shape):
    """The zip member is small (so the size checks pass) but its .npy header declares a
    shape that NumPy would allocate before reading: terabytes, an overflow, nonsense."""
    model = small_model()
    members = members_of(model)
    members["W0.npy"] = lying_npy(model.dense_layers[0].W, shape)
    path = write_zip(folder / "liar.npz", members)
    freeze(folder)
    refused(path, r"array W0 has shape .* expected \(784, 6\)|W0.*(unreadable|damaged)")


@pytest.mark.parametrize("shape", ["(4000000000,)", "(99999999999999999999,)"])
def test_npy_header_lies_about_header_shape(folder, shape):
    model = small_model()
    members = members_of(model)
    header = np.frombuffer(members["header.npy"][128:], np.uint8)
    members["header.npy"] = lying_npy(header, shape)
    path = write_zip(folder / "liar.npz", members)
    freeze(folder)
    refused(path, "its header is not a JSON byte string|unreadable|damaged")


@pytest.mark.parametrize("garble", [
    (b"'shape': (784, 6)", b"'shape': (784, 6("),      # unbalanced: tokenize.TokenError in NumPy
    (b"'descr': '<f4'", b"'descr': 'zz9'"),            # unknown dtype
    (b"{'descr'", b"['descr'"),                        # not a dict
    (b"\x93NUMPY", b"\x93NUMPZ"),                      # bad magic
    (b"\x93NUMPY\x01\x00", b"\x93NUMPY\x03\x00"),      # .npy version 3.0
    (b"\x93NUMPY\x01\x00", b"\x93NUMPY\x09\x00"),      # unknown .npy version
], ids=["unbalanced", "dtype", "not-dict", "magic", "version-3", "version-9"])
def test_garbled_npy_header(folder, garble):
    model = small_model()
    members = members_of(model)
    old, new = garble
    assert members["W0.npy"].count(old) == 1
    members["W0.npy"] = members["W0.npy"].replace(old, new)
    path = write_zip(folder / "garbled.npz", members)
    freeze(folder)
    refused(path, "unreadable|damaged|W0")


# ---------------------------------------------------------------- model files: zip features

@pytest.mark.parametrize("member", ["header.npy", "W0.npy"])
@pytest.mark.parametrize("field", [
    (10, "<H", 99, "NotImplementedError"),   # compression method 99 (AE-x, unsupported)
    (8, "<H", 0x0001, "RuntimeError"),       # "encrypted" flag: zipfile wants a password
    (6, "<H", 99, "NotImplementedError"),    # needs zip version 9.9
], ids=["compression-99", "encrypted", "zip-version-9.9"])
def test_zip_features_zipfile_cannot_read(folder, member, field):
    offset, fmt, value, error = field
    path = write_zip(folder / "zipfeature.npz", members_of(small_model()))
    patch_central_directory(path, offset, fmt, value, member=member)
    freeze(folder)
    refused(path, rf"the archive is damaged \({error}")


def test_zip_bomb_header(folder):
    """A deflated header that would inflate to 8 MB (limit 4 MB): refused from the
    zip directory's declared size, without inflating it."""
    model = small_model()
    members = members_of(model)
    text = json.loads(members["header.npy"][128:].decode())
    text["history"] = []
    padded = json.dumps(text).encode() + b" " * 8_000_000
    members["header.npy"] = npy_bytes(np.frombuffer(padded, np.uint8))
    path = write_zip(folder / "bomb.npz", members, compression=zipfile.ZIP_DEFLATED)
    assert path.stat().st_size < 100_000
    freeze(folder)
    refused(path, "its header is too large")


def test_zip_bomb_weights(folder):
    """W0 deflated: 40 MB of zeros in a file of ~40 kB, for a 784x6 layer."""
    model = small_model()
    members = members_of(model)
    members["W0.npy"] = npy_bytes(np.zeros((784, 12_800), np.float32))
    path = write_zip(folder / "bomb.npz", members, compression=zipfile.ZIP_DEFLATED)
    assert path.stat().st_size < 200_000
    freeze(folder)
    refused(path, "array W0 is larger than the architecture allows")


def test_compressed_model_is_refused_cleanly(folder):
    """The format is uncompressed (``save`` uses np.savez): a deflated archive whose
    weights take fewer bytes than 4 per weight fails the cheap size check, with a
    message, before anything is allocated."""
    model = small_model()
    path = write_zip(folder / "deflated.npz", members_of(model), compression=zipfile.ZIP_DEFLATED)
    freeze(folder)
    refused(path, r"its header declares 4,780 weights but the file is only")


def test_member_path_traversal(folder, tmp_path):
    members = members_of(small_model())
    members["../../evil.npy"] = npy_bytes(np.zeros(3, np.float32))
    path = write_zip(folder / "traversal.npz", members)
    freeze(folder)
    before_parent = sorted(os.listdir(tmp_path))
    refused(path, r"unexpected arrays: \.\./\.\./evil")
    assert sorted(os.listdir(tmp_path)) == before_parent
    assert not (tmp_path.parent / "evil.npy").exists()


def test_member_that_is_not_an_array(folder):
    members = members_of(small_model())
    members["run_me.py"] = b"import os; os.system('touch pwned')\n"
    path = write_zip(folder / "script.npz", members)
    freeze(folder)
    refused(path, "it contains members that are not arrays")


def test_zip_comment_and_prefix_junk_are_harmless(folder):
    """A file with a script before the archive (self-extracting style) is refused
    with a ModelFileError naming the file; it never crashes or runs anything."""
    inner = io.BytesIO()
    write_zip(inner, members_of(small_model()))
    path = folder / "sfx.npz"
    path.write_bytes(b"#!/bin/sh\necho hi\nexit 0\n" + inner.getvalue())
    freeze(folder)
    with pytest.raises(ModelFileError, match=r"^sfx\.npz: "):
        nn.load(path)


# ---------------------------------------------------------------- model files: header content

def _with_header(folder, name, header_text):
    members = members_of(small_model())
    members["header.npy"] = npy_bytes(np.frombuffer(header_text.encode(), np.uint8))
    path = write_zip(folder / name, members)
    freeze(folder)
    return path


def test_deeply_nested_json(folder):
    path = _with_header(folder, "nested.npz", "[" * 200_000 + "]" * 200_000)
    refused(path, r"its header is not valid JSON \(RecursionError")


def test_deeply_nested_json_inside_valid_header(folder):
    model = small_model()
    header = json.loads(members_of(model)["header.npy"][128:].decode())
    deep = "[" * 100_000 + "]" * 100_000
    text = json.dumps(header).replace('"metrics": {', '"metrics": {"x": ' + deep + ", ", 1)
    refused(_with_header(folder, "nested2.npz", text), "its header is not valid JSON")


@pytest.mark.parametrize("seed", ["1e999", "-1", '"zero"', "null"])
def test_bad_seed(folder, seed):
    model = small_model()
    header = json.loads(members_of(model)["header.npy"][128:].decode())
    text = json.dumps(header).replace(f'"seed": {model.seed}', f'"seed": {seed}')
    refused(_with_header(folder, "seed.npz", text), "its architecture is invalid")


@pytest.mark.parametrize("where", ["hidden", "seed"])
def test_huge_integer_in_header(folder, where):
    """A 5000-digit integer: Python's int-parsing limit raises ValueError inside json."""
    model = small_model()
    text = members_of(model)["header.npy"][128:].decode()
    old = '"hidden": [6]' if where == "hidden" else f'"seed": {model.seed}'
    assert old in text
    huge = "9" * 5000
    text = text.replace(old, old.split(":")[0] + ": " + (f"[{huge}]" if where == "hidden" else huge))
    refused(_with_header(folder, "bignum.npz", text), "its header is not valid JSON")


# ---------------------------------------------------------------- model files: not files

def test_symlink_to_a_device(folder):
    (folder / "zero.npz").symlink_to("/dev/zero")
    freeze(folder)
    refused(folder / "zero.npz", "the file is empty")


def test_dangling_symlink(folder):
    (folder / "gone.npz").symlink_to(folder / "nowhere.npz")
    freeze(folder)
    with pytest.raises(ModelFileError, match="gone.npz: cannot read the model file"):
        nn.load(folder / "gone.npz")


def test_text_file_named_npz(folder):
    (folder / "notes.npz").write_text("W0 = [[0.1, 0.2]]\n")
    freeze(folder)
    refused(folder / "notes.npz", "not an .npz archive")


# ---------------------------------------------------------------- MNIST IDX files

NAMES = data.FILES


def idx(kind, n=5, magic=None, count=None, endian=">"):
    rng = np.random.default_rng(n)
    if kind == "images":
        head = struct.pack(f"{endian}IIII", magic or 2051, n if count is None else count, 28, 28)
        return head + rng.integers(0, 256, n * 784, dtype=np.uint8).tobytes()
    head = struct.pack(f"{endian}II", magic or 2049, n if count is None else count)
    return head + rng.integers(0, 10, n, dtype=np.uint8).tobytes()


def dataset(folder, **overrides):
    """Write a valid tiny MNIST (5 train, 3 test) with some files replaced by raw bytes
    (already gzip-compressed if they are bytes for a .gz name)."""
    files = {NAMES["train_images"]: gzip.compress(idx("images", 5)),
             NAMES["train_labels"]: gzip.compress(idx("labels", 5)),
             NAMES["test_images"]: gzip.compress(idx("images", 3)),
             NAMES["test_labels"]: gzip.compress(idx("labels", 3))}
    files.update({NAMES[k]: v for k, v in overrides.items()})
    for name, blob in files.items():
        (folder / name).write_bytes(blob)
    freeze(folder)


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    def no_network(*a, **k):
        raise AssertionError("tried to download")
    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    data.clear_cache()
    yield
    data.clear_cache()


def data_refused(folder, match, download=False):
    start = time.perf_counter()
    with pytest.raises(DataError, match=match):
        load_mnist(folder, download=download)
    assert time.perf_counter() - start < 5.0


def test_valid_tiny_dataset_loads(folder):
    dataset(folder)
    (X, y), (Xt, yt) = load_mnist(folder, download=False)
    assert X.shape == (5, 784) and Xt.shape == (3, 784)


def test_little_endian_magic(folder):
    dataset(folder, train_images=gzip.compress(idx("images", 5, endian="<")))
    data_refused(folder, rf"{NAMES['train_images']}: bad magic number {0x03080000} \(expected 2051")


def test_image_and_label_files_swapped(folder):
    dataset(folder, train_images=gzip.compress(idx("labels", 20)),
            train_labels=gzip.compress(idx("images", 20)))
    data_refused(folder, rf"{NAMES['train_images']}: bad magic number 2049 "
                         r"\(expected 2051 for an IDX image file\)")


def test_gzip_bomb_after_valid_payload(folder):
    """5 images, then 200 MB of zeros compressed to ~200 kB: refused after one extra byte."""
    comp = zlib.compressobj(9, zlib.DEFLATED, 31)  # gzip container
    blob = comp.compress(idx("images", 5))
    zeros = b"\0" * (1 << 20)
    for _ in range(200):
        blob += comp.compress(zeros)
    blob += comp.flush()
    assert len(blob) < 1_000_000
    dataset(folder, train_images=blob)
    tracemalloc.start()
    try:
        data_refused(folder, f"{NAMES['train_images']}: extra bytes after the 5 items")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 2**20


def test_garbage_after_gzip_stream(folder):
    dataset(folder, test_labels=gzip.compress(idx("labels", 3)) + b"GARBAGE!" * 10)
    data_refused(folder, f"{NAMES['test_labels']}: corrupt or unreadable")


def test_mismatched_counts_in_test_split(folder):
    dataset(folder, test_labels=gzip.compress(idx("labels", 2)))
    data_refused(folder, f"{NAMES['test_images']} has 3 images but .*{NAMES['test_labels']} has 2 labels")


def test_count_overflowing_int32(folder):
    dataset(folder, test_images=gzip.compress(idx("images", 3, count=0xFFFFFFFF)))
    data_refused(folder, f"{NAMES['test_images']}: truncated payload: header declares 4294967295 items")


def test_corrupt_folder_with_download_enabled(folder):
    """Present but corrupt files are reported, never silently re-downloaded, deleted
    or rewritten (the urlopen stub fails the test if a download is attempted)."""
    dataset(folder, train_labels=gzip.compress(idx("labels", 5))[:-12])
    data_refused(folder, f"{NAMES['train_labels']}", download=True)
