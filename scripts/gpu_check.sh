#!/usr/bin/env bash
# GPU check: one command for a lent GPU, under 8 minutes on an H100/H200; every check prints one
# line PASS or FAIL (also in RESULTS_DIR/summary.txt); the exit status is non-zero on any FAIL.
#
#   bash scripts/gpu_check.sh [RESULTS_DIR]        # default: gpu_results/
#
#   imports   every module a run needs is importable (the GPU machine has no network: this is
#             checked first, with python, else python3, and what is missing is named)
#   parity    CPU vs CUDA, one SS-Net step at 64x64x48 (dropout off, TF32 off): identical VAT
#             noise, losses within 1e-4 relative, parameters after the step within 1e-4
#   syncs     host-device syncs of one SS-Net iteration (torch.cuda.set_sync_debug_mode) <= 4
#   resume    train_la.py 4 iterations then --resume to 6 == a straight 6 (1e-6; --deterministic 2)
#   step_*    benchmark.py at 112x112x80 batch 4: default (fp32, --deterministic 1) <= 110 ms,
#             TF32 + cudnn.benchmark, bf16 + channels-last <= 60 ms; ACDC 256x256 batch 24 (info);
#             peak memory and validation throughput at --sw_batch 1/4/8, warmed on the same volume
#   loader    100 iterations of train_la.py with the default loader: loader wait <= 5 % of wall time
#   full_run  a full LA run (15000 iterations + 66 validations) projected in bf16 <= 25 min
#   compile   --compile does not recompile after iteration 2
#
# Environment: PYTHON (default python, else python3), DEADLINE_S (default 480),
# GPU_CHECK_SMOKE=1 runs what it can on the CPU at toy sizes, to check the script itself.
set -uo pipefail

DEADLINE_S=${DEADLINE_S:-480}
SMOKE=${GPU_CHECK_SMOKE:-0}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RESULTS_ARG=${1:-gpu_results}

# ---------------------------------------------------------------------------- python and imports
PYTHON=${PYTHON:-}
if [[ -z "$PYTHON" ]]; then
    if command -v python >/dev/null 2>&1; then PYTHON=python; else PYTHON=python3; fi
fi
command -v "$PYTHON" >/dev/null 2>&1 || { echo "gpu_check.sh: error: neither python nor python3 is on PATH" >&2; exit 2; }
cd "$REPO" || exit 1
if ! imports=$("$PYTHON" scripts/gpu_checks.py imports 2>&1); then
    echo "$imports" >&2
    echo "gpu_check.sh: error: install what is missing (pip install -r requirements.txt) and run again; nothing else was run." >&2
    exit 2
fi

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
VERDICTS="$RESULTS/verdicts.jsonl"
: > "$VERDICTS"

if [[ "$SMOKE" == "1" ]]; then
    LA_PATCH=(32 32 16); ACDC_PATCH=(64 64); ACDC_BATCH=(--batch_size 4 --labeled_bs 2)
    BENCH_ITERS=(--iters 2 --warmup 1); SYNTH_SIZE=(40 40 24); LOADER_ITERS=4; STRIDES=(--stride_xy 16 --stride_z 16)
else
    LA_PATCH=(112 112 80); ACDC_PATCH=(256 256); ACDC_BATCH=(--batch_size 24 --labeled_bs 12)
    BENCH_ITERS=(--iters 10 --warmup 3); SYNTH_SIZE=(128 128 96); LOADER_ITERS=100; STRIDES=(--stride_xy 18 --stride_z 4)
fi
START=$SECONDS

# run_stage NAME CAP_S CMD...: CMD under `timeout` (CAP_S, and what is left of DEADLINE_S), output to
# logs/NAME.log; a stage that fails, times out or does not fit is a FAIL line.
run_stage() {
    local name=$1 cap=$2; shift 2
    local left=$((DEADLINE_S - (SECONDS - START)))
    local limit=$((cap < left ? cap : left))
    if ((limit < 10)); then
        fail "$name" "not run: ${left} s left of the ${DEADLINE_S} s budget"
        return 1
    fi
    echo "[gpu_check] $name (limit ${limit} s) ..." >&2
    timeout --kill-after=10 "$limit" "$@" > "$RESULTS/logs/$name.log" 2>&1
    local rc=$?
    if ((rc != 0)); then
        fail "$name" "$( ((rc == 124 || rc == 137)) && echo "timed out after ${limit} s" || echo "exit status $rc") (logs/$name.log)"
        return 1
    fi
}
fail() { "$PYTHON" -c 'import json, sys; print(json.dumps({"check": sys.argv[1], "pass": False, "detail": sys.argv[2]}))' "$1" "$2" >> "$VERDICTS"; echo "FAIL $1: $2"; }

