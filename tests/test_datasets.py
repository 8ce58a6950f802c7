"""LAHeart / ACDC datasets and h5io on tiny synthetic data: samples, sampler, bad-input errors."""
from __future__ import annotations
import os

import h5py
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from dataloaders.acdc import ACDC, acdc_slice_path, acdc_volume_path
from dataloaders.h5io import DataError, load_h5, validate_pair
from dataloaders.la_heart import LAHeart, la_case_path
from dataloaders.sampler import TwoStreamBatchSampler
from dataloaders.synthetic import make_acdc, make_la
from dataloaders.transforms import Compose, RandomCrop, RandomGenerator, RandomRotFlip, ToTensor


@pytest.fixture(scope="module")
def la_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("la"))
    make_la(root, cases=5, seed=0, size=(32, 32, 20))
    return root


@pytest.fixture(scope="module")
def acdc_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("acdc"))
    make_acdc(root, patients=4, seed=0, hw_range=(40, 56), slice_range=(3, 4))
    return root


def test_la_train_with_transforms_and_sampler(la_root):
    ds = LAHeart(la_root, split="train",
                 transform=Compose([RandomRotFlip(), RandomCrop((24, 24, 16)), ToTensor()]))
    assert len(ds) == 4
    np.random.seed(0)
    sampler = TwoStreamBatchSampler([0, 1], [2, 3], batch_size=4, secondary_batch_size=2)
    batches = list(DataLoader(ds, batch_sampler=sampler, num_workers=0))
    assert len(batches) == 1
    b = batches[0]
    assert b["image"].shape == (4, 1, 24, 24, 16) and b["image"].dtype == torch.float32
    assert b["label"].shape == (4, 24, 24, 16) and b["label"].dtype == torch.uint8
    assert set(b["case"][:2]) <= set(ds.image_list[:2]) and set(b["case"][2:]) <= set(ds.image_list[2:])
    assert b["label"].max() <= 1


def test_la_test_split_num_and_raw_sample(la_root):
    ds = LAHeart(la_root, split="test")
    s = ds[0]
    assert s["image"].dtype == np.float32 and s["label"].dtype == np.uint8
    assert s["image"].shape == s["label"].shape and s["case"] == ds.image_list[0]
    assert len(LAHeart(la_root, split="train", num=2)) == 2
    with pytest.raises(ValueError, match="only 4 cases"):
        LAHeart(la_root, split="train", num=9)
    with pytest.raises(ValueError, match="split must be"):
        LAHeart(la_root, split="val")


def test_acdc_train_slices_with_random_generator(acdc_root):
    ds = ACDC(acdc_root, split="train", transform=RandomGenerator((32, 32)))
    s = ds[0]
    assert s["image"].shape == (1, 32, 32) and s["image"].dtype == torch.float32
    assert s["label"].shape == (32, 32) and s["label"].dtype == torch.uint8
    assert s["idx"] == 0 and s["case"] == ds.sample_list[0]
    n = len(ds)
    np.random.seed(0)
    loader = DataLoader(ds, batch_sampler=TwoStreamBatchSampler(list(range(4)), list(range(4, n)), 6, 3))
    batch = next(iter(loader))
    assert batch["image"].shape == (6, 1, 32, 32) and all(i < 4 for i in batch["idx"][:3].tolist())


def test_acdc_val_test_volumes(acdc_root):
    for split in ("val", "test"):
        ds = ACDC(acdc_root, split=split)
        s = ds[0]
        assert s["image"].ndim == 3 and s["image"].shape == s["label"].shape
        assert 0.0 <= s["image"].min() and s["image"].max() <= 1.0
        assert s["case"].endswith(("_frame01", "_frame02"))


# ------------------------------------------------------------------ bad input names the file
def _write(path, **arrays):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with h5py.File(path, "w") as f:
        for k, v in arrays.items():
            f.create_dataset(k, data=v)


def test_load_h5_errors(tmp_path):
    missing = str(tmp_path / "nope.h5")
    with pytest.raises(FileNotFoundError, match="nope.h5.*--root_path"):
        load_h5(missing)
    corrupt = tmp_path / "corrupt.h5"
    corrupt.write_bytes(b"not an h5 file")
    with pytest.raises(DataError, match="corrupt.h5.*cannot be read"):
        load_h5(str(corrupt))
    nolabel = str(tmp_path / "nolabel.h5")
    _write(nolabel, image=np.zeros((2, 2), np.float32))
    with pytest.raises(DataError, match="nolabel.h5: no 'label' dataset"):
        load_h5(nolabel)
    assert load_h5(nolabel, keys=("image",))["image"].shape == (2, 2)


@pytest.mark.parametrize("image,label,match", [
    (np.zeros((2, 3)), np.zeros((3, 2), np.uint8), "shape"),
    (np.array([[0.0, np.nan]]), np.zeros((1, 2), np.uint8), "NaN"),
    (np.array([[0.0, np.inf]]), np.zeros((1, 2), np.uint8), "NaN/Inf"),
    (np.zeros((1, 2)), np.array([[0, 4]], np.uint8), "outside 0..3"),
    (np.zeros((1, 2)), np.array([[0, -1]], np.int16), "outside 0..3"),
    (np.zeros((1, 2)), np.array([[0, 0.5]]), "non-integer"),
])
def test_validate_pair_faults(image, label, match):
    with pytest.raises(DataError, match=f"some/file.h5: .*{match}"):
        validate_pair(image, label, 4, "some/file.h5")


def test_validate_pair_accepts_good_data():
    validate_pair(np.zeros((2, 2), np.float32), np.array([[0, 3], [1, 2]], np.uint8), 4, "f.h5", ndim=2)
    validate_pair(np.zeros((2, 2)), np.array([[0.0, 1.0], [1.0, 0.0]]), 2, "f.h5")  # integer-valued floats


def test_la_dataset_fault_names_file(tmp_path, la_root):
    import shutil
    root = str(tmp_path / "la")
    shutil.copytree(la_root, root)
    ds = LAHeart(root, split="train")
    path = la_case_path(root, ds.image_list[0])
    _write(path, image=np.zeros((4, 4, 4), np.float32), label=np.full((4, 4, 4), 2, np.uint8))
    with pytest.raises(DataError, match=f"{ds.image_list[0]}.*outside 0..1"):
        ds[0]
    os.remove(la_case_path(root, ds.image_list[1]))
    with pytest.raises(FileNotFoundError, match=ds.image_list[1]):
        ds[1]
    with pytest.raises(FileNotFoundError, match="train.list"):
        LAHeart(str(tmp_path / "empty"), split="train")


def test_acdc_dataset_fault_names_file(tmp_path, acdc_root):
    import shutil
    root = str(tmp_path / "acdc")
    shutil.copytree(acdc_root, root)
    ds = ACDC(root, split="train")
    _write(acdc_slice_path(root, ds.sample_list[0]), image=np.zeros((4, 4), np.float32),
           label=np.zeros((4, 5), np.uint8))
    with pytest.raises(DataError, match=f"{ds.sample_list[0]}.h5: image shape"):
        ds[0]
    val = ACDC(root, split="val")
    _write(acdc_volume_path(root, val.sample_list[0]), image=np.full((2, 4, 4), np.nan, np.float32),
           label=np.zeros((2, 4, 4), np.uint8))
    with pytest.raises(DataError, match=f"{val.sample_list[0]}.h5: image has 32 NaN"):
        val[0]
