"""The Retrain tab's logic: which controls it shows, what a shared link holds, how
long a training will take, and how its starting point differs from the shipped
network. Everything is derived from ``nn.Recipe`` (labels, help, limits), so
a setting added there appears here by itself.

- ``controls(group)``: one ``Control`` per recipe setting of a group, with the
  widget kind, options and limits a visitor of a shared server gets
  (``Setting.app``), for the page to lay out.
- ``DEFAULTS``: where the tab starts (``nn.recipe.PRESETS["quick"]``: a small
  CNN that trains in under a minute), and ``differences_from_shipped`` says
  plainly how it differs from the recipe of the shipped network, so that
  retraining with the defaults never silently replaces a better network with
  a worse one.
- ``to_query`` / ``from_query``: the settings in the page's URL, so a teacher
  can hand out a link that opens with them filled in. A value read from a URL
  is checked like any other input; a bad one is reported and replaced by the
  default.
- ``estimate_seconds``: times two training steps of the chosen network on
  this server (once per architecture and batch size) and scales them up.
"""

import json
import math
import time
from dataclasses import dataclass

import numpy as np

import nn
from nn.recipe import AUGMENTATIONS, GROUPS, PRESETS, SETTINGS

from .cache import cached

__all__ = ["Control", "DEFAULTS", "SHIPPED_RECIPE", "controls", "differences_from_shipped",
           "to_query", "from_query", "estimate_seconds", "describe_value", "LAYER_SETTINGS",
           "KINDS", "CNN_ONLY", "MOMENTUM_ONLY", "widget_values", "recipe_from_widgets"]

DEFAULTS = PRESETS["quick"]
SHIPPED_RECIPE = PRESETS["default"]
LAYER_SETTINGS = ("conv", "hidden")      # tuple settings: a count and one value per layer
KINDS = ("MLP", "CNN")                   # the tab's choice of network family
CNN_ONLY = ("conv", "kernel")            # shown only for a CNN
MOMENTUM_ONLY = ("momentum", "nesterov")  # used only by the momentum optimizer


@dataclass(frozen=True)
class Control:
    """One widget: ``kind`` is "select" (a list of words), "steps" (a list of
    numbers, shown as a slider over them), "slider", "number", "toggle",
    "layers" (how many, then one value each) or "augmentation" (a toggle and
    its strength)."""
    name: str
    label: str
    help: str
    kind: str
    default: object
    options: tuple = ()
    low: float = None
    high: float = None
    step: float = None
    max_count: int = 0
    unit: str = ""


def _control(name):
    s = SETTINGS[name]
    default = getattr(DEFAULTS, name)
    common = dict(name=name, label=s.label, help=s.help, default=default, unit=s.unit)
    if name in LAYER_SETTINGS:
        return Control(kind="layers", options=tuple(s.app) if s.app_values else (),
                       low=None if s.app_values else s.app[0],
                       high=None if s.app_values else s.app[1], step=s.step,
                       max_count=s.app_length[1], **common)
    if name in AUGMENTATIONS:
        return Control(kind="augmentation", low=s.app[0], high=s.app[1], step=s.step, **common)
    if isinstance(default, bool):
        return Control(kind="toggle", **common)
    if isinstance(default, str):
        return Control(kind="select", options=s.choices, **common)
    if s.app_values:
        return Control(kind="steps", options=tuple(s.app), **common)
    if name == "seed":
        return Control(kind="number", low=s.app[0], high=s.app[1], step=1, **common)
    return Control(kind="slider", low=s.app[0], high=s.app[1], step=s.step, **common)


def controls(group):
    """The controls of one ``nn.recipe.GROUPS`` group, in recipe order."""
    if group not in GROUPS:
        raise KeyError(group)
    return [_control(name) for name, s in SETTINGS.items() if s.group == group]


def widget_values(recipe):
    """``{widget key: value}`` that shows ``recipe`` in the Retrain tab's widgets:
    ``kind``; ``rt_<name>`` for plain settings; ``rt_<name>_n`` and ``rt_<name>_<i>``
    for layer lists (an MLP keeps the default CNN's channels ready for when the
    visitor switches); ``rt_<name>_on`` and ``rt_<name>`` for an augmentation's
    toggle and strength (off keeps a strength ready)."""
    values = {"kind": "CNN" if recipe.conv else "MLP"}
    for name in SETTINGS:
        c, value = _control(name), getattr(recipe, name)
        if c.kind == "layers":
            layers = value or getattr(DEFAULTS, name) or (c.options[:2] if c.options else (64,))
            values[f"rt_{name}_n"] = len(layers)
            values.update({f"rt_{name}_{i}": v for i, v in enumerate(layers)})
        elif c.kind == "augmentation":
            values[f"rt_{name}_on"] = value > 0
            values[f"rt_{name}"] = float(value or c.default or c.high / 2)
        else:
            values[f"rt_{name}"] = value
    return values


def recipe_from_widgets(values, kind):
    """The recipe the widgets show: ``values`` holds each drawn control's value by
    setting name; ``kind`` is "MLP" (no convolutions) or "CNN". Settings a family
    does not use (an MLP's channels, Nesterov without momentum) are left out."""
    values = dict(values)
    if kind != "CNN":
        values["conv"], values["kernel"] = (), DEFAULTS.kernel
    elif not values.get("conv"):
        values["conv"] = DEFAULTS.conv
    if values.get("optimizer", DEFAULTS.optimizer) != "momentum":
        values["nesterov"] = False
    return DEFAULTS.replace(**values)