# ---------------------------------------------------------------------------- checks
"$PYTHON" scripts/gpu_checks.py imports --json "$VERDICTS" > /dev/null
if [[ "$SMOKE" != "1" ]]; then
    run_stage parity 90 "$PYTHON" scripts/gpu_checks.py parity --device "$DEVICE" --json "$VERDICTS" && tail -1 "$RESULTS/logs/parity.log"
    run_stage syncs 60 "$PYTHON" scripts/gpu_checks.py syncs --device "$DEVICE" --json "$VERDICTS" && tail -1 "$RESULTS/logs/syncs.log"
fi

DATA="$RESULTS/data_la"
run_stage synthetic_data 40 "$PYTHON" code/dataloaders/synthetic.py --dataset LA --out "$DATA" --cases 10 \
    --seed 0 --size "${SYNTH_SIZE[@]}"

# resume: straight 6 vs 4 + --resume to 6, bit for bit up to 1e-6
RES_FLAGS=(--root_path "$DATA" --device "$DEVICE" --patch_size "${LA_PATCH[@]}" --labelnum 4 --select last
           --deterministic 2 --save_interval 2)
run_stage resume 150 bash -c "set -e
  $PYTHON code/train_la.py ${RES_FLAGS[*]} --max_iterations 6 --model_root '$RESULTS/resume_a' --overwrite
  $PYTHON code/train_la.py ${RES_FLAGS[*]} --max_iterations 4 --model_root '$RESULTS/resume_b' --overwrite
  $PYTHON code/train_la.py ${RES_FLAGS[*]} --max_iterations 6 --model_root '$RESULTS/resume_b' --resume
  $PYTHON - '$RESULTS' <<'EOF'
import json, sys, torch
res = sys.argv[1]
a, b = (torch.load(f'{res}/resume_{r}/LA_SSNet_4_labeled/VNet/last.pth', map_location='cpu', weights_only=True)
        for r in 'ab')
err = max(float((a['model'][k].float() - b['model'][k].float()).abs().max()) for k in a['model'])
ok = err <= 1e-6 and a['iter_num'] == b['iter_num'] == 6
line = {'check': 'resume', 'pass': ok, 'detail': f'max weight difference after 6 iterations {err:.2e} (<= 1e-6)'}
print(('PASS' if ok else 'FAIL') + ' resume: ' + line['detail'])
open(f'{res}/verdicts.jsonl', 'a').write(json.dumps(line) + '\n')
EOF" && tail -1 "$RESULTS/logs/resume.log"

# step times, peak memory, validation throughput
LA_BENCH=(--setting la --device "$DEVICE" --patch_size "${LA_PATCH[@]}" --batch_size 4 --labeled_bs 2
          "${BENCH_ITERS[@]}" --skip_loader)
run_stage step_la_default 90 "$PYTHON" code/benchmark.py "${LA_BENCH[@]}" --sw_batch 1 4 8 --json "$RESULTS/bench_la_default.json"
run_stage step_la_tf32 90 "$PYTHON" code/benchmark.py "${LA_BENCH[@]}" --skip_inference --json "$RESULTS/bench_la_tf32.json" -- --deterministic 0
run_stage step_la_bf16 90 "$PYTHON" code/benchmark.py "${LA_BENCH[@]}" --amp bf16 --sw_batch 4 --json "$RESULTS/bench_la_bf16.json" -- --deterministic 0 --channels_last on
run_stage step_acdc_default 90 "$PYTHON" code/benchmark.py --setting acdc --device "$DEVICE" --patch_size "${ACDC_PATCH[@]}" \
    "${ACDC_BATCH[@]}" "${BENCH_ITERS[@]}" --skip_loader --sw_batch 1 8 --json "$RESULTS/bench_acdc_default.json"

# loader wait in a real run
run_stage loader 200 "$PYTHON" code/train_la.py --root_path "$DATA" --device "$DEVICE" --patch_size "${LA_PATCH[@]}" \
    --labelnum 4 --select last --max_iterations "$LOADER_ITERS" --model_root "$RESULTS/loader_run" --overwrite

if [[ "$SMOKE" != "1" ]]; then
    run_stage compile 150 "$PYTHON" scripts/gpu_checks.py compile --device "$DEVICE" --json "$VERDICTS" && tail -1 "$RESULTS/logs/compile.log"
fi

