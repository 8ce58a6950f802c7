"""A training run tried as users break it (issue 19): crafted or foreign last.pth on --resume, a
diverging run, a rerun of a finished command, changed flags on --resume, damaged final files, a
full disk, bad flags and output paths, broken validation data. Tiny synthetic LA/ACDC data, CPU."""
from __future__ import annotations
import os
import re
import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest
import torch

import test_training
import train_acdc
import train_la
from engine.checkpoints import CheckpointError
from engine.guard import TrainingDiverged

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
def _with(flags, **changes):
    """``flags`` with the values of some flags replaced (``max_iterations=2``)."""
    out = list(flags)
    for name, value in changes.items():
        i = out.index(f"--{name}")
        out[i + 1] = str(value)
    return out


LA_FLAGS = test_training.LA_FLAGS
ACDC_FLAGS = _with(test_training.ACDC_FLAGS, max_iterations=2, log_interval=1, save_interval=1)


def _snap(model_root, exp="SSNet"):
    return os.path.join(str(model_root), f"LA_{exp}_2_labeled", "VNet")


def _copy_data(src, dst):
    shutil.copytree(src, dst)
    return str(dst)


def _la_h5(root, case):
    return os.path.join(root, "2018LA_Seg_Training Set", case, "mri_norm2.h5")


def _rewrite(path, image=None, label=None):
    with h5py.File(path, "r") as f:
        img, lab = f["image"][()], f["label"][()]
    with h5py.File(path, "w") as f:
        f.create_dataset("image", data=img if image is None else image(img))
        f.create_dataset("label", data=lab if label is None else label(lab))


@pytest.fixture(scope="module")
def two_iterations(la_root, tmp_path_factory):
    """A run stopped at iteration 2 of 4 (its last.pth), to copy and resume."""
    root = tmp_path_factory.mktemp("two")
    train_la.main(["--root_path", la_root, "--model_root", str(root)] + _with(LA_FLAGS, max_iterations=2))
    return root


def _resumable(two_iterations, tmp_path):
    shutil.copytree(two_iterations, tmp_path / "m")
    return tmp_path / "m"


