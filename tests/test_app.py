"""Tests for the Streamlit page (app.py), without a browser.

Most tests drive the real script with ``streamlit.testing.v1.AppTest``, which
runs app.py in this process. The drawing canvas is replaced through
``sys.modules``: app.py imports ``streamlit_drawable_canvas`` inside
``draw_canvas()`` on every run, so a fake module registered with
``monkeypatch.setitem(sys.modules, ...)`` is what it gets; the fake returns
whatever RGBA array the test puts in ``canvas.image`` (a test digit redrawn
with ``canvas_sim.render_on_canvas``, as a person would draw it) and records
the arguments it was called with.

Training runs in a background thread, so the tests poll: ``at.run()`` every
0.2 s until the session's job is gone (bounded). Saved networks go to a
temporary ``DIGITLAB_WEIGHTS`` folder; weights/default.npz is never written.

A canvas stroke in the browser reruns only the Draw tab's ``st.fragment``;
``fragment_rerun`` does the same in AppTest (see its docstring). The logic
underneath the page (``lab/``) is tested without Streamlit in test_lab.py.
"""

import io
import logging
import re
import sys
import time
import types
from functools import partial

import numpy as np
import pytest
from PIL import Image

from canvas_sim import draw_digit, render_on_canvas
from conftest import DEFAULT_MODEL, ROOT

APP = str(ROOT / "app.py")
RETRAINED = "this session's retrained network"
PREVIOUS = "previous network"
TRAIN_TIMEOUT = 30  # s
# A run far too long to finish its first epoch before the test presses Stop:
# 4 x 512 units, 60,000 images, batch 16 (minutes per epoch on 2 cores).
HUGE = {"rt_layers": 4, "rt_width_1": 512, "rt_width_2": 512, "rt_width_3": 512, "rt_width_4": 512}


# ---------------------------------------------------------------- fixtures

class FakeCanvas:
    """Stands in for streamlit_drawable_canvas: ``image`` is what the user has drawn."""

    def __init__(self):
        self.image = None
        self.calls = []
        self.module = types.ModuleType("streamlit_drawable_canvas")
        self.module.st_canvas = self.st_canvas

    def st_canvas(self, **kwargs):
        self.calls.append(kwargs)
        return types.SimpleNamespace(image_data=None if self.image is None else self.image.copy())


@pytest.fixture
def canvas(monkeypatch):
    fake = FakeCanvas()
    monkeypatch.setitem(sys.modules, "streamlit_drawable_canvas", fake.module)
    return fake


@pytest.fixture
def weights(tmp_path, monkeypatch):
    """The folder saved networks are written to and listed from."""
    folder = tmp_path / "weights"
    monkeypatch.setenv("DIGITLAB_WEIGHTS", str(folder))
    return folder


@pytest.fixture
def with_mnist(mnist_dir, monkeypatch):
    monkeypatch.setenv("MNIST_DATA", str(mnist_dir))
    return mnist_dir


@pytest.fixture
def without_mnist(tmp_path, monkeypatch):
    empty = tmp_path / "no-mnist"
    empty.mkdir()
    monkeypatch.setenv("MNIST_DATA", str(empty))
    return empty


@pytest.fixture
def apps(default_model, canvas, weights):
    """Factory for AppTests; stops any training they leave running."""
    from streamlit.testing.v1 import AppTest

    made = []

    def make():
        at = AppTest.from_file(APP, default_timeout=60)
        made.append(at)
        return at

    yield make
    for at in made:
        job = at.session_state.get("job") if "job" in at.session_state else None
        if job is not None:
            job.stop_event.set()
            job.join(30)


@pytest.fixture
def at(apps):
    return apps()


# ---------------------------------------------------------------- helpers

def tab(at, word):
    matches = [t for t in at.tabs if word in t.label]
    assert len(matches) == 1, f"no single tab with {word!r} in {[t.label for t in at.tabs]}"
    return matches[0]


def metric(block, label):
    found = [m for m in block.metric if m.label == label]
    return found[0].value if found else None


def texts(elements):
    return [e.value for e in elements]


def assert_clean(at):
    assert not at.exception, f"exception on the page: {[e.value for e in at.exception]}"


