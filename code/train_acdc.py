"""Train SS-Net (or an ablation / the supervised baseline) on the ACDC dataset.

    python code/train_acdc.py --labelnum 3 --device cuda         # Table 2, 5% labels
    python code/train_acdc.py --labelnum 7 --supervised_only     # U-Net lower bound

Defaults are the released settings: U-Net, 256x256 slices, batch 24 (12
labeled), SGD lr 0.01 (constant), 30000 iterations, VAT epsilon 6 with the
4-class Dice distance, consistency 0.1 with ramp 200. ``--labelnum`` counts
PATIENTS; the labeled slices are the first ones of ``train_slices.list`` (68
for 3 patients, 136 for 7 on the real data). Model selection: best mean Dice
(classes 1-3) on the 10 validation patients every 200 iterations.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any

from datasets import get_dataset
from engine import training
from engine.run import run_cli

DATASET = get_dataset("ACDC")
parse_args, train, main = training.script_functions(DATASET, __doc__)


def build_loader(args: argparse.Namespace) -> Any:
    """The training loader of ``args`` (:func:`engine.training.build_loader`)."""
    return training.build_loader(args, DATASET)[0]


if __name__ == "__main__":
    sys.exit(run_cli(main, "train_acdc.py"))
