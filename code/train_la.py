"""Train SS-Net (or an ablation / the supervised baseline) on the LA dataset.

    python code/train_la.py --labelnum 4 --device cuda          # Table 1, 5% labels
    python code/train_la.py --labelnum 8 --lds kl               # Table 3 ablation
    python code/train_la.py --labelnum 4 --supervised_only      # V-Net lower bound

Defaults are the released settings: V-Net, 112x112x80 crops, batch 4 (2
labeled), SGD lr 0.01 x 0.1 every 2500 iterations, 15000 iterations, VAT
epsilon 10, consistency 1.0 with ramp 40. Model selection: the released code
picks the best of periodic validations on the 20 TEST cases (from iteration
2000, every 200); that is the default here so numbers compare with the paper.
``--select val`` holds out the last ``--val_num`` training cases instead,
``--select last`` keeps the final iterate.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any

from datasets import get_dataset
from engine import training
from engine.run import run_cli

DATASET = get_dataset("LA")
parse_args, train, main = training.script_functions(DATASET, __doc__)


def build_loader(args: argparse.Namespace, n_train: int | None = None) -> tuple[Any, list[int]]:
    """The training loader of ``args``; also the indices held out for --select val
    (:func:`engine.training.build_loader`)."""
    return training.build_loader(args, DATASET, n_train)


if __name__ == "__main__":
    sys.exit(run_cli(main, "train_la.py"))
