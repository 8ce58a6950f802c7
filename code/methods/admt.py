"""AD-MT (Zhao et al., ECCV 2024, "Alternate Diverse Teaching for Semi-supervised Medical Image
Segmentation"; released code github ZhenZHAO/AD-MT), as released: LA with the V-Net, ACDC with the
U-Net. ``docs/admt_spec.md`` states the released code with file:line references; the pieces are
in :mod:`utils.admt`, the training views in :mod:`dataloaders.admt_views`.

Three networks of one kind, built in the released order from the seeded generator (each its own
initialisation): the student (optimised, validated, tested, checkpointed) and two EMA teachers
T1 and T2. One iteration (B_u unlabeled items FIRST in the batch, then B_l = ``--labeled_bs``
labeled ones, as the released sampler orders them; every item has two channels
``[weak, strong]``, :mod:`dataloaders.admt_views`):

1. The active teacher (:class:`utils.admt.AlternateSwitch`, random periods in 1..P) runs in train
   mode (dropout, batch statistics), the other in eval mode; both predict the weak unlabeled
   views; entropy-weighted ensemble -> confidence, pseudo-label, the teachers' conflict mask.
2. T1 active: the strong view is the loader's photometric one. T2 active: it is a CutMix of the
   weak unlabeled views (pseudo-labels, confidences and conflict mask mixed alike).
3. One student forward of [labeled weak, unlabeled weak, unlabeled strong]; supervised loss
   ``(CE + Dice over all classes) / 2``; the student's own labels from the UNMIXED weak view
   override the ensemble where the teachers conflict, the ensemble disagrees with the student
   and the student is more confident.
4. Unsupervised loss on the strong view: LA cross-entropy over voxels with confidence >= 0.8;
   ACDC Dice ignoring pixels below 0.95. ``loss = L_sup + 2.0 * sigmoid_rampup(i // 150, R) * L_u``
   (R = 40 LA, 50 ACDC).
5. After the optimiser step only the active teacher follows the student (EMA 0.99 with the
   released warm-up, buffers too), then the switch counts the iteration.

The learning rate is the released poly schedule (:class:`methods.base.Stage` ``lr_poly=0.9``): the
released loop sets the rate after iteration i (0-based) to ``0.01 (1 - i / N) ** 0.9``, so
iterations 0 and 1 run at 0.01 (:func:`engine.training.learning_rate`).

Known differences from the released code: LA's thresholded cross-entropy is 0
(not NaN) when no voxel passes the threshold; ``num_batches_tracked`` of the teachers keeps its
integer dtype; validation on the project's iteration grid (``run_defaults``: every 4 / 2 released
epochs, one epoch later than the released loop's first validation).
"""
from __future__ import annotations

import argparse
import logging
import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from datasets import DatasetDescription, get_dataset
from methods.base import Method, RunConfig, Stage, options_from_flags
from networks.net_factory import net_factory
from utils.admt import (AlternateSwitch, combat_conflicts, cut_mix, ema_alpha, ema_update, ensemble_teachers,
                        masked_dice, supervised_loss, thresholded_ce)
from utils.ramps import consistency_weight
from utils.vat import first_output

logger = logging.getLogger(__name__)

#: the channels of a training item: weak view, strong view
VIEWS = 2


@dataclass(frozen=True)
class ADMTOptions:
    """AD-MT's own flags (see ``--help``); defaults: the released configs."""

    admt_threshold: float
    admt_period: int
    admt_rampup: float
    admt_weight: float
    admt_ema_decay: float
    admt_cutmix_prob: float
    admt_temperature: float
    admt_loss: str


