"""Digit Lab: draw a digit and watch a from-scratch NumPy network read it, learn,
and learn your handwriting.

    streamlit run app.py

This file lays out the page and nothing else: ``main()`` builds it from small
``*_ui`` functions that place what the ``app_logic`` package computes (no
Streamlit there; tests call it without a browser). Every ``st.session_state``
key used here is declared in ``app_logic/state.py``.

Data flows one way: canvas -> ``app_logic.inputs`` -> network -> display;
training (``app_logic.jobs``) -> run history (``app_logic.runs``) -> curves.

- Tabs are lazy: only the open tab is computed. The Draw tab and the Retrain
  tab are fragments: a pen stroke reruns only the Draw tab (a few ms of
  server work), the training panel polls only itself.
- Shared, read-only resources (networks from files, MNIST, the map of digits,
  the server's trainings, the drawings database) are built once per server;
  inference changes no state in a network, so sessions share them without locks.
- Per browser, by a secret kept in a cookie (``app_logic.identity``): a
  visitor's running training, saved networks and drawings survive a reload.
- Environment: ``MNIST_DATA`` (the MNIST folder), ``DIGITLAB_WEIGHTS`` (saved
  networks), ``DIGITLAB_DB`` (the drawings database), ``DIGITLAB_LOG_LEVEL``
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
from app_logic import (figures, glossary, identity, inference, inputs, jobs, library, retrain,
                       session, tables, teaching, uploads)
from app_logic import atlas as atlas_mod
from app_logic import runs as runs_mod
from app_logic import store as store_mod
from app_logic.cache import cached

log = logging.getLogger("digitlab")
if os.environ.get("DIGITLAB_LOG_LEVEL") and not log.handlers:  # once per server
    _handler = logging.StreamHandler()
    _handler.setFormatter(logging.Formatter("%(asctime)s digitlab %(levelname)s %(message)s"))
    log.addHandler(_handler)
    try:
        log.setLevel(os.environ["DIGITLAB_LOG_LEVEL"].upper())
    except ValueError:
        log.warning("DIGITLAB_LOG_LEVEL=%r is not a logging level", os.environ["DIGITLAB_LOG_LEVEL"])

TABS = {"draw": ":material/draw: Draw", "drawings": ":material/photo_library: My drawings",
        "training": ":material/show_chart: Training", "evaluation": ":material/fact_check: Evaluation",
        "retrain": ":material/model_training: Retrain", "runs": ":material/compare_arrows: Runs",
        "inside": ":material/neurology: Inside"}
INTRO = ("A neural network written from scratch in NumPy reads your handwriting. Draw a digit, "
         "tell it when it is wrong, teach it, train your own and look inside.")
LIVE_REFRESH_S = 0.5
# Hide the drawing component's own toolbar (it lies invisibly over the canvas's top-right
# corner and swallows strokes that start there; its pencil switches drawing off): our own
# Clear and Undo buttons replace it. The component draws inside an open shadow root, which
# page CSS cannot reach, so a few lines of script add the rule inside it.
CANVAS_FIX = """<script>
(function () {
  if (window.__digitlabCanvasFix) return; window.__digitlabCanvasFix = true;
  const css = '.dc-toolbar { display: none !important; }';
  function fix() {
    document.querySelectorAll('[class*="st-key-canvas_"] *').forEach(function (el) {
      const root = el.shadowRoot;
      if (root && !root.querySelector('style[data-digitlab]')) {
        const s = document.createElement('style'); s.dataset.digitlab = '1'; s.textContent = css;
        root.appendChild(s);
      }
    });
  }
  fix(); new MutationObserver(fix).observe(document.body, {childList: true, subtree: true});
})();
</script>"""
# Phones: a smaller title and no introduction, so that the canvas, the Prediction and
# its bars fit on one screen (checked at 390x844 in tests/test_browser.py).
PAGE_CSS = """<style>
@media (max-width: 640px) {
  [data-testid="stMainBlockContainer"] { padding-top: 3rem; }
  h1 { font-size: 1.5rem !important; padding-top: 0 !important; }
  .st-key-intro { display: none; }
}
</style>"""


# -- shared resources (one per server) -----------------------------------------------------------

@st.cache_resource
def server_setup():
    """Once per server: one BLAS thread per product (see nn.speed: many sessions share
    the cores; spinning BLAS threads fighting over them made training 200x slower)."""
    nn.speed.limit_blas_threads(1)
    return True


@st.cache_resource
def trainings():
    return jobs.Trainings()


@st.cache_resource(show_spinner="Loading MNIST…")
def load_mnist_cached(folder):
    """MNIST from ``folder``, shared by every session; ``nn.data`` returns it read-only."""
    return nn.data.load_mnist(folder, download=False)


@st.cache_resource
def _store(url):
    return store_mod.open_store(url)


def drawings_store():
    """The drawings database the ``DIGITLAB_DB`` setting names, one per server."""
    return _store(os.environ.get(store_mod.DB_ENV))


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


def atlas_for(active, mnist):
    """The map of digits for the active network (built once per network), or None."""
    if mnist is None:
        return None
    _, (X_test, y_test) = mnist
    return cached("atlas", active.key, lambda: atlas_mod.Atlas(active.model, X_test, y_test))


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


def rerun_fragment():
    """Rerun the fragment this code runs in; the whole page when this run is a page run
    (Streamlit only allows a fragment rerun from inside a fragment's own rerun)."""
    try:
        st.rerun(scope="fragment")
    except st.errors.StreamlitAPIException:
        st.rerun()


def vega(chart, **kw):
    data, spec = chart
    st.vega_lite_chart(data, spec, width="stretch", **kw)


def png(rgb_or_gray):
    return figures.png_bytes(rgb_or_gray)


# -- who, and the session's things -----------------------------------------------------------------

def visitor_ui():
    """The visitor id (a hash of the secret this browser keeps); asks the browser to keep
    a new secret the first time."""
    ss = st.session_state
    cookie = st.context.cookies.get(identity.COOKIE)
    if identity.valid_secret(cookie):
        ss["visitor_secret"] = cookie
    elif not identity.valid_secret(ss.get("visitor_secret")):
        ss["visitor_secret"] = identity.new_secret()
    if cookie != ss["visitor_secret"] and not ss.get("cookie_sent"):
        st.html(identity.cookie_script(ss["visitor_secret"]), unsafe_allow_javascript=True)
        ss["cookie_sent"] = True
    return identity.visitor_id(ss["visitor_secret"])


def ss_collected():
    """The ids of the finished trainings this session took (see ``jobs.Trainings``)."""
    return st.session_state.setdefault("collected_jobs", set())


def session_defaults():
    ss = st.session_state
    ss.setdefault("runs", runs_mod.RunHistory())
    ss.setdefault("uploads", uploads.UploadCache())
    ss.setdefault("active", session.DEFAULT_CHOICE)
    ss.setdefault("canvas_gen", 0)
    if not ss.get("url_checked"):  # a shared link: its settings fill the Retrain tab
        recipe, problems = retrain.from_query(st.query_params.to_dict())
        seed_retrain_widgets(recipe)
        ss["url_problems"] = problems
        ss["url_checked"] = True


@st.fragment(run_every=2)
def training_status_ui(visitor):
    """While this visitor's training runs: its progress in the sidebar, and a heartbeat
    from whichever tab is open (a training nobody watches stops after a while)."""
    job = trainings().current(visitor, ss_collected())
    if job is None or not job.running:
        st.rerun(scope="app")  # it ended: collect the result
    job.touch()
    st.progress(job.fraction_done, text=f"Training: {job.progress_text()}")


@guard("the sidebar")
def sidebar_ui(visitor):
    """The "Active network" picker; returns the ActiveNetwork (or None if none loads)."""
    sb, ss = st.sidebar, st.session_state
    runs = ss["runs"]
    options = session.choices(runs, library.saved_networks())
    if ss["active"] not in options:
        ss["active"] = ss.get("last_good") or session.DEFAULT_CHOICE
    if ss.get("active_choice") != ss["active"]:
        ss["active_choice"] = ss["active"] if ss["active"] in options else session.DEFAULT_CHOICE
    sb.selectbox("Active network", list(options), format_func=options.get, key="active_choice",
                 on_change=lambda: ss.update(active=ss["active_choice"]),
                 help="Every tab shows this network. The shipped ones, the networks saved on this "
                      "server, and your own runs (trainings and teachings) are here.")
    active, error = session.resolve_with_fallback(ss["active"], runs, ss.get("last_good"))
    if error:
        sb.error(error)
        if active is not None:
            sb.caption(f"Using “{active.label}” instead.")
    if active is None:
        sb.warning("No network is loaded.")
        return None
    ss["last_good"] = active.choice
    job = trainings().current(visitor, ss_collected())
    if job is not None and job.running:
        with sb:
            training_status_ui(visitor)
    model = active.model
    acc = model.metrics.get("accuracy")
    lines = [f"**`{model.describe()}`**", f"{model.n_parameters:,} parameters",
             f"{len(model.history)} epochs of training"]
    if acc is not None:
        lines.append(f"MNIST test accuracy: **{acc:.2%}**")
    sb.markdown("  \n".join(lines))
    with sb.expander("Glossary", icon=":material/menu_book:"):
        for term, text in glossary.GLOSSARY.items():
            st.markdown(f"**{term}**: {text}")
    return active


# -- Draw -------------------------------------------------------------------------------------------

def canvas_ui():
    """The canvas with our own Clear and Undo buttons; returns its stroke data."""
    ss = st.session_state
    try:
        from streamlit_drawable_canvas import st_canvas  # importable only in a running app
    except ImportError:
        st.warning("The drawing canvas needs the streamlit-drawable-canvas package; "
                   "you can still upload a photo below.")
        return None
    stroke = ss.get("stroke_width", 18)
    try:
        result = st_canvas(key=f"canvas_{ss['canvas_gen']}", width=inputs.CANVAS_SIZE,
                           height=inputs.CANVAS_SIZE, background_color="#000000",
                           stroke_color="#FFFFFF", stroke_width=stroke, drawing_mode="freedraw",
                           update_streamlit=True, return_image_data=False,
                           initial_drawing=ss.get("canvas_initial"))
    except (AttributeError, KeyError, TypeError, ValueError) as e:
        # The component could not read what the browser sent as its state (a crafted
        # message): start a fresh canvas, so this session recovers.
        log.warning("canvas state unreadable (%s); a fresh canvas replaces it", type(e).__name__)
        ss["canvas_gen"] += 1
        ss["canvas_initial"] = None
        st.error("Could not read the drawing: the canvas sent something unexpected. "
                 "Here is a fresh one.")
        return None
    json_data = None if result is None else result.json_data
    ss["canvas_json"] = json_data
    # A horizontal row, not columns: columns stack on a phone and would push the
    # prediction below the screen.
    with st.container(horizontal=True, vertical_alignment="center", gap="small"):
        if st.button("Clear", icon=":material/delete:", key="canvas_clear_btn"):
            new_canvas(None)
        if st.button("Undo", icon=":material/undo:", key="canvas_undo_btn",
                     disabled=not (isinstance(json_data, dict) and json_data.get("objects"))):
            new_canvas(inputs.undo(json_data))
        with st.popover(f"Pen {stroke} px", icon=":material/edit:"):
            st.select_slider("Pen width", options=[6, 10, 14, 18, 24, 30, 40], value=18,
                             key="stroke_width", format_func=lambda w: f"{w} px",
                             help="The pen's width in pixels (the canvas is 280 pixels wide).")
    return json_data


def new_canvas(initial):
    """Start a fresh canvas (a new widget key), optionally with a drawing on it."""
    ss = st.session_state
    ss["canvas_gen"] += 1
    ss["canvas_initial"] = initial
    rerun_fragment()


def upload_ui():
    """The photo upload; returns ``(img28, photo PNG)`` or (None, None)."""
    upload = st.file_uploader("Or upload a photo of a digit (PNG, JPEG or WebP)",
                              type=["png", "jpg", "jpeg", "webp"], key="upload",
                              max_upload_size=uploads.MAX_BYTES // 2**20)
    if upload is None:
        return None, None
    try:
        decoded = st.session_state["uploads"].get_or_decode(upload.getvalue(), upload.name)
    except uploads.UploadError as e:
        st.error(str(e))
        return None, None
    left, right = st.columns(2)
    left.image(decoded.photo_png, caption=f"Your photo ({decoded.width}×{decoded.height})")
    if decoded.img28 is None:
        right.warning("No digit found in this photo: try a darker pen or a closer crop.")
        return None, None
    right.image(figures.preview_png(decoded.img28, scale=5), caption="What the network sees",
                output_format="PNG")
    return decoded.img28, decoded.photo_png


def other_network(active):
    """The other shipped network, to compare with (the MLP beside the CNN, and back)."""
    other = "file:mlp" if active.model.kind == "cnn" else "file:default"
    found, _ = session.resolve(other, st.session_state["runs"])
    return found if found is not None and found.key != active.key else None


def prediction_ui(active, img28, atlas):
    probs = inference.predict(active.model, img28)
    digit = int(probs.argmax())
    with st.container(horizontal=True, gap="large"):
        st.metric("Prediction", str(digit), width="content")
        st.metric("Confidence", f"{probs[digit]:.1%}", width="content",
                  help=glossary.CHART_HELP["probabilities"])
    vega(figures.probability_chart(probs, height=160), key="probs_chart")
    if atlas is not None:
        place = atlas.place(active.model, img28)
        if place.unusual:
            st.warning(f"This does not look like any digit the network has seen: it is "
                       f"{place.ratio:.1f}× farther from every MNIST digit than 99% of test "
                       f"digits are. The {probs[digit]:.0%} above is not certainty: softmax "
                       "always spreads 100% over the ten digits, whatever it is shown "
                       "(see the Inside tab).", icon=":material/help:")
    other = other_network(active)
    if other is not None:
        p2 = inference.predict(other.model, img28)
        d2 = int(p2.argmax())
        kind = "multi-layer perceptron" if other.model.kind == "mlp" else "CNN"
        verdict = "agrees" if d2 == digit else "reads it differently"
        st.caption(f"The shipped {kind} ({other.label}) {verdict}: **{d2}** ({p2[d2]:.0%}).")
    return digit


def label_ui(visitor, active, img28, digit, json_data, photo_png):
    """'Right' or 'No, it's a …': one click stores the drawing with its label."""
    ss = st.session_state

    def keep(label):
        try:
            thumb = inputs.thumbnail_png(json_data, photo_png)
            store = drawings_store()
            cid = ss.get("collection") or store.personal_collection(visitor)
            store.add_drawing(visitor, cid, int(label), img28, thumb, predicted=digit,
                              model=active.label[:100])
            n = int(store.counts(visitor, cid).sum())
            ss["label_message"] = ("success", f"Kept as a {label} ({n:,} drawings in this "
                                              "collection). Draw the next one!")
            ss["canvas_gen"] += 1
            ss["canvas_initial"] = None
        except (store_mod.StoreError, ValueError) as e:
            ss["label_message"] = ("error", f"Not kept: {e}")

    def wrong():
        label = ss.get("wrong_label")
        ss["wrong_label"] = None
        if label is not None:
            keep(label)

    st.button(f"Right, it's a {digit}", icon=":material/check:", key="label_right",
              on_click=keep, args=(digit,),
              help="Keep this drawing in your collection, labelled as what the network read.")
    st.pills("No, it's a …", [str(d) for d in range(10) if d != digit], key="wrong_label",
             on_change=wrong, help="Keep this drawing with the right label: the network can "
                                   "be taught from it on the My drawings tab.")


@st.fragment
@guard("the Draw tab")
def draw_ui(visitor, active, mnist):
    """Canvas, upload, prediction and labelling. A fragment: a stroke reruns only this."""
    started, cpu = time.perf_counter(), time.thread_time()
    ss = st.session_state
    left, right = st.columns([1, 1], gap="medium")
    with left:
        json_data = canvas_ui()
    img28, error = inputs.read_canvas(json_data)
    if error:
        left.error(error)
    with st.expander("Upload a photo instead", icon=":material/photo_camera:"):
        photo28, photo_png = upload_ui()
    if photo28 is not None:
        img28 = photo28
    ss["img28"] = img28
    with right:
        message = ss.pop("label_message", None)
        if message:
            getattr(st, message[0])(message[1])
        if active is None:
            st.warning("No network is loaded, so there is nothing to predict with.")
        elif img28 is None:
            st.info("Draw a digit in the black box and the network will read it as you draw.")
        else:
            atlas = atlas_for(active, mnist)
            digit = prediction_ui(active, img28, atlas)
            label_ui(visitor, active, img28, digit, json_data, photo_png)
            st.image(figures.preview_png(img28, scale=4), caption="What the network sees (28×28)",
                     output_format="PNG")
    log.debug("draw %.1f ms, cpu %.1f ms", 1000 * (time.perf_counter() - started),
              1000 * (time.thread_time() - cpu))


# -- My drawings -------------------------------------------------------------------------------------

def collection_picker(store, visitor):
    """Which collection to look at (and to keep new drawings in); returns it or None."""
    ss = st.session_state
    collections = store.collections(visitor)
    by_id = {c.id: c for c in collections}
    if ss.get("collection") not in by_id:
        ss["collection"] = collections[0].id
    st.selectbox("Collection", list(by_id), key="collection",
                 format_func=lambda cid: (f"{by_id[cid].name} ({by_id[cid].n_drawings:,} drawings"
                                          + (f", class code {by_id[cid].code})" if by_id[cid].code
                                             else ")")),
                 help="Your own drawings, and the class collections you created or joined. "
                      "Drawings you label on the Draw tab go into the one chosen here.")
    return by_id[ss["collection"]]


def classes_ui(store, visitor):
    ss = st.session_state
    create, join = st.columns(2)
    with create.form("create_class", clear_on_submit=True, border=False):
        name = st.text_input("New class collection", key="class_name", max_chars=60,
                             placeholder="e.g. Year 8 maths")
        if st.form_submit_button("Create", icon=":material/group_add:"):
            try:
                c = store.create_class(visitor, name)
                ss["collection"] = c.id
                ss["store_message"] = ("success", f"Created “{c.name}”. Students join it with "
                                                  f"the code **{c.code}**.")
            except store_mod.StoreError as e:
                ss["store_message"] = ("error", str(e))
            st.rerun()
    with join.form("join_class", clear_on_submit=True, border=False):
        code = st.text_input("Join a class with its code", key="join_code", max_chars=20,
                             placeholder="e.g. K7M2QX")
        if st.form_submit_button("Join", icon=":material/login:"):
            try:
                c = store.join_class(visitor, code)
                ss["collection"] = c.id
                ss["store_message"] = ("success", f"You joined “{c.name}”. Your labelled "
                                                  "drawings now go into it.")
            except store_mod.StoreError as e:
                ss["store_message"] = ("error", str(e))
            st.rerun()


def gallery_ui(store, visitor, collection, drawings):
    ss = st.session_state
    if not len(drawings):
        st.info("No drawings here yet: draw on the Draw tab and press Right or pick the right "
                "digit under the prediction.")
        return
    st.markdown(f"**{len(drawings):,} drawings**, {int(drawings.mine.sum()):,} of them yours.")
    for digit in range(10):
        rows = np.flatnonzero(drawings.labels == digit)
        if not len(rows):
            continue
        shown = rows[-24:]
        st.markdown(f"**{digit}** · {len(rows):,}")
        st.image([store.thumbnail(visitor, int(drawings.ids[i])) for i in shown], width=48,
                 caption=[("you" if drawings.mine[i] else "class") +
                          ("" if drawings.predicted[i] in (-1, digit) else f", read {drawings.predicted[i]}")
                          for i in shown])
    my_drawings_ui(store, visitor, collection, drawings)


def my_drawings_ui(store, visitor, collection, drawings):
    """Your own drawings in this collection as a table: tick some and delete them, or all."""
    ss = st.session_state
    mine = np.flatnonzero(drawings.mine)
    if not len(mine):
        return
    st.markdown("**Your drawings here**: tick the ones to delete.")
    table = tables.drawings_table(drawings, mine[-tables.MAX_DRAWING_ROWS:],
                                  lambda i: store.thumbnail(visitor, i))
    event = st.dataframe(table, key="my_drawings", on_select="rerun", selection_mode="multi-row",
                         hide_index=True, column_order=["drawing", "label", "read as", "when"],
                         column_config={"drawing": st.column_config.ImageColumn("drawing")})
    ticked = [int(table["id"].iloc[r]) for r in event.selection.rows]
    c1, c2 = st.columns(2)
    if c1.button(f"Delete {len(ticked)} ticked", icon=":material/delete:", key="del_drawing_ticked",
                 disabled=not ticked):
        try:
            for drawing_id in ticked:
                store.delete_drawing(visitor, drawing_id)
            ss["store_message"] = ("success", f"Deleted {len(ticked):,} of your drawings.")
        except store_mod.StoreError as e:
            ss["store_message"] = ("error", str(e))
        st.rerun()
    if c2.button("Delete all my drawings here", icon=":material/delete_sweep:",
                 key="del_drawing_all"):
        try:
            n = store.delete_all_mine(visitor, collection.id)
            ss["store_message"] = ("success", f"Deleted {n:,} of your drawings.")
        except store_mod.StoreError as e:
            ss["store_message"] = ("error", str(e))
        st.rerun()


def scores_on_drawings_ui(active, drawings):
    """How well does the active network read us? Beside its MNIST test figures."""
    if active is None or not len(drawings):
        return
    predicted = active.model.predict(drawings.images)
    report = nn.metrics.classification_report(drawings.labels, predicted)
    mnist_acc = active.model.metrics.get("accuracy")
    c1, c2, c3 = st.columns(3)
    c1.metric("Reads these drawings", f"{report['accuracy']:.1%}",
              help="The active network's accuracy on the drawings of this collection.")
    c2.metric("Reads MNIST's test set", f"{mnist_acc:.2%}" if mnist_acc is not None else "—")
    c3.metric("Drawings", f"{report['n']:,}")
    left, right = st.columns(2)
    with left:
        st.markdown("**Confusion matrix on these drawings**", help=glossary.CHART_HELP["confusion"])
        vega(figures.confusion_chart(report["confusion_matrix"], height=300))
    with right:
        st.markdown("**Per digit**", help=glossary.CHART_HELP["per_class"])
        st.table(tables.per_class_table(report).style.format(
            {c: "{:.1f}" for c in tables.SCORE_COLUMNS}, na_rep="n/a"))


def teach_ui(visitor, active, store, collection, drawings, mnist):
    ss = st.session_state
    st.subheader("Teach it your handwriting")
    st.markdown("Fine-tune the active network on the drawings of this collection: it sees "
                "each drawing again and again, turned and slanted a little, mixed with MNIST "
                "images it already knows (*rehearsal*), so it learns your style without "
                "forgetting everyone else's. At the end it keeps a fifth of the old network's "
                "weights (blends them in), which undoes most of what it did forget.")
    rehearsal = st.toggle("Rehearse MNIST while learning", value=True, key="rehearsal",
                          disabled=mnist is None,
                          help="Off: the network sees only your drawings. Watch its MNIST "
                               "accuracy drop: that is forgetting, and why rehearsal exists.")
    usable = len(drawings) > 0 and active is not None
    if st.button("Teach", type="primary", icon=":material/school:", key="teach",
                 disabled=not usable):
        bar = st.progress(0.0, text="Teaching…")
        steps = teaching.TEACH_SETTINGS["steps"]

        def follow(step, loss):
            bar.progress(step / steps, text=f"Teaching: step {step} of {steps}, loss {loss:.3f}")

        try:
            result = teaching.teach(active.model, drawings.images, drawings.labels, mnist,
                                    rehearsal=rehearsal and mnist is not None, callback=follow)
        except ValueError as e:
            ss["teach_message"] = ("error", str(e))
        else:
            ss["active"] = session.record_teaching(result, ss["runs"], active.label, ss["active"])
            b, a = result.before, result.after
            text = (f"Taught in {result.seconds:.1f} s. On these drawings: {b['drawings']:.1%} → "
                    f"**{a['drawings']:.1%}**.")
            if a["mnist"] is not None:
                text += f" On MNIST's test set: {b['mnist']:.2%} → **{a['mnist']:.2%}**."
            if not result.rehearsal and a["mnist"] is not None and b["mnist"] - a["mnist"] > 0.005:
                text += " Without rehearsal it forgot part of MNIST."
            text += " The taught network is now active (a new run on the Runs tab)."
            ss["teach_message"] = ("success", text)
        st.rerun()
    if not usable:
        st.caption("Label some drawings on the Draw tab first.")


@guard("the My drawings tab")
def drawings_ui(visitor, active, mnist):
    ss = st.session_state
    try:
        store = drawings_store()
        collection = collection_picker(store, visitor)
        drawings = store.drawings(visitor, collection.id)
    except store_mod.StoreError as e:
        st.error(f"Your drawings are not available right now: {e} Drawing and reading digits "
                 "still work.")
        return
    for key in ("store_message", "teach_message"):
        message = ss.pop(key, None)
        if message:
            getattr(st, message[0])(message[1])
    with st.expander("Class collections: pool a class's drawings", icon=":material/groups:"):
        st.markdown("A teacher creates a class collection and reads its code out; students "
                    "join with the code. Everyone sees the pooled drawings; each deletes only "
                    "their own.")
        classes_ui(store, visitor)
    scores_on_drawings_ui(active, drawings)
    teach_ui(visitor, active, store, collection, drawings, mnist)
    st.subheader("The drawings")
    gallery_ui(store, visitor, collection, drawings)
    with st.expander("Export or import", icon=":material/import_export:"):
        c1, c2 = st.columns(2)
        try:
            c1.download_button("Export as .npz", store.export_npz(visitor, collection.id),
                               file_name="drawings.npz", mime="application/octet-stream",
                               key="export_npz", on_click="ignore", disabled=not len(drawings))
            c2.download_button("Export as CSV", store.export_csv(visitor, collection.id),
                               file_name="drawings.csv", mime="text/csv", key="export_csv",
                               on_click="ignore", disabled=not len(drawings))
        except store_mod.StoreError as e:
            st.error(str(e))
        upload = st.file_uploader("Import an export (.npz or .csv) into this collection",
                                  type=["npz", "csv"], key="import_file")
        if upload is not None and st.button("Import", key="import"):
            try:
                n = store.import_file(visitor, collection.id, upload.getvalue(), upload.name)
                ss["store_message"] = ("success", f"Imported {n:,} drawings.")
            except store_mod.StoreError as e:
                ss["store_message"] = ("error", str(e))
            st.rerun()
    networks_ui(visitor)


# -- Training and Evaluation ------------------------------------------------------------------------

def training_ui(active):
    model = active.model
    st.subheader("How this network was trained")
    st.markdown(f"**`{model.describe()}`**: {model.n_parameters:,} parameters.")
    c1, c2, c3 = st.columns(3)
    c1.metric("Epochs trained", str(len(model.history)))
    c2.metric("Training time", retrain.duration(model.train_seconds))
    vals = [r["val_acc"] for r in model.history if r.get("val_acc") is not None]
    c3.metric("Best validation accuracy", f"{max(vals):.2%}" if vals else "—")
    if model.history:
        st.markdown("**Learning curves**", help=glossary.CHART_HELP["curves"])
        runs = [(active.label, model.history)]
        left, right = st.columns(2)
        with left:
            vega(figures.curves_chart(runs, "loss"))
        with right:
            vega(figures.curves_chart(runs, "accuracy"))
    else:
        st.info("This network has no training history stored.")
    left, right = st.columns(2)
    left.markdown("**Layers**")
    left.table(tables.architecture_table(model), hide_index=True)
    right.markdown("**Settings**")
    right.table(tables.recipe_table(model), hide_index=True)


def mistakes_ui(active, mnist, mnist_problem):
    st.subheader("Its most confident mistakes")
    if mnist is None:
        st.info(f"{mnist_problem} The mistakes need the MNIST test set: download it on the "
                "Retrain tab.")
        return
    _, (X_test, y_test) = mnist
    idx, pred, conf = cached("mistakes", active.key,
                             lambda: inference.misclassified(active.model, X_test, y_test))
    st.caption("The network's most confident mistakes on the 10,000 test images.")
    st.image([figures.preview_png(X_test[i], scale=3) for i in idx], output_format="PNG",
             caption=[f"{y_test[i]} read as {p} ({c:.0%})" for i, p, c in zip(idx, pred, conf)])


def evaluation_ui(active, mnist, mnist_problem):
    metrics = active.model.metrics
    if not metrics and mnist is not None:
        metrics = cached("evaluation", active.key, lambda: active.model.evaluate(*mnist[1]))
    if not metrics:
        st.info("This network has no stored test results, and MNIST is not available to "
                "compute them.")
        return
    st.subheader("Test-set results")
    c1, c2, c3 = st.columns(3)
    c1.metric("Test accuracy", f"{metrics['accuracy']:.2%}")
    c2.metric("Test loss", f"{metrics['loss']:.4f}" if "loss" in metrics else "—",
              help=glossary.GLOSSARY["Cross-entropy (loss)"])
    c3.metric("Test images", f"{metrics['n']:,}")
    left, right = st.columns([1.1, 1])
    with left:
        st.markdown("**Confusion matrix**: rows are the true digits, columns what it read.",
                    help=glossary.CHART_HELP["confusion"])
        vega(figures.confusion_chart(metrics["confusion_matrix"]))
    with right:
        st.markdown("**Per digit**", help=glossary.CHART_HELP["per_class"])
        st.table(tables.per_class_table(metrics).style.format(
            {c: "{:.2f}" for c in tables.SCORE_COLUMNS}, na_rep="n/a"))
        pairs = tables.confused_pairs_table(metrics["confusion_matrix"])
        st.markdown("**Most confused pairs**")
        if len(pairs):
            st.table(pairs, hide_index=True)
        else:
            st.write("No mistakes at all.")
    vega(figures.per_class_chart(metrics["per_class"]))
    mistakes_ui(active, mnist, mnist_problem)


# -- Retrain ------------------------------------------------------------------------------------------

def seed_retrain_widgets(recipe):
    """Put ``recipe``'s values into the Retrain widgets (before they are drawn)."""
    st.session_state.update(retrain.widget_values(recipe))


def control_ui(c, disabled):
    """One Retrain widget for ``c`` (an ``app_logic.retrain.Control``); returns its value."""
    key, kw = f"rt_{c.name}", dict(help=c.help, disabled=disabled, persist_state="page")
    fmt = (lambda v: retrain.describe_value(c.name, v))
    if c.kind == "select":
        return st.selectbox(c.label, c.options, key=key, **kw)
    if c.kind == "steps":
        return st.select_slider(c.label, c.options, key=key, format_func=fmt, **kw)
    if c.kind == "toggle":
        return st.toggle(c.label, key=key, **kw)
    if c.kind == "number":
        return int(st.number_input(c.label, int(c.low), int(c.high), step=1, key=key, **kw))
    if c.kind == "augmentation":
        on = st.toggle(c.label, key=f"{key}_on", **kw)
        strength = st.slider(f"{c.label} strength", float(c.low), float(c.high), step=float(c.step),
                             key=key, label_visibility="collapsed", format=f"%g{c.unit}",
                             help=c.help, disabled=disabled or not on, persist_state="page")
        return float(strength) if on else 0.0
    if c.kind == "layers":
        word = "convolution blocks" if c.name == "conv" else "hidden layers"
        low = 1 if c.name == "conv" else 0
        n = int(st.number_input(f"Number of {word}", low, c.max_count, key=f"{key}_n",
                                help=c.help, disabled=disabled, persist_state="page"))
        values = []
        for i in range(n):
            label = f"Channels of block {i + 1}" if c.name == "conv" else f"Units in layer {i + 1}"
            if c.options:
                values.append(st.select_slider(label, c.options, key=f"{key}_{i}", **kw))
            else:
                values.append(int(st.number_input(label, int(c.low), int(c.high),
                                                  step=int(c.step), key=f"{key}_{i}", **kw)))
        return tuple(int(v) for v in values)
    if isinstance(c.default, int) and c.name != "val_size":
        return int(st.slider(c.label, int(c.low), int(c.high), step=int(c.step), key=key, **kw))
    return float(st.slider(c.label, float(c.low), float(c.high), step=float(c.step), key=key, **kw))


def settings_ui(disabled):
    """The Retrain widgets, grouped; returns the chosen ``nn.Recipe`` and its problems."""
    ss = st.session_state
    if "rt_lr" not in ss:  # first visit of the tab in this session
        seed_retrain_widgets(retrain.DEFAULTS)
    values = {}
    kind = st.segmented_control("Network", retrain.KINDS, key="kind", disabled=disabled,
                                persist_state="page",
                                help="MLP: every pixel connects to every hidden unit. CNN: small "
                                     "filters slide over the image first, so a stroke moved by a "
                                     "pixel is still the same stroke.")
    cols = st.columns(4)
    for col, group in zip(cols, nn.recipe.GROUPS):
        with col:
            st.markdown(f"**{nn.recipe.GROUPS[group]}**")
            for c in retrain.controls(group):
                if c.name in retrain.CNN_ONLY and kind != "CNN":
                    continue
                values[c.name] = control_ui(c, disabled or (
                    c.name in retrain.MOMENTUM_ONLY and ss.get("rt_optimizer") != "momentum"))
    recipe = retrain.recipe_from_widgets(values, kind)
    return recipe, recipe.problems(app=True)


def augmentation_preview_ui(recipe, mnist):
    if mnist is None or not recipe.augmented:
        return
    (X, _), _ = mnist
    with st.expander("What the network is shown: 16 training images, augmented",
                     icon=":material/auto_awesome:"):
        key = tuple(getattr(recipe, a) for a in nn.recipe.AUGMENTATIONS)
        tiles = cached("augmented", key, lambda: nn.augment.Augmenter.from_recipe(recipe)(
            X[:16], np.random.default_rng(recipe.seed)))
        st.image(figures.mosaic_png(np.concatenate([X[:8], tiles[:8], X[8:16], tiles[8:]])
                                    .reshape(-1, 28, 28), cols=8, scale=3, diverging=False,
                                    shared_scale=True),
                 caption="Rows 1 and 3: the originals; rows 2 and 4: as one epoch shows them.")


def share_link_ui(recipe):
    """Keep the settings in the page's URL, so the link can be shared."""
    wanted = retrain.to_query(recipe)
    for name in nn.recipe.SETTINGS:
        if name in st.query_params and name not in wanted:
            del st.query_params[name]
    for name, text in wanted.items():
        if st.query_params.get(name) != text:
            st.query_params[name] = text
    st.caption(":material/link: The settings are in this page's address: copy it to share "
               "them (a link opens with them filled in).")


def start_training(visitor, recipe, problems, mnist):
    if problems:
        st.error(next(iter(problems.values())))
        return
    job, why = trainings().start(visitor, recipe, mnist)
    if job is None:
        st.warning(why)
        return
    st.session_state.pop("train_message", None)
    rerun_fragment()


@st.fragment(run_every=LIVE_REFRESH_S)
@guard("the training progress")
def training_live_ui(visitor):
    """Progress, growing curves, the first layer changing, and Stop; polls the job."""
    job = trainings().current(visitor, ss_collected())
    if job is None or not job.running:
        st.rerun(scope="app")  # finished: every tab switches to the result
    job.touch()  # someone is watching: keep training
    records, frames = list(job.records), list(job.frames)
    st.progress(job.fraction_done, text=job.progress_text())
    if job.stop_event.is_set():
        st.caption("Stopping after the current batch…")
    elif st.button("Stop", key="stop_training", icon=":material/stop_circle:"):
        job.stop_event.set()
        st.caption("Stopping after the current batch…")
    left, right = st.columns(2)
    if records:
        runs = [("this training", records)]
        with left:
            vega(figures.curves_chart(runs, "loss", height=220))
        with right:
            vega(figures.curves_chart(runs, "accuracy", height=220))
    else:
        left.caption("The curves appear when the first epoch finishes.")
    if frames:
        weights_image(frames[-1], f"The first layer's weights after epoch {len(frames) - 1}")


@st.fragment
@guard("the Retrain tab")
def retrain_ui(visitor, mnist, mnist_problem):
    ss = st.session_state
    job = trainings().current(visitor, ss_collected())
    if job is not None and not job.running:
        st.rerun(scope="app")  # collect the result and update every tab
    running = job is not None
    st.subheader("Train your own network")
    for problem in ss.pop("url_problems", []) or []:
        st.warning(f"From the link: {problem}")
    message = ss.get("train_message")
    if message and not running:
        getattr(st, message[0])(message[1])
    if running:
        st.info("Training on the server: the settings below are locked until it ends. You can "
                "reload the page or look at other tabs; it goes on.")
        training_live_ui(visitor)
    if mnist is None and not running:
        mnist_howto_ui(mnist_problem)
        return
    recipe, problems = settings_ui(disabled=running)
    augmentation_preview_ui(recipe, mnist)
    if not running:
        share_link_ui(recipe)
        for problem in problems.values():
            st.error(problem)
        if not problems:
            seconds = retrain.estimate_seconds(recipe)
            differences = retrain.differences_from_shipped(recipe)
            st.caption(f"Estimated training time: about {max(1, round(seconds)):,} s (a training "
                       f"stops by itself after {jobs.MAX_TRAIN_SECONDS // 60} minutes).")
            if differences:
                st.caption("How this differs from the shipped network's recipe: "
                           + "; ".join(differences) + ".")
    if st.button("Train", type="primary", icon=":material/play_arrow:", key="train",
                 disabled=running or bool(problems),
                 help="One training at a time: this one is still running." if running else None):
        start_training(visitor, recipe, problems, mnist)
    film_ui()
    networks_ui(visitor)


def film_ui():
    """The first layer's weights, one frame per epoch, of the newest run that has them."""
    ss = st.session_state
    run = next((r for r in reversed(ss["runs"].runs) if r.frames), None)
    if run is None:
        return
    with st.expander(f"The first layer learning, epoch by epoch ({ss['runs'].label(run)})",
                     icon=":material/movie:"):
        st.caption(glossary.CHART_HELP["weights"])
        last = len(run.frames) - 1
        frame = st.slider("Epoch", 0, last, last, key="frame",
                          help="0 is before training: random weights.") if last else 0
        tile = run.frames[frame]
        weights_image(tile, f"After epoch {frame}" if frame else "Before training")


def networks_ui(visitor):
    """Save the active run's network; delete your own saved networks."""
    ss = st.session_state
    active = ss.get("active", "")
    message = ss.pop("save_message", None)
    if message:
        getattr(st, message[0])(message[1])
    if active.startswith("run:"):
        run = ss["runs"].get(int(active.split(":")[1]))
        if run is not None and run.model is not None:
            st.subheader("Save the active network")
            with st.form("save_form", border=False):
                name = st.text_input("Save as", key="save_name", max_chars=40,
                                     placeholder="e.g. small-relu (letters, digits, - and _)")
                overwrite = st.checkbox("Overwrite", key="save_overwrite",
                                        help="Replace a network of yours with this name.")
                if st.form_submit_button("Save", icon=":material/save:"):
                    ok, text = library.save_network(run.model, name, visitor, overwrite=overwrite)
                    ss["save_message"] = ("success" if ok else "error", text)
                    if ok:
                        ss["active"] = session.file_choice(name.strip())
                    st.rerun(scope="app")
    mine = library.owned_by(visitor)
    if mine:
        st.subheader("Your saved networks")
        left, right = st.columns([3, 1], vertical_alignment="bottom")
        name = left.selectbox("Network", mine, key="delete_name")
        if right.button("Delete", icon=":material/delete:", key="delete_network"):
            ok, text = library.delete_network(name, visitor)
            ss["save_message"] = ("success" if ok else "error", text)
            if ok and ss.get("active") == session.file_choice(name):
                ss["active"] = session.DEFAULT_CHOICE
            st.rerun(scope="app")
        st.caption(f"You may keep up to {library.MAX_PER_VISITOR} networks on this server.")


def mnist_howto_ui(problem):
    folder = nn.data.resolve_data_dir()
    st.warning(f"Training and teaching need the MNIST dataset. {problem}")
    with st.expander("How to get MNIST", expanded=True, icon=":material/download:"):
        st.markdown(
            "MNIST is four files, about 11 MB. **Download MNIST** below fetches them from a "
            f"public mirror into `{folder}` and checks them. If this server cannot reach the "
            "internet, download the four files (`train-images-idx3-ubyte.gz`, "
            "`train-labels-idx1-ubyte.gz`, `t10k-images-idx3-ubyte.gz`, "
            f"`t10k-labels-idx1-ubyte.gz`) on another computer, copy them into `{folder}` (or "
            "the folder the `MNIST_DATA` setting names) and reload this page.")
        if st.button("Download MNIST", key="download_mnist", icon=":material/download:"):
            with st.status("Downloading MNIST…", expanded=True) as status:
                try:
                    nn.data.load_mnist(folder, download=True, progress=status.write)
                except nn.data.DataError as e:
                    status.update(label="Download failed", state="error")
                    st.error(f"Could not download MNIST: {e}")
                    return
                status.update(label="MNIST is ready", state="complete")
            st.rerun(scope="app")


# -- Runs -------------------------------------------------------------------------------------------

def runs_ui():
    ss = st.session_state
    history = ss["runs"]
    st.subheader("Your runs")
    if not len(history):
        st.info("Every training (Retrain tab) and teaching (My drawings tab) of this session "
                "becomes a run here: train twice with different settings and compare them.")
        return
    table, differing = history.table()
    st.caption(glossary.CHART_HELP["runs"])
    st.dataframe(table.style.apply(lambda col: ["background-color: #fff3bf"] * len(col),
                                   subset=differing)
                 .format({"test accuracy (%)": "{:.2f}", "seconds": "{:,.1f}"}, na_rep="—"),
                 hide_index=True, width="stretch")
    ids = [r.id for r in history.runs]
    labels = {r.id: history.label(r) for r in history.runs}
    ticked = st.multiselect("Curves of", ids, default=ids[-3:], format_func=labels.get,
                            key="runs_ticked")
    curves = history.curves(set(ticked))
    if curves:
        left, right = st.columns(2)
        with left:
            vega(figures.curves_chart(curves, "loss"))
        with right:
            vega(figures.curves_chart(curves, "accuracy"))
    with_cm = [r.id for r in history.runs if r.metrics.get("confusion_matrix")]
    if len(with_cm) >= 2:
        st.markdown("**Compare two confusion matrices**", help=glossary.CHART_HELP["difference"])
        a, b = st.columns(2)
        run_a = a.selectbox("Run A", with_cm, index=len(with_cm) - 2, format_func=labels.get,
                            key="compare_a")
        run_b = b.selectbox("Run B", with_cm, index=len(with_cm) - 1, format_func=labels.get,
                            key="compare_b")
        cm_a, cm_b = runs_mod.confusion_pair(history.get(run_a), history.get(run_b))
        vega(figures.confusion_difference_chart(cm_a, cm_b))
    st.markdown("**Make a run the active network again**")
    for run in reversed(history.runs):
        c1, c2 = st.columns([4, 1], vertical_alignment="center")
        acc = f"{run.accuracy:.2%}" if run.accuracy is not None else "—"
        c1.write(f"{labels[run.id]} · test accuracy {acc}")
        if c2.button("Make active", key=f"make_active_{run.id}", disabled=run.model is None,
                     help=None if run.model is not None else
                     "Only the newest runs keep their network."):
            ss["active"] = session.run_choice(run.id)
            st.rerun()
    c1, c2 = st.columns(2)
    c1.download_button("Export the runs (JSON)", history.export_json(), file_name="runs.json",
                       mime="application/json", key="export_runs_json", on_click="ignore")
    c2.download_button("Export the curves (CSV)", history.export_csv(), file_name="runs.csv",
                       mime="text/csv", key="export_runs_csv", on_click="ignore")


# -- Inside ------------------------------------------------------------------------------------------

def map_ui(active, img28, mnist):
    st.subheader("Where your drawing lands", help=glossary.CHART_HELP["map"])
    atlas = atlas_for(active, mnist)
    if atlas is None:
        st.info("The map needs the MNIST test set: download it on the Retrain tab.")
        return
    place = atlas.place(active.model, img28)
    _, (X_test, y_test) = mnist
    vega(figures.map_chart(atlas.points, atlas.labels, place.point, place.neighbours))
    st.markdown("**Its five nearest MNIST digits**, as the network sees them:")
    index = atlas.index[place.neighbours]
    st.image([figures.preview_png(X_test[i], scale=3) for i in index], output_format="PNG",
             caption=[f"a {y_test[i]}" for i in index])
    if place.unusual:
        st.warning(f"This drawing is farther from every MNIST digit than 99% of test digits are "
                   f"({place.ratio:.1f}× the usual distance): it does not look like any digit the "
                   "network has seen. It still answers with a confident-looking probability, "
                   "because softmax always shares out 100% among the ten digits: confidence is "
                   "not certainty.")
    else:
        st.caption(f"Its distance to the nearest MNIST digit is {place.ratio:.0%} of the "
                   "distance that only 1% of test digits exceed: it looks like digits the "
                   "network knows.")


def inside_ui(active, mnist):
    model = active.model
    img28 = st.session_state.get("img28")
    if img28 is None:
        st.info("Draw a digit on the Draw tab: this tab shows what happens to it inside the "
                "network.")
        weights_ui(active)
        return
    probs = inference.predict(model, img28)
    digit = int(probs.argmax())
    st.subheader("Your drawing, layer by layer", help=glossary.CHART_HELP["activations"])
    for view in inference.layer_views(model, img28):
        st.markdown(f"**{view.title}**")
        if view.kind == "maps":
            st.image(figures.mosaic_png(view.values, cols=min(16, len(view.values)),
                                        scale=max(2, 56 // view.values.shape[1]), diverging=False))
        elif view.index == len(model.layers) - 1:
            st.bar_chart({"digit": [str(d) for d in range(10)], "score": view.values},
                         x="digit", y="score", height=180)
            st.caption("Softmax turns these ten scores into the probabilities on the Draw tab: "
                       "the highest score wins.")
        else:
            st.image(figures.strip_png(view.values))
    units, contributions, total = inference.top_units(model, img28, digit)
    st.subheader(f"Which units drive the answer “{digit}”")
    st.caption(f"Each unit of the last hidden layer adds its activation × its weight to the "
               f"score of {digit}; these eight add the most (all of them together: {total:.1f}).")
    st.bar_chart({"unit": [str(u) for u in units], "adds to the score": contributions},
                 x="unit", y="adds to the score", height=220, sort=False)  # largest first
    st.subheader("Which pixels decide", help=glossary.CHART_HELP["saliency"])
    grad = inference.smoothgrad(model, img28, digit)
    with st.container(horizontal=True, gap="medium"):
        st.image(figures.preview_png(img28), caption="What the network sees", width=196,
                 output_format="PNG")
        with st.container(width=196, gap=None):
            st.image(figures.saliency_png(img28, grad), width=196, output_format="PNG")
            st.image(figures.colour_bar_png("lowers the score", "raises it"), width=196)
    st.caption(f"SmoothGrad for “{digit}”: red, more ink here raises its score; blue, lowers "
               "it. The outline is your drawing.")
    map_ui(active, img28, mnist)
    weights_ui(active)


def weights_image(tiles, caption):
    """First-layer weights (see ``figures.weights_png``), at their own size when small."""
    png = figures.weights_png(tiles)
    st.image(png, width=figures.display_width(png), caption=caption)


def weights_ui(active):
    st.subheader("What the first layer looks for", help=glossary.CHART_HELP["weights"])
    tiles = cached("first weights", active.key, lambda: jobs.first_layer_weights(active.model, 64))
    k = tiles.shape[1]
    weights_image(tiles, "One picture per unit. Red: weights that excite the unit; blue: that "
                         "inhibit it." if k > 10 else
                  f"One {k}x{k} filter per square, slid over the whole image. Red: ink there "
                  f"excites the filter; blue: inhibits it. What each one picks out of your "
                  f"drawing shows in the first feature maps above.")


# -- the page ------------------------------------------------------------------------------------------

def main():
    st.set_page_config(page_title="Digit Lab", page_icon=":material/draw:", layout="wide")
    started, cpu = time.perf_counter(), time.thread_time()
    page_ui()
    log.debug("page run %.1f ms, cpu %.1f ms", 1000 * (time.perf_counter() - started),
              1000 * (time.thread_time() - cpu))


def page_ui():
    ss = st.session_state
    server_setup()
    st.html(PAGE_CSS)
    st.html(CANVAS_FIX, unsafe_allow_javascript=True)
    st.title("Digit Lab")
    st.container(key="intro").caption(INTRO)
    visitor = visitor_ui()
    session_defaults()
    ss["active"], message = session.collect_training(trainings(), visitor, ss["runs"],
                                                     ss["active"], ss_collected())
    if message:
        ss["train_message"] = message
    active = sidebar_ui(visitor)
    mnist, mnist_problem = mnist_or_none()
    tabs = dict(zip(TABS, st.tabs(list(TABS.values()), key="tab", on_change="rerun")))
    with tabs["draw"]:
        if tabs["draw"].open is not False:
            draw_ui(visitor, active, mnist)
    with tabs["retrain"]:
        if tabs["retrain"].open:
            retrain_ui(visitor, mnist, mnist_problem)
    with tabs["drawings"]:
        if tabs["drawings"].open:
            drawings_ui(visitor, active, mnist)
    with tabs["runs"]:
        if tabs["runs"].open:
            guard("the Runs tab")(runs_ui)()
    for name, section, fill, args in (("training", "the Training tab", training_ui, ()),
                                      ("evaluation", "the Evaluation tab", evaluation_ui,
                                       (mnist, mnist_problem)),
                                      ("inside", "the Inside tab", inside_ui, (mnist,))):
        with tabs[name]:
            if not tabs[name].open:
                continue
            if active is None:
                st.warning("No network is loaded.")
            else:
                guard(section)(fill)(active, *args)


if __name__ == "__main__":
    main()
