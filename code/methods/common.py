"""What the five baselines (UA-MT, SASSNet, DTC, URPC, MC-Net) share.

* :class:`Baseline`: the :class:`methods.base.Method` interface for the
  baselines (``options_from_flags``, ``from_config``, ``build_model``, ``after_step``, ``state_dict``),
  the batch checks and the unsupervised weight
  ``w(t) = lambda * sigmoid_rampup(t // 150, L)``.
* Which training flags a baseline uses: each keeps the loss weight and ramp of
  its public code (the dataset description's
  :class:`datasets.MethodSetting`); ``--consistency`` / ``--consistency_rampup``
  are SS-Net's and are not read; ``--baseline_consistency`` /
  ``--baseline_rampup`` override the baseline's own values. SS-Net-only flags
  (``--lds``, ``--cs``, ``--supervised_only``) are refused.
* :func:`sq_dice_loss`: the supervised Dice form of UA-MT, SASSNet, DTC and
  URPC, ``1 - (2 sum(p g) + 1e-5) / (sum(p^2) + sum(g^2) + 1e-5)``: on a
  ``dice="foreground"`` dataset (LA) the foreground channel, on a
  ``dice="classes"`` one (ACDC) the mean over all C classes (background
  included, one-hot g), as in their public code.
"""
from __future__ import annotations
import argparse
import logging
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from datasets import DatasetDescription, DiceForm, get_dataset
from methods.base import Method, RunConfig, options_from_flags
from networks.net_factory import net_factory
from utils.losses import DiceLoss, soft_dice_loss
from utils.ramps import consistency_weight

logger = logging.getLogger(__name__)

#: smoothing term of the UA-MT / SASSNet / DTC / SSL4MIS Dice losses
SQ_DICE_SMOOTH = 1e-5


def sq_dice_loss(probs: torch.Tensor, labels: torch.Tensor, dataset: str | DatasetDescription) -> torch.Tensor:
    """Supervised soft Dice of the labeled items.

    probs (L, C, *S) softmax probabilities, labels (L, *S) integer classes.
    ``dice="foreground"`` (LA): ``1 - (2 sum(p1 g) + s) / (sum(p1^2) + sum(g^2) + s)`` with p1
    the foreground channel and g = [label == 1]; ``dice="classes"`` (ACDC): the same per class
    with one-hot g, averaged over the C classes; s = 1e-5.
    """
    if get_dataset(dataset).dice is DiceForm.FOREGROUND:
        return soft_dice_loss(probs[:, 1:2], (labels == 1).unsqueeze(1).to(probs.dtype), smooth=SQ_DICE_SMOOTH)
    return DiceLoss(probs.shape[1], smooth=SQ_DICE_SMOOTH)(probs, labels)


@dataclass(frozen=True)
class BaselineOptions:
    """The flags every baseline reads: its unsupervised weight and ramp-up (None: the baseline's own)."""

    baseline_consistency: float | None
    baseline_rampup: float | None


@dataclass(frozen=True)
class SDFOptions(BaselineOptions):
    """SASSNet's and DTC's: ``--beta``, the weight of the SDF regression loss."""

    beta: float


