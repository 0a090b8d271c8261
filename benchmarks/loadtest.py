"""Load test: a classroom drawing at once while some teach the network and some
attack the server, on one server.

    python benchmarks/loadtest.py          # 20 drawers x 3 drawings, 2 teachers, 5 hostile
    python benchmarks/loadtest.py --drawers 3 --strokes 2 --teachers 1 --hostile 1 --timeout 80

Starts ``streamlit run app.py`` on a free loopback port (127.0.0.1 only;
nothing outside this machine is contacted) and drives it from one headless
Chromium (Debian's, ``shutil.which("chromium")``; Playwright's async API) with
one browser context per simulated person: their own cookie, so their own
visitor id and drawings.

* ``--drawers`` arrive one after another (``--ramp`` s apart); once everyone is
  in, they all draw at the same time with real mouse events, a "1" or a "7",
  ``--strokes`` drawings each, each after a pause of up to ``--think`` s: press
  the app's Clear button, draw, wait for the Prediction metric (the latency
  measured: mouse-up -> Prediction), then press "Right, it's a N", which stores
  the drawing in the drawings database, and wait for "Kept as a N".
* ``--teachers`` label ``--teach-drawings`` drawings each while the others
  arrive, then on the My drawings tab press Teach again and again until the
  drawers are done (each teaching fine-tunes the network for a few seconds, in
  that teacher's page run); every outcome message is kept.
* ``--trainers`` (default 0: teaching replaced it as the everyday training)
  open a shared link to a tiny network (``TRAIN_LINK``) and press Train on the
  Retrain tab again and again.
* ``--hostile`` sessions, once every drawer's first drawing is done (the
  baseline), do what a hostile visitor can within the server's limits, round
  after round until the drawers are done: through Streamlit's own websocket
  protocol (``StreamlitClient``), canvas messages just under and just over the
  2 MB ``server.maxMessageSize`` and with garbage stroke data, a 40-megapixel
  PNG as the canvas image, and bursts of rerun requests (``--fragment-burst``
  pen-up messages, ``--page-burst`` full-page reruns); through their page's
  upload box, the attack files of tests/test_uploads.py.

The load generator (Chromium with one page per person) runs on the same
machine as the server: on a small machine it takes most of the CPU, and the
latencies measure the machine as much as the app. The server's own time per
rerun (from its log) and its CPU seconds separate the two.

Reported (a markdown table, and JSON written atomically to
benchmarks/results/loadtest.json, ``--json`` to change): prediction latency
p50 / p95 / max over all drawings, and separately for drawings made before the
hostile sessions started (baseline) and while they were active; the server's
own time per Draw fragment rerun and per page run (wall and CPU, from the
app's DEBUG log); drawings labelled vs stored (read from the database file
after the run: every labelled drawing stored exactly once, none lost); any
"database is busy/locked" message a user saw; teaching outcomes; each hostile
action's answer time and outcome; the server's CPU seconds and peak RSS (from
/proc), and the machine's load.

Errors: an exception box or "something went wrong" on any page or in any
protocol answer, an error message on a drawer's or teacher's page, a traceback
in the server log, a drawing without a prediction, a labelled drawing not
stored once, a database busy message, a hostile message not answered. Each
wait has a limit and ``--timeout`` caps the whole run, after which the browser,
the protocol clients and the server (its process group) are shut down. Exit
status 0 when there were no errors, 1 otherwise, 2 without Chromium.
"""

import argparse
import asyncio
import collections
import datetime as _dt
import json
import math
import os
import platform
import random
import re
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))
from streamlit_server import (  # noqa: E402  (the server handling shared with the tests)
    CANVAS, CHROMIUM_ARGS, EXCEPTION, ONE, RUNNING, SERVER_START_TIMEOUT, SEVEN, Server,
    StreamlitClient, attack_files, canvas_drawing, canvas_value, json_widget, png_data_url_40mp)

DEFAULT_JSON = ROOT / "benchmarks" / "results" / "loadtest.json"

# Many pages in one browser: keep the ones in the background running at full speed.
LOADTEST_CHROMIUM_ARGS = [*CHROMIUM_ARGS, "--disable-renderer-backgrounding",
                          "--disable-background-timer-throttling",
                          "--disable-backgrounding-occluded-windows"]
VIEWPORT = {"width": 1100, "height": 900}

PREDICTION = '[data-testid="stMetric"]:has-text("Prediction")'
ALERT = '[data-testid="stAlert"]'
ERROR_BOX = '[data-testid="stAlertContentError"]'
UPLOAD_INPUT = '[data-testid="stFileUploaderDropzoneInput"]'
WENT_WRONG = "something went wrong"
DB_BUSY = re.compile(r"database is (busy|locked)|database.*busy", re.I)
TRAIN_LINK = "/?conv=8&hidden=16&n_images=2000&epochs=1"
MAX_MESSAGE = 2_000_000     # .streamlit/config.toml: server.maxMessageSize = 2 (MB)
PREDICTION_WAIT_S = 60      # mouse-up -> Prediction, at most
HOSTILE_WAIT_S = 60         # a hostile message's answer, at most

# One stroke each (canvas fractions, x across, y down), big and central like a person's.
DIGITS = {"1": [(0.52, 0.15), (0.50, 0.85)],
          "7": [(0.27, 0.2), (0.73, 0.2), (0.45, 0.84)]}


class HardTimeout(Exception):
    pass


# ------------------------------------------------------------------ shared state

