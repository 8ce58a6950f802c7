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
import argparse
import logging
import os
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
from torch.utils.data import BatchSampler, SubsetRandomSampler

from dataloaders.acdc import ACDC
from dataloaders.sampler import TwoStreamBatchSampler, draw_loader_base_seed
from dataloaders.splits import labeled_slice_count, read_list
from dataloaders.transforms import RandomGenerator
from methods import get_method
from engine.inference import validate_acdc_volumes
from engine.trainer import Trainer, add_common_args, finish_args, make_train_loader, prepare_snapshot, run_cli
from engine.visualize import add_slice_snapshot

NUM_CLASSES = 4
CLASS_NAMES = ("RV", "Myo", "LV")
DEFAULTS = dict(root_path="data/ACDC", model="unet", labelnum=3,
                labelnum_help="labeled PATIENTS (3 = 5%%, 7 = 10%%, 70 = all)",
                max_iterations=30000, batch_size=24, labeled_bs=12, consistency=0.1, consistency_rampup=200.0,
                magnitude=6.0, patch_size=[256, 256], select="val", val_num=0, val_start=200,
                select_help="model selection: val = best mean Dice on val.list (released), test = on test.list "
                            "(leaks the test set), last = final iterate")


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(p, DEFAULTS)
    p.add_argument("--val_batch", type=int, default=16, help="slices per forward pass in validation")
    args = finish_args(p.parse_args(argv))
    if len(args.patch_size) != 2:
        p.error("--patch_size takes two numbers for ACDC, e.g. 256 256")
    return args


def build_loader(args: argparse.Namespace) -> Any:
    db = ACDC(base_dir=args.root_path, split="train", transform=RandomGenerator(tuple(args.patch_size)),
              cache=bool(args.cache_data))
    db.preload(progress=True)  # with --cache_data 1: decoded once, before any worker starts
    total = len(db)
    labeled_slices = labeled_slice_count(args.root_path, args.labelnum)
    logging.info("%d training slices, %d labeled (%d patients)", total, labeled_slices, args.labelnum)
    labeled = list(range(labeled_slices))
    if args.supervised_only:
        if labeled_slices < args.batch_size:
            raise SystemExit(f"--supervised_only: {labeled_slices} labeled slices < --batch_size {args.batch_size}")
        sampler = BatchSampler(SubsetRandomSampler(labeled), args.batch_size, drop_last=True)
    else:
        sampler = TwoStreamBatchSampler(labeled, list(range(labeled_slices, total)), args.batch_size,
                                        args.batch_size - args.labeled_bs)
    return make_train_loader(args, db, sampler)


def train(args: argparse.Namespace) -> Dict[str, object]:
    read_list(os.path.join(args.root_path, "train_slices.list"))  # fails before any folder is made
    snapshot, device = prepare_snapshot(args, "ACDC")
    loader = build_loader(args)
    method = get_method(args.method).from_args(args, "ACDC", NUM_CLASSES, device)
    if args.select == "last":
        validate = None
    else:
        names = read_list(os.path.join(args.root_path, f"{args.select}.list"))
        logging.info("model selection on %d %s volumes", len(names), args.select)

        def validate(model: torch.nn.Module) -> Tuple[float, Dict[str, float]]:
            per_class = validate_acdc_volumes(model, args.root_path, names, NUM_CLASSES, tuple(args.patch_size),
                                              batch=args.val_batch, amp=args.amp)
            scalars = {f"4_val/{n}_dice": float(per_class[i, 0]) for i, n in enumerate(CLASS_NAMES)}
            scalars.update({f"4_val/{n}_hd95": float(per_class[i, 1]) for i, n in enumerate(CLASS_NAMES)})
            scalars["4_val/mean_dice"] = float(per_class[:, 0].mean())
            scalars["4_val/mean_hd95"] = float(np.nanmean(per_class[:, 1]))
            return scalars["4_val/mean_dice"], scalars

    trainer = Trainer(
        args, method, loader, snapshot,
        lr_at=lambda n: args.base_lr,  # released: constant learning rate
        validate=validate,
        should_validate=lambda n: n >= args.val_start and n % args.val_interval == 0,
        # The released train_ss_2d.py validates through DataLoader(db_val, batch_size=1, num_workers=1):
        # creating that iterator takes one base seed from the global torch generator. We read the volumes
        # directly (faster) but make the same draw where the released loop makes it (also with --select
        # last), so the dropout masks and VAT noise after each validation are the released run's.
        validation_draws=draw_loader_base_seed,
        image_fn=lambda w, img, lab, probs, n: add_slice_snapshot(w, img, lab, probs, n, args.labeled_bs),
        device=device)
    return trainer.train()


def main(argv: Optional[List[str]] = None) -> Dict[str, object]:
    return train(parse_args(argv))


if __name__ == "__main__":
    run_cli(main)
