"""app_logic.inference: what a network says about one image and how it does on many.

Checked on the shipped network (whatever its architecture) and on a small,
untrained CNN, so both kinds of layers are covered. Each result is compared
with the network's own forward pass or gradient, computed separately.
"""

import threading

import numpy as np
import pytest

import nn
from app_logic import inference


@pytest.fixture(scope="module")
def digits(mnist):
    """A few MNIST test digits as (28, 28) images, and their labels."""
    X, y = mnist[1]
    return X[:8].reshape(-1, 28, 28), y[:8]


@pytest.fixture(scope="module")
def small_cnn():
    return nn.Network(nn.cnn_spec((4, 6), 3, (12,)), seed=1)


@pytest.fixture(params=["shipped", "cnn"])
def model(request, default_model, small_cnn):
    return default_model if request.param == "shipped" else small_cnn


def test_predict_gives_probabilities(model, digits):
    images, _ = digits
    for img in images:
        probs = inference.predict(model, img)
        assert probs.shape == (10,) and abs(float(probs.sum()) - 1) < 1e-5
        assert (probs >= 0).all()
        np.testing.assert_array_equal(probs, inference.predict(model, img.ravel()))


def test_the_shipped_network_reads_test_digits(default_model, digits):
    images, labels = digits
    predicted = [int(inference.predict(default_model, img).argmax()) for img in images]
    assert np.mean(np.array(predicted) == labels) >= 7 / 8


def test_smoothgrad(model, digits):
    img = digits[0][0]
    grad = inference.smoothgrad(model, img, 3)
    assert grad.shape == (28, 28)
    np.testing.assert_array_equal(grad, inference.smoothgrad(model, img, 3))   # seeded
    plain = model.input_gradient(img.ravel(), 3).reshape(28, 28)
    np.testing.assert_array_equal(inference.smoothgrad(model, img, 3, noise=0, samples=1), plain)
    # many noiseless copies go through as one batch: a CNN's batched matrix products sum
    # in another order than one image's, so equal to float32 rounding of the largest value
    np.testing.assert_allclose(inference.smoothgrad(model, img, 3, noise=0), plain,
                               rtol=1e-3, atol=1e-3 * np.abs(plain).max())
    assert not np.allclose(grad, plain)     # the noise does something
    assert not np.array_equal(grad, inference.smoothgrad(model, img, 4))


def test_layer_views_end_with_the_logits(model, digits):
    img = digits[0][0]
    views = inference.layer_views(model, img)
    logits = model.forward(img.reshape(1, *model.input_shape))[0]
    last = views[-1]
    assert last.kind == "units" and last.title.startswith("Output layer: 10 scores")
    np.testing.assert_allclose(last.values, logits, rtol=1e-5, atol=1e-5)
    assert last.index == len(model.layers) - 1
    indices = [v.index for v in views]
    assert indices == sorted(set(indices))
    for view in views:
        layer = model.layers[view.index]
        assert layer.type not in ("dropout", "flatten")
        assert view.kind == ("maps" if view.values.ndim == 3 else "units")
        if view.index + 1 < len(model.layers):   # shown after its activation and pooling
            following = model.layers[view.index + 1].type
            assert following not in nn.ACTIVATIONS and following != "maxpool2d"


def test_a_cnns_layer_views(small_cnn, digits):
    views = inference.layer_views(small_cnn, digits[0][0])
    maps = [v for v in views if v.kind == "maps"]
    assert [v.values.shape for v in maps] == [(4, 14, 14), (6, 7, 7)]   # after each pooling
    assert maps[0].title == f"Layer {maps[0].index + 1}: 4 feature maps of 14x14"
    assert [v.kind for v in views] == ["maps", "maps", "units", "units"]
    assert views[2].values.shape == (12,)


def test_top_units_add_up_to_the_score(model, digits):
    img = digits[0][1]
    cls = int(inference.predict(model, img).argmax())
    units, contributions, total = inference.top_units(model, img, cls, k=5)
    logits = model.forward(img.reshape(1, *model.input_shape))[0]
    bias = model.layers[-1].b[cls]
    assert total == pytest.approx(float(logits[cls] - bias), rel=1e-4, abs=1e-4)
    assert len(units) == len(contributions) == 5
    assert (np.diff(contributions) <= 0).all()
    features = model.features(img.reshape(1, -1))[0]
    np.testing.assert_allclose(contributions, features[units] * model.layers[-1].W[units, cls],
                               rtol=1e-6)
    everything = features * model.layers[-1].W[:, cls]
    assert contributions[0] == pytest.approx(everything.max())


def test_evaluate_and_misclassified(default_model, mnist):
    _, (X_test, y_test) = mnist
    X, y = X_test[:2000], y_test[:2000]
    report = default_model.evaluate(X, y)
    assert {"accuracy", "loss", "confusion_matrix", "per_class", "macro", "weighted",
            "n"} <= set(report)
    assert report["n"] == 2000 and report["accuracy"] > 0.95
    idx, pred, conf = inference.misclassified(default_model, X, y, n=10)
    assert 0 < len(idx) <= 10 and len(idx) == len(pred) == len(conf)
    assert (pred != y[idx]).all()
    assert (np.diff(conf) <= 0).all()               # the most confident mistake first
    probs = default_model.predict_proba(X[idx])
    np.testing.assert_array_equal(pred, probs.argmax(axis=1))
    np.testing.assert_allclose(conf, probs.max(axis=1), rtol=1e-6)
    # Every mistake, when n is large enough; none on the images it gets right.
    all_idx, *_ = inference.misclassified(default_model, X, y, n=2000)
    assert len(all_idx) == round(2000 * (1 - report["accuracy"]))
    right = np.flatnonzero(default_model.predict(X) == y)[:50]
    assert len(inference.misclassified(default_model, X[right], y[right])[0]) == 0


def test_inference_needs_no_lock(default_model, mnist):
    """The app serves one loaded network to every session without a lock: the same
    answers from 8 threads at once as from one."""
    images = mnist[1][0][:6].reshape(-1, 28, 28)

    def work(img):
        return (inference.predict(default_model, img),
                inference.smoothgrad(default_model, img, 3, samples=4))

    expected = [work(x) for x in images]
    results, errors = {}, []
    barrier = threading.Barrier(8)

    def run(k):
        try:
            barrier.wait()
            for i, x in enumerate(images):
                results[k, i] = work(x)
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 8 * len(images)
    for (_, i), (probs, grad) in results.items():
        np.testing.assert_allclose(probs, expected[i][0], rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(grad, expected[i][1], rtol=1e-4, atol=1e-6)
