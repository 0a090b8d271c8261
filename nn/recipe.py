"""The training recipe: every hyperparameter once, with its type, default,
allowed range and a one-line explanation a learner understands.

``Recipe`` is the single source of truth for a training run. ``train.py``
builds its command-line options from it, the app builds the Retrain tab's
widgets (and their tighter limits for a shared server, ``Setting.app``) and
re-checks what a browser sends with it, ``nn.fit`` validates with it, and
every model file stores the recipe it was trained with:

    recipe = Recipe(conv=(8, 16), hidden=(64,), epochs=3)   # everything else: defaults
    recipe.check()              # ValueError naming the setting, e.g. "Learning rate (lr) ..."
    model = nn.train(recipe, nn.data.load_mnist())

``Recipe()`` is plain training (an MLP, Adam, no augmentation), what
``nn.fit`` does when told nothing else. ``PRESETS`` name complete recipes:
"default" and "mlp" made the shipped ``weights/default.npz`` and
``weights/mlp.npz`` (``python train.py --preset mlp`` reproduces the second),
"quick" is the Retrain tab's starting point.
"""

import dataclasses
import math
import numbers
from dataclasses import dataclass, field

from .activations import ACTIVATIONS
from .architecture import cnn_spec, mlp_spec
from .optim import OPTIMIZERS, SCHEDULES

__all__ = ["Recipe", "Setting", "SETTINGS", "GROUPS", "AUGMENTATIONS", "PRESETS", "setting_of"]

GROUPS = {"architecture": "Architecture", "optimisation": "Optimisation",
          "data": "Data", "augmentation": "Augmentation"}
LEARNING_RATES = (1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2, 0.1, 0.2, 0.5, 1.0)
L2_VALUES = (0.0, 1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2)
BATCH_SIZES = (16, 32, 64, 128, 256, 512)


@dataclass(frozen=True)
class Setting:
    """What a recipe field means and which values it accepts.

    ``low``/``high`` (numbers) or ``choices`` bound what ``nn`` accepts; for
    a tuple field they bound each element and ``length`` bounds how many.
    ``app`` is the tighter bound for a visitor of a shared server: a
    ``(low, high)`` range, or a tuple of allowed values (``app_values=True``),
    and ``app_length`` for tuple fields. ``step`` is the widget's step.
    """
    label: str
    help: str
    group: str
    low: float = None
    high: float = None
    choices: tuple = None
    length: tuple = None
    app: tuple = None
    app_values: bool = False
    app_length: tuple = None
    step: float = None
    unit: str = ""


def _s(default, label, help, group, **kw):
    return field(default=default, metadata={"setting": Setting(label, help, group, **kw)})


