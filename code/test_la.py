"""Evaluate an LA checkpoint (SS-Net or a baseline, ``--method``) on the LA test cases
(released ``test_LA.py`` procedure).

Sliding window 112x112x80, stride 18 (x, y) / 4 (z), zero padding, averaged
softmax probabilities, foreground > 0.5, largest connected component
(``--nms 1``, the released default), then Dice, Jaccard, 95HD and ASD per case
(medpy, voxels). A case with an empty prediction scores 0 on all four
(``--empty_policy reference``, the released rule; ``nan`` makes its distances
NaN and leaves it out of their means).

Examples (from the repository root)::

    python code/test_la.py --labelnum 4                      # model/LA_SSNet_4_labeled/VNet
    python code/test_la.py --ckpt pretrained_pth/LA_SSNet_4_labeled/VNet/VNet_best_model.pth
    python code/test_la.py --method mcnet --labelnum 4       # model/LA_MCNet_4_labeled/VNet, decoder 1

Outputs go to ``<snapshot>/test/`` (``--out_dir`` to change): ``metrics_per_case.csv``,
``performance.txt``, ``performance.json``, ``test_log.txt`` and, with
``--save_nii 1``, ``predictions/NN_pred.nii.gz`` and ``NN_scores.nii.gz`` (NN =
index in ``test.list``, as the released script names them).
"""
from __future__ import annotations

import argparse
import csv
import json
import logging
import os
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
from dataloaders.la_heart import la_case_path
from engine.inference import largest_connected_component
from utils.metrics import calculate_metric_percase, summarize

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METRICS = ("dice", "jaccard", "hd95", "asd")

logger = logging.getLogger("test_la")


def build_parser() -> argparse.ArgumentParser:
    """Command-line flags (reference names kept)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--root_path", default=os.path.join(REPO_ROOT, "data", "LA"),
                   help="LA folder with test.list and '2018LA_Seg_Training Set/<ID>/mri_norm2.h5'")
    add_common_args(p, "LA", model="VNet", labelnum=4)
    p.add_argument("--num_classes", type=int, default=2, help="output channels of the network")
    p.add_argument("--patch_size", type=int, nargs=3, default=[112, 112, 80], metavar=("X", "Y", "Z"),
                   help="sliding-window size")
    p.add_argument("--stride_xy", type=int, default=18, help="window stride along x and y")
    p.add_argument("--stride_z", type=int, default=4, help="window stride along z")
    p.add_argument("--sw_batch", type=int, default=4, help="windows per forward pass (does not change results)")
    p.add_argument("--nms", type=int, default=1, choices=(0, 1),
                   help="keep the largest connected component (released default 1)")
    p.add_argument("--save_nii", type=int, default=1, choices=(0, 1), help="save NIfTI predictions and score maps")
    p.add_argument("--detail", type=int, default=1, choices=(0, 1), help="log the metrics of every case")
    return p


def save_nifti(array: np.ndarray, path: str) -> None:
    """Save a (W, H, D) array so that the NIfTI's i, j, k axes are W, H, D (spacing 1)."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(array, (2, 1, 0))).astype(np.float32))
    sitk.WriteImage(image, path)


