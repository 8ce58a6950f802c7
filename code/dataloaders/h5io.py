"""Reading the h5 files of the LA and ACDC layouts, with clear errors.

Every file of both layouts holds two datasets, ``image`` (float) and
``label`` (integer class indices) of the same shape. ``load_h5`` reads them
and ``validate_pair`` checks them; both raise with the file path and the fix,
so nothing downstream has to guess what went wrong. ``check_files`` does both
for a list of files (e.g. the validation and test volumes, before training).
"""
from __future__ import annotations

import logging
import os
from typing import Any
from collections.abc import Iterable, Sequence

import h5py
import numpy as np

__all__ = ["DataError", "load_h5", "validate_pair", "check_files"]

logger = logging.getLogger(__name__)


class DataError(ValueError):
    """A data file exists but its content is not what the pipeline expects."""


def load_h5(path: str, keys: Iterable[str] = ("image", "label")) -> dict[str, np.ndarray]:
    """Read datasets ``keys`` of the h5 file ``path`` into numpy arrays.

    Args:
        path: the ``.h5`` file.
        keys: names of the datasets to read (default ``("image", "label")``).

    Returns:
        ``{key: array}`` for every key, in memory (the file is closed).

    Raises:
        FileNotFoundError: the file does not exist (names the path and says
            to run the preprocessing or check ``--root_path``).
        DataError: the file cannot be opened as h5 (corrupt, truncated, not
            an h5 file) or a dataset in ``keys`` is missing or unreadable.
    """
    keys = tuple(keys)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{path}: file not found. Run the preprocessing script for this dataset "
            "(code/dataloaders/la_heart_processing.py or acdc_data_processing.py, or "
            "code/dataloaders/synthetic.py for stand-in data) or check --root_path "
            "(it must be the folder that holds the .list files).")
    try:
        h5f = h5py.File(path, "r")
    except OSError as err:
        raise DataError(
            f"{path}: cannot be read as an h5 file ({err}). The file is corrupt or "
            "truncated: delete it and run the preprocessing again.") from err
    out: dict[str, np.ndarray] = {}
    with h5f:
        for key in keys:
            if key not in h5f:
                raise DataError(
                    f"{path}: no '{key}' dataset (found: {sorted(h5f.keys())}). Every file "
                    f"needs the datasets {list(keys)}; regenerate it with the preprocessing script.")
            try:
                out[key] = h5f[key][()]
            except (OSError, KeyError, TypeError) as err:
                raise DataError(
                    f"{path}: dataset '{key}' cannot be read ({err}). The file is corrupt: "
                    "delete it and run the preprocessing again.") from err
    return out


