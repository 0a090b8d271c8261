"""The networks the app ships with (weights/default.npz, a CNN, and weights/mlp.npz, an
MLP): as good as the README claims, and what they store about themselves is true."""

import numpy as np
import pytest

import nn
from conftest import DEFAULT_MODEL, require

# name -> (kind, lowest MNIST test accuracy promised in the README)
SHIPPED = {"default": ("cnn", 0.994), "mlp": ("mlp", 0.990)}
HISTORY_KEYS = {"epoch", "train_loss", "train_acc", "val_loss", "val_acc", "seconds", "lr"}


@pytest.fixture(scope="module", params=sorted(SHIPPED))
def shipped(request):
    path = DEFAULT_MODEL.with_name(f"{request.param}.npz")
    require(path.exists(), f"{path} not found (see the README for the command)")
    return request.param, nn.load(path)


@pytest.fixture(scope="module")
def default_model(shipped):  # every test below runs for each shipped network
    return shipped[1]


@pytest.fixture(scope="module")
def evaluation(default_model, mnist):
    """The test report and the mean cross-entropy, from one pass over the test set."""
    (_, _), (X_test, y_test) = mnist
    probs = default_model.predict_proba(X_test)
    report = nn.metrics.classification_report(y_test, probs.argmax(axis=1))
    report["loss"] = float(-np.mean(np.log(np.maximum(probs[np.arange(len(y_test)), y_test],
                                                      np.finfo(np.float32).tiny))))
    return report, X_test, y_test


def test_accuracy_on_the_test_set(evaluation, shipped):
    name, model = shipped
    report, _, _ = evaluation
    kind, bar = SHIPPED[name]
    assert model.kind == kind
    assert report["n"] == 10000
    assert report["accuracy"] >= bar
    assert model.metrics["accuracy"] == pytest.approx(report["accuracy"], abs=1e-4)


def test_stored_evaluation_is_true(evaluation, default_model):
    report, X_test, y_test = evaluation
    stored = default_model.metrics
    assert stored["n"] == 10000
    assert stored["confusion_matrix"] == report["confusion_matrix"]
    for key in ("precision", "recall", "f1"):
        np.testing.assert_allclose(stored["per_class"][key], report["per_class"][key], atol=1e-9)
        assert stored["macro"][key] == pytest.approx(report["macro"][key], abs=1e-9)
        assert stored["weighted"][key] == pytest.approx(report["weighted"][key], abs=1e-9)
    assert stored["per_class"]["support"] == report["per_class"]["support"]
    assert stored["loss"] == pytest.approx(report["loss"], abs=1e-4)


def test_every_digit_is_recognised(evaluation):
    report, _, _ = evaluation
    assert min(report["per_class"]["recall"]) >= 0.95
    assert min(report["per_class"]["precision"]) >= 0.95


def test_default_file_is_small_and_trained_within_20_minutes():
    assert DEFAULT_MODEL.stat().st_size < 5 * 2**20
    assert nn.load(DEFAULT_MODEL).train_seconds <= 20 * 60


def test_history_is_complete(default_model):
    history = default_model.history
    epochs = default_model.recipe["epochs"]
    assert len(history) == epochs
    assert [r["epoch"] for r in history] == list(range(1, epochs + 1))
    for r in history:
        assert set(r) == HISTORY_KEYS
        assert all(np.isfinite(r[k]) for k in HISTORY_KEYS)
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert history[-1]["val_acc"] >= 0.98
    assert default_model.train_seconds > 0


def test_architecture_and_probabilities(default_model, mnist):
    (_, _), (X_test, _) = mnist
    # whatever the architecture: (n, 784) in, (n, 10) probabilities out
    p = default_model.predict_proba(X_test[:100])
    assert p.dtype == np.float32 and p.shape == (100, 10)
    np.testing.assert_allclose(p.sum(axis=1), 1, rtol=1e-5)
    # a single image as (28, 28) gives the same answer as in a batch
    np.testing.assert_allclose(default_model.predict_proba(X_test[7].reshape(28, 28)), p[7:8],
                               rtol=1e-5, atol=1e-7)
