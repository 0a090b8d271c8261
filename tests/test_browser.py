"""End-to-end tests: the real Streamlit app (app.py) in headless Chromium.

One ``streamlit run app.py`` server per module and one browser; every test
opens its own page (a fresh Streamlit session). The canvas is drawn on with
real mouse events, exactly as a person would, and every step checks that no
Streamlit exception box (``data-testid="stException"``) is on the page.

The run also refreshes the README screenshots in docs/screenshots/
(draw.png, training.png, evaluation.png, retrain.png, inside.png).

streamlit-drawable-canvas 0.13 is a Streamlit *v2* component: it is not in an
iframe but in an open shadow root inside the element container
``.st-key-canvas``; Playwright's CSS engine pierces open shadow roots, so
``.st-key-canvas canvas.upper-canvas`` (fabric.js's event layer) finds it.

Needs Chromium (``shutil.which("chromium")``) and MNIST; off CI a missing
one skips, under ``CI=true`` it fails (see conftest.require).
"""
import math
import os
import re
import tempfile
import time

import pytest

from conftest import ROOT, require
from streamlit_server import (CANVAS, CHROMIUM_ARGS, EXCEPTION, RESET_CANVAS, RUNNING,
                              SERVER_START_TIMEOUT, Server)

pytestmark = pytest.mark.browser

APP = ROOT / "app.py"
LAB = ROOT / "app_logic"
SCREENSHOTS = ROOT / "docs" / "screenshots"
VIEWPORT = {"width": 1400, "height": 1000}
# Generous bounds: on a loaded 2-core CI box the first (cold) script run alone
# can take half a minute; on an idle one the whole module takes about 65 s.
# (SERVER_START_TIMEOUT, until /_stcore/health answers "ok": streamlit_server.py.)
FIRST_RUN_TIMEOUT = 90     # s, for the first page load's script run (cold caches)
PREDICTION_TIMEOUT = 30    # s, from mouse-up to the Prediction metric
TRAIN_TIMEOUT = 90         # s, from clicking Train to "Training finished" (2000 images, 3 epochs)

# Hidden in screenshots only: the developer toolbar ("Deploy", menu). Not
# hidden with --client.toolbarMode=minimal, which would also hide the
# "Running..." status icon that wait_idle() relies on.
SCREENSHOT_CSS = '[data-testid="stToolbar"], [data-testid="stAppDeployButton"] { visibility: hidden !important; }'

RETRAIN_WIDGETS = ("Hidden layers", "Width of layer 1", "Activation", "Optimizer", "Learning rate",
                   "Momentum", "Batch size", "Epochs", "L2 weight decay", "Dropout",
                   "Training images", "Seed")

# Strokes in canvas fractions (0..1 across, 0..1 down), drawn large and
# roughly centred, the way a person fills a 280x280 box.
ELLIPSE = [(0.5 + 0.22 * math.sin(2 * math.pi * i / 40), 0.5 - 0.33 * math.cos(2 * math.pi * i / 40))
           for i in range(41)]
STROKES = {
    1: [[(0.44, 0.27), (0.53, 0.17)],            # small flag
        [(0.53, 0.17), (0.53, 0.83)]],           # vertical line
    0: [ELLIPSE + ELLIPSE[1:4]],                 # closes with a little overlap
    7: [[(0.27, 0.2), (0.73, 0.2), (0.45, 0.84)]],  # top bar, then the diagonal
}


# --------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def app_server(chromium_path, mnist_dir, tmp_path_factory):
    require(APP.exists(), f"{APP} not found")
    server = Server(APP, tmp_path_factory.mktemp("browser_app"), mnist=mnist_dir).start()
    try:
        try:
            server.wait_healthy(SERVER_START_TIMEOUT)
        except RuntimeError as e:
            pytest.fail(str(e))
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser(chromium_path):
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        require(False, "playwright not installed (pip install playwright)")

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium_path, headless=True, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser, app_server):
    """A fresh page (and Streamlit session) on the app, loaded and idle."""
    context = browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(15_000)
    pg = context.new_page()
    pg.app = app_server
    pg.goto(app_server.url, wait_until="domcontentloaded")
    tab_button(pg, "Draw").wait_for(timeout=FIRST_RUN_TIMEOUT * 1000)
    wait_idle(pg, timeout=FIRST_RUN_TIMEOUT, quiet=1.0)
    check_no_exception(pg, "after loading the app")
    try:
        yield pg
    finally:
        context.close()


# ---------------------------------------------------------------- helpers

def fail(page, message):
    pytest.fail(f"{message}\n--- streamlit log (tail) ---\n{page.app.log_tail()}", pytrace=False)


