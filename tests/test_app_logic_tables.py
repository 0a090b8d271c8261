"""app_logic.tables: the tables the tabs show, in words and numbers a learner reads.

Reports are built by hand where the expected numbers matter (so they can be
worked out here) and taken from the shipped network where any network must do.
"""

import numpy as np
import pandas as pd
import pytest

import nn
from app_logic import tables
from nn.recipe import SETTINGS


def report(per_digit=1200, wrong=None):
    """A test report of ``10 * per_digit`` images; ``wrong``: {(true, read as): count}."""
    y = np.repeat(np.arange(10), per_digit)
    pred = y.copy()
    used = dict.fromkeys(range(10), 0)     # images of each digit already made wrong
    for (true, read), count in (wrong or {}).items():
        start = true * per_digit + used[true]
        pred[start:start + count] = read
        used[true] += count
    return nn.metrics.classification_report(y, pred)


def number(text):
    return int(text.replace(",", "")) if text else 0


def test_per_class_table():
    metrics = report(wrong={(4, 9): 30, (7, 1): 12})
    table = tables.per_class_table(metrics)
    assert table.shape == (12, 4)
    assert list(table.columns) == ["precision (%)", "recall (%)", "F1 (%)", "images"]
    assert list(table.index) == [str(k) for k in range(10)] + ["average over digits",
                                                               "average over images"]
    assert table.index.name == "digit"
    assert table.loc["4", "recall (%)"] == pytest.approx(100 * (1200 - 30) / 1200, abs=0.005)
    assert table.loc["9", "precision (%)"] == pytest.approx(100 * 1200 / 1230, abs=0.005)
    assert table.loc["0", "F1 (%)"] == 100.0
    assert table.loc["average over digits", "F1 (%)"] == round(100 * metrics["macro"]["f1"], 2)
    assert table.loc["average over images", "recall (%)"] == round(
        100 * metrics["weighted"]["recall"], 2)
    assert list(table["images"]) == ["1,200"] * 10 + ["12,000", "12,000"]
    for column in tables.SCORE_COLUMNS:
        assert table[column].dtype.kind == "f"
        assert ((table[column] >= 0) & (table[column] <= 100)).all()
        assert (table[column] == table[column].round(2)).all()


def test_per_class_table_of_a_few_drawings_has_no_made_up_zeros():
    """Four drawings (1, 7, 7 and a 4 read as 9): a digit nobody drew has no recall or F1
    (NaN, shown as n/a), and the average over digits is over the digits drawn, as
    scikit-learn computes it for those labels."""
    from sklearn.metrics import precision_recall_fscore_support

    y, pred = np.array([1, 7, 7, 4]), np.array([1, 7, 7, 9])
    table = tables.per_class_table(nn.metrics.classification_report(y, pred))
    for digit in "0235689":
        assert np.isnan(table.loc[digit, "recall (%)"]) and np.isnan(table.loc[digit, "F1 (%)"])
    assert np.isnan(table.loc["0", "precision (%)"])
    assert table.loc["9", "precision (%)"] == 0.0          # answered once, wrongly: a real 0
    assert np.isnan(table.loc["4", "precision (%)"])       # drawn, never answered: 0/0
    assert table.loc["4", "recall (%)"] == 0.0 and table.loc["4", "F1 (%)"] == 0.0
    assert table.loc["7", "F1 (%)"] == 100.0
    p, r, f, _ = precision_recall_fscore_support(y, pred, labels=[1, 4, 7], average="macro",
                                                 zero_division=0)
    row = table.loc["average over digits"]
    assert [row["precision (%)"], row["recall (%)"], row["F1 (%)"]] == \
        [round(100 * v, 2) for v in (p, r, f)]
    assert table.loc["average over images", "images"] == "4"


def test_per_class_table_of_the_shipped_network(default_model):
    table = tables.per_class_table(default_model.metrics)
    assert table.shape == (12, 4)
    assert table.loc["average over images", "images"] == f"{default_model.metrics['n']:,}"
    assert sum(number(v) for v in table["images"][:10]) == default_model.metrics["n"]


def test_confused_pairs_table():
    metrics = report(wrong={(4, 9): 30, (7, 1): 12, (3, 5): 20, (2, 7): 5, (8, 3): 9,
                            (6, 0): 1})
    pairs = tables.confused_pairs_table(metrics["confusion_matrix"])
    assert list(pairs.columns) == ["true digit", "read as", "times"]
    assert pairs.values.tolist() == [[4, 9, 30], [3, 5, 20], [7, 1, 12], [8, 3, 9], [2, 7, 5]]
    assert len(tables.confused_pairs_table(metrics["confusion_matrix"], k=10)) == 6
    perfect = tables.confused_pairs_table(np.eye(10, dtype=int) * 5)
    assert perfect.empty and list(perfect.columns) == ["true digit", "read as", "times"]


