"""Bidirectional copy-paste (BCP, Bai et al., CVPR 2023): mask, mixing, losses and EMA.

BCP pastes a box of one image into another and trains the student on both
directions of the paste, labeled into unlabeled and back:

    M        = 1 outside a box of side ratio * size (2/3), 0 inside   (one box per batch)
    X_1      = X_l * M + X_u * (1 - M),   X_2 = X_u * M + X_l * (1 - M)
    L        = (CE + Dice) / 2 over each region: ground truth weight 1.0,
               pseudo-labels (mean-teacher predictions) weight u_weight = 0.5
    theta_t  = 0.99 * theta_t + 0.01 * theta_s                         (EMA teacher)

(The paper's equation numbers are not cited here: they were not checked against the PDF.)

What is released (github DeepMed-Lab-ECNU/BCP, HEAD 7879f98) differs per
dataset, and every function here reproduces one released form exactly
(``docs/bcp_spec.md`` has the file:line references):

* :func:`copy_paste_mask` - ``context_mask`` (LA, ``utils/BCP_utils.py``) and
  ``generate_mask`` (ACDC, ``ACDC_BCP_train.py``), same numpy draws.
* :func:`mix` - the image and label mixing of both scripts.
* :func:`bcp_pretrain_loss_la`, :func:`bcp_mix_loss_la` - LA pre-train and
  self-train losses (per-sample linear Dice ``mask_DiceLoss``, smooth 1e-5).
* :func:`bcp_mix_loss_acdc`, :func:`bcp_pretrain_loss_acdc` - ACDC losses
  (batch-pooled squared Dice ``DiceLoss``, smooth 1e-10), current and
  paper-time masked Dice.
* :func:`ema_update` - LA (parameters only) and ACDC (whole state_dict).

Not here: the pseudo-label largest-connected-component filter (needs skimage).

Copy-ready: imports only torch, numpy and the standard library; tensors are
(B, C, H, W) for 2D and (B, C, H, W, D) for 3D, on any device.

Example, one LA self-train step (``lab_*`` ground truth, ``plab_*`` pseudo-labels)::

    mask, loss_mask = copy_paste_mask(img_a.shape, 2 / 3, device=img_a.device)
    out_l = model(mix(img_a, unimg_a, mask))[0]       # labeled outside, unlabeled box
    out_u = model(mix(unimg_b, img_b, mask))[0]       # unlabeled outside, labeled box
    loss = (bcp_mix_loss_la(out_l, lab_a, plab_a, loss_mask, u_weight=0.5)
            + bcp_mix_loss_la(out_u, plab_b, lab_b, loss_mask, u_weight=0.5, unlab=True))
    ...
    ema_update(ema_model, model, 0.99, buffers=False)
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "DICE_FORMS",
    "copy_paste_mask",
    "mix",
    "per_sample_dice_loss",
    "class_dice_loss",
    "bcp_pretrain_loss_la",
    "bcp_mix_loss_la",
    "bcp_mix_loss_acdc",
    "bcp_pretrain_loss_acdc",
    "ema_update",
]

DICE_FORMS = ("released", "paper")
"""Masked ACDC Dice forms: ``"released"`` (HEAD, after commit a925e30, 2023-10-29) and
``"paper"`` (before it: what produced the paper's numbers and released ACDC weights)."""


# --------------------------------------------------------------------------- mask and mixing

def copy_paste_mask(shape: Sequence[int], ratio: float = 2 / 3, *, range_size: Sequence[int] | None = None,
                    device: torch.device | str | None = None,
                    dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """BCP's box mask: 1 outside one box, 0 inside it (the box receives the pasted image).

    Box side ``p_i = int(size_i * ratio)`` per spatial axis; corner
    ``c_i = np.random.randint(0, range_i - p_i)`` drawn from numpy's GLOBAL
    generator, one draw per axis in axis order (x, y[, z]); box = ``[c_i, c_i + p_i)``.

    Released behaviour: LA ``context_mask`` (112x112x80, ratio 2/3: box
    74x74x53, corners in [0, 37] x [0, 37] x [0, 26]) and ACDC ``generate_mask``
    (256x256: box 170x170, corners in [0, 85]^2). The draws are the released
    calls, so a seeded run gives the same boxes and leaves numpy's generator in
    the same state. ACDC writes ``int(size * 2 / 3)``; it equals
    ``int(size * (2 / 3))`` for every size below 10^5 (checked). LA's range uses
    the literals 112, 112, 80 whatever the patch (pass ``range_size=(112, 112, 80)``
    to keep that at another patch size; a box that then sticks out is clipped,
    as there). ``range_size=None`` uses the patch size: ACDC's formula and, at
    112x112x80, LA's numbers.

    Args:
        shape: shape of the image batch, (B, C, H, W) or (B, C, H, W, D) (``img_a.shape``).
        ratio: box side / image side (2/3 in both released scripts).
        range_size: the size the corner range is computed from (default: the image size).
        device: where the masks are made.
        dtype: of the masks. The released ones are int64 (``.long()``); the values are
            the same, and :func:`mix` and the losses accept either.

    Returns:
        ``(mask, loss_mask)``: mask (H, W[, D]) and loss_mask (B, H, W[, D]) = B copies.

    Raises:
        ValueError: on a shape that is not 4D/5D, a ratio outside (0, 1], a range_size
            of the wrong length, or a box that leaves no room to draw a corner.
    """
    if len(shape) not in (4, 5):
        raise ValueError(f"copy_paste_mask: shape {tuple(shape)} must be (B, C, H, W) or (B, C, H, W, D), "
                         "the shape of the image batch (img_a.shape).")
    if not 0 < ratio <= 1:
        raise ValueError(f"copy_paste_mask: ratio must be in (0, 1], got {ratio}.")
    batch = int(shape[0])
    spatial = tuple(int(s) for s in shape[2:])
    bounds = spatial if range_size is None else tuple(int(s) for s in range_size)
    if len(bounds) != len(spatial):
        raise ValueError(f"copy_paste_mask: range_size {tuple(range_size)} must have one entry per spatial "
                         f"axis of {spatial}.")
    box = tuple(int(s * ratio) for s in spatial)
    highs = [b - p for b, p in zip(bounds, box)]
    if min(highs) <= 0:
        raise ValueError(f"copy_paste_mask: a box of {box} leaves no corner to draw in {bounds}; "
                         "use a smaller ratio.")
    # Released behaviour: the corners come from numpy's global legacy generator (np.random.randint),
    # one call per axis in axis order, so seeded runs draw the same boxes as the released scripts.
    corner = [int(np.random.randint(0, high)) for high in highs]
    mask = torch.ones(spatial, dtype=dtype, device=device)
    mask[tuple(slice(c, c + p) for c, p in zip(corner, box))] = 0
    loss_mask = mask.repeat(batch, *([1] * len(spatial)))
    return mask, loss_mask


def mix(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Copy-paste ``a * mask + b * (1 - mask)``: ``a`` where the mask is 1, ``b`` in the box.

    Images: a, b (B, C, H, W[, D]), mask (H, W[, D]) broadcast (or any
    broadcastable mask). Labels: a, b (B, H, W[, D]) integer maps. The result
    has the promoted dtype of ``a`` and ``b`` (never the mask's): integer labels
    stay integer, and with a float pseudo-label map the result is float, as in
    the released LA script (float32 pseudo-labels). For floating results this is
    the released arithmetic; for integer results ``torch.where(mask != 0, a, b)``,
    the same values for a binary mask.
    """
    dtype = torch.result_type(a, b)
    if dtype.is_floating_point or dtype.is_complex:
        m = mask.to(dtype)
        return a * m + b * (1 - m)
    return torch.where(mask != 0, a, b).to(dtype)


# --------------------------------------------------------------------------- Dice forms

def _check_logits_labels(logits: torch.Tensor, labels: torch.Tensor, name: str) -> None:
    if logits.dim() < 3 or labels.shape != logits.shape[:1] + logits.shape[2:]:
        raise ValueError(f"{name}: logits {tuple(logits.shape)} must be (B, C, *spatial) and labels "
                         f"{tuple(labels.shape)} (B, *spatial) class indices (no channel axis).")


def _check_region(logits: torch.Tensor, loss_mask: torch.Tensor, name: str) -> None:
    if loss_mask.shape != logits.shape[:1] + logits.shape[2:]:
        raise ValueError(f"{name}: loss_mask {tuple(loss_mask.shape)} must be (B, *spatial) like logits "
                         f"{tuple(logits.shape)} without the channel axis (the second output of copy_paste_mask).")


def _one_hot(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(B, *spatial) class indices -> float32 (B, C, *spatial) one-hot (out-of-range -> all zero)."""
    classes = torch.arange(num_classes, device=labels.device).view((1, num_classes) + (1,) * (labels.dim() - 1))
    return (labels.long().unsqueeze(1) == classes).float()


def per_sample_dice_loss(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor | None = None,
                         smooth: float = 1e-5) -> torch.Tensor:
    """Released ``mask_DiceLoss`` (``utils/losses.py``, LA): per-sample, per-class linear Dice.

    ``L = 1 - mean_{n,c} (2 sum_v p g m + s) / (sum_v (p + g) m + s)``

    with p = softmax(logits) (sigmoid pair [1 - q, q] if C == 1), g = one-hot
    labels, m = mask (1 everywhere if None), sums over the voxels v of sample n,
    class c; background included.

    Args:
        logits: (B, C, *spatial) raw outputs.
        labels: (B, *spatial) class indices in [0, C) (the released code asserts it; here
            out-of-range labels give an all-zero one-hot row).
        mask: (B, *spatial) region weights (0/1), or None.
        smooth: 1e-5 in the released code.

    Returns:
        float32 scalar tensor.
    """
    _check_logits_labels(logits, labels, "per_sample_dice_loss")
    n, c = logits.shape[0], logits.shape[1]
    flat = logits.float().reshape(n, c, -1)
    if c > 1:
        p = F.softmax(flat, dim=1)
    else:
        q = torch.sigmoid(flat)
        p = torch.cat([1 - q, q], 1)
        c = 2
    g = _one_hot(labels.reshape(n, -1), c)
    inter = p * g
    union = p + g
    if mask is not None:
        if mask.shape != labels.shape:
            raise ValueError(f"per_sample_dice_loss: mask {tuple(mask.shape)} must match labels "
                             f"{tuple(labels.shape)}.")
        m = mask.reshape(n, 1, -1).float()
        inter = inter * m
        union = union * m
    dice = (2 * inter.sum(2) + smooth) / (union.sum(2) + smooth)
    return 1 - dice.mean()


def class_dice_loss(probs: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor | None = None,
                    smooth: float = 1e-10, form: str = "released") -> torch.Tensor:
    """Released ACDC ``DiceLoss`` with a mask: batch-pooled squared Dice per class, class mean.

    ``L = (1/C) sum_c 1 - (2 sum p_c g_c m_c + s) / (sum p_c^2 m_c + sum g_c^2 m_c + s)``

    sums over the batch and all positions. ``form`` chooses the per-class mask m_c:

    * ``"released"`` (HEAD, since commit a925e30 of 2023-10-29, GitHub issue #25):
      m_c = mask for every class.
    * ``"paper"`` (the code until then, which produced the paper's numbers): the
      mask encoder ``(mask * c == c)`` gives m_0 = 1 everywhere (background is not
      masked, so it is scored against this term's labels over the whole image)
      and m_c = (mask == 1) for c >= 1.

    Args:
        probs: (B, C, *spatial) probabilities (the released caller passes softmax).
        labels: (B, *spatial) class indices.
        mask: (B, *spatial) 0/1 region, or None (plain Dice).
        smooth: 1e-10 in the released code.
        form: ``"released"`` or ``"paper"``.

    Returns:
        float32 scalar tensor.
    """
    if form not in DICE_FORMS:
        raise ValueError(f"class_dice_loss: form must be one of {DICE_FORMS}, got {form!r}.")
    _check_logits_labels(probs, labels, "class_dice_loss")
    num_classes = probs.shape[1]
    p = probs.float()
    g = _one_hot(labels, num_classes)
    if mask is not None:
        if mask.shape != labels.shape:
            raise ValueError(f"class_dice_loss: mask {tuple(mask.shape)} must match labels {tuple(labels.shape)}.")
        m = mask.float()
        if form == "paper":
            m_c = [torch.ones_like(m)] + [(m == 1).float()] * (num_classes - 1)
        else:
            m_c = [m] * num_classes
    # One class at a time, summed in class order and divided at the end, as released.
    loss = torch.zeros((), dtype=torch.float32, device=p.device)
    for c in range(num_classes):
        p_c, g_c = p[:, c], g[:, c]
        if mask is None:
            intersect, y_sum, z_sum = torch.sum(p_c * g_c), torch.sum(g_c * g_c), torch.sum(p_c * p_c)
        else:
            intersect = torch.sum(p_c * g_c * m_c[c])
            y_sum = torch.sum(g_c * g_c * m_c[c])
            z_sum = torch.sum(p_c * p_c * m_c[c])
        loss = loss + (1 - (2 * intersect + smooth) / (z_sum + y_sum + smooth))
    return loss / num_classes


# --------------------------------------------------------------------------- BCP losses

def _region_weights(l_weight: float, u_weight: float, unlab: bool) -> tuple[float, float]:
    """(weight outside the box, weight inside): (l, u), swapped when the outside is pseudo-labelled."""
    return (u_weight, l_weight) if unlab else (l_weight, u_weight)


def _masked_ce(logits: torch.Tensor, image_label: torch.Tensor, patch_label: torch.Tensor, mask: torch.Tensor,
               patch_mask: torch.Tensor, image_weight: float, patch_weight: float) -> torch.Tensor:
    """Region-averaged CE of both datasets (released):
    ``w_o sum(ce_o m) / (sum m + 1e-16) + w_i sum(ce_i (1-m)) / (sum (1-m) + 1e-16)``."""
    ce_image = F.cross_entropy(logits, image_label, reduction="none")
    ce_patch = F.cross_entropy(logits, patch_label, reduction="none")
    loss = image_weight * (ce_image * mask).sum() / (mask.sum() + 1e-16)
    return loss + patch_weight * (ce_patch * patch_mask).sum() / (patch_mask.sum() + 1e-16)


def bcp_pretrain_loss_la(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """LA pre-train loss (``LA_BCP_train.py``, pre-train loop): ``(CE + Dice) / 2`` on the mixed label.

    CE = mean voxel-wise cross-entropy, Dice = :func:`per_sample_dice_loss`
    without a mask. Labels: the mixed ground truth ``mix(lab_a, lab_b, mask)``.

    Args:
        logits: (B, C, H, W, D) raw outputs.
        labels: (B, H, W, D) class indices.
    """
    _check_logits_labels(logits, labels, "bcp_pretrain_loss_la")
    x = logits.float()
    labels = labels.long()
    return (F.cross_entropy(x, labels) + per_sample_dice_loss(x, labels)) / 2


def bcp_mix_loss_la(logits: torch.Tensor, image_label: torch.Tensor, patch_label: torch.Tensor,
                    loss_mask: torch.Tensor, l_weight: float = 1.0, u_weight: float = 0.5,
                    unlab: bool = False) -> torch.Tensor:
    """LA self-train loss of one mixed image (``mix_loss`` in ``utils/BCP_utils.py``).

    With M = loss_mask (1 outside the box) and (w_o, w_i) = (l_weight, u_weight),
    swapped if ``unlab`` (outside pseudo-labelled, box ground truth):

    ``Dice = w_o D(x, y_o; M) + w_i D(x, y_i; 1-M)``  (D = :func:`per_sample_dice_loss`)
    ``CE   = w_o sum(ce(x, y_o) M) / (sum M + 1e-16) + w_i sum(ce(x, y_i) (1-M)) / (sum(1-M) + 1e-16)``
    ``L    = (Dice + CE) / 2``

    Released use: ``bcp_mix_loss_la(out_l, lab_a, plab_a, M, u_weight=0.5)`` +
    ``bcp_mix_loss_la(out_u, plab_b, lab_b, M, u_weight=0.5, unlab=True)``.

    Args:
        logits: (B, C, H, W[, D]) raw outputs for the mixed image.
        image_label: (B, H, W[, D]) labels of the image outside the box (cast to int64).
        patch_label: (B, H, W[, D]) labels of the image pasted in the box.
        loss_mask: (B, H, W[, D]) 1 outside, 0 inside the box.
        l_weight: weight of ground-truth regions (1.0).
        u_weight: weight of pseudo-labelled regions (``--u_weight`` 0.5).
        unlab: True when the outside region carries pseudo-labels.

    Returns:
        float32 scalar tensor.
    """
    for name, lab in (("image_label", image_label), ("patch_label", patch_label)):
        _check_logits_labels(logits, lab, f"bcp_mix_loss_la ({name})")
    _check_region(logits, loss_mask, "bcp_mix_loss_la")
    x = logits.float()
    y_o, y_i = image_label.long(), patch_label.long()
    w_o, w_i = _region_weights(l_weight, u_weight, unlab)
    loss_mask = loss_mask.float()  # released: int64; same values, and a bool mask works too
    patch_mask = 1 - loss_mask
    dice = per_sample_dice_loss(x, y_o, loss_mask) * w_o + per_sample_dice_loss(x, y_i, patch_mask) * w_i
    ce = _masked_ce(x, y_o, y_i, loss_mask, patch_mask, w_o, w_i)
    return (dice + ce) / 2


def bcp_mix_loss_acdc(logits: torch.Tensor, image_label: torch.Tensor, patch_label: torch.Tensor,
                      loss_mask: torch.Tensor, l_weight: float = 1.0, u_weight: float = 0.5,
                      unlab: bool = False, dice: str = "released") -> tuple[torch.Tensor, torch.Tensor]:
    """ACDC loss of one mixed image (``mix_loss`` in ``ACDC_BCP_train.py``); returns (Dice, CE).

    As :func:`bcp_mix_loss_la` but the Dice is :func:`class_dice_loss` on
    softmax(logits) (batch-pooled, squared denominators, smooth 1e-10) and the
    two terms are returned separately:

    ``Dice = w_o D(p, y_o; M) + w_i D(p, y_i; 1-M)``,  CE as in :func:`bcp_mix_loss_la`.

    Released use (self-train)::

        d1, c1 = bcp_mix_loss_acdc(out_unl, plab_a, lab_a, M, u_weight=0.5, unlab=True)
        d2, c2 = bcp_mix_loss_acdc(out_l, lab_b, plab_b, M, u_weight=0.5)
        loss = ((d1 + d2) + (c1 + c2)) / 2

    Args:
        logits: (B, C, H, W[, D]) raw outputs (the released code is 2D).
        image_label, patch_label, loss_mask, l_weight, u_weight, unlab: as in :func:`bcp_mix_loss_la`.
        dice: ``"released"`` = current code (mask on every class, after issue #25);
            ``"paper"`` = code at publication (background class unmasked), see :func:`class_dice_loss`.

    Returns:
        ``(dice_loss, ce_loss)``, float32 scalar tensors.
    """
    if dice not in DICE_FORMS:
        raise ValueError(f"bcp_mix_loss_acdc: dice must be one of {DICE_FORMS}, got {dice!r}.")
    for name, lab in (("image_label", image_label), ("patch_label", patch_label)):
        _check_logits_labels(logits, lab, f"bcp_mix_loss_acdc ({name})")
    _check_region(logits, loss_mask, "bcp_mix_loss_acdc")
    x = logits.float()
    y_o, y_i = image_label.long(), patch_label.long()
    w_o, w_i = _region_weights(l_weight, u_weight, unlab)
    loss_mask = loss_mask.float()  # released: int64; same values, and a bool mask works too
    patch_mask = 1 - loss_mask
    p = F.softmax(x, dim=1)
    loss_dice = (class_dice_loss(p, y_o, loss_mask, form=dice) * w_o
                 + class_dice_loss(p, y_i, patch_mask, form=dice) * w_i)
    return loss_dice, _masked_ce(x, y_o, y_i, loss_mask, patch_mask, w_o, w_i)


def bcp_pretrain_loss_acdc(logits: torch.Tensor, label_a: torch.Tensor, label_b: torch.Tensor,
                           loss_mask: torch.Tensor, dice: str = "released") -> torch.Tensor:
    """ACDC pre-train loss: ``(Dice + CE) / 2`` of ``bcp_mix_loss_acdc(..., u_weight=1.0, unlab=True)``.

    The released pre-train call (``mix_loss(out, lab_a, lab_b, loss_mask, u_weight=1.0, unlab=True)``)
    weights both regions 1.0: ``lab_a`` outside the box, ``lab_b`` in it.
    """
    d, ce = bcp_mix_loss_acdc(logits, label_a, label_b, loss_mask, u_weight=1.0, unlab=True, dice=dice)
    return (d + ce) / 2


# --------------------------------------------------------------------------- EMA

@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, decay: float = 0.99, buffers: bool = False) -> None:
    """Mean-teacher update with a fixed decay (no warm-up): ``t = decay * t + (1 - decay) * s``.

    * ``buffers=False`` - LA (``update_ema_variables``, ``utils/BCP_utils.py``):
      parameters only, in ``parameters()`` order; the teacher's BatchNorm
      buffers are left to its own (train-mode) forward passes.
    * ``buffers=True`` - ACDC (``update_model_ema``, ``ACDC_BCP_train.py``): every
      entry of the student's state_dict, BatchNorm ``running_mean`` /
      ``running_var`` and ``num_batches_tracked`` included. Released behaviour: the
      float average of the int64 ``num_batches_tracked`` is copied back into the
      int64 buffer, i.e. truncated toward zero (as ``load_state_dict`` does).

    Both use decay 0.99 in the released scripts.

    Raises:
        ValueError: if the two models' parameters (or state_dict keys) do not correspond.
    """
    if not buffers:
        t_params, s_params = list(teacher.parameters()), list(student.parameters())
        if len(t_params) != len(s_params):
            raise ValueError(f"ema_update: teacher has {len(t_params)} parameters, student {len(s_params)}.")
        for t, s in zip(t_params, s_params):
            t.mul_(decay).add_((1 - decay) * s)
        return
    t_state, s_state = teacher.state_dict(), student.state_dict()
    if set(t_state) != set(s_state):
        missing = sorted(set(s_state) ^ set(t_state))[:5]
        raise ValueError(f"ema_update: teacher and student state_dict keys differ (e.g. {missing}).")
    for key, s in s_state.items():
        t = t_state[key]
        t.copy_(decay * t + (1 - decay) * s)
