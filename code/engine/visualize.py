"""Tensorboard image snapshots of training batches: image | label | prediction."""
from __future__ import annotations
from typing import Any

import torch


def _normalise(x: torch.Tensor) -> torch.Tensor:
    lo, hi = x.min(), x.max()
    return (x - lo) / (hi - lo).clamp_min(1e-8)


def _panel(image: torch.Tensor, label: torch.Tensor, pred: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(H, W) image, label, prediction -> (1, H, 3W + 4) grey panel, separated by white bars."""
    scale = float(max(num_classes - 1, 1))
    bar = torch.ones(image.shape[0], 2, device=image.device)
    return torch.cat([_normalise(image.float()), bar, label.float() / scale, bar, pred.float() / scale], 1)[None]


def add_volume_snapshot(writer: Any, image: torch.Tensor, label: torch.Tensor, probs: torch.Tensor,
                        iteration: int, labeled_bs: int) -> None:
    """3D batch (B, 1, H, W, D): the middle z slice of the first labeled and the
    first unlabeled item (foreground probability as prediction)."""
    z = image.shape[-1] // 2
    for tag, i in (("labeled", 0), ("unlabeled", min(labeled_bs, image.shape[0] - 1))):
        panel = _panel(image[i, 0, :, :, z], label[i, :, :, z], probs[i, 1, :, :, z], 2)
        writer.add_image(f"train/{tag}_image_label_prediction", panel.cpu(), iteration)


def add_slice_snapshot(writer: Any, image: torch.Tensor, label: torch.Tensor, probs: torch.Tensor,
                       iteration: int, labeled_bs: int) -> None:
    """2D batch (B, 1, H, W): first labeled and first unlabeled slice, argmax prediction."""
    c = probs.shape[1]
    for tag, i in (("labeled", 0), ("unlabeled", min(labeled_bs, image.shape[0] - 1))):
        panel = _panel(image[i, 0], label[i], probs[i].argmax(0), c)
        writer.add_image(f"train/{tag}_image_label_prediction", panel.cpu(), iteration)
