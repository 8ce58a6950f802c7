"""MC-Net: mutual consistency (Wu et al., MICCAI 2021), v1 (two decoders), as its public code trains it.

Network (:mod:`networks.mcnet`): a shared encoder and two decoders that differ
in upsampling; p_k = softmax of decoder k over the whole batch. One iteration:

    L = lambda_seg * sum_k Dice_k + w(t) * sum_{i != j} mean((p_i - sharpen(p_j))^2)

* ``sharpen(p) = p^(1/T) / (p^(1/T) + (1 - p)^(1/T))`` element-wise per
  channel (T = 0.1; for C > 2 the result is not renormalised, as released);
* the consistency runs over ALL items (labeled too) and channels, with no
  detach: gradients flow through both p_i and sharpen(p_j), as released;
* LA: Dice = ``1 - (2 sum(p1 g) + 1e-8) / (sum(p1) + sum(g) + 1e-8)`` on the
  foreground channel, lambda_seg = 0.5, lambda = 1.0, L = 40;
* ACDC: Dice = the public MC-Net 2D form ``1 - sum(p g) / (sum(p^2) + sum(g^2) + 1e-10)``,
  4-class mean, WITHOUT the factor 2 (released quirk, minimum 0.5;
  ``dice="factor2"`` gives the usual form), lambda_seg = 1, lambda = 0.1, L = 200;
* cross-entropy is logged, not added; w(t) uses the iteration count after the
  increment (public code).

Tested on decoder 1 only (the first output).
"""
from __future__ import annotations
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from datasets import DiceForm
from methods.base import RunConfig
from methods.common import Baseline, BaselineOptions
from utils.losses import binary_dice_loss, logged_cross_entropy, one_hot, soft_dice_loss

DICE_FORMS = ("released", "factor2")


