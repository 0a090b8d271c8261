"""The training loop: mini-batch gradient descent with callbacks and a history.

``fit`` computes and returns; it never prints. Whoever calls it (the CLI's
progress bar, the app's live curves) hangs a ``Callback`` on it:

    class Printer(Callback):
        def on_epoch_end(self, record):
            print(record["epoch"], record["val_acc"])

    history = fit(model, X, y, optimizer="adam", lr=1e-3, epochs=5, callbacks=[Printer()])

A callback method that returns True stops training after the current batch.
A stop in the middle of an epoch puts the weights back as they were at the
end of the last finished epoch, so the model always matches its history.
"""

import math
import time

import numpy as np

from .blas import training_threads
from .losses import SoftmaxCrossEntropy
from .optim import Optimizer, lr_at_epoch, make_optimizer, SCHEDULES

__all__ = ["fit", "Callback", "TrainingDiverged", "split_validation", "MAX_EPOCHS",
           "MAX_BATCH_SIZE"]

MAX_EPOCHS = 1000
MAX_BATCH_SIZE = 65536


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the model is left as of its last good epoch."""

    def __init__(self, message, history):
        super().__init__(message)
        self.history = history


class Callback:
    """Hooks called by ``fit``. Override what you need; return True to stop.

    - ``on_train_begin(info)``: ``info`` has ``epochs``, ``batches_per_epoch``,
      ``n_train``, ``n_val``.
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
    """Indices ``(train, val)`` for a random hold-out of ``val_size``.

    ``val_size`` is a fraction in [0, 1) or a whole number of samples.
    """
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