class Run:
    """Shared state of one load-test run; times are seconds since ``t0``."""

    def __init__(self, args, server, deadline):
        self.args, self.server, self.url, self.deadline = args, server, server.url, deadline
        self.t0 = time.monotonic()
        self.errors = []
        self.drawings = []         # one dict per drawer's drawing
        self.labels = []           # one dict per "Right, it's a N" press (drawers and teachers)
        self.teachings = []        # one dict per Teach press
        self.trainings = []        # one dict per Train press
        self.hostile = []          # one dict per hostile action
        self.busy = []             # database busy/locked messages users saw
        self.pages = {}            # who -> page
        self.phase = {}            # who -> what it is doing (for error messages)
        self.visitors = {}         # who -> visitor id (from the cookie)
        self.load_times = []
        self.memory = []           # (t, server RSS MB, process group RSS MB)
        self.n_expected = args.drawers + args.teachers + args.trainers + args.hostile
        self.arrived_n = 0
        self.all_arrived = asyncio.Event()
        self.first_drawings = 0
        self.baseline_done = asyncio.Event()
        self.drawers_done = asyncio.Event()
        self.drawing_phase = [None, None]
        self.hostile_window = [None, None]

    def now(self):
        return round(time.monotonic() - self.t0, 3)

    def left(self, cap):
        """Seconds to wait for something: at most ``cap``, never past the hard deadline."""
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise HardTimeout()
        return min(cap, remaining)

    def error(self, who, message):
        self.errors.append(f"{who}: {message}")

    def arrived(self):
        self.arrived_n += 1
        if self.arrived_n >= self.n_expected:
            self.all_arrived.set()

    def first_drawing_done(self):
        self.first_drawings += 1
        if self.first_drawings >= self.args.drawers:
            self.baseline_done.set()


# ------------------------------------------------------------------ pages

async def alert_texts(page):
    return [t.strip() for t in await page.locator(ALERT).all_inner_texts()]


async def check_page(run, page, who, where, strict=True):
    """Record errors for what ``page`` shows: an exception box, "something went wrong",
    a database busy message; with ``strict`` (drawers, teachers, trainers) any error box."""
    try:
        for text in await page.locator(EXCEPTION).all_inner_texts():
            run.error(who, f"exception box {where}: {text[:300]!r}")
        for text in await alert_texts(page):
            if WENT_WRONG in text:
                run.error(who, f"{text[:200]!r} {where}")
            if DB_BUSY.search(text) and (who, text) not in {(b["who"], b["text"]) for b in run.busy}:
                run.busy.append({"who": who, "t": run.now(), "text": text[:200]})
                run.error(who, f"database busy message {where}: {text[:200]!r}")
        if strict:
            for text in await page.locator(ERROR_BOX).all_inner_texts():
                if WENT_WRONG not in text and not DB_BUSY.search(text):
                    run.error(who, f"error message {where}: {text[:200]!r}")
    except HardTimeout:
        raise
    except Exception as e:  # page closed or crashed
        run.error(who, f"page unreadable {where} ({type(e).__name__}: {e})")


async def wait_idle(run, page, cap=30.0, quiet=0.5):
    """Until no script run is in progress for ``quiet`` seconds (best effort)."""
    deadline = time.monotonic() + run.left(cap)
    calm_since = time.monotonic()
    running = page.locator(RUNNING)
    while time.monotonic() - calm_since < quiet:
        if await running.count():
            calm_since = time.monotonic()
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.1)
    return True


async def poll(run, cap, *conditions, every=0.15):
    """Poll the async ``conditions`` until one is true -> its index, or None after ``cap`` s."""
    deadline = time.monotonic() + run.left(cap)
    while time.monotonic() < deadline:
        for i, condition in enumerate(conditions):
            if await condition():
                return i
        await asyncio.sleep(every)
    run.left(1)  # the hard deadline, if that is what ended the wait
    return None


async def arrive(run, browser, who, slot, path="/"):
    """Wait for this session's turn (``slot`` arrivals apart), open the app, and count
    the arrival even when loading failed: a session that failed to load must not
    hold the others back."""
    await asyncio.sleep(slot * run.args.ramp)
    try:
        run.phase[who] = "loading the page"
        return await open_app(run, browser, who, path)
    finally:
        run.arrived()


async def open_tab(run, page, who, tab, button):
    """Open the tab named ``tab`` and return its button whose name ends in ``button``,
    once it is there and the page is idle."""
    run.phase[who] = f"opening the {tab} tab"
    await page.get_by_role("tab").filter(has_text=re.compile(rf"\b{tab}\b")).first.click(
        timeout=run.left(30) * 1000)
    found = page.get_by_role("button", name=re.compile(rf"{button}$")).first
    await found.wait_for(timeout=run.left(60) * 1000)
    await wait_idle(run, page)
    return found


async def open_app(run, browser, who, path="/"):
    context = await browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(30_000)
    page = await context.new_page()
    run.pages[who] = page
    opened = time.monotonic()
    await page.goto(run.url + path, wait_until="domcontentloaded", timeout=run.left(90) * 1000)
    await page.locator(CANVAS).first.wait_for(state="visible", timeout=run.left(120) * 1000)
    run.load_times.append(round(time.monotonic() - opened, 3))
    await wait_idle(run, page)
    await check_page(run, page, who, "after loading")
    return page


async def remember_visitor(run, page, who):
    from app_logic import identity

    for cookie in await page.context.cookies():
        if cookie["name"] == identity.COOKIE and identity.valid_secret(cookie["value"]):
            run.visitors[who] = identity.visitor_id(cookie["value"])


async def draw(page, points):
    """One stroke with the mouse, in small moves as a real drag makes them; returns
    the moment of mouse-up."""
    canvas = page.locator(CANVAS).first
    await canvas.scroll_into_view_if_needed()
    box = await canvas.bounding_box()
    at = lambda fx, fy: (box["x"] + fx * box["width"], box["y"] + fy * box["height"])  # noqa: E731
    await page.mouse.move(box["x"] + box["width"] / 2, max(0, box["y"] - 100))
    await page.mouse.move(*at(*points[0]))
    await page.mouse.down()
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        dist = math.hypot((x1 - x0) * box["width"], (y1 - y0) * box["height"])
        await page.mouse.move(*at(x1, y1), steps=max(2, int(dist / 8)))
    await page.mouse.up()
    return time.monotonic()


