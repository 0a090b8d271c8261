"""The multi-layer perceptron: a stack of Dense -> activation -> (Dropout) blocks
ending in a Dense layer whose logits feed the fused softmax-cross-entropy.

``Network`` holds the layers and everything worth keeping about a trained
model (its config, the hyperparameters it was trained with, the per-epoch
history and the test metrics), so that one ``.npz`` file is enough for the
app's dashboards.  Training lives in ``nn.training.fit``; reading and writing
files in ``nn.serialize``.
"""

import copy

import numpy as np

from .activations import ACTIVATIONS, get_activation
from .layers import Dense, Dropout
from .losses import log_softmax, softmax
from . import serialize
from .metrics import classification_report

__all__ = ["Network", "MAX_HIDDEN_LAYERS", "MAX_WIDTH"]

N_INPUTS = 784
N_CLASSES = 10
#: Limits on the architecture: a model above them is almost certainly a mistake
#: (or a hostile file), and would take the app's server down.
MAX_HIDDEN_LAYERS = 8
MAX_WIDTH = 4096


def _check_config(hidden, activation, dropout, n_inputs, n_classes):
    hidden = list(hidden)
    if len(hidden) > MAX_HIDDEN_LAYERS:
        raise ValueError(f"hidden: at most {MAX_HIDDEN_LAYERS} hidden layers, got {len(hidden)}")
    for width in hidden:
        if isinstance(width, bool) or not isinstance(width, (int, np.integer)):
            raise ValueError(f"hidden: layer widths must be integers, got {width!r}")
        if not 1 <= width <= MAX_WIDTH:
            raise ValueError(f"hidden: each layer width must be in [1, {MAX_WIDTH}], got {width}")
    if activation not in ACTIVATIONS:
        raise ValueError(
            f"activation: unknown {activation!r}; choose one of {', '.join(sorted(ACTIVATIONS))}"
        )
    if not (isinstance(dropout, (int, float)) and 0 <= dropout < 1):
        raise ValueError(f"dropout: must be in [0, 1), got {dropout!r}")
    for name, value in (("n_inputs", n_inputs), ("n_classes", n_classes)):
        if not 1 <= int(value) <= MAX_WIDTH:
            raise ValueError(f"{name}: must be in [1, {MAX_WIDTH}], got {value}")
    return [int(w) for w in hidden]


