"""nn.metrics against scikit-learn's reference implementations."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn import metrics as skm

from nn.metrics import accuracy, classification_report, confusion_matrix, most_confused


def sklearn_report(y_true, y_pred, n_classes):
    labels = list(range(n_classes))
    per_class = skm.precision_recall_fscore_support(y_true, y_pred, labels=labels,
                                                    zero_division=0)
    averaged = {avg: skm.precision_recall_fscore_support(y_true, y_pred, labels=labels,
                                                         average=avg, zero_division=0)[:3]
                for avg in ("macro", "weighted")}
    return per_class, averaged


def assert_matches_sklearn(y_true, y_pred, n_classes):
    report = classification_report(y_true, y_pred, n_classes=n_classes)
    (precision, recall, f1, support), averaged = sklearn_report(y_true, y_pred, n_classes)
    assert report["n"] == len(y_true)
    assert report["accuracy"] == pytest.approx(skm.accuracy_score(y_true, y_pred), abs=1e-12)
    np.testing.assert_array_equal(
        report["confusion_matrix"],
        skm.confusion_matrix(y_true, y_pred, labels=list(range(n_classes))))
    pc = report["per_class"]
    np.testing.assert_allclose(pc["precision"], precision, atol=1e-12)
    np.testing.assert_allclose(pc["recall"], recall, atol=1e-12)
    np.testing.assert_allclose(pc["f1"], f1, atol=1e-12)
    np.testing.assert_array_equal(pc["support"], support)
    for avg, values in averaged.items():
        got = [report[avg][k] for k in ("precision", "recall", "f1")]
        np.testing.assert_allclose(got, values, atol=1e-12, err_msg=avg)
    return report


def noisy_predictions(rng, y_true, n_classes, error_rate):
    y_pred = y_true.copy()
    wrong = rng.random(len(y_true)) < error_rate
    y_pred[wrong] = rng.integers(0, n_classes, wrong.sum())
    return y_pred


@pytest.mark.parametrize("seed", range(5))
def test_report_matches_sklearn_on_random_labels(seed):
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, 10, 500)
    y_pred = noisy_predictions(rng, y_true, 10, error_rate=0.3)
    report = assert_matches_sklearn(y_true, y_pred, 10)
    assert accuracy(y_true, y_pred) == report["accuracy"]


def test_class_never_predicted_and_class_never_present():
    rng = np.random.default_rng(10)
    y_true = rng.integers(0, 9, 300)       # class 9 never occurs
    y_pred = noisy_predictions(rng, y_true, 10, 0.4)
    y_pred[y_pred == 3] = 4                # class 3 is never predicted
    y_pred[:5] = 9                         # ...and class 9 is predicted though absent
    report = assert_matches_sklearn(y_true, y_pred, 10)
    pc = report["per_class"]
    assert pc["precision"][3] == 0 and pc["recall"][3] == 0 and pc["f1"][3] == 0
    assert pc["support"][9] == 0 and pc["recall"][9] == 0 and pc["precision"][9] == 0
    # absent classes count in the macro average but weigh nothing in the weighted one
    assert report["macro"]["recall"] == pytest.approx(np.mean(pc["recall"]))
    assert report["weighted"]["recall"] == pytest.approx(report["accuracy"])


def test_perfect_and_hand_checked_small_case():
    # true:  0 0 1 1 2    pred: 0 1 1 1 0
    # cm = [[1,1,0],[0,2,0],[1,0,0]]; precision = [1/2, 2/3, 0]; recall = [1/2, 1, 0]
    report = classification_report([0, 0, 1, 1, 2], [0, 1, 1, 1, 0], n_classes=3)
    assert report["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    np.testing.assert_allclose(report["per_class"]["precision"], [0.5, 2 / 3, 0])
    np.testing.assert_allclose(report["per_class"]["recall"], [0.5, 1, 0])
    np.testing.assert_allclose(report["per_class"]["f1"], [0.5, 0.8, 0])
    assert report["accuracy"] == 0.6 and report["per_class"]["support"] == [2, 2, 1]
    perfect = classification_report(np.arange(10), np.arange(10))
    assert perfect["accuracy"] == 1.0 and perfect["macro"]["f1"] == 1.0


def test_report_is_json_friendly():
    import json

    report = classification_report(np.array([1, 2, 2]), np.array([1, 2, 0]), n_classes=3)
    assert json.loads(json.dumps(report, allow_nan=False)) == report
    assert isinstance(report["n"], int) and isinstance(report["confusion_matrix"][0][0], int)


labels_and_classes = st.integers(2, 12).flatmap(
    lambda k: st.tuples(
        st.just(k),
        st.lists(st.tuples(st.integers(0, k - 1), st.integers(0, k - 1)), min_size=1,
                 max_size=200)))


@settings(max_examples=60, deadline=None)
@given(labels_and_classes)
def test_report_matches_sklearn_property(case):
    n_classes, pairs = case
    y_true, y_pred = (np.array(col, dtype=np.int64) for col in zip(*pairs))
    report = assert_matches_sklearn(y_true, y_pred, n_classes)
    cm = np.array(report["confusion_matrix"])
    assert cm.sum() == len(y_true) and np.trace(cm) == (y_true == y_pred).sum()


def test_confusion_matrix_rows_are_true_columns_predicted():
    cm = confusion_matrix([2, 2, 2, 0], [1, 1, 2, 0], n_classes=3)
    assert cm.tolist() == [[1, 0, 0], [0, 0, 0], [0, 2, 1]]
    assert cm.dtype.kind == "i"


def test_most_confused_ordering():
    cm = np.zeros((4, 4), dtype=int)
    np.fill_diagonal(cm, 1000)        # the diagonal is never a confusion
    cm[1, 2], cm[3, 0], cm[0, 3], cm[2, 1], cm[0, 1] = 9, 30, 4, 12, 1
    assert most_confused(cm, k=3) == [(3, 0, 30), (2, 1, 12), (1, 2, 9)]
    assert most_confused(cm, k=10) == [(3, 0, 30), (2, 1, 12), (1, 2, 9), (0, 3, 4),
                                       (0, 1, 1)]  # zero entries are left out
    assert most_confused(np.eye(3, dtype=int) * 5) == []


def test_most_confused_on_random_matrix_returns_the_largest():
    rng = np.random.default_rng(3)
    cm = rng.integers(0, 50, (10, 10))
    top = most_confused(cm, k=5)
    counts = [c for _, _, c in top]
    assert len(top) == 5 and counts == sorted(counts, reverse=True)
    assert all(cm[i, j] == c and i != j for i, j, c in top)
    off = cm[~np.eye(10, dtype=bool)]
    assert counts[-1] >= np.sort(off)[-5]


BAD_INPUTS = [
    ([0, 1, 2], [0, 1]),                          # lengths differ
    ([[0, 1], [1, 0]], [[0, 1], [1, 0]]),         # 2-D
    (3, 3),                                       # scalars
    ([0, 10], [0, 1]),                            # label out of range in y_true
    ([0, 1], [0, -1]),                            # negative label in y_pred
    ([0.5, 1.0], [0, 1]),                         # not whole numbers
    ([0, 1], [0, np.nan]),
    (["a", "b"], ["a", "b"]),
]


@pytest.mark.parametrize("y_true,y_pred", BAD_INPUTS)
def test_bad_inputs_raise_value_error(y_true, y_pred):
    with pytest.raises(ValueError):
        classification_report(y_true, y_pred)
    with pytest.raises(ValueError):
        confusion_matrix(y_true, y_pred)


def test_accuracy_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="equal length"):
        accuracy([0, 1, 2], [0, 1])
    with pytest.raises(ValueError):
        accuracy([0.5], [0])
    assert accuracy(np.array([1.0, 2.0]), np.array([1, 3])) == 0.5  # whole floats are fine
