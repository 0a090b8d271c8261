"""``Network``: a sequence of layers built from a spec, and everything worth
keeping about a trained model.

    net = Network(mlp_spec((128, 64)), seed=0)          # or cnn_spec((8, 16), ...)
    net.predict_proba(X)                                # X (n, 784) in [0, 1] -> (n, 10)

Whatever the architecture, the public input is a batch of flattened 28x28
images, ``(n, 784)``; a convolutional network reshapes it to ``(n, 1, 28, 28)``
itself. Besides the layers a network keeps its ``spec`` (plain JSON, see
``nn.architecture``), the ``seed`` it was initialised with, the ``recipe`` it
was trained with (a dict of ``nn.Recipe`` settings), the per-epoch
``history``, the test ``metrics`` and ``train_seconds``: one model file holds
everything the app's dashboards show. Training lives in ``nn.training``,
files in ``nn.serialize``.

Inference (``predict_proba``, ``forward(training=False)``, ``activations``,
``features``) stores nothing on the layers, and the gradient methods work on a
private copy of them, so one network can serve many threads at once.
"""

import copy
import json

import numpy as np

from .architecture import build, check_spec, describe, shapes
from .conv import Conv2D
from .layers import Dense, Dropout, Parameter
from .losses import log_softmax, softmax
from .metrics import classification_report

__all__ = ["Network"]

_INFERENCE_VALUES = 8_000_000     # bound on the floats one inference batch may hold at once


