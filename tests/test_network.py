"""nn.Network: the legacy model file still predicts exactly what the old code
did; ``activations``, ``features`` and ``predict_proba`` agree with
``forward``; inference stores nothing on the layers, so one network serves many
threads at once; ``copy`` is independent; ``forget_training_state`` frees what
training left behind."""

import threading
from pathlib import Path

import numpy as np
import pytest

import nn
from helpers import small_model
from nn.losses import softmax

FIXTURES = Path(__file__).parent / "fixtures"
LEGACY = FIXTURES / "legacy_mlp_v1.npz"


@pytest.fixture(scope="module")
def legacy():
    return nn.load(LEGACY)


@pytest.fixture(scope="module")
def expected():
    with np.load(FIXTURES / "legacy_mlp_v1_expected.npz", allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def synthetic_inputs():
    """The inputs the expected probabilities were computed from (see the fixture's notes)."""
    rng = np.random.default_rng(20261201)
    X = rng.random((64, 784), dtype=np.float32)
    X[32:] *= rng.random((32, 784)) < 0.15
    return X


def networks():
    """One network of each kind, with dropout, so every layer type is exercised."""
    return {"mlp": nn.Network(nn.mlp_spec((16, 8), "tanh", 0.2), seed=3),
            "cnn": nn.Network(nn.cnn_spec((3, 4), kernel=3, hidden=(8,), dropout=0.1), seed=4)}


@pytest.fixture(params=["mlp", "cnn"])
def model(request):
    return networks()[request.param]


def images(n=6, seed=0):
    return np.random.default_rng(seed).random((n, 784), dtype=np.float32)


# -- the legacy model ----------------------------------------------------------------------------

def test_legacy_file_loads_as_the_old_network(legacy):
    assert legacy.describe() == "784-256-128-10 (relu)" and legacy.kind == "mlp"
    assert legacy.spec == nn.mlp_spec((256, 128), "relu", 0.1)
    assert legacy.recipe["optimizer"] == "adam" and legacy.recipe["epochs"] == 15
    assert legacy.trained_on == {"n_train": 55000}
    assert len(legacy.history) == 15 and legacy.metrics["n"] == 10000


def same_predictions(probs, expected):
    """The same answers and, to float32 rounding, the same probabilities.

    The expected values were written on the development machine; another CPU's BLAS
    sums the float32 products in another order (seen: 6e-7 apart on CI), so bit-for-bit
    equality holds only on one machine. Wrong weights, a missed layer or a changed
    activation would move them by far more than this.
    """
    np.testing.assert_array_equal(probs.argmax(1), expected.argmax(1))
    np.testing.assert_allclose(probs, expected, rtol=1e-4, atol=2e-6)


def test_legacy_model_predicts_identically_on_synthetic_inputs(legacy, expected):
    same_predictions(legacy.predict_proba(synthetic_inputs()), expected["synthetic_probs"])


def test_legacy_model_predicts_identically_on_mnist(legacy, expected, mnist):
    _, (X_test, _) = mnist
    same_predictions(legacy.predict_proba(X_test[:1000]), expected["mnist_test_probs_first1000"])


def test_legacy_model_resaved_in_today_format_predicts_identically(legacy, tmp_path):
    nn.save(legacy, tmp_path / "v2.npz")
    again = nn.load(tmp_path / "v2.npz")
    # same machine, same weights: bit for bit
    np.testing.assert_array_equal(again.predict_proba(synthetic_inputs()),
                                  legacy.predict_proba(synthetic_inputs()))
    assert again.spec == legacy.spec and again.recipe == legacy.recipe


# -- activations, features, probabilities -------------------------------------------------------

def test_activations_one_entry_per_layer_ending_in_the_logits(model):
    X = images()
    acts = model.activations(X[0])
    assert [layer for layer, _ in acts] == model.layers
    assert [out.shape for _, out in acts] == nn.architecture.shapes(model.spec)
    logits = model.forward(X[:1].reshape(1, *model.input_shape))
    np.testing.assert_allclose(acts[-1][1], logits[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(softmax(acts[-1][1][None]), model.predict_proba(X[:1]),
                               rtol=1e-5, atol=1e-7)
    # a (28, 28) image is the same image
    np.testing.assert_array_equal(model.activations(X[0].reshape(28, 28))[-1][1], acts[-1][1])
    with pytest.raises(ValueError, match="single image"):
        model.activations(X[:2])


def test_each_activation_is_its_layer_applied_to_the_previous_one(model):
    x = images(1)[0]
    acts = model.activations(x)
    out = x.reshape(1, *model.input_shape)
    for layer, got in acts:
        out = layer.forward(out)
        np.testing.assert_allclose(got, out[0], rtol=1e-6, atol=1e-7)


def test_features_are_the_input_of_the_last_dense_layer(model):
    X = images(5)
    feats = model.features(X)
    last = model.dense_layers[-1]
    assert last is model.layers[-1] and feats.shape == (5, last.in_features)
    logits = model.forward(X.reshape(5, *model.input_shape))
    np.testing.assert_allclose(feats @ last.W + last.b, logits, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(feats[0], model.activations(X[0])[-2][1].ravel(), rtol=1e-5,
                               atol=1e-6)
    assert model.features(X[:0]).shape == (0, last.in_features)


def test_predict_proba_and_predict(model):
    X = images(7)
    p = model.predict_proba(X)
    assert p.shape == (7, 10) and p.dtype == np.float32
    np.testing.assert_allclose(p.sum(axis=1), 1, rtol=1e-5)
    np.testing.assert_array_equal(model.predict(X), p.argmax(axis=1))
    np.testing.assert_allclose(model.predict_proba(X, batch_size=2), p, rtol=1e-6)  # batches
    np.testing.assert_array_equal(model.predict_proba(X[0]), model.predict_proba(X[:1]))
    with pytest.raises(ValueError, match=r"expected images of shape \(n, 784\)"):
        model.predict_proba(np.zeros((2, 100), np.float32))


@pytest.mark.parametrize("shape", [(2, 392), (4, 196), (16, 49)])
def test_a_batch_of_the_wrong_width_is_refused(shape):
    model = small_model((8,))
    with pytest.raises(ValueError, match=r"expected images of shape \(n, 784\)"):
        model.predict_proba(np.zeros(shape, np.float32))


def test_evaluate_and_loss_and_accuracy_agree(model):
    X, y = images(40), np.arange(40) % 10
    report = model.evaluate(X, y, batch_size=16)
    loss, acc = model.loss_and_accuracy(X, y)
    assert report["accuracy"] == acc and report["n"] == 40
    assert report["loss"] == pytest.approx(loss, rel=1e-6)
    assert report["accuracy"] == np.mean(model.predict(X) == y)


# -- inference stores nothing -----------------------------------------------------------------

def layer_state(model):
    """Each layer's attribute names, and the identity of every array it holds."""
    return [(sorted(vars(layer)), {k: id(v) for k, v in vars(layer).items()})
            for layer in model.layers]


def dropout_rngs(model):
    return [layer.rng.bit_generator.state for layer in model.layers
            if isinstance(layer, nn.Dropout)]


@pytest.mark.parametrize("trained", [False, True])
def test_inference_stores_nothing_on_the_layers(model, trained):
    X = images(8)
    if trained:
        nn.fit(model, X, np.arange(8) % 10, epochs=1, batch_size=4, val_size=0)
    before, rngs = layer_state(model), dropout_rngs(model)
    weights = model.get_weights()
    model.predict_proba(X)
    model.predict(X)
    model.activations(X[0])
    model.features(X)
    model.evaluate(X, np.arange(8) % 10)
    model.input_gradient(X[0])
    model.input_gradient(X[1], cls=3, noise=0.1, samples=4)
    model.forward(X.reshape(8, *model.input_shape), training=False)
    after = layer_state(model)
    assert after == before
    assert not [name for layer in model.layers for name in vars(layer) if name.startswith("_")]
    assert dropout_rngs(model) == rngs  # no dropout mask was drawn
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), weights, strict=True))


def test_one_network_serves_eight_threads_at_once(model):
    """Each thread has its own images, so a buffer shared between threads would mix
    their results; every thread must get exactly what a lone caller gets."""
    batches = [images(16, seed=i) for i in range(8)]
    expected_p = [model.predict_proba(X) for X in batches]
    expected_f = [model.features(X) for X in batches]
    expected_g = [model.input_gradient(X[0], noise=0.05 * (i % 2), samples=1 + i % 3,
                                       rng=np.random.default_rng(i))
                  for i, X in enumerate(batches)]
    barrier = threading.Barrier(8)
    results, errors = [None] * 8, []

    def work(i):
        try:
            barrier.wait()
            got = []
            for _ in range(5):
                got.append((model.predict_proba(batches[i]), model.features(batches[i]),
                            model.input_gradient(batches[i][0], noise=0.05 * (i % 2),
                                                 samples=1 + i % 3, rng=np.random.default_rng(i))))
            results[i] = got
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for i, got in enumerate(results):
        for p, f, g in got:
            np.testing.assert_array_equal(p, expected_p[i])
            np.testing.assert_array_equal(f, expected_f[i])
            np.testing.assert_array_equal(g, expected_g[i])


def test_input_gradient_checks_its_arguments(model):
    x = images(1)[0]
    assert model.input_gradient(x).shape == (784,)
    for kwargs, message in (({"cls": 10}, "class must be in"), ({"samples": 0}, "samples"),
                            ({"noise": -0.1}, "noise"), ({"noise": float("nan")}, "noise")):
        with pytest.raises(ValueError, match=message):
            model.input_gradient(x, **kwargs)
    with pytest.raises(ValueError, match="single image"):
        model.input_gradient(images(2))


# -- copies and training state --------------------------------------------------------------------

def test_copy_is_independent(model):
    X, y = images(8), np.arange(8) % 10
    nn.fit(model, X, y, epochs=1, batch_size=4, val_size=0)
    model.metrics = model.evaluate(X, y)
    twin = model.copy()
    assert twin is not model and twin.spec == model.spec and twin.recipe == model.recipe
    assert twin.history == model.history and twin.metrics == model.metrics
    assert twin.trained_on == model.trained_on and twin.seed == model.seed
    np.testing.assert_array_equal(twin.predict_proba(X), model.predict_proba(X))
    before = [w.copy() for w in model.get_weights()]
    history = [dict(r) for r in model.history]
    # training, editing or mutating the copy leaves the original alone
    nn.fit(twin, X, y, epochs=2, batch_size=4, val_size=0, lr=0.01)
    twin.parameters()[0].value[...] = 0
    twin.spec["layers"][-1]["out_features"] = 99
    twin.recipe["lr"] = 99.0
    twin.metrics["accuracy"] = -1
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), before, strict=True))
    assert model.history == history and model.spec["layers"][-1]["out_features"] == 10
    assert model.recipe["lr"] != 99.0 and model.metrics["accuracy"] != -1
    assert not any(a is b for a, b in zip(twin.layers, model.layers))
    assert not any(p.value is q.value or p.grad is q.grad
                   for p, q in zip(twin.parameters(), model.parameters()))


