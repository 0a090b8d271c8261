"""Teaching the network your handwriting: fine-tune it on labelled drawings and
measure, before and after, how it reads them and how it reads MNIST.

    result = teach(model, X_drawings, y_drawings, mnist, rehearsal=True)
    result.model            # the taught copy (the model given is untouched)
    result.before, result.after   # {"drawings": accuracy, "mnist": accuracy}

With ``rehearsal`` each step also shows the network ``REHEARSAL_IMAGES``
MNIST training images, so it keeps what it knew; without it a learner can
watch it forget (its MNIST accuracy drops).
"""

import time
from dataclasses import dataclass

import numpy as np

import nn

__all__ = ["teach", "TeachResult", "REHEARSAL_IMAGES", "TEACH_SETTINGS"]

REHEARSAL_IMAGES = 10_000
#: The fine-tuning settings the Teach button uses: ``nn.fine_tune``'s defaults,
#: spelled out so the app can show them (a test keeps the two equal).
TEACH_SETTINGS = {"steps": 60, "lr": 0.03, "batch_size": 64, "new_share": 0.5, "keep": 0.2,
                  "optimizer": "momentum"}


@dataclass
class TeachResult:
    model: object
    before: dict
    after: dict
    rehearsal: bool
    n_examples: int
    seconds: float

    @property
    def settings(self):
        return {**TEACH_SETTINGS, "rehearsal": self.rehearsal, "examples": self.n_examples}


def _accuracy(model, X, y):
    return float((model.predict(X) == y).mean()) if len(y) else None


def teach(model, X, y, mnist=None, *, rehearsal=True, seed=0, callback=None):
    """Fine-tune a copy of ``model`` on drawings ``X`` (n, 784) labelled ``y`` (n,).

    ``mnist``: ``((X_train, y_train), (X_test, y_test))`` or None. Rehearsal
    needs it; without it only the drawings are measured. The taught network's
    ``metrics`` are its MNIST test report (when MNIST is there). ``callback(step,
    loss)`` follows the fine-tuning. Raises ValueError for bad input (e.g. no
    drawings, rehearsal without MNIST).
    """
    X = np.asarray(X, dtype=np.float32)
    y = np.asarray(y, dtype=np.int64)
    if len(X) == 0:
        raise ValueError("there are no labelled drawings to learn from yet")
    if rehearsal and mnist is None:
        raise ValueError("rehearsal needs the MNIST training images, which are not on this server")
    base = {}
    if rehearsal:
        (X_train, y_train), _ = mnist
        pick = np.sort(np.random.default_rng(seed).permutation(len(X_train))[:REHEARSAL_IMAGES])
        base = {"X_base": X_train[pick], "y_base": y_train[pick]}
    before = {"drawings": _accuracy(model, X, y),
              "mnist": (model.metrics or {}).get("accuracy")}
    started = time.perf_counter()
    taught = nn.fine_tune(model, X, y, seed=seed, callback=callback, **base, **TEACH_SETTINGS)
    seconds = time.perf_counter() - started
    taught.history = list(model.history)
    taught.metrics = {}
    if mnist is not None:
        _, (X_test, y_test) = mnist
        taught.metrics = taught.evaluate(X_test, y_test)
        if before["mnist"] is None:
            before["mnist"] = float(model.evaluate(X_test, y_test)["accuracy"])
    after = {"drawings": _accuracy(taught, X, y), "mnist": taught.metrics.get("accuracy")}
    return TeachResult(taught, before, after, rehearsal, len(X), seconds)
