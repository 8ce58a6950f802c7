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

import sys
from datasets import get_dataset
from engine import evaluation
from engine.run import run_cli

DATASET = get_dataset("LA")
build_parser, main = evaluation.script_functions(DATASET, __doc__)

if __name__ == "__main__":
    sys.exit(run_cli(main, "test_la.py"))