class Network:
    """A classifier for flattened 28x28 images (or any input a spec describes).

    Parameters
    ----------
    spec : dict
        The architecture (``nn.architecture.mlp_spec``, ``cnn_spec`` or by hand).
    seed : int
        Seeds the initial weights and the dropout masks.
    """

    def __init__(self, spec, seed=0):
        self.input_shape, self.n_classes, _ = check_spec(spec)
        self.spec = json.loads(json.dumps(spec))   # a private, JSON-clean copy
        self.seed = int(seed)
        self.layers = build(self.spec, np.random.default_rng(self.seed))
        self.param_layers[0].needs_input_grad = False   # training never uses dL/dX of the input
        self.recipe = {}
        self.trained_on = {}
        self.history = []
        self.metrics = {}
        self.train_seconds = 0.0
        per_image = max([int(np.prod(s)) for s in shapes(self.spec)] +
                        [np.prod(layer.output_size(*s[1:])) * layer.kernel_size ** 2 * s[0]
                         for layer, s in zip(self.layers, self._input_shapes())
                         if isinstance(layer, Conv2D)])
        self._inference_batch = int(max(1, min(8192, _INFERENCE_VALUES // per_image)))

    def _input_shapes(self):
        return [self.input_shape, *shapes(self.spec)[:-1]]

    # -- structure -------------------------------------------------------------------------
    @property
    def n_inputs(self):
        return int(np.prod(self.input_shape))

    @property
    def param_layers(self):
        """The layers with weights (dense and convolution), in order."""
        return [layer for layer in self.layers if layer.parameters()]

    @property
    def dense_layers(self):
        return [layer for layer in self.layers if isinstance(layer, Dense)]

    def parameters(self):
        """All trainable ``Parameter`` objects, in layer order (weight, bias, weight, ...)."""
        return [p for layer in self.layers for p in layer.parameters()]

    def get_weights(self):
        """Copies of all parameter arrays, in ``parameters()`` order."""
        return [p.value.copy() for p in self.parameters()]

    def set_weights(self, arrays):
        """Copy ``arrays`` into the parameters in place (shapes must match)."""
        params = self.parameters()
        if len(arrays) != len(params):
            raise ValueError(f"expected {len(params)} arrays, got {len(arrays)}")
        for p, a in zip(params, arrays):
            if a.shape != p.value.shape:
                raise ValueError(f"{p.name}: expected shape {p.value.shape}, got {a.shape}")
        for p, a in zip(params, arrays):
            p.value[...] = a

    def astype(self, dtype):
        """Convert every parameter to ``dtype`` in place (float64 for gradient checks)."""
        for p in self.parameters():
            p.value = p.value.astype(dtype)
            p.grad = np.zeros_like(p.value)
        return self

    @property
    def n_parameters(self):
        return int(sum(p.value.size for p in self.parameters()))

    @property
    def kind(self):
        """"cnn" if the network has a convolution, else "mlp"."""
        return "cnn" if any(isinstance(layer, Conv2D) for layer in self.layers) else "mlp"

    def describe(self):
        """A one-line architecture string such as ``784-256-128-10 (relu)``."""
        return describe(self.spec)

    # -- forward and backward ----------------------------------------------------------------
    def forward(self, X, training=False):
        """Logits for a batch ``X`` of shape (n, *input_shape) -> (n, n_classes).

        In training, layers keep what backward needs (until the next step);
        inference changes nothing.
        """
        out = X
        for layer in self.layers:
            out = layer.forward(out, training=training)
        return out

    def backward(self, dlogits):
        """Backpropagate ``dlogits`` (n, n_classes); fills every ``Parameter.grad``.
        Returns the gradient with respect to the input when the first layer
        computes it (see ``input_gradient``), else None."""
        grad = dlogits
        for layer in reversed(self.layers):
            grad = layer.backward(grad)
            if grad is None:  # a layer that needs no input gradient: nothing below learns
                return None
        return grad

    # -- inference ---------------------------------------------------------------------------
    def _as_batch(self, X):
        """(n, 784), (784,) or (28, 28) -> (n, *input_shape) in the weights' dtype."""
        X = np.asarray(X)
        if X.ndim == 1 or (X.shape == (28, 28) and self.n_inputs == 784):
            X = X.reshape(1, -1)
        if X.ndim != 2 or X.shape[1] != self.n_inputs:
            raise ValueError(f"expected images of shape (n, {self.n_inputs}), got {X.shape}")
        dtype = self.parameters()[0].value.dtype
        return X.astype(dtype, copy=False).reshape(len(X), *self.input_shape)

    def _batches(self, X, batch_size=None):
        step = batch_size or self._inference_batch
        for start in range(0, len(X), step):
            yield start, X[start:start + step]

    def predict_proba(self, X, batch_size=None):
        """Class probabilities. ``X`` (n, 784) float in [0, 1] -> (n, 10), rows sum to 1.

        A single image may be given as (784,) or (28, 28). Large inputs go
        through in batches, so memory stays bounded.
        """
        X = self._as_batch(X)
        out = np.empty((len(X), self.n_classes), dtype=X.dtype)
        for start, chunk in self._batches(X, batch_size):
            softmax(self.forward(chunk), out=out[start:start + len(chunk)])
        return out

    def predict(self, X, batch_size=None):
        """Predicted labels. ``X`` (n, 784) -> (n,) int64."""
        return self.predict_proba(X, batch_size).argmax(axis=1)

    def features(self, X, batch_size=None):
        """What the output layer sees: the last hidden representation of each image,
        (n, 784) -> (n, width of the last hidden layer). The app's map of digits
        is drawn from these."""
        X = self._as_batch(X)
        head = self.layers[:-1]
        parts = []
        for _, chunk in self._batches(X, batch_size):
            out = chunk
            for layer in head:
                out = layer.forward(out)
            parts.append(out.reshape(len(chunk), -1))
        return np.concatenate(parts) if parts else np.zeros((0, self.layers[-1].in_features))

    def activations(self, x):
        """Every layer's output for one image ``x`` (784,) or (28, 28).

        Returns a list of ``(layer, output)`` pairs in order, each output without
        the batch axis: (units,) after dense layers and activations of them,
        (channels, h, w) inside the convolutional part. The last output is the
        logits.
        """
        out = self._as_batch(x)
        if len(out) != 1:
            raise ValueError("activations takes a single image")
        result = []
        for layer in self.layers:
            out = layer.forward(out)
            result.append((layer, np.ascontiguousarray(out[0])))
        return result

    # -- gradients with respect to the input -----------------------------------------------------
    def _gradient_copy(self):
        """Twins of the layers that share this network's weights (read only) but own
        their caches and gradient arrays, with dropout off: backpropagating through
        them is safe while other threads use this network."""
        layers = []
        for layer in self.layers:
            twin = copy.copy(layer)
            twin.forget()
            for attr, value in vars(layer).items():
                if isinstance(value, Parameter):
                    setattr(twin, attr, Parameter(value.value, value.name, value.decay))
            if isinstance(twin, Dropout):
                twin.p, twin.mask, twin.fixed_mask = 0.0, None, False
            if twin.parameters():
                twin.needs_input_grad = True
            layers.append(twin)
        return layers

    def forget_training_state(self):
        """Drop what the last training step left on the layers (what backward needed): a
        trained network then takes only the memory of its weights."""
        for layer in self.layers:
            layer.forget()

    def input_gradient(self, x, cls=None, *, noise=0.0, samples=1, rng=None):
        """Saliency: the gradient of class ``cls``'s logit with respect to each pixel.

        ``x`` is one image, (784,) or (28, 28); ``cls`` defaults to the predicted
        class. Returns (784,): positive where more ink would raise the class
        score, negative where it would lower it.

        SmoothGrad (Smilkov et al., 2017): with ``noise`` > 0 the gradient is
        averaged over ``samples`` copies of the image with Gaussian noise of
        standard deviation ``noise`` added, which removes most of the speckle
        of a single gradient. ``noise=0, samples=1`` is the plain gradient.
        """
        X = self._as_batch(x)
        if len(X) != 1:
            raise ValueError("input_gradient takes a single image")
        if not (isinstance(samples, (int, np.integer)) and 1 <= samples <= 256):
            raise ValueError(f"samples must be a whole number from 1 to 256, got {samples!r}")
        if not (np.isfinite(noise) and 0 <= noise <= 1):
            raise ValueError(f"noise must be in [0, 1], got {noise!r}")
        if cls is None:
            cls = int(np.argmax(self.forward(X)[0]))
        cls = int(cls)
        if not 0 <= cls < self.n_classes:
            raise ValueError(f"class must be in [0, {self.n_classes}), got {cls}")
        batch = np.repeat(X, samples, axis=0)
        if noise > 0:
            rng = np.random.default_rng(0) if rng is None else rng
            batch = batch + rng.normal(0, noise, batch.shape).astype(batch.dtype)
        out = batch
        layers = self._gradient_copy()
        for layer in layers:
            out = layer.forward(out, training=True)
        grad = np.zeros_like(out)
        grad[:, cls] = 1
        for layer in reversed(layers):
            grad = layer.backward(grad)
        return grad.reshape(samples, -1).mean(axis=0)

    # -- evaluation --------------------------------------------------------------------------------
    def _loss_and_predictions(self, X, y, batch_size=None):
        """Mean cross-entropy and the predicted labels (n,), from one pass in batches."""
        X = self._as_batch(X)
        y = np.asarray(y)
        total_loss = 0.0
        predicted = np.empty(len(X), dtype=np.int64)
        for start, chunk in self._batches(X, batch_size):
            logits = self.forward(chunk)
            yb = y[start:start + len(chunk)]
            logp = log_softmax(logits.astype(np.float64))
            total_loss -= float(logp[np.arange(len(yb)), yb].sum())
            predicted[start:start + len(yb)] = logits.argmax(axis=1)
        return total_loss / max(len(y), 1), predicted

    def loss_and_accuracy(self, X, y, batch_size=None):
        """Mean cross-entropy and accuracy on ``X`` (n, 784), ``y`` (n,)."""
        loss, predicted = self._loss_and_predictions(X, y, batch_size)
        return loss, float(np.count_nonzero(predicted == np.asarray(y))) / max(len(y), 1)

    def evaluate(self, X, y, batch_size=None):
        """The test report kept in ``model.metrics`` and model files, from one pass.

        ``X`` (n, 784), ``y`` (n,) ints -> ``nn.metrics.classification_report``
        (accuracy, confusion matrix, per-class and averaged scores) plus ``"loss"``.
        """
        loss, predicted = self._loss_and_predictions(X, y, batch_size)
        report = classification_report(y, predicted, self.n_classes)
        report["loss"] = loss
        return report

    # -- copies ------------------------------------------------------------------------------------
    def copy(self):
        """An independent copy (weights, spec, recipe, history, metrics), without the
        caches of the last training step."""
        twin = copy.copy(self)
        twin.layers = [copy.copy(layer) for layer in self.layers]
        for layer in twin.layers:
            layer.forget()
        twin.layers = copy.deepcopy(twin.layers)
        for name in ("spec", "recipe", "trained_on", "history", "metrics"):
            setattr(twin, name, copy.deepcopy(getattr(self, name)))
        return twin

    def __repr__(self):
        return f"Network({self.describe()}, {self.n_parameters:,} parameters)"