# ---------------------------------------------------------------------------- verdicts from the numbers
"$PYTHON" - "$RESULTS" "$((SECONDS - START))" "$SMOKE" "${STRIDES[*]}" <<'EOF' | tee "$RESULTS/summary.txt"
import datetime, json, os, platform, re, sys
res, total, smoke = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
verdicts = [json.loads(l) for l in open(os.path.join(res, "verdicts.jsonl")) if l.strip()]

def add(name, ok, detail):
    verdicts.append({"check": name, "pass": bool(ok), "detail": detail})

def load(name):
    path = os.path.join(res, name)
    return json.load(open(path)) if os.path.isfile(path) else None

la = {k: load(f"bench_la_{k}.json") for k in ("default", "tf32", "bf16")}
for key, target in (("default", 0.110), ("tf32", None), ("bf16", 0.060)):
    b = la[key]
    if b is None:
        continue
    ms, mem = 1000 * b["train_step_s"], b.get("peak_memory_mib")
    size = "x".join(map(str, b["patch_size"]))
    detail = (f"LA {size} batch {b['batch_size']} SS-Net step {ms:.1f} ms ({b['amp']}, channels_last "
              f"{b['channels_last']}), peak memory {mem if mem is None else round(mem)} MiB")
    if target is None or smoke:
        add(f"step_la_{key}", True, detail + " (information)")
    else:
        add(f"step_la_{key}", ms <= 1000 * target, detail + f" (target <= {1000 * target:.0f} ms)")
acdc = load("bench_acdc_default.json")
if acdc:
    add("step_acdc_default", True, f"ACDC {'x'.join(map(str, acdc['patch_size']))} batch {acdc['batch_size']} step {1000 * acdc['train_step_s']:.1f} ms, peak memory "
        f"{acdc.get('peak_memory_mib')} MiB, slices/s {acdc.get('slices_per_s')} (information)")
if la["default"] and "windows_per_s" in la["default"]:
    add("validation", True, f"LA sliding-window windows/s at sw_batch 1/4/8: {la['default']['windows_per_s']} (information)")
log = os.path.join(res, "loader_run", "LA_SSNet_4_labeled", "VNet", "log.txt")
if os.path.isfile(log):
    m = re.findall(r"training finished: (\{.*\})", open(log).read())
    if m:
        s = json.loads(m[-1])
        share = s["loader_wait_share"]
        add("loader", smoke or share <= 0.05, f"{s['iterations']} iterations of train_la.py: loader wait {s['loader_wait_s']} s "
            f"= {100 * share:.1f} % of {s['seconds']} s (<= 5 %)")
if la["bf16"] and "windows_per_s" in la["bf16"]:
    w = la["bf16"]["windows_per_s"]
    # one validation = 20 test volumes; each timed as the benchmark's volume (1.5x the patch in x/y,
    # patch + 2 strides in z: 168x168x88, larger than most cropped LA volumes, so the projection errs long)
    per_val = 20 * w["windows_per_volume"] / w["4"]
    minutes = (15000 * la["bf16"]["train_step_s"] + 66 * per_val) / 60
    add("full_run", smoke or minutes <= 25, f"full LA run in bf16 projected {minutes:.1f} min (15000 steps of "
        f"{1000 * la['bf16']['train_step_s']:.1f} ms + 66 validations of {per_val:.1f} s, each 20 volumes of "
        f"{'x'.join(map(str, w['volume']))}; target <= 25 min)")
env = {"python": platform.python_version()}
try:
    import torch
    env.update(torch=torch.__version__, cuda=torch.version.cuda,
               gpu=torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none (smoke)")
except Exception as err:  # noqa: BLE001
    env["torch"] = f"not importable: {err}"
print(f"gpu_check {datetime.datetime.now().isoformat(timespec='seconds')} on {env.get('gpu')}, torch "
      f"{env.get('torch')}, CUDA {env.get('cuda')}; {total} s")
for v in verdicts:
    print(f"{'PASS' if v['pass'] else 'FAIL'} {v['check']}: {v['detail']}")
failed = [v["check"] for v in verdicts if not v["pass"]]
print("result: " + ("every check passed" if not failed else "FAILED: " + ", ".join(failed)))
json.dump({"env": env, "seconds": total, "verdicts": verdicts}, open(os.path.join(res, "summary.json"), "w"), indent=2)
sys.exit(1 if failed else 0)
EOF
status=${PIPESTATUS[0]}
echo "[gpu_check] results in $RESULTS (summary.txt, summary.json, logs/)" >&2
exit "$status"