CANVAS_KEYS_JS = """() => [...document.querySelectorAll('[class*="st-key-canvas_"]')]
    .map(e => ((e.getAttribute('class') || '').match(/st-key-(canvas_\\d+)/) || [])[1]).filter(Boolean)"""


async def canvas_keys(page):
    return set(await page.evaluate(CANVAS_KEYS_JS))


async def clear(run, page):
    """Press the app's Clear button and wait for the new, empty canvas (Clear gives the
    canvas a new widget key): strokes drawn before it replaces the old one would be
    lost with it. Then wait until no Prediction is shown and the page is idle."""
    before = await canvas_keys(page)
    await page.get_by_role("button", name=re.compile(r"Clear$")).first.click(
        timeout=run.left(30) * 1000)

    async def replaced():
        keys = await canvas_keys(page)
        return bool(keys) and not keys & before

    if await poll(run, 60, replaced) is None:
        raise RuntimeError(f"Clear did not replace the canvas within 60 s (still {sorted(before)})")
    await page.locator(PREDICTION).first.wait_for(state="detached", timeout=run.left(60) * 1000)
    await wait_idle(run, page, cap=20)
    await page.locator(CANVAS).first.wait_for(state="visible", timeout=run.left(60) * 1000)


async def draw_and_label(run, page, who, digit, record):
    """Clear, draw ``digit``, wait for the Prediction, press "Right, it's a N" and wait
    for "Kept as a N". Fills ``record`` (latency, prediction) and adds to run.labels."""
    prediction = page.locator(PREDICTION).first
    await clear(run, page)
    released = await draw(page, DIGITS[digit])
    record["released_t"] = round(released - run.t0, 3)
    try:
        await prediction.wait_for(state="visible", timeout=run.left(PREDICTION_WAIT_S) * 1000)
    except HardTimeout:
        raise
    except Exception:
        await check_page(run, page, who, f"waiting for the prediction of a {digit}")
        run.error(who, f"no Prediction within {PREDICTION_WAIT_S} s after drawing a {digit}")
        return
    done = time.monotonic()
    record["latency_s"] = round(done - released, 4)
    record["predicted_t"] = round(done - run.t0, 3)
    shown = (await prediction.locator('[data-testid="stMetricValue"]').inner_text()).strip()
    record["prediction"] = shown
    label = {"who": who, "label": shown, "confirmed": False, "message": None}
    run.labels.append(label)
    await page.get_by_role("button", name=re.compile(rf"Right, it's a {re.escape(shown)}")).first.click(
        timeout=run.left(30) * 1000)
    answer = page.locator(ALERT).filter(has_text=re.compile(r"Kept as a \d|Not kept"))
    try:
        await answer.first.wait_for(timeout=run.left(60) * 1000)
        label["message"] = (await answer.first.inner_text()).strip()[:200]
        label["confirmed"] = "Kept as a" in label["message"]
    except HardTimeout:
        raise
    except Exception:
        run.error(who, f"no 'Kept as a {shown}' within 60 s after pressing Right")
    await check_page(run, page, who, f"after labelling a {shown}")
    if not label["confirmed"] and label["message"]:
        run.error(who, f"labelling failed: {label['message']!r}")


# ------------------------------------------------------------------ the people

async def drawer(run, browser, index, slot):
    who = f"drawer {index + 1}"
    first_done = False
    try:
        page = await arrive(run, browser, who, slot)
        run.phase[who] = "waiting for the others to arrive"
        await asyncio.wait_for(run.all_arrived.wait(), run.left(900))
        await remember_visitor(run, page, who)
        pauses = random.Random(index)
        for k in range(run.args.strokes):
            digit = "17"[(index + k) % 2]
            run.phase[who] = f"thinking before drawing {k + 1}"
            await asyncio.sleep(pauses.uniform(0, run.args.think))
            run.phase[who] = f"drawing {k + 1} (a {digit})"
            record = {"who": who, "drawing": k + 1, "digit": digit, "latency_s": None,
                      "prediction": None, "released_t": None, "predicted_t": None}
            run.drawings.append(record)
            await draw_and_label(run, page, who, digit, record)
            if not first_done:
                first_done = True
                run.first_drawing_done()
        await wait_idle(run, page, cap=20)
        await check_page(run, page, who, "at the end")
    finally:
        if not first_done:  # nor must one that failed before its first drawing
            run.first_drawing_done()


async def teacher(run, browser, index, slot):
    who = f"teacher {index + 1}"
    page = await arrive(run, browser, who, slot)
    await remember_visitor(run, page, who)
    for k in range(run.args.teach_drawings):
        run.phase[who] = f"labelling drawing {k + 1} before teaching"
        await draw_and_label(run, page, who, "17"[k % 2], {})
    run.phase[who] = "waiting for the others to arrive"
    await asyncio.wait_for(run.all_arrived.wait(), run.left(900))
    teach = await open_tab(run, page, who, "My drawings", "Teach")
    success = page.locator(ALERT).filter(has_text="Taught in")
    failure = page.locator(ERROR_BOX)
    progress = page.locator('[data-testid="stProgress"]')
    n = 0
    while not run.drawers_done.is_set() and n < 100:
        n += 1
        run.phase[who] = f"teaching ({n})"
        record = {"who": who, "n": n, "started_t": run.now(), "seconds": None, "outcome": None,
                  "message": None}
        run.teachings.append(record)
        had_message = await success.count() > 0
        if await poll(run, 60, teach.is_enabled) is None:
            record["outcome"] = "Teach stayed disabled"
            run.error(who, "the Teach button stayed disabled for 60 s")
            break
        start = time.monotonic()
        await teach.click(timeout=run.left(30) * 1000)

        async def started():
            return await progress.count() > 0 or (had_message and await success.count() == 0)

        await poll(run, 30, started)
        seen = await poll(run, 120, lambda: _count(success), lambda: _count(failure))
        record["seconds"] = round(time.monotonic() - start, 2)
        if seen is None:
            record["outcome"] = "no outcome message"
            run.error(who, f"no outcome message within 120 s of pressing Teach ({n})")
            break
        box = success if seen == 0 else failure
        record["message"] = (await box.first.inner_text()).strip()[:300]
        record["outcome"] = "success" if seen == 0 else "error"
        found = re.search(r"Taught in ([\d.]+) s", record["message"])
        record["teach_s"] = float(found.group(1)) if found else None
        await check_page(run, page, who, f"after teaching ({n})")
        await wait_idle(run, page, cap=20)
    await check_page(run, page, who, "at the end")


