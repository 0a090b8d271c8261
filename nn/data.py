"""MNIST loading: the four original IDX files, validated, decoded and cached.

MNIST ships as four gzip-compressed IDX files. IDX is a tiny binary format:
a big-endian int32 magic number (2051 for images, 2049 for labels), one
big-endian int32 per dimension (count, then rows and columns for images),
then the raw uint8 payload in row-major order. We read that format directly
rather than through a dataset library so that the engine depends on NumPy
alone, the bytes on disk are the well-known published files (checkable by
MD5), and every way a file can be wrong (bad magic, truncated or padded
payload, corrupt gzip, labels out of range) is reported as a `DataError`
naming the file and the problem, instead of surfacing later as a
shape error deep inside training.

Folder resolution: explicit ``path`` argument, else the ``MNIST_DATA``
environment variable, else ``<repo>/data/mnist``. Missing files are
downloaded (MD5-verified, written atomically) unless ``download=False``.
This module never prints; pass ``progress=callable`` to receive messages.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import tempfile
import urllib.request
import zlib
from pathlib import Path
from typing import Callable, Optional

import numpy as np

__all__ = ["DataError", "DEFAULT_DIR", "FILES", "MIRRORS", "MD5", "resolve_data_dir",
           "mnist_available", "load_mnist", "one_hot", "clear_cache"]

DEFAULT_DIR = Path(__file__).resolve().parent.parent / "data" / "mnist"
ENV_VAR = "MNIST_DATA"
FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
MIRRORS = [
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
]
MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
TIMEOUT_S = 15
IMAGE_MAGIC, LABEL_MAGIC = 2051, 2049
ROWS = COLS = 28
_CHUNK = 1 << 22

Progress = Optional[Callable[[str], None]]
_CACHE: dict = {}


class DataError(ValueError):
    """A dataset file is missing, unreadable or malformed (message names the file)."""


def resolve_data_dir(path=None) -> Path:
    """Folder to use: ``path`` if given, else $MNIST_DATA if set, else DEFAULT_DIR (absolute)."""
    if path is None or str(path) == "":
        path = os.environ.get(ENV_VAR) or DEFAULT_DIR
    return Path(path).expanduser().resolve()


def _locate(folder: Path, name: str) -> Optional[Path]:
    """Path of ``name`` in ``folder``, accepting the uncompressed variant too; None if absent."""
    for candidate in (folder / name, folder / name[:-3]):
        if candidate.is_file():
            return candidate
    return None


def _missing(folder: Path) -> list:
    return [name for name in FILES.values() if _locate(folder, name) is None]


def mnist_available(path=None) -> bool:
    """True if all four MNIST files (gz or uncompressed) are present in the resolved folder."""
    return not _missing(resolve_data_dir(path))


def _read_exact(f, n: int) -> bytes:
    """Read up to n bytes in chunks, so a lying header can't make us allocate n bytes up front."""
    buf = bytearray()
    while len(buf) < n:
        chunk = f.read(min(_CHUNK, n - len(buf)))
        if not chunk:
            break
        buf += chunk
    return bytes(buf)


def _read_idx(path: Path, magic: int) -> np.ndarray:
    """Parse one IDX file (gz or raw). Returns uint8 (n, 28, 28) for images, (n,) for labels."""
    kind = "image" if magic == IMAGE_MAGIC else "label"
    header_len = 16 if magic == IMAGE_MAGIC else 8
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            header = _read_exact(f, header_len)
            if len(header) == 0:
                raise DataError(f"{path}: file is empty")
            if len(header) < header_len:
                raise DataError(f"{path}: truncated header ({len(header)} of {header_len} bytes)")
            dims = np.frombuffer(header, dtype=">u4").tolist()
            if dims[0] != magic:
                raise DataError(f"{path}: bad magic number {dims[0]} (expected {magic} for an "
                                f"IDX {kind} file)")
            count = dims[1]
            if magic == IMAGE_MAGIC and dims[2:] != [ROWS, COLS]:
                raise DataError(f"{path}: images are {dims[2]}x{dims[3]}, expected {ROWS}x{COLS}")
            expected = count * (ROWS * COLS if magic == IMAGE_MAGIC else 1)
            payload = _read_exact(f, expected)
            if len(payload) < expected:
                raise DataError(f"{path}: truncated payload: header declares {count} items "
                                f"({expected} bytes) but only {len(payload)} bytes follow")
            if f.read(1):
                raise DataError(f"{path}: extra bytes after the {count} items the header declares")
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: corrupt or unreadable file ({exc})") from exc
    data = np.frombuffer(payload, dtype=np.uint8)
    if magic == IMAGE_MAGIC:
        return data.reshape(count, ROWS, COLS)
    if data.size and data.max() > 9:
        raise DataError(f"{path}: label value {int(data.max())} out of range 0..9")
    return data