def state_bytes(model):
    """Bytes held by the layers in arrays other than their parameters' values and gradients."""
    total = 0
    for layer in model.layers:
        stack = [v for k, v in vars(layer).items() if k not in ("weight", "bias")]
        while stack:
            v = stack.pop()
            if isinstance(v, np.ndarray):
                total += v.nbytes
            elif isinstance(v, dict):
                stack.extend(v.values())
            elif isinstance(v, (list, tuple)):
                stack.extend(v)
    return total


def test_forget_training_state_frees_the_caches(model):
    X = images(32)
    model.forward(X.reshape(32, *model.input_shape), training=True)
    assert any(name.startswith("_") for layer in model.layers for name in vars(layer))
    model.forget_training_state()
    assert not [name for layer in model.layers for name in vars(layer) if name.startswith("_")]
    np.testing.assert_array_equal(model.predict_proba(X), model.copy().predict_proba(X))


def test_after_fit_a_network_holds_only_its_weights():
    model = small_model((64, 32), dropout=0.5)
    X = images(256)
    nn.fit(model, X, np.arange(256) % 10, epochs=1, batch_size=128, val_size=0)
    model.forget_training_state()
    assert state_bytes(model) == 0, f"{state_bytes(model):,} bytes of training state left"


def test_fit_leaves_no_training_caches(model):
    X = images(16)
    nn.fit(model, X, np.arange(16) % 10, epochs=1, batch_size=8, val_size=0)
    assert not [name for layer in model.layers for name in vars(layer) if name.startswith("_")]