# ----------------------------------------------------------------------------- 1. code through --resume
class _Payload:
    """Unpickling this object creates the marker file (code a crafted last.pth would run)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_crafted_last_pth_cannot_run_code_on_resume(la_root, two_iterations, tmp_path):
    models = _resumable(two_iterations, tmp_path)
    last = os.path.join(_snap(models), "last.pth")
    state = torch.load(last, weights_only=True)
    marker = tmp_path / "owned"
    state["best"] = _Payload(str(marker))
    torch.save(state, last)
    with pytest.raises(CheckpointError, match="last.pth") as err:
        train_la.main(["--root_path", la_root, "--model_root", str(models), "--resume"] + LA_FLAGS)
    assert not marker.exists()
    assert "code" in str(err.value)


def test_last_pth_loads_weights_only_and_a_truncated_one_is_named(la_root, two_iterations, tmp_path):
    models = _resumable(two_iterations, tmp_path)
    last = os.path.join(_snap(models), "last.pth")
    state = torch.load(last, weights_only=True)  # tensors and plain values only
    assert state["iter_num"] == 2 and isinstance(state["rng"]["python"], tuple)
    data = open(last, "rb").read()
    with open(last, "wb") as f:
        f.write(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or damaged"):
        train_la.main(["--root_path", la_root, "--model_root", str(models), "--resume"] + LA_FLAGS)


def test_a_file_without_the_run_keys_is_refused(la_root, two_iterations, tmp_path):
    models = _resumable(two_iterations, tmp_path)
    last = os.path.join(_snap(models), "last.pth")
    torch.save(torch.load(os.path.join(_snap(models), "VNet_best_model.pth"), weights_only=True), last)
    with pytest.raises(CheckpointError, match="missing keys"):
        train_la.main(["--root_path", la_root, "--model_root", str(models), "--resume"] + LA_FLAGS)


# ----------------------------------------------------------------------------- 2. a diverged run
def test_a_diverging_run_stops_and_writes_nothing_from_bad_weights(la_root, tmp_path):
    import re

    from engine.guard import non_finite_tensors
    models = tmp_path / "m"
    flags = ["--root_path", la_root, "--model_root", str(models), "--base_lr", "1e6"]
    flags += _with(LA_FLAGS, max_iterations=40, save_interval=1, val_interval=1, val_start=1, log_interval=20)
    with pytest.raises(TrainingDiverged) as err:
        train_la.main(flags)
    msg = str(err.value)
    assert "not finite at iteration" in msg and "loss_dice" in msg and "--base_lr" in msg
    diverged = int(re.search(r"iteration (\d+)", msg).group(1))
    snap = _snap(models)
    saved = [f for f in os.listdir(snap) if f.endswith(".pth")]
    for f in saved:  # every checkpoint written holds finite weights
        state = torch.load(os.path.join(snap, f), weights_only=True)
        assert not non_finite_tensors(state.get("model", state)), f
    if "last.pth" in saved:
        good = torch.load(os.path.join(snap, "last.pth"), weights_only=True)["iter_num"]
        assert good < diverged and f"keeps iteration {good}, the last good state" in msg
    else:
        assert "no checkpoint was written" in msg
    assert "training finished" not in open(os.path.join(snap, "log.txt")).read()


@pytest.mark.long
def test_scaled_images_diverge_at_once_and_the_script_exits_non_zero(la_root, tmp_path):
    data = _copy_data(la_root, tmp_path / "data")
    for case in open(os.path.join(data, "train.list")).read().split():
        _rewrite(_la_h5(data, case), image=lambda x: (x / np.abs(x).max() * 3e38).astype(np.float32))
    proc = subprocess.run([sys.executable, "code/train_la.py", "--root_path", data, "--model_root",
                           str(tmp_path / "m")] + LA_FLAGS, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert re.search(r"train_la.py: error: the loss is not finite at iteration \d+ \(loss nan", proc.stderr)
    assert "Traceback" not in proc.stderr
    snap = _snap(tmp_path / "m")
    assert not [f for f in os.listdir(snap) if f.endswith(".pth")]
    assert "training finished" not in open(os.path.join(snap, "log.txt")).read()


# ----------------------------------------------------------------------------- 3. a finished run overwritten
def test_rerunning_a_run_is_refused_and_overwrite_clears_it(la_root, two_iterations, tmp_path):
    models = _resumable(two_iterations, tmp_path)
    snap = _snap(models)
    last = open(os.path.join(snap, "last.pth"), "rb").read()
    flags = ["--root_path", la_root, "--model_root", str(models)] + _with(LA_FLAGS, max_iterations=2)
    with pytest.raises(ValueError, match=r"already holds a run[\s\S]*--resume[\s\S]*--overwrite"):
        train_la.main(flags)
    assert open(os.path.join(snap, "last.pth"), "rb").read() == last
    open(os.path.join(snap, "notes.txt"), "w").write("mine")
    os.makedirs(os.path.join(snap, "test"))
    open(os.path.join(snap, "iter_999_dice_0.5.pth"), "w").write("old")
    train_la.main(flags + ["--overwrite"])
    files = set(os.listdir(snap))
    assert "notes.txt" in files and "test" not in files and "iter_999_dice_0.5.pth" not in files
    assert torch.load(os.path.join(snap, "last.pth"), weights_only=True)["iter_num"] == 2
    assert "deleted the earlier run" in open(os.path.join(snap, "log.txt")).read()
    with pytest.raises(ValueError, match="give one"):
        train_la.parse_args(["--resume", "--overwrite"])


# ----------------------------------------------------------------------------- 4. changed flags on resume
@pytest.mark.parametrize("change, named", [
    (["--seed", "7"], "--seed: 1337 in the run, 7 now"),
    (["--batch_size", "3"], "--batch_size: 4 in the run, 3 now"),
    (["--patch_size", "32", "32", "24"], "--patch_size"),
    (["--method", "uamt", "--exp", "SSNet"], "--method: 'ssnet' in the run, 'uamt' now"),
])
def test_resume_with_run_defining_flags_changed_is_refused(la_root, two_iterations, tmp_path, change, named):
    models = _resumable(two_iterations, tmp_path)
    config = open(os.path.join(_snap(models), "config.json")).read()
    with pytest.raises(ValueError, match="other flags") as err:
        train_la.main(["--root_path", la_root, "--model_root", str(models), "--resume"] + LA_FLAGS + change)
    assert named in str(err.value)
    assert open(os.path.join(_snap(models), "config.json")).read() == config


def test_resume_may_change_flags_that_do_not_define_the_run(la_root, two_iterations, tmp_path):
    models = _resumable(two_iterations, tmp_path)
    summary = train_la.main(["--root_path", la_root, "--model_root", str(models), "--resume"] + LA_FLAGS
                            + ["--log_interval", "1", "--sw_batch", "2", "--loader", "released"])
    assert summary["iterations"] == 4
    import json
    assert json.load(open(os.path.join(_snap(models), "config.json")))["log_interval"] == 1


# ----------------------------------------------------------------------------- 5. final files
def test_resume_of_a_finished_run_recreates_damaged_final_files(la_root, tmp_path):
    models = tmp_path / "m"
    flags = ["--root_path", la_root, "--model_root", str(models)] + LA_FLAGS
    train_la.main(flags)
    snap = _snap(models)
    last = torch.load(os.path.join(snap, "last.pth"), weights_only=True)
    best_iter = last["best_iter"]
    twin = [f for f in os.listdir(snap) if f.startswith(f"iter_{best_iter}_")][0]
    open(os.path.join(snap, "VNet_last_model.pth"), "wb").close()  # a kill while it was written
    os.remove(os.path.join(snap, "VNet_best_model.pth"))
    summary = train_la.main(flags + ["--resume"])
    assert summary["iterations"] == 4
    final = torch.load(os.path.join(snap, "VNet_last_model.pth"), weights_only=True)
    best = torch.load(os.path.join(snap, "VNet_best_model.pth"), weights_only=True)
    twin_state = torch.load(os.path.join(snap, twin), weights_only=True)
    for k, v in last["model"].items():
        assert torch.equal(final[k], v) and torch.equal(best[k], twin_state[k]), k
    assert "re-created" in open(os.path.join(snap, "log.txt")).read()


# ----------------------------------------------------------------------------- 7. validation data
def test_broken_validation_volumes_stop_the_run_before_anything_is_written(la_root, acdc_root, tmp_path):
    la = _copy_data(la_root, tmp_path / "la")
    bad = open(os.path.join(la, "test.list")).read().split()[-1]
    _rewrite(_la_h5(la, bad), image=lambda x: np.where(x > 0, np.nan, x).astype(np.float32))
    with pytest.raises(ValueError, match=f"{bad}.*NaN"):
        train_la.main(["--root_path", la, "--model_root", str(tmp_path / "m")] + LA_FLAGS)
    assert not os.path.exists(tmp_path / "m")
    acdc = _copy_data(acdc_root, tmp_path / "acdc")
    vol = open(os.path.join(acdc, "val.list")).read().split()[0]
    _rewrite(os.path.join(acdc, "data", f"{vol}.h5"), label=lambda y: np.where(y == 1, 7, y).astype(y.dtype))
    with pytest.raises(ValueError, match=f"{vol}.h5: label values"):
        train_acdc.main(["--root_path", acdc, "--model_root", str(tmp_path / "m")] + ACDC_FLAGS)
    assert not os.path.exists(tmp_path / "m")


# ----------------------------------------------------------------------------- 8. flags checked first
@pytest.mark.parametrize("flags, named", [
    (["--stride_xy", "0"], "--stride_xy must be >= 1"),
    (["--stride_z", "-1"], "--stride_z must be >= 1"),
    (["--sw_batch", "0"], "--sw_batch must be >= 1"),
    (["--patch_size", "32", "0", "16"], "--patch_size must be positive"),
    (["--labelnum", "0"], "--labelnum must be >= 1"),
    (["--select", "val", "--val_num", "0"], "--val_num must be >= 1"),
    (["--base_lr", "nan"], "--base_lr must be a positive number"),
])
def test_bad_flags_are_named_at_parse_time(flags, named):
    with pytest.raises(ValueError, match=named):
        train_la.parse_args(LA_FLAGS + flags)


def test_acdc_val_batch_checked_at_parse_time():
    with pytest.raises(ValueError, match="--val_batch must be >= 1"):
        train_acdc.parse_args(ACDC_FLAGS + ["--val_batch", "0"])


@pytest.mark.parametrize("flags, named", [
    (["--select", "val", "--val_num", "10"], "--val_num 10 would hold out every one of the 4 training cases"),
    (["--labelnum", "50"], "--labelnum 50 asks for 50 labeled training cases, but train.list has 4"),
    (["--select", "val", "--val_num", "3"], "3 of them held out by --val_num"),
])
def test_flags_against_the_training_list_before_any_folder(la_root, tmp_path, flags, named):
    with pytest.raises(ValueError, match=named):
        train_la.main(["--root_path", la_root, "--model_root", str(tmp_path / "m")] + LA_FLAGS + flags)
    assert not os.path.exists(tmp_path / "m")


# ----------------------------------------------------------------------------- 9. output paths and full disk
def test_a_model_root_that_is_a_file_is_named_before_any_work(la_root, tmp_path):
    blocker = tmp_path / "model"
    blocker.write_text("not a folder")
    with pytest.raises(ValueError, match=f"{blocker} is a file, not a folder"):
        train_la.main(["--root_path", la_root, "--model_root", str(blocker)] + LA_FLAGS)


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_a_full_disk_names_the_file_and_keeps_the_previous_checkpoint(la_root, two_iterations, tmp_path):
    models = _resumable(two_iterations, tmp_path)
    snap = _snap(models)
    last = open(os.path.join(snap, "last.pth"), "rb").read()
    os.symlink("/dev/full", os.path.join(snap, "last.pth.tmp"))  # every write of last.pth now hits a full disk
    with pytest.raises(CheckpointError, match=r"last.pth[\s\S]*disk full"):
        train_la.main(["--root_path", la_root, "--model_root", str(models), "--resume"] + LA_FLAGS)
    assert open(os.path.join(snap, "last.pth"), "rb").read() == last
    assert not os.path.lexists(os.path.join(snap, "last.pth.tmp"))
