"""Convolution and max-pooling over images, with PyTorch's layout and semantics.

Shapes: a batch of images is ``(n, channels, height, width)``; a ``Conv2D``
filter bank ``weight.value`` is ``(out_channels, in_channels, k, k)`` and
``bias.value`` is ``(out_channels,)``. Stride 1, zero padding ``padding`` on
each side, so the output is ``(n, out_channels, h + 2 padding - k + 1, ...)``
and ``padding = k // 2`` keeps the size ("same").

How a convolution becomes one matrix product (im2col, as in CS231n's
``fast_layers.py``): every k x k receptive field of the padded input is copied
into one row of a matrix ``cols`` of shape ``(n * out_h * out_w, k * k *
in_channels)`` (``sliding_window_view`` gives the windows without a Python
loop), the filters are reshaped to ``(out_channels, k * k * in_channels)``,
and then

    forward:   Y  = cols @ Wm^T + b          (one product)
    backward:  dW = dY^T @ cols              (one product)
               dX = the "full" convolution of dY with the filters flipped
                    180 degrees and in/out channels swapped: again im2col
                    (of dY, padded by k - 1 - padding) and one product.

The third line replaces the classic col2im (adding every column back to the
pixels it came from), which measured 3x slower on 2 cores.

Memory layout: the products above produce channels-last arrays (a row per
pixel). Rather than copy them to channels-first, a layer returns a
*transposed view*: an array of shape (n, c, h, w) whose memory is ordered
(n, h, w, c). NumPy treats it as any other (n, c, h, w) array; the next layer
reads it without copying. So the public layout is PyTorch's and the memory
layout is the fast one.
"""

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from . import speed
from .layers import DTYPE, Layer, Parameter, init_weights

__all__ = ["Conv2D", "MaxPool2D", "im2col"]

NHWC = (0, 2, 3, 1)   # memory order of channels-last arrays, for speed.buffer


def _check_int(layer, name, value, low, high=None):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low or (
            high is not None and value > high):
        bound = f"from {low} to {high}" if high is not None else f"of at least {low}"
        raise ValueError(f"{layer}: {name} must be a whole number {bound}, got {value!r}")
    return int(value)


def im2col(x_nhwc, k, padding, out=None):
    """Receptive fields as rows: ``(n, h, w, c)`` -> ``(n * oh * ow, k * k * c)``.

    Each row holds one k x k window of the zero-padded input, ordered (row,
    column, channel) so that the copy reads runs of ``c`` contiguous values.
    ``out``, if given, is the ``(n, oh, ow, k, k, c)`` array to fill.

    With one input channel the same matrix is written transposed, as
    ``(k * k, n * oh * ow)`` memory, and the transposed view returned: each of
    its k * k rows is then one long contiguous copy, 4x faster than writing
    rows of 25 values (the products below accept either layout).
    """
    n, h, w, c = x_nhwc.shape
    if padding:
        padded = np.zeros((n, h + 2 * padding, w + 2 * padding, c), x_nhwc.dtype)
        padded[:, padding:padding + h, padding:padding + w] = x_nhwc
    else:
        padded = x_nhwc
    windows = sliding_window_view(padded, (k, k), axis=(1, 2))   # (n, oh, ow, c, k, k), a view
    oh, ow = windows.shape[1:3]
    if c == 1:
        if out is None:
            out = np.empty((k, k, n, oh, ow), x_nhwc.dtype)
        np.copyto(out, windows[:, :, :, 0].transpose(3, 4, 0, 1, 2))
        return out.reshape(k * k, -1).T
    windows = windows.transpose(0, 1, 2, 4, 5, 3)                 # (n, oh, ow, k, k, c)
    if out is None:
        out = np.empty(windows.shape, x_nhwc.dtype)
    np.copyto(out, windows)
    return out.reshape(-1, k * k * c)


def _cols_shape(n, oh, ow, k, c):
    """The shape ``im2col`` fills for these sizes (see its note on one channel)."""
    return (k, k, n, oh, ow) if c == 1 else (n, oh, ow, k, k, c)


