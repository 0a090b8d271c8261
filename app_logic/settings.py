"""The Retrain tab's settings: their limits, defaults, a server-side check and a
rough time estimate.

The widgets already keep values in range, but a widget's value comes from
the browser, so ``settings_problem`` checks every value again before a
training starts: the limits are what keeps one visitor from occupying the
server (a 4 x 512 network on 60,000 images for 30 epochs is about the most
a 10-minute run can do).

A settings dict has the keys of ``DEFAULTS`` except that the layer count and
widths are one list, ``hidden``: e.g. ``{"hidden": [128, 64], "activation":
"relu", "dropout": 0.0, "optimizer": "adam", "lr": 1e-3, "momentum": 0.9,
"l2": 0.0, "batch_size": 128, "epochs": 8, "n_images": 60000, "seed": 0}``.
"""

import math
import numbers

import nn

__all__ = ["MAX_HIDDEN_LAYERS", "MIN_WIDTH", "MAX_WIDTH", "MAX_EPOCHS", "MIN_IMAGES",
           "MAX_IMAGES", "IMAGES_STEP", "BATCH_SIZES", "LEARNING_RATES", "L2_VALUES",
           "MAX_DROPOUT", "MIN_MOMENTUM", "MAX_MOMENTUM", "MAX_SEED", "VAL_FRACTION", "DEFAULTS",
           "settings_problem", "estimate_seconds"]

MAX_HIDDEN_LAYERS = 4
MIN_WIDTH, MAX_WIDTH = 8, 512
MAX_EPOCHS = 30
MIN_IMAGES, MAX_IMAGES, IMAGES_STEP = 500, 60_000, 500
BATCH_SIZES = (16, 32, 64, 128, 256, 512)
LEARNING_RATES = (1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2, 0.1, 0.2, 0.5, 1.0)
L2_VALUES = (0.0, 1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2)
MAX_DROPOUT = 0.5
MIN_MOMENTUM, MAX_MOMENTUM = 0.0, 0.99
MAX_SEED = 2**31 - 1
VAL_FRACTION = 0.1                  # of the training images, held out for validation
SECONDS_PER_SAMPLE_PARAM = 0.4e-9   # measured on 2 cores; for the rough time estimate

DEFAULTS = {"hidden_layers": 2, "widths": (128, 64, 32, 32), "activation": "relu",
            "dropout": 0.0, "optimizer": "adam", "lr": 1e-3, "momentum": 0.9, "l2": 0.0,
            "batch_size": 128, "epochs": 8, "n_images": 60_000, "seed": 0}

# (widget label, key, lowest, highest) for the whole-number settings ...
_INTEGERS = (("Epochs", "epochs", 1, MAX_EPOCHS),
             ("Training images", "n_images", MIN_IMAGES, MAX_IMAGES),
             ("Seed", "seed", 0, MAX_SEED))
# ... the real-valued ones ...
_REALS = (("Dropout", "dropout", 0.0, MAX_DROPOUT),
          ("Momentum", "momentum", MIN_MOMENTUM, MAX_MOMENTUM))
# ... and those picked from a list.
_CHOICES = (("Activation", "activation", tuple(sorted(nn.ACTIVATIONS))),
            ("Optimizer", "optimizer", tuple(nn.OPTIMIZERS)),
            ("Learning rate", "lr", LEARNING_RATES),
            ("L2 weight decay", "l2", L2_VALUES),
            ("Batch size", "batch_size", BATCH_SIZES))
KEYS = ("hidden", *(k for _, k, *_ in _INTEGERS + _REALS + _CHOICES))


def _is_int(v):
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_real(v):
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


def _show(v):
    return f"{v:g}" if _is_real(v) and not _is_int(v) else repr(v) if isinstance(v, str) else str(v)


def settings_problem(settings):
    """Why these settings cannot be trained (a sentence naming the widget), or None.

    Checks, with the widgets' labels: every key present; 0..4 hidden layers of
    8..512 units; epochs 1..30; training images 500..60000; seed 0..2^31-1;
    dropout 0..0.5; momentum 0..0.99; activation, optimizer, learning rate, L2
    and batch size from their lists (booleans, NaN and other types refused);
    and a batch no larger than the training images left after validation.
    """
    missing = [k for k in KEYS if k not in settings]
    if missing:
        return f"Missing settings: {', '.join(missing)}."
    hidden = settings["hidden"]
    if not isinstance(hidden, (list, tuple)) or len(hidden) > MAX_HIDDEN_LAYERS:
        return f"Hidden layers must be a whole number from 0 to {MAX_HIDDEN_LAYERS}."
    for i, width in enumerate(hidden, 1):
        if not (_is_int(width) and MIN_WIDTH <= width <= MAX_WIDTH):
            return (f"Width of layer {i} must be a whole number from {MIN_WIDTH} to {MAX_WIDTH} "
                    f"(got {_show(width)}).")
    for label, key, lo, hi in _INTEGERS:
        v = settings[key]
        if not (_is_int(v) and lo <= v <= hi):
            return f"{label} must be a whole number from {lo} to {hi} (got {_show(v)})."
    for label, key, lo, hi in _REALS:
        v = settings[key]
        if not (_is_real(v) and lo <= v <= hi):
            return f"{label} must be a number from {lo:g} to {hi:g} (got {_show(v)})."
    for label, key, options in _CHOICES:
        v = settings[key]
        if isinstance(v, bool) or not isinstance(v, (str, numbers.Real)) or v not in options:
            return f"{label} must be one of {', '.join(map(_show, options))} (got {_show(v)})."
    n_train = settings["n_images"] - round(settings["n_images"] * VAL_FRACTION)
    if settings["batch_size"] > n_train:
        return (f"Batch size {settings['batch_size']} is larger than the {n_train} training images "
                f"left after holding out {VAL_FRACTION:.0%} for validation: use more images "
                f"or a smaller batch.")
    return None


def estimate_seconds(settings):
    """Rough training time in seconds: work grows with parameters x images x epochs."""
    sizes = [784, *settings["hidden"], 10]
    params = sum((a + 1) * b for a, b in zip(sizes[:-1], sizes[1:]))
    return settings["epochs"] * settings["n_images"] * params * SECONDS_PER_SAMPLE_PARAM
