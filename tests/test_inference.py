"""Sliding window, slice-wise inference, largest component and validation helpers."""
from __future__ import annotations
import math

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.ndimage import zoom
from torch import nn

from engine.inference import (
    largest_connected_component,
    sliding_window_starts,
    test_single_case as single_case,
    test_single_volume_2d as single_volume_2d,
    validate_acdc_volumes,
    validate_la_cases,
)


class TinyNet3d(nn.Module):
    """(logits, features) like the SS-Net networks; 3x3x3 conv so borders matter."""

    def __init__(self, classes=2, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv3d(1, 3, 3, padding=1)
        self.bn = nn.BatchNorm3d(3)
        self.out = nn.Conv3d(3, classes, 1)
        self.drop = nn.Dropout3d(0.5)

    def forward(self, x):
        feats = self.drop(torch.relu(self.bn(self.conv(x))))
        return self.out(feats), feats


class TinyNet2d(nn.Module):
    def __init__(self, classes=4, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.out = nn.Conv2d(4, classes, 1)

    def forward(self, x):
        feats = torch.relu(self.bn(self.conv(x)))
        return self.out(feats), feats


def _reference_sliding_window(model, image, stride_xy, stride_z, patch, num_classes):
    """Straightforward one-window-at-a-time version of the released procedure."""
    w, h, d = image.shape
    pads = [max(p - s, 0) for s, p in zip(image.shape, patch)]
    image = np.pad(image, [(p // 2, p - p // 2) for p in pads])
    ww, hh, dd = image.shape
    score = np.zeros((num_classes, ww, hh, dd), np.float32)
    cnt = np.zeros((ww, hh, dd), np.float32)
    sx = math.ceil((ww - patch[0]) / stride_xy) + 1
    sy = math.ceil((hh - patch[1]) / stride_xy) + 1
    sz = math.ceil((dd - patch[2]) / stride_z) + 1
    model.eval()
    for x in range(sx):
        xs = min(stride_xy * x, ww - patch[0])
        for y in range(sy):
            ys = min(stride_xy * y, hh - patch[1])
            for z in range(sz):
                zs = min(stride_z * z, dd - patch[2])
                tile = torch.from_numpy(image[xs:xs + patch[0], ys:ys + patch[1], zs:zs + patch[2]].astype(np.float32))
                with torch.no_grad():
                    prob = F.softmax(model(tile[None, None])[0], dim=1)[0].numpy()
                score[:, xs:xs + patch[0], ys:ys + patch[1], zs:zs + patch[2]] += prob
                cnt[xs:xs + patch[0], ys:ys + patch[1], zs:zs + patch[2]] += 1
    score /= cnt[None]
    l0, l1, l2 = (p // 2 for p in pads)
    return score[:, l0:l0 + w, l1:l1 + h, l2:l2 + d]


def test_window_starts():
    assert sliding_window_starts(100, 30, 18) == [0, 18, 36, 54, 70]
    assert sliding_window_starts(30, 30, 18) == [0]
    for size, patch, stride in [(100, 30, 18), (37, 8, 3), (17, 16, 4), (112, 112, 18)]:
        starts = sliding_window_starts(size, patch, stride)
        covered = np.zeros(size, bool)
        for s in starts:
            covered[s:s + patch] = True
        assert covered.all() and starts[-1] == size - patch and len(set(starts)) == len(starts)
    with pytest.raises(ValueError, match="stride"):
        sliding_window_starts(10, 4, 0)


def test_one_window_equals_whole_volume_forward():
    model = TinyNet3d()
    image = np.random.default_rng(1).normal(size=(12, 10, 8)).astype(np.float32)
    label, score = single_case(model, image, 5, 3, (12, 10, 8), num_classes=2)
    model.eval()
    with torch.no_grad():
        whole = F.softmax(model(torch.from_numpy(image)[None, None])[0], dim=1)[0].numpy()
    np.testing.assert_allclose(score, whole, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(label, (whole[1] > 0.5).astype(np.uint8))
    assert label.dtype == np.uint8 and score.shape == (2, 12, 10, 8)


def test_padding_smaller_than_patch_matches_padded_forward():
    model = TinyNet3d(seed=3)
    image = np.random.default_rng(2).normal(size=(9, 10, 5)).astype(np.float32)
    _, score = single_case(model, image, 4, 2, (12, 12, 8), num_classes=2)
    padded = np.pad(image, [(1, 2), (1, 1), (1, 2)])  # floor before, rest after
    model.eval()
    with torch.no_grad():
        whole = F.softmax(model(torch.from_numpy(padded)[None, None])[0], dim=1)[0].numpy()
    np.testing.assert_allclose(score, whole[:, 1:10, 1:11, 1:6], atol=1e-6)


def test_matches_reference_loop_and_is_independent_of_sw_batch():
    model = TinyNet3d(seed=4)
    image = np.random.default_rng(3).normal(size=(21, 17, 11)).astype(np.float32)
    patch = (8, 8, 6)
    expected = _reference_sliding_window(model, image, 5, 3, patch, 2)
    results = [single_case(model, image, 5, 3, patch, 2, sw_batch=b) for b in (1, 2, 7)]
    for label, score in results:
        np.testing.assert_allclose(score, expected, rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(label, results[0][0])
    # batched convolutions may round differently in the last bit; nothing more
    np.testing.assert_allclose(results[0][1], results[2][1], rtol=0, atol=1e-6)


def test_multiclass_argmax_and_channel_check():
    model = TinyNet3d(classes=3, seed=5)
    image = np.random.default_rng(4).normal(size=(10, 9, 7)).astype(np.float32)
    label, score = single_case(model, image, 4, 3, (8, 8, 4), num_classes=3, sw_batch=3)
    np.testing.assert_array_equal(label, score.argmax(0))
    np.testing.assert_allclose(score.sum(0), 1.0, atol=1e-5)
    with pytest.raises(ValueError, match="num_classes"):
        single_case(model, image, 4, 3, (8, 8, 4), num_classes=2)


def test_mode_is_restored():
    model = TinyNet3d()
    model.train()
    model.bn.eval()  # a caller's mixed setting survives
    image = np.zeros((8, 8, 4), np.float32)
    single_case(model, image, 4, 2, (8, 8, 4), num_classes=2)
    assert model.training and model.conv.training and not model.bn.training
    assert model.bn.num_batches_tracked.item() == 0  # ran in eval mode: BN statistics untouched


def test_single_volume_2d_matches_per_slice_reference():
    model = TinyNet2d()
    image = np.random.default_rng(5).random((5, 20, 24)).astype(np.float32)
    expected = np.zeros(image.shape, np.uint8)
    model.eval()
    for i, s in enumerate(image):
        z = zoom(s, (16 / 20, 16 / 24), order=0)
        with torch.no_grad():
            out = torch.argmax(torch.softmax(model(torch.from_numpy(z)[None, None])[0], 1), 1)[0].numpy()
        expected[i] = zoom(out, (20 / 16, 24 / 16), order=0)
    for batch in (1, 2, 16):
        got = single_volume_2d(model, image, num_classes=4, patch_size=(16, 16), batch=batch)
        np.testing.assert_array_equal(got, expected)
    assert got.shape == image.shape


def test_largest_connected_component():
    mask = np.zeros((10, 10, 10), np.uint8)
    mask[0:2, 0:2, 0:2] = 1  # 8 voxels
    mask[5:8, 5:8, 5:8] = 1  # 27 voxels
    mask[8, 8, 8] = 1  # touches the big cube at a corner only: same component (full connectivity)
    out = largest_connected_component(mask)
    assert out.sum() == 28 and not out[0, 0, 0] and out[8, 8, 8]
    assert not largest_connected_component(np.zeros((4, 4, 4))).any()


def _identity_2class_3d():
    """Foreground logit 20*(x - 0.5): predicts exactly the voxels where x > 0.5."""
    model = nn.Conv3d(1, 2, 1)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([0.0, 20.0]).view(2, 1, 1, 1, 1))
        model.bias.copy_(torch.tensor([0.0, -10.0]))
    return model


def test_validate_la_cases(tmp_path):
    rng = np.random.default_rng(6)
    for case, empty in (("A", False), ("B", True)):
        folder = tmp_path / "2018LA_Seg_Training Set" / case
        folder.mkdir(parents=True)
        label = (rng.random((12, 10, 8)) > 0.7).astype(np.uint8)
        image = np.zeros(label.shape, np.float32) if empty else label.astype(np.float32)
        with h5py.File(folder / "mri_norm2.h5", "w") as f:
            f["image"] = image
            f["label"] = label
    model = _identity_2class_3d()
    dice = validate_la_cases(model, str(tmp_path), ["A", "B"], patch_size=(8, 8, 4), stride_xy=4, stride_z=2,
                             sw_batch=5)
    assert dice == pytest.approx(0.5)  # case A perfect, case B empty prediction -> 0


def test_validate_acdc_volumes(tmp_path):
    (tmp_path / "data").mkdir()
    # logits_c = k (2 c x - c^2): argmax is the class nearest to x, so image = label is predicted exactly
    model = nn.Conv2d(1, 4, 1)
    with torch.no_grad():
        c = torch.arange(4.0)
        model.weight.copy_((10 * 2 * c).view(4, 1, 1, 1))
        model.bias.copy_(-10 * c**2)
    label = np.zeros((2, 16, 16), np.uint8)
    label[:, 2:6, 2:6] = 1
    label[:, 8:12, 3:9] = 2
    label[:, 10:14, 10:15] = 3
    with h5py.File(tmp_path / "data" / "p1_frame01.h5", "w") as f:
        f["image"] = label.astype(np.float32)
        f["label"] = label
    missing = label.copy()
    missing[missing == 3] = 0  # class 3 in the label, never in the prediction
    with h5py.File(tmp_path / "data" / "p2_frame01.h5", "w") as f:
        f["image"] = missing.astype(np.float32)
        f["label"] = label
    result = validate_acdc_volumes(model, str(tmp_path), ["p1_frame01", "p2_frame01"], patch_size=(16, 16), batch=3)
    assert result.shape == (3, 2)
    np.testing.assert_allclose(result[:, 0], [1.0, 1.0, 0.5])
    np.testing.assert_allclose(result[:, 1], [0.0, 0.0, 0.0])
