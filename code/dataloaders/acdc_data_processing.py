"""Convert the raw ACDC challenge NIfTI files to the ACDC h5 layout (SSL4MIS style).

Usage (from the repository root)::

    python code/dataloaders/acdc_data_processing.py --raw "<download>/database/training" --out data/ACDC

Input: ``<raw>/patientXXX/patientXXX_frameNN.nii.gz`` and ``..._frameNN_gt.nii.gz``
for the two labeled frames (ED and ES) of each patient (``<raw>/training/`` and
``<raw>/testing/`` sub-folders are also searched). Output:

- ``<out>/data/patientXXX_frame01.h5`` and ``..._frame02.h5``: the earlier labeled
  frame is ``frame01``, the later ``frame02``; ``image`` (S, H, W) float32
  min-max normalised per volume to [0, 1], ``label`` (S, H, W) uint8;
- ``<out>/data/slices/patientXXX_frameYY_slice_K.h5``: one (H, W) slice each,
  K = 1..S (numbered from 1 like the distributed SSL4MIS files);
- ``train.list``, ``val.list``, ``test.list`` (volume names) copied from the
  split, and ``train_slices.list``: the slices of ``train.list`` in its order
  (patient by patient, frame01 then frame02, K ascending), so the first
  68 / 136 slices are those of the first 3 / 7 training patients.

The SSL4MIS list orders slices within a frame arbitrarily; the set of
labeled slices is the same, their order inside the labeled set differs.
"""
from __future__ import annotations

import argparse
import glob
import logging
import os
import re
import sys
from collections.abc import Sequence

import h5py
import numpy as np

if __name__ == "__main__":  # run as a script: make ``code/`` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dataloaders.acdc import ACDC_NUM_CLASSES, acdc_slice_path, acdc_volume_path  # noqa: E402
from dataloaders.h5io import DataError, validate_pair  # noqa: E402
from dataloaders.splits import REPO_DATA_DIR, patient_of, read_list, write_list  # noqa: E402

__all__ = ["find_labeled_frames", "read_nifti", "normalise_minmax", "write_acdc_volume",
           "convert_acdc", "main"]

logger = logging.getLogger(__name__)

_FRAME_RE = re.compile(r"^(patient\d+)_frame(\d+)\.nii\.gz$")


def _patient_dir(raw: str, patient: str) -> str:
    for sub in ("", "training", "testing"):
        d = os.path.join(raw, sub, patient)
        if os.path.isdir(d):
            return d
    raise FileNotFoundError(f"{os.path.join(raw, patient)}: patient folder not found (also looked in "
                            f"{raw}/training and {raw}/testing). --raw must be the ACDC folder that holds "
                            "patientXXX/ sub-folders.")


def find_labeled_frames(patient_dir: str) -> list[tuple[int, str, str]]:
    """The two labeled frames of a patient folder as (frame number, image, gt) paths, earlier first.

    Raises:
        DataError: not exactly two ``patientXXX_frameNN.nii.gz`` files with a ``_gt`` beside them.
    """
    frames = []
    for path in sorted(glob.glob(os.path.join(patient_dir, "patient*_frame*.nii.gz"))):
        m = _FRAME_RE.match(os.path.basename(path))
        if m is None:  # the _gt files themselves
            continue
        gt = path[: -len(".nii.gz")] + "_gt.nii.gz"
        if not os.path.isfile(gt):
            raise DataError(f"{path}: no ground truth {os.path.basename(gt)} beside it; the ACDC "
                            "training folders have one for each of the two labeled frames.")
        frames.append((int(m.group(2)), path, gt))
    frames.sort()
    if len(frames) != 2:
        raise DataError(f"{patient_dir}: found {len(frames)} labeled frames "
                        f"({[os.path.basename(f[1]) for f in frames]}), expected 2 (ED and ES).")
    return frames


def read_nifti(path: str) -> np.ndarray:
    """Read a NIfTI volume with SimpleITK as an (S, H, W) array."""
    import SimpleITK as sitk
    try:
        arr = sitk.GetArrayFromImage(sitk.ReadImage(path))
    except RuntimeError as err:
        raise DataError(f"{path}: cannot be read as NIfTI ({err}); download the file again.") from err
    if arr.ndim != 3:
        raise DataError(f"{path}: expected a 3D volume, got shape {arr.shape}.")
    return arr


def normalise_minmax(image: np.ndarray, name: str = "image") -> np.ndarray:
    """(I - min I) / (max I - min I) over the whole volume, as float32 in [0, 1]."""
    image = image.astype(np.float64)
    lo, hi = image.min(), image.max()
    if not np.isfinite(lo) or not np.isfinite(hi) or hi == lo:
        raise DataError(f"{name}: constant or non-finite image, cannot min-max normalise it.")
    return ((image - lo) / (hi - lo)).astype(np.float32)


