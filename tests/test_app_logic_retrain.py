"""app_logic.retrain: the Retrain tab's controls, shared links, and time estimate.

The old ``settings`` checks (every value out of the app's range refused with
a sentence naming the widget) live on here through ``from_query``, the one
place where values from outside (a link) meet the app's limits before a
widget does.
"""

import math
from urllib.parse import parse_qsl, urlencode

import pytest

import nn
from app_logic import cache, retrain
from app_logic.retrain import DEFAULTS, SHIPPED_RECIPE
from nn.recipe import GROUPS, SETTINGS

# ---------------------------------------------------------------- controls


def all_controls():
    return [c for group in GROUPS for c in retrain.controls(group)]


def test_controls_cover_every_recipe_setting_exactly_once():
    names = [c.name for c in all_controls()]
    assert sorted(names) == sorted(SETTINGS) and len(names) == len(set(names))
    for group in GROUPS:
        assert {c.name for c in retrain.controls(group)} == {
            n for n, s in SETTINGS.items() if s.group == group}
    with pytest.raises(KeyError):
        retrain.controls("everything")


def app_problem(name, value):
    return DEFAULTS.replace(**{name: value}).field_problem(name, app=True)


@pytest.mark.parametrize("control", all_controls(), ids=lambda c: c.name)
def test_each_control_offers_what_the_app_accepts(control):
    s = SETTINGS[control.name]
    assert (control.label, control.help, control.unit) == (s.label, s.help, s.unit)
    assert control.default == getattr(DEFAULTS, control.name)
    assert app_problem(control.name, control.default) is None
    if control.kind in ("select", "steps"):
        assert control.options and all(app_problem(control.name, v) is None
                                        for v in control.options)
    if control.kind == "select":
        assert control.options == s.choices
    if control.kind in ("slider", "number", "augmentation"):
        assert app_problem(control.name, control.low) is None
        assert app_problem(control.name, control.high) is None
        step = control.step or 1
        assert app_problem(control.name, control.high + step) is not None
    if control.kind == "augmentation":
        assert control.low == 0   # off is "0"
    if control.kind == "toggle":
        assert isinstance(control.default, bool)
    if control.kind == "layers":
        widest = control.options[-1] if control.options else control.high
        assert app_problem(control.name, (widest,) * control.max_count) is None
        assert app_problem(control.name, (widest,) * (control.max_count + 1)) is not None
        if not control.options:
            assert app_problem(control.name, (control.low,)) is None
            assert app_problem(control.name, (control.low - 1,)) is not None


# ---------------------------------------------------------------- the shipped network

def test_the_defaults_say_how_they_differ_from_the_shipped_network():
    sentences = retrain.differences_from_shipped(DEFAULTS)
    assert sentences and len(sentences) == len(DEFAULTS.differences(SHIPPED_RECIPE))
    assert (f"Epochs: {DEFAULTS.epochs} (shipped network: {SHIPPED_RECIPE.epochs})"
            in sentences)
    assert retrain.differences_from_shipped(SHIPPED_RECIPE) == []


@pytest.mark.parametrize("name, value, text", [
    ("conv", (8, 16), "8, 16"), ("conv", (), "none"), ("nesterov", True, "on"),
    ("nesterov", False, "off"), ("rotate", 12.0, "12°"), ("lr", 0.001, "0.001"),
    ("n_images", 20000, "20,000"), ("epochs", 5, "5"), ("kernel", 3, "3px"),
    ("activation", "relu", "relu"), ("val_size", 0.1, "10%"), ("val_size", 5000, "5000")])
def test_describe_value(name, value, text):
    assert retrain.describe_value(name, value) == text


@pytest.mark.parametrize("seconds, text", [(0.04, "0.0 s"), (48.25, "48.2 s"), (89.9, "89.9 s"),
                                           (907.03, "15.1 min (907 s)"),
                                           (7300, "121.7 min (7,300 s)")])
def test_duration(seconds, text):
    assert retrain.duration(seconds) == text


# ---------------------------------------------------------------- links

EVERYTHING_CHANGED = DEFAULTS.replace(
    conv=(4, 8, 16), kernel=3, hidden=(32, 16), activation="tanh", dropout=0.3,
    optimizer="momentum", lr=0.01, momentum=0.95, nesterov=True, l2=1e-4, schedule="step",
    batch_size=64, epochs=3, n_images=1000, val_size=0.2, seed=7, rotate=5.0, scale=0.1,
    shear=4.0, shift=1.0, thickness=0.2, elastic=0.5)
