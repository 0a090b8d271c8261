"""Where a drawing lands among the digits the network knows.

The network's last hidden layer is its own description of an image: the
numbers the output layer reads the answer from. ``Atlas`` takes that
description for ``N_MAP`` MNIST test digits and

- projects it to two dimensions with PCA (scikit-learn), the map: digits the
  network finds alike land close together;
- finds a drawing's nearest MNIST digits in the full description (not on the
  flattened map), shown as pictures;
- says when a drawing is unlike every digit it has seen: when it is farther
  from every map digit than 99% of other test digits are (``N_CALIBRATION``
  of them, not on the map). Softmax confidence cannot say this: the
  probabilities always add up to 100%, so a scribble must go somewhere, often
  with 99% "confidence".

"Farther" is measured twice and the larger counts: in what the last hidden
layer makes of the images, and in the images themselves (slightly blurred, so
that a stroke one pixel off still counts as near). Each distance is divided by
the distance that 1% of calibration digits exceed; the larger of the two is
the drawing's *score*, and its threshold is again the score 1% of calibration
digits exceed. Either distance alone misses things: a network trained only on
digits maps a dot or a scribble close to some digit in its hidden layer
(measured: 0.65x the threshold for a dot, 0.67x for a scribble with the shipped
MLP), while in pixels the same drawings stand out (1.17x, 1.30x).

An atlas is built once per network (about a second for the default CNN) and
placing a drawing costs a forward pass and a neighbour search (under 100 ms).
"""

from dataclasses import dataclass

import numpy as np
from sklearn.decomposition import PCA
from sklearn.neighbors import NearestNeighbors

__all__ = ["Atlas", "Placement", "N_MAP", "N_CALIBRATION", "PERCENTILE", "N_NEIGHBOURS"]

N_MAP = 2000
N_CALIBRATION = 2000
PERCENTILE = 99.0
N_NEIGHBOURS = 5


@dataclass(frozen=True)
class Placement:
    """Where one image lands: ``point`` (2,) on the map, the indices of its
    ``neighbours`` among the map's digits (nearest first), its ``distance``
    score (see the module docstring), and ``unusual``: farther than
    ``PERCENTILE``% of test digits are."""
    point: np.ndarray
    neighbours: np.ndarray
    distance: float
    threshold: float

    @property
    def unusual(self):
        return self.distance > self.threshold

    @property
    def ratio(self):
        """Distance to the nearest known digit, in units of the threshold."""
        return self.distance / self.threshold if self.threshold else float("inf")


class Atlas:
    """The map and the neighbour search for one network (see the module docstring).

    ``X_test`` (n, 784), ``y_test`` (n,): MNIST's test set; a fixed, seeded
    choice of ``N_MAP`` digits makes the map and another ``N_CALIBRATION`` the
    threshold.
    """

    def __init__(self, model, X_test, y_test, seed=0):
        order = np.random.default_rng(seed).permutation(len(X_test))
        self.index = np.sort(order[:N_MAP])
        calibration = order[N_MAP:N_MAP + N_CALIBRATION]
        self.labels = np.asarray(y_test)[self.index]
        features = model.features(X_test[self.index]).astype(np.float64)
        self.pca = PCA(n_components=2, random_state=seed).fit(features)
        self.points = self.pca.transform(features)
        self.search = NearestNeighbors(n_neighbors=N_NEIGHBOURS).fit(features)
        self.pixel_search = NearestNeighbors(n_neighbors=1).fit(_blurred(X_test[self.index]))
        self.calibration = calibration
        self.scales = (1.0, 1.0)
        feature_d, pixel_d = self._distances(model, X_test[calibration])
        self.scales = (float(np.percentile(feature_d, PERCENTILE)),
                       float(np.percentile(pixel_d, PERCENTILE)))
        self.threshold = float(np.percentile(
            self._score(feature_d / self.scales[0], pixel_d / self.scales[1]), PERCENTILE))

    def _distances(self, model, X):
        """Distances to the nearest map digit in features and in pixels, each divided by
        its calibration scale: two (n,) arrays."""
        feature_d, _ = self.search.kneighbors(model.features(X).astype(np.float64), n_neighbors=1)
        pixel_d, _ = self.pixel_search.kneighbors(_blurred(X))
        return feature_d[:, 0] / self.scales[0], pixel_d[:, 0] / self.scales[1]

    @staticmethod
    def _score(feature_d, pixel_d):
        return np.maximum(feature_d, pixel_d)

    def place(self, model, img28):
        """A ``Placement`` for one (28, 28) image and the same network."""
        return self.place_many(model, np.asarray(img28).reshape(1, -1))[0]

    def place_many(self, model, X):
        """``Placement`` for each row of ``X`` (n, 784)."""
        f = model.features(X).astype(np.float64)
        _, neighbours = self.search.kneighbors(f)
        points = self.pca.transform(f)
        score = self._score(*self._distances(model, X))
        return [Placement(points[i], neighbours[i], float(score[i]), self.threshold)
                for i in range(len(f))]


def _blurred(X):
    """Images (n, 784) -> the same, each pixel averaged with its 8 neighbours, as float64."""
    X = np.asarray(X, dtype=np.float64).reshape(-1, 28, 28)
    p = np.pad(X, ((0, 0), (1, 1), (1, 1)))
    return (sum(p[:, i:i + 28, j:j + 28] for i in range(3) for j in range(3)) / 9).reshape(len(X), -1)
