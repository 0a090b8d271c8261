"""Helpers shared by the tests: one copy of each, imported where needed.

- folders: ``folder_state`` (what a folder holds, hashed, to compare before/after);
- network: ``no_network`` and the ``offline`` fixture (no test may download);
- MNIST: IDX writers (``idx_images``, ``idx_labels``, ``random_idx``) and ``write_mnist``;
- images: ``encode`` (PIL image -> PNG/JPEG/... bytes), ``png_chunk``, ``png_bomb``;
- models: ``small_model``, and model files written by hand in either format,
  version 2 (``0.weight``, ...) or the legacy version 1 (``W0``, ...):
  ``model_members``, ``write_zip``, ``write_model``, ``weight_name(s)``, ``npy_bytes``;
- causes instead of clocks: ``Usage`` measures what the code under test
  allocated (tracemalloc), read from files, inflated out of zip members and
  gzip streams, and how many images Pillow decoded or allocated.
"""

import builtins
import copy
import gzip
import hashlib
import io
import json
import os
import struct
import tracemalloc
import urllib.request
import zipfile
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile

import nn

FORMATS = ("v2", "v1")


# ---------------------------------------------------------------- folders

def folder_state(folder):
    """{relative path: (size, sha256)} of every file under ``folder`` (links: their target)."""
    state = {}
    for root, _, files in os.walk(folder):
        for name in files:
            p = os.path.join(root, name)
            if os.path.islink(p):
                state[os.path.relpath(p, folder)] = ("link", os.readlink(p))
                continue
            with open(p, "rb") as f:
                state[os.path.relpath(p, folder)] = (os.path.getsize(p),
                                                     hashlib.sha256(f.read()).hexdigest())
    return state


# ---------------------------------------------------------------- network

def no_network(*args, **kwargs):
    raise AssertionError("test tried to reach the network")


@pytest.fixture
def offline(monkeypatch):
    """No download may happen, and no test sees another's cached dataset."""
    from nn import data

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    data.clear_cache()
    yield
    data.clear_cache()


# ---------------------------------------------------------------- MNIST IDX files

def idx_images(images, magic=2051, count=None, rows=None, cols=None, endian=">"):
    """Raw IDX3 bytes for uint8 images (n, r, c); any header field can be overridden."""
    images = np.asarray(images, dtype=np.uint8)
    n, r, c = images.shape
    header = struct.pack(f"{endian}IIII", magic, n if count is None else count,
                         r if rows is None else rows, c if cols is None else cols)
    return header + images.tobytes()


def idx_labels(labels, magic=2049, count=None, endian=">"):
    """Raw IDX1 bytes for uint8 labels (n,)."""
    labels = np.asarray(labels, dtype=np.uint8)
    return struct.pack(f"{endian}II", magic, len(labels) if count is None else count) \
        + labels.tobytes()


def random_idx(kind, n=5, magic=None, count=None, endian=">"):
    """IDX bytes of ``n`` random images (kind "images") or labels ("labels")."""
    rng = np.random.default_rng(n)
    if kind == "images":
        return idx_images(rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), magic or 2051,
                          count, endian=endian)
    return idx_labels(rng.integers(0, 10, n, dtype=np.uint8), magic or 2049, count, endian)


def write_mnist(folder, raws, compress=True):
    """Write ``{file name: raw IDX bytes}`` into ``folder``, gzipped under the .gz
    names (or raw under the names without .gz)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, raw in raws.items():
        if compress:
            (folder / name).write_bytes(gzip.compress(raw))
        else:
            (folder / name[:-3]).write_bytes(raw)


# ---------------------------------------------------------------- images

def encode(img, fmt, **kw):
    """A PIL image as the bytes of a ``fmt`` file ("PNG", "JPEG", "GIF", ...)."""
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(width, height, bit_depth=8, colour_type=0):
    """A ~100-byte PNG whose header declares width x height pixels (a decompression bomb:
    decoding it would allocate width * height bytes or more)."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr)
            + png_chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + png_chunk(b"IEND", b""))


# ---------------------------------------------------------------- models

