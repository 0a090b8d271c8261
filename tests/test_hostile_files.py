"""Hostile model and dataset files that tests/test_serialize.py and tests/test_data.py
do not already cover. Each one must be refused with the loader's own exception
(``nn.ModelFileError`` / ``nn.data.DataError``) and a message naming the file and
the problem, without allocating what the file claims, without inflating more
than it must, without running anything from it, and without changing any file
in its folder (every test hashes the folder before and after).

Model files, in both formats (``fmt``: version 2, arrays "0.weight", ...; and
the legacy version 1, arrays "W0", ..., which must stay as hardened): a .npy
member whose own header lies about its shape (terabytes, or an integer
overflow), a garbled .npy header, an unknown .npy version, zip features zipfile
cannot read (unknown compression, encryption, a future zip version), zip bombs
(a deflated header or weight array that would inflate past the limits),
members outside the archive's namespace (``../``) or not arrays, deeply nested
JSON, header values of the wrong type or size (seed, history, metrics,
training time, recipe), a symlink to a device.

MNIST IDX files: little-endian magic, image and label files swapped, a gzip
bomb after a valid payload, garbage after the gzip stream, mismatched counts
in the test split, and a present-but-corrupt folder with downloads enabled
(never re-downloaded, never deleted or rewritten).

No test here reads a clock: what made a refusal slow would be allocating,
reading or inflating too much, and that is what ``refused`` and
``data_refused`` measure (``helpers.Usage``).
"""
import copy
import gzip
import io
import json
import os
import re
import struct
import zipfile
import zlib

import numpy as np
import pytest

import nn
from helpers import (FORMATS, Usage, folder_state, header_of, header_text, model_members,
                     npy_bytes, offline, random_idx, small_model, weight_name, write_zip)
from nn import data
from nn.data import DataError, load_mnist
from nn.serialize import ModelFileError

assert offline  # the fixture, used below by name
pytestmark = pytest.mark.usefixtures("offline")

MiB = 2**20


# ---------------------------------------------------------------- helpers

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


@pytest.fixture(params=FORMATS)
def fmt(request):
    """The model file format: "v2" (today's) or "v1" (legacy, still loaded)."""
    return request.param


def model():
    return small_model(trained=True)


def members_of(fmt, header=None):
    """The members of a valid file of ``model()`` in format ``fmt`` ({name.npy: bytes})."""
    return model_members(model(), fmt, header)


def w0(fmt):
    """The first weight array's name: "0.weight" or "W0"."""
    return weight_name(model(), fmt, 0)


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


def refused(path, match):
    """nn.load(path) raises ModelFileError naming the file and matching ``match``,
    without a large allocation, without reading the file over and over (or reading
    a device), and without inflating a header or array bomb."""
    with Usage() as usage:
        with pytest.raises(ModelFileError, match=match) as info:
            nn.load(path)
    assert str(info.value).startswith(f"{path.name}: not a valid model file: ")
    assert usage.peak < 32 * MiB, f"allocated {usage.peak / MiB:.0f} MiB while refusing the file"
    size = os.path.getsize(path) if os.path.exists(path) else 0
    assert usage.file_bytes <= 4 * size + 64 * 1024, (
        f"read {usage.file_bytes:,} bytes of a {size:,}-byte file")
    assert usage.member_bytes <= 1 * MiB, f"inflated {usage.member_bytes:,} bytes"
    return info.value


# ---------------------------------------------------------------- model files: lying .npy headers

def test_valid_handmade_model_loads(folder, fmt):
    """The helpers build files nn.load accepts, so each refusal below is about its one change."""
    path = write_zip(folder / "ok.npz", members_of(fmt))
    freeze(folder)
    loaded = nn.load(path)
    np.testing.assert_array_equal(loaded.dense_layers[0].W, model().dense_layers[0].W)
    assert loaded.history == model().history and loaded.metrics == model().metrics


