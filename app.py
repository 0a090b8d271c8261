"""Digit Lab: draw a digit and watch a from-scratch NumPy network read it.

    streamlit run app.py

Five tabs: Draw (canvas or photo -> prediction), Training (how the active
network was trained), Evaluation (test-set scores), Retrain (train your own
network in the browser) and Inside the network (weights and saliency).

How the page is built
- ``main()`` lays the page out from small ``*_ui`` functions; the computing
  they need lives in plain functions above them (``predict``, ``read_upload``,
  ``save_network``, ``TrainingJob``...), which tests call without a browser.
- Data flows one way: canvas -> ``nn.preprocess.to_mnist`` -> network ->
  display, and training -> history -> curves.
- Shared, read-only resources: networks loaded from ``weights/`` and MNIST
  live in ``st.cache_resource`` and are shared by every browser session, so
  they are never trained or modified. A network's layers reuse internal
  buffers during a forward pass, so every inference takes that network's lock.
- Per-session state: a retrained network lives in ``st.session_state`` and
  becomes the active network for that browser session only.
- Training runs in a daemon thread owned by a ``TrainingJob`` in the session
  state. The thread never calls ``st.*``; the Retrain fragment polls the job
  twice a second and draws its progress.
- Environment: ``MNIST_DATA`` (the MNIST folder), ``DIGITLAB_WEIGHTS`` (where
  networks are saved and listed; default ``weights/``). The shipped network
  is always ``<repo>/weights/default.npz``.
"""

import functools
import hashlib
import io
import logging
import os
import re
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st
from PIL import Image, UnidentifiedImageError

import nn
import nn.data
import nn.preprocess
import plots

log = logging.getLogger("digitlab")

ROOT = Path(__file__).resolve().parent
DEFAULT_MODEL = ROOT / "weights" / "default.npz"
WEIGHTS_ENV = "DIGITLAB_WEIGHTS"

TAB_LABELS = ["✏️ Draw", "📈 Training", "🧮 Evaluation", "🔁 Retrain", "🔬 Inside the network"]
DEFAULT_CHOICE = "default"
RETRAINED = "this session's retrained network"
INTRO = ("A neural network written from scratch in NumPy reads handwritten digits. "
         "Draw one, see what the network thinks and why, then retrain it with your own settings.")

CANVAS_SIZE = 280
MAX_UPLOAD_MB = 5
MAX_UPLOAD_BYTES = MAX_UPLOAD_MB * 2**20
MAX_UPLOAD_PIXELS = 40_000_000

# Retraining limits, so that one visitor cannot take the server down.
MAX_CONCURRENT_TRAININGS = 2
MAX_HIDDEN_LAYERS = 4
MIN_WIDTH, MAX_WIDTH = 8, 512
DEFAULT_WIDTHS = (128, 64, 32, 32)
MAX_EPOCHS = 30
MIN_IMAGES, MAX_IMAGES = 500, 60_000
BATCH_SIZES = (16, 32, 64, 128, 256, 512)
LEARNING_RATES = (1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2, 0.1, 0.2, 0.5, 1.0)
L2_VALUES = (0.0, 1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2)
VAL_FRACTION = 0.1
MAX_TRAIN_SECONDS = 600        # a run is stopped (keeping its finished epochs) after this
LIVE_REFRESH_S = 0.5
SECONDS_PER_SAMPLE_PARAM = 0.4e-9   # measured on 2 cores; for the rough time estimate

NAME_RE = re.compile(r"[A-Za-z0-9_-]{1,40}")


# -- shared resources -------------------------------------------------------------------

def weights_dir():
    """Where saved networks are listed and written: $DIGITLAB_WEIGHTS or <repo>/weights."""
    return Path(os.environ.get(WEIGHTS_ENV) or ROOT / "weights")


@st.cache_resource(max_entries=16, show_spinner=False)
def load_network(path, mtime_ns, size):
    """``(network, lock)`` for a model file, shared by every session; never modify it.

    ``mtime_ns`` and ``size`` are part of the cache key, so a file replaced on
    disk is read again. ``nn.ModelFileError`` propagates (and is not cached).
    """
    return nn.load(path), threading.Lock()


@st.cache_resource(show_spinner="Loading MNIST…")
def load_mnist_cached(folder):
    """MNIST from ``folder`` as read-only arrays, shared by every session."""
    return nn.data.load_mnist(folder, download=False)


