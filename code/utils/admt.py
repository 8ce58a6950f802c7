"""The pieces of AD-MT (Zhao et al., ECCV 2024, "Alternate Diverse Teaching for Semi-supervised
Medical Image Segmentation"), as its released code (github ZhenZHAO/AD-MT, HEAD ``03ef84c``)
computes them; ``docs/admt_spec.md`` states that code with file:line references.

Copy-ready: imports only torch and numpy.

* :func:`ensemble_teachers`: the two teachers' softmax maps weighted per pixel by their entropy
  (in BITS, ``log2``, weighted with ``exp``), renormalised; the teachers' conflict mask.
* :func:`combat_conflicts`: the conflict-combating step as released: where the teachers disagree
  AND the ensemble disagrees with the student, the student's label wins if it is more confident.
* :func:`cut_mix`: CutMix of the weak unlabeled images with one box per item, the random draws in
  the released order (numpy coin, ``torch.randperm``, ``np.random.beta(4, 4)``, box centres by
  ``np.random.randint`` for x, y[, z]).
* :func:`ema_alpha` / :func:`ema_update`: the teacher EMA with the released warm-up (alpha 0 until
  ``global_step >= R``), parameters AND buffers averaged.
* :class:`AlternateSwitch`: the random alternation period (numpy) deciding which teacher is active.
* :func:`supervised_loss`, :func:`thresholded_ce`, :func:`masked_dice`: the losses.
"""
from __future__ import annotations

from typing import Any
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["entropy_bits", "ensemble_teachers", "combat_conflicts", "cutmix_boxes", "cut_mix",
           "ema_alpha", "ema_update", "AlternateSwitch", "dice_loss", "supervised_loss", "thresholded_ce",
           "masked_dice", "IGNORE_INDEX", "DICE_SMOOTH"]

#: the ignored target of the thresholded cross-entropy (released ``-100``)
IGNORE_INDEX = -100
#: smoothing of the released ``DiceLoss`` (``utils/losses.py``)
DICE_SMOOTH = 1e-5


# ---------------------------------------------------------------------------- pseudo-labels
def entropy_bits(probs: torch.Tensor) -> torch.Tensor:
    """Per-pixel entropy in bits, ``-sum_c p_c log2(p_c + 1e-10)``: (B, C, *S) -> (B, *S)."""
    return -torch.sum(probs * torch.log2(probs + 1e-10), dim=1)


