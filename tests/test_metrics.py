"""Every metric against a hand-worked example."""

import math

import numpy as np
import pytest

from accel_signs.core.metrics import classification_report

# 7 classes. Classes 0-2 occur; 2 is never predicted; 3 is absent from the data but predicted
# once; 4-6 are neither in the data nor predicted.
LABELS = np.array([0, 0, 0, 1, 1, 2, 2])
TOPK = np.array(
    [
        [0, 1, 2, 3, 4],
        [0, 2, 1, 3, 4],
        [1, 2, 0, 3, 4],
        [1, 0, 2, 3, 4],
        [3, 4, 5, 6, 0],  # label 1 is not in the top 5
        [0, 2, 1, 3, 4],
        [1, 0, 3, 4, 2],
    ]
)
SIGNERS = np.array([0, 1, 0, 1, 0, 1, 0])


@pytest.fixture
def report():
    return classification_report(LABELS, TOPK, 7, SIGNERS, ["01", "02"], losses=np.array([1.0, 2, 3, 4, 5, 6, 7]))


def test_accuracies(report):
    assert report.num_samples == 7
    assert report.top1 == pytest.approx(3 / 7)
    assert report.top5 == pytest.approx(6 / 7) and report.top5_k == 5
    assert report.mean_loss == pytest.approx(4.0)


def test_confusion_and_counts(report):
    expected = np.zeros((7, 7), int)
    expected[0, 0], expected[0, 1] = 2, 1
    expected[1, 1], expected[1, 3] = 1, 1
    expected[2, 0], expected[2, 1] = 1, 1
    np.testing.assert_array_equal(report.confusion, expected)
    np.testing.assert_array_equal(report.support, [3, 2, 2, 0, 0, 0, 0])
    np.testing.assert_array_equal(report.predicted, [3, 3, 0, 1, 0, 0, 0])


def test_per_class(report):
    np.testing.assert_allclose(report.precision, [2 / 3, 1 / 3, 0, 0, 0, 0, 0])  # never predicted -> 0
    np.testing.assert_allclose(report.recall[:3], [2 / 3, 1 / 2, 0])
    assert np.isnan(report.recall[3:]).all()  # absent from the data -> undefined
    np.testing.assert_allclose(report.f1[:4], [2 / 3, 0.4, 0, 0])
    assert np.isnan(report.f1[4:]).all()


def test_macro_f1_counts_classes_in_data_or_predictions(report):
    # scikit-learn's f1_score(average="macro") over labels present in y_true or y_pred.
    assert report.macro_f1 == pytest.approx((2 / 3 + 0.4 + 0 + 0) / 4)


def test_per_signer(report):
    assert report.per_signer == {
        "01": {"accuracy": 0.25, "num_samples": 4},
        "02": {"accuracy": pytest.approx(2 / 3), "num_samples": 3},
    }


def test_top_confusions(report):
    assert report.top_confusions(3) == [(0, 1, 1), (1, 3, 1), (2, 0, 1)]
    assert len(report.top_confusions()) == 4


def test_top5_with_fewer_classes():
    r = classification_report(
        np.array([0, 1, 2]), np.array([[1, 0, 2], [1, 0, 2], [0, 1, 2]]), 3, np.zeros(3, int), ["01"]
    )
    assert r.top5_k == 3 and r.top5 == 1.0 and r.top1 == pytest.approx(1 / 3) and math.isnan(r.mean_loss)
