"""app_logic.runs: a session's trainings and teachings side by side.

Two real (tiny) trainings go the way the page sends them: ``Trainings.start``,
then ``session.collect_training`` makes each a run. Memory bounds are tested
with untrained stand-ins (building a network costs nothing).
"""

import csv
import io
import json

import numpy as np
import pytest

import nn
from app_logic import figures, jobs, session
from app_logic import runs as runs_mod
from app_logic.runs import RunHistory

A = nn.Recipe(hidden=(8,), epochs=2, n_images=500, batch_size=50, lr=0.01, seed=3)
B = A.replace(epochs=3, batch_size=25)      # differs in two settings
JOIN_S = 120


@pytest.fixture(scope="module")
def two_runs(mnist):
    """Two trainings collected into one session: ``(history, active choice, predictions
    of each run's network right after training, on the first 200 test images)``."""
    trainings, history, active = jobs.Trainings(), RunHistory(), session.DEFAULT_CHOICE
    X = mnist[1][0][:200]
    predictions = []
    for recipe in (A, B):
        job, problem = trainings.start("visitor", recipe, mnist)
        assert problem is None
        job.join(JOIN_S)
        assert job.outcome == "done"
        predictions.append(job.model.predict_proba(X).copy())
        active, (kind, _) = session.collect_training(trainings, "visitor", history, active, set())
        assert kind == "success"
    return history, active, predictions


def stand_in(accuracy=0.5, epochs=1, seed=0):
    """An untrained network with a history and a test report, as a run needs."""
    model = nn.Network(nn.mlp_spec((4,)), seed=seed)
    model.history = [{"epoch": e, "train_loss": 1.0 / e, "train_acc": accuracy, "val_loss": 1.0,
                      "val_acc": accuracy, "seconds": 0.1, "lr": 0.01}
                     for e in range(1, epochs + 1)]
    y = np.arange(100) % 10
    model.metrics = nn.metrics.classification_report(
        y, np.where(np.arange(100) < 100 * accuracy, y, (y + 3) % 10))
    return model


def test_two_trainings_give_two_runs_with_their_own_curves(two_runs):
    history, active, _ = two_runs
    assert len(history) == 2 and active == "run:2"
    first, second = history.runs
    assert (first.id, second.id) == (1, 2)
    for run, recipe in ((first, A), (second, B)):
        assert run.kind == "training" and run.model is not None
        assert run.settings == recipe.to_dict()
        assert len(run.history) == recipe.epochs == len(run.frames) - 1
        assert run.history == run.model.history and run.metrics == run.model.metrics
        assert run.accuracy == run.metrics["accuracy"] and run.name == run.model.describe()
        assert history.get(run.id) is run
        assert history.label(run) == f"Run {run.id}: {run.name}"
    assert history.get(99) is None
    curves = history.curves([1, 2])
    assert [label for label, _ in curves] == ["Run 1", "Run 2"]
    assert curves[0][1] is first.history and curves[1][1] is second.history
    assert history.curves([2]) == [(history.short_label(second), second.history)]
    assert history.curves([]) == []


def test_curves_chart_has_a_row_per_run_epoch_and_split(two_runs):
    history = two_runs[0]
    data, spec = figures.curves_chart(history.curves([1, 2]), "accuracy")
    rows = data.to_pylist()
    assert len(rows) == (A.epochs + B.epochs) * 2
    run2 = history.get(2)
    val = [r for r in rows if r["run"] == history.short_label(run2) and r["data"] == "validation"]
    assert [r["epoch"] for r in val] == [1, 2, 3]
    assert [r["value"] for r in val] == pytest.approx([100 * h["val_acc"] for h in run2.history])
    loss, _ = figures.curves_chart(history.curves([1]), "loss")
    train = [r["value"] for r in loss.to_pylist() if r["data"] == "training"]
    assert train == pytest.approx([h["train_loss"] for h in history.get(1).history])
    assert spec["encoding"]["color"]["field"] == "run"


