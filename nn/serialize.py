"""Saving and loading a ``Network`` as one ``.npz`` file.

The file is a plain NumPy zip archive:

- ``0.weight``, ``0.bias``, ``3.weight``, ...: the float32 parameters, named by
  the index of their layer in the spec (as in a PyTorch ``state_dict``);
- ``header``: a uint8 array holding UTF-8 JSON with the format name and
  version, the architecture ``spec``, the ``seed``, the training ``recipe``, the
  per-epoch ``history``, the test ``metrics`` (confusion matrix included) and
  the training time.

Files of format version 1 (``digitlab-mlp``: a multi-layer perceptron with
arrays ``W0, b0, W1, ...``), written before networks were built from specs,
still load and predict identically.

Nothing in a model file is pickled and loading uses ``allow_pickle=False``: a
model file can carry numbers only, never code. A model file is hostile input:
before any array is read, the header's spec is checked against the limits in
``nn.architecture`` and every array's declared shape and dtype against the
spec, so a small file cannot make the loader allocate what it declares; the
header's other values are checked for type and size too. Any bad file raises
``ModelFileError`` saying what is wrong, and nothing is loaded.

Saving writes a temporary file beside the target and renames it into place,
so a crash mid-write never leaves a half-written model.
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

from .architecture import check_spec, mlp_spec
from .network import Network

__all__ = ["save", "load", "ModelFileError", "FORMAT", "FORMAT_VERSION", "MAX_FILE_BYTES"]

FORMAT = "digitlab-network"
FORMAT_VERSION = 2
LEGACY_FORMAT = "digitlab-mlp"    # format version 1
MAX_FILE_BYTES = 256 * 2**20      # refuse larger files before reading them
MAX_HEADER_BYTES = 4 * 2**20
MAX_HISTORY = 10_000
_NPY_OVERHEAD = 4096              # an .npy member's own header, generously


class ModelFileError(ValueError):
    """The file is not a valid Digit Lab model; the message says why."""


def _array_names(model):
    return [f"{i}.{p.name}" for i, layer in enumerate(model.layers) for p in layer.parameters()]


def save(model, path):
    """Write ``model`` to ``path`` (a ``.npz`` file), atomically.

    The parent folder must exist. An existing file at ``path`` is replaced in
    one step (``os.replace``), never truncated first.
    """
    path = Path(path)
    header = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "spec": model.spec,
        "seed": model.seed,
        "recipe": model.recipe,
        "trained_on": model.trained_on,
        "history": model.history,
        "metrics": model.metrics,
        "train_seconds": float(model.train_seconds),
        "saved_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    header_bytes = json.dumps(header, allow_nan=False).encode("utf-8")
    arrays = {"header": np.frombuffer(header_bytes, dtype=np.uint8)}
    for name, p in zip(_array_names(model), model.parameters()):
        arrays[name] = np.ascontiguousarray(p.value, dtype=np.float32)
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


def _number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _scalar_or_list(v):
    if v is None or isinstance(v, bool) or _number(v):
        return True
    if isinstance(v, str):
        return len(v) <= 200
    if isinstance(v, list):
        return len(v) <= 64 and all(_number(x) for x in v)
    return False


def _check_header_values(header, n_classes, path):
    """Types and sizes of everything besides the weights: the app shows these
    values, so a file must not be able to make it choke on them."""
    for key, kind in (("recipe", dict), ("history", list), ("metrics", dict)):
        if not isinstance(header.get(key), kind):
            _fail(path, f"its header has no valid {key!r}")
    trained_on = header.get("trained_on", {})
    if not isinstance(trained_on, dict):
        _fail(path, "its header has no valid 'trained_on'")
    for key, values in (("recipe", header["recipe"]), ("trained_on", trained_on)):
        if len(values) > 100 or not all(isinstance(k, str) and len(k) <= 60 and _scalar_or_list(v)
                                        for k, v in values.items()):
            _fail(path, f"its {key} holds values that are not settings")
    history = header["history"]
    if len(history) > MAX_HISTORY:
        _fail(path, f"its history has {len(history):,} epochs (at most {MAX_HISTORY:,})")
    for record in history:
        if not (isinstance(record, dict) and len(record) <= 20 and isinstance(record.get("epoch"), int)
                and all(isinstance(k, str) and (v is None or _number(v)) for k, v in record.items())):
            _fail(path, "its history holds an entry that is not an epoch record")
    metrics = header["metrics"]
    if metrics:
        cm = metrics.get("confusion_matrix")
        ok = (_number(metrics.get("accuracy")) and 0 <= metrics["accuracy"] <= 1
              and isinstance(metrics.get("n"), int) and metrics["n"] >= 0
              and isinstance(cm, list) and len(cm) == n_classes
              and all(isinstance(row, list) and len(row) == n_classes
                      and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in row)
                      for row in cm))
        per_class = metrics.get("per_class")
        ok = ok and isinstance(per_class, dict) and all(
            isinstance(per_class.get(k), list) and len(per_class[k]) == n_classes
            and all(_number(v) for v in per_class[k]) for k in ("precision", "recall", "f1", "support"))
        ok = ok and all(isinstance(metrics.get(avg), dict)
                        and all(_number(metrics[avg].get(k)) for k in ("precision", "recall", "f1"))
                        for avg in ("macro", "weighted"))
        ok = ok and ("loss" not in metrics or _number(metrics["loss"]))
        if not ok:
            _fail(path, f"its test metrics are not a {n_classes}-class report")
    seconds = header.get("train_seconds", 0.0)
    if not (_number(seconds) and seconds >= 0):
        _fail(path, "its training time is not a number of seconds")
    seed = header.get("seed", 0)
    if not (isinstance(seed, int) and not isinstance(seed, bool) and 0 <= seed < 2**63):
        _fail(path, f"its seed {seed!r} is not a whole number")


def _read_header(npz, path):
    raw = npz["header"]
    if raw.dtype != np.uint8 or raw.ndim != 1:
        _fail(path, "its header is not a JSON byte string")
    try:
        header = json.loads(raw.tobytes().decode("utf-8"))
    except (ValueError, RecursionError) as e:  # bad UTF-8 or JSON, a 5000-digit int, [[[[...
        _fail(path, f"its header is not valid JSON ({type(e).__name__}: {e})")
    if not isinstance(header, dict) or header.get("format") not in (FORMAT, LEGACY_FORMAT):
        _fail(path, f"it is not a {FORMAT} file")
    version = header.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        _fail(path, f"unknown format version {version!r}")
    if version > FORMAT_VERSION:
        _fail(path, f"it was written in format version {version}, newer than this program "
                    f"reads ({FORMAT_VERSION}); update Digit Lab")
    if (header["format"] == LEGACY_FORMAT) != (version == 1):
        _fail(path, f"format {header['format']!r} does not go with version {version}")
    return header


def _legacy_header(header, path):
    """A version-1 header (multi-layer perceptron) in today's terms: its spec, its
    hyperparameters as a recipe, and the array names of each parameter."""
    config = header.get("config")
    if not isinstance(config, dict):
        _fail(path, "its header has no valid 'config'")
    try:
        hidden = config["hidden"]
        if not isinstance(hidden, list) or len(hidden) > 64:
            raise ValueError("hidden must be a list of widths")
        spec = mlp_spec(hidden, config["activation"], config["dropout"],
                        n_inputs=config["n_inputs"], n_classes=config["n_classes"])
    except (KeyError, TypeError, ValueError, OverflowError) as e:
        _fail(path, f"its architecture is invalid ({e})")
    hyper = header.get("hyperparams", {})
    if not isinstance(hyper, dict):
        _fail(path, "its header has no valid 'hyperparams'")
    recipe = {"conv": [], "hidden": list(hidden), "activation": config["activation"],
              "dropout": config["dropout"],
              **{k: v for k, v in hyper.items()
                 if k not in ("n_train", "limit", "betas", "eps") and v is not None}}
    trained_on = {k: hyper[k] for k in ("n_train",) if k in hyper}
    converted = {**header, "spec": spec, "recipe": recipe, "trained_on": trained_on}
    names = [f"{kind}{i}" for i in range(len(hidden) + 1) for kind in ("W", "b")]
    return converted, names


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


def load(path):
    """Read a model written by ``save`` (or by format version 1).

    Raises ``ModelFileError`` for any bad file; nothing is half-loaded.
    """
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
            legacy_names = None
            if header["format_version"] == 1:
                header, legacy_names = _legacy_header(header, path)
            try:
                _, n_classes, n_params = check_spec(header.get("spec"))
            except (TypeError, ValueError, OverflowError) as e:
                _fail(path, f"its architecture is invalid ({e})")
            if n_params * 4 > size:  # float32 weights are stored uncompressed
                _fail(path, f"its header declares {n_params:,} weights but the file is only "
                            f"{size:,} bytes")
            _check_header_values(header, n_classes, path)
            model = Network(header["spec"], seed=header.get("seed", 0))
            expected = legacy_names or _array_names(model)
            missing = sorted(set(expected) - names)
            extra = sorted(names - set(expected) - {"header"})
            if missing:
                _fail(path, f"missing arrays: {', '.join(missing)}")
            if extra:
                _fail(path, f"unexpected arrays: {', '.join(extra[:5])}")
            arrays = []
            for name, param in zip(expected, model.parameters()):
                # The declared size, before reading: a huge array is never loaded
                # (8 bytes per entry, so a float64 array gets the dtype message below).
                if members[f"{name}.npy"].file_size > 8 * param.value.size + _NPY_OVERHEAD:
                    _fail(path, f"array {name} is larger than the architecture allows")
                shape, dtype = _npy_header(npz.zip, f"{name}.npy", path)
                if dtype != np.float32:
                    _fail(path, f"array {name} has dtype {dtype}, expected float32")
                if shape != param.value.shape:
                    _fail(path, f"array {name} has shape {shape}, expected {param.value.shape}")
                a = npz[name]
                if a.dtype != np.float32 or a.shape != param.value.shape:
                    _fail(path, f"array {name} is not what its header declared")
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
    model.recipe = header["recipe"]
    model.trained_on = header.get("trained_on", {})
    model.history = header["history"]
    model.metrics = header["metrics"]
    model.train_seconds = float(header.get("train_seconds", 0.0))
    return model
