"""train.py as a user runs it: a quick real run, and every bad argument answered
with exit status 2, one ``train.py: error:`` line and no files written."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import nn
from conftest import DEFAULT_MODEL, ROOT, mnist_path, require


def run_train(args, data_dir=None, timeout=120):
    env = dict(os.environ, MNIST_DATA=str(data_dir or mnist_path()), MPLBACKEND="Agg",
               PYTHONHASHSEED="0")
    return subprocess.run([sys.executable, "train.py", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def quick_run(mnist_dir, tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("quick")
    proc = run_train(["--preset", "plain", "--n-images", "2000", "--epochs", "1", "--quiet",
                      "--no-download", "--out", str(out_dir / "m.npz")], data_dir=mnist_dir)
    return proc, out_dir


@pytest.mark.slow
def test_quick_run_writes_everything(quick_run):
    proc, out_dir = quick_run
    assert proc.returncode == 0, proc.stderr
    assert sorted(os.listdir(out_dir)) == ["m.json", "m.npz"]


@pytest.mark.slow
def test_quick_run_prints_the_report(quick_run):
    proc, _ = quick_run
    out = proc.stdout
    assert "epoch   1" in out and "test accuracy" in out
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:5] ==
                  ["digit", "precision", "recall", "f1", "support"])
    rows = [lines[header + 1 + k].split() for k in range(10)]
    assert [int(r[0]) for r in rows] == list(range(10))
    assert sum(int(r[4]) for r in rows) == 10000  # supports of the full test set
    assert lines[header + 11].split()[0] == "macro" and lines[header + 12].split()[0] == "weighted"
    cm_title = next(i for i, line in enumerate(lines) if line.startswith("confusion matrix"))
    assert lines[cm_title + 1].split() == [str(j) for j in range(10)]
    cm = np.array([[int(v) for v in lines[cm_title + 2 + i].split()] for i in range(10)])
    assert (cm[:, 0] == np.arange(10)).all()  # the row labels
    assert cm[:, 1:].sum() == 10000


@pytest.mark.slow
def test_quick_run_model_loads_and_its_metrics_are_true(quick_run, mnist):
    proc, out_dir = quick_run
    assert proc.returncode == 0, proc.stderr
    (_, _), (X_test, y_test) = mnist
    model = nn.load(out_dir / "m.npz")
    assert model.describe() == "784-128-64-10 (relu)" and len(model.history) == 1
    assert model.recipe["n_images"] == 2000 and model.trained_on["n_train"] == 1800
    report = nn.metrics.classification_report(y_test, model.predict(X_test))
    stored = model.metrics
    assert stored["confusion_matrix"] == report["confusion_matrix"]
    assert stored["accuracy"] == pytest.approx(report["accuracy"], abs=1e-12)
    for key in ("precision", "recall", "f1"):
        np.testing.assert_allclose(stored["per_class"][key], report["per_class"][key])
        assert stored["macro"][key] == pytest.approx(report["macro"][key])
        assert stored["weighted"][key] == pytest.approx(report["weighted"][key])
    assert stored["per_class"]["support"] == report["per_class"]["support"]
    assert stored["loss"] == pytest.approx(model.loss_and_accuracy(X_test, y_test)[0], rel=1e-6)
    assert stored["accuracy"] > 0.6  # 1800 images, one epoch of 15 batches: about 75%
    assert f"test accuracy {100 * stored['accuracy']:.2f}%" in proc.stdout
    saved = json.loads((out_dir / "m.json").read_text())
    assert saved["metrics"]["confusion_matrix"] == stored["confusion_matrix"]
    assert saved["history"] == model.history


# -- bad arguments --------------------------------------------------------------------------

# (arguments, a word the error line must contain). The ones that fail before any data
# is read run with an empty MNIST folder and --no-download: if a check were missing,
# they would still fail fast (with the wrong message) instead of training.
BEFORE_DATA = [
    (["--lr", "-1"], "lr"),
    (["--lr", "0"], "lr"),
    (["--lr", "nan"], "lr"),
    (["--epochs", "0"], "epochs"),
    (["--hidden", "0"], "hidden"),
    (["--conv", "8", "0"], "conv"),
    (["--kernel", "40"], "kernel"),
    (["--rotate", "-5"], "rotate"),
    (["--hidden", "128", "12.5"], "12.5"),
    (["--activation", "foo"], "activation"),
    (["--optimizer", "foo"], "optimizer"),
    (["--batch-size", "0"], "batch_size"),
    (["--dropout", "1.0"], "dropout"),
    (["--momentum", "1.5", "--optimizer", "momentum"], "momentum"),
    (["--nesterov", "--optimizer", "sgd"], "nesterov"),
    (["--schedule", "linear"], "schedule"),
    (["--n-images", "5"], "n_images"),
    (["--n-images", "100", "--batch-size", "500"], "batch_size"),
    (["--preset", "huge"], "preset"),
    (["--data", "/nonexistent", "--no-download"], "MNIST"),
]


def assert_usage_error(proc, word, tmp_path):
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("train.py: error:")
    assert word.lower() in lines[0].lower(), lines[0]
    assert {p.name for p in tmp_path.iterdir()} <= {"empty_mnist"}  # nothing written


@pytest.mark.parametrize("args,word", BEFORE_DATA, ids=[" ".join(a) for a, _ in BEFORE_DATA])
def test_bad_argument(args, word, tmp_path):
    empty = tmp_path / "empty_mnist"
    empty.mkdir()
    proc = run_train([*args, "--no-download", "--out", str(tmp_path / "m.npz")],
                     data_dir=empty, timeout=60)
    assert_usage_error(proc, word, tmp_path)
    assert not list(empty.iterdir())


def test_out_into_a_missing_folder(tmp_path):
    proc = run_train(["--no-download", "--out", str(tmp_path / "missing" / "m.npz")],
                     data_dir=tmp_path / "nowhere", timeout=60)
    assert_usage_error(proc, "out", tmp_path)


def test_out_must_be_npz(tmp_path):
    proc = run_train(["--no-download", "--out", str(tmp_path / "m.pkl")],
                     data_dir=tmp_path / "nowhere", timeout=60)
    assert_usage_error(proc, ".npz", tmp_path)


# -- defaults ------------------------------------------------------------------------------

@pytest.mark.parametrize("preset, path", [("default", DEFAULT_MODEL),
                                          ("mlp", ROOT / "weights" / "mlp.npz")])
def test_presets_are_what_the_shipped_networks_were_trained_with(preset, path):
    """`python train.py` and `python train.py --preset mlp` reproduce the shipped files."""
    require(path.exists(), f"{path} not found (see the README for the command)")
    model = nn.load(path)
    recipe = nn.recipe.PRESETS[preset]
    assert model.spec == recipe.spec()
    assert {k: v for k, v in model.recipe.items() if k in nn.recipe.SETTINGS} == recipe.to_dict()
    assert model.seed == recipe.seed
    assert len(model.history) == recipe.epochs


def test_help_exits_zero():
    proc = run_train(["--help"], timeout=60)
    assert proc.returncode == 0 and not proc.stderr
    for option in ("--hidden", "--conv", "--kernel", "--rotate", "--elastic", "--preset"):
        assert option in proc.stdout