def check_no_exception(page, where):
    boxes = page.locator(EXCEPTION)
    if boxes.count():
        fail(page, f"st.exception box {where}:\n{' | '.join(boxes.all_inner_texts())[:3000]}")
    guarded = page.locator('[data-testid="stAlert"]', has_text="something went wrong")
    if guarded.count():
        fail(page, f"app error message {where}:\n{' | '.join(guarded.all_inner_texts())[:3000]}")
    log = page.app.log()
    # An uncaught exception, or one that app.py's guard() caught and logged:
    # either way the traceback names the script or the lab package.
    if "Uncaught app execution" in log or f'File "{APP}"' in log or f'File "{LAB}' in log:
        fail(page, f"traceback in the server log {where}")


def wait_idle(page, timeout=30, quiet=0.6):
    """Wait until no script (or fragment) run is in progress: Streamlit's
    status widget shows a "Running..." icon only while one is, but only
    after a short delay, so require it to stay away for `quiet` seconds."""
    deadline = time.monotonic() + timeout
    running = page.locator(RUNNING)
    calm_since = time.monotonic()
    while time.monotonic() - calm_since < quiet:
        if running.count():
            calm_since = time.monotonic()
            if calm_since > deadline:
                fail(page, f"app still running after {timeout}s")
        page.wait_for_timeout(100)


def wait_for(page, locator, what, timeout=30):
    """Wait until `locator` matches at least one element; fail with `what`."""
    deadline = time.monotonic() + timeout
    while not locator.count():
        check_no_exception(page, f"while waiting for {what}")
        if time.monotonic() > deadline:
            fail(page, f"no {what} after {timeout}s")
        page.wait_for_timeout(150)
    return locator


def tab_button(page, word):
    return page.get_by_role("tab", name=re.compile(word))


def open_tab(page, word):
    button = tab_button(page, word)
    button.click()
    if button.get_attribute("aria-selected") != "true":
        fail(page, f"tab {word!r} did not open")
    wait_idle(page)
    check_no_exception(page, f"on the {word!r} tab")
    panel_id = button.get_attribute("aria-controls")
    if panel_id:
        return page.locator(f'[id="{panel_id}"]')
    return page.locator('[data-testid="stTabPanel"]:visible').first


def canvas_box(page):
    canvas = page.locator(CANVAS)
    canvas.wait_for(state="visible", timeout=20_000)
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    assert box and box["width"] > 100 and box["height"] > 100, box
    return box


def draw(page, strokes):
    """Draw each stroke (a polyline in canvas fractions) with the mouse,
    interpolating small moves the way a real drag produces them."""
    box = canvas_box(page)

    def at(fx, fy):
        return box["x"] + fx * box["width"], box["y"] + fy * box["height"]

    for stroke in strokes:
        page.mouse.move(*at(*stroke[0]))
        page.mouse.down()
        for (x0, y0), (x1, y1) in zip(stroke, stroke[1:]):
            dist = math.hypot((x1 - x0) * box["width"], (y1 - y0) * box["height"])
            page.mouse.move(*at(x1, y1), steps=max(1, int(dist / 6)))
        page.mouse.up()
        page.wait_for_timeout(100)


def metric_value(scope, label):
    """The value of the st.metric labelled `label` under `scope` (a page or a
    locator), or None when there is none. Never waits: the element may be
    replaced by a rerun at any moment."""
    label_re = re.compile(rf"^\s*{re.escape(label)}\s*$")
    page = getattr(scope, "page", scope)  # a Locator knows its page
    texts = scope.locator('[data-testid="stMetric"]').filter(
        has=page.locator('[data-testid="stMetricLabel"]', has_text=label_re)
    ).locator('[data-testid="stMetricValue"]').all_inner_texts()
    return texts[0].strip() if texts else None


def prediction(page):
    """The Prediction metric's value, or None when there is no such metric."""
    return metric_value(page, "Prediction")


def wait_prediction(page, expected, timeout=PREDICTION_TIMEOUT):
    deadline = time.monotonic() + timeout
    seen = None
    while time.monotonic() < deadline:
        check_no_exception(page, "while waiting for the prediction")
        seen = prediction(page)
        if seen == str(expected):
            return seen
        page.wait_for_timeout(250)
    fail(page, f"Prediction shows {seen!r}, expected {expected!r} after {timeout}s")


def reset_canvas(page):
    page.get_by_role("button", name=RESET_CANVAS).click()
    deadline = time.monotonic() + PREDICTION_TIMEOUT
    while prediction(page) is not None:
        if time.monotonic() > deadline:
            fail(page, "the Prediction metric stayed after resetting the canvas")
        page.wait_for_timeout(200)
    wait_idle(page)


def widget(page, label):
    """The element container of the widget labelled `label` (exact text)."""
    return page.locator('[data-testid="stElementContainer"]').filter(
        has=page.locator('[data-testid="stWidgetLabel"]', has_text=re.compile(rf"^\s*{re.escape(label)}\s*$")))