@dataclass(frozen=True)
class Recipe:
    """Everything that decides how a network is built and trained (see the module docstring)."""

    # -- architecture --
    conv: tuple = _s((), "Convolution channels",
                     "Filters in each convolution block (a filter slides over the image looking for "
                     "one small pattern); none gives a plain fully connected network. More filters "
                     "find more patterns but train slower.",
                     "architecture", low=1, high=512, length=(0, 6), app=(4, 8, 16, 32, 64),
                     app_values=True, app_length=(0, 3))
    kernel: int = _s(5, "Filter size", "Width in pixels of each convolution filter; a larger "
                     "filter sees a larger piece of the digit at once.", "architecture",
                     low=1, high=15, app=(3, 5), app_values=True, unit="px")
    hidden: tuple = _s((128, 64), "Hidden layers",
                       "Units in each fully connected hidden layer. More units can learn more "
                       "but train slower and can memorise the training images (overfit).",
                       "architecture", low=1, high=4096, length=(0, 8), app=(8, 512),
                       app_length=(0, 4), step=8)
    activation: str = _s("relu", "Activation",
                         "The function each unit applies to its sum: relu (max(0, x)) learns "
                         "fastest; sigmoid and tanh squash it into a range and learn slower.",
                         "architecture", choices=tuple(sorted(ACTIVATIONS)))
    dropout: float = _s(0.0, "Dropout",
                        "Share of hidden units switched off at random in each training step, so "
                        "the network cannot rely on any one of them. More fights overfitting but "
                        "slows learning.", "architecture", low=0.0, high=0.95, app=(0.0, 0.5),
                        step=0.05)
    # -- optimisation --
    optimizer: str = _s("adam", "Optimizer",
                        "How the weights move against the gradient: sgd takes plain steps, "
                        "momentum keeps some speed from earlier steps, adam also gives every "
                        "weight its own step size.", "optimisation", choices=OPTIMIZERS)
    lr: float = _s(1e-3, "Learning rate",
                   "How big a step the weights take each time. Too small: slow learning; too "
                   "large: the loss jumps around or explodes.", "optimisation",
                   low=1e-6, high=10.0, app=LEARNING_RATES, app_values=True)
    momentum: float = _s(0.9, "Momentum",
                         "For the momentum optimizer: the share of the previous step kept in "
                         "the next one. Higher values roll faster through flat regions but can "
                         "overshoot.", "optimisation", low=0.0, high=0.999, app=(0.5, 0.99),
                         step=0.01)
    nesterov: bool = _s(False, "Nesterov momentum",
                        "Look one step ahead before computing the gradient (momentum optimizer "
                        "only); often a little steadier.", "optimisation")
    l2: float = _s(0.0, "L2 weight decay",
                   "Pulls every weight a little towards zero at each step, which keeps the network "
                   "simple and fights overfitting. Too much and it cannot learn.", "optimisation",
                   low=0.0, high=1.0, app=L2_VALUES, app_values=True)
    schedule: str = _s("none", "Learning-rate schedule",
                       "How the learning rate changes over the epochs: constant (none), halved "
                       "every third of the run (step), or gliding down along a cosine.",
                       "optimisation", choices=SCHEDULES)
    batch_size: int = _s(128, "Batch size",
                         "Images per weight update. Small batches give many noisy steps, large "
                         "batches fewer, smoother and (per image) faster ones.", "optimisation",
                         low=1, high=65536, app=BATCH_SIZES, app_values=True)
    epochs: int = _s(10, "Epochs", "Passes over all the training images. More epochs learn more, "
                     "until the validation curve stops improving.", "optimisation",
                     low=1, high=1000, app=(1, 30), step=1)
    # -- data --
    n_images: int = _s(60000, "Training images",
                       "How many of MNIST's 60,000 training images to use (the first ones). "
                       "Fewer train faster and show overfitting sooner.", "data",
                       low=10, high=60000, app=(500, 60000), step=500)
    val_size: float = _s(0.1, "Validation images",
                         "Images held out of training to check the network on images it has "
                         "not learned from: a share (below 1) or a count.", "data",
                         low=0, high=60000, app=(0.05, 0.1, 0.2), app_values=True)
    seed: int = _s(0, "Seed", "Starts the random numbers (first weights, shuffling, "
                   "augmentation): the same seed and settings give the same network.", "data",
                   low=0, high=2**31 - 1, app=(0, 2**31 - 1), step=1)
    # -- augmentation --
    rotate: float = _s(0.0, "Rotation", "Turn each training image by a random angle up to this "
                       "many degrees, so a tilted digit is still read.", "augmentation",
                       low=0.0, high=45.0, app=(0.0, 30.0), step=1.0, unit="°")
    scale: float = _s(0.0, "Scaling", "Make each training image randomly larger or smaller by "
                      "up to this share.", "augmentation", low=0.0, high=0.5, app=(0.0, 0.3),
                      step=0.01)
    shear: float = _s(0.0, "Slant (shear)", "Slant each training image by a random angle up to "
                      "this many degrees, like handwriting that leans.", "augmentation",
                      low=0.0, high=45.0, app=(0.0, 30.0), step=1.0, unit="°")
    shift: float = _s(0.0, "Shift", "Move each training image by up to this many pixels in each "
                      "direction.", "augmentation", low=0.0, high=8.0, app=(0.0, 4.0), step=0.5,
                      unit="px")
    thickness: float = _s(0.0, "Stroke thickness", "Make each training digit's strokes randomly "
                          "thicker or thinner, up to this strength (1: about one pixel).",
                          "augmentation", low=0.0, high=1.0, app=(0.0, 1.0), step=0.1)
    elastic: float = _s(0.0, "Elastic distortion", "Bend each training image with a smooth "
                        "random warp moving pixels by about this many pixels, like the wobble "
                        "of a hand.", "augmentation", low=0.0, high=4.0, app=(0.0, 3.0),
                        step=0.25, unit="px")

    # -- derived ---------------------------------------------------------------------------
    @property
    def kind(self):
        """"cnn" when there are convolution blocks, else "mlp"."""
        return "cnn" if self.conv else "mlp"

    @property
    def augmented(self):
        return any(getattr(self, name) > 0 for name in AUGMENTATIONS)

    def spec(self):
        """The network architecture (see ``nn.architecture``) this recipe builds."""
        if self.conv:
            return cnn_spec(self.conv, self.kernel, self.hidden, self.activation, self.dropout)
        return mlp_spec(self.hidden, self.activation, self.dropout)

    def replace(self, **changes):
        """A copy with ``changes``; raises TypeError for an unknown setting."""
        unknown = set(changes) - set(SETTINGS)
        if unknown:
            raise TypeError(f"unknown settings: {', '.join(sorted(unknown))}; "
                            f"known: {', '.join(SETTINGS)}")
        return dataclasses.replace(self, **changes)

    def to_dict(self):
        """JSON-friendly: tuples become lists, NumPy numbers Python numbers."""
        def plain(v):
            if isinstance(v, tuple):
                return [plain(x) for x in v]
            return v.item() if hasattr(v, "item") and not isinstance(v, (str, bool)) else v
        return {f.name: plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data, *, app=False):
        """A checked recipe from a dict such as ``to_dict()`` wrote (missing keys: defaults).
        Raises ValueError naming the first bad setting; unknown keys are refused."""
        if not isinstance(data, dict):
            raise ValueError(f"a recipe must be a dict, got {type(data).__name__}")
        unknown = set(data) - set(SETTINGS)
        if unknown:
            raise ValueError(f"unknown settings: {', '.join(sorted(map(str, unknown)))}")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        recipe = cls(**values)
        recipe.check(app=app)
        return recipe

    def problems(self, *, app=False):
        """``{setting name: message}`` for every value out of bounds (empty when all are fine).
        ``app=True`` applies the shared server's tighter limits (``Setting.app``)."""
        found = {}
        for name, s in SETTINGS.items():
            message = _problem(name, s, getattr(self, name), app)
            if message:
                found[name] = message
        if not found and self.nesterov and self.optimizer != "momentum":
            found["nesterov"] = ("Nesterov momentum (nesterov) only applies to the momentum "
                                 "optimizer.")
        if not found:
            n_val = round(self.n_images * self.val_size) if self.val_size < 1 else self.val_size
            if self.batch_size > self.n_images - n_val:
                found["batch_size"] = (
                    f"Batch size (batch_size) {self.batch_size} is larger than the "
                    f"{self.n_images - n_val:,} training images left after holding "
                    f"{n_val:,} out for validation: use more images or a smaller batch.")
        if not found:
            try:
                self.spec()
            except ValueError as e:
                found["conv" if self.conv else "hidden"] = f"The architecture does not fit: {e}"
        return found

    def field_problem(self, name, *, app=False):
        """The message for setting ``name`` alone (its own type and bounds, not how it
        goes with the others), or None."""
        return _problem(name, SETTINGS[name], getattr(self, name), app)

    def check(self, *, app=False):
        """Raise ``ValueError`` with the first of ``problems()``; return self when fine."""
        found = self.problems(app=app)
        if found:
            raise ValueError(next(iter(found.values())))
        return self

    def differences(self, other):
        """``[(setting name, self's value, other's value)]`` where the two recipes differ."""
        return [(name, getattr(self, name), getattr(other, name)) for name in SETTINGS
                if getattr(self, name) != getattr(other, name)]