@pytest.mark.parametrize("shape", ["(784, 1000000000)", "(784000, 400000)",
                                   "(9999999999999999,)", "(99999999999999999999,)",
                                   "(-1, 6)", "(784, 3, 2)"])
def test_npy_header_lies_about_weight_shape(folder, fmt, shape):
    """The zip member is small (so the size checks pass) but its .npy header declares a
    shape that NumPy would allocate before reading: terabytes, an overflow, nonsense."""
    members = members_of(fmt)
    name = w0(fmt)
    members[f"{name}.npy"] = lying_npy(model().dense_layers[0].W, shape)
    path = write_zip(folder / "liar.npz", members)
    freeze(folder)
    name = re.escape(name)
    refused(path, rf"array {name} has shape .* expected \(784, 6\)|{name}.*(unreadable|damaged)")


@pytest.mark.parametrize("shape", ["(4000000000,)", "(99999999999999999999,)"])
def test_npy_header_lies_about_header_shape(folder, fmt, shape):
    members = members_of(fmt)
    header = np.frombuffer(header_text(members).encode(), np.uint8)
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
def test_garbled_npy_header(folder, fmt, garble):
    members = members_of(fmt)
    name = w0(fmt)
    old, new = garble
    assert members[f"{name}.npy"].count(old) == 1
    members[f"{name}.npy"] = members[f"{name}.npy"].replace(old, new)
    path = write_zip(folder / "garbled.npz", members)
    freeze(folder)
    refused(path, rf"unreadable|damaged|{re.escape(name)}")


# ---------------------------------------------------------------- model files: zip features

@pytest.mark.parametrize("member", ["header", "first weight"])
@pytest.mark.parametrize("field", [
    (10, "<H", 99, "NotImplementedError"),   # compression method 99 (AE-x, unsupported)
    (8, "<H", 0x0001, "RuntimeError"),       # "encrypted" flag: zipfile wants a password
    (6, "<H", 99, "NotImplementedError"),    # needs zip version 9.9
], ids=["compression-99", "encrypted", "zip-version-9.9"])
def test_zip_features_zipfile_cannot_read(folder, fmt, member, field):
    offset, layout, value, error = field
    path = write_zip(folder / "zipfeature.npz", members_of(fmt))
    name = "header.npy" if member == "header" else f"{w0(fmt)}.npy"
    patch_central_directory(path, offset, layout, value, member=name)
    freeze(folder)
    refused(path, rf"the archive is damaged \({error}")


def test_zip_bomb_header(folder, fmt):
    """A deflated header that would inflate to 8 MB (limit 4 MB): refused from the
    zip directory's declared size, without inflating it."""
    members = members_of(fmt)
    text = json.loads(header_text(members))
    text["history"] = []
    padded = json.dumps(text).encode() + b" " * 8_000_000
    members["header.npy"] = npy_bytes(np.frombuffer(padded, np.uint8))
    path = write_zip(folder / "bomb.npz", members, compression=zipfile.ZIP_DEFLATED)
    assert path.stat().st_size < 100_000
    freeze(folder)
    refused(path, "its header is too large")


def test_zip_bomb_weights(folder, fmt):
    """The first weight array deflated: 40 MB of zeros in a file of ~40 kB, for a 784x6 layer."""
    members = members_of(fmt)
    name = w0(fmt)
    members[f"{name}.npy"] = npy_bytes(np.zeros((784, 12_800), np.float32))
    path = write_zip(folder / "bomb.npz", members, compression=zipfile.ZIP_DEFLATED)
    assert path.stat().st_size < 200_000
    freeze(folder)
    refused(path, rf"array {re.escape(name)} is larger than the architecture allows")


def test_compressed_model_is_refused_cleanly(folder, fmt):
    """The format is uncompressed (``save`` uses np.savez): a deflated archive whose
    weights take fewer bytes than 4 per weight fails the cheap size check, with a
    message, before anything is allocated."""
    m = model()
    m.set_weights([np.round(w, 1) for w in m.get_weights()])  # compressible for sure
    path = write_zip(folder / "deflated.npz", model_members(m, fmt),
                     compression=zipfile.ZIP_DEFLATED)
    freeze(folder)
    refused(path, r"its header declares 4,780 weights but the file is only")


