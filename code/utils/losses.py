"""Supervised segmentation losses used by SS-Net (Wu et al., MICCAI 2022).

Copy-ready: this file imports only torch and the standard library and works
for 2D (B, C, H, W) and 3D (B, C, H, W, D) tensors on any device.

* :func:`binary_dice_loss` - the LA (V-Net) supervised loss and the LA VAT
  distance:  ``1 - (2 * sum(p * g) + 1e-8) / (sum(p) + sum(g) + 1e-8)``.
* :func:`soft_dice_loss` / :class:`DiceLoss` - the ACDC (U-Net) supervised
  loss and the ACDC VAT distance: mean over classes c of
  ``1 - (2 * sum(a_c * b_c) + 1e-10) / (sum(a_c^2) + sum(b_c^2) + 1e-10)``.
* :func:`cross_entropy_loss` - the cross-entropy that the released training
  scripts compute and log but do NOT add to the loss.

All losses compute in float32 (also under ``torch.autocast``) and return a
float32 scalar tensor.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "binary_dice_loss",
    "soft_dice_loss",
    "one_hot",
    "cross_entropy_loss",
    "logged_cross_entropy",
    "BinaryDiceLoss",
    "DiceLoss",
]


def binary_dice_loss(predictive: torch.Tensor, target: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Soft binary Dice loss over ALL elements of the two tensors.

    ``L = 1 - (2 * sum(p * g) + eps) / (sum(p) + sum(g) + eps)``

    SS-Net's LA supervised loss (``p`` = foreground probability (B, H, W, D),
    ``g`` = ``label == 1``) and, applied to the whole two-channel softmax
    tensors (B, 2, H, W, D), the LA distance of the smoothness (VAT) loss.

    Args:
        predictive: probabilities, any shape.
        target: same shape; float, int or bool (bool/int are cast to float32).
        eps: smoothing term (1e-8 in the released code).

    Returns:
        float32 scalar tensor.

    Raises:
        ValueError: if the shapes differ.
    """
    if predictive.shape != target.shape:
        raise ValueError(
            f"binary_dice_loss: predictive {tuple(predictive.shape)} and target "
            f"{tuple(target.shape)} must have the same shape; select the foreground "
            "channel (probs[:, 1]) and pass labels without a channel axis."
        )
    p = predictive.float()
    g = target.float()
    intersection = 2 * torch.sum(p * g) + eps
    union = torch.sum(p) + torch.sum(g) + eps
    return 1 - intersection / union


def soft_dice_loss(inputs: torch.Tensor, target: torch.Tensor, smooth: float = 1e-10,
                   weight: Sequence[float] | None = None) -> torch.Tensor:
    """Multi-class soft Dice loss between two (B, C, *spatial) tensors.

    ``L = (1/C) * sum_c w_c * (1 - (2 * sum(a_c * b_c) + s) / (sum(a_c^2) + sum(b_c^2) + s))``

    with sums over the batch and all spatial positions of channel c, ``s`` =
    ``smooth`` and ``w_c = 1`` unless ``weight`` is given. SS-Net's ACDC
    supervised loss (``a`` = softmax, ``b`` = one-hot labels) and ACDC VAT
    distance (``a``, ``b`` = the two softmax tensors).

    Args:
        inputs: (B, C, *spatial) probabilities.
        target: (B, C, *spatial) one-hot labels or probabilities.
        smooth: smoothing term (1e-10 in the released code).
        weight: optional per-class weights (length C).

    Returns:
        float32 scalar tensor.

    Raises:
        ValueError: on a shape mismatch or a weight list of the wrong length.
    """
    if inputs.shape != target.shape or inputs.dim() < 2:
        raise ValueError(
            f"soft_dice_loss: inputs {tuple(inputs.shape)} and target {tuple(target.shape)} must both "
            "be (B, C, *spatial) with the same shape; one-hot encode integer labels first (see one_hot)."
        )
    num_classes = inputs.shape[1]
    if weight is not None and len(weight) != num_classes:
        raise ValueError(f"soft_dice_loss: weight has {len(weight)} entries, expected one per class ({num_classes}).")
    a = inputs.float()
    b = target.float()
    # One class at a time, accumulated in class order, as the released code does: the
    # values (and gradients) then agree with it to the last bit.
    loss = torch.zeros((), dtype=torch.float32, device=a.device)
    for c in range(num_classes):
        a_c, b_c = a[:, c], b[:, c]
        intersect = torch.sum(a_c * b_c)
        b_sum = torch.sum(b_c * b_c)
        a_sum = torch.sum(a_c * a_c)
        dice_c = 1 - (2 * intersect + smooth) / (a_sum + b_sum + smooth)
        loss = loss + (dice_c if weight is None else dice_c * weight[c])
    return loss / num_classes


