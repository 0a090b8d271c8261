"""Layers: the ``Layer`` contract, the fully connected ``Dense`` layer, ``Dropout``
and ``Flatten``. Convolution and pooling live in ``nn.conv``; activations in
``nn.activations``.

The contract every layer keeps (PyTorch's shape, so what a learner reads here
transfers):

- ``forward(x, training=False)`` returns the output. With ``training=False`` it
  stores nothing on the layer, so one network can serve several threads at
  once. With ``training=True`` it keeps what ``backward`` needs.
- ``backward(dy)`` takes the gradient of the loss with respect to the output of
  the last training forward and returns the gradient with respect to its input,
  filling ``param.grad`` for each of ``parameters()``. It may overwrite ``dy``.
- ``spec()`` is the layer as plain JSON data (see ``nn.architecture``).
- Training state lives in attributes whose names start with "_"; ``forget()``
  drops them.

Batch-first maths: a dense layer computes ``X @ W + b`` for ``X`` of shape
``(batch, in_features)`` and ``W`` of shape ``(in_features, out_features)``, so
column ``j`` of the first layer's ``W`` is a 784-vector: the 28x28 pattern that
hidden unit ``j`` responds to.
"""

import numpy as np

from . import speed

__all__ = ["Parameter", "Layer", "Dense", "Dropout", "Flatten", "init_weights", "DTYPE"]

DTYPE = np.float32


class Parameter:
    """A trainable array and the gradient of the loss with respect to it.

    ``value`` and ``grad`` have the same shape and dtype; optimizers update
    ``value`` in place and backward passes write ``grad`` in place.
    ``decay`` says whether L2 weight decay applies (weights yes, biases no).
    """

    def __init__(self, value, name, decay=True):
        self.value = value
        self.grad = np.zeros_like(value)
        self.name = name
        self.decay = decay

    def __repr__(self):
        return f"Parameter({self.name}, shape={self.value.shape})"


class Layer:
    """Base class: no parameters; subclasses implement ``forward`` and ``backward``."""

    #: The name of this layer type in a spec (``{"type": ...}``).
    type = None

    def parameters(self):
        return []

    def forward(self, x, training=False):
        raise NotImplementedError

    def backward(self, dy):
        raise NotImplementedError

    def spec(self):
        return {"type": self.type}

    def forget(self):
        """Drop the training state: by convention, every attribute whose name starts
        with "_" (what backward needs)."""
        for name in [name for name in self.__dict__ if name.startswith("_")]:
            del self.__dict__[name]

    def __repr__(self):
        args = ", ".join(f"{k}={v}" for k, v in self.spec().items() if k != "type")
        return f"{type(self).__name__}({args})"


def init_weights(scheme, shape, fan_in, fan_out, rng):
    """Draw a float32 weight array of ``shape``.

    ``"he"`` (for ReLU-like units): N(0, 2/fan_in), which keeps the variance of
    activations constant when half the units are off. ``"glorot"`` (for
    sigmoid, tanh and the output layer): U(+-sqrt(6/(fan_in+fan_out))), which
    balances the variance of the forward signal and the backward gradient.
    """
    if scheme == "he":
        w = rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)
    elif scheme == "glorot":
        limit = np.sqrt(6.0 / (fan_in + fan_out))
        w = rng.uniform(-limit, limit, shape)
    else:
        raise ValueError(f"init: unknown initialisation {scheme!r}; choose 'he' or 'glorot'")
    return w.astype(DTYPE)


class Dense(Layer):
    """Fully connected layer ``Y = X @ W + b``.

    ``X`` (batch, in_features) -> ``Y`` (batch, out_features); ``weight.value``
    (in_features, out_features), ``bias.value`` (out_features,).
    ``init``: "he" or "glorot"; ``rng``: a ``np.random.Generator``.
    """

    type = "dense"

    def __init__(self, in_features, out_features, init="he", rng=None):
        for name, v in (("in_features", in_features), ("out_features", out_features)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"Dense: {name} must be a whole number of at least 1, got {v!r}")
        rng = np.random.default_rng() if rng is None else rng
        self.in_features, self.out_features = int(in_features), int(out_features)
        shape = (self.in_features, self.out_features)
        self.weight = Parameter(init_weights(init, shape, *shape, rng), "weight")
        self.bias = Parameter(np.zeros(self.out_features, DTYPE), "bias", decay=False)
        #: False skips dX in backward: the first layer's input gradient is never used in training.
        self.needs_input_grad = True

    @property
    def W(self):
        return self.weight.value

    @property
    def b(self):
        return self.bias.value

    def parameters(self):
        return [self.weight, self.bias]

    def forward(self, x, training=False):
        if not training:
            y = x @ self.W
            y += self.b
            return y
        self._x = x
        y = x @ self.W
        y += self.b
        return y

    def backward(self, dy):
        """The three lines of a dense backward pass: dW = X^T dY, db = the sum of
        dY over the batch, dX = dY W^T."""
        speed.matmul(self._x.T, dy, out=self.weight.grad, weight_gradient=True)
        np.sum(dy, axis=0, out=self.bias.grad)
        return dy @ self.W.T if self.needs_input_grad else None

    def spec(self):
        return {"type": self.type, "out_features": self.out_features}


class Dropout(Layer):
    """Inverted dropout: while training, zero each unit with probability ``p`` and
    scale the survivors by ``1 / (1 - p)``, so that at test time the layer is the
    identity and no rescaling is needed. Any input shape.

    ``fixed_mask = True`` keeps the current ``mask`` (a gradient check needs one).
    """

    type = "dropout"

    def __init__(self, p=0.5, rng=None):
        if isinstance(p, bool) or not isinstance(p, (int, float, np.floating)) or not 0 <= p < 1:
            raise ValueError(f"Dropout: p must be in [0, 1), got {p!r}")
        self.p = float(p)
        self.rng = np.random.default_rng() if rng is None else rng
        self.mask = None
        self.fixed_mask = False

    def forward(self, x, training=False):
        if not training or self.p == 0:
            if training:
                self.mask = None
            return x
        if not self.fixed_mask:
            keep = self.rng.random(x.shape, dtype=np.float32) >= self.p
            self.mask = keep.astype(x.dtype) / x.dtype.type(1 - self.p)
        # Never in place: x is the activation's output, which sigmoid and tanh keep for backward.
        return x * self.mask

    def backward(self, dy):
        if self.mask is None:
            return dy
        dy *= self.mask
        return dy

    def forget(self):
        super().forget()
        if not self.fixed_mask:
            self.mask = None

    def spec(self):
        return {"type": self.type, "p": self.p}


class Flatten(Layer):
    """``(batch, d1, d2, ...)`` -> ``(batch, d1*d2*...)`` in C order, as PyTorch's
    ``nn.Flatten`` (so a (n, channels, h, w) map flattens channel by channel)."""

    type = "flatten"

    def forward(self, x, training=False):
        if training:
            self._shape = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, dy):
        return dy.reshape(self._shape)
