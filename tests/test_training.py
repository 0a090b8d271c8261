"""nn.fit and nn.train: learning, history, the recorded recipe, reproducibility,
callbacks, divergence and input validation on small synthetic problems; then
real MNIST runs on small subsets."""

import json

import numpy as np
import pytest

import nn
from helpers import small_model as mlp
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
    """20-16-8-3, for ``blobs``."""
    return mlp((16, 8), activation, dropout, seed=seed, n_inputs=20, n_classes=3)


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
    assert model.trained_on["n_val"] == 100 and model.trained_on["n_train"] == 400
    assert model.recipe["val_size"] == 100
    assert model.recipe["schedule"] == "cosine" and model.recipe["epochs"] == 3
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
    assert model.trained_on == {"n_train": 300, "n_val": 120}


def test_no_validation_split():
    X, y = blobs(n=200)
    model = small_model()
    history = nn.fit(model, X, y, epochs=1, batch_size=20, val_size=0)
    assert history[0]["val_loss"] is None and history[0]["val_acc"] is None
    assert model.trained_on == {"n_train": 200, "n_val": 0}


# -- the recorded recipe -------------------------------------------------------------------

def test_recipe_records_every_training_setting():
    X, y = blobs(n=200)
    model = small_model()
    nn.fit(model, X, y, optimizer="momentum", lr=0.05, nesterov=True, l2=1e-4, epochs=2,
           batch_size=32, val_size=0.2, schedule="cosine", seed=4)
    recipe = model.recipe
    # every training setting; the architecture only when the recipe built this network
    assert set(nn.recipe.SETTINGS) - set(nn.training.ARCHITECTURE) <= set(recipe)
    assert {k: recipe[k] for k in ("optimizer", "lr", "momentum", "nesterov", "l2", "epochs",
                                   "batch_size", "val_size", "schedule", "seed")} == {
        "optimizer": "momentum", "lr": 0.05, "momentum": 0.9, "nesterov": True, "l2": 1e-4,
        "epochs": 2, "batch_size": 32, "val_size": 0.2, "schedule": "cosine", "seed": 4}
    assert json.loads(json.dumps(recipe)) == recipe   # JSON-clean: it goes into the model file
    assert model.trained_on == {"n_train": 160, "n_val": 40}


def test_a_recipe_and_keywords_on_top():
    X, y = blobs(n=200)
    base = nn.Recipe(optimizer="sgd", lr=0.2, epochs=3, batch_size=40, seed=2)
    a, b = small_model(), small_model()
    nn.fit(a, X, y, base, epochs=1)
    nn.fit(b, X, y, base.replace(epochs=1))
    assert a.recipe == b.recipe and a.recipe["optimizer"] == "sgd" and a.recipe["epochs"] == 1
    assert weights_equal(a, b)


def test_an_optimizer_instance_is_used_as_given():
    X, y = blobs(n=200)
    model = small_model()
    opt = nn.SGD(model.parameters(), lr=0.3, momentum=0.5)
    nn.fit(model, X, y, optimizer=opt, epochs=2, batch_size=20)
    assert opt.steps == 2 * 9  # 180 training samples, batch 20
    assert (model.recipe["optimizer"], model.recipe["lr"], model.recipe["momentum"]) == \
        ("momentum", 0.3, 0.5)


def test_unknown_setting_is_a_type_error():
    X, y = blobs(n=100)
    model = small_model()
    with pytest.raises(TypeError, match="learning_rate"):
        nn.fit(model, X, y, learning_rate=0.1)
    with pytest.raises(TypeError, match="weight_decay"):
        nn.fit(model, X, y, weight_decay=0.1)
    with pytest.raises(TypeError, match="nn.Optimizer"):
        nn.fit(model, X, y, optimizer=object(), batch_size=10)
    assert model.history == []


def test_recipe_never_contradicts_the_models_architecture():
    """A model file's recipe and spec must describe the same network: if the recorded
    recipe has architecture settings at all, they are the model's."""
    X, y = blobs(n=100)
    model = small_model(dropout=0.2, activation="tanh")
    nn.fit(model, X, y, epochs=1, batch_size=10)
    actual = {"conv": [], "hidden": [16, 8], "activation": "tanh", "dropout": 0.2}
    recorded = {k: model.recipe[k] for k in actual if k in model.recipe}
    assert recorded == {k: actual[k] for k in recorded}