def test_member_path_traversal(folder, fmt, tmp_path):
    members = members_of(fmt)
    members["../../evil.npy"] = npy_bytes(np.zeros(3, np.float32))
    path = write_zip(folder / "traversal.npz", members)
    freeze(folder)
    before_parent = sorted(os.listdir(tmp_path))
    refused(path, r"unexpected arrays: \.\./\.\./evil")
    assert sorted(os.listdir(tmp_path)) == before_parent
    assert not (tmp_path.parent / "evil.npy").exists()


def test_member_that_is_not_an_array(folder, fmt):
    members = members_of(fmt)
    members["run_me.py"] = b"import os; os.system('touch pwned')\n"
    path = write_zip(folder / "script.npz", members)
    freeze(folder)
    refused(path, "it contains members that are not arrays")


def test_zip_comment_and_prefix_junk_are_harmless(folder, fmt):
    """A file with a script before the archive (self-extracting style) is refused
    with a ModelFileError naming the file; it never crashes or runs anything."""
    inner = io.BytesIO()
    write_zip(inner, members_of(fmt))
    path = folder / "sfx.npz"
    path.write_bytes(b"#!/bin/sh\necho hi\nexit 0\n" + inner.getvalue())
    freeze(folder)
    with pytest.raises(ModelFileError, match=r"^sfx\.npz: "):
        nn.load(path)


# ---------------------------------------------------------------- model files: header content

def _with_header(folder, fmt, name, text):
    members = members_of(fmt)
    members["header.npy"] = npy_bytes(np.frombuffer(text.encode(), np.uint8))
    path = write_zip(folder / name, members)
    freeze(folder)
    return path


def test_deeply_nested_json(folder, fmt):
    path = _with_header(folder, fmt, "nested.npz", "[" * 200_000 + "]" * 200_000)
    refused(path, r"its header is not valid JSON \(RecursionError")


def test_deeply_nested_json_inside_valid_header(folder, fmt):
    text = header_text(members_of(fmt))
    deep = "[" * 100_000 + "]" * 100_000
    assert '"metrics": {' in text
    text = text.replace('"metrics": {', '"metrics": {"x": ' + deep + ", ", 1)
    refused(_with_header(folder, fmt, "nested2.npz", text), "its header is not valid JSON")


@pytest.mark.parametrize("seed", ["1e999", "-1", '"zero"', "null", "true", "1.5",
                                  str(2**63), "[1]"])
def test_bad_seed(folder, fmt, seed):
    text = header_text(members_of(fmt))
    old = f'"seed": {model().seed},'
    assert text.count(old) == 1
    text = text.replace(old, f'"seed": {seed},')
    refused(_with_header(folder, fmt, "seed.npz", text), r"its seed .* is not a whole number")


@pytest.mark.parametrize("where", ["width", "seed"])
def test_huge_integer_in_header(folder, fmt, where):
    """A 5000-digit integer: Python's int-parsing limit raises ValueError inside json."""
    text = header_text(members_of(fmt))
    huge = "9" * 5000
    old, new = {("width", "v2"): ('"out_features": 6', f'"out_features": {huge}'),
                ("width", "v1"): ('"hidden": [6]', f'"hidden": [{huge}]'),
                }.get((where, fmt), (f'"seed": {model().seed},', f'"seed": {huge},'))
    assert text.count(old) == 1
    refused(_with_header(folder, fmt, "bignum.npz", text.replace(old, new)),
            "its header is not valid JSON")


def _edit(header, fmt, key, value):
    """Put ``value`` at ``key`` ("history", "metrics.accuracy", "recipe.lr", ...); for
    v1 "recipe" means its hyperparameters and "trained_on.n_train" its n_train."""
    if fmt == "v1" and key.split(".")[0] in ("recipe", "trained_on"):
        key = "hyperparams" + key[key.index("."):] if "." in key else "hyperparams"
    *path, last = key.split(".")
    target = header
    for part in path:
        target = target[part]
    target[last] = value