def sharpen(probs: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """``p^(1/T) / (p^(1/T) + (1 - p)^(1/T))`` element-wise (any shape)."""
    if temperature <= 0:
        raise ValueError(f"sharpen: temperature must be > 0, got {temperature}")
    inv = 1.0 / temperature
    powered = probs ** inv
    return powered / (powered + (1 - probs) ** inv)


def mutual_consistency(probs: list, temperature: float = 0.1) -> torch.Tensor:
    """``sum_{i != j} mean((p_i - sharpen(p_j))^2)`` over K >= 2 probability maps (B, C, *S)."""
    if len(probs) < 2:
        raise ValueError(f"mutual_consistency needs at least 2 decoders, got {len(probs)}")
    sharpened = [sharpen(p, temperature) for p in probs]
    total = probs[0].new_zeros(())
    for i, p in enumerate(probs):
        for j, s in enumerate(sharpened):
            if i != j:
                total = total + torch.mean((p - s) ** 2)
    return total


def mcnet2d_dice_loss(probs: torch.Tensor, labels: torch.Tensor, form: str = "released",
                      smooth: float = 1e-10) -> torch.Tensor:
    """MC-Net's 2D Dice, mean over the C classes of probs (B, C, H, W) vs one-hot labels (B, H, W).

    ``released``: ``1 - sum(p g) / (sum(p^2) + sum(g^2) + s)`` (no factor 2);
    ``factor2``: ``1 - (2 sum(p g) + s) / (sum(p^2) + sum(g^2) + s)``.
    """
    if form not in DICE_FORMS:
        raise ValueError(f"mcnet2d_dice_loss: form must be one of {DICE_FORMS}, got {form!r}")
    target = one_hot(labels, probs.shape[1])
    if form == "factor2":
        return soft_dice_loss(probs, target, smooth=smooth)
    p, g = probs.float(), target
    loss = p.new_zeros(())
    for c in range(p.shape[1]):
        loss = loss + 1 - torch.sum(p[:, c] * g[:, c]) / (torch.sum(p[:, c] ** 2) + torch.sum(g[:, c] ** 2) + smooth)
    return loss / p.shape[1]


@dataclass(frozen=True)
class MCNetOptions(BaselineOptions):
    """MC-Net's: ``--temperature`` and ``--mcnet_dice``."""

    temperature: float
    mcnet_dice: str


class MCNet(Baseline):
    """MC-Net (v1) on LA (3D) or ACDC (2D); ``model(x)`` returns ``(logits_decoder1, logits_decoder2)``.

    Args:
        dataset, model, num_classes, labeled_bs, consistency, consistency_rampup:
            see :class:`methods.common.Baseline`.
        temperature: sharpening temperature T (0.1).
        dice: ACDC Dice form, ``"released"`` (no factor 2) or ``"factor2"``.
    """

    Options = MCNetOptions

    key = "mcnet"
    name = "MCNet"
    log_keys = ("loss", "loss_dice", "loss_ce", "loss_consistency", "consistency_weight")
    RAMP_AFTER_INCREMENT = True

    def __init__(self, dataset: Any, model: nn.Module, num_classes: int, labeled_bs: int,
                 consistency: float | None = None, consistency_rampup: float | None = None,
                 temperature: float = 0.1, dice: str = "released") -> None:
        super().__init__(dataset, model, num_classes, labeled_bs, consistency, consistency_rampup)
        if dice not in DICE_FORMS:
            raise ValueError(f"MCNet: dice must be one of {DICE_FORMS}, got {dice!r}")
        if temperature <= 0:
            raise ValueError(f"MCNet: temperature must be > 0, got {temperature}")
        self.temperature = temperature
        self.dice = dice
        #: lambda_seg of the supervised Dice (public defaults: 0.5 on LA, 1 on ACDC)
        self.seg_weight = float(self.data.method(self.key).options["seg_weight"])

    @classmethod
    def add_args(cls, parser: Any, dataset: Any) -> None:
        """``--temperature``, ``--mcnet_dice``."""
        parser.add_argument("--temperature", type=float, default=0.1, help="MC-Net: sharpening temperature T")
        parser.add_argument("--mcnet_dice", choices=["released", "factor2"], default="released",
                            help="MC-Net on ACDC: Dice of the public 2D code without the factor 2 (released) "
                                 "or the usual form")

    @classmethod
    def kwargs_from_config(cls, config: RunConfig, dataset: Any, num_classes: int,
                           device: torch.device) -> dict[str, Any]:
        """``--temperature`` and ``--mcnet_dice``."""
        return {"temperature": config.options.temperature, "dice": config.options.mcnet_dice}

    def supervised_dice(self, probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """One decoder's Dice of the labeled items: probs (L, C, *S), labels (L, *S)."""
        if self.data.dice is DiceForm.FOREGROUND:
            return binary_dice_loss(probs[:, 1], labels == 1)
        return mcnet2d_dice_loss(probs, labels, self.dice)

    def step(self, image: torch.Tensor, label: torch.Tensor, iter_num: int) -> dict[str, torch.Tensor]:
        """Losses of one iteration; image (B, 1, *S), label (B, *S), labeled items first."""
        self.check_batch(image, label)
        lbs = self.labeled_bs
        self.model.train()
        outputs = self.model(image)
        probs = [F.softmax(o, dim=1) for o in outputs]
        labels = label[:lbs]
        out: dict[str, torch.Tensor] = {}
        out["loss_dice"] = sum(self.supervised_dice(p[:lbs], labels) for p in probs)
        out["loss_ce"] = sum(logged_cross_entropy(o[:lbs], labels) for o in outputs)  # logged only
        out["loss_consistency"] = mutual_consistency(probs, self.temperature)
        w = self.weight(iter_num)
        out["loss"] = self.seg_weight * out["loss_dice"] + w * out["loss_consistency"]
        out["consistency_weight"] = torch.tensor(w)
        out["probs"] = probs[0].detach()
        return out