def fit(model, X, y, *, optimizer="adam", lr=1e-3, momentum=0.9, nesterov=False, l2=0.0,
        epochs=10, batch_size=128, val_size=0.1, validation_data=None, schedule="none",
        seed=0, callbacks=()):
    """Train ``model`` on ``X`` (n, 784) float32 in [0, 1] and ``y`` (n,) ints.

    Parameters
    ----------
    optimizer : "sgd", "momentum", "adam" or an ``Optimizer`` built on
        ``model.parameters()`` (then ``lr``, ``momentum``, ``nesterov``, ``l2`` are ignored).
    epochs, batch_size : int
    val_size : fraction or count held out of ``X`` for validation, ignored when
        ``validation_data=(X_val, y_val)`` is given.
    schedule : "none", "step" or "cosine" learning-rate schedule over the epochs.
    seed : seeds the validation split and the shuffling; with the model's own
        seed (initialisation, dropout) the same inputs give identical weights.
    callbacks : ``Callback`` objects.

    Returns the history: a list with one dict per epoch (``epoch``,
    ``train_loss``, ``train_acc``, ``val_loss``, ``val_acc``, ``seconds``,
    ``lr``), also appended to ``model.history``. Raises ``TrainingDiverged``
    when the loss stops being finite (weights restored to the last good epoch).
    """
    if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or not 1 <= epochs <= MAX_EPOCHS:
        raise ValueError(f"epochs must be an integer in [1, {MAX_EPOCHS}], got {epochs!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or not 1 <= batch_size <= MAX_BATCH_SIZE:
        raise ValueError(f"batch_size must be an integer in [1, {MAX_BATCH_SIZE}], got {batch_size!r}")
    if schedule not in SCHEDULES and schedule is not None:
        raise ValueError(f"schedule: unknown {schedule!r}; choose one of {', '.join(SCHEDULES)}")
    n_in, n_cls = model.config["n_inputs"], model.config["n_classes"]
    X, y = _check_data(X, y, n_in, n_cls, "training")
    rng = np.random.default_rng(seed)
    dtype = model.dense_layers[0].W.dtype

    if validation_data is not None:
        X_val, y_val = _check_data(*validation_data, n_in, n_cls, "validation")
        X_train, y_train = X, y
    else:
        train_idx, val_idx = split_validation(len(X), val_size, rng)
        if len(val_idx):
            X_train, y_train = X[train_idx], y[train_idx]
        else:  # nothing held out (train_idx is 0..n-1): train on X itself, no copy
            X_train, y_train = X, y
        X_val, y_val = X[val_idx], y[val_idx]
    X_train = np.ascontiguousarray(X_train, dtype=dtype)
    n = len(X_train)
    if n == 0:
        raise ValueError("no training samples left after the validation split")
    if batch_size > n:
        raise ValueError(f"batch_size ({batch_size}) is larger than the training set ({n} samples)")

    if isinstance(optimizer, Optimizer):
        opt = optimizer
    else:
        opt = make_optimizer(optimizer, model.parameters(), lr=lr, momentum=momentum,
                             nesterov=nesterov, weight_decay=l2)
    base_lr = opt.lr
    hp = opt.hyperparams()
    model.hyperparams = {"optimizer": hp["optimizer"], "lr": base_lr, "momentum": hp.get("momentum"),
                         "nesterov": hp.get("nesterov", False), "l2": hp["l2"],
                         "batch_size": int(batch_size), "epochs": int(epochs),
                         "schedule": schedule or "none", "val_size": len(X_val), "n_train": n,
                         "seed": int(seed)}

    loss_fn = SoftmaxCrossEntropy()
    batches = math.ceil(n / batch_size)
    x_buf = np.empty((batch_size, n_in), dtype=dtype)  # the batch is gathered here: no allocation per step
    history = []
    good_weights = model.get_weights()
    start_time = time.perf_counter()
    for cb in callbacks:
        cb.on_train_begin({"epochs": epochs, "batches_per_epoch": batches, "n_train": n,
                           "n_val": len(X_val)})

    stop = False
    with training_threads(batch_size * model.n_parameters):  # see nn.blas
        for epoch in range(epochs):
            epoch_start = time.perf_counter()
            opt.lr = lr_at_epoch(schedule, base_lr, epoch, epochs)
            perm = rng.permutation(n)  # reshuffle every epoch
            loss_sum, correct = 0.0, 0
            for b in range(batches):
                idx = perm[b * batch_size:(b + 1) * batch_size]
                xb = np.take(X_train, idx, axis=0, out=x_buf[:len(idx)], mode="clip")
                yb = y_train[idx]
                logits = model.forward(xb, training=True)
                loss = loss_fn.forward(logits, yb)
                if not math.isfinite(loss):
                    model.set_weights(good_weights)
                    model.history.extend(history)
                    raise TrainingDiverged(
                        f"training diverged in epoch {epoch + 1} (loss became {loss}); "
                        f"try a smaller learning rate than {opt.lr:g}", history)
                correct += int(np.count_nonzero(loss_fn.predicted == yb))
                loss_sum += loss * len(idx)
                model.backward(loss_fn.backward())
                opt.step()
                info = {"epoch": epoch + 1, "batch": b + 1, "batches_per_epoch": batches,
                        "loss": loss, "progress": (epoch * batches + b + 1) / (epochs * batches),
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
                model.history.extend(history)
                raise TrainingDiverged(
                    f"training diverged in epoch {epoch + 1} (validation loss {val_loss}); "
                    f"try a smaller learning rate than {opt.lr:g}", history)
            record = {"epoch": epoch + 1, "train_loss": loss_sum / n, "train_acc": correct / n,
                      "val_loss": val_loss, "val_acc": val_acc,
                      "seconds": time.perf_counter() - epoch_start, "lr": opt.lr}
            history.append(record)
            good_weights = model.get_weights()
            if any([cb.on_epoch_end(record) for cb in callbacks]) or stop:
                break

    model.history.extend(history)
    model.train_seconds = float(getattr(model, "train_seconds", 0.0) + sum(r["seconds"] for r in history))
    for cb in callbacks:
        cb.on_train_end(history)
    return history
