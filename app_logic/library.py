"""The networks on disk: the shipped ones, and those visitors save.

The shipped networks are ``weights/default.npz`` (the CNN the app starts
with) and ``weights/mlp.npz`` in the repository; they are never replaced.
Visitors save into ``$DIGITLAB_WEIGHTS`` (default: the repository's
``weights/``), and many visitors share that folder, so:

- a name is 1-40 letters, digits, "-" or "_" (no dots or slashes, so it can
  never leave the folder), not a shipped network's name and not a name
  Windows reserves for devices (CON, PRN, AUX, NUL, COM1-9, LPT1-9);
- names are unique whatever their letter case, across processes: saving
  first claims the lower-case name by creating ``.claims/<name>.json``
  exclusively (``O_EXCL``), which only one process can do; the claim holds
  the owner: the visitor id (a hash of the secret their browser keeps, see
  ``app_logic.identity``), so ownership survives a reload and a restart;
- only the owner may replace (with "Overwrite" ticked) or delete a network;
- the folder holds at most ``MAX_FILES`` networks and ``MAX_BYTES``, and one
  visitor at most ``MAX_PER_VISITOR``;
- writes go to a temporary file first (``nn.save``), then replace the target.

A model file in the folder is hostile input like any other: symbolic links
and anything but regular files are ignored, and a file is listed only if
``nn.load`` accepts it and it means what the app needs (784 inputs, 10
classes, a sane size); what fails is not listed and a log line says why.
"""

import json
import logging
import os
import re
import stat
import threading
import time
from pathlib import Path

import nn

from .cache import cached

__all__ = ["ROOT", "SHIPPED", "WEIGHTS_ENV", "MAX_FILES", "MAX_BYTES", "MAX_PER_VISITOR",
           "weights_dir", "check_name", "saved_networks", "network_file", "load_checked",
           "owner_of", "owned_by", "save_network", "delete_network", "meaning_problem"]

log = logging.getLogger("digitlab")

ROOT = Path(__file__).resolve().parents[1]
#: The shipped networks, by name: always listed first, never replaced.
SHIPPED = {"default": ROOT / "weights" / "default.npz", "mlp": ROOT / "weights" / "mlp.npz"}
WEIGHTS_ENV = "DIGITLAB_WEIGHTS"
MAX_FILES = 50
MAX_BYTES = 200 * 2**20
MAX_PER_VISITOR = 5
MAX_MODEL_BYTES = 20 * 2**20      # a saved network larger than this is not a Retrain result
NAME_RE = re.compile(r"[A-Za-z0-9_-]{1,40}")
RESERVED = frozenset({"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)),
                      *(f"LPT{i}" for i in range(1, 10))})
CLAIMS = ".claims"

_lock = threading.Lock()   # one save or delete at a time in this process (claims guard the rest)


def weights_dir():
    """Where saved networks are listed and written: $DIGITLAB_WEIGHTS or <repo>/weights."""
    return Path(os.environ.get(WEIGHTS_ENV) or ROOT / "weights")


def check_name(name):
    """The error message for a bad "Save as" name, or None when it is fine."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        return ("Use 1–40 letters, digits, “-” or “_” for the name "
                "(no spaces, dots or slashes), e.g. “small-relu”.")
    if name.lower() in SHIPPED:
        return f"“{name.lower()}” is a shipped network and cannot be replaced; pick another name."
    if name.upper() in RESERVED:
        return (f"“{name}” is a device name on Windows (CON, PRN, AUX, NUL, COM1–9, LPT1–9) "
                "and cannot be a file name there; pick another name.")
    return None


def network_file(name, folder=None):
    """The file behind a network's name: a shipped one, or ``<folder>/<name>.npz``."""
    if name in SHIPPED:
        return SHIPPED[name]
    if check_name(name) is not None:
        raise ValueError(f"not a network name: {name!r}")
    return (Path(folder) if folder is not None else weights_dir()) / f"{name}.npz"


def meaning_problem(model):
    """Why a network that ``nn.load`` accepted is still unfit for the app, or None:
    it must read 784 pixels and answer one of 10 digits."""
    if model.n_inputs != 784:
        return f"it reads {model.n_inputs} inputs, not a 28x28 image (784)"
    if model.n_classes != 10:
        return f"it answers {model.n_classes} classes, not the 10 digits"
    return None


def _regular_file(path):
    """``os.stat_result`` of ``path`` if it is a regular file (never following a
    symbolic link), else None."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return st if stat.S_ISREG(st.st_mode) else None


def load_checked(path):
    """``(network, cache key)`` for a model file that passes every check, shared by
    every session (never modify it). Raises ``nn.ModelFileError`` (form or
    meaning) or ``OSError`` (missing, not a regular file). Loaded once per file
    version: the key holds the file's modification time and size."""
    path = Path(path)
    st = _regular_file(path)
    if st is None:
        if path.is_symlink() or path.exists():
            raise nn.ModelFileError(f"{path.name}: not a regular file (links are not followed)")
        raise FileNotFoundError(path)
    if st.st_size > MAX_MODEL_BYTES and path not in SHIPPED.values():
        raise nn.ModelFileError(f"{path.name}: {st.st_size / 2**20:.0f} MB, larger than a saved "
                                f"network can be ({MAX_MODEL_BYTES // 2**20} MB)")
    key = f"file:{path}:{st.st_mtime_ns}:{st.st_size}"

    def load():  # failures are cached too: a bad file is read once, not on every rerun
        try:
            model = nn.load(path)
        except nn.ModelFileError as e:
            return None, str(e)
        problem = meaning_problem(model)
        return (None, f"{path.name}: not usable here: {problem}") if problem else (model, None)

    model, error = cached("network", key, load)
    if error:
        raise nn.ModelFileError(error)
    return model, key


