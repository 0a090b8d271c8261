"""Convolution and max-pooling over images, with PyTorch's layout and semantics.

Shapes: a batch of images is ``(n, channels, height, width)``; a ``Conv2D``
filter bank ``weight.value`` is ``(out_channels, in_channels, k, k)`` and
``bias.value`` is ``(out_channels,)``. Stride 1, zero padding ``padding`` on
each side, so the output is ``(n, out_channels, h + 2 padding - k + 1, ...)``
and ``padding = k // 2`` keeps the size ("same").

How a convolution becomes one matrix product (im2col, as in CS231n's
``fast_layers.py``): every k x k receptive field of the padded input is copied
into one column of a matrix ``cols`` of shape ``(in_channels * k * k, n * out_h
* out_w)`` (``sliding_window_view`` gives the windows without a Python loop),
the filters are already ``(out_channels, in_channels * k * k)`` once
flattened, and then

    forward:   Y  = Wm @ cols + b            (one product)
    backward:  dW = dY @ cols^T              (one product)
               dX = the "full" convolution of dY with the filters flipped
                    180 degrees and in/out channels swapped: again im2col
                    (of dY, padded by k - 1 - padding) and one product.

The third line replaces the classic col2im (adding every column back to the
pixels it came from), which measured 3x slower on 2 cores.

Memory layout: the products above work on "channel, then batch" arrays,
(channels, n, h, w) in memory: every product then has the long side (n x h x
w pixels) as its output width, which BLAS computes fastest (with the pixels as
rows and a few channels as columns, the same products ran up to 1.6 times
slower), and a channel's window copies are long contiguous runs. A layer still
takes and returns (n, c, h, w) arrays, PyTorch's layout: it returns a
*transposed view* whose memory is (c, n, h, w), and the next layer reads that
without copying. So the public layout is PyTorch's and the memory layout is
the fast one.
"""

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from . import speed
from .layers import DTYPE, Layer, Parameter, init_weights

__all__ = ["Conv2D", "MaxPool2D", "im2col"]

CNHW = (1, 0, 2, 3)   # (n, c, h, w) <-> (c, n, h, w); its own inverse


def _check_int(layer, name, value, low, high=None):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low or (
            high is not None and value > high):
        bound = f"from {low} to {high}" if high is not None else f"of at least {low}"
        raise ValueError(f"{layer}: {name} must be a whole number {bound}, got {value!r}")
    return int(value)


def im2col(x_cnhw, k, padding):
    """Receptive fields as columns: ``(c, n, h, w)`` -> ``(c * k * k, n * oh * ow)``.

    Row ``(ch, i, j)`` holds, for every output pixel, the input value at offset
    (i, j) of its window in channel ``ch`` (zero outside the image): the order
    of a flattened ``(out, in, k, k)`` filter bank's columns.
    """
    c, n, h, w = x_cnhw.shape
    if padding:
        padded = np.zeros((c, n, h + 2 * padding, w + 2 * padding), x_cnhw.dtype)
        padded[:, :, padding:padding + h, padding:padding + w] = x_cnhw
    else:
        padded = x_cnhw
    windows = sliding_window_view(padded, (k, k), axis=(2, 3))   # (c, n, oh, ow, k, k), a view
    windows = windows.transpose(0, 4, 5, 1, 2, 3)                 # (c, k, k, n, oh, ow)
    return windows.reshape(c * k * k, -1)                          # the one copy


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
        x_cnhw = x.transpose(CNHW)                              # free when x is (c, n, h, w) memory
        wm = self.weight.value.reshape(o, c * k * k)
        if training:
            cols = im2col(x_cnhw, k, self.padding)
            y = wm @ cols
            self._cols, self._in_shape = cols, x.shape
        else:
            y = wm @ im2col(x_cnhw, k, self.padding)
        y += self.bias.value[:, None]
        return y.reshape(o, n, oh, ow).transpose(CNHW)        # (n, o, oh, ow), (o, n, ...) memory

    def backward(self, dy):
        n, o, oh, ow = dy.shape
        k, c = self.kernel_size, self.in_channels
        dy_cnhw = dy.transpose(CNHW)
        dy_rows = dy_cnhw.reshape(o, -1)                        # free for (o, n, ...) memory
        speed.matmul(dy_rows, self._cols.T, out=self.weight.grad.reshape(o, -1),
                     weight_gradient=True)
        np.sum(dy_rows, axis=1, out=self.bias.grad)
        if not self.needs_input_grad:
            return None
        # dX: the full convolution of dY with the flipped filters, in/out channels swapped.
        _, _, h, w = self._in_shape
        q = k - 1 - self.padding
        cols = im2col(dy_cnhw, k, q)
        flipped = self.weight.value[:, :, ::-1, ::-1].transpose(1, 0, 2, 3).reshape(c, o * k * k)
        dx = flipped @ cols
        return dx.reshape(c, n, h, w).transpose(CNHW)

    def spec(self):
        return {"type": self.type, "out_channels": self.out_channels,
                "kernel_size": self.kernel_size, "padding": self.padding}


