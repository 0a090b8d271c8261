"""A small run of benchmarks/loadtest.py: 3 people drawing at once while a
fourth retrains, on a real server in a real Chromium. No exception on any page,
every session gets its prediction, the run stops by itself well within its cap.
(The full 20-session run: ``python benchmarks/loadtest.py``.)"""
import json
import subprocess
import sys

import pytest

from conftest import ROOT, mnist_path, require

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_small_load_run(chromium_path, tmp_path):
    from nn.data import mnist_available

    require((ROOT / "app.py").exists(), "app.py not found")
    require(mnist_available(mnist_path()), f"MNIST not found in {mnist_path()} (set MNIST_DATA)")
    out = tmp_path / "loadtest.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "loadtest.py"), "--sessions", "3",
           "--strokes", "1", "--trainers", "1", "--timeout", "90", "--json", str(out),
           "--mnist", str(mnist_path())]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=180)
    report = json.loads(out.read_text()) if out.exists() else None
    assert report is not None, f"no report written\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert report["errors"] == [], "\n".join(report["errors"] + report.get("server_log_tail", []))
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert report["all_sessions_reached_a_prediction"]
    assert report["latency_s"]["n"] == 3
    assert all(s["predictions"] == 1 for s in report["sessions"])
    assert report["training"]["runs_finished"] >= 1
    # Strokes rerun only the Draw fragment, whose server time the app logs.
    assert report["server_ms"]["draw_fragment"]["cpu"]["n"] >= 3
    assert report["wall_s"] < 120
