"""Synthetic stand-in data: determinism, layouts, splits, variety, and that it is not trivial."""
from __future__ import annotations
import os
import subprocess
import sys

import numpy as np
import pytest

from dataloaders.h5io import load_h5
from dataloaders.splits import patients_in_order, read_list
from dataloaders.synthetic import (ACDC_GROUPS, acdc_group, acdc_patient, acdc_split, la_case, la_split,
                                  make_acdc, make_la)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _la(root, case):
    return load_h5(os.path.join(root, "2018LA_Seg_Training Set", case, "mri_norm2.h5"))


def test_la_layout_split_and_determinism(tmp_path):
    a, b, c = (str(tmp_path / n) for n in "abc")
    lists = make_la(a, cases=5, seed=4, size=(24, 24, 12))
    make_la(b, cases=5, seed=4, size=(24, 24, 12))
    make_la(c, cases=3, seed=4, size=(24, 24, 12))
    assert len(lists["train"]) == 4 and len(lists["test"]) == 1
    assert read_list(os.path.join(a, "train.list")) == lists["train"]
    assert not set(lists["train"]) & set(lists["test"])
    shapes = set()
    for case in lists["train"] + lists["test"]:
        da, db = _la(a, case), _la(b, case)
        np.testing.assert_array_equal(da["image"], db["image"])
        assert da["image"].dtype == np.float32 and da["label"].dtype == np.uint8
        assert abs(float(da["image"].mean())) < 1e-3 and abs(float(da["image"].std()) - 1) < 1e-3  # z-scored
        assert set(np.unique(da["label"]).tolist()) == {0, 1}
        shapes.add(da["image"].shape)
    assert len(shapes) > 1  # sizes vary per case
    # a case does not depend on how many cases were made
    np.testing.assert_array_equal(_la(a, "LASYN000")["image"], _la(c, "LASYN000")["image"])


def test_seed_changes_data():
    x1, _ = la_case(np.random.default_rng([1, 0]), (20, 20, 10))
    x2, _ = la_case(np.random.default_rng([2, 0]), (20, 20, 10))
    assert not np.allclose(x1, x2)


def test_la_task_is_not_solved_by_a_threshold():
    img, lab = la_case(np.random.default_rng(0), (64, 64, 40))
    fg = lab.astype(bool)
    assert 0.005 < fg.mean() < 0.2
    best = 0.0
    for t in np.quantile(img, np.linspace(0.5, 0.995, 60)):
        pred = img > t
        best = max(best, 2 * (pred & fg).sum() / (pred.sum() + fg.sum()))
    assert best < 0.9  # distractors, blur, bias and noise: intensity alone is not enough
    assert best > 0.3  # but the atrium is visible


def test_acdc_patient_structure_and_variety():
    sizes = set()
    for p in range(4):
        (ed, ed_lab), (es, es_lab) = acdc_patient(np.random.default_rng([0, p]), (80, 140), (6, 10))
        assert ed.shape == ed_lab.shape == es.shape and 6 <= ed.shape[0] <= 10
        assert 80 <= ed.shape[1] <= 140 and 80 <= ed.shape[2] <= 140
        assert set(np.unique(ed_lab).tolist()) == {0, 1, 2, 3}
        assert (es_lab == 3).sum() < (ed_lab == 3).sum()  # ES: smaller LV cavity
        base = ed_lab[0]
        assert (base == 1).any() and (base == 2).any() and (base == 3).any()
        # the myocardium surrounds the LV: LV pixels never touch background directly
        lv = base == 3
        nb = np.zeros_like(lv)
        nb[1:] |= lv[:-1]
        nb[:-1] |= lv[1:]
        nb[:, 1:] |= lv[:, :-1]
        nb[:, :-1] |= lv[:, 1:]
        assert not (nb & (base == 0)).any()
        sizes.add(ed.shape)
    assert len(sizes) > 1


def test_acdc_groups_follow_the_real_numbering_and_differ():
    assert [acdc_group(p, 100) for p in (1, 20, 21, 41, 61, 80, 81, 100)] == \
        ["DCM", "DCM", "HCM", "MINF", "NOR", "NOR", "RV", "RV"]
    assert [acdc_group(p, 10) for p in range(1, 11)] == [g for g in ACDC_GROUPS for _ in range(2)]
    with pytest.raises(ValueError, match="1..10"):
        acdc_group(11, 10)
    with pytest.raises(ValueError, match="group"):
        acdc_patient(np.random.default_rng(0), group="XYZ")

    def volumes(group):  # mean ED / ES voxel counts per class over a few patients
        counts = []
        for p in range(3):
            (_, ed), (_, es) = acdc_patient(np.random.default_rng([5, p]), (80, 100), (6, 6), group)
            counts.append([[(lab == c).sum() for c in (1, 2, 3)] for lab in (ed, es)])
        return np.mean(counts, axis=0)  # (frame, class RV/Myo/LV)

    v = {g: volumes(g) for g in ACDC_GROUPS}
    ef = {g: 1 - v[g][1, 2] / v[g][0, 2] for g in ACDC_GROUPS}  # LV ejection fraction
    assert v["DCM"][0, 2] > 1.3 * v["NOR"][0, 2] and ef["DCM"] < ef["NOR"]  # dilated, weak
    assert v["HCM"][0, 1] / v["HCM"][0, 2] > 2 * v["NOR"][0, 1] / v["NOR"][0, 2] and ef["HCM"] > ef["NOR"]
    assert ef["MINF"] < ef["NOR"] and v["MINF"][0, 2] > v["NOR"][0, 2]
    assert v["RV"][0, 0] > 1.3 * v["NOR"][0, 0]
    assert 1 - v["RV"][1, 0] / v["RV"][0, 0] < 1 - v["NOR"][1, 0] / v["NOR"][0, 0]  # weak RV