def mnist_or_none():
    """``(data, problem)``: the MNIST arrays, or None and why not (never downloads)."""
    folder = nn.data.resolve_data_dir()
    if not nn.data.mnist_available(folder):
        return None, f"MNIST was not found in `{folder}`."
    try:
        return load_mnist_cached(str(folder)), None
    except nn.data.DataError as e:
        log.warning("MNIST unreadable: %s", e)
        return None, f"MNIST in `{folder}` could not be read: {e}"


class TrainingSlots:
    """At most ``n`` trainings at once on this server (a bounded semaphore plus a count)."""

    def __init__(self, n):
        self._semaphore = threading.BoundedSemaphore(n)
        self._lock = threading.Lock()
        self.running = 0

    def try_acquire(self):
        if not self._semaphore.acquire(blocking=False):
            return False
        with self._lock:
            self.running += 1
        return True

    def release(self):
        with self._lock:
            self.running -= 1
        self._semaphore.release()


@st.cache_resource
def training_slots():
    # Streamlit re-executes this file on every rerun, so a plain module-level
    # semaphore would be a new one each time; cache_resource makes it one per server.
    return TrainingSlots(MAX_CONCURRENT_TRAININGS)


@st.cache_data(max_entries=64, show_spinner=False)
def cached_png(kind, key, _build):
    """PNG bytes of the figure ``_build()`` returns; ``kind`` + ``key`` identify it.

    ``key`` names the network (file path and mtime, or a session's run id), so
    each static figure is drawn once per network instead of on every rerun
    (the canvas reruns the page on every stroke).
    """
    return figure_png(_build())


@st.cache_data(max_entries=32, show_spinner=False)
def transient_png(kind, key, _build):
    """Like ``cached_png`` for short-lived figures (one drawing, one epoch of a live
    run), kept apart so they never push the per-network figures out."""
    return figure_png(_build())


def figure_png(fig, dpi=110):
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


# -- computing (no st.* below until the "page" section) ---------------------------------

@dataclass(frozen=True)
class ActiveNetwork:
    choice: str              # what the sidebar shows
    key: str                 # identity for caches
    model: nn.Network
    lock: threading.Lock     # held during every forward pass


def predict(active, img28):
    """Class probabilities (10,) for one (28, 28) image."""
    with active.lock:
        return active.model.predict_proba(img28.reshape(1, -1))[0]


def saliency(active, img28, cls):
    """Gradient of class ``cls``'s score with respect to the pixels, (784,)."""
    with active.lock:
        return active.model.input_gradient(img28.ravel(), cls)


def evaluate(model, X_test, y_test):
    """Test metrics in the shape stored in model files (as ``train.py`` writes them)."""
    report = nn.metrics.classification_report(y_test, model.predict(X_test))
    report["loss"], _ = model.loss_and_accuracy(X_test, y_test)
    return report


def misclassified(active, X_test, y_test, n=24):
    """The ``n`` most confident mistakes: indices, predicted labels, confidences."""
    with active.lock:
        probs = active.model.predict_proba(X_test)
    pred = probs.argmax(axis=1)
    conf = probs.max(axis=1)
    wrong = np.flatnonzero(pred != y_test)
    wrong = wrong[np.argsort(-conf[wrong], kind="stable")][:n]
    return wrong, pred[wrong], conf[wrong]


def read_upload(name, size, read):
    """An uploaded file -> ``(img28 or None, error message or None)``.

    ``read()`` returns the bytes; it is called only after the size check, and
    the pixel count is checked before decoding (``Image.open`` is lazy).
    ``img28`` is None without an error when the image holds no digit.
    """
    if size > MAX_UPLOAD_BYTES:
        return None, f"“{name}” is {size / 2**20:.1f} MB; photos up to {MAX_UPLOAD_MB} MB are accepted."
    try:
        with Image.open(io.BytesIO(read())) as img:
            w, h = img.size
            if w * h > MAX_UPLOAD_PIXELS:
                return None, (f"“{name}” is {w}×{h} pixels ({w * h / 1e6:.0f} megapixels); "
                              f"the limit is {MAX_UPLOAD_PIXELS // 1_000_000} megapixels.")
            img.load()
            return nn.preprocess.to_mnist(img), None
    except UnidentifiedImageError:
        return None, f"“{name}” is not an image this app can read: upload a PNG or JPEG photo."
    except Image.DecompressionBombError:
        return None, f"“{name}” has far too many pixels to open safely."
    except (OSError, ValueError) as e:
        return None, f"“{name}” could not be read as an image ({e})."


def check_name(name):
    """The error message for a bad "Save as" name, or None when it is fine."""
    if not NAME_RE.fullmatch(name):
        return ("Use 1–40 letters, digits, “-” or “_” for the name "
                "(no spaces, dots or slashes), e.g. “small-relu”.")
    if name.lower() == DEFAULT_CHOICE:
        return "“default” is the shipped network and cannot be replaced; pick another name."
    return None


