"""app_logic.session: which network a session uses, and how finished work enters it.

Files are "loaded" by a stand-in (``Files``) where loading is not what is
tested; trainings go through the real ``jobs.Trainings`` with ``nn.train``
replaced by one that returns at once.
"""

import numpy as np
import pytest

import nn
from app_logic import jobs, library, session, teaching
from app_logic.runs import MAX_NETWORKS, RunHistory

RECIPE = nn.Recipe(hidden=(8,), epochs=2, n_images=500, batch_size=50)
JOIN_S = 120


def stand_in(accuracy=0.9, epochs=2, seed=0):
    model = nn.Network(nn.mlp_spec((4,)), seed=seed)
    model.history = [{"epoch": e, "train_loss": 0.5, "train_acc": accuracy, "val_loss": 0.5,
                      "val_acc": accuracy, "seconds": 0.1, "lr": 0.001}
                     for e in range(1, epochs + 1)]
    y = np.arange(100) % 10
    model.metrics = nn.metrics.classification_report(
        y, np.where(np.arange(100) < 100 * accuracy, y, (y + 1) % 10))
    model.train_seconds = 1.25
    return model


class Files:
    """A ``load`` for session.resolve: known paths give ``(network, key)``; others raise
    what ``library.load_checked`` would (a missing file unless told otherwise)."""

    def __init__(self, models=None, errors=None):
        self.models, self.errors, self.asked = dict(models or {}), dict(errors or {}), []

    def __call__(self, path):
        self.asked.append(path)
        if path in self.errors:
            raise self.errors[path]
        if path not in self.models:
            raise FileNotFoundError(path)
        return self.models[path], f"key:{path.name}"


@pytest.fixture
def folder(tmp_path, monkeypatch):
    monkeypatch.setenv(library.WEIGHTS_ENV, str(tmp_path))
    return tmp_path


DEFAULT, MLP = library.SHIPPED["default"], library.SHIPPED["mlp"]


def history_with(*accuracies):
    runs = RunHistory()
    for i, acc in enumerate(accuracies):
        runs.add("training", f"net {i + 1}", stand_in(acc, seed=i), RECIPE.to_dict())
    return runs


# ---------------------------------------------------------------- choices and resolve

def test_choices_list_shipped_saved_then_runs_newest_first():
    runs = history_with(0.8, 0.9, 0.95)
    runs.get(2).model = None     # dropped to save memory
    choices = session.choices(runs, ["mine", "Other"])
    assert list(choices) == ["file:default", "file:mlp", "file:mine", "file:Other", "run:3",
                             "run:1"]
    assert choices["file:mine"] == "mine (saved)"
    assert choices["run:3"] == "Run 3: net 3"
    assert list(session.choices(RunHistory(), [])) == ["file:default", "file:mlp"]


def test_resolve_a_file(folder):
    model = stand_in()
    load = Files({DEFAULT: model, folder / "mine.npz": model})
    active, error = session.resolve("file:default", RunHistory(), load)
    assert error is None and active.model is model and active.key == "key:default.npz"
    assert active.choice == "file:default" and active.label == "default"
    active, error = session.resolve("file:mine", RunHistory(), load)
    assert error is None and active.label == "mine" and load.asked[-1] == folder / "mine.npz"


@pytest.mark.parametrize("choice, load, message", [
    ("file:gone", Files(), "gone.npz was not found."),
    ("file:default", Files(), "default.npz was not found. Run `python train.py` to create it."),
    ("file:../etc/passwd", Files(), "not a network name: '../etc/passwd'"),
    ("file:bad", Files(errors={"bad": nn.ModelFileError("bad.npz: the file is empty")}),
     "bad.npz: the file is empty"),
    ("file:locked", Files(errors={"locked": PermissionError(13, "Permission denied")}),
     "locked.npz could not be read (Permission denied)."),
    ("run:7", Files(), "That run's network is no longer kept in this session."),
    ("run:abc", Files(), "That run's network is no longer kept in this session."),
    ("thing:1", Files(), "Unknown network 'thing:1'."),
    (None, Files(), "Unknown network None."),
])
def test_what_cannot_be_resolved_says_why(folder, choice, load, message):
    load.errors = {folder / f"{name}.npz": e for name, e in load.errors.items()}
    assert session.resolve(choice, RunHistory(), load) == (None, message)


def test_resolve_a_run():
    runs = history_with(0.8, 0.9)
    active, error = session.resolve("run:2", runs)
    assert error is None and active.model is runs.get(2).model
    assert active.key == runs.get(2).key and active.label == "Run 2: net 2"


def test_resolve_the_shipped_network_for_real(default_model):
    active, error = session.resolve(session.DEFAULT_CHOICE, RunHistory())
    assert error is None and active.key.startswith(f"file:{DEFAULT}:")
    assert active.model.describe() == default_model.describe()


def test_a_missing_file_falls_back_to_the_last_good_then_the_default(folder):
    runs = history_with(0.9)
    default, mlp = stand_in(seed=5), stand_in(seed=6)
    load = Files({DEFAULT: default, MLP: mlp})
    # The last choice that worked comes first ...
    active, error = session.resolve_with_fallback("file:gone", runs, "run:1", load)
    assert active.model is runs.get(1).model and error == "gone.npz was not found."
    # ... then the shipped default ...
    active, error = session.resolve_with_fallback("file:gone", runs, "file:also-gone", load)
    assert active.model is default and error == "gone.npz was not found."
    assert session.resolve_with_fallback("file:gone", runs, None, load)[0].model is default
    # ... then the shipped MLP.
    active, error = session.resolve_with_fallback("file:gone", runs, None, Files({MLP: mlp}))
    assert active.model is mlp and error == "gone.npz was not found."
    # Nothing works: no network, and the reason.
    assert session.resolve_with_fallback("file:gone", runs, "file:x", Files()) == (
        None, "gone.npz was not found.")
    # A choice that works needs no fallback.
    active, error = session.resolve_with_fallback("file:mlp", runs, "run:1", load)
    assert active.model is mlp and error is None


