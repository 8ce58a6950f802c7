#!/usr/bin/env bash
# Train and test every LA run of the paper's Tables 1 and 3 under SS-Net's setting: SS-Net, its
# Table 3 ablations, the V-Net bounds and the five baselines (UA-MT, SASSNet, DTC, URPC, MC-Net).
#   bash train_la.sh [GPU_ID ...] [--dry-run] [--print] [--slurm] [--seeds S,S,...] [--rows paper|successors|all]
#     GPU_ID ...  GPUs to use (default 0); runs are independent processes, one per GPU at a time,
#                 each starting on the next free GPU: bash train_la.sh 0 1 2 3
#     --dry-run   list the runs (and the GPU each would start on), run nothing
#     --print     print one command line per run (train && test) for a cluster job array; no --gpu
#     --slurm     write an sbatch job array (one task per pending run, one GPU each, log in the run folder)
#                 to <MODEL_ROOT>/<dataset>_runs.sbatch (or $SLURM_SCRIPT); submit it with sbatch
#     --seeds S,S  train every row once per seed (default 1337, the released seed); seed 1337 keeps the
#                 released folder model/<ds>_<exp>_<n>_labeled/, another seed S writes <ds>_<exp>_seedS_<n>_labeled/;
#                 code/summarize.py then shows mean +- sd over the seeds and paired comparisons
#     --rows R    which block of rows: paper (default: the paper's tables alone), successors (SS-Net's
#                 successors at 4 and 8 labels: BCP (--method bcp, CVPR 2023) and AD-MT (--method admt,
#                 ECCV 2024), each with its own released batch and iterations, plus SS-Net at the same labels
#                 for the paired comparisons; a row listed by both blocks runs once) or all
#     --successors  the same as --rows successors. AD-MT's rows are listed only where
#                 '$PYTHON code/train_la.py --method admt --help' succeeds (FORCE_METHODS=admt lists them anyway)
# Runs whose test results exist are skipped (re-run after an interruption). With several GPUs each
# run's output goes to <MODEL_ROOT>/LA_<exp>_<n>_labeled/run.log. Environment: DATA (default data/LA),
# MODEL_ROOT (default model), PYTHON (default python).
set -euo pipefail
cd "$(dirname "$0")"
SCRIPT=train_la.sh; DATASET=LA; NET=VNet; TRAIN_PY=code/train_la.py; TEST_PY=code/test_la.py; TEST_FLAGS=(--nms 1); DATA_DEFAULT=data/LA
source scripts/table_runner.sh
parse_table_args "$@"

if want_block paper; then
  for n in 4 8; do
    run SSNet "$n"                                   # Table 1/3: SS-Net = Lseg + Llds(Dice) + Lcs
    run Supervised "$n" --supervised_only            # Table 1: V-Net lower bound (Table 3: Lseg)
    run UAMT "$n" --method uamt                      # Table 1: UA-MT
    run SASSNet "$n" --method sassnet                # Table 1: SASSNet
    run DTC "$n" --method dtc                        # Table 1: DTC
    run URPC "$n" --method urpc                      # Table 1: URPC
    run MCNet "$n" --method mcnet                    # Table 1: MC-Net
    run LDS_KL "$n" --lds kl --cs off                # Table 3: Lseg + Llds(KL)
    run LDS_Dice "$n" --lds dice --cs off            # Table 3: Lseg + Llds(Dice)
    run CS "$n" --lds none --cs on                   # Table 3: Lseg + Lcs
  done
  run Supervised 80 --supervised_only                # Table 1: V-Net upper bound (all labels)
fi
if want_block successors; then                     # successors of SS-Net (not in its paper); data/successor_results.csv
  for n in 4 8; do
    run SSNet "$n"                                 # SS-Net again (skipped when done): the paired comparisons' reference
    run BCP "$n" --method bcp                      # BCP (Bai et al., CVPR 2023): pre-train + self-train, released budget
    run_if_method admt ADMT "$n"                   # AD-MT (Zhao et al., ECCV 2024): once --method admt exists
  done
fi

run_table