def small_model(hidden=(6,), activation="relu", dropout=0.0, *, seed=1, n_inputs=784,
                n_classes=10, trained=False):
    """An MLP ``n_inputs-hidden...-n_classes``; with ``trained=True`` it also carries
    what a trained model's file holds (one epoch of history, a test report, a
    recipe, ``trained_on``), so files written from it exercise every header check."""
    model = nn.Network(nn.mlp_spec(hidden, activation, dropout, n_inputs=n_inputs,
                                   n_classes=n_classes), seed=seed)
    if trained:
        y = np.arange(20) % n_classes
        model.history = [{"epoch": 1, "train_loss": 0.5, "train_acc": 0.8, "val_loss": 0.6,
                          "val_acc": 0.75, "seconds": 0.1, "lr": 0.001}]
        model.metrics = nn.metrics.classification_report(y, np.roll(y, 1), n_classes)
        model.metrics["loss"] = 0.6
        model.recipe = {"optimizer": "adam", "lr": 0.001, "batch_size": 32, "epochs": 1,
                        "hidden": list(hidden), "seed": 0, "limit": None}
        model.trained_on = {"n_train": 18, "n_val": 2}
        model.train_seconds = 0.1
    return model


def npy_bytes(array):
    """``array`` as the bytes of a .npy file (never pickled)."""
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.asarray(array), allow_pickle=False)
    return buf.getvalue()


def weight_names(model, fmt):
    """The array names of ``model.parameters()`` in a file of format ``fmt`` ("v2"/"v1")."""
    if fmt == "v2":
        return [f"{i}.{p.name}" for i, layer in enumerate(model.layers)
                for p in layer.parameters()]
    assert model.kind == "mlp", "format version 1 holds multi-layer perceptrons only"
    return [f"{kind}{i}" for i in range(len(model.dense_layers)) for kind in ("W", "b")]


def weight_name(model, fmt, dense_index, kind="weight"):
    """The array name of the weight (or bias) of ``model``'s dense layer ``dense_index`` in
    a file of format ``fmt``: e.g. "3.weight" (its layer's index) or "W1"."""
    return weight_names(model, fmt)[2 * dense_index + (kind == "bias")]


def header_of(model, fmt):
    """The header ``nn.save`` writes (v2), or the one the old code wrote (v1): a new
    dict, which a test may change without changing ``model``."""
    return copy.deepcopy(_header_of(model, fmt))


def _header_of(model, fmt):
    if fmt == "v2":
        return {"format": "digitlab-network", "format_version": 2, "spec": model.spec,
                "seed": model.seed, "recipe": model.recipe, "trained_on": model.trained_on,
                "history": model.history, "metrics": model.metrics,
                "train_seconds": float(model.train_seconds),
                "saved_at": "2026-12-01T00:00:00+00:00"}
    layers = model.spec["layers"]
    activations = [layer["type"] for layer in layers if layer["type"] in nn.ACTIVATIONS]
    dropouts = [layer["p"] for layer in layers if layer["type"] == "dropout"]
    config = {"hidden": [layer.out_features for layer in model.dense_layers[:-1]],
              "activation": activations[0] if activations else "relu",
              "dropout": dropouts[0] if dropouts else 0.0,
              "n_inputs": model.n_inputs, "n_classes": model.n_classes}
    hyperparams = {k: v for k, v in model.recipe.items()
                   if k in ("optimizer", "lr", "momentum", "nesterov", "l2", "batch_size",
                            "epochs", "schedule", "val_size", "seed", "limit")}
    if "n_train" in model.trained_on:
        hyperparams["n_train"] = model.trained_on["n_train"]
    return {"format": "digitlab-mlp", "format_version": 1, "config": config,
            "seed": model.seed, "hyperparams": hyperparams, "history": model.history,
            "metrics": model.metrics, "train_seconds": float(model.train_seconds),
            "saved_at": "2026-12-01T00:00:00+00:00"}


def model_members(model, fmt="v2", header=None):
    """The zip members of ``model``'s file in format ``fmt``: {"name.npy": .npy bytes},
    header first, as ``nn.save`` (v2) or the old code (v1) wrote them."""
    header = header_of(model, fmt) if header is None else header
    out = {"header.npy": npy_bytes(np.frombuffer(json.dumps(header).encode(), np.uint8))}
    for name, p in zip(weight_names(model, fmt), model.parameters(), strict=True):
        out[f"{name}.npy"] = npy_bytes(np.ascontiguousarray(p.value, np.float32))
    return out


