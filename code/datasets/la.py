"""LA (2018 Atrial Segmentation Challenge, 3D MRI): the released SS-Net setting.

V-Net on 112x112x80 crops, batch 4 (2 labeled), SGD lr 0.01 x 0.1 every 2500
iterations, 15000 iterations, VAT epsilon 10 with the binary Dice distance,
consistency 1.0 ramped over 40 x 150 iterations; model selection on the 20
test cases every 200 iterations from 2000 (released); sliding-window
validation and test. The baselines' networks and weights are those of their
public 3D code.
"""
from __future__ import annotations

from typing import Any

from dataloaders.la_heart import LA_NUM_CLASSES, LAHeart, la_case_path
from dataloaders.transforms import Compose, RandomCrop, RandomRotFlip, ToTensor
from datasets import DatasetDescription, DiceForm, SlidingWindow, VatDistance, method_table


def train_dataset(root: str, patch_size: tuple[int, ...], cache: bool) -> Any:
    """The training cases with the released augmentation: random rotation/flip, random crop."""
    return LAHeart(base_dir=root, split="train", cache=cache,
                   transform=Compose([RandomRotFlip(), RandomCrop(tuple(patch_size)), ToTensor()]))


DESCRIPTION = DatasetDescription(
    name="LA", num_classes=LA_NUM_CLASSES, class_names=("LA",), spatial_dims=3, layout="LA",
    root_path="data/LA", case_path=la_case_path, train_dataset=train_dataset,
    labelnum=4, labelnum_shares={4: "5%", 8: "10%", 80: "all"},
    patch_size=(112, 112, 80), batch_size=4, labeled_bs=2, max_iterations=15000, lr_step=2500,
    consistency=1.0, consistency_rampup=40.0, magnitude=10.0, vat_distance=VatDistance.DICE, dice=DiceForm.FOREGROUND,
    methods=method_table(
        {"ssnet": "VNet", "uamt": "VNet", "sassnet": "vnet_sdf", "dtc": "vnet_sdf", "urpc": "unet_3D_dv_semi",
         "mcnet": "mcnet3d_v1", "bcp": "VNet", "admt": "VNet"},
        {"uamt": 0.1, "sassnet": 0.015, "dtc": 1.0, "urpc": 0.1, "mcnet": 1.0}, rampup=40.0,
        # the released 3D script computes SS-Net's w(t) from the iteration count after the increment
        options={"ssnet": {"ramp_after_increment": True}, "mcnet": {"seg_weight": 0.5},
                 # BCP's LA_BCP_train.py: per-sample Dice losses, EMA of the parameters, x0.1 every 2500
                 # self-train iterations, a fresh optimiser for self-train, batch 8 = 4 + 4
                 "bcp": {"loss": "la", "pretrain_iterations": 2000, "ema_buffers": False,
                         "self_train_lr_steps": True, "keep_pretrain_optimizer": False, "round_best": True,
                         "run_defaults": {"batch_size": 8, "labeled_bs": 4, "max_iterations": 15000,
                                          "val_start": 200}},
                 # AD-MT's config_3d_la_aut.yml: CE above 0.8, periods 1..19, ramp 40, weight 2.0, poly lr,
                 # batch 4 = 2 unlabeled + 2 labeled, seed 2023, validation every 4 epochs (docs/admt_spec.md)
                 "admt": {"views": "la", "loss": "ce", "threshold": 0.8, "period": 19, "rampup": 40.0,
                          "weight": 2.0, "ema_decay": 0.99, "cutmix_prob": 1.0, "val_epochs": 4,
                          "run_defaults": {"batch_size": 4, "labeled_bs": 2, "max_iterations": 15000,
                                           "seed": 2023, "base_lr": 0.01}}}),
    procedure=SlidingWindow(stride_xy=18, stride_z=4, nms=True),  # released test: largest component
    select="test", val_start=2000, val_num=8, holdout_from_train=True,
    mismatch_hints={
        "images": "a crop or normalisation other than the authors' h5 files (LA: cropped around the atrium with "
                  "a random 10-20 voxel margin, z-scored per volume; re-preprocessing raw scans gives other crops)",
        "distances": "the largest-connected-component step (--nms 1 as released)",
    },
)
