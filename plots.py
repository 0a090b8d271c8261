"""Figure builders shared by ``train.py`` and ``app.py``.

Each function takes plain numbers (a history list, a confusion matrix, arrays)
and returns a ``matplotlib.figure.Figure``; none of them shows, saves or calls
Streamlit. The app draws each of these once per network and caches it; the
pictures it redraws on every canvas stroke are built without matplotlib
figures, in ``lab/render.py``. They build figures with ``Figure()`` rather than ``pyplot``, so no
global state is shared between the app's concurrent sessions.
"""

import numpy as np
from matplotlib.figure import Figure

__all__ = ["training_curves", "confusion_matrix_figure", "per_class_figure",
           "weights_figure", "digits_figure"]

TRAIN_COLOR, VAL_COLOR = "#1f77b4", "#ff7f0e"


def _epochs(history, key):
    xs = [r["epoch"] for r in history if r.get(key) is not None]
    ys = [r[key] for r in history if r.get(key) is not None]
    return xs, ys


def training_curves(history, title=None):
    """Loss and accuracy per epoch, training and validation, side by side."""
    fig = Figure(figsize=(9, 3.4), layout="constrained")
    ax_loss, ax_acc = fig.subplots(1, 2)
    for key, label, color in (("train_loss", "training", TRAIN_COLOR),
                              ("val_loss", "validation", VAL_COLOR)):
        ax_loss.plot(*_epochs(history, key), marker="o", ms=3, label=label, color=color)
    for key, label, color in (("train_acc", "training", TRAIN_COLOR),
                              ("val_acc", "validation", VAL_COLOR)):
        xs, ys = _epochs(history, key)
        ax_acc.plot(xs, [100 * v for v in ys], marker="o", ms=3, label=label, color=color)
    ax_loss.set(title="Loss (cross-entropy)", xlabel="epoch", ylabel="loss")
    ax_acc.set(title="Accuracy", xlabel="epoch", ylabel="accuracy (%)")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        if history:
            ax.legend()
            ax.xaxis.get_major_locator().set_params(integer=True)
            last = max(r["epoch"] for r in history)
            ax.set_xlim(0.5, max(last, 2) + 0.5)  # a sensible axis even after one epoch
    if title:
        fig.suptitle(title)
    return fig


def confusion_matrix_figure(cm, title="Confusion matrix (test set)"):
    """Annotated heat map: rows are true digits, columns predictions.

    Colours use a log scale of the counts, so the few mistakes off the diagonal
    stay visible next to the thousand correct answers on it.
    """
    from matplotlib.colors import LogNorm

    cm = np.asarray(cm)
    k = cm.shape[0]
    fig = Figure(figsize=(6.2, 5.4), layout="constrained")
    ax = fig.subplots()
    shown = np.where(cm > 0, cm, np.nan)
    im = ax.imshow(shown, cmap="Blues", norm=LogNorm(vmin=1, vmax=max(int(cm.max()), 2)))
    fig.colorbar(im, ax=ax, label="count (log scale)")
    threshold = np.sqrt(max(cm.max(), 1))
    for i in range(k):
        for j in range(k):
            if cm[i, j]:
                ax.text(j, i, str(int(cm[i, j])), ha="center", va="center", fontsize=8,
                        color="white" if cm[i, j] > threshold else "black")
    ax.set(xticks=range(k), yticks=range(k), xlabel="predicted digit", ylabel="true digit",
           title=title)
    return fig


def per_class_figure(per_class):
    """Grouped bars of precision, recall and F1 for each digit (in %)."""
    fig = Figure(figsize=(9, 3.2), layout="constrained")
    ax = fig.subplots()
    k = len(per_class["f1"])
    x = np.arange(k)
    for offset, key in zip((-0.27, 0, 0.27), ("precision", "recall", "f1")):
        ax.bar(x + offset, 100 * np.asarray(per_class[key]), width=0.27, label=key)
    lows = [100 * min(per_class[key]) for key in ("precision", "recall", "f1")]
    ax.set(xticks=x, xlabel="digit", ylabel="%", ylim=(max(0, min(lows) - 3), 100.5),
           title="Per-class scores (test set)")
    ax.legend(ncols=3, loc="lower right")
    ax.grid(axis="y", alpha=0.3)
    return fig


def weights_figure(W, n=64, cols=8):
    """The first ``n`` columns of the first layer's weights (784, hidden) as 28x28 images.

    Each image is the input pattern that excites one hidden unit most: red
    pixels push the unit up, blue push it down, each on its own symmetric scale.
    """
    W = np.asarray(W)
    n = min(n, W.shape[1])
    rows = int(np.ceil(n / cols))
    fig = Figure(figsize=(cols * 1.1, rows * 1.1), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for j, ax in enumerate(axes):
        ax.set_axis_off()
        if j < n:
            w = W[:, j].reshape(28, 28)
            lim = float(np.abs(w).max()) or 1.0
            ax.imshow(w, cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest")
            ax.set_title(f"unit {j}", fontsize=7)
    return fig


def digits_figure(images, titles, cols=8):
    """A gallery of 28x28 images with a caption each (e.g. misclassified digits)."""
    n = len(images)
    rows = max(1, int(np.ceil(n / cols)))
    fig = Figure(figsize=(cols * 1.2, rows * 1.45), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for ax in axes:
        ax.set_axis_off()
    for ax, img, title in zip(axes, images, titles):
        ax.imshow(np.asarray(img).reshape(28, 28), cmap="gray", vmin=0, vmax=1,
                  interpolation="nearest")
        ax.set_title(title, fontsize=7)
    return fig
