"""The tables the Training and Evaluation tabs show, as pandas DataFrames.

They hold plain numbers; the page decides how to format them. Columns of
mixed types are turned into text first, because Arrow (which carries tables
to the browser) wants one type per column.
"""

import pandas as pd

import nn.metrics

__all__ = ["per_class_table", "confused_pairs_table", "architecture_table",
           "hyperparams_table", "SCORE_COLUMNS"]

SCORE_COLUMNS = ["precision", "recall", "f1-score"]


def per_class_table(metrics):
    """12 rows (digits "0".."9", "macro avg", "weighted avg") x 4 columns
    (precision, recall, f1-score in [0, 1]; support, an int count).

    ``metrics`` has the shape of ``model.metrics`` (see ``nn.metrics.classification_report``);
    both average rows' support is the number of test images.
    """
    pc = metrics["per_class"]
    table = pd.DataFrame({"precision": pc["precision"], "recall": pc["recall"],
                          "f1-score": pc["f1"], "support": pc["support"]},
                         index=[str(k) for k in range(len(pc["f1"]))])
    for avg in ("macro", "weighted"):
        m = metrics[avg]
        table.loc[f"{avg} avg"] = [m["precision"], m["recall"], m["f1"], metrics["n"]]
    table["support"] = table["support"].astype(int)
    table.index.name = "digit"
    return table


def confused_pairs_table(confusion_matrix, k=5):
    """The ``k`` most frequent mistakes of a (10, 10) confusion matrix: columns
    "true digit", "predicted as", "times" (empty when there are no mistakes)."""
    pairs = nn.metrics.most_confused(confusion_matrix, k=k)
    return pd.DataFrame(pairs, columns=["true digit", "predicted as", "times"])


def architecture_table(model):
    """One row per dense layer: "layer", "shape" (in → out), "activation", "parameters"."""
    rows = []
    act = model.config["activation"]
    dense = model.dense_layers
    for i, layer in enumerate(dense):
        last = i == len(dense) - 1
        rows.append({"layer": "output" if last else f"hidden {i + 1}",
                     "shape": f"{layer.in_features} → {layer.out_features}",
                     "activation": "softmax" if last else act,
                     "parameters": layer.W.size + layer.b.size})
    return pd.DataFrame(rows)


def hyperparams_table(model):
    """Everything that shaped the network: columns "setting" and "value", both text."""
    settings = {"activation": model.config["activation"], "dropout": model.config["dropout"],
                **model.hyperparams, "training seconds": round(model.train_seconds, 1)}
    return pd.DataFrame({"setting": list(settings),
                         "value": ["—" if v is None else f"{v:g}" if isinstance(v, float) else str(v)
                                   for v in settings.values()]})
