"""The drawings database: labelled canvas drawings, per visitor and per class.

A visitor (an opaque hex string, a hash of a browser secret) draws a digit,
says which digit it is, and the drawing is stored so that the network can be
taught that visitor's handwriting. Collections:

- every visitor has one personal collection, "My drawings" (made on first use);
- a teacher creates a class collection and gets a 6-character join code;
  students join with it and see everyone's drawings there (pooling is the
  point), but delete only their own.

A visitor sees their personal collection, the classes they created and the
classes they joined, nothing else: every method takes ``visitor`` and checks.

Storage is one SQLite file (stdlib ``sqlite3``), chosen by ``$DIGITLAB_DB``
(a path or ``sqlite:///abs/path``, ``?mode=ro`` to open it read-only),
default ``<repo>/data/digitlab.sqlite3``. Why it is built the way it is:

- WAL journal: readers never wait for the writer, and a crash mid-write
  leaves the last committed state. Every write is one short ``BEGIN
  IMMEDIATE`` transaction (all or nothing: an import of 500 drawings either
  lands whole or not at all); a write that finds the file locked waits for
  sqlite's busy timeout, then is retried a few times with backoff.
- Connections are borrowed from a small pool, one call at a time, so any
  thread may call any method; keeping a connection open also keeps the WAL
  from being checkpointed and deleted after every call.
- Nothing happens at import or in ``open_store``: the file is opened, checked
  and migrated on the first call, so the page keeps drawing and predicting
  when the store is broken. Every failure a caller can meet is a
  ``StoreError`` with a sentence for the page (``_error_for`` is the one place
  that turns sqlite3's exceptions into those sentences). A file that is not
  ours, damaged, or from a newer Digit Lab is never written to.
- The schema is ``MIGRATIONS``, applied in order in one transaction; the
  version is kept in the ``meta`` table. To change the schema, append a
  migration: never edit one that has shipped.
- SQL is parameterised throughout; user text is never formatted into it.

A server database (PostgreSQL) would be a sibling of ``Store`` with the same
public methods, returned by ``open_store`` for a ``postgresql://`` URL.
"""

import csv
import dataclasses
import datetime
import io
import math
import numbers
import os
import random
import re
import secrets
import sqlite3
import threading
import time
import unicodedata
import zipfile
import zlib
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

import numpy as np
from PIL import Image

__all__ = ["DB_ENV", "DEFAULT_DB", "PERSONAL_NAME", "MAX_DRAWINGS_PER_VISITOR",
           "MAX_DRAWINGS_PER_COLLECTION", "MAX_CLASSES_PER_VISITOR", "MAX_NAME_CHARS",
           "MAX_THUMB_BYTES", "MAX_IMPORT_BYTES", "CODE_ALPHABET", "CODE_LENGTH",
           "BUSY_TIMEOUT_S", "RETRY_DELAYS", "MIGRATIONS", "StoreError", "QuotaError",
           "ReadOnlyError", "BusyError", "Collection", "Drawings", "Store", "open_store",
           "normalise_code"]

ROOT = Path(__file__).resolve().parents[1]
DB_ENV = "DIGITLAB_DB"
DEFAULT_DB = ROOT / "data" / "digitlab.sqlite3"
PERSONAL_NAME = "My drawings"
MAX_DRAWINGS_PER_VISITOR = 2_000      # in all collections together
MAX_DRAWINGS_PER_COLLECTION = 20_000
MAX_CLASSES_PER_VISITOR = 20          # created (joining is free)
MAX_NAME_CHARS = 60
MAX_MODEL_CHARS = 100
MAX_THUMB_BYTES = 64 * 2**10
MAX_THUMB_SIDE = 512                  # pixels, so a thumbnail cannot be a decompression bomb
MAX_IMPORT_BYTES = 10 * 2**20
CODE_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"   # no 0/O, 1/I/L: read aloud, typed by children
CODE_LENGTH = 6
BUSY_TIMEOUT_S = 1.0                  # sqlite waits this long for another process's lock ...
RETRY_DELAYS = (0.1, 0.3, 0.6)        # ... then we retry after these pauses (+-50% jitter)
QUEUE_TIMEOUT_S = 30.0                # a writer waits this long behind this server's others:
# their writes take milliseconds, but on a starved machine (a class's 30 browsers on the
# server's own cores) a waiting thread may not run for seconds; waiting is safe.
POOL_SIZE = 8                         # idle connections kept open
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
VISITOR_RE = re.compile(r"[0-9a-f]{16,128}")
CSV_HEADER = ("id", "label", "created", *(f"p{i}" for i in range(784)))

