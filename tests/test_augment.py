"""nn.augment: random, label-preserving changes to training digits.

Shapes and range are kept; all strengths 0 is the identity; a seed decides the
batch; each change does what its name says, checked on images whose answer is
known (two bright dots at known places: a rotation turns both about the image
centre by the same angle, a shift moves them by at most the shift, a shear
slides the upper one sideways only, ...). ``Prefetcher`` keeps order, passes
on errors and stops its worker; ``nn.fit`` with augmentation trains and is
reproducible.
"""

import inspect
import threading

import numpy as np
import pytest

import nn
from nn.augment import CENTRE, SIDE, Augmenter, Prefetcher, augment

STRENGTHS = {"rotate": 15.0, "scale": 0.2, "shear": 15.0, "shift": 2.0, "thickness": 1.0,
             "elastic": 1.5}


def digits(n=64, seed=0):
    """n digit-like images (n, 784) in [0, 1]: rings and bars of varied size and place."""
    rng = np.random.default_rng(seed)
    rr, cc = np.mgrid[0:SIDE, 0:SIDE]
    out = np.zeros((n, SIDE, SIDE), np.float32)
    for i in range(n):
        r0, c0 = rng.uniform(11, 16, 2)
        if i % 2:
            radius = rng.uniform(4, 8)
            out[i] = np.clip(1.6 - np.abs(np.hypot(rr - r0, cc - c0) - radius), 0, 1)
        else:
            out[i] = np.clip(1.6 - np.abs(cc - c0 - 0.3 * (rr - r0)), 0, 1) * (np.abs(rr - r0) < 8)
    return out.reshape(n, -1)


def dots(*centres, n=200):
    """n copies of an image holding a 2x2 bright dot centred at each (row, col) (x.5 values)."""
    img = np.zeros((SIDE, SIDE), np.float32)
    for r, c in centres:
        img[int(r - 0.5):int(r + 1.5), int(c - 0.5):int(c + 1.5)] = 1
    return np.tile(img.ravel(), (n, 1))


def centre_of_mass(X, mask=None):
    """(rows, cols) of the ink's centre of mass in each image, optionally within ``mask``."""
    images = X.reshape(-1, SIDE, SIDE)
    if mask is not None:
        images = images * mask
    rr, cc = np.mgrid[0:SIDE, 0:SIDE]
    mass = images.sum(axis=(1, 2))
    return (images * rr).sum(axis=(1, 2)) / mass, (images * cc).sum(axis=(1, 2)) / mass


def polar(rows, cols):
    """Distance from the image centre and angle (degrees, counter-clockwise on screen)."""
    distance = np.hypot(rows - CENTRE, cols - CENTRE)
    return distance, np.degrees(np.arctan2(CENTRE - rows, cols - CENTRE))


# -- contract ----------------------------------------------------------------------------------

@pytest.mark.parametrize("strengths", [STRENGTHS, {"rotate": 45.0, "scale": 0.5, "shear": 45.0,
                                                   "shift": 8.0, "thickness": 1.0, "elastic": 4.0},
                                       {"thickness": 1.0}, {"shift": 3.0}])
def test_shape_dtype_and_range_are_kept(strengths):
    X = digits()
    X0 = X.copy()
    out = augment(X, np.random.default_rng(0), **strengths)
    assert out.shape == X.shape and out.dtype == np.float32
    assert np.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
    assert out is not X and np.array_equal(X, X0)  # a new batch; the input is untouched


def test_all_strengths_zero_is_the_identity():
    X = digits()
    rng = np.random.default_rng(0)
    state = rng.bit_generator.state
    assert augment(X, rng) is X
    assert augment(X, rng, **{k: 0 for k in STRENGTHS}) is X
    assert rng.bit_generator.state == state  # no random numbers spent either
    assert not Augmenter().active and Augmenter()(X, rng) is X


def test_same_seed_same_batch_and_different_seeds_differ():
    X = digits()
    a = augment(X, np.random.default_rng(5), **STRENGTHS)
    b = augment(X, np.random.default_rng(5), **STRENGTHS)
    c = augment(X, np.random.default_rng(6), **STRENGTHS)
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max(axis=1).min() > 0.01  # every image differs


def test_each_image_gets_its_own_change():
    out = augment(dots((13.5, 21.5), n=50), np.random.default_rng(0), rotate=30.0)
    assert len(np.unique(out.round(4), axis=0)) == 50


def test_labels_are_never_passed():
    """augment changes images only: it takes no labels, so it cannot change them."""
    params = list(inspect.signature(augment).parameters)
    assert params == ["X", "rng", "rotate", "scale", "shear", "shift", "thickness", "elastic"]
    with pytest.raises(TypeError):
        augment(digits(4), np.random.default_rng(0), np.arange(4), rotate=10.0)


