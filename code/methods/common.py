"""What the five baselines (UA-MT, SASSNet, DTC, URPC, MC-Net) share.

* :class:`Baseline`: the method interface of :mod:`methods` (``from_args``,
  ``build_model``, ``step``, ``after_step``, ``state_dict``), the batch checks
  and the unsupervised weight ``w(t) = lambda * sigmoid_rampup(t // 150, L)``.
* Which training flags a baseline uses: each keeps the loss weight and ramp of
  its public code (``OWN_WEIGHT``); ``--consistency`` / ``--consistency_rampup``
  are SS-Net's and are not read; ``--baseline_consistency`` /
  ``--baseline_rampup`` override the baseline's own values. SS-Net-only flags
  (``--lds``, ``--cs``, ``--supervised_only``) are refused.
* :func:`sq_dice_loss`: the supervised Dice form of UA-MT, SASSNet, DTC and
  URPC, ``1 - (2 sum(p g) + 1e-5) / (sum(p^2) + sum(g^2) + 1e-5)``: on LA the
  foreground channel, on ACDC the mean over all C classes (background
  included, one-hot g), as in their public code.
"""
import logging
from typing import Any, Dict, Optional, Tuple

import torch
from torch import nn

from networks.net_factory import net_factory
from utils.losses import DiceLoss, soft_dice_loss
from utils.ramps import consistency_weight

logger = logging.getLogger(__name__)

DATASETS = ("LA", "ACDC")
#: smoothing term of the UA-MT / SASSNet / DTC / SSL4MIS Dice losses
SQ_DICE_SMOOTH = 1e-5


def check_dataset(dataset: str, method: str) -> None:
    if dataset not in DATASETS:
        raise ValueError(f"{method}: dataset must be 'LA' or 'ACDC', got {dataset!r}")


def sq_dice_loss(probs: torch.Tensor, labels: torch.Tensor, dataset: str) -> torch.Tensor:
    """Supervised soft Dice of the labeled items.

    probs (L, C, *S) softmax probabilities, labels (L, *S) integer classes.
    LA: ``1 - (2 sum(p1 g) + s) / (sum(p1^2) + sum(g^2) + s)`` with p1 the
    foreground channel and g = [label == 1]; ACDC: the same per class with
    one-hot g, averaged over the C classes; s = 1e-5.
    """
    if dataset == "LA":
        return soft_dice_loss(probs[:, 1:2], (labels == 1).unsqueeze(1).to(probs.dtype), smooth=SQ_DICE_SMOOTH)
    return DiceLoss(probs.shape[1], smooth=SQ_DICE_SMOOTH)(probs, labels)


def _arg(args: Any, name: str, default: Any) -> Any:
    value = getattr(args, name, None)
    return default if value is None else value


class Baseline:
    """Base class of the baseline methods (see :mod:`methods` for the interface).

    Subclasses set ``name``, ``log_keys``, ``NETWORKS`` (dataset -> network
    name for :func:`networks.net_factory.net_factory`), ``OWN_WEIGHT``
    (dataset -> (lambda, ramp length L)) and ``RAMP_AFTER_INCREMENT``, and
    implement ``step``.
    """

    name = "Baseline"
    log_keys: Tuple[str, ...] = ("loss",)
    NETWORKS: Dict[str, str] = {}
    OWN_WEIGHT: Dict[str, Tuple[float, float]] = {}
    #: True: w(t) uses the iteration count after the increment (MC-Net's public code); False: before it.
    RAMP_AFTER_INCREMENT = False

    def __init__(self, dataset: str, model: nn.Module, num_classes: int, labeled_bs: int,
                 consistency: Optional[float] = None, consistency_rampup: Optional[float] = None) -> None:
        check_dataset(dataset, self.name)
        if labeled_bs < 1:
            raise ValueError(f"{self.name}: labeled_bs must be >= 1, got {labeled_bs}")
        own_lambda, own_ramp = self.OWN_WEIGHT[dataset]
        self.dataset = dataset
        self.model = model
        self.num_classes = num_classes
        self.labeled_bs = labeled_bs
        self.consistency = own_lambda if consistency is None else float(consistency)
        self.consistency_rampup = own_ramp if consistency_rampup is None else float(consistency_rampup)

    # ------------------------------------------------------------------ construction
    @classmethod
    def build_model(cls, dataset: str, num_classes: int, mode: str = "train",
                    device: Optional[Any] = None) -> nn.Module:
        """The method's network; ``model(x)[0]`` is the output it is validated and tested on."""
        check_dataset(dataset, cls.name)
        return net_factory(cls.NETWORKS[dataset], in_chns=1, class_num=num_classes, mode=mode, device=device,
                           with_heads=False)

    @classmethod
    def check_flags(cls, args: Any) -> None:
        """Refuse SS-Net-only flags instead of silently ignoring them."""
        if getattr(args, "supervised_only", False):
            raise SystemExit(f"--method {cls.name.lower()}: --supervised_only trains the lower/upper-bound "
                             "rows; run it with --method ssnet --supervised_only")
        for flag, default in (("lds", "dice"), ("cs", "on")):
            if getattr(args, flag, default) != default:
                raise SystemExit(f"--{flag} is an SS-Net ablation flag; {cls.name} has no such loss term")

    @classmethod
    def weight_from_args(cls, args: Any, dataset: str) -> Tuple[float, float]:
        """(lambda, L): ``--baseline_consistency`` / ``--baseline_rampup`` or the baseline's own values."""
        own_lambda, own_ramp = cls.OWN_WEIGHT[dataset]
        lam = float(_arg(args, "baseline_consistency", own_lambda))
        ramp = float(_arg(args, "baseline_rampup", own_ramp))
        logger.info("%s on %s: unsupervised weight %g, ramp-up %g x 150 iterations (%s; --consistency and "
                    "--consistency_rampup are SS-Net's and not used)", cls.name, dataset, lam, ramp,
                    "the baseline's own" if (lam, ramp) == (own_lambda, own_ramp) else "from --baseline_* flags")
        return lam, ramp

    @classmethod
    def from_args(cls, args: Any, dataset: str, num_classes: int, device: torch.device) -> "Baseline":
        cls.check_flags(args)
        lam, ramp = cls.weight_from_args(args, dataset)
        model = cls.build_model(dataset, num_classes, "train", device)
        return cls(dataset, model, num_classes, args.labeled_bs, consistency=lam, consistency_rampup=ramp)

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

    def step(self, image: torch.Tensor, label: torch.Tensor, iter_num: int) -> Dict[str, torch.Tensor]:
        raise NotImplementedError

    def after_step(self, iter_num: int) -> None:
        """Nothing to do after the optimiser step (overridden by UA-MT and SASSNet)."""

    def state_dict(self) -> Dict[str, Any]:
        """Extra state for ``--resume`` besides the model (none by default)."""
        return {}

    def load_state_dict(self, state: Dict[str, Any], device: torch.device) -> None:
        """Restore :meth:`state_dict` (nothing by default)."""
