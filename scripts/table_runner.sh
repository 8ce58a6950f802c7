#!/usr/bin/env bash
# Shared by train_la.sh and train_acdc.sh (sourced, not run): parse the GPU ids and options,
# queue runs with `run EXP LABELNUM [training flags...]` (one per seed of --seeds; seed 1337 keeps the
# released folder <DATASET>_<EXP>_<N>_labeled, seed S goes to <DATASET>_<EXP>_seedS_<N>_labeled; each run
# is tested on its best and its last checkpoint), then `run_table` skips finished runs and
# trains + tests the rest, one run per GPU at a time (or lists them with --dry-run / --print).
# The caller sets SCRIPT, DATASET, NET, TRAIN_PY, TEST_PY, TEST_FLAGS and DATA_DEFAULT, and queues its
# blocks of rows under `if want_block paper; then ...` / `if want_block successors; then ...` (--rows).
# Rows of a method that the training script may not have yet are queued with `run_if_method METHOD EXP N ...`.

parse_table_args() {
  GPUS=(); DRY=0; PRINT=0; SLURM=0; SEEDS=(1337); ROWS=paper
  while [ $# -gt 0 ]; do
    a=$1; shift
    case "$a" in
      --dry-run) DRY=1 ;;
      --print) PRINT=1 ;;
      --slurm) SLURM=1 ;;
      --successors) ROWS=successors ;;
      --rows|--rows=*)
        if [ "$a" = --rows ]; then
          [ $# -gt 0 ] || { echo "$SCRIPT: --rows needs paper, successors or all" >&2; exit 2; }
          ROWS=$1; shift
        else
          ROWS=${a#--rows=}
        fi
        case "$ROWS" in
          paper|successors|all) ;;
          *) echo "$SCRIPT: --rows takes paper, successors or all, got '$ROWS'" >&2; exit 2 ;;
        esac ;;
      --seeds|--seeds=*)
        local list
        if [ "$a" = --seeds ]; then
          [ $# -gt 0 ] || { echo "$SCRIPT: --seeds needs a comma-separated list, e.g. --seeds 1337,1338,1339" >&2; exit 2; }
          list=$1; shift
        else
          list=${a#--seeds=}
        fi
        IFS=, read -r -a SEEDS <<< "$list"
        for s in "${SEEDS[@]}"; do
          [[ "$s" =~ ^[0-9]+$ ]] || { echo "$SCRIPT: --seeds takes integers separated by commas, got '$list'" >&2; exit 2; }
        done
        [ ${#SEEDS[@]} -gt 0 ] || { echo "$SCRIPT: --seeds got an empty list" >&2; exit 2; } ;;
      -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$SCRIPT"; exit 0 ;;
      -*) echo "$SCRIPT: unknown option '$a' (see --help)" >&2; exit 2 ;;
      *) [[ "$a" =~ ^[0-9]+$ ]] || { echo "$SCRIPT: GPU ids are integers, got '$a'" >&2; exit 2; }
         GPUS+=("$a") ;;
    esac
  done
  [ ${#GPUS[@]} -gt 0 ] || GPUS=(0)
  [ "$(printf '%s\n' "${SEEDS[@]}" | sort | uniq -d)" = "" ] || { echo "$SCRIPT: --seeds repeats a seed" >&2; exit 2; }
  local cores
  cores=$(nproc 2>/dev/null || echo 1)
  THREADS=$(( cores / ${#GPUS[@]} > 0 ? cores / ${#GPUS[@]} : 1 ))
  DATA=${DATA:-$DATA_DEFAULT}
  MODEL_ROOT=${MODEL_ROOT:-model}
  PY=${PYTHON:-python}
}

want_block() {  # want_block paper|successors: whether --rows selects this block of rows
  [ "$ROWS" = all ] || [ "$ROWS" = "$1" ]
}

JOBS=()
run() {  # run EXP LABELNUM [extra training flags...]: queue one run per seed (train, then test)
  local exp=$1 n=$2 seed job queued; shift 2
  for seed in "${SEEDS[@]}"; do  # seed 1337 (released) keeps the released folder name; others say their seed
    if [ "$seed" = 1337 ]; then
      job="$exp $n --seed $seed $*"
    else
      job="${exp}_seed$seed $n --seed $seed $*"
    fi
    for queued in ${JOBS[@]+"${JOBS[@]}"}; do  # a row listed by two blocks (SS-Net in both) runs once
      [ "$queued" = "$job" ] && continue 2
    done
    JOBS+=("$job")
  done
}

declare -A METHOD_KNOWN=()
method_known() {  # method_known METHOD: whether $TRAIN_PY accepts --method METHOD (asked once per method);
  # FORCE_METHODS=m1,m2 answers yes for those without asking (e.g. where python cannot import torch)
  local m=$1
  if [ -z "${METHOD_KNOWN[$m]:-}" ]; then
    if [[ ",${FORCE_METHODS:-}," == *",$m,"* ]] || "$PY" "$TRAIN_PY" --method "$m" --help >/dev/null 2>&1; then
      METHOD_KNOWN[$m]=1
    else
      METHOD_KNOWN[$m]=0
      echo "note  $DATASET: '$PY $TRAIN_PY --method $m --help' fails: --method $m is not there yet, its rows" \
           "are left out (FORCE_METHODS=$m lists them anyway)" >&2
    fi
  fi
  [ "${METHOD_KNOWN[$m]}" = 1 ]
}
run_if_method() {  # run_if_method METHOD EXP LABELNUM [flags...]: run EXP ... --method METHOD, if $TRAIN_PY has it
  local m=$1; shift
  if method_known "$m"; then run "$@" --method "$m"; fi
}

commands() {  # commands GPU|"" EXP N [flags...]: sets TRAIN and TEST (arrays)
  # A job on GPU g sees only that GPU (CUDA_VISIBLE_DEVICES=g, --device cuda), so nothing it does can
  # open a context on another GPU, and gets an equal share of the CPU threads.
  local gpu=$1 exp=$2 n=$3; shift 3
  local dev=() pre=() method=() words=("$@") i
  if [ -n "$gpu" ]; then
    pre=(env "CUDA_VISIBLE_DEVICES=$gpu" "OMP_NUM_THREADS=$THREADS")
    dev=(--device cuda)
  fi
  for ((i = 0; i < ${#words[@]}; i++)); do
    if [ "${words[i]}" = --method ]; then method=(--method "${words[i + 1]}"); fi
  done
  # a run interrupted earlier (its last.pth is there) continues where it stopped; a finished but untested
  # run only re-creates missing final files; a new training run never overwrites one
  local resume=()
  if [ -f "$(snapshot "$exp" "$n")/$NET/last.pth" ]; then resume=(--resume); fi
  TRAIN=("${pre[@]}" "$PY" "$TRAIN_PY" --root_path "$DATA" --model_root "$MODEL_ROOT" --exp "$exp" --labelnum "$n"
         "${dev[@]}" "$@" "${resume[@]}")
  TEST=("${pre[@]}" "$PY" "$TEST_PY" --root_path "$DATA" --model_root "$MODEL_ROOT" --exp "$exp" --labelnum "$n"
        "${dev[@]}" "${method[@]}" --which both "${TEST_FLAGS[@]}")
}
quoted() { printf '%q ' "$@" | sed 's/ $//'; }
snapshot() { echo "$MODEL_ROOT/${DATASET}_$1_$2_labeled"; }
is_done() { [ -f "$(snapshot "$1" "$2")/$NET/test/performance.txt" ]; }
run_one() {  # run_one GPU EXP N [flags...]: train then test; returns the first failure's status
  commands "$@"
  echo "=== $DATASET $2, $3 labeled, GPU $1: $(quoted "${TRAIN[@]}")"
  "${TRAIN[@]}" && "${TEST[@]}"
}

write_slurm() {  # an sbatch job array: one task per pending run, one GPU each, a log per run
  local out=${SLURM_SCRIPT:-$MODEL_ROOT/${DATASET}_runs.sbatch} job w snap
  if [ ${#PENDING[@]} -eq 0 ]; then echo "$SCRIPT --slurm: every run is done; no job array written" >&2; return; fi
  mkdir -p "$(dirname "$out")" "$MODEL_ROOT/slurm"
  {
    echo "#!/usr/bin/env bash"
    echo "# Written by $SCRIPT --slurm: ${#PENDING[@]} pending $DATASET run(s), one array task each. Submit: sbatch $out"
    echo "#SBATCH --job-name=ssnet_$DATASET"
    echo "#SBATCH --array=0-$(( ${#PENDING[@]} - 1 ))"
    echo "#SBATCH --gres=gpu:1"
    echo "#SBATCH --cpus-per-task=${SLURM_CPUS:-8}"
    echo "#SBATCH --output=$MODEL_ROOT/slurm/%x_%A_%a.out"
    echo "set -euo pipefail"
    echo "cd $(quoted "$PWD")"
    echo "export OMP_NUM_THREADS=\${SLURM_CPUS_PER_TASK:-8}"
    echo "case \"\$SLURM_ARRAY_TASK_ID\" in"
    local k=0
    for job in "${PENDING[@]}"; do
      read -r -a w <<< "$job"; commands "" "${w[@]}"
      snap=$(snapshot "${w[0]}" "${w[1]}")
      echo "  $k) mkdir -p $(quoted "$snap") && { $(quoted "${TRAIN[@]}") --device cuda && $(quoted "${TEST[@]}") --device cuda; } > $(quoted "$snap/run.log") 2>&1 ;;"
      k=$((k + 1))
    done
    echo "  *) echo \"no run for array task \$SLURM_ARRAY_TASK_ID (0-$(( ${#PENDING[@]} - 1 )))\" >&2; exit 2 ;;"
    echo "esac"
  } > "$out"
  echo "wrote $out: ${#PENDING[@]} array task(s); submit with: sbatch $out" >&2
}

run_table() {  # train and test the queued runs (or list them)
  PENDING=()
  for job in "${JOBS[@]}"; do
    read -r -a w <<< "$job"
    if is_done "${w[0]}" "${w[1]}"; then
      echo "skip  $DATASET ${w[0]} ${w[1]} labeled: $(snapshot "${w[0]}" "${w[1]}")/$NET/test/performance.txt exists" >&2
    else
      PENDING+=("$job")
    fi
  done

  if [ "$SLURM" = 1 ]; then write_slurm; exit 0; fi
  if [ "$PRINT" = 1 ]; then
    for job in "${PENDING[@]}"; do
      read -r -a w <<< "$job"; commands "" "${w[@]}"
      echo "cd $(quoted "$PWD") && $(quoted "${TRAIN[@]}") && $(quoted "${TEST[@]}")"
    done
    exit 0
  fi
  if [ "$DRY" = 1 ]; then
    echo "# ${#PENDING[@]} run(s) on GPU(s) ${GPUS[*]}; each starts on the next free GPU (shown: the order of a first pass)"
    k=0
    for job in "${PENDING[@]}"; do
      read -r -a w <<< "$job"; commands "${GPUS[k % ${#GPUS[@]}]}" "${w[@]}"; k=$((k + 1))
      echo "$(quoted "${TRAIN[@]}") && $(quoted "${TEST[@]}")"
    done
    exit 0
  fi


  if [ ${#GPUS[@]} -eq 1 ]; then
    for job in "${PENDING[@]}"; do
      read -r -a w <<< "$job"
      run_one "${GPUS[0]}" "${w[@]}" || echo "FAILED $DATASET ${w[0]} ${w[1]} labeled" >&2
    done
  else
    declare -A PID_GPU=()
    FREE=("${GPUS[@]}")
    for job in "${PENDING[@]}"; do
      while [ ${#FREE[@]} -eq 0 ]; do  # wait for a run to end, give its GPU back
        wait -n || true
        for pid in "${!PID_GPU[@]}"; do
          if ! kill -0 "$pid" 2>/dev/null; then FREE+=("${PID_GPU[$pid]}"); unset "PID_GPU[$pid]"; fi
        done
      done
      gpu=${FREE[0]}; FREE=("${FREE[@]:1}")
      read -r -a w <<< "$job"
      log="$(snapshot "${w[0]}" "${w[1]}")/run.log"
      mkdir -p "$(dirname "$log")"
      run_one "$gpu" "${w[@]}" > "$log" 2>&1 &
      PID_GPU[$!]=$gpu
      echo "started $DATASET ${w[0]} ${w[1]} labeled on GPU $gpu (log: $log)"
    done
    wait || true
  fi

  failed=0
  for job in "${PENDING[@]}"; do
    read -r -a w <<< "$job"
    if ! is_done "${w[0]}" "${w[1]}"; then
      echo "not finished: $DATASET ${w[0]} ${w[1]} labeled (see $(snapshot "${w[0]}" "${w[1]}")/)" >&2; failed=1
    fi
  done
  "$PY" code/summarize.py --model_root "$MODEL_ROOT" || true
  exit "$failed"
}
