"""Layers with state: the fully connected ``Dense`` layer and ``Dropout``.

Batch-first maths throughout: a batch ``X`` has shape ``(batch, in_features)``
and a dense layer computes ``X @ W + b`` with ``W`` of shape
``(in_features, out_features)``. So column ``j`` of the first layer's ``W`` is a
784-vector: the 28x28 pattern that hidden unit ``j`` responds to.
"""

import numpy as np

from .blas import matmul

__all__ = ["Parameter", "Dense", "Dropout", "init_weights"]

DTYPE = np.float32


class Parameter:
    """A trainable array and the gradient of the loss with respect to it.

    ``value`` and ``grad`` have the same shape and dtype; optimizers update
    ``value`` in place and the backward pass writes ``grad`` in place, so both
    arrays live as long as the layer and are never reallocated.
    ``decay`` says whether L2 weight decay applies (weights yes, biases no).
    """

    def __init__(self, value, name, decay=True):
        self.value = value
        self.grad = np.zeros_like(value)
        self.name = name
        self.decay = decay

    def __repr__(self):
        return f"Parameter({self.name}, shape={self.value.shape})"


def init_weights(scheme, fan_in, fan_out, rng):
    """Draw a ``(fan_in, fan_out)`` float32 weight matrix.

    ``"he"`` (for ReLU-like units): N(0, 2/fan_in), which keeps the variance of
    activations constant when half the units are off.  ``"glorot"`` (for
    sigmoid/tanh): U(+-sqrt(6/(fan_in+fan_out))), which balances the variance of
    the forward signal and the backward gradient.
    """
    if scheme == "he":
        w = rng.standard_normal((fan_in, fan_out)) * np.sqrt(2.0 / fan_in)
    elif scheme == "glorot":
        limit = np.sqrt(6.0 / (fan_in + fan_out))
        w = rng.uniform(-limit, limit, (fan_in, fan_out))
    else:
        raise ValueError(f"unknown initialisation {scheme!r}; choose 'he' or 'glorot'")
    return w.astype(DTYPE)


class Dense:
    """Fully connected layer ``Y = X @ W + b``.

    Parameters
    ----------
    in_features, out_features : int
    init : "he" or "glorot"
    rng : np.random.Generator, for a reproducible initialisation.

    Shapes: ``X`` (batch, in_features) -> ``Y`` (batch, out_features).
    """

    def __init__(self, in_features, out_features, init="he", rng=None):
        if int(in_features) < 1 or int(out_features) < 1:
            raise ValueError(
                f"Dense layer sizes must be at least 1, got {in_features} -> {out_features}"
            )
        rng = np.random.default_rng() if rng is None else rng
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.weight = Parameter(init_weights(init, self.in_features, self.out_features, rng), "W")
        self.bias = Parameter(np.zeros(self.out_features, DTYPE), "b", decay=False)
        #: When False, backward skips dX (the first layer's input gradient is never used in training).
        self.needs_input_grad = True
        self._out = {}  # output buffers, one per batch size: no allocation per step

    @property
    def W(self):
        return self.weight.value

    @property
    def b(self):
        return self.bias.value

    def parameters(self):
        return [self.weight, self.bias]

    def forward(self, x, training=False, inplace=False):
        """``x`` (batch, in) -> ``y`` (batch, out).

        In training the result is written into a buffer this layer owns (no
        allocation per step); it stays valid until the next training step with
        the same batch size. Inference allocates a fresh result and writes into
        no shared array, so one network can serve several threads at once (the
        app shares the default network between all its sessions); it only
        records its input in ``_x``, which just a backward pass reads, and
        ``Network.input_gradient`` runs that on a private copy of the layers.
        """
        self._x = x
        if not training:
            y = x @ self.W
            y += self.b
            return y
        n = x.shape[0]
        y = self._out.get(n)
        if y is None or y.dtype != x.dtype:
            if len(self._out) > 4:  # bound memory: batch sizes vary only at epoch ends
                self._out.clear()
            y = self._out[n] = np.empty((n, self.out_features), dtype=np.result_type(x, self.W))
        np.matmul(x, self.W, out=y)
        y += self.b
        return y

    def backward(self, dy):
        """``dy`` (batch, out) -> ``dx`` (batch, in); fills ``weight.grad`` and ``bias.grad``.

        The three lines of a dense backward pass: dW = X^T dY, db = sum of dY
        over the batch, dX = dY W^T. (``matmul`` is ``np.matmul``, on more BLAS
        threads during training when that pays off: see ``nn.blas``.)
        """
        matmul(self._x.T, dy, out=self.weight.grad, weight_gradient=True)
        np.sum(dy, axis=0, out=self.bias.grad)
        if self.needs_input_grad:
            return dy @ self.W.T
        return None

    def __repr__(self):
        return f"Dense({self.in_features}, {self.out_features})"


class Dropout:
    """Inverted dropout: while training, zero each unit with probability ``p`` and
    scale the survivors by ``1 / (1 - p)``, so that at test time the layer is the
    identity and no rescaling is needed.

    ``mask`` can be set by hand (a gradient check needs a fixed mask).
    Shapes: ``x`` (batch, features) -> same.
    """

    def __init__(self, p=0.5, rng=None):
        if not 0 <= p < 1:
            raise ValueError(f"dropout must be in [0, 1), got {p}")
        self.p = float(p)
        self.rng = np.random.default_rng() if rng is None else rng
        self.mask = None
        self.fixed_mask = False

    def parameters(self):
        return []

    def forward(self, x, training=False, inplace=False):
        if not training or self.p == 0:
            self._scale = None
            return x
        if not self.fixed_mask:
            keep = self.rng.random(x.shape, dtype=np.float32) >= self.p
            self.mask = keep.astype(x.dtype) / x.dtype.type(1 - self.p)
        self._scale = self.mask
        # Never in place: x is the activation's output, which sigmoid/tanh keep for backward.
        return x * self.mask

    def backward(self, dy):
        if self._scale is None:
            return dy
        dy *= self._scale
        return dy

    def __repr__(self):
        return f"Dropout(p={self.p})"
