"""The test procedures: what ``test_main`` (:mod:`engine.evaluation`) runs for a dataset
description, chosen by the type of its ``procedure`` (:data:`TESTS`).

* :class:`~datasets.SlidingWindow` (released ``test_LA.py``): 3D windows over each whole
  volume, averaged softmax probabilities, foreground > 0.5, optionally the largest
  connected component (``--nms``), then Dice, Jaccard, 95HD and ASD per case; NIfTI
  ``NN_pred`` / ``NN_scores`` files (NN = index in ``test.list``).
* :class:`~datasets.SliceWise` (released ``test_ACDC.py``): each slice zoomed to the
  patch and back (order 0), then the four metrics per volume and foreground class; the
  reported row averages the class means; NIfTI ``<case>_pred`` / ``_img`` / ``_gt`` files.

Each procedure has its own flags (added after the common ones of
:func:`engine.evaluation.add_common_args`), a check of them, how ``test.list`` is read
and the per-case loop, which writes the result files through :mod:`engine.reports`.
"""
from __future__ import annotations

import argparse
import logging
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
import torch
from tqdm import tqdm

from dataloaders.h5io import load_h5, validate_pair
from dataloaders.splits import read_list
from datasets import DatasetDescription, SliceWise, SlidingWindow
from engine import inference
from engine.config import TestConfig
from engine.inference import largest_connected_component
from engine.reports import METRICS, build_summary, empty_rule, prediction_dir, write_reports
from utils.metrics import calculate_metric_percase, summarize

logger = logging.getLogger(__name__)

#: ``evaluate(d, model, config, cases, out_dir, extra_info) -> summary``: a procedure's per-case loop
Evaluate = Callable[[DatasetDescription, torch.nn.Module, TestConfig, Sequence[str], str, dict | None], dict]


def read_cases(path: str, sorted_cases: bool) -> list[str]:
    """The test case names of the list file ``path``: as listed, or (``sorted_cases``, the
    released ACDC behaviour) stripped of any extension and sorted."""
    names = read_list(path)
    return sorted(name.split(".")[0] for name in names) if sorted_cases else names


# ---------------------------------------------------------------------- sliding window (3D)

def _sliding_window_args(p: argparse.ArgumentParser, d: DatasetDescription) -> None:
    proc = d.procedure
    axes = ("X", "Y", "Z")[:d.spatial_dims]
    p.add_argument("--patch_size", type=int, nargs=d.spatial_dims, default=list(d.patch_size), metavar=axes,
                   help="sliding-window size")
    p.add_argument("--stride_xy", type=int, default=proc.stride_xy, help="window stride along x and y")
    p.add_argument("--stride_z", type=int, default=proc.stride_z, help="window stride along z")
    p.add_argument("--sw_batch", type=int, default=4, help="windows per forward pass (does not change results)")
    p.add_argument("--nms", type=int, default=int(proc.nms), choices=(0, 1),
                   help="keep the largest connected component (the released "
                        f"{d.name} test does{'' if proc.nms else ' not'})")
    p.add_argument("--save_nii", type=int, default=1, choices=(0, 1), help="save NIfTI predictions and score maps")
    p.add_argument("--detail", type=int, default=1, choices=(0, 1), help="log the metrics of every case")


@dataclass(frozen=True)
class SlidingWindowTest:
    """The flags of the sliding-window test (see ``--help``)."""

    patch_size: tuple[int, ...]
    stride_xy: int
    stride_z: int
    sw_batch: int
    nms: int
    save_nii: int
    detail: int

    def check(self) -> None:
        """Raises ValueError naming a flag below 1."""
        for flag in ("stride_xy", "stride_z", "sw_batch"):
            if getattr(self, flag) < 1:
                raise ValueError(f"--{flag} must be >= 1, got {getattr(self, flag)}")


