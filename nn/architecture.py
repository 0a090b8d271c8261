"""Architectures as plain data: a *spec* says which layers a network has, in order.

A spec is JSON-friendly, so it is stored in model files, shown in the app and
written by hand:

    {"input_shape": [1, 28, 28],
     "layers": [{"type": "conv2d", "out_channels": 8, "kernel_size": 5, "padding": 2},
                {"type": "relu"},
                {"type": "maxpool2d", "kernel_size": 2},
                {"type": "flatten"},
                {"type": "dense", "out_features": 64},
                {"type": "relu"},
                {"type": "dense", "out_features": 10}]}

Layer sizes that follow from the previous layer (a dense layer's
``in_features``, a convolution's ``in_channels``) are not written: ``build``
works them out by passing the input shape through the layers, and refuses a
spec that does not fit together (a kernel larger than its input, a pool that
leaves nothing, a dense layer fed an image) with a ``ValueError`` naming the
layer and the parameter. ``mlp_spec`` and ``cnn_spec`` write the two families
the app and ``train.py`` offer.

Limits (``MAX_*``) keep a spec from asking for absurd amounts of memory: a
model file is hostile input, and ``nn.load`` checks its spec against them
before allocating anything.
"""

import math

import numpy as np

from .activations import ACTIVATIONS, get_activation
from .conv import Conv2D, MaxPool2D
from .layers import Dense, Dropout, Flatten

__all__ = ["build", "check_spec", "mlp_spec", "cnn_spec", "describe", "count_parameters",
           "count_macs",
           "shapes", "IMAGE_SHAPE", "N_CLASSES", "MAX_LAYERS", "MAX_WIDTH", "MAX_CHANNELS",
           "MAX_KERNEL", "MAX_PARAMETERS", "MAX_ACTIVATIONS"]

IMAGE_SHAPE = (1, 28, 28)   # one MNIST image as the convolutions see it
N_CLASSES = 10
MAX_LAYERS = 64
MAX_WIDTH = 4096            # dense units
MAX_CHANNELS = 512
MAX_KERNEL = 15
MAX_PARAMETERS = 50_000_000        # 200 MB of float32
MAX_ACTIVATIONS = 2_000_000        # values per image in any one layer's output
_PARAM_KEYS = {"dense": {"out_features"}, "conv2d": {"out_channels", "kernel_size", "padding"},
               "maxpool2d": {"kernel_size"}, "dropout": {"p"}, "flatten": set(),
               **{name: set() for name in ACTIVATIONS}}


def _int(where, name, value, low, high):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not low <= value <= high:
        raise ValueError(f"{where}: {name} must be a whole number from {low} to {high}, "
                         f"got {value!r}")
    return int(value)


