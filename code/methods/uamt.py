"""UA-MT: uncertainty-aware mean teacher (Yu et al., MICCAI 2019), as its public code trains it.

One iteration (labeled items first, B_L = labeled_bs, x_U = the unlabeled items):

    L = 0.5 * (CE(S(x_L), y) + Dice(softmax S(x_L), y)) + w(t) * L_cons

* Teacher T: a second network of the same kind, updated only by an EMA of the
  student's parameters after each optimiser step (:func:`update_ema`, decay
  0.99); it runs in TRAIN mode (dropout active, batch statistics), as released.
* Consistency target: softmax T(x_U + eps), eps = clip(0.1 N(0, 1), -0.2, 0.2).
* Uncertainty: x_U repeated twice goes through T four times with fresh noise
  -> 8 stochastic softmax maps, mean mu, ``u = -sum_c mu_c log(mu_c + 1e-6)``
  (:func:`uncertainty_map`).
* Mask ``m = [u < tau(t)]``, ``tau(t) = (0.75 + 0.25 * r(t, T_max)) * ln 2``
  with r the sigmoid ramp over the raw iteration and T_max = --max_iterations.
* ``L_cons = sum(m * (softmax S(x_U) - softmax T(x_U + eps))^2) / (2 * sum(m) + 1e-16)``
  (:func:`masked_consistency`; the 2 is hard-coded in the public code, the
  channel count on LA, also kept on ACDC where C = 4).
* ``w(t) = 0.1 * sigmoid_rampup(t // 150, L)``, L = 40 (LA) / 200 (ACDC).

Dice: LA the foreground channel, ACDC the 4-class mean (1e-5 smoothing). The
student is the plain V-Net / U-Net and is what is validated and tested.
"""
from __future__ import annotations
import copy
import logging
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from methods.base import RunConfig
from methods.common import Baseline, BaselineOptions, sq_dice_loss
from utils.losses import cross_entropy_loss
from utils.ramps import sigmoid_rampup

logger = logging.getLogger(__name__)

#: released normaliser of the consistency loss: 2 * sum(mask) (LA's channel count, kept for every dataset)
NORMALISER_CHANNELS = 2


def update_ema(teacher: nn.Module, student: nn.Module, decay: float, global_step: int) -> float:
    """Mean-teacher EMA of the parameters (buffers are not averaged, as released).

    ``alpha = min(1 - 1 / (global_step + 1), decay)``;
    ``theta_T <- alpha * theta_T + (1 - alpha) * theta_S``. Returns alpha.
    """
    alpha = min(1.0 - 1.0 / (global_step + 1), decay)
    with torch.no_grad():
        for t, s in zip(teacher.parameters(), student.parameters()):
            t.mul_(alpha).add_(s.detach(), alpha=1.0 - alpha)
    return alpha


def gaussian_noise(x: torch.Tensor, std: float = 0.1, clip: float = 0.2) -> torch.Tensor:
    """``clip(std * N(0, 1), -clip, clip)`` of x's shape, device and dtype."""
    return torch.clamp(torch.randn_like(x) * std, -clip, clip)


def uncertainty_map(probs: torch.Tensor) -> torch.Tensor:
    """Predictive entropy of T stochastic softmax maps (T, B, C, *S) -> (B, 1, *S):
    ``-sum_c mu_c log(mu_c + 1e-6)``, mu = mean over the T passes (natural log)."""
    mean = probs.mean(dim=0)
    return -torch.sum(mean * torch.log(mean + 1e-6), dim=1, keepdim=True)


def uncertainty_threshold(iter_num: int, max_iterations: int) -> float:
    """``tau(t) = (0.75 + 0.25 * sigmoid_rampup(t, T_max)) * ln 2`` (ln 2 also for 4 classes, as released)."""
    return (0.75 + 0.25 * sigmoid_rampup(iter_num, max_iterations)) * math.log(2.0)


def masked_consistency(student_probs: torch.Tensor, teacher_probs: torch.Tensor,
                       mask: torch.Tensor) -> torch.Tensor:
    """``sum(m * (p_S - p_T)^2) / (2 * sum(m) + 1e-16)``; probs (B, C, *S), mask (B, 1, *S) broadcast over C."""
    dist = (student_probs - teacher_probs) ** 2
    return torch.sum(mask * dist) / (NORMALISER_CHANNELS * torch.sum(mask) + 1e-16)


#: the teacher's EMA decay (released)
EMA_DECAY = 0.99


@dataclass(frozen=True)
class UAMTOptions(BaselineOptions):
    """UA-MT's: ``--ema_decay``."""

    ema_decay: float


