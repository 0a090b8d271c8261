"""Digit Lab: draw a digit and watch a from-scratch NumPy network read it.

    streamlit run app.py

Five tabs: Draw (canvas or photo -> prediction), Training (how the active
network was trained), Evaluation (test-set scores), Retrain (train your own
network in the browser) and Inside the network (weights and saliency).

How the page is built
- This file only places things: ``main()`` lays the page out from small
  ``*_ui`` functions. What they show is computed in the ``app_logic`` package
  (no Streamlit there), which tests call without a browser.
- Data flows one way: canvas -> ``app_logic.inputs`` (``nn.preprocess``) -> network
  (``app_logic.inference``) -> display (``app_logic.render``); training (``app_logic.jobs``)
  -> history -> curves.
- Fast strokes: the Draw tab is an ``st.fragment``, so a canvas stroke reruns
  only the canvas and the prediction (a few ms of server work; its pictures
  are NumPy arrays, not matplotlib figures). The drawing goes into
  ``st.session_state["img28"]``; the tabs rerun the whole page when the user
  switches tab (``on_change="rerun"``), so the Inside tab shows the current
  drawing's saliency as soon as it is opened.
- Shared, read-only resources: networks loaded from disk, MNIST and the
  training slots live in ``st.cache_resource``, shared by every session and
  never modified. Inference changes no state in a network, so no lock is needed.
- Per-session state: a retrained network (and the one it replaced, as
  "previous network") lives in ``st.session_state``, for that session only.
- Training runs in a daemon thread (``app_logic.jobs.TrainingJob``); the Retrain
  fragment polls it twice a second, which also tells the job that someone is
  still watching.
- Environment: ``MNIST_DATA`` (the MNIST folder), ``DIGITLAB_WEIGHTS`` (where
  networks are saved and listed; default ``weights/``), ``DIGITLAB_LOG_LEVEL``
  (e.g. DEBUG: log how long each page run and each Draw rerun takes).
"""

import functools
import logging
import os
import time

import numpy as np
import streamlit as st

import nn
import nn.data
import plots
from app_logic import inference, inputs, jobs, library, render, session, settings as rs, tables

log = logging.getLogger("digitlab")
if os.environ.get("DIGITLAB_LOG_LEVEL") and not log.handlers:  # once per server
    _handler = logging.StreamHandler()
    _handler.setFormatter(logging.Formatter("%(asctime)s digitlab %(levelname)s %(message)s"))
    log.addHandler(_handler)
    try:
        log.setLevel(os.environ["DIGITLAB_LOG_LEVEL"].upper())
    except ValueError:
        log.warning("DIGITLAB_LOG_LEVEL=%r is not a logging level", os.environ["DIGITLAB_LOG_LEVEL"])

TAB_LABELS = ["✏️ Draw", "📈 Training", "🧮 Evaluation", "🔁 Retrain", "🔬 Inside the network"]
INTRO = ("A neural network written from scratch in NumPy reads handwritten digits. "
         "Draw one, see what the network thinks and why, then retrain it with your own settings.")
CANVAS_SIZE = 280
LIVE_REFRESH_S = 0.5


# -- shared resources (one per server) ---------------------------------------------------

@st.cache_resource(max_entries=16, show_spinner=False)
def load_network(path, mtime_ns, size):
    """The network in a model file, shared by every session: never modify it.

    ``mtime_ns`` and ``size`` are part of the cache key, so a file replaced on
    disk is read again. ``nn.ModelFileError`` propagates (and is not cached).
    """
    return nn.load(path)


@st.cache_resource(show_spinner="Loading MNIST…")
def load_mnist_cached(folder):
    """MNIST from ``folder``, shared by every session; ``nn.data`` returns the
    arrays read-only, so a training job can slice them without copying."""
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


@st.cache_resource
def training_slots():
    # Streamlit re-executes this file on every rerun, so a plain module-level
    # semaphore would be a new one each time; cache_resource makes it one per server.
    return jobs.TrainingSlots(jobs.MAX_CONCURRENT_TRAININGS)


@st.cache_data(max_entries=64, show_spinner=False)
def cached_png(kind, key, _build):
    """PNG bytes of the figure ``_build()`` returns, drawn once per ``kind`` + ``key``
    (``key`` names the network: file path and mtime, or a session's run id)."""
    return render.figure_png(_build())