def set_to_minimum(page, label, steps_up=0):
    """Move a slider / select_slider to its first value with the keyboard
    (Home), then ``steps_up`` steps up (ArrowRight), or type the minimum into a
    number_input. Returns the shown value."""
    container = widget(page, label)
    if not container.count():
        fail(page, f"no widget labelled {label!r}")
    slider = container.first.get_by_role("slider")
    if slider.count():
        slider.first.focus()
        page.keyboard.press("Home")
        page.keyboard.press("ArrowLeft")
        for _ in range(steps_up):
            page.keyboard.press("ArrowRight")
        wait_idle(page)
        return slider.first.get_attribute("aria-valuetext")
    number = container.first.locator("input[type=number]")
    if number.count():
        low = number.first.get_attribute("min")
        assert low is not None, f"number_input {label!r} has no min"
        number.first.fill(low)
        number.first.press("Enter")
        wait_idle(page)
        return number.first.input_value()
    fail(page, f"widget {label!r} is neither a slider nor a number input")


def screenshot(page, name):
    """Full-page screenshot to docs/screenshots/<name>, written atomically.
    Streamlit scrolls inside its own container, so the viewport is grown to
    the content height for the shot."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    height = page.evaluate("""() => {
        const els = [document.documentElement, document.body,
                     document.querySelector('[data-testid="stMain"]'),
                     document.querySelector('[data-testid="stAppViewContainer"]'),
                     document.querySelector('[data-testid="stMainBlockContainer"]')];
        return Math.max(...els.filter(Boolean).map(e => e.scrollHeight));
    }""")
    height = min(max(int(height) + 40, VIEWPORT["height"]), 6000)
    page.add_style_tag(content=SCREENSHOT_CSS)  # gone with the next page load
    page.set_viewport_size({"width": VIEWPORT["width"], "height": height})
    page.wait_for_timeout(400)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp.png", dir=SCREENSHOTS)  # git-ignored
    os.close(fd)
    try:
        page.screenshot(path=tmp, full_page=True)
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600
        os.replace(tmp, SCREENSHOTS / name)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
        page.set_viewport_size(VIEWPORT)


# ------------------------------------------------------------------ tests

def test_blank_canvas_shows_hint_and_no_prediction(page):
    panel = open_tab(page, "Draw")
    canvas_box(page)
    wait_for(page, panel.locator('[data-testid="stAlert"]', has_text="Draw a digit"),
             "'Draw a digit ...' hint on a blank canvas")
    assert prediction(page) is None, "a Prediction metric is shown for a blank canvas"
    assert widget(page, "Stroke width").get_by_role("slider").count() == 1, "no 'Stroke width' slider"
    inside = open_tab(page, "Inside")
    wait_for(page, inside.locator("img"), "first-layer weight image on the Inside tab")
    wait_for(page, inside.locator('[data-testid="stAlert"]'), "hint about drawing a digit on the Inside tab")
    check_no_exception(page, "at the end")


@pytest.mark.parametrize("digit", [1, 0, 7])
def test_drawn_digit_is_recognised(page, digit):
    draw(page, STROKES[digit])
    wait_prediction(page, digit)
    wait_for(page, page.locator('[data-testid="stMetric"]', has_text="Confidence"),
             "Confidence metric next to the Prediction")
    value = metric_value(page, "Confidence")
    assert re.fullmatch(r"\d{1,3}(\.\d+)?\s*%", value), f"Confidence shows {value!r}"
    wait_idle(page)
    check_no_exception(page, f"after drawing a {digit}")
    if digit == 7:
        screenshot(page, "draw.png")
    reset_canvas(page)
    wait_for(page, page.locator('[data-testid="stAlert"]', has_text="Draw a digit"),
             "'Draw a digit ...' hint after resetting the canvas")
    check_no_exception(page, "after resetting the canvas")


def draw_log(page, kind):
    """The app's timing lines ("page run" or "draw") in the server log, in order."""
    marker = f" digitlab DEBUG {kind} "
    return [line.split(marker, 1)[1] for line in page.app.log().splitlines() if marker in line]


