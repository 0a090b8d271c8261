"""The benchmark script runs end to end (tiny sizes, no PyTorch needed) and
writes a complete JSON report and a PNG chart."""

import json
import subprocess
import sys

import pytest

from conftest import ROOT


@pytest.mark.slow
def test_quick_benchmark_writes_complete_report(mnist_dir, tmp_path):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench.py"), "--quick", "--skip-torch",
         "--data", str(mnist_dir), "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "| network | batch | nn s/epoch" in proc.stdout  # the markdown table

    report = json.loads((tmp_path / "latest.json").read_text())
    assert (tmp_path / "latest.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert report["quick"] is True
    machine = report["machine"]
    assert machine["cpu"] and machine["logical_cores"] >= 1 and machine["numpy"]
    assert machine["torch"] is None and any("torch" in note for note in report["notes"])
    assert report["matmul_peak"]["numpy_gflops"] > 0

    configs = {(row["arch"], row["batch_size"]) for row in report["training"]}
    assert configs == {("784-128-64-10", 32), ("784-128-64-10", 128), ("784-128-64-10", 512),
                       ("784-512-256-10", 128)}
    for row in report["training"]:
        assert row["gflop_per_epoch"] > 0
        assert set(row["results"]) == {"nn", "sklearn"}
        for res in row["results"].values():
            assert 0 < res["min_s"] <= res["median_s"] <= res["max_s"]
            assert res["gflops"] > 0 and res["peak_fraction"] > 0

    inference = report["inference"]
    assert inference["drawn_digit_ms"]["median"] > 0
    assert inference["forward_one_us"]["nn"] > 0
    assert inference["test_set"]["nn_ms"] > 0

    to_98 = report["time_to_98"]
    assert to_98["seconds"] > 0 and to_98["epochs"] >= 1 and 0 <= to_98["test_acc"] <= 1

    assert report["targets"]
    for goal in report["targets"]:
        assert {"name", "value", "limit", "met"} <= set(goal) and goal["value"] > 0