@st.cache_data(max_entries=32, show_spinner=False)
def transient_png(kind, key, _build):
    """Like ``cached_png`` for short-lived figures (one epoch of a live run), kept
    apart so that they never push the per-network figures out."""
    return render.figure_png(_build())


@st.cache_data(max_entries=16, show_spinner=False)
def cached_evaluation(key, _model, _X_test, _y_test):
    """Test metrics for a network file saved without them, computed once."""
    return _model.evaluate(_X_test, _y_test)


# -- glue ----------------------------------------------------------------------------------

def load_file(path):
    """``(network, cache key)`` for a model file, via the per-server cache."""
    stat = path.stat()
    return (load_network(str(path), stat.st_mtime_ns, stat.st_size),
            f"file:{path}:{stat.st_mtime_ns}:{stat.st_size}")


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


# -- page ----------------------------------------------------------------------------------

@guard("the sidebar")
def sidebar_ui():
    """The "Active network" picker; returns the ActiveNetwork (or None if none loads)."""
    sb, ss = st.sidebar, st.session_state
    options = session.choices(ss, library.saved_networks())
    if ss.get("active_choice") not in options:
        ss["active_choice"] = library.DEFAULT_NAME
    choice = sb.selectbox("Active network", options, key="active_choice",
                          help="Every tab shows this network. Networks saved from the Retrain "
                               "tab appear here; “previous network” is the one your last "
                               "retraining replaced.")
    active, error = session.resolve(ss, choice, load_file)
    if error:
        sb.error(error)
        for fallback in (ss.get("last_good_choice"), library.DEFAULT_NAME):
            if fallback in options and fallback != choice:
                active, _ = session.resolve(ss, fallback, load_file)
                if active is not None:
                    sb.caption(f"Still using “{fallback}”.")
                    break
    if active is None:
        sb.warning("No network is loaded.")
        return None
    ss["last_good_choice"] = active.choice
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
                              key="upload", max_upload_size=inputs.MAX_UPLOAD_MB)
    if upload is not None:
        img28, error = inputs.read_upload(upload.name, upload.size, upload.getvalue)
        if error:
            st.error(error)
        elif img28 is None:
            st.warning(f"No digit found in “{upload.name}”: try a darker pen or a closer crop.")
        else:
            st.caption("Showing the uploaded photo; remove it to use the canvas again.")
            return img28
    img28, error = inputs.read_drawing(canvas)
    if error:
        st.error(error)
    return img28


def prediction_ui(active, img28):
    if img28 is None:
        st.info("Draw a digit in the black box (or upload a photo) and the network will guess it.")
        return
    probs = inference.predict(active.model, img28)
    digit = int(probs.argmax())
    c1, c2 = st.columns(2)
    c1.metric("Prediction", str(digit))
    c2.metric("Confidence", f"{probs[digit]:.1%}")
    st.vega_lite_chart(*render.probability_chart(probs))
    seen, why = st.columns(2)
    # output_format="PNG": with "auto", st.image would re-encode an RGB PNG as JPEG.
    seen.image(render.preview_png(img28), caption="What the network sees (28×28)",
               output_format="PNG")
    why.image(render.saliency_png(img28, inference.saliency(active.model, img28, digit)),
              caption=f"Why “{digit}”? Red: more ink here raises its score; blue: lowers it.",
              output_format="PNG")


@st.fragment
@guard("the Draw tab")
def draw_ui(active):
    """Canvas, upload and prediction. A fragment: a stroke reruns only this."""
    started, cpu = time.perf_counter(), time.thread_time()
    st.session_state["img28"] = None  # the Inside tab explains the drawing kept here
    left, right = st.columns([1, 1], gap="large")
    with left:
        img28 = input_ui()
    st.session_state["img28"] = img28
    with right:
        if active is None:
            st.warning("No network is loaded, so there is nothing to predict with.")
        else:
            prediction_ui(active, img28)
    # Wall time, and CPU time of this thread (the work itself, without waiting for
    # the GIL while other sessions run).
    log.debug("draw %.1f ms, cpu %.1f ms (%s)", 1000 * (time.perf_counter() - started),
              1000 * (time.thread_time() - cpu),
              "page run" if st.session_state.get("_page_run") else "fragment rerun")


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
    left, right = st.columns(2)  # st.table: every row at once, no scrolling
    left.markdown("**Layers**")
    left.table(tables.architecture_table(model), hide_index=True)
    right.markdown("**Hyperparameters**")
    right.table(tables.hyperparams_table(model), hide_index=True)


