"""Training: ``train`` (a recipe and MNIST in, a trained and evaluated network
out) and the loop under it, ``fit``: mini-batch gradient descent with
augmentation, validation, callbacks and a history.

Both compute and return; they never print. Whoever calls them (the CLI's
progress bar, the app's live curves) hangs a ``Callback`` on them:

    class Printer(Callback):
        def on_epoch_end(self, record):
            print(record["epoch"], record["val_acc"])

    model = train(Recipe(epochs=5), nn.data.load_mnist(), callbacks=[Printer()])

A callback method that returns True stops training after the current batch.
A stop in the middle of an epoch puts the weights back as they were at the
end of the last finished epoch, so the model always matches its history.
"""

import math
import time

import numpy as np

from . import speed
from .architecture import count_macs
from .augment import Augmenter, Prefetcher
from .losses import SoftmaxCrossEntropy
from .network import Network
from .optim import Optimizer, lr_at_epoch, make_optimizer
from .recipe import Recipe

__all__ = ["train", "fit", "Callback", "TrainingDiverged", "split_validation", "MAX_EPOCHS",
           "MAX_BATCH_SIZE"]

MAX_EPOCHS = int(Recipe.__dataclass_fields__["epochs"].metadata["setting"].high)
MAX_BATCH_SIZE = int(Recipe.__dataclass_fields__["batch_size"].metadata["setting"].high)


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the model is left as of its last good epoch."""

    def __init__(self, message, history):
        super().__init__(message)
        self.history = history


class Callback:
    """Hooks called by ``fit``. Override what you need; return True to stop.

    - ``on_train_begin(info)``: ``info`` has ``epochs``, ``batches_per_epoch``,
      ``n_train``, ``n_val`` and ``model`` (the network being trained: read it,
      e.g. to keep a picture of its weights, but do not change it).
    - ``on_batch_end(info)``: ``info`` has ``epoch`` (1-based), ``batch``
      (1-based), ``batches_per_epoch``, ``loss`` (this batch), ``progress``
      (fraction of the whole run done, 0..1) and ``elapsed`` (seconds).
    - ``on_epoch_end(record)``: ``record`` is the epoch's history entry.
    - ``on_train_end(history)``.
    """

    def on_train_begin(self, info):
        return False

    def on_batch_end(self, info):
        return False

    def on_epoch_end(self, record):
        return False

    def on_train_end(self, history):
        return None


def split_validation(n, val_size, rng):
    """Indices ``(train, val)`` for a random hold-out of ``val_size``: a fraction
    in [0, 1) or a whole number of samples below ``n``."""
    if isinstance(val_size, (float, np.floating)) and 0 <= val_size < 1:
        n_val = int(round(n * val_size))
    elif isinstance(val_size, (int, np.integer)) and not isinstance(val_size, bool) and 0 <= val_size < n:
        n_val = int(val_size)
    else:
        raise ValueError(f"val_size must be a fraction in [0, 1) or a count below {n}, got {val_size!r}")
    perm = rng.permutation(n)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def _check_data(X, y, n_inputs, n_classes, what):
    X = np.asarray(X)
    y = np.asarray(y)
    if X.ndim != 2 or X.shape[1] != n_inputs:
        raise ValueError(f"{what} images must have shape (n, {n_inputs}), got {X.shape}")
    if y.shape != (X.shape[0],):
        raise ValueError(f"{what} labels must have shape ({X.shape[0]},), got {y.shape}")
    if not np.issubdtype(y.dtype, np.integer) or (y.size and (y.min() < 0 or y.max() >= n_classes)):
        raise ValueError(f"{what} labels must be integers in [0, {n_classes})")
    if not np.issubdtype(X.dtype, np.number) or not np.isfinite(X).all():
        raise ValueError(f"{what} images must be finite numbers (found NaN, inf or non-numbers)")
    return X, y.astype(np.int64, copy=False)


ARCHITECTURE = ("conv", "kernel", "hidden", "activation", "dropout")  # recipe settings fit does not use


def _builds(recipe, model):
    """True if ``recipe``'s architecture settings build exactly ``model``'s spec."""
    try:
        return recipe.spec() == model.spec
    except ValueError:
        return False


class _Batches:
    """The plain counterpart of ``Prefetcher``: makes each batch when asked."""

    def __init__(self, make, perm, n):
        self._make, self._perm, self._n = make, perm, n

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def __iter__(self):
        return (self._make(self._perm, b) for b in range(self._n))


def train(recipe, data, *, callbacks=()):
    """Build the network ``recipe`` describes, train it and evaluate it: the one
    training function behind ``train.py`` and the app's Retrain tab.

    ``data`` is ``((X_train, y_train), (X_test, y_test))`` as ``nn.data.load_mnist``
    returns it; the first ``recipe.n_images`` training images are used. Returns the
    network with its history and its test report in ``metrics``. Raises
    ``ValueError`` for a bad recipe, ``TrainingDiverged`` when the loss explodes.
    A network stopped by a callback before its first epoch ends has an empty history.
    """
    recipe = recipe.check()
    (X, y), (X_test, y_test) = data
    n = min(recipe.n_images, len(X))
    model = Network(recipe.spec(), seed=recipe.seed)
    fit(model, X[:n], y[:n], recipe, callbacks=callbacks)
    if model.history:
        model.metrics = model.evaluate(X_test, y_test)
    return model


def fit(model, X, y, recipe=None, *, callbacks=(), validation_data=None, optimizer=None,
        **settings):
    """Train ``model`` on ``X`` (n, 784) floats in [0, 1] and ``y`` (n,) ints.

    The training settings (optimizer, lr, momentum, nesterov, l2, schedule,
    batch_size, epochs, val_size, seed and the augmentations) come from
    ``recipe`` (an ``nn.Recipe``; default ``Recipe()``) with any ``settings``
    given as keywords on top, e.g. ``fit(model, X, y, lr=0.01, epochs=3)``. Its
    architecture settings are not used: the model is already built.
    ``validation_data=(X_val, y_val)`` replaces the random hold-out of
    ``val_size``. ``optimizer``: a name ("sgd", "momentum", "adam") like any
    setting, or an ``Optimizer`` built on ``model.parameters()`` to use instead
    of the recipe's (then lr, momentum, nesterov and l2 are ignored).

    Returns the history: one dict per epoch (``epoch``, ``train_loss``,
    ``train_acc``, ``val_loss``, ``val_acc``, ``seconds``, ``lr``), also appended
    to ``model.history``. Raises ``TrainingDiverged`` when the loss stops being
    finite (weights restored to the last good epoch).
    """
    if isinstance(optimizer, str):  # a recipe setting, like the other keywords
        settings["optimizer"], optimizer = optimizer, None
    recipe = (recipe or Recipe()).replace(**settings) if settings else (recipe or Recipe())
    problems = {k: v for k, v in recipe.problems().items() if k not in ARCHITECTURE}
    if problems:
        raise ValueError(next(iter(problems.values())))
    n_in, n_cls = model.n_inputs, model.n_classes
    X, y = _check_data(X, y, n_in, n_cls, "training")
    rng = np.random.default_rng(recipe.seed)
    dtype = model.parameters()[0].value.dtype

    if validation_data is not None:
        X_val, y_val = _check_data(*validation_data, n_in, n_cls, "validation")
        X_train, y_train = X, y
    else:
        train_idx, val_idx = split_validation(len(X), recipe.val_size, rng)
        if len(val_idx):
            X_train, y_train = X[train_idx], y[train_idx]
        else:  # nothing held out: train on X itself, no copy
            X_train, y_train = X, y
        X_val, y_val = X[val_idx], y[val_idx]
    X_train = np.ascontiguousarray(X_train, dtype=dtype)
    n, batch_size, epochs = len(X_train), recipe.batch_size, recipe.epochs
    if n == 0:
        raise ValueError("no training samples left after the validation split")
    if batch_size > n:
        raise ValueError(f"batch_size ({batch_size}) is larger than the training set ({n} samples)")

    if isinstance(optimizer, Optimizer):
        opt = optimizer
    elif optimizer is not None:
        raise TypeError(f"optimizer must be an nn.Optimizer (or set it in the recipe), got {optimizer!r}")
    else:
        opt = make_optimizer(recipe.optimizer, model.parameters(), lr=recipe.lr,
                             momentum=recipe.momentum, nesterov=recipe.nesterov, l2=recipe.l2)
    base_lr = opt.lr
    settings_used = recipe.to_dict()
    settings_used.update({k: v for k, v in opt.hyperparams().items()
                          if k in ("optimizer", "lr", "momentum", "nesterov", "l2")})
    if not _builds(recipe, model):  # a network built by hand: its spec says what it is
        for name in ARCHITECTURE:
            settings_used.pop(name)

    def note_run():
        """What this run did, into the model (only once it has trained)."""
        model.recipe = settings_used
        model.trained_on = {"n_train": n, "n_val": len(X_val)}
    augmenter = Augmenter.from_recipe(recipe)
    batch_rng = np.random.default_rng([recipe.seed, 1])   # augmentation's own stream

    loss_fn = SoftmaxCrossEntropy()
    batches = math.ceil(n / batch_size)
    history = []
    good_weights = model.get_weights()
    start_time = time.perf_counter()
    for cb in callbacks:
        cb.on_train_begin({"epochs": epochs, "batches_per_epoch": batches, "n_train": n,
                           "n_val": len(X_val), "model": model})

    def make_batch(perm, b):
        idx = perm[b * batch_size:(b + 1) * batch_size]
        xb = X_train[idx]
        if augmenter.active:
            xb = augmenter(xb, batch_rng)
        return xb.reshape(len(idx), *model.input_shape), y_train[idx]

    stop = False
    try:
        speed.keep_freed_memory()
        with speed.training_threads(batch_size * count_macs(model.spec)):
            for epoch in range(epochs):
                epoch_start = time.perf_counter()
                opt.lr = lr_at_epoch(recipe.schedule, base_lr, epoch, epochs)
                perm = rng.permutation(n)  # reshuffle every epoch
                loss_sum, correct, b = 0.0, 0, 0
                # Augmented batches are made in a worker thread while the network trains.
                with (Prefetcher(lambda i: make_batch(perm, i), batches) if augmenter.active
                      else _Batches(make_batch, perm, batches)) as batches_iter:
                    for b, (xb, yb) in enumerate(batches_iter):
                        logits = model.forward(xb, training=True)
                        loss = loss_fn.forward(logits, yb)
                        if not math.isfinite(loss):
                            model.set_weights(good_weights)
                            note_run()
                            model.history.extend(history)
                            raise TrainingDiverged(
                                f"training diverged in epoch {epoch + 1} (loss became {loss}); "
                                f"try a smaller learning rate than {opt.lr:g}", history)
                        correct += int(np.count_nonzero(loss_fn.predicted == yb))
                        loss_sum += loss * len(yb)
                        model.backward(loss_fn.backward())
                        opt.step()
                        info = {"epoch": epoch + 1, "batch": b + 1, "batches_per_epoch": batches,
                                "loss": loss,
                                "progress": (epoch * batches + b + 1) / (epochs * batches),
                                "elapsed": time.perf_counter() - start_time}
                        if any([cb.on_batch_end(info) for cb in callbacks]):
                            stop = True
                            break
                if stop and b + 1 < batches:
                    model.set_weights(good_weights)  # back to the end of the last finished epoch
                    break
                val_loss, val_acc = (model.loss_and_accuracy(X_val, y_val) if len(X_val)
                                     else (None, None))
                if val_loss is not None and not math.isfinite(val_loss):
                    model.set_weights(good_weights)
                    note_run()
                    model.history.extend(history)
                    raise TrainingDiverged(
                        f"training diverged in epoch {epoch + 1} (validation loss {val_loss}); "
                        f"try a smaller learning rate than {opt.lr:g}", history)
                record = {"epoch": epoch + 1, "train_loss": loss_sum / n,
                          "train_acc": correct / n, "val_loss": val_loss, "val_acc": val_acc,
                          "seconds": time.perf_counter() - epoch_start, "lr": opt.lr}
                history.append(record)
                good_weights = model.get_weights()
                if any([cb.on_epoch_end(record) for cb in callbacks]) or stop:
                    break
    finally:
        model.forget_training_state()

    if history:
        note_run()
    model.history.extend(history)
    model.train_seconds = float(model.train_seconds + sum(r["seconds"] for r in history))
    for cb in callbacks:
        cb.on_train_end(history)
    return history