class Network:
    """A fully connected classifier for flattened 28x28 images.

    Parameters
    ----------
    hidden : sequence of int
        Widths of the hidden layers, e.g. ``(128, 64)``; may be empty
        (multinomial logistic regression).
    activation : str
        A name from ``nn.ACTIVATIONS``: "relu", "leaky_relu", "sigmoid", "tanh".
        It also picks the initialisation (He for the ReLU family, Glorot otherwise).
    dropout : float in [0, 1)
        Dropout probability after every hidden activation (training only).
    seed : int
        Seeds the initialisation and the dropout masks.

    Shapes: inputs ``X`` (n, 784) in [0, 1]; logits and probabilities (n, 10).
    """

    def __init__(self, hidden=(128, 64), activation="relu", dropout=0.0, seed=0,
                 n_inputs=N_INPUTS, n_classes=N_CLASSES):
        hidden = _check_config(hidden, activation, dropout, n_inputs, n_classes)
        self.config = {"hidden": hidden, "activation": activation, "dropout": float(dropout),
                       "n_inputs": int(n_inputs), "n_classes": int(n_classes)}
        self.seed = int(seed)
        rng = np.random.default_rng(self.seed)
        init = ACTIVATIONS[activation].init
        self.layers = []
        sizes = [int(n_inputs)] + hidden
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
            self.layers.append(Dense(fan_in, fan_out, init=init, rng=rng))
            self.layers.append(get_activation(activation))
            if dropout > 0:
                self.layers.append(Dropout(dropout, rng=rng))
        # The output layer is Glorot-initialised: softmax is not a ReLU.
        self.layers.append(Dense(sizes[-1], int(n_classes), init="glorot", rng=rng))
        self.dense_layers[0].needs_input_grad = False
        self.hyperparams = {}
        self.history = []
        self.metrics = {}
        self.train_seconds = 0.0

    # -- structure -----------------------------------------------------------------
    @property
    def dense_layers(self):
        return [layer for layer in self.layers if isinstance(layer, Dense)]

    def parameters(self):
        """All trainable ``Parameter`` objects, in layer order (W0, b0, W1, b1, ...)."""
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
            p.value[...] = a

    def astype(self, dtype):
        """Convert every parameter to ``dtype`` in place (float64 for gradient checks)."""
        for p in self.parameters():
            p.value = p.value.astype(dtype)
            p.grad = np.zeros_like(p.value)
        for layer in self.dense_layers:
            layer._out.clear()
        return self

    @property
    def n_parameters(self):
        return int(sum(p.value.size for p in self.parameters()))

    def describe(self):
        """A one-line architecture string such as ``784-128(relu)-64(relu)-10``."""
        act = self.config["activation"]
        hidden = "".join(f"-{w}({act})" for w in self.config["hidden"])
        return f"{self.config['n_inputs']}{hidden}-{self.config['n_classes']}"

    # -- forward and backward --------------------------------------------------------
    def forward(self, X, training=False):
        """Logits for a batch. ``X`` (n, 784) -> (n, 10).

        In training each layer writes into its own buffer and the returned
        logits are that buffer (valid until the next step). Inference allocates
        fresh arrays and changes no shared state, so it is safe from several
        threads at once.
        """
        out = X
        for i, layer in enumerate(self.layers):
            # The input X belongs to the caller: never overwrite it.
            out = layer.forward(out, training=training, inplace=i > 0)
        return out

    def backward(self, dlogits):
        """Backpropagate ``dlogits`` (n, 10); fills every ``Parameter.grad``.

        Returns the gradient with respect to the input (n, 784) when the first
        layer computes it (see ``input_gradient``), else None.
        """
        grad = dlogits
        for layer in reversed(self.layers):
            grad = layer.backward(grad)
        return grad

    # -- inference -------------------------------------------------------------------
    def _as_batch(self, X):
        X = np.asarray(X)
        if X.ndim == 1 or X.shape == (28, 28):
            X = X.reshape(1, -1)
        if X.ndim != 2 or X.shape[1] != self.config["n_inputs"]:
            raise ValueError(
                f"expected images of shape (n, {self.config['n_inputs']}), got {X.shape}"
            )
        dtype = self.dense_layers[0].W.dtype
        return X.astype(dtype, copy=False)

    def predict_proba(self, X, batch_size=8192):
        """Class probabilities. ``X`` (n, 784) float in [0, 1] -> (n, 10), rows sum to 1.

        A single image may be given as (784,) or (28, 28). Large inputs are
        processed in batches of ``batch_size`` so memory stays bounded.
        """
        X = self._as_batch(X)
        out = np.empty((X.shape[0], self.config["n_classes"]), dtype=X.dtype)
        for start in range(0, X.shape[0], batch_size):
            chunk = X[start:start + batch_size]
            softmax(self.forward(chunk), out=out[start:start + len(chunk)])
        return out

    def predict(self, X, batch_size=8192):
        """Predicted labels. ``X`` (n, 784) -> (n,) int64."""
        return self.predict_proba(X, batch_size).argmax(axis=1)

    def input_gradient(self, x, cls=None):
        """Saliency: gradient of class ``cls``'s logit with respect to the input pixels.

        ``x`` is one image, (784,) or (28, 28); ``cls`` defaults to the predicted
        class. Returns (784,): positive where more ink would raise the class
        score, negative where it would lower it.
        """
        X = self._as_batch(x)
        if X.shape[0] != 1:
            raise ValueError("input_gradient takes a single image")
        # Work on a private copy of the layers: backpropagation writes caches and
        # parameter gradients, and this network may be shared (the app's default
        # network serves every session) or in the middle of training. The copy
        # costs about as much as one forward pass.
        layers = copy.deepcopy(self.layers)
        first = next(layer for layer in layers if isinstance(layer, Dense))
        first.needs_input_grad = True
        out = X
        for i, layer in enumerate(layers):
            out = layer.forward(out, training=False, inplace=i > 0)
        cls = int(np.argmax(out[0])) if cls is None else int(cls)
        if not 0 <= cls < self.config["n_classes"]:
            raise ValueError(f"class must be in [0, {self.config['n_classes']}), got {cls}")
        grad = np.zeros_like(out)
        grad[0, cls] = 1
        for layer in reversed(layers):
            grad = layer.backward(grad)
        return grad[0].copy()

    def _loss_and_predictions(self, X, y, batch_size):
        """Mean cross-entropy and the predicted labels (n,), from one pass in batches."""
        X = self._as_batch(X)
        y = np.asarray(y)
        total_loss = 0.0
        predicted = np.empty(X.shape[0], dtype=np.int64)
        for start in range(0, X.shape[0], batch_size):
            logits = self.forward(X[start:start + batch_size])
            yb = y[start:start + batch_size]
            logp = log_softmax(logits.astype(np.float64))
            total_loss -= float(logp[np.arange(len(yb)), yb].sum())
            predicted[start:start + len(yb)] = logits.argmax(axis=1)
        return total_loss / max(len(y), 1), predicted

    def loss_and_accuracy(self, X, y, batch_size=8192):
        """Mean cross-entropy and accuracy on ``X`` (n, 784), ``y`` (n,), in batches."""
        loss, predicted = self._loss_and_predictions(X, y, batch_size)
        return loss, float(np.count_nonzero(predicted == np.asarray(y))) / max(len(y), 1)

    def evaluate(self, X, y, batch_size=8192):
        """The test report kept in ``model.metrics`` and model files, from one pass.

        ``X`` (n, 784), ``y`` (n,) ints -> ``nn.metrics.classification_report``
        (accuracy, confusion matrix, per-class and averaged scores) plus ``"loss"``.
        """
        loss, predicted = self._loss_and_predictions(X, y, batch_size)
        report = classification_report(y, predicted, self.config["n_classes"])
        report["loss"] = loss
        return report

    # -- files -----------------------------------------------------------------------
    def save(self, path):
        """Write this model to ``path`` (.npz) atomically. See ``nn.serialize``."""
        serialize.save(self, path)

    def copy(self):
        """An independent copy (weights, config, history, metrics)."""
        return copy.deepcopy(self)

    def __repr__(self):
        return f"Network({self.describe()}, {self.n_parameters:,} parameters)"