def evaluate_la(
    model,
    root_path: str,
    case_ids: Sequence[str],
    out_dir: str,
    num_classes: int = 2,
    patch_size: Sequence[int] = (112, 112, 80),
    stride_xy: int = 18,
    stride_z: int = 4,
    sw_batch: int = 4,
    nms: bool = True,
    save_nii: bool = True,
    detail: bool = True,
    empty_policy: str = "reference",
    extra_info: dict | None = None,
    amp: str = "none",
) -> dict:
    """Run the LA test on ``case_ids`` and write the result files to ``out_dir``.

    ``amp="bf16"`` runs the network's forward passes under bfloat16 autocast
    (probabilities in float32); ``"none"`` (default) is the faithful fp32 test.

    Returns:
        A summary dict: ``mean`` and ``std`` (dice, jaccard, hd95, asd),
        ``cases``, ``empty_predictions``, ``per_case`` rows and file paths.
    """
    os.makedirs(out_dir, exist_ok=True)
    pred_dir = os.path.join(out_dir, "predictions")
    if save_nii:
        os.makedirs(pred_dir, exist_ok=True)
    rows = []
    for ith, case in enumerate(tqdm(case_ids, desc="LA test", unit="case")):
        data = load_h5(la_case_path(root_path, case))
        image, label = data["image"], data["label"]
        validate_pair(image, label, num_classes, la_case_path(root_path, case), ndim=3)
        prediction, score_map = inference.test_single_case(model, image, stride_xy, stride_z, patch_size, num_classes, sw_batch,
                                                           amp=amp)
        if nms:
            prediction = largest_connected_component(prediction).astype(np.uint8)
        empty = not prediction.any()
        values = calculate_metric_percase(prediction, label, policy=empty_policy)
        rows.append({"index": ith, "case": case, **dict(zip(METRICS, values)), "empty_prediction": int(empty)})
        if detail:
            logger.info("%02d %s\tdice %.5f  jaccard %.5f  hd95 %.5f  asd %.5f%s", ith, case, *values,
                        "  (empty prediction)" if empty else "")
        if save_nii:
            save_nifti(prediction, os.path.join(pred_dir, f"{ith:02d}_pred.nii.gz"))
            save_nifti(score_map[num_classes - 1], os.path.join(pred_dir, f"{ith:02d}_scores.nii.gz"))

    table = np.array([[r[m] for m in METRICS] for r in rows], dtype=np.float64)
    mean, std, counted = summarize(table)
    n_empty = sum(r["empty_prediction"] for r in rows)

    csv_path = os.path.join(out_dir, "metrics_per_case.csv")
    with open(csv_path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["index", "case", *METRICS, "empty_prediction"])
        writer.writeheader()
        writer.writerows(rows)

    rule = ("scored 0 on all four metrics; 95HD/ASD 0 is the best possible value" if empty_policy == "reference"
            else "95HD/ASD NaN, left out of their means")
    empty_line = f"{n_empty} of {len(rows)} cases had an empty prediction (policy {empty_policy}: {rule})"
    perf_path = os.path.join(out_dir, "performance.txt")
    with open(perf_path, "w", encoding="utf-8") as handle:
        handle.write(f"average metric is {mean} \n")  # the released file's line
        for name, m, s, n in zip(METRICS, mean, std, counted):
            handle.write(f"{name}: {m:.4f} +- {s:.4f} (mean +- std over {n} cases)\n")
        handle.write(empty_line + "\n")
        for key, value in (extra_info or {}).items():
            handle.write(f"{key}: {value}\n")
    summary = {
        "dataset": "LA",
        "metrics": list(METRICS),
        "mean": dict(zip(METRICS, mean.tolist())),
        "std": dict(zip(METRICS, std.tolist())),
        "counted": dict(zip(METRICS, counted.tolist())),
        "cases": len(rows),
        "empty_predictions": n_empty,
        "empty_policy": empty_policy,
        "nms": bool(nms),
        "patch_size": list(patch_size),
        "stride_xy": stride_xy,
        "stride_z": stride_z,
        "amp": amp,
        **(extra_info or {}),
        "per_case": rows,
    }
    json_path = os.path.join(out_dir, "performance.json")
    with open(json_path, "w", encoding="utf-8") as handle:
        json.dump(summary, handle, indent=2, allow_nan=True)
    logger.info("average metric is %s (dice, jaccard, hd95, asd)", mean)
    logger.info(empty_line)
    logger.info("Wrote %s, %s and %s", perf_path, csv_path, json_path)
    summary.update(csv=csv_path, performance_txt=perf_path, performance_json=json_path)
    return summary


def main(argv: Sequence[str] | None = None) -> dict:
    """Parse ``argv`` and test the checkpoint(s) of ``--which`` with :func:`evaluate_la`; returns the
    (first) summary."""
    parser = build_parser()
    args = parser.parse_args(argv)
    jobs = prepare_evaluation(parser, args, "LA")
    for flag in ("stride_xy", "stride_z"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag} must be >= 1, got {getattr(args, flag)}")
    case_ids = read_list(os.path.join(args.root_path, "test.list"))

    def evaluate(model, out_dir: str, extra_info: dict) -> dict:
        with logging_redirect_tqdm():  # log lines do not break the progress bar
            return evaluate_la(
                model, args.root_path, case_ids, out_dir, num_classes=args.num_classes, patch_size=args.patch_size,
                stride_xy=args.stride_xy, stride_z=args.stride_z, sw_batch=args.sw_batch, nms=bool(args.nms),
                save_nii=bool(args.save_nii), detail=bool(args.detail), empty_policy=args.empty_policy, amp=args.amp,
                extra_info=extra_info)

    return run_evaluations(args, jobs, "LA", len(case_ids), evaluate)


if __name__ == "__main__":
    try:
        main()
    except (FileNotFoundError, CheckpointError) as error:
        raise SystemExit(f"test_la.py: error: {error}")
