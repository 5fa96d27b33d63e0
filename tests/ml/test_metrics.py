import math

import numpy as np
import pytest

from tradetree.ml.metrics import mcc, precision_at_thresholds, r2_score, roc_auc, vol_direction_accuracy


def test_r2_reference_points():
    y = np.array([1.0, 2.0, 3.0, 4.0])
    assert r2_score(y, y) == 1.0
    assert r2_score(y, np.full(4, y.mean())) == 0.0
    assert r2_score(y, y[::-1]) < 0
    assert math.isnan(r2_score(np.ones(3), np.ones(3)))


def test_mcc_known_values():
    assert mcc(np.array([1, 0, 1, 0]), np.array([1, 0, 1, 0])) == 1.0
    assert mcc(np.array([1, 0, 1, 0]), np.array([0, 1, 0, 1])) == -1.0
    assert mcc(np.array([1, 0, 1, 0]), np.ones(4)) == 0.0
    # tp=2 fp=1 fn=1 tn=1 -> (2-1)/sqrt(3*3*2*2)
    assert mcc(np.array([1, 1, 1, 0, 0]), np.array([1, 1, 0, 1, 0])) == pytest.approx(1 / 6)


def test_auc_and_vol_direction_accuracy():
    assert roc_auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.8, 0.9])) == 1.0
    assert roc_auc(np.array([0, 1]), np.array([0.5, 0.5])) == 0.5
    y, current = np.array([2.0, 0.0, 1.0]), np.array([1.0, 1.0, 1.0])
    # third row has no change and is left out; first called right, second wrong
    assert vol_direction_accuracy(y, np.array([1.5, 1.5, 3.0]), current) == 0.5


def test_precision_at_thresholds_counts_each_side():
    y = np.array([1, 1, 0, 0, 1, 0])
    p = np.array([0.9, 0.6, 0.58, 0.1, 0.3, 0.45])
    rows = {r["threshold"]: r for r in precision_at_thresholds(y, p, (0.5, 0.55, 0.8))}
    half = rows[0.5]
    assert half["long_coverage"] + half["short_coverage"] == 1.0
    assert half["long_precision"] == pytest.approx(2 / 3)  # 0.9 up, 0.6 up, 0.58 down
    assert half["short_precision"] == pytest.approx(2 / 3)  # 0.1 down, 0.45 down, 0.3 up
    assert rows[0.8]["long_precision"] == 1.0 and rows[0.8]["long_recall"] == pytest.approx(1 / 3)
    assert rows[0.8]["short_precision"] == 1.0 and rows[0.8]["short_coverage"] == pytest.approx(1 / 6)