def wait_for_job(at, timeout=TRAIN_TIMEOUT):
    """Rerun the page until the session's training job has been collected."""
    deadline = time.monotonic() + timeout
    while "job" in at.session_state:
        assert time.monotonic() < deadline, f"training still running after {timeout}s"
        time.sleep(0.2)
        at.run()
    assert_clean(at)


def set_widgets(at, values):
    """Set Retrain widgets by key, one run at a time (later widgets may depend on earlier ones)."""
    for key, value in values.items():
        widget = next(w for w in (*at.number_input, *at.slider, *at.select_slider, *at.selectbox)
                      if w.key == key)
        widget.set_value(value)
        at.run()
        assert_clean(at)


def fragment_rerun(at, name, monkeypatch):
    """Rerun only the ``st.fragment`` whose function is called ``name``, as the
    browser does when a widget inside it changes (a canvas stroke).

    AppTest has no public call for this in Streamlit 1.67 (pinned in
    requirements.txt): the run request gets the fragment's id, found in the
    AppTest's fragment storage by the name of the function it wraps. If a
    Streamlit upgrade changes either, the assertion below says so.
    """
    from streamlit.testing.v1 import local_script_runner

    def wraps(fragment):
        for cell in fragment.__closure__ or ():
            try:
                if getattr(cell.cell_contents, "__name__", None) == name:
                    return True
            except ValueError:  # an empty cell
                pass
        return False

    ids = [fid for fid, f in at._fragment_storage._fragments.items() if wraps(f)]
    assert len(ids) == 1, f"expected one fragment running {name}(), found {len(ids)}"
    with monkeypatch.context() as m:
        m.setattr(local_script_runner, "RerunData",
                  partial(local_script_runner.RerunData, fragment_id_queue=ids))
        at.run()


def snapshot(folder):
    """{file name: (size, mtime_ns)} of a folder, to show that nothing was written."""
    if not folder.exists():
        return {}
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir()}


def png_bytes(array, mode=None):
    buf = io.BytesIO()
    Image.fromarray(array, mode).save(buf, format="PNG")
    return buf.getvalue()


def mnist_digits(mnist_dir, n=4):
    from nn.data import load_mnist

    _, (X_test, y_test) = load_mnist(mnist_dir, download=False)
    return [(X_test[i], int(y_test[i])) for i in range(n)]


# ----------------------------------------------------------- page and tabs

def test_page_loads_with_every_tab(at, with_mnist, canvas, default_model):
    at.run()
    assert_clean(at)
    assert at.title[0].value == "✏️ Digit Lab"
    assert [t.label for t in at.tabs] == ["✏️ Draw", "📈 Training", "🧮 Evaluation", "🔁 Retrain",
                                         "🔬 Inside the network"]
    # The canvas is created as the UI contract says.
    assert canvas.calls[-1] == {"key": "canvas", "width": 280, "height": 280,
                                "background_color": "#000000", "stroke_color": "#FFFFFF",
                                "stroke_width": 18, "drawing_mode": "freedraw",
                                "update_streamlit": True, "return_image_data": True}
    # Sidebar: the active network and what it is.
    picker = at.sidebar.selectbox[0]
    assert picker.label == "Active network" and picker.value == "default"
    assert picker.options == ["default"]
    assert default_model.describe() in " ".join(texts(at.sidebar.markdown))

    training = tab(at, "Training")
    assert metric(training, "Epochs trained") == str(len(default_model.history))
    assert default_model.describe() in " ".join(texts(training.markdown))
    assert len(training.table) == 2  # layers, hyperparameters: every row shown
    assert len(training.image) == 1      # curves

    evaluation = tab(at, "Evaluation")
    assert metric(evaluation, "Test accuracy") == f"{default_model.metrics['accuracy']:.2%}"
    # The tables are static st.tables: all 12 rows and 4 columns at once, no scrolling.
    assert len(evaluation.table) == 2 and not evaluation.dataframe
    per_class = evaluation.table[0].value
    assert list(per_class.index) == [str(k) for k in range(10)] + ["macro avg", "weighted avg"]
    assert list(per_class.columns) == ["precision", "recall", "f1-score", "support"]
    assert per_class.loc["weighted avg", "support"] == default_model.metrics["n"]
    pairs = evaluation.table[1].value
    assert list(pairs.columns) == ["true digit", "predicted as", "times"] and len(pairs) > 0
    assert len(evaluation.image) == 3    # confusion matrix, per-class bars, misclassified gallery
    assert any("confident mistakes" in c for c in texts(evaluation.caption))

    retrain = tab(at, "Retrain")
    labels = {w.label for w in (*retrain.number_input, *retrain.slider, *retrain.select_slider,
                                *retrain.selectbox)}
    assert {"Hidden layers", "Width of layer 1", "Width of layer 2", "Activation", "Optimizer",
            "Learning rate", "Momentum", "Batch size", "Epochs", "L2 weight decay", "Dropout",
            "Training images", "Seed"} <= labels
    assert [b.label for b in retrain.button] == ["Train"]
    assert not retrain.text_input  # nothing to save before a retraining

    inside = tab(at, "Inside")
    assert {"First-layer weights", "Saliency: which pixels decide"} <= set(texts(inside.subheader))
    assert len(inside.image) == 1        # weights; no saliency without a drawing
    assert any("Draw a digit" in t for t in texts(inside.info))


