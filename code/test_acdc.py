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

import sys
from datasets import get_dataset
from engine import evaluation
from engine.run import run_cli

DATASET = get_dataset("ACDC")
build_parser, main = evaluation.script_functions(DATASET, __doc__)

if __name__ == "__main__":
    sys.exit(run_cli(main, "test_acdc.py"))
