"""Inference as the released SS-Net code does it, batched and device-resident.

* LA (3D): :func:`test_single_case`, a sliding window over the volume with the
  reference's window placement, zero padding and averaging of the softmax
  probabilities (``code/utils/test_3d_patch.py``), but ``sw_batch`` windows per
  forward pass and the sums kept on the model's device.
* ACDC (2D): :func:`test_single_volume_2d`, each slice zoomed to 256x256
  (order 0), argmax, zoomed back (order 0) (``code/test_ACDC.py``), slices
  forwarded in batches.
* :func:`largest_connected_component`: the ``--nms`` post-processing.
* :func:`validate_la_cases` / :func:`validate_acdc_volumes`: the periodic
  validation of the training scripts (``var_all_case_LA`` and ``val_2d``).

All functions run the model in eval mode under ``torch.inference_mode()`` and
restore each module's train/eval flag afterwards. The model's device decides
where the work runs; numpy goes in, numpy comes out.

``amp="bf16"`` (flag ``--amp``) runs the network's forward passes under
``torch.autocast(<device>, dtype=torch.bfloat16)`` (:func:`amp_autocast`);
the logits are cast to float32 before the softmax, and the window sums and
their average stay float32. ``amp="none"`` (default) is the faithful fp32 path.
"""
from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import zoom
from skimage.measure import label as connected_components
from torch import nn
from tqdm import tqdm

from dataloaders.acdc import acdc_volume_path
from dataloaders.h5io import load_h5, validate_pair
from dataloaders.la_heart import la_case_path
from utils.metrics import calculate_dice_hd95, dice_coefficient
from utils.separation import eval_mode
from utils.vat import first_output

logger = logging.getLogger(__name__)

#: values of the ``--amp`` flag: ``none`` (fp32, faithful default) or ``bf16`` (bfloat16 autocast)
AMP_MODES = ("none", "bf16")



# --------------------------------------------------------------------------- helpers


def check_amp(amp: str, device: torch.device | str, flag: str = "--amp") -> None:
    """Validate an ``--amp`` value for ``device`` (call once, before the work).

    ``none`` is always valid. ``bf16`` is supported on CUDA and on CPU (CPU
    autocast in bfloat16; whether it beats fp32 there depends on the CPU, and a
    warning says to measure it). On a GPU without native bfloat16 (before
    Ampere) torch emulates it and a warning says that it will be slow.

    Raises:
        ValueError: an unknown value, or a device type autocast cannot use.
    """
    if amp not in AMP_MODES:
        raise ValueError(f"{flag} must be one of {', '.join(AMP_MODES)}, got {amp!r}.")
    if amp == "none":
        return
    device = torch.device(device)
    if device.type == "cpu":
        logger.warning("%s bf16 on the CPU: bfloat16 CPU autocast; whether it is faster than fp32 depends on the "
                       "CPU (measure with code/benchmark.py --amp bf16); --amp none is the faithful fp32 run.", flag)
    elif device.type == "cuda":
        try:
            native = torch.cuda.is_bf16_supported(including_emulation=False)
        except TypeError:  # torch < 2.3 has no including_emulation argument
            native = torch.cuda.get_device_capability(device)[0] >= 8
        if not native:
            logger.warning("%s bf16: %s has no native bfloat16 (needs compute capability >= 8.0); torch emulates "
                           "it, which is slower than fp32: use --amp none on this GPU.", flag,
                           torch.cuda.get_device_name(device))
    else:
        raise ValueError(f"{flag} bf16 supports the devices cpu and cuda, got {device}; use --amp none.")