class ADMT(Method):
    """AD-MT on a dataset description (its ``admt`` setting: network, loss, constants).

    Args:
        dataset: a dataset name or description.
        model, teacher_1, teacher_2: three networks of the same kind (separately initialised).
        num_classes: C.
        labeled_bs: B_l, the labeled items at the END of each batch.
        options: :class:`ADMTOptions`.
    """

    key = "admt"
    name = "ADMT"
    args_title = "AD-MT (--method admt)"
    Options = ADMTOptions
    log_keys = ("loss", "loss_sup", "loss_unsup", "weight", "high_ratio", "conflict_ratio", "teacher")
    cuda_nondeterministic = ("nll_loss2d_forward (the supervised and unsupervised cross-entropy, which are trained)",)

    def __init__(self, dataset: str | DatasetDescription, model: nn.Module, teacher_1: nn.Module,
                 teacher_2: nn.Module, num_classes: int, labeled_bs: int, options: ADMTOptions) -> None:
        self.data = get_dataset(dataset)
        if labeled_bs < 1:
            raise ValueError(f"ADMT: --labeled_bs must be >= 1, got {labeled_bs}")
        if options.admt_loss not in ("ce", "dice"):
            raise ValueError(f"ADMT: --admt_loss must be ce or dice, got {options.admt_loss!r}")
        self.model, self.teachers = model, (teacher_1, teacher_2)
        self.num_classes, self.labeled_bs, self.options = num_classes, labeled_bs, options
        for teacher in self.teachers:
            for p in teacher.parameters():
                p.requires_grad_(False)
        # released: the switch draws its first period after the three networks and the optimiser
        self.switch = AlternateSwitch(options.admt_period, first=True)

    # ------------------------------------------------------------------ flags and construction
    @classmethod
    def add_args(cls, parser: Any, dataset: DatasetDescription) -> None:
        """AD-MT's threshold, alternation period, ramp-up, weights and loss (released defaults)."""
        if "admt" not in dataset.methods:
            return
        s = dataset.method("admt").options
        parser.add_argument("--admt_threshold", type=float, default=s["threshold"],
                            help="AD-MT: confidence threshold of the pseudo-labels (released LA 0.8, ACDC 0.95)")
        parser.add_argument("--admt_period", type=int, default=s["period"],
                            help="AD-MT: each teacher stays active for a random 1..P iterations "
                                 "(released P: LA 19, ACDC 50)")
        parser.add_argument("--admt_rampup", type=float, default=s["rampup"],
                            help="AD-MT: R, the unsupervised weight's ramp (units of 150 iterations) and the EMA "
                                 "warm-up (alpha 0 until iteration // 2 >= R); released LA 40, ACDC 50")
        parser.add_argument("--admt_weight", type=float, default=s["weight"],
                            help="AD-MT: final weight of the unsupervised loss (released 2.0)")
        parser.add_argument("--admt_ema_decay", type=float, default=s["ema_decay"],
                            help="AD-MT: EMA decay of the active teacher (released 0.99)")
        parser.add_argument("--admt_cutmix_prob", type=float, default=s["cutmix_prob"],
                            help="AD-MT: probability of CutMix while teacher 2 is active (released 1.0)")
        parser.add_argument("--admt_temperature", type=float, default=1.0,
                            help="AD-MT: sharpening temperature of the teachers' ensemble (released 1.0)")
        parser.add_argument("--admt_loss", choices=("ce", "dice"), default=s["loss"],
                            help="AD-MT: unsupervised loss (released LA ce, ACDC dice)")

    @classmethod
    def options_from_flags(cls, flags: argparse.Namespace) -> ADMTOptions:
        """AD-MT's options, checked; SS-Net-only flags are refused."""
        if flags.supervised_only:
            raise ValueError("--method admt: --supervised_only trains SS-Net's lower/upper-bound rows")
        for flag, default in (("lds", "dice"), ("cs", "on")):
            if vars(flags)[flag] != default:
                raise ValueError(f"--{flag} is an SS-Net ablation flag; AD-MT has no such loss term")
        o = options_from_flags(ADMTOptions, flags)
        if o.admt_period < 1:
            raise ValueError(f"--admt_period must be >= 1, got {o.admt_period}")
        if o.admt_rampup < 0:
            raise ValueError(f"--admt_rampup must be >= 0, got {o.admt_rampup}")
        if not 0.0 <= o.admt_ema_decay <= 1.0:
            raise ValueError(f"--admt_ema_decay must be in [0, 1], got {o.admt_ema_decay}")
        if not 0.0 <= o.admt_cutmix_prob <= 1.0:
            raise ValueError(f"--admt_cutmix_prob must be in [0, 1], got {o.admt_cutmix_prob}")
        if not o.admt_temperature > 0:
            raise ValueError(f"--admt_temperature must be > 0, got {o.admt_temperature}")
        return o

    @classmethod
    def run_defaults(cls, dataset: DatasetDescription, flags: argparse.Namespace) -> dict[str, Any]:
        """The released batch, iterations, seed 2023 and learning rate; validation every
        ``val_epochs`` released epochs (an epoch = one pass over the unlabeled items: LA 4 labeled
        38 iterations, every 4 epochs; ACDC 3 patients 103, every 2), when the training list can be
        read (otherwise the project's grid). The released loop validates after epochs 0, 4, 8, ...
        (iterations 38, 190, ...); this grid is one epoch later (152, 304, ...)."""
        s = dataset.method(cls.key).options
        out = dict(s["run_defaults"])
        try:
            from dataloaders.splits import read_list
            n_train = len(read_list(os.path.join(flags.root_path, dataset.train_list)))
            held = flags.val_num if flags.select == "val" and dataset.holdout_from_train else 0
            n_unlabeled = n_train - held - dataset.labeled_items(flags.root_path, flags.labelnum)
        except (OSError, ValueError):
            return out
        per_epoch = n_unlabeled // max(flags.batch_size - flags.labeled_bs, 1)
        if per_epoch >= 1:
            out["val_interval"] = out["val_start"] = int(s["val_epochs"]) * per_epoch
        return out

    @classmethod
    def stages(cls, config: RunConfig, dataset: DatasetDescription) -> tuple[Stage, ...]:
        """One stage, the released poly learning rate (set after the step of 0-based index i to
        ``base * (1 - i / N) ** 0.9``; :func:`engine.training.learning_rate`)."""
        return (Stage("train", "", config.max_iterations, lr_steps=False, lr_poly=0.9),)

    @classmethod
    def train_dataset(cls, dataset: DatasetDescription, root: str, patch_size: tuple[int, ...], cache: bool) -> Any:
        """The description's training set with AD-MT's weak/strong views instead of its transform
        (``image``: 2 channels [weak, strong])."""
        from dataloaders.admt_views import ACDCWeakStrong, LAWeakStrong

        views = dataset.method(cls.key).options["views"]
        db = dataset.train_dataset(root, patch_size, cache)
        if views == "la":
            db.transform = LAWeakStrong(patch_size)
        elif views == "acdc":
            db.transform = ACDCWeakStrong(patch_size)
        else:
            raise ValueError(f"ADMT: unknown views {views!r} in the {dataset.name} description (la or acdc)")
        return db

    @classmethod
    def batch_sampler(cls, labeled: list[int], unlabeled: list[int], batch_size: int, labeled_bs: int) -> Any:
        """The released sampler: the unlabeled items are the primary stream (an epoch is one pass
        over them) and come FIRST in each batch, then ``labeled_bs`` labeled items."""
        from dataloaders.sampler import TwoStreamBatchSampler
        return TwoStreamBatchSampler(unlabeled, labeled, batch_size, labeled_bs)

    @classmethod
    def build_model(cls, dataset: str | DatasetDescription, num_classes: int, mode: str = "train",
                    device: Any | None = None, model: str | None = None) -> nn.Module:
        """The dataset's AD-MT network (V-Net with dropout in training / U-Net), no SS-Net heads."""
        network = get_dataset(dataset).method(cls.key).network
        return net_factory(network, in_chns=1, class_num=num_classes, mode=mode, device=device, with_heads=False)

    @classmethod
    def from_config(cls, config: RunConfig, dataset: str | DatasetDescription, num_classes: int,
                    device: torch.device) -> ADMT:
        """Student, teacher 1, teacher 2 built in this order (released), then the switch."""
        d = get_dataset(dataset)
        student = cls.build_model(d, num_classes, "train", device)
        teacher_1 = cls.build_model(d, num_classes, "train", device)
        teacher_2 = cls.build_model(d, num_classes, "train", device)
        return cls(d, student, teacher_1, teacher_2, num_classes, config.labeled_bs, config.options)

    # ------------------------------------------------------------------ per iteration
    def _split(self, image: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if image.dim() < 4 or image.shape[1] != VIEWS or label.shape[0] != image.shape[0] \
                or tuple(label.shape[1:]) != tuple(image.shape[2:]):
            raise ValueError(f"ADMT: image must be (B, 2, *S) (weak and strong views, dataloaders.admt_views) and "
                             f"label (B, *S); got {tuple(image.shape)} and {tuple(label.shape)}")
        n_u = image.shape[0] - self.labeled_bs
        if n_u < 1:
            raise ValueError(f"ADMT: the batch of {image.shape[0]} has no unlabeled item "
                             f"(--labeled_bs {self.labeled_bs}); use --batch_size > --labeled_bs")
        weak, strong = image[:, :1], image[:, 1:]
        return weak[n_u:], label[n_u:], weak[:n_u], strong[:n_u]

    def step(self, image: torch.Tensor, label: torch.Tensor, iter_num: int) -> dict[str, torch.Tensor]:
        """Losses of one iteration: image (B, 2, *S) [weak, strong], label (B, *S), UNLABELED
        items first (AD-MT's sampler)."""
        o = self.options
        x_lb, y_lb, x_uw, x_us = self._split(image, label)
        t1_active = self.switch.active
        with torch.no_grad():
            active, other = self.teachers if t1_active else self.teachers[::-1]
            active.train()
            other.eval()
            p1 = torch.softmax(first_output(self.teachers[0](x_uw)), dim=1)
            p2 = torch.softmax(first_output(self.teachers[1](x_uw)), dim=1)
            conf, pseudo, conflict = ensemble_teachers(p1, p2, o.admt_temperature)
            del p1, p2
            if not t1_active:  # teacher 2: CutMix of the weak views replaces the photometric view
                x_us, (pseudo, conf, conflict), _ = cut_mix(x_uw, (pseudo, conf, conflict), o.admt_cutmix_prob)
        self.model.train()
        pred = first_output(self.model(torch.cat((x_lb, x_uw, x_us))))
        lbs = self.labeled_bs
        pred_lb = pred[:lbs]
        pred_uw, pred_us = pred[lbs:].chunk(2)
        with torch.no_grad():
            conf_s, pseudo_s = torch.max(torch.softmax(pred_uw.detach(), dim=1), dim=1)
        loss_sup = supervised_loss(pred_lb, y_lb)
        high_ratio = (conf >= o.admt_threshold).float().mean()
        pseudo, conf, _ = combat_conflicts(pseudo, conf, pseudo_s, conf_s, conflict)
        if o.admt_loss == "ce":
            loss_unsup = thresholded_ce(pred_us, pseudo, conf, o.admt_threshold)
        else:
            loss_unsup = masked_dice(pred_us, pseudo, conf, o.admt_threshold)
        w = consistency_weight(iter_num, o.admt_weight, o.admt_rampup)
        loss = loss_sup + w * loss_unsup
        return {"loss": loss, "loss_sup": loss_sup.detach(), "loss_unsup": loss_unsup.detach(),
                "weight": torch.tensor(w), "high_ratio": high_ratio.detach(),
                "conflict_ratio": conflict.float().mean(), "teacher": torch.tensor(1.0 if t1_active else 2.0)}

    def after_step(self, iter_num: int) -> None:
        """The active teacher follows the student (global step ``(iter_num - 1) // 2``, the 0-based
        iteration halved), then the switch counts the iteration."""
        alpha = ema_alpha((iter_num - 1) // 2, self.options.admt_rampup, self.options.admt_ema_decay)
        ema_update(self.teachers[0] if self.switch.active else self.teachers[1], self.model, alpha)
        self.switch.update()

    def state_dict(self) -> dict[str, Any]:
        return {"teacher1": {k: v.detach().cpu() for k, v in self.teachers[0].state_dict().items()},
                "teacher2": {k: v.detach().cpu() for k, v in self.teachers[1].state_dict().items()},
                "switch": self.switch.state_dict()}

    def load_state_dict(self, state: dict[str, Any], device: torch.device) -> None:
        self.teachers[0].load_state_dict(state["teacher1"], strict=True)
        self.teachers[1].load_state_dict(state["teacher2"], strict=True)
        self.switch.load_state_dict(state["switch"])


__all__ = ["ADMT", "ADMTOptions"]