def save_network(model, name, overwrite, folder=None):
    """Write ``model`` to ``<folder>/<name>.npz`` -> ``(ok, message)``; never replaces
    the default network, and replaces another file only with ``overwrite``."""
    name = name.strip()
    problem = check_name(name)
    if problem:
        return False, problem
    folder = Path(folder) if folder is not None else weights_dir()
    path = folder / f"{name}.npz"
    if path.resolve() == DEFAULT_MODEL.resolve():
        return False, "The default network cannot be replaced; pick another name."
    if path.exists() and not overwrite:
        return False, f"A network called “{name}” already exists. Tick “Overwrite” to replace it."
    try:
        folder.mkdir(parents=True, exist_ok=True)
        model.save(path)
    except OSError as e:
        log.exception("saving %s failed", path)
        return False, f"Could not save “{name}”: {e.strerror or e}."
    return True, f"Saved as “{name}”: it now appears under “Active network” in the sidebar."


def saved_networks():
    """Names (file stems) of the saved networks other than the default, sorted."""
    folder = weights_dir()
    if not folder.is_dir():
        return []
    return sorted(p.stem for p in folder.glob("*.npz")
                  if NAME_RE.fullmatch(p.stem) and p.stem.lower() != DEFAULT_CHOICE)


def network_file(choice):
    return DEFAULT_MODEL if choice == DEFAULT_CHOICE else weights_dir() / f"{choice}.npz"


def per_class_table(metrics):
    """Precision, recall, F1 and support for digits 0-9, then macro and weighted averages."""
    pc = metrics["per_class"]
    table = pd.DataFrame({"precision": pc["precision"], "recall": pc["recall"],
                          "f1-score": pc["f1"], "support": pc["support"]},
                         index=[str(k) for k in range(len(pc["f1"]))])
    for avg in ("macro", "weighted"):
        m = metrics[avg]
        table.loc[f"{avg} avg"] = [m["precision"], m["recall"], m["f1"], metrics["n"]]
    table["support"] = table["support"].astype(int)
    table.index.name = "digit"
    return table


def architecture_table(model):
    """One row per dense layer: shape, activation, parameter count."""
    rows = []
    act = model.config["activation"]
    dense = model.dense_layers
    for i, layer in enumerate(dense):
        last = i == len(dense) - 1
        rows.append({"layer": "output" if last else f"hidden {i + 1}",
                     "shape": f"{layer.in_features} → {layer.out_features}",
                     "activation": "softmax" if last else act,
                     "parameters": layer.W.size + layer.b.size})
    return pd.DataFrame(rows)


def hyperparams_table(model):
    """Everything that shaped the network, as text (mixed types upset Arrow)."""
    settings = {"activation": model.config["activation"], "dropout": model.config["dropout"],
                **model.hyperparams, "training seconds": round(model.train_seconds, 1)}
    return pd.DataFrame({"setting": list(settings),
                         "value": ["—" if v is None else f"{v:g}" if isinstance(v, float) else str(v)
                                   for v in settings.values()]})


def estimate_seconds(settings):
    """Rough training time: work grows with parameters x images x epochs."""
    sizes = [784, *settings["hidden"], 10]
    params = sum((a + 1) * b for a, b in zip(sizes[:-1], sizes[1:]))
    return settings["epochs"] * settings["n_images"] * params * SECONDS_PER_SAMPLE_PARAM


def settings_problem(settings):
    """Why these settings cannot be trained, or None."""
    n_train = settings["n_images"] - round(settings["n_images"] * VAL_FRACTION)
    if settings["batch_size"] > n_train:
        return (f"Batch size {settings['batch_size']} is larger than the {n_train} training images "
                f"left after holding out {VAL_FRACTION:.0%} for validation: use more images "
                f"or a smaller batch.")
    return None


class _JobCallback(nn.Callback):
    """Feeds a ``TrainingJob`` from inside ``nn.fit`` (runs in the training thread)."""

    def __init__(self, job):
        self.job = job

    def on_batch_end(self, info):
        self.job.progress = info
        return self.job.stop_event.is_set() or info["elapsed"] > MAX_TRAIN_SECONDS

    def on_epoch_end(self, record):
        self.job.records.append(dict(record))
        return self.job.stop_event.is_set()