def describe_value(name, value):
    """A setting's value as a person would say it (e.g. "8, 16" or "none")."""
    if isinstance(value, tuple):
        return ", ".join(map(str, value)) if value else "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    if name == "val_size" and isinstance(value, float):   # a share of the training images
        return f"{100 * value:g}%"
    if isinstance(value, float):
        return f"{value:g}{SETTINGS[name].unit}"
    if isinstance(value, int) and value >= 10000:
        return f"{value:,}"
    return f"{value}{SETTINGS[name].unit}"


def duration(seconds):
    """Seconds as a person reads them: "48.2 s" up to 90 s, then "15.1 min (907 s)"."""
    seconds = float(seconds)
    if seconds < 90:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:,.1f} min ({seconds:,.0f} s)"


def differences_from_shipped(recipe):
    """Sentences saying how ``recipe`` differs from the shipped network's recipe."""
    return [f"{SETTINGS[name].label}: {describe_value(name, mine)} (shipped network: "
            f"{describe_value(name, shipped)})"
            for name, mine, shipped in recipe.differences(SHIPPED_RECIPE)]


# -- the URL ----------------------------------------------------------------------------------

def _text(value):
    if isinstance(value, tuple):
        return ",".join(map(str, value)) if value else "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else str(value)


def to_query(recipe):
    """``{name: text}`` for every setting that differs from ``DEFAULTS`` (a short URL)."""
    return {name: _text(mine) for name, mine, _ in recipe.differences(DEFAULTS)}


def _parse(name, text):
    """A URL's text -> a value of the setting's type (ValueError if it is not one)."""
    default = getattr(DEFAULTS, name)
    text = str(text).strip()
    if len(text) > 100:
        raise ValueError("too long")
    if isinstance(default, tuple):
        if text.lower() in ("", "none"):
            return ()
        return tuple(int(part) for part in text.replace(" ", "").split(","))
    if isinstance(default, bool):
        if text.lower() in ("true", "1", "on", "yes"):
            return True
        if text.lower() in ("false", "0", "off", "no"):
            return False
        raise ValueError("not true or false")
    if isinstance(default, str):
        return text
    if isinstance(default, int) and name != "val_size":
        return int(text)
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("not a finite number")
    return value


def from_query(params):
    """The settings in a URL's query ``params`` (a mapping of name -> text).

    Returns ``(recipe, problems)``: each valid setting is taken, each bad one is
    left at its default and gets a sentence in ``problems``. Parameters that
    are not settings are ignored (the URL may carry others).
    """
    values, problems = {}, []
    for name in SETTINGS:
        if name not in params:
            continue
        text = params[name]
        label = SETTINGS[name].label
        try:
            value = _parse(name, text)
        except ValueError:
            problems.append(f"{label}: “{str(text)[:40]}” from the link is not a valid value; "
                            f"using {describe_value(name, getattr(DEFAULTS, name))}.")
            continue
        problem = DEFAULTS.replace(**{name: value}).field_problem(name, app=True)
        if problem:
            problems.append(f"{problem} Using {describe_value(name, getattr(DEFAULTS, name))} "
                            "instead.")
            continue
        values[name] = value
    recipe = DEFAULTS.replace(**values)
    whole = recipe.problems(app=True)
    if whole:  # each value fine on its own, but not together (e.g. nesterov with adam)
        problems += list(whole.values())
        recipe = DEFAULTS.replace(**{k: v for k, v in values.items() if k not in whole})
        if recipe.problems(app=True):
            recipe = DEFAULTS
    return recipe, problems


# -- the time estimate ---------------------------------------------------------------------------

def _seconds_per_image(recipe):
    """Seconds one training image costs this network on this server, from two timed
    training steps (after one to warm up) on random data."""
    model = nn.Network(recipe.spec(), seed=0)
    batch = recipe.batch_size
    rng = np.random.default_rng(0)
    X = rng.random((batch, *model.input_shape), dtype=np.float32)
    y = rng.integers(0, 10, batch)
    loss = nn.SoftmaxCrossEntropy()
    opt = nn.make_optimizer(recipe.optimizer, model.parameters(), lr=1e-4)
    times = []
    with nn.speed.training_threads(batch * nn.architecture.count_macs(model.spec)):
        for _ in range(3):
            start = time.perf_counter()
            loss.forward(model.forward(X, training=True), y)
            model.backward(loss.backward())
            opt.step()
            times.append(time.perf_counter() - start)
    return min(times[1:]) / batch


def estimate_seconds(recipe, n_available=60000):
    """About how long ``recipe`` will train here, in seconds: the timed cost of an
    image times images and epochs, plus a validation pass per epoch (a forward
    pass: a third of a training step) and the test evaluation at the end."""
    key = (json.dumps(recipe.spec(), sort_keys=True), recipe.batch_size, recipe.optimizer)
    per_image = cached("seconds per image", key, lambda: _seconds_per_image(recipe))
    n = min(recipe.n_images, n_available)
    n_val = int(round(n * recipe.val_size)) if recipe.val_size < 1 else int(recipe.val_size)
    return per_image * ((n - n_val) * recipe.epochs + (n_val * recipe.epochs + 10000) / 3)

