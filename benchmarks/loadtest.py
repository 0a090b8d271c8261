"""Load test: many people drawing at once while others retrain, on one server.

    python benchmarks/loadtest.py                                  # 20 drawers, 3 strokes, 2 trainers
    python benchmarks/loadtest.py --sessions 3 --strokes 1 --trainers 1 --timeout 90   # the test

Starts ``streamlit run app.py`` on a free loopback port (127.0.0.1 only;
nothing outside this machine is contacted), then drives it from one headless
Chromium (Debian's, at ``shutil.which("chromium")``; Playwright's async API,
no browser download) with one browser context, hence one Streamlit session,
per simulated visitor:

* ``--sessions`` drawers: they arrive one after another (``--ramp`` seconds
  apart, as visitors do; the page-load time is reported too), and once all
  have the page open they all draw at the same time: a digit ("1" or "7",
  alternating) on the canvas with real mouse events, ``--strokes`` times each;
  before each drawing the canvas is cleared with its bin button. For every
  drawing the time from mouse-up to the "Prediction" metric appearing is
  measured.
* ``--trainers`` trainers, at the same time: each opens the Retrain tab, sets
  the smallest settings (1 epoch, 500 training images) and, once the drawers
  are in, clicks "Train" again and again until the drawers are done (the app allows two trainings at
  once; a third is told to wait, which counts as "busy", not as an error).

Every step checks that no page shows a Streamlit exception box
(``data-testid="stException"``) or an ``st.error`` box; at the end every page
is checked again, the server log is searched for tracebacks, and every drawer
must have reached a prediction on every drawing. The run stops by itself:
each wait has a limit and ``--timeout`` (default 240 s) caps the whole run,
after which the browser and the server (its whole process group) are shut down.

Prints a table (latency p50 / p95 / max over all drawings, per-session
results, training runs, and the server's own time per Draw fragment rerun and
per page run, from the app's DEBUG log) and writes JSON to benchmarks/results/loadtest.json
(``--json`` to change). Exit status 0 when there were no errors, 1 otherwise.
"""

import argparse
import asyncio
import datetime as _dt
import json
import math
import os
import platform
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from streamlit_server import (  # noqa: E402  (the server handling shared with tests/test_browser.py)
    CANVAS, CHROMIUM_ARGS, EXCEPTION, RESET_CANVAS, RUNNING, SERVER_START_TIMEOUT, Server)

DEFAULT_JSON = ROOT / "benchmarks" / "results" / "loadtest.json"

# Many pages in one browser: keep the ones in the background running at full speed.
LOADTEST_CHROMIUM_ARGS = [*CHROMIUM_ARGS, "--disable-renderer-backgrounding",
                          "--disable-background-timer-throttling",
                          "--disable-backgrounding-occluded-windows"]
VIEWPORT = {"width": 1100, "height": 900}

PREDICTION = '[data-testid="stMetric"]:has-text("Prediction")'
ERROR_BOX = '[data-testid="stAlertContentError"]'

# One stroke each (canvas fractions, x across, y down), big and central like a person's.
DIGITS = {"1": [(0.52, 0.15), (0.50, 0.85)],
          "7": [(0.27, 0.2), (0.73, 0.2), (0.45, 0.84)]}


class HardTimeout(Exception):
    pass


# ------------------------------------------------------------------ sessions

class Run:
    """Shared state of one load-test run."""

    def __init__(self, args, url, deadline):
        self.args, self.url, self.deadline = args, url, deadline
        self.errors = []
        self.strokes = []          # one dict per drawing
        self.trainings = []        # one dict per training run
        self.drawers_done = asyncio.Event()
        self.all_loaded = asyncio.Event()
        self.loaded = 0
        self.load_times = []       # seconds from opening a page to a usable canvas
        self.pages = {}
        self.phase = {}            # who -> what it is doing (for error messages)

    def left(self, cap):
        """Seconds to wait for something: at most ``cap``, never past the hard deadline."""
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise HardTimeout()
        return min(cap, remaining)

    def error(self, who, message):
        self.errors.append(f"{who}: {message}")


