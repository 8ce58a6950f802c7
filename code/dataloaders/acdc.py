"""ACDC dataset: 2D slices for training, whole volumes for validation and test.

Layout under ``base_dir``: ``train_slices.list``, ``train.list``, ``val.list``,
``test.list``; volumes ``data/patientXXX_frameYY.h5`` (``image`` (S, H, W)
float32 in [0, 1], ``label`` (S, H, W), 0 bg, 1 RV, 2 Myo, 3 LV) and slices
``data/slices/patientXXX_frameYY_slice_K.h5`` (``image``/``label`` (H, W)).
"""
from __future__ import annotations

import logging
import os
from typing import Any, Callable

from torch.utils.data import Dataset

from dataloaders.h5io import cached_read, load_h5, preload_all, validate_pair
from dataloaders.splits import read_list

__all__ = ["ACDC", "BaseDataSets", "acdc_volume_path", "acdc_slice_path", "ACDC_NUM_CLASSES"]

logger = logging.getLogger(__name__)

ACDC_NUM_CLASSES = 4


def acdc_volume_path(base_dir: str, case: str) -> str:
    """``<base_dir>/data/<case>.h5`` for a volume name ``patientXXX_frameYY``."""
    return os.path.join(base_dir, "data", f"{case}.h5")


def acdc_slice_path(base_dir: str, name: str) -> str:
    """``<base_dir>/data/slices/<name>.h5`` for a slice name ``patientXXX_frameYY_slice_K``."""
    return os.path.join(base_dir, "data", "slices", f"{name}.h5")


class ACDC(Dataset):
    """ACDC samples of one split (the released ``BaseDataSets``).

    Args:
        base_dir: data folder (holds the lists and ``data/``).
        split: ``"train"`` (slices of ``train_slices.list``), ``"val"`` or ``"test"``
            (whole volumes of ``val.list`` / ``test.list``).
        num: keep only the first ``num`` entries (None: all).
        transform: applied to training slices (e.g. ``RandomGenerator([256, 256])``);
            validation/test volumes are returned untransformed as numpy arrays, as released.

    ``__getitem__`` returns ``{"image", "label", "idx", "case"}``. Every file is
    checked on reading (shapes, NaN/Inf, labels in 0..3).

    Raises:
        ValueError: unknown split or bad ``num``; FileNotFoundError: missing list or file.
    """

    def __init__(self, base_dir: str, split: str = "train", num: int | None = None,
                 transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None, cache: bool = False) -> None:
        if split not in ("train", "val", "test"):
            raise ValueError(f"ACDC: split must be 'train', 'val' or 'test', got {split!r}.")
        if num is not None and num <= 0:
            raise ValueError(f"ACDC: num must be a positive number of samples or None, got {num}.")
        self._base_dir = base_dir
        self.split = split
        self.transform = transform
        list_name = "train_slices.list" if split == "train" else f"{split}.list"
        self.sample_list = read_list(os.path.join(base_dir, list_name))
        if num is not None:
            if num > len(self.sample_list):
                raise ValueError(f"ACDC: num={num} but {list_name} in {base_dir} has only "
                                 f"{len(self.sample_list)} entries.")
            self.sample_list = self.sample_list[:num]
        logger.info("ACDC %s: %d samples from %s", split, len(self.sample_list), base_dir)
        self._cache: dict[int, dict[str, Any]] | None = {} if cache else None

    def __len__(self) -> int:
        return len(self.sample_list)

    def path(self, idx: int) -> str:
        """File of sample ``idx``."""
        name = self.sample_list[idx]
        if self.split == "train":
            return acdc_slice_path(self._base_dir, name)
        return acdc_volume_path(self._base_dir, name)

    def _decode(self, idx: int) -> dict[str, Any]:
        path = self.path(idx)
        data = load_h5(path)
        validate_pair(data["image"], data["label"], ACDC_NUM_CLASSES, path, ndim=2 if self.split == "train" else 3)
        return data

    _read = cached_read
    preload = preload_all

    def __getitem__(self, idx: int) -> dict[str, Any]:
        data = self._read(idx)
        sample: dict[str, Any] = {"image": data["image"], "label": data["label"]}
        if self.split == "train" and self.transform is not None:
            sample = self.transform(sample)
        sample["idx"] = idx
        sample["case"] = self.sample_list[idx]
        return sample


#: the released code's name for this dataset
BaseDataSets = ACDC
