"""LA (2018 Atrial Segmentation Challenge) dataset: 3D volumes (x, y, z).

Layout under ``base_dir``: ``train.list``, ``test.list`` (one case ID per line)
and ``2018LA_Seg_Training Set/<ID>/mri_norm2.h5`` with ``image`` (float32,
z-scored) and ``label`` (uint8, 0/1), axis order (x, y, z).
"""
from __future__ import annotations

import logging
import os
from typing import Any, Callable

from torch.utils.data import Dataset

from dataloaders.h5io import cached_read, load_h5, preload_all, validate_pair
from dataloaders.splits import read_list

__all__ = ["LAHeart", "la_case_path", "LA_NUM_CLASSES", "LA_CASE_DIR"]

logger = logging.getLogger(__name__)

LA_NUM_CLASSES = 2
LA_CASE_DIR = "2018LA_Seg_Training Set"


def la_case_path(base_dir: str, case: str) -> str:
    """``<base_dir>/2018LA_Seg_Training Set/<case>/mri_norm2.h5``."""
    return os.path.join(base_dir, LA_CASE_DIR, case, "mri_norm2.h5")


class LAHeart(Dataset):
    """LA volumes of one split.

    Args:
        base_dir: data folder (holds the lists and ``2018LA_Seg_Training Set``).
        split: ``"train"`` or ``"test"`` (the released LA split has no validation list).
        num: keep only the first ``num`` cases of the list (None: all).
        transform: applied to ``{"image", "label"}`` (e.g. RandomRotFlip, RandomCrop, ToTensor).

    ``__getitem__`` returns the transformed sample plus ``"case"`` (the ID) and
    ``"idx"``. Every file is checked on reading (shapes, NaN/Inf, labels in {0, 1}).

    Raises:
        ValueError: unknown split or bad ``num``.
        FileNotFoundError: the list is missing (on construction) or a case file (on reading).
    """

    def __init__(self, base_dir: str, split: str = "train", num: int | None = None,
                 transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None, cache: bool = False) -> None:
        if split not in ("train", "test"):
            raise ValueError(f"LAHeart: split must be 'train' or 'test', got {split!r}.")
        if num is not None and num <= 0:
            raise ValueError(f"LAHeart: num must be a positive number of cases or None, got {num}.")
        self._base_dir = base_dir
        self.split = split
        self.transform = transform
        self.image_list = read_list(os.path.join(base_dir, f"{split}.list"))
        if num is not None:
            if num > len(self.image_list):
                raise ValueError(f"LAHeart: num={num} but {split}.list in {base_dir} has only "
                                 f"{len(self.image_list)} cases.")
            self.image_list = self.image_list[:num]
        logger.info("LAHeart %s: %d samples from %s", split, len(self.image_list), base_dir)
        self._cache: dict[int, dict[str, Any]] | None = {} if cache else None

    def __len__(self) -> int:
        return len(self.image_list)

    def _decode(self, idx: int) -> dict[str, Any]:
        path = la_case_path(self._base_dir, self.image_list[idx])
        data = load_h5(path)
        validate_pair(data["image"], data["label"], LA_NUM_CLASSES, path, ndim=3)
        return data

    _read = cached_read
    preload = preload_all

    def __getitem__(self, idx: int) -> dict[str, Any]:
        case = self.image_list[idx]
        data = self._read(idx)
        sample: dict[str, Any] = {"image": data["image"], "label": data["label"]}
        if self.transform is not None:
            sample = self.transform(sample)
        sample["case"] = case
        sample["idx"] = idx
        return sample