def test_the_table_marks_exactly_the_settings_that_differ(two_runs):
    history = two_runs[0]
    frame, differing = history.table()
    assert differing == ["Batch size", "Epochs"]
    assert list(frame["run"]) == [1, 2] and list(frame["epochs"]) == [2, 3]
    assert list(frame["Batch size"]) == ["50", "25"] and list(frame["Epochs"]) == ["2", "3"]
    assert list(frame["Hidden layers"]) == ["8", "8"]
    assert list(frame["Convolution channels"]) == ["none", "none"]
    assert list(frame["Learning rate"]) == ["0.01", "0.01"]
    for run, acc in zip(history.runs, frame["test accuracy (%)"]):
        assert acc == round(100 * run.accuracy, 2)
    # One run alone differs from nothing.
    alone = RunHistory()
    alone.add("training", "x", stand_in(), A.to_dict())
    assert alone.table()[1] == []


def test_a_teaching_run_sits_in_the_same_table():
    history = RunHistory()
    history.add("training", "net", stand_in(), A.to_dict())
    history.add("teaching", "net taught 3 drawings", stand_in(0.6),
                {"steps": 60, "lr": 3e-4, "batch_size": 64, "new_share": 0.5,
                 "rehearsal": True, "examples": 3})
    frame, differing = history.table()
    assert list(frame["kind"]) == ["training", "teaching"]
    # Shared names get the recipe's labels; the teaching's own settings their words.
    assert {"Learning rate", "Batch size", "steps", "new share", "examples"} <= set(differing)
    assert list(frame["Learning rate"]) == ["0.01", "0.0003"]


def test_confusion_matrices_and_their_difference(two_runs):
    history = two_runs[0]
    a, b = history.get(1), history.get(2)
    cm_a, cm_b = runs_mod.confusion_pair(a, b)
    assert cm_a.shape == cm_b.shape == (10, 10)
    np.testing.assert_array_equal(cm_a, a.metrics["confusion_matrix"])
    np.testing.assert_array_equal(cm_b, b.metrics["confusion_matrix"])
    data, _ = figures.confusion_difference_chart(cm_a, cm_b)
    rows = data.to_pylist()
    assert len(rows) == 100
    diff = np.zeros((10, 10), int)
    for r in rows:
        diff[int(r["true digit"]), int(r["predicted"])] = r["change"]
        right = r["true digit"] == r["predicted"]
        expected = "" if not r["change"] else (
            "better" if (r["change"] > 0) == right else "worse")
        assert r["verdict"] == expected
        assert r["label"] == (f"{r['change']:+d}" if r["change"] else "")
    np.testing.assert_array_equal(diff, cm_b - cm_a)
    # Both saw the same test images: every true digit's row changes by 0 in all.
    assert (diff.sum(axis=1) == 0).all() and diff.any()
    same, _ = figures.confusion_difference_chart(cm_a, cm_a)
    assert set(same.column("change").to_pylist()) == {0}


def test_a_run_made_active_again_gives_identical_predictions(two_runs, mnist):
    history, _, predictions = two_runs
    X = mnist[1][0][:200]
    for run, expected in zip(history.runs, predictions):
        active, error = session.resolve(session.run_choice(run.id), history)
        assert error is None and active.model is run.model and active.key == run.key
        np.testing.assert_array_equal(active.model.predict_proba(X), expected)
    assert history.get(1).key != history.get(2).key


