"""DTC: dual-task consistency (Luo et al., AAAI 2021), as its public code trains it.

Network: V-Net / U-Net with a segmentation head and a tanh SDF head (C
channels each, README "Baselines"). One iteration:

    L = Dice(p_L, y) + beta * MSE(s_L, SDF_gt) + w(t) * mean((sigmoid(-1500 s) - p)^2)

* p = softmax of the segmentation logits, s the SDF prediction, SDF_gt of
  :mod:`methods.sdf`, beta = 0.3;
* the dual-task consistency runs over the WHOLE batch (labeled and unlabeled)
  and every channel, with nothing detached (:func:`dual_task_consistency`);
* cross-entropy of the segmentation is logged, not added (released);
* ``w(t) = lambda * sigmoid_rampup(t // 150, L)``: LA lambda 1.0, L 40 (public
  3D code); ACDC lambda 0.1, L 200 (the public 2D port, SSL4MIS
  ``train_dtc_sdf_soft_sig_2D.py``).

Dice: LA the foreground channel, ACDC the 4-class mean (1e-5 smoothing).
Tested on the segmentation head (the first output).

``--baseline_heads released`` (LA): the public code's 1-channel heads
(:class:`methods.common.SDFBaseline`): p = sigmoid(z) in the Dice and in the
consistency, the SDF of label > 0, BCE logged; weights and ramp unchanged.
"""
from __future__ import annotations
from typing import Any

import torch
from torch import nn

from methods.common import PROJECT_HEADS, SDFBaseline
from methods.sdf import DTC_K, sdf_to_mask


def dual_task_consistency(sdf: torch.Tensor, probs: torch.Tensor, k: float = DTC_K) -> torch.Tensor:
    """``mean((sigmoid(-k * sdf) - probs)^2)`` over all elements; sdf and probs (B, C, *S)."""
    if sdf.shape != probs.shape:
        raise ValueError(f"dual_task_consistency: sdf {tuple(sdf.shape)} and probs {tuple(probs.shape)} differ")
    return torch.mean((sdf_to_mask(sdf, k) - probs) ** 2)


class DTC(SDFBaseline):
    """DTC on LA (3D) or ACDC (2D); ``model(x)`` returns ``(logits, sdf)``.

    Args:
        dataset, model, num_classes, labeled_bs, consistency, consistency_rampup:
            see :class:`methods.common.Baseline`.
        beta: weight of the SDF loss (0.3).
        heads: ``"project"`` (C-channel heads) or ``"released"`` (LA: the public 1-channel heads;
            the consistency then compares sigmoid(-1500 s) with sigmoid(z), as released).
    """

    key = "dtc"
    name = "DTC"
    log_keys = ("loss", "loss_dice", "loss_sdf", "loss_ce", "loss_consistency", "consistency_weight")

    def __init__(self, dataset: Any, model: nn.Module, num_classes: int, labeled_bs: int,
                 consistency: float | None = None, consistency_rampup: float | None = None,
                 beta: float = 0.3, heads: str = PROJECT_HEADS) -> None:
        super().__init__(dataset, model, num_classes, labeled_bs, consistency, consistency_rampup, heads)
        self.beta = beta

    def step(self, image: torch.Tensor, label: torch.Tensor, iter_num: int) -> dict[str, torch.Tensor]:
        """Losses of one iteration; image (B, 1, *S), label (B, *S), labeled items first."""
        self.check_batch(image, label)
        lbs = self.labeled_bs
        self.model.train()
        logits, sdf = self.model(image)
        probs, out = self.supervised_terms(logits, sdf, label[:lbs])
        out["loss_consistency"] = dual_task_consistency(sdf, probs)
        w = self.weight(iter_num)
        out["loss"] = out["loss_dice"] + self.beta * out["loss_sdf"] + w * out["loss_consistency"]
        out["consistency_weight"] = torch.tensor(w)
        out["probs"] = self.snapshot_probs(probs)
        return out
