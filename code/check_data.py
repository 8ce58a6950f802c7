"""Check an LA or ACDC data folder before training.

Usage (from the repository root)::

    python code/check_data.py LA data/LA
    python code/check_data.py ACDC data/ACDC
    python code/check_data.py ACDC /tmp/acdc_synth --any-size   # synthetic or subset data
    python code/check_data.py LA data/LA --labelnum 8           # labeled cases to inspect

Checks: the lists are present and well formed (no duplicates, no case in two
splits); every listed file is present and readable with ``image`` and
``label``; image and label shapes are equal (LA 3D, ACDC volumes 3D and slices
2D); image dtype float, label dtype integer; labels in range (LA 0..1, ACDC
0..3); no NaN/Inf; ACDC slices belong to training volumes and each training
volume has all its slices listed; the split sizes of the real data (LA 80/20
cases; ACDC 70/10/20 patients, 1312 training slices, 68/136 labeled slices for
3/7 patients) and, for real-size data, the fixed split shipped in ``data/``.
Every problem is printed with its file and what to do; the exit status is 1
if there is any.

Warnings (printed, exit status unchanged): a LABELED training item whose label
is all background, i.e. one of the first ``--labelnum`` cases of LA's
``train.list``, or one of the training volumes (``data/<volume>.h5``) of the
first ``--labelnum`` patients of ACDC's ``train_slices.list`` (checked per
volume: an all-background slice at the apex is normal). ``--labelnum``
defaults to the dataset's default (LA 4 cases, ACDC 3 patients).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from collections import Counter
from collections.abc import Sequence

import numpy as np
from tqdm import tqdm

from datasets import get_dataset, names
from dataloaders.acdc import ACDC_NUM_CLASSES, acdc_slice_path, acdc_volume_path
from dataloaders.h5io import DataError, load_h5, validate_pair
from dataloaders.la_heart import LA_NUM_CLASSES, la_case_path
from dataloaders.splits import (ACDC_PATIENT_SPLIT_SIZES, ACDC_TRAIN_SLICES, LA_SPLIT_SIZES,
                                REFERENCE_LABELED_SLICES, REPO_DATA_DIR, patient_of, patients_in_order,
                                patients_to_slices, read_list, split_slice_name)

__all__ = ["check_data", "main"]

#: |image| above this in a preprocessed (normalised) file earns a warning
IMAGE_PEAK_WARNING = 1e3


class _Report:
    def __init__(self) -> None:
        self.problems: list[str] = []
        self.notes: list[str] = []

    def problem(self, msg: str) -> None:
        self.problems.append(msg)


def _read_lists(root: str, names: Sequence[str], rep: _Report) -> dict[str, list[str]]:
    lists = {}
    for n in names:
        path = os.path.join(root, f"{n}.list")
        try:
            lists[n] = read_list(path)
        except (FileNotFoundError, ValueError) as err:
            rep.problem(str(err))
            continue
        dup = sorted(x for x, k in Counter(lists[n]).items() if k > 1)
        if dup:
            rep.problem(f"{path}: duplicate entries {dup[:5]}; each name must appear once. "
                        "Regenerate the list (preprocessing script) or remove the duplicates.")
    return lists


def _check_file(path: str, num_classes: int, ndim: int, rep: _Report) -> tuple[tuple[int, ...], bool] | None:
    """Check one h5 file; return (shape, has foreground) if usable."""
    try:
        data = load_h5(path)
    except (FileNotFoundError, DataError) as err:
        rep.problem(str(err))
        return None
    image, label = data["image"], data["label"]
    try:
        validate_pair(image, label, num_classes, path, ndim=ndim)
    except DataError as err:
        rep.problem(str(err))
        return None
    # (an integer/bool image dtype is refused by validate_pair itself, as in training)
    peak = float(np.abs(image).max())
    if peak > IMAGE_PEAK_WARNING:
        rep.notes.append(f"warning: {path}: image values up to {peak:.3g}; the preprocessed images are normalised "
                         "(LA z-scored, ACDC in [0, 1]), so values this large point to raw or corrupted "
                         "intensities, which can make training diverge. Rerun the preprocessing.")
    if not np.issubdtype(label.dtype, np.integer):
        rep.problem(f"{path}: label dtype {label.dtype}, expected an integer type (uint8). "
                    "Regenerate the file with the preprocessing script.")
    return tuple(image.shape), bool(label.any())


def _compare_shipped(root: str, dataset: str, lists: dict[str, list[str]], rep: _Report) -> None:
    for name, entries in lists.items():
        shipped_path = os.path.join(REPO_DATA_DIR, dataset, f"{name}.list")
        if not os.path.isfile(shipped_path):
            continue
        if read_list(shipped_path) != entries:
            rep.problem(f"{os.path.join(root, name + '.list')}: differs from the fixed split "
                        f"{shipped_path}; copy the shipped list (or use --any-size for other data).")


def _labeled_count(n: int, available: int, what: str, path: str, rep: _Report) -> int:
    """``n`` labeled items, at most ``available``; a note when the list has fewer."""
    if n > available:
        rep.notes.append(f"note: --labelnum {n} but {path} has only {available} {what}; "
                         f"checked the {available} for empty labels.")
    return min(n, available)


def _check_la(root: str, any_size: bool, rep: _Report, progress: bool, labelnum: int) -> dict[str, int]:
    lists = _read_lists(root, ("train", "test"), rep)
    if "train" in lists and "test" in lists:
        both = sorted(set(lists["train"]) & set(lists["test"]))
        if both:
            rep.problem(f"{root}: cases {both[:5]} are in both train.list and test.list; "
                        "the splits must be disjoint.")
    sizes = {k: len(v) for k, v in lists.items()}
    cases = [(s, c) for s in ("train", "test") for c in lists.get(s, [])]
    empty = []
    for _split, case in tqdm(cases, desc="LA files", disable=not progress):
        path = la_case_path(root, case)
        res = _check_file(path, LA_NUM_CLASSES, 3, rep)
        if res is not None and not res[1]:
            empty.append(case)
    if empty:
        rep.notes.append(f"note: {len(empty)} cases have no foreground voxel (e.g. {empty[0]}).")
    train = lists.get("train", [])
    if train:
        n = _labeled_count(labelnum, len(train), "cases", os.path.join(root, "train.list"), rep)
        for case in train[:n]:
            if case in empty:
                rep.notes.append(f"warning: labeled training case {case} ({la_case_path(root, case)}) has an "
                                 "all-background label (no atrium voxel); its supervised loss teaches only "
                                 "background. Check the file or its preprocessing.")
    if not any_size:
        for s, n in LA_SPLIT_SIZES.items():
            if s in sizes and sizes[s] != n:
                rep.problem(f"{os.path.join(root, s + '.list')}: {sizes[s]} cases, the real LA split has {n}. "
                            "Copy the fixed lists from data/LA, or pass --any-size for synthetic/subset data.")
        if sizes == LA_SPLIT_SIZES:
            _compare_shipped(root, "LA", lists, rep)
    return sizes


def _check_acdc(root: str, any_size: bool, rep: _Report, progress: bool, labelnum: int) -> dict[str, int]:
    lists = _read_lists(root, ("train_slices", "train", "val", "test"), rep)
    patients = {s: patients_in_order(lists[s]) for s in ("train", "val", "test") if s in lists
                and _names_ok(lists[s], os.path.join(root, f"{s}.list"), rep)}
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        if a in patients and b in patients:
            both = sorted(set(patients[a]) & set(patients[b]))
            if both:
                rep.problem(f"{root}: patients {both[:5]} are in both {a}.list and {b}.list; "
                            "the splits must be disjoint by patient.")
    vol_shapes: dict[str, tuple[int, ...]] = {}
    vol_foreground: dict[str, bool] = {}
    todo = [(c, acdc_volume_path(root, c), 3) for s in ("train", "val", "test") for c in lists.get(s, [])]
    for case, path, ndim in tqdm(todo, desc="ACDC volumes", disable=not progress):
        res = _check_file(path, ACDC_NUM_CLASSES, ndim, rep)
        if res is not None:
            vol_shapes[case], vol_foreground[case] = res
    slices = lists.get("train_slices", [])
    slices_path = os.path.join(root, "train_slices.list")
    per_volume: dict[str, int] = {}
    train_set = set(lists.get("train", []))
    bad_names = []
    for name in tqdm(slices, desc="ACDC slices", disable=not progress):
        try:
            volume, _k = split_slice_name(name)
            patient_of(volume)
        except ValueError:
            bad_names.append(name)
            continue
        per_volume[volume] = per_volume.get(volume, 0) + 1
        if "train" in lists and volume not in train_set:
            rep.problem(f"{slices_path}: slice {name} belongs to {volume}, which is not in train.list "
                        "(a validation/test volume in training is leakage). Regenerate the list with "
                        "code/dataloaders/acdc_data_processing.py.")
        res = _check_file(acdc_slice_path(root, name), ACDC_NUM_CLASSES, 2, rep)
        if res is not None and volume in vol_shapes and res[0] != vol_shapes[volume][1:]:
            rep.problem(f"{acdc_slice_path(root, name)}: slice shape {res[0]} != in-plane shape "
                        f"{vol_shapes[volume][1:]} of {acdc_volume_path(root, volume)}; regenerate the slices.")
    if bad_names:
        rep.problem(f"{slices_path}: {len(bad_names)} names are not patientXXX_frameYY_slice_K "
                    f"(e.g. {bad_names[0]!r}); regenerate the list.")
    for volume in lists.get("train", []):
        if volume in vol_shapes and per_volume.get(volume, 0) != vol_shapes[volume][0]:
            rep.problem(f"{slices_path}: lists {per_volume.get(volume, 0)} slices of {volume}, the volume "
                        f"{acdc_volume_path(root, volume)} has {vol_shapes[volume][0]}; regenerate the list "
                        "with code/dataloaders/acdc_data_processing.py.")
    sizes = {f"{s} patients": len(p) for s, p in patients.items()}
    sizes.update({f"{s}.list": len(v) for s, v in lists.items()})
    labeled = {}
    if slices and not bad_names:
        n_pat = len(patients_in_order(slices))
        for n in (3, 7):
            if n <= n_pat:
                try:
                    labeled[n] = patients_to_slices(slices, n)
                except ValueError as err:
                    rep.problem(f"{slices_path}: {err}")
                    break
        for n, count in labeled.items():
            sizes[f"labeled slices ({n} patients)"] = count
        _warn_empty_labeled_volumes(root, slices, labelnum, vol_foreground, rep)
    if not any_size:
        for s, n in ACDC_PATIENT_SPLIT_SIZES.items():
            if s in patients and len(patients[s]) != n:
                rep.problem(f"{os.path.join(root, s + '.list')}: {len(patients[s])} patients, the real ACDC "
                            f"split has {n}. Copy the fixed lists from data/ACDC, or pass --any-size for "
                            "synthetic/subset data.")
        if slices and len(slices) != ACDC_TRAIN_SLICES:
            rep.problem(f"{slices_path}: {len(slices)} slices, the real ACDC training set has "
                        f"{ACDC_TRAIN_SLICES}; or pass --any-size for synthetic/subset data.")
        for n, count in labeled.items():
            if count != REFERENCE_LABELED_SLICES[n]:
                rep.problem(f"{slices_path}: the first {n} patients have {count} slices, the paper's split "
                            f"has {REFERENCE_LABELED_SLICES[n]}; regenerate the list in the fixed training "
                            "order with code/dataloaders/acdc_data_processing.py.")
        if all(len(patients.get(s, [])) == n for s, n in ACDC_PATIENT_SPLIT_SIZES.items()):
            _compare_shipped(root, "ACDC", {s: lists[s] for s in ("train", "val", "test")}, rep)
    return sizes


def _warn_empty_labeled_volumes(root: str, slices: list[str], labelnum: int, vol_foreground: dict[str, bool],
                                rep: _Report) -> None:
    """A warning for each training volume of the first ``labelnum`` patients of ``slices``
    (the labeled ones) whose label is all background."""
    slices_path = os.path.join(root, "train_slices.list")
    order = patients_in_order(slices)
    labeled = set(order[:_labeled_count(labelnum, len(order), "patients", slices_path, rep)])
    volumes = dict.fromkeys(split_slice_name(name)[0] for name in slices if patient_of(name) in labeled)
    for volume in volumes:
        if vol_foreground.get(volume) is False:
            rep.notes.append(f"warning: labeled training volume {volume} ({acdc_volume_path(root, volume)}) "
                             "has an all-background label (no RV/Myo/LV voxel in any slice); its slices teach "
                             "only background. Check the file or its preprocessing.")


def _names_ok(names: list[str], path: str, rep: _Report) -> bool:
    bad = []
    for n in names:
        try:
            patient_of(n)
        except ValueError:
            bad.append(n)
    if bad:
        rep.problem(f"{path}: {len(bad)} names are not patientXXX_frameYY (e.g. {bad[0]!r}); fix the list.")
    return not bad


#: on-disk layout (``DatasetDescription.layout``) -> its check
LAYOUT_CHECKS = {"LA": _check_la, "ACDC": _check_acdc}


def check_data(dataset: str, root: str, any_size: bool = False, progress: bool = False,
               labelnum: int | None = None) -> tuple[list[str], dict[str, int], list[str]]:
    """Check the data folder ``root`` of ``dataset`` (a registered name, :mod:`datasets`): the
    on-disk layout its description names (``layout``: ``"LA"`` or ``"ACDC"``).

    Args:
        labelnum: labeled training items as ``--labelnum`` of training counts them (LA cases,
            ACDC patients), whose labels are checked for foreground; None: the dataset's default.

    Returns:
        (problems, sizes, notes): one message per problem (path + fix), the sizes
        found (list lengths, patients, labeled slices), informational notes and
        warnings (which do not make the data unusable).

    Raises:
        ValueError: an unknown dataset, one whose layout has no check here, or ``labelnum`` < 1.
    """
    description = get_dataset(dataset)
    layout = description.layout
    labelnum = description.labelnum if labelnum is None else int(labelnum)
    if labelnum < 1:
        raise ValueError(f"check_data: --labelnum must be >= 1, got {labelnum}.")
    if layout not in LAYOUT_CHECKS:
        raise ValueError(f"dataset {dataset}: no check for the layout {layout!r} (known: {', '.join(LAYOUT_CHECKS)})")
    rep = _Report()
    if not os.path.isdir(root):
        rep.problem(f"{root}: folder not found. Give the data folder that holds the .list files "
                    "(e.g. data/LA or data/ACDC).")
        return rep.problems, {}, rep.notes
    sizes = LAYOUT_CHECKS[layout](root, any_size, rep, progress, labelnum)
    return rep.problems, sizes, rep.notes


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Check an LA or ACDC data folder before training.")
    parser.add_argument("dataset", choices=names(), help="which dataset's layout to check")
    parser.add_argument("root", help="data folder (the one holding the .list files)")
    parser.add_argument("--any-size", action="store_true",
                        help="do not require the real split sizes (synthetic or subset data)")
    parser.add_argument("--labelnum", type=int, default=None,
                        help="labeled training items, as training's --labelnum (LA cases, ACDC patients); "
                             "their labels are checked for foreground (default: the dataset's default)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    if args.labelnum is not None and args.labelnum < 1:
        parser.error(f"--labelnum must be >= 1, got {args.labelnum}")
    logging.basicConfig(level=logging.WARNING)
    problems, sizes, notes = check_data(args.dataset, args.root, args.any_size, progress=not args.quiet,
                                        labelnum=args.labelnum)
    print(f"{args.dataset} data in {args.root}")
    for k, v in sizes.items():
        print(f"  {k}: {v}")
    for n in notes:
        print(f"  {n}")
    if problems:
        print(f"{len(problems)} problem(s):")
        for p in problems:
            print(f"  PROBLEM: {p}")
        return 1
    print("OK: no problems found.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