# Each migration is a tuple of SQL statements (or a callable taking the
# connection), run in one transaction with the others still pending.
MIGRATIONS = (
    (  # 1: the initial schema
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value)",
        """CREATE TABLE collections (
               id      INTEGER PRIMARY KEY,
               kind    TEXT NOT NULL CHECK (kind IN ('personal', 'class')),
               name    TEXT NOT NULL,
               owner   TEXT NOT NULL,
               code    TEXT UNIQUE,
               created REAL NOT NULL,
               CHECK ((kind = 'class') = (code IS NOT NULL)))""",
        "CREATE UNIQUE INDEX one_personal ON collections (owner) WHERE kind = 'personal'",
        "CREATE INDEX collections_owner ON collections (owner)",
        """CREATE TABLE members (
               collection_id INTEGER NOT NULL REFERENCES collections (id) ON DELETE CASCADE,
               visitor       TEXT NOT NULL,
               joined        REAL NOT NULL,
               PRIMARY KEY (collection_id, visitor)) WITHOUT ROWID""",
        "CREATE INDEX members_visitor ON members (visitor)",
        """CREATE TABLE drawings (
               id            INTEGER PRIMARY KEY,
               collection_id INTEGER NOT NULL REFERENCES collections (id) ON DELETE CASCADE,
               visitor       TEXT NOT NULL,
               label         INTEGER NOT NULL CHECK (label BETWEEN 0 AND 9),
               pixels        BLOB NOT NULL CHECK (length(pixels) = 784),
               thumb         BLOB NOT NULL,
               predicted     INTEGER CHECK (predicted BETWEEN 0 AND 9),
               model         TEXT,
               created       REAL NOT NULL)""",
        "CREATE INDEX drawings_collection ON drawings (collection_id, id)",
        "CREATE INDEX drawings_visitor ON drawings (visitor, collection_id)",
    ),
)


class StoreError(Exception):
    """Anything the store cannot do, with a sentence the page can show as is."""


class QuotaError(StoreError):
    """A limit would be exceeded; the message gives the limit and what is stored."""


class ReadOnlyError(StoreError):
    """The database can be read but not written."""


class BusyError(StoreError):
    """The database stayed locked by another writer; trying again later may work."""


@dataclasses.dataclass(frozen=True)
class Collection:
    """One collection as a visitor sees it. ``code`` is None for the personal one."""
    id: int
    name: str
    kind: str            # "personal" or "class"
    code: str | None
    is_owner: bool
    n_drawings: int


@dataclasses.dataclass(frozen=True, eq=False)
class Drawings:
    """n drawings, oldest first: ids, labels (int64), images (n, 784) float32 in [0, 1],
    predicted (-1 when unknown), created (seconds since the epoch), mine (bool)."""
    ids: np.ndarray
    labels: np.ndarray
    images: np.ndarray
    predicted: np.ndarray
    created: np.ndarray
    mine: np.ndarray

    def __len__(self):
        return len(self.ids)


def open_store(url=None):
    """The store named by ``url``, else ``$DIGITLAB_DB``, else the default file.

    ``url``: a file path, or ``sqlite:///abs/path`` (three or four slashes
    both mean an absolute path), optionally ``?mode=ro`` to never write.
    Cheap: nothing is opened until the first call.
    """
    url = os.fspath(url) if url is not None else os.environ.get(DB_ENV) or str(DEFAULT_DB)
    if not isinstance(url, str) or "\x00" in url:
        raise StoreError("The database setting (DIGITLAB_DB) must be a file path or a URL.")
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme in ("postgres", "postgresql"):
        raise StoreError("PostgreSQL is not supported yet: set DIGITLAB_DB to a file path "
                         "or a sqlite:/// URL.")
    if scheme not in ("", "sqlite"):
        raise StoreError(f"Unknown database URL scheme “{scheme}”: set DIGITLAB_DB to a "
                         "file path or a sqlite:///absolute/path URL.")
    if not scheme:
        return Store(Path(url).expanduser().absolute())
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    if parts.netloc or not parts.path.strip("/") or set(query) - {"mode"} or \
            query.get("mode", "rw") not in ("ro", "rw", "rwc"):
        raise StoreError("A SQLite URL looks like sqlite:///absolute/path/digitlab.sqlite3 "
                         "(add ?mode=ro to open it read-only).")
    return Store(Path("/" + unquote(parts.path).lstrip("/")), read_only=query.get("mode") == "ro")


def normalise_code(text):
    """What a student typed -> a code to look up: stripped, upper-case, no spaces or dashes."""
    if not isinstance(text, str):
        return ""
    return re.sub(r"[\s\-\u2010-\u2015\u2212]", "", text).upper()


