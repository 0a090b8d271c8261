"""nn.fit: learning, history, reproducibility, callbacks, divergence and input
validation on small synthetic problems; then two real MNIST runs."""


import numpy as np
import pytest

import nn
from nn.optim import lr_at_epoch

HISTORY_KEYS = {"epoch", "train_loss", "train_acc", "val_loss", "val_acc", "seconds", "lr"}


def blobs(n=600, n_inputs=20, n_classes=3, seed=0):
    """Separable data in [0, 1]: one random centre per class plus a little noise."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(0.1, 0.9, (n_classes, n_inputs))
    y = rng.integers(0, n_classes, n)
    X = np.clip(centres[y] + rng.normal(0, 0.1, (n, n_inputs)), 0, 1).astype(np.float32)
    return X, y


def small_model(seed=0, dropout=0.0, activation="relu"):
    return nn.Network(hidden=(16, 8), activation=activation, dropout=dropout, seed=seed,
                      n_inputs=20, n_classes=3)


def weights_equal(a, b):
    wa, wb = a.get_weights(), b.get_weights()
    assert wa and len(wa) == len(wb)
    return all(np.array_equal(x, y) for x, y in zip(wa, wb, strict=True))


class StopAt(nn.Callback):
    def __init__(self, epoch=None, batch=None, at_epoch_end=None):
        self.epoch, self.batch, self.at_epoch_end = epoch, batch, at_epoch_end
        self.batches_seen = []

    def on_batch_end(self, info):
        self.batches_seen.append((info["epoch"], info["batch"]))
        return (info["epoch"], info["batch"]) == (self.epoch, self.batch)

    def on_epoch_end(self, record):
        return record["epoch"] == self.at_epoch_end


# -- learning and history --------------------------------------------------------------

def test_fit_learns_separable_data():
    X, y = blobs()
    model = small_model()
    before = model.loss_and_accuracy(X, y)[0]
    history = nn.fit(model, X, y, optimizer="adam", lr=0.01, epochs=8, batch_size=32)
    losses = [r["train_loss"] for r in history]
    assert losses[-1] < losses[0] / 3
    assert model.loss_and_accuracy(X, y)[0] < before / 3
    assert history[-1]["val_acc"] >= 0.95 and history[-1]["train_acc"] >= 0.95


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam"])
def test_every_optimizer_reduces_the_loss(optimizer):
    X, y = blobs(seed=1)
    model = small_model(activation="tanh", dropout=0.1)
    lr = {"sgd": 0.5, "momentum": 0.1, "adam": 0.01}[optimizer]
    history = nn.fit(model, X, y, optimizer=optimizer, lr=lr, epochs=5, batch_size=32)
    assert history[-1]["train_loss"] < 0.5 * history[0]["train_loss"]


def test_history_records():
    X, y = blobs(n=500)
    model = small_model()
    history = nn.fit(model, X, y, epochs=3, batch_size=50, val_size=100, schedule="cosine",
                     lr=0.01)
    assert len(history) == 3 and model.history == history
    for i, r in enumerate(history, start=1):
        assert set(r) == HISTORY_KEYS
        assert r["epoch"] == i
        assert 0 <= r["train_acc"] <= 1 and 0 <= r["val_acc"] <= 1
        assert r["train_loss"] > 0 and r["val_loss"] > 0 and r["seconds"] >= 0
        assert r["lr"] == pytest.approx(lr_at_epoch("cosine", 0.01, i - 1, 3))
    assert model.hyperparams["val_size"] == 100 and model.hyperparams["n_train"] == 400
    assert model.hyperparams["schedule"] == "cosine" and model.hyperparams["epochs"] == 3
    assert model.train_seconds == pytest.approx(sum(r["seconds"] for r in history))
    # a second fit continues the history
    nn.fit(model, X, y, epochs=1, batch_size=50)
    assert len(model.history) == 4


def test_validation_numbers_are_the_models_own():
    X, y = blobs(n=300)
    X_val, y_val = blobs(n=120, seed=9)
    model = small_model()
    history = nn.fit(model, X, y, epochs=2, batch_size=30, validation_data=(X_val, y_val))
    loss, acc = model.loss_and_accuracy(X_val, y_val)
    assert history[-1]["val_loss"] == pytest.approx(loss, rel=1e-6)
    assert history[-1]["val_acc"] == acc
    assert model.hyperparams["n_train"] == 300


def test_no_validation_split():
    X, y = blobs(n=200)
    history = nn.fit(small_model(), X, y, epochs=1, batch_size=20, val_size=0)
    assert history[0]["val_loss"] is None and history[0]["val_acc"] is None


# -- reproducibility ---------------------------------------------------------------------

def train(model_seed=0, fit_seed=0, epochs=2, dropout=0.2, **kw):
    X, y = blobs(n=300)
    model = small_model(seed=model_seed, dropout=dropout)
    nn.fit(model, X, y, epochs=epochs, batch_size=32, seed=fit_seed, lr=0.01, **kw)
    return model


def test_same_seeds_give_identical_weights():
    assert weights_equal(train(), train())


@pytest.mark.parametrize("change", [{"fit_seed": 1}, {"model_seed": 1}])
def test_different_seed_gives_different_weights(change):
    assert not weights_equal(train(), train(**change))


def test_fit_does_not_modify_its_inputs():
    X, y = blobs(n=200)
    X0, y0 = X.copy(), y.copy()
    nn.fit(small_model(), X, y, epochs=1, batch_size=16)
    assert np.array_equal(X, X0) and np.array_equal(y, y0)


# -- callbacks ------------------------------------------------------------------------------

def test_stop_in_mid_epoch_restores_the_last_finished_epoch():
    stopper = StopAt(epoch=3, batch=4)
    model = train(epochs=6, callbacks=[stopper])
    reference = train(epochs=2)  # the same run, two full epochs
    assert stopper.batches_seen[-1] == (3, 4)  # stopped right after that batch
    assert len(model.history) == 2
    assert weights_equal(model, reference)
    assert model.history[-1]["train_loss"] == reference.history[-1]["train_loss"]


def test_stop_in_the_first_epoch_restores_the_initial_weights():
    model = train(epochs=3, callbacks=[StopAt(epoch=1, batch=2)])
    assert model.history == []
    assert weights_equal(model, small_model(dropout=0.2))


def test_stop_at_the_last_batch_keeps_that_epoch():
    batches = -(-270 // 32)  # 300 samples, 10% held out, batch 32 -> 9 batches
    model = train(epochs=5, callbacks=[StopAt(epoch=2, batch=batches)])
    assert len(model.history) == 2
    assert weights_equal(model, train(epochs=2))


def test_stop_on_epoch_end():
    stopper = StopAt(at_epoch_end=2)
    model = train(epochs=6, callbacks=[stopper])
    assert len(model.history) == 2 and stopper.batches_seen[-1][0] == 2
    assert weights_equal(model, train(epochs=2))


def test_callback_hooks_and_progress():
    events = []

    class Recorder(nn.Callback):
        def on_train_begin(self, info):
            events.append(("begin", info))

        def on_batch_end(self, info):
            events.append(("batch", info))

        def on_epoch_end(self, record):
            events.append(("epoch", record))

        def on_train_end(self, history):
            events.append(("end", history))

    X, y = blobs(n=100)
    nn.fit(small_model(), X, y, epochs=2, batch_size=30, val_size=10, callbacks=[Recorder()])
    assert events[0] == ("begin", {"epochs": 2, "batches_per_epoch": 3, "n_train": 90,
                                   "n_val": 10})
    kinds = [k for k, _ in events]
    assert kinds == ["begin"] + (["batch"] * 3 + ["epoch"]) * 2 + ["end"]
    progress = [info["progress"] for k, info in events if k == "batch"]
    assert progress == pytest.approx([i / 6 for i in range(1, 7)])
    assert len(events[-1][1]) == 2


# -- divergence ---------------------------------------------------------------------------------

def test_divergence_raises_and_restores_finite_weights():
    rng = np.random.default_rng(0)
    X = rng.uniform(0, 1, (200, 20)).astype(np.float32) * np.float32(1e19)
    y = rng.integers(0, 3, 200)
    model = nn.Network(hidden=(), n_inputs=20, n_classes=3, seed=0)
    initial = model.get_weights()
    with np.errstate(all="ignore"), pytest.raises(nn.TrainingDiverged, match="diverged") as info:
        nn.fit(model, X, y, optimizer="sgd", lr=10, epochs=3, batch_size=20)
    assert info.value.history == [] and model.history == []
    assert all(np.isfinite(w).all() for w in model.get_weights())
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), initial))


def test_divergence_after_a_good_epoch_restores_that_epoch():
    snapshot = {}

    class Sabotage(nn.Callback):
        def on_epoch_end(self, record):
            if record["epoch"] == 2:
                snapshot["weights"] = model.get_weights()
                model.dense_layers[1].weight.value[0, 0] = np.nan  # poisons the next batch

    X, y = blobs(n=300)
    model = small_model()
    with pytest.raises(nn.TrainingDiverged, match="epoch 3") as info:
        nn.fit(model, X, y, epochs=5, batch_size=32, callbacks=[Sabotage()])
    assert len(info.value.history) == 2 and len(model.history) == 2
    assert all(np.isfinite(w).all() for w in model.get_weights())
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), snapshot["weights"]))


# -- invalid arguments ------------------------------------------------------------------------------

X_OK, Y_OK = blobs(n=100)

BAD_ARGS = [
    ("epochs", dict(epochs=0)),
    ("epochs", dict(epochs=-1)),
    ("epochs", dict(epochs=2.5)),
    ("epochs", dict(epochs=True)),
    ("epochs", dict(epochs=10**6)),
    ("batch_size", dict(batch_size=0)),
    ("batch_size", dict(batch_size=16.0)),
    ("batch_size", dict(batch_size=False)),
    ("batch_size", dict(batch_size=10**7)),
    ("larger than the training set", dict(batch_size=91)),   # 100 samples, 10 held out
    ("larger than the training set", dict(batch_size=101, val_size=0)),
    ("val_size", dict(val_size=1.0)),
    ("val_size", dict(val_size=-0.1)),
    ("val_size", dict(val_size=100)),
    ("val_size", dict(val_size=True)),
    ("val_size", dict(val_size="10%")),
    ("schedule", dict(schedule="linear")),
    ("optimizer", dict(optimizer="rmsprop")),
    ("lr", dict(lr=0)),
    ("images must have shape", dict(X=X_OK[:, :10])),
    ("images must have shape", dict(X=X_OK.ravel())),
    ("labels must have shape", dict(y=Y_OK[:50])),
    ("labels must have shape", dict(y=Y_OK[:, None])),
    ("labels must be integers", dict(y=Y_OK.astype(np.float32))),
    ("labels must be integers", dict(y=np.where(Y_OK == 0, -1, Y_OK))),
    ("labels must be integers", dict(y=np.where(Y_OK == 0, 3, Y_OK))),  # 3 classes: 0..2
    ("validation labels", dict(validation_data=(X_OK[:10], Y_OK[:9]))),
]


@pytest.mark.parametrize("pattern,kwargs", BAD_ARGS,
                         ids=[f"{i}-{p.split()[0]}" for i, (p, _) in enumerate(BAD_ARGS)])
def test_invalid_arguments_raise_and_change_nothing(pattern, kwargs):
    kwargs = dict(kwargs)
    X, y = kwargs.pop("X", X_OK), kwargs.pop("y", Y_OK)
    model = small_model()
    initial = model.get_weights()
    with pytest.raises(ValueError, match=pattern):
        nn.fit(model, X, y, **{"epochs": 1, "batch_size": 10, **kwargs})
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), initial))
    assert model.history == []


# -- MNIST -----------------------------------------------------------------------------------------

@pytest.mark.slow
def test_mnist_5000_images_reach_92_percent(mnist):
    (X_train, y_train), (X_test, y_test) = mnist
    model = nn.Network(hidden=(128, 64), activation="relu", seed=0)
    # ~94% in ~1.5 s; speed is measured by benchmarks/bench.py, not asserted here.
    nn.fit(model, X_train[:5000], y_train[:5000], optimizer="adam", lr=2e-3, epochs=10,
           batch_size=64, val_size=500, schedule="cosine", seed=0)
    accuracy = nn.metrics.accuracy(y_test, model.predict(X_test))
    assert accuracy >= 0.92, accuracy
    assert model.history[-1]["val_acc"] >= 0.9


@pytest.mark.slow
def test_mnist_same_seed_gives_identical_weights(mnist):
    (X_train, y_train), _ = mnist

    def run():
        model = nn.Network(hidden=(64, 32), dropout=0.1, seed=7)
        nn.fit(model, X_train[:2000], y_train[:2000], optimizer="momentum", lr=0.05,
               nesterov=True, epochs=2, batch_size=64, schedule="step", seed=7)
        return model

    a, b = run(), run()
    assert weights_equal(a, b)
    assert a.history[-1]["val_loss"] == b.history[-1]["val_loss"]