class TrainingJob:
    """One training run in a daemon thread; the page polls it, it never touches the page.

    The thread writes ``progress`` (latest batch info), ``records`` (finished
    epochs), then ``model`` or ``error`` and ``outcome``, and sets ``finished``
    last. ``outcome``: "done", "stopped" (no epoch finished), "diverged", "failed".
    """

    def __init__(self, settings, mnist, slots):
        self.id = uuid.uuid4().hex
        self.settings = dict(settings)
        self.stop_event = threading.Event()
        self.records = []
        self.progress = None
        self.started = time.monotonic()
        self.finished = None
        self.model = None
        self.error = None
        self.outcome = None
        self._mnist = mnist
        self._slots = slots
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"digitlab-train-{self.id[:8]}")

    def start(self):
        self._thread.start()

    def join(self, timeout=None):
        """Wait for the thread to end (tests and shutdown; the page never blocks on it)."""
        self._thread.join(timeout)

    @property
    def running(self):
        return self.finished is None

    @property
    def elapsed(self):
        return (self.finished or time.monotonic()) - self.started

    def _run(self):
        s = self.settings
        try:
            (X, y), (X_test, y_test) = self._mnist
            n = min(s["n_images"], len(X))
            model = nn.Network(hidden=s["hidden"], activation=s["activation"],
                               dropout=s["dropout"], seed=s["seed"])
            nn.fit(model, X[:n], y[:n], optimizer=s["optimizer"], lr=s["lr"],
                   momentum=s["momentum"], l2=s["l2"], epochs=s["epochs"],
                   batch_size=s["batch_size"], val_size=VAL_FRACTION, seed=s["seed"],
                   callbacks=[_JobCallback(self)])
            if not model.history:
                self.outcome = "stopped"
            else:
                model.hyperparams["limit"] = n
                model.metrics = evaluate(model, X_test, y_test)
                self.model = model
                self.outcome = "done"
        except nn.TrainingDiverged as e:
            self.error, self.outcome = str(e), "diverged"
        except Exception as e:  # reported on the page; the traceback goes to the log
            log.exception("training job %s failed", self.id)
            self.error, self.outcome = f"{type(e).__name__}: {e}", "failed"
        finally:
            self._mnist = None
            try:
                self._slots.release()
            finally:
                self.finished = time.monotonic()  # last: the page reads the results after this


def finished_message(job):
    """``(kind, text)`` describing a finished job, for st.success/info/error."""
    if job.outcome == "done":
        h = job.model.history
        val = h[-1]["val_acc"]
        parts = [f"validation accuracy {val:.2%}" if val is not None else None,
                 f"test accuracy {job.model.metrics['accuracy']:.2%}"]
        stopped = (f" (stopped after epoch {len(h)} of {job.settings['epochs']}; "
                   f"the weights of that epoch are kept)" if len(h) < job.settings["epochs"] else "")
        return "success", (f"Training finished{stopped}: " + ", ".join(p for p in parts if p)
                           + f" after {len(h)} epoch{'s' * (len(h) != 1)} in {job.elapsed:.1f} s. "
                           "This network is now the active one in every tab (for this browser "
                           "session only).")
    if job.outcome == "stopped":
        return "info", ("Training stopped before the first epoch finished, so there is no new "
                        "network; the active network is unchanged.")
    if job.outcome == "diverged":
        return "error", f"{job.error[:1].upper()}{job.error[1:]}. The active network is unchanged."
    return "error", f"Training failed ({job.error}). The active network is unchanged."


# -- page -------------------------------------------------------------------------------

def guard(section):
    """Decorator: an unexpected exception becomes a short st.error (traceback to the log)."""
    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except Exception as e:  # st.rerun/st.stop are BaseExceptions and pass through
                log.exception("%s failed", section)
                st.error(f"Sorry, something went wrong in {section} ({type(e).__name__}). "
                         "The details are in the server log.")
        return wrapper
    return decorate


def collect_finished_job():
    """Hand a finished training job's result to the page (before the sidebar is drawn,
    so that the sidebar's selection can switch to the new network)."""
    job = st.session_state.get("job")
    if job is None or job.running:
        return
    del st.session_state["job"]
    if job.model is not None:
        st.session_state["model"] = job.model
        st.session_state["model_key"] = f"session:{job.id}"
        st.session_state["model_lock"] = threading.Lock()
        st.session_state["active_choice"] = RETRAINED
    st.session_state["train_message"] = finished_message(job)