@pytest.fixture(params=["shipped", "cnn"])
def network(request, default_model):
    if request.param == "shipped":
        return default_model
    return nn.Network(nn.cnn_spec((4, 6), 3, (12,), dropout=0.25), seed=0)


def test_architecture_table(network):
    table = tables.architecture_table(network)
    assert list(table.columns) == ["layer", "output", "parameters"]
    assert len(table) == len(network.layers)
    assert sum(number(v) for v in table["parameters"]) == network.n_parameters
    assert table["layer"].iloc[-1].endswith("(output: one score per digit)")
    assert table["output"].iloc[-1] == "10"
    for row, layer in zip(table.itertuples(), network.layers):
        assert bool(row.parameters) == bool(layer.parameters())
        if layer.parameters():
            n = sum(p.value.size for p in layer.parameters())
            assert row.parameters == f"{n:,}"


def test_architecture_table_names_the_layers():
    cnn = nn.Network(nn.cnn_spec((4, 6), 3, (12,), dropout=0.25), seed=0)
    table = tables.architecture_table(cnn)
    assert list(table["layer"]) == [
        "convolution 3x3", "relu (activation)", "max-pooling", "convolution 3x3",
        "relu (activation)", "max-pooling", "flatten", "dense", "relu (activation)",
        "dropout 0.25", "dense (output: one score per digit)"]
    assert list(table["output"][:3]) == ["4 x 28 x 28", "4 x 28 x 28", "4 x 14 x 14"]
    assert table["parameters"][0] == f"{4 * 9 + 4}"


@pytest.fixture(scope="module")
def trained(mnist):
    return nn.train(nn.Recipe(hidden=(8,), epochs=1, n_images=500, batch_size=50, lr=0.01),
                    mnist)


def test_recipe_table(trained):
    model = trained.copy()
    model.trained_on = {"n_train": 54000, "n_val": 6000}
    model.train_seconds = 1234.56
    table = tables.recipe_table(model)
    assert list(table.columns) == ["setting", "value"]
    rows = dict(zip(table["setting"], table["value"]))
    assert rows["Learning rate"] == "0.01" and rows["Hidden layers"] == "8"
    assert rows["Convolution channels"] == "none" and rows["Nesterov momentum"] == "off"
    assert rows["Training images"] == "500" and rows["Rotation"] == "0°"
    assert rows["Images trained on"] == "54,000"
    assert rows["Images held out to validate"] == "6,000"
    assert rows["Training time"] == "20.6 min (1,235 s)"
    labels = {s.label for s in SETTINGS.values()}
    assert all(name in labels for name in table["setting"][:len(model.recipe)]), \
        "every recipe setting under its label, not its code name"
    assert table["value"].map(type).eq(str).all()


def test_recipe_table_of_a_taught_network(trained):
    model = trained.copy()
    model.trained_on = {**model.trained_on, "fine_tuned_on": 20, "rehearsal_examples": 10000}
    rows = dict(zip(*tables.recipe_table(model).to_dict("list").values()))
    assert rows["Drawings it was taught"] == "20"
    assert rows["MNIST images rehearsed while taught"] == "10,000"


def test_recipe_table_of_the_shipped_network(default_model):
    table = tables.recipe_table(default_model)
    assert isinstance(table, pd.DataFrame) and len(table) > 3
    assert table["value"].map(type).eq(str).all()
    assert "Images trained on" in set(table["setting"])


def test_drawings_table_shows_thumbnails_labels_and_what_was_read():
    import base64

    from app_logic.store import Drawings
    drawings = Drawings(ids=np.array([7, 9]), labels=np.array([3, 5]),
                        images=np.zeros((2, 784), np.float32), predicted=np.array([3, -1]),
                        created=np.array([1.7e9, 1.7e9 + 60]), mine=np.array([True, True]))
    png = b"\x89PNG\r\n\x1a\nfake"
    table = tables.drawings_table(drawings, [1, 0], lambda i: png + bytes([i]))
    assert list(table.columns) == ["drawing", "label", "read as", "when", "id"]
    assert list(table["id"]) == [9, 7] and list(table["label"]) == ["5", "3"]
    assert list(table["read as"]) == ["—", "3"]
    assert base64.b64decode(table["drawing"][0].split(",", 1)[1]) == png + bytes([9])
    assert table["drawing"][0].startswith("data:image/png;base64,")
