"""Issue 19, fault and bad-input hardening (data side): loader workers die with their parent,
validation/test volumes are checked, integer images are refused everywhere, check_data warns
about all-background labeled items, split lists with a byte-order mark are read."""
from __future__ import annotations
import os
import shutil
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest
from torch import nn

from check_data import check_data, main as check_data_main
from dataloaders.acdc import acdc_volume_path
from dataloaders.h5io import DataError, check_files, load_h5, validate_pair
from dataloaders.la_heart import LAHeart, la_case_path
from dataloaders.splits import read_list
from engine.inference import validate_acdc_volumes, validate_la_cases

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LINUX = sys.platform.startswith("linux")


@pytest.fixture
def la(tiny_data, tmp_path):
    """A private copy of a tiny LA folder: train LASYN001..004, test LASYN000."""
    root = str(tmp_path / "LA")
    shutil.copytree(tiny_data("la", cases=5, seed=0, size=(16, 16, 8)), root)
    return root


@pytest.fixture
def acdc(tiny_data, tmp_path):
    """A private copy of a tiny ACDC folder: 3 training patients, 1 val, 1 test."""
    root = str(tmp_path / "ACDC")
    shutil.copytree(tiny_data("acdc", patients=5, seed=0, hw_range=(20, 24), slice_range=(2, 2)), root)
    return root


def _rewrite(path, image=None, label=None):
    """Rewrite an h5 file, replacing image and/or label."""
    data = load_h5(path)
    with h5py.File(path, "w") as f:
        f["image"] = data["image"] if image is None else image
        f["label"] = data["label"] if label is None else label
    return data


# ------------------------------------------------------------------ 1. orphaned loader workers

_ORPHAN_SCRIPT = r"""
import os, signal, sys
import torch
from torch.utils.data import Dataset
from dataloaders import epoch_loader
from dataloaders.epoch_loader import ReseedingLoader

if sys.argv[1] == "fallback":  # no death signal: only the parent-pid check can end the workers
    epoch_loader._set_parent_death_signal = lambda: False

class Tiny(Dataset):
    def __len__(self):
        return 12
    def __getitem__(self, i):
        return torch.full((3,), float(i))

loader = ReseedingLoader(Tiny(), [[2 * k, 2 * k + 1] for k in range(6)], num_workers=2)
batch = next(iter(loader))
assert batch.shape == (2, 3), batch.shape
print(" ".join(str(p.pid) for p in loader._workers), flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def _gone(pid):
    """True when ``pid`` no longer runs (absent, or a zombie waiting for init to reap it)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


@pytest.mark.skipif(not LINUX, reason="needs fork and /proc")
@pytest.mark.parametrize("mode", ["deathsig", "fallback"])
def test_loader_workers_exit_when_the_parent_is_killed(mode, tmp_path):
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "code"))
    out, err = tmp_path / "out.txt", tmp_path / "err.txt"
    # output to files, not pipes: surviving workers would hold a pipe open and block the read
    with open(out, "w") as fo, open(err, "w") as fe:
        rc = subprocess.run([sys.executable, "-c", _ORPHAN_SCRIPT, mode], cwd=ROOT, env=env,
                            stdout=fo, stderr=fe, timeout=120).returncode
    pids = [int(p) for p in out.read_text().split()]
    assert rc == -signal.SIGKILL and len(pids) == 2, (rc, out.read_text(), err.read_text())
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not all(_gone(p) for p in pids):
            time.sleep(0.1)
        assert all(_gone(p) for p in pids), f"loader workers {pids} outlived their killed parent"
    finally:
        for p in pids:  # the workers this test started, if the fix failed
            if not _gone(p):
                os.kill(p, signal.SIGKILL)


# ------------------------------------------------------------------ 2. validation / test data checked


def test_check_files_names_a_broken_acdc_val_volume(acdc):
    val = read_list(os.path.join(acdc, "val.list"))
    paths = [acdc_volume_path(acdc, v) for v in val]
    check_files(paths, 4, ndim=3)  # clean
    label = load_h5(paths[1])["label"].copy()
    label[0, 0, 0] = 7
    _rewrite(paths[1], label=label)
    with pytest.raises(DataError, match=rf"{paths[1]}: label values .*7.* outside 0..3"):
        check_files(paths, 4, ndim=3, progress=False, desc="ACDC val")


