"""check_data: a clean synthetic folder passes; every planted fault is reported with its file."""
from __future__ import annotations
import os
import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest

from check_data import check_data
from dataloaders.splits import read_list, write_list
from dataloaders.synthetic import make_acdc, make_la

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    base = tmp_path_factory.mktemp("clean")
    la, acdc = str(base / "LA"), str(base / "ACDC")
    make_la(la, cases=3, seed=0, size=(16, 16, 8))
    make_acdc(acdc, patients=3, seed=0, hw_range=(20, 24), slice_range=(2, 2))
    return la, acdc


@pytest.fixture
def la(clean, tmp_path):
    root = str(tmp_path / "LA")
    shutil.copytree(clean[0], root)
    return root


@pytest.fixture
def acdc(clean, tmp_path):
    root = str(tmp_path / "ACDC")
    shutil.copytree(clean[1], root)
    return root


def _cli(*args):
    return subprocess.run([sys.executable, os.path.join(ROOT, "code", "check_data.py"), *args, "--quiet"],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)


def _h5(path, **arrays):
    with h5py.File(path, "w") as f:
        for k, v in arrays.items():
            f.create_dataset(k, data=v)


def _la_file(root, i=0):
    case = read_list(os.path.join(root, "train.list"))[i]
    return os.path.join(root, "2018LA_Seg_Training Set", case, "mri_norm2.h5")


def test_clean_synthetic_passes_with_any_size_and_prints_sizes(clean):
    for ds, root in zip(("LA", "ACDC"), clean):
        problems, sizes, _ = check_data(ds, root, any_size=True)
        assert problems == [], problems
        assert sizes
    res = _cli("ACDC", clean[1], "--any-size")
    assert res.returncode == 0 and "train_slices.list: " in res.stdout and "OK" in res.stdout


def test_real_sizes_expected_without_any_size(clean):
    res = _cli("LA", clean[0])
    assert res.returncode == 1
    assert "the real LA split has 80" in res.stdout and "train: 2" in res.stdout
    problems, _, _ = check_data("ACDC", clean[1])
    assert any("1312" in p for p in problems) and any("split has 70" in p for p in problems)


def _plant(kind, root):
    """Plant one fault in an LA folder; return a string the message must contain."""
    path = _la_file(root)
    if kind == "missing_list":
        os.remove(os.path.join(root, "test.list"))
        return os.path.join(root, "test.list")
    if kind == "missing_file":
        os.remove(path)
        return path
    if kind == "corrupt":
        with open(path, "wb") as f:
            f.write(b"garbage")
        return path
    if kind == "missing_key":
        _h5(path, image=np.zeros((4, 4, 4), np.float32))
        return "no 'label' dataset"
    if kind == "shape":
        _h5(path, image=np.zeros((4, 4, 4), np.float32), label=np.zeros((4, 4, 5), np.uint8))
        return "!= label shape"
    if kind == "label_range":
        _h5(path, image=np.zeros((4, 4, 4), np.float32), label=np.full((4, 4, 4), 255, np.uint8))
        return "outside 0..1"
    if kind == "nan":
        img = np.zeros((4, 4, 4), np.float32)
        img[0, 0, 0] = np.nan
        _h5(path, image=img, label=np.zeros((4, 4, 4), np.uint8))
        return "NaN"
    if kind == "dtype":
        _h5(path, image=np.zeros((4, 4, 4), np.float32), label=np.zeros((4, 4, 4), np.float32))
        return "label dtype float32"
    if kind == "overlap":
        write_list(os.path.join(root, "test.list"), read_list(os.path.join(root, "train.list"))[:1])
        return "in both train.list and test.list"
    if kind == "duplicate":
        names = read_list(os.path.join(root, "train.list"))
        write_list(os.path.join(root, "train.list"), names + names[:1])
        return "duplicate entries"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["missing_list", "missing_file", "corrupt", "missing_key", "shape",
                                  "label_range", "nan", "dtype", "overlap", "duplicate"])
def test_planted_la_fault(kind, la):
    expect = _plant(kind, la)
    problems, _, _ = check_data("LA", la, any_size=True)
    assert any(expect in p for p in problems), problems
    if kind not in ("missing_list", "overlap", "duplicate"):
        assert any(_la_file(la) in p for p in problems)  # names the file


def test_planted_la_fault_cli_exit_code(la):
    expect = _plant("nan", la)
    res = _cli("LA", la, "--any-size")
    assert res.returncode == 1 and expect in res.stdout and "PROBLEM" in res.stdout


def test_planted_acdc_faults(acdc):
    slices = read_list(os.path.join(acdc, "train_slices.list"))
    val = read_list(os.path.join(acdc, "val.list"))
    # 1) a validation volume's slice listed for training (leakage)
    write_list(os.path.join(acdc, "train_slices.list"), slices + [f"{val[0]}_slice_1"])
    # 2) a slice with out-of-range labels, 3) a volume with NaN
    _h5(os.path.join(acdc, "data", "slices", f"{slices[0]}.h5"),
        image=np.zeros((20, 20), np.float32), label=np.full((20, 20), 4, np.uint8))
    vol = os.path.join(acdc, "data", f"{val[0]}.h5")
    _h5(vol, image=np.full((2, 3, 3), np.nan, np.float32), label=np.zeros((2, 3, 3), np.uint8))
    problems, _, _ = check_data("ACDC", acdc, any_size=True)
    text = "\n".join(problems)
    assert "not in train.list" in text
    assert f"{slices[0]}.h5: label values [4] outside 0..3" in text
    assert f"{val[0]}.h5: image has 18 NaN" in text
    res = _cli("ACDC", acdc, "--any-size")
    assert res.returncode == 1


def test_acdc_missing_slice_of_training_volume(acdc):
    slices = read_list(os.path.join(acdc, "train_slices.list"))
    write_list(os.path.join(acdc, "train_slices.list"), slices[1:])
    problems, _, _ = check_data("ACDC", acdc, any_size=True)
    assert any("lists 1 slices of" in p and "has 2" in p for p in problems), problems


def test_missing_root():
    problems, _, _ = check_data("LA", "/no/such/folder")
    assert problems and "/no/such/folder: folder not found" in problems[0]
