"""nn.fine_tune: a copy of a trained network taught a few examples of a new
style, without touching the original; rehearsal limits forgetting.

The "new style" is MNIST digits turned a quarter turn (``np.rot90``): a
consistent change a network trained on upright digits does not read. Fifty
turned examples teach it that style; accuracy on *other* turned digits rises.
Without rehearsal the network forgets upright digits far more than with it.
A small MLP trained on 3,000 images keeps the whole file to a few seconds.
"""

import numpy as np
import pytest

import nn
from nn.finetune import NEW_EXAMPLE_AUGMENTATION, fine_tune

STEPS = 60


def turned(X):
    """Digits turned a quarter turn counter-clockwise: (n, 784) -> (n, 784)."""
    return np.ascontiguousarray(np.rot90(X.reshape(-1, 28, 28), 1, axes=(1, 2)).reshape(len(X), -1))


@pytest.fixture(scope="module")
def setting(mnist):
    """A base network trained on upright digits, and the data of the new style."""
    (X, y), (X_test, y_test) = mnist
    model = nn.Network(nn.mlp_spec((64,)), seed=0)
    nn.fit(model, X[:3000], y[:3000], lr=3e-3, epochs=4, batch_size=64, val_size=0, seed=0)
    return {
        "model": model,
        "base": (X[:3000], y[:3000]),                                # rehearsal examples
        "new": (turned(X[3000:3050]), y[3000:3050]),                 # 50 examples to learn
        "new_test": (turned(X_test[:500]), y_test[:500]),            # held-out, same style
        "base_test": (X_test[500:1000], y_test[500:1000]),           # held-out, upright
    }


def accuracy(model, data):
    return model.loss_and_accuracy(*data)[1]


def test_returns_a_new_network_and_leaves_the_original_byte_identical(setting):
    model = setting["model"]
    before = [w.tobytes() for w in model.get_weights()]
    state = {k: getattr(model, k) for k in ("spec", "recipe", "history", "metrics", "trained_on")}
    state = {k: (dict(v) if isinstance(v, dict) else list(v) if isinstance(v, list) else v)
             for k, v in state.items()}
    taught = fine_tune(model, *setting["new"], steps=5)
    assert taught is not model
    assert [w.tobytes() for w in model.get_weights()] == before
    assert {k: getattr(model, k) for k in state} == state
    assert any(not np.array_equal(a, b) for a, b in
               zip(taught.get_weights(), model.get_weights(), strict=True))
    assert taught.spec == model.spec and taught.history == model.history
    assert taught.trained_on["fine_tuned_on"] == 50 and taught.trained_on["fine_tune_steps"] == 5
    assert taught.trained_on["rehearsal_examples"] == 0
    # the copy shares no array with the original
    taught.parameters()[0].value[...] = 0
    assert [w.tobytes() for w in model.get_weights()] == before


def test_same_seed_same_network(setting):
    a = fine_tune(setting["model"], *setting["new"], steps=5, seed=3)
    b = fine_tune(setting["model"], *setting["new"], steps=5, seed=3)
    c = fine_tune(setting["model"], *setting["new"], steps=5, seed=4)
    assert all(np.array_equal(p, q) for p, q in zip(a.get_weights(), b.get_weights(), strict=True))
    assert not np.array_equal(a.get_weights()[0], c.get_weights()[0])


@pytest.fixture(scope="module")
def outcomes(setting):
    """Accuracy on held-out new-style and upright digits, before and after fine-tuning
    with and without rehearsal."""
    model = setting["model"]
    plain = fine_tune(model, *setting["new"], seed=0, steps=STEPS)
    rehearsed = fine_tune(model, *setting["new"], X_base=setting["base"][0],
                          y_base=setting["base"][1], seed=0, steps=STEPS)
    return {name: (accuracy(m, setting["new_test"]), accuracy(m, setting["base_test"]))
            for name, m in (("before", model), ("plain", plain), ("rehearsed", rehearsed))}


def test_the_new_style_is_new_to_the_base_network(outcomes):
    new, base = outcomes["before"]
    assert new < 0.25 and base > 0.85


@pytest.mark.parametrize("how", ["plain", "rehearsed"])
def test_accuracy_on_the_new_style_rises(outcomes, how):
    assert outcomes[how][0] >= outcomes["before"][0] + 0.15, outcomes


def test_rehearsal_limits_forgetting(outcomes):
    before = outcomes["before"][1]
    forgot_plain = before - outcomes["plain"][1]
    forgot_rehearsed = before - outcomes["rehearsed"][1]
    assert forgot_plain > 0.05, outcomes                      # without rehearsal it forgets
    assert forgot_plain > forgot_rehearsed + 0.05, outcomes    # rehearsal forgets less