def ensemble_teachers(probs_1: torch.Tensor, probs_2: torch.Tensor,
                      temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The teachers' ensemble pseudo-labels (released ``train_post_*_aut.py`` step 2).

    ``w1 = exp(-H1) / (exp(-H1) + exp(-H2))`` with H in bits, ``w2 = 1 - w1``,
    ``p = (w1 p1 + w2 p2) ** (1 / T)``, divided by its sum over the classes (kept at T = 1: the sum
    is not exactly 1 in floating point).

    Args:
        probs_1, probs_2: softmax maps of teacher 1 and teacher 2, (B, C, *S).
        temperature: T (released 1.0).

    Returns:
        (confidence, label, conflict): the ensemble's max probability and its class, (B, *S), and
        the mask where the two teachers' argmax labels differ.
    """
    _, label_1 = torch.max(probs_1, dim=1)
    _, label_2 = torch.max(probs_2, dim=1)
    conflict = label_1 != label_2
    h1, h2 = entropy_bits(probs_1), entropy_bits(probs_2)
    w1 = torch.exp(-h1) / (torch.exp(-h1) + torch.exp(-h2))
    w2 = 1 - w1
    mixed = w1.unsqueeze(1) * probs_1 + w2.unsqueeze(1) * probs_2
    mixed = torch.pow(mixed, 1.0 / temperature)
    mixed = mixed / torch.sum(mixed, dim=1, keepdim=True)
    confidence, label = torch.max(mixed, dim=1)
    return confidence, label, conflict


def combat_conflicts(label: torch.Tensor, confidence: torch.Tensor, label_student: torch.Tensor,
                     confidence_student: torch.Tensor,
                     teacher_conflict: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Conflict combating as released (``train_utils.get_compromise_pseudo_btw_tea_stu``,
    mode ``pixel_confidence``): ``C = (label != label_student) & teacher_conflict`` (without the
    teachers' mask: ``label != label_student``); where ``C`` and the student is strictly more
    confident, the student's label and confidence replace the ensemble's.

    Returns:
        (label, confidence, C): new tensors (the inputs are not changed).
    """
    conflict = label != label_student
    if teacher_conflict is not None:
        conflict = conflict & teacher_conflict
    take = (confidence_student > confidence) & conflict
    label, confidence = label.clone(), confidence.clone()
    label[take] = label_student[take]
    confidence[take] = confidence_student[take]
    return label, confidence, conflict


# ---------------------------------------------------------------------------- CutMix
def cutmix_boxes(spatial: Sequence[int], batch: int, lam: float) -> list[tuple[np.ndarray, np.ndarray]]:
    """One box per item (released ``rand_bbox`` / ``rand_bbox_3d``): side ``int(X * sqrt(1 - lam))``
    for every spatial dim X, centres ``np.random.randint(int(X / 8), X, size=batch)`` drawn dim by
    dim (x, y[, z]); ``[clip(c - side // 2, 0, X), clip(c + side // 2, 0, X))``.

    Returns:
        per spatial dim, the (start, stop) arrays of length ``batch``.
    """
    ratio = np.sqrt(1.0 - lam)
    sides = [int(x * ratio) for x in spatial]
    centres = [np.random.randint(size=[batch], low=int(x / 8), high=x) for x in spatial]
    return [(np.clip(c - s // 2, 0, x), np.clip(c + s // 2, 0, x)) for c, s, x in zip(centres, sides, spatial)]


def cut_mix(image: torch.Tensor, maps: Sequence[torch.Tensor], prob: float = 1.0,
            alpha: float = 4.0) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor | None]:
    """CutMix of a batch with a permutation of itself (released ``cut_mix`` / ``cut_mix_3d``).

    Draws, in the released order: ``np.random.random()`` (mix if ``< prob``; otherwise the image is
    cloned and the maps returned unchanged), ``torch.randperm(B)`` (global CPU generator; an item
    may be paired with itself), ``lam = np.random.beta(alpha, alpha)`` (one per batch), the box
    centres (:func:`cutmix_boxes`). Item i gets item ``perm[i]``'s box ``i`` in the image (all
    channels) and in every map, the sources being the unmixed inputs.

    Args:
        image: (B, C, *S).
        maps: tensors (B, *S) mixed the same way (pseudo-labels, confidences, conflict mask).

    Returns:
        (mixed image, mixed maps, perm or None when not mixed).
    """
    if not np.random.random() < prob:
        return image.clone(), list(maps), None
    batch, spatial = image.shape[0], tuple(image.shape[2:])
    perm = torch.randperm(batch)
    lam = np.random.beta(alpha, alpha)
    boxes = cutmix_boxes(spatial, batch, lam)
    mixed = image.clone()
    mixed_maps = [m.clone() for m in maps]
    for i in range(batch):
        box = tuple(slice(int(lo[i]), int(hi[i])) for lo, hi in boxes)
        j = int(perm[i])
        mixed[(i, slice(None)) + box] = image[(j, slice(None)) + box]
        for out, src in zip(mixed_maps, maps):
            out[(i,) + box] = src[(j,) + box]
    return mixed, mixed_maps, perm


# ---------------------------------------------------------------------------- EMA teachers
def ema_alpha(global_step: int, rampup: float, decay: float = 0.99) -> float:
    """The released EMA momentum: 0 while ``global_step < R``, then
    ``min(1 - 1 / (global_step - R + 1), decay)`` (``global_step`` = iteration // 2)."""
    if global_step < rampup:
        return 0.0
    return min(1 - 1 / (global_step - rampup + 1), decay)


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, alpha: float) -> None:
    """``theta_T <- alpha theta_T + (1 - alpha) theta_S`` for the parameters, and the same blend
    for every buffer (BatchNorm running statistics; the released code also blends
    ``num_batches_tracked``, which becomes a float there; here it keeps its integer dtype,
    truncated; BatchNorm with momentum 0.1 never reads it)."""
    for t, s in zip(teacher.parameters(), student.parameters()):
        t.mul_(alpha).add_(s.detach(), alpha=1 - alpha)
    for t, s in zip(teacher.buffers(), student.buffers()):
        t.copy_(t * alpha + s * (1 - alpha))


class AlternateSwitch:
    """Which teacher is active (released ``train_utils.AlternateUpdate`` with ``flag_random``):
    periods drawn ``np.random.randint(1, P + 1)``, one at construction and one at each flip;
    :meth:`update` after every iteration counts it and flips when the period is over.

    ``active`` True: teacher 1 (photometric strong view); False: teacher 2 (CutMix).
    """

    def __init__(self, max_period: int, first: bool = True) -> None:
        if int(max_period) < 1:
            raise ValueError(f"AlternateSwitch: the maximum period must be >= 1, got {max_period}")
        self.max_period = int(max_period)
        self.active = bool(first)
        self.counter = 0
        self.period = int(np.random.randint(1, self.max_period + 1))

    @property
    def remaining(self) -> int:
        """Iterations the active teacher still has."""
        return self.period - self.counter

    def update(self) -> None:
        """One iteration done; flip (and draw the next period) when the period is over."""
        self.counter += 1
        if self.counter >= self.period:
            self.active = not self.active
            self.counter = 0
            self.period = int(np.random.randint(1, self.max_period + 1))

    def state_dict(self) -> dict[str, Any]:
        return {"max_period": self.max_period, "active": self.active, "counter": self.counter,
                "period": self.period}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.max_period = int(state["max_period"])
        self.active = bool(state["active"])
        self.counter = int(state["counter"])
        self.period = int(state["period"])


# ---------------------------------------------------------------------------- losses
def dice_loss(probs: torch.Tensor, label: torch.Tensor, ignore: torch.Tensor | None = None) -> torch.Tensor:
    """The released ``DiceLoss(C)(probs, label[:, None], ignore=ignore)``: per class c (background
    included) ``1 - (2 sum(p_c g_c) + 1e-5) / (sum(p_c^2) + sum(g_c^2) + 1e-5)`` over the elements
    of the whole batch where ``ignore`` is not set, averaged over the C classes.

    Args:
        probs: softmax (B, C, *S); label: (B, *S) classes; ignore: (B, *S) bool (None: nothing).
    """
    keep = None if ignore is None else ~ignore.bool()
    loss = probs.new_zeros(())
    n = probs.shape[1]
    for c in range(n):
        p = probs[:, c]
        g = (label == c).to(probs.dtype)
        if keep is not None:
            p, g = p[keep], g[keep]
        intersect = torch.sum(p * g)
        y_sum = torch.sum(g * g)
        z_sum = torch.sum(p * p)
        loss = loss + (1 - (2 * intersect + DICE_SMOOTH) / (z_sum + y_sum + DICE_SMOOTH))
    return loss / n


def supervised_loss(logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """``(CE(logits, y) + Dice(softmax(logits), y)) / 2``, the Dice over all classes
    (background included) as released."""
    return (F.cross_entropy(logits, label.long()) + dice_loss(torch.softmax(logits, dim=1), label)) / 2.0


def thresholded_ce(logits: torch.Tensor, label: torch.Tensor, confidence: torch.Tensor,
                   threshold: float) -> torch.Tensor:
    """LA's unsupervised loss: cross-entropy against ``label`` where ``confidence >= threshold``,
    the mean over those elements (released: targets below the threshold set to -100,
    ``ignore_index=-100``). With no element kept the released mean is NaN (0/0); here it is 0."""
    target = label.long().clone()
    target[confidence < threshold] = IGNORE_INDEX
    per_element = F.cross_entropy(logits, target, ignore_index=IGNORE_INDEX, reduction="none")
    kept = (target != IGNORE_INDEX).sum()
    return per_element.sum() / kept.clamp_min(1).to(per_element.dtype)


def masked_dice(logits: torch.Tensor, label: torch.Tensor, confidence: torch.Tensor,
                threshold: float) -> torch.Tensor:
    """ACDC's unsupervised loss: :func:`dice_loss` of ``softmax(logits)`` against ``label``,
    ignoring the elements where ``confidence < threshold``."""
    return dice_loss(torch.softmax(logits, dim=1), label, ignore=confidence < threshold)