def save_nifti(array: np.ndarray, path: str) -> None:
    """Save a (W, H, D) array so that the NIfTI's i, j, k axes are W, H, D (spacing 1)."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(array, (2, 1, 0))).astype(np.float32))
    sitk.WriteImage(image, path)


def evaluate_sliding_window(d: DatasetDescription, model: torch.nn.Module, config: TestConfig,
                            case_ids: Sequence[str], out_dir: str, extra_info: dict | None = None) -> dict:
    """Test ``model`` on ``case_ids`` of dataset ``d`` by sliding window with the settings ``config``
    and write the result files to ``out_dir``.

    ``--amp bf16`` runs the network's forward passes under bfloat16 autocast
    (probabilities in float32); ``none`` (default) is the faithful fp32 test.

    Returns:
        A summary dict: ``mean`` and ``std`` (dice, jaccard, hd95, asd),
        ``cases``, ``empty_predictions``, ``per_case`` rows and file paths.
    """
    p: SlidingWindowTest = config.procedure
    pred_dir = prediction_dir(out_dir, p.save_nii)
    num_classes = config.num_classes
    rows = []
    for ith, case in enumerate(tqdm(case_ids, desc=f"{d.name} test", unit="case")):
        path = d.case_path(config.root_path, case)
        data = load_h5(path)
        image, label = data["image"], data["label"]
        validate_pair(image, label, num_classes, path, ndim=d.spatial_dims)
        prediction, score_map = inference.test_single_case(model, image, p.stride_xy, p.stride_z, p.patch_size,
                                                           num_classes, p.sw_batch, amp=config.amp)
        if p.nms:
            prediction = largest_connected_component(prediction).astype(np.uint8)
        empty = not prediction.any()
        values = calculate_metric_percase(prediction, label, policy=config.empty_policy)
        rows.append({"index": ith, "case": case, **dict(zip(METRICS, values)), "empty_prediction": int(empty)})
        if p.detail:
            logger.info("%02d %s\tdice %.5f  jaccard %.5f  hd95 %.5f  asd %.5f%s", ith, case, *values,
                        "  (empty prediction)" if empty else "")
        if p.save_nii:
            save_nifti(prediction, os.path.join(pred_dir, f"{ith:02d}_pred.nii.gz"))
            save_nifti(score_map[num_classes - 1], os.path.join(pred_dir, f"{ith:02d}_scores.nii.gz"))

    table = np.array([[r[m] for m in METRICS] for r in rows], dtype=np.float64)
    mean, std, counted = summarize(table)
    summary = build_summary(d.name, mean, std, len(rows), rows, extra_info, empty_policy=config.empty_policy,
                            nms=p.nms, patch_size=p.patch_size, amp=config.amp,
                            stats={"counted": dict(zip(METRICS, counted.tolist()))},
                            settings={"stride_xy": p.stride_xy, "stride_z": p.stride_z})
    empty_line = (f"{summary['empty_predictions']} of {len(rows)} cases had an empty prediction "
                  f"({empty_rule(config.empty_policy)})")
    txt_lines = [f"average metric is {mean} \n"]  # the released file's line
    txt_lines += [f"{name}: {m:.4f} +- {s:.4f} (mean +- std over {n} cases)\n"
                  for name, m, s, n in zip(METRICS, mean, std, counted)]
    return write_reports(out_dir, summary, ["index", "case", *METRICS, "empty_prediction"], txt_lines, empty_line,
                         extra_info, mean)


# ---------------------------------------------------------------------- slice by slice (2D network, 3D volumes)

def _slice_wise_args(p: argparse.ArgumentParser, d: DatasetDescription) -> None:
    proc = d.procedure
    p.add_argument("--patch_size", type=int, nargs=2, default=list(d.patch_size), metavar=("H", "W"),
                   help="size every slice is zoomed to")
    p.add_argument("--sw_batch", type=int, default=16, help="slices per forward pass (does not change results)")
    p.add_argument("--nms", type=int, default=int(proc.nms), choices=(0, 1),
                   help="keep the largest 3D connected component of each class (the released "
                        f"{d.name} test does{'' if proc.nms else ' not'})")
    p.add_argument("--save_nii", type=int, default=1, choices=(0, 1), help="save NIfTI prediction, image and label")
    p.add_argument("--detail", type=int, default=0, choices=(0, 1), help="log the metrics of every volume")


@dataclass(frozen=True)
class SliceWiseTest:
    """The flags of the slice-wise test (see ``--help``)."""

    patch_size: tuple[int, ...]
    sw_batch: int
    nms: int
    save_nii: int
    detail: int

    def check(self) -> None:
        """Raises ValueError naming a flag below 1."""
        if self.sw_batch < 1:
            raise ValueError(f"--sw_batch must be >= 1, got {self.sw_batch}")


def _save_slices_nifti(array: np.ndarray, path: str, spacing: Sequence[float]) -> None:
    image = sitk.GetImageFromArray(array.astype(np.float32))  # (S, H, W) as released
    image.SetSpacing(tuple(spacing))
    sitk.WriteImage(image, path)


def evaluate_slice_wise(d: DatasetDescription, model: torch.nn.Module, config: TestConfig,
                        case_names: Sequence[str], out_dir: str, extra_info: dict | None = None) -> dict:
    """Test ``model`` on the volumes ``case_names`` of dataset ``d`` slice by slice with the settings
    ``config`` and write the result files to ``out_dir``.

    ``--amp bf16`` runs the network's forward passes under bfloat16 autocast
    (probabilities in float32); ``none`` (default) is the faithful fp32 test.

    Returns:
        A summary dict: ``per_class`` mean/std, ``mean`` (average of the class
        means, the paper's row), ``std`` (over volumes of the per-volume class
        average), ``empty_predictions`` (volume-class pairs), ``per_case`` rows.

    Raises:
        ValueError: ``--num_classes`` below 2.
    """
    p: SliceWiseTest = config.procedure
    num_classes = config.num_classes
    if num_classes < 2:
        raise ValueError(f"--num_classes must be >= 2 for {d.name}, got {num_classes}.")
    pred_dir = prediction_dir(out_dir, p.save_nii)
    class_names = dict(enumerate(d.class_names, start=1))
    classes = list(range(1, num_classes))
    names = [class_names.get(c, str(c)) for c in classes]
    rows = []
    values = np.zeros((len(case_names), len(classes), len(METRICS)), dtype=np.float64)
    for i, case in enumerate(tqdm(case_names, desc=f"{d.name} test", unit="volume")):
        path = d.case_path(config.root_path, case)
        data = load_h5(path)
        image, label = data["image"], data["label"]
        validate_pair(image, label, num_classes, path, ndim=3)
        prediction = inference.test_single_volume_2d(model, image, num_classes, p.patch_size, p.sw_batch,
                                                     amp=config.amp)
        for j, c in enumerate(classes):
            mask = prediction == c
            if p.nms:
                mask = largest_connected_component(mask)
            empty = not mask.any()
            values[i, j] = calculate_metric_percase(mask, label == c, policy=config.empty_policy)
            rows.append({"case": case, "class": c, "class_name": names[j],
                         **dict(zip(METRICS, values[i, j].tolist())), "empty_prediction": int(empty)})
        if p.detail:
            for j, c in enumerate(classes):
                logger.info("%s class %d (%s)\tdice %.5f  jaccard %.5f  hd95 %.5f  asd %.5f", case, c, names[j],
                            *values[i, j])
        if p.save_nii:
            spacing = d.procedure.nii_spacing
            _save_slices_nifti(prediction, os.path.join(pred_dir, f"{case}_pred.nii.gz"), spacing)
            _save_slices_nifti(image, os.path.join(pred_dir, f"{case}_img.nii.gz"), spacing)
            _save_slices_nifti(label, os.path.join(pred_dir, f"{case}_gt.nii.gz"), spacing)

    per_class_mean = np.zeros((len(classes), len(METRICS)))
    per_class_std = np.zeros((len(classes), len(METRICS)))
    for j in range(len(classes)):
        per_class_mean[j], per_class_std[j], _ = summarize(values[:, j, :])
    mean = per_class_mean.mean(axis=0)  # the released "average metric": mean over classes of class means
    with warnings.catch_warnings():  # a volume whose classes are all NaN averages to NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        case_avg = np.nanmean(values, axis=1)  # (volumes, metrics)
    _, std, _ = summarize(case_avg)

    per_class = {names[j]: {"mean": dict(zip(METRICS, per_class_mean[j].tolist())),
                            "std": dict(zip(METRICS, per_class_std[j].tolist()))} for j in range(len(classes))}
    summary = build_summary(d.name, mean, std, len(case_names), rows, extra_info, empty_policy=config.empty_policy,
                            nms=p.nms, patch_size=p.patch_size, amp=config.amp, stats={"per_class": per_class})
    empty_line = (f"{summary['empty_predictions']} of {len(rows)} volume-class pairs ({len(case_names)} volumes) had "
                  f"an empty prediction ({empty_rule(config.empty_policy)})")
    txt_lines = [f"metric is {[row for row in per_class_mean]} \n",  # the released file's two lines
                 f"average metric is {mean}\n"]
    txt_lines += [f"class {c} ({names[j]}): " + ", ".join(
        f"{name} {m:.4f} +- {s:.4f}" for name, m, s in zip(METRICS, per_class_mean[j], per_class_std[j])) + "\n"
        for j, c in enumerate(classes)]
    txt_lines.append("mean over classes: " + ", ".join(
        f"{name} {m:.4f} +- {s:.4f}" for name, m, s in zip(METRICS, mean, std))
        + f" (std over the {len(case_names)} volumes of their class average)\n")
    for j, c in enumerate(classes):
        logger.info("class %d (%s): %s", c, names[j], per_class_mean[j])
    return write_reports(out_dir, summary, ["case", "class", "class_name", *METRICS, "empty_prediction"], txt_lines,
                         empty_line, extra_info, mean)


# ---------------------------------------------------------------------- procedure type -> test procedure

@dataclass(frozen=True)
class TestProcedure:
    """A test procedure: its flags (``add_args(parser, d)``, after the common ones), the frozen
    dataclass of their values (``options``, a field per flag, with ``check()`` raising
    ``ValueError``) and the per-case loop (``evaluate(d, model, config, cases, out_dir,
    extra_info) -> summary``, writing the result files)."""

    __test__ = False  # not a pytest test class

    add_args: Callable[[argparse.ArgumentParser, DatasetDescription], None]
    options: type
    evaluate: Evaluate


#: type of ``DatasetDescription.procedure`` -> its test procedure
TESTS: dict[type, TestProcedure] = {
    SlidingWindow: TestProcedure(_sliding_window_args, SlidingWindowTest, evaluate_sliding_window),
    SliceWise: TestProcedure(_slice_wise_args, SliceWiseTest, evaluate_slice_wise),
}


def test_procedure(d: DatasetDescription) -> TestProcedure:
    """The test procedure of ``d`` (by the type of ``d.procedure``).

    Raises:
        ValueError: a procedure type without a test procedure here.
    """
    kind = type(d.procedure)
    if kind not in TESTS:
        raise ValueError(f"dataset {d.name}: no test procedure for {kind.__name__}; one of "
                         f"{', '.join(k.__name__ for k in TESTS)} (engine/testing.py TESTS)")
    return TESTS[kind]


test_procedure.__test__ = False  # a library function, not a pytest test