async def check_page(run, page, who, where, allow_error_box=False):
    """Record an error if the page shows an exception (or an st.error box)."""
    try:
        n_exc = await page.locator(EXCEPTION).count()
        if n_exc:
            text = (await page.locator(EXCEPTION).first.inner_text())[:500]
            run.error(who, f"exception box {where}: {text!r}")
        if not allow_error_box and await page.locator(ERROR_BOX).count():
            text = (await page.locator(ERROR_BOX).first.inner_text())[:300]
            run.error(who, f"st.error box {where}: {text!r}")
        return not n_exc
    except Exception as e:  # page closed or crashed
        run.error(who, f"page unreadable {where} ({type(e).__name__}: {e})")
        return False


async def await_or_error(run, page, who, where, message, *steps):
    """Await ``steps`` (each a function returning an awaitable) one after another. On a
    failure other than the hard timeout: check the page, record ``message``, return False."""
    try:
        for step in steps:
            await step()
    except HardTimeout:
        raise
    except Exception:
        await check_page(run, page, who, where)
        run.error(who, message)
        return False
    return True


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


async def open_app(run, browser, who):
    context = await browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(30_000)
    page = await context.new_page()
    run.pages[who] = page
    await page.goto(run.url, wait_until="domcontentloaded", timeout=run.left(90) * 1000)
    return page


async def draw(page, points):
    canvas = page.locator(CANVAS)
    await canvas.scroll_into_view_if_needed()
    box = await canvas.bounding_box()
    at = lambda fx, fy: (box["x"] + fx * box["width"], box["y"] + fy * box["height"])  # noqa: E731
    await page.mouse.move(*at(*points[0]))
    await page.mouse.down()
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        dist = math.hypot((x1 - x0) * box["width"], (y1 - y0) * box["height"])
        await page.mouse.move(*at(x1, y1), steps=max(2, int(dist / 8)))
    await page.mouse.up()
    return time.monotonic()


def arrived(run):
    run.loaded += 1
    if run.loaded >= run.args.sessions:
        run.all_loaded.set()


async def drawer(run, browser, index):
    who = f"drawer {index + 1}"
    await asyncio.sleep(index * run.args.ramp)
    try:
        run.phase[who] = "loading the page"
        opened = time.monotonic()
        page = await open_app(run, browser, who)
        await page.locator(CANVAS).wait_for(state="visible", timeout=run.left(120) * 1000)
        run.load_times.append(round(time.monotonic() - opened, 3))
        await wait_idle(run, page)
        await check_page(run, page, who, "after loading")
    finally:
        arrived(run)  # a session that failed to load must not hold the others back
    run.phase[who] = "waiting for the other sessions to load"
    await asyncio.wait_for(run.all_loaded.wait(), run.left(600))
    prediction = page.locator(PREDICTION)
    for k in range(run.args.strokes):
        digit = "17"[(index + k) % 2]
        if await prediction.count():  # clear the previous drawing first
            run.phase[who] = f"clearing the canvas before drawing {k + 1}"
            await page.get_by_role("button", name=RESET_CANVAS).click(timeout=run.left(30) * 1000)
            await prediction.first.wait_for(state="detached", timeout=run.left(60) * 1000)
            await wait_idle(run, page, cap=20)
        run.phase[who] = f"drawing {k + 1}"
        record = {"session": index + 1, "stroke": k + 1, "digit": digit, "latency_s": None,
                  "prediction": None}
        run.strokes.append(record)
        released = await draw(page, DIGITS[digit])
        if not await await_or_error(
                run, page, who, f"waiting for the prediction of drawing {k + 1}",
                f"no Prediction within 60 s after drawing {k + 1} (a {digit})",
                lambda: prediction.first.wait_for(state="visible", timeout=run.left(60) * 1000)):
            continue
        record["latency_s"] = round(time.monotonic() - released, 4)
        value = prediction.first.locator('[data-testid="stMetricValue"]')
        record["prediction"] = (await value.inner_text()).strip()
        await check_page(run, page, who, f"after drawing {k + 1}")
    await wait_idle(run, page, cap=20)
    await check_page(run, page, who, "at the end")


async def set_minimum(page, label):
    container = page.locator('[data-testid="stElementContainer"]').filter(
        has=page.locator('[data-testid="stWidgetLabel"]', has_text=label)).first
    slider = container.get_by_role("slider").first
    await slider.focus()
    await page.keyboard.press("Home")
    return await slider.get_attribute("aria-valuetext")


