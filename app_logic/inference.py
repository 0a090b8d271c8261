"""What a network says about one image, what happens inside it, and how it does
on a set of images.

Every function takes the ``nn.Network`` itself. Inference (``predict_proba``,
``activations``, ``features``, ``input_gradient``) touches no shared state, so
one network loaded once may serve every browser session at the same time
without a lock.
"""

from dataclasses import dataclass

import numpy as np

import nn

__all__ = ["predict", "smoothgrad", "layer_views", "LayerView", "top_units", "misclassified",
           "SMOOTHGRAD_NOISE", "SMOOTHGRAD_SAMPLES"]

SMOOTHGRAD_NOISE = 0.15     # standard deviation of the noise, in pixel units (ink is 0..1)
SMOOTHGRAD_SAMPLES = 24


def predict(model, img28):
    """Class probabilities, shape (10,), for one image ``img28`` (28, 28) in [0, 1]."""
    return model.predict_proba(np.asarray(img28).reshape(1, -1))[0]


def smoothgrad(model, img28, cls, noise=SMOOTHGRAD_NOISE, samples=SMOOTHGRAD_SAMPLES):
    """SmoothGrad saliency of class ``cls`` for one image: (28, 28).

    The plain gradient of a class score with respect to the pixels is noisy
    (it changes sharply from one pixel to the next); averaged over slightly
    noisy copies of the image it shows the regions that matter. Positive:
    more ink there would raise the class score; negative: lower it.
    Seeded, so a drawing always gets the same map.
    """
    grad = model.input_gradient(np.asarray(img28).ravel(), int(cls), noise=noise,
                                samples=samples, rng=np.random.default_rng(0))
    return grad.reshape(28, 28)


@dataclass(frozen=True)
class LayerView:
    """One layer's output for one image, ready to show: ``kind`` "maps" for
    (channels, h, w) outputs or "units" for (units,) ones; ``title`` names the
    layer and its shape."""
    index: int
    title: str
    kind: str
    values: np.ndarray


_NAMES = {"conv2d": "convolution", "maxpool2d": "max-pooling", "dense": "dense",
          "flatten": "flatten", "dropout": "dropout"}


def layer_views(model, img28):
    """Every layer worth looking at, for one image: the output of each convolution
    block (after its pooling), of each dense layer's activation, and the final
    logits. Dropout and flatten (which change nothing at inference or only the
    shape) are skipped. Returns a list of ``LayerView``."""
    outputs = model.activations(np.asarray(img28).ravel())
    views = []
    for i, (layer, out) in enumerate(outputs):
        nxt = outputs[i + 1][0] if i + 1 < len(outputs) else None
        kind = layer.type
        if kind in ("dropout", "flatten"):
            continue
        if nxt is not None and (nxt.type in nn.ACTIVATIONS or nxt.type == "maxpool2d"):
            continue  # shown after its activation and pooling
        if i == len(outputs) - 1:
            title = f"Output layer: {out.shape[0]} scores (logits), one per digit"
        elif out.ndim == 3:
            title = f"Layer {i + 1}: {out.shape[0]} feature maps of {out.shape[1]}x{out.shape[2]}"
        else:
            title = f"Layer {i + 1}: {out.shape[0]} units"
        views.append(LayerView(i, title, "maps" if out.ndim == 3 else "units", out))
    return views


def top_units(model, img28, cls, k=8):
    """Which units of the last hidden layer drive the answer ``cls``.

    Each unit adds ``activation x weight`` to the class score; returns
    ``(unit indices, contributions)`` of the ``k`` largest contributions,
    largest first, and the sum of all of them (the score without its bias).
    """
    features = model.features(np.asarray(img28).reshape(1, -1))[0]
    w = model.layers[-1].W[:, int(cls)]
    contributions = features * w
    order = np.argsort(-contributions)[:k]
    return order, contributions[order], float(contributions.sum())


def misclassified(model, X_test, y_test, n=24):
    """The ``n`` most confident mistakes on a test set.

    Returns ``(indices, predicted, confidence)``, each of shape (<= n,),
    sorted from the most confident mistake down.
    """
    probs = model.predict_proba(X_test)
    pred = probs.argmax(axis=1)
    conf = probs.max(axis=1)
    wrong = np.flatnonzero(pred != y_test)
    wrong = wrong[np.argsort(-conf[wrong], kind="stable")][:n]
    return wrong, pred[wrong], conf[wrong]
