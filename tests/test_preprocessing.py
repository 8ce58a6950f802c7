"""Preprocessing scripts on synthetic raw data: layout, crop rule, normalisation, frames, lists."""
from __future__ import annotations
import os
import subprocess
import sys

import numpy as np
import pytest

from dataloaders.acdc_data_processing import convert_acdc, find_labeled_frames, read_nifti
from dataloaders.h5io import DataError, load_h5
from dataloaders.la_heart_processing import convert_la, crop_bounds, preprocess_la, read_nrrd_xyz
from dataloaders.splits import read_list
from dataloaders.synthetic import make_acdc, make_la

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(script, *args):
    return subprocess.run([sys.executable, os.path.join(ROOT, "code", "dataloaders", script), *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)


# ------------------------------------------------------------------------------ LA crop rule
def _box_volume(shape, box):
    label = np.zeros(shape, np.uint8)
    label[box] = 255
    rng = np.random.default_rng(0)
    image = rng.integers(0, 200, shape).astype(np.uint8)
    return image, label


def test_la_crop_rule_unclipped():
    # atrium x 90..109, y 80..99 (extent 19 < 112 -> widened by (112 - 19) // 2 = 46), z 5..14
    image, label = _box_volume((200, 190, 30), np.s_[90:110, 80:100, 5:15])
    img, lab = preprocess_la(image, label, np.random.RandomState(0))
    draws = np.random.RandomState(0)
    m = [draws.randint(10, 20) for _ in range(4)]
    x0, x1, y0, y1 = 90 - m[0] - 46, 109 + m[1] + 46, 80 - m[2] - 46, 99 + m[3] + 46
    assert img.shape == lab.shape == (x1 - x0, y1 - y0, 30)  # z is not cropped
    assert img.shape[0] >= 112 + 20 and img.shape[1] >= 112 + 20
    z = (image - image.astype(np.float64).mean()) / image.astype(np.float64).std()
    np.testing.assert_allclose(img, z[x0:x1, y0:y1].astype(np.float32), rtol=1e-6)
    np.testing.assert_array_equal(lab, (label[x0:x1, y0:y1] == 255).astype(np.uint8))
    assert img.dtype == np.float32 and lab.dtype == np.uint8


def test_la_crop_draws_unused_z_margins():
    rng = np.random.RandomState(4)
    crop_bounds(np.pad(np.ones((3, 3, 3), np.uint8), 5), rng)
    ref = np.random.RandomState(4)
    for lo, hi in [(10, 20)] * 4 + [(5, 10)] * 2:
        ref.randint(lo, hi)
    assert rng.randint(0, 1 << 30) == ref.randint(0, 1 << 30)


def test_la_crop_clipped_at_border_and_wide_label():
    image, label = _box_volume((60, 150, 8), np.s_[0:5, 10:140, 2:4])
    img, lab = preprocess_la(image, label, np.random.RandomState(1))
    # x: clipped to [0, 60); y: extent 129 >= 112 -> no widening, margins 10..19 each side
    assert img.shape[0] == 60 and img.shape[2] == 8
    assert 129 + 1 + 20 <= img.shape[1] <= 129 + 1 + 38
    assert lab.sum() == 5 * 130 * 2  # the whole atrium is inside the crop


def test_la_bad_raw_label_values_and_empty():
    image, label = _box_volume((20, 20, 4), np.s_[5:8, 5:8, 1:2])
    with pytest.raises(DataError, match="besides 0 and 255"):
        preprocess_la(image, (label > 0).astype(np.uint8), np.random.RandomState(0), name="caseX")
    with pytest.raises(DataError, match="caseX: label has no foreground"):
        preprocess_la(image, np.zeros_like(label), np.random.RandomState(0), name="caseX")


# ------------------------------------------------------------------------------ LA end to end
@pytest.fixture(scope="module")
def la_raw(tmp_path_factory):
    raw = str(tmp_path_factory.mktemp("la_raw"))
    make_la(raw, cases=2, seed=3, size=(24, 24, 12), raw=True)
    return raw


def test_la_processing_cli_layout_and_content(la_raw, tmp_path):
    out = str(tmp_path / "LA")
    res = _run("la_heart_processing.py", "--raw", la_raw, "--out", out, "--seed", "5")
    assert res.returncode == 0, res.stderr
    assert read_list(os.path.join(out, "train.list")) == read_list(os.path.join(la_raw, "train.list"))
    assert read_list(os.path.join(out, "test.list")) == read_list(os.path.join(la_raw, "test.list"))
    for case in read_list(os.path.join(out, "train.list")) + read_list(os.path.join(out, "test.list")):
        d = load_h5(os.path.join(out, "2018LA_Seg_Training Set", case, "mri_norm2.h5"))
        raw_img = read_nrrd_xyz(os.path.join(la_raw, case, "lgemri.nrrd"))
        raw_lab = read_nrrd_xyz(os.path.join(la_raw, case, "laendo.nrrd"))
        assert d["image"].dtype == np.float32 and d["label"].dtype == np.uint8
        assert d["image"].shape[2] == raw_img.shape[2]  # z not cropped
        assert d["label"].sum() == (raw_lab == 255).sum()  # the whole atrium kept
        # locate the crop from the label and check image = z-scored raw at that place
        z = ((raw_img - raw_img.astype(np.float64).mean()) / raw_img.astype(np.float64).std()).astype(np.float32)
        found = False
        for x0 in range(raw_img.shape[0] - d["image"].shape[0] + 1):
            for y0 in range(raw_img.shape[1] - d["image"].shape[1] + 1):
                win = z[x0:x0 + d["image"].shape[0], y0:y0 + d["image"].shape[1]]
                if np.allclose(win, d["image"], atol=1e-5):
                    np.testing.assert_array_equal(
                        (raw_lab[x0:x0 + win.shape[0], y0:y0 + win.shape[1]] == 255).astype(np.uint8), d["label"])
                    found = True
        assert found


def test_la_processing_deterministic_and_missing_case(la_raw, tmp_path):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    cases = convert_la(la_raw, a, seed=1, progress=False)
    convert_la(la_raw, b, seed=1, progress=False)
    for c in cases:
        pa = os.path.join(a, "2018LA_Seg_Training Set", c, "mri_norm2.h5")
        pb = os.path.join(b, "2018LA_Seg_Training Set", c, "mri_norm2.h5")
        np.testing.assert_array_equal(load_h5(pa)["image"], load_h5(pb)["image"])
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "train.list").write_text("NOSUCHCASE\n")
    (lists / "test.list").write_text(cases[0] + "\n")
    with pytest.raises(FileNotFoundError, match="NOSUCHCASE"):
        convert_la(la_raw, str(tmp_path / "c"), lists=str(lists), progress=False)
    res = _run("la_heart_processing.py", "--raw", la_raw, "--out", str(tmp_path / "d"), "--lists", str(lists))
    assert res.returncode != 0 and "NOSUCHCASE" in res.stderr