def write_acdc_volume(out: str, case: str, image: np.ndarray, label: np.ndarray,
                      write_slices: bool = True) -> list[str]:
    """Write ``<out>/data/<case>.h5`` and (optionally) its slices; return the slice names.

    ``image`` (S, H, W) float32 in [0, 1]; ``label`` (S, H, W) class indices 0..3.
    """
    vol_path = acdc_volume_path(out, case)
    validate_pair(image, label, ACDC_NUM_CLASSES, vol_path, ndim=3)
    image = image.astype(np.float32)
    label = label.astype(np.uint8)
    os.makedirs(os.path.dirname(vol_path), exist_ok=True)
    with h5py.File(vol_path, "w") as f:
        f.create_dataset("image", data=image, compression="gzip")
        f.create_dataset("label", data=label, compression="gzip")
    names = [f"{case}_slice_{k + 1}" for k in range(image.shape[0])]
    if write_slices:
        os.makedirs(os.path.dirname(acdc_slice_path(out, names[0])), exist_ok=True)
        for k, name in enumerate(names):
            with h5py.File(acdc_slice_path(out, name), "w") as f:
                f.create_dataset("image", data=image[k], compression="gzip")
                f.create_dataset("label", data=label[k], compression="gzip")
    return names


def _list_dir(raw: str, lists: str | None) -> str:
    if lists is not None:
        return lists
    if os.path.isfile(os.path.join(raw, "train.list")):
        return raw
    return os.path.join(REPO_DATA_DIR, "ACDC")


def convert_acdc(raw: str, out: str, lists: str | None = None, progress: bool = True) -> dict[str, list[str]]:
    """Convert the patients of the split from ``raw`` to ``out``; write volumes, slices and lists.

    Args:
        raw: ACDC folder with ``patientXXX/`` sub-folders (or ``training/``/``testing/`` above them).
        out: data folder to write.
        lists: folder with ``train.list``/``val.list``/``test.list`` (volume names);
            default ``<raw>`` if it has them (synthetic raw data), else the fixed split in ``data/ACDC``.
        progress: show a tqdm bar.

    Returns:
        ``{"train": [...], "val": [...], "test": [...], "train_slices": [...]}`` as written.

    Raises:
        FileNotFoundError: a listed patient is missing. DataError: a raw volume is unusable.
    """
    from tqdm import tqdm
    list_dir = _list_dir(raw, lists)
    split = {s: read_list(os.path.join(list_dir, f"{s}.list")) for s in ("train", "val", "test")}
    patients = list(dict.fromkeys(patient_of(c) for s in ("train", "val", "test") for c in split[s]))
    slices_of: dict[str, list[str]] = {}
    for patient in tqdm(patients, desc="ACDC patients", disable=not progress):
        frames = find_labeled_frames(_patient_dir(raw, patient))
        for new_no, (_old_no, img_path, gt_path) in enumerate(frames, 1):
            case = f"{patient}_frame{new_no:02d}"
            image = read_nifti(img_path)
            label = read_nifti(gt_path)
            if image.shape != label.shape:
                raise DataError(f"{img_path}: image shape {image.shape} != ground truth shape "
                                f"{label.shape} ({gt_path}).")
            validate_pair(image.astype(np.float32), label, ACDC_NUM_CLASSES, gt_path, ndim=3)
            image = normalise_minmax(image, img_path)
            slices_of[case] = write_acdc_volume(out, case, image, label)
    listed = [c for s in ("train", "val", "test") for c in split[s]]
    unknown = [c for c in listed if c not in slices_of]
    if unknown:
        raise DataError(f"{list_dir}: list entries {unknown[:5]} are not patientXXX_frame01/frame02 "
                        "names of the converted patients; fix the lists.")
    train_slices = [name for case in split["train"] for name in slices_of[case]]
    for s in ("train", "val", "test"):
        write_list(os.path.join(out, f"{s}.list"), split[s])
    write_list(os.path.join(out, "train_slices.list"), train_slices)
    logger.info("wrote %d volumes and %d training slices to %s", len(slices_of), len(train_slices), out)
    return {**split, "train_slices": train_slices}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--raw", required=True,
                        help="ACDC folder with patientXXX/ sub-folders (e.g. <download>/database/training)")
    parser.add_argument("--out", default="data/ACDC", help="output data folder (default data/ACDC)")
    parser.add_argument("--lists", default=None,
                        help="folder with train.list/val.list/test.list (default: --raw if it has them, "
                             "else data/ACDC)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        convert_acdc(args.raw, args.out, lists=args.lists)
    except (FileNotFoundError, DataError, ValueError) as err:
        logger.error("%s", err)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