def test_check_files_names_a_broken_la_test_case(la):
    path = la_case_path(la, read_list(os.path.join(la, "test.list"))[0])
    image = load_h5(path)["image"].copy()
    image[1, 2, 3] = np.nan
    _rewrite(path, image=image)
    with pytest.raises(DataError, match=rf"{path}: image has 1 NaN/Inf"):
        check_files([path], 2, ndim=3)
    with pytest.raises(FileNotFoundError, match="nope.h5"):
        check_files([os.path.join(la, "nope.h5")], 2, ndim=3)


def test_validate_acdc_volumes_refuses_a_broken_volume(acdc):
    val = read_list(os.path.join(acdc, "val.list"))
    path = acdc_volume_path(acdc, val[0])
    label = load_h5(path)["label"].copy()
    label[0, 0, 0] = 7
    _rewrite(path, label=label)
    model = nn.Conv2d(1, 4, 1)  # (B, 4, H, W) logits
    with pytest.raises(DataError, match=rf"{path}: label values"):
        validate_acdc_volumes(model, acdc, val, patch_size=(16, 16), batch=4)


def test_validate_la_cases_refuses_a_broken_case(la):
    case = read_list(os.path.join(la, "test.list"))[0]
    path = la_case_path(la, case)
    image = load_h5(path)["image"].copy()
    image[0, 0, 0] = np.inf
    _rewrite(path, image=image)
    model = nn.Conv3d(1, 2, 1)
    with pytest.raises(DataError, match=rf"{path}: image has 1 NaN/Inf"):
        validate_la_cases(model, la, [case], patch_size=(8, 8, 4), stride_xy=8, stride_z=4)


# ------------------------------------------------------------------ 3. integer images refused


@pytest.mark.parametrize("dtype", [np.int16, np.uint8, np.bool_])
def test_validate_pair_refuses_non_float_images(dtype):
    image = np.zeros((2, 3), dtype)
    with pytest.raises(DataError, match=rf"some/file.h5: image dtype {np.dtype(dtype)}, expected float32 "
                                        r"\(normalised intensities\)\. Regenerate the file"):
        validate_pair(image, np.zeros((2, 3), np.uint8), 2, "some/file.h5")


def test_training_dataset_refuses_an_integer_image(la):
    path = la_case_path(la, read_list(os.path.join(la, "train.list"))[0])
    _rewrite(path, image=np.round(load_h5(path)["image"] * 100).astype(np.int16))
    with pytest.raises(DataError, match=rf"{path}: image dtype int16, expected float32"):
        LAHeart(la, "train")[0]


def test_check_data_reports_an_integer_image_once(la):
    path = la_case_path(la, read_list(os.path.join(la, "train.list"))[0])
    _rewrite(path, image=np.zeros(load_h5(path)["label"].shape, np.int16))
    problems, _, _ = check_data("LA", la, any_size=True)
    hits = [p for p in problems if "image dtype int16" in p]
    assert len(hits) == 1 and hits[0].startswith(path), problems


# ------------------------------------------------------------------ 4. check_data warnings, BOM lists


def test_check_data_warns_about_an_empty_labeled_la_case(la, capsys):
    case = read_list(os.path.join(la, "train.list"))[1]  # the 2nd training case
    path = la_case_path(la, case)
    _rewrite(path, label=np.zeros_like(load_h5(path)["label"]))
    problems, _, notes = check_data("LA", la, any_size=True, labelnum=1)  # not labeled: no warning
    assert problems == [] and not any(n.startswith("warning") for n in notes), notes
    assert any("no foreground voxel" in n for n in notes)  # the existing note stays
    problems, _, notes = check_data("LA", la, any_size=True, labelnum=2)
    warnings = [n for n in notes if n.startswith("warning")]
    assert problems == [] and len(warnings) == 1 and case in warnings[0] and path in warnings[0], notes
    _, _, notes = check_data("LA", la, any_size=True)  # default labelnum: 4 (all training cases)
    assert sum(n.startswith("warning") for n in notes) == 1
    assert check_data_main(["LA", la, "--any-size", "--quiet", "--labelnum", "2"]) == 0  # status unchanged
    out = capsys.readouterr().out
    assert f"warning: labeled training case {case} ({path})" in out and "OK" in out


