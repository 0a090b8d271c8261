"""The tables the tabs show, as pandas DataFrames with words a learner reads
("learning rate", not ``lr``) and numbers formatted for people (thousands
separators, percentages).

Columns of mixed types are turned into text first, because Arrow (which
carries tables to the browser) wants one type per column.
"""

import base64
import datetime as _dt

import numpy as np
import pandas as pd

import nn.metrics
from nn.architecture import shapes
from nn.recipe import SETTINGS

from .retrain import describe_value, duration

__all__ = ["per_class_table", "confused_pairs_table", "architecture_table", "recipe_table",
           "drawings_table", "SCORE_COLUMNS", "MAX_DRAWING_ROWS"]

SCORE_COLUMNS = ["precision (%)", "recall (%)", "F1 (%)"]
MAX_DRAWING_ROWS = 300     # a table of one's drawings shows the newest this many
_LAYER_NAMES = {"conv2d": "convolution", "maxpool2d": "max-pooling", "dense": "dense",
                "flatten": "flatten", "dropout": "dropout"}


def per_class_table(metrics):
    """12 rows (digits "0".."9", "average over digits", "average over images") x
    4 columns: precision, recall, F1 in % (2 decimals), and "images" (how many
    test images of that digit) as text with thousands separators.

    A score that is 0/0 is NaN (shown as "n/a"), not 0: a digit nobody drew has no
    recall or F1, and one the network never answered has no precision (its F1 is 0
    if it was drawn). The average over
    digits is over the digits that have images, so two drawings read right average
    100%, not 20%. (On MNIST's test set every digit has images and nothing changes.)
    """
    pc = metrics["per_class"]
    cm = np.asarray(metrics["confusion_matrix"])
    support = np.asarray(pc["support"])
    answered = cm.sum(axis=0)
    scores = {key: np.array(pc[key], dtype=float) for key in ("precision", "recall", "f1")}
    scores["recall"][support == 0] = np.nan
    scores["precision"][answered == 0] = np.nan
    scores["f1"][support == 0] = np.nan   # drawn but never answered: F1 is a real 0
    rows = {str(k): [100 * scores["precision"][k], 100 * scores["recall"][k],
                     100 * scores["f1"][k], support[k]] for k in range(len(support))}
    present = support > 0
    macro = ({key: float(np.mean(np.nan_to_num(v[present]))) for key, v in scores.items()}
             if present.any() and not present.all() else metrics["macro"])
    for m, label in ((macro, "average over digits"), (metrics["weighted"], "average over images")):
        rows[label] = [100 * m["precision"], 100 * m["recall"], 100 * m["f1"], metrics["n"]]
    table = pd.DataFrame.from_dict(rows, orient="index", columns=[*SCORE_COLUMNS, "images"])
    table[SCORE_COLUMNS] = table[SCORE_COLUMNS].astype(float).round(2)
    table["images"] = [f"{int(v):,}" for v in table["images"]]
    table.index.name = "digit"
    return table


def confused_pairs_table(confusion_matrix, k=5):
    """The ``k`` most frequent mistakes of a (10, 10) confusion matrix: columns
    "true digit", "read as", "times" (empty when there are no mistakes)."""
    pairs = nn.metrics.most_confused(confusion_matrix, k=k)
    return pd.DataFrame(pairs, columns=["true digit", "read as", "times"])


def architecture_table(model):
    """One row per layer: "layer" (what it is), "output" (its shape for one image)
    and "parameters" (weights and biases, with thousands separators)."""
    rows = []
    for layer, shape in zip(model.layers, shapes(model.spec)):
        kind = layer.type
        name = _LAYER_NAMES.get(kind, f"{kind} (activation)")
        if kind == "conv2d":
            name = f"convolution {layer.kernel_size}x{layer.kernel_size}"
        elif kind == "dropout":
            name = f"dropout {layer.p:g}"
        n = sum(p.value.size for p in layer.parameters())
        rows.append({"layer": name, "output": " x ".join(map(str, shape)),
                     "parameters": f"{n:,}" if n else ""})
    rows[-1]["layer"] += " (output: one score per digit)"
    return pd.DataFrame(rows)


def recipe_table(model):
    """Everything that shaped the network: "setting" (its label) and "value" (as
    text), from the recipe stored in the model file, and how much data it saw."""
    rows = []
    for name, value in model.recipe.items():
        label = SETTINGS[name].label if name in SETTINGS else name.replace("_", " ")
        if isinstance(value, list):
            value = tuple(value)
        shown = describe_value(name, value) if name in SETTINGS and value is not None else (
            "—" if value is None else str(value))
        rows.append({"setting": label, "value": shown})
    for key, label in (("n_train", "Images trained on"), ("n_val", "Images held out to validate"),
                       ("fine_tuned_on", "Drawings it was taught"),
                       ("rehearsal_examples", "MNIST images rehearsed while taught")):
        if key in model.trained_on:
            rows.append({"setting": label, "value": f"{int(model.trained_on[key]):,}"})
    rows.append({"setting": "Training time", "value": duration(model.train_seconds)})
    return pd.DataFrame(rows)


def drawings_table(drawings, rows, thumbnail):
    """One row per drawing ``rows`` (indices into ``drawings``, an ``app_logic.store.Drawings``):
    "drawing" (its thumbnail as a data URL, for an image column), "label", "read as"
    (what the network read when it was labelled, or "—"), "when" (local time, text)
    and "id". ``thumbnail(id)`` returns a drawing's PNG bytes."""
    records = []
    for i in rows:
        drawing_id = int(drawings.ids[i])
        predicted = int(drawings.predicted[i])
        records.append({
            "drawing": "data:image/png;base64," + base64.b64encode(thumbnail(drawing_id)).decode(),
            "label": str(int(drawings.labels[i])),
            "read as": "—" if predicted < 0 else str(predicted),
            "when": _dt.datetime.fromtimestamp(float(drawings.created[i])).strftime("%Y-%m-%d %H:%M"),
            "id": drawing_id})
    return pd.DataFrame(records, columns=["drawing", "label", "read as", "when", "id"])

