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
import logging
import os
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

DATASET = get_dataset("LA")

logger = logging.getLogger("test_la")


def build_parser() -> argparse.ArgumentParser:
    """Command-line flags (reference names kept)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--root_path", default=os.path.join(REPO_ROOT, DATASET.root_path),
                   help="LA folder with test.list and '2018LA_Seg_Training Set/<ID>/mri_norm2.h5'")
    add_common_args(p, DATASET.name)
    p.add_argument("--num_classes", type=int, default=DATASET.num_classes, help="output channels of the network")
    p.add_argument("--patch_size", type=int, nargs=3, default=list(DATASET.patch_size), metavar=("X", "Y", "Z"),
                   help="sliding-window size")
    p.add_argument("--stride_xy", type=int, default=DATASET.window_stride[0], help="window stride along x and y")
    p.add_argument("--stride_z", type=int, default=DATASET.window_stride[1], help="window stride along z")
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


def evaluate_la(model: torch.nn.Module, args: argparse.Namespace, case_ids: Sequence[str], out_dir: str,
                extra_info: dict | None = None) -> dict:
    """Run the LA test on ``case_ids`` with the flags ``args`` (:func:`build_parser`) and write the
    result files to ``out_dir``.

    ``--amp bf16`` runs the network's forward passes under bfloat16 autocast
    (probabilities in float32); ``none`` (default) is the faithful fp32 test.

    Returns:
        A summary dict: ``mean`` and ``std`` (dice, jaccard, hd95, asd),
        ``cases``, ``empty_predictions``, ``per_case`` rows and file paths.
    """
    pred_dir = prediction_dir(out_dir, args.save_nii)
    num_classes = args.num_classes
    rows = []
    for ith, case in enumerate(tqdm(case_ids, desc="LA test", unit="case")):
        path = DATASET.case_path(args.root_path, case)
        data = load_h5(path)
        image, label = data["image"], data["label"]
        validate_pair(image, label, num_classes, path, ndim=DATASET.spatial_dims)
        prediction, score_map = inference.test_single_case(model, image, args.stride_xy, args.stride_z, args.patch_size,
                                                           num_classes, args.sw_batch, amp=args.amp)
        if args.nms:
            prediction = largest_connected_component(prediction).astype(np.uint8)
        empty = not prediction.any()
        values = calculate_metric_percase(prediction, label, policy=args.empty_policy)
        rows.append({"index": ith, "case": case, **dict(zip(METRICS, values)), "empty_prediction": int(empty)})
        if args.detail:
            logger.info("%02d %s\tdice %.5f  jaccard %.5f  hd95 %.5f  asd %.5f%s", ith, case, *values,
                        "  (empty prediction)" if empty else "")
        if args.save_nii:
            save_nifti(prediction, os.path.join(pred_dir, f"{ith:02d}_pred.nii.gz"))
            save_nifti(score_map[num_classes - 1], os.path.join(pred_dir, f"{ith:02d}_scores.nii.gz"))

    table = np.array([[r[m] for m in METRICS] for r in rows], dtype=np.float64)
    mean, std, counted = summarize(table)
    summary = build_summary(DATASET.name, args, mean, std, len(rows), rows, extra_info,
                            stats={"counted": dict(zip(METRICS, counted.tolist()))},
                            settings={"stride_xy": args.stride_xy, "stride_z": args.stride_z})
    empty_line = (f"{summary['empty_predictions']} of {len(rows)} cases had an empty prediction "
                  f"({empty_rule(args.empty_policy)})")
    txt_lines = [f"average metric is {mean} \n"]  # the released file's line
    txt_lines += [f"{name}: {m:.4f} +- {s:.4f} (mean +- std over {n} cases)\n"
                  for name, m, s, n in zip(METRICS, mean, std, counted)]
    return write_reports(out_dir, summary, ["index", "case", *METRICS, "empty_prediction"], txt_lines, empty_line,
                         extra_info, mean)


def _check_strides(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    for flag in ("stride_xy", "stride_z"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag} must be >= 1, got {getattr(args, flag)}")


def main(argv: Sequence[str] | None = None) -> dict:
    """Parse ``argv`` and test the checkpoint(s) of ``--which`` with :func:`evaluate_la`; returns the
    (first) summary."""
    return run_test_main(build_parser(), argv, DATASET.name, read_list, evaluate_la, check=_check_strides)


if __name__ == "__main__":
    run_cli(main, "test_la.py")