def amp_autocast(device: torch.device | str, amp: str = "none") -> contextlib.AbstractContextManager:
    """The autocast block of ``--amp``: ``none`` -> no autocast (fp32, faithful);
    ``bf16`` -> ``torch.autocast(device.type, dtype=torch.bfloat16)`` (no GradScaler
    is needed for bfloat16). Wrap the forward passes and loss computations only;
    the losses of this repository cast to float32 themselves.

    Raises:
        ValueError: an unknown ``amp`` value (see :func:`check_amp`).
    """
    if amp not in AMP_MODES:
        raise ValueError(f"amp must be one of {', '.join(AMP_MODES)}, got {amp!r} (flag --amp).")
    if amp == "none":
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (or buffer); CPU if it has none."""
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


def _probabilities(logits: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Softmax over channels (sigmoid for a single-channel output). (B, C, *S) -> (B, C, *S).

    A single-channel output with ``num_classes == 2`` (SASSNet/DTC with ``--baseline_heads
    released``, as their public code) gives ``[1 - sigmoid(z), sigmoid(z)]``: the foreground
    channel is the released test's sigmoid, so ``> 0.5`` on its window average is the released rule.
    """
    if logits.shape[1] == 1 and num_classes == 2:
        fg = torch.sigmoid(logits)
        return torch.cat([1 - fg, fg], dim=1)
    if logits.shape[1] != num_classes:
        raise ValueError(
            f"The model outputs {logits.shape[1]} channel(s) but num_classes={num_classes}; "
            "build the model with class_num=num_classes (LA: 2, ACDC: 4) or fix --num_classes."
        )
    if num_classes == 1:
        return torch.sigmoid(logits)
    return F.softmax(logits, dim=1)


