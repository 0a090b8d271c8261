"""nn.Recipe: every hyperparameter once, with what it means (``SETTINGS``), its
defaults, its bounds (``check``; ``check(app=True)`` for a shared server's
tighter ones) and messages that name the setting as the app labels it and as
the code calls it; a dict round trip that refuses what it does not know."""

import dataclasses
import json
import math

import numpy as np
import pytest

import nn
from nn.recipe import AUGMENTATIONS, GROUPS, PRESETS, SETTINGS, Recipe, Setting, setting_of


# -- what each setting means ------------------------------------------------------------------

def test_every_field_has_a_setting_with_label_help_and_group():
    fields = [f.name for f in dataclasses.fields(Recipe)]
    assert fields == list(SETTINGS) and len(fields) >= 20
    labels = set()
    for name in fields:
        s = setting_of(name)
        assert isinstance(s, Setting)
        assert s.label and s.label[0].isupper() and s.label not in labels, name
        labels.add(s.label)
        # help: at least one whole sentence, a capital first and a full stop last
        assert s.help[0].isupper() and s.help.endswith(".") and len(s.help.split()) >= 6, name
        assert s.group in GROUPS, name
    assert set(GROUPS) == {s.group for s in SETTINGS.values()}
    assert AUGMENTATIONS == ("rotate", "scale", "shear", "shift", "thickness", "elastic")
    with pytest.raises(KeyError):
        setting_of("learning_rate")


def test_every_setting_says_which_values_it_takes():
    for name, s in SETTINGS.items():
        default = getattr(Recipe(), name)
        if isinstance(default, bool):
            continue
        if isinstance(default, str):
            assert default in s.choices, name
            continue
        assert s.low is not None and s.high is not None and s.low < s.high, name
        assert s.app is not None, f"{name} has no limit for the shared server"
        if isinstance(default, tuple):
            assert s.length and s.app_length and s.app_length[1] <= s.length[1], name
        elif not s.app_values:  # an app range lies inside the nn range
            assert s.low <= s.app[0] < s.app[1] <= s.high, name
        else:
            assert all(s.low <= v <= s.high for v in s.app), name


def test_defaults_are_plain_training():
    r = Recipe()
    assert (r.conv, r.hidden, r.activation, r.dropout) == ((), (128, 64), "relu", 0.0)
    assert (r.optimizer, r.lr, r.epochs, r.batch_size, r.val_size, r.schedule) == \
        ("adam", 1e-3, 10, 128, 0.1, "none")
    assert r.kind == "mlp" and not r.augmented
    assert r.spec() == nn.mlp_spec((128, 64))
    assert r.check() is r and r.problems() == {} and r.problems(app=True) == {}


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_pass_their_checks(name):
    preset = PRESETS[name]
    assert preset.check() is preset
    assert preset.augmented
    nn.Network(preset.spec())  # buildable


def test_quick_preset_fits_the_shared_server():
    quick = PRESETS["quick"]
    assert quick.check(app=True) is quick
    assert quick.kind == "cnn" and quick.spec() == nn.cnn_spec((8, 16), 5, (64,))


def test_recipe_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        Recipe().lr = 0.1


# -- bad values -------------------------------------------------------------------------------

BAD = [
    # wrong type
    ("lr", "fast", False), ("optimizer", 3, False), ("hidden", 128, False),
    ("conv", "8,16", False), ("nesterov", "yes", False), ("nesterov", 1, False),
    ("epochs", 2.5, False), ("batch_size", 16.0, False), ("hidden", (64, 32.0), False),
    ("rotate", None, False), ("val_size", "10%", False),
    # a bool where a number belongs
    ("epochs", True, False), ("batch_size", False, False), ("seed", True, False),
    ("lr", True, False), ("hidden", (True, 8), False), ("val_size", True, False),
    # NaN and infinity
    ("lr", math.nan, False), ("dropout", math.nan, False), ("rotate", math.inf, False),
    ("l2", -math.inf, False), ("val_size", math.nan, False),
    # out of range
    ("lr", 0.0, False), ("lr", 11.0, False), ("dropout", 0.96, False), ("epochs", 0, False),
    ("epochs", 1001, False), ("batch_size", 0, False), ("momentum", 1.0, False),
    ("seed", -1, False), ("seed", 2**31, False), ("n_images", 9, False), ("kernel", 16, False),
    ("hidden", (0,), False), ("hidden", (4097,), False), ("conv", (513,), False),
    ("val_size", 1.0, False), ("val_size", 60001, False), ("rotate", 46.0, False),
    ("elastic", -0.5, False), ("schedule", "linear", False), ("activation", "gelu", False),
    # tuple length
    ("hidden", (8,) * 9, False), ("conv", (4,) * 7, False),
    # limits of the shared server only
    ("epochs", 31, True), ("lr", 0.003, True), ("batch_size", 100, True),
    ("hidden", (8,) * 5, True), ("hidden", (1024,), True), ("conv", (4, 8, 16, 32), True),
    ("conv", (12,), True), ("kernel", 7, True), ("n_images", 100, True), ("val_size", 0.3, True),
    ("l2", 0.5, True), ("rotate", 40.0, True), ("dropout", 0.6, True), ("momentum", 0.999, True),
]


