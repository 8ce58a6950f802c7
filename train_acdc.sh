#!/usr/bin/env bash
# Train and test every ACDC run of the paper's Table 2 under SS-Net's setting: SS-Net, the U-Net
# bounds and the five baselines (UA-MT, SASSNet, DTC, URPC, MC-Net).
#   bash train_acdc.sh [GPU_ID ...] [--dry-run] [--print] [--slurm] [--seeds S,S,...] [--rows paper|successors|all]
#     GPU_ID ...  GPUs to use (default 0); runs are independent processes, one per GPU at a time,
#                 each starting on the next free GPU: bash train_acdc.sh 0 1 2 3
#     --dry-run   list the runs (and the GPU each would start on), run nothing
#     --print     print one command line per run (train && test) for a cluster job array; no --gpu
#     --slurm     write an sbatch job array (one task per pending run, one GPU each, log in the run folder)
#                 to <MODEL_ROOT>/<dataset>_runs.sbatch (or $SLURM_SCRIPT); submit it with sbatch
#     --seeds S,S  train every row once per seed (default 1337, the released seed); seed 1337 keeps the
#                 released folder model/<ds>_<exp>_<n>_labeled/, another seed S writes <ds>_<exp>_seedS_<n>_labeled/;
#                 code/summarize.py then shows mean +- sd over the seeds and paired comparisons
#     --rows R    which block of rows: paper (default: the paper's tables alone), successors (SS-Net's
#                 successors at 3 and 7 labels: BCP (--method bcp, CVPR 2023) and AD-MT (--method admt,
#                 ECCV 2024), each with its own released batch and iterations, plus SS-Net at the same labels
#                 for the paired comparisons; a row listed by both blocks runs once) or all
#     --successors  the same as --rows successors. AD-MT's rows are listed only where
#                 '$PYTHON code/train_acdc.py --method admt --help' succeeds (FORCE_METHODS=admt lists them anyway)
# Runs whose test results exist are skipped (re-run after an interruption). With several GPUs each
# run's output goes to <MODEL_ROOT>/ACDC_<exp>_<n>_labeled/run.log. Environment: DATA (default data/ACDC),
# MODEL_ROOT (default model), PYTHON (default python).
set -euo pipefail
cd "$(dirname "$0")"
SCRIPT=train_acdc.sh; DATASET=ACDC; NET=unet; TRAIN_PY=code/train_acdc.py; TEST_PY=code/test_acdc.py; TEST_FLAGS=(); DATA_DEFAULT=data/ACDC
source scripts/table_runner.sh
parse_table_args "$@"

if want_block paper; then
  for n in 3 7; do
    run SSNet "$n"                                   # Table 2: SS-Net
    run Supervised "$n" --supervised_only            # Table 2: U-Net lower bound
    run UAMT "$n" --method uamt                      # Table 2: UA-MT
    run SASSNet "$n" --method sassnet                # Table 2: SASSNet
    run DTC "$n" --method dtc                        # Table 2: DTC
    run URPC "$n" --method urpc                      # Table 2: URPC
    run MCNet "$n" --method mcnet                    # Table 2: MC-Net
  done
  run Supervised 70 --supervised_only                # Table 2: U-Net upper bound (all labels)
fi
if want_block successors; then                     # successors of SS-Net (not in its paper); data/successor_results.csv
  for n in 3 7; do
    run SSNet "$n"                                 # SS-Net again (skipped when done): the paired comparisons' reference
    run BCP "$n" --method bcp                      # BCP (Bai et al., CVPR 2023): pre-train + self-train, released budget
    run_if_method admt ADMT "$n"                   # AD-MT (Zhao et al., ECCV 2024): once --method admt exists
  done
fi

run_table