def validate_pair(image: np.ndarray, label: np.ndarray, num_classes: int, path: str,
                  ndim: int | None = None) -> None:
    """Check an image/label pair read from ``path``; raise ``DataError`` on the first fault.

    Checks: same shape (and ``ndim`` dimensions when given), image dtype
    floating point (normalised intensities; integer or bool images are
    refused), image values all finite (no NaN/Inf), label values whole numbers
    in ``[0, num_classes)``.
    Nothing is clipped or rounded: a bad file is an error, named by ``path``.

    Args:
        image: image array, e.g. LA (x, y, z), ACDC volume (S, H, W) or slice (H, W).
        label: label array of the same shape.
        num_classes: number of classes (LA 2, ACDC 4).
        path: file the arrays came from, used in the message.
        ndim: expected number of dimensions, or None to accept any.

    Raises:
        DataError: with the path, what is wrong and what to do.
    """
    image = np.asarray(image)
    label = np.asarray(label)
    if ndim is not None and image.ndim != ndim:
        raise DataError(f"{path}: image has {image.ndim} dimensions {image.shape}, expected {ndim}. "
                        "This file does not belong to this dataset layout; check --root_path "
                        "or regenerate the file.")
    if image.shape != label.shape:
        raise DataError(f"{path}: image shape {image.shape} != label shape {label.shape}. "
                        "Image and label must be voxel-aligned; regenerate the file with the "
                        "preprocessing script.")
    if image.size == 0:
        raise DataError(f"{path}: empty arrays (shape {image.shape}); regenerate the file.")
    if np.issubdtype(image.dtype, np.integer) or image.dtype == np.bool_:
        raise DataError(f"{path}: image dtype {image.dtype}, expected float32 (normalised intensities). "
                        "Regenerate the file with the preprocessing script.")
    if not np.issubdtype(image.dtype, np.floating):
        raise DataError(f"{path}: image dtype {image.dtype} is not numeric; regenerate the file.")
    if not np.isfinite(image).all():
        n_bad = int(np.count_nonzero(~np.isfinite(image)))
        raise DataError(f"{path}: image has {n_bad} NaN/Inf values. Fix or remove this case "
                        "(a constant raw image gives NaN after normalisation) and rerun the "
                        "preprocessing.")
    if np.issubdtype(label.dtype, np.floating):
        if not np.isfinite(label).all() or not np.array_equal(label, np.round(label)):
            raise DataError(f"{path}: label has non-integer values (dtype {label.dtype}). Labels "
                            "must be class indices; regenerate the file.")
    elif not (np.issubdtype(label.dtype, np.integer) or label.dtype == np.bool_):
        raise DataError(f"{path}: label dtype {label.dtype} is not an integer type; regenerate the file.")
    lo, hi = label.min(), label.max()
    if lo < 0 or hi >= num_classes:
        found = np.unique(label)
        raise DataError(f"{path}: label values {found[:10].tolist()} outside 0..{num_classes - 1} "
                        f"({num_classes} classes). Check that the file belongs to this dataset "
                        "(LA: 0/1; ACDC: 0 bg, 1 RV, 2 Myo, 3 LV) and that raw labels were "
                        "converted (LA raw 255 -> 1) by the preprocessing script.")


def check_files(paths: Sequence[str], num_classes: int, ndim: int | None, progress: bool = False,
                desc: str = "check data") -> None:
    """Read and check every file of ``paths`` (:func:`load_h5` + :func:`validate_pair`).

    Meant for the files a run reads only later (validation and test volumes),
    so that a broken one stops the run at start-up, named, instead of being
    used silently or failing at the first validation.

    Args:
        paths: the ``.h5`` files.
        num_classes: number of classes (LA 2, ACDC 4).
        ndim: expected number of dimensions of image and label, or None for any.
        progress: show a tqdm bar.
        desc: the bar's label.

    Raises:
        FileNotFoundError: the first missing file (names it and the fix).
        DataError: the first unreadable or invalid file (names it and the fix).
    """
    from tqdm import tqdm
    for path in tqdm(paths, desc=desc, disable=not progress, leave=False):
        data = load_h5(path)
        validate_pair(data["image"], data["label"], num_classes, path, ndim=ndim)
    logger.debug("%s: %d files OK", desc, len(paths))


def cached_read(dataset: Any, idx: int) -> dict[str, Any]:
    """``dataset._decode(idx)`` (read and check one file), kept in ``dataset._cache``
    when the dataset was made with ``cache=True``; cached arrays are handed out as
    copies, so a transform can never change the cache."""
    cache = getattr(dataset, "_cache", None)
    if cache is None:
        return dataset._decode(idx)
    if idx not in cache:
        cache[idx] = dataset._decode(idx)
    return {k: v.copy() if isinstance(v, np.ndarray) else v for k, v in cache[idx].items()}


def preload_all(dataset: Any, progress: bool = False) -> None:
    """Decode every sample of a ``cache=True`` dataset now (before loader workers are
    forked, so that they share the decoded arrays); nothing without a cache."""
    if getattr(dataset, "_cache", None) is None:
        return
    from tqdm import tqdm
    for idx in tqdm(range(len(dataset)), desc="decode data", disable=not progress, leave=False):
        if idx not in dataset._cache:
            dataset._cache[idx] = dataset._decode(idx)