def resolve_network(choice):
    """``(ActiveNetwork or None, error message or None)`` for a sidebar choice."""
    if choice == RETRAINED:
        model = st.session_state.get("model")
        if model is None:
            return None, "This session has no retrained network."
        return ActiveNetwork(choice, st.session_state["model_key"], model,
                             st.session_state["model_lock"]), None
    path = network_file(choice)
    try:
        stat = path.stat()
        model, lock = load_network(str(path), stat.st_mtime_ns, stat.st_size)
    except FileNotFoundError:
        hint = " Run `python train.py` to create it." if choice == DEFAULT_CHOICE else ""
        return None, f"{path.name} was not found.{hint}"
    except OSError as e:
        return None, f"{path.name} could not be read ({e.strerror or e})."
    except nn.ModelFileError as e:
        return None, str(e)
    return ActiveNetwork(choice, f"file:{path}:{stat.st_mtime_ns}:{stat.st_size}", model, lock), None


@guard("the sidebar")
def sidebar_ui():
    """The "Active network" picker; returns the ActiveNetwork (or None if none loads)."""
    sb = st.sidebar
    options = [DEFAULT_CHOICE, *saved_networks()]
    if st.session_state.get("model") is not None:
        options.append(RETRAINED)
    if st.session_state.get("active_choice") not in options:
        st.session_state["active_choice"] = DEFAULT_CHOICE
    choice = sb.selectbox("Active network", options, key="active_choice",
                          help="Every tab shows this network. Networks saved from the Retrain "
                               "tab appear here.")
    active, error = resolve_network(choice)
    if error:
        sb.error(error)
        for fallback in (st.session_state.get("last_good_choice"), DEFAULT_CHOICE):
            if fallback in options and fallback != choice:
                active, _ = resolve_network(fallback)
                if active is not None:
                    sb.caption(f"Still using “{fallback}”.")
                    break
    if active is None:
        sb.warning("No network is loaded.")
        return None
    st.session_state["last_good_choice"] = active.choice
    model = active.model
    acc = model.metrics.get("accuracy")
    epochs = len(model.history)
    lines = [f"**`{model.describe()}`**", f"{model.n_parameters:,} parameters",
             f"{epochs} epoch{'s' * (epochs != 1)} of training"]
    if acc is not None:
        lines.append(f"Test accuracy: **{acc:.2%}**")
    sb.markdown("  \n".join(lines))
    return active


def draw_canvas(stroke_width):
    """The drawing canvas: an RGBA uint8 array (280, 280, 4), or None before any drawing.

    The component is imported here, and only here: it can only be imported
    inside a running app (and tests replace it through ``sys.modules``).
    """
    try:
        from streamlit_drawable_canvas import st_canvas
    except ImportError:
        st.warning("The drawing canvas needs the streamlit-drawable-canvas package; "
                   "you can still upload a photo below.")
        return None
    result = st_canvas(key="canvas", width=CANVAS_SIZE, height=CANVAS_SIZE,
                       background_color="#000000", stroke_color="#FFFFFF",
                       stroke_width=stroke_width, drawing_mode="freedraw",
                       update_streamlit=True, return_image_data=True)
    data = None if result is None else result.image_data
    return None if data is None else np.asarray(data)


def input_ui():
    """Canvas and upload box -> the (28, 28) image to classify, or None."""
    stroke = st.slider("Stroke width", 5, 40, 18, key="stroke_width")
    canvas = draw_canvas(stroke)
    upload = st.file_uploader("Or upload a photo of a digit", type=["png", "jpg", "jpeg"],
                              key="upload", max_upload_size=MAX_UPLOAD_MB)
    if upload is not None:
        img28, error = read_upload(upload.name, upload.size, upload.getvalue)
        if error:
            st.error(error)
        elif img28 is None:
            st.warning(f"No digit found in “{upload.name}”: try a darker pen or a closer crop.")
        else:
            st.caption("Showing the uploaded photo; remove it to use the canvas again.")
            return img28
    if canvas is None:
        return None
    try:
        return nn.preprocess.to_mnist(canvas)
    except ValueError as e:
        st.error(f"Could not read the drawing: {e}")
        return None


def prediction_ui(active, img28):
    if img28 is None:
        st.info("Draw a digit in the black box (or upload a photo) and the network will guess it.")
        return
    probs = predict(active, img28)
    digit = int(probs.argmax())
    c1, c2 = st.columns(2)
    c1.metric("Prediction", str(digit))
    c2.metric("Confidence", f"{probs[digit]:.1%}")
    st.bar_chart(pd.DataFrame({"probability (%)": 100 * probs.astype(float)},
                              index=pd.Index([str(k) for k in range(10)], name="digit")),
                 x_label="digit", y_label="probability (%)", height=220)
    png = transient_png("input", hashlib.sha1(img28.tobytes()).hexdigest(),
                        lambda: plots.image_figure(img28))
    st.image(png, caption="What the network sees (28×28)", width=220)