PLAIN = DEFAULTS.replace(conv=(), hidden=(), rotate=0.0, scale=0.0, shear=0.0, shift=0.0,
                         thickness=0.0, elastic=0.0, epochs=30, n_images=60000, seed=2**31 - 1,
                         lr=1.0, batch_size=16, l2=0.01, val_size=0.05, dropout=0.5)


def test_the_round_trip_recipe_changes_every_setting_within_the_app_limits():
    assert {name for name, *_ in EVERYTHING_CHANGED.differences(DEFAULTS)} == set(SETTINGS)
    assert EVERYTHING_CHANGED.problems(app=True) == {}
    assert PLAIN.problems(app=True) == {}


@pytest.mark.parametrize("recipe", [EVERYTHING_CHANGED, PLAIN, DEFAULTS],
                         ids=["everything", "plain", "defaults"])
def test_a_link_round_trip(recipe):
    query = retrain.to_query(recipe)
    assert set(query) == {name for name, *_ in recipe.differences(DEFAULTS)}
    assert all(isinstance(v, str) for v in query.values())
    # Through a real URL and back, as the browser hands it to the page.
    params = dict(parse_qsl(urlencode(query), keep_blank_values=True))
    assert retrain.from_query(params) == (recipe, [])


def test_the_defaults_make_an_empty_link_and_other_parameters_are_ignored():
    assert retrain.to_query(DEFAULTS) == {}
    assert retrain.from_query({}) == (DEFAULTS, [])
    assert retrain.from_query({"tab": "Retrain", "utm_source": "mail"}) == (DEFAULTS, [])


# Each alone, refused: the value from the link, and what the old settings check refused.
BAD = [("hidden", "64,64,64,64,64"), ("hidden", "64,4"), ("hidden", "513"), ("hidden", "64.0"),
       ("hidden", "x"), ("conv", "4,1000"), ("conv", "3"), ("conv", "8,8,8,8"),
       ("epochs", "0"), ("epochs", "31"), ("epochs", "ten"), ("epochs", "1e3"),
       ("epochs", "2.5"), ("epochs", ""), ("n_images", "499"), ("n_images", "60001"),
       ("n_images", "20000.0"), ("seed", "-1"), ("seed", str(2**31)), ("seed", "9" * 99),
       ("dropout", "0.51"), ("dropout", "nan"), ("dropout", "NaN"), ("dropout", "-0.1"),
       ("momentum", "1.0"), ("momentum", "0.1"), ("momentum", "inf"),
       ("activation", "gelu"), ("activation", "RELU"), ("optimizer", "rmsprop"),
       ("lr", "0.3"), ("lr", "0.001x"), ("lr", "-inf"), ("l2", "0.5"), ("batch_size", "100"),
       ("batch_size", "128.0"), ("val_size", "0.5"), ("val_size", "5000"),
       ("nesterov", "maybe"), ("kernel", "7"), ("rotate", "31"), ("rotate", "inf"),
       ("elastic", "-1"), ("schedule", "x" * 200), ("schedule", "<script>")]


@pytest.mark.parametrize("name, text", BAD)
def test_a_bad_value_in_a_link_is_refused_and_replaced_by_the_default(name, text):
    recipe, problems = retrain.from_query({name: text})
    assert recipe == DEFAULTS
    assert len(problems) == 1
    problem = problems[0]
    assert problem.startswith(SETTINGS[name].label)
    assert retrain.describe_value(name, getattr(DEFAULTS, name)) in problem
    assert "sing " in problem          # "Using ... instead" / "using ..."
    assert len(problem) < 400          # a long value is not echoed in full


def test_a_link_is_checked_value_by_value():
    good = {"batch_size": "64", "seed": "5", "kernel": "3", "epochs": "4",
            "optimizer": "momentum", "hidden": "none", "rotate": "0"}
    bad = {"lr": "0.3", "dropout": "nan", "n_images": "70000", "activation": "gelu",
           "conv": "4,1000", "val_size": "junk", "momentum": "-1", "elastic": "inf"}
    recipe, problems = retrain.from_query({**good, **bad, "other": "1"})
    assert recipe == DEFAULTS.replace(batch_size=64, seed=5, kernel=3, epochs=4,
                                      optimizer="momentum", hidden=(), rotate=0.0)
    assert len(problems) == len(bad)
    for name in bad:
        assert sum(p.startswith(SETTINGS[name].label + " ") or
                   p.startswith(SETTINGS[name].label + ":") for p in problems) == 1, name