async def _count(locator):
    return await locator.count() > 0


async def trainer(run, browser, index, slot):
    who = f"trainer {index + 1}"
    page = await arrive(run, browser, who, slot, TRAIN_LINK)
    await asyncio.wait_for(run.all_arrived.wait(), run.left(900))
    train = await open_tab(run, page, who, "Retrain", "Train")
    finished = page.locator(ALERT).filter(has_text="Training finished")
    busy = page.locator(ALERT).filter(has_text="other trainings are running")
    stop = page.get_by_role("button", name=re.compile(r"Stop$"))
    n = 0
    while not run.drawers_done.is_set() and n < 50:
        n += 1
        run.phase[who] = f"training ({n})"
        record = {"who": who, "n": n, "seconds": None, "outcome": None}
        run.trainings.append(record)
        if await poll(run, 120, train.is_enabled) is None:
            record["outcome"] = "Train stayed disabled"
            run.error(who, "the Train button stayed disabled for 120 s")
            break
        start = time.monotonic()
        await train.click(timeout=run.left(30) * 1000)
        seen = await poll(run, 30, lambda: _count(stop), lambda: _count(busy))
        if seen == 1:
            record["outcome"] = "busy"
            await asyncio.sleep(1.0)
            continue
        if await poll(run, 180, lambda: _stopped(stop, finished)) is None:
            record["outcome"] = "did not finish"
            run.error(who, f"training run {n} did not finish within 180 s")
            break
        record["seconds"] = round(time.monotonic() - start, 2)
        record["outcome"] = "finished"
        await check_page(run, page, who, f"after training run {n}")
        await wait_idle(run, page, cap=20)
    await check_page(run, page, who, "at the end")


async def _stopped(stop, finished):
    return await stop.count() == 0 and await finished.count() > 0


# ------------------------------------------------------------------ hostile sessions

def hostile_canvas_messages():
    """``[(name, canvas value, expected)]``: expected "prediction", "refused" (the app
    says it could not read the drawing) or "closed" (the server closes the connection)."""
    rng_points = [[(20 + (37 * i + 11 * k) % 240, 20 + (53 * i + 7 * k) % 240) for k in range(100)]
                  for i in range(200)]
    return [
        ("canvas: 1.9 MB of garbage (under the limit)", canvas_value("A" * 1_900_000), "refused"),
        ("canvas: 2.1 MB (over the 2 MB limit)", canvas_value("A" * (MAX_MESSAGE + 100_000)), "closed"),
        ("canvas: a 40-megapixel PNG as its image",
         canvas_value(canvas_drawing(ONE), data=png_data_url_40mp()), "prediction"),
        ("canvas: 200 strokes of 100 points", canvas_value(canvas_drawing(rng_points, width=6)),
         "prediction"),
        ("canvas: 20,001 points", canvas_value(canvas_drawing(
            [[(20 + k % 240, 20 + (7 * k) % 240) for k in range(20_001)]], width=6)), "refused"),
        ("canvas: NaN, Infinity, 1e400", '{"drawing": {"raw": {"objects": [{"type": "path", '
         '"strokeWidth": 18, "path": [["M", NaN, 1e400], ["L", Infinity, 3]]}]}, "data": null}}',
         "refused"),
    ]


async def protocol_client(run):
    client = StreamlitClient(run.url)
    await client.connect(timeout=run.left(30))
    page = await client.run(timeout=run.left(HOSTILE_WAIT_S))
    if not page.status:
        raise RuntimeError(f"the hostile session's page did not load ({page.close_code})")
    return client


def judge(run, who, record, answer, expected):
    """Fill ``record`` from a protocol ``answer``; record an error if it is not what a
    hostile message must get."""
    record["seconds"] = round(answer.seconds, 3)
    record["close_code"] = answer.close_code
    record["prediction"] = answer.metric("Prediction")
    record["could_not_read"] = answer.shows("Could not read the drawing")
    for problem in answer.problems():
        run.error(who, f"{record['action']}: {problem[:300]}")
    if not answer.answered:
        run.error(who, f"{record['action']}: no answer within {HOSTILE_WAIT_S} s")
    elif expected == "closed" and answer.close_code != 1009:
        run.error(who, f"{record['action']}: not closed with 1009 (got {answer.status}, "
                       f"{answer.close_code})")
    elif expected == "refused" and not record["could_not_read"]:
        run.error(who, f"{record['action']}: no 'Could not read the drawing'")
    elif expected == "prediction" and record["prediction"] is None:
        run.error(who, f"{record['action']}: no prediction")
    record["ok"] = answer.answered and not answer.problems()