def header_text(members):
    """The JSON text of the header member built by ``model_members``."""
    blob = members["header.npy"]
    return blob[blob.index(b"\n") + 1:].decode()


def write_zip(path, members, compression=zipfile.ZIP_STORED):
    """Write ``members`` ({name: bytes}) as a zip archive at ``path`` (or into a file object)."""
    with zipfile.ZipFile(path, "w", compression=compression) as zf:
        for name, blob in members.items():
            zf.writestr(name, blob)
    return path


def write_model(model, path, fmt="v2"):
    """Save ``model`` at ``path`` in format ``fmt``: ``nn.save`` for v2, the old layout for v1."""
    if fmt == "v2":
        nn.save(model, path)
    else:
        write_zip(path, model_members(model, "v1"))
    return path


# ---------------------------------------------------------------- causes instead of clocks

class _CountingFile:
    """A file object that adds the bytes read through it to ``usage.file_bytes``."""

    def __init__(self, f, usage):
        self._f, self._usage = f, usage

    def _count(self, name, *args):
        result = getattr(self._f, name)(*args)
        self._usage.file_bytes += result if isinstance(result, int) else len(result or b"")
        return result

    def read(self, *args):
        return self._count("read", *args)

    def read1(self, *args):
        return self._count("read1", *args)

    def readline(self, *args):
        return self._count("readline", *args)

    def readinto(self, *args):
        return self._count("readinto", *args)

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __iter__(self):
        return iter(self.readline, b"")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()
        return False


class Usage:
    """What the code inside ``with Usage() as usage:`` did, the causes a clock would
    only hint at:

    - ``peak``: the largest amount of memory Python and NumPy held (tracemalloc);
    - ``file_bytes``: bytes read from files opened for reading in binary mode,
      and ``opened``: their names;
    - ``member_bytes``: bytes read out of zip members (inflated when deflated);
    - ``gzip_bytes``: bytes decompressed from gzip files;
    - ``decoded``: images Pillow decoded from a file (``ImageFile.load`` with
      pixel data still to read);
    - ``pixels``: pixels Pillow allocated for images (decoded or new).
    """

    def __enter__(self):
        self.peak = self.file_bytes = self.member_bytes = self.gzip_bytes = 0
        self.decoded = self.pixels = 0
        self.opened = []
        self._undo = []
        usage = self
        real_open = builtins.open

        def counting_open(file, mode="r", *args, **kwargs):
            f = real_open(file, mode, *args, **kwargs)
            if "b" in mode and "r" in mode and "+" not in mode:
                usage.opened.append(str(file))
                return _CountingFile(f, usage)
            return f

        def counted(cls, name, attr):
            real = getattr(cls, name)

            def wrapper(*args, **kwargs):
                result = real(*args, **kwargs)
                setattr(usage, attr, getattr(usage, attr) + len(result))
                return result
            return wrapper

        real_load = ImageFile.ImageFile.load

        def load(image, *args, **kwargs):
            usage.decoded += bool(getattr(image, "tile", None))
            return real_load(image, *args, **kwargs)

        def allocating(real):
            def wrapper(mode, size, *args):
                usage.pixels += int(size[0]) * int(size[1])
                return real(mode, size, *args)
            return wrapper

        self._patch(builtins, "open", counting_open)
        self._patch(io, "open", counting_open)
        for name in ("read", "read1"):
            self._patch(zipfile.ZipExtFile, name, counted(zipfile.ZipExtFile, name, "member_bytes"))
            self._patch(gzip.GzipFile, name, counted(gzip.GzipFile, name, "gzip_bytes"))
        self._patch(ImageFile.ImageFile, "load", load)
        for name in ("new", "fill"):
            self._patch(Image.core, name, allocating(getattr(Image.core, name)))
        tracemalloc.start()
        return self

    def _patch(self, owner, name, value):
        self._undo.append((owner, name, getattr(owner, name)))
        setattr(owner, name, value)

    def __exit__(self, *exc):
        self.peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        for owner, name, value in reversed(self._undo):
            setattr(owner, name, value)
        return False