async def trainer(run, browser, index):
    who = f"trainer {index + 1}"
    await asyncio.sleep(index * run.args.ramp)
    run.phase[who] = "loading the page and setting up training"
    page = await open_app(run, browser, who)
    await page.get_by_role("tab", name="Retrain").click(timeout=run.left(90) * 1000)
    train = page.get_by_role("button", name="Train", exact=True)
    await train.wait_for(timeout=run.left(60) * 1000)
    await wait_idle(run, page)
    settings = {}
    for label in ("Epochs", "Training images"):
        settings[label] = await set_minimum(page, label)
        await wait_idle(run, page, cap=20)
    await check_page(run, page, who, "after choosing the settings")
    run.phase[who] = "waiting for the drawing sessions to load"
    await asyncio.wait_for(run.all_loaded.wait(), run.left(600))
    run.phase[who] = "training"
    stop = page.get_by_role("button", name="Stop", exact=True)
    finished = page.get_by_text("Training finished")
    busy = page.get_by_text("other trainings are running")
    n = 0
    while not run.drawers_done.is_set() and n < 50:
        n += 1
        record = {"session": index + 1, "run": n, "seconds": None, "outcome": None,
                  "settings": settings}
        run.trainings.append(record)
        await train.wait_for(timeout=run.left(60) * 1000)
        for _ in range(int(run.left(60) * 10)):  # the button is disabled while a run is on
            if await train.is_enabled():
                break
            await asyncio.sleep(0.1)
        start = time.monotonic()
        await train.click(timeout=run.left(30) * 1000)
        # Started (Stop button), refused (busy warning) or already done (fast run).
        seen = None
        for _ in range(int(run.left(30) * 10)):
            if await stop.count():
                seen = "running"
                break
            if await busy.count():
                seen = "busy"
                break
            await asyncio.sleep(0.1)
        if seen == "busy":
            record["outcome"] = "busy"
            await asyncio.sleep(1.0)
            continue
        if not await await_or_error(
                run, page, who, f"during training run {n}",
                f"training run {n} did not finish within the time limits",
                lambda: stop.first.wait_for(state="detached", timeout=run.left(120) * 1000),
                lambda: finished.first.wait_for(timeout=run.left(60) * 1000)):
            break
        record["seconds"] = round(time.monotonic() - start, 3)
        record["outcome"] = "finished"
        await check_page(run, page, who, f"after training run {n}")
    await wait_idle(run, page, cap=20)
    await check_page(run, page, who, "at the end")


async def guarded(run, who, coro):
    try:
        await coro
    except HardTimeout:
        run.error(who, "stopped by the hard --timeout")
    except Exception as e:
        page = run.pages.get(who)
        if page is not None:
            await check_page(run, page, who, "after a failure", allow_error_box=True)
        first_line = str(e).splitlines()[0] if str(e) else ""
        run.error(who, f"{type(e).__name__} while {run.phase.get(who, 'starting')}: {first_line}")


async def drive(run, chromium):
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=chromium, headless=True,
                                          args=LOADTEST_CHROMIUM_ARGS)
        try:
            drawers = [guarded(run, f"drawer {i + 1}", drawer(run, browser, i))
                       for i in range(run.args.sessions)]
            trainers = [asyncio.ensure_future(guarded(run, f"trainer {i + 1}", trainer(run, browser, i)))
                        for i in range(run.args.trainers)]
            await asyncio.gather(*drawers)
            run.drawers_done.set()
            await asyncio.gather(*trainers)
            for who, page in run.pages.items():  # a final look at every page
                await check_page(run, page, who, "at the very end")
        finally:
            try:
                await asyncio.wait_for(browser.close(), 30)
            except Exception:
                pass


# ------------------------------------------------------------------ report