async def upload(run, page, who, name, data, record):
    """Choose ``name`` in the page's upload box; wait for the page's answer about it."""
    mime = "image/jpeg" if name.endswith(".jpg") else "image/png"
    start = time.monotonic()
    await page.locator(UPLOAD_INPUT).first.set_input_files(
        files=[{"name": name, "mimeType": mime, "buffer": data}], timeout=run.left(30) * 1000)
    stem = name.rsplit(".", 1)[0]

    async def answered():
        return any(stem in t for t in await alert_texts(page)) or \
            await page.get_by_text("Your photo (").count() > 0

    seen = await poll(run, HOSTILE_WAIT_S, answered)
    await wait_idle(run, page, cap=30)
    record["seconds"] = round(time.monotonic() - start, 3)
    texts = [t for t in await alert_texts(page) if stem in t]
    record["message"] = texts[0][:200] if texts else None
    record["ok"] = seen is not None
    if seen is None:
        run.error(who, f"{record['action']}: no answer within {HOSTILE_WAIT_S} s")
    await check_page(run, page, who, f"after uploading {name}", strict=False)


async def hostile(run, browser, index, slot):
    who = f"hostile {index + 1}"
    page = await arrive(run, browser, who, slot)
    messages = hostile_canvas_messages()
    files = attack_files()
    run.phase[who] = "opening the upload box and a protocol session"
    await page.get_by_text("Upload a photo instead").first.click(timeout=run.left(30) * 1000)
    await page.locator(UPLOAD_INPUT).first.wait_for(state="attached", timeout=run.left(30) * 1000)
    client = await protocol_client(run)
    run.phase[who] = "waiting for the baseline drawings"
    await asyncio.wait_for(run.all_arrived.wait(), run.left(900))
    if run.args.strokes > 1:
        await asyncio.wait_for(run.baseline_done.wait(), run.left(900))
    if run.drawers_done.is_set():
        await client.close()
        return
    start = run.now()
    if run.hostile_window[0] is None or start < run.hostile_window[0]:
        run.hostile_window[0] = start
    # One round: every kind of attack early on (a short drawing phase still sees them all).
    uploads = [("upload", f) for f in files.items()]
    bursts = [("fragment burst", run.args.fragment_burst), ("page burst", run.args.page_burst)]
    canvas = [("canvas", m) for m in messages]
    actions = [canvas[0], canvas[1], bursts[0], uploads[0], canvas[2], bursts[1], uploads[1],
               canvas[3], uploads[2], canvas[4], uploads[3], canvas[5]]
    try:
        rounds = 0
        while not run.drawers_done.is_set() and rounds < 100:
            rounds += 1
            for kind, arg in actions:
                if run.drawers_done.is_set():
                    break
                record = {"who": who, "round": rounds, "t": run.now()}
                run.hostile.append(record)
                if kind == "canvas":
                    name, value, expected = arg
                    record["action"] = name
                    run.phase[who] = f"sending {name}"
                    if client.closed:
                        client = await protocol_client(run)
                    answer = await client.send_canvas(value, timeout=run.left(HOSTILE_WAIT_S))
                    judge(run, who, record, answer, expected)
                elif kind == "upload":
                    name, data = arg
                    record["action"] = f"upload: {name}"
                    run.phase[who] = f"uploading {name}"
                    await upload(run, page, who, name, data, record)
                elif arg:
                    n = arg
                    record["action"] = f"{kind}: {n} rerun requests"
                    run.phase[who] = f"sending a {kind} of {n}"
                    if client.closed:
                        client = await protocol_client(run)
                    if kind == "fragment burst":
                        state = json_widget(client.canvas_id, canvas_value(canvas_drawing(SEVEN)))
                        answer = await client.burst(n, [state], client.canvas_fragment,
                                                    timeout=run.left(HOSTILE_WAIT_S))
                    else:
                        answer = await client.burst(n, timeout=run.left(HOSTILE_WAIT_S))
                    judge(run, who, record, answer, "any")
    finally:
        end = run.now()
        if run.hostile_window[1] is None or end > run.hostile_window[1]:
            run.hostile_window[1] = end
        await client.close()
    await check_page(run, page, who, "at the end", strict=False)


async def guarded(run, who, coro):
    try:
        await coro
    except HardTimeout:
        run.error(who, f"stopped by the hard --timeout while {run.phase.get(who, 'starting')}")
    except Exception as e:
        page = run.pages.get(who)
        if page is not None:
            await check_page(run, page, who, "after a failure", strict=False)
        first_line = str(e).splitlines()[0] if str(e) else ""
        run.error(who, f"{type(e).__name__} while {run.phase.get(who, 'starting')}: {first_line}")


async def sample_memory(run):
    while True:
        run.memory.append((run.now(), run.server.rss_mb(), run.server.group_rss_mb()))
        await asyncio.sleep(1.0)


async def drive(run, chromium):
    from playwright.async_api import async_playwright

    a = run.args
    sampler = asyncio.ensure_future(sample_memory(run))
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=chromium, headless=True,
                                          args=LOADTEST_CHROMIUM_ARGS)
        try:
            # Arrival order: teachers first (they label while the others come in),
            # trainers, drawers, hostile sessions; one every --ramp seconds.
            slots = iter(range(a.teachers + a.trainers + a.drawers + a.hostile))
            others = [guarded(run, f"teacher {i + 1}", teacher(run, browser, i, next(slots)))
                      for i in range(a.teachers)]
            others += [guarded(run, f"trainer {i + 1}", trainer(run, browser, i, next(slots)))
                       for i in range(a.trainers)]
            drawers = [guarded(run, f"drawer {i + 1}", drawer(run, browser, i, next(slots)))
                       for i in range(a.drawers)]
            others += [guarded(run, f"hostile {i + 1}", hostile(run, browser, i, next(slots)))
                       for i in range(a.hostile)]
            others = [asyncio.ensure_future(c) for c in others]

            async def phase():
                await run.all_arrived.wait()
                run.drawing_phase[0] = run.now()

            marker = asyncio.ensure_future(phase())
            await asyncio.gather(*drawers)
            run.drawers_done.set()
            run.drawing_phase[1] = run.now()
            marker.cancel()
            await asyncio.gather(*others)
            for who, page in run.pages.items():  # a final look at every page
                await check_page(run, page, who, "at the very end", strict=not who.startswith("hostile"))
                if who not in run.visitors:
                    await remember_visitor(run, page, who)
        finally:
            sampler.cancel()
            try:
                await asyncio.wait_for(browser.close(), 30)
            except Exception:
                pass