class MaxPool2D(Layer):
    """Max over non-overlapping k x k windows (stride k, as PyTorch's default).

    ``x`` (n, c, h, w) -> ``y`` (n, c, h // k, w // k); rows and columns beyond
    the last whole window are dropped. The gradient flows to the first maximum
    of each window only (with ties, as after a ReLU, to exactly one input).

    Computed in the convolutions' memory layout, (c, n, h, w) (see the module
    docstring), and returned as a (n, c, oh, ow) view of it.
    """

    type = "maxpool2d"

    def __init__(self, kernel_size=2):
        self.kernel_size = _check_int("MaxPool2D", "kernel_size", kernel_size, 1)

    def output_size(self, h, w):
        return h // self.kernel_size, w // self.kernel_size

    def _views(self, x_cnhw):
        """The k*k strided views (c, n, oh, ow) that hold each window's elements, in
        row-major order within the window."""
        k = self.kernel_size
        c, n, h, w = x_cnhw.shape
        oh, ow = h // k, w // k
        if oh < 1 or ow < 1:
            raise ValueError(f"MaxPool2D: kernel_size {k} is larger than the {h}x{w} input: "
                             "nothing would be left")
        x_cnhw = x_cnhw[:, :, :oh * k, :ow * k]
        return [x_cnhw[:, :, i::k, j::k] for i in range(k) for j in range(k)]

    def forward(self, x, training=False):
        if x.ndim != 4:
            raise ValueError(f"MaxPool2D: expected input of shape (n, c, h, w), got {x.shape}")
        views = self._views(x.transpose(CNHW))
        shape = views[0].shape
        y = np.empty(shape, x.dtype)
        np.maximum(views[0], views[1], out=y) if len(views) > 1 else np.copyto(y, views[0])
        for v in views[2:]:
            np.maximum(y, v, out=y)
        if training:
            self._x, self._y = x, y
        return y.transpose(CNHW)

    def backward(self, dy):
        """Route each window's gradient to its first maximum (where x equals y, in
        row-major order within the window)."""
        x, y = self._x, self._y
        n, c, h, w = x.shape
        dy = dy.transpose(CNHW)                        # (c, n, oh, ow), like y
        k = self.kernel_size
        # rows and columns no window covers get 0
        dx = np.zeros((c, n, h, w), dy.dtype) if h % k or w % k else np.empty((c, n, h, w), dy.dtype)
        free = np.ones(y.shape, bool)                  # windows whose maximum is not routed yet
        hit = np.empty(y.shape, bool)
        views = list(zip(self._views(x.transpose(CNHW)), self._views(dx)))
        for view_x, view_dx in views[:-1]:
            np.equal(view_x, y, out=hit)
            hit &= free
            free ^= hit
            np.multiply(dy, hit, out=view_dx)
        np.multiply(dy, free, out=views[-1][1])        # the last element takes what is left
        return dx.transpose(CNHW)

    def spec(self):
        return {"type": self.type, "kernel_size": self.kernel_size}