def gallery_ui(active, mnist, mnist_problem):
    st.subheader("Misclassified test digits")
    if mnist is None:
        st.info(f"{mnist_problem} The gallery needs the MNIST test set: set the MNIST_DATA "
                "environment variable to its folder, or download it from the 🔁 Retrain tab.")
        return
    _, (X_test, y_test) = mnist

    def build():
        idx, pred, conf = inference.misclassified(active.model, X_test, y_test)
        captions = [f"true {y_test[i]} → {p} ({c:.0%})" for i, p, c in zip(idx, pred, conf)]
        return plots.digits_figure(X_test[idx], captions)

    st.caption("The network's most confident mistakes on the 10,000 test images.")
    st.image(cached_png("gallery", active.key, build))


def evaluation_ui(active, mnist, mnist_problem):
    metrics = active.model.metrics
    if not metrics and mnist is not None:
        metrics = cached_evaluation(active.key, active.model, *mnist[1])
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
        # st.table: all 12 rows and 4 columns at once, no scrolling.
        st.table(tables.per_class_table(metrics).style.format(
            {**dict.fromkeys(tables.SCORE_COLUMNS, "{:.4f}"), "support": "{:,}"}))
        st.markdown("**Most confused pairs**")
        pairs = tables.confused_pairs_table(metrics["confusion_matrix"])
        if len(pairs):
            st.table(pairs, hide_index=True)
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
    label = int(inference.predict(model, img28).argmax())
    st.caption(f"Left: what the network sees. Right: the gradient of the score of “{label}” "
               "with respect to each pixel; red: more ink here would raise it, blue: lower it. "
               "The outline is the drawing.")
    st.image(render.saliency_panel_png(img28, inference.saliency(model, img28, label), scale=10),
             output_format="PNG")


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
    """The Retrain widgets; returns the chosen settings (see ``app_logic.settings``)."""
    d = rs.DEFAULTS
    c1, c2, c3 = st.columns(3)
    with c1:
        n_layers = st.number_input("Hidden layers", 0, rs.MAX_HIDDEN_LAYERS, d["hidden_layers"],
                                   key="rt_layers", disabled=disabled)
        hidden = [int(st.number_input(f"Width of layer {i + 1}", rs.MIN_WIDTH, rs.MAX_WIDTH,
                                      d["widths"][i], step=8, key=f"rt_width_{i + 1}",
                                      disabled=disabled))
                  for i in range(int(n_layers))]
        if not hidden:
            st.caption("No hidden layer: the network is a multinomial logistic regression.")
        activations = sorted(nn.ACTIVATIONS)
        activation = st.selectbox("Activation", activations, activations.index(d["activation"]),
                                  key="rt_activation", disabled=disabled)
        dropout = st.slider("Dropout", 0.0, rs.MAX_DROPOUT, d["dropout"], 0.05, key="rt_dropout",
                            disabled=disabled)
    with c2:
        optimizers = list(nn.OPTIMIZERS)
        optimizer = st.selectbox("Optimizer", optimizers, optimizers.index(d["optimizer"]),
                                 key="rt_optimizer", disabled=disabled)
        lr = st.select_slider("Learning rate", rs.LEARNING_RATES, value=d["lr"],
                              format_func="{:g}".format, key="rt_lr", disabled=disabled)
        momentum = st.slider("Momentum", 0.5, rs.MAX_MOMENTUM, d["momentum"], 0.01,
                             key="rt_momentum", disabled=disabled or optimizer != "momentum",
                             help="Used by the “momentum” optimizer only.")
        l2 = st.select_slider("L2 weight decay", rs.L2_VALUES, value=d["l2"],
                              format_func="{:g}".format, key="rt_l2", disabled=disabled)
    with c3:
        batch_size = st.select_slider("Batch size", rs.BATCH_SIZES, value=d["batch_size"],
                                      key="rt_batch", disabled=disabled)
        epochs = st.slider("Epochs", 1, rs.MAX_EPOCHS, d["epochs"], key="rt_epochs",
                           disabled=disabled)
        n_images = st.slider("Training images", rs.MIN_IMAGES, rs.MAX_IMAGES, d["n_images"],
                             rs.IMAGES_STEP, key="rt_images", disabled=disabled,
                             help=f"{rs.VAL_FRACTION:.0%} of them are held out for validation.")
        seed = st.number_input("Seed", 0, rs.MAX_SEED, d["seed"], key="rt_seed", disabled=disabled)
    return {"hidden": hidden, "activation": activation, "dropout": float(dropout),
            "optimizer": optimizer, "lr": float(lr), "momentum": float(momentum), "l2": float(l2),
            "batch_size": int(batch_size), "epochs": int(epochs), "n_images": int(n_images),
            "seed": int(seed)}


