"""The saved networks: where they live, which names are allowed, saving and quotas.

Networks are ``<name>.npz`` files in ``$DIGITLAB_WEIGHTS`` (default: the
repository's ``weights/``). The shipped network is always
``<repo>/weights/default.npz`` and is never replaced.

Rules for saving, because many visitors share one folder:

- a name is 1-40 letters, digits, "-" or "_" (no dots or slashes, so it can
  never leave the folder), not "default" and not a name Windows reserves for
  devices (CON, PRN, AUX, NUL, COM1-9, LPT1-9, in any case);
- a name that exists (in any letter case) may only be replaced by the
  session that saved it, and only with "Overwrite" ticked; everyone else
  must pick another name (the page keeps each session's own names);
- the folder holds at most ``MAX_FILES`` files and ``MAX_BYTES`` bytes;
- a new name is claimed atomically (a hard link, which fails if the name
  exists), so two sessions saving the same name at once cannot overwrite
  each other; writes go to a temporary file first (``nn.save``).
"""

import os
import re
import threading
import uuid
from pathlib import Path

__all__ = ["ROOT", "DEFAULT_MODEL", "DEFAULT_NAME", "WEIGHTS_ENV", "MAX_FILES", "MAX_BYTES",
           "weights_dir", "check_name", "saved_networks", "network_file", "find_existing",
           "folder_usage", "save_network"]

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = ROOT / "weights" / "default.npz"
DEFAULT_NAME = "default"
WEIGHTS_ENV = "DIGITLAB_WEIGHTS"
MAX_FILES = 50
MAX_BYTES = 200 * 2**20
NAME_RE = re.compile(r"[A-Za-z0-9_-]{1,40}")
RESERVED = frozenset({"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)),
                      *(f"LPT{i}" for i in range(1, 10))})
HEADER_ALLOWANCE = 256 * 2**10   # bytes on top of the weights, for the JSON header and zip

_save_lock = threading.Lock()  # one save at a time in this server process


def weights_dir():
    """Where saved networks are listed and written: $DIGITLAB_WEIGHTS or <repo>/weights."""
    return Path(os.environ.get(WEIGHTS_ENV) or ROOT / "weights")


def check_name(name):
    """The error message for a bad "Save as" name, or None when it is fine."""
    if not NAME_RE.fullmatch(name):
        return ("Use 1–40 letters, digits, “-” or “_” for the name "
                "(no spaces, dots or slashes), e.g. “small-relu”.")
    if name.lower() == DEFAULT_NAME:
        return "“default” is the shipped network and cannot be replaced; pick another name."
    if name.upper() in RESERVED:
        return (f"“{name}” is a device name on Windows (CON, PRN, AUX, NUL, COM1–9, LPT1–9) "
                "and cannot be a file name there; pick another name.")
    return None


def _listable(stem):
    return check_name(stem) is None


def saved_networks(folder=None):
    """Names (file stems) of the saved networks other than the default, sorted."""
    folder = Path(folder) if folder is not None else weights_dir()
    if not folder.is_dir():
        return []
    return sorted(p.stem for p in folder.glob("*.npz") if _listable(p.stem))


def network_file(choice, folder=None):
    """The file behind a sidebar choice: the shipped default or ``<folder>/<choice>.npz``."""
    if choice == DEFAULT_NAME:
        return DEFAULT_MODEL
    return (Path(folder) if folder is not None else weights_dir()) / f"{choice}.npz"


def find_existing(folder, name):
    """The ``.npz`` file in ``folder`` whose name equals ``name`` ignoring case, or None
    (on a case-insensitive disk "Net" and "net" are one file, so they count as one)."""
    folder = Path(folder)
    exact = folder / f"{name}.npz"
    if exact.exists():
        return exact
    if not folder.is_dir():
        return None
    lower = name.lower()
    return next((p for p in folder.glob("*.npz") if p.stem.lower() == lower), None)


def folder_usage(folder):
    """``(files, bytes)`` of the regular files directly in ``folder`` (0, 0 if missing)."""
    files = total = 0
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.is_file(follow_symlinks=False):
                    files += 1
                    total += entry.stat(follow_symlinks=False).st_size
    except FileNotFoundError:
        pass
    return files, total


def _expected_size(model):
    """About how many bytes ``model`` takes on disk (float32 weights plus a header)."""
    return 4 * model.n_parameters + HEADER_ALLOWANCE


def save_network(model, name, *, overwrite=False, owned=(), folder=None):
    """Write ``model`` to ``<folder>/<name>.npz`` -> ``(ok, message)``.

    ``owned``: the names this browser session has saved (only those may be
    replaced, and only with ``overwrite``). ``folder`` defaults to
    ``weights_dir()``. Never replaces the default network; refuses when the
    folder is full. On success the caller should add ``name`` to ``owned``.
    """
    name = name.strip()
    problem = check_name(name)
    if problem:
        return False, problem
    folder = Path(folder) if folder is not None else weights_dir()
    path = folder / f"{name}.npz"
    if path.resolve() == DEFAULT_MODEL.resolve():
        return False, "The default network cannot be replaced; pick another name."
    with _save_lock:
        existing = find_existing(folder, name)
        if existing is not None:
            if existing.stem != name or name not in owned:
                return False, "A network with this name already exists; choose another name."
            if not overwrite:
                return False, (f"You saved “{name}” earlier in this session. Tick “Overwrite” "
                               "to replace it.")
        files, used = folder_usage(folder)
        old = existing.stat().st_size if existing is not None else 0
        if (existing is None and files + 1 > MAX_FILES
                or used - old + _expected_size(model) > MAX_BYTES):
            return False, (f"The saved-networks folder is full ({files} files, {used / 2**20:.0f} MB; "
                           f"the limit is {MAX_FILES} files and {MAX_BYTES / 2**20:.0f} MB), so "
                           "nothing more can be saved on this server.")
        try:
            folder.mkdir(parents=True, exist_ok=True)
            if existing is not None:
                model.save(path)  # replaced in one step (nn.save writes a temporary file first)
            elif not _save_new(model, path):
                return False, "A network with this name already exists; choose another name."
        except OSError as e:
            return False, f"Could not save “{name}”: {e.strerror or e}."
    return True, f"Saved as “{name}”: it now appears under “Active network” in the sidebar."


def _save_new(model, path):
    """Write ``model`` to ``path`` only if ``path`` does not exist (also against other
    processes): write a staging file, then hard-link it into place. False if taken."""
    staging = path.with_name(f".{path.stem}.{uuid.uuid4().hex[:12]}.tmp")
    model.save(staging)
    try:
        os.link(staging, path)
    except FileExistsError:
        return False
    except OSError:  # no hard links on this file system: the lock above must do
        if path.exists():
            return False
        os.replace(staging, path)
    finally:
        if staging.exists():
            staging.unlink()
    return True