def saved_networks(folder=None):
    """Names of the usable saved networks in ``folder`` (default ``weights_dir()``), sorted,
    shipped ones excluded. A file that fails a check is left out, with a log line."""
    folder = Path(folder) if folder is not None else weights_dir()
    names = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return []
    for entry in entries:
        stem, ext = os.path.splitext(entry.name)
        if ext != ".npz" or check_name(stem) is not None:
            continue
        if not entry.is_file(follow_symlinks=False):
            _warn_once(entry.path, "not a regular file (links are not followed)")
            continue
        try:
            load_checked(entry.path)
        except (nn.ModelFileError, OSError) as e:
            _warn_once(entry.path, e)
            continue
        names.append(stem)
    return sorted(names, key=str.lower)


_warned = set()


def _warn_once(path, error):
    key = (str(path), str(error))
    if key not in _warned:
        _warned.add(key)
        log.warning("not listing %s: %s", path, error)


# -- ownership ------------------------------------------------------------------------------

def _claim_path(folder, name):
    return Path(folder) / CLAIMS / f"{name.lower()}.json"


def owner_of(name, folder=None):
    """``(owner visitor id, exact name)`` from ``name``'s claim, or (None, None)."""
    folder = Path(folder) if folder is not None else weights_dir()
    path = _claim_path(folder, name)
    if _regular_file(path) is None:
        return None, None
    try:
        claim = json.loads(path.read_text(encoding="utf-8"))
        return str(claim["owner"]), str(claim["name"])
    except (OSError, ValueError, KeyError, TypeError):
        return None, None


def owned_by(visitor, folder=None):
    """The saved networks ``visitor`` owns (names as saved)."""
    folder = Path(folder) if folder is not None else weights_dir()
    names = []
    for name in saved_networks(folder):
        owner, exact = owner_of(name, folder)
        if owner == visitor and exact == name:
            names.append(name)
    return names


def _claim(folder, name, visitor):
    """Create ``name``'s claim for ``visitor``; False if the name (in any case) is taken."""
    path = _claim_path(folder, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump({"name": name, "owner": visitor, "created": time.time()}, f)
        f.flush()
        os.fsync(f.fileno())
    return True


def _usage(folder):
    """``(files, bytes)`` of the regular .npz files directly in ``folder``."""
    files = total = 0
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.name.endswith(".npz") and entry.is_file(follow_symlinks=False):
                    files += 1
                    total += entry.stat(follow_symlinks=False).st_size
    except FileNotFoundError:
        pass
    return files, total


def save_network(model, name, visitor, *, overwrite=False, folder=None):
    """Write ``model`` as ``<folder>/<name>.npz`` for ``visitor`` -> ``(ok, message)``."""
    name = name.strip() if isinstance(name, str) else name
    problem = check_name(name)
    if problem:
        return False, problem
    problem = meaning_problem(model)
    if problem:
        return False, f"This network cannot be saved: {problem}."
    folder = Path(folder) if folder is not None else weights_dir()
    path = folder / f"{name}.npz"
    expected = 4 * model.n_parameters + 256 * 2**10
    with _lock:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            owner, exact = owner_of(name, folder)
            new = owner is None
            if not new:
                if owner != visitor or exact != name:
                    return False, "A network with this name already exists; choose another name."
                if not overwrite:
                    return False, (f"You saved “{name}” before. Tick “Overwrite” to replace it.")
            elif any(p.stem.lower() == name.lower() for p in folder.glob("*.npz")):
                return False, "A network with this name already exists; choose another name."
            files, used = _usage(folder)
            old = path.stat().st_size if not new and path.exists() else 0
            if new and len(owned_by(visitor, folder)) >= MAX_PER_VISITOR:
                return False, (f"You have saved {MAX_PER_VISITOR} networks, the most one visitor "
                               "may keep here; delete one of yours to save another.")
            if (new and files + 1 > MAX_FILES) or used - old + expected > MAX_BYTES:
                return False, (f"The saved-networks folder is full ({files} networks, "
                               f"{used / 2**20:.0f} MB; the limit is {MAX_FILES} networks and "
                               f"{MAX_BYTES / 2**20:.0f} MB), so nothing more can be saved on "
                               "this server.")
            if new and not _claim(folder, name, visitor):
                return False, "A network with this name already exists; choose another name."
            try:
                nn.save(model, path)  # a temporary file first, then one rename
            except BaseException:
                if new:
                    _claim_path(folder, name).unlink(missing_ok=True)
                raise
        except OSError as e:
            return False, f"Could not save “{name}”: {e.strerror or e}."
    return True, f"Saved as “{name}”: it now appears under “Active network” in the sidebar."


def delete_network(name, visitor, folder=None):
    """Delete ``visitor``'s saved network ``name`` -> ``(ok, message)``."""
    if check_name(name) is not None:
        return False, "There is no such saved network."
    folder = Path(folder) if folder is not None else weights_dir()
    with _lock:
        owner, exact = owner_of(name, folder)
        if owner != visitor or exact != name:
            return False, f"“{name}” is not one of your networks, so you cannot delete it."
        try:
            (folder / f"{name}.npz").unlink(missing_ok=True)
            _claim_path(folder, name).unlink(missing_ok=True)
        except OSError as e:
            return False, f"Could not delete “{name}”: {e.strerror or e}."
    return True, f"Deleted “{name}”."

