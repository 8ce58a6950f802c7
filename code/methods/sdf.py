"""Signed-distance maps for SASSNet and DTC.

* :func:`normalized_sdf` / :func:`sdf_target`: the ground truth of the SDF
  head, as the public SASSNet / DTC code computes it (``compute_sdf``, on the
  CPU, without gradient): for a binary mask P,

      SDF = minmax(EDT(not P)) - minmax(EDT(P)),   SDF = 0 on P's inner boundary,

  with ``minmax(a) = (a - min a) / (max a - min a)`` over the whole patch and
  EDT the Euclidean distance transform (distance of a voxel to the nearest
  voxel outside its set). Range [-1, 1]: negative inside, positive outside,
  each side scaled by its own maximum.
* :func:`sdf_to_mask`: DTC's transform of an SDF into a soft mask,
  ``sigmoid(-k * s)`` with k = 1500 (approximately 1 inside, 0 outside).

Channel convention (README "Baselines"): with a C-channel SDF head, channel c
is the SDF of ``label == c`` (background included), as in the public 2D DTC
design (SSL4MIS ``compute_sdf_multi``); with one channel, the SDF of
``label > 0`` (the public 3D code). A mask that is empty, or fills the whole
patch, gets an all-zero SDF (the public code leaves empty masks at 0; a full
mask would divide by zero there).
"""
from __future__ import annotations
import numpy as np
import torch
from scipy.ndimage import distance_transform_edt
from skimage.segmentation import find_boundaries

#: DTC's steepness k of sigmoid(-k * s)
DTC_K = 1500.0


def normalized_sdf(mask: np.ndarray) -> np.ndarray:
    """Normalised signed distance map of one binary mask (any shape, e.g. (H, W, D)); float64."""
    posmask = np.asarray(mask).astype(bool)
    sdf = np.zeros(posmask.shape, dtype=np.float64)
    if not posmask.any() or posmask.all():
        return sdf
    negmask = ~posmask
    posdis = distance_transform_edt(posmask)
    negdis = distance_transform_edt(negmask)
    sdf = ((negdis - negdis.min()) / (negdis.max() - negdis.min())
           - (posdis - posdis.min()) / (posdis.max() - posdis.min()))
    sdf[find_boundaries(posmask, mode="inner")] = 0
    return sdf


def compute_sdf(labels: np.ndarray, num_channels: int) -> np.ndarray:
    """SDF ground truth of a batch: (B, *S) integer labels -> (B, num_channels, *S) float32.

    ``num_channels == 1``: the SDF of ``label > 0``; otherwise channel c is the
    SDF of ``label == c``.
    """
    labels = np.asarray(labels)
    if num_channels < 1:
        raise ValueError(f"compute_sdf: num_channels must be >= 1, got {num_channels}")
    out = np.zeros((labels.shape[0], num_channels) + labels.shape[1:], dtype=np.float32)
    for b in range(labels.shape[0]):
        for c in range(num_channels):
            mask = labels[b] > 0 if num_channels == 1 else labels[b] == c
            out[b, c] = normalized_sdf(mask)
    return out


def sdf_target(labels: torch.Tensor, num_channels: int) -> torch.Tensor:
    """:func:`compute_sdf` of a label tensor (B, *S), returned on the labels' device (float32)."""
    with torch.no_grad():
        return torch.from_numpy(compute_sdf(labels.detach().cpu().numpy(), num_channels)).to(labels.device)


def sdf_to_mask(sdf: torch.Tensor, k: float = DTC_K) -> torch.Tensor:
    """DTC's differentiable transform ``sigmoid(-k * sdf)`` (same shape; ~1 inside, ~0 outside)."""
    return torch.sigmoid(-k * sdf)
