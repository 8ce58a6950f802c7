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
import argparse
import logging
import os
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch.utils.data import BatchSampler, SubsetRandomSampler

from dataloaders.la_heart import LAHeart
from dataloaders.sampler import TwoStreamBatchSampler
from dataloaders.splits import read_list
from dataloaders.transforms import Compose, RandomCrop, RandomRotFlip, ToTensor
from methods import get_method
from engine.inference import validate_la_cases
from engine.trainer import Trainer, add_common_args, finish_args, make_train_loader, prepare_snapshot, run_cli
from engine.visualize import add_volume_snapshot

NUM_CLASSES = 2
DEFAULTS = dict(root_path="data/LA", model="VNet", labelnum=4, labelnum_help="labeled cases (4 = 5%%, 8 = 10%%, 80 = all)",
                max_iterations=15000, batch_size=4, labeled_bs=2, consistency=1.0, consistency_rampup=40.0,
                magnitude=10.0, patch_size=[112, 112, 80], select="test", val_num=8, val_start=2000,
                select_help="model selection: test = best Dice on the test cases (released, leaks the test set), "
                            "val = best on the last --val_num training cases (held out), last = final iterate")


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(p, DEFAULTS)
    p.add_argument("--stride_xy", type=int, default=18, help="validation sliding-window stride in x and y")
    p.add_argument("--stride_z", type=int, default=4, help="validation sliding-window stride in z")
    p.add_argument("--lr_step", type=int, default=2500, help="multiply the learning rate by 0.1 every N iterations")
    args = finish_args(p.parse_args(argv))
    if len(args.patch_size) != 3:
        p.error("--patch_size takes three numbers for LA, e.g. 112 112 80")
    return args


def build_loader(args: argparse.Namespace, n_train: int) -> Tuple[Any, List[int]]:
    """The two-stream loader (or labeled-only with --supervised_only); returns held-out indices too."""
    db = LAHeart(base_dir=args.root_path, split="train", cache=bool(args.cache_data),
                 transform=Compose([RandomRotFlip(), RandomCrop(tuple(args.patch_size)), ToTensor()]))
    db.preload(progress=True)  # with --cache_data 1: decoded once, before any worker starts
    held_out = list(range(n_train - args.val_num, n_train)) if args.select == "val" else []
    usable = n_train - len(held_out)
    if args.labelnum > usable:
        raise SystemExit(f"--labelnum {args.labelnum} exceeds the {usable} usable training cases")
    labeled = list(range(args.labelnum))
    if args.supervised_only:
        if args.labelnum < args.batch_size:
            raise SystemExit(f"--supervised_only needs --labelnum >= --batch_size ({args.batch_size})")
        sampler = BatchSampler(SubsetRandomSampler(labeled), args.batch_size, drop_last=True)
    else:
        unlabeled = list(range(args.labelnum, usable))
        sampler = TwoStreamBatchSampler(labeled, unlabeled, args.batch_size, args.batch_size - args.labeled_bs)
    return make_train_loader(args, db, sampler), held_out


def train(args: argparse.Namespace) -> Dict[str, object]:
    train_ids = read_list(os.path.join(args.root_path, "train.list"))  # fails before any folder is made
    snapshot, device = prepare_snapshot(args, "LA")
    loader, held_out = build_loader(args, len(train_ids))
    method = get_method(args.method).from_args(args, "LA", NUM_CLASSES, device)
    if args.select == "last":
        validate = None
    else:
        val_ids = ([train_ids[i] for i in held_out] if args.select == "val"
                   else read_list(os.path.join(args.root_path, "test.list")))
        logging.info("model selection on %d %s cases", len(val_ids),
                     "TEST (released behaviour)" if args.select == "test" else "held-out training")

        def validate(model: torch.nn.Module) -> Tuple[float, Dict[str, float]]:
            dice = validate_la_cases(model, args.root_path, val_ids, NUM_CLASSES, tuple(args.patch_size),
                                     args.stride_xy, args.stride_z, sw_batch=args.sw_batch, amp=args.amp)
            return dice, {"4_val/dice": dice}

    trainer = Trainer(
        args, method, loader, snapshot,
        lr_at=lambda n: args.base_lr * 0.1 ** (n // args.lr_step),
        validate=validate,
        should_validate=lambda n: n >= args.val_start and n % args.val_interval == 0,
        image_fn=lambda w, img, lab, probs, n: add_volume_snapshot(w, img, lab, probs, n, args.labeled_bs),
        device=device)
    return trainer.train()


def main(argv: Optional[List[str]] = None) -> Dict[str, object]:
    return train(parse_args(argv))


if __name__ == "__main__":
    run_cli(main)
