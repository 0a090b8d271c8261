"""What the network says about one image, and how it does on a test set.

Every function takes the ``nn.Network`` itself. Inference (``predict_proba``,
``forward(training=False)``, ``input_gradient``) touches no shared state, so
one network loaded once may serve every browser session at the same time
without a lock.
"""

import numpy as np

__all__ = ["predict", "saliency", "misclassified"]


def predict(model, img28):
    """Class probabilities, shape (10,), for one image ``img28`` (28, 28) in [0, 1]."""
    return model.predict_proba(np.asarray(img28).reshape(1, -1))[0]


def saliency(model, img28, cls):
    """Gradient of class ``cls``'s logit with respect to each pixel, shape (28, 28).

    Positive where more ink would raise the class score, negative where it
    would lower it (the Inside tab colours it red and blue).
    """
    return model.input_gradient(np.asarray(img28).ravel(), int(cls)).reshape(28, 28)


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