def test_numpy_numbers_in_settings_still_save(tmp_path):
    X, y = blobs(n=100)
    model = small_model()
    nn.fit(model, X, y, epochs=np.int64(1), batch_size=np.int64(10), rotate=np.float32(0))
    nn.save(model, tmp_path / "m.npz")
    assert nn.load(tmp_path / "m.npz").recipe["epochs"] == 1


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
    model = small_model()
    nn.fit(model, X, y, epochs=2, batch_size=30, val_size=10, callbacks=[Recorder()])
    begin = dict(events[0][1])
    assert events[0][0] == "begin" and begin.pop("model") is model  # to read, not to change
    assert begin == {"epochs": 2, "batches_per_epoch": 3, "n_train": 90, "n_val": 10}
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
    model = mlp((), seed=0, n_inputs=20, n_classes=3)
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
    ("Learning rate \\(lr\\)", dict(lr=float("nan"))),          # messages name label and setting
    ("Epochs \\(epochs\\)", dict(epochs=0)),
    ("momentum", dict(optimizer="momentum", momentum=1.0)),
    ("nesterov", dict(optimizer="adam", nesterov=True)),
    ("l2", dict(l2=-0.1)),
    ("rotate", dict(rotate=-1.0)),
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
    assert model.history == [] and model.recipe == {} and model.trained_on == {}


def test_a_failed_fit_leaves_the_recorded_recipe_alone():
    X, y = blobs(n=100)
    model = small_model()
    with pytest.raises(ValueError, match="augment"):
        nn.fit(model, X, y, epochs=1, batch_size=10, rotate=5.0)  # 20 inputs: not images
    assert model.history == [] and model.recipe == {} and model.trained_on == {}


# -- nn.train ---------------------------------------------------------------------------------

def fake_mnist(n=600, n_test=200, seed=0):
    """MNIST-shaped blobs: ((X, y), (X_test, y_test)) with 784 inputs and 10 classes."""
    X, y = blobs(n + n_test, n_inputs=784, n_classes=10, seed=seed)
    return (X[:n], y[:n]), (X[n:], y[n:])


def test_train_builds_fits_and_evaluates_what_the_recipe_says():
    data = fake_mnist()
    recipe = nn.Recipe(hidden=(16,), activation="sigmoid", epochs=3, batch_size=50,
                       n_images=500, val_size=100, lr=0.01, seed=3)
    model = nn.train(recipe, data)
    assert model.spec == recipe.spec() and model.seed == 3
    assert model.trained_on == {"n_train": 400, "n_val": 100}   # the first n_images only
    assert len(model.history) == 3 and model.recipe == recipe.to_dict()
    (_, _), (X_test, y_test) = data
    assert model.metrics == model.evaluate(X_test, y_test)
    assert model.metrics["n"] == 200 and model.metrics["accuracy"] > 0.8


def test_train_refuses_a_bad_recipe():
    with pytest.raises(ValueError, match=r"Hidden layers \(hidden\)"):
        nn.train(nn.Recipe(hidden=(0,)), fake_mnist())
    with pytest.raises(ValueError, match=r"Learning rate \(lr\)"):
        nn.train(nn.Recipe(lr=-1.0), fake_mnist())


def test_train_stopped_before_the_first_epoch_has_no_metrics():
    model = nn.train(nn.Recipe(hidden=(8,), epochs=3, batch_size=50, n_images=500),
                     fake_mnist(), callbacks=[StopAt(epoch=1, batch=2)])
    assert model.history == [] and model.metrics == {}


# -- MNIST -----------------------------------------------------------------------------------------

@pytest.mark.slow
def test_mnist_5000_images_reach_92_percent(mnist):
    (X_train, y_train), (X_test, y_test) = mnist
    model = nn.Network(nn.mlp_spec((128, 64), "relu"), seed=0)
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
        model = nn.Network(nn.mlp_spec((64, 32), dropout=0.1), seed=7)
        nn.fit(model, X_train[:2000], y_train[:2000], optimizer="momentum", lr=0.05,
               nesterov=True, epochs=2, batch_size=64, schedule="step", seed=7)
        return model

    a, b = run(), run()
    assert weights_equal(a, b)
    assert a.history[-1]["val_loss"] == b.history[-1]["val_loss"]


def test_mnist_small_cnn_learns(mnist):
    """The convolutional path end to end through nn.train, on 1,000 images (~0.4 s)."""
    recipe = nn.Recipe(conv=(4,), kernel=5, hidden=(16,), epochs=3, batch_size=20,
                       n_images=1000, val_size=100, lr=3e-3, seed=1)
    (X, y), (X_test, y_test) = mnist
    model = nn.train(recipe, ((X, y), (X_test[:1000], y_test[:1000])))
    assert model.kind == "cnn" and model.describe() == "1x28x28-conv4x5-16-10 (relu)"
    assert model.metrics["n"] == 1000
    assert model.metrics["accuracy"] >= 0.7, model.metrics["accuracy"]
    assert model.history[-1]["train_loss"] < model.history[0]["train_loss"]