@pytest.mark.parametrize("name,value,app", BAD,
                         ids=[f"{n}={v!r}{'-app' if a else ''}" for n, v, a in BAD])
def test_bad_value_is_named_by_label_and_setting(name, value, app):
    recipe = Recipe().replace(**{name: value})
    label = SETTINGS[name].label
    found = recipe.problems(app=app)
    assert list(found) == [name]
    assert found[name].startswith(f"{label} ({name})")
    assert recipe.field_problem(name, app=app) == found[name]
    with pytest.raises(ValueError, match=rf"^{label} \({name}\)"):
        recipe.check(app=app)
    with pytest.raises(ValueError, match=rf"^{label} \({name}\)"):
        Recipe.from_dict({name: list(value) if isinstance(value, tuple) else value}, app=app)


@pytest.mark.parametrize("name,value", [(n, v) for n, v, a in BAD if a])
def test_app_only_limits_do_not_bind_nn(name, value):
    # batch 32 so that n_images=100 leaves enough images for one batch whatever the default
    recipe = Recipe().replace(batch_size=32).replace(**{name: value})
    assert recipe.problems() == {} and recipe.check() is recipe


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_nesterov_needs_the_momentum_optimizer(optimizer):
    recipe = Recipe(optimizer=optimizer, nesterov=True)
    with pytest.raises(ValueError, match=r"^Nesterov momentum \(nesterov\) only applies to "
                                         r"the momentum optimizer"):
        recipe.check()
    assert Recipe(optimizer="momentum", nesterov=True).check()


def test_an_architecture_that_does_not_fit_is_named():
    recipe = Recipe(conv=(4,) * 6, kernel=5)  # 28 -> 14 -> 7 -> 3 -> 1 -> nothing
    found = recipe.problems()
    assert list(found) == ["conv"] and "The architecture does not fit" in found["conv"]
    assert "kernel_size 2 leaves nothing" in found["conv"]


def test_values_numpy_hands_over_are_accepted():
    recipe = Recipe(lr=np.float64(0.01), epochs=np.int64(3), hidden=(np.int64(16),))
    assert recipe.check() is recipe


# -- dicts ------------------------------------------------------------------------------------

@pytest.mark.parametrize("recipe", [Recipe(), *PRESETS.values(),
                                    Recipe(conv=(4,), hidden=(), optimizer="momentum",
                                           nesterov=True, val_size=500, seed=12)])
def test_dict_round_trip(recipe):
    d = recipe.to_dict()
    assert set(d) == set(SETTINGS)
    assert isinstance(d["hidden"], list) and isinstance(d["conv"], list)
    assert json.loads(json.dumps(d)) == d
    back = Recipe.from_dict(json.loads(json.dumps(d)))
    assert back == recipe and back.differences(recipe) == []


def test_from_dict_fills_missing_settings_with_defaults():
    assert Recipe.from_dict({"lr": 0.01, "hidden": [32]}) == Recipe(lr=0.01, hidden=(32,))
    assert Recipe.from_dict({}) == Recipe()


@pytest.mark.parametrize("data,message", [
    ({"learning_rate": 0.1}, "unknown settings: learning_rate"),
    ({"lr": 0.1, "weight_decay": 0.1, "hyperparams": {}},
     "unknown settings: hyperparams, weight_decay"),
    ({1: 2}, "unknown settings: 1"),
    ([("lr", 0.1)], "a recipe must be a dict, got list"),
    ("lr=0.1", "a recipe must be a dict, got str"),
])
def test_from_dict_refuses_what_it_does_not_know(data, message):
    with pytest.raises(ValueError, match=message):
        Recipe.from_dict(data)


def test_replace_refuses_unknown_settings():
    with pytest.raises(TypeError, match="unknown settings: learning_rate"):
        Recipe().replace(learning_rate=0.1)
    assert Recipe().replace(lr=0.1).lr == 0.1 and Recipe().lr == 1e-3


def test_differences():
    a = Recipe()
    b = a.replace(lr=0.01, hidden=(32,), rotate=5.0)
    assert a.differences(b) == [("hidden", (128, 64), (32,)), ("lr", 1e-3, 0.01),
                                ("rotate", 0.0, 5.0)]
    assert b.differences(a) == [("hidden", (32,), (128, 64)), ("lr", 0.01, 1e-3),
                                ("rotate", 5.0, 0.0)]
    assert a.differences(Recipe()) == []


def test_kind_augmented_and_spec_follow_the_settings():
    cnn = Recipe(conv=(4, 8), kernel=3, hidden=(16,), activation="tanh", dropout=0.1)
    assert cnn.kind == "cnn" and cnn.spec() == nn.cnn_spec((4, 8), 3, (16,), "tanh", 0.1)
    for name in AUGMENTATIONS:
        assert Recipe().replace(**{name: 0.5}).augmented, name