def percentile(values, q):
    values = sorted(values)
    if not values:
        return None
    pos = (len(values) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return values[lo] + (values[hi] - values[lo]) * (pos - lo)


def machine_cpu():
    """(busy, total) CPU seconds of the whole machine so far (Linux /proc/stat), or None."""
    try:
        ticks = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = ticks[3] + ticks[4]  # idle + iowait
    hz = os.sysconf("SC_CLK_TCK")
    return (sum(ticks) - idle) / hz, sum(ticks) / hz


def server_times(server_log):
    """Server-side milliseconds from the app's DEBUG log, wall clock and CPU (the
    script thread's own work, without waiting for the GIL): every Draw fragment
    rerun (what one canvas stroke costs the server) and every full page run."""
    pattern = re.compile(r" digitlab DEBUG (draw|page run) ([\d.]+) ms, cpu ([\d.]+) ms(.*)$")
    found = {"draw_fragment": ([], []), "page_run": ([], [])}
    for line in server_log.splitlines():
        m = pattern.search(line)
        if not m:
            continue
        kind, wall, cpu, rest = m.groups()
        if kind == "page run":
            key = "page_run"
        elif rest.strip() == "(fragment rerun)":
            key = "draw_fragment"
        else:
            continue  # the Draw fragment inside a page run: counted in the page run
        found[key][0].append(float(wall))
        found[key][1].append(float(cpu))

    def stats(values):
        return {"n": len(values), "p50": percentile(values, 50), "p95": percentile(values, 95),
                "max": max(values, default=None)}

    return {key: {"wall": stats(wall), "cpu": stats(cpu)} for key, (wall, cpu) in found.items()}


def summarise(run, args, wall, server_log, server_cpu, machine):
    lat = [s["latency_s"] for s in run.strokes if s["latency_s"] is not None]
    sessions = []
    for i in range(args.sessions):
        mine = [s for s in run.strokes if s["session"] == i + 1]
        got = [s for s in mine if s["latency_s"] is not None]
        sessions.append({"session": i + 1, "drawings": len(mine), "predictions": len(got),
                         "correct": sum(s["prediction"] == s["digit"] for s in got),
                         "max_latency_s": max((s["latency_s"] for s in got), default=None)})
        if len(got) < args.strokes:
            run.error(f"drawer {i + 1}", f"reached a prediction on {len(got)} of {args.strokes} drawings")
    if "Traceback (most recent call last)" in server_log:
        run.errors.append("server: a traceback in the server log")
    finished = [t for t in run.trainings if t["outcome"] == "finished"]
    return {
        "when": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform()},
        "config": {"sessions": args.sessions, "strokes": args.strokes, "trainers": args.trainers,
                   "ramp_s": args.ramp, "timeout_s": args.timeout},
        "wall_s": round(wall, 2),
        # CPU seconds: the Streamlit server, and the whole machine (server + Chromium +
        # anything else running) over the run; machine_busy near 1 means saturated.
        "cpu_s": {"server": None if server_cpu is None else round(server_cpu, 1),
                  "machine": None if machine is None else round(machine[0], 1),
                  "machine_busy": None if machine is None else round(machine[0] / machine[1], 3)},
        "page_load_s": {"n": len(run.load_times), "p50": percentile(run.load_times, 50),
                        "max": max(run.load_times, default=None)},
        "latency_s": {"n": len(lat), "p50": percentile(lat, 50), "p95": percentile(lat, 95),
                      "max": max(lat, default=None), "min": min(lat, default=None)},
        "server_ms": server_times(server_log),
        "sessions": sessions,
        "all_sessions_reached_a_prediction": all(s["predictions"] > 0 for s in sessions),
        "correct": sum(s["correct"] for s in sessions),
        "strokes": run.strokes,
        "training": {"runs_finished": len(finished),
                     "busy": sum(t["outcome"] == "busy" for t in run.trainings),
                     "median_s": percentile([t["seconds"] for t in finished], 50),
                     "runs": run.trainings},
        "errors": run.errors,
        "ok": not run.errors,
    }


def fmt(x, unit="s"):
    return "—" if x is None else f"{x:.2f} {unit}"


