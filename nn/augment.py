"""Data augmentation: random, label-preserving changes to training digits.

MNIST's writers are few and similar; a network shown only their digits learns
their style. Showing it each training digit a little turned, resized, slanted,
moved, thicker or thinner and gently warped teaches it what does *not* change
a digit. Simard et al. (ICDAR 2003) took the same 800-unit network from 98.4%
to 98.9% with such affine changes and to 99.3% with elastic distortions.

``augment(X, rng, rotate=..., ...)`` changes a whole mini-batch at once, with
no Python loop over images or pixels:

1. stroke thickness: each image is blended towards its grey-level dilation
   (thicker) or erosion (thinner) by a random amount up to ``thickness``;
2. one geometric warp per image: rotation, scaling, shear and shift about the
   image centre, composed into one 2x2 matrix plus an offset, plus an elastic
   displacement field: random displacements at a coarse grid of control points
   (every ``ELASTIC_SPACING`` pixels), interpolated smoothly to every pixel (a
   B-spline-like field, as in most elastic augmentation since Simard et al.'s
   Gaussian-smoothed noise, and 8x cheaper to draw), scaled so that pixels move
   by about ``elastic`` pixels;
3. one bilinear resampling of every output pixel from where the warp says it
   came from (zero outside the image).

Shapes: ``X`` (n, 784) float32 in [0, 1] -> (n, 784) float32 in [0, 1]. Labels
are untouched (none of these changes turns one digit into another at these
strengths). All strengths 0 returns ``X`` itself.

``Augmenter`` binds the strengths of a recipe, and ``Prefetcher`` prepares the
next augmented batch in a worker thread while the network trains on this one.
"""

import queue
import threading

import numpy as np

__all__ = ["augment", "Augmenter", "Prefetcher", "SIDE", "ELASTIC_SIGMA"]

SIDE = 28
CENTRE = (SIDE - 1) / 2.0
ELASTIC_SPACING = 7     # pixels between the elastic field's control points


def _interpolation_matrix(n=SIDE, spacing=ELASTIC_SPACING):
    """(n, k) matrix U so that ``U @ c`` interpolates k control values, one every
    ``spacing`` pixels from one edge to the other, smoothly (cubic B-spline-like
    weights, normalised) to n pixels."""
    k = n // spacing + 2
    centres = np.linspace(-spacing / 2, n - 1 + spacing / 2, k)
    d = np.abs(np.arange(n)[:, None] - centres[None, :]) / spacing
    w = np.where(d < 1, 2 / 3 - d ** 2 + d ** 3 / 2, np.where(d < 2, (2 - d) ** 3 / 6, 0.0))
    return (w / w.sum(axis=1, keepdims=True)).astype(np.float32)


_SMOOTH = _interpolation_matrix()
_YY, _XX = (a.astype(np.float32).ravel() - CENTRE for a in np.mgrid[0:SIDE, 0:SIDE])


def _thickness(images, strength, rng):
    """Blend each (28, 28) image towards its 4-neighbour dilation (t > 0) or
    erosion (t < 0), t uniform in [-strength, strength].

    One pass serves both: the erosion of x is minus the dilation of -x (with the
    same zero border), so each image is multiplied by the sign of its t first."""
    n = len(images)
    t = rng.uniform(-strength, strength, n).astype(np.float32)[:, None, None]
    sign = np.where(t < 0, np.float32(-1), np.float32(1))
    padded = np.zeros((n, SIDE + 2, SIDE + 2), np.float32)
    np.multiply(images, sign, out=padded[:, 1:-1, 1:-1])
    target = np.maximum(padded[:, :-2, 1:-1], padded[:, 2:, 1:-1])
    np.maximum(target, padded[:, 1:-1, :-2], out=target)
    np.maximum(target, padded[:, 1:-1, 2:], out=target)
    np.maximum(target, padded[:, 1:-1, 1:-1], out=target)
    target *= sign                      # dilation, or erosion where t < 0
    target -= images
    target *= np.abs(t)
    target += images
    return target


_GRID = np.stack([_XX, _YY, np.ones_like(_XX)])    # (3, 784): x, y (about the centre), 1


def _source_coordinates(n, rng, rotate, scale, shear, shift, elastic):
    """For every output pixel of every image, where to read it: two (n, 784)
    arrays of x and y positions in the source image (pixel centres at 0..27)."""
    theta = np.deg2rad(rng.uniform(-rotate, rotate, n))
    phi = np.deg2rad(rng.uniform(-shear, shear, n))
    s = np.exp(rng.uniform(-np.log1p(scale), np.log1p(scale), n))
    tx, ty = rng.uniform(-shift, shift, (2, n))
    # Forward map A = R(theta) @ Shear(phi) @ S(s); we need its inverse, from output to
    # source: source = M @ (output - t) + centre, one (2, 3) matrix per image, applied to
    # every pixel's (x, y, 1) in a single matrix product.
    c, si, sh = np.cos(theta), np.sin(theta), np.tan(phi)
    a00, a01, a10, a11 = s * c, s * (c * sh - si), s * si, s * (si * sh + c)
    det = a00 * a11 - a01 * a10
    m = np.empty((n, 2, 3), np.float32)
    m[:, 0, 0], m[:, 0, 1] = a11 / det, -a01 / det
    m[:, 1, 0], m[:, 1, 1] = -a10 / det, a00 / det
    m[:, 0, 2] = CENTRE - m[:, 0, 0] * tx - m[:, 0, 1] * ty
    m[:, 1, 2] = CENTRE - m[:, 1, 0] * tx - m[:, 1, 1] * ty
    src = (m.reshape(2 * n, 3) @ _GRID).reshape(n, 2, SIDE * SIDE)
    if elastic > 0:
        k = _SMOOTH.shape[1]
        coarse = rng.standard_normal((2 * n * k, k)).astype(np.float32)
        rows = (coarse @ _SMOOTH.T).reshape(2 * n, k, SIDE)            # along x
        field = (_SMOOTH @ rows).reshape(n, 2, SIDE * SIDE)             # then along y
        rms = np.sqrt((field * field).mean(axis=(1, 2), keepdims=True)) + np.float32(1e-8)
        field *= np.float32(elastic) / rms
        src += field
    return src[:, 0], src[:, 1]


