"""Saving and loading a ``Network`` as one ``.npz`` file.

The file is a plain NumPy zip archive:

- ``W0, b0, W1, b1, ...``: the float32 weight and bias arrays, layer by layer;
- ``header``: a uint8 array holding UTF-8 JSON with the format name and
  version, the architecture, the training hyperparameters and seed, the
  per-epoch history, the test metrics (confusion matrix included) and the
  training time.

Nothing in it is pickled, and loading uses ``allow_pickle=False``: a model file
can carry numbers only, never code. A file that is not a valid model, for any
reason, raises ``ModelFileError`` saying what is wrong, and nothing is loaded.
Saving writes a temporary file beside the target and renames it into place, so
a crash mid-write never leaves a half-written model.
"""

import json
import math
import os
import tempfile
import zipfile
import zlib
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

__all__ = ["save", "load", "ModelFileError", "FORMAT", "FORMAT_VERSION", "MAX_FILE_BYTES"]

FORMAT = "digitlab-mlp"
FORMAT_VERSION = 1
MAX_FILE_BYTES = 256 * 2**20      # refuse larger files before reading them
MAX_HEADER_BYTES = 4 * 2**20
_NPY_OVERHEAD = 4096              # an .npy member's own header, generously


class ModelFileError(ValueError):
    """The file is not a valid Digit Lab model; the message says why."""


def _array_names(n_dense):
    return [f"{kind}{i}" for i in range(n_dense) for kind in ("W", "b")]


def save(model, path):
    """Write ``model`` to ``path`` (a ``.npz`` file), atomically.

    The parent folder must exist. An existing file at ``path`` is replaced in
    one step (``os.replace``), never truncated first.
    """
    path = Path(path)
    header = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": model.config,
        "seed": model.seed,
        "hyperparams": model.hyperparams,
        "history": model.history,
        "metrics": model.metrics,
        "train_seconds": float(model.train_seconds),
        "saved_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    header_bytes = json.dumps(header, allow_nan=False).encode("utf-8")
    arrays = {"header": np.frombuffer(header_bytes, dtype=np.uint8)}
    for i, layer in enumerate(model.dense_layers):
        arrays[f"W{i}"] = np.ascontiguousarray(layer.W, dtype=np.float32)
        arrays[f"b{i}"] = np.ascontiguousarray(layer.b, dtype=np.float32)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _fail(path, why):
    raise ModelFileError(f"{Path(path).name}: not a valid model file: {why}")


def _read_header(npz, path):
    raw = npz["header"]
    if raw.dtype != np.uint8 or raw.ndim != 1:
        _fail(path, "its header is not a JSON byte string")
    try:
        header = json.loads(raw.tobytes().decode("utf-8"))
    except (ValueError, RecursionError) as e:  # bad UTF-8 or JSON, a 5000-digit int, [[[[...
        _fail(path, f"its header is not valid JSON ({type(e).__name__}: {e})")
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        _fail(path, f"it is not a {FORMAT} file")
    version = header.get("format_version")
    if not isinstance(version, int) or version < 1:
        _fail(path, f"unknown format version {version!r}")
    if version > FORMAT_VERSION:
        _fail(path, f"it was written in format version {version}, newer than this program "
                    f"reads ({FORMAT_VERSION}); update Digit Lab")
    for key, kind in (("config", dict), ("history", list), ("metrics", dict),
                      ("hyperparams", dict)):
        if not isinstance(header.get(key), kind):
            _fail(path, f"its header has no valid {key!r}")
    return header


def _npy_header(zf, member, path):
    """``(shape, dtype)`` from a .npy member's own header, without reading its data: a
    header that lies about its shape must never make us allocate that shape."""
    with zf.open(member) as f:
        version = np.lib.format.read_magic(f)
        read = {(1, 0): np.lib.format.read_array_header_1_0,
                (2, 0): np.lib.format.read_array_header_2_0}.get(version)
        if read is None:
            raise ValueError(f"unsupported .npy format version {version}")
        shape, _, dtype = read(f)
    if dtype.hasobject:
        _fail(path, f"{member[:-4]} holds Python objects (pickled data), which are never loaded")
    return shape, dtype


