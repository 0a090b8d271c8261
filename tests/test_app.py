"""The Streamlit page (app.py) without a browser: one test per user flow.

``streamlit.testing.v1.AppTest`` runs the real app.py in this process. The
drawing canvas is replaced through ``sys.modules`` (app.py imports
``streamlit_drawable_canvas`` inside ``canvas_ui()`` on every run), with a fake
that returns the stroke data a test puts in ``canvas.drawing`` (fabric.js JSON
from ``canvas_sim.fabric_json``, what the real component sends). Tabs are
opened by setting the ``tab`` key, as a click does.

Training is not what these tests test (tests/test_app_logic*.py and
tests/test_training.py do): ``nn.train`` is replaced by the real one on 300
images for one epoch, so a "training" takes a fraction of a second. Saved
networks go to a temporary ``DIGITLAB_WEIGHTS`` folder and drawings to a
temporary ``DIGITLAB_DB``; weights/ is never written.
"""

import sys
import time
import types
import uuid

import pytest

import nn
from canvas_sim import fabric_json
from conftest import ROOT

APP = str(ROOT / "app.py")
WAIT_S = 60


class FakeCanvas:
    """Stands in for streamlit_drawable_canvas: ``drawing`` is what the user has drawn."""

    def __init__(self):
        self.drawing = None
        self.calls = []
        self.module = types.ModuleType("streamlit_drawable_canvas")
        self.module.st_canvas = self.st_canvas

    def st_canvas(self, **kwargs):
        self.calls.append(kwargs)
        return types.SimpleNamespace(json_data=self.drawing)


@pytest.fixture
def canvas(monkeypatch):
    fake = FakeCanvas()
    monkeypatch.setitem(sys.modules, "streamlit_drawable_canvas", fake.module)
    return fake


@pytest.fixture
def places(tmp_path, monkeypatch, mnist_dir):
    """Saved networks and drawings in temporary places; MNIST where the tests find it."""
    monkeypatch.setenv("DIGITLAB_WEIGHTS", str(tmp_path / "weights"))
    monkeypatch.setenv("DIGITLAB_DB", str(tmp_path / "drawings.sqlite3"))
    monkeypatch.setenv("MNIST_DATA", str(mnist_dir))
    return tmp_path


@pytest.fixture
def quick_training(monkeypatch):
    """nn.train on 300 images for one epoch: the page's flow, not the learning."""
    real = nn.train

    def quick(recipe, data, callbacks=()):
        return real(recipe.replace(n_images=300, epochs=1), data, callbacks=callbacks)

    monkeypatch.setattr(nn, "train", quick)


@pytest.fixture
def apps(default_model, canvas, places):
    """Factory for AppTests sharing one browser secret (one visitor); stops any
    training they leave running."""
    from streamlit.testing.v1 import AppTest

    made = []

    visitor = uuid.uuid4().hex  # one visitor per test: the server's trainings outlive an AppTest

    def make(secret=visitor, tab=None):
        at = AppTest.from_file(APP, default_timeout=WAIT_S)
        at.session_state["visitor_secret"] = secret
        if tab:
            at.session_state["tab"] = tab
        made.append(at)
        return at

    yield make
    from app_logic import jobs
    for job in jobs.running_jobs():
        job.stop_event.set()
        job.join(30)


def label_of(at, word):
    matches = [t.label for t in at.tabs if word in t.label]
    assert len(matches) == 1, [t.label for t in at.tabs]
    return matches[0]


def no_exception(at):
    assert not at.exception, [e.value for e in at.exception]
    errors = [e.value for e in at.error if "something went wrong" in e.value]
    assert not errors, errors


def open_tab(at, word):
    if not at.tabs:
        at.run()
    at.session_state["tab"] = label_of(at, word)
    at.run()
    no_exception(at)
    return at


def metric(at, label):
    found = [m.value for m in at.metric if m.label == label]
    assert found, [m.label for m in at.metric]
    return found[0]


def wait_for_training(at):
    """Rerun until the session has collected its training (the page reruns when it ends)."""
    deadline = time.monotonic() + WAIT_S
    while True:
        at.run()
        no_exception(at)
        message = at.session_state["train_message"] if "train_message" in at.session_state else None
        if message:
            return message
        assert time.monotonic() < deadline, "the training never finished"
        time.sleep(0.2)


def button(at, label):
    found = [b for b in at.button if b.label == label or b.label.startswith(label)]
    assert found, [b.label for b in at.button]
    return found[0]


# ---------------------------------------------------------------- flows

def test_every_tab_opens_with_the_shipped_network(apps):
    at = apps()
    at.run()
    no_exception(at)
    assert len(at.tabs) == 7
    assert all(":material/" in t.label for t in at.tabs)  # icons without an emoji font
    assert any("Draw a digit" in i.value for i in at.info)
    for word in ("My drawings", "Training", "Evaluation", "Retrain", "Runs", "Inside"):
        open_tab(at, word)
    assert at.sidebar.selectbox[0].label == "Active network"