def _bilinear(images, src_x, src_y):
    """Sample (n, 28, 28) images at (n, 784) positions; zero outside the image.
    (``src_x`` and ``src_y`` are overwritten.)"""
    n = len(images)
    side = SIDE + 2  # one pixel of zero border on each side
    padded = np.zeros((n, side, side), np.float32)
    padded[:, 1:-1, 1:-1] = images
    # Positions in the padded image, in [0, 29]: truncation is then the floor.
    sx = np.clip(src_x, -1, SIDE, out=src_x)
    sx += 1
    sy = np.clip(src_y, -1, SIDE, out=src_y)
    sy += 1
    x0 = np.minimum(np.trunc(sx), np.float32(side - 2))       # float32 throughout: an int
    y0 = np.minimum(np.trunc(sy), np.float32(side - 2))       # array here would make the
    fx = sx - x0                                             # weights float64
    fy = sy - y0
    idx = y0.astype(np.int32) * side + x0.astype(np.int32)
    idx += (np.arange(n, dtype=np.int32) * side * side)[:, None]
    flat = padded.ravel()
    v00, v01 = flat.take(idx), flat.take(idx + 1)
    v10, v11 = flat.take(idx + side), flat.take(idx + side + 1)
    v01 -= v00
    v01 *= fx
    v00 += v01          # top row
    v11 -= v10
    v11 *= fx
    v10 += v11          # bottom row
    v10 -= v00
    v10 *= fy
    v00 += v10
    return np.clip(v00, 0.0, 1.0, out=v00)


def augment(X, rng, *, rotate=0.0, scale=0.0, shear=0.0, shift=0.0, thickness=0.0, elastic=0.0):
    """A randomly changed copy of a batch (see the module docstring).

    ``X`` (n, 784) floats in [0, 1]; ``rng`` a ``np.random.Generator`` (the same
    seed gives the same batch). Strengths: ``rotate`` and ``shear`` in degrees
    (maximum), ``scale`` a share (0.1: 10% larger or smaller at most),
    ``shift`` in pixels (maximum, each direction), ``thickness`` in [0, 1],
    ``elastic`` in pixels (typical displacement). Returns (n, 784) float32.
    """
    strengths = dict(rotate=rotate, scale=scale, shear=shear, shift=shift, thickness=thickness,
                     elastic=elastic)
    for name, v in strengths.items():
        if not (isinstance(v, (int, float, np.floating)) and np.isfinite(v) and v >= 0):
            raise ValueError(f"augment: {name} must be a finite number >= 0, got {v!r}")
    if not any(strengths.values()):
        return X
    X = np.asarray(X)
    if X.ndim != 2 or X.shape[1] != SIDE * SIDE:
        raise ValueError(f"augment: expected images of shape (n, {SIDE * SIDE}), got {X.shape}")
    images = X.reshape(-1, SIDE, SIDE).astype(np.float32, copy=False)
    if thickness > 0:
        images = _thickness(images, thickness, rng)
    if not any((rotate, scale, shear, shift, elastic)):
        return np.clip(images, 0.0, 1.0).reshape(len(X), -1)
    src_x, src_y = _source_coordinates(len(X), rng, rotate, scale, shear, shift, elastic)
    return _bilinear(images, src_x, src_y)


class Augmenter:
    """``augment`` with fixed strengths, e.g. those of a recipe:
    ``Augmenter.from_recipe(recipe)(X, rng)``. ``active`` is False when every strength is 0."""

    NAMES = ("rotate", "scale", "shear", "shift", "thickness", "elastic")

    def __init__(self, **strengths):
        unknown = set(strengths) - set(self.NAMES)
        if unknown:
            raise TypeError(f"unknown augmentations: {', '.join(sorted(unknown))}")
        self.strengths = {name: float(strengths.get(name, 0.0)) for name in self.NAMES}
        augment(np.zeros((1, SIDE * SIDE), np.float32), np.random.default_rng(0), **self.strengths)

    @classmethod
    def from_recipe(cls, recipe):
        return cls(**{name: getattr(recipe, name) for name in cls.NAMES})

    @property
    def active(self):
        return any(self.strengths.values())

    def __call__(self, X, rng):
        return augment(X, rng, **self.strengths)


class Prefetcher:
    """Yield ``make(i)`` for i = 0 .. n-1, computing item i+1 (up to ``depth`` ahead)
    in a worker thread while the caller works on item i. NumPy releases the
    GIL in its array loops, so on two cores augmentation overlaps training.

    Use as a context manager (the worker stops when the block ends, also on
    an exception or an early ``break``).
    """

    def __init__(self, make, n, depth=2):
        self._make, self._n = make, n
        self._queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._work, daemon=True, name="nn-prefetch")

    def _put(self, entry):
        """Queue ``entry`` unless the consumer has gone; False once it has."""
        while not self._stop.is_set():
            try:
                self._queue.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _work(self):
        try:
            for i in range(self._n):
                if not self._put((True, self._make(i))):
                    return
        except BaseException as e:  # handed to the consumer, raised there
            self._put((False, e))

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        return False

    def __iter__(self):
        for _ in range(self._n):
            ok, item = self._queue.get()
            if not ok:
                raise item
            yield item
