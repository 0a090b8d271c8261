"""Tests for the app's logic (``app_logic/``), without Streamlit; the page itself is
tested in test_app.py.

This file: the package as a whole (it never imports Streamlit), the canvas
(``inputs``), the visitor's identity (``identity``), the shared cache
(``cache``) and the session-state keys (``state``). Each larger module has
its own file, ``test_app_logic_<module>.py``. Uploads are tested in
test_uploads.py.

A drawing arrives as fabric.js JSON, so the canvas tests build that JSON the
way the canvas does (``fabric_path``) and send hostile variants of it.
"""

import ast
import copy
import json
import re
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import nn
import nn.preprocess
import nn.strokes
from app_logic import cache, identity, inputs, state
from conftest import ROOT

# ---------------------------------------------------------------- the package


def test_the_package_never_imports_streamlit():
    """Every module of app_logic, imported in a fresh interpreter, leaves Streamlit
    unimported (the page is the only place that may use it)."""
    code = (
        "import importlib, json, pkgutil, sys\n"
        "import app_logic\n"
        "names = sorted(m.name for m in pkgutil.iter_modules(app_logic.__path__))\n"
        "for name in names:\n"
        "    importlib.import_module('app_logic.' + name)\n"
        "ui = sorted(m for m in sys.modules if m.split('.')[0] == 'streamlit')\n"
        "print(json.dumps({'modules': names, 'streamlit': ui}))\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert found["streamlit"] == [], f"app_logic imported {found['streamlit']}"
    assert {"inputs", "identity", "jobs", "runs", "retrain", "atlas", "inference", "library",
            "session", "teaching", "tables", "figures", "cache", "state"} <= set(found["modules"])


# ---------------------------------------------------------------- inputs: the canvas

def fabric_path(points, width=18):
    """One freehand stroke as streamlit-drawable-canvas sends it: fabric.js's pencil
    brush writes ``M`` at the first point, then for each point a ``Q`` whose control
    point is that point and whose end is the midpoint to the next, and ``L`` at the
    last point. ``left``/``top``: the path's box less half the pen (fabric's origin)."""
    pts = [(float(x), float(y)) for x, y in points]
    path = [["M", *pts[0]]]
    path += [["Q", a[0], a[1], (a[0] + b[0]) / 2, (a[1] + b[1]) / 2]
             for a, b in zip(pts[:-1], pts[1:])]
    path.append(["L", *pts[-1]])
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    return {"type": "path", "version": "4.4.0", "originX": "left", "originY": "top",
            "left": min(xs) - width / 2, "top": min(ys) - width / 2,
            "width": max(xs) - min(xs), "height": max(ys) - min(ys), "fill": None,
            "stroke": "#FFFFFF", "strokeWidth": width, "strokeLineCap": "round",
            "strokeLineJoin": "round", "scaleX": 1, "scaleY": 1, "angle": 0, "flipX": False,
            "flipY": False, "opacity": 1, "skewX": 0, "skewY": 0, "path": path}


def polyline(corners, step=6.0):
    """Points every ``step`` pixels along straight lines through ``corners``: what a
    mouse or finger reports while it moves."""
    out = [np.asarray(corners[0], float)]
    for a, b in zip(corners[:-1], corners[1:]):
        a, b = np.asarray(a, float), np.asarray(b, float)
        n = max(1, int(np.hypot(*(b - a)) // step))
        out += [a + (b - a) * t for t in np.linspace(0, 1, n + 1)[1:]]
    return out


def canvas(*strokes):
    """The canvas's whole JSON: its strokes and the fields around them."""
    return {"version": "4.4.0", "objects": list(strokes), "background": "#000000"}


DIGITS = {
    "7": [[(70, 60), (210, 60), (120, 240)]],
    "1": [[(150, 40), (150, 240)]],
    "4": [[(170, 40), (60, 170), (230, 170)], [(180, 100), (180, 250)]],
}


def drawn(digit, width=18):
    return canvas(*(fabric_path(polyline(c), width) for c in DIGITS[digit]))


@pytest.mark.parametrize("digit", ["7", "1"])
def test_a_drawn_digit_is_read_by_the_shipped_network(default_model, digit):
    img28, error = inputs.read_canvas(drawn(digit))
    assert error is None
    assert img28.shape == (28, 28) and img28.dtype == np.float32
    assert img28.min() >= 0 and img28.max() == 1.0
    probs = default_model.predict_proba(img28.reshape(1, -1))[0]
    assert int(probs.argmax()) == int(digit)


def test_strokes_are_the_points_the_canvas_drew():
    """M and L are points; a Q is flattened into CURVE_STEPS points of the quadratic
    Bezier curve from the previous point (checked against the formula by hand)."""
    stroke = {**fabric_path([(0, 0)]), "path": [["M", 0, 0], ["Q", 10, 0, 10, 10], ["L", 20, 10]]}
    (points, width), = inputs.strokes_from_canvas(canvas(stroke))
    assert width == 18.0 and points.dtype == np.float64
    assert len(points) == 1 + inputs.CURVE_STEPS + 1
    # B(t) = (1-t)^2 P0 + 2(1-t)t C + t^2 P1, with P0 = (0, 0), C = (10, 0), P1 = (10, 10)
    expected = [(0, 0)] + [(20 * (1 - t) * t + 10 * t * t, 10 * t * t)
                           for t in np.arange(1, inputs.CURVE_STEPS + 1) / inputs.CURVE_STEPS]
    np.testing.assert_allclose(points, [*expected, (20, 10)])
    # A straight stroke's curve segments stay on the line.
    (points, _), = inputs.strokes_from_canvas(canvas(fabric_path(polyline([(20, 30), (200, 30)]))))
    assert (points[:, 1] == 30).all() and points[0, 0] == 20 and points[-1, 0] == 200


@pytest.mark.parametrize("data", [None, {}, {"objects": []}, canvas(),
                                  {"version": "4.4.0", "background": "#000000"}])
def test_a_blank_canvas_is_no_drawing(data):
    assert inputs.strokes_from_canvas(data) == []
    assert inputs.read_canvas(data) == (None, None)


def test_a_stroke_off_the_visible_canvas_is_blank():
    """Within the coordinate limit but outside the 280x280 canvas: nothing is drawn."""
    assert inputs.read_canvas(canvas(fabric_path(polyline([(-400, -300), (-350, -300)])))) == (
        None, None)


def good_stroke(**changes):
    """A valid stroke with ``changes``; a new ``path`` or pen comes without the old
    stroke's position (which would no longer match it), unless one is given."""
    stroke = {**fabric_path(polyline([(60, 60), (200, 200)])), **changes}
    if "path" in changes or "strokeWidth" in changes:
        for key in ("left", "top"):
            if key not in changes:
                del stroke[key]
    return stroke


def with_path(path, **changes):
    return canvas(good_stroke(path=path, **changes))


M = ["M", 100, 100]
HOSTILE = {
    "a list": ([good_stroke()], "not a JSON object"),
    "a string": ('{"objects": []}', "not a JSON object"),
    "a number": (42, "not a JSON object"),
    "objects a dict": ({"objects": {"0": good_stroke()}}, "objects are not a list"),
    "objects a string": ({"objects": "M 1 2 L 3 4"}, "objects are not a list"),
    "201 objects": (canvas(*[good_stroke()] * 201), "201 strokes (at most 200)"),
    "a rectangle": (canvas({**good_stroke(), "type": "rect"}), "other than pen strokes"),
    "an image": (canvas({"type": "image", "src": "data:image/png;base64,AAAA"}),
                 "other than pen strokes"),
    "a stroke that is a list": (canvas(good_stroke()["path"]), "other than pen strokes"),
    "no type": (canvas({k: v for k, v in good_stroke().items() if k != "type"}),
                "other than pen strokes"),
    "scaled": (canvas(good_stroke(scaleX=2)), "moved, scaled or rotated"),
    "squashed": (canvas(good_stroke(scaleY=0.5)), "moved, scaled or rotated"),
    "rotated": (canvas(good_stroke(angle=30)), "moved, scaled or rotated"),
    "skewed": (canvas(good_stroke(skewX=10)), "moved, scaled or rotated"),
    "NaN coordinate": (with_path([M, ["L", float("nan"), 5]]), "path command 'L'"),
    "infinite coordinate": (with_path([M, ["L", 5, float("inf")]]), "path command 'L'"),
    "-inf in a curve": (with_path([M, ["Q", 1, 2, float("-inf"), 4]]), "path command 'Q'"),
    "bool coordinate": (with_path([["M", True, 5]]), "path command 'M'"),
    "string coordinate": (with_path([M, ["L", "12", 5]]), "path command 'L'"),
    "null coordinate": (with_path([M, ["L", None, 5]]), "path command 'L'"),
    "too few numbers": (with_path([M, ["L", 5]]), "path command 'L'"),
    "too many numbers": (with_path([M, ["L", 5, 6, 7]]), "path command 'L'"),
    "cubic curve": (with_path([M, ["C", 1, 2, 3, 4, 5, 6]]), "unsupported path command 'C'"),
    "close path": (with_path([M, ["Z"]]), "unsupported path command 'Z'"),
    "lower-case move": (with_path([["m", 1, 2]]), "unsupported path command 'm'"),
    "empty command": (with_path([M, []]), "not a list starting with a letter"),
    "command as text": (with_path(["M 1 2"]), "not a list starting with a letter"),
    "number as command": (with_path([[5, 1, 2]]), "not a list starting with a letter"),
    "Q before M": (with_path([["Q", 1, 2, 3, 4], ["L", 5, 6]]), "does not start at a point"),
    "20001 points": (with_path([M] + [["L", 100 + i % 50, 100] for i in range(20_000)]),
                     "too many points"),
    "20001 points in two strokes": (
        canvas(good_stroke(path=[M] + [["L", 101, 100]] * 10_000),
               good_stroke(path=[M] + [["L", 101, 100]] * 10_000)), "too many points"),
    "coordinate 1e9": (with_path([M, ["L", 1e9, 100]]), "far outside the canvas"),
    "coordinate -1e9 in a curve": (with_path([M, ["Q", 1, 2, -1e9, 4]]), "far outside the canvas"),
    "strokeWidth 0": (canvas(good_stroke(strokeWidth=0)), "no valid width"),
    "strokeWidth 500": (canvas(good_stroke(strokeWidth=500)), "no valid width"),
    "strokeWidth '18'": (canvas(good_stroke(strokeWidth="18")), "no valid width"),
    "strokeWidth true": (canvas(good_stroke(strokeWidth=True)), "no valid width"),
    "strokeWidth NaN": (canvas(good_stroke(strokeWidth=float("nan"))), "no valid width"),
    "no strokeWidth": (canvas({k: v for k, v in good_stroke().items() if k != "strokeWidth"}),
                       "no valid width"),
    "no path": (canvas({k: v for k, v in good_stroke().items() if k != "path"}), "no points"),
    "empty path": (with_path([]), "no points"),
    "path as text": (with_path("M 1 2 L 3 4"), "no points"),
}


@pytest.mark.parametrize("case", HOSTILE, ids=list(HOSTILE))
def test_hostile_drawings_are_refused_with_a_message(case):
    data, reason = HOSTILE[case]
    before = copy.deepcopy(data)
    img28, error = inputs.read_canvas(data)  # never raises
    assert img28 is None
    assert error.startswith("Could not read the drawing: ") and reason in error, error
    with pytest.raises(ValueError, match=re.escape(reason)):
        inputs.strokes_from_canvas(data)
    assert json.dumps(data, sort_keys=True) == json.dumps(before, sort_keys=True)


@pytest.mark.parametrize("where", ["coordinate", "strokeWidth"])
def test_a_huge_integer_is_refused_not_raised(where):
    huge = json.loads("1" + "0" * 400)  # what the server's JSON parser makes of the digits
    data = (with_path([M, ["L", huge, 5]]) if where == "coordinate"
            else canvas(good_stroke(strokeWidth=huge)))
    img28, error = inputs.read_canvas(data)
    assert img28 is None and error.startswith("Could not read the drawing: ")


def test_a_moved_stroke_is_refused():
    stroke = good_stroke()
    moved = {**stroke, "left": stroke["left"] + 100, "top": stroke["top"] + 40}
    img28, error = inputs.read_canvas(canvas(moved))
    assert img28 is None and "moved" in error


def test_the_limits_themselves_are_accepted():
    exactly = canvas(*[good_stroke(path=[["M", 10 + i, 10], ["L", 10 + i, 20]])
                       for i in range(inputs.MAX_OBJECTS)])
    assert len(inputs.strokes_from_canvas(exactly)) == inputs.MAX_OBJECTS
    for width in (1, 100, 18.5):
        assert inputs.read_canvas(canvas(good_stroke(strokeWidth=width)))[1] is None
    points = [M] + [["L", 100 + i % 50, 100] for i in range(nn.strokes.MAX_STROKE_POINTS - 1)]
    (stroke, _), = inputs.strokes_from_canvas(with_path(points))
    assert len(stroke) == nn.strokes.MAX_STROKE_POINTS
    # "Path" (fabric's class name) as well as "path"; a click is a dot.
    img28, error = inputs.read_canvas(canvas({**good_stroke(), "type": "Path"}))
    assert error is None and img28 is not None
    img28, error = inputs.read_canvas(with_path([["M", 140, 140], ["L", 140, 140]]))
    assert error is None and img28 is not None


def test_mixed_widths_draw_each_at_its_own_width():
    """The pen slider changed between strokes: each stroke keeps its own width."""
    thin = fabric_path(polyline([(40, 80), (240, 80)]), width=6)
    thick = fabric_path(polyline([(40, 200), (240, 200)]), width=40)
    strokes = inputs.strokes_from_canvas(canvas(thin, thick))
    assert [w for _, w in strokes] == [6.0, 40.0]
    image = inputs.draw(strokes)
    assert image.shape == (inputs.CANVAS_SIZE, inputs.CANVAS_SIZE, 4)
    expected = np.maximum(nn.strokes.draw_strokes([strokes[0][0]], inputs.CANVAS_SIZE, 6),
                          nn.strokes.draw_strokes([strokes[1][0]], inputs.CANVAS_SIZE, 40))
    np.testing.assert_array_equal(image, expected)
    ink = image[:, 140, 0] > 127  # one column across both lines
    assert ink[:140].sum() == 6 and ink[140:].sum() == 40
    # One width for both would have drawn something else.
    assert not np.array_equal(image, nn.strokes.draw_strokes([p for p, _ in strokes], 280, 18))
    img28, error = inputs.read_canvas(canvas(thin, thick))
    assert error is None
    np.testing.assert_array_equal(img28, nn.preprocess.to_mnist(expected))


def test_undo_removes_the_last_stroke():
    data = drawn("4")
    data["objects"].append(fabric_path(polyline([(20, 20), (60, 20)])))
    before = copy.deepcopy(data)
    once = inputs.undo(data)
    assert data == before  # the canvas's own JSON is not changed
    assert once["objects"] == before["objects"][:2] and once["background"] == "#000000"
    assert inputs.read_canvas(once)[0].tobytes() == inputs.read_canvas(drawn("4"))[0].tobytes()
    twice = inputs.undo(once)
    assert twice["objects"] == before["objects"][:1]
    assert inputs.undo(inputs.undo(twice)) == {"objects": []}
    for nothing in (None, {}, {"objects": []}, [1, 2], "x"):
        assert inputs.undo(nothing) == {"objects": []}


# ---------------------------------------------------------------- identity

def test_new_secrets_are_valid_and_different():
    secrets = {identity.new_secret() for _ in range(50)}
    assert len(secrets) == 50
    assert all(identity.valid_secret(s) and re.fullmatch(r"[0-9a-f]{32}", s) for s in secrets)


BAD_SECRETS = [None, 42, b"0" * 32, "", "0" * 31, "0" * 33, "A" * 32, "g" * 32, "0" * 31 + "\n",
               " " + "0" * 31, "0" * 32 + "'", "'; alert(1); //" + "0" * 17,
               "0" * 16 + "; Path=/" + "0" * 8, ["0" * 32]]


@pytest.mark.parametrize("secret", BAD_SECRETS)
def test_bad_secrets_are_refused(secret):
    assert not identity.valid_secret(secret)
    with pytest.raises(ValueError):
        identity.visitor_id(secret)
    with pytest.raises(ValueError):
        identity.cookie_script(secret)


def test_visitor_id_is_a_stable_hash_of_the_secret():
    a, b = identity.new_secret(), identity.new_secret()
    vid = identity.visitor_id(a)
    assert re.fullmatch(r"[0-9a-f]{32}", vid)
    assert identity.visitor_id(a) == vid               # stable: the same visitor tomorrow
    assert identity.visitor_id(b) != vid               # differs per secret
    assert vid != a and a not in vid                    # the secret itself is never stored
    # A fixed secret always gives the same id (a restart must not change owners).
    assert identity.visitor_id("0" * 32) == identity.visitor_id("0" * 32)
    assert identity.visitor_id("0" * 32) != identity.visitor_id("0" * 31 + "1")


def test_cookie_script_holds_only_the_validated_secret():
    secret = identity.new_secret()
    script = identity.cookie_script(secret)
    assert script.startswith("<script>") and script.endswith("</script>")
    assert f"{identity.COOKIE}={secret};" in script
    assert "SameSite=Strict" in script and f"Max-Age={identity.MAX_AGE_S}" in script
    # Nothing else that varies: the script is the same text around any secret.
    other = identity.new_secret()
    assert identity.cookie_script(other) == script.replace(secret, other)
    assert re.findall(r"[0-9a-f]{32}", script) == [secret]


# ---------------------------------------------------------------- cache

@pytest.fixture
def fresh_cache():
    cache.clear()
    yield cache
    cache.clear()


def test_built_once_per_kind_and_key(fresh_cache):
    builds = []

    def build(value):
        def make():
            builds.append(value)
            return [value]
        return make

    first = cache.cached("figure", "net-1", build("a"))
    assert cache.cached("figure", "net-1", build("b")) is first == ["a"]
    assert cache.cached("atlas", "net-1", build("c")) == ["c"]   # another kind, same key
    assert cache.cached("figure", "net-2", build("d")) == ["d"]  # same kind, another key
    assert builds == ["a", "c", "d"]
    cache.clear()
    assert cache.cached("figure", "net-1", build("e")) == ["e"]


def test_least_recently_used_entries_go_first(fresh_cache, monkeypatch):
    monkeypatch.setattr(cache, "CACHE_ENTRIES", 3)
    builds = []

    def get(key):
        return cache.cached("k", key, lambda: builds.append(key) or key)

    for key in (1, 2, 3):
        get(key)
    get(1)          # 1 is now the most recently used
    get(4)          # evicts 2, the least recently used
    assert builds == [1, 2, 3, 4]
    get(1), get(3), get(4)
    assert builds == [1, 2, 3, 4]   # still there
    get(2)
    assert builds == [1, 2, 3, 4, 2]
    assert len(cache._cache) == 3


def test_threads_asking_for_one_entry_share_one_build(fresh_cache):
    """Eight sessions' first drawings on a new network: one map of digits is built,
    not eight; a failed build is not kept and the next caller builds again."""
    builds, started, barrier, results = [], threading.Event(), threading.Barrier(8), []

    def slow_build():
        builds.append(1)
        started.set()
        time.sleep(0.2)
        return object()

    def ask():
        barrier.wait()
        results.append(cache.cached("atlas", "net-1", slow_build))

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(builds) == 1 and len(results) == 8 and len({id(r) for r in results}) == 1

    def broken():
        raise RuntimeError("no MNIST")

    with pytest.raises(RuntimeError):
        cache.cached("atlas", "net-2", broken)
    assert cache.cached("atlas", "net-2", lambda: "built") == "built"
    assert not cache._building


def test_the_cache_is_safe_from_8_threads(fresh_cache, monkeypatch):
    monkeypatch.setattr(cache, "CACHE_ENTRIES", 16)
    errors, barrier = [], threading.Barrier(8)

    def work(t):
        try:
            barrier.wait()
            for i in range(400):
                key = (t * 7 + i) % 40          # more keys than entries: evictions all along
                value = cache.cached("shared", key, lambda key=key: ("value", key))
                assert value == ("value", key)
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(cache._cache) <= 16


# ---------------------------------------------------------------- state

def test_every_declared_key_is_explained():
    assert state.KEYS and state.PREFIXES
    for key, text in {**state.KEYS, **state.PREFIXES}.items():
        assert isinstance(key, str) and key and isinstance(text, str) and text.strip()
    assert not set(state.KEYS) & set(state.PREFIXES)


@pytest.mark.parametrize("key, ok", [
    ("active", True), ("runs", True), ("canvas_gen", True), ("rt_lr", True), ("rt_conv_2", True),
    ("rt_conv_n", True), ("canvas_3", True), ("del_drawing_17", True), ("make_active_4", True),
    ("rt", False), ("canvas", False), ("Active", False), ("", False), ("not_a_key", False),
    ("actives", False), ("make_active", False)])
def test_declared(key, ok):
    assert state.declared(key) is ok


# Elements whose key= names no session-state value worth declaring: buttons (True for
# one rerun), charts, and layout blocks (their key is a CSS class).
_STATELESS = {"button", "download_button", "form_submit_button", "link_button", "vega",
              "vega_lite_chart", "altair_chart", "container", "form", "expander", "popover",
              "empty"}


def _keys_used_by_the_page():
    """``(key text, is an f-string prefix)`` for every session-state key app.py names:
    ``ss[...]``, ``ss.get/setdefault/pop(...)``, ``... in ss`` and widgets' ``key=``."""
    tree = ast.parse((ROOT / "app.py").read_text(encoding="utf-8"))

    def text(node):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return node.value, False
        if isinstance(node, ast.JoinedStr):
            head = node.values[0] if node.values else None
            prefix = head.value if isinstance(head, ast.Constant) else ""
            return prefix, True
        return None

    def is_state(node):
        return ((isinstance(node, ast.Name) and node.id == "ss")
                or (isinstance(node, ast.Attribute) and node.attr == "session_state"))

    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript) and is_state(node.value):
            found.append(text(node.slice))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if is_state(node.func.value) and node.func.attr in ("get", "setdefault", "pop") \
                    and node.args:
                found.append(text(node.args[0]))
        if isinstance(node, ast.Compare) and any(isinstance(op, (ast.In, ast.NotIn))
                                                 for op in node.ops) \
                and any(is_state(c) for c in node.comparators):
            found.append(text(node.left))
        if isinstance(node, ast.Call):
            name = getattr(node.func, "attr", getattr(node.func, "id", ""))
            for kw in node.keywords:
                if kw.arg == "key" and name not in _STATELESS:
                    found.append(text(kw.value))
    return [f for f in found if f is not None]


def test_every_key_the_page_uses_is_declared():
    used = _keys_used_by_the_page()
    assert len(used) > 20  # the scan found the page's keys
    # An f-string key (f"canvas_{n}") is checked by its literal start, which must
    # be a declared prefix; one that starts with a variable (f"{key}_on") is skipped.
    undeclared = sorted({key for key, _ in used if key and not state.declared(key)})
    assert not undeclared, f"keys app.py uses but app_logic/state.py does not declare: {undeclared}"