def test_acdc_layout_lists_and_split(tmp_path):
    root = str(tmp_path / "acdc")
    lists = make_acdc(root, patients=10, seed=1, hw_range=(30, 40), slice_range=(2, 3))
    pats = {s: patients_in_order(lists[s]) for s in ("train", "val", "test")}
    assert [len(pats[s]) for s in ("train", "val", "test")] == [7, 1, 2]
    assert not (set(pats["train"]) & set(pats["val"]) | set(pats["train"]) & set(pats["test"]))
    for s in ("train", "val", "test", "train_slices"):
        assert read_list(os.path.join(root, f"{s}.list")) == lists[s]
    assert patients_in_order(lists["train_slices"]) == pats["train"]
    for name in lists["train_slices"][:3]:
        d = load_h5(os.path.join(root, "data", "slices", f"{name}.h5"))
        assert d["image"].ndim == 2 and d["image"].dtype == np.float32
    v = load_h5(os.path.join(root, "data", f"{lists['val'][0]}.h5"))
    assert v["image"].min() == 0.0 and v["image"].max() == 1.0


def test_split_helpers_validate():
    assert acdc_split(3, 0)[1] and acdc_split(3, 0)[2] and acdc_split(3, 0)[0]
    with pytest.raises(ValueError, match=">= 3"):
        acdc_split(2, 0)
    with pytest.raises(ValueError, match=">= 2"):
        la_split(1, 0)
    train, test = la_split(10, 0)
    assert len(train) == 8 and len(test) == 2


def test_cli_raw_acdc(tmp_path):
    out = str(tmp_path / "raw")
    res = subprocess.run([sys.executable, os.path.join(ROOT, "code", "dataloaders", "synthetic.py"),
                          "--dataset", "ACDC", "--out", out, "--cases", "3", "--seed", "0", "--raw",
                          "--hw", "24", "30", "--slices", "2", "2"], capture_output=True, text=True, cwd=ROOT,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    files = sorted(os.listdir(os.path.join(out, "patient001")))
    assert files[0] == "Info.cfg" and files[1:3] == ["patient001_frame01.nii.gz", "patient001_frame01_gt.nii.gz"]
    with open(os.path.join(out, "patient002", "Info.cfg"), encoding="utf-8") as f:
        assert "Group: HCM" in f.read()  # 3 patients: DCM, HCM, NOR (in fifths, as ACDC numbers them)
    assert len(files) == 5 and all(os.path.exists(os.path.join(out, f"{s}.list")) for s in ("train", "val", "test"))
    bad = subprocess.run([sys.executable, os.path.join(ROOT, "code", "dataloaders", "synthetic.py"),
                          "--dataset", "LA", "--out", out, "--cases", "1"], capture_output=True, text=True,
                         cwd=ROOT, timeout=120)
    assert bad.returncode != 0 and ">= 2" in bad.stderr


def test_per_dataset_modules_and_reexports():
    """The generators live in synthetic_la / synthetic_acdc; dataloaders.synthetic re-exports them, and
    either module imports first in a fresh interpreter (they import synthetic's shared helpers)."""
    import dataloaders.synthetic as synthetic
    import dataloaders.synthetic_acdc as synthetic_acdc
    import dataloaders.synthetic_la as synthetic_la
    assert synthetic.make_la is synthetic_la.make_la and synthetic.la_case is synthetic_la.la_case
    assert synthetic.make_acdc is synthetic_acdc.make_acdc and synthetic.ACDC_GROUPS is synthetic_acdc.ACDC_GROUPS
    assert synthetic_la.smooth_noise is synthetic_acdc.smooth_noise is synthetic.smooth_noise
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        synthetic.nope  # noqa: B018
    for first in ("synthetic_la", "synthetic_acdc"):
        res = subprocess.run([sys.executable, "-c", f"import dataloaders.{first}; from dataloaders.synthetic import *; "
                              "print(make_la.__module__, make_acdc.__module__)"], capture_output=True, text=True,
                             cwd=os.path.join(ROOT, "code"), timeout=120)
        assert res.returncode == 0, res.stderr
        assert res.stdout.split() == ["dataloaders.synthetic_la", "dataloaders.synthetic_acdc"]
