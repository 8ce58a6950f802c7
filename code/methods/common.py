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
import torch.nn.functional as F
from torch import nn

from datasets import DatasetDescription, DiceForm, get_dataset
from methods.base import Method, RunConfig, options_from_flags
from methods.sdf import sdf_target
from networks.net_factory import net_factory, resolve_device
from networks.vnet_sdf import released_vnet_sdf
from utils.losses import DiceLoss, logged_cross_entropy, soft_dice_loss
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


#: ``--baseline_heads`` of SASSNet and DTC: ``project`` (C-channel softmax segmentation and C-channel tanh SDF
#: heads, the default) or ``released`` (the public 3D code's 1-channel sigmoid and 1-channel tanh heads)
PROJECT_HEADS = "project"
RELEASED_HEADS = "released"
BASELINE_HEADS = (PROJECT_HEADS, RELEASED_HEADS)
#: the network whose public code has 1-channel heads (SASSNet's and DTC's 3D ``vnet_sdf``); the public 2D
#: port (SSL4MIS ``unet_dtc``) has C-channel heads, the project's design, so there is nothing to switch
RELEASED_HEADS_NETWORKS = ("vnet_sdf",)


def check_heads(heads: str, dataset: str | DatasetDescription, key: str) -> str:
    """``heads`` if the method ``key`` can use it on ``dataset``.

    Raises:
        ValueError: an unknown value, or ``released`` where the public code has no 1-channel heads (ACDC).
    """
    if heads not in BASELINE_HEADS:
        raise ValueError(f"--baseline_heads must be one of {', '.join(BASELINE_HEADS)}, got {heads!r}")
    data = get_dataset(dataset)
    if heads == RELEASED_HEADS and data.method(key).network not in RELEASED_HEADS_NETWORKS:
        raise ValueError(f"--baseline_heads released is for the public 3D code's 1-channel heads (LA, vnet_sdf); "
                         f"{data.name} trains {data.method(key).network}, whose public 2D design (DTC: SSL4MIS "
                         "cross_val_dev unet_dtc; SASSNet has no public 2D code) already has the project's "
                         "C-channel heads: use --baseline_heads project")
    return heads


def heads_of_state_dict(state: Any) -> str:
    """``released`` if a SASSNet/DTC checkpoint (a state_dict) has the 1-channel heads, else ``project``
    (from the shapes of ``decoder.out_conv.weight`` and ``out_conv_sdf.weight``)."""
    seg, sdf = state.get("decoder.out_conv.weight"), state.get("out_conv_sdf.weight")
    if seg is not None and sdf is not None and seg.shape[0] == 1 and sdf.shape[0] == 1:
        return RELEASED_HEADS
    return PROJECT_HEADS


def two_class_probs(fg: torch.Tensor) -> torch.Tensor:
    """(B, 1, *S) foreground probabilities -> (B, 2, *S) ``[1 - p, p]`` (a sigmoid head's 2-class view)."""
    return torch.cat([1 - fg, fg], dim=1)


