"""Tests for the app's logic in lab/, without Streamlit (the page itself: test_app.py).

One section per module, in the order data flows through the page: inputs,
inference, render, tables, settings, jobs, library, session. Training jobs
run real (tiny) trainings on MNIST; saved networks go to ``tmp_path``.
"""

import io
import threading
import time
import types

import matplotlib
import numpy as np
import pytest
from PIL import Image

import nn
from canvas_sim import draw_digit, render_on_canvas
from conftest import DEFAULT_MODEL
from app_logic import inference, inputs, jobs, library, render, session, settings, tables

HINT = "Upload a PNG or JPEG photo of one digit."


def png(array):
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def decode(png_data):
    return np.asarray(Image.open(io.BytesIO(png_data)))


@pytest.fixture(scope="module")
def seven():
    """A drawn 7 as the network sees it: (28, 28) float32."""
    img28, error = inputs.read_drawing(render_on_canvas(draw_digit("7"), stroke=4))
    assert error is None
    return img28


# ------------------------------------------------------------------ inputs

def test_oversized_upload_is_refused_without_reading_it():
    def never():
        raise AssertionError("an oversized file must be refused before it is read")

    assert inputs.read_upload("huge.jpg", 5 * 2**20 + 1, never) == (
        None, "“huge.jpg” is 5.0 MB; photos up to 5 MB are accepted.")


@pytest.mark.parametrize("data, reason", [
    (b"plain text", "not a readable image (PNG, JPEG, GIF, BMP or WebP): unknown file format"),
    (b"", "the file is empty (0 bytes)"),
    (b"GIF89a" + b"\0" * 20, "not a readable image"),
])
def test_unreadable_uploads_get_a_message(data, reason):
    img28, error = inputs.read_upload("x.png", len(data), lambda: data)
    assert img28 is None and error.startswith(f"“x.png” could not be used: {reason}")
    assert error.endswith(HINT)


def test_upload_pixel_limit_is_checked_before_decoding():
    big = io.BytesIO()
    Image.new("L", (8000, 6000)).save(big, format="PNG")  # 48 MP in a small file
    data = big.getvalue()
    assert inputs.read_upload("big.png", len(data), lambda: data) == (None, (
        "“big.png” could not be used: image too large: 8000x6000 = 48,000,000 pixels "
        f"(limit 40,000,000). {HINT}"))


