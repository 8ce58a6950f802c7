"""Metrics: closed-form cases, the empty-prediction rule under both policies."""
from __future__ import annotations
import math

import numpy as np
import pytest
import torch
from medpy import metric

from utils.metrics import calculate_dice_hd95, calculate_metric_percase, dice_coefficient, summarize


def _cube(shape, start, size):
    mask = np.zeros(shape, dtype=np.uint8)
    sl = tuple(slice(s, s + size) for s in start)
    mask[sl] = 1
    return mask


def test_overlapping_cubes_dice_jaccard_exact():
    # two 4^3 cubes shifted by 2 along x: overlap 2*4*4 = 32 voxels of 64 each
    pred = _cube((10, 10, 10), (0, 0, 0), 4)
    gt = _cube((10, 10, 10), (2, 0, 0), 4)
    dice, jac, hd95, asd = calculate_metric_percase(pred, gt)
    assert dice == pytest.approx(2 * 32 / (64 + 64))
    assert jac == pytest.approx(32 / 96)
    assert hd95 == pytest.approx(metric.binary.hd95(pred, gt))
    assert asd == pytest.approx(metric.binary.asd(pred, gt))
    assert hd95 > 0 and asd > 0


def test_identical_masks_and_single_voxel_distance():
    gt = _cube((8, 8, 8), (2, 2, 2), 3)
    assert calculate_metric_percase(gt, gt) == pytest.approx((1.0, 1.0, 0.0, 0.0))
    a = np.zeros((9, 9, 9), bool)
    b = np.zeros((9, 9, 9), bool)
    a[1, 4, 4] = True
    b[4, 4, 4] = True  # 3 voxels apart along x
    dice, jac, hd95, asd = calculate_metric_percase(a, b)
    assert (dice, jac) == (0.0, 0.0)
    assert hd95 == pytest.approx(3.0) and asd == pytest.approx(3.0)


@pytest.mark.parametrize(
    "policy, gt_empty, expected",
    [
        ("reference", False, (0.0, 0.0, 0.0, 0.0)),
        ("reference", True, (0.0, 0.0, 0.0, 0.0)),
        ("nan", False, (0.0, 0.0, math.nan, math.nan)),
        ("nan", True, (math.nan, math.nan, math.nan, math.nan)),
    ],
)
def test_empty_prediction_rule(policy, gt_empty, expected):
    pred = np.zeros((6, 6, 6), np.uint8)
    gt = np.zeros_like(pred) if gt_empty else _cube(pred.shape, (1, 1, 1), 2)
    got = calculate_metric_percase(pred, gt, policy=policy)
    np.testing.assert_array_equal(np.array(got), np.array(expected))


def test_empty_ground_truth_gives_nan_distances_not_a_crash():
    pred = _cube((6, 6, 6), (1, 1, 1), 2)
    got = calculate_metric_percase(pred, np.zeros_like(pred))
    assert got[:2] == (0.0, 0.0) and math.isnan(got[2]) and math.isnan(got[3])
    assert calculate_dice_hd95(pred, np.zeros_like(pred))[0] == 0.0


def test_bad_policy_and_shape_mismatch():
    pred = np.ones((3, 3, 3))
    with pytest.raises(ValueError, match="--empty_policy"):
        calculate_metric_percase(pred, pred, policy="zero")
    with pytest.raises(ValueError, match="shape"):
        calculate_metric_percase(pred, np.ones((3, 3, 4)))


def test_dice_hd95_matches_val2d_rule():
    pred = _cube((10, 10, 10), (0, 0, 0), 4)
    gt = _cube((10, 10, 10), (2, 0, 0), 4)
    assert calculate_dice_hd95(pred, gt) == pytest.approx((0.5, metric.binary.hd95(pred, gt)))
    assert calculate_dice_hd95(np.zeros_like(pred), gt) == (0.0, 0.0)


def test_fast_dice_equals_medpy_numpy_and_torch():
    rng = np.random.default_rng(0)
    pred = rng.random((7, 8, 9)) > 0.6
    gt = rng.random((7, 8, 9)) > 0.5
    expected = metric.binary.dc(pred, gt)
    assert dice_coefficient(pred, gt) == pytest.approx(expected)
    assert dice_coefficient(torch.from_numpy(pred), torch.from_numpy(gt.astype(np.uint8))) == pytest.approx(expected)
    assert dice_coefficient(np.zeros_like(pred), gt) == 0.0  # reference validation rule


def test_summarize_ignores_nan():
    table = np.array([[1.0, 2.0], [3.0, np.nan], [5.0, 4.0]])
    mean, std, counted = summarize(table)
    np.testing.assert_allclose(mean, [3.0, 3.0])
    np.testing.assert_allclose(std, [np.std([1, 3, 5]), 1.0])
    np.testing.assert_array_equal(counted, [3, 2])