def sliding_window_starts(size: int, patch: int, stride: int) -> list[int]:
    """Window starts along one axis: ``min(stride * i, size - patch)`` for
    ``i = 0 .. ceil((size - patch) / stride)`` (released placement; the last
    window is flush with the end). ``size`` must be at least ``patch``."""
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride} (flags --stride_xy / --stride_z).")
    if patch < 1 or size < patch:
        raise ValueError(f"Cannot place windows of {patch} voxels along an axis of {size} voxels (pad first).")
    steps = -(-(size - patch) // stride) + 1
    return [min(stride * i, size - patch) for i in range(steps)]


def _check_patch(patch_size: Sequence[int], ndim: int, flag: str = "--patch_size") -> tuple[int, ...]:
    patch = tuple(int(p) for p in patch_size)
    if len(patch) != ndim or any(p < 1 for p in patch):
        raise ValueError(f"{flag} needs {ndim} positive sizes, got {tuple(patch_size)}.")
    return patch


# --------------------------------------------------------------------------- 3D sliding window


def _sliding_window_probs(
    model: nn.Module,
    image: np.ndarray,
    stride_xy: int,
    stride_z: int,
    patch_size: Sequence[int],
    num_classes: int,
    sw_batch: int,
    amp: str = "none",
) -> torch.Tensor:
    """Averaged class probabilities on the model's device, cropped back: (C, W, H, D).

    The caller is responsible for eval mode and ``inference_mode``. With
    ``amp="bf16"`` only the forward passes run under autocast; softmax, sums and
    average are float32.
    """
    if image.ndim != 3:
        raise ValueError(f"test_single_case takes a 3D volume (W, H, D), got shape {image.shape}.")
    if sw_batch < 1:
        raise ValueError(f"sw_batch must be >= 1, got {sw_batch} (flag --sw_batch).")
    patch = _check_patch(patch_size, 3)
    device = model_device(model)

    # Zero padding up to the patch size, split floor/ceil between the two sides.
    pads = [max(p - s, 0) for s, p in zip(image.shape, patch)]
    before = [p // 2 for p in pads]
    volume = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).to(device)
    if any(pads):
        # F.pad lists the last axis first.
        pad_arg: list[int] = []
        for b, p in zip(reversed(before), reversed(pads)):
            pad_arg += [b, p - b]
        volume = F.pad(volume, pad_arg, mode="constant", value=0.0)
    ww, hh, dd = volume.shape

    starts = [
        (xs, ys, zs)
        for xs in sliding_window_starts(ww, patch[0], stride_xy)
        for ys in sliding_window_starts(hh, patch[1], stride_xy)
        for zs in sliding_window_starts(dd, patch[2], stride_z)
    ]
    score = torch.zeros((num_classes, ww, hh, dd), dtype=torch.float32, device=device)
    count = torch.zeros((ww, hh, dd), dtype=torch.float32, device=device)
    for first in range(0, len(starts), sw_batch):
        chunk = starts[first:first + sw_batch]
        batch = torch.stack(
            [volume[x:x + patch[0], y:y + patch[1], z:z + patch[2]] for x, y, z in chunk]
        ).unsqueeze(1)  # (B, 1, pw, ph, pd)
        with amp_autocast(device, amp):
            logits = first_output(model(batch))
        probs = _probabilities(logits.float(), num_classes)  # float32 whatever the autocast dtype
        if tuple(probs.shape[2:]) != patch:
            raise ValueError(
                f"The model returned spatial size {tuple(probs.shape[2:])} for a {patch} window; "
                "sliding-window inference needs an output the size of its input."
            )
        # Windows are added one by one in the reference's order, so the sums
        # (and the result) do not depend on sw_batch.
        for k, (x, y, z) in enumerate(chunk):
            score[:, x:x + patch[0], y:y + patch[1], z:z + patch[2]] += probs[k]
            count[x:x + patch[0], y:y + patch[1], z:z + patch[2]] += 1
    score /= count.unsqueeze(0)
    w, h, d = image.shape
    return score[:, before[0]:before[0] + w, before[1]:before[1] + h, before[2]:before[2] + d]


def _label_from_probs(score: torch.Tensor | np.ndarray, num_classes: int) -> torch.Tensor | np.ndarray:
    """Label map (uint8) from averaged probabilities (C, *S) -> (*S).

    Two classes: foreground probability > 0.5 (released rule); one channel:
    probability > 0.5; more classes: argmax.
    """
    if num_classes <= 2:
        label = score[num_classes - 1] > 0.5
    else:
        label = score.argmax(0)
    if torch.is_tensor(label):
        return label.to(torch.uint8)
    return label.astype(np.uint8)


def test_single_case(
    model: nn.Module,
    image: np.ndarray,
    stride_xy: int,
    stride_z: int,
    patch_size: Sequence[int],
    num_classes: int,
    sw_batch: int = 4,
    amp: str = "none",
) -> tuple[np.ndarray, np.ndarray]:
    """Sliding-window prediction of one 3D volume, as the released ``test_single_case``.

    The volume is zero-padded to at least ``patch_size`` (``pad // 2`` before,
    the rest after); windows start at ``min(stride * i, size - patch)`` along
    each axis (x outer, z inner); for every window the softmax probabilities
    are added up, then divided by the number of windows covering each voxel:
    ``score(v) = sum_w p_w(v) / n(v)``; the padding is cropped away. Label map:
    foreground probability > 0.5 for two classes (released rule), argmax for
    more, sigmoid > 0.5 for a single output channel.

    ``sw_batch`` windows go through the model per forward pass and the sums stay
    on the model's device; windows are accumulated in the reference's order, so
    the result does not depend on ``sw_batch`` (beyond the last-bit rounding a
    backend may give a batched convolution, ~1e-7 on the probabilities).

    Differences from the released function: the returned ``score_map`` holds
    the per-class probabilities (channel 1 = foreground), whereas the released
    one broadcast the foreground probability into every channel (it saved
    ``score_map[0]``, the foreground); the label map is ``uint8``.

    Args:
        model: network returning logits (B, C, W, H, D) or a tuple whose first
            item is the logits; eval mode is used and the caller's mode restored.
        image: volume (W, H, D), any real dtype (cast to float32).
        stride_xy: stride along the first two axes (LA: 18).
        stride_z: stride along the third axis (LA: 4).
        patch_size: window (pw, ph, pd) (LA: 112, 112, 80).
        num_classes: output channels C of the model.
        sw_batch: windows per forward pass (>= 1).
        amp: ``"none"`` (fp32, default) or ``"bf16"`` (forward passes under
            bfloat16 autocast; probabilities and their average in float32).

    Returns:
        ``(label_map, score_map)``: uint8 (W, H, D) and float32 (C, W, H, D).
    """
    with eval_mode(model), torch.inference_mode():
        score = _sliding_window_probs(model, image, stride_xy, stride_z, patch_size, num_classes, sw_batch, amp)
        score_np = score.cpu().numpy()  # the one transfer back
    label_map = _label_from_probs(score_np, num_classes)
    return label_map, score_np


def largest_connected_component(mask: np.ndarray) -> np.ndarray:
    """Keep the largest connected component of a binary mask (``--nms``).

    Connectivity is full (26-neighbourhood in 3D; scikit-image's default, as in
    the released ``getLargestCC``); ties go to the component met first in raster
    order. An empty mask is returned empty (the released function stops with an
    ``AssertionError`` there; the empty-prediction rule of the metrics then
    applies).

    Args:
        mask: binary mask, any shape, e.g. (W, H, D); non-zero is foreground.

    Returns:
        A bool mask of the same shape.
    """
    components = connected_components(np.asarray(mask) > 0)
    if components.max() == 0:
        return np.zeros(components.shape, dtype=bool)
    sizes = np.bincount(components.ravel())[1:]
    return components == int(np.argmax(sizes)) + 1


# --------------------------------------------------------------------------- 2D slice-wise


def test_single_volume_2d(
    model: nn.Module,
    image: np.ndarray,
    num_classes: int = 4,
    patch_size: Sequence[int] = (256, 256),
    batch: int = 16,
    amp: str = "none",
) -> np.ndarray:
    """Slice-wise prediction of a volume, as the released ``test_ACDC.py``.

    Each slice (H, W) is zoomed to ``patch_size`` with order 0, the slices go
    through the model ``batch`` at a time, ``argmax(softmax(logits))`` gives the
    labels, which are zoomed back to (H, W) with order 0.

    Args:
        model: 2D network returning logits (B, C, h, w) or (logits, ...).
        image: volume (S, H, W), slices first.
        num_classes: output channels C.
        patch_size: network input size (h, w) (ACDC: 256, 256).
        batch: slices per forward pass (>= 1).
        amp: ``"none"`` (fp32, default) or ``"bf16"`` (forward passes under
            bfloat16 autocast; softmax and argmax in float32).

    Returns:
        The label map, uint8 (S, H, W).
    """
    if image.ndim != 3:
        raise ValueError(f"test_single_volume_2d takes a volume (S, H, W), got shape {image.shape}.")
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch} (flag --sw_batch).")
    patch = _check_patch(patch_size, 2)
    _, x, y = image.shape
    slices = np.stack(
        [zoom(np.asarray(s, dtype=np.float32), (patch[0] / x, patch[1] / y), order=0) for s in image]
    )
    if slices.shape[1:] != patch:
        raise ValueError(f"Zooming slices of {(x, y)} gave {slices.shape[1:]}, not {patch}.")
    device = model_device(model)
    with eval_mode(model), torch.inference_mode():
        inputs = torch.from_numpy(slices).to(device).unsqueeze(1)  # (S, 1, h, w)
        labels = []
        for first in range(0, inputs.shape[0], batch):
            with amp_autocast(device, amp):
                logits = first_output(model(inputs[first:first + batch]))
            probs = _probabilities(logits.float(), num_classes)
            labels.append(probs.argmax(1).to(torch.uint8))
        labels_np = torch.cat(labels).cpu().numpy()
    prediction = np.zeros(image.shape, dtype=np.uint8)
    for ind, out in enumerate(labels_np):
        back = zoom(out, (x / patch[0], y / patch[1]), order=0)
        if back.shape != (x, y):
            raise ValueError(f"Zooming a {patch} prediction back gave {back.shape}, not {(x, y)}.")
        prediction[ind] = back
    return prediction