def start_training(settings, mnist):
    """Start a job unless the settings are unusable or the server is busy."""
    problem = rs.settings_problem(settings)
    if problem:
        st.error(problem)
        return
    slots = training_slots()
    if not slots.try_acquire():
        st.warning(f"{slots.running} other trainings are running on this server right now; "
                   "please try again in a minute.")
        return
    job = jobs.TrainingJob(settings, mnist, slots)
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
    job.touch()  # someone is watching: keep training
    records = list(job.records)
    st.progress(job.fraction_done, text=job.progress_text())
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
    ss = st.session_state
    job = ss.get("job")
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
            st.caption(f"Estimated training time: about {max(1, round(rs.estimate_seconds(settings)))} s "
                       f"(training stops by itself after {jobs.MAX_TRAIN_SECONDS // 60} minutes).")
        if st.button("Train", type="primary", key="train", disabled=running):
            start_training(settings, mnist)
        if ss.get("job") is not None:
            training_live_ui()
    message = ss.get("train_message")
    if message and ss.get("job") is None:
        kind, text = message
        getattr(st, kind)(text)
        model = ss.get("model")
        if kind == "success" and model is not None:
            st.image(cached_png("curves", ss["model_key"],
                                lambda: plots.training_curves(model.history, title=model.describe())))
    save_ui()


def save_ui():
    ss = st.session_state
    model = ss.get("model")
    if model is None:
        return
    st.subheader("Save this session's network")
    name = st.text_input("Save as", key="save_name", max_chars=40,
                         placeholder="e.g. small-relu (letters, digits, - and _)")
    overwrite = st.checkbox("Overwrite", key="save_overwrite",
                            help="Replace a network you saved earlier in this session.")
    if st.button("Save", key="save"):
        owned = ss.setdefault("saved_names", set())
        ok, message = library.save_network(model, name, overwrite=overwrite, owned=owned)
        if ok:
            owned.add(name.strip())
            ss["save_message"] = message
            st.rerun(scope="app")  # the sidebar lists the new file
        st.error(message)
    message = ss.pop("save_message", None)
    if message:
        st.success(message)


def main():
    st.set_page_config(page_title="Digit Lab", page_icon="✏️", layout="wide")
    started, cpu = time.perf_counter(), time.thread_time()
    st.session_state["_page_run"] = True  # read by draw_ui's timing log
    try:
        page_ui()
    finally:
        st.session_state["_page_run"] = False
        log.debug("page run %.1f ms, cpu %.1f ms", 1000 * (time.perf_counter() - started),
                  1000 * (time.thread_time() - cpu))


def page_ui():
    st.title("✏️ Digit Lab")
    st.markdown(INTRO)
    session.collect_finished_job(st.session_state, load_file)
    active = sidebar_ui()
    mnist, mnist_problem = mnist_or_none()
    # on_change="rerun": opening a tab reruns the page, so tabs outside the Draw
    # fragment (the Inside tab's saliency) catch up with the drawing.
    draw, training, evaluation, retrain, inside = st.tabs(TAB_LABELS, key="tab",
                                                          on_change="rerun")
    # Filled in the order that matters most, not the order shown: the drawing
    # first, then the training panel (so a finished run is reported before the
    # new network's figures are drawn), then the rest; Inside reads Draw's drawing.
    with draw:
        draw_ui(active)
    with retrain:
        retrain_ui()
    for tab, name, fill, args in ((training, "the Training tab", training_ui, ()),
                                  (evaluation, "the Evaluation tab", evaluation_ui,
                                   (mnist, mnist_problem)),
                                  (inside, "the Inside tab", inside_ui, ())):
        with tab:
            if active is None:
                st.warning("No network is loaded.")
            else:
                guard(name)(fill)(active, *args)


if __name__ == "__main__":
    main()
