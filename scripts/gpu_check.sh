#!/usr/bin/env bash
# GPU check of the speed work (issue 8): one command for a lent GPU, under 8 minutes.
#
#   bash scripts/gpu_check.sh [RESULTS_DIR]        # default: gpu_results/
#
# What it runs, everything written to RESULTS_DIR (logs/ holds each stage's output):
#   1. code/benchmark.py at the paper's sizes, fp32 and bf16 (--json bench_*.json):
#        LA   V-Net 112x112x80, batch 4 (2 labeled), sliding window at --sw_batch 1 and 8
#        ACDC U-Net 256x256,   batch 24 (12 labeled), slice inference at batch 1 and 8
#      (--channels_last auto = on: the benchmark runs with cudnn.benchmark, i.e. --deterministic 0)
#   2. synthetic LA data (code/dataloaders/synthetic.py, 10 cases of ~128x128x96 so that
#      112x112x80 crops fit), then a short SS-Net training (train_la.py --deterministic 0,
#      --select last) in fp32 and in bf16 with the same number of iterations, each followed
#      by test_la.py in the same precision: the test Dice of each mode;
#   3. if time is left: LA fp32 / bf16 training step with --channels_last off (is channels-last worth it?);
#   4. summary.txt / summary.json: card, date, versions and every number.
#
# Runtime budget (the whole script is held under DEADLINE_S = 450 s, 7.5 min): every stage runs
# under `timeout` with its own cap, cut further to what is left of the deadline; a stage that
# does not fit is skipped and the summary says so. Expected on an H100/H200 (caps in brackets):
#   GPU probe + versions                    ~10 s
#   LA benchmark fp32, bf16               2 x ~40 s   [2 x 90 s]   (cudnn autotuning included)
#   ACDC benchmark fp32, bf16             2 x ~25 s   [2 x 60 s]
#   synthetic data                            ~5 s    [30 s]
#   LA training fp32, bf16                2 x <=75 s  [2 x 100 s]  iterations = min(TRAIN_ITERS, 60 s /
#                                                                   the fp32 step time measured in stage 1)
#   LA test fp32, bf16 (2 test cases)     2 x ~15 s   [2 x 40 s]
#   channels_last off, LA fp32 / bf16     2 x ~25 s   [2 x 45 s]   (only if time is left)
#
# Environment: PYTHON (default python), TRAIN_ITERS (default 300), DEADLINE_S (default 450),
# GPU_CHECK_SMOKE=1 runs the same pipeline on the CPU at toy sizes, only to check the script
# itself on a machine without a GPU (its numbers mean nothing).
set -uo pipefail

PYTHON=${PYTHON:-python}
DEADLINE_S=${DEADLINE_S:-450}
TRAIN_ITERS=${TRAIN_ITERS:-300}
SMOKE=${GPU_CHECK_SMOKE:-0}

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RESULTS_ARG=${1:-gpu_results}

