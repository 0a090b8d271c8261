"""app_logic.teaching: fine-tune a copy of a network on a learner's drawings.

The "drawings" are MNIST test digits all moved 4 pixels right and down: a
consistent style the network has not seen (MNIST digits are centred). The
network is a small MLP trained here in a blink, so the test does not depend
on the shipped network's size.
"""

import numpy as np
import pytest

import nn
from app_logic import teaching


@pytest.fixture(scope="module")
def network(mnist):
    recipe = nn.Recipe(hidden=(32,), epochs=2, n_images=3000, batch_size=50, lr=0.005, seed=1)
    return nn.train(recipe, mnist)


@pytest.fixture(scope="module")
def drawings(mnist):
    X, y = mnist[1]
    moved = np.roll(X[100:120].reshape(-1, 28, 28), (4, 4), axis=(1, 2))
    return moved.reshape(-1, 784), y[100:120]


def snapshot(model):
    return ([w.copy() for w in model.get_weights()], [dict(h) for h in model.history],
            repr(model.metrics), dict(model.trained_on))


def same(a, b):
    return all(np.array_equal(x, y) for x, y in zip(a[0], b[0])) and a[1:] == b[1:]


@pytest.fixture(scope="module")
def taught(network, drawings, mnist):
    """Both ways, from one network: ``{rehearsal: TeachResult}``."""
    before = snapshot(network)
    results = {r: teaching.teach(network, *drawings, mnist, rehearsal=r) for r in (True, False)}
    assert same(snapshot(network), before), "the network given was changed"
    return results


@pytest.mark.parametrize("rehearsal", [True, False])
def test_teaching_fills_before_and_after(taught, network, drawings, mnist, rehearsal):
    result = taught[rehearsal]
    assert result.model is not network and result.rehearsal is rehearsal
    assert result.n_examples == len(drawings[1]) == 20 and result.seconds > 0
    assert set(result.before) == set(result.after) == {"drawings", "mnist"}
    for value in (*result.before.values(), *result.after.values()):
        assert isinstance(value, float) and 0 <= value <= 1
    assert result.before["mnist"] == network.metrics["accuracy"]
    assert result.before["drawings"] == float(np.mean(network.predict(drawings[0]) == drawings[1]))
    assert result.after["drawings"] >= result.before["drawings"]
    assert result.after["drawings"] == float(
        np.mean(result.model.predict(drawings[0]) == drawings[1]))
    assert result.model.metrics["n"] == len(mnist[1][1])
    assert result.after["mnist"] == result.model.metrics["accuracy"]
    assert result.model.history == network.history and result.model.history is not network.history
    assert result.settings == {**teaching.TEACH_SETTINGS, "rehearsal": rehearsal, "examples": 20}
    rehearsed = result.model.trained_on["rehearsal_examples"]
    assert rehearsed == (teaching.REHEARSAL_IMAGES if rehearsal else 0)
    assert result.model.trained_on["fine_tuned_on"] == 20


def test_rehearsal_keeps_more_of_mnist(taught):
    assert taught[True].after["mnist"] > taught[False].after["mnist"]


def test_teaching_without_mnist(network, drawings):
    result = teaching.teach(network, *drawings, None, rehearsal=False)
    assert result.model.metrics == {} and result.after["mnist"] is None
    assert result.before["mnist"] == network.metrics["accuracy"]
    assert result.after["drawings"] is not None


def test_a_network_without_a_test_report_is_measured_first(network, drawings, mnist):
    bare = network.copy()
    bare.metrics = {}
    result = teaching.teach(bare, *drawings, mnist, rehearsal=False)
    assert result.before["mnist"] == pytest.approx(network.metrics["accuracy"])
    assert bare.metrics == {}


def test_the_callback_follows_and_can_stop(network, drawings):
    steps = []
    teaching.teach(network, *drawings, None, rehearsal=False,
                   callback=lambda step, loss: steps.append((step, loss)) and False)
    assert [s for s, _ in steps] == list(range(1, teaching.TEACH_SETTINGS["steps"] + 1))
    assert all(np.isfinite(loss) for _, loss in steps)
    result = teaching.teach(network, *drawings, None, rehearsal=False,
                            callback=lambda step, loss: step == 3)
    assert result.model.trained_on["fine_tune_steps"] == 3


def test_bad_input_is_refused(network, drawings):
    X, y = drawings
    with pytest.raises(ValueError, match="rehearsal needs the MNIST training images"):
        teaching.teach(network, X, y, None, rehearsal=True)
    with pytest.raises(ValueError, match="no labelled drawings"):
        teaching.teach(network, np.zeros((0, 784)), np.zeros(0, int), None, rehearsal=False)
    with pytest.raises(ValueError):
        teaching.teach(network, X, y + 10, None, rehearsal=False)     # labels out of range
    with pytest.raises(ValueError):
        teaching.teach(network, X * 255, y, None, rehearsal=False)    # pixels out of [0, 1]


def test_the_teach_button_uses_what_nn_fine_tune_defaults_to():
    """The Teach button teaches exactly as the measured defaults do (the README's
    teaching table and the issue's bar use the defaults)."""
    import inspect

    defaults = {name: p.default for name, p in inspect.signature(nn.fine_tune).parameters.items()}
    assert {k: defaults[k] for k in teaching.TEACH_SETTINGS} == teaching.TEACH_SETTINGS
