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
import csv
import json
import logging
import os
import warnings
from collections.abc import Sequence

import numpy as np
import SimpleITK as sitk
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from engine.checkpoints import CheckpointError
from engine.evaluation import add_common_args, prepare_evaluation, run_evaluations
from engine import inference
from dataloaders.h5io import load_h5, validate_pair
from dataloaders.splits import read_list
from dataloaders.acdc import acdc_volume_path
from engine.inference import largest_connected_component
from utils.metrics import calculate_metric_percase, summarize

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METRICS = ("dice", "jaccard", "hd95", "asd")
CLASS_NAMES = {1: "RV", 2: "Myo", 3: "LV"}

logger = logging.getLogger("test_acdc")


def build_parser() -> argparse.ArgumentParser:
    """Command-line flags (reference names kept)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--root_path", default=os.path.join(REPO_ROOT, "data", "ACDC"),
                   help="ACDC folder with test.list and data/<patientXXX_frameYY>.h5")
    add_common_args(p, "ACDC", model="unet", labelnum=3)
    p.add_argument("--num_classes", type=int, default=4, help="output channels of the network (background included)")
    p.add_argument("--patch_size", type=int, nargs=2, default=[256, 256], metavar=("H", "W"),
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


def evaluate_acdc(
    model,
    root_path: str,
    case_names: Sequence[str],
    out_dir: str,
    num_classes: int = 4,
    patch_size: Sequence[int] = (256, 256),
    sw_batch: int = 16,
    nms: bool = False,
    save_nii: bool = True,
    detail: bool = False,
    empty_policy: str = "reference",
    extra_info: dict | None = None,
    amp: str = "none",
) -> dict:
    """Run the ACDC test on ``case_names`` and write the result files to ``out_dir``.

    ``amp="bf16"`` runs the network's forward passes under bfloat16 autocast
    (probabilities in float32); ``"none"`` (default) is the faithful fp32 test.

    Returns:
        A summary dict: ``per_class`` mean/std, ``mean`` (average of the class
        means, the paper's row), ``std`` (over volumes of the per-volume class
        average), ``empty_predictions`` (volume-class pairs), ``per_case`` rows.
    """
    if num_classes < 2:
        raise ValueError(f"--num_classes must be >= 2 for ACDC, got {num_classes}.")
    os.makedirs(out_dir, exist_ok=True)
    pred_dir = os.path.join(out_dir, "predictions")
    if save_nii:
        os.makedirs(pred_dir, exist_ok=True)
    classes = list(range(1, num_classes))
    rows = []
    values = np.zeros((len(case_names), len(classes), len(METRICS)), dtype=np.float64)
    for i, case in enumerate(tqdm(case_names, desc="ACDC test", unit="volume")):
        path = acdc_volume_path(root_path, case)
        data = load_h5(path)
        image, label = data["image"], data["label"]
        validate_pair(image, label, num_classes, path, ndim=3)
        prediction = inference.test_single_volume_2d(model, image, num_classes, patch_size, sw_batch, amp=amp)
        for j, c in enumerate(classes):
            mask = prediction == c
            if nms:
                mask = largest_connected_component(mask)
            empty = not mask.any()
            values[i, j] = calculate_metric_percase(mask, label == c, policy=empty_policy)
            rows.append({"case": case, "class": c, "class_name": CLASS_NAMES.get(c, str(c)),
                         **dict(zip(METRICS, values[i, j].tolist())), "empty_prediction": int(empty)})
        if detail:
            for j, c in enumerate(classes):
                logger.info("%s class %d (%s)\tdice %.5f  jaccard %.5f  hd95 %.5f  asd %.5f", case, c,
                            CLASS_NAMES.get(c, str(c)), *values[i, j])
        if save_nii:
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
    n_empty = sum(r["empty_prediction"] for r in rows)

    csv_path = os.path.join(out_dir, "metrics_per_case.csv")
    with open(csv_path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["case", "class", "class_name", *METRICS, "empty_prediction"])
        writer.writeheader()
        writer.writerows(rows)

    rule = ("scored 0 on all four metrics; 95HD/ASD 0 is the best possible value" if empty_policy == "reference"
            else "95HD/ASD NaN, left out of their means")
    empty_line = (f"{n_empty} of {len(rows)} volume-class pairs ({len(case_names)} volumes) had an empty "
                  f"prediction (policy {empty_policy}: {rule})")
    perf_path = os.path.join(out_dir, "performance.txt")
    with open(perf_path, "w", encoding="utf-8") as handle:
        handle.write(f"metric is {[row for row in per_class_mean]} \n")  # the released file's two lines
        handle.write(f"average metric is {mean}\n")
        for j, c in enumerate(classes):
            handle.write(f"class {c} ({CLASS_NAMES.get(c, str(c))}): " + ", ".join(
                f"{name} {m:.4f} +- {s:.4f}" for name, m, s in zip(METRICS, per_class_mean[j], per_class_std[j])) + "\n")
        handle.write("mean over classes: " + ", ".join(
            f"{name} {m:.4f} +- {s:.4f}" for name, m, s in zip(METRICS, mean, std))
            + f" (std over the {len(case_names)} volumes of their class average)\n")
        handle.write(empty_line + "\n")
        for key, value in (extra_info or {}).items():
            handle.write(f"{key}: {value}\n")
    summary = {
        "dataset": "ACDC",
        "metrics": list(METRICS),
        "mean": dict(zip(METRICS, mean.tolist())),
        "std": dict(zip(METRICS, std.tolist())),
        "per_class": {CLASS_NAMES.get(c, str(c)): {"mean": dict(zip(METRICS, per_class_mean[j].tolist())),
                                                   "std": dict(zip(METRICS, per_class_std[j].tolist()))}
                      for j, c in enumerate(classes)},
        "cases": len(case_names),
        "empty_predictions": n_empty,
        "empty_policy": empty_policy,
        "nms": bool(nms),
        "patch_size": list(patch_size),
        "amp": amp,
        **(extra_info or {}),
        "per_case": rows,
    }
    json_path = os.path.join(out_dir, "performance.json")
    with open(json_path, "w", encoding="utf-8") as handle:
        json.dump(summary, handle, indent=2, allow_nan=True)
    for j, c in enumerate(classes):
        logger.info("class %d (%s): %s", c, CLASS_NAMES.get(c, str(c)), per_class_mean[j])
    logger.info("average metric is %s (dice, jaccard, hd95, asd)", mean)
    logger.info(empty_line)
    logger.info("Wrote %s, %s and %s", perf_path, csv_path, json_path)
    summary.update(csv=csv_path, performance_txt=perf_path, performance_json=json_path)
    return summary


def main(argv: Sequence[str] | None = None) -> dict:
    """Parse ``argv`` and test the checkpoint(s) of ``--which`` with :func:`evaluate_acdc`; returns the
    (first) summary."""
    parser = build_parser()
    args = parser.parse_args(argv)
    jobs = prepare_evaluation(parser, args, "ACDC")
    # Released behaviour: names stripped of any extension, then sorted.
    case_names = sorted(name.split(".")[0] for name in
                        read_list(os.path.join(args.root_path, "test.list")))

    def evaluate(model, out_dir: str, extra_info: dict) -> dict:
        with logging_redirect_tqdm():  # log lines do not break the progress bar
            return evaluate_acdc(
                model, args.root_path, case_names, out_dir, num_classes=args.num_classes, patch_size=args.patch_size,
                sw_batch=args.sw_batch, nms=bool(args.nms), save_nii=bool(args.save_nii), detail=bool(args.detail),
                empty_policy=args.empty_policy, amp=args.amp,
                extra_info=extra_info)

    return run_evaluations(args, jobs, "ACDC", len(case_names), evaluate)


if __name__ == "__main__":
    try:
        main()
    except (FileNotFoundError, CheckpointError) as error:
        raise SystemExit(f"test_acdc.py: error: {error}")
