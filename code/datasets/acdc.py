"""ACDC (Automated Cardiac Diagnosis Challenge, 2D slices of cine MRI): the released SS-Net setting.

U-Net on 256x256 slices, batch 24 (12 labeled), SGD lr 0.01 (constant), 30000
iterations, VAT epsilon 6 with the 4-class Dice distance, consistency 0.1
ramped over 200 x 150 iterations. ``--labelnum`` counts PATIENTS; their slices
are the first of ``train_slices.list``. Model selection on the validation
patients (``val.list``) every 200 iterations; validation and test slice by
slice. The baselines' networks and weights are those of their public 2D code.
"""
from __future__ import annotations

from typing import Any

from dataloaders.acdc import ACDC, ACDC_NUM_CLASSES, acdc_volume_path
from dataloaders.splits import labeled_slice_count
from dataloaders.transforms import RandomGenerator
from datasets import DatasetDescription, DiceForm, SliceWise, VatDistance, method_table


def train_dataset(root: str, patch_size: tuple[int, ...], cache: bool) -> Any:
    """The training slices with the released augmentation (rotation/flip, resize to the patch)."""
    return ACDC(base_dir=root, split="train", transform=RandomGenerator(tuple(patch_size)), cache=cache)


DESCRIPTION = DatasetDescription(
    name="ACDC", layout="ACDC", root_path="data/ACDC", case_path=acdc_volume_path,
    num_classes=ACDC_NUM_CLASSES, class_names=("RV", "Myo", "LV"), spatial_dims=2,
    # training items are slices; --labelnum counts patients, whose slices lead train_slices.list
    train_list="train_slices.list", item="slices", train_dataset=train_dataset, labelnum=3,
    labelnum_unit="patients", labeled_items=labeled_slice_count,
    labelnum_shares={3: "5%", 7: "10%", 70: "all"},
    patch_size=(256, 256), batch_size=24, labeled_bs=12, max_iterations=30000,  # constant learning rate
    consistency=0.1, consistency_rampup=200.0, magnitude=6.0,
    vat_distance=VatDistance.CLASS_DICE, dice=DiceForm.CLASSES,
    methods=method_table(
        {"ssnet": "unet", "uamt": "unet", "sassnet": "unet_sdf", "dtc": "unet_sdf", "urpc": "unet_urpc",
         "mcnet": "mcnet2d_v1", "bcp": "unet", "admt": "unet"},
        {"uamt": 0.1, "sassnet": 0.015, "dtc": 0.1, "urpc": 0.1, "mcnet": 0.1}, rampup=200.0,
        # the released 2D script computes SS-Net's w(t) from the iteration count before the increment
        options={"ssnet": {"ramp_after_increment": False}, "mcnet": {"seg_weight": 1.0},
                 # BCP's ACDC_BCP_train.py: batch-pooled squared Dice, EMA of the whole state_dict, constant
                 # learning rate, self-train continues the best pre-train optimiser, batch 24 = 12 + 12
                 "bcp": {"loss": "acdc", "pretrain_iterations": 10000, "ema_buffers": True,
                         "self_train_lr_steps": False, "keep_pretrain_optimizer": True, "round_best": False,
                         "run_defaults": {"batch_size": 24, "labeled_bs": 12, "max_iterations": 30000,
                                          "val_start": 200}},
                 # AD-MT's config_2d_aut.yml: Dice above 0.95, periods 1..50, ramp 50, weight 2.0, poly lr,
                 # batch 24 = 12 unlabeled + 12 labeled, seed 2023, validation every 2 epochs (docs/admt_spec.md)
                 "admt": {"views": "acdc", "loss": "dice", "threshold": 0.95, "period": 50, "rampup": 50.0,
                          "weight": 2.0, "ema_decay": 0.99, "cutmix_prob": 1.0, "val_epochs": 2,
                          "run_defaults": {"batch_size": 24, "labeled_bs": 12, "max_iterations": 30000,
                                           "seed": 2023, "base_lr": 0.01}}}),
    # released test: no largest-component step, test.list names sorted, NIfTI spacing (1, 1, 10)
    procedure=SliceWise(nms=False, sorted_cases=True, nii_spacing=(1.0, 1.0, 10.0)),
    # the released validation DataLoader's iterator draws one torch seed per validation
    validation_draws=True, select="val", val_start=200,
    mismatch_hints={
        "images": "other h5 files (ACDC: slices of the SSL4MIS h5 distribution, intensities min-max scaled per "
                  "volume), or volumes whose slices are in another order",
        "distances": "the slice zoom (--patch_size 256 256 as released)",
    },
)