def test_keep_blends_the_taught_weights_with_the_original_ones(setting):
    """``keep`` only blends at the end: the same seed trains the same trajectory, so
    keep=0.25 is exactly a quarter of the way back from keep=0 to the original."""
    model = setting["model"]
    full = fine_tune(model, *setting["new"], steps=5, seed=1, keep=0)
    blended = fine_tune(model, *setting["new"], steps=5, seed=1, keep=0.25)
    for w0, w1, wb in zip(model.get_weights(), full.get_weights(), blended.get_weights(), strict=True):
        np.testing.assert_allclose(wb, 0.75 * w1 + 0.25 * w0, rtol=1e-5, atol=1e-6)
    assert not np.array_equal(full.get_weights()[0], blended.get_weights()[0])


def test_callback_sees_every_step_and_can_stop(setting):
    seen = []
    taught = fine_tune(setting["model"], *setting["new"], steps=10,
                       callback=lambda step, loss: seen.append((step, loss)) or step == 4)
    assert [s for s, _ in seen] == [1, 2, 3, 4]
    assert all(np.isfinite(loss) and loss > 0 for _, loss in seen)
    assert taught.trained_on["fine_tune_steps"] == 4


def test_no_augmentation_when_asked(setting):
    """``augmentation={}`` shows the examples as they are: different from the default."""
    a = fine_tune(setting["model"], *setting["new"], steps=3, augmentation={})
    b = fine_tune(setting["model"], *setting["new"], steps=3)
    assert not np.array_equal(a.get_weights()[0], b.get_weights()[0])
    assert set(NEW_EXAMPLE_AUGMENTATION) == {"rotate", "scale", "shear", "shift", "thickness",
                                             "elastic"}


def _bad_inputs():
    rng = np.random.default_rng(0)
    X = rng.random((8, 784), dtype=np.float32)
    y = np.arange(8) % 10
    nan = X.copy()
    nan[0, 0] = np.nan
    return [
        ("labels 10", dict(X_new=X, y_new=np.where(y == 0, 10, y)),
         "labels must be whole numbers from 0 to 9"),
        ("labels -1", dict(X_new=X, y_new=y - 1), "labels must be whole numbers from 0 to 9"),
        ("float labels", dict(X_new=X, y_new=y.astype(float)), "labels must be whole numbers"),
        ("NaN", dict(X_new=nan, y_new=y), "pixel values must be finite numbers in"),
        ("pixels > 1", dict(X_new=X * 255, y_new=y), r"pixel values .* in \[0, 1\]"),
        ("wrong shape", dict(X_new=X.reshape(8, 28, 28), y_new=y), r"shape \(n, 784\)"),
        ("wrong width", dict(X_new=X[:, :100], y_new=y), r"images must have shape \(n, 784\)"),
        ("label count", dict(X_new=X, y_new=y[:5]), r"labels must have shape \(8,\)"),
        ("empty", dict(X_new=X[:0], y_new=y[:0]), "X_new: there are no examples to learn from"),
        ("y_base alone", dict(X_new=X, y_new=y, y_base=y), "y_base was given without X_base"),
        ("bad base", dict(X_new=X, y_new=y, X_base=nan, y_base=y), "X_base: pixel values"),
        ("empty base", dict(X_new=X, y_new=y, X_base=X[:0], y_base=y[:0]), "X_base: give some"),
        ("steps 0", dict(X_new=X, y_new=y, steps=0), "steps must be a whole number"),
        ("steps float", dict(X_new=X, y_new=y, steps=2.5), "steps must be a whole number"),
        ("batch 1", dict(X_new=X, y_new=y, batch_size=1), "batch_size must be a whole number"),
        ("lr 0", dict(X_new=X, y_new=y, lr=0), r"lr must be in \(0, 1\]"),
        ("share 0", dict(X_new=X, y_new=y, new_share=0), r"new_share must be in \(0, 1\]"),
    ]


BAD = _bad_inputs()


@pytest.mark.parametrize("kwargs,message", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_inputs_raise_value_error(kwargs, message):
    model = nn.Network(nn.mlp_spec((4,)), seed=0)
    before = model.get_weights()
    kwargs = dict(kwargs)
    with pytest.raises(ValueError, match=message):
        fine_tune(model, kwargs.pop("X_new"), kwargs.pop("y_new"), **kwargs)
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), before, strict=True))