SETTINGS = {f.name: f.metadata["setting"] for f in dataclasses.fields(Recipe)}
AUGMENTATIONS = tuple(name for name, s in SETTINGS.items() if s.group == "augmentation")


def setting_of(name):
    """The ``Setting`` of a recipe field (KeyError for an unknown name)."""
    return SETTINGS[name]


def _is_int(v):
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_real(v):
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


def _show(v):
    if isinstance(v, str):
        return repr(v)
    if _is_real(v) and not _is_int(v):
        return f"{v:g}"
    return str(v)


def _bounds_text(low, high, integer):
    if integer:
        return f"a whole number from {int(low):,} to {int(high):,}"
    return f"a number from {low:g} to {high:g}"


def _problem(name, s, value, app):
    """The message for one bad value, or None. Messages name the setting as the
    app labels it and as the code calls it, e.g. "Learning rate (lr) must ..."."""
    who = f"{s.label} ({name})"
    default = Recipe.__dataclass_fields__[name].default
    if isinstance(default, bool):
        return None if isinstance(value, bool) else f"{who} must be true or false, got {_show(value)}."
    if isinstance(default, str):
        if isinstance(value, str) and value in s.choices:
            return None
        return f"{who} must be one of {', '.join(map(repr, s.choices))}, got {_show(value)}."
    if isinstance(default, tuple):
        if not isinstance(value, (tuple, list)):
            return f"{who} must be a list of whole numbers, got {_show(value)}."
        lo_n, hi_n = s.app_length if app else s.length
        if not lo_n <= len(value) <= hi_n:
            return f"{who} must have {lo_n} to {hi_n} entries, got {len(value)}."
        for i, v in enumerate(value, 1):
            if app and s.app_values:
                if not _is_int(v) or v not in s.app:
                    return (f"{who}: entry {i} must be one of {', '.join(map(str, s.app))}, "
                            f"got {_show(v)}.")
                continue
            lo, hi = s.app if app else (s.low, s.high)
            if not (_is_int(v) and lo <= v <= hi):
                return f"{who}: entry {i} must be {_bounds_text(lo, hi, True)}, got {_show(v)}."
        return None
    integer = isinstance(default, int)
    if name == "val_size":  # a share below 1 or a whole count
        ok = _is_real(value) and (0 <= value < 1 or (_is_int(value) and value <= s.high))
        if app:
            ok = _is_real(value) and value in s.app
        if not ok:
            allowed = (", ".join(map(_show, s.app)) if app else
                       f"a share from 0 to below 1, or a whole count up to {s.high:g}")
            return f"{who} must be {allowed}, got {_show(value)}."
        return None
    if app and s.app_values:
        if (_is_int(value) if integer else _is_real(value)) and value in s.app:
            return None
        return f"{who} must be one of {', '.join(map(_show, s.app))}, got {_show(value)}."
    lo, hi = s.app if app else (s.low, s.high)
    if (_is_int(value) if integer else _is_real(value)) and lo <= value <= hi:
        return None
    return f"{who} must be {_bounds_text(lo, hi, integer)}, got {_show(value)}."


#: Complete recipes by name (see the module docstring).
PRESETS = {
    "default": Recipe(conv=(32, 64), kernel=5, hidden=(128,), dropout=0.25, schedule="cosine",
                      epochs=20, rotate=10.0, shear=10.0, thickness=0.5, elastic=1.0),
    "mlp": Recipe(hidden=(800, 800), dropout=0.25, schedule="cosine", epochs=60, rotate=12.0,
                  scale=0.15, shear=12.0, shift=2.0, thickness=0.5, elastic=1.0),
    "quick": Recipe(conv=(8, 16), kernel=5, hidden=(64,), schedule="cosine", epochs=2,
                    n_images=20000, val_size=0.1, rotate=12.0, scale=0.15, shear=12.0, shift=2.0,
                    thickness=0.5, elastic=1.0),
}
