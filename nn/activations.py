"""Element-wise activation functions, each with its forward and backward pass.

Every activation is a tiny layer: ``forward(x)`` remembers what the backward
pass needs and returns ``y``; ``backward(dy)`` returns ``dx = dy * f'(x)``.
Shapes: ``x``, ``y``, ``dy`` and ``dx`` all have the shape ``(batch, features)``.

``ACTIVATIONS`` maps the names the CLI, the app and model files use to the
classes, so a name means the same thing everywhere (an idea taken from
scikit-learn's ``ACTIVATIONS`` dictionary).

The forward passes write into the input's memory when the caller allows it
(``inplace=True``, which the network uses for its own intermediate buffers):
fewer temporary arrays means less time spent allocating in the training loop.
"""

import numpy as np

__all__ = ["Activation", "ReLU", "LeakyReLU", "Sigmoid", "Tanh", "ACTIVATIONS", "get_activation"]


class Activation:
    """Base class: no parameters, ``forward`` then ``backward`` with the same batch."""

    name = "identity"
    #: Weight initialisation that keeps activations' variance stable through this function.
    init = "glorot"

    def parameters(self):
        return []

    def forward(self, x, training=False, inplace=False):
        raise NotImplementedError

    def backward(self, dy):
        raise NotImplementedError

    def __repr__(self):
        return f"{type(self).__name__}()"


class ReLU(Activation):
    """``y = max(x, 0)``; the gradient passes where ``x > 0`` and is 0 elsewhere."""

    name = "relu"
    init = "he"

    def forward(self, x, training=False, inplace=False):
        y = np.maximum(x, 0, out=x if inplace else None)
        self._y = y  # y > 0 exactly where x > 0, so y is all the backward pass needs
        return y

    def backward(self, dy):
        # In place: dy is a buffer the network owns and does not reuse after this call.
        dy *= self._y > 0
        return dy


class LeakyReLU(Activation):
    """``y = x`` for ``x > 0`` and ``slope * x`` otherwise, so no unit ever stops learning."""

    name = "leaky_relu"
    init = "he"

    def __init__(self, slope=0.01):
        if not 0 <= slope < 1:
            raise ValueError(f"LeakyReLU slope must be in [0, 1), got {slope}")
        self.slope = float(slope)

    def forward(self, x, training=False, inplace=False):
        self._positive = x > 0
        y = x if inplace else x.copy()
        y *= np.where(self._positive, 1.0, self.slope).astype(x.dtype, copy=False)
        return y

    def backward(self, dy):
        dy *= np.where(self._positive, 1.0, self.slope).astype(dy.dtype, copy=False)
        return dy


class Sigmoid(Activation):
    """``y = 1 / (1 + exp(-x))``; ``dy/dx = y (1 - y)``.

    Written as ``0.5 * (1 + tanh(x / 2))``, which is the same function but never
    overflows in ``exp`` for large negative ``x``.
    """

    name = "sigmoid"
    init = "glorot"

    def forward(self, x, training=False, inplace=False):
        y = np.multiply(x, 0.5, out=x if inplace else None)
        np.tanh(y, out=y)
        y += 1
        y *= 0.5
        self._y = y
        return y

    def backward(self, dy):
        y = self._y
        dy *= y * (1 - y)
        return dy


class Tanh(Activation):
    """``y = tanh(x)``; ``dy/dx = 1 - y**2``."""

    name = "tanh"
    init = "glorot"

    def forward(self, x, training=False, inplace=False):
        y = np.tanh(x, out=x if inplace else None)
        self._y = y
        return y

    def backward(self, dy):
        y = self._y
        dy *= 1 - y * y
        return dy


ACTIVATIONS = {cls.name: cls for cls in (ReLU, LeakyReLU, Sigmoid, Tanh)}


def get_activation(name):
    """Return a new activation layer for ``name`` (one of ``ACTIVATIONS``)."""
    try:
        return ACTIVATIONS[name]()
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown activation {name!r}; choose one of {', '.join(sorted(ACTIVATIONS))}"
        ) from None