class UAMT(Baseline):
    """UA-MT on LA (V-Net) or ACDC (U-Net).

    Args:
        dataset, model, num_classes, labeled_bs: see :class:`methods.common.Baseline`.
        max_iterations: T_max of the uncertainty threshold's ramp.
        consistency, consistency_rampup: lambda (0.1) and L (LA 40, ACDC 200).
        teacher: the EMA network (default: a deep copy of ``model``); its
            parameters are frozen and it stays in train mode.
        ema_decay: 0.99.
        passes: stochastic teacher passes for the uncertainty (8; even).
    """

    key = "uamt"
    name = "UAMT"
    Options = UAMTOptions
    cuda_nondeterministic = ("nll_loss2d_forward (the supervised cross-entropy, which is trained)",)
    log_keys = ("loss", "loss_ce", "loss_dice", "loss_consistency", "consistency_weight", "threshold",
                "mask_fraction")

    def __init__(self, dataset: Any, model: nn.Module, num_classes: int, labeled_bs: int, max_iterations: int,
                 consistency: float | None = None, consistency_rampup: float | None = None,
                 teacher: nn.Module | None = None, ema_decay: float = EMA_DECAY, passes: int = 8) -> None:
        super().__init__(dataset, model, num_classes, labeled_bs, consistency, consistency_rampup)
        if passes < 2 or passes % 2:
            raise ValueError(f"UAMT: passes must be an even number >= 2, got {passes}")
        if not 0.0 <= ema_decay <= 1.0:
            raise ValueError(f"UAMT: ema_decay must be in [0, 1], got {ema_decay}")
        if max_iterations < 1:
            raise ValueError(f"UAMT: max_iterations must be >= 1, got {max_iterations}")
        self.max_iterations = max_iterations
        self.ema_decay = ema_decay
        self.passes = passes
        if teacher is None:
            teacher = copy.deepcopy(model)
        self.teacher = teacher
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.teacher.train()

    @classmethod
    def add_args(cls, parser: Any, dataset: Any) -> None:
        """``--ema_decay``."""
        parser.add_argument("--ema_decay", type=float, default=EMA_DECAY, help="UA-MT: EMA decay of the teacher")

    @classmethod
    def kwargs_from_config(cls, config: RunConfig, dataset: Any, num_classes: int,
                           device: torch.device) -> dict[str, Any]:
        """T_max, the EMA decay and the teacher (its own initialisation, after the student's, as released)."""
        teacher = cls.build_model(dataset, num_classes, "train", device)
        return {"max_iterations": config.max_iterations, "teacher": teacher,
                "ema_decay": config.options.ema_decay}

    def step(self, image: torch.Tensor, label: torch.Tensor, iter_num: int) -> dict[str, torch.Tensor]:
        """Losses of one iteration; image (B, 1, *S), label (B, *S), labeled items first."""
        self.check_batch(image, label)
        lbs = self.labeled_bs
        x_u = image[lbs:]
        self.model.train()
        self.teacher.train()  # released: the teacher's dropout and batch statistics are active
        ema_inputs = x_u + gaussian_noise(x_u)
        logits = self.model(image)[0]
        with torch.no_grad():
            ema_probs = F.softmax(self.teacher(ema_inputs)[0], dim=1)
            repeated = x_u.repeat((2,) + (1,) * (x_u.dim() - 1))
            stochastic = [self.teacher(repeated + gaussian_noise(repeated))[0] for _ in range(self.passes // 2)]
            preds = F.softmax(torch.cat(stochastic, 0), dim=1)
            preds = preds.reshape((self.passes, x_u.shape[0]) + tuple(preds.shape[1:]))
            uncertainty = uncertainty_map(preds)
        probs = F.softmax(logits, dim=1)
        labels = label[:lbs]
        out: dict[str, torch.Tensor] = {}
        out["loss_ce"] = cross_entropy_loss(logits[:lbs], labels)
        out["loss_dice"] = sq_dice_loss(probs[:lbs], labels, self.data)
        threshold = uncertainty_threshold(iter_num, self.max_iterations)
        mask = (uncertainty < threshold).float()
        out["loss_consistency"] = masked_consistency(probs[lbs:], ema_probs, mask)
        w = self.weight(iter_num)
        out["loss"] = 0.5 * (out["loss_ce"] + out["loss_dice"]) + w * out["loss_consistency"]
        out["consistency_weight"] = torch.tensor(w)
        out["threshold"] = torch.tensor(threshold)
        out["mask_fraction"] = mask.mean().detach()
        out["probs"] = probs.detach()
        return out

    def after_step(self, iter_num: int) -> None:
        """EMA update after the optimiser step; ``iter_num`` iterations done (global step = iter_num - 1)."""
        update_ema(self.teacher, self.model, self.ema_decay, iter_num - 1)

    def state_dict(self) -> dict[str, Any]:
        return {"teacher": {k: v.detach().cpu() for k, v in self.teacher.state_dict().items()}}

    def load_state_dict(self, state: dict[str, Any], device: torch.device) -> None:
        self.teacher.load_state_dict(state["teacher"], strict=True)