# ---------------------------------------------------------------------------- fail fast without a GPU
if [[ "$SMOKE" != "1" ]]; then
    if ! probe=$("$PYTHON" -c 'import torch, sys
ok = torch.cuda.is_available() and torch.cuda.device_count() > 0
print(torch.cuda.get_device_name(0) if ok else f"torch {torch.__version__}, CUDA build {torch.version.cuda}")
sys.exit(0 if ok else 1)' 2>&1); then
        echo "gpu_check.sh: error: no CUDA GPU is visible ($probe)." >&2
        echo "Run it on a machine with an NVIDIA GPU and a CUDA build of PyTorch (check nvidia-smi and" >&2
        echo "CUDA_VISIBLE_DEVICES); nothing was run." >&2
        exit 2
    fi
    DEVICE=cuda
else
    echo "gpu_check.sh: GPU_CHECK_SMOKE=1: toy sizes on the CPU, to check the script only" >&2
    DEVICE=cpu
fi

mkdir -p "$RESULTS_ARG/logs" || { echo "gpu_check.sh: error: cannot create $RESULTS_ARG" >&2; exit 1; }
RESULTS=$(cd "$RESULTS_ARG" && pwd)
cd "$REPO" || exit 1

# ---------------------------------------------------------------------------- sizes
if [[ "$SMOKE" == "1" ]]; then
    LA_PATCH=(32 32 16); LA_BATCH=(--batch_size 4 --labeled_bs 2)
    ACDC_PATCH=(64 64); ACDC_BATCH=(--batch_size 4 --labeled_bs 2)
    BENCH_ITERS=(--iters 2 --warmup 1); ACDC_SLICES=4
    SYNTH_SIZE=(40 40 24); LABELNUM=2; TRAIN_ITERS=4; STRIDES=(--stride_xy 16 --stride_z 16)
    TRAIN_CAP=100
else
    LA_PATCH=(112 112 80); LA_BATCH=(--batch_size 4 --labeled_bs 2)
    ACDC_PATCH=(256 256); ACDC_BATCH=(--batch_size 24 --labeled_bs 12)
    BENCH_ITERS=(--iters 10 --warmup 3); ACDC_SLICES=40
    SYNTH_SIZE=(128 128 96); LABELNUM=4; STRIDES=(--stride_xy 18 --stride_z 4)
    TRAIN_CAP=100
fi

START=$SECONDS
STATUS_FILE="$RESULTS/stages.tsv"
printf 'stage\tstatus\tseconds\n' > "$STATUS_FILE"

# run_stage NAME CAP_S CMD...: run CMD under `timeout`, capped at CAP_S and at what is left of
# DEADLINE_S; output to logs/NAME.log; status (ok / failed rc=N / timed out / skipped) to stages.tsv.
run_stage() {
    local name=$1 cap=$2; shift 2
    local left=$((DEADLINE_S - (SECONDS - START)))
    local limit=$((cap < left ? cap : left))
    if ((limit < 15)); then
        echo "[gpu_check] $name: skipped (${left} s left of the ${DEADLINE_S} s budget)"
        printf '%s\tskipped\t0\n' "$name" >> "$STATUS_FILE"
        return 1
    fi
    echo "[gpu_check] $name (limit ${limit} s) ..."
    local t0=$SECONDS rc status
    timeout --kill-after=10 "$limit" "$@" > "$RESULTS/logs/$name.log" 2>&1
    rc=$?
    if ((rc == 0)); then status=ok
    elif ((rc == 124 || rc == 137)); then status="timed out"
    else status="failed rc=$rc"; fi
    echo "[gpu_check] $name: $status in $((SECONDS - t0)) s (log: logs/$name.log)"
    [[ "$status" == ok ]] || tail -n 5 "$RESULTS/logs/$name.log" | sed 's/^/    /'
    printf '%s\t%s\t%s\n' "$name" "$status" "$((SECONDS - t0))" >> "$STATUS_FILE"
    [[ "$status" == ok ]]
}

# ---------------------------------------------------------------------------- machine
date -u +%Y-%m-%dT%H:%M:%SZ > "$RESULTS/date.txt"
if command -v nvidia-smi > /dev/null; then nvidia-smi > "$RESULTS/nvidia-smi.txt" 2>&1; fi
"$PYTHON" - "$RESULTS/env.json" "$DEVICE" <<'EOF'
import json, platform, sys
import torch
dev = sys.argv[2]
info = {"torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
        "cudnn": torch.backends.cudnn.version() if dev == "cuda" else None,
        "device": torch.cuda.get_device_name(0) if dev == "cuda" else (platform.processor() or platform.machine()),
        "capability": list(torch.cuda.get_device_capability(0)) if dev == "cuda" else None}
info["bf16_native"] = info["capability"][0] >= 8 if dev == "cuda" else None
json.dump(info, open(sys.argv[1], "w"), indent=2)
print(info)
EOF

# ---------------------------------------------------------------------------- 1. benchmarks
for amp in none bf16; do
    run_stage "bench_la_$amp" 90 "$PYTHON" code/benchmark.py --setting la --device "$DEVICE" --amp "$amp" \
        --patch_size "${LA_PATCH[@]}" "${LA_BATCH[@]}" "${BENCH_ITERS[@]}" --sw_batch 1 8 \
        --json "$RESULTS/bench_la_$amp.json"
done
for amp in none bf16; do
    run_stage "bench_acdc_$amp" 60 "$PYTHON" code/benchmark.py --setting acdc --device "$DEVICE" --amp "$amp" \
        --patch_size "${ACDC_PATCH[@]}" "${ACDC_BATCH[@]}" "${BENCH_ITERS[@]}" --sw_batch 1 8 \
        --slices "$ACDC_SLICES" --json "$RESULTS/bench_acdc_$amp.json"
done

# ---------------------------------------------------------------------------- 2. short training + test
DATA="$RESULTS/data_la_synth"
run_stage synthetic_data 30 "$PYTHON" code/dataloaders/synthetic.py --dataset LA --out "$DATA" --cases 10 \
    --seed 1 --size "${SYNTH_SIZE[@]}"

# Same iteration count for both modes: what the fp32 step (stage 1) allows in ~60 s, at most TRAIN_ITERS.
ITERS=$("$PYTHON" - "$RESULTS/bench_la_none.json" "$TRAIN_ITERS" <<'EOF'
import json, sys
cap = int(sys.argv[2])
try:
    step = json.load(open(sys.argv[1]))["train_step_s"]
    print(min(cap, max(20, int(60 / max(step, 1e-3)))))
except (OSError, KeyError, ValueError):
    print(min(cap, 100))
EOF
)
echo "[gpu_check] training iterations per mode: $ITERS"
echo "$ITERS" > "$RESULTS/train_iterations.txt"

for amp in none bf16; do
    exp="GPUCheck_$amp"
    if run_stage "train_la_$amp" "$TRAIN_CAP" "$PYTHON" code/train_la.py --root_path "$DATA" --device "$DEVICE" \
        --model_root "$RESULTS/models" --exp "$exp" --labelnum "$LABELNUM" --max_iterations "$ITERS" \
        --patch_size "${LA_PATCH[@]}" "${LA_BATCH[@]}" --amp "$amp" --deterministic 0 --select last \
        --num_workers 4 --persistent_workers 1 --log_interval 20 --save_interval "$ITERS" \
        --image_interval 100000; then
        run_stage "test_la_$amp" 40 "$PYTHON" code/test_la.py --root_path "$DATA" --device "$DEVICE" --amp "$amp" \
            --ckpt "$RESULTS/models/LA_${exp}_${LABELNUM}_labeled/VNet/VNet_best_model.pth" \
            --out_dir "$RESULTS/test_la_$amp" --patch_size "${LA_PATCH[@]}" "${STRIDES[@]}" --sw_batch 8 \
            --save_nii 0
    fi
done

# ---------------------------------------------------------------------------- 3. channels_last off (if time is left)
for amp in none bf16; do
    run_stage "bench_la_${amp}_nhwc_off" 45 "$PYTHON" code/benchmark.py --setting la --device "$DEVICE" \
        --amp "$amp" --patch_size "${LA_PATCH[@]}" "${LA_BATCH[@]}" "${BENCH_ITERS[@]}" --skip_inference \
        --json "$RESULTS/bench_la_${amp}_nhwc_off.json" -- --channels_last off
done

# ---------------------------------------------------------------------------- 4. summary
"$PYTHON" - "$RESULTS" "$((SECONDS - START))" <<'EOF' | tee "$RESULTS/summary.txt"
import json, os, sys

res, total = sys.argv[1], int(sys.argv[2])


def load(name):
    try:
        with open(os.path.join(res, name)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


env = load("env.json") or {}
date = open(os.path.join(res, "date.txt")).read().strip()
summary = {"date": date, "env": env, "total_s": total, "bench": {}, "training": {}}
print(f"GPU check: {env.get('device')} | {date} | torch {env.get('torch')}, CUDA {env.get('cuda')}, "
      f"cuDNN {env.get('cudnn')}, native bf16 {env.get('bf16_native')} | {total} s")
for setting in ("la", "acdc"):
    for amp in ("none", "bf16"):
        b = load(f"bench_{setting}_{amp}.json")
        if b is None:
            print(f"{setting.upper():4} {amp:4}: no result (see logs/bench_{setting}_{amp}.log)")
            continue
        summary["bench"][f"{setting}_{amp}"] = b
        inf = b.get("windows_per_s") or b.get("slices_per_s") or {}
        unit = "windows/s" if "windows_per_s" in b else "slices/s"
        mem = b.get("peak_memory_mib")
        print(f"{setting.upper():4} {amp:4}: train step {b['train_step_s'] * 1000:8.1f} ms "
              f"(channels_last {b.get('channels_last')}), peak {mem if mem is None else round(mem)} MiB; "
              + ", ".join(f"sw_batch {k}: {v:.1f} {unit}" for k, v in inf.items())
              + (f" (x{inf['8'] / inf['1']:.2f} batched)" if "1" in inf and "8" in inf else ""))
    a, c = summary["bench"].get(f"{setting}_none"), summary["bench"].get(f"{setting}_bf16")
    if a and c:
        print(f"{setting.upper():4} bf16 speed-up of the training step: x{a['train_step_s'] / c['train_step_s']:.2f}")
for amp in ("none", "bf16"):
    off, on = load(f"bench_la_{amp}_nhwc_off.json"), summary["bench"].get(f"la_{amp}")
    if off and on:
        summary["bench"][f"la_{amp}_channels_last_off"] = off
        print(f"LA   {amp:4}: train step with channels_last off {off['train_step_s'] * 1000:.1f} ms, "
              f"with channels_last {on.get('channels_last')} (auto) {on['train_step_s'] * 1000:.1f} ms")
iters = open(os.path.join(res, "train_iterations.txt")).read().strip() if os.path.exists(
    os.path.join(res, "train_iterations.txt")) else "?"
for amp in ("none", "bf16"):
    t = load(f"test_la_{amp}/performance.json")
    if t is None:
        print(f"LA training {amp:4}: no test result (see logs/train_la_{amp}.log, logs/test_la_{amp}.log)")
        continue
    summary["training"][amp] = {"iterations": iters, "mean": t["mean"], "cases": t["cases"]}
    m = t["mean"]
    print(f"LA training {amp:4}: {iters} iterations, test Dice {m['dice']:.4f}, Jaccard {m['jaccard']:.4f}, "
          f"95HD {m['hd95']:.2f}, ASD {m['asd']:.2f} ({t['cases']} synthetic cases)")
stages = open(os.path.join(res, "stages.tsv")).read().strip().splitlines()[1:]
bad = [s.replace("\t", " ") for s in stages if "\tok\t" not in s]
summary["stages"] = stages
print("stages not ok: " + ("; ".join(bad) if bad else "none"))
with open(os.path.join(res, "summary.json"), "w") as f:
    json.dump(summary, f, indent=2)
EOF
echo "[gpu_check] results in $RESULTS (summary.txt, summary.json, logs/)"
# Exit status 0 only when every required stage (benchmarks, both trainings and tests) is ok;
# the channels_last comparison is optional.
for stage in bench_la_none bench_la_bf16 bench_acdc_none bench_acdc_bf16 train_la_none train_la_bf16 \
             test_la_none test_la_bf16; do
    if ! awk -F'\t' -v s="$stage" '$1 == s && $2 == "ok" {found = 1} END {exit !found}' "$STATUS_FILE"; then
        echo "[gpu_check] required stage $stage is not ok (see stages.tsv and logs/)" >&2
        exit 1
    fi
done
exit 0
