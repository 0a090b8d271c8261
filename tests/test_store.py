"""Tests for app_logic/store.py, the drawings database (SQLite files under tmp_path).

In order: settings and laziness; round trips of every method; access control
and join codes; refused input; quotas; export/import round trips and hostile
imports; failures (read-only, locked, corrupt, newer schema, disk full);
migrations; concurrent writers (threads, and two spawned processes).

Read-only is tested two ways: with ``?mode=ro`` in the URL (sqlite then
refuses every write, even as root), and with real file permissions, chmod'ed
and checked in a child process that drops root for ``nobody`` (root ignores
permissions). A full disk is simulated with ``PRAGMA max_page_count`` on the
store's connections: sqlite then fails exactly as on a full disk (SQLITE_FULL).
"""

import hashlib
import io
import multiprocessing
import os
import shutil
import sqlite3
import struct
import tempfile
import threading
import time
import zipfile

import numpy as np
import pytest
from PIL import Image

from app_logic import store as S
from app_logic.store import BusyError, QuotaError, ReadOnlyError, StoreError

TEACHER, ALICE, BOB = "a1" * 16, "b2" * 16, "c3" * 16


def png(side=56, value=0):
    buf = io.BytesIO()
    Image.fromarray(np.full((side, side), value, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


THUMB = png()


def image(seed):
    """A (28, 28) float image whose values are exact multiples of 1/255."""
    return np.random.default_rng(seed).integers(0, 256, (28, 28)) / 255.0


def sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def n_rows(path, table="drawings"):
    with sqlite3.connect(path) as conn:
        return conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]


@pytest.fixture
def db(tmp_path):
    return tmp_path / "digitlab.sqlite3"


@pytest.fixture
def store(db):
    s = S.open_store(db)
    yield s
    s.close()


def add(store, visitor, cid, n, seed=0):
    return [store.add_drawing(visitor, cid, (seed + i) % 10, image(seed + i), THUMB)
            for i in range(n)]


# ------------------------------------------------------------ settings

def test_open_store_reads_the_setting_and_touches_nothing(tmp_path, monkeypatch):
    target = tmp_path / "new" / "folder" / "x.sqlite3"
    monkeypatch.setenv(S.DB_ENV, f"sqlite:///{target}")
    s = S.open_store()
    assert s.path == target and not s.read_only
    assert not target.parent.exists()            # lazy: nothing until the first call
    assert S.open_store(f"sqlite:////{target}").path == target
    assert S.open_store(f"sqlite:///{target}?mode=ro").read_only
    monkeypatch.setenv(S.DB_ENV, str(target))
    assert S.open_store().path == target
    monkeypatch.delenv(S.DB_ENV)
    assert S.open_store().path == S.DEFAULT_DB == S.ROOT / "data" / "digitlab.sqlite3"
    s.personal_collection(ALICE)                 # the first call creates folder and schema
    assert target.exists()
    s.close()


@pytest.mark.parametrize("url, words", [
    ("postgresql://u@host/db", "PostgreSQL is not supported yet"),
    ("postgres://u@host/db", "PostgreSQL is not supported yet"),
    ("mysql://host/db", "Unknown database URL scheme"),
    ("sqlite://host/x.db", "sqlite:///"),
    ("sqlite:///tmp/x.db?mode=wal", "sqlite:///"),
    ("x\x00.db", "file path or a URL"), (b"x.db", "file path or a URL"),
])
def test_open_store_refuses_other_urls(url, words):
    with pytest.raises(StoreError, match=words):
        S.open_store(url)


def test_schema_wal_and_version(store, db):
    store.personal_collection(ALICE)
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        meta = dict(conn.execute("SELECT key, value FROM meta"))
    assert meta["schema_version"] == len(S.MIGRATIONS) == 1 and "migration_1" in meta


def test_foreign_keys_are_on(store):
    cid = store.personal_collection(ALICE)
    conn = store._connect()
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute("INSERT INTO drawings (collection_id, visitor, label, pixels, thumb, "
                     "created) VALUES (?, ?, 1, zeroblob(784), x'', 0)", (cid + 99, ALICE))
    conn.close()


# ------------------------------------------------------------ round trips

def test_add_read_count_thumbnail_delete(store):
    cid = store.personal_collection(ALICE)
    assert store.personal_collection(ALICE) == cid
    first = store.add_drawing(ALICE, cid, 7, image(1), THUMB, predicted=1, model="default")
    second = store.add_drawing(ALICE, cid, 3, image(2).reshape(784), png(value=200))
    d = store.drawings(ALICE, cid)
    assert len(d) == 2 and d.ids.tolist() == [first, second]
    assert d.labels.dtype == np.int64 and d.labels.tolist() == [7, 3]
    assert d.images.dtype == np.float32 and d.images.shape == (2, 784)
    np.testing.assert_allclose(d.images[0], image(1).reshape(784), atol=1e-6)
    assert d.predicted.tolist() == [1, -1] and d.mine.tolist() == [True, True]
    assert d.created.dtype == np.float64 and abs(d.created[0] - time.time()) < 60
    assert store.thumbnail(ALICE, second) == png(value=200)
    counts = store.counts(ALICE, cid)
    assert counts.shape == (10,) and counts[7] == counts[3] == 1 and counts.sum() == 2
    [mine] = store.collections(ALICE)
    assert (mine.id, mine.name, mine.kind, mine.code, mine.is_owner, mine.n_drawings) == \
        (cid, "My drawings", "personal", None, True, 2)
    store.delete_drawing(ALICE, first)
    assert store.drawings(ALICE, cid).ids.tolist() == [second]
    with pytest.raises(StoreError, match="not found"):
        store.thumbnail(ALICE, first)
    assert store.delete_all_mine(ALICE) == 1
    assert len(store.drawings(ALICE, cid)) == 0 and store.counts(ALICE, cid).sum() == 0


def test_collections_creates_the_personal_one_first(store):
    [personal] = store.collections(BOB)
    assert personal.kind == "personal" and personal.n_drawings == 0
    assert store.personal_collection(BOB) == personal.id


def test_numpy_ids_are_accepted(store):
    cid = store.personal_collection(ALICE)
    add(store, ALICE, np.int64(cid), 1)
    [did] = store.drawings(ALICE, cid).ids
    assert store.thumbnail(ALICE, did) == THUMB
    store.delete_drawing(ALICE, did)


# ------------------------------------------------------------ classes and access

def test_class_pooling_and_access_control(store):
    klass = store.create_class(TEACHER, "Klasse 4b – Café 🎨")
    assert len(klass.code) == 6 and set(klass.code) <= set(S.CODE_ALPHABET)
    typed = f"  {klass.code[:3].lower()} - {klass.code[3:].lower()} "
    joined = store.join_class(ALICE, typed)
    assert (joined.id, joined.name, joined.is_owner) == (klass.id, klass.name, False)
    assert klass.name == "Klasse 4b – Café 🎨"
    assert store.join_class(ALICE, klass.code).id == klass.id      # joining twice is harmless
    teacher_ids = add(store, TEACHER, klass.id, 2)
    alice_ids = add(store, ALICE, klass.id, 3, seed=5)

    pooled = store.drawings(ALICE, klass.id)              # members see everyone's drawings
    assert pooled.ids.tolist() == teacher_ids + alice_ids
    assert pooled.mine.tolist() == [False] * 2 + [True] * 3
    assert store.drawings(ALICE, klass.id, mine_only=True).ids.tolist() == alice_ids
    assert store.counts(TEACHER, klass.id).sum() == 5
    assert store.thumbnail(ALICE, teacher_ids[0]) == THUMB
    assert [(c.kind, c.is_owner, c.n_drawings, c.code) for c in store.collections(ALICE)] == \
        [("personal", True, 0, None), ("class", False, 5, klass.code)]
    with pytest.raises(StoreError, match="only your own"):
        store.delete_drawing(ALICE, teacher_ids[0])

    # Bob did not join: he cannot see, read, add to or delete in the class.
    assert [c.kind for c in store.collections(BOB)] == ["personal"]
    for call in (lambda: store.drawings(BOB, klass.id), lambda: store.counts(BOB, klass.id),
                 lambda: store.export_npz(BOB, klass.id), lambda: store.export_csv(BOB, klass.id),
                 lambda: store.thumbnail(BOB, alice_ids[0]),
                 lambda: store.delete_drawing(BOB, alice_ids[0]),
                 lambda: store.delete_all_mine(BOB, klass.id),
                 lambda: store.add_drawing(BOB, klass.id, 1, image(0), THUMB),
                 lambda: store.delete_class(BOB, klass.id)):
        with pytest.raises(StoreError, match="not found"):
            call()

    # Nobody reads or deletes someone else's personal drawings.
    alice_home = store.personal_collection(ALICE)
    [private] = add(store, ALICE, alice_home, 1)
    for visitor in (BOB, TEACHER):
        with pytest.raises(StoreError, match="not found"):
            store.drawings(visitor, alice_home)
        with pytest.raises(StoreError, match="not found"):
            store.thumbnail(visitor, private)
        with pytest.raises(StoreError, match="not found"):
            store.delete_drawing(visitor, private)
        with pytest.raises(StoreError, match="not found"):
            store.add_drawing(visitor, alice_home, 1, image(0), THUMB)
    assert store.delete_all_mine(BOB) == 0

    assert store.delete_all_mine(ALICE, klass.id) == 3    # only hers, only in the class
    assert store.drawings(TEACHER, klass.id).ids.tolist() == teacher_ids
    assert len(store.drawings(ALICE, alice_home)) == 1

    with pytest.raises(StoreError, match="Only the teacher"):
        store.delete_class(ALICE, klass.id)
    with pytest.raises(StoreError, match="cannot be deleted"):
        store.delete_class(ALICE, alice_home)
    assert store.delete_class(TEACHER, klass.id) == 2
    assert [c.kind for c in store.collections(ALICE)] == ["personal"]
    with pytest.raises(StoreError, match="not found"):
        store.drawings(TEACHER, klass.id)
    assert n_rows(store.path, "members") == 0 and n_rows(store.path) == 1


@pytest.mark.parametrize("typed", ["", "ABCDE", "ABCDEFG", "' OR 1=1 --", "IIIIII", None])
def test_mistyped_code(store, typed):
    store.create_class(TEACHER, "4b")
    with pytest.raises(StoreError, match="not found: check it with your teacher"):
        store.join_class(ALICE, typed)
    assert [c.kind for c in store.collections(ALICE)] == ["personal"]


def test_normalise_code():
    assert S.normalise_code(" ab-c 2\u20113\t4 ") == "ABC234"


def test_codes_are_unique(store, monkeypatch):
    monkeypatch.setattr(S, "CODE_ALPHABET", "AB")
    monkeypatch.setattr(S, "CODE_LENGTH", 2)
    codes = {store.create_class(TEACHER, f"c{i}").code for i in range(4)}
    assert codes == {"AA", "AB", "BA", "BB"}
    with pytest.raises(StoreError, match="free class code"):
        store.create_class(TEACHER, "one too many")


@pytest.mark.parametrize("name", ["", "   ", "x" * 61, "a\nb", "a\x00b", "a\u202eb", 42])
def test_bad_class_names(store, name):
    with pytest.raises(StoreError, match="class name"):
        store.create_class(TEACHER, name)


def test_names_are_data_not_sql(store):
    name = "x'); DROP TABLE drawings; --"
    klass = store.create_class(TEACHER, name)
    assert store.collections(TEACHER)[1].name == name
    add(store, TEACHER, klass.id, 1)
    assert n_rows(store.path) == 1


# ------------------------------------------------------------ refused input

@pytest.mark.parametrize("kwargs, words", [
    ({"label": 10}, "digit 0-9"), ({"label": -1}, "digit 0-9"), ({"label": True}, "digit 0-9"),
    ({"label": 3.0}, "digit 0-9"), ({"label": "3"}, "digit 0-9"),
    ({"predicted": 11}, "digit 0-9"), ({"model": "a\x07"}, "control"),
    ({"image28": np.full((28, 28), np.nan)}, "finite"),
    ({"image28": np.full((28, 28), 1.5)}, "between 0 and 1"),
    ({"image28": np.zeros((27, 28))}, "28, 28"), ({"image28": np.zeros(783)}, "28, 28"),
    ({"image28": np.zeros((28, 28), bool)}, "28, 28"), ({"image28": "pixels"}, "28, 28"),
    ({"thumb_png": b"GIF89a" + bytes(50)}, "PNG"), ({"thumb_png": "png"}, "PNG"),
    ({"thumb_png": S.PNG_SIGNATURE + os.urandom(200)}, "valid PNG"),
    ({"thumb_png": png(side=S.MAX_THUMB_SIDE + 1)}, "pixels wide"),
    ({"thumb_png": THUMB + bytes(S.MAX_THUMB_BYTES)}, "at most 64 KB"),
    ({"visitor": "ABCDEF0123456789"}, "visitor"), ({"visitor": "abc"}, "visitor"),
    ({"visitor": "a" * 129}, "visitor"), ({"visitor": None}, "visitor"),
    ({"collection_id": True}, "not found"), ({"collection_id": "1"}, "not found"),
])
def test_bad_drawings_are_refused(store, kwargs, words):
    cid = store.personal_collection(ALICE)
    args = {"visitor": ALICE, "collection_id": cid, "label": 1, "image28": image(0),
            "thumb_png": THUMB, **kwargs}
    with pytest.raises(StoreError, match=words):
        store.add_drawing(**args)
    assert n_rows(store.path) == 0


# ------------------------------------------------------------ quotas

def test_quota_per_visitor(store, monkeypatch):
    monkeypatch.setattr(S, "MAX_DRAWINGS_PER_VISITOR", 3)
    home = store.personal_collection(ALICE)
    klass = store.create_class(TEACHER, "4b")
    store.join_class(ALICE, klass.code)
    add(store, ALICE, home, 2)
    add(store, ALICE, klass.id, 1)                         # counted over all collections
    with pytest.raises(QuotaError, match=r"You have stored 3 drawings; the most allowed per "
                                         r"person is 3\."):
        add(store, ALICE, klass.id, 1)
    add(store, BOB, store.personal_collection(BOB), 3)    # others are not affected
    assert n_rows(store.path) == 6


def test_quota_per_collection(store, monkeypatch):
    monkeypatch.setattr(S, "MAX_DRAWINGS_PER_COLLECTION", 4)
    klass = store.create_class(TEACHER, "4b")
    store.join_class(ALICE, klass.code)
    add(store, TEACHER, klass.id, 2)
    add(store, ALICE, klass.id, 2)
    with pytest.raises(QuotaError, match=r"This collection holds 4 drawings; the most "
                                         r"allowed in a collection is 4\."):
        add(store, ALICE, klass.id, 1)


def test_quota_on_classes(store, monkeypatch):
    monkeypatch.setattr(S, "MAX_CLASSES_PER_VISITOR", 2)
    first = store.create_class(TEACHER, "a")
    store.create_class(TEACHER, "b")
    with pytest.raises(QuotaError, match="created 2 classes, the most allowed is 2"):
        store.create_class(TEACHER, "c")
    store.delete_class(TEACHER, first.id)
    store.create_class(TEACHER, "c")


def test_quota_on_import_says_how_many_fit(store, monkeypatch):
    home = store.personal_collection(ALICE)
    add(store, ALICE, home, 5)
    data = store.export_npz(ALICE, home)
    monkeypatch.setattr(S, "MAX_DRAWINGS_PER_VISITOR", 8)
    with pytest.raises(QuotaError, match=r"You have stored 5 drawings; the most allowed per "
                                         r"person is 8\. This file has 5 drawings; only 3 "
                                         r"more fit\."):
        store.import_file(ALICE, home, data, "mine.npz")
    assert n_rows(store.path) == 5


# ------------------------------------------------------------ export and import

@pytest.mark.parametrize("fmt", ["npz", "csv"])
def test_export_import_round_trip(store, fmt):
    home = store.personal_collection(ALICE)
    add(store, ALICE, home, 12)
    before = store.drawings(ALICE, home)
    if fmt == "npz":
        data = store.export_npz(ALICE, home)
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            assert sorted(z.files) == ["created", "images", "labels"]
            assert z["images"].dtype == np.uint8 and z["images"].shape == (12, 28, 28)
            assert z["labels"].dtype == np.int64 and z["created"].dtype == np.float64
    else:
        text = store.export_csv(ALICE, home)
        lines = text.splitlines()
        assert lines[0].split(",")[:4] == ["id", "label", "created", "p0"]
        assert len(lines) == 13 and all(len(line.split(",")) == 787 for line in lines)
        assert lines[1].split(",")[2].endswith("+00:00")
        data = text.encode()
    klass = store.create_class(TEACHER, "4b")
    store.join_class(BOB, klass.code)
    assert store.import_file(BOB, klass.id, data, f"alice.{fmt}") == 12
    after = store.drawings(BOB, klass.id)
    np.testing.assert_array_equal(after.images, before.images)
    np.testing.assert_array_equal(after.labels, before.labels)
    np.testing.assert_allclose(after.created, before.created, atol=1e-5)
    assert after.mine.all() and (after.predicted == -1).all()
    thumb = Image.open(io.BytesIO(store.thumbnail(BOB, after.ids[0])))
    assert thumb.format == "PNG" and thumb.size == (56, 56)
    np.testing.assert_array_equal(np.asarray(thumb)[::2, ::2],
                                  np.rint(before.images[0] * 255).reshape(28, 28))


def test_import_of_a_plain_label_csv(store):
    home = store.personal_collection(ALICE)
    rows = ["label," + ",".join(f"p{i}" for i in range(784)),
            "4," + ",".join(["0"] * 783 + ["255"])]
    assert store.import_file(ALICE, home, ("\n".join(rows) + "\n").encode(), "x.csv") == 1
    d = store.drawings(ALICE, home)
    assert d.labels.tolist() == [4] and d.images[0, -1] == 1.0 and d.images[0, 0] == 0.0


def npz(**arrays):
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def npy_member(header, payload=b""):
    """Raw .npy bytes with a header we write ourselves (it may lie about the shape)."""
    text = repr(header).encode() + b" " * 10 + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text + payload


def zipped(**members):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def csv_text(n_pixels=784, rows=("1",), pixel="0"):
    header = ",".join(S.CSV_HEADER[:3] + tuple(f"p{i}" for i in range(n_pixels)))
    body = [f"{i},{label},2024-05-01T09:30:00+00:00," + ",".join([pixel] * n_pixels)
            for i, label in enumerate(rows)]
    return ("\n".join([header, *body]) + "\n").encode()


GOOD_IMAGES = np.zeros((2, 28, 28), np.uint8)
GOOD_LABELS = np.array([1, 2])
HOSTILE = {
    "pickled object array": (npz(images=GOOD_IMAGES, labels=np.array([1, "x"], dtype=object)),
                             "wrong type"),
    "images wrong shape": (npz(images=np.zeros((2, 27, 27), np.uint8), labels=GOOD_LABELS),
                           "wrong type or shape"),
    "images as int64": (npz(images=GOOD_IMAGES.astype(np.int64), labels=GOOD_LABELS),
                        "wrong type"),
    "huge declared shape": (zipped(**{
        "images.npy": npy_member({"descr": "|u1", "fortran_order": False,
                                  "shape": (10**12, 28, 28)}, bytes(100)),
        "labels.npy": npy_member({"descr": "<i8", "fortran_order": False, "shape": (2,)},
                                 bytes(16))}), "declares 1,000,000,000,000 drawings"),
    "truncated array": (zipped(**{
        "images.npy": npy_member({"descr": "|u1", "fortran_order": False,
                                  "shape": (2, 28, 28)}, bytes(100)),
        "labels.npy": npy_member({"descr": "<i8", "fortran_order": False, "shape": (2,)},
                                 bytes(16))}), "truncated"),
    "garbled npy header": (zipped(**{"images.npy": b"\x93NUMPY\x01\x00\x10\x00{'descr': (((",
                                     "labels.npy": b""}), "damaged"),
    "label 12": (npz(images=GOOD_IMAGES, labels=np.array([1, 12])), "digit 0-9"),
    "negative label": (npz(images=GOOD_IMAGES, labels=np.array([-1, 2])), "digit 0-9"),
    "mismatched lengths": (npz(images=GOOD_IMAGES, labels=np.array([1, 2, 3])), "2 images"),
    "extra array": (npz(images=GOOD_IMAGES, labels=GOOD_LABELS, evil=np.zeros(1)),
                    "nothing else"),
    "no labels": (npz(images=GOOD_IMAGES), "images and labels"),
    "future times": (npz(images=GOOD_IMAGES, labels=GOOD_LABELS,
                         created=np.array([0.0, 4e9])), "past dates"),
    "float images out of range": (npz(images=np.full((2, 28, 28), 2.0), labels=GOOD_LABELS),
                                  r"\[0, 1\]"),
    "zip that is not an npz": (zipped(**{"readme.txt": b"hello"}), "nothing else"),
    "broken zip": (b"PK\x03\x04" + os.urandom(500), "damaged"),
    "csv with 783 pixels": (csv_text(783), "783"),
    "csv with a short row": (csv_text() + b"9,1,," + b"0," * 10 + b"0\n", "Row 3.*14 columns"),
    "csv label 12": (csv_text(rows=("1", "12")), "Row 3: the label"),
    "csv pixel 256": (csv_text(pixel="256"), "0-255"),
    "csv pixel -1": (csv_text(pixel="-1"), "0-255"),
    "csv pixel 1e2": (csv_text(pixel="1e2"), "0-255"),
    "csv bad time": (csv_text().replace(b"2024-05-01T09:30:00+00:00", b"yesterday"),
                     "date and time"),
    "csv with NUL": (csv_text().replace(b"p0", b"p\x000"), "first row|cannot be read"),
    "csv only a header": (csv_text(rows=()), "no drawings"),
    "garbage bytes": (os.urandom(3000), "neither a .npz nor a .csv"),
    "empty file": (b"", "first row"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_imports_are_refused_whole(store, case):
    data, words = HOSTILE[case]
    home = store.personal_collection(ALICE)
    add(store, ALICE, home, 1)
    with pytest.raises(StoreError, match=words):
        store.import_file(ALICE, home, data, "upload.dat")
    assert n_rows(store.path) == 1


def test_garbage_named_npz(store):
    with pytest.raises(StoreError, match="This .npz file is not a valid archive"):
        store.import_file(ALICE, store.personal_collection(ALICE), os.urandom(999), "x.NPZ")


def test_import_size_limit_and_bad_rows_late_in_the_file(store, monkeypatch):
    home = store.personal_collection(ALICE)
    bad_last = csv_text(rows=("1",) * 20 + ("x",))
    with pytest.raises(StoreError, match="Row 22"):
        store.import_file(ALICE, home, bad_last, "x.csv")     # 20 good rows, then a bad one
    assert n_rows(store.path) == 0
    monkeypatch.setattr(S, "MAX_IMPORT_BYTES", 1000)
    with pytest.raises(StoreError, match="most an import takes"):
        store.import_file(ALICE, home, csv_text(), "x.csv")


def test_zip_bomb_is_not_inflated(store):
    """A valid header, then 200 MB of deflated zeros where 1,568 bytes belong."""
    head = npy_member({"descr": "|u1", "fortran_order": False, "shape": (2, 28, 28)})
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        with zf.open("images.npy", "w", force_zip64=True) as f:
            f.write(head)
            for _ in range(200):
                f.write(bytes(2**20))
        zf.writestr("labels.npy", npy_member({"descr": "<i8", "fortran_order": False,
                                              "shape": (2,)}, bytes(16)))
    home = store.personal_collection(ALICE)
    start = time.perf_counter()
    with pytest.raises(StoreError, match="extra data"):
        store.import_file(ALICE, home, buf.getvalue(), "bomb.npz")
    assert time.perf_counter() - start < 5


# ------------------------------------------------------------ failures

def test_read_only_url(db):
    writer = S.open_store(db)
    home = writer.personal_collection(ALICE)
    add(writer, ALICE, home, 2)
    writer.close()
    digest = sha(db)
    reader = S.open_store(f"sqlite:///{db}?mode=ro")
    assert len(reader.drawings(ALICE, home)) == 2
    assert [c.id for c in reader.collections(ALICE)] == [home]
    assert reader.collections(BOB) == []                   # cannot create Bob's, no error
    with pytest.raises(ReadOnlyError, match="read-only"):
        add(reader, ALICE, home, 1)
    with pytest.raises(ReadOnlyError, match="read-only"):
        reader.delete_all_mine(ALICE)
    reader.close()
    assert sha(db) == digest and n_rows(db) == 2


def _in_child_as_nobody(fn):
    """Run fn() in a forked child that has dropped root (if we are root); -> its result text."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:                                           # the child
        try:
            os.close(read)
            if os.geteuid() == 0:
                os.setgroups([])
                os.setgid(65534)
                os.setuid(65534)
            result = fn()
        except BaseException as exc:                       # report anything, never return
            result = f"child failed: {exc!r}"
        os.write(write, result.encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as f:
        result = f.read()
    os.waitpid(pid, 0)
    return result


@pytest.mark.parametrize("locked", ["file", "folder"])
def test_read_only_permissions(locked):
    """Real permissions: reading works, writing says read-only (checked as a non-root user)."""
    folder = tempfile.mkdtemp(prefix="digitlab-ro-")
    try:
        os.chmod(folder, 0o755)
        db = os.path.join(folder, "d.sqlite3")
        writer = S.open_store(db)
        home = writer.personal_collection(ALICE)
        add(writer, ALICE, home, 2)
        writer.close()                                    # checkpoints; -wal/-shm removed
        os.chmod(db, 0o444)
        os.chmod(folder, 0o555 if locked == "folder" else 0o777)
        S._check_png(THUMB)                              # load Pillow's plugins before forking

        def child():
            s = S.open_store(db)
            n = len(s.drawings(ALICE, home))
            try:
                add(s, ALICE, home, 1)
                return f"read {n}, write succeeded"
            except ReadOnlyError as exc:
                return f"read {n}, {exc}"
        result = _in_child_as_nobody(child)
        assert result.startswith("read 2, The drawings database is read-only"), result
        assert n_rows(db) == 2
    finally:
        os.chmod(folder, 0o755)
        shutil.rmtree(folder)


def test_locked_database_gives_up_then_recovers(db, monkeypatch):
    monkeypatch.setattr(S, "BUSY_TIMEOUT_S", 0.05)
    monkeypatch.setattr(S, "RETRY_DELAYS", (0.01, 0.02))
    s = S.open_store(db)
    home = s.personal_collection(ALICE)
    other = sqlite3.connect(db, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    start = time.perf_counter()
    with pytest.raises(BusyError, match="busy.*try again"):
        add(s, ALICE, home, 1)
    assert time.perf_counter() - start >= 3 * 0.05           # three tries, each waited
    assert len(s.drawings(ALICE, home)) == 0                 # reading still works (WAL)
    other.execute("ROLLBACK")
    add(s, ALICE, home, 1)
    other.close()
    s.close()
    assert n_rows(db) == 1


def test_lock_released_during_the_retries(db, monkeypatch):
    monkeypatch.setattr(S, "BUSY_TIMEOUT_S", 0.05)
    monkeypatch.setattr(S, "RETRY_DELAYS", (0.1, 0.2, 0.4))
    s = S.open_store(db)
    home = s.personal_collection(ALICE)
    other = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    timer = threading.Timer(0.15, lambda: other.execute("COMMIT"))
    timer.start()
    add(s, ALICE, home, 1)                                   # succeeds on a retry
    timer.join()
    other.close()
    s.close()
    assert n_rows(db) == 1


@pytest.mark.parametrize("kind", ["random bytes", "damaged pages", "another app's database",
                                  "a folder"])
def test_corrupt_or_foreign_file_is_refused_and_left_alone(db, kind):
    if kind == "random bytes":
        db.write_bytes(os.urandom(8192))
    elif kind == "damaged pages":
        s = S.open_store(db)
        add(s, ALICE, s.personal_collection(ALICE), 50)
        s.close()
        raw = bytearray(db.read_bytes())
        raw[4096:] = os.urandom(len(raw) - 4096)             # keep the header page
        db.write_bytes(bytes(raw))
    elif kind == "another app's database":
        with sqlite3.connect(db) as conn:
            conn.execute("CREATE TABLE recipes (name TEXT)")
        conn.close()
    else:
        db.mkdir()
    digest = sha(db) if db.is_file() else None
    s = S.open_store(db)
    for call in (lambda: s.collections(ALICE), lambda: s.drawings(ALICE, 1),
                 lambda: add(s, ALICE, 1, 1), lambda: s.create_class(TEACHER, "x")):
        with pytest.raises(StoreError, match="damaged|not Digit Lab's|Cannot open"):
            call()
    s.close()
    if digest:
        assert sha(db) == digest


def test_newer_schema_is_refused_and_left_alone(db):
    s = S.open_store(db)
    add(s, ALICE, s.personal_collection(ALICE), 1)
    s.close()
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE meta SET value = 99 WHERE key = 'schema_version'")
    conn.close()
    digest = sha(db)
    s = S.open_store(db)
    for call in (lambda: s.collections(ALICE), lambda: add(s, ALICE, 1, 1)):
        with pytest.raises(StoreError, match="written by a newer version of Digit Lab"):
            call()
    s.close()
    assert sha(db) == digest


def test_full_disk_keeps_what_was_stored(db, monkeypatch):
    s = S.open_store(db)
    home = s.personal_collection(ALICE)
    ids = add(s, ALICE, home, 5)
    before = s.drawings(ALICE, home)
    with sqlite3.connect(db) as conn:
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.close()
    s.close()
    connect = S.Store._connect

    def small_disk(self, immutable=False):
        conn = connect(self, immutable)
        conn.execute(f"PRAGMA max_page_count = {pages + 3}")
        return conn
    monkeypatch.setattr(S.Store, "_connect", small_disk)
    s = S.open_store(db)
    with pytest.raises(StoreError, match="disk is full"):
        s.import_file(ALICE, home, npz(images=np.zeros((500, 28, 28), np.uint8),
                                       labels=np.zeros(500, np.int64)), "big.npz")
    assert len(s.drawings(ALICE, home)) == 5                 # the import left nothing behind
    with pytest.raises(StoreError, match="disk is full"):
        for i in range(200):
            ids += add(s, ALICE, home, 1, seed=i)
    s.close()
    monkeypatch.undo()
    after = S.open_store(db).drawings(ALICE, home)
    assert after.ids.tolist() == ids
    np.testing.assert_array_equal(after.images[:5], before.images)


# ------------------------------------------------------------ migrations

def test_a_second_migration_is_applied_once(db, monkeypatch):
    s = S.open_store(db)
    home = s.personal_collection(ALICE)
    add(s, ALICE, home, 3)
    s.close()
    monkeypatch.setattr(S, "MIGRATIONS", S.MIGRATIONS + (
        ("ALTER TABLE drawings ADD COLUMN note TEXT",
         "UPDATE drawings SET note = 'from v1'"),))
    for _ in range(2):                                     # a second Store: nothing re-applied
        s = S.open_store(db)
        assert len(s.drawings(ALICE, home)) == 3
        s.close()
    with sqlite3.connect(db) as conn:
        meta = dict(conn.execute("SELECT key, value FROM meta"))
        notes = conn.execute("SELECT DISTINCT note FROM drawings").fetchall()
    conn.close()
    assert meta["schema_version"] == 2 and "migration_2" in meta and notes == [("from v1",)]


def test_a_failing_migration_changes_nothing(db, monkeypatch):
    s = S.open_store(db)
    add(s, ALICE, s.personal_collection(ALICE), 1)
    s.close()
    monkeypatch.setattr(S, "MIGRATIONS", S.MIGRATIONS + (
        ("CREATE TABLE halfway (x)", "THIS IS NOT SQL"),))
    s = S.open_store(db)
    with pytest.raises(StoreError):
        s.collections(ALICE)
    s.close()
    with sqlite3.connect(db) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        version = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    conn.close()
    assert "halfway" not in tables and version == (1,)


# ------------------------------------------------------------ concurrency

def test_threads_write_at_once(store):
    klass = store.create_class(TEACHER, "4b")
    visitors = [f"{i:02x}" * 16 for i in range(8)]
    errors = []

    def student(visitor):
        try:
            store.join_class(visitor, klass.code)
            add(store, visitor, klass.id, 50)
        except Exception as exc:                           # collected, asserted below
            errors.append(exc)
    threads = [threading.Thread(target=student, args=(v,)) for v in visitors]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    d = store.drawings(TEACHER, klass.id)
    assert len(d) == len(set(d.ids.tolist())) == 400
    with sqlite3.connect(store.path) as conn:
        per = dict(conn.execute("SELECT visitor, COUNT(*) FROM drawings GROUP BY visitor"))
    conn.close()
    assert per == {v: 50 for v in visitors}


def _process_writer(path, visitor, start, n, out):
    """In a spawned process: wait until both processes are ready, then add n drawings."""
    s = S.open_store(path)
    thumb, images = THUMB, [image(i) for i in range(n)]
    start.wait(60)
    try:
        home = s.personal_collection(visitor)              # the first call also migrates
        began = time.time()
        ids = []
        for i in range(n):                                 # a few ms apart, like people
            ids.append(s.add_drawing(visitor, home, i % 10, images[i], thumb))
            time.sleep(0.002)
        out.put((visitor, (ids, began, time.time())))
    except Exception as exc:
        out.put((visitor, repr(exc)))


def test_two_processes_write_at_once(db):
    """Both start on a new file at the same moment (a barrier): both try to create the
    schema, then their writes interleave; each drawing must be stored exactly once."""
    ctx = multiprocessing.get_context("spawn")
    start, out = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_process_writer, args=(str(db), v, start, 300, out))
             for v in (ALICE, BOB)]
    for p in procs:
        p.start()
    results = dict(out.get(timeout=60) for _ in procs)
    for p in procs:
        p.join(30)
    assert all(isinstance(r, tuple) for r in results.values()), results
    ids = {v: r[0] for v, r in results.items()}
    assert len(set(ids[ALICE] + ids[BOB])) == 600 and n_rows(db) == 600
    s = S.open_store(db)
    for visitor in (ALICE, BOB):
        assert s.drawings(visitor, s.personal_collection(visitor)).ids.tolist() == ids[visitor]
    s.close()
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() \
            == (1,)
    conn.close()
