"""The benchmark script runs end to end (tiny sizes, no PyTorch needed) and
writes a complete JSON report and a PNG chart; its helpers do what they say.
No timing is asserted: these tests run on busy machines."""

import importlib.util
import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT

import nn
from nn.recipe import PRESETS


def _load_bench():
    spec = importlib.util.spec_from_file_location("bench", ROOT / "benchmarks" / "bench.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench = _load_bench()


def _positive_summary(res):
    assert 0 < res["min_s"] <= res["median_s"] <= res["max_s"]
    assert len(res["times_s"]) >= 1


@pytest.fixture(scope="module")
def quick_report(mnist_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench.py"), "--quick", "--skip-torch",
         "--ablation", "--data", str(mnist_dir), "--out", str(out)],
        capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout, json.loads((out / "latest.json").read_text()), out


@pytest.mark.slow
def test_quick_benchmark_writes_complete_report(quick_report):
    stdout, report, out = quick_report
    assert "| network | batch | nn s/epoch" in stdout  # the markdown tables
    assert "| goal | measured | limit | met |" in stdout
    assert (out / "latest.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(out.glob(".*tmp*"))  # written atomically: no temporary files left
    assert report["quick"] is True
    assert report["sections"] == list(bench.SECTIONS)
    machine = report["machine"]
    assert machine["cpu"] and machine["logical_cores"] >= 1 and machine["numpy"]
    assert machine["torch"] is None and any("torch" in note for note in report["notes"])
    assert report["matmul_peak"]["numpy_gflops"] > 0
    assert report["settings"]["n_train"] == bench.QUICK_IMAGES
    assert not any("ablation left" in note for note in report["notes"])

    assert report["targets"]
    for goal in report["targets"]:
        assert {"name", "value", "limit", "met"} <= set(goal) and goal["value"] > 0
    names = " ".join(goal["name"] for goal in report["targets"])
    for part in ("nn/sklearn", "augmented / plain", "drawn digit", "forward pass",
                 'PRESETS["quick"]', "98%"):
        assert part in names
    assert "small CNN" not in names  # its goal is nn/torch: not without torch


@pytest.mark.slow
def test_quick_benchmark_mlp_rows(quick_report):
    report = quick_report[1]
    configs = {(row["arch"], row["batch_size"]) for row in report["mlp"]}
    assert configs == {("784-128-64-10", 32), ("784-128-64-10", 128), ("784-128-64-10", 512),
                       ("784-512-256-10", 128)}
    for row in report["mlp"]:
        assert row["gflop_per_epoch"] > 0
        assert set(row["results"]) == {"nn", "sklearn"}
        for res in row["results"].values():
            _positive_summary(res)
            assert res["gflops"] > 0 and res["peak_fraction"] > 0
            assert 0 <= res["subnormal_state_fraction"] <= 1
        assert row["results"]["nn"]["fit_call_median_s"] >= row["results"]["nn"]["median_s"]


@pytest.mark.slow
def test_quick_benchmark_cnn_and_augmentation(quick_report):
    report = quick_report[1]
    rows = {row["name"]: row for row in report["cnn"]}
    assert set(rows) == {"small", "default"}
    assert rows["small"]["spec"] == nn.cnn_spec(conv=(8, 16), kernel=5, hidden=(64,))
    assert rows["default"]["spec"] == PRESETS["default"].spec()
    assert rows["small"]["arch"] == "1x28x28-conv8x5-conv16x5-64-10"
    for row in rows.values():
        assert row["batch_size"] == 128 and row["gflop_per_epoch"] > 0
        assert set(row["results"]) == {"nn"} and row["nn_over_torch"] is None
        _positive_summary(row["results"]["nn"])
    # the default CNN has more multiply-adds than the small one
    assert rows["default"]["gflop_per_epoch"] > rows["small"]["gflop_per_epoch"]

    aug = report["augmentation"]
    assert aug["arch"] == "784-128-64-10" and aug["batch_size"] == 128 and aug["optimizer"] == "adam"
    assert aug["strengths"] == {name: getattr(PRESETS["default"], name)
                                for name in nn.recipe.AUGMENTATIONS}
    assert set(aug["results"]) == {"plain", "augmented"}
    for res in aug["results"].values():
        _positive_summary(res)
    assert aug["ratio"] == pytest.approx(aug["results"]["augmented"]["median_s"]
                                         / aug["results"]["plain"]["median_s"])


@pytest.mark.slow
def test_quick_benchmark_inference(quick_report):
    inference = quick_report[1]["inference"]
    assert set(inference) == {"default", "mlp"}
    default = inference["default"]
    if bench.DEFAULT_WEIGHTS.exists():  # whatever architecture the shipped network has
        assert default["source"] == "weights/default.npz"
        assert default["model"] == nn.load(bench.DEFAULT_WEIGHTS).describe()
    mlp = inference["mlp"]
    if not bench.MLP_WEIGHTS.exists():
        assert mlp["spec"] == nn.mlp_spec(bench.INFERENCE_MLP)
    for inf in (default, mlp):
        assert inf["drawn_digit"]["canvas"] == 280 and inf["drawn_digit"]["pen"] == 18
        assert 0 <= inf["drawn_digit"]["predicted"] <= 9
        for key in ("drawn_digit_ms", "draw_strokes_ms", "to_mnist_ms"):
            assert 0 < inf[key]["min"] <= inf[key]["median"] <= inf[key]["max"]
        # the whole path contains its parts
        assert inf["drawn_digit_ms"]["median"] > inf["to_mnist_ms"]["min"]
        assert inf["forward_one_us"]["nn"] > 0 and inf["predict_proba_one_us"]["nn"] > 0
        assert inf["test_set"]["nn_ms"] > 0 and inf["test_set"]["n"] == bench.QUICK_IMAGES


@pytest.mark.slow
def test_quick_benchmark_training_runs(quick_report):
    report = quick_report[1]
    quick = report["quick_preset"]
    assert quick["recipe"] == PRESETS["quick"].to_dict()
    assert quick["seconds"] > sum(quick["epoch_seconds"]) > 0  # the whole call
    assert quick["epochs"] == PRESETS["quick"].epochs
    assert 0 <= quick["test_acc"] <= 1 and quick["n_test"] == bench.QUICK_IMAGES
    assert quick["n_train"] + quick["n_val"] == bench.QUICK_IMAGES

    to_98 = report["mlp_to_98"]
    assert to_98["seconds"] > 0 and to_98["epochs"] >= 1 and 0 <= to_98["test_acc"] <= 1
    assert to_98["arch"] == "784-256-128-10" and to_98["target"] == 0.98
    assert len(to_98["test_acc_per_epoch"]) == to_98["epochs"]


@pytest.mark.slow
def test_quick_benchmark_ablation(quick_report):
    ablation = quick_report[1]["ablation"]
    switches = list(nn.speed.ENABLED)
    assert ablation["switches"] == switches
    configs = [row["config"] for row in ablation["rows"]]
    assert configs == ["784-128-64-10 batch 32", "784-128-64-10 batch 128", "small CNN batch 128"]
    for row in ablation["rows"]:
        assert set(row["results"]) == {"all on", *(f"{s} off" for s in switches)}
        for res in row["results"].values():
            _positive_summary(res)
    assert set(ablation["speedup"]) == set(switches)
    for switch, values in ablation["speedup"].items():
        assert set(values) == set(configs)
        assert all(v > 0 and np.isfinite(v) for v in values.values())


# -- helpers, without running the benchmark ---------------------------------------------------

def test_sections_chosen_by_the_options():
    full = bench.parse_args([])[1].sections
    assert full == list(bench.SECTIONS)                       # the full run has the ablation
    assert "ablation" not in bench.parse_args(["--quick"])[1].sections
    assert "ablation" in bench.parse_args(["--quick", "--ablation"])[1].sections
    assert "ablation" not in bench.parse_args(["--skip-ablation"])[1].sections
    assert bench.parse_args(["--only", "inference", "cnn"])[1].sections == ["cnn", "inference"]


def test_speed_switches_are_restored_even_after_an_error():
    before = dict(nn.speed.ENABLED)
    with pytest.raises(RuntimeError):
        with bench.speed_switches(("flush_subnormals",)):
            assert not nn.speed.ENABLED["flush_subnormals"]
            assert nn.speed.ENABLED["blas_threads"] == before["blas_threads"]
            raise RuntimeError("boom")
    assert nn.speed.ENABLED == before


def test_drawn_digit_is_read_as_the_digit_it_draws(default_model):
    from nn.preprocess import to_mnist
    from nn.strokes import draw_strokes

    canvas = draw_strokes(bench.digit_strokes(), bench.CANVAS_SIZE, bench.PEN_WIDTH)
    assert sum(len(s) for s in bench.digit_strokes()) == 55
    probs = default_model.predict_proba(to_mnist(canvas).reshape(1, -1))[0]
    assert probs.argmax() == bench.DRAWN_DIGIT


@pytest.mark.parametrize("spec", [nn.mlp_spec((32, 16), dropout=0.1),
                                  nn.cnn_spec(conv=(4, 8), kernel=5, hidden=(16,))],
                         ids=["mlp", "cnn"])
def test_torch_twin_has_the_same_layers_and_weights(spec):
    torch = pytest.importorskip("torch")
    net = nn.Network(spec, seed=1)
    twin = bench.torch_network(torch, spec, weights_from=net)
    X = np.random.default_rng(0).random((5, 784), dtype=np.float32)
    with torch.no_grad():
        probs = torch.softmax(twin(torch.from_numpy(X).view(5, *net.input_shape)), 1).numpy()
    np.testing.assert_allclose(probs, net.predict_proba(X), atol=1e-5)
    # initialised like nn: He before ReLU (std sqrt(2 / fan_in)), Glorot for the output
    fresh = bench.torch_network(torch, spec)
    first = next(m for m in fresh if hasattr(m, "weight"))
    fan_in = first.weight[0].numel()
    assert float(first.weight.detach().std()) == pytest.approx(np.sqrt(2 / fan_in), rel=0.25)