def test_blank_canvas_shows_a_hint_and_no_prediction(at, with_mnist, canvas):
    for image in (None, np.zeros((280, 280, 4), np.uint8),
                  np.dstack([np.zeros((280, 280, 3), np.uint8), np.full((280, 280), 255, np.uint8)])):
        canvas.image = image
        at.run()
        assert_clean(at)
        draw = tab(at, "Draw")
        assert any(t.startswith("Draw a digit") for t in texts(draw.info))
        assert metric(at, "Prediction") is None and metric(at, "Confidence") is None
        assert not draw.image
        assert at.session_state["img28"] is None


@pytest.mark.parametrize("index", range(4))
def test_drawn_digit_is_predicted(at, with_mnist, canvas, index):
    img, label = mnist_digits(with_mnist)[index]
    canvas.image = render_on_canvas(img, stroke=3)
    at.run()
    assert_clean(at)
    draw = tab(at, "Draw")
    assert metric(draw, "Prediction") == str(label)
    assert re.fullmatch(r"\d{1,3}\.\d%", metric(draw, "Confidence"))
    assert not draw.info
    assert len(draw.get("vega_lite_chart")) == 1  # the ten probabilities
    # What the network sees, and why this answer (the saliency map), side by side.
    assert [i.captions[0] for i in draw.image] == [
        "What the network sees (28×28)",
        f"Why “{label}”? Red: more ink here raises its score; blue: lowers it."]
    # The Inside tab explains this very drawing.
    inside = tab(at, "Inside")
    assert not inside.info and len(inside.image) == 2
    assert any(f"score of “{label}”" in c for c in texts(inside.caption))
    assert at.session_state["img28"].shape == (28, 28)


def test_a_stroke_reruns_only_the_draw_fragment(at, with_mnist, canvas, monkeypatch, caplog):
    """A canvas stroke reruns the Draw fragment and nothing else; the next full run
    (opening a tab reruns the page) brings the Inside tab up to date."""
    caplog.set_level(logging.DEBUG, logger="digitlab")
    at.run()
    assert metric(at, "Prediction") is None
    caplog.clear()

    canvas.image = render_on_canvas(draw_digit("7"), stroke=4)
    fragment_rerun(at, "draw_ui", monkeypatch)
    assert_clean(at)
    assert metric(at, "Prediction") == "7"
    assert len(at.image) == 2            # preview and saliency, inside the fragment
    assert not at.tabs and not at.sidebar.selectbox  # nothing outside it was sent again
    logged = [r.getMessage() for r in caplog.records if r.name == "digitlab"]
    assert not [m for m in logged if m.startswith("page run")], logged
    [draw_log] = [m for m in logged if m.startswith("draw ")]
    assert draw_log.endswith("(fragment rerun)")
    assert at.session_state["img28"] is not None

    canvas.image = render_on_canvas(draw_digit("1"), stroke=4)
    fragment_rerun(at, "draw_ui", monkeypatch)
    assert metric(at, "Prediction") == "1"

    at.run()  # a full run: what switching tabs does (st.tabs(on_change="rerun"))
    assert_clean(at)
    inside = tab(at, "Inside")
    assert len(inside.image) == 2 and any("score of “1”" in c for c in texts(inside.caption))


