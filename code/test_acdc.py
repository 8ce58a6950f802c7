"""Evaluate an ACDC checkpoint (SS-Net or a baseline, ``--method``) on the ACDC test volumes
(released ``test_ACDC.py`` procedure).

Each slice is zoomed to 256x256 (order 0), the argmax of the softmax is taken
and zoomed back (order 0). For each class 1 (RV), 2 (Myo), 3 (LV) Dice,
Jaccard, 95HD and ASD (medpy, voxels, no spacing) per volume; a class with an
empty prediction scores 0 on all four (``--empty_policy reference``, the
released rule; ``nan`` makes its distances NaN and leaves it out of their
means). The reported row averages the three classes, each averaged over the
volumes of ``test.list`` (sorted, as the released script does).

Examples (from the repository root)::

    python code/test_acdc.py --labelnum 7                     # model/ACDC_SSNet_7_labeled/unet
    python code/test_acdc.py --ckpt pretrained_pth/ACDC_SSNet_7_labeled/unet/unet_best_model.pth
    python code/test_acdc.py --method urpc --labelnum 7      # model/ACDC_URPC_7_labeled/unet, main output

Outputs go to ``<snapshot>/test/`` (``--out_dir`` to change): ``metrics_per_case.csv``
(one row per volume and class), ``performance.txt``, ``performance.json``,
``test_log.txt`` and, with ``--save_nii 1``, ``predictions/<case>_pred.nii.gz``,
``<case>_img.nii.gz``, ``<case>_gt.nii.gz`` (spacing (1, 1, 10), as released).
"""
from __future__ import annotations

import argparse
import logging
import os
import warnings
from collections.abc import Sequence

import numpy as np
import SimpleITK as sitk
import torch
from tqdm import tqdm

from datasets import get_dataset
from engine.evaluation import add_common_args
from engine.run import REPO_ROOT, run_cli
from engine import inference
from engine.reports import (METRICS, build_summary, empty_rule, prediction_dir, run_test_main,
                            write_reports)
from dataloaders.h5io import load_h5, validate_pair
from dataloaders.splits import read_list
from engine.inference import largest_connected_component
from utils.metrics import calculate_metric_percase, summarize

DATASET = get_dataset("ACDC")
CLASS_NAMES = dict(enumerate(DATASET.class_names, start=1))  # {1: "RV", 2: "Myo", 3: "LV"}

logger = logging.getLogger("test_acdc")


def build_parser() -> argparse.ArgumentParser:
    """Command-line flags (reference names kept)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--root_path", default=os.path.join(REPO_ROOT, DATASET.root_path),
                   help="ACDC folder with test.list and data/<patientXXX_frameYY>.h5")
    add_common_args(p, DATASET.name)
    p.add_argument("--num_classes", type=int, default=DATASET.num_classes, help="output channels of the network (background included)")
    p.add_argument("--patch_size", type=int, nargs=2, default=list(DATASET.patch_size), metavar=("H", "W"),
                   help="size every slice is zoomed to")
    p.add_argument("--sw_batch", type=int, default=16, help="slices per forward pass (does not change results)")
    p.add_argument("--nms", type=int, default=0, choices=(0, 1),
                   help="keep the largest 3D connected component of each class (not in the released ACDC test: default 0)")
    p.add_argument("--save_nii", type=int, default=1, choices=(0, 1), help="save NIfTI prediction, image and label")
    p.add_argument("--detail", type=int, default=0, choices=(0, 1), help="log the metrics of every volume")
    return p


def _save_nifti(array: np.ndarray, path: str) -> None:
    image = sitk.GetImageFromArray(array.astype(np.float32))  # (S, H, W) as released
    image.SetSpacing((1, 1, 10))
    sitk.WriteImage(image, path)


def evaluate_acdc(model: torch.nn.Module, args: argparse.Namespace, case_names: Sequence[str], out_dir: str,
                  extra_info: dict | None = None) -> dict:
    """Run the ACDC test on ``case_names`` with the flags ``args`` (:func:`build_parser`) and write
    the result files to ``out_dir``.

    ``--amp bf16`` runs the network's forward passes under bfloat16 autocast
    (probabilities in float32); ``none`` (default) is the faithful fp32 test.

    Returns:
        A summary dict: ``per_class`` mean/std, ``mean`` (average of the class
        means, the paper's row), ``std`` (over volumes of the per-volume class
        average), ``empty_predictions`` (volume-class pairs), ``per_case`` rows.
    """
    num_classes = args.num_classes
    if num_classes < 2:
        raise ValueError(f"--num_classes must be >= 2 for ACDC, got {num_classes}.")
    pred_dir = prediction_dir(out_dir, args.save_nii)
    classes = list(range(1, num_classes))
    names = [CLASS_NAMES.get(c, str(c)) for c in classes]
    rows = []
    values = np.zeros((len(case_names), len(classes), len(METRICS)), dtype=np.float64)
    for i, case in enumerate(tqdm(case_names, desc="ACDC test", unit="volume")):
        path = DATASET.case_path(args.root_path, case)
        data = load_h5(path)
        image, label = data["image"], data["label"]
        validate_pair(image, label, num_classes, path, ndim=3)
        prediction = inference.test_single_volume_2d(model, image, num_classes, args.patch_size, args.sw_batch,
                                                     amp=args.amp)
        for j, c in enumerate(classes):
            mask = prediction == c
            if args.nms:
                mask = largest_connected_component(mask)
            empty = not mask.any()
            values[i, j] = calculate_metric_percase(mask, label == c, policy=args.empty_policy)
            rows.append({"case": case, "class": c, "class_name": names[j],
                         **dict(zip(METRICS, values[i, j].tolist())), "empty_prediction": int(empty)})
        if args.detail:
            for j, c in enumerate(classes):
                logger.info("%s class %d (%s)\tdice %.5f  jaccard %.5f  hd95 %.5f  asd %.5f", case, c, names[j],
                            *values[i, j])
        if args.save_nii:
            _save_nifti(prediction, os.path.join(pred_dir, f"{case}_pred.nii.gz"))
            _save_nifti(image, os.path.join(pred_dir, f"{case}_img.nii.gz"))
            _save_nifti(label, os.path.join(pred_dir, f"{case}_gt.nii.gz"))

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
    summary = build_summary(DATASET.name, args, mean, std, len(case_names), rows, extra_info, stats={"per_class": per_class})
    empty_line = (f"{summary['empty_predictions']} of {len(rows)} volume-class pairs ({len(case_names)} volumes) had "
                  f"an empty prediction ({empty_rule(args.empty_policy)})")
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


def _test_cases(path: str) -> list[str]:
    """Released behaviour: names stripped of any extension, then sorted."""
    return sorted(name.split(".")[0] for name in read_list(path))


def main(argv: Sequence[str] | None = None) -> dict:
    """Parse ``argv`` and test the checkpoint(s) of ``--which`` with :func:`evaluate_acdc`; returns the
    (first) summary."""
    return run_test_main(build_parser(), argv, DATASET.name, _test_cases, evaluate_acdc)


if __name__ == "__main__":
    run_cli(main, "test_acdc.py")