def draw_ui(active):
    # The Inside tab's saliency map reads the current image from here.
    st.session_state["img28"] = None
    left, right = st.columns([1, 1], gap="large")
    with left:
        img28 = input_ui()
    st.session_state["img28"] = img28
    with right:
        if active is None:
            st.warning("No network is loaded, so there is nothing to predict with.")
        else:
            prediction_ui(active, img28)


def training_ui(active):
    model = active.model
    st.subheader("How this network was trained")
    st.markdown(f"Architecture **`{model.describe()}`**: {model.n_parameters:,} parameters.")
    c1, c2, c3 = st.columns(3)
    c1.metric("Epochs trained", str(len(model.history)))
    c2.metric("Training time", f"{model.train_seconds:.{1 if model.train_seconds >= 1 else 2}f} s")
    vals = [r["val_acc"] for r in model.history if r.get("val_acc") is not None]
    c3.metric("Best validation accuracy", f"{max(vals):.2%}" if vals else "—")
    if model.history:
        st.image(cached_png("curves", active.key,
                            lambda: plots.training_curves(model.history, title=model.describe())))
    else:
        st.info("This network has no training history stored.")
    left, right = st.columns(2)
    with left:
        st.markdown("**Layers**")
        st.dataframe(architecture_table(model), hide_index=True)
    with right:
        st.markdown("**Hyperparameters**")
        st.dataframe(hyperparams_table(model), hide_index=True)


def gallery_ui(active, mnist, mnist_problem):
    st.subheader("Misclassified test digits")
    if mnist is None:
        st.info(f"{mnist_problem} The gallery needs the MNIST test set: set the MNIST_DATA "
                "environment variable to its folder, or download it from the 🔁 Retrain tab.")
        return
    _, (X_test, y_test) = mnist

    def build():
        idx, pred, conf = misclassified(active, X_test, y_test)
        captions = [f"true {y_test[i]} → {p} ({c:.0%})" for i, p, c in zip(idx, pred, conf)]
        return plots.digits_figure(X_test[idx], captions)

    st.caption("The network's most confident mistakes on the 10,000 test images.")
    st.image(cached_png("gallery", active.key, build))


def evaluation_ui(active, mnist, mnist_problem):
    model = active.model
    metrics = model.metrics
    if not metrics and mnist is not None:
        with active.lock:  # a shared network: one forward pass at a time
            metrics = evaluate(model, *mnist[1])
    if not metrics:
        st.info("This network has no stored test results, and MNIST is not available to compute them.")
        return
    st.subheader("Test-set results")
    c1, c2, c3 = st.columns(3)
    c1.metric("Test accuracy", f"{metrics['accuracy']:.2%}")
    c2.metric("Test loss", f"{metrics['loss']:.4f}" if "loss" in metrics else "—")
    c3.metric("Test images", f"{metrics['n']:,}")
    left, right = st.columns([1.1, 1])
    with left:
        st.markdown("**Confusion matrix**: rows are the true digits, columns the predictions.")
        st.image(cached_png("confusion", active.key,
                            lambda: plots.confusion_matrix_figure(metrics["confusion_matrix"])))
    with right:
        st.markdown("**Per-class scores**")
        st.dataframe(per_class_table(metrics).style.format(
            {"precision": "{:.4f}", "recall": "{:.4f}", "f1-score": "{:.4f}"}), height="content",
            column_config={"_index": st.column_config.TextColumn("digit", width="medium")})
        st.markdown("**Most confused pairs**")
        pairs = nn.metrics.most_confused(metrics["confusion_matrix"], k=5)
        if pairs:
            st.dataframe(pd.DataFrame(pairs, columns=["true digit", "predicted as", "times"]),
                         hide_index=True)
        else:
            st.write("No mistakes at all.")
    st.image(cached_png("per_class", active.key,
                        lambda: plots.per_class_figure(metrics["per_class"])))
    gallery_ui(active, mnist, mnist_problem)


def inside_ui(active):
    model = active.model
    W = model.dense_layers[0].W
    st.subheader("First-layer weights")
    if model.config["hidden"]:
        st.caption(f"Each square is the 28×28 pattern one hidden unit responds to (the first "
                   f"{min(64, W.shape[1])} of {W.shape[1]}): red pixels excite the unit, blue inhibit it.")
        png = cached_png("weights", active.key, lambda: plots.weights_figure(W))
    else:
        st.caption("This network has no hidden layer: each square is one digit's template, "
                   "red pixels vote for that digit and blue against it.")
        png = cached_png("weights", active.key, lambda: plots.weights_figure(W, n=10, cols=5))
    st.image(png)
    st.subheader("Saliency: which pixels decide")
    img28 = st.session_state.get("img28")
    if img28 is None:
        st.info("Draw a digit on the ✏️ Draw tab to see which of its pixels drive the prediction.")
        return
    label = int(predict(active, img28).argmax())
    st.caption("Red: more ink here would raise the score of the predicted digit; "
               "blue: more ink here would lower it.")
    png = transient_png("saliency", f"{active.key}:{hashlib.sha1(img28.tobytes()).hexdigest()}",
                        lambda: plots.saliency_figure(img28, saliency(active, img28, label), label))
    st.image(png)