def test_check_data_warns_about_an_empty_labeled_acdc_volume(acdc, capsys):
    slices = read_list(os.path.join(acdc, "train_slices.list"))
    patients = list(dict.fromkeys(s.split("_")[0] for s in slices))
    volume = next(s.rsplit("_slice_", 1)[0] for s in slices if s.startswith(patients[1]))
    path = acdc_volume_path(acdc, volume)
    _rewrite(path, label=np.zeros_like(load_h5(path)["label"]))
    problems, _, notes = check_data("ACDC", acdc, any_size=True, labelnum=1)
    assert problems == [] and not any(n.startswith("warning") for n in notes), notes
    problems, _, notes = check_data("ACDC", acdc, any_size=True, labelnum=2)
    warnings = [n for n in notes if n.startswith("warning")]
    assert problems == [] and len(warnings) == 1 and volume in warnings[0] and path in warnings[0], notes
    assert check_data_main(["ACDC", acdc, "--any-size", "--quiet", "--labelnum", "2"]) == 0
    out = capsys.readouterr().out
    assert f"warning: labeled training volume {volume} ({path})" in out and "OK" in out


def test_read_list_skips_a_utf8_byte_order_mark(tmp_path):
    path = tmp_path / "train.list"
    path.write_bytes("\ufeffLASYN001\nLASYN002\n".encode("utf-8"))
    assert read_list(str(path)) == ["LASYN001", "LASYN002"]


def test_check_data_warns_about_images_far_outside_the_normalised_range(tiny_data, tmp_path):
    """An image scaled by 3e38 is finite and float32, so it passes the checks, and makes training
    diverge: check_data warns, naming the file (exit status unchanged)."""
    import shutil

    import h5py

    from check_data import check_data
    root = shutil.copytree(tiny_data("la", cases=5, seed=3, size=(40, 40, 24)), tmp_path / "la")
    case = open(root / "train.list").read().split()[0]
    path = root / "2018LA_Seg_Training Set" / case / "mri_norm2.h5"
    with h5py.File(path, "r") as f:
        image, label = f["image"][()], f["label"][()]
    with h5py.File(path, "w") as f:
        f["image"] = (image / np.abs(image).max() * 3e38).astype(np.float32)
        f["label"] = label
    problems, _, notes = check_data("LA", str(root), any_size=True)
    assert not problems
    assert any(str(path) in n and "values up to 3e+38" in n for n in notes)


def test_the_test_script_checks_every_test_volume_before_evaluating(tiny_data, tmp_path):
    """A broken last test case stops test_la.py before the first case is evaluated (no results
    folder, no checkpoint needed to see it)."""
    import shutil

    import h5py
    import test_la
    from networks.net_factory import net_factory
    import torch

    root = shutil.copytree(tiny_data("la", cases=5, seed=3, size=(40, 40, 24)), tmp_path / "la")
    case = open(root / "test.list").read().split()[-1]
    path = root / "2018LA_Seg_Training Set" / case / "mri_norm2.h5"
    with h5py.File(path, "r") as f:
        image, label = f["image"][()], f["label"][()]
    with h5py.File(path, "w") as f:
        f["image"] = image
        f["label"] = (label * 5).astype(np.uint8)
    ckpt = tmp_path / "VNet_best_model.pth"
    torch.save(net_factory("VNet", 1, 2, "test", "cpu").state_dict(), ckpt)
    with pytest.raises(ValueError, match=f"{case}.*label values"):
        test_la.main(["--root_path", str(root), "--ckpt", str(ckpt), "--device", "cpu", "--out_dir",
                      str(tmp_path / "out"), "--patch_size", "32", "32", "16", "--stride_xy", "16", "--stride_z", "16"])
    assert not (tmp_path / "out").exists()
