"""Tests for benchmarks/drawings_eval.py: real pen-drawn digits through the app's path.

The plumbing is tested on a tiny SYNTHETIC file in the UNIPEN format written
to tmp_path; only the last test reads the real development set (and skips
without it, or fails under CI)."""
import json
import os
import sys

import numpy as np
import pytest

from conftest import DEFAULT_MODEL, ROOT, require

sys.path.insert(0, str(ROOT / "benchmarks"))
import drawings_eval as de  # noqa: E402

REAL_DATA = de.data_path()  # $UNIPEN_DATA, else ../shared/data/unipen-dev/unipen_dev.npz

# ---------------------------------------------------------------- a synthetic data set

T = np.linspace(0, 2 * np.pi, 40)
SHAPES = {  # unit-box strokes, y down: a few simple digits, the rest a generic zigzag
    0: [np.c_[0.33 + 0.33 * np.sin(T), 0.5 - 0.5 * np.cos(T)]],
    1: [np.array([[0.1, 0.0], [0.0, 1.0]])],
    4: [np.array([[0.6, 1.0], [0.6, 0.0], [0.0, 0.7]]), np.array([[0.0, 0.7], [0.8, 0.7]])],
    7: [np.array([[0.0, 0.0], [0.7, 0.0], [0.2, 1.0]])],
}
WRITERS = {0: "syn", 1: "syn", 2: "ibm", 3: "gmd"}


def synthetic_strokes(label, writer):
    strokes = SHAPES.get(label) or [np.array([[0.0, 0.0], [0.6, 0.2], [0.1, 0.5], [0.7, 1.0]])]
    points = np.concatenate(strokes) * (1 + 0.1 * writer)
    lo, side = points.min(axis=0), np.ptp(points, axis=0).max()
    return [((s * (1 + 0.1 * writer)) - lo) / side for s in strokes]


def write_synthetic(path, per_digit=2):
    """4 writers x 10 digits x per_digit samples, in unipen_dev.npz's format."""
    points, strokes, samples, labels, writers, sources = [], [0], [0], [], [], []
    for writer, source in WRITERS.items():
        for label in range(10):
            for _ in range(per_digit):
                for s in synthetic_strokes(label, writer):
                    points.append(s.astype(np.float32))
                    strokes.append(strokes[-1] + len(s))
                samples.append(len(strokes) - 1)
                labels.append(label)
                writers.append(writer)
                sources.append(source)
    np.savez(path, points=np.concatenate(points), stroke_offsets=np.array(strokes, np.int32),
             sample_offsets=np.array(samples, np.int32), labels=np.array(labels, np.int64),
             writer=np.array(writers, np.int32), source=np.array(sources, "<U3"))
    return path


@pytest.fixture
def synthetic(tmp_path):
    return write_synthetic(tmp_path / "unipen_dev.npz")


# ---------------------------------------------------------------- loading

def test_load_unipen_reads_the_format(synthetic):
    samples, labels, writers, sources = de.load_unipen(synthetic)
    assert len(samples) == len(labels) == len(writers) == len(sources) == 80
    assert labels.dtype == np.int64 and writers.dtype == np.int64
    assert list(np.bincount(labels)) == [8] * 10 and list(np.bincount(writers)) == [20] * 4
    assert sorted(set(sources)) == ["gmd", "ibm", "syn"]
    four = samples[list(labels).index(4)]
    assert len(four) == 2 and all(s.dtype == np.float32 and s.shape[1] == 2 for s in four)
    np.testing.assert_allclose(np.concatenate(four).max(axis=0).max(), 1.0, atol=1e-6)


def test_data_path_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("UNIPEN_DATA", str(tmp_path / "env.npz"))
    assert de.data_path("given.npz").name == "given.npz"
    assert de.data_path().name == "env.npz"
    monkeypatch.delenv("UNIPEN_DATA")
    assert de.data_path() == ROOT.parent / "shared" / "data" / "unipen-dev" / "unipen_dev.npz"