def print_report(r):
    c, lat = r["config"], r["latency_s"]
    print(f"\nDigit Lab load test: {c['sessions']} drawing sessions x {c['strokes']} drawings, "
          f"{c['trainers']} retraining sessions, {r['machine']['cpus']} CPUs, {r['wall_s']:.0f} s\n")
    print("| mouse-up -> Prediction | drawings | p50 | p95 | max |")
    print("|---|---:|---:|---:|---:|")
    print(f"| all sessions | {lat['n']} | {fmt(lat['p50'])} | {fmt(lat['p95'])} | {fmt(lat['max'])} |\n")
    print("| server time (app log) | runs | wall p50 | wall p95 | CPU p50 | CPU p95 |")
    print("|---|---:|---:|---:|---:|---:|")
    for key, what in (("draw_fragment", "Draw fragment rerun (a stroke)"),
                      ("page_run", "full page run")):
        wall, cpu = r["server_ms"][key]["wall"], r["server_ms"][key]["cpu"]
        if wall["n"]:
            print(f"| {what} | {wall['n']} | {fmt(wall['p50'], 'ms')} | {fmt(wall['p95'], 'ms')} | "
                  f"{fmt(cpu['p50'], 'ms')} | {fmt(cpu['p95'], 'ms')} |")
    print()
    pl = r["page_load_s"]
    print(f"page load (open -> canvas ready, {c['ramp_s']:g} s between arrivals): "
          f"p50 {fmt(pl['p50'])}, max {fmt(pl['max'])} over {pl['n']} sessions\n")
    print("| session | drawings | predictions | correct | slowest |")
    print("|---:|---:|---:|---:|---:|")
    for s in r["sessions"]:
        print(f"| {s['session']} | {s['drawings']} | {s['predictions']} | {s['correct']} | "
              f"{fmt(s['max_latency_s'])} |")
    t = r["training"]
    print(f"\nretraining: {t['runs_finished']} runs finished (median {fmt(t['median_s'])} from click "
          f"to result), {t['busy']} refused as busy")
    print(f"predictions correct: {r['correct']} of {lat['n']}")
    cpu = r["cpu_s"]
    if cpu["server"] is not None and cpu["machine"] is not None:
        print(f"CPU: the server used {cpu['server']:.0f} s, the whole machine {cpu['machine']:.0f} s "
              f"({cpu['machine_busy']:.0%} busy over {r['wall_s']:.0f} s on {r['machine']['cpus']} CPUs; "
              f"the browser and anything else share it)")
    if r["errors"]:
        print(f"\n{len(r['errors'])} ERROR(S):")
        for e in r["errors"]:
            print("  -", e)
    else:
        print("\nno errors: no exception on any page, every session reached a prediction")


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
    p.add_argument("--sessions", type=int, default=20, help="concurrent drawing sessions (1-50)")
    p.add_argument("--strokes", type=int, default=3, help="drawings per session (1-20)")
    p.add_argument("--trainers", type=int, default=2, help="concurrent retraining sessions (0-5)")
    p.add_argument("--ramp", type=float, default=1.0,
                   help="seconds between two sessions' arrivals (drawing starts when all are in)")
    p.add_argument("--timeout", type=float, default=240, help="hard cap on the whole run, seconds")
    p.add_argument("--app", default=str(ROOT / "app.py"))
    p.add_argument("--mnist", default=os.environ.get("MNIST_DATA"), help="MNIST folder ($MNIST_DATA)")
    p.add_argument("--json", default=str(DEFAULT_JSON), help="where to write the results")
    args = p.parse_args(argv)
    for name, lo, hi in (("sessions", 1, 50), ("strokes", 1, 20), ("trainers", 0, 5)):
        if not lo <= getattr(args, name) <= hi:
            p.error(f"--{name} must be in {lo}..{hi}")
    if not 0 <= args.ramp <= 10:
        p.error("--ramp must be in 0..10 seconds")
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
    before = machine_cpu()
    with tempfile.TemporaryDirectory(prefix="digitlab-loadtest-") as work:
        server = Server(args.app, work, args.mnist).start()
        run = Run(args, server.url, deadline)
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
            server_cpu = server.stop()
        after = machine_cpu()
        machine = (None if before is None or after is None
                   else (after[0] - before[0], after[1] - before[1]))
        report = summarise(run, args, time.monotonic() - start, log, server_cpu, machine)
        if report["errors"]:
            report["server_log_tail"] = log.splitlines()[-60:]
    print_report(report)
    write_json(report, args.json)
    print(f"\nwrote {args.json}")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
