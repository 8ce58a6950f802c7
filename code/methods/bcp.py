"""BCP (Bai et al., CVPR 2023, "Bidirectional Copy-Paste for Semi-Supervised Medical Image
Segmentation"; released code DeepMed-Lab-ECNU/BCP), two stages in one run.

* **pre-train** (``<snapshot>/pre_train/``): labeled images only; a box of image b is pasted
  into image a (:func:`utils.copy_paste.copy_paste_mask`, one box per batch), the network is
  trained on the mixed image against the mixed label.
* **self-train** (``<snapshot>/``): student and EMA teacher start from the best pre-train
  weights; the teacher's largest-component pseudo-labels of two unlabeled halves, then a
  labeled image pasted into an unlabeled one and back; ground-truth voxels weigh 1.0,
  pseudo-labelled ones ``--bcp_u_weight`` (0.5). The teacher follows the student by EMA 0.99
  (LA: parameters; ACDC: the whole state_dict, BatchNorm buffers included).

What differs per dataset (losses, EMA, the self-train learning-rate steps, whether the
pre-train optimiser state carries over) is the ``bcp`` setting of the dataset description
(``options``); ``docs/bcp_spec.md`` states the released behaviour with file:line references.
The order of the random draws per iteration is the released one: teacher passes, box (numpy),
student passes.
"""
from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from datasets import DatasetDescription, get_dataset
from methods.base import Method, RunConfig, Stage, options_from_flags, read_weights_only
from networks.net_factory import net_factory
from utils.copy_paste import bcp_mix_loss_acdc, bcp_mix_loss_la, copy_paste_mask, ema_update, mix, per_sample_dice_loss
from utils.vat import first_output

#: the pre-train stage's subfolder of the snapshot folder
PRETRAIN = "pre_train"


