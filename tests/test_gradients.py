"""Backpropagation against central finite differences, in float64.

Every analytic gradient the engine computes (Dense, Conv2D, MaxPool2D, each
activation, Dropout, the fused softmax-cross-entropy, whole multi-layer and
convolutional networks, the saliency map and SmoothGrad) is compared
with ``(f(x + eps) - f(x - eps)) / (2 eps)``; in float64 with eps = 1e-6 the two
agree to about 1e-9 relative, so a threshold of 1e-6 catches any real mistake
(a missing factor, a transposed matrix, a buffer overwritten too early).
A tiny network and a convolution worked out by hand pin the exact numbers as
well, and a convolution written as plain loops is an independent reference.
"""

import math

import numpy as np
import pytest

import nn
from nn.activations import ACTIVATIONS
from nn.conv import Conv2D, MaxPool2D
from nn.layers import Dense, Dropout, Flatten
from nn.losses import SoftmaxCrossEntropy

EPS = 1e-6
TOL = 1e-6


def rel_error(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = np.linalg.norm(a) + np.linalg.norm(b)
    return float(np.linalg.norm(a - b) / scale) if scale else 0.0


def numeric_grad(f, arr, indices=None):
    """Central differences of the scalar ``f()`` with respect to ``arr`` (modified in place
    and restored) at ``indices`` (all entries by default); returns an array like ``arr``
    with the checked entries filled and the others 0."""
    grad = np.zeros_like(arr, dtype=np.float64)
    indices = list(np.ndindex(arr.shape)) if indices is None else indices
    for idx in indices:
        old = arr[idx]
        arr[idx] = old + EPS
        plus = f()
        arr[idx] = old - EPS
        minus = f()
        arr[idx] = old
        grad[idx] = (plus - minus) / (2 * EPS)
    return grad


def to_float64(param):
    param.value = param.value.astype(np.float64)
    param.grad = np.zeros_like(param.value)


def away_from_zero(rng, shape, low=0.1, high=2.0):
    """Random values with |x| in [low, high]: no activation kink within eps."""
    return rng.uniform(low, high, shape) * rng.choice([-1.0, 1.0], shape)


# -- single layers ----------------------------------------------------------------

def test_dense_gradients():
    rng = np.random.default_rng(0)
    layer = Dense(5, 3, init="glorot", rng=rng)
    for p in layer.parameters():
        to_float64(p)
    layer.bias.value[...] = rng.standard_normal(3)
    X = rng.standard_normal((4, 5))
    G = rng.standard_normal((4, 3))  # L = sum(G * Y), so dL/dY = G

    def loss():
        return float(np.sum(G * layer.forward(X, training=True)))

    loss()
    dX = layer.backward(G.copy())
    assert dX.shape == X.shape
    assert rel_error(dX, numeric_grad(loss, X)) < TOL
    assert rel_error(layer.weight.grad, numeric_grad(loss, layer.weight.value)) < TOL
    assert rel_error(layer.bias.grad, numeric_grad(loss, layer.bias.value)) < TOL
    # and the closed forms themselves: dW = X^T G, db = column sums of G, dX = G W^T
    np.testing.assert_allclose(layer.weight.grad, X.T @ G, rtol=1e-12)
    np.testing.assert_allclose(layer.bias.grad, G.sum(axis=0), rtol=1e-12)
    np.testing.assert_allclose(dX, G @ layer.W.T, rtol=1e-12)


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activation_gradients(name):
    rng = np.random.default_rng(1)
    act = ACTIVATIONS[name]()
    X = away_from_zero(rng, (6, 7))
    G = rng.standard_normal((6, 7))

    def loss():
        return float(np.sum(G * act.forward(X.copy(), training=True)))

    loss()
    dX = act.backward(G.copy())
    assert np.abs(dX).max() > 0
    assert rel_error(dX, numeric_grad(loss, X)) < TOL


REFERENCE = {
    "relu": lambda x: np.maximum(x, 0),
    "leaky_relu": lambda x: np.where(x > 0, x, 0.01 * x),
    "sigmoid": lambda x: 1 / (1 + np.exp(-x)),
    "tanh": np.tanh,
}


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activation_forward_matches_formula_and_keeps_input(name):
    x = np.linspace(-30, 30, 61)
    original = x.copy()
    for training in (False, True):
        y = ACTIVATIONS[name]().forward(x, training=training)
        np.testing.assert_allclose(y, REFERENCE[name](original), rtol=1e-12, atol=1e-15)
        np.testing.assert_array_equal(x, original)  # never writes into its input


def test_sigmoid_does_not_overflow_for_large_negative_inputs():
    x = np.array([[-1000.0, -100.0, 0.0, 100.0, 1000.0]], dtype=np.float32)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        y = ACTIVATIONS["sigmoid"]().forward(x)
    np.testing.assert_allclose(y, [[0, 0, 0.5, 1, 1]], atol=1e-30)


def test_dropout_gradient_with_fixed_mask():
    rng = np.random.default_rng(2)
    layer = Dropout(0.4, rng=rng)
    X = rng.standard_normal((5, 8))
    keep = rng.random((5, 8)) >= 0.4
    layer.mask = keep / (1 - 0.4)
    layer.fixed_mask = True
    G = rng.standard_normal((5, 8))

    def loss():
        return float(np.sum(G * layer.forward(X, training=True)))

    assert np.array_equal(layer.forward(X, training=True) == 0, ~keep)
    loss()
    dX = layer.backward(G.copy())
    assert rel_error(dX, numeric_grad(loss, X)) < TOL
    # at test time dropout is the identity, and inference leaves the training state alone
    mask = layer.mask.copy()
    assert np.array_equal(layer.forward(X, training=False), X)
    np.testing.assert_array_equal(layer.mask, mask)
    # with p = 0 training is the identity too, forward and backward
    identity = Dropout(0.0)
    assert np.array_equal(identity.forward(X, training=True), X)
    assert np.array_equal(identity.backward(G.copy()), G)


def test_dropout_random_mask_is_inverted_dropout():
    layer = Dropout(0.25, rng=np.random.default_rng(3))
    X = np.ones((400, 500), dtype=np.float32)
    Y = layer.forward(X, training=True)
    kept = Y != 0
    assert abs(kept.mean() - 0.75) < 0.01  # each unit kept with probability 1 - p
    np.testing.assert_allclose(Y[kept], 1 / 0.75, rtol=1e-6)  # survivors scaled by 1/(1-p)
    assert abs(Y.mean() - 1.0) < 0.02  # so the expected output equals the input


def test_softmax_cross_entropy_gradient():
    rng = np.random.default_rng(4)
    Z = rng.standard_normal((6, 4)) * 3
    y = np.array([0, 3, 1, 1, 2, 0])
    loss_fn = SoftmaxCrossEntropy()

    def loss():
        return loss_fn.forward(Z, y)

    value = loss()
    p = np.exp(Z) / np.exp(Z).sum(axis=1, keepdims=True)
    assert value == pytest.approx(-np.mean(np.log(p[np.arange(6), y])), rel=1e-12)
    dZ = loss_fn.backward()
    onehot = np.eye(4)[y]
    np.testing.assert_allclose(dZ, (p - onehot) / 6, rtol=1e-10, atol=1e-15)
    assert rel_error(dZ, numeric_grad(loss, Z)) < TOL


def test_softmax_cross_entropy_is_stable_for_huge_logits():
    Z = np.array([[1000.0, 0.0, -1000.0], [0.0, 1000.0, 999.0]], dtype=np.float32)
    y = np.array([0, 2])
    loss_fn = SoftmaxCrossEntropy()
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        value = loss_fn.forward(Z, y)
    # sample 0: log(1 + e^-1000 + e^-2000) ~ 0; sample 1: log(e^1000 + e^999) - 999 = 1 + log(1 + e^-1)
    expected = (0.0 + 1 + math.log(1 + math.exp(-1))) / 2
    assert value == pytest.approx(expected, rel=1e-6)
    assert np.isfinite(loss_fn.backward()).all()


# -- whole networks -----------------------------------------------------------------

def make_network(activation, dropout, batch, seed=0):
    """A float64 6-7-5-4 network with nonzero biases and, with dropout, fixed masks."""
    rng = np.random.default_rng(seed + 100)
    model = nn.Network(nn.mlp_spec((7, 5), activation, dropout, n_inputs=6, n_classes=4),
                       seed=seed).astype(np.float64)
    for layer in model.dense_layers:
        layer.bias.value[...] = rng.normal(0, 0.3, layer.bias.value.shape)
    dropouts = [l for l in model.layers if isinstance(l, Dropout)]
    assert len(dropouts) == (2 if dropout else 0)
    for layer, width in zip(dropouts, (7, 5)):
        layer.mask = (rng.random((batch, width)) >= dropout) / (1 - dropout)
        layer.fixed_mask = True
    return model


def pre_activations(model, X):
    """The inputs of every hidden activation (to keep relu kinks out of reach)."""
    out, found = X, []
    for layer in model.layers:
        if layer.__class__.__name__ in {cls.__name__ for cls in ACTIVATIONS.values()}:
            found.append(out.copy())
        out = layer.forward(out.copy(), training=True)
    return found


@pytest.mark.parametrize("dropout", [0.0, 0.3])
@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_network_parameter_gradients(activation, dropout):
    rng = np.random.default_rng(5)
    batch = 5
    model = make_network(activation, dropout, batch)
    X = rng.uniform(0, 1, (batch, 6))
    y = rng.integers(0, 4, batch)
    assert min(np.abs(z).min() for z in pre_activations(model, X)) > 1e-4
    loss_fn = SoftmaxCrossEntropy()

    def loss():
        return loss_fn.forward(model.forward(X, training=True), y)

    loss()
    model.backward(loss_fn.backward())
    params = model.parameters()
    assert len(params) == 6
    for p in params:
        analytic = p.grad.copy()
        assert np.abs(analytic).max() > 0
        flat = rng.choice(p.value.size, size=min(p.value.size, 12), replace=False)
        indices = [np.unravel_index(i, p.value.shape) for i in flat]
        numeric = numeric_grad(loss, p.value, indices)
        rows = tuple(np.array(indices).T)
        assert rel_error(analytic[rows], numeric[rows]) < TOL, (p.name, p.value.shape)


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_input_gradient_is_the_class_logit_gradient(activation):
    rng = np.random.default_rng(6)
    model = make_network(activation, 0.3, batch=1)  # dropout is inactive at inference
    x = rng.uniform(0, 1, 6)
    for p in model.parameters():
        p.grad[...] = 7.0  # a saliency query must leave training state alone
    for cls in range(4):
        def logit():
            return float(model.forward(x[None, :])[0, cls])

        saliency = model.input_gradient(x, cls)
        assert saliency.shape == (6,) and np.abs(saliency).max() > 0
        assert rel_error(saliency, numeric_grad(logit, x)) < TOL
    assert all((p.grad == 7.0).all() for p in model.parameters())
    assert model.dense_layers[0].needs_input_grad is False
    # the default class is the predicted one
    predicted = int(model.predict(x)[0])
    np.testing.assert_array_equal(model.input_gradient(x), model.input_gradient(x, predicted))


def test_input_gradient_on_a_784_pixel_image():
    model = nn.Network(nn.mlp_spec((16,)), seed=1)
    image = np.random.default_rng(7).uniform(0, 1, (28, 28)).astype(np.float32)
    g = model.input_gradient(image, 3)
    assert g.shape == (784,) and np.isfinite(g).all() and np.abs(g).max() > 0
    np.testing.assert_array_equal(g, model.input_gradient(image.reshape(784), 3))
    with pytest.raises(ValueError, match="class"):
        model.input_gradient(image, 10)


# -- a network worked out by hand -------------------------------------------------------

def hand_network():
    """2 inputs -> 2 hidden relu -> 2 classes with explicit float64 weights."""
    model = nn.Network(nn.mlp_spec((2,), "relu", n_inputs=2, n_classes=2)).astype(np.float64)
    W0 = np.array([[1.0, -1.0],
                   [0.5, 1.0]])
    b0 = np.array([0.0, -2.0])
    W1 = np.array([[1.0, -1.0],
                   [2.0, 3.0]])
    b1 = np.array([-1.0, 1.0])
    model.set_weights([W0, b0, W1, b1])
    return model


def test_hand_computed_loss_and_gradients():
    model = hand_network()
    x = np.array([[1.0, 2.0]])
    y = np.array([0])
    # z1 = x W0 + b0 = [1*1 + 2*0.5 + 0, 1*(-1) + 2*1 - 2] = [2, -1]
    # h  = relu(z1)  = [2, 0]               (the second unit is off)
    # z2 = h W1 + b1 = [2*1 + 0*2 - 1, 2*(-1) + 0*3 + 1] = [1, -1]
    # p  = softmax(z2) = [e/(e + 1/e), (1/e)/(e + 1/e)] = [sigmoid(2), sigmoid(-2)]
    #    = [0.8807970779778823, 0.11920292202211755]
    # loss = -log p0 = log(1 + e^-2) = 0.12692801104297263
    q = 0.11920292202211755
    np.testing.assert_allclose(model.forward(x), [[1.0, -1.0]], rtol=0, atol=1e-15)
    np.testing.assert_allclose(model.predict_proba(x), [[1 - q, q]], rtol=1e-14)
    loss_fn = SoftmaxCrossEntropy()
    assert loss_fn.forward(model.forward(x, training=True), y) == pytest.approx(
        0.12692801104297263, rel=1e-14)
    model.dense_layers[0].needs_input_grad = True
    dx = model.backward(loss_fn.backward())
    W0g, b0g, W1g, b1g = (p.grad for p in model.parameters())
    # dz2 = p - onehot(0) = [-q, q]                        (batch of 1: no averaging)
    # dW1 = h^T dz2 = [[2*(-q), 2*q], [0*(-q), 0*q]]        db1 = dz2
    np.testing.assert_allclose(b1g, [-q, q], rtol=1e-14)
    np.testing.assert_allclose(W1g, [[-2 * q, 2 * q], [0, 0]], rtol=1e-14)
    # dh = dz2 W1^T = [-q*1 + q*(-1), -q*2 + q*3] = [-2q, q]
    # dz1 = dh * (z1 > 0) = [-2q, 0]                       (relu blocks the second unit)
    # dW0 = x^T dz1 = [[1*(-2q), 0], [2*(-2q), 0]]          db0 = dz1
    np.testing.assert_allclose(b0g, [-2 * q, 0], rtol=1e-14)
    np.testing.assert_allclose(W0g, [[-2 * q, 0], [-4 * q, 0]], rtol=1e-14)
    # dx = dz1 W0^T = [-2q*1 + 0*(-1), -2q*0.5 + 0*1] = [-2q, -q]
    np.testing.assert_allclose(dx, [[-2 * q, -q]], rtol=1e-14)


def test_hand_computed_saliency_and_batch_average():
    model = hand_network()
    # d logit0 / dx: dz2 = [1, 0] -> dh = [W1[0,0], W1[1,0]] = [1, 2] -> dz1 = [1, 0]
    #   -> dx = dz1 W0^T = [W0[0,0], W0[1,0]] = [1, 0.5]
    np.testing.assert_allclose(model.input_gradient(np.array([1.0, 2.0]), 0), [1.0, 0.5])
    # d logit1 / dx = [W1[0,1] * W0[0,0], W1[0,1] * W0[1,0]] = [-1, -0.5]
    np.testing.assert_allclose(model.input_gradient(np.array([1.0, 2.0]), 1), [-1.0, -0.5])
    # A second sample x = [0, 1], y = 1: z1 = [0.5, 1 - 2] = [0.5, -1], h = [0.5, 0],
    # z2 = [0.5 - 1, -0.5 + 1] = [-0.5, 0.5], p1 = sigmoid(1) = 0.7310585786300049,
    # loss = -log(0.7310585786300049) = 0.31326168751822286.
    # The batch loss is the mean: (0.12692801104297263 + 0.31326168751822286) / 2
    X = np.array([[1.0, 2.0], [0.0, 1.0]])
    y = np.array([0, 1])
    loss_fn = SoftmaxCrossEntropy()
    assert loss_fn.forward(model.forward(X, training=True), y) == pytest.approx(
        0.22009484928059774, rel=1e-14)
    model.backward(loss_fn.backward())
    batch_grads = [p.grad.copy() for p in model.parameters()]
    # ...and so is its gradient: the mean of the two single-sample gradients
    single = []
    for i in range(2):
        loss_fn.forward(model.forward(X[i:i + 1], training=True), y[i:i + 1])
        model.backward(loss_fn.backward())
        single.append([p.grad.copy() for p in model.parameters()])
    for g, g0, g1 in zip(batch_grads, *single):
        np.testing.assert_allclose(g, (g0 + g1) / 2, rtol=1e-14, atol=1e-16)


# -- convolution and pooling ----------------------------------------------------------------

def loop_conv(x, w, b, padding):
    """The definition, as plain loops: y[n, o, i, j] = b[o] + sum over c, di, dj of
    w[o, c, di, dj] * x_padded[n, c, i + di, j + dj]. Slow, obviously right."""
    n, c, h, wd = x.shape
    o, _, k, _ = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    oh, ow = h + 2 * padding - k + 1, wd + 2 * padding - k + 1
    y = np.zeros((n, o, oh, ow))
    for a in range(n):
        for f in range(o):
            for i in range(oh):
                for j in range(ow):
                    y[a, f, i, j] = b[f] + np.sum(w[f] * xp[a, :, i:i + k, j:j + k])
    return y


def float64_conv(in_channels, out_channels, k, padding, seed):
    rng = np.random.default_rng(seed)
    layer = Conv2D(in_channels, out_channels, k, padding=padding, rng=rng)
    for p in layer.parameters():
        to_float64(p)
    layer.bias.value[...] = rng.standard_normal(out_channels)
    return layer, rng


@pytest.mark.parametrize("in_channels, out_channels, k, padding, size",
                         [(1, 4, 3, 1, (6, 5)), (3, 2, 3, 0, (5, 6)), (2, 3, 5, 2, (7, 7)),
                          (4, 1, 1, 0, (3, 4)), (2, 2, 4, 1, (6, 6))])
def test_conv_matches_loops_and_finite_differences(in_channels, out_channels, k, padding, size):
    layer, rng = float64_conv(in_channels, out_channels, k, padding, seed=8)
    X = rng.standard_normal((2, in_channels, *size))
    Y = layer.forward(X, training=True)
    np.testing.assert_allclose(Y, loop_conv(X, layer.weight.value, layer.bias.value, padding),
                               rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(layer.forward(X), Y)  # inference computes the same
    G = rng.standard_normal(Y.shape)

    def loss():
        return float(np.sum(G * layer.forward(X, training=True)))

    loss()
    dX = layer.backward(G.copy())
    assert dX.shape == X.shape
    assert rel_error(dX, numeric_grad(loss, X)) < TOL
    assert rel_error(layer.weight.grad, numeric_grad(loss, layer.weight.value)) < TOL
    assert rel_error(layer.bias.grad, numeric_grad(loss, layer.bias.value)) < TOL
    assert np.abs(layer.weight.grad).max() > 0 and np.abs(dX).max() > 0


def test_conv_worked_by_hand():
    layer = Conv2D(1, 1, 2, padding=0)
    layer.weight.value[...] = [[[[1, 2], [3, 4]]]]
    layer.bias.value[...] = [0.5]
    x = np.array([[[[1, 0, 2], [0, 1, 0], [3, 0, 1]]]], dtype=np.float32)
    # y[0, 0] = 1*1 + 2*0 + 3*0 + 4*1 + 0.5 = 5.5     y[0, 1] = 1*0 + 2*2 + 3*1 + 4*0 + 0.5 = 7.5
    # y[1, 0] = 1*0 + 2*1 + 3*3 + 4*0 + 0.5 = 11.5    y[1, 1] = 1*1 + 2*0 + 3*0 + 4*1 + 0.5 = 5.5
    y = layer.forward(x, training=True)
    np.testing.assert_array_equal(y, [[[[5.5, 7.5], [11.5, 5.5]]]])
    # With dL/dy = 1 everywhere: dL/dw[a, b] = sum of the inputs each weight touched,
    # dL/db = 4 (four outputs), dL/dx[i, j] = sum of the weights that saw pixel (i, j).
    dx = layer.backward(np.ones_like(y))
    np.testing.assert_array_equal(layer.weight.grad, [[[[2, 3], [4, 2]]]])
    np.testing.assert_array_equal(layer.bias.grad, [4])
    np.testing.assert_array_equal(dx, [[[[1, 3, 2], [4, 10, 6], [3, 7, 4]]]])


@pytest.mark.parametrize("k, size", [(2, (6, 8)), (2, (7, 5)), (3, (7, 9))])
def test_maxpool_gradients(k, size):
    rng = np.random.default_rng(9)
    layer = MaxPool2D(k)
    X = rng.permutation(np.arange(2 * 3 * size[0] * size[1], dtype=np.float64)).reshape(2, 3, *size)
    X = X / X.size + rng.uniform(0, 1e-3, X.shape)   # distinct values: no ties within eps
    Y = layer.forward(X, training=True)
    oh, ow = size[0] // k, size[1] // k
    expected = X[:, :, :oh * k, :ow * k].reshape(2, 3, oh, k, ow, k).max(axis=(3, 5))
    np.testing.assert_array_equal(Y, expected)
    G = rng.standard_normal(Y.shape)

    def loss():
        return float(np.sum(G * layer.forward(X, training=True)))

    loss()
    dX = layer.backward(G.copy())
    assert rel_error(dX, numeric_grad(loss, X)) < TOL
    assert np.count_nonzero(dX) == G.size  # one input per window gets the gradient


def test_maxpool_sends_a_tied_window_gradient_to_its_first_maximum():
    # After a ReLU, or over a blank background, all four values of a window are equal;
    # the gradient must reach one of them (as in PyTorch: the first), not all four.
    layer = MaxPool2D(2)
    x = np.array([[[[3.0, 3.0, 1.0, 2.0], [3.0, 3.0, 2.0, 2.0]]]])
    layer.forward(x, training=True)
    dx = layer.backward(np.array([[[[10.0, 20.0]]]]))
    np.testing.assert_array_equal(dx, [[[[10, 0, 0, 20], [0, 0, 0, 0]]]])


def cnn_network(activation, seed=0):
    spec = {"input_shape": [2, 6, 6], "layers": [
        {"type": "conv2d", "out_channels": 3, "kernel_size": 3, "padding": 1},
        {"type": activation}, {"type": "maxpool2d", "kernel_size": 2},
        {"type": "conv2d", "out_channels": 4, "kernel_size": 2, "padding": 0},
        {"type": activation}, {"type": "flatten"},
        {"type": "dense", "out_features": 5}, {"type": activation},
        {"type": "dense", "out_features": 3}]}
    model = nn.Network(spec, seed=seed).astype(np.float64)
    rng = np.random.default_rng(seed + 50)
    for layer in model.param_layers:
        layer.bias.value[...] = rng.normal(0, 0.3, layer.bias.value.shape)
    return model


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_cnn_parameter_and_input_gradients(activation):
    rng = np.random.default_rng(10)
    model = cnn_network(activation)
    X = rng.uniform(0, 1, (3, 2, 6, 6))
    y = np.array([0, 2, 1])
    loss_fn = SoftmaxCrossEntropy()

    def loss():
        return loss_fn.forward(model.forward(X, training=True), y)

    loss()
    model.backward(loss_fn.backward())
    params = model.parameters()
    assert len(params) == 8
    for p in params:
        analytic = p.grad.copy()
        assert np.abs(analytic).max() > 0
        numeric = numeric_grad(loss, p.value)
        assert rel_error(analytic, numeric) < TOL, (p.name, p.value.shape)
    # the saliency of a convolutional network, against finite differences of the logit
    x = X[:1].reshape(-1).copy()
    for cls in range(3):
        def logit():
            return float(model.forward(x.reshape(1, 2, 6, 6))[0, cls])

        assert rel_error(model.input_gradient(x, cls), numeric_grad(logit, x)) < TOL


def test_smoothgrad_is_the_mean_gradient_over_noisy_copies():
    model = cnn_network("tanh")
    x = np.random.default_rng(11).uniform(0, 1, 72)
    plain = model.input_gradient(x, 1)
    np.testing.assert_array_equal(model.input_gradient(x, 1, noise=0.0, samples=1), plain)
    np.testing.assert_allclose(model.input_gradient(x, 1, noise=0.0, samples=8), plain,
                               rtol=1e-12, atol=1e-15)
    smooth = model.input_gradient(x, 1, noise=0.2, samples=16, rng=np.random.default_rng(5))
    noisy = x[None, :] + np.random.default_rng(5).normal(0, 0.2, (16, 72))
    by_hand = np.mean([model.input_gradient(row, 1) for row in noisy], axis=0)
    np.testing.assert_allclose(smooth, by_hand, rtol=1e-10, atol=1e-14)
    assert rel_error(smooth, plain) > 1e-3   # the noise does change the map