def test_get_and_set_weights(model):
    weights = model.get_weights()
    assert [w.shape for w in weights] == [p.value.shape for p in model.parameters()]
    weights[0][...] = 0  # copies: the model is untouched
    assert model.parameters()[0].value.any()
    model.set_weights(weights)
    assert not model.parameters()[0].value.any()
    with pytest.raises(ValueError, match="expected"):
        model.set_weights(weights[:-1])
    with pytest.raises(ValueError, match="expected shape"):
        model.set_weights([np.zeros((1, 1), np.float32)] + weights[1:])


def test_astype_float64_keeps_the_predictions(model):
    X = images(4)
    p32 = model.predict_proba(X)
    model.forward(X.reshape(4, *model.input_shape), training=True)  # leaves float32 buffers
    model.astype(np.float64)
    p64 = model.predict_proba(X)
    assert p64.dtype == np.float64 and all(p.value.dtype == np.float64 for p in model.parameters())
    np.testing.assert_allclose(p64, p32, rtol=1e-4, atol=1e-6)
    out = model.forward(X.astype(np.float64).reshape(4, *model.input_shape), training=True)
    assert out.dtype == np.float64


def test_same_seed_same_network_and_repr():
    a, b = networks(), networks()
    for kind in a:
        assert all(np.array_equal(p, q) for p, q in
                   zip(a[kind].get_weights(), b[kind].get_weights(), strict=True))
    assert repr(a["mlp"]) == "Network(784-16-8-10 (tanh), 12,786 parameters)"
    assert a["mlp"].n_parameters == 785 * 16 + 17 * 8 + 9 * 10