def test_values_fine_alone_but_not_together():
    """Nesterov momentum needs the momentum optimizer: with the default (adam) it is
    reported and dropped, and the link's other values are kept."""
    recipe, problems = retrain.from_query({"nesterov": "true", "epochs": "3"})
    assert recipe == DEFAULTS.replace(epochs=3) and not recipe.nesterov
    assert len(problems) == 1 and "Nesterov" in problems[0]
    assert retrain.from_query({"nesterov": "yes", "optimizer": "momentum"}) == (
        DEFAULTS.replace(nesterov=True, optimizer="momentum"), [])
    recipe, problems = retrain.from_query({"nesterov": "on", "optimizer": "sgd"})
    assert not recipe.nesterov and recipe.optimizer == "sgd" and len(problems) == 1


def test_a_batch_larger_than_the_training_images_is_refused():
    recipe, problems = retrain.from_query({"n_images": "500", "batch_size": "512"})
    assert problems and recipe.batch_size <= 450
    assert DEFAULTS.replace(n_images=500, batch_size=512).problems(app=True)


def test_the_seed_limit_is_named_exactly():
    _, (problem,) = retrain.from_query({"seed": "-1"})
    assert "2147483647" in problem or "2,147,483,647" in problem


# ---------------------------------------------------------------- the time estimate

@pytest.fixture
def timed(monkeypatch):
    """A fixed cost per image (no timing), counting how often it is measured."""
    calls = []

    def per_image(recipe):
        calls.append(recipe)
        return 1e-4

    cache.clear()
    monkeypatch.setattr(retrain, "_seconds_per_image", per_image)
    yield calls
    cache.clear()


def test_the_estimate_grows_with_epochs_and_images(timed):
    base = retrain.estimate_seconds(DEFAULTS)
    n, n_val = DEFAULTS.n_images, round(DEFAULTS.n_images * DEFAULTS.val_size)
    assert base == pytest.approx(1e-4 * ((n - n_val) * DEFAULTS.epochs
                                         + (n_val * DEFAULTS.epochs + 10000) / 3))
    more_epochs = retrain.estimate_seconds(DEFAULTS.replace(epochs=2 * DEFAULTS.epochs))
    assert base < more_epochs < 2 * base      # the final test pass is paid once
    assert retrain.estimate_seconds(DEFAULTS.replace(n_images=40000)) > base
    assert retrain.estimate_seconds(DEFAULTS.replace(n_images=500)) < base
    # Fewer images on the server than asked for: the estimate counts what is there.
    assert retrain.estimate_seconds(DEFAULTS.replace(n_images=60000), n_available=20000) == \
        pytest.approx(retrain.estimate_seconds(DEFAULTS.replace(n_images=20000)))
    # More images held out: a validation image costs a third of a training image.
    assert retrain.estimate_seconds(DEFAULTS.replace(val_size=0.2)) < base


def test_the_timing_is_measured_once_per_network_and_batch(timed):
    retrain.estimate_seconds(DEFAULTS)
    retrain.estimate_seconds(DEFAULTS.replace(epochs=9, n_images=1000, lr=0.01, seed=3))
    assert len(timed) == 1
    retrain.estimate_seconds(DEFAULTS.replace(batch_size=64))
    retrain.estimate_seconds(DEFAULTS.replace(hidden=(32,)))
    retrain.estimate_seconds(DEFAULTS.replace(optimizer="sgd"))
    assert len(timed) == 4


def test_the_real_timing_is_a_small_positive_number():
    cache.clear()
    tiny = DEFAULTS.replace(conv=(), hidden=(8,), batch_size=16)
    seconds = retrain._seconds_per_image(tiny)
    assert math.isfinite(seconds) and seconds > 0


@pytest.mark.parametrize("recipe", [retrain.DEFAULTS,
                                    retrain.DEFAULTS.replace(conv=(), hidden=(32, 16), rotate=0.0),
                                    retrain.DEFAULTS.replace(optimizer="momentum", nesterov=True,
                                                             conv=(4, 8, 16), hidden=())])
def test_the_widgets_show_a_recipe_and_give_it_back(recipe):
    """What the page puts in the widgets (widget_values) and reads back from them
    (recipe_from_widgets) is the same recipe, for each family and setting kind."""
    shown = retrain.widget_values(recipe)
    values = {}
    for name in nn.recipe.SETTINGS:
        c = retrain._control(name)
        if name in retrain.CNN_ONLY and shown["kind"] != "CNN":
            continue
        if c.kind == "layers":
            values[name] = tuple(shown[f"rt_{name}_{i}"] for i in range(shown[f"rt_{name}_n"]))
            if not recipe.__getattribute__(name):
                values[name] = ()
        elif c.kind == "augmentation":
            values[name] = shown[f"rt_{name}"] if shown[f"rt_{name}_on"] else 0.0
        else:
            values[name] = shown[f"rt_{name}"]
    assert retrain.recipe_from_widgets(values, shown["kind"]) == recipe