def mnist_howto_ui(problem):
    folder = nn.data.resolve_data_dir()
    st.warning(f"Retraining needs the MNIST dataset. {problem}")
    st.markdown(
        "There are two ways to get it:\n\n"
        "1. **Point the app at a copy**: set the `MNIST_DATA` environment variable to a folder "
        "holding the four MNIST files (`train-images-idx3-ubyte.gz`, `train-labels-idx1-ubyte.gz`, "
        "`t10k-images-idx3-ubyte.gz`, `t10k-labels-idx1-ubyte.gz`) and restart the app.\n"
        f"2. **Download it here**: about 11 MB from a public mirror, saved into `{folder}`.")
    if st.button("Download MNIST", key="download_mnist"):
        with st.status("Downloading MNIST…", expanded=True) as status:
            try:
                nn.data.load_mnist(folder, download=True, progress=status.write)
            except nn.data.DataError as e:
                status.update(label="Download failed", state="error")
                st.error(f"Could not download MNIST: {e}")
                return
            status.update(label="MNIST is ready", state="complete")
        st.rerun(scope="app")


def settings_ui(disabled):
    """The Retrain widgets; returns the chosen settings as a dict."""
    c1, c2, c3 = st.columns(3)
    with c1:
        n_layers = st.number_input("Hidden layers", 0, MAX_HIDDEN_LAYERS, 2, key="rt_layers",
                                   disabled=disabled)
        hidden = [int(st.number_input(f"Width of layer {i + 1}", MIN_WIDTH, MAX_WIDTH,
                                      DEFAULT_WIDTHS[i], step=8, key=f"rt_width_{i + 1}",
                                      disabled=disabled))
                  for i in range(int(n_layers))]
        if not hidden:
            st.caption("No hidden layer: the network is a multinomial logistic regression.")
        activation = st.selectbox("Activation", sorted(nn.ACTIVATIONS),
                                  index=sorted(nn.ACTIVATIONS).index("relu"), key="rt_activation",
                                  disabled=disabled)
        dropout = st.slider("Dropout", 0.0, 0.5, 0.0, 0.05, key="rt_dropout", disabled=disabled)
    with c2:
        optimizer = st.selectbox("Optimizer", list(nn.OPTIMIZERS),
                                 index=list(nn.OPTIMIZERS).index("adam"), key="rt_optimizer",
                                 disabled=disabled)
        lr = st.select_slider("Learning rate", LEARNING_RATES, value=1e-3, format_func="{:g}".format,
                              key="rt_lr", disabled=disabled)
        momentum = st.slider("Momentum", 0.5, 0.99, 0.9, 0.01, key="rt_momentum",
                             disabled=disabled or optimizer != "momentum",
                             help="Used by the “momentum” optimizer only.")
        l2 = st.select_slider("L2 weight decay", L2_VALUES, value=0.0, format_func="{:g}".format,
                              key="rt_l2", disabled=disabled)
    with c3:
        batch_size = st.select_slider("Batch size", BATCH_SIZES, value=128, key="rt_batch",
                                      disabled=disabled)
        epochs = st.slider("Epochs", 1, MAX_EPOCHS, 5, key="rt_epochs", disabled=disabled)
        n_images = st.slider("Training images", MIN_IMAGES, MAX_IMAGES, 20_000, 500,
                             key="rt_images", disabled=disabled,
                             help=f"{VAL_FRACTION:.0%} of them are held out for validation.")
        seed = st.number_input("Seed", 0, 2**31 - 1, 0, key="rt_seed", disabled=disabled)
    return {"hidden": hidden, "activation": activation, "dropout": float(dropout),
            "optimizer": optimizer, "lr": float(lr), "momentum": float(momentum), "l2": float(l2),
            "batch_size": int(batch_size), "epochs": int(epochs), "n_images": int(n_images),
            "seed": int(seed)}


