"""app_logic.atlas: where a drawing lands among the digits the shipped network knows.

Built once from the shipped network (whatever its architecture) and MNIST's
test set. Neighbours are checked against a brute-force search of our own;
"unusual" must flag what is like no digit (a dot, a scrawl, a page of ink)
while calling about 1% of the test digits it has not seen unusual.
"""

import numpy as np
import pytest

import nn.preprocess
import nn.strokes
from app_logic import atlas as atlas_mod
from app_logic import figures


@pytest.fixture(scope="module")
def test_set(mnist):
    return mnist[1]


@pytest.fixture(scope="module")
def atlas(default_model, test_set):
    X, y = test_set
    return atlas_mod.Atlas(default_model, X, y)


@pytest.fixture(scope="module")
def unseen(atlas, test_set):
    """Indices of the test digits neither on the map nor in the calibration set."""
    used = np.concatenate([atlas.index, atlas.calibration])
    return np.setdiff1d(np.arange(len(test_set[0])), used)


def test_the_map_is_seeded_and_its_parts_do_not_overlap(atlas, default_model, test_set):
    X, y = test_set
    assert len(atlas.index) == atlas_mod.N_MAP and len(atlas.calibration) == atlas_mod.N_CALIBRATION
    assert (np.diff(atlas.index) > 0).all()
    assert not set(atlas.index) & set(atlas.calibration)
    np.testing.assert_array_equal(atlas.labels, y[atlas.index])
    assert atlas.points.shape == (atlas_mod.N_MAP, 2) and atlas.threshold > 0
    again = atlas_mod.Atlas(default_model, X, y)
    np.testing.assert_array_equal(again.index, atlas.index)
    assert again.threshold == atlas.threshold


def test_an_mnist_test_digit_is_not_unusual(atlas, default_model, test_set, unseen):
    X, _ = test_set
    placements = [atlas.place(default_model, X[i].reshape(28, 28)) for i in unseen[:20]]
    assert sum(p.unusual for p in placements) <= 1
    assert np.median([p.ratio for p in placements]) < 1
    for p in placements:
        assert p.ratio == pytest.approx(p.distance / p.threshold)
        assert p.threshold == atlas.threshold
    assert not atlas.place(default_model, X[atlas.index[0]]).unusual


def test_at_most_2_percent_of_unseen_test_digits_are_unusual(atlas, default_model, test_set,
                                                             unseen):
    X, _ = test_set
    assert len(unseen) == len(X) - atlas_mod.N_MAP - atlas_mod.N_CALIBRATION
    placements = atlas.place_many(default_model, X[unseen])
    share = np.mean([p.unusual for p in placements])
    assert share <= 0.02, f"{share:.2%} of unseen test digits were called unusual"
    # Calibrated, not switched off: the threshold is what 1% of test digits exceed.
    assert share >= 0.002, f"only {share:.2%} of unseen test digits were called unusual"


def dot():
    """A tap of the pen: a small filled disc, as the canvas draws it."""
    return nn.preprocess.to_mnist(nn.strokes.draw_strokes([np.array([[140.0, 140.0]])], 280, 18))


def scribble(seed=0):
    """A scrawl: three zigzags of random strokes across the canvas, with the default pen."""
    rng = np.random.default_rng(seed)
    strokes = [np.column_stack([np.linspace(20, 260, 14), rng.uniform(20, 260, 14)])
               for _ in range(3)]
    return nn.preprocess.to_mnist(nn.strokes.draw_strokes(strokes, 280, 18))


@pytest.mark.parametrize("make", [dot, scribble], ids=["dot", "scribble"])
def test_a_dot_or_a_scribble_is_unusual(atlas, default_model, make):
    img28 = make()
    assert img28 is not None and img28.shape == (28, 28)
    assert atlas.place(default_model, img28).unusual


def test_something_far_from_any_digit_is_unusual(atlas, default_model):
    """Ink everywhere is like no digit (the threshold works at all)."""
    assert atlas.place(default_model, np.ones((28, 28), np.float32)).unusual


def test_neighbours_are_5_map_digits_nearest_first(atlas, default_model, test_set, unseen):
    X, _ = test_set
    features = default_model.features(X[atlas.index]).astype(np.float64)
    for i in unseen[:5]:
        placement = atlas.place(default_model, X[i])
        assert placement.neighbours.shape == (atlas_mod.N_NEIGHBOURS,)
        assert set(placement.neighbours) <= set(range(atlas_mod.N_MAP))
        mine = default_model.features(X[i:i + 1]).astype(np.float64)[0]
        distances = np.linalg.norm(features - mine, axis=1)
        np.testing.assert_allclose(distances[placement.neighbours],
                                   np.sort(distances)[:atlas_mod.N_NEIGHBOURS], rtol=1e-6)
        assert (np.diff(distances[placement.neighbours]) >= 0).all()
        assert placement.distance >= 0
        np.testing.assert_allclose(placement.point, atlas.pca.transform(mine[None])[0])


def test_a_map_digits_nearest_neighbour_is_itself(atlas, default_model, test_set):
    X, _ = test_set
    for k in (0, 17, 999, atlas_mod.N_MAP - 1):
        placement = atlas.place(default_model, X[atlas.index[k]])
        assert placement.neighbours[0] == k and placement.distance == pytest.approx(0, abs=1e-4)
        np.testing.assert_allclose(placement.point, atlas.points[k], atol=1e-4)


def test_place_many_agrees_with_place(atlas, default_model, test_set, unseen):
    X, _ = test_set
    many = atlas.place_many(default_model, X[unseen[:4]])
    for i, placement in zip(unseen[:4], many):
        one = atlas.place(default_model, X[i])
        np.testing.assert_array_equal(one.neighbours, placement.neighbours)
        assert one.distance == pytest.approx(placement.distance, rel=1e-6)


def test_the_map_chart(atlas, default_model, test_set, unseen):
    X, _ = test_set
    placement = atlas.place(default_model, X[unseen[0]])
    data, spec = figures.map_chart(atlas.points, atlas.labels, placement.point,
                                   placement.neighbours)
    rows = data.to_pylist()
    assert len(rows) == atlas_mod.N_MAP + atlas_mod.N_NEIGHBOURS + 1
    kinds = [r["kind"] for r in rows]
    assert kinds.count("nearest neighbour") == atlas_mod.N_NEIGHBOURS
    assert kinds.count("your drawing") == 1 and rows[-1]["digit"] == "?"
    ringed = [r for r in rows if r["kind"] == "nearest neighbour"]
    assert [r["digit"] for r in ringed] == [str(atlas.labels[i]) for i in placement.neighbours]
    assert len(spec["layer"]) == 3
    alone, spec = figures.map_chart(atlas.points, atlas.labels)
    assert alone.num_rows == atlas_mod.N_MAP and len(spec["layer"]) == 1