def test_stroke_width_reaches_the_canvas(at, with_mnist, canvas):
    at.run()
    slider = at.slider(key="stroke_width")
    assert (slider.label, slider.min, slider.max, slider.value) == ("Stroke width", 5, 40, 18)
    slider.set_value(30).run()
    assert canvas.calls[-1]["stroke_width"] == 30


# ------------------------------------------------------------------ uploads

UPLOAD_HINT = "Upload a PNG or JPEG photo of one digit."


def upload(at, name, data):
    at.file_uploader(key="upload").set_value((name, data, "image/png"))
    at.run()
    assert_clean(at)
    return texts(tab(at, "Draw").error)


def test_upload_of_a_photo_is_predicted(at, with_mnist, canvas):
    img, label = mnist_digits(with_mnist)[0]
    photo = render_on_canvas(img, mode="dark_on_light")  # grey paper, dark ink, noise
    at.run()
    assert upload(at, "digit.png", png_bytes(photo)) == []
    assert at.file_uploader[0].label == "Or upload a photo of a digit"
    assert metric(at, "Prediction") == str(label)
    assert any("uploaded photo" in c for c in texts(tab(at, "Draw").caption))


def test_upload_of_a_non_image_shows_an_error(at, with_mnist, canvas):
    at.run()
    errors = upload(at, "notes.png", b"this is not a picture at all")
    assert errors == ["“notes.png” could not be used: not a readable image (PNG, JPEG, GIF, "
                      f"BMP or WebP): unknown file format. {UPLOAD_HINT}"]
    assert metric(at, "Prediction") is None  # blank canvas underneath: the hint again
    assert any(t.startswith("Draw a digit") for t in texts(tab(at, "Draw").info))


