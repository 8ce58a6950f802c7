"""URPC: uncertainty rectified pyramid consistency (Luo et al., MICCAI 2021), as SSL4MIS trains it.

Network: a pyramid of S = 4 outputs (:mod:`networks.urpc`): on ACDC the 2D
U-Net's main head and three perturbed auxiliary heads; on LA the 3D U-Net's
four deep-supervision heads. p_s = softmax of output s. One iteration:

    L_sup  = (1/8) * sum_s [CE(z_s,L, y) + Dice(p_s,L, y)]
    L_cons = (1/S) * sum_s L_s  over the unlabeled items (:func:`rectified_consistency`)
    L      = L_sup + w(t) * L_cons

with Dice the C-class mean (background included, 1e-5 smoothing, SSL4MIS
``DiceLoss``), p_bar = mean_s p_s (not detached),
``D_s = sum_c p_bar_c (log p_bar_c - log p_s,c)`` (KL(p_bar || p_s)),
``v_s = exp(-D_s)`` and
``L_s = mean((p_bar - p_s)^2 * v_s) / (mean(v_s) + 1e-8) + mean(D_s)``.

``w(t) = 0.1 * sigmoid_rampup(t // 150, L)``: ACDC L = 200 (public 2D code);
LA L = 40 (no public LA code; the LA ramp of the other baselines, README
"Baselines"). Tested on the first output.
"""
from __future__ import annotations
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from methods.common import Baseline, SQ_DICE_SMOOTH
from utils.losses import DiceLoss, cross_entropy_loss


def rectified_consistency(probs: Sequence[torch.Tensor]) -> torch.Tensor:
    """URPC's uncertainty-rectified consistency of S softmax maps, each (B, C, *S).

    Returns ``(1/S) sum_s [mean((p_bar - p_s)^2 v_s) / (mean(v_s) + 1e-8) + mean(D_s)]``
    with ``D_s = sum_c p_bar_c (log p_bar_c - log p_s,c)`` (B, 1, *S) and ``v_s = exp(-D_s)``.
    ``D_s`` uses ``KLDivLoss(reduction='none')`` semantics on ``log p_s``, as released.
    """
    if len(probs) < 2:
        raise ValueError(f"rectified_consistency needs at least 2 outputs, got {len(probs)}")
    mean = torch.stack(list(probs), 0).mean(0)
    total = mean.new_zeros(())
    for p in probs:
        variance = torch.sum(F.kl_div(torch.log(p), mean, reduction="none"), dim=1, keepdim=True)
        exp_variance = torch.exp(-variance)
        dist = (mean - p) ** 2
        total = total + torch.mean(dist * exp_variance) / (torch.mean(exp_variance) + 1e-8) + torch.mean(variance)
    return total / len(probs)


class URPC(Baseline):
    """URPC on LA (3D U-Net with deep supervision) or ACDC (2D U-Net with perturbed aux heads)."""

    key = "urpc"
    name = "URPC"
    cuda_nondeterministic = ("nll_loss2d_forward (the supervised cross-entropy, which is trained)",)
    log_keys = ("loss", "loss_ce", "loss_dice", "loss_consistency", "consistency_weight")

    def step(self, image: torch.Tensor, label: torch.Tensor, iter_num: int) -> dict[str, torch.Tensor]:
        """Losses of one iteration; image (B, 1, *S), label (B, *S), labeled items first."""
        self.check_batch(image, label)
        lbs = self.labeled_bs
        self.model.train()
        outputs = self.model(image)
        probs = [F.softmax(o, dim=1) for o in outputs]
        labels = label[:lbs]
        dice = DiceLoss(self.num_classes, smooth=SQ_DICE_SMOOTH)
        out: dict[str, torch.Tensor] = {}
        out["loss_ce"] = sum(cross_entropy_loss(o[:lbs], labels) for o in outputs) / len(outputs)
        out["loss_dice"] = sum(dice(p[:lbs], labels) for p in probs) / len(outputs)
        supervised = (out["loss_ce"] + out["loss_dice"]) / 2  # = (1/8) sum of the 4 CE and 4 Dice terms
        out["loss_consistency"] = rectified_consistency([p[lbs:] for p in probs])
        w = self.weight(iter_num)
        out["loss"] = supervised + w * out["loss_consistency"]
        out["consistency_weight"] = torch.tensor(w)
        out["probs"] = probs[0].detach()
        return out