def test_bad_files_raise_data_error(tmp_path, synthetic):
    with pytest.raises(de.DataError, match="not found"):
        de.load_unipen(tmp_path / "missing.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(de.DataError, match="not a readable"):
        de.load_unipen(tmp_path / "junk.npz")
    arrays = dict(np.load(synthetic))
    np.savez(tmp_path / "no_labels.npz", **{k: v for k, v in arrays.items() if k != "labels"})
    with pytest.raises(de.DataError, match="lacks"):
        de.load_unipen(tmp_path / "no_labels.npz")
    arrays["stroke_offsets"] = arrays["stroke_offsets"][::-1]
    np.savez(tmp_path / "bad_offsets.npz", **arrays)
    with pytest.raises(de.DataError, match="stroke_offsets"):
        de.load_unipen(tmp_path / "bad_offsets.npz")


def test_missing_data_exits_2_with_a_message(tmp_path, capsys):
    out, model = tmp_path / "drawings.json", tmp_path / "model.npz"
    model.write_bytes(b"")  # only its existence is checked before the data
    code = de.main(["--data", str(tmp_path / "missing.npz"), "--models", str(model),
                    "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "missing.npz" in err and "Traceback" not in err
    assert not out.exists()
    assert de.main(["--data", str(tmp_path / "x.npz"), "--models", str(tmp_path / "no.npz"),
                    "--out", str(out)]) == 2
    assert "no.npz" in capsys.readouterr().err


# ---------------------------------------------------------------- drawing

def test_render_like_a_person_places_the_digit_on_the_canvas(synthetic):
    samples, *_ = de.load_unipen(synthetic)
    rng = np.random.default_rng(0)
    sides = []
    for strokes in samples[:40]:
        canvas = de.render_like_a_person(strokes, rng)
        assert canvas.shape == (280, 280, 4) and canvas.dtype == np.uint8
        assert (canvas[:, :, 3] == 255).all()
        ink = canvas[:, :, 0] > 127
        assert not (ink[0].any() or ink[-1].any() or ink[:, 0].any() or ink[:, -1].any())
        rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
        sides.append(max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1 - de.PEN)  # minus the pen
    assert 0.35 * 280 - 2 <= min(sides) and max(sides) <= 0.85 * 280 + 2, sides
    assert max(sides) - min(sides) > 60  # sizes really vary


def test_drawing_is_seeded_and_per_sample(synthetic):
    samples, *_ = de.load_unipen(synthetic)
    a = de.render_like_a_person(samples[3], np.random.default_rng(5))
    assert np.array_equal(a, de.render_like_a_person(samples[3], np.random.default_rng(5)))
    assert not np.array_equal(a, de.render_like_a_person(samples[3], np.random.default_rng(6)))
    X = de.prepare(samples, np.arange(10), seed=0)
    assert X.shape == (10, 784) and X.dtype == np.float32
    assert np.array_equal(de.prepare(samples, np.array([7]), seed=0)[0], X[7])  # same in a subset
    assert not np.array_equal(de.prepare(samples, np.array([7]), seed=1)[0], X[7])


def test_subset_is_seeded():
    assert list(de.subset(50, None, 0)) == list(range(50))
    assert list(de.subset(50, 80, 0)) == list(range(50))
    a = de.subset(1000, 30, 4)
    assert len(set(a)) == 30 and list(a) == sorted(a)
    assert np.array_equal(a, de.subset(1000, 30, 4)) and not np.array_equal(a, de.subset(1000, 30, 5))


# ---------------------------------------------------------------- scoring

class FixedModel:
    """Stands in for a network: predicts ``predicted`` whatever the input."""

    def __init__(self, predicted, accuracy=0.5):
        self.predicted, self.metrics = np.asarray(predicted), {"accuracy": accuracy}

    def predict_proba(self, X):
        assert X.shape == (len(self.predicted), 784)
        return np.eye(10, dtype=np.float32)[self.predicted]


def test_scores_per_writer_source_and_digit(synthetic):
    samples, labels, writers, sources = de.load_unipen(synthetic)
    keep = ~((writers == 0) & (labels >= 5))  # writer 0 wrote only 0-4: writers differ in size
    labels, writers, sources = labels[keep], writers[keep], sources[keep]
    predicted = labels.copy()
    predicted[writers == 2] = (labels[writers == 2] + 1) % 10  # writer 2 (ibm) always wrong
    predicted[(writers == 3) & (labels == 5)] = 0               # writer 3 (gmd): both 5s wrong
    X = np.zeros((len(labels), 784), np.float32)
    r = de.evaluate_model(FixedModel(predicted, 0.97), X, labels, writers, sources)
    assert r["n"] == 70 and r["accuracy"] == pytest.approx(48 / 70)
    assert {w: v["n"] for w, v in r["per_writer"].items()} == {"0": 10, "1": 20, "2": 20, "3": 20}
    assert [r["per_writer"][w]["accuracy"] for w in "0123"] == [1.0, 1.0, 0.0, 0.9]
    assert r["writer_mean"] == pytest.approx(2.9 / 4)  # each writer counts once
    assert r["worst_writer"] == {"writer": 2, "accuracy": 0.0, "n": 20}
    assert r["per_source"] == {"syn": {"accuracy": 1.0, "n": 30}, "ibm": {"accuracy": 0.0, "n": 20},
                               "gmd": {"accuracy": 0.9, "n": 20}}
    assert [r["per_digit"][str(d)]["n"] for d in range(10)] == [8] * 5 + [6] * 5
    assert r["per_digit"]["0"]["accuracy"] == pytest.approx(6 / 8)
    assert r["per_digit"]["5"]["accuracy"] == pytest.approx(2 / 6)
    assert r["per_digit"]["6"]["accuracy"] == pytest.approx(4 / 6)
    assert (r["mnist_accuracy"], r["mnist_from"]) == (0.97, "stored")
    table = de.markdown({"fixed": r})
    assert ("| fixed | 97.0% (stored) | 68.6% | 72.5% | 0.0% (writer 2, n=20) | 100.0% | 0.0% "
            "| 90.0% |") in table
    assert "| fixed |" + " 75.0% |" * 5 + " 33.3% |" + " 66.7% |" * 4 in table


def test_worst_writer_ignores_writers_with_few_samples():
    labels = np.zeros(25, np.int64)
    writers = np.r_[np.zeros(21), np.ones(4)].astype(np.int64)
    predicted = np.r_[np.zeros(20), 1, np.ones(4)].astype(np.int64)
    r = de.score(predicted, labels, writers, np.array(["syn"] * 25))
    assert r["worst_writer"]["writer"] == 0 and r["per_writer"]["1"]["accuracy"] == 0.0
    assert de.score(predicted[21:], labels[21:], writers[21:], np.array(["syn"] * 4)
                    )["worst_writer"]["writer"] == 1  # nobody has enough: all count


def test_mnist_accuracy_is_measured_when_mnist_is_there(default_model, mnist_dir):
    acc, how = de.mnist_accuracy(default_model, mnist_dir)
    assert how == "test set" and acc == pytest.approx(default_model.metrics["accuracy"], abs=2e-3)
    assert de.mnist_accuracy(default_model, None) == (default_model.metrics["accuracy"], "stored")


def test_main_writes_json_atomically(synthetic, tmp_path, monkeypatch, capsys):
    require(DEFAULT_MODEL.exists(), f"{DEFAULT_MODEL} not found (run python train.py)")
    monkeypatch.delenv("MNIST_DATA", raising=False)
    out = tmp_path / "results" / "drawings.json"
    assert de.main(["--data", str(synthetic), "--models", str(DEFAULT_MODEL), "--out", str(out),
                    "--limit", "30", "--seed", "3"]) == 0
    report = json.loads(out.read_text())
    assert (report["n"], report["of"], report["seed"], report["limit"]) == (30, 80, 3, 30)
    r = report["models"]["weights/default.npz"]
    assert sum(v["n"] for v in r["per_writer"].values()) == 30
    assert sum(v["n"] for v in r["per_digit"].values()) == 30
    assert sum(v["n"] for v in r["per_source"].values()) == 30
    assert r["mnist_from"] == "stored" and r["mnist_accuracy"] > 0.9
    assert os.listdir(out.parent) == ["drawings.json"]  # no temporary file left behind
    printed = capsys.readouterr().out
    assert "| weights/default.npz |" in printed and "Took" in printed


def test_teaching_each_writer_and_its_figure(tmp_path):
    """teach_writers teaches every writer with enough drawings, once with rehearsal and
    once without, and measures the rest; the figure is a PNG, written atomically."""
    import nn

    samples, labels, writers, _ = de.load_unipen(write_synthetic(tmp_path / "u.npz", per_digit=4))
    X = de.prepare(samples, np.arange(len(samples)), seed=0)
    rng = np.random.default_rng(0)
    fake_mnist = ((rng.random((200, 784), np.float32), rng.integers(0, 10, 200)),
                  (rng.random((50, 784), np.float32), rng.integers(0, 10, 50)))
    model = nn.Network(nn.mlp_spec((16,)), seed=0)
    results = {how: de.teach_writers(model, X, labels, writers, fake_mnist, rehearsal=how == "on")
               for how in ("on", "off")}
    for how, result in results.items():
        s = result["summary"]
        assert s["writers"] == 4 and s["rehearsal"] == (how == "on")
        assert [r["n_rest"] for r in result["writers"]] == [20] * 4   # 40 drawings, 20 taught
        assert 0 <= s["before_mean"] <= 1 and 0 <= s["after_mean"] <= 1
        assert s["after_mean"] > s["before_mean"]    # an untrained network learns the shapes
    figure = tmp_path / "teaching.png"
    de.teaching_figure("tiny", results["on"], results["off"], figure)
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(os.listdir(tmp_path)) == ["teaching.png", "u.npz"]


# ---------------------------------------------------------------- the real drawings

def test_shipped_network_reads_real_drawings(default_model):
    """A seeded 300-sample subset of the real development set: 96.0% with the shipped
    CNN (the MLP shipped before augmentation read 91.7%); below 93% is a regression."""
    require(REAL_DATA.is_file(), f"UNIPEN development set not found at {REAL_DATA} "
            "(set UNIPEN_DATA)")
    samples, labels, writers, sources = de.load_unipen(REAL_DATA)
    idx = de.subset(len(samples), 300, seed=0)
    X = de.prepare(samples, idx, seed=0)
    r = de.evaluate_model(default_model, X, labels[idx], writers[idx], sources[idx])
    assert r["n"] == 300 and r["accuracy"] >= 0.93, de.markdown({"default": r})