@dataclass(frozen=True)
class BCPOptions:
    """BCP's own flags (see ``--help``)."""

    bcp_pretrain_iterations: int
    bcp_u_weight: float
    bcp_mask_ratio: float
    bcp_dice: str
    bcp_budget: str


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest connected component of a binary ``mask`` (full connectivity, as
    ``skimage.measure.label``'s default; ties to the lowest label); an empty mask stays empty."""
    from skimage.measure import label as label_components

    components = label_components(mask)
    if components.max() == 0:
        return np.zeros_like(mask, dtype=bool)
    return components == np.argmax(np.bincount(components.flat)[1:]) + 1


def pseudo_labels(logits: torch.Tensor, binary: bool) -> torch.Tensor:
    """The teacher's pseudo-labels, (B, *S) int64 on the logits' device.

    ``binary`` (LA, ``get_cut_mask``): foreground where softmax channel 1 >= 0.5, then the
    largest 3D component of each item. Otherwise (ACDC, ``get_ACDC_masks``): argmax, then per
    slice and class c >= 1 the largest 2D component of ``== c``.
    """
    probs = torch.softmax(logits.float(), dim=1)
    if binary:
        seg = (probs[:, 1] >= 0.5).cpu().numpy()
        out = np.stack([largest_component(s) for s in seg]).astype(np.int64)
    else:
        seg = probs.argmax(dim=1).cpu().numpy()
        out = np.zeros_like(seg, dtype=np.int64)
        for i in range(seg.shape[0]):
            for c in range(1, logits.shape[1]):
                out[i][largest_component(seg[i] == c)] = c
    return torch.from_numpy(out).to(logits.device)


class BCP(Method):
    """BCP on a dataset description (LA: V-Net, ACDC: U-Net, SS-Net's networks with their heads,
    which BCP builds but does not use).

    Args:
        dataset: a dataset name or description (its ``bcp`` setting).
        model: the student network.
        num_classes: C.
        labeled_bs: labeled items per batch (split in two halves a and b).
        stage: ``"pre_train"`` or ``"self_train"``.
        teacher: the EMA teacher (self-train only).
        u_weight: weight of pseudo-labelled voxels (released 0.5).
        mask_ratio: side ratio of the pasted box (released 2/3).
        dice: ACDC's masked Dice: ``"released"`` (current code) or ``"paper"`` (before the
            2023-10-29 fix, the published runs); see :func:`utils.copy_paste.class_dice_loss`.
    """

    key = "bcp"
    name = "BCP"
    args_title = "BCP (--method bcp)"
    Options = BCPOptions
    log_keys = ("loss", "loss_dice", "loss_ce")

    def __init__(self, dataset: str | DatasetDescription, model: nn.Module, num_classes: int, labeled_bs: int,
                 stage: str = "self_train", teacher: nn.Module | None = None, u_weight: float = 0.5,
                 mask_ratio: float = 2 / 3, dice: str = "released") -> None:
        self.data = get_dataset(dataset)
        self.setting = self.data.method(self.key).options
        if labeled_bs < 2 or labeled_bs % 2:
            raise ValueError(f"BCP: --labeled_bs must be even (two halves a and b), got {labeled_bs}")
        if stage not in ("pre_train", "self_train"):
            raise ValueError(f"BCP: stage must be pre_train or self_train, got {stage!r}")
        if stage == "self_train" and teacher is None:
            raise ValueError("BCP: the self-train stage needs the teacher")
        self.model, self.teacher, self.stage = model, teacher, stage
        self.num_classes, self.labeled_bs = num_classes, labeled_bs
        self.u_weight, self.mask_ratio, self.dice = u_weight, mask_ratio, dice
        self.binary = self.setting["loss"] == "la"
        if teacher is not None:
            for p in teacher.parameters():
                p.requires_grad_(False)
            teacher.train()  # released: the teacher predicts in train mode (dropout, batch statistics)
        self.log_keys = (("loss", "loss_dice", "loss_ce") if stage == "pre_train"
                         else ("loss", "loss_labeled_outside", "loss_unlabeled_outside"))

    # ------------------------------------------------------------------ flags and construction
    @classmethod
    def add_args(cls, parser: Any, dataset: DatasetDescription) -> None:
        """BCP's pre-train length, pseudo-label weight, box ratio, ACDC Dice form and budget."""
        if "bcp" not in dataset.methods:
            return
        s = dataset.method("bcp").options
        parser.add_argument("--bcp_pretrain_iterations", type=int, default=s["pretrain_iterations"],
                            help="BCP: iterations of the pre-train stage (the self-train stage runs "
                                 "--max_iterations)")
        parser.add_argument("--bcp_u_weight", type=float, default=0.5,
                            help="BCP: weight of the pseudo-labelled voxels (ground truth: 1.0)")
        parser.add_argument("--bcp_mask_ratio", type=float, default=2 / 3, help="BCP: side ratio of the pasted box")
        parser.add_argument("--bcp_dice", choices=("released", "paper"), default="released",
                            help="BCP on ACDC: the masked Dice of the current released code, or the one before its "
                                 "2023-10-29 fix (background class unmasked), with which the paper's runs were made")
        parser.add_argument("--bcp_budget", choices=("released", "ssnet"), default="released",
                            help="BCP: released = BCP's batch, labeled batch and iterations (defaults of "
                                 "--batch_size, --labeled_bs, --max_iterations, --val_start when not given); "
                                 "ssnet = SS-Net's batch, and pre-train + self-train = SS-Net's iterations")

    @classmethod
    def run_defaults(cls, dataset: DatasetDescription, flags: argparse.Namespace) -> dict[str, Any]:
        """Defaults of run flags not given on the command line: BCP's released batch and iterations,
        or with ``--bcp_budget ssnet`` SS-Net's batch and a self-train stage that ends at SS-Net's
        iteration count."""
        s = dataset.method(cls.key).options
        if flags.bcp_budget == "ssnet":
            return {"max_iterations": dataset.max_iterations - flags.bcp_pretrain_iterations}
        return dict(s["run_defaults"])

    @classmethod
    def options_from_flags(cls, flags: argparse.Namespace) -> BCPOptions:
        """BCP's options; SS-Net-only flags are refused."""
        if flags.supervised_only:
            raise ValueError("--method bcp: --supervised_only trains SS-Net's lower/upper-bound rows")
        for flag, default in (("lds", "dice"), ("cs", "on")):
            if vars(flags)[flag] != default:
                raise ValueError(f"--{flag} is an SS-Net ablation flag; BCP has no such loss term")
        options = options_from_flags(BCPOptions, flags)
        if options.bcp_pretrain_iterations < 1:
            raise ValueError(f"--bcp_pretrain_iterations must be >= 1, got {options.bcp_pretrain_iterations}")
        if not 0 < options.bcp_mask_ratio < 1:
            raise ValueError(f"--bcp_mask_ratio must be in (0, 1), got {options.bcp_mask_ratio}")
        return options

    @classmethod
    def stages(cls, config: RunConfig, dataset: DatasetDescription) -> tuple[Stage, ...]:
        """Pre-train (constant learning rate, in ``pre_train/``), then self-train (LA: the
        learning rate x0.1 every ``--lr_step`` iterations; ACDC: constant)."""
        s = dataset.method(cls.key).options
        return (Stage(PRETRAIN, PRETRAIN, config.options.bcp_pretrain_iterations, lr_steps=False),
                Stage("self_train", "", config.max_iterations, lr_steps=bool(s["self_train_lr_steps"])))

    @classmethod
    def build_model(cls, dataset: str | DatasetDescription, num_classes: int, mode: str = "train",
                    device: Any | None = None, model: str | None = None) -> nn.Module:
        """SS-Net's network of the dataset (its heads built, as BCP's own networks have them)."""
        return net_factory(get_dataset(dataset).method(cls.key).network, in_chns=1, class_num=num_classes,
                           mode=mode, device=device)

    @classmethod
    def from_config(cls, config: RunConfig, dataset: str | DatasetDescription, num_classes: int,
                    device: torch.device) -> BCP:
        """The pre-train stage's method (:meth:`for_stage` builds either)."""
        return cls.for_stage(config, dataset, num_classes, device, cls.stages(config, get_dataset(dataset))[0], None)

    @classmethod
    def for_stage(cls, config: RunConfig, dataset: str | DatasetDescription, num_classes: int,
                  device: torch.device, stage: Stage, previous: str | None,
                  read: Callable[[str, torch.device], Any] = read_weights_only) -> BCP:
        """The method of ``stage``. Self-train: student then teacher built (two initialisations, as
        released), both then loaded from the best weights in ``previous`` (the pre-train folder);
        ACDC also continues the pre-train optimiser (:attr:`optimizer_state`).

        Raises:
            FileNotFoundError: no pre-train weights in ``previous``.
        """
        d = get_dataset(dataset)
        o: BCPOptions = config.options
        kwargs = dict(u_weight=o.bcp_u_weight, mask_ratio=o.bcp_mask_ratio, dice=o.bcp_dice)
        student = cls.build_model(d, num_classes, "train", device)
        if stage.name == PRETRAIN:
            return cls(d, student, num_classes, config.labeled_bs, stage=PRETRAIN, **kwargs)
        teacher = cls.build_model(d, num_classes, "train", device)
        if previous is None:
            raise FileNotFoundError("BCP self-train: no pre-train folder to start from")
        best = os.path.join(previous, f"{config.model}_best_model.pth")
        if not os.path.isfile(best):
            raise FileNotFoundError(f"BCP self-train starts from the best pre-train weights, {best}, which is missing; "
                                    "run again with --overwrite")
        weights = read(best, device)
        student.load_state_dict(weights)
        teacher.load_state_dict(weights)
        method = cls(d, student, num_classes, config.labeled_bs, stage="self_train", teacher=teacher, **kwargs)
        if d.method(cls.key).options["keep_pretrain_optimizer"]:
            path = os.path.join(previous, "best_optimizer.pth")
            method.optimizer_state = read(path, device)
        return method

    @classmethod
    def saves_best_optimizer(cls, dataset: DatasetDescription, stage: Stage) -> bool:
        """ACDC's pre-train keeps the optimiser state of its best validation: self-train continues it."""
        return stage.name == PRETRAIN and bool(dataset.method(cls.key).options["keep_pretrain_optimizer"])

    # ------------------------------------------------------------------ per iteration
    def _halves(self, image: torch.Tensor, label: torch.Tensor) -> tuple[Any, ...]:
        if image.dim() < 4 or label.shape[0] != image.shape[0] or tuple(label.shape[1:]) != tuple(image.shape[2:]):
            raise ValueError(f"BCP: image must be (B, 1, *S) and label (B, *S); got {tuple(image.shape)} and "
                             f"{tuple(label.shape)}")
        lbs, sub = self.labeled_bs, self.labeled_bs // 2
        if self.stage == "self_train" and image.shape[0] != 2 * lbs:
            raise ValueError(f"BCP self-train: the batch must hold as many unlabeled as labeled items (two "
                             f"unlabeled halves); got {image.shape[0]} items, --labeled_bs {lbs}")
        return image[:sub], image[sub:lbs], label[:sub], label[sub:lbs], image[lbs:lbs + sub], image[lbs + sub:]

    def step(self, image: torch.Tensor, label: torch.Tensor, iter_num: int) -> dict[str, torch.Tensor]:
        """Losses of one iteration: image (B, 1, *S), label (B, *S), labeled items first."""
        img_a, img_b, lab_a, lab_b, unimg_a, unimg_b = self._halves(image, label)
        self.model.train()
        if self.stage == PRETRAIN:
            return self._pretrain(img_a, img_b, lab_a, lab_b)
        return self._self_train(img_a, img_b, lab_a, lab_b, unimg_a, unimg_b)

    def _pretrain(self, img_a: torch.Tensor, img_b: torch.Tensor, lab_a: torch.Tensor,
                  lab_b: torch.Tensor) -> dict[str, torch.Tensor]:
        """Image b's box pasted into image a; the loss against the mixed label."""
        mask, loss_mask = copy_paste_mask(img_a.shape, self.mask_ratio, device=img_a.device)
        out = first_output(self.model(mix(img_a, img_b, mask)))
        if self.binary:  # LA: CE and per-sample Dice of the mixed label (utils.copy_paste.bcp_pretrain_loss_la)
            y = mix(lab_a, lab_b, mask).long()
            loss_ce = F.cross_entropy(out.float(), y)
            loss_dice = per_sample_dice_loss(out.float(), y)
        else:  # ACDC: both regions weighted 1 (utils.copy_paste.bcp_pretrain_loss_acdc)
            loss_dice, loss_ce = bcp_mix_loss_acdc(out, lab_a, lab_b, loss_mask, u_weight=1.0, unlab=True,
                                                   dice=self.dice)
        loss = (loss_ce + loss_dice) / 2
        return {"loss": loss, "loss_dice": loss_dice.detach(), "loss_ce": loss_ce.detach()}

    def _self_train(self, img_a: torch.Tensor, img_b: torch.Tensor, lab_a: torch.Tensor, lab_b: torch.Tensor,
                    unimg_a: torch.Tensor, unimg_b: torch.Tensor) -> dict[str, torch.Tensor]:
        """Teacher pseudo-labels, the box, then both copy-paste directions."""
        assert self.teacher is not None
        with torch.no_grad():
            plab_a = pseudo_labels(first_output(self.teacher(unimg_a)), self.binary)
            plab_b = pseudo_labels(first_output(self.teacher(unimg_b)), self.binary)
            mask, loss_mask = copy_paste_mask(img_a.shape, self.mask_ratio, device=img_a.device)
        u = self.u_weight
        if self.binary:  # LA: labeled outside / unlabeled box, then unlabeled outside / labeled box
            out_l = first_output(self.model(mix(img_a, unimg_a, mask)))
            out_u = first_output(self.model(mix(unimg_b, img_b, mask)))
            loss_l = bcp_mix_loss_la(out_l, lab_a, plab_a, loss_mask, u_weight=u)
            loss_u = bcp_mix_loss_la(out_u, plab_b, lab_b, loss_mask, u_weight=u, unlab=True)
            loss = loss_l + loss_u
        else:  # ACDC: unlabeled outside / labeled box, then labeled outside / unlabeled box
            out_unl = first_output(self.model(mix(unimg_a, img_a, mask)))
            out_l = first_output(self.model(mix(img_b, unimg_b, mask)))
            unl_dice, unl_ce = bcp_mix_loss_acdc(out_unl, plab_a, lab_a, loss_mask, u_weight=u, unlab=True,
                                                 dice=self.dice)
            l_dice, l_ce = bcp_mix_loss_acdc(out_l, lab_b, plab_b, loss_mask, u_weight=u, dice=self.dice)
            loss_u, loss_l = (unl_dice + unl_ce) / 2, (l_dice + l_ce) / 2
            loss = ((unl_dice + l_dice) + (unl_ce + l_ce)) / 2
        return {"loss": loss, "loss_labeled_outside": loss_l.detach(), "loss_unlabeled_outside": loss_u.detach()}

    def after_step(self, iter_num: int) -> None:
        """Self-train: the teacher follows the student by EMA 0.99."""
        if self.teacher is not None:
            ema_update(self.teacher, self.model, 0.99, buffers=bool(self.setting["ema_buffers"]))

    def kept_best(self, score: float) -> float:
        """LA as released (``best_dice = round(dice, 4)``, docs/bcp_spec.md Q6): the next raw score is
        compared with the best rounded to 4 decimals, so within 5e-5 of the best a slightly lower score
        can replace the checkpoint and a slightly higher one not; ACDC keeps the raw score."""
        return round(score, 4) if self.setting["round_best"] else score

    def state_dict(self) -> dict[str, Any]:
        return {"teacher": self.teacher.state_dict()} if self.teacher is not None else {}

    def load_state_dict(self, state: dict[str, Any], device: torch.device) -> None:
        if self.teacher is not None:
            self.teacher.load_state_dict(state["teacher"])


__all__ = ["BCP", "BCPOptions", "pseudo_labels", "largest_component", "PRETRAIN"]
