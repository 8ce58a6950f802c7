"""Tests for utils/copy_paste.py (BCP): each piece against a naive loop / numpy computation.

The optional last section runs the released BCP functions themselves (from a clone at
/tmp/BCP, ``.cuda()`` made a no-op) and compares bit for bit.
"""
from __future__ import annotations

import ast
import math
import os
import subprocess

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from utils.copy_paste import (bcp_mix_loss_acdc, bcp_mix_loss_la, bcp_pretrain_loss_acdc, bcp_pretrain_loss_la,
                              class_dice_loss, copy_paste_mask, ema_update, mix, per_sample_dice_loss)

BCP_ROOT = "/tmp/BCP"


# --------------------------------------------------------------------------- naive references

def _same_np_state(s1, s2) -> bool:
    return s1[0] == s2[0] and np.array_equal(s1[1], s2[1]) and s1[2:] == s2[2:]


def _naive_box(seed: int, dataset: str):
    """The released draws with the released numbers written out: returns (corner, box, state after)."""
    np.random.seed(seed)
    if dataset == "la":  # context_mask at 112x112x80, ratio 2/3: box 74x74x53, literals 112/112/80
        corner = (np.random.randint(0, 112 - 74), np.random.randint(0, 112 - 74), np.random.randint(0, 80 - 53))
        box = (74, 74, 53)
    else:  # generate_mask at 256x256: box 170x170
        corner = (np.random.randint(0, 256 - 170), np.random.randint(0, 256 - 170))
        box = (170, 170)
    return corner, box, np.random.get_state()


def _naive_mask(spatial, corner, box) -> np.ndarray:
    """1 outside, 0 inside, element by element along each axis."""
    inside = np.ones(spatial, dtype=bool)
    for axis, (c, p) in enumerate(zip(corner, box)):
        idx = np.arange(spatial[axis])
        along = (idx >= c) & (idx < c + p)
        inside &= along.reshape([-1 if a == axis else 1 for a in range(len(spatial))])
    return np.where(inside, 0.0, 1.0)


def _softmax_np(logits: np.ndarray) -> np.ndarray:
    """Softmax over axis 1 of (B, C, ...) in float64, voxel by voxel."""
    x = logits.astype(np.float64)
    out = np.empty_like(x)
    b, c = x.shape[:2]
    for n in range(b):
        for v in np.ndindex(*x.shape[2:]):
            z = [x[(n, k) + v] for k in range(c)]
            mx = max(z)
            e = [math.exp(t - mx) for t in z]
            s = sum(e)
            for k in range(c):
                out[(n, k) + v] = e[k] / s
    return out