def test_strokes_rerun_only_the_draw_fragment(page):
    """Each stroke reruns the Draw tab's fragment, never the whole page, and the
    server's work for it (logged by the app) is a few milliseconds."""
    page_runs, draws = len(draw_log(page, "page run")), len(draw_log(page, "draw"))
    draw(page, STROKES[1])
    wait_prediction(page, 1)
    wait_idle(page)
    check_no_exception(page, "after drawing")
    assert len(draw_log(page, "page run")) == page_runs, "a stroke reran the whole page"
    reruns = draw_log(page, "draw")[draws:]
    assert reruns and all(r.endswith("(fragment rerun)") for r in reruns), reruns
    # CPU time of the script thread for one rerun ("draw 9.1 ms, cpu 6.2 ms (...)"):
    # typically 5-10 ms; the bound is loose because Chromium shares the 2 cores.
    assert min(float(r.split()[3]) for r in reruns) < 100, reruns
    # The Draw tab explains its answer itself (saliency next to the input).
    draw_panel = page.locator('[data-testid="stTabPanel"]:visible').first
    wait_for(page, draw_panel.get_by_text("Why “1”?"), "the 'Why “1”?' saliency caption")


def test_every_tab_renders(page):
    draw(page, STROKES[0])   # so that the Inside tab has a saliency map to show
    wait_prediction(page, 0)

    panel = open_tab(page, "Training")
    wait_for(page, panel.locator("img"), "training-curves image on the Training tab")
    wait_for(page, panel.get_by_text(re.compile(r"784")), "architecture (784 inputs) on the Training tab")
    wait_idle(page)
    screenshot(page, "training.png")

    panel = open_tab(page, "Evaluation")
    wait_for(page, panel.locator('[data-testid="stMetric"]', has_text="Test accuracy"), "'Test accuracy' metric")
    value = metric_value(panel, "Test accuracy")
    assert re.search(r"\d", value), f"Test accuracy shows {value!r}"
    wait_for(page, panel.locator('[data-testid="stDataFrame"], [data-testid="stTable"]'), "per-class table")
    wait_for(page, panel.locator("img"), "confusion-matrix image")
    wait_idle(page)
    screenshot(page, "evaluation.png")

    panel = open_tab(page, "Retrain")
    wait_for(page, panel.get_by_role("button", name="Train", exact=True), "Train button")
    for label in RETRAIN_WIDGETS:
        wait_for(page, widget(page, label), f"widget labelled {label!r}")
    assert panel.get_by_role("slider").count() >= 3, "expected at least three sliders"

    # Opening the tab reruns the page (st.tabs(on_change="rerun")): the Inside tab,
    # outside the Draw fragment, explains the current drawing.
    panel = open_tab(page, "Inside")
    wait_for(page, panel.locator("img").nth(1), "weight images and a saliency map (two images)")
    wait_for(page, panel.get_by_text("score of “0”"), "a saliency caption about the drawn 0")
    wait_idle(page)
    screenshot(page, "inside.png")

    open_tab(page, "Draw")
    assert prediction(page) == "0", "the drawing was lost while switching tabs"
    check_no_exception(page, "at the end")


def test_tiny_retraining(page):
    """2,000 images (500 + 3 steps of 500) for 3 epochs: a few seconds, and a
    network that has learned something (about 80%), for retrain.png."""
    panel = open_tab(page, "Retrain")
    images = set_to_minimum(page, "Training images", steps_up=3)
    assert images == "2000", f"Training images slider shows {images!r}"
    epochs = set_to_minimum(page, "Epochs", steps_up=2)
    assert epochs == "3", f"Epochs slider shows {epochs!r}"
    check_no_exception(page, "after setting the sliders")

    panel.get_by_role("button", name="Train", exact=True).click()
    deadline = time.monotonic() + TRAIN_TIMEOUT
    finished = panel.locator('[data-testid="stAlert"], [data-testid="stMarkdownContainer"]',
                             has_text="Training finished")
    saw_progress = False
    while not finished.count():
        saw_progress = saw_progress or panel.locator('[data-testid="stProgress"]').count() > 0
        check_no_exception(page, "during training")
        if time.monotonic() > deadline:
            fail(page, f"no 'Training finished' within {TRAIN_TIMEOUT}s")
        page.wait_for_timeout(100)
    assert saw_progress, "no progress bar was shown while training"
    message = " ".join(finished.all_inner_texts())
    assert re.search(r"after 3 epochs\b", message), f"expected a 3-epoch run: {message!r}"
    wait_idle(page)
    wait_for(page, panel.locator("img"), "training curves after training")
    check_no_exception(page, "after training")
    screenshot(page, "retrain.png")
    active = page.locator('[data-testid="stSidebar"]').get_by_role("combobox", name="Active network")
    wait_for(page, active, "'Active network' selectbox in the sidebar")
    assert active.first.input_value() == "this session's retrained network", \
        f"sidebar's Active network is {active.first.input_value()!r} after training"

    # The retrained network is now this session's model: the app still works.
    open_tab(page, "Draw")
    draw(page, STROKES[1])
    wait_for(page, page.locator('[data-testid="stMetric"]', has_text="Prediction"),
             "Prediction with the retrained network")
    wait_idle(page)
    check_no_exception(page, "drawing with the retrained network")