def test_upload_limits_are_checked_before_decoding(at, with_mnist, canvas):
    at.run()
    errors = upload(at, "big.png", b"\0" * (6 * 2**20))
    assert errors == ["“big.png” is 6.0 MB; photos up to 5 MB are accepted."]
    bomb = io.BytesIO()
    Image.new("L", (8000, 6000)).save(bomb, format="PNG")  # 48 megapixels in a small file
    errors = upload(at, "bomb.png", bomb.getvalue())
    assert errors == ["“bomb.png” could not be used: image too large: 8000x6000 = 48,000,000 "
                      f"pixels (limit 40,000,000). {UPLOAD_HINT}"]
    good = png_bytes(render_on_canvas(draw_digit("1"), mode="dark_on_light"))
    errors = upload(at, "cut.png", good[: len(good) // 2])
    assert len(errors) == 1 and errors[0].startswith("“cut.png” could not be used: the image "
                                                     "data are damaged or incomplete")
    assert metric(at, "Prediction") is None


# ------------------------------------------------------------- no MNIST

def test_page_works_without_mnist(at, without_mnist, canvas, default_model):
    canvas.image = render_on_canvas(draw_digit("7"), stroke=4)
    at.run()
    assert_clean(at)
    assert metric(tab(at, "Draw"), "Prediction") == "7"
    assert metric(tab(at, "Training"), "Epochs trained") == str(len(default_model.history))
    evaluation = tab(at, "Evaluation")
    assert metric(evaluation, "Test accuracy") == f"{default_model.metrics['accuracy']:.2%}"
    assert len(evaluation.table) == 2
    assert len(evaluation.image) == 2  # no gallery
    assert any("MNIST_DATA" in t for t in texts(evaluation.info))
    inside = tab(at, "Inside")
    assert len(inside.image) == 2  # weights and saliency
    retrain = tab(at, "Retrain")
    assert any("MNIST" in t for t in texts(retrain.warning))
    howto = " ".join(texts(retrain.markdown))
    assert "MNIST_DATA" in howto and str(without_mnist) in howto
    assert [b.label for b in retrain.button] == ["Download MNIST"]


def test_failed_download_is_reported(at, without_mnist, canvas, monkeypatch):
    import nn.data

    monkeypatch.setattr(nn.data, "MIRRORS", ["http://127.0.0.1:9/"])  # nothing listens there
    monkeypatch.setattr(nn.data, "TIMEOUT_S", 2)
    at.run()
    at.button(key="download_mnist").click().run()
    assert_clean(at)
    errors = texts(tab(at, "Retrain").error)
    assert len(errors) == 1 and errors[0].startswith("Could not download MNIST")
    assert not list(without_mnist.glob("*.gz"))


# ------------------------------------------------------------- retraining

def tiny_training(at, **widgets):
    """Train 784-16-10 for one epoch of 1,800 images (200 held out) in batches of
    32: a fraction of a second, and well above chance (about 65%)."""
    at.run()
    set_widgets(at, {"rt_layers": 1, "rt_width_1": 16, "rt_images": 2000, "rt_batch": 32,
                     "rt_epochs": 1, **widgets})
    at.button(key="train").click().run()
    assert_clean(at)
    wait_for_job(at)


def test_tiny_retraining_becomes_the_active_network(at, with_mnist, canvas, default_model):
    canvas.image = render_on_canvas(draw_digit("1"), stroke=4)
    tiny_training(at)
    model = at.session_state["model"]
    assert model.describe() == "784-16(relu)-10"
    assert len(model.history) == 1 and model.hyperparams["limit"] == 2000
    assert {"accuracy", "loss", "confusion_matrix", "per_class", "macro", "weighted", "n"} <= set(model.metrics)
    assert model.metrics["n"] == 10_000

    success = texts(tab(at, "Retrain").success)
    assert len(success) == 1 and success[0].startswith("Training finished")
    assert f"test accuracy {model.metrics['accuracy']:.2%}" in success[0]
    assert "validation accuracy" in success[0]
    # Every part of the page now shows the new network; the default stays selectable.
    picker = at.sidebar.selectbox[0]
    assert picker.value == RETRAINED and picker.options == ["default", RETRAINED, PREVIOUS]
    assert "784-16(relu)-10" in " ".join(texts(at.sidebar.markdown))
    training = tab(at, "Training")
    assert metric(training, "Epochs trained") == "1"
    assert "784-16(relu)-10" in " ".join(texts(training.markdown))
    assert metric(tab(at, "Evaluation"), "Test accuracy") == f"{model.metrics['accuracy']:.2%}"
    assert metric(tab(at, "Draw"), "Prediction") is not None
    # Back to the shared default: untouched by the retraining.
    picker.set_value("default").run()
    assert_clean(at)
    assert default_model.describe() in " ".join(texts(at.sidebar.markdown))
    assert metric(tab(at, "Evaluation"), "Test accuracy") == f"{default_model.metrics['accuracy']:.2%}"


def test_retraining_again_keeps_the_previous_network(at, with_mnist, canvas, default_model):
    tiny_training(at)
    first = at.session_state["model"]
    # The default network was active: it is the previous one (the shared object, not a copy).
    assert at.session_state["previous_key"].startswith(f"file:{DEFAULT_MODEL}:")
    assert at.session_state["previous_model"].describe() == default_model.describe()
    tiny_training(at, rt_width_1=24)
    second = at.session_state["model"]
    assert second.describe() == "784-24(relu)-10"
    assert at.session_state["previous_model"] is first
    picker = at.sidebar.selectbox[0]
    assert picker.value == RETRAINED and picker.options == ["default", RETRAINED, PREVIOUS]
    picker.set_value(PREVIOUS).run()
    assert_clean(at)
    assert "784-16(relu)-10" in " ".join(texts(at.sidebar.markdown))
    assert metric(tab(at, "Training"), "Epochs trained") == "1"
    assert "784-16(relu)-10" in " ".join(texts(tab(at, "Training").markdown))


def test_near_chance_result_is_not_activated(at, with_mnist, canvas):
    """Adam with learning rate 1 wrecks the network (about 10% validation accuracy):
    the result is refused with a warning and nothing changes."""
    tiny_training(at, rt_lr=1.0)
    warnings = texts(tab(at, "Retrain").warning)
    assert len(warnings) == 1, warnings
    assert re.fullmatch(
        r"Training finished: validation accuracy \d+\.\d\d%, test accuracy \d+\.\d\d% after 1 epoch "
        r"in \d+\.\d s\. That is no better than guessing \(10%\): the network did not learn\. "
        r"Most often the learning rate \(1\) is too high for the “adam” optimizer; try a smaller "
        r"one \(e\.g\. 0\.001 with adam\)\. This network was not activated: the active network "
        r"is unchanged\.", warnings[0]), warnings[0]
    assert not tab(at, "Retrain").success
    assert "model" not in at.session_state and "previous_model" not in at.session_state
    picker = at.sidebar.selectbox[0]
    assert picker.value == "default" and picker.options == ["default"]
    assert not at.text_input  # nothing to save


def test_network_without_hidden_layers(at, with_mnist, canvas):
    """Logistic regression: the Inside tab shows the output layer's ten templates."""
    canvas.image = render_on_canvas(draw_digit("0"), stroke=4)
    at.run()
    set_widgets(at, {"rt_layers": 0, "rt_images": 2000, "rt_batch": 32, "rt_epochs": 1})
    assert not [w for w in at.number_input if w.label.startswith("Width of layer")]
    at.button(key="train").click().run()
    wait_for_job(at)
    assert at.session_state["model"].describe() == "784-10"
    inside = tab(at, "Inside")
    assert any("no hidden layer" in c for c in texts(inside.caption))
    assert len(inside.image) == 2 and not inside.error


@pytest.mark.parametrize("widget, forged, message", [
    ("Epochs", 31, "Epochs must be a whole number from 1 to 30 (got 31)."),
    ("Training images", 100, "Training images must be a whole number from 500 to 60000 (got 100)."),
    ("Dropout", 0.9, "Dropout must be a number from 0 to 0.5 (got 0.9)."),
    ("Learning rate", 0.3, "Learning rate must be one of 0.0001, 0.0002, 0.0005, 0.001, 0.002, "
                           "0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1 (got 0.3)."),
    ("Width of layer 1", 4096, "Width of layer 1 must be a whole number from 8 to 512 (got 4096)."),
])
def test_forged_settings_are_refused_server_side(at, with_mnist, canvas, monkeypatch,
                                                 widget, forged, message):
    """A widget's value comes from the browser: a value outside the widget's range
    (as a tampered client could send) is refused before anything trains."""
    import streamlit

    at.run()
    for name in ("slider", "select_slider", "number_input"):
        real = getattr(streamlit, name)

        def forging(label, *args, _real=real, **kwargs):
            value = _real(label, *args, **kwargs)
            return forged if label == widget else value

        monkeypatch.setattr(streamlit, name, forging)
    at.button(key="train").click().run()
    assert_clean(at)
    assert texts(tab(at, "Retrain").error) == [message]
    assert "job" not in at.session_state


def test_saving_a_retrained_network(apps, with_mnist, weights):
    default_stat = DEFAULT_MODEL.stat()
    at, other = apps(), apps()
    tiny_training(at)

    def save(session, name, overwrite=False):
        session.text_input(key="save_name").input(name)
        session.checkbox(key="save_overwrite").set_value(overwrite)
        session.button(key="save").click().run()
        assert_clean(session)
        retrain = tab(session, "Retrain")
        return texts(retrain.error), texts(retrain.success)

    for bad in ("../x", "default", "Default", "has space", "a" * 41, "", "CON", "nul", "Com1",
                "LPT9"):
        errors, _ = save(at, bad)
        assert len(errors) == 1, (bad, errors)
        assert not weights.exists() or not list(weights.iterdir())
    errors, _ = save(at, "aux")
    assert errors == ["“aux” is a device name on Windows (CON, PRN, AUX, NUL, COM1–9, LPT1–9) "
                      "and cannot be a file name there; pick another name."]

    errors, success = save(at, "tiny-net")
    assert not errors and success[-1] == ("Saved as “tiny-net”: it now appears under “Active "
                                          "network” in the sidebar.")
    assert [p.name for p in weights.iterdir()] == ["tiny-net.npz"]
    assert at.sidebar.selectbox[0].options == ["default", "tiny-net", RETRAINED, PREVIOUS]

    # This session saved it, so it may replace it, once it ticks "Overwrite".
    before = snapshot(weights)
    errors, _ = save(at, "tiny-net")
    assert errors == ["You saved “tiny-net” earlier in this session. Tick “Overwrite” to replace it."]
    assert snapshot(weights) == before
    errors, success = save(at, "tiny-net", overwrite=True)
    assert not errors and success[-1].startswith("Saved as “tiny-net”")

    # Another session may not replace it, even with "Overwrite", nor in another letter case.
    tiny_training(other)
    before = snapshot(weights)
    for name in ("tiny-net", "TINY-NET"):
        errors, _ = save(other, name, overwrite=True)
        assert errors == ["A network with this name already exists; choose another name."]
    assert snapshot(weights) == before
    errors, success = save(other, "tiny-net-2")
    assert not errors and sorted(snapshot(weights)) == ["tiny-net-2.npz", "tiny-net.npz"]

    # The saved file loads back as the same network and can be picked as active.
    at.run()
    at.sidebar.selectbox[0].set_value("tiny-net").run()
    assert_clean(at)
    assert "784-16(relu)-10" in " ".join(texts(at.sidebar.markdown))
    assert DEFAULT_MODEL.stat().st_mtime_ns == default_stat.st_mtime_ns


def test_a_name_saved_before_this_session_cannot_be_replaced(at, with_mnist, weights, default_model):
    weights.mkdir()
    default_model.save(weights / "shared.npz")
    tiny_training(at)
    before = snapshot(weights)
    at.text_input(key="save_name").input("shared")
    at.checkbox(key="save_overwrite").set_value(True)
    at.button(key="save").click().run()
    assert_clean(at)
    assert texts(tab(at, "Retrain").error) == [
        "A network with this name already exists; choose another name."]
    assert snapshot(weights) == before


def test_a_full_weights_folder_refuses_to_save(at, with_mnist, weights, monkeypatch):
    import app_logic.library

    monkeypatch.setattr(app_logic.library, "MAX_FILES", 3)
    weights.mkdir()
    for i in range(3):
        (weights / f"n{i}.npz").write_bytes(b"x" * 1000)
    tiny_training(at)
    before = snapshot(weights)
    at.text_input(key="save_name").input("one-more")
    at.button(key="save").click().run()
    assert_clean(at)
    assert texts(tab(at, "Retrain").error) == [
        "The saved-networks folder is full (3 files, 0 MB; the limit is 3 files and 200 MB), so "
        "nothing more can be saved on this server."]
    assert snapshot(weights) == before


def test_stop_before_the_first_epoch_keeps_the_previous_network(at, with_mnist, canvas):
    at.run()
    set_widgets(at, {**HUGE, "rt_images": 60_000, "rt_batch": 16, "rt_epochs": 1})
    at.button(key="train").click().run()
    at.run()
    assert_clean(at)
    retrain = tab(at, "Retrain")
    assert len(retrain.get("progress")) == 1
    assert retrain.button(key="train").disabled
    job = at.session_state["job"]
    at.button(key="stop_training").click().run()
    assert job.stop_event.is_set()
    wait_for_job(at)
    assert job.stop_reason == "button"
    infos = texts(tab(at, "Retrain").info)
    assert infos == ["Training stopped before the first epoch finished, so there is no new "
                     "network; the active network is unchanged."]
    assert "model" not in at.session_state
    assert at.sidebar.selectbox[0].value == "default"
    assert at.sidebar.selectbox[0].options == ["default"]


def test_a_closed_tab_stops_its_training(apps, with_mnist, monkeypatch):
    """Without the Retrain fragment's polls (the tab was closed) a run stops by
    itself after the heartbeat timeout, and frees its server-wide slot."""
    import app_logic.jobs

    monkeypatch.setattr(app_logic.jobs, "HEARTBEAT_TIMEOUT", 3.0)  # polls can be ~1 s apart under load
    at, later = apps(), apps()
    at.run()
    set_widgets(at, {**HUGE, "rt_images": 60_000, "rt_batch": 16})
    at.button(key="train").click().run()
    job = at.session_state["job"]
    for _ in range(16):  # polled for > 4 s: keeps running past the timeout
        time.sleep(0.25)
        at.run()
    assert job.running and job.stop_reason is None
    job.join(30)  # no more polls: it stops by itself
    assert not job.running and job.stop_reason == "abandoned" and job.outcome == "stopped"
    at.run()  # the tab comes back: it hears what happened
    assert_clean(at)
    assert any(t.startswith("Training stopped before the first epoch finished")
               for t in texts(tab(at, "Retrain").info))
    # Its slot is free again: two new trainings may start.
    monkeypatch.setattr(app_logic.jobs, "HEARTBEAT_TIMEOUT", 30)
    later.run()
    set_widgets(later, {**HUGE, "rt_images": 60_000, "rt_batch": 16})
    for session in (later, at):
        session.button(key="train").click().run()
        assert_clean(session)
        assert session.session_state["job"].running
    for session in (later, at):
        session.button(key="stop_training").click().run()
        wait_for_job(session)


def test_diverged_training_keeps_the_previous_network(at, with_mnist, canvas, monkeypatch):
    import nn

    def diverge(model, X, y, **kwargs):
        raise nn.TrainingDiverged("training diverged in epoch 1 (loss became nan); "
                                  "try a smaller learning rate than 1", [])

    monkeypatch.setattr(nn, "fit", diverge)
    tiny_training(at)
    errors = texts(tab(at, "Retrain").error)
    assert errors == ["Training diverged in epoch 1 (loss became nan); try a smaller learning "
                      "rate than 1. The active network is unchanged."]
    assert "model" not in at.session_state
    assert at.sidebar.selectbox[0].value == "default"


def test_concurrent_trainings_are_capped(apps, with_mnist):
    sessions = [apps() for _ in range(3)]
    for at in sessions:
        at.run()
        set_widgets(at, {**HUGE, "rt_images": 60_000, "rt_batch": 16})
    for at in sessions[:2]:
        at.button(key="train").click().run()
        assert "job" in at.session_state
    third = sessions[2]
    third.button(key="train").click().run()
    assert_clean(third)
    assert "job" not in third.session_state
    warnings = texts(tab(third, "Retrain").warning)
    assert warnings == ["2 other trainings are running on this server right now; please try "
                        "again in a minute."]
    for at in sessions[:2]:
        at.button(key="stop_training").click().run()
        wait_for_job(at)
    # Slots are free again: the third session may now train (and is stopped at once).
    third.button(key="train").click().run()
    assert "job" in third.session_state
    third.button(key="stop_training").click().run()
    wait_for_job(third)


# ------------------------------------------------------------- robustness

def test_broken_saved_network_keeps_the_previous_one(at, with_mnist, canvas, weights, default_model):
    weights.mkdir()
    (weights / "broken.npz").write_bytes(b"definitely not a zip archive")
    at.run()
    assert at.sidebar.selectbox[0].options == ["default", "broken"]
    at.sidebar.selectbox[0].set_value("broken").run()
    assert_clean(at)
    errors = texts(at.sidebar.error)
    assert len(errors) == 1 and "broken.npz" in errors[0]
    assert default_model.describe() in " ".join(texts(at.sidebar.markdown))
    assert metric(tab(at, "Evaluation"), "Test accuracy") == f"{default_model.metrics['accuracy']:.2%}"


def test_unexpected_errors_stay_inside_their_tab(at, with_mnist, canvas, monkeypatch):
    import nn.metrics

    def boom(*args, **kwargs):
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(nn.metrics, "most_confused", boom)
    at.run()
    assert_clean(at)
    errors = texts(tab(at, "Evaluation").error)
    assert len(errors) == 1 and "Evaluation" in errors[0] and "simulated bug" not in errors[0]
    assert metric(tab(at, "Training"), "Epochs trained") is not None  # other tabs unaffected