# ------------------------------------------------------------------ report

def percentile(values, q):
    values = sorted(v for v in values if v is not None)
    if not values:
        return None
    pos = (len(values) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return values[lo] + (values[hi] - values[lo]) * (pos - lo)


def stats(values):
    values = [v for v in values if v is not None]
    return {"n": len(values), "p50": percentile(values, 50), "p95": percentile(values, 95),
            "max": max(values, default=None)}


def machine_cpu():
    """(busy, total) CPU seconds of the whole machine so far (Linux /proc/stat), or None."""
    try:
        ticks = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = ticks[3] + ticks[4]  # idle + iowait
    hz = os.sysconf("SC_CLK_TCK")
    return (sum(ticks) - idle) / hz, sum(ticks) / hz


def load_average():
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def server_times(server_log):
    """Server-side milliseconds from the app's DEBUG log, wall clock and CPU (the
    script thread's own CPU): every Draw fragment run (what a pen stroke, a Clear or
    a label costs the server; a page run on the Draw tab contains one too) and every
    full page run."""
    pattern = re.compile(r" digitlab DEBUG (draw|page run) ([\d.]+) ms, cpu ([\d.]+) ms")
    found = {"draw": ([], []), "page run": ([], [])}
    for line in server_log.splitlines():
        m = pattern.search(line)
        if m:
            found[m.group(1)][0].append(float(m.group(2)))
            found[m.group(1)][1].append(float(m.group(3)))
    return {key: {"wall": stats(found[kind][0]), "cpu": stats(found[kind][1])}
            for key, kind in (("draw_fragment", "draw"), ("page_run", "page run"))}


def database_counts(db_path):
    """``{visitor: Counter(label -> rows)}`` from the drawings database, or an error string."""
    if not Path(db_path).exists():  # nothing was ever stored
        return {}
    try:
        conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=10)
        try:
            rows = conn.execute("SELECT visitor, label, COUNT(*) FROM drawings "
                                "GROUP BY visitor, label").fetchall()
        finally:
            conn.close()
    except sqlite3.Error as e:
        return f"{type(e).__name__}: {e}"
    counts = collections.defaultdict(collections.Counter)
    for visitor, label, n in rows:
        counts[visitor][str(label)] += n
    return counts


def check_storage(run, db):
    """Labelled (Right pressed, "Kept as a N" seen) vs stored, per visitor."""
    pressed = collections.defaultdict(collections.Counter)
    confirmed = collections.defaultdict(collections.Counter)
    for label in run.labels:
        pressed[label["who"]][label["label"]] += 1
        if label["confirmed"]:
            confirmed[label["who"]][label["label"]] += 1
    out = {"pressed": sum(map(sum, (c.values() for c in pressed.values()))),
           "confirmed": sum(map(sum, (c.values() for c in confirmed.values()))),
           "stored": None, "lost": 0, "duplicated": 0, "unknown_visitor_rows": 0}
    out["not_kept"] = out["pressed"] - out["confirmed"]  # the page said "Not kept" (or nothing)
    if isinstance(db, str):
        run.errors.append(f"database: cannot read it after the run ({db})")
        return out
    out["stored"] = sum(sum(c.values()) for c in db.values())
    known = set()
    for who in pressed:
        visitor = run.visitors.get(who)
        if visitor is None:
            run.error(who, "no visitor cookie, so its stored drawings cannot be counted")
            continue
        known.add(visitor)
        stored = db.get(visitor, collections.Counter())
        for label in set(pressed[who]) | set(stored):
            lost = confirmed[who][label] - stored[label]
            extra = stored[label] - pressed[who][label]
            if lost > 0:
                out["lost"] += lost
                run.error(who, f"{lost} drawing(s) labelled {label} were confirmed but not stored")
            if extra > 0:
                out["duplicated"] += extra
                run.error(who, f"{extra} more drawing(s) labelled {label} stored than labelled")
    out["unknown_visitor_rows"] = sum(sum(c.values()) for v, c in db.items() if v not in known)
    if out["unknown_visitor_rows"]:
        run.errors.append(f"database: {out['unknown_visitor_rows']} rows of visitors no session had")
    return out


def latency_groups(run):
    """Drawings before the hostile sessions started, while they were active, all."""
    start, end = run.hostile_window
    groups = {"all": [], "baseline": [], "hostile_active": []}
    for d in run.drawings:
        if d["latency_s"] is None:
            continue
        groups["all"].append(d["latency_s"])
        if start is None or d["predicted_t"] < start:
            groups["baseline"].append(d["latency_s"])
        elif d["released_t"] <= end:
            groups["hostile_active"].append(d["latency_s"])
    return {k: {**stats(v), "min": min(v, default=None)} for k, v in groups.items()}


def hostile_summary(run):
    by_action = collections.defaultdict(list)
    for h in run.hostile:
        by_action[h.get("action", "?")].append(h)
    out = {}
    for action, records in by_action.items():
        outcomes = collections.Counter()
        for r in records:
            if r.get("close_code"):
                outcomes[f"closed {r['close_code']}"] += 1
            elif r.get("could_not_read"):
                outcomes["could not read"] += 1
            elif r.get("prediction") is not None:
                outcomes["prediction"] += 1
            elif r.get("message"):
                outcomes[r["message"][:90]] += 1
            else:
                outcomes["answered" if r.get("ok") else "no answer"] += 1
        out[action] = {"n": len(records), "seconds": stats([r.get("seconds") for r in records]),
                       "outcomes": dict(outcomes)}
    return out