def start_training(settings, mnist):
    """Start a job unless the settings are unusable or the server is busy."""
    problem = settings_problem(settings)
    if problem:
        st.error(problem)
        return
    slots = training_slots()
    if not slots.try_acquire():
        st.warning(f"{slots.running} other trainings are running on this server right now; "
                   "please try again in a minute.")
        return
    job = TrainingJob(settings, mnist, slots)
    st.session_state["job"] = job
    st.session_state.pop("train_message", None)
    job.start()


@st.fragment(run_every=LIVE_REFRESH_S)
@guard("the training progress")
def training_live_ui():
    """Progress, growing curves and a Stop button; refreshes itself while the job runs."""
    job = st.session_state.get("job")
    if job is None or not job.running:
        st.rerun(scope="app")  # finished: every tab switches to the result
    info, records = job.progress, list(job.records)
    done = info["progress"] if info else 0.0
    elapsed = job.elapsed
    text = f"{elapsed:.0f} s elapsed"
    if info:
        text = (f"Epoch {info['epoch']} of {job.settings['epochs']}, batch {info['batch']} of "
                f"{info['batches_per_epoch']} · " + text)
    if done > 0.02:
        text += f" · about {elapsed * (1 - done) / done:.0f} s left"
    st.progress(min(done, 1.0), text=text)
    if job.stop_event.is_set():
        st.caption("Stopping after the current batch…")
    elif st.button("Stop", key="stop_training"):
        job.stop_event.set()
        st.caption("Stopping after the current batch…")
    if records:
        st.image(transient_png("live", f"{job.id}:{len(records)}",
                               lambda: plots.training_curves(records)))
    else:
        st.caption("The curves appear when the first epoch finishes.")


@st.fragment
@guard("the Retrain tab")
def retrain_ui():
    """Settings, the Train button, live progress and saving; reruns on its own."""
    job = st.session_state.get("job")
    if job is not None and not job.running:
        st.rerun(scope="app")  # collect the result and update every tab
    running = job is not None
    st.subheader("Train your own network")
    mnist, problem = mnist_or_none()
    if mnist is None and not running:
        mnist_howto_ui(problem)
    else:
        settings = settings_ui(disabled=running)
        if not running:
            st.caption(f"Estimated training time: about {max(1, round(estimate_seconds(settings)))} s "
                       f"(training stops by itself after {MAX_TRAIN_SECONDS // 60} minutes).")
        if st.button("Train", type="primary", key="train", disabled=running):
            start_training(settings, mnist)
        if st.session_state.get("job") is not None:
            training_live_ui()
    message = st.session_state.get("train_message")
    if message and st.session_state.get("job") is None:
        kind, text = message
        {"success": st.success, "info": st.info, "error": st.error}[kind](text)
        model = st.session_state.get("model")
        if kind == "success" and model is not None:
            st.image(cached_png("curves", st.session_state["model_key"],
                                lambda: plots.training_curves(model.history, title=model.describe())))
    save_ui()


def save_ui():
    model = st.session_state.get("model")
    if model is None:
        return
    st.subheader("Save this session's network")
    name = st.text_input("Save as", key="save_name", max_chars=40,
                         placeholder="e.g. small-relu (letters, digits, - and _)")
    overwrite = st.checkbox("Overwrite", key="save_overwrite",
                            help="Replace a saved network that has the same name.")
    if st.button("Save", key="save"):
        ok, message = save_network(model, name, overwrite)
        if ok:
            st.session_state["save_message"] = message
            st.rerun(scope="app")  # the sidebar lists the new file
        st.error(message)
    message = st.session_state.pop("save_message", None)
    if message:
        st.success(message)


def main():
    st.set_page_config(page_title="Digit Lab", page_icon="✏️", layout="wide")
    st.title("✏️ Digit Lab")
    st.markdown(INTRO)
    collect_finished_job()
    active = sidebar_ui()
    mnist, mnist_problem = mnist_or_none()
    draw, training, evaluation, retrain, inside = st.tabs(TAB_LABELS)
    # Tabs are filled in the order that matters most, not the order they are shown:
    # the drawing first, then the training panel (so a finished run is reported
    # before the new network's figures are drawn), then the rest. Inside comes
    # after Draw because it reads the drawing Draw stores.
    with draw:
        guard("the Draw tab")(draw_ui)(active)
    with retrain:
        retrain_ui()
    for tab, name, render, args in ((training, "the Training tab", training_ui, ()),
                                    (evaluation, "the Evaluation tab", evaluation_ui,
                                     (mnist, mnist_problem)),
                                    (inside, "the Inside tab", inside_ui, ())):
        with tab:
            if active is None:
                st.warning("No network is loaded.")
            else:
                guard(name)(render)(active, *args)


if __name__ == "__main__":
    main()
