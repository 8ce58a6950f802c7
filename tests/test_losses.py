"""Tests for code/utils/losses.py: each formula against a naive loop, 2D and 3D."""
from __future__ import annotations
import itertools
import math

import pytest
import torch

from utils.losses import BinaryDiceLoss, DiceLoss, binary_dice_loss, cross_entropy_loss, one_hot, soft_dice_loss

SHAPES = {"2d": (2, 3, 4, 5), "3d": (2, 3, 3, 4, 2)}


def _probs(shape, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(torch.randn(shape, generator=g) * 2, dim=1)


def _labels(shape, num_classes, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, num_classes, shape, generator=g)


def naive_binary_dice(p, g, eps=1e-8):
    inter = sp = sg = 0.0
    for idx in itertools.product(*(range(s) for s in p.shape)):
        inter += float(p[idx]) * float(g[idx])
        sp += float(p[idx])
        sg += float(g[idx])
    return 1 - (2 * inter + eps) / (sp + sg + eps)


def naive_class_dice(a, b, smooth=1e-10, weight=None):
    num_classes = a.shape[1]
    total = 0.0
    rest = [range(s) for s in (a.shape[0],) + tuple(a.shape[2:])]
    for c in range(num_classes):
        inter = sa = sb = 0.0
        for idx in itertools.product(*rest):
            full = (idx[0], c) + idx[1:]
            inter += float(a[full]) * float(b[full])
            sa += float(a[full]) ** 2
            sb += float(b[full]) ** 2
        term = 1 - (2 * inter + smooth) / (sa + sb + smooth)
        total += term * (1.0 if weight is None else weight[c])
    return total / num_classes


@pytest.mark.parametrize("dims", ["2d", "3d"])
def test_binary_dice_matches_naive_loop(dims):
    probs = _probs(SHAPES[dims], 0)
    fg = probs[:, 1]
    target = _labels(fg.shape, 2, 1) == 1
    got = binary_dice_loss(fg, target)
    assert got.dtype == torch.float32 and got.dim() == 0
    assert got.item() == pytest.approx(naive_binary_dice(fg, target.float()), rel=1e-5)
    assert BinaryDiceLoss()(fg, target).item() == pytest.approx(got.item(), rel=1e-7)
    # applied to the whole softmax tensors (the LA VAT distance)
    other = _probs(SHAPES[dims], 2)
    assert binary_dice_loss(probs, other).item() == pytest.approx(naive_binary_dice(probs, other), rel=1e-5)


def test_binary_dice_closed_form():
    g = torch.tensor([[1.0, 0.0, 1.0, 0.0]])
    assert binary_dice_loss(g, g).item() == pytest.approx(0.0, abs=1e-7)
    assert binary_dice_loss(1 - g, g).item() == pytest.approx(1.0, abs=1e-7)
    # p = 0.5 everywhere: 1 - 2*1 / (2 + 2)
    assert binary_dice_loss(torch.full((1, 4), 0.5), g).item() == pytest.approx(0.5, rel=1e-6)


@pytest.mark.parametrize("dims", ["2d", "3d"])
def test_soft_dice_matches_naive_loop(dims):
    a = _probs(SHAPES[dims], 3)
    b = _probs(SHAPES[dims], 4)
    assert soft_dice_loss(a, b).item() == pytest.approx(naive_class_dice(a, b), rel=1e-5)
    w = [0.5, 2.0, 1.0]
    assert soft_dice_loss(a, b, weight=w).item() == pytest.approx(naive_class_dice(a, b, weight=w), rel=1e-5)


@pytest.mark.parametrize("dims", ["2d", "3d"])
def test_dice_loss_one_hot_targets(dims):
    shape = SHAPES[dims]
    probs = _probs(shape, 5)
    labels = _labels((shape[0],) + shape[2:], shape[1], 6)
    expected = naive_class_dice(probs, one_hot(labels, shape[1]))
    loss = DiceLoss(shape[1])
    assert loss(probs, labels).item() == pytest.approx(expected, rel=1e-5)
    assert loss(probs, labels.unsqueeze(1)).item() == pytest.approx(expected, rel=1e-5)  # (B, 1, *spatial)
    logits = torch.log(probs) + 3.0  # softmax(logits) == probs
    assert loss(logits, labels, softmax=True).item() == pytest.approx(expected, rel=1e-5)
    # a perfect one-hot prediction gives 0
    assert loss(one_hot(labels, shape[1]), labels).item() == pytest.approx(0.0, abs=1e-6)


def test_one_hot_values():
    labels = torch.tensor([[0, 2], [1, 5]])
    oh = one_hot(labels, 3)
    assert oh.shape == (2, 3, 2)
    assert oh[:, :, 0].tolist() == [[1, 0, 0], [0, 1, 0]]
    assert oh[1, :, 1].tolist() == [0, 0, 0]  # out-of-range label: all zero, as in the released DiceLoss


@pytest.mark.parametrize("dims", ["2d", "3d"])
def test_cross_entropy_matches_naive_loop(dims):
    shape = SHAPES[dims]
    g = torch.Generator().manual_seed(7)
    logits = torch.randn(shape, generator=g)
    labels = _labels((shape[0],) + shape[2:], shape[1], 8)
    total, count = 0.0, 0
    for idx in itertools.product(*(range(s) for s in labels.shape)):
        row = [float(logits[(idx[0], c) + idx[1:]]) for c in range(shape[1])]
        lse = math.log(sum(math.exp(v) for v in row))
        total += lse - row[int(labels[idx])]
        count += 1
    assert cross_entropy_loss(logits, labels).item() == pytest.approx(total / count, rel=1e-5)
    assert cross_entropy_loss(logits, labels.unsqueeze(1)).item() == pytest.approx(total / count, rel=1e-5)


def test_losses_under_autocast_return_float32():
    probs = _probs(SHAPES["3d"], 9)
    labels = _labels((2, 3, 4, 2), 3, 10)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        p16 = probs.to(torch.bfloat16)
        values = [
            binary_dice_loss(p16[:, 1], labels == 1),
            soft_dice_loss(p16, probs),
            DiceLoss(3)(p16, labels),
            cross_entropy_loss(p16, labels),
        ]
    for v in values:
        assert v.dtype == torch.float32 and v.dim() == 0 and torch.isfinite(v)


def test_bad_input_raises():
    with pytest.raises(ValueError, match="same shape"):
        binary_dice_loss(torch.rand(2, 3), torch.rand(2, 4))
    with pytest.raises(ValueError, match="same shape"):
        soft_dice_loss(torch.rand(1, 2, 3), torch.rand(1, 3, 3))
    with pytest.raises(ValueError, match="one per class"):
        soft_dice_loss(torch.rand(1, 2, 3), torch.rand(1, 2, 3), weight=[1.0])
    with pytest.raises(ValueError, match=r"\(B, 4, \*spatial\)"):
        DiceLoss(4)(torch.rand(1, 3, 4, 4), torch.zeros(1, 4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="not one-hot"):
        DiceLoss(2)(torch.rand(1, 2, 4, 4), torch.zeros(1, 2, 4, 4))
    with pytest.raises(ValueError, match="n_classes"):
        DiceLoss(0)
    with pytest.raises(ValueError, match="labels"):
        cross_entropy_loss(torch.rand(1, 2, 4, 4), torch.zeros(1, 3, 4, dtype=torch.long))
