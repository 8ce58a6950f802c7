"""Segmentation metrics for the LA and ACDC test scripts (medpy, in voxels).

Per case the released SS-Net code reports Dice, Jaccard, the 95th percentile
Hausdorff distance (95HD) and the average surface distance (ASD), all from
``medpy.metric.binary`` without voxel spacing, so distances are in voxels.

Empty-prediction rule (``policy``):

* ``"reference"`` (default, the released behaviour of ``test_LA.py`` /
  ``test_3d_patch.py`` and ``test_ACDC.py``): a prediction without any
  foreground voxel scores ``(0, 0, 0, 0)``. Note that 95HD = ASD = 0 is the
  *best* possible distance, so an empty prediction improves the mean distances;
  keep this policy to compare with the paper's tables.
* ``"nan"``: the distances of an empty prediction are undefined and returned as
  NaN (Dice = Jaccard = 0 when the ground truth is not empty). When both masks
  are empty all four are NaN (there is nothing to segment). Report such means
  with ``np.nanmean`` and state how many cases were excluded.

A non-empty prediction against an empty ground truth has no distance either;
the released code would stop there with medpy's ``RuntimeError``. Both policies
return ``(0, 0, NaN, NaN)`` for it and log a warning instead.
"""
from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

EMPTY_POLICIES = ("reference", "nan")


def _check_policy(policy: str) -> None:
    if policy not in EMPTY_POLICIES:
        raise ValueError(
            f"Unknown empty-prediction policy {policy!r}; choose one of {EMPTY_POLICIES} "
            "(flag --empty_policy)."
        )


def _as_binary(array: Any) -> np.ndarray:
    arr = np.asarray(array)
    if arr.dtype != np.bool_:
        arr = arr > 0
    return arr


def _check_pair(pred: Any, gt: Any) -> tuple[np.ndarray, np.ndarray]:
    pred_b = _as_binary(pred)
    gt_b = _as_binary(gt)
    if pred_b.shape != gt_b.shape:
        raise ValueError(
            f"Prediction shape {pred_b.shape} differs from ground-truth shape {gt_b.shape}; "
            "metrics need masks of the same shape (check the crop/zoom back to the label's size)."
        )
    return pred_b, gt_b


def calculate_metric_percase(
    pred: np.ndarray, gt: np.ndarray, policy: str = "reference"
) -> tuple[float, float, float, float]:
    """Dice, Jaccard, 95HD and ASD of one binary mask pair (medpy, voxel units).

    Dice = 2|P & G| / (|P| + |G|), Jaccard = |P & G| / |P | G|; 95HD and ASD are
    medpy's surface distances (no spacing). Any non-zero voxel is foreground.

    Args:
        pred: predicted mask, any shape, e.g. (W, H, D).
        gt: ground-truth mask of the same shape.
        policy: ``"reference"`` (empty prediction -> 0, 0, 0, 0, released
            behaviour) or ``"nan"`` (undefined distances -> NaN); see the module
            docstring.

    Returns:
        ``(dice, jaccard, hd95, asd)`` as Python floats.

    Raises:
        ValueError: unknown policy or shape mismatch.
    """
    _check_policy(policy)
    pred_b, gt_b = _check_pair(pred, gt)
    pred_empty = not pred_b.any()
    gt_empty = not gt_b.any()
    if pred_empty:
        if policy == "reference":
            return 0.0, 0.0, 0.0, 0.0
        if gt_empty:
            return math.nan, math.nan, math.nan, math.nan
        return 0.0, 0.0, math.nan, math.nan
    if gt_empty:
        logger.warning(
            "Non-empty prediction against an empty ground truth: Dice = Jaccard = 0, "
            "95HD and ASD are undefined (NaN). The released code would stop with medpy's "
            "RuntimeError here."
        )
        return 0.0, 0.0, math.nan, math.nan
    from medpy import metric  # here, not at the top: scipy.stats costs every script half a second

    dice = float(metric.binary.dc(pred_b, gt_b))
    jaccard = float(metric.binary.jc(pred_b, gt_b))
    hd95 = float(metric.binary.hd95(pred_b, gt_b))
    asd = float(metric.binary.asd(pred_b, gt_b))
    return dice, jaccard, hd95, asd


def calculate_dice_hd95(pred: np.ndarray, gt: np.ndarray) -> tuple[float, float]:
    """Dice and 95HD as the reference's 2D validation (``val_2d``) computes them.

    An empty prediction scores ``(0, 0)`` (released behaviour). A non-empty
    prediction against an empty ground truth gives ``(0, NaN)`` (the released
    code would raise there).

    Args:
        pred: predicted mask, e.g. (S, H, W).
        gt: ground-truth mask of the same shape.

    Returns:
        ``(dice, hd95)`` as Python floats.
    """
    pred_b, gt_b = _check_pair(pred, gt)
    if not pred_b.any():
        return 0.0, 0.0
    if not gt_b.any():
        logger.warning("Non-empty prediction against an empty ground truth: 95HD is NaN.")
        return 0.0, math.nan
    from medpy import metric

    return float(metric.binary.dc(pred_b, gt_b)), float(metric.binary.hd95(pred_b, gt_b))


def dice_coefficient(pred: Any, gt: Any) -> float:
    """Fast binary Dice for validation: 2|P & G| / (|P| + |G|).

    Works on numpy arrays and on torch tensors (computed where the tensors
    live; one scalar comes back). Follows the reference validation rule: an
    empty prediction scores 0 (``var_all_case_LA``); otherwise the value equals
    ``medpy.metric.binary.dc``.

    Args:
        pred: predicted mask, any shape; non-zero is foreground.
        gt: ground-truth mask of the same shape.

    Returns:
        The Dice coefficient as a Python float.
    """
    if tuple(pred.shape) != tuple(gt.shape):
        raise ValueError(f"Prediction shape {tuple(pred.shape)} differs from ground-truth shape {tuple(gt.shape)}.")
    pred_b = pred != 0
    gt_b = gt != 0
    counts = [pred_b.sum(), gt_b.sum(), (pred_b & gt_b).sum()]
    if not isinstance(pred_b, np.ndarray):  # torch: a single device-to-host transfer
        import torch

        counts = torch.stack(counts).tolist()
    size_p, size_g, inter = (float(c) for c in counts)
    if size_p == 0:
        return 0.0
    return 2.0 * inter / (size_p + size_g)


def summarize(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Column-wise mean and standard deviation over cases, ignoring NaN.

    mean_j = (1/n_j) sum_i v_ij, std_j = sqrt((1/n_j) sum_i (v_ij - mean_j)^2)
    (population std, ddof = 0) over the n_j finite values of column j. With the
    ``"reference"`` policy no value is NaN (unless a ground truth is empty), so
    the mean is the paper's plain mean over cases.

    Args:
        values: (N, K) metric table, one row per case.

    Returns:
        ``(mean, std, counted)``, each (K,): NaN where a column has no finite
        value; ``counted`` holds n_j.
    """
    table = np.asarray(values, dtype=np.float64)
    if table.ndim != 2:
        raise ValueError(f"summarize takes an (N, K) table, got shape {table.shape}.")
    finite = np.isfinite(table)
    counted = finite.sum(axis=0)
    mean = np.full(table.shape[1], np.nan)
    std = np.full(table.shape[1], np.nan)
    for j in np.flatnonzero(counted):
        col = table[finite[:, j], j]
        mean[j] = col.mean()
        std[j] = col.std()
    return mean, std, counted