class Conv2D(Layer):
    """2-D convolution (cross-correlation, as in PyTorch), stride 1.

    ``x`` (n, in_channels, h, w) -> ``y`` (n, out_channels, h + 2p - k + 1, w + 2p - k + 1).
    """

    type = "conv2d"

    def __init__(self, in_channels, out_channels, kernel_size, padding=0, init="he", rng=None):
        self.in_channels = _check_int("Conv2D", "in_channels", in_channels, 1)
        self.out_channels = _check_int("Conv2D", "out_channels", out_channels, 1)
        self.kernel_size = k = _check_int("Conv2D", "kernel_size", kernel_size, 1)
        # Padding beyond k - 1 would only add outputs that see nothing but zeros.
        self.padding = _check_int("Conv2D", "padding", padding, 0, k - 1)
        rng = np.random.default_rng() if rng is None else rng
        fan_in, fan_out = self.in_channels * k * k, self.out_channels * k * k
        self.weight = Parameter(init_weights(init, (self.out_channels, self.in_channels, k, k),
                                             fan_in, fan_out, rng), "weight")
        self.bias = Parameter(np.zeros(self.out_channels, DTYPE), "bias", decay=False)
        #: False skips dX in backward (a network's first layer never needs it in training).
        self.needs_input_grad = True

    def parameters(self):
        return [self.weight, self.bias]

    def output_size(self, h, w):
        """(out_h, out_w) for an (h, w) input."""
        k, p = self.kernel_size, self.padding
        return h + 2 * p - k + 1, w + 2 * p - k + 1

    def _matrix(self):
        """The filters as (out_channels, k * k * in_channels), matching ``im2col``'s rows."""
        return self.weight.value.transpose(0, 2, 3, 1).reshape(self.out_channels, -1)

    def _check_input(self, x):
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"Conv2D: expected input of shape (n, {self.in_channels}, h, w), "
                             f"got {x.shape}")
        oh, ow = self.output_size(*x.shape[2:])
        if oh < 1 or ow < 1:
            raise ValueError(f"Conv2D: kernel_size {self.kernel_size} is larger than the "
                             f"{x.shape[2]}x{x.shape[3]} input (padding {self.padding})")
        return oh, ow

    def forward(self, x, training=False):
        n = x.shape[0]
        oh, ow = self._check_input(x)
        k, c, o = self.kernel_size, self.in_channels, self.out_channels
        x_nhwc = x.transpose(0, 2, 3, 1)                      # free when x is channels-last
        if training:
            cols = im2col(x_nhwc, k, self.padding,
                          out=speed.buffer(self, "cols", _cols_shape(n, oh, ow, k, c), x.dtype))
            y = speed.buffer(self, "y", (n * oh * ow, o), np.result_type(x, self.weight.value))
            np.matmul(cols, self._matrix().T, out=y)
            self._cols, self._in_shape = cols, x.shape
        else:
            y = im2col(x_nhwc, k, self.padding) @ self._matrix().T
        y += self.bias.value
        return y.reshape(n, oh, ow, o).transpose(0, 3, 1, 2)   # (n, o, oh, ow), channels-last memory

    def backward(self, dy):
        n, o, oh, ow = dy.shape
        k, c = self.kernel_size, self.in_channels
        dy_rows = dy.transpose(0, 2, 3, 1).reshape(-1, o)      # free for channels-last dy
        dw = speed.matmul(dy_rows.T, self._cols, weight_gradient=True)      # (o, k*k*c)
        self.weight.grad[...] = dw.reshape(o, k, k, c).transpose(0, 3, 1, 2)
        np.sum(dy_rows, axis=0, out=self.bias.grad)
        if not self.needs_input_grad:
            return None
        # dX: the full convolution of dY with the flipped filters, in/out channels swapped.
        _, _, h, w = self._in_shape
        q = k - 1 - self.padding
        dy_nhwc = dy_rows.reshape(n, oh, ow, o)
        cols = im2col(dy_nhwc, k, q, out=speed.buffer(self, "dcols", _cols_shape(n, h, w, k, o),
                                                      dy.dtype))
        flipped = self.weight.value[:, :, ::-1, ::-1].transpose(2, 3, 0, 1).reshape(k * k * o, c)
        dx = speed.buffer(self, "dx", (n * h * w, c), dy.dtype)
        np.matmul(cols, flipped, out=dx)
        return dx.reshape(n, h, w, c).transpose(0, 3, 1, 2)

    def spec(self):
        return {"type": self.type, "out_channels": self.out_channels,
                "kernel_size": self.kernel_size, "padding": self.padding}


class MaxPool2D(Layer):
    """Max over non-overlapping k x k windows (stride k, as PyTorch's default).

    ``x`` (n, c, h, w) -> ``y`` (n, c, h // k, w // k); rows and columns beyond
    the last whole window are dropped. The gradient flows to the first maximum
    of each window only (with ties, as after a ReLU, to exactly one input).
    """

    type = "maxpool2d"

    def __init__(self, kernel_size=2):
        self.kernel_size = _check_int("MaxPool2D", "kernel_size", kernel_size, 1)

    def output_size(self, h, w):
        return h // self.kernel_size, w // self.kernel_size

    def _windows(self, x):
        """The k*k strided views (n, c, oh, ow) that hold each window's elements."""
        k = self.kernel_size
        oh, ow = self.output_size(*x.shape[2:])
        if oh < 1 or ow < 1:
            raise ValueError(f"MaxPool2D: kernel_size {k} is larger than the "
                             f"{x.shape[2]}x{x.shape[3]} input: nothing would be left")
        x = x[:, :, :oh * k, :ow * k]
        return [x[:, :, i::k, j::k] for i in range(k) for j in range(k)]

    def forward(self, x, training=False):
        if x.ndim != 4:
            raise ValueError(f"MaxPool2D: expected input of shape (n, c, h, w), got {x.shape}")
        views = self._windows(x)
        order = speed.memory_order(x)
        y = (speed.buffer(self, "y", views[0].shape, x.dtype, order=order) if training
             else np.empty_like(views[0], order="K"))
        np.maximum(views[0], views[1], out=y) if len(views) > 1 else np.copyto(y, views[0])
        for v in views[2:]:
            np.maximum(y, v, out=y)
        if training:
            self._x, self._y = x, y
        return y

    def backward(self, dy):
        """Route each window's gradient to its first maximum (where x equals y, in
        row-major order within the window)."""
        x, y = self._x, self._y
        dx = speed.buffer(self, "dx", x.shape, dy.dtype, order=speed.memory_order(x))
        dx[...] = 0
        free = np.ones(y.shape, bool)          # windows whose maximum has not been routed yet
        for view_x, view_dx in zip(self._windows(x), self._windows(dx)):
            hit = view_x == y
            hit &= free
            free &= ~hit
            np.multiply(dy, hit, out=view_dx)
        return dx

    def spec(self):
        return {"type": self.type, "kernel_size": self.kernel_size}
