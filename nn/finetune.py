"""Fine-tuning: teach a trained network a few new examples (a person's own
handwriting) without making it forget what it knew.

Training a network further on twenty drawings alone would bend it towards
them and away from everything else: it *forgets* (McCloskey & Cohen, 1989,
called it catastrophic interference). Three cures, all used here:

- **rehearsal**: every mini-batch mixes the new examples with examples the
  network learned from before (``X_base``, e.g. MNIST training images), so the
  old task keeps pulling the weights back;
- **augmentation** of the few new examples: each is shown turned, slanted,
  moved and warped a little differently every time, so the network learns the
  writer's style rather than twenty exact images;
- **keeping some of the old network** (weight-space ensembling, WiSE-FT:
  Wortsman et al., 2022): the result is ``(1 - keep) * taught + keep *
  original``, weight by weight. Fine-tuning starts from the original, so the
  two lie in one valley of the loss and their blend works; it keeps most of
  what was learned and undoes most of what was forgotten.

SGD with momentum, its learning rate falling along half a cosine to 0, so the
last steps settle instead of jumping between the new examples and the old.

    taught = nn.fine_tune(model, X_mine, y_mine, X_base=X_train[:10000], y_base=y_train[:10000])

What the defaults measured (``python benchmarks/drawings_eval.py --teach``:
two drawings per digit from each UNIPEN writer, read on that writer's other
drawings; and the MNIST test set): see the README's "Teaching" table. With
``X_base=None`` there is no rehearsal: the app offers that so a learner can
watch forgetting happen.
"""

import math
import time

import numpy as np

from . import speed
from .architecture import count_macs
from .augment import augment
from .losses import SoftmaxCrossEntropy
from .optim import make_optimizer

__all__ = ["fine_tune", "NEW_EXAMPLE_AUGMENTATION"]

#: How the few new examples are varied at every step (see ``nn.augment``).
NEW_EXAMPLE_AUGMENTATION = {"rotate": 10.0, "scale": 0.1, "shear": 10.0, "shift": 1.5,
                            "thickness": 0.3, "elastic": 1.0}


def _check(name, X, y, n_inputs):
    X = np.asarray(X)
    y = np.asarray(y)
    if X.ndim != 2 or X.shape[1] != n_inputs:
        raise ValueError(f"{name}: images must have shape (n, {n_inputs}), got {X.shape}")
    if y.shape != (len(X),):
        raise ValueError(f"{name}: labels must have shape ({len(X)},), got {y.shape}")
    if not np.issubdtype(y.dtype, np.integer) or (y.size and (y.min() < 0 or y.max() > 9)):
        raise ValueError(f"{name}: labels must be whole numbers from 0 to 9")
    if not np.issubdtype(X.dtype, np.number) or not np.isfinite(X).all() or (
            X.size and (X.min() < 0 or X.max() > 1)):
        raise ValueError(f"{name}: pixel values must be finite numbers in [0, 1]")
    return X.astype(np.float32, copy=False), y.astype(np.int64)


def fine_tune(model, X_new, y_new, *, X_base=None, y_base=None, seed=0, steps=60, lr=0.03,
              batch_size=64, new_share=0.5, keep=0.2, optimizer="momentum", augmentation=None,
              callback=None):
    """A copy of ``model`` taught ``X_new`` (n, 784) in [0, 1] with labels ``y_new`` (n,).

    ``model`` itself is untouched. Each of the ``steps`` mini-batches of
    ``batch_size`` holds ``new_share`` new examples (drawn with replacement and
    augmented with ``augmentation``, default ``NEW_EXAMPLE_AUGMENTATION``) and,
    when ``X_base``/``y_base`` are given, the rest from them (rehearsal);
    without them every example is new. ``optimizer`` ("momentum", "sgd" or
    "adam") starts at ``lr`` and decays to 0 along a half cosine. Finally the
    weights become ``(1 - keep) * taught + keep * original`` (``keep=0``: the
    taught network as it is). ``callback(step, loss)`` is called after each
    step; returning True stops early.

    The copy's ``trained_on`` records how many new and rehearsal examples it
    saw; its recipe, history and metrics are those of ``model`` (re-evaluate it).
    """
    X_new, y_new = _check("X_new", X_new, y_new, model.n_inputs)
    if len(X_new) == 0:
        raise ValueError("X_new: there are no examples to learn from")
    rehearse = X_base is not None
    if rehearse:
        X_base, y_base = _check("X_base", X_base, y_base, model.n_inputs)
        if len(X_base) == 0:
            raise ValueError("X_base: give some examples to rehearse, or None for no rehearsal")
    elif y_base is not None:
        raise ValueError("y_base was given without X_base")
    for name, value, low, high in (("steps", steps, 1, 10_000), ("batch_size", batch_size, 2, 4096)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not low <= value <= high:
            raise ValueError(f"{name} must be a whole number from {low} to {high}, got {value!r}")
    if isinstance(lr, bool) or not (isinstance(lr, (int, float)) and 0 < lr <= 1):
        raise ValueError(f"lr must be in (0, 1], got {lr!r}")
    if isinstance(new_share, bool) or not (isinstance(new_share, (int, float)) and 0 < new_share <= 1):
        raise ValueError(f"new_share must be in (0, 1], got {new_share!r}")
    if isinstance(keep, bool) or not (isinstance(keep, (int, float)) and 0 <= keep < 1):
        raise ValueError(f"keep must be in [0, 1), got {keep!r}")
    strengths = dict(NEW_EXAMPLE_AUGMENTATION if augmentation is None else augmentation)

    taught = model.copy()
    rng = np.random.default_rng(seed)
    n_new = max(1, round(batch_size * new_share)) if rehearse else batch_size
    n_old = batch_size - n_new if rehearse else 0
    params = taught.parameters()
    opt = make_optimizer(optimizer, params, lr=lr, momentum=0.9)
    loss_fn = SoftmaxCrossEntropy()
    started = time.perf_counter()
    speed.keep_freed_memory()
    with speed.training_threads(batch_size * count_macs(taught.spec)):
        for step in range(steps):
            opt.lr = lr * 0.5 * (1 + math.cos(math.pi * step / steps))
            pick = rng.integers(0, len(X_new), n_new)
            xb = augment(X_new[pick], rng, **strengths)
            yb = y_new[pick]
            if n_old:
                old = rng.integers(0, len(X_base), n_old)
                xb = np.concatenate([xb, X_base[old]])
                yb = np.concatenate([yb, y_base[old]])
            loss = loss_fn.forward(taught.forward(xb.reshape(len(xb), *taught.input_shape),
                                                  training=True), yb)
            if not math.isfinite(loss):
                raise ValueError(f"fine-tuning diverged at step {step + 1}; use a smaller lr than {lr:g}")
            taught.backward(loss_fn.backward())
            opt.step()
            if callback is not None and callback(step + 1, loss):
                break
    taught.forget_training_state()
    for p, p0 in zip(params, model.parameters()):
        p.value *= 1 - keep
        p.value += keep * p0.value
    taught.trained_on = {**taught.trained_on, "fine_tuned_on": int(len(X_new)),
                         "rehearsal_examples": int(len(X_base)) if rehearse else 0,
                         "fine_tune_steps": int(step + 1),
                         "fine_tune_seconds": round(time.perf_counter() - started, 3)}
    return taught
