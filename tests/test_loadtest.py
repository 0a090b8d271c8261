"""A small run of benchmarks/loadtest.py: 3 people drawing at once while a fourth
teaches the network and a fifth attacks the server, on a real server in a real
Chromium. No exception or error on any page, every drawing gets its prediction
and is stored in the drawings database exactly once, every hostile message is
answered, and the run stops by itself well within its cap.
(The full run: ``python benchmarks/loadtest.py``.)"""
import json
import subprocess
import sys

import pytest

from conftest import ROOT, mnist_path, require

pytestmark = [pytest.mark.browser, pytest.mark.slow]

DRAWERS, STROKES = 3, 2


def test_small_load_run(chromium_path, tmp_path):
    from nn.data import mnist_available

    require((ROOT / "app.py").exists(), "app.py not found")
    require(mnist_available(mnist_path()), f"MNIST not found in {mnist_path()} (set MNIST_DATA)")
    out = tmp_path / "loadtest.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "loadtest.py"), "--drawers", str(DRAWERS),
           "--strokes", str(STROKES), "--teachers", "1", "--hostile", "1", "--ramp", "0.5",
           "--timeout", "75", "--json", str(out), "--mnist", str(mnist_path())]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=150)
    report = json.loads(out.read_text()) if out.exists() else None
    assert report is not None, f"no report written\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert report["errors"] == [], "\n".join(report["errors"] + report.get("server_log_tail", []))
    assert proc.returncode == 0, proc.stdout[-3000:]
    # Every drawing predicted; every labelled drawing (drawers' and the teacher's) stored once.
    assert report["latency_s"]["all"]["n"] == DRAWERS * STROKES
    storage = report["storage"]
    assert storage["pressed"] == storage["confirmed"] == DRAWERS * STROKES + 2
    assert storage["not_kept"] == 0
    assert storage["stored"] == storage["confirmed"]
    assert storage["lost"] == storage["duplicated"] == storage["unknown_visitor_rows"] == 0
    assert report["database_busy_messages"] == []
    assert report["teaching"]["presses"] >= 1
    assert report["teaching"]["succeeded"] == report["teaching"]["presses"]
    assert report["hostile"]["actions"] >= 1
    # Strokes rerun only the Draw fragment, whose server time the app logs.
    assert report["server_ms"]["draw_fragment"]["cpu"]["n"] >= DRAWERS * STROKES
    assert report["memory_mb"]["server_peak_rss"] is not None
    assert report["wall_s"] < 110