def _report(**change):
    report = copy.deepcopy(model().metrics)
    report.update(change)
    return report


HEADER_VALUES = [
    ("history", {"epoch": 1}, "no valid 'history'"),
    ("history", [1, 2], "history holds an entry that is not an epoch record"),
    ("history", [{"epoch": "1"}], "not an epoch record"),
    ("history", [{"epoch": 1, "val_acc": "high"}], "not an epoch record"),
    ("history", [{"epoch": 1, "val_acc": [0.5] * 1000}], "not an epoch record"),
    ("history", [{"epoch": 1, **{f"k{i}": 0 for i in range(30)}}], "not an epoch record"),
    ("history", [{"epoch": 1}] * 10_001, "its history has 10,001 epochs"),
    ("metrics", [], "no valid 'metrics'"),
    ("metrics", {"accuracy": 0.75, "n": 10}, "not a 10-class report"),
    ("metrics", _report(confusion_matrix=[[1] * 9] * 9), "not a 10-class report"),
    ("metrics", _report(confusion_matrix=[[-1] * 10] * 10), "not a 10-class report"),
    ("metrics", _report(confusion_matrix=[[0.5] * 10] * 10), "not a 10-class report"),
    ("metrics", _report(confusion_matrix=[[[0]] * 10] * 10), "not a 10-class report"),
    ("metrics", _report(accuracy=1.5), "not a 10-class report"),
    ("metrics", _report(n=-1), "not a 10-class report"),
    ("metrics", _report(loss="low"), "not a 10-class report"),
    ("metrics", _report(per_class={"precision": [1.0] * 3}), "not a 10-class report"),
    ("metrics", _report(macro={"precision": None}), "not a 10-class report"),
    ("train_seconds", -1.0, "its training time is not a number of seconds"),
    ("train_seconds", "10", "its training time is not a number of seconds"),
    ("train_seconds", float("inf"), "its training time is not a number of seconds"),
    ("recipe", "adam", "no valid 'recipe'|no valid 'hyperparams'"),
    ("recipe.lr", {"value": 0.001}, "its recipe holds values that are not settings"),
    ("recipe.optimizer", "a" * 201, "its recipe holds values that are not settings"),
    ("recipe.hidden", list(range(65)), "its recipe holds values that are not settings"),
    ("recipe.hidden", [[6]], "its recipe holds values that are not settings"),
    ("recipe.lr", float("nan"), "its recipe holds values that are not settings"),
    ("trained_on.n_train", {"n": 1}, "its trained_on holds values that are not settings"),
]


@pytest.mark.parametrize("key,value,message", HEADER_VALUES,
                         ids=[f"{i}-{k}" for i, (k, _, _) in enumerate(HEADER_VALUES)])
def test_header_values_of_the_wrong_type_or_size(folder, fmt, key, value, message):
    """The app shows these values; a file must not make it choke on them."""
    header = header_of(model(), fmt)
    _edit(header, fmt, key, value)
    path = write_zip(folder / "values.npz", members_of(fmt, header))
    freeze(folder)
    refused(path, message)


def test_many_recipe_settings(folder, fmt):
    header = header_of(model(), fmt)
    _edit(header, fmt, "recipe", {f"setting{i}": 1 for i in range(101)})
    path = write_zip(folder / "values.npz", members_of(fmt, header))
    freeze(folder)
    refused(path, "its recipe holds values that are not settings")


def test_trained_on_not_a_dict(folder):
    header = header_of(model(), "v2")
    header["trained_on"] = [18, 2]
    path = write_zip(folder / "values.npz", members_of("v2", header))
    freeze(folder)
    refused(path, "its header has no valid 'trained_on'")


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


