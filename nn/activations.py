"""Element-wise activation functions, each with its forward and backward pass.

Every activation is a tiny layer (see ``nn.layers.Layer``): ``forward(x)``
returns ``y = f(x)`` and, when training, remembers what the backward pass
needs; ``backward(dy)`` returns ``dx = dy * f'(x)``. Any shape: (batch,
features) after a dense layer, (batch, channels, height, width) after a
convolution.

``ACTIVATIONS`` maps the names the CLI, the app and model files use to the
classes, so a name means the same thing everywhere (an idea taken from
scikit-learn's ``ACTIVATIONS`` dictionary). ``init`` is the weight
initialisation that keeps activations' variance stable through the function.
"""

import numpy as np

from .layers import Layer

__all__ = ["Activation", "ReLU", "LeakyReLU", "Sigmoid", "Tanh", "ACTIVATIONS", "get_activation"]


class Activation(Layer):
    """Base class: no parameters, ``forward`` then ``backward`` with the same batch."""

    init = "glorot"


class ReLU(Activation):
    """``y = max(x, 0)``; the gradient passes where ``x > 0`` and is 0 elsewhere."""

    type = "relu"
    init = "he"

    def forward(self, x, training=False):
        y = np.maximum(x, 0)
        if training:
            self._y = y  # y > 0 exactly where x > 0: all the backward pass needs
        return y

    def backward(self, dy):
        dy *= self._y > 0
        return dy


class LeakyReLU(Activation):
    """``y = x`` for ``x > 0`` and ``slope * x`` otherwise, so no unit ever stops learning."""

    type = "leaky_relu"
    init = "he"

    def __init__(self, slope=0.01):
        if not 0 <= slope < 1:
            raise ValueError(f"LeakyReLU: slope must be in [0, 1), got {slope}")
        self.slope = float(slope)

    def forward(self, x, training=False):
        factor = np.where(x > 0, x.dtype.type(1), x.dtype.type(self.slope))
        if training:
            self._factor = factor
        return np.multiply(x, factor)

    def backward(self, dy):
        dy *= self._factor
        return dy

    def spec(self):
        return {"type": self.type}  # the slope is fixed at its default in specs


class Sigmoid(Activation):
    """``y = 1 / (1 + exp(-x))``; ``dy/dx = y (1 - y)``.

    Written as ``0.5 * (1 + tanh(x / 2))``, the same function, which never
    overflows in ``exp`` for large negative ``x``.
    """

    type = "sigmoid"

    def forward(self, x, training=False):
        y = np.multiply(x, x.dtype.type(0.5))
        np.tanh(y, out=y)
        y += 1
        y *= 0.5
        if training:
            self._y = y
        return y

    def backward(self, dy):
        y = self._y
        dy *= y * (1 - y)
        return dy


class Tanh(Activation):
    """``y = tanh(x)``; ``dy/dx = 1 - y**2``."""

    type = "tanh"

    def forward(self, x, training=False):
        y = np.tanh(x)
        if training:
            self._y = y
        return y

    def backward(self, dy):
        y = self._y
        dy *= 1 - y * y
        return dy


ACTIVATIONS = {cls.type: cls for cls in (ReLU, LeakyReLU, Sigmoid, Tanh)}


def get_activation(name):
    """A new activation layer for ``name`` (one of ``ACTIVATIONS``)."""
    try:
        return ACTIVATIONS[name]()
    except (KeyError, TypeError):
        raise ValueError(
            f"activation: unknown {name!r}; choose one of {', '.join(sorted(ACTIVATIONS))}"
        ) from None