class Baseline(Method):
    """Base class of the baseline methods (see :mod:`methods.base` for the interface).

    Subclasses set ``key``, ``name``, ``log_keys`` and ``RAMP_AFTER_INCREMENT``,
    implement ``step``, and may add flags (``add_args``) and constructor
    arguments from them (``Options``, ``kwargs_from_config``). Network, lambda and L come from
    the dataset description's setting for ``key``.
    """

    args_title = "baselines (--method uamt, sassnet, dtc, urpc, mcnet)"
    Options: type = BaselineOptions
    #: True: w(t) uses the iteration count after the increment (MC-Net's public code); False: before it.
    RAMP_AFTER_INCREMENT = False

    def __init__(self, dataset: str | DatasetDescription, model: nn.Module, num_classes: int, labeled_bs: int,
                 consistency: float | None = None, consistency_rampup: float | None = None) -> None:
        self.data = get_dataset(dataset)
        setting = self.data.method(self.key)
        if labeled_bs < 1:
            raise ValueError(f"{self.name}: labeled_bs must be >= 1, got {labeled_bs}")
        self.dataset = self.data.name
        self.model = model
        self.num_classes = num_classes
        self.labeled_bs = labeled_bs
        self.consistency = setting.weight if consistency is None else float(consistency)
        self.consistency_rampup = setting.rampup if consistency_rampup is None else float(consistency_rampup)

    # ------------------------------------------------------------------ construction
    @classmethod
    def add_args(cls, parser: Any, dataset: DatasetDescription) -> None:
        """``--baseline_consistency`` / ``--baseline_rampup``."""
        parser.add_argument("--baseline_consistency", type=float, default=None,
                            help="final weight of a baseline's unsupervised term; default: the baseline's own "
                                 "(UA-MT 0.1, SASSNet 0.015, DTC/MC-Net 1.0 on LA and 0.1 on ACDC, URPC 0.1). "
                                 "--consistency is SS-Net's")
        parser.add_argument("--baseline_rampup", type=float, default=None,
                            help="ramp-up length of a baseline's weight in units of 150 iterations; default: the "
                                 "baseline's own (40 on LA, 200 on ACDC). --consistency_rampup is SS-Net's")

    @classmethod
    def build_model(cls, dataset: str | DatasetDescription, num_classes: int, mode: str = "train",
                    device: Any | None = None, model: str | None = None) -> nn.Module:
        """The method's network on ``dataset`` (``model``, SS-Net's ``--model``, does not apply);
        ``network(x)[0]`` is the output it is validated and tested on."""
        network = get_dataset(dataset).method(cls.key).network
        return net_factory(network, in_chns=1, class_num=num_classes, mode=mode, device=device, with_heads=False)

    @classmethod
    def options_from_flags(cls, flags: argparse.Namespace) -> Any:
        """The baseline's options, at parsing time, before any folder is made; SS-Net-only flags
        are refused instead of silently ignored.

        Raises:
            ValueError: ``--supervised_only``, ``--lds`` or ``--cs`` set.
        """
        if flags.supervised_only:
            raise ValueError(f"--method {cls.key}: --supervised_only trains the lower/upper-bound "
                             "rows; run it with --method ssnet --supervised_only")
        for flag, default in (("lds", "dice"), ("cs", "on")):
            if vars(flags)[flag] != default:
                raise ValueError(f"--{flag} is an SS-Net ablation flag; {cls.name} has no such loss term")
        return options_from_flags(cls.Options, flags)

    @classmethod
    def weights(cls, options: BaselineOptions, dataset: str | DatasetDescription) -> tuple[float, float]:
        """(lambda, L): ``--baseline_consistency`` / ``--baseline_rampup`` or the baseline's own values."""
        data = get_dataset(dataset)
        setting = data.method(cls.key)
        lam = float(setting.weight if options.baseline_consistency is None else options.baseline_consistency)
        ramp = float(setting.rampup if options.baseline_rampup is None else options.baseline_rampup)
        logger.info("%s on %s: unsupervised weight %g, ramp-up %g x 150 iterations (%s; --consistency and "
                    "--consistency_rampup are SS-Net's and not used)", cls.name, data.name, lam, ramp,
                    "the baseline's own" if (lam, ramp) == (setting.weight, setting.rampup)
                    else "from --baseline_* flags")
        return lam, ramp

    @classmethod
    def kwargs_from_config(cls, config: RunConfig, dataset: DatasetDescription, num_classes: int,
                           device: torch.device) -> dict[str, Any]:
        """The subclass's own constructor arguments from the run's settings (built after the model)."""
        return {}

    @classmethod
    def from_config(cls, config: RunConfig, dataset: str | DatasetDescription, num_classes: int,
                    device: torch.device) -> Baseline:
        data = get_dataset(dataset)
        lam, ramp = cls.weights(config.options, data)
        model = cls.build_model(data, num_classes, "train", device)
        return cls(data, model, num_classes, config.labeled_bs, consistency=lam, consistency_rampup=ramp,
                   **cls.kwargs_from_config(config, data, num_classes, device))

    # ------------------------------------------------------------------ per iteration
    def weight(self, iter_num: int) -> float:
        """w(t) for the iteration about to run (``iter_num`` iterations done before it)."""
        t = iter_num + 1 if self.RAMP_AFTER_INCREMENT else iter_num
        return consistency_weight(t, self.consistency, self.consistency_rampup)

    def check_batch(self, image: torch.Tensor, label: torch.Tensor) -> None:
        """Labeled items first, at least one unlabeled item; labels (B, *S) match the image (B, 1, *S)."""
        if image.dim() < 4 or label.shape[0] != image.shape[0] or tuple(label.shape[1:]) != tuple(image.shape[2:]):
            raise ValueError(f"{self.name}: image must be (B, 1, *S) and label (B, *S); got {tuple(image.shape)} "
                             f"and {tuple(label.shape)}")
        if image.shape[0] <= self.labeled_bs:
            raise ValueError(f"{self.name}: the batch of {image.shape[0]} has no unlabeled item "
                             f"(labeled_bs = {self.labeled_bs}); use --batch_size > --labeled_bs")