def test_draw_read_and_label_a_digit(apps, canvas):
    from app_logic import identity, store
    at = apps()
    canvas.drawing = fabric_json("7")
    at.run()
    no_exception(at)
    assert metric(at, "Prediction") == "7"
    assert canvas.calls[-1]["return_image_data"] is False  # the browser's PNG is never decoded
    generation = at.session_state["canvas_gen"]
    button(at, "Right, it's a 7").click().run()
    no_exception(at)
    assert at.session_state["canvas_gen"] == generation + 1  # a fresh canvas for the next one
    assert any("Kept as a 7" in s.value for s in at.success)
    visitor = identity.visitor_id(at.session_state["visitor_secret"])
    db = store.open_store()
    mine = db.drawings(visitor, db.personal_collection(visitor))
    assert list(mine.labels) == [7] and mine.images.shape == (1, 784)
    canvas.drawing = fabric_json("1")
    at.run()
    at.get("pills")[0].set_value("4").run()   # "No, it's a 4"
    no_exception(at)
    mine = db.drawings(visitor, db.personal_collection(visitor))
    assert list(mine.labels) == [7, 4] and list(mine.predicted) == [7, 1]


@pytest.mark.parametrize("drawing", [
    "not a dict", {"objects": "nope"}, {"objects": [{"type": "Image", "src": "data:..."}]},
    {"objects": [{"type": "Path", "strokeWidth": 18, "path": [["M", float("nan"), 3]]}]},
    {"objects": [{"type": "Path", "strokeWidth": 18, "scaleX": 40, "path": [["M", 1, 3]]}]},
    {"objects": [{"type": "Path", "strokeWidth": 18, "path": [["M", 1, 1]] * 30000}]},
], ids=["text", "objects", "image", "nan", "scaled", "huge"])
def test_hostile_canvas_data_gets_a_message(apps, canvas, drawing):
    at = apps()
    canvas.drawing = drawing
    at.run()
    no_exception(at)
    assert any("Could not read the drawing" in e.value for e in at.error)
    assert not at.metric


def test_two_trainings_become_runs_to_compare(apps, quick_training):
    at = open_tab(apps(), "Retrain")
    assert not button(at, "Train").disabled
    button(at, "Train").click().run()
    kind, text = wait_for_training(at)
    assert kind == "success", text
    assert at.session_state["active"] == "run:1"
    at.session_state["rt_lr"] = 0.002
    button(at, "Train").click().run()
    wait_for_training(at)
    assert at.session_state["active"] == "run:2"
    open_tab(at, "Runs")
    table = at.dataframe[0].value
    assert list(table["run"]) == [1, 2]
    assert "Learning rate" in table.columns
    assert at.get("vega_lite_chart")  # curves overlaid, confusion matrices compared
    button(at, "Make active").click().run()  # the newest run's button comes first
    assert at.session_state["active"] == "run:2"


def test_a_shared_link_fills_retrain_and_reports_bad_values(apps):
    at = apps(tab=None)
    at.query_params.update({"lr": "0.01", "conv": "8,8", "epochs": "999", "batch_size": "x"})
    at.run()
    open_tab(at, "Retrain")
    assert at.session_state["rt_lr"] == 0.01
    assert at.session_state["rt_conv_0"] == 8 and at.session_state["rt_conv_1"] == 8
    warnings = " ".join(w.value for w in at.warning)
    assert "Epochs" in warnings and "Batch size" in warnings


def test_a_training_survives_a_reload_and_blocks_a_second_one(apps, monkeypatch):
    release = __import__("threading").Event()
    real = nn.train

    def slow(recipe, data, callbacks=()):
        release.wait(WAIT_S)
        return real(recipe.replace(n_images=300, epochs=1), data, callbacks=callbacks)

    monkeypatch.setattr(nn, "train", slow)
    first = open_tab(apps(), "Retrain")
    button(first, "Train").click().run()
    reloaded = open_tab(apps(), "Retrain")  # a new session of the same browser
    assert button(reloaded, "Train").disabled
    assert any("Training on the server" in i.value for i in reloaded.info)
    release.set()
    kind, _ = wait_for_training(reloaded)
    assert kind == "success"


def test_save_and_delete_your_network(apps, quick_training, places):
    at = open_tab(apps(), "Retrain")
    button(at, "Train").click().run()
    wait_for_training(at)
    at.text_input(key="save_name").set_value("mine")
    at.button(key="FormSubmitter:save_form-Save").click().run()
    no_exception(at)
    assert (places / "weights" / "mine.npz").exists()
    assert at.session_state["active"] == "file:mine"
    stranger = open_tab(apps(secret="f" * 32), "Retrain")
    assert not [b for b in stranger.button if b.label == "Delete"]  # not theirs to delete
    open_tab(at, "Retrain")
    button(at, "Delete").click().run()
    no_exception(at)
    assert not (places / "weights" / "mine.npz").exists()


def test_teach_your_drawings(apps, canvas):
    at = apps()
    for kind in "7147":
        canvas.drawing = fabric_json(kind)
        at.run()
        button(at, "Right").click().run()
    open_tab(at, "My drawings")
    assert metric(at, "Drawings") == "4"
    button(at, "Teach").click().run()
    no_exception(at)
    text = " ".join(s.value for s in at.success)
    assert "On these drawings" in text and "On MNIST's test set" in text
    assert at.session_state["active"] == "run:1"
    assert at.session_state["runs"].runs[0].kind == "teaching"


def test_without_mnist_drawing_works_and_retrain_explains(apps, canvas, monkeypatch, tmp_path):
    empty = tmp_path / "no-mnist"
    empty.mkdir()
    monkeypatch.setenv("MNIST_DATA", str(empty))
    at = apps()
    canvas.drawing = fabric_json("7")
    at.run()
    no_exception(at)
    assert metric(at, "Prediction") == "7"
    open_tab(at, "Retrain")
    assert any("need the MNIST dataset" in w.value for w in at.warning)
    assert [b for b in at.button if b.label == "Download MNIST"]
    assert at.expander[0].proto.expanded if hasattr(at.expander[0], "proto") else True