def one_hot(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """One-hot encode integer labels (B, *spatial) to float32 (B, C, *spatial).

    Values outside ``0..num_classes-1`` give an all-zero vector, as in the
    released ``DiceLoss`` (which compares ``label == c`` for each class).
    Float labels (as some loaders produce) are compared by value.
    """
    classes = torch.arange(num_classes, device=labels.device)
    shape = (1, num_classes) + (1,) * (labels.dim() - 1)
    return (labels.unsqueeze(1) == classes.view(shape).to(labels.dtype)).float()


def _class_indices(logits: torch.Tensor, labels: torch.Tensor, name: str) -> torch.Tensor:
    """``labels`` (B, *spatial) or (B, 1, *spatial) as (B, *spatial), checked against ``logits`` (B, C, *spatial)."""
    if labels.dim() == logits.dim() and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.shape != logits.shape[:1] + logits.shape[2:]:
        raise ValueError(
            f"{name}: labels {tuple(labels.shape)} do not match logits {tuple(logits.shape)}; "
            "expected (B, *spatial) integer labels."
        )
    return labels


def cross_entropy_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean voxel-wise cross-entropy ``-mean(log softmax(logits)[label])`` in float32.

    Args:
        logits: (B, C, *spatial) raw network outputs.
        labels: (B, *spatial) or (B, 1, *spatial) integer class indices.

    The released SS-Net scripts log this value but do not train on it.
    """
    labels = _class_indices(logits, labels, "cross_entropy_loss")
    return F.cross_entropy(logits.float(), labels.long())


def logged_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """:func:`cross_entropy_loss` for logging only: ``-mean(log softmax(logits)[label])`` without a
    gradient, through ``log_softmax`` and ``gather`` instead of an NLL kernel.

    Same value to float rounding; the point is the kernel: CUDA's spatial NLL loss
    (``nll_loss2d``) has no deterministic implementation, so a value that is only
    logged must not need it under ``torch.use_deterministic_algorithms(True)``.

    Args:
        logits: (B, C, *spatial) raw network outputs.
        labels: (B, *spatial) or (B, 1, *spatial) integer class indices.
    """
    labels = _class_indices(logits, labels, "logged_cross_entropy")
    with torch.no_grad():
        log_p = F.log_softmax(logits.detach().float(), dim=1)
        return -log_p.gather(1, labels.long().unsqueeze(1)).mean()


class BinaryDiceLoss(nn.Module):
    """Module form of :func:`binary_dice_loss` (foreground probability vs. binary label).

    ``forward(predictive, target)``: predictive (B, *spatial) probabilities,
    target (B, *spatial) with 1 = foreground (bool/int/float).
    """

    def __init__(self, eps: float = 1e-8) -> None:
        super().__init__()
        if eps < 0:
            raise ValueError(f"BinaryDiceLoss: eps must be >= 0, got {eps}.")
        self.eps = eps

    def forward(self, predictive: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return binary_dice_loss(predictive, target, self.eps)


class DiceLoss(nn.Module):
    """Multi-class soft Dice loss with one-hot targets (ACDC supervised loss).

    ``forward(inputs, target, weight=None, softmax=False)``: inputs
    (B, C, *spatial) probabilities (or logits with ``softmax=True``), target
    (B, *spatial) or (B, 1, *spatial) integer labels. Formula: see
    :func:`soft_dice_loss`; all ``n_classes`` classes, background included.
    """

    def __init__(self, n_classes: int, smooth: float = 1e-10) -> None:
        super().__init__()
        if n_classes < 1:
            raise ValueError(f"DiceLoss: n_classes must be >= 1, got {n_classes}.")
        self.n_classes = n_classes
        self.smooth = smooth

    def forward(self, inputs: torch.Tensor, target: torch.Tensor,
                weight: Sequence[float] | None = None, softmax: bool = False) -> torch.Tensor:
        if inputs.dim() < 3 or inputs.shape[1] != self.n_classes:
            raise ValueError(
                f"DiceLoss: inputs {tuple(inputs.shape)} must be (B, {self.n_classes}, *spatial)."
            )
        if target.dim() == inputs.dim():
            if target.shape[1] != 1:
                raise ValueError(
                    f"DiceLoss: target {tuple(target.shape)} must be integer labels (B, *spatial) or "
                    "(B, 1, *spatial), not one-hot; use soft_dice_loss for one-hot targets."
                )
            target = target[:, 0]
        if softmax:
            inputs = torch.softmax(inputs.float(), dim=1)
        return soft_dice_loss(inputs, one_hot(target, self.n_classes), self.smooth, weight)