class Store:
    """The drawings database in one SQLite file; safe to share between threads.

    Every method takes the ``visitor`` it acts for and raises ``StoreError``
    (or a subclass) for anything it cannot do; nothing is half-written.
    """

    def __init__(self, path, read_only=False):
        self.path = Path(path).expanduser().absolute()
        self.read_only = read_only
        self._ready = False                 # schema checked (and migrated) by this object
        self._schema_lock = threading.Lock()
        self._pool_lock = threading.Lock()
        self._write_lock = threading.Lock()    # one writer at a time from this process
        self._idle = []
        self._pid = os.getpid()

    def __repr__(self):
        return f"Store({str(self.path)!r}{', read_only=True' if self.read_only else ''})"

    # -- collections ------------------------------------------------------

    def personal_collection(self, visitor):
        """The id of the visitor's "My drawings" collection, created on first use."""
        visitor = _check_visitor(visitor)
        found = self._read(lambda c: _personal_id(c, visitor))
        return found if found is not None else self._write(lambda c: _make_personal(c, visitor))

    def collections(self, visitor):
        """The collections the visitor may see: personal first, then classes, oldest first.

        Creates the personal one on first use, except in a read-only database.
        """
        visitor = _check_visitor(visitor)
        query = """SELECT c.id, c.name, c.kind, c.code, c.owner = ?1,
                          (SELECT COUNT(*) FROM drawings d WHERE d.collection_id = c.id)
                   FROM collections c
                   WHERE c.owner = ?1 OR c.id IN (SELECT collection_id FROM members
                                                  WHERE visitor = ?1)
                   ORDER BY c.kind = 'class', c.created, c.id"""
        rows = self._read(lambda c: c.execute(query, (visitor,)).fetchall())
        if not any(r[2] == "personal" for r in rows) and not self.read_only:
            try:
                self._write(lambda c: _make_personal(c, visitor))
            except ReadOnlyError:
                pass
            else:
                rows = self._read(lambda c: c.execute(query, (visitor,)).fetchall())
        return [Collection(i, n, k, code, bool(own), count) for i, n, k, code, own, count in rows]

    def create_class(self, visitor, name):
        """A new class collection owned by the visitor, with a fresh join code."""
        visitor, name = _check_visitor(visitor), _check_text(name, "A class name", MAX_NAME_CHARS)

        def work(conn):
            (made,) = conn.execute("SELECT COUNT(*) FROM collections WHERE owner = ? "
                                   "AND kind = 'class'", (visitor,)).fetchone()
            if made >= MAX_CLASSES_PER_VISITOR:
                raise QuotaError(f"You have created {made} classes, the most allowed is "
                                 f"{MAX_CLASSES_PER_VISITOR}: delete one before creating another.")
            code = _new_code(conn)
            cur = conn.execute("INSERT INTO collections (kind, name, owner, code, created) "
                               "VALUES ('class', ?, ?, ?, ?)", (name, visitor, code, time.time()))
            return Collection(cur.lastrowid, name, "class", code, True, 0)
        return self._write(work)

    def join_class(self, visitor, code):
        """Join the class with this code (as typed: spaces, dashes and case don't matter)."""
        visitor, code = _check_visitor(visitor), normalise_code(code)

        def work(conn):
            row = conn.execute("SELECT id, name, owner FROM collections WHERE code = ? "
                               "AND kind = 'class'", (code,)).fetchone()
            if row is None:
                raise StoreError(f"Class code not found: check it with your teacher (a code is "
                                 f"{CODE_LENGTH} letters and digits, like K7QM2X).")
            if row[2] != visitor:
                conn.execute("INSERT OR IGNORE INTO members VALUES (?, ?, ?)",
                             (row[0], visitor, time.time()))
            (n,) = conn.execute("SELECT COUNT(*) FROM drawings WHERE collection_id = ?",
                                (row[0],)).fetchone()
            return Collection(row[0], row[1], "class", code, row[2] == visitor, n)
        return self._write(work)

    def delete_class(self, visitor, collection_id):
        """Delete a class the visitor created, its drawings and memberships; -> drawings deleted."""
        visitor, cid = _check_visitor(visitor), _check_id(collection_id, "collection")

        def work(conn):
            kind, owner = _visible(conn, visitor, cid)
            if kind != "class":
                raise StoreError("“My drawings” cannot be deleted; delete its drawings "
                                 "instead.")
            if owner != visitor:
                raise StoreError("Only the teacher who created this class can delete it.")
            (n,) = conn.execute("SELECT COUNT(*) FROM drawings WHERE collection_id = ?",
                                (cid,)).fetchone()
            conn.execute("DELETE FROM collections WHERE id = ?", (cid,))  # cascades
            return n
        return self._write(work)

    # -- drawings ---------------------------------------------------------

    def add_drawing(self, visitor, collection_id, label, image28, thumb_png, predicted=None,
                    model=None):
        """Store one labelled drawing; -> its id.

        label: int 0..9; image28: (28, 28) or (784,) floats in [0, 1] (kept as
        784 uint8 bytes); thumb_png: PNG bytes, at most ``MAX_THUMB_BYTES``;
        predicted: what the network said (0..9) or None; model: its name or None.
        """
        visitor, cid = _check_visitor(visitor), _check_id(collection_id, "collection")
        label = _check_digit(label, "The label")
        predicted = None if predicted is None else _check_digit(predicted, "The prediction")
        model = None if model is None else _check_text(model, "A model name", MAX_MODEL_CHARS)
        pixels, thumb = _pixels(image28).tobytes(), _check_png(thumb_png)

        def work(conn):
            _visible(conn, visitor, cid)
            _check_room(conn, visitor, cid, 1)
            return conn.execute(
                "INSERT INTO drawings (collection_id, visitor, label, pixels, thumb, predicted, "
                "model, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (cid, visitor, label, pixels, thumb, predicted, model, time.time())).lastrowid
        return self._write(work)

    def drawings(self, visitor, collection_id, mine_only=False):
        """The drawings in a collection the visitor can see (or only theirs), oldest first."""
        ids, labels, pixels, predicted, created, mine = self._fetch(visitor, collection_id,
                                                                    mine_only)
        return Drawings(ids, labels, pixels.astype(np.float32) / 255.0, predicted, created, mine)

    def thumbnail(self, visitor, drawing_id):
        """The PNG bytes stored with a drawing the visitor can see."""
        visitor, did = _check_visitor(visitor), _check_id(drawing_id, "drawing")

        def work(conn):
            row = conn.execute("SELECT collection_id, thumb FROM drawings WHERE id = ?",
                               (did,)).fetchone()
            if row is None:
                raise StoreError("That drawing was not found (it may have been deleted).")
            _visible(conn, visitor, row[0], missing="That drawing was not found.")
            return bytes(row[1])
        return self._read(work)

    def counts(self, visitor, collection_id, mine_only=False):
        """(10,) int64: how many drawings of each digit the collection holds."""
        visitor, cid = _check_visitor(visitor), _check_id(collection_id, "collection")

        def work(conn):
            _visible(conn, visitor, cid)
            return conn.execute("SELECT label, COUNT(*) FROM drawings WHERE collection_id = ?"
                                + (" AND visitor = ?" if mine_only else "") + " GROUP BY label",
                                (cid, visitor) if mine_only else (cid,)).fetchall()
        counts = np.zeros(10, dtype=np.int64)
        for label, n in self._read(work):
            counts[label] = n
        return counts

    def delete_drawing(self, visitor, drawing_id):
        """Delete one of the visitor's own drawings."""
        visitor, did = _check_visitor(visitor), _check_id(drawing_id, "drawing")

        def work(conn):
            row = conn.execute("SELECT collection_id, visitor FROM drawings WHERE id = ?",
                               (did,)).fetchone()
            if row is None:
                raise StoreError("That drawing was not found (it may have been deleted already).")
            _visible(conn, visitor, row[0], missing="That drawing was not found.")
            if row[1] != visitor:
                raise StoreError("You can delete only your own drawings.")
            conn.execute("DELETE FROM drawings WHERE id = ?", (did,))
        self._write(work)

    def delete_all_mine(self, visitor, collection_id=None):
        """Delete all the visitor's drawings, everywhere or in one collection; -> how many."""
        visitor = _check_visitor(visitor)
        cid = None if collection_id is None else _check_id(collection_id, "collection")

        def work(conn):
            if cid is None:
                return conn.execute("DELETE FROM drawings WHERE visitor = ?", (visitor,)).rowcount
            _visible(conn, visitor, cid)
            return conn.execute("DELETE FROM drawings WHERE visitor = ? AND collection_id = ?",
                                (visitor, cid)).rowcount
        return self._write(work)

    # -- export and import ----------------------------------------------

    def export_npz(self, visitor, collection_id, mine_only=False):
        """An .npz file's bytes: images uint8 (n, 28, 28), labels int64 (n,) and
        created float64 (n,), seconds since the epoch."""
        _, labels, pixels, _, created, _ = self._fetch(visitor, collection_id, mine_only)
        buf = io.BytesIO()
        np.savez_compressed(buf, images=pixels.reshape(-1, 28, 28), labels=labels,
                            created=created)
        return buf.getvalue()

    def export_csv(self, visitor, collection_id, mine_only=False):
        """CSV text: a header row, then one row per drawing: id, label, created
        (ISO 8601, UTC), p0..p783 (whole numbers 0-255, row by row)."""
        ids, labels, pixels, _, created, _ = self._fetch(visitor, collection_id, mine_only)
        out = io.StringIO()
        out.write(",".join(CSV_HEADER) + "\n")
        for i, label, t, row in zip(ids.tolist(), labels.tolist(), created.tolist(), pixels):
            stamp = datetime.datetime.fromtimestamp(t, datetime.timezone.utc)
            out.write(f"{i},{label},{stamp.isoformat(timespec='microseconds')},"
                      + ",".join(map(str, row.tolist())) + "\n")
        return out.getvalue()

    def import_file(self, visitor, collection_id, data, filename=""):
        """Add the drawings in an exported .npz or .csv file (detected from the bytes); -> how many.

        The file is treated as hostile: at most ``MAX_IMPORT_BYTES``, never
        unpickled, only the expected arrays or columns, every value checked.
        All rows go in one transaction, or none do.
        """
        visitor, cid = _check_visitor(visitor), _check_id(collection_id, "collection")
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise StoreError("An import needs the file's bytes.")
        data = bytes(data)
        if len(data) > MAX_IMPORT_BYTES:
            raise StoreError(f"The file is {len(data) / 2**20:.1f} MB; the most an import "
                             f"takes is {MAX_IMPORT_BYTES / 2**20:.0f} MB.")
        if data[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
            pixels, labels, created = _parse_npz(data)
        else:
            pixels, labels, created = _parse_csv(data, str(filename).lower().endswith(".npz"))
        if not len(labels):
            raise StoreError("The file holds no drawings.")
        now = time.time()
        rows = [(cid, visitor, label, img.tobytes(), _thumbnail_png(img), now if math.isnan(t)
                 else t) for label, img, t in zip(labels.tolist(), pixels, created.tolist())]

        def work(conn):
            _visible(conn, visitor, cid)
            _check_room(conn, visitor, cid, len(rows))
            conn.executemany("INSERT INTO drawings (collection_id, visitor, label, pixels, "
                             "thumb, created) VALUES (?, ?, ?, ?, ?, ?)", rows)
            return len(rows)
        return self._write(work)

    # -- transactions, connections and errors --------------------------

    def close(self):
        """Close the idle connections (the store stays usable: it reopens on demand)."""
        with self._pool_lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def _fetch(self, visitor, collection_id, mine_only):
        """ids, labels (int64), pixels (n, 784) uint8, predicted (-1: none), created, mine."""
        visitor, cid = _check_visitor(visitor), _check_id(collection_id, "collection")

        def work(conn):
            _visible(conn, visitor, cid)
            return conn.execute(
                "SELECT id, label, pixels, coalesce(predicted, -1), created, visitor = ? "
                "FROM drawings WHERE collection_id = ?" + (" AND visitor = ?" if mine_only
                                                           else "") + " ORDER BY id",
                (visitor, cid, visitor) if mine_only else (visitor, cid)).fetchall()
        rows = self._read(work)
        ids, labels, pixels, predicted, created, mine = zip(*rows) if rows else ([],) * 6
        return (np.array(ids, dtype=np.int64), np.array(labels, dtype=np.int64),
                np.frombuffer(b"".join(pixels), dtype=np.uint8).reshape(-1, 784),
                np.array(predicted, dtype=np.int64), np.array(created, dtype=np.float64),
                np.array(mine, dtype=bool))

    def _read(self, work):
        self._ensure_schema()
        return self._attempt(work, "BEGIN")

    def _write(self, work):
        self._ensure_schema()
        if self.read_only:
            raise ReadOnlyError(_READ_ONLY)
        return self._attempt(work, "BEGIN IMMEDIATE")

    def _ensure_schema(self):
        """Check the file once per Store: ours, not newer than this code; migrate if older."""
        if self._ready:
            return
        with self._schema_lock:
            if self._ready:
                return
            if not self.read_only:
                try:
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise StoreError(f"Cannot create the folder for the drawings database "
                                     f"({self.path.parent}): {exc.strerror}.") from exc
            version = self._attempt(self._schema_version, "BEGIN")
            if version < len(MIGRATIONS):
                if self.read_only:
                    raise ReadOnlyError("The drawings database needs an upgrade for this "
                                        "version of Digit Lab, but it is read-only.")
                self._attempt(lambda conn: conn.execute("PRAGMA journal_mode = WAL"), None)
                self._attempt(self._migrate, "BEGIN IMMEDIATE")
            self._ready = True

    def _schema_version(self, conn):
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "meta" not in tables:
            if tables:
                raise StoreError(f"{self.path} is an SQLite database but not Digit Lab's; "
                                 "it was left untouched. Set DIGITLAB_DB to another file.")
            return 0
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        if row is None or not isinstance(row[0], int):
            raise StoreError(f"The drawings database {self.path} is damaged (no schema "
                             "version); it was left untouched.")
        if row[0] > len(MIGRATIONS):
            raise StoreError(f"The drawings database {self.path} was written by a newer version "
                             f"of Digit Lab (schema {row[0]}; this one knows up to "
                             f"{len(MIGRATIONS)}). Update Digit Lab; the file was left untouched.")
        return row[0]

    def _migrate(self, conn):
        """Apply the missing migrations in order (inside the caller's write transaction)."""
        version = self._schema_version(conn)   # again: another process may have migrated
        for number in range(version + 1, len(MIGRATIONS) + 1):
            step = MIGRATIONS[number - 1]
            if callable(step):
                step(conn)
            else:
                for statement in step:
                    conn.execute(statement)
            conn.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                             [("schema_version", number), (f"migration_{number}", time.time())])

    def _attempt(self, work, begin, immutable=False):
        """work(conn) in one transaction (``begin``; None: autocommit), retried while busy."""
        for delay in (*RETRY_DELAYS, None):
            try:
                return self._once(work, begin, immutable)
            except sqlite3.Error as exc:
                error = _error_for(exc, self.path, writing=begin != "BEGIN")
                if isinstance(error, BusyError) and delay is not None:
                    time.sleep(delay * random.uniform(0.5, 1.5))
                    continue
                if isinstance(error, ReadOnlyError) and begin == "BEGIN" and not immutable:
                    # A WAL file in a read-only folder: sqlite cannot create the -shm
                    # file even to read. Nobody can write there, so read it as immutable.
                    return self._attempt(work, begin, immutable=True)
                raise error from exc

    def _once(self, work, begin, immutable):
        if begin != "BEGIN IMMEDIATE":
            return self._in_transaction(work, begin, immutable)
        # Writers from this process queue on a lock rather than in sqlite's busy
        # handler, which polls with sleeps of up to 100 ms.
        if not self._write_lock.acquire(timeout=QUEUE_TIMEOUT_S):
            raise sqlite3.OperationalError("database is locked (by this server's other writers)")
        try:
            return self._in_transaction(work, begin, immutable)
        finally:
            self._write_lock.release()

    def _in_transaction(self, work, begin, immutable):
        conn = self._connect(immutable) if immutable else self._borrow()
        try:
            if begin:
                conn.execute(begin)
            result = work(conn)
            if begin:
                conn.execute("COMMIT")
        except BaseException:
            try:
                if conn.in_transaction:
                    conn.rollback()
            except sqlite3.Error:
                pass
            conn.close()          # never pool a connection that failed
            raise
        if immutable:
            conn.close()
        else:
            self._give_back(conn)
        return result

    def _connect(self, immutable=False):
        """A new connection: autocommit (we BEGIN ourselves), busy timeout, foreign keys."""
        if self.read_only or immutable:
            target = self.path.as_uri() + "?mode=ro" + ("&immutable=1" if immutable else "")
            uri = True
        else:
            target, uri = str(self.path), False
        conn = sqlite3.connect(target, timeout=BUSY_TIMEOUT_S, isolation_level=None,
                               check_same_thread=False, uri=uri)
        conn.execute("PRAGMA foreign_keys = ON")
        return conn

    def _borrow(self):
        with self._pool_lock:
            if self._pid != os.getpid():        # forked: the parent's connections are not ours
                self._idle, self._pid = [], os.getpid()
            if self._idle:
                return self._idle.pop()
        return self._connect()

    def _give_back(self, conn):
        with self._pool_lock:
            if len(self._idle) < POOL_SIZE and self._pid == os.getpid():
                self._idle.append(conn)
                return
        conn.close()


_READ_ONLY = ("The drawings database is read-only: drawings can be viewed but not saved "
              "or deleted. Ask whoever runs the server.")


def _error_for(exc, path, writing):
    """The StoreError for a sqlite3 exception: the one place they are translated."""
    code = getattr(exc, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    text = str(exc).lower()
    if primary in (5, 6) or "locked" in text or "busy" in text:            # BUSY, LOCKED
        return BusyError("The drawings database is busy (the server is saving other work); "
                         "try again in a moment.")
    if primary == 8 or "readonly" in text or "read-only" in text:          # READONLY
        return ReadOnlyError(_READ_ONLY)
    if primary == 13 or "full" in text:                                    # FULL
        return StoreError("The server's disk is full, so nothing was saved (what was stored "
                          "before is safe). Ask whoever runs the server to free some space.")
    if primary in (11, 26) or "malformed" in text or "not a database" in text:  # CORRUPT, NOTADB
        return StoreError(f"The drawings database {path} is not a database or is damaged; "
                          "it was left untouched. Ask whoever runs the server to restore it "
                          "or set DIGITLAB_DB to a new file.")
    if primary == 14 or "unable to open" in text:                          # CANTOPEN
        return StoreError(f"Cannot open the drawings database {path}: check that the file "
                          "and its folder exist and may be read.")
    if primary == 10 or "disk i/o" in text:                                # IOERR
        return StoreError("The drawings database could not be read or written (a disk error); "
                          "nothing was half-saved. Try again, or ask whoever runs the server.")
    return StoreError(f"The drawings database failed ({exc}); nothing was "
                      f"{'saved' if writing else 'changed'}.")


# -- access and quotas (inside a transaction) --------------------------------

def _visible(conn, visitor, cid, missing="That collection was not found, or you have not "
                                            "joined it."):
    """(kind, owner) of a collection the visitor owns or joined; else StoreError."""
    row = conn.execute("SELECT kind, owner FROM collections WHERE id = ?1 AND (owner = ?2 OR "
                       "EXISTS (SELECT 1 FROM members WHERE collection_id = ?1 AND visitor = ?2))",
                       (cid, visitor)).fetchone()
    if row is None:
        raise StoreError(missing)
    return row


def _check_room(conn, visitor, cid, n):
    """QuotaError unless n more drawings fit for this visitor and in this collection."""
    (mine,) = conn.execute("SELECT COUNT(*) FROM drawings WHERE visitor = ?",
                           (visitor,)).fetchone()
    (held,) = conn.execute("SELECT COUNT(*) FROM drawings WHERE collection_id = ?",
                           (cid,)).fetchone()
    for stored, limit, held_by in ((mine, MAX_DRAWINGS_PER_VISITOR, "You have stored"),
                                   (held, MAX_DRAWINGS_PER_COLLECTION, "This collection holds")):
        if stored + n > limit:
            per = " per person" if limit is MAX_DRAWINGS_PER_VISITOR else " in a collection"
            wanted = "" if n == 1 else \
                f" This file has {n:,} drawings; only {max(0, limit - stored):,} more fit."
            raise QuotaError(f"{held_by} {stored:,} drawings; the most allowed{per} is "
                             f"{limit:,}.{wanted} Delete some drawings first.")


def _personal_id(conn, visitor):
    row = conn.execute("SELECT id FROM collections WHERE owner = ? AND kind = 'personal'",
                       (visitor,)).fetchone()
    return row and row[0]


def _make_personal(conn, visitor):
    conn.execute("INSERT OR IGNORE INTO collections (kind, name, owner, created) "
                 "VALUES ('personal', ?, ?, ?)", (PERSONAL_NAME, visitor, time.time()))
    return _personal_id(conn, visitor)


def _new_code(conn):
    for _ in range(50):
        code = "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))
        if conn.execute("SELECT 1 FROM collections WHERE code = ?", (code,)).fetchone() is None:
            return code
    raise StoreError("Could not find a free class code; try again.")


# -- checks on what callers pass ---------------------------------------------

def _check_visitor(visitor):
    if not isinstance(visitor, str) or not VISITOR_RE.fullmatch(visitor):
        raise StoreError("Unknown visitor: reload the page.")
    return visitor


def _check_id(value, what):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or \
            not 0 < int(value) < 2**63:
        raise StoreError(f"That {what} was not found.")
    return int(value)


def _check_digit(value, what):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral) or \
            not 0 <= int(value) <= 9:
        raise StoreError(f"{what} must be a digit 0-9, not {value!r:.20}.")
    return int(value)


_BIDI_CONTROLS = {*range(0x202A, 0x202F), *range(0x2066, 0x206A)}


def _check_text(value, what, limit):
    """NFC text of 1..limit characters, no control characters (nor line separators or
    bidirectional overrides, which could make a name display as something else)."""
    if not isinstance(value, str):
        raise StoreError(f"{what} must be text.")
    value = unicodedata.normalize("NFC", value.strip())
    if not 1 <= len(value) <= limit:
        raise StoreError(f"{what} must have 1 to {limit} characters.")
    if any(unicodedata.category(ch) in ("Cc", "Cs", "Zl", "Zp") or ord(ch) in _BIDI_CONTROLS
           for ch in value):
        raise StoreError(f"{what} cannot contain control characters.")
    return value


def _pixels(image28):
    """(28, 28) or (784,) finite values in [0, 1] -> (784,) uint8."""
    image = np.asarray(image28)
    if image.dtype.kind not in "fiu" or image.shape not in ((28, 28), (784,)):
        raise StoreError(f"A drawing must be a (28, 28) array of numbers, not "
                         f"{image.dtype} {image.shape}.")
    if not np.all(np.isfinite(image)) or image.min() < 0 or image.max() > 1:
        raise StoreError("A drawing's pixels must be finite and between 0 and 1.")
    return np.rint(image.reshape(784).astype(np.float64) * 255).astype(np.uint8)


def _check_png(data):
    """The bytes, if they are a PNG of at most MAX_THUMB_BYTES and MAX_THUMB_SIDE pixels."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise StoreError("A thumbnail must be PNG bytes.")
    data = bytes(data)
    if len(data) > MAX_THUMB_BYTES or not data.startswith(PNG_SIGNATURE):
        raise StoreError(f"A thumbnail must be a PNG of at most {MAX_THUMB_BYTES // 1024} KB.")
    try:
        with Image.open(io.BytesIO(data)) as im:
            ok = im.format == "PNG" and max(im.size) <= MAX_THUMB_SIDE
            im.verify()                      # chunk checksums, without decoding
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        ok = False
    if not ok:
        raise StoreError(f"A thumbnail must be a valid PNG at most {MAX_THUMB_SIDE} pixels wide.")
    return data


def _thumbnail_png(pixels):
    """(784,) uint8 -> a 56 x 56 grey PNG (each pixel 2 x 2), for imported drawings."""
    buf = io.BytesIO()
    Image.fromarray(np.kron(pixels.reshape(28, 28), np.ones((2, 2), np.uint8))).save(
        buf, format="PNG")
    return buf.getvalue()


# -- reading imported files (hostile input) ----------------------------------

_NPZ_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, KeyError, EOFError,
               OSError, NotImplementedError, RuntimeError, zlib.error, TypeError)


def _parse_npz(data):
    """An exported .npz -> pixels (n, 784) uint8, labels (n,) int64, created (n,) (NaN: now).

    Reads each array's header first and refuses anything but plain numbers of
    the expected shapes, so no pickle is loaded and no declared size allocated.
    """
    wanted = {"images.npy", "labels.npy", "created.npy"}
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            names = zf.namelist()
            if len(set(names)) != len(names) or not set(names) <= wanted or \
                    not {"images.npy", "labels.npy"} <= set(names):
                raise StoreError("A .npz file must hold the arrays images and labels (and "
                                 "optionally created), as Digit Lab exports them, and "
                                 "nothing else.")
            arrays = {}
            for name in names:
                with zf.open(name) as f:
                    arrays[name[:-4]] = _read_npy(f, name[:-4])
    except _NPZ_ERRORS as exc:
        raise StoreError("The .npz file is damaged or not in the format Digit Lab exports.") \
            from exc
    images, labels = arrays["images"], arrays["labels"]
    created = arrays.get("created", np.full(len(labels), np.nan))
    if not len(images) == len(labels) == len(created):
        raise StoreError(f"The .npz file has {len(images)} images but {len(labels)} labels "
                         f"and {len(created)} times.")
    if images.dtype.kind == "f":
        if not np.all(np.isfinite(images)) or images.min(initial=0) < 0 or \
                images.max(initial=0) > 1:
            raise StoreError("Images stored as numbers with a decimal point must lie in [0, 1].")
        images = np.rint(images * 255)
    if labels.min(initial=0) < 0 or labels.max(initial=0) > 9:
        raise StoreError("Every label must be a digit 0-9; this file has others.")
    return (images.reshape(-1, 784).astype(np.uint8), labels.astype(np.int64),
            _check_times(created.astype(np.float64)))


def _read_npy(f, name):
    """One array from an open .npy stream, after checking its header (dtype, shape, size)."""
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
    else:
        raise ValueError(f"unsupported .npy version {version}")
    kinds = {"images": "uf", "labels": "iu", "created": "f"}[name]
    shapes = {"images": ((28, 28), (784,)), "labels": ((),), "created": ((),)}[name]
    if dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None or \
            dtype.kind not in kinds or dtype.itemsize > 8 or \
            (name == "images" and dtype.kind == "u" and dtype.itemsize != 1) or \
            len(shape) < 1 or tuple(shape[1:]) not in shapes:
        raise StoreError(f"The .npz array “{name}” has the wrong type or shape "
                         f"({dtype.str}, {shape}).")
    if not 0 <= shape[0] <= MAX_DRAWINGS_PER_VISITOR:
        raise QuotaError(f"The file declares {shape[0]:,} drawings; at most "
                         f"{MAX_DRAWINGS_PER_VISITOR:,} fit (the limit per person).")
    nbytes = math.prod(shape) * dtype.itemsize
    buf = f.read(nbytes)
    if len(buf) != nbytes or f.read(1):
        raise StoreError(f"The .npz array “{name}” is truncated or has extra data.")
    return np.frombuffer(buf, dtype=dtype).reshape(shape, order="F" if fortran else "C")


def _parse_csv(data, named_npz=False):
    """An exported CSV -> pixels (n, 784) uint8, labels (n,) int64, created (n,) (NaN: now).

    Accepts the exported header (id, label, created, p0..p783; the ids are
    not kept) or just label, p0..p783. Every field is checked.
    """
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise StoreError("This .npz file is not a valid archive." if named_npz else
                         "The file is neither a .npz nor a .csv file exported by Digit Lab.") \
            from None
    short = CSV_HEADER[1:2] + CSV_HEADER[3:]
    labels, pixels, created = [], [], []
    try:
        reader = csv.reader(io.StringIO(text, newline=""))
        header = tuple(h.strip() for h in next(reader, ()))
        if header not in (CSV_HEADER, short):
            raise StoreError(f"The CSV file's first row must be id,label,created,p0,…,p783 "
                             f"(as exported) or label,p0,…,p783; it has {len(header)} columns.")
        full = header == CSV_HEADER
        at = 3 if full else 1                       # where the pixels start
        for line, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != len(header):
                raise StoreError(f"Row {line} of the CSV file has {len(row)} columns, "
                                 f"not {len(header)}.")
            label, pix = row[1 if full else 0].strip(), [s.strip() for s in row[at:]]
            if len(label) != 1 or label not in "0123456789":
                raise StoreError(f"Row {line}: the label must be a digit 0-9.")
            if not all(0 < len(s) <= 3 and s.isascii() and s.isdigit() for s in pix):
                raise StoreError(f"Row {line}: pixels must be whole numbers 0-255.")
            values = np.array(pix, dtype=np.int64)
            if values.max() > 255:
                raise StoreError(f"Row {line}: pixels must be whole numbers 0-255.")
            labels.append(int(label))
            pixels.append(values.astype(np.uint8))
            created.append(_parse_time(row[2], line) if full else math.nan)
    except csv.Error as exc:
        raise StoreError(f"The CSV file cannot be read ({exc}).") from None
    return (np.array(pixels, dtype=np.uint8).reshape(-1, 784), np.array(labels, dtype=np.int64),
            _check_times(np.array(created, dtype=np.float64)))


def _parse_time(text, line):
    text = text.strip()
    if not text:
        return math.nan
    try:
        stamp = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise StoreError(f"Row {line}: “created” must be a date and time like "
                         f"2024-05-01T09:30:00+00:00.") from None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=datetime.timezone.utc)
    try:
        return stamp.timestamp()
    except (OverflowError, ValueError, OSError):
        raise StoreError(f"Row {line}: “created” is out of range.") from None


def _check_times(created):
    """(n,) seconds since the epoch, NaN meaning unknown; refuse the infinite, the
    negative and the far future (a day of clock skew allowed)."""
    known = created[~np.isnan(created)]
    if np.any(~np.isfinite(known)) or np.any(known < 0) or np.any(known > time.time() + 86400):
        raise StoreError("The drawings' times (“created”) must be past dates.")
    return created