# ------------------------------------------------------------------------------ ACDC
@pytest.fixture(scope="module")
def acdc_raw(tmp_path_factory):
    raw = str(tmp_path_factory.mktemp("acdc_raw"))
    make_acdc(raw, patients=3, seed=2, hw_range=(30, 40), slice_range=(2, 3), raw=True)
    return raw


def test_acdc_processing_cli_layout_frames_and_lists(acdc_raw, tmp_path):
    out = str(tmp_path / "ACDC")
    res = _run("acdc_data_processing.py", "--raw", acdc_raw, "--out", out)
    assert res.returncode == 0, res.stderr
    train = read_list(os.path.join(out, "train.list"))
    assert train == read_list(os.path.join(acdc_raw, "train.list"))
    for s in ("val", "test"):
        assert read_list(os.path.join(out, f"{s}.list")) == read_list(os.path.join(acdc_raw, f"{s}.list"))
    expected_slices = []
    for case in train:
        vol = load_h5(os.path.join(out, "data", f"{case}.h5"))
        expected_slices += [f"{case}_slice_{k}" for k in range(1, vol["image"].shape[0] + 1)]
    assert read_list(os.path.join(out, "train_slices.list")) == expected_slices
    patient = train[0].split("_")[0]
    frames = find_labeled_frames(os.path.join(acdc_raw, patient))
    assert frames[0][0] == 1 and frames[1][0] > 1  # raw ES frame number, renamed frame02
    for new, (_no, img_path, gt_path) in zip(("frame01", "frame02"), frames):
        vol = load_h5(os.path.join(out, "data", f"{patient}_{new}.h5"))
        raw_img, raw_gt = read_nifti(img_path).astype(np.float64), read_nifti(gt_path)
        expect = (raw_img - raw_img.min()) / (raw_img.max() - raw_img.min())
        np.testing.assert_allclose(vol["image"], expect, atol=1e-6)
        np.testing.assert_array_equal(vol["label"], raw_gt)
        assert vol["image"].dtype == np.float32 and vol["label"].dtype == np.uint8
        assert vol["image"].min() == 0.0 and vol["image"].max() == 1.0
        for k in range(vol["image"].shape[0]):
            sl = load_h5(os.path.join(out, "data", "slices", f"{patient}_{new}_slice_{k + 1}.h5"))
            np.testing.assert_array_equal(sl["image"], vol["image"][k])
            np.testing.assert_array_equal(sl["label"], vol["label"][k])


def test_acdc_processing_errors(acdc_raw, tmp_path):
    import shutil
    raw = str(tmp_path / "raw")
    shutil.copytree(acdc_raw, raw)
    patient = read_list(os.path.join(raw, "train.list"))[0].split("_")[0]
    gt = [f for f in os.listdir(os.path.join(raw, patient)) if f.endswith("_gt.nii.gz")][1]
    os.remove(os.path.join(raw, patient, gt))
    with pytest.raises(DataError, match="no ground truth"):
        convert_acdc(raw, str(tmp_path / "o1"), progress=False)
    shutil.rmtree(os.path.join(raw, patient))
    with pytest.raises(FileNotFoundError, match=f"{patient}: patient folder not found"):
        convert_acdc(raw, str(tmp_path / "o2"), progress=False)
    res = _run("acdc_data_processing.py", "--raw", raw, "--out", str(tmp_path / "o3"))
    assert res.returncode != 0 and patient in res.stderr