def summarise(run, args, wall, server_log, server_cpu, server_peak_mb, machine, db, load_before):
    for i in range(args.drawers):
        who = f"drawer {i + 1}"
        got = [d for d in run.drawings if d["who"] == who and d["latency_s"] is not None]
        if len(got) < args.strokes:
            run.error(who, f"reached a prediction on {len(got)} of {args.strokes} drawings")
    if "Traceback (most recent call last)" in server_log:
        run.errors.append("server: a traceback in the server log")
    storage = check_storage(run, db)
    run.errors = list(dict.fromkeys(run.errors))  # the same problem seen by several checks: once
    teach_ok = [t for t in run.teachings if t["outcome"] == "success"]
    finished = [t for t in run.trainings if t["outcome"] == "finished"]
    return {
        "when": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform(), "load_before": load_before,
                    "load_after": load_average()},
        "config": {"drawers": args.drawers, "strokes": args.strokes, "teachers": args.teachers,
                   "teach_drawings": args.teach_drawings, "trainers": args.trainers,
                   "hostile": args.hostile, "fragment_burst": args.fragment_burst,
                   "page_burst": args.page_burst, "ramp_s": args.ramp, "think_s": args.think,
                   "timeout_s": args.timeout},
        "wall_s": round(wall, 2),
        "drawing_phase_s": run.drawing_phase,
        "hostile_window_s": run.hostile_window,
        # CPU seconds: the server (and the upload workers it waited for), and the whole
        # machine (server + Chromium + anything else running) over the run.
        "cpu_s": {"server": None if server_cpu is None else round(server_cpu, 1),
                  "machine": None if machine is None else round(machine[0], 1),
                  "machine_busy": None if machine is None else round(machine[0] / machine[1], 3)},
        "memory_mb": {"server_peak_rss": server_peak_mb,
                      "server_rss_max_sampled": max((m[1] or 0 for m in run.memory), default=None),
                      "group_rss_max_sampled": max((m[2] or 0 for m in run.memory), default=None),
                      "samples": run.memory[::5]},
        "page_load_s": stats(run.load_times),
        "latency_s": latency_groups(run),
        "server_ms": server_times(server_log),
        "drawings": run.drawings,
        "storage": storage,
        "database_busy_messages": run.busy,
        "teaching": {"presses": len(run.teachings), "succeeded": len(teach_ok),
                     "failed": [t for t in run.teachings if t["outcome"] != "success"],
                     "seconds_click_to_message": stats([t["seconds"] for t in teach_ok]),
                     "teach_s": stats([t.get("teach_s") for t in teach_ok]),
                     "messages": [t["message"] for t in run.teachings][:10]},
        "training": {"runs_finished": len(finished),
                     "busy": sum(t["outcome"] == "busy" for t in run.trainings),
                     "seconds": stats([t["seconds"] for t in finished]), "runs": run.trainings},
        "hostile": {"actions": len(run.hostile), "by_action": hostile_summary(run)},
        "errors": run.errors,
        "ok": not run.errors,
    }


def fmt(x, unit="s", digits=2):
    return "—" if x is None else f"{x:.{digits}f} {unit}"


def print_report(r):
    c = r["config"]
    print(f"\nDigit Lab load test: {c['drawers']} drawers x {c['strokes']} drawings, "
          f"{c['teachers']} teachers, {c['trainers']} trainers, {c['hostile']} hostile sessions; "
          f"{r['machine']['cpus']} CPUs, {r['wall_s']:.0f} s; load average before "
          f"{r['machine']['load_before']}, after {r['machine']['load_after']}\n")
    print("| mouse-up -> Prediction | drawings | p50 | p95 | max |")
    print("|---|---:|---:|---:|---:|")
    names = {"all": "all drawings", "baseline": "baseline (before the hostile sessions)",
             "hostile_active": "while the hostile sessions were active"}
    for key, what in names.items():
        s = r["latency_s"][key]
        print(f"| {what} | {s['n']} | {fmt(s['p50'])} | {fmt(s['p95'])} | {fmt(s['max'])} |")
    print("\n| server time (app log) | runs | wall p50 | wall p95 | CPU p50 | CPU p95 |")
    print("|---|---:|---:|---:|---:|---:|")
    for key, what in (("draw_fragment", "Draw fragment run"), ("page_run", "page run")):
        wall, cpu = r["server_ms"][key]["wall"], r["server_ms"][key]["cpu"]
        print(f"| {what} | {wall['n']} | {fmt(wall['p50'], 'ms', 1)} | {fmt(wall['p95'], 'ms', 1)} | "
              f"{fmt(cpu['p50'], 'ms', 1)} | {fmt(cpu['p95'], 'ms', 1)} |")
    s, pl = r["storage"], r["page_load_s"]
    print(f"\npage load (open -> canvas ready, {c['ramp_s']:g} s between arrivals): "
          f"p50 {fmt(pl['p50'])}, max {fmt(pl['max'])} over {pl['n']} sessions")
    print(f"drawings labelled (Right pressed): {s['pressed']}, kept ('Kept as a N'): {s['confirmed']}, "
          f"not kept: {s['not_kept']}; stored in the database: {s['stored']}, kept but not stored: "
          f"{s['lost']}, stored twice: {s['duplicated']}; database busy messages seen: "
          f"{len(r['database_busy_messages'])}")
    t = r["teaching"]
    if c["teachers"]:
        print(f"teaching: {t['succeeded']} of {t['presses']} presses succeeded, click -> message "
              f"p50 {fmt(t['seconds_click_to_message']['p50'])}, max "
              f"{fmt(t['seconds_click_to_message']['max'])} (fine-tuning itself p50 {fmt(t['teach_s']['p50'])})")
    if c["trainers"]:
        tr = r["training"]
        print(f"retraining: {tr['runs_finished']} runs finished (p50 {fmt(tr['seconds']['p50'])}), "
              f"{tr['busy']} refused as busy")
    if r["hostile"]["actions"]:
        print(f"\n| hostile action ({r['hostile']['actions']} in all) | n | answer p50 | max | outcomes |")
        print("|---|---:|---:|---:|---|")
        for action, h in r["hostile"]["by_action"].items():
            outcomes = "; ".join(f"{k}: {v}" for k, v in h["outcomes"].items())
            print(f"| {action} | {h['n']} | {fmt(h['seconds']['p50'])} | {fmt(h['seconds']['max'])} | "
                  f"{outcomes} |")
    cpu, mem = r["cpu_s"], r["memory_mb"]
    busy = "—" if cpu["machine_busy"] is None else f"{cpu['machine_busy']:.0%}"
    print(f"\nserver: {fmt(cpu['server'], 'CPU s', 0)}, peak RSS {fmt(mem['server_peak_rss'], 'MB', 0)} "
          f"(with its upload workers, sampled: {fmt(mem['group_rss_max_sampled'], 'MB', 0)}); "
          f"machine: {fmt(cpu['machine'], 'CPU s', 0)}, {busy} busy on {r['machine']['cpus']} CPUs")
    if r["errors"]:
        print(f"\n{len(r['errors'])} ERROR(S):")
        for e in r["errors"][:50]:
            print("  -", e)
    else:
        print("\nno errors: no exception or error on any page, every drawing predicted and "
              "stored once, every hostile message answered")