def test_truncated_upload_is_refused():
    good = png(render_on_canvas(draw_digit("1"), mode="dark_on_light"))
    cut = good[: len(good) // 2]
    img28, error = inputs.read_upload("cut.png", len(cut), lambda: cut)
    assert img28 is None and "damaged or incomplete" in error


def test_good_and_blank_uploads():
    good = png(render_on_canvas(draw_digit("1"), mode="dark_on_light"))
    img28, error = inputs.read_upload("one.png", len(good), lambda: good)
    assert error is None and img28.shape == (28, 28) and img28.dtype == np.float32
    blank = png(np.full((50, 50), 255, np.uint8))
    assert inputs.read_upload("blank.png", len(blank), lambda: blank) == (None, None)


def test_read_drawing():
    assert inputs.read_drawing(None) == (None, None)
    assert inputs.read_drawing(np.zeros((280, 280, 4), np.uint8)) == (None, None)
    img28, error = inputs.read_drawing(render_on_canvas(draw_digit("0"), stroke=4))
    assert error is None and img28.shape == (28, 28) and img28.max() == 1.0
    img28, error = inputs.read_drawing(np.full((280, 280, 4), np.nan, np.float32))
    assert img28 is None and error.startswith("Could not read the drawing: ")


# --------------------------------------------------------------- inference

def test_predict_and_saliency(default_model, seven):
    probs = inference.predict(default_model, seven)
    assert probs.shape == (10,) and abs(float(probs.sum()) - 1) < 1e-5
    assert int(probs.argmax()) == 7
    grad = inference.saliency(default_model, seven, 7)
    assert grad.shape == (28, 28)
    np.testing.assert_array_equal(grad.ravel(), default_model.input_gradient(seven.ravel(), 7))


def test_inference_needs_no_lock(default_model, mnist):
    """The app serves one loaded network to every session without a lock: the same
    answers from 8 threads at once as from one."""
    _, (X_test, _) = mnist
    images = X_test[:64].reshape(-1, 28, 28)
    expected = [(inference.predict(default_model, x), inference.saliency(default_model, x, 3))
                for x in images]
    results, errors = {}, []

    def work(k):
        try:
            for _ in range(3):
                for i, x in enumerate(images):
                    results[k, i] = (inference.predict(default_model, x),
                                     inference.saliency(default_model, x, 3))
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for (k, i), (probs, grad) in results.items():
        np.testing.assert_allclose(probs, expected[i][0], rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(grad, expected[i][1], rtol=1e-4, atol=1e-6)


def test_evaluate_and_misclassified(default_model, mnist):
    _, (X_test, y_test) = mnist
    X, y = X_test[:2000], y_test[:2000]
    report = default_model.evaluate(X, y)
    assert {"accuracy", "loss", "confusion_matrix", "per_class", "macro", "weighted", "n"} <= set(report)
    assert report["n"] == 2000 and report["accuracy"] > 0.95
    idx, pred, conf = inference.misclassified(default_model, X, y, n=10)
    assert 0 < len(idx) <= 10
    assert (pred != y[idx]).all()
    assert (np.diff(conf) <= 0).all()  # most confident first


def test_a_stroke_costs_a_few_milliseconds(default_model):
    """What the Draw fragment computes for one stroke: preprocessing, prediction,
    saliency, two images and the chart. The best of 20, so that a busy test
    machine does not decide; about 5 ms on 2 cores."""
    canvas = render_on_canvas(draw_digit("7"), stroke=4)

    def stroke():
        img28, _ = inputs.read_drawing(canvas)
        probs = inference.predict(default_model, img28)
        digit = int(probs.argmax())
        render.probability_chart(probs)
        render.preview_png(img28)
        render.saliency_png(img28, inference.saliency(default_model, img28, digit))

    stroke()
    times = []
    for _ in range(20):
        start = time.perf_counter()
        stroke()
        times.append(time.perf_counter() - start)
    assert min(times) < 0.015, f"best of 20: {1000 * min(times):.1f} ms"


# ------------------------------------------------------------------ render

def test_enlarge_keeps_pixels_square():
    img = np.arange(6, dtype=np.uint8).reshape(2, 3)
    big = render.enlarge(img, 4)
    assert big.shape == (8, 12)
    assert (big[:4, :4] == 0).all() and (big[4:, 8:] == 5).all()
    rgb = render.enlarge(np.zeros((28, 28, 3), np.uint8), 7)
    assert rgb.shape == (196, 196, 3)


def test_preview_png_is_the_input_enlarged(seven):
    image = decode(render.preview_png(seven))
    assert image.shape == (196, 196, 3) and image.dtype == np.uint8
    expected = np.rint(seven * 255).astype(np.uint8)
    np.testing.assert_array_equal(image[::7, ::7, 0], expected)  # one value per 7x7 block


def test_saliency_colours_follow_the_sign():
    grad = np.zeros((28, 28))
    grad[5, 5], grad[20, 20] = 2.0, -1.0
    rgb = render.saliency_rgb(grad)
    cmap = matplotlib.colormaps["RdBu_r"]
    assert tuple(rgb[5, 5]) == tuple(cmap(1.0, bytes=True)[:3])      # largest: full red
    assert tuple(rgb[0, 0]) == tuple(cmap(0.5, bytes=True)[:3])      # zero: the middle (white)
    assert tuple(rgb[20, 20]) == tuple(cmap(0.25, bytes=True)[:3])   # half as strong, blue
    r, g, b = rgb[5, 5].astype(int)
    assert r > 2 * b and r > 2 * g   # red (a dark red at the end of RdBu_r)
    r, g, b = rgb[20, 20].astype(int)
    assert b > r + 50                # blue
    assert (render.saliency_rgb(np.zeros((28, 28))) == rgb[0, 0]).all()  # no gradient: all white


def test_outline_marks_the_edge_of_the_strokes():
    mask = np.zeros((6, 6), bool)
    mask[1:5, 1:5] = True
    edge = render.outline(mask)
    assert edge.sum() == 12 and not edge[2:4, 2:4].any() and edge[1, 1:5].all()


def test_saliency_images(seven, default_model):
    grad = inference.saliency(default_model, seven, 7)
    alone = decode(render.saliency_png(seven, grad))
    assert alone.shape == (196, 196, 3)
    assert (alone == render.OUTLINE_RGB).all(axis=2).any()  # the drawing's outline is on it
    panel = decode(render.saliency_panel_png(seven, grad, scale=10, gap=16))
    assert panel.shape == (280, 576, 3)
    assert (panel[:, 280:296] == 255).all()  # the white gap between the two


def test_fast_renders_build_no_matplotlib_figure(monkeypatch, seven, default_model):
    import matplotlib.figure

    def no_figure(*args, **kwargs):
        raise AssertionError("a matplotlib Figure was built")

    monkeypatch.setattr(matplotlib.figure.Figure, "__init__", no_figure)
    grad = inference.saliency(default_model, seven, 7)
    render.preview_png(seven)
    render.saliency_png(seven, grad)
    render.saliency_panel_png(seven, grad)
    render.probability_chart(inference.predict(default_model, seven))


def test_probability_chart():
    probs = np.array([0.01, 0.02, 0.9, 0.03, 0.01, 0.01, 0.0, 0.01, 0.01, 0.0])
    data, spec = render.probability_chart(probs)
    table = data.to_pydict()
    assert table["digit"] == [str(k) for k in range(10)]
    assert table["probability"][2] == pytest.approx(90.0)
    assert table["top"] == [k == 2 for k in range(10)]
    assert table["label"][2] == "90%" and table["label"][6] == ""
    assert spec["encoding"]["y"]["scale"]["domain"] == [0, 100]
    assert "data" not in spec  # the data go separately, as Arrow


def test_figure_png():
    from matplotlib.figure import Figure

    fig = Figure(figsize=(1, 1))
    fig.subplots().plot([0, 1])
    assert render.figure_png(fig).startswith(b"\x89PNG\r\n\x1a\n")


# ------------------------------------------------------------------ tables

def test_tables(default_model):
    table = tables.per_class_table(default_model.metrics)
    assert table.shape == (12, 4)
    assert list(table.index) == [str(k) for k in range(10)] + ["macro avg", "weighted avg"]
    assert table.loc["macro avg", "f1-score"] == pytest.approx(default_model.metrics["macro"]["f1"])
    assert table["support"].dtype.kind == "i"
    arch = tables.architecture_table(default_model)
    assert arch["parameters"].sum() == default_model.n_parameters
    assert list(arch["layer"]) == ["hidden 1", "hidden 2", "output"]
    hp = tables.hyperparams_table(default_model)
    assert {"optimizer", "lr", "batch_size", "activation"} <= set(hp["setting"])
    assert hp["value"].map(type).eq(str).all()
    pairs = tables.confused_pairs_table(default_model.metrics["confusion_matrix"])
    assert list(pairs.columns) == ["true digit", "predicted as", "times"] and len(pairs) == 5
    assert tables.confused_pairs_table(np.eye(10, dtype=int) * 5).empty


# ---------------------------------------------------------------- settings

GOOD = {"hidden": [128, 64], "activation": "relu", "dropout": 0.0, "optimizer": "adam",
        "lr": 1e-3, "momentum": 0.9, "l2": 0.0, "batch_size": 128, "epochs": 5,
        "n_images": 20_000, "seed": 0}


def test_good_settings_pass():
    assert settings.settings_problem(GOOD) is None
    for edge in ({"hidden": []}, {"hidden": [8, 512, 8, 512]}, {"epochs": 30}, {"n_images": 500},
                 {"n_images": 60_000}, {"dropout": 0.5}, {"momentum": 0.0}, {"momentum": 0.99},
                 {"seed": 2**31 - 1}, {"lr": 1.0}, {"l2": 1e-2}, {"batch_size": 16},
                 {"optimizer": "momentum"}, {"activation": "tanh"}, {"lr": np.float64(1e-3)}):
        assert settings.settings_problem({**GOOD, **edge}) is None, edge


@pytest.mark.parametrize("change, message", [
    ({"hidden": [64] * 5}, "Hidden layers must be a whole number from 0 to 4."),
    ({"hidden": "64"}, "Hidden layers must be a whole number from 0 to 4."),
    ({"hidden": [64, 4]}, "Width of layer 2 must be a whole number from 8 to 512 (got 4)."),
    ({"hidden": [513]}, "Width of layer 1 must be a whole number from 8 to 512 (got 513)."),
    ({"hidden": [64.0]}, "Width of layer 1 must be a whole number from 8 to 512 (got 64)."),
    ({"hidden": [True]}, "Width of layer 1 must be a whole number from 8 to 512 (got True)."),
    ({"epochs": 0}, "Epochs must be a whole number from 1 to 30 (got 0)."),
    ({"epochs": 31}, "Epochs must be a whole number from 1 to 30 (got 31)."),
    ({"epochs": True}, "Epochs must be a whole number from 1 to 30 (got True)."),
    ({"n_images": 499}, "Training images must be a whole number from 500 to 60000 (got 499)."),
    ({"n_images": 60_001}, "Training images must be a whole number from 500 to 60000 (got 60001)."),
    ({"seed": -1}, "Seed must be a whole number from 0 to 2147483647 (got -1)."),
    ({"seed": 2**31}, "Seed must be a whole number from 0 to 2147483647 (got 2147483648)."),
    ({"dropout": 0.51}, "Dropout must be a number from 0 to 0.5 (got 0.51)."),
    ({"dropout": float("nan")}, "Dropout must be a number from 0 to 0.5 (got nan)."),
    ({"momentum": 1.0}, "Momentum must be a number from 0 to 0.99 (got 1)."),
    ({"momentum": -0.1}, "Momentum must be a number from 0 to 0.99 (got -0.1)."),
    ({"activation": "gelu"}, "Activation must be one of 'leaky_relu', 'relu', 'sigmoid', 'tanh' "
                             "(got 'gelu')."),
    ({"optimizer": "rmsprop"}, "Optimizer must be one of 'sgd', 'momentum', 'adam' (got 'rmsprop')."),
    ({"lr": 0.3}, "Learning rate must be one of 0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, "
                  "0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1 (got 0.3)."),
    ({"lr": "0.001"}, "Learning rate must be one of 0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, "
                      "0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1 (got '0.001')."),
    ({"l2": 0.5}, "L2 weight decay must be one of 0, 1e-05, 3e-05, 0.0001, 0.0003, 0.001, "
                  "0.003, 0.01 (got 0.5)."),
    ({"batch_size": 100}, "Batch size must be one of 16, 32, 64, 128, 256, 512 (got 100)."),
    ({"batch_size": 512, "n_images": 500},
     "Batch size 512 is larger than the 450 training images left after holding out 10% for "
     "validation: use more images or a smaller batch."),
])
def test_bad_settings_are_refused_with_a_clear_message(change, message):
    assert settings.settings_problem({**GOOD, **change}) == message


def test_missing_settings():
    partial = dict(GOOD)
    del partial["seed"], partial["lr"]
    assert settings.settings_problem(partial) == "Missing settings: seed, lr."


def test_estimate_grows_with_the_work():
    base = settings.estimate_seconds(GOOD)
    assert base > 0
    assert settings.estimate_seconds({**GOOD, "epochs": 10}) == pytest.approx(2 * base)
    assert settings.estimate_seconds({**GOOD, "hidden": [512, 512]}) > base


# -------------------------------------------------------------------- jobs

TINY = {**GOOD, "hidden": [16], "n_images": 2000, "batch_size": 32, "epochs": 1}
# Minutes per epoch on 2 cores: never finishes its first epoch within a test.
HUGE = {**GOOD, "hidden": [512] * 4, "n_images": 60_000, "batch_size": 16, "epochs": 1}


def taken_slot():
    """Slots for one training, already taken (as the page does before starting a job)."""
    slots = jobs.TrainingSlots(1)
    assert slots.try_acquire()
    return slots


def run_job(job, timeout=60):
    job.start()
    job.join(timeout)
    assert not job.running, "the job did not end in time"
    return job


def test_slots_bound_concurrent_trainings():
    slots = jobs.TrainingSlots(2)
    assert slots.try_acquire() and slots.try_acquire()
    assert not slots.try_acquire() and slots.running == 2
    slots.release()
    assert slots.running == 1 and slots.try_acquire()


def test_a_job_trains_evaluates_and_frees_its_slot(mnist):
    slots = jobs.TrainingSlots(1)
    assert slots.try_acquire()
    job = run_job(jobs.TrainingJob(TINY, mnist, slots))
    assert job.outcome == "done" and job.error is None and job.stop_reason is None
    assert job.model.describe() == "784-16(relu)-10" and len(job.records) == 1
    assert job.model.hyperparams["limit"] == 2000 and job.model.metrics["n"] == 10_000
    assert job.accuracy == job.model.history[-1]["val_acc"] > jobs.CHANCE_ACCURACY
    assert job.fraction_done == 1.0 and job.progress_text().startswith("Epoch 1 of 1, batch 57 of 57")
    assert slots.running == 0 and slots.try_acquire()
    kind, text = jobs.finished_message(job)
    assert kind == "success" and text.startswith("Training finished: validation accuracy")
    # The shared MNIST arrays were only read.
    (X, _), _ = mnist
    assert not X.flags.writeable


def test_a_job_slices_the_training_set_without_copying(mnist, monkeypatch):
    seen = {}

    def fake_fit(model, X, y, **kwargs):
        seen["X"], seen["y"] = X, y
        return []

    monkeypatch.setattr(nn, "fit", fake_fit)
    run_job(jobs.TrainingJob(TINY, mnist, taken_slot()))
    (X, y), _ = mnist
    assert seen["X"].base is X or np.shares_memory(seen["X"], X)
    assert seen["X"].shape == (2000, 784) and np.shares_memory(seen["y"], y)


def test_near_chance_result_is_flagged(mnist):
    job = run_job(jobs.TrainingJob({**TINY, "lr": 1.0}, mnist, taken_slot()))
    assert job.outcome == "chance" and job.accuracy < jobs.CHANCE_ACCURACY
    kind, text = jobs.finished_message(job)
    assert kind == "warning"
    assert "no better than guessing (10%)" in text and "learning rate (1) is too high" in text
    assert text.endswith("This network was not activated: the active network is unchanged.")


def test_stop_button_and_time_limit(mnist):
    job = jobs.TrainingJob(HUGE, mnist, taken_slot())
    job.start()
    time.sleep(0.3)
    job.stop_event.set()
    job.join(30)
    assert job.stop_reason == "button" and job.outcome == "stopped" and job.model is None
    job = run_job(jobs.TrainingJob(HUGE, mnist, taken_slot(), max_seconds=0.3), 30)
    assert job.stop_reason == "time" and job.outcome == "stopped"


def test_no_heartbeat_stops_the_job(mnist):
    slots = jobs.TrainingSlots(1)
    assert slots.try_acquire()
    job = jobs.TrainingJob(HUGE, mnist, slots, heartbeat_timeout=0.5)
    job.start()
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:  # the page polls: training goes on
        job.touch()
        time.sleep(0.1)
    assert job.running and job.stop_reason is None
    job.join(30)  # the polls stopped (the tab was closed)
    assert not job.running and job.stop_reason == "abandoned" and job.outcome == "stopped"
    assert slots.running == 0


def test_failures_are_reported(mnist, monkeypatch):
    def diverge(model, X, y, **kwargs):
        raise nn.TrainingDiverged("training diverged in epoch 2 (loss became inf); "
                                  "try a smaller learning rate than 0.5", [])

    monkeypatch.setattr(nn, "fit", diverge)
    slots = jobs.TrainingSlots(1)
    assert slots.try_acquire()
    job = run_job(jobs.TrainingJob(TINY, mnist, slots))
    assert job.outcome == "diverged" and slots.running == 0
    assert jobs.finished_message(job) == ("error", "Training diverged in epoch 2 (loss became "
                                          "inf); try a smaller learning rate than 0.5. The active "
                                          "network is unchanged.")

    def bug(model, X, y, **kwargs):
        raise KeyError("oops")

    monkeypatch.setattr(nn, "fit", bug)
    job = run_job(jobs.TrainingJob(TINY, mnist, taken_slot()))
    assert jobs.finished_message(job) == ("error", "Training failed (KeyError: 'oops'). The "
                                          "active network is unchanged.")


def test_finished_message_says_why_a_run_stopped_early():
    model = types.SimpleNamespace(history=[{"val_acc": 0.9}], metrics={"accuracy": 0.89})
    job = types.SimpleNamespace(outcome="done", model=model, settings={**GOOD, "epochs": 3},
                                stop_reason="abandoned", elapsed=12.34, max_seconds=600)
    kind, text = jobs.finished_message(job)
    assert kind == "success" and text.startswith(
        "Training finished (stopped because the page stopped checking in after epoch 1 of 3; "
        "the weights of that epoch are kept): validation accuracy 90.00%, test accuracy 89.00% "
        "after 1 epoch in 12.3 s.")
    job.stop_reason = "time"
    assert "(stopped after 10 minutes after epoch 1 of 3;" in jobs.finished_message(job)[1]


# ----------------------------------------------------------------- library

@pytest.mark.parametrize("name", ["../x", "", "a" * 41, "has space", "x.npz", "a/b", "default",
                                  "DEFAULT", "ünï", "x\n", "CON", "con", "Prn", "aux", "NUL",
                                  "COM1", "com9", "LPT1", "lpt9"])
def test_bad_names_are_refused(name):
    assert library.check_name(name) is not None


@pytest.mark.parametrize("name", ["a", "small-relu", "Net_2", "a" * 40, "COM", "COM10", "LPT0",
                                  "console", "nul-net"])
def test_good_names_are_accepted(name):
    assert library.check_name(name) is None


def snapshot(folder):
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir()}


def test_saving_rules(default_model, tmp_path):
    save = library.save_network
    ok, message = save(default_model, "mine", folder=tmp_path)
    assert ok and (tmp_path / "mine.npz").exists()
    assert nn.load(tmp_path / "mine.npz").describe() == default_model.describe()
    before = snapshot(tmp_path)
    # Not this session's: never replaced, whatever the letter case or "Overwrite".
    for name in ("mine", "MINE"):
        assert save(default_model, name, overwrite=True, owned=set(), folder=tmp_path) == (
            False, "A network with this name already exists; choose another name.")
    # This session's: only with "Overwrite".
    assert save(default_model, "mine", owned={"mine"}, folder=tmp_path) == (
        False, "You saved “mine” earlier in this session. Tick “Overwrite” to replace it.")
    assert snapshot(tmp_path) == before
    time.sleep(0.01)
    ok, _ = save(default_model, "mine", overwrite=True, owned={"mine"}, folder=tmp_path)
    assert ok and snapshot(tmp_path)["mine.npz"][1] != before["mine.npz"][1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.npz"]  # no staging files left
    # Never the default, even pointed at its own folder.
    ok, message = save(default_model, "default", overwrite=True, owned={"default"},
                       folder=DEFAULT_MODEL.parent)
    assert not ok and "default" in message


def test_quotas(default_model, tmp_path, monkeypatch):
    monkeypatch.setattr(library, "MAX_FILES", 2)
    assert library.save_network(default_model, "a", folder=tmp_path)[0]
    assert library.save_network(default_model, "b", folder=tmp_path)[0]
    before = snapshot(tmp_path)
    ok, message = library.save_network(default_model, "c", folder=tmp_path)
    assert not ok and message.startswith("The saved-networks folder is full (2 files, 2 MB; "
                                         "the limit is 2 files and 200 MB)")
    assert snapshot(tmp_path) == before
    # Replacing one's own file adds no file: allowed at the file limit.
    assert library.save_network(default_model, "a", overwrite=True, owned={"a"}, folder=tmp_path)[0]
    monkeypatch.setattr(library, "MAX_FILES", 50)
    monkeypatch.setattr(library, "MAX_BYTES", 2 * 2**20)
    before = snapshot(tmp_path)
    ok, message = library.save_network(default_model, "c", folder=tmp_path)
    assert not ok and "folder is full" in message and snapshot(tmp_path) == before


def test_a_name_taken_meanwhile_is_not_overwritten(default_model, tmp_path, monkeypatch):
    """Another server process may create the file between the check and the write:
    the hard link that claims the name fails, and nothing is replaced."""
    (tmp_path / "race.npz").write_bytes(b"someone else's network")
    monkeypatch.setattr(library, "find_existing", lambda folder, name: None)
    assert library.save_network(default_model, "race", folder=tmp_path) == (
        False, "A network with this name already exists; choose another name.")
    assert (tmp_path / "race.npz").read_bytes() == b"someone else's network"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["race.npz"]


def test_simultaneous_saves_of_one_name(default_model, tmp_path):
    results = []
    threads = [threading.Thread(target=lambda: results.append(
        library.save_network(default_model, "same", folder=tmp_path)[0])) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False, False, False, True]
    # One complete file that loads, and no temporary leftovers.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["same.npz"]
    np.testing.assert_array_equal(nn.load(tmp_path / "same.npz").dense_layers[0].W,
                                  default_model.dense_layers[0].W)


def test_listing(tmp_path, monkeypatch):
    monkeypatch.setenv(library.WEIGHTS_ENV, str(tmp_path))
    for name in ("b-net", "a_net", "default", "CON", "bad name", ".hidden"):
        (tmp_path / f"{name}.npz").write_bytes(b"")
    (tmp_path / "notes.txt").write_bytes(b"")
    assert library.weights_dir() == tmp_path
    assert library.saved_networks() == ["a_net", "b-net"]
    assert library.network_file("default") == DEFAULT_MODEL
    assert library.network_file("a_net") == tmp_path / "a_net.npz"
    assert library.folder_usage(tmp_path) == (7, 0)
    assert library.folder_usage(tmp_path / "missing") == (0, 0)


# ----------------------------------------------------------------- session

class Files:
    """A ``load_file`` for app_logic.session: known paths give a network, others fail."""

    def __init__(self, models):
        self.models = models

    def __call__(self, path):
        if path not in self.models:
            raise FileNotFoundError(path)
        return self.models[path], f"file:{path}"


def finished(model, outcome="done"):
    return types.SimpleNamespace(running=False, outcome=outcome, model=model, id="abc",
                                 settings=TINY, elapsed=1.0, stop_reason=None, error=None,
                                 max_seconds=600)


def fake_model(val_acc):
    return types.SimpleNamespace(history=[{"val_acc": val_acc}], metrics={"accuracy": val_acc})


def test_choices_and_resolve(default_model):
    state = {}
    load = Files({DEFAULT_MODEL: default_model})
    assert session.choices(state, ["x"]) == ["default", "x"]
    active, error = session.resolve(state, "default", load)
    assert error is None and active.model is default_model and active.key == f"file:{DEFAULT_MODEL}"
    assert session.resolve(state, session.RETRAINED, load) == (
        None, "This session has no this session's retrained network.")
    active, error = session.resolve(state, "missing", load)
    assert active is None and error == "missing.npz was not found."
    active, error = session.resolve(state, "default", Files({}))
    assert error == "default.npz was not found. Run `python train.py` to create it."


def test_a_finished_job_becomes_active_and_keeps_the_previous(default_model):
    load = Files({DEFAULT_MODEL: default_model})
    first, second = fake_model(0.9), fake_model(0.95)
    state = {"last_good_choice": "default"}
    assert not session.collect_finished_job(state, load)  # no job: nothing to do
    state["job"] = finished(first)
    assert session.collect_finished_job(state, load)
    assert "job" not in state and state["model"] is first and state["active_choice"] == session.RETRAINED
    assert state["previous_model"] is default_model and state["train_message"][0] == "success"
    assert session.choices(state, []) == ["default", session.RETRAINED, session.PREVIOUS]
    # Trained again while the first result was active: that one becomes "previous".
    state["last_good_choice"] = session.RETRAINED
    state["job"] = finished(second)
    session.collect_finished_job(state, load)
    assert state["model"] is second and state["previous_model"] is first
    assert session.resolve(state, session.PREVIOUS, load)[0].model is first


def test_an_unusable_result_changes_nothing_but_the_message(default_model):
    load = Files({DEFAULT_MODEL: default_model})
    state = {"last_good_choice": "default", "job": finished(fake_model(0.1), outcome="chance")}
    session.collect_finished_job(state, load)
    assert set(state) == {"last_good_choice", "train_message"}
    assert state["train_message"][0] == "warning"
    running = types.SimpleNamespace(running=True)
    state["job"] = running
    assert not session.collect_finished_job(state, load) and state["job"] is running