# --------------------------------------------------------------------------- validation


def validate_la_cases(
    model: nn.Module,
    root: str,
    case_ids: Sequence[str],
    num_classes: int = 2,
    patch_size: Sequence[int] = (112, 112, 80),
    stride_xy: int = 18,
    stride_z: int = 4,
    sw_batch: int = 4,
    progress: bool = False,
    amp: str = "none",
    case_path: Callable[[str, str], str] = la_case_path,
) -> float:
    """Mean Dice over LA cases, as the released ``var_all_case_LA``.

    Batched sliding window (:func:`test_single_case` semantics), foreground
    probability > 0.5, no connected-component step, Dice per case with an empty
    prediction scoring 0, mean over the cases. Dice is computed on the model's
    device; one number per case comes back.

    Args:
        model: the network (eval mode used, caller's mode restored).
        root: LA folder holding ``2018LA_Seg_Training Set/<ID>/mri_norm2.h5``.
        case_ids: case identifiers (e.g. the lines of ``test.list``).
        num_classes, patch_size, stride_xy, stride_z, sw_batch: as in
            :func:`test_single_case`.
        progress: show a tqdm bar.
        amp: ``"none"`` or ``"bf16"``, as in :func:`test_single_case`.
        case_path: ``(root, case) -> h5 path`` (a dataset description's ``case_path``).

    Returns:
        The mean Dice (float).

    Raises:
        FileNotFoundError, DataError: a case file is missing or invalid
            (:func:`dataloaders.h5io.validate_pair`), named with the fix.
    """
    if not case_ids:
        raise ValueError("validate_la_cases needs at least one case id.")
    device = model_device(model)
    total = 0.0
    for case in tqdm(case_ids, desc="validate LA", disable=not progress, leave=False):
        path = case_path(root, case)
        data = load_h5(path)
        validate_pair(data["image"], data["label"], num_classes, path, ndim=3)  # never use a broken case
        with eval_mode(model), torch.inference_mode():
            score = _sliding_window_probs(model, data["image"], stride_xy, stride_z, patch_size, num_classes,
                                          sw_batch, amp)
            pred = _label_from_probs(score, num_classes) > 0
            gt = torch.from_numpy(np.asarray(data["label"])).to(device) > 0
            total += dice_coefficient(pred, gt)
    return total / len(case_ids)