def test_the_failed_choice_is_not_tried_twice(folder):
    load = Files()
    session.resolve_with_fallback("file:gone", RunHistory(), "file:gone", load)
    assert load.asked.count(folder / "gone.npz") == 1


# ---------------------------------------------------------------- finished work

def finished(monkeypatch, train, visitor="v", trainings=None):
    """A Trainings with ``visitor``'s job finished by the stand-in ``train``."""
    monkeypatch.setattr(nn, "train", train)
    trainings = trainings or jobs.Trainings()
    job, problem = trainings.start(visitor, RECIPE, None)
    assert problem is None
    job.join(JOIN_S)
    assert not job.running
    return trainings, job


def test_a_done_training_becomes_a_run_and_the_active_network(monkeypatch):
    model = stand_in(0.93)
    trainings, job = finished(monkeypatch, lambda recipe, data, callbacks=(): model)
    runs = RunHistory()
    page = set()
    active, (kind, text) = session.collect_training(trainings, "v", runs, "file:default", page)
    assert active == "run:1" and kind == "success" and text.startswith("Training finished")
    run = runs.get(1)
    assert run.kind == "training" and run.model is model and run.name == model.describe()
    assert run.settings == RECIPE.to_dict() and run.seconds == 1.25
    assert run.frames == job.frames
    assert session.resolve(active, runs)[0].model is model
    # Collected once: the next rerun of this page finds nothing.
    assert session.collect_training(trainings, "v", runs, active, page) == (active, None)
    assert len(runs) == 1 and page == {job.id}


def chance(recipe, data, callbacks=()):
    return stand_in(0.1)


def stopped(recipe, data, callbacks=()):
    return nn.Network(recipe.spec())


def failed(recipe, data, callbacks=()):
    raise MemoryError("out of memory")


def diverged(recipe, data, callbacks=()):
    raise nn.TrainingDiverged("training diverged in epoch 1 (loss became nan); try a smaller "
                              "learning rate than 1", [])


@pytest.mark.parametrize("train, kind", [(chance, "warning"), (stopped, "info"),
                                         (failed, "error"), (diverged, "error")])
def test_other_outcomes_leave_the_active_network_alone(monkeypatch, train, kind):
    trainings, job = finished(monkeypatch, train)
    runs = history_with(0.9)
    page = set()
    active, message = session.collect_training(trainings, "v", runs, "run:1", page)
    assert active == "run:1" and message == jobs.finished_message(job) and message[0] == kind
    assert len(runs) == 1 and trainings.current("v", page) is None


def test_nothing_to_collect(monkeypatch):
    trainings = jobs.Trainings()
    runs = RunHistory()
    assert session.collect_training(trainings, "v", runs, "file:mine", set()) == ("file:mine", None)
    # Another visitor's result is not this one's.
    trainings, _ = finished(monkeypatch, lambda recipe, data, callbacks=(): stand_in(),
                            visitor="other")
    assert session.collect_training(trainings, "v", runs, "file:mine", set()) == ("file:mine", None)
    assert len(runs) == 0 and trainings.current("other") is not None


def test_collecting_keeps_the_active_runs_network(monkeypatch):
    runs = history_with(*[0.9] * MAX_NETWORKS)
    trainings, _ = finished(monkeypatch, lambda recipe, data, callbacks=(): stand_in())
    active, _ = session.collect_training(trainings, "v", runs, "run:1", set())
    assert active == f"run:{MAX_NETWORKS + 1}"
    assert runs.get(1).model is not None          # the oldest, but the active one
    # Had another network been active, the oldest run would have made room.
    runs = history_with(*[0.9] * MAX_NETWORKS)
    trainings, _ = finished(monkeypatch, lambda recipe, data, callbacks=(): stand_in())
    session.collect_training(trainings, "v", runs, "file:default", set())
    assert runs.get(1).model is None and runs.get(2).model is not None


def teach_result(n=3, rehearsal=True):
    return teaching.TeachResult(model=stand_in(0.91, seed=9), before={"drawings": 0.5,
                                                                      "mnist": 0.9},
                                after={"drawings": 1.0, "mnist": 0.89}, rehearsal=rehearsal,
                                n_examples=n, seconds=2.5)


def test_record_teaching():
    runs = history_with(0.9)
    result = teach_result()
    active = session.record_teaching(result, runs, "default", "run:1")
    assert active == "run:2"
    run = runs.get(2)
    assert run.kind == "teaching" and run.name == "default taught 3 drawings"
    assert run.model is result.model and run.seconds == 2.5
    assert run.notes == {"before": result.before, "after": result.after}
    assert run.settings == {**teaching.TEACH_SETTINGS, "rehearsal": True, "examples": 3}
    session.record_teaching(teach_result(1, rehearsal=False), runs, "Run 2", active)
    assert runs.get(3).name == "Run 2 taught 1 drawing (no rehearsal)"


def test_record_teaching_keeps_the_active_runs_network():
    runs = history_with(*[0.9] * MAX_NETWORKS)
    session.record_teaching(teach_result(), runs, "net 1", "run:1")
    assert runs.get(1).model is not None          # the oldest, but the active one
    runs = history_with(*[0.9] * MAX_NETWORKS)
    session.record_teaching(teach_result(), runs, "default", "file:default")
    assert runs.get(1).model is None


def test_an_odd_run_number_is_refused_not_raised():
    active, error = session.resolve("run:²", history_with(0.9))
    assert active is None and error