def _walk(spec):
    """Yield ``(index, layer dict, input shape, output shape, parameters)`` for each layer,
    checking everything without allocating any weights."""
    if not isinstance(spec, dict):
        raise ValueError(f"spec must be a dict, got {type(spec).__name__}")
    unknown = set(spec) - {"input_shape", "layers"}
    if unknown:
        raise ValueError(f"spec: unknown keys {sorted(unknown)}")
    shape = spec.get("input_shape")
    if not isinstance(shape, (list, tuple)) or len(shape) not in (1, 3):
        raise ValueError(f"spec: input_shape must be [features] or [channels, height, width], "
                         f"got {shape!r}")
    shape = tuple(_int("spec", "input_shape", v, 1, MAX_WIDTH) for v in shape)
    layers = spec.get("layers")
    if not isinstance(layers, (list, tuple)) or not 1 <= len(layers) <= MAX_LAYERS:
        raise ValueError(f"spec: layers must be a list of 1 to {MAX_LAYERS} layers")
    for i, layer in enumerate(layers):
        if (not isinstance(layer, dict) or not isinstance(layer.get("type"), str)
                or layer["type"] not in _PARAM_KEYS):
            kinds = ", ".join(sorted(_PARAM_KEYS))
            raise ValueError(f"layer {i}: each layer needs a 'type', one of {kinds}; got {layer!r}")
        kind = layer["type"]
        where = f"layer {i} ({kind})"
        extra = set(layer) - _PARAM_KEYS[kind] - {"type"}
        if extra:
            raise ValueError(f"{where}: unknown parameters {sorted(extra)}")
        n_params = 0
        if kind == "dense":
            if len(shape) != 1:
                raise ValueError(f"{where}: needs flat input, got shape {list(shape)}; "
                                 "put a flatten layer before it")
            out = _int(where, "out_features", layer.get("out_features"), 1, MAX_WIDTH)
            n_params = (shape[0] + 1) * out
            new = (out,)
        elif kind == "conv2d":
            if len(shape) != 3:
                raise ValueError(f"{where}: needs (channels, height, width) input, got "
                                 f"shape {list(shape)}")
            out = _int(where, "out_channels", layer.get("out_channels"), 1, MAX_CHANNELS)
            k = _int(where, "kernel_size", layer.get("kernel_size"), 1, MAX_KERNEL)
            p = _int(where, "padding", layer.get("padding", 0), 0, k - 1)
            h, w = shape[1] + 2 * p - k + 1, shape[2] + 2 * p - k + 1
            if h < 1 or w < 1:
                raise ValueError(f"{where}: kernel_size {k} is larger than its "
                                 f"{shape[1]}x{shape[2]} input (padding {p})")
            n_params = (shape[0] * k * k + 1) * out
            new = (out, h, w)
        elif kind == "maxpool2d":
            if len(shape) != 3:
                raise ValueError(f"{where}: needs (channels, height, width) input, got "
                                 f"shape {list(shape)}")
            k = _int(where, "kernel_size", layer.get("kernel_size", 2), 1, MAX_KERNEL)
            if shape[1] // k < 1 or shape[2] // k < 1:
                raise ValueError(f"{where}: kernel_size {k} leaves nothing of its "
                                 f"{shape[1]}x{shape[2]} input")
            new = (shape[0], shape[1] // k, shape[2] // k)
        elif kind == "flatten":
            new = (math.prod(shape),)
        elif kind == "dropout":
            p = layer.get("p", 0.5)
            if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p < 1:
                raise ValueError(f"{where}: p must be in [0, 1), got {p!r}")
            new = shape
        else:  # activations
            new = shape
        if math.prod(new) > MAX_ACTIVATIONS or (len(new) == 1 and new[0] > MAX_WIDTH * 16):
            raise ValueError(f"{where}: its output of shape {list(new)} is too large")
        yield i, layer, shape, new, n_params
        shape = new
    if len(shape) != 1:
        raise ValueError(f"spec: the last layer must output class scores (n, classes), "
                         f"got shape {list(shape)}")
    if layers[-1]["type"] != "dense":
        raise ValueError("spec: the last layer must be dense (its outputs are the class scores)")


def check_spec(spec):
    """Validate ``spec``; return ``(input_shape, n_classes, n_parameters)``.

    Raises ``ValueError`` naming the layer and parameter for any spec that does
    not fit together or exceeds the limits; allocates nothing.
    """
    total, out = 0, None
    for _, _, _, out, n_params in _walk(spec):
        total += n_params
    if total > MAX_PARAMETERS:
        raise ValueError(f"spec: {total:,} parameters, more than the limit of {MAX_PARAMETERS:,}")
    return tuple(spec["input_shape"]), out[0], total


def count_parameters(spec):
    """How many parameters (weights and biases) ``spec`` has."""
    return check_spec(spec)[2]


def count_macs(spec):
    """Multiply-adds of one image's forward pass through the dense and convolution
    layers (a training step costs about three times this per image)."""
    total = 0
    for _, layer, shape, new, n_params in _walk(spec):
        if layer["type"] == "dense":
            total += n_params - new[0]
        elif layer["type"] == "conv2d":
            total += (n_params - new[0]) * new[1] * new[2]
    return total


def shapes(spec):
    """Per-image output shape of every layer, as a list of tuples."""
    return [out for _, _, _, out, _ in _walk(spec)]


def _next_activation(layers, i):
    """The activation that follows layer ``i`` (skipping pooling and dropout), or None."""
    for layer in layers[i + 1:]:
        if layer["type"] in ACTIVATIONS:
            return layer["type"]
        if layer["type"] not in ("maxpool2d", "dropout"):
            return None
    return None


def build(spec, rng):
    """The layer objects for ``spec``, initialised from ``rng`` (a ``np.random.Generator``).

    Weights feeding a ReLU-family activation get He initialisation, the others
    (sigmoid, tanh, the output layer) Glorot. Random numbers are drawn layer by
    layer, in order, so the same seed gives the same network.
    """
    check_spec(spec)
    layers = []
    for i, layer, shape, new, _ in _walk(spec):
        kind = layer["type"]
        act = _next_activation(spec["layers"], i)
        init = ACTIVATIONS[act].init if act else "glorot"
        if kind == "dense":
            layers.append(Dense(shape[0], new[0], init=init, rng=rng))
        elif kind == "conv2d":
            layers.append(Conv2D(shape[0], new[0], layer["kernel_size"], layer.get("padding", 0),
                                 init=init, rng=rng))
        elif kind == "maxpool2d":
            layers.append(MaxPool2D(layer.get("kernel_size", 2)))
        elif kind == "flatten":
            layers.append(Flatten())
        elif kind == "dropout":
            layers.append(Dropout(layer.get("p", 0.5), rng=rng))
        else:
            layers.append(get_activation(kind))
    return layers


def mlp_spec(hidden=(256, 128), activation="relu", dropout=0.0, n_inputs=784,
             n_classes=N_CLASSES):
    """A multi-layer perceptron: for each width in ``hidden`` a dense layer, the
    activation and (if ``dropout`` > 0) dropout; then the output layer.
    ``hidden=()`` is multinomial logistic regression."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation: unknown {activation!r}; "
                         f"choose one of {', '.join(sorted(ACTIVATIONS))}")
    layers = []
    for width in hidden:
        layers += [{"type": "dense", "out_features": width}, {"type": activation}]
        if dropout:
            layers.append({"type": "dropout", "p": dropout})
    layers.append({"type": "dense", "out_features": n_classes})
    spec = {"input_shape": [n_inputs], "layers": layers}
    check_spec(spec)
    return spec


def cnn_spec(conv=(32, 64), kernel=5, hidden=(128,), activation="relu", dropout=0.0,
             image_shape=IMAGE_SHAPE, n_classes=N_CLASSES):
    """A convolutional network: for each channel count in ``conv`` a k x k "same"
    convolution, the activation and a 2x2 max-pool; then flatten and the dense
    layers of ``mlp_spec(hidden, ...)``."""
    if not conv:
        raise ValueError("conv: a convolutional network needs at least one conv block")
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation: unknown {activation!r}; "
                         f"choose one of {', '.join(sorted(ACTIVATIONS))}")
    k = _int("cnn", "kernel", kernel, 1, MAX_KERNEL)
    layers = []
    for channels in conv:
        layers += [{"type": "conv2d", "out_channels": channels, "kernel_size": k,
                    "padding": k // 2 if k % 2 else (k - 1) // 2},
                   {"type": activation}, {"type": "maxpool2d", "kernel_size": 2}]
    layers.append({"type": "flatten"})
    head = mlp_spec(hidden, activation, dropout, n_inputs=1, n_classes=n_classes)["layers"]
    spec = {"input_shape": list(image_shape), "layers": layers + head}
    check_spec(spec)
    return spec


def describe(spec):
    """A one-line summary such as ``conv8-conv16-64-10 (relu)`` or ``784-256-128-10 (relu)``."""
    parts, acts = [], []
    for layer in spec["layers"]:
        kind = layer["type"]
        if kind == "conv2d":
            parts.append(f"conv{layer['out_channels']}x{layer['kernel_size']}")
        elif kind == "dense":
            parts.append(str(layer["out_features"]))
        elif kind in ACTIVATIONS and kind not in acts:
            acts.append(kind)
    first = "x".join(map(str, spec["input_shape"])) if len(spec["input_shape"]) == 3 \
        else str(spec["input_shape"][0])
    return f"{first}-{'-'.join(parts)}" + (f" ({', '.join(acts)})" if acts else "")