def _download_file(folder: Path, name: str, progress: Progress) -> None:
    """Fetch ``name`` from the first mirror that works; verify MD5; write atomically."""
    errors = []
    for mirror in MIRRORS:
        url = mirror + name
        if progress:
            progress(f"Downloading {name} from {url}")
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=folder)
        try:
            digest = hashlib.md5()
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=TIMEOUT_S) as resp:
                total = int(resp.headers.get("Content-Length") or 0)
                done, next_report = 0, 0.25
                while chunk := resp.read(1 << 16):
                    out.write(chunk)
                    digest.update(chunk)
                    done += len(chunk)
                    if progress and total and done / total >= next_report:
                        progress(f"  {name}: {done * 100 // total}% of {total / 1e6:.1f} MB")
                        next_report += 0.25
            if digest.hexdigest() != MD5[name]:
                errors.append(f"{url}: MD5 mismatch (got {digest.hexdigest()}, expected {MD5[name]})")
                continue
            os.replace(tmp, folder / name)
            if progress:
                progress(f"  {name}: saved and verified")
            return
        except (OSError, ValueError) as exc:  # URLError/HTTPError/timeouts are OSErrors
            errors.append(f"{url}: {getattr(exc, 'reason', exc)}")
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    raise DataError(f"{name}: " + "; ".join(errors))


def _ensure_files(folder: Path, download: bool, progress: Progress) -> None:
    missing = _missing(folder)
    if not missing:
        return
    how = (f"Set the {ENV_VAR} environment variable to a folder containing the four files "
           f"({', '.join(FILES.values())}), or pass --data DIR, or download them manually from "
           f"{MIRRORS[0]} into {folder}.")
    if not download:
        raise DataError(f"MNIST files missing in {folder}: {', '.join(missing)}. {how}")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for name in missing:
            _download_file(folder, name, progress)
    except (DataError, OSError) as exc:
        raise DataError(f"MNIST files missing in {folder} and could not download them "
                        f"({exc}). {how}") from exc


def load_mnist(path=None, download: bool = True, progress: Progress = None):
    """Load MNIST as ``(X_train, y_train), (X_test, y_test)``.

    X_train (60000, 784) and X_test (10000, 784) are float32 in [0, 1] (pixel / 255);
    y_train (60000,) and y_test (10000,) are int64 in 0..9. Arrays are read-only and
    cached per folder (and file size/mtime), so repeated calls are free.
    Raises DataError for missing (and undownloadable) or malformed files.
    """
    folder = resolve_data_dir(path)
    _ensure_files(folder, download, progress)
    paths = {key: _locate(folder, name) for key, name in FILES.items()}
    signature = tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in paths.values())
    cached = _CACHE.get(str(folder))
    if cached is not None and cached[0] == signature:
        return cached[1]
    result = []
    for split in ("train", "test"):
        images = _read_idx(paths[f"{split}_images"], IMAGE_MAGIC)
        labels = _read_idx(paths[f"{split}_labels"], LABEL_MAGIC)
        if len(images) != len(labels):
            raise DataError(f"{paths[f'{split}_images']} has {len(images)} images but "
                            f"{paths[f'{split}_labels']} has {len(labels)} labels")
        X = np.divide(images.reshape(len(images), ROWS * COLS), np.float32(255.0), dtype=np.float32)
        y = labels.astype(np.int64)
        X.setflags(write=False)
        y.setflags(write=False)
        result.append((X, y))
    result = tuple(result)
    _CACHE[str(folder)] = (signature, result)
    return result


def clear_cache() -> None:
    """Forget every cached dataset (mainly for tests)."""
    _CACHE.clear()


def one_hot(y, n_classes: int = 10) -> np.ndarray:
    """Labels (n,) of integers in 0..n_classes-1 -> (n, n_classes) float32 one-hot matrix."""
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"one_hot expects a 1-D label array, got shape {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"one_hot expects integer labels, got dtype {y.dtype}")
    if y.size and (y.min() < 0 or y.max() >= n_classes):
        raise ValueError(f"labels must be in 0..{n_classes - 1}, got range "
                         f"{int(y.min())}..{int(y.max())}")
    out = np.zeros((y.size, n_classes), dtype=np.float32)
    out[np.arange(y.size), y] = 1.0
    return out