def test_only_max_networks_runs_keep_their_network():
    history = RunHistory()
    n = runs_mod.MAX_NETWORKS + 4
    for i in range(n):
        history.add("training", f"net {i}", stand_in(seed=i), A.to_dict(), frames=[np.zeros(1)],
                    keep={1})
    kept = [r.id for r in history.runs if r.model is not None]
    # the kept run (the active network) and the newest, MAX_NETWORKS in all
    assert kept == [1, *range(n - runs_mod.MAX_NETWORKS + 2, n + 1)]
    dropped = [r for r in history.runs if r.model is None]
    assert dropped and all(r.frames == [] and r.history and r.metrics for r in dropped)
    # The sidebar offers only runs that still have a network; a dropped one says why.
    offered = [c for c in session.choices(history, []) if c.startswith("run:")]
    assert sorted(offered) == sorted(f"run:{i}" for i in kept)
    assert session.resolve(f"run:{dropped[0].id}", history) == (
        None, "That run's network is no longer kept in this session.")
    # Without a kept run, exactly the newest MAX_NETWORKS keep theirs.
    plain = RunHistory()
    for i in range(n):
        plain.add("training", f"net {i}", stand_in(seed=i), A.to_dict())
    assert [r.id for r in plain.runs if r.model is not None] == list(
        range(n - runs_mod.MAX_NETWORKS + 1, n + 1))


def test_at_most_max_networks_even_with_an_old_active_run():
    history = RunHistory()
    for i in range(runs_mod.MAX_NETWORKS + 4):
        history.add("training", f"net {i}", stand_in(seed=i), A.to_dict(), keep={1})
    assert history.get(1).model is not None
    assert sum(r.model is not None for r in history.runs) <= runs_mod.MAX_NETWORKS


def test_at_most_max_runs_are_kept():
    history = RunHistory()
    for i in range(runs_mod.MAX_RUNS + 3):
        history.add("training", f"net {i}", stand_in(seed=0), A.to_dict())
    assert len(history) == runs_mod.MAX_RUNS
    assert history.runs[0].id == 4 and history.get(1) is None
    assert history.runs[-1].id == runs_mod.MAX_RUNS + 3   # ids are never reused


def _keys(value):
    if isinstance(value, dict):
        for k, v in value.items():
            yield k
            yield from _keys(v)
    elif isinstance(value, list):
        for v in value:
            yield from _keys(v)


def test_export_json_has_curves_and_metrics_and_no_weights(two_runs):
    history = two_runs[0]
    text = history.export_json()
    data = json.loads(text)
    assert [r["run"] for r in data["runs"]] == [1, 2]
    for exported, run in zip(data["runs"], history.runs):
        assert exported["history"] == json.loads(json.dumps(run.history))
        assert exported["metrics"]["accuracy"] == run.accuracy
        assert exported["metrics"]["confusion_matrix"] == run.metrics["confusion_matrix"]
        assert exported["settings"] == run.settings and exported["kind"] == "training"
    keys = set(_keys(data))
    assert not keys & {"model", "weights", "frames", "weight", "W"}
    assert len(text) < 50_000     # a few KB: curves and numbers, not 8-unit weights (6,000+)


def test_export_csv_has_a_row_per_run_and_epoch(two_runs):
    history, *_ = two_runs
    rows = list(csv.reader(io.StringIO(history.export_csv())))
    assert rows[0] == ["run", "name", "kind", "epoch", "train_loss", "train_acc", "val_loss",
                       "val_acc", "lr", "test_accuracy"]
    body = rows[1:]
    assert [(r[0], r[3]) for r in body] == [("1", "1"), ("1", "2"), ("2", "1"), ("2", "2"),
                                            ("2", "3")]
    for r in body:
        run = history.get(int(r[0]))
        record = run.history[int(r[3]) - 1]
        assert float(r[7]) == pytest.approx(record["val_acc"], rel=1e-5)
        assert float(r[9]) == pytest.approx(run.accuracy, rel=1e-5)
    # A run without curves still has its row.
    empty = RunHistory()
    model = stand_in()
    model.history = []
    empty.add("teaching", "t", model, {"steps": 60})
    assert list(csv.reader(io.StringIO(empty.export_csv())))[1][:4] == ["1", "t", "teaching", ""]
