"""Shipped split lists equal splits.json; list helpers; patients_to_slices from the data."""
from __future__ import annotations
import json
import os

import pytest

from conftest import ROOT, SHARED_REFERENCE
from dataloaders.splits import (REFERENCE_LABELED_SLICES, labeled_slice_count, patient_of, patients_in_order,
                                patients_to_slices, read_list, split_slice_name, write_list)

SPLITS = os.path.join(SHARED_REFERENCE, "splits.json")


@pytest.fixture(scope="module")
def splits():
    if not os.path.isfile(SPLITS):
        pytest.skip(f"{SPLITS} not found (the shared reference folder is not beside this checkout)")
    with open(SPLITS) as f:
        return json.load(f)


def _shipped(dataset, name):
    return read_list(os.path.join(ROOT, "data", dataset, f"{name}.list"))


def test_shipped_la_lists_equal_splits_json(splits):
    assert _shipped("LA", "train") == splits["LA"]["train"]
    assert _shipped("LA", "test") == splits["LA"]["test"]


def test_shipped_acdc_lists_equal_splits_json(splits):
    a = splits["ACDC"]
    assert _shipped("ACDC", "train") == a["train_cases"]
    assert _shipped("ACDC", "val") == a["val_cases"]
    assert _shipped("ACDC", "test") == a["test_cases"]
    assert [int(p[7:]) for p in patients_in_order(_shipped("ACDC", "train"))] == a["train_patient_order"]
    assert sorted(int(p[7:]) for p in patients_in_order(_shipped("ACDC", "val"))) == a["val_patients"]
    assert sorted(int(p[7:]) for p in patients_in_order(_shipped("ACDC", "test"))) == a["test_patients"]
    assert {int(k): v for k, v in a["labeled_slices"].items()} == {
        k: v for k, v in REFERENCE_LABELED_SLICES.items() if k in (3, 7)}


def test_shipped_lists_without_reference():
    # holds even where splits.json is absent
    assert len(_shipped("LA", "train")) == 80 and len(_shipped("LA", "test")) == 20
    assert [len(_shipped("ACDC", s)) for s in ("train", "val", "test")] == [140, 20, 40]


def test_read_list_errors_and_roundtrip(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.list: list file not found"):
        read_list(str(tmp_path / "nope.list"))
    p = tmp_path / "x.list"
    p.write_text("a\n\nb \n")
    assert read_list(str(p)) == ["a", "b"]
    p.write_text("a b\n")
    with pytest.raises(ValueError, match="one name per line"):
        read_list(str(p))
    write_list(str(tmp_path / "sub" / "y.list"), ["c", "d"])
    assert (tmp_path / "sub" / "y.list").read_text() == "c\nd\n"


def test_name_parsing():
    assert patient_of("patient099_frame01_slice_15") == "patient099"
    assert split_slice_name("patient099_frame01_slice_15") == ("patient099_frame01", 15)
    with pytest.raises(ValueError):
        patient_of("06SR5RBREL16DQ6M8LWS")


def _slices(spec):
    return [f"patient{p:03d}_frame{f:02d}_slice_{k}" for p, n in spec for f in (1, 2) for k in range(1, n + 1)]


def test_patients_to_slices_counts_from_the_list(tmp_path):
    names = _slices([(99, 16), (38, 8), (50, 10), (100, 8)])  # the first real patients' slice counts
    assert patients_to_slices(names, 3) == 68
    assert patients_to_slices(names, 1) == 32
    with pytest.raises(ValueError, match="n_patients=5"):
        patients_to_slices(names, 5)
    with pytest.raises(ValueError, match="not contiguous"):
        patients_to_slices(names + names[:1], 2)
    write_list(str(tmp_path / "train_slices.list"), names)
    assert labeled_slice_count(str(tmp_path), 3) == 68


def test_labeled_slice_count_checks_reference_on_real_size_list(tmp_path):
    # a 1312-slice list whose first 3 patients do not give 68 slices is rejected
    spec = [(i, 10) for i in range(1, 66)] + [(66, 6)]
    names = _slices(spec)
    assert len(names) == 1312
    write_list(str(tmp_path / "train_slices.list"), names)
    with pytest.raises(ValueError, match="paper's split has 68"):
        labeled_slice_count(str(tmp_path), 3)
    assert labeled_slice_count(str(tmp_path), 3, check_reference=False) == 60