def _ce_np(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-voxel cross-entropy -log softmax(x)[y], (B, ...)."""
    p = _softmax_np(logits)
    out = np.empty(labels.shape)
    for idx in np.ndindex(*labels.shape):
        out[idx] = -math.log(p[(idx[0], int(labels[idx])) + idx[1:]])
    return out


def _per_sample_dice_np(logits, labels, mask=None, smooth=1e-5) -> float:
    """mask_DiceLoss written out: 1 - mean over (n, c) of (2 sum p g m + s) / (sum (p + g) m + s)."""
    p = _softmax_np(logits)
    b, c = p.shape[:2]
    m = np.ones(labels.shape) if mask is None else mask.astype(np.float64)
    dices = []
    for n in range(b):
        for k in range(c):
            inter = union = 0.0
            for v in np.ndindex(*labels.shape[1:]):
                g = 1.0 if labels[(n,) + v] == k else 0.0
                inter += p[(n, k) + v] * g * m[(n,) + v]
                union += (p[(n, k) + v] + g) * m[(n,) + v]
            dices.append((2 * inter + smooth) / (union + smooth))
    return 1 - sum(dices) / len(dices)


def _class_dice_np(probs, labels, mask, form="released", smooth=1e-10) -> float:
    """ACDC DiceLoss written out: class mean of 1 - (2 sum p g m_c + s) / (sum p^2 m_c + sum g^2 m_c + s)."""
    c = probs.shape[1]
    total = 0.0
    for k in range(c):
        inter = y_sum = z_sum = 0.0
        for idx in np.ndindex(*labels.shape):
            p = probs[(idx[0], k) + idx[1:]]
            g = 1.0 if labels[idx] == k else 0.0
            if form == "paper" and k == 0:
                m = 1.0
            else:
                m = float(mask[idx] == 1) if form == "paper" else float(mask[idx])
            inter += p * g * m
            y_sum += g * g * m
            z_sum += p * p * m
        total += 1 - (2 * inter + smooth) / (z_sum + y_sum + smooth)
    return total / c


def _masked_ce_np(logits, y_o, y_i, mask, w_o, w_i) -> float:
    ce_o, ce_i = _ce_np(logits, y_o), _ce_np(logits, y_i)
    num_o = num_i = den_o = den_i = 0.0
    for idx in np.ndindex(*mask.shape):
        m = float(mask[idx])
        num_o += ce_o[idx] * m
        den_o += m
        num_i += ce_i[idx] * (1 - m)
        den_i += 1 - m
    return w_o * num_o / den_o + w_i * num_i / den_i


def _region_weights_naive(unlab: bool, l_weight=1.0, u_weight=0.5):
    # ground truth outside the box unless ``unlab``: the outside then holds pseudo-labels.
    return (u_weight, l_weight) if unlab else (l_weight, u_weight)


def _toy(spatial, classes, seed, batch=2):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn((batch, classes) + tuple(spatial), generator=g) * 2
    y_o = torch.randint(0, classes, (batch,) + tuple(spatial), generator=g)
    y_i = torch.randint(0, classes, (batch,) + tuple(spatial), generator=g)
    mask = torch.ones(spatial)
    mask[tuple(slice(1, 1 + max(1, s * 2 // 3)) for s in spatial)] = 0
    loss_mask = mask.repeat(batch, *([1] * len(spatial)))
    return logits, y_o, y_i, loss_mask


# --------------------------------------------------------------------------- mask

@pytest.mark.parametrize("seed", [0, 1337, 2024])
def test_la_mask_matches_released_draws(seed):
    corner, box, state_after = _naive_box(seed, "la")
    np.random.seed(seed)
    mask, loss_mask = copy_paste_mask((2, 1, 112, 112, 80), 2 / 3)
    assert _same_np_state(np.random.get_state(), state_after)
    expected = _naive_mask((112, 112, 80), corner, box)
    assert mask.dtype == torch.float32 and mask.shape == (112, 112, 80)
    assert np.array_equal(mask.numpy(), expected)
    assert loss_mask.shape == (2, 112, 112, 80)
    assert all(np.array_equal(loss_mask[i].numpy(), expected) for i in range(2))
    assert int((mask == 0).sum()) == 74 * 74 * 53


@pytest.mark.parametrize("seed", [0, 1337, 2024])
def test_acdc_mask_matches_released_draws(seed):
    corner, box, state_after = _naive_box(seed, "acdc")
    np.random.seed(seed)
    mask, loss_mask = copy_paste_mask((6, 1, 256, 256), 2 / 3, dtype=torch.long)
    assert _same_np_state(np.random.get_state(), state_after)
    assert mask.dtype == torch.long
    expected = _naive_mask((256, 256), corner, box)
    assert np.array_equal(mask.numpy(), expected)
    assert loss_mask.shape == (6, 256, 256) and bool((loss_mask == mask).all())
    assert int((mask == 0).sum()) == 170 * 170


def test_mask_corner_range_excludes_size_minus_box():
    # corners cover exactly [0, size - box - 1] on each axis (np.random.randint's high is exclusive)
    np.random.seed(3)
    corners = []
    for _ in range(150):
        mask, _ = copy_paste_mask((1, 1, 24, 12), 2 / 3)  # box 16 x 8: corner x in [0, 7], y in [0, 3]
        zeros = np.argwhere(mask.numpy() == 0)
        assert (zeros.max(0) - zeros.min(0)).tolist() == [15, 7]
        corners.append(zeros.min(0))
    assert np.min(corners, 0).tolist() == [0, 0] and np.max(corners, 0).tolist() == [7, 3]


def test_mask_released_la_literal_range_at_another_patch():
    # LA's corner range uses 112/112/80 whatever the patch; with range_size the draw and the clipping follow it.
    np.random.seed(5)
    corner = (np.random.randint(0, 112 - 64), np.random.randint(0, 112 - 64), np.random.randint(0, 80 - 42))
    state_after = np.random.get_state()
    np.random.seed(5)
    mask, _ = copy_paste_mask((1, 1, 96, 96, 64), 2 / 3, range_size=(112, 112, 80))
    assert _same_np_state(np.random.get_state(), state_after)
    assert np.array_equal(mask.numpy(), _naive_mask((96, 96, 64), corner, (64, 64, 42)))


def test_mask_invalid_arguments():
    with pytest.raises(ValueError, match="img_a.shape"):
        copy_paste_mask((112, 112, 80))
    with pytest.raises(ValueError, match="ratio"):
        copy_paste_mask((1, 1, 8, 8), 0.0)
    with pytest.raises(ValueError, match="smaller ratio"):
        copy_paste_mask((1, 1, 8, 8), 1.0)
    with pytest.raises(ValueError, match="one entry per spatial"):
        copy_paste_mask((1, 1, 8, 8), range_size=(8, 8, 8))


# --------------------------------------------------------------------------- mixing

def test_mix_images_and_labels():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(2, 1, 5, 4, 3, generator=g), torch.randn(2, 1, 5, 4, 3, generator=g)
    la, lb = torch.randint(0, 3, (2, 5, 4, 3), generator=g), torch.randint(0, 3, (2, 5, 4, 3), generator=g)
    mask = torch.ones(5, 4, 3)
    mask[1:4, 0:2, 1:3] = 0
    for m in (mask, mask.long()):
        x, y = mix(a, b, m), mix(la, lb, m)
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        for n in range(2):
            for i, j, k in np.ndindex(5, 4, 3):
                src = (a, la) if mask[i, j, k] == 1 else (b, lb)
                assert x[n, 0, i, j, k] == src[0][n, 0, i, j, k]
                assert y[n, i, j, k] == src[1][n, i, j, k]
    # float32 pseudo-labels (released LA) mixed with int64 labels: float result, as released
    y = mix(la, lb.float(), mask.long())
    assert y.dtype == torch.float32 and torch.equal(y, la * mask.long() + lb.float() * (1 - mask.long()))
    assert mix(la.to(torch.uint8), lb.to(torch.uint8), mask).dtype == torch.uint8


# --------------------------------------------------------------------------- Dice forms

def test_per_sample_dice_against_loops():
    logits, y, _, loss_mask = _toy((3, 4, 2), 2, seed=1)
    expected_masked = _per_sample_dice_np(logits.numpy(), y.numpy(), loss_mask.numpy())
    expected_plain = _per_sample_dice_np(logits.numpy(), y.numpy())
    assert per_sample_dice_loss(logits, y, loss_mask).item() == pytest.approx(expected_masked, rel=1e-5)
    assert per_sample_dice_loss(logits, y).item() == pytest.approx(expected_plain, rel=1e-5)
    # C == 1: the sigmoid pair [1 - q, q], i.e. the 2-class softmax of logits [0, x]
    x = logits[:, 1:] - logits[:, :1]
    assert per_sample_dice_loss(x, y, loss_mask).item() == pytest.approx(expected_masked, rel=1e-5)


@pytest.mark.parametrize("form", ["released", "paper"])
def test_class_dice_against_loops(form):
    logits, y, _, loss_mask = _toy((5, 4), 4, seed=2)
    p = torch.softmax(logits, 1)
    expected = _class_dice_np(p.double().numpy(), y.numpy(), loss_mask.numpy(), form)
    assert class_dice_loss(p, y, loss_mask, form=form).item() == pytest.approx(expected, rel=1e-5)


def test_class_dice_forms_differ_only_in_background():
    logits, y, _, loss_mask = _toy((5, 4), 4, seed=3)
    p = torch.softmax(logits, 1)
    released = class_dice_loss(p, y, loss_mask, form="released")
    paper = class_dice_loss(p, y, loss_mask, form="paper")
    assert not torch.isclose(released, paper)
    # paper form = the released per-class terms, except class 0 without mask
    bg_released = class_dice_loss(p[:, :1], torch.zeros_like(y).masked_fill(y != 0, 1), loss_mask)
    bg_paper = class_dice_loss(p[:, :1], torch.zeros_like(y).masked_fill(y != 0, 1), None)
    assert torch.isclose(paper - released, (bg_paper - bg_released) / 4, atol=1e-6)
    with pytest.raises(ValueError, match="form"):
        class_dice_loss(p, y, loss_mask, form="fixed")


# --------------------------------------------------------------------------- BCP losses

@pytest.mark.parametrize("unlab", [False, True])
def test_la_mix_loss_against_loops(unlab):
    logits, y_o, y_i, loss_mask = _toy((6, 6, 4), 2, seed=4)
    w_o, w_i = _region_weights_naive(unlab)
    lg, yo, yi, m = logits.numpy(), y_o.numpy(), y_i.numpy(), loss_mask.numpy()
    dice = w_o * _per_sample_dice_np(lg, yo, m) + w_i * _per_sample_dice_np(lg, yi, 1 - m)
    ce = _masked_ce_np(lg, yo, yi, m, w_o, w_i)
    got = bcp_mix_loss_la(logits, y_o, y_i.float(), loss_mask.long(), u_weight=0.5, unlab=unlab)
    assert got.item() == pytest.approx((dice + ce) / 2, rel=1e-5)


def test_la_mix_loss_weights_matter():
    logits, y_o, y_i, loss_mask = _toy((6, 6, 4), 2, seed=5)
    a = bcp_mix_loss_la(logits, y_o, y_i, loss_mask)
    b = bcp_mix_loss_la(logits, y_o, y_i, loss_mask, unlab=True)
    c = bcp_mix_loss_la(logits, y_o, y_i, loss_mask, l_weight=0.5, u_weight=1.0)
    assert not torch.isclose(a, b)
    assert torch.equal(b, c)


def test_la_pretrain_loss_against_loops():
    logits, y, _, _ = _toy((6, 6, 4), 2, seed=6)
    ce = _ce_np(logits.numpy(), y.numpy()).mean()
    expected = (ce + _per_sample_dice_np(logits.numpy(), y.numpy())) / 2
    assert bcp_pretrain_loss_la(logits, y).item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("unlab", [False, True])
@pytest.mark.parametrize("form", ["released", "paper"])
def test_acdc_mix_loss_against_loops(unlab, form):
    logits, y_o, y_i, loss_mask = _toy((6, 6), 4, seed=7)
    w_o, w_i = _region_weights_naive(unlab)
    p = _softmax_np(logits.numpy())
    yo, yi, m = y_o.numpy(), y_i.numpy(), loss_mask.numpy()
    dice = w_o * _class_dice_np(p, yo, m, form) + w_i * _class_dice_np(p, yi, 1 - m, form)
    ce = _masked_ce_np(logits.numpy(), yo, yi, m, w_o, w_i)
    got_dice, got_ce = bcp_mix_loss_acdc(logits, y_o, y_i.float(), loss_mask.long(), u_weight=0.5, unlab=unlab,
                                         dice=form)
    assert got_dice.item() == pytest.approx(dice, rel=1e-5)
    assert got_ce.item() == pytest.approx(ce, rel=1e-5)


def test_acdc_pretrain_loss_weights_both_regions_one():
    logits, y_a, y_b, loss_mask = _toy((6, 6), 4, seed=8)
    p = _softmax_np(logits.numpy())
    ya, yb, m = y_a.numpy(), y_b.numpy(), loss_mask.numpy()
    dice = _class_dice_np(p, ya, m) + _class_dice_np(p, yb, 1 - m)
    ce = _masked_ce_np(logits.numpy(), ya, yb, m, 1.0, 1.0)
    assert bcp_pretrain_loss_acdc(logits, y_a, y_b, loss_mask).item() == pytest.approx((dice + ce) / 2, rel=1e-5)


def test_losses_reject_bad_shapes():
    logits, y_o, y_i, loss_mask = _toy((6, 6), 4, seed=9)
    with pytest.raises(ValueError, match="no channel axis"):
        bcp_mix_loss_acdc(logits, y_o[:, None], y_i, loss_mask)
    with pytest.raises(ValueError, match="copy_paste_mask"):
        bcp_mix_loss_la(logits, y_o, y_i, loss_mask[0])
    with pytest.raises(ValueError, match="dice"):
        bcp_mix_loss_acdc(logits, y_o, y_i, loss_mask, dice="fixed")


def test_losses_backpropagate():
    logits, y_o, y_i, loss_mask = _toy((6, 6), 4, seed=10)
    logits.requires_grad_(True)
    d, ce = bcp_mix_loss_acdc(logits, y_o, y_i, loss_mask)
    (d + ce + bcp_mix_loss_la(logits, y_o, y_i, loss_mask)).backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


# --------------------------------------------------------------------------- EMA

def _bn_net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Conv2d(3, 2, 1))
    net.train()
    for _ in range(seed % 3 + 1):  # different running statistics and num_batches_tracked
        net(torch.randn(2, 1, 6, 6))
    return net


def _snapshot(net: nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().clone().double().numpy() for k, v in net.state_dict().items()}


@pytest.mark.parametrize("buffers", [False, True])
def test_ema_update_against_formula(buffers):
    teacher, student = _bn_net(1), _bn_net(2)
    with torch.no_grad():
        teacher[1].num_batches_tracked.fill_(10)
        student[1].num_batches_tracked.fill_(200)
    t0, s0 = _snapshot(teacher), _snapshot(student)
    ema_update(teacher, student, 0.99, buffers=buffers)
    param_names = {name for name, _ in teacher.named_parameters()}
    for key, value in teacher.state_dict().items():
        got = value.double().numpy()
        if key.endswith("num_batches_tracked"):
            # 0.99 * 10 + 0.01 * 200 = 11.9, copied into int64: 11 (released ACDC); untouched for LA
            assert int(value) == (11 if buffers else 10)
        elif key in param_names or buffers:
            assert np.allclose(got, 0.99 * t0[key] + 0.01 * s0[key], rtol=1e-6, atol=1e-7), key
        else:
            assert np.array_equal(got, t0[key]), key
    assert np.array_equal(_snapshot(student)["0.weight"], s0["0.weight"])  # the student is not touched


def test_ema_update_rejects_mismatched_models():
    with pytest.raises(ValueError, match="parameters"):
        ema_update(nn.Linear(2, 2), nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2)))
    with pytest.raises(ValueError, match="keys"):
        ema_update(nn.Sequential(nn.Linear(2, 2)), nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 2)),
                   buffers=True)


# --------------------------------------------------------------------------- released code (optional)

def _released_namespace(path: str, names: set[str], namespace: dict) -> dict:
    """Execute only the named top-level functions/classes of a released file (its imports need
    tkinter, skimage, scipy and a ``utils`` package that clashes with this repository's)."""
    with open(path) as f:
        tree = ast.parse(f.read())
    body = [node for node in tree.body if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name in names]
    assert {node.name for node in body} == names, f"not found in {path}"
    exec(compile(ast.Module(body=body, type_ignores=[]), path, "exec"), namespace)
    return namespace


@pytest.fixture
def released(monkeypatch):
    monkeypatch.setattr(torch.Tensor, "cuda", lambda self, *a, **k: self)
    base = {"np": np, "torch": torch, "nn": nn, "F": F}
    losses = _released_namespace(os.path.join(BCP_ROOT, "code/utils/losses.py"),
                                 {"mask_DiceLoss", "DiceLoss", "to_one_hot", "get_probability"}, dict(base))
    la = _released_namespace(os.path.join(BCP_ROOT, "code/utils/BCP_utils.py"),
                             {"context_mask", "mix_loss", "update_ema_variables"},
                             dict(base, DICE=losses["mask_DiceLoss"](nclass=2),
                                  CE=nn.CrossEntropyLoss(reduction="none")))
    acdc = _released_namespace(os.path.join(BCP_ROOT, "code/ACDC_BCP_train.py"),
                               {"generate_mask", "mix_loss", "update_model_ema"},
                               dict(base, dice_loss=losses["DiceLoss"](n_classes=4)))
    return {"losses": losses, "la": la, "acdc": acdc}


@pytest.mark.skipif(not os.path.isdir(BCP_ROOT), reason="released BCP clone not at /tmp/BCP")
def test_against_released_code(released):
    la, acdc = released["la"], released["acdc"]
    # masks: same boxes, same generator state
    img = torch.zeros(2, 1, 112, 112, 80)
    np.random.seed(11)
    ref_mask, ref_loss_mask = la["context_mask"](img, 2 / 3)
    state = np.random.get_state()
    np.random.seed(11)
    mask, loss_mask = copy_paste_mask(img.shape, 2 / 3, dtype=torch.long)
    assert _same_np_state(np.random.get_state(), state)
    assert torch.equal(mask, ref_mask) and torch.equal(loss_mask, ref_loss_mask)
    img = torch.zeros(6, 1, 256, 256)
    np.random.seed(12)
    ref_mask, ref_loss_mask = acdc["generate_mask"](img)
    np.random.seed(12)
    mask, loss_mask = copy_paste_mask(img.shape, 2 / 3)
    assert torch.equal(mask, ref_mask.float()) and torch.equal(loss_mask, ref_loss_mask.float())

    # LA loss (released labels: int64 ground truth, float32 pseudo-labels; int64 mask)
    logits, y_o, y_i, lm = _toy((6, 6, 4), 2, seed=13)
    for unlab in (False, True):
        ref = la["mix_loss"](logits, y_o, y_i.float(), lm.long(), u_weight=0.5, unlab=unlab)
        assert torch.equal(bcp_mix_loss_la(logits, y_o, y_i.float(), lm.long(), unlab=unlab), ref)
    ref = (F.cross_entropy(logits, y_o) + la["DICE"](logits, y_o)) / 2
    assert torch.equal(bcp_pretrain_loss_la(logits, y_o), ref)

    # ACDC loss, current released DiceLoss
    logits, y_o, y_i, lm = _toy((6, 6), 4, seed=14)
    for unlab in (False, True):
        ref_d, ref_ce = acdc["mix_loss"](logits, y_o, y_i.float(), lm.long(), u_weight=0.5, unlab=unlab)
        d, ce = bcp_mix_loss_acdc(logits, y_o, y_i.float(), lm.long(), unlab=unlab)
        assert torch.equal(d, ref_d) and torch.equal(ce, ref_ce)

    # EMA: LA parameters only, ACDC whole state_dict
    for fn, buffers in ((lambda s, t: la["update_ema_variables"](s, t, 0.99), False),
                        (lambda s, t: acdc["update_model_ema"](s, t, 0.99), True)):
        t_ref, t_new, student = _bn_net(1), _bn_net(1), _bn_net(2)
        fn(student, t_ref)
        ema_update(t_new, student, 0.99, buffers=buffers)
        for (k, a), (_, b) in zip(t_ref.state_dict().items(), t_new.state_dict().items()):
            assert torch.equal(a, b), (buffers, k)


def _paper_time_losses() -> str | None:
    """utils/losses.py as of the commit before a925e30 (git show, read-only), or None."""
    try:
        out = subprocess.run(["git", "-C", BCP_ROOT, "show", "a925e30^:code/utils/losses.py"],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


@pytest.mark.skipif(not os.path.isdir(BCP_ROOT), reason="released BCP clone not at /tmp/BCP")
def test_against_paper_time_acdc_dice(released, tmp_path):
    source = _paper_time_losses()
    if source is None:
        pytest.skip("the BCP clone has no history before commit a925e30")
    old = tmp_path / "losses_old.py"
    old.write_text(source)
    old_ns = _released_namespace(str(old), {"DiceLoss"}, {"np": np, "torch": torch, "nn": nn, "F": F})
    acdc = _released_namespace(os.path.join(BCP_ROOT, "code/ACDC_BCP_train.py"), {"mix_loss"},
                               {"np": np, "torch": torch, "nn": nn, "F": F, "dice_loss": old_ns["DiceLoss"](4)})
    logits, y_o, y_i, lm = _toy((6, 6), 4, seed=15)
    for unlab in (False, True):
        ref_d, ref_ce = acdc["mix_loss"](logits, y_o, y_i.float(), lm.long(), u_weight=0.5, unlab=unlab)
        d, ce = bcp_mix_loss_acdc(logits, y_o, y_i.float(), lm.long(), unlab=unlab, dice="paper")
        assert torch.equal(d, ref_d) and torch.equal(ce, ref_ce)