def released_dice_loss(fg: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The public 3D code's ``dice_loss(sigmoid(z)[:, 0], label == 1)``: fg (L, 1, *S) sigmoid
    probabilities, labels (L, *S); ``1 - (2 sum(p g) + 1e-5) / (sum(p^2) + sum(g^2) + 1e-5)`` over the
    whole labeled part (one sum, not per item)."""
    return soft_dice_loss(fg, (labels == 1).unsqueeze(1).to(fg.dtype), smooth=SQ_DICE_SMOOTH)


def logged_bce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The public 3D code's ``BCEWithLogitsLoss()(z[:, 0], label.float())``, logged only (no gradient);
    logits (L, 1, *S), labels (L, *S)."""
    with torch.no_grad():
        return F.binary_cross_entropy_with_logits(logits.detach().float()[:, 0], labels.float())


@dataclass(frozen=True)
class SDFOptions(BaselineOptions):
    """SASSNet's and DTC's: ``--beta``, the weight of the SDF regression loss, and ``--baseline_heads``."""

    beta: float
    baseline_heads: str = PROJECT_HEADS


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
    def model_kwargs(cls, options: Any) -> dict[str, Any]:
        """Extra ``build_model`` arguments from the options (none by default; SASSNet/DTC: ``heads``)."""
        return {}

    @classmethod
    def from_config(cls, config: RunConfig, dataset: str | DatasetDescription, num_classes: int,
                    device: torch.device) -> Baseline:
        data = get_dataset(dataset)
        lam, ramp = cls.weights(config.options, data)
        model = cls.build_model(data, num_classes, "train", device, **cls.model_kwargs(config.options))
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


class SDFBaseline(Baseline):
    """SASSNet's and DTC's common part: the segmentation + SDF network, with the heads of
    ``--baseline_heads``.

    * ``project`` (default): :data:`networks.net_factory.BASELINE_NETWORKS` ``vnet_sdf`` / ``unet_sdf``
      with C-channel softmax segmentation and C-channel tanh SDF heads (the MACs of SS-Net's tables).
    * ``released`` (LA only): the public 3D code's 1-channel heads
      (:func:`networks.vnet_sdf.released_vnet_sdf`): p = sigmoid(z), the SDF of ``label > 0``, the
      Dice of the public ``dice_loss`` on p, BCE logged. Tested as sigmoid(z) > 0.5 (the inference's
      1-channel path, :func:`engine.inference._probabilities`).
    """

    Options = SDFOptions

    def __init__(self, dataset: Any, model: nn.Module, num_classes: int, labeled_bs: int,
                 consistency: float | None = None, consistency_rampup: float | None = None,
                 heads: str = PROJECT_HEADS) -> None:
        super().__init__(dataset, model, num_classes, labeled_bs, consistency, consistency_rampup)
        self.heads = check_heads(heads, self.data, self.key)

    @property
    def released_heads(self) -> bool:
        return self.heads == RELEASED_HEADS

    @classmethod
    def build_model(cls, dataset: str | DatasetDescription, num_classes: int, mode: str = "train",
                    device: Any | None = None, model: str | None = None,
                    heads: str = PROJECT_HEADS) -> nn.Module:
        """The method's network; ``heads="released"`` (LA): the public 1-channel heads, whatever
        ``num_classes`` (the test scripts turn sigmoid(z) into the 2-class prediction)."""
        if check_heads(heads, dataset, cls.key) == PROJECT_HEADS:
            return super().build_model(dataset, num_classes, mode, device, model)
        return released_vnet_sdf(1, has_dropout=(mode == "train")).to(resolve_device(device))

    @classmethod
    def model_kwargs(cls, options: Any) -> dict[str, Any]:
        return {"heads": options.baseline_heads}

    @classmethod
    def test_model_kwargs(cls, state: Any) -> dict[str, Any]:
        """``build_model`` arguments for a checkpoint's weights: the heads its shapes show
        (:func:`heads_of_state_dict`), so a test script needs no flag."""
        return {"heads": heads_of_state_dict(state)}

    @classmethod
    def kwargs_from_config(cls, config: RunConfig, dataset: DatasetDescription, num_classes: int,
                           device: torch.device) -> dict[str, Any]:
        """``--beta`` (a SASSNet flag: both weight the SDF regression loss) and ``--baseline_heads``."""
        return {"beta": config.options.beta, "heads": config.options.baseline_heads}

    def supervised_terms(self, logits: torch.Tensor, sdf: torch.Tensor,
                         labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The probabilities of the whole batch and the supervised terms of the labeled part
        (``labels``, the first items): ``loss_sdf`` = MSE(s_L, SDF_gt), ``loss_dice``, ``loss_ce``
        (logged only, as released).

        ``project``: p = softmax(z) (B, C, *S); SDF_gt per class (label == c); Dice
        :func:`sq_dice_loss`; cross-entropy. ``released``: p = sigmoid(z) (B, 1, *S); SDF_gt of
        label > 0; Dice :func:`released_dice_loss`; BCE with logits.
        """
        lbs = labels.shape[0]
        out: dict[str, torch.Tensor] = {}
        if self.released_heads:
            probs = torch.sigmoid(logits)
            out["loss_sdf"] = F.mse_loss(sdf[:lbs], sdf_target(labels, 1))
            out["loss_dice"] = released_dice_loss(probs[:lbs], labels)
            out["loss_ce"] = logged_bce(logits[:lbs], labels)  # logged, not optimised (released)
            return probs, out
        probs = F.softmax(logits, dim=1)
        out["loss_sdf"] = F.mse_loss(sdf[:lbs], sdf_target(labels, sdf.shape[1]))
        out["loss_dice"] = sq_dice_loss(probs[:lbs], labels, self.data)
        out["loss_ce"] = logged_cross_entropy(logits[:lbs], labels)  # logged, not optimised (released)
        return probs, out

    def snapshot_probs(self, probs: torch.Tensor) -> torch.Tensor:
        """``out["probs"]``: (B, C, *S) class probabilities (a sigmoid head as ``[1 - p, p]``)."""
        return (two_class_probs(probs) if self.released_heads else probs).detach()