@pytest.mark.parametrize("name", sorted(STRENGTHS))
def test_each_strength_alone_changes_images(name):
    X = digits()
    out = augment(X, np.random.default_rng(1), **{name: STRENGTHS[name]})
    changed = np.abs(out - X).max(axis=1) > 0.01
    assert changed.mean() >= 0.9, f"{name} changed only {changed.mean():.0%} of the images"


@pytest.mark.parametrize("bad", [{"rotate": -1.0}, {"shift": float("nan")},
                                 {"elastic": float("inf")}, {"scale": "0.1"}, {"shear": None}])
def test_bad_strengths_are_refused(bad):
    with pytest.raises(ValueError, match=f"augment: {next(iter(bad))} must be a finite number"):
        augment(digits(2), np.random.default_rng(0), **bad)


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match=r"expected images of shape \(n, 784\)"):
        augment(np.zeros((2, 28, 28), np.float32), np.random.default_rng(0), rotate=5.0)
    with pytest.raises(TypeError, match="unknown augmentations: blur"):
        Augmenter(blur=1.0)


# -- each change does what its name says --------------------------------------------------------

RIGHT, TOP = (CENTRE, CENTRE + 8), (CENTRE - 8, CENTRE)   # two dots 8 pixels from the centre


def two_dots(out):
    """Centres of the dot that started right of the centre and of the one above it
    (told apart by their angle: a turn of up to 30 degrees keeps them apart)."""
    rr, cc = np.mgrid[0:SIDE, 0:SIDE]
    angle = np.degrees(np.arctan2(CENTRE - rr, cc - CENTRE))
    right = centre_of_mass(out, (angle < 45) & (angle > -45))
    top = centre_of_mass(out, (angle >= 45) & (angle < 135))
    return right, top


def test_rotation_turns_the_image_about_its_centre():
    X = dots(RIGHT, TOP)
    out = augment(X, np.random.default_rng(3), rotate=30.0)
    (r1, c1), (r2, c2) = two_dots(out)
    d1, a1 = polar(r1, c1)
    d2, a2 = polar(r2, c2)
    # distances from the centre are kept: a rotation about the centre, no scaling
    np.testing.assert_allclose(d1, 8, atol=0.3)
    np.testing.assert_allclose(d2, 8, atol=0.3)
    # both dots turn by the same angle (rigid), never more than 30 degrees
    turn = a1 - 0
    np.testing.assert_allclose(a2 - 90, turn, atol=2.0)
    assert np.abs(turn).max() <= 30 + 1
    assert turn.min() < -20 and turn.max() > 20  # both directions, up to the strength
    # and mass is kept (bilinear resampling of a turned dot)
    np.testing.assert_allclose(out.sum(axis=1), X.sum(axis=1), rtol=0.05)


def test_shift_moves_mass_by_at_most_the_shift():
    X = dots(RIGHT, TOP)
    out = augment(X, np.random.default_rng(4), shift=3.0)
    r0, c0 = centre_of_mass(X)
    r, c = centre_of_mass(out)
    dr, dc = r - r0, c - c0
    assert np.abs(dr).max() <= 3 + 1e-3 and np.abs(dc).max() <= 3 + 1e-3
    assert np.abs(dr).max() > 2 and np.abs(dc).max() > 2  # uses its range
    # a translation moves both dots alike: their offset is unchanged
    (r1, c1), (r2, c2) = two_dots(out)
    np.testing.assert_allclose(r1 - r2, 8, atol=0.1)
    np.testing.assert_allclose(c1 - c2, 8, atol=0.1)
    np.testing.assert_allclose(out.sum(axis=1), X.sum(axis=1), rtol=1e-4)


def test_scale_scales_distances_from_the_centre():
    X = dots(RIGHT)
    out = augment(X, np.random.default_rng(5), scale=0.3)
    distance, angle = polar(*centre_of_mass(out))
    assert distance.min() >= 8 / 1.3 - 0.2 and distance.max() <= 8 * 1.3 + 0.2
    assert distance.min() < 7 and distance.max() > 9.5  # smaller and larger
    np.testing.assert_allclose(angle, 0, atol=1.0)       # along the same ray
    # the ink grows and shrinks with the scale (about as the area: resampling a dot is rough)
    ratio = out.sum(axis=1) / X.sum(axis=1)
    assert np.corrcoef(distance, ratio)[0, 1] > 0.9
    np.testing.assert_allclose(ratio, (distance / 8) ** 2, rtol=0.3)


def test_shear_slides_rows_sideways_by_their_height():
    X = dots(RIGHT, TOP)
    out = augment(X, np.random.default_rng(6), shear=20.0)
    (r1, c1), (r2, c2) = two_dots(out)
    # the dot on the centre's row stays where it was; the upper one slides sideways
    # by up to 8 * tan(20 degrees), its row unchanged
    np.testing.assert_allclose(c1, RIGHT[1], atol=0.3)
    np.testing.assert_allclose(r1, RIGHT[0], atol=0.1)
    np.testing.assert_allclose(r2, TOP[0], atol=0.1)
    slide = c2 - TOP[1]
    assert np.abs(slide).max() <= 8 * np.tan(np.radians(20)) + 0.1
    assert slide.min() < -2 and slide.max() > 2


