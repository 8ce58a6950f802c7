"""Convert the raw 2018 Atrial Segmentation Challenge files to the LA h5 layout.

Usage (from the repository root)::

    python code/dataloaders/la_heart_processing.py --raw "<download>/Training Set" --out data/LA

Input ``<raw>/<ID>/lgemri.nrrd`` (LGE-MRI) and ``<raw>/<ID>/laendo.nrrd``
(atrium = 255). Output ``<out>/2018LA_Seg_Training Set/<ID>/mri_norm2.h5``
with ``image`` float32 and ``label`` uint8 (0/1), axis order (x, y, z), plus
``<out>/train.list`` and ``<out>/test.list``.

Released preprocessing (UA-MT ``la_heart_processing.py``, used for the
distributed h5 files):
1. label = (laendo == 255);
2. image z-scored over the WHOLE raw volume: (I - mean(I)) / std(I);
3. x and y cropped to the label's bounding box [min, max], widened on each
   side by p = max(112 - (max - min), 0) // 2 plus a random margin of 10..19
   voxels (``randint(10, 20)``), clipped to the volume: [max(min - m - p, 0), min(max + m' + p, side));
4. z is NOT cropped (released behaviour: the z margins, ``randint(5, 10)`` twice, are
   drawn and unused; they are still drawn here so the random stream matches).
The margins come from ``numpy.random.RandomState`` seeded per case from
``--seed`` and the case ID, so a case's crop does not depend on the others.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import zlib
from collections.abc import Sequence

import h5py
import numpy as np

if __name__ == "__main__":  # run as a script: make ``code/`` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dataloaders.h5io import DataError, validate_pair  # noqa: E402
from dataloaders.la_heart import LA_CASE_DIR, la_case_path  # noqa: E402
from dataloaders.splits import REPO_DATA_DIR, read_list, write_list  # noqa: E402

__all__ = ["LA_MIN_CROP", "read_nrrd_xyz", "crop_bounds", "preprocess_la", "write_la_h5",
           "case_rng", "convert_la", "main"]

logger = logging.getLogger(__name__)

#: the x, y, z sizes the crop is widened to (the training patch); z unused, as released
LA_MIN_CROP = (112, 112, 80)


def read_nrrd_xyz(path: str) -> np.ndarray:
    """Read a NRRD file with SimpleITK as an (x, y, z) array (the axis order of pynrrd)."""
    import SimpleITK as sitk
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: raw file not found. --raw must be the folder that holds "
                                "one sub-folder per case with lgemri.nrrd and laendo.nrrd.")
    try:
        arr = sitk.GetArrayFromImage(sitk.ReadImage(path))
    except RuntimeError as err:
        raise DataError(f"{path}: cannot be read as NRRD ({err}); download the file again.") from err
    if arr.ndim != 3:
        raise DataError(f"{path}: expected a 3D volume, got shape {arr.shape}.")
    return np.ascontiguousarray(arr.transpose(2, 1, 0))


def case_rng(seed: int, case: str) -> np.random.RandomState:
    """Per-case ``RandomState`` from the global seed and the case ID (stable across runs)."""
    return np.random.RandomState(zlib.crc32(f"{seed}:{case}".encode()) & 0xFFFFFFFF)


def crop_bounds(label: np.ndarray, rng: np.random.RandomState,
                min_size: Sequence[int] = LA_MIN_CROP) -> tuple[slice, slice, slice]:
    """Released crop of a binary (x, y, z) label: x/y widened bbox + random margins, z whole.

    Draws ``rng.randint(10, 20)`` for x-low, x-high, y-low, y-high and
    ``rng.randint(5, 10)`` twice for z (unused), in that order.

    Raises:
        DataError: the label has no foreground.
    """
    nz = np.nonzero(label)
    if nz[0].size == 0:
        raise DataError("label has no foreground voxel, the crop around the atrium is undefined")
    bounds = []
    for axis in range(3):
        lo, hi = int(nz[axis].min()), int(nz[axis].max())
        pad = max(int(min_size[axis]) - (hi - lo), 0) // 2
        lo_m = rng.randint(10, 20) if axis < 2 else rng.randint(5, 10)
        hi_m = rng.randint(10, 20) if axis < 2 else rng.randint(5, 10)
        bounds.append((max(lo - lo_m - pad, 0), min(hi + hi_m + pad, label.shape[axis])))
    (x0, x1), (y0, y1), _unused_z = bounds  # released: z is not cropped
    return slice(x0, x1), slice(y0, y1), slice(0, label.shape[2])


def preprocess_la(image: np.ndarray, label_raw: np.ndarray, rng: np.random.RandomState,
                  name: str = "case") -> tuple[np.ndarray, np.ndarray]:
    """Raw (x, y, z) image and label (0/255) -> cropped z-scored float32 image and uint8 label.

    Raises:
        DataError: shapes differ, label values other than 0/255, no atrium, constant image.
    """
    if image.shape != label_raw.shape:
        raise DataError(f"{name}: lgemri shape {image.shape} != laendo shape {label_raw.shape}.")
    other = (label_raw != 0) & (label_raw != 255)
    if other.any():
        values = np.unique(label_raw[other])
        raise DataError(f"{name}: laendo.nrrd has values {values[:10].tolist()} besides 0 and 255, expected "
                        "only 0 and 255 (atrium); is this the challenge's laendo.nrrd?")
    label = (label_raw == 255).astype(np.uint8)
    image = image.astype(np.float64)
    std = image.std()
    if not np.isfinite(std) or std == 0:
        raise DataError(f"{name}: lgemri.nrrd is constant or not finite, cannot z-score it.")
    try:
        sl = crop_bounds(label, rng)
    except DataError as err:
        raise DataError(f"{name}: {err}; check laendo.nrrd.") from None
    image = ((image - image.mean()) / std).astype(np.float32)
    return np.ascontiguousarray(image[sl]), np.ascontiguousarray(label[sl])


def write_la_h5(path: str, image: np.ndarray, label: np.ndarray) -> None:
    """Write ``image`` (float32) and ``label`` (uint8) to ``path`` (gzip), creating folders."""
    validate_pair(image, label, 2, path, ndim=3)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with h5py.File(path, "w") as f:
        f.create_dataset("image", data=image.astype(np.float32), compression="gzip")
        f.create_dataset("label", data=label.astype(np.uint8), compression="gzip")


def _list_dir(raw: str, lists: str | None) -> str:
    if lists is not None:
        return lists
    if os.path.isfile(os.path.join(raw, "train.list")):
        return raw
    return os.path.join(REPO_DATA_DIR, "LA")


def convert_la(raw: str, out: str, seed: int = 1337, lists: str | None = None,
               progress: bool = True) -> list[str]:
    """Convert every case of ``train.list`` + ``test.list`` from ``raw`` to ``out``.

    Args:
        raw: folder with ``<ID>/lgemri.nrrd`` and ``<ID>/laendo.nrrd``.
        out: data folder to write (``2018LA_Seg_Training Set/<ID>/mri_norm2.h5`` + lists).
        seed: seed of the random crop margins.
        lists: folder with ``train.list``/``test.list``; default ``<raw>`` if it has them
            (synthetic raw data), else the fixed split shipped in ``data/LA``.
        progress: show a tqdm bar.

    Returns:
        The converted case IDs (train then test order).

    Raises:
        FileNotFoundError: a listed case has no raw files. DataError: a raw case is unusable.
    """
    from tqdm import tqdm
    list_dir = _list_dir(raw, lists)
    train, test = read_list(os.path.join(list_dir, "train.list")), read_list(os.path.join(list_dir, "test.list"))
    cases = train + test
    missing = [c for c in cases if not os.path.isfile(os.path.join(raw, c, "lgemri.nrrd"))]
    if missing:
        raise FileNotFoundError(
            f"{raw}: {len(missing)} listed cases have no <ID>/lgemri.nrrd (e.g. "
            f"{os.path.join(raw, missing[0], 'lgemri.nrrd')}). --raw must be the challenge's training "
            f"folder with one sub-folder per case; the lists come from {list_dir}.")
    extra = sorted(set(d for d in os.listdir(raw) if os.path.isdir(os.path.join(raw, d))) - set(cases))
    if extra:
        logger.warning("%d folders in %s are in neither list and are not converted: %s",
                       len(extra), raw, ", ".join(extra[:5]))
    for case in tqdm(cases, desc="LA cases", disable=not progress):
        image = read_nrrd_xyz(os.path.join(raw, case, "lgemri.nrrd"))
        label = read_nrrd_xyz(os.path.join(raw, case, "laendo.nrrd"))
        img, lab = preprocess_la(image, label, case_rng(seed, case), name=os.path.join(raw, case))
        write_la_h5(la_case_path(out, case), img, lab)
        logger.debug("%s: raw %s -> %s", case, image.shape, img.shape)
    write_list(os.path.join(out, "train.list"), train)
    write_list(os.path.join(out, "test.list"), test)
    logger.info("wrote %d cases to %s", len(cases), os.path.join(out, LA_CASE_DIR))
    return cases


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--raw", required=True,
                        help="folder with one sub-folder per case holding lgemri.nrrd and laendo.nrrd")
    parser.add_argument("--out", default="data/LA", help="output data folder (default data/LA)")
    parser.add_argument("--seed", type=int, default=1337, help="seed of the random 10-19 voxel crop margins")
    parser.add_argument("--lists", default=None,
                        help="folder with train.list/test.list (default: --raw if it has them, else data/LA)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        convert_la(args.raw, args.out, seed=args.seed, lists=args.lists)
    except (FileNotFoundError, DataError, ValueError) as err:
        logger.error("%s", err)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