def dataset(folder, **overrides):
    """Write a valid tiny MNIST (5 train, 3 test) with some files replaced by raw bytes
    (already gzip-compressed if they are bytes for a .gz name)."""
    files = {NAMES["train_images"]: gzip.compress(random_idx("images", 5)),
             NAMES["train_labels"]: gzip.compress(random_idx("labels", 5)),
             NAMES["test_images"]: gzip.compress(random_idx("images", 3)),
             NAMES["test_labels"]: gzip.compress(random_idx("labels", 3))}
    files.update({NAMES[k]: v for k, v in overrides.items()})
    for name, blob in files.items():
        (folder / name).write_bytes(blob)
    freeze(folder)


def data_refused(folder, match, download=False):
    """load_mnist raises DataError matching ``match``, having read each file about once,
    inflated nothing beyond the few items the headers declare, and allocated little."""
    on_disk = sum(p.stat().st_size for p in folder.iterdir())
    with Usage() as usage:
        with pytest.raises(DataError, match=match):
            load_mnist(folder, download=download)
    assert usage.file_bytes <= 2 * on_disk + 64 * 1024, (
        f"read {usage.file_bytes:,} bytes of {on_disk:,} on disk")
    assert usage.gzip_bytes <= 64 * 1024, f"inflated {usage.gzip_bytes:,} bytes"
    assert usage.peak < 64 * MiB, f"allocated {usage.peak / MiB:.0f} MiB"


def test_valid_tiny_dataset_loads(folder):
    dataset(folder)
    (X, y), (Xt, yt) = load_mnist(folder, download=False)
    assert X.shape == (5, 784) and Xt.shape == (3, 784)


def test_little_endian_magic(folder):
    dataset(folder, train_images=gzip.compress(random_idx("images", 5, endian="<")))
    data_refused(folder, rf"{NAMES['train_images']}: bad magic number {0x03080000} \(expected 2051")


def test_image_and_label_files_swapped(folder):
    dataset(folder, train_images=gzip.compress(random_idx("labels", 20)),
            train_labels=gzip.compress(random_idx("images", 20)))
    data_refused(folder, rf"{NAMES['train_images']}: bad magic number 2049 "
                         r"\(expected 2051 for an IDX image file\)")


def test_gzip_bomb_after_valid_payload(folder):
    """5 images, then 200 MB of zeros compressed to ~200 kB: refused after one extra byte,
    without inflating the zeros (data_refused bounds the bytes inflated and the memory)."""
    comp = zlib.compressobj(9, zlib.DEFLATED, 31)  # gzip container
    blob = comp.compress(random_idx("images", 5))
    zeros = b"\0" * (1 << 20)
    for _ in range(200):
        blob += comp.compress(zeros)
    blob += comp.flush()
    assert len(blob) < 1_000_000
    dataset(folder, train_images=blob)
    data_refused(folder, f"{NAMES['train_images']}: extra bytes after the 5 items")


def test_garbage_after_gzip_stream(folder):
    dataset(folder, test_labels=gzip.compress(random_idx("labels", 3)) + b"GARBAGE!" * 10)
    data_refused(folder, f"{NAMES['test_labels']}: corrupt or unreadable")


def test_mismatched_counts_in_test_split(folder):
    dataset(folder, test_labels=gzip.compress(random_idx("labels", 2)))
    data_refused(folder, f"{NAMES['test_images']} has 3 images but .*{NAMES['test_labels']} has 2 labels")


def test_count_overflowing_int32(folder):
    dataset(folder, test_images=gzip.compress(random_idx("images", 3, count=0xFFFFFFFF)))
    data_refused(folder, f"{NAMES['test_images']}: truncated payload: header declares 4294967295 items")


def test_corrupt_folder_with_download_enabled(folder):
    """Present but corrupt files are reported, never silently re-downloaded, deleted
    or rewritten (the urlopen stub fails the test if a download is attempted)."""
    dataset(folder, train_labels=gzip.compress(random_idx("labels", 5))[:-12])
    data_refused(folder, f"{NAMES['train_labels']}", download=True)