def write_json(report, path):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(report, indent=1))
    os.replace(tmp, path)


# ------------------------------------------------------------------ main

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--drawers", "--sessions", type=int, default=20, help="people drawing (1-50)")
    p.add_argument("--strokes", type=int, default=3, help="drawings per drawer (1-20)")
    p.add_argument("--teachers", type=int, default=2, help="people teaching the network (0-5)")
    p.add_argument("--teach-drawings", type=int, default=2,
                   help="drawings each teacher labels before teaching (1-10)")
    p.add_argument("--trainers", type=int, default=0, help="people retraining (0-5)")
    p.add_argument("--hostile", type=int, default=5, help="hostile sessions (0-10)")
    p.add_argument("--fragment-burst", type=int, default=200,
                   help="pen-up messages a hostile session sends back to back, each round")
    p.add_argument("--page-burst", type=int, default=5,
                   help="full-page rerun requests a hostile session sends back to back, each "
                        "round (each costs the whole server about 0.1 s with Streamlit's "
                        "fastReruns: see tests/test_hostile_app.py)")
    p.add_argument("--ramp", type=float, default=1.0, help="seconds between two arrivals")
    p.add_argument("--think", type=float, default=1.0,
                   help="a drawer pauses a random 0..THINK seconds before each drawing (people "
                        "do not all lift the pen in the same millisecond)")
    p.add_argument("--timeout", type=float, default=480, help="hard cap on the whole run, seconds")
    p.add_argument("--app", default=str(ROOT / "app.py"))
    p.add_argument("--mnist", default=os.environ.get("MNIST_DATA"), help="MNIST folder ($MNIST_DATA)")
    p.add_argument("--json", default=str(DEFAULT_JSON), help="where to write the results")
    args = p.parse_args(argv)
    for name, lo, hi in (("drawers", 1, 50), ("strokes", 1, 20), ("teachers", 0, 5),
                         ("teach_drawings", 1, 10), ("trainers", 0, 5), ("hostile", 0, 10),
                         ("fragment_burst", 0, 10_000), ("page_burst", 0, 10_000)):
        if not lo <= getattr(args, name) <= hi:
            p.error(f"--{name.replace('_', '-')} must be in {lo}..{hi}")
    if not 0 <= args.ramp <= 10:
        p.error("--ramp must be in 0..10 seconds")
    if not 0 <= args.think <= 30:
        p.error("--think must be in 0..30 seconds")
    if not 10 <= args.timeout <= 3600:
        p.error("--timeout must be in 10..3600 seconds")
    return args


def main(argv=None):
    args = parse_args(argv)
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        print("loadtest: Chromium not found (apt-get install chromium)", file=sys.stderr)
        return 2
    start = time.monotonic()
    deadline = start + args.timeout
    before, load_before = machine_cpu(), load_average()
    with tempfile.TemporaryDirectory(prefix="digitlab-loadtest-") as work:
        server = Server(args.app, work, args.mnist).start()
        run = Run(args, server, deadline)
        peak_mb = None
        try:
            try:
                server.wait_healthy(min(SERVER_START_TIMEOUT, args.timeout))
            except RuntimeError as e:
                run.errors.append(f"server: {e}")
            else:
                try:
                    # The hard cap, with a little room for the final checks and browser shutdown.
                    asyncio.run(asyncio.wait_for(drive(run, chromium), args.timeout + 30))
                except asyncio.TimeoutError:
                    run.errors.append("run: killed by the hard --timeout")
        finally:
            log = server.log()
            peak_mb = server.peak_rss_mb()
            server_cpu = server.stop()
        after = machine_cpu()
        machine = (None if before is None or after is None
                   else (after[0] - before[0], after[1] - before[1]))
        db = database_counts(Path(work) / "drawings.sqlite3")
        report = summarise(run, args, time.monotonic() - start, log, server_cpu,
                           None if peak_mb is None else round(peak_mb), machine, db, load_before)
        if report["errors"]:
            report["server_log_tail"] = log.splitlines()[-60:]
    print_report(report)
    write_json(report, args.json)
    print(f"\nwrote {args.json}")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
