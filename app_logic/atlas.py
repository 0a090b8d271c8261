"""Where a drawing lands among the digits the network knows.

The network's last hidden layer is its own description of an image: the
numbers the output layer reads the answer from. ``Atlas`` takes that
description for ``N_MAP`` MNIST test digits and

- projects it to two dimensions with PCA (scikit-learn), the map: digits the
  network finds alike land close together;
- finds a drawing's nearest MNIST digits in the full description (not on the
  flattened map), shown as pictures;
- says when a drawing is unlike every digit it has seen: when its distance
  to the nearest of them is larger than that of 99% of other test digits
  (``N_CALIBRATION`` of them, not on the map). Softmax confidence cannot say
  this: the probabilities always add up to 100%, so a scribble must go
  somewhere, often with 99% "confidence".

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
    ``neighbours`` among the map's digits (nearest first), the distance to the
    nearest, and ``unusual``: farther than ``PERCENTILE``% of test digits are."""
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
        nearest, _ = self.search.kneighbors(model.features(X_test[calibration]).astype(np.float64),
                                            n_neighbors=1)
        self.threshold = float(np.percentile(nearest[:, 0], PERCENTILE))
        self.calibration = calibration

    def place(self, model, img28):
        """A ``Placement`` for one (28, 28) image and the same network."""
        return self.place_many(model, np.asarray(img28).reshape(1, -1))[0]

    def place_many(self, model, X):
        """``Placement`` for each row of ``X`` (n, 784)."""
        f = model.features(X).astype(np.float64)
        distances, neighbours = self.search.kneighbors(f)
        points = self.pca.transform(f)
        return [Placement(points[i], neighbours[i], float(distances[i, 0]), self.threshold)
                for i in range(len(f))]