def validate_acdc_volumes(
    model: nn.Module,
    root: str,
    case_names: Sequence[str],
    num_classes: int = 4,
    patch_size: Sequence[int] = (256, 256),
    batch: int = 16,
    progress: bool = False,
    amp: str = "none",
    case_path: Callable[[str, str], str] = acdc_volume_path,
) -> np.ndarray:
    """Per-class mean (Dice, 95HD) over ACDC volumes, as the reference's ``val_2d``.

    Each volume is predicted with :func:`test_single_volume_2d`; for every class
    1..C-1 Dice and 95HD (medpy, voxels) are computed, an empty prediction
    scoring (0, 0); the values are averaged over the volumes (95HD with
    ``nanmean``, NaN arising only for a class absent from the ground truth).

    Args:
        model: 2D network.
        root: ACDC folder holding ``data/<name>.h5``.
        case_names: volume names like ``patient001_frame01`` (``val.list``).
        num_classes, patch_size, batch: as in :func:`test_single_volume_2d`.
        progress: show a tqdm bar.
        amp: ``"none"`` or ``"bf16"``, as in :func:`test_single_volume_2d`.
        case_path: ``(root, name) -> h5 path`` (a dataset description's ``case_path``).

    Returns:
        float64 array (C - 1, 2): column 0 Dice, column 1 95HD, row c-1 = class c.
        ``result[:, 0].mean()`` is the reference's selection score.

    Raises:
        FileNotFoundError, DataError: a volume file is missing or invalid
            (:func:`dataloaders.h5io.validate_pair`), named with the fix.
    """
    if not case_names:
        raise ValueError("validate_acdc_volumes needs at least one volume name.")
    rows = np.zeros((len(case_names), num_classes - 1, 2), dtype=np.float64)
    for i, case in enumerate(tqdm(case_names, desc="validate ACDC", disable=not progress, leave=False)):
        path = case_path(root, case)
        data = load_h5(path)
        validate_pair(data["image"], data["label"], num_classes, path, ndim=3)  # never use a broken volume
        prediction = test_single_volume_2d(model, data["image"], num_classes, patch_size, batch, amp)
        label = np.asarray(data["label"])
        for c in range(1, num_classes):
            rows[i, c - 1] = calculate_dice_hd95(prediction == c, label == c)
    with np.errstate(all="ignore"):
        dice = rows[:, :, 0].mean(axis=0)
        hd95 = np.array([np.nanmean(col) if np.isfinite(col).any() else np.nan for col in rows[:, :, 1].T])
    return np.stack([dice, hd95], axis=1)