def _check_declared_size(config, file_size, path):
    """Refuse a header that declares more weights than the file can hold, before
    allocating them (a 100-byte file must not make us allocate gigabytes)."""
    try:
        sizes = [int(config["n_inputs"]), *map(int, config["hidden"]), int(config["n_classes"])]
    except (KeyError, TypeError, ValueError) as e:
        _fail(path, f"its architecture is invalid ({e})")
    n_params = sum((a + 1) * b for a, b in zip(sizes[:-1], sizes[1:]))
    if n_params * 4 > file_size:
        _fail(path, f"its header declares {n_params:,} weights but the file is only {file_size:,} bytes")


def load(path):
    """Read a model written by ``save``. Raises ``ModelFileError`` for any bad file."""
    from .network import Network

    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as e:
        raise ModelFileError(f"{path.name}: cannot read the model file ({e.strerror})") from None
    if path.is_dir():
        _fail(path, "it is a directory")
    if size == 0:
        _fail(path, "the file is empty")
    if size > MAX_FILE_BYTES:
        _fail(path, f"it is {size / 2**20:.0f} MiB, above the {MAX_FILE_BYTES // 2**20} MiB limit")
    if not zipfile.is_zipfile(path):
        _fail(path, "it is not an .npz archive (a pickle, a truncated download or another format?)")
    try:
        with zipfile.ZipFile(path) as zf:
            members = {info.filename: info for info in zf.infolist()}
        names = {name[:-4] for name in members if name.endswith(".npy")}
        if len(names) != len(members):
            _fail(path, "it contains members that are not arrays")
        if "header" not in names:
            _fail(path, "it has no header")
        if members["header.npy"].file_size > MAX_HEADER_BYTES:
            _fail(path, "its header is too large")
        with np.load(path, allow_pickle=False) as npz:
            shape, dtype = _npy_header(npz.zip, "header.npy", path)
            if dtype != np.uint8 or len(shape) != 1 or shape[0] > MAX_HEADER_BYTES:
                _fail(path, "its header is not a JSON byte string")
            header = _read_header(npz, path)
            _check_declared_size(header["config"], size, path)
            try:
                model = Network(**{k: header["config"][k] for k in
                                   ("hidden", "activation", "dropout", "n_inputs", "n_classes")},
                                seed=int(header.get("seed", 0)))
            except (KeyError, TypeError, ValueError, OverflowError) as e:  # OverflowError: seed 1e999
                _fail(path, f"its architecture is invalid ({e})")
            expected = _array_names(len(model.dense_layers))
            missing = sorted(set(expected) - names)
            extra = sorted(names - set(expected) - {"header"})
            if missing:
                _fail(path, f"missing arrays: {', '.join(missing)}")
            if extra:
                _fail(path, f"unexpected arrays: {', '.join(extra[:5])}")
            params = model.parameters()
            arrays = []
            for name, param in zip(expected, params):
                # Check the declared size before reading, so a huge array is never loaded
                # (8 bytes per entry: a float64 array gets the dtype message below).
                if members[f"{name}.npy"].file_size > 8 * param.value.size + _NPY_OVERHEAD:
                    _fail(path, f"array {name} is larger than the architecture allows")
                shape, dtype = _npy_header(npz.zip, f"{name}.npy", path)  # before allocating anything
                if dtype != np.float32:
                    _fail(path, f"array {name} has dtype {dtype}, expected float32")
                if shape != param.value.shape:
                    _fail(path, f"array {name} has shape {shape}, expected {param.value.shape}")
                a = npz[name]
                if a.dtype != np.float32:
                    _fail(path, f"array {name} has dtype {a.dtype}, expected float32")
                if a.shape != param.value.shape:
                    _fail(path, f"array {name} has shape {a.shape}, expected {param.value.shape}")
                if not np.isfinite(a).all():
                    _fail(path, f"array {name} contains NaN or infinite values")
                arrays.append(a)
    except ModelFileError:
        raise
    except ValueError as e:  # includes "Object arrays cannot be loaded when allow_pickle=False"
        _fail(path, f"unreadable array ({e})")
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error, KeyError) as e:
        _fail(path, f"the archive is damaged ({type(e).__name__}: {e})")
    except Exception as e:  # hostile bytes reach zipfile's and NumPy's parsers: NotImplementedError
        # (compression method), RuntimeError (encrypted), tokenize.TokenError (.npy header), ...
        _fail(path, f"the archive is damaged ({type(e).__name__}: {e})")
    model.set_weights(arrays)
    model.hyperparams = header["hyperparams"]
    model.history = header["history"]
    model.metrics = header["metrics"]
    seconds = header.get("train_seconds", 0.0)
    model.train_seconds = float(seconds) if isinstance(seconds, (int, float)) and math.isfinite(seconds) else 0.0
    return model
