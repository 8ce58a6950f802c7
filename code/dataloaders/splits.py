"""Split lists (``train.list`` ...) and the ACDC patients -> labeled slices mapping.

List files hold one name per line: LA case IDs, ACDC volume names
``patientXXX_frameYY`` or ACDC slice names ``patientXXX_frameYY_slice_K``.
The labeled set is the first N entries of the training order: LA the first
``labelnum`` cases; ACDC the slices of the first ``labelnum`` patients of
``train_slices.list``. The released code hard-codes that slice count
(3 -> 68, 7 -> 136 ...); here it is counted from the list, and on the real
data (1312 training slices) checked against those published numbers.
"""
from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence

__all__ = ["REPO_ROOT", "REPO_DATA_DIR", "LA_SPLIT_SIZES", "ACDC_PATIENT_SPLIT_SIZES", "ACDC_TRAIN_SLICES",
           "REFERENCE_LABELED_SLICES", "read_list", "write_list", "patient_of", "split_slice_name",
           "patients_in_order", "patients_to_slices", "labeled_slice_count"]

#: the repository root (code/ sits in it): the one place that works it out
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
#: the shipped lists: <repo>/data/LA and <repo>/data/ACDC
REPO_DATA_DIR = os.path.join(REPO_ROOT, "data")

#: real-data split sizes (cases for LA, patients for ACDC; ACDC lists hold 2 frames per patient)
LA_SPLIT_SIZES = {"train": 80, "test": 20}
ACDC_PATIENT_SPLIT_SIZES = {"train": 70, "val": 10, "test": 20}
ACDC_TRAIN_SLICES = 1312

#: slices of the first N training patients in the released list (released ``patients_to_slices``)
REFERENCE_LABELED_SLICES = {3: 68, 7: 136, 14: 256, 21: 396, 28: 512, 35: 664, 70: 1312}

_PATIENT_RE = re.compile(r"^(patient\d+)_frame\d+")
_SLICE_RE = re.compile(r"^(.+)_slice_(\d+)$")


def read_list(path: str) -> list[str]:
    """Names in a list file, one per line, surrounding whitespace removed.

    Empty lines (e.g. the final newline) are not names and are left out; a
    UTF-8 byte-order mark (some Windows editors write one) is skipped.

    Raises:
        FileNotFoundError: the list is missing (says where lists come from).
        ValueError: the list has no names, or a line holds more than one word.
    """
    if not os.path.isfile(path):
        if os.path.basename(path) == "train_slices.list":
            raise FileNotFoundError(
                f"{path}: list file not found. It comes with the SSL4MIS h5 files or is written by "
                "code/dataloaders/acdc_data_processing.py; or check --root_path.")
        raise FileNotFoundError(
            f"{path}: list file not found. Copy the shipped lists from {REPO_DATA_DIR}/<LA|ACDC>/ "
            "into the data folder, run the preprocessing script (it writes them), or check --root_path.")
    with open(path, "r", encoding="utf-8-sig") as f:  # -sig: a byte-order mark is not part of the first name
        lines = f.read().splitlines()
    names = []
    for i, line in enumerate(lines, 1):
        name = line.strip()
        if not name:
            continue
        if len(name.split()) != 1:
            raise ValueError(f"{path}:{i}: one name per line expected, got {line!r}.")
        names.append(name)
    if not names:
        raise ValueError(f"{path}: the list is empty; regenerate it with the preprocessing script.")
    return names


def write_list(path: str, names: Iterable[str]) -> None:
    """Write ``names`` one per line (with a final newline), creating the folder."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write("".join(f"{n}\n" for n in names))


def patient_of(name: str) -> str:
    """``patient099_frame01[_slice_3]`` -> ``patient099``; ValueError for other names."""
    m = _PATIENT_RE.match(name)
    if m is None:
        raise ValueError(f"{name!r} is not an ACDC name of the form patientXXX_frameYY[_slice_K].")
    return m.group(1)


def split_slice_name(name: str) -> tuple[str, int]:
    """``patient099_frame01_slice_3`` -> (``patient099_frame01``, 3)."""
    m = _SLICE_RE.match(name)
    if m is None:
        raise ValueError(f"{name!r} is not a slice name of the form <volume>_slice_<K>.")
    return m.group(1), int(m.group(2))


def patients_in_order(names: Sequence[str]) -> list[str]:
    """Distinct patients of ``names`` in order of first appearance."""
    return list(dict.fromkeys(patient_of(n) for n in names))


def patients_to_slices(slice_names: Sequence[str], n_patients: int) -> int:
    """Number of entries of ``slice_names`` that belong to its first ``n_patients`` patients.

    The labeled slices are ``slice_names[:patients_to_slices(slice_names, n)]``;
    this requires every patient's slices to be one contiguous block of the list.

    Raises:
        ValueError: ``n_patients`` outside 1..#patients, or a patient's slices are split.
    """
    order = patients_in_order(slice_names)
    if not 1 <= n_patients <= len(order):
        raise ValueError(f"patients_to_slices: n_patients={n_patients} but the slice list has "
                         f"{len(order)} patients; use --labelnum between 1 and {len(order)}.")
    seen: set[str] = set()
    prev = None
    for n in slice_names:
        p = patient_of(n)
        if p != prev:
            if p in seen:
                raise ValueError(f"patients_to_slices: the slices of {p} are not contiguous in the list, "
                                 "so 'the first N patients' is not a prefix; regenerate train_slices.list "
                                 "with code/dataloaders/acdc_data_processing.py.")
            seen.add(p)
            prev = p
    labeled = set(order[:n_patients])
    count = 0
    for n in slice_names:
        if patient_of(n) not in labeled:
            break
        count += 1
    return count


def labeled_slice_count(root: str, n_patients: int, check_reference: bool = True) -> int:
    """Labeled slices for ``n_patients`` labeled ACDC patients, counted from ``<root>/train_slices.list``.

    With ``check_reference`` and a full-size list (1312 slices, i.e. the real
    data), the count must equal the paper's (3 -> 68, 7 -> 136, ...).

    Raises:
        ValueError: the count differs from the published one on the real data.
    """
    path = os.path.join(root, "train_slices.list")
    names = read_list(path)
    count = patients_to_slices(names, n_patients)
    expected = REFERENCE_LABELED_SLICES.get(n_patients)
    if check_reference and len(names) == ACDC_TRAIN_SLICES and expected is not None and count != expected:
        raise ValueError(f"{path}: the first {n_patients} patients have {count} slices, the paper's "
                         f"split has {expected}. The list is not in the training order of the fixed "
                         "split; regenerate it with code/dataloaders/acdc_data_processing.py.")
    return count
