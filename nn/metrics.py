"""Classification metrics in NumPy: accuracy, confusion matrix, per-class
precision / recall / F1 / support with macro and weighted averages.

Conventions follow scikit-learn (and are tested against it): rows of the
confusion matrix are true classes, columns predicted classes; a class that is
never predicted has precision 0 (not NaN), a class that never occurs recall 0.
"""

import numpy as np

__all__ = ["accuracy", "confusion_matrix", "precision_recall_f1", "classification_report",
           "most_confused"]


def _labels(y_true, y_pred):
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    if y_true.shape != y_pred.shape or y_true.ndim != 1:
        raise ValueError(f"y_true and y_pred must be 1-D of equal length, got {y_true.shape} and {y_pred.shape}")
    for name, y in (("y_true", y_true), ("y_pred", y_pred)):
        if y.size and y.dtype.kind not in "iu" and not (y.dtype.kind == "f" and np.all(y % 1 == 0)):
            raise ValueError(f"{name} must hold integer class labels, got dtype {y.dtype}")
    return y_true.astype(np.int64, copy=False), y_pred.astype(np.int64, copy=False)


def accuracy(y_true, y_pred):
    """Fraction of labels predicted exactly. (n,), (n,) -> float."""
    y_true, y_pred = _labels(y_true, y_pred)
    return float(np.mean(y_true == y_pred)) if len(y_true) else 0.0


def confusion_matrix(y_true, y_pred, n_classes=10):
    """(n_classes, n_classes) int64 counts: entry [i, j] = true class i predicted as j.

    One ``bincount`` over ``i * n_classes + j`` instead of a Python loop.
    """
    y_true, y_pred = _labels(y_true, y_pred)
    for name, y in (("y_true", y_true), ("y_pred", y_pred)):
        if y.size and (y.min() < 0 or y.max() >= n_classes):
            raise ValueError(f"{name} has labels outside [0, {n_classes})")
    flat = y_true * n_classes + y_pred
    return np.bincount(flat, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def _safe_divide(num, den):
    out = np.zeros(num.shape, dtype=np.float64)
    np.divide(num, den, out=out, where=den > 0)
    return out


def precision_recall_f1(cm):
    """Per-class precision, recall, F1 and support from a confusion matrix.

    precision_k = cm[k, k] / column k's sum (of the predictions of k, how many were right)
    recall_k    = cm[k, k] / row k's sum    (of the true k's, how many were found)
    f1_k        = harmonic mean of the two; support_k = row k's sum.
    Returns four arrays of shape (n_classes,).
    """
    cm = np.asarray(cm)
    tp = np.diag(cm).astype(np.float64)
    predicted = cm.sum(axis=0)
    support = cm.sum(axis=1)
    precision = _safe_divide(tp, predicted)
    recall = _safe_divide(tp, support)
    f1 = _safe_divide(2 * precision * recall, precision + recall)
    return precision, recall, f1, support


def classification_report(y_true, y_pred, n_classes=10):
    """Everything the dashboards show, as a JSON-friendly dict.

    ``{"accuracy", "n", "confusion_matrix": [[...]], "per_class": {"precision",
    "recall", "f1", "support"}, "macro": {...}, "weighted": {...}}``; macro
    averages weigh every class equally, weighted averages by support.
    """
    cm = confusion_matrix(y_true, y_pred, n_classes)
    precision, recall, f1, support = precision_recall_f1(cm)
    total = support.sum()
    weights = support / total if total else np.zeros(n_classes)
    scores = {"precision": precision, "recall": recall, "f1": f1}
    return {
        "accuracy": float(np.trace(cm) / total) if total else 0.0,
        "n": int(total),
        "confusion_matrix": cm.tolist(),
        "per_class": {**{k: v.tolist() for k, v in scores.items()}, "support": support.tolist()},
        "macro": {k: float(v.mean()) for k, v in scores.items()},
        "weighted": {k: float((v * weights).sum()) for k, v in scores.items()},
    }


def most_confused(cm, k=5):
    """The ``k`` largest off-diagonal entries as ``(true, predicted, count)``, largest first."""
    cm = np.asarray(cm)
    off = cm.copy()
    np.fill_diagonal(off, 0)
    order = np.argsort(off, axis=None)[::-1][:k]
    pairs = [(int(i), int(j), int(off[i, j])) for i, j in zip(*np.unravel_index(order, off.shape))]
    return [p for p in pairs if p[2] > 0]