def test_thickness_raises_or_lowers_total_ink_in_place():
    X = digits(200)
    out = augment(X, np.random.default_rng(7), thickness=1.0)
    ratio = out.sum(axis=1) / X.sum(axis=1)
    assert (ratio > 1.1).sum() > 40 and (ratio < 0.9).sum() > 40  # thicker and thinner
    # strokes grow or shrink where they are: the centre of mass stays put
    (r0, c0), (r, c) = centre_of_mass(X), centre_of_mass(out)
    assert np.abs(r - r0).max() < 0.5 and np.abs(c - c0).max() < 0.5
    # thicker only ever adds ink next to ink, thinner only removes it
    grow, shrink = ratio > 1, ratio < 1
    assert (out[grow] >= X[grow] - 1e-6).all() and (out[shrink] <= X[shrink] + 1e-6).all()


def test_elastic_keeps_mass_roughly_and_moves_pixels_a_little():
    X = digits(200)
    out = augment(X, np.random.default_rng(8), elastic=1.0)
    ratio = out.sum(axis=1) / X.sum(axis=1)
    assert 0.95 < np.median(ratio) < 1.05 and ratio.min() > 0.6 and ratio.max() < 1.6
    (r0, c0), (r, c) = centre_of_mass(X), centre_of_mass(out)
    assert np.hypot(r - r0, c - c0).max() < 2.5  # a wobble, not a move
    assert (np.abs(out - X).max(axis=1) > 0.1).all()


def test_augmenter_binds_a_recipes_strengths():
    recipe = nn.Recipe(rotate=10.0, shift=1.0)
    augmenter = Augmenter.from_recipe(recipe)
    assert augmenter.active and augmenter.strengths == {
        "rotate": 10.0, "scale": 0.0, "shear": 0.0, "shift": 1.0, "thickness": 0.0, "elastic": 0.0}
    X = digits(8)
    np.testing.assert_array_equal(augmenter(X, np.random.default_rng(2)),
                                  augment(X, np.random.default_rng(2), rotate=10.0, shift=1.0))


# -- Prefetcher -----------------------------------------------------------------------------------

def test_prefetcher_yields_items_in_order():
    made = []

    def make(i):
        made.append(i)
        return i * i

    with Prefetcher(make, 20) as items:
        assert list(items) == [i * i for i in range(20)]
    assert made == list(range(20))


def test_prefetcher_passes_on_the_workers_exception():
    def make(i):
        if i == 3:
            raise KeyError("no batch 3")
        return i

    got = []
    with pytest.raises(KeyError, match="no batch 3"):
        with Prefetcher(make, 10) as items:
            for item in items:
                got.append(item)
    assert got == [0, 1, 2]


def test_prefetcher_stops_its_worker_on_early_exit():
    made = []
    with Prefetcher(lambda i: made.append(i) or i, 10_000, depth=2) as items:
        for item in items:
            if item == 2:
                break
        worker = items._thread
    assert not worker.is_alive()
    assert len(made) <= 2 + 1 + 2 + 1   # what was used, plus what fitted in the queue
    assert not any(t.name == "nn-prefetch" and t.is_alive() for t in threading.enumerate())


def test_prefetcher_stops_its_worker_when_the_consumer_fails():
    with pytest.raises(RuntimeError, match="consumer"):
        with Prefetcher(lambda i: i, 10_000) as items:
            for item in items:
                if item == 1:
                    raise RuntimeError("consumer failed")
    assert not items._thread.is_alive()


# -- training with augmentation --------------------------------------------------------------------

def test_fit_with_augmentation_trains_and_is_reproducible(mnist):
    (X, y), _ = mnist
    X, y = X[:1200], y[:1200]

    def run(seed, **augmentation):
        model = nn.Network(nn.mlp_spec((32,)), seed=0)
        nn.fit(model, X, y, epochs=3, batch_size=32, lr=3e-3, val_size=200, seed=seed,
               **augmentation)
        return model

    strengths = dict(rotate=10.0, scale=0.1, shift=1.5, thickness=0.5, elastic=1.0)
    a, b, c = run(1, **strengths), run(1, **strengths), run(2, **strengths)
    plain = run(1)
    assert a.history[-1]["train_loss"] < 0.7 * a.history[0]["train_loss"]
    assert a.history[-1]["val_acc"] > 0.7
    assert all(np.array_equal(p, q) for p, q in zip(a.get_weights(), b.get_weights(), strict=True))
    assert a.history == [dict(r, seconds=s["seconds"]) for r, s in zip(b.history, a.history)]
    assert not np.array_equal(a.get_weights()[0], c.get_weights()[0])
    assert not np.array_equal(a.get_weights()[0], plain.get_weights()[0])  # it did augment
    assert {k: a.recipe[k] for k in strengths} == strengths
