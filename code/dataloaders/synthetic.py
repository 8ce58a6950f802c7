"""Deterministic synthetic stand-ins for LA and ACDC, in the real on-disk layouts.

Usage (from the repository root)::

    python code/dataloaders/synthetic.py --dataset LA --out data/LA_synth --cases 10 --seed 1
    python code/dataloaders/synthetic.py --dataset ACDC --out data/ACDC_synth --cases 10 --seed 1
    python code/dataloaders/synthetic.py --dataset LA --out raw/LA --cases 4 --seed 1 --raw

The real data cannot be downloaded everywhere; these volumes let every
script run end to end. They are built to be a fair, non-trivial
semi-supervised task (a network has to learn shape and context, a
threshold does not solve it). The generators and their writers are per
dataset: ``dataloaders.synthetic_la`` (LA-like (x, y, z) volumes: atrium,
pulmonary veins, unlabeled aorta and blobs) and ``dataloaders.synthetic_acdc``
(ACDC-like short-axis stacks, ED and ES frames, five pathology groups). This
module holds what both use (the smooth noise and bias fields) and the command
line, and re-exports their public names (``from dataloaders.synthetic import
make_la, make_acdc, ...`` keeps working).

Without ``--raw`` the preprocessed layout is written (LA: ``2018LA_Seg_Training Set/<ID>/mri_norm2.h5``
+ ``train.list``/``test.list``; ACDC: ``data/*.h5``, ``data/slices/*.h5`` and the four lists).
With ``--raw`` the raw challenge layout is written instead (LA: ``<ID>/lgemri.nrrd`` +
``laendo.nrrd`` with atrium 255; ACDC: ``patientXXX/patientXXX_frame01.nii.gz``, a later
ES frame ``patientXXX_frameNN.nii.gz``, their ``_gt`` files and ``Info.cfg``), plus the split
lists, so the preprocessing scripts can be run on it. Splits: LA 80/20 train/test (at least
one test case); ACDC 70/10/20 patients (at least one val and one test patient). Every case is
drawn from its own generator seeded by (seed, case number), so a case does not depend on how
many others are made.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

if __name__ == "__main__":  # run as a script: make ``code/`` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dataloaders.synthetic_acdc import (ACDC_DEFAULT_HW, ACDC_DEFAULT_SLICES, ACDC_GROUPS,  # noqa: E402
                                        acdc_group, acdc_patient, acdc_split, make_acdc)
from dataloaders.synthetic_fields import bias_field, smooth_noise  # noqa: E402
from dataloaders.synthetic_la import LA_DEFAULT_SIZE, la_case, la_split, make_la  # noqa: E402

logger = logging.getLogger(__name__)

__all__ = ["la_case", "acdc_patient", "acdc_group", "ACDC_GROUPS", "la_split", "acdc_split", "make_la", "make_acdc",
           "LA_DEFAULT_SIZE", "ACDC_DEFAULT_HW", "ACDC_DEFAULT_SLICES", "main", "smooth_noise", "bias_field"]


# ----------------------------------------------------------------------------- CLI
def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, write the dataset asked for and log what was written; returns the exit status."""
    parser = argparse.ArgumentParser(description="Write deterministic synthetic LA / ACDC data in the "
                                                 "real layouts (see the module docstring).")
    parser.add_argument("--dataset", required=True, choices=["LA", "ACDC"], help="which dataset to imitate")
    parser.add_argument("--out", required=True, help="output folder (use it as --root_path)")
    parser.add_argument("--cases", type=int, default=10, help="LA: number of cases; ACDC: number of patients")
    parser.add_argument("--seed", type=int, default=1337, help="seed; the same seed gives the same files")
    parser.add_argument("--raw", action="store_true",
                        help="write the raw challenge layout (for the preprocessing scripts) instead of h5")
    parser.add_argument("--size", type=int, nargs=3, default=list(LA_DEFAULT_SIZE), metavar=("X", "Y", "Z"),
                        help="LA: mean volume size (x y z), default 96 96 64")
    parser.add_argument("--hw", type=int, nargs=2, default=list(ACDC_DEFAULT_HW), metavar=("MIN", "MAX"),
                        help="ACDC: range of in-plane sides H and W, default 80 140")
    parser.add_argument("--slices", type=int, nargs=2, default=list(ACDC_DEFAULT_SLICES), metavar=("MIN", "MAX"),
                        help="ACDC: range of slices per volume, default 6 10")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        if args.dataset == "LA":
            lists = make_la(args.out, args.cases, args.seed, args.size, raw=args.raw, progress=True)
        else:
            lists = make_acdc(args.out, args.cases, args.seed, args.hw, args.slices, raw=args.raw, progress=True)
    except ValueError as err:
        parser.error(str(err))
    logger.info("wrote synthetic %s%s to %s: %s", args.dataset, " (raw layout)" if args.raw else "",
                 args.out, ", ".join(f"{k} {len(v)}" for k, v in lists.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
