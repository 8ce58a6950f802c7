"""--method reaches test_la.py / test_acdc.py; train_la.sh / train_acdc.sh list and schedule every
row of Tables 1-3; summarize.py maps the baselines' runs to the paper's rows."""
from __future__ import annotations
import csv
import importlib
import json
import os
import stat
import subprocess

import h5py
import numpy as np
import pytest
import torch

from methods import get_method

test_la = importlib.import_module("test_la")
test_acdc = importlib.import_module("test_acdc")
summarize = importlib.import_module("summarize")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAPER = os.path.join(ROOT, "data", "paper_tables.csv")
BASELINES = ["uamt", "sassnet", "dtc", "urpc", "mcnet"]

#: per method: the head whose output is tested, and the other heads (set to predict foreground everywhere)
TESTED_HEAD = {
    ("uamt", "LA"): ("decoder.out_conv", []),
    ("sassnet", "LA"): ("decoder.out_conv", []),
    ("dtc", "LA"): ("decoder.out_conv", []),
    ("urpc", "LA"): ("dsv1", ["dsv2.dsv.0", "dsv3.dsv.0", "dsv4.dsv.0"]),
    ("mcnet", "LA"): ("decoder1.out_conv", ["decoder2.out_conv"]),
    ("uamt", "ACDC"): ("decoder.out_conv", []),
    ("sassnet", "ACDC"): ("decoder.out_conv", []),
    ("dtc", "ACDC"): ("decoder.out_conv", []),
    ("urpc", "ACDC"): ("decoder.out_conv", ["decoder.out_conv_dp1", "decoder.out_conv_dp2", "decoder.out_conv_dp3"]),
    ("mcnet", "ACDC"): ("decoder1.out_conv", ["decoder2.out_conv"]),
}


def _write_la(root, cases=("CASE_A", "CASE_B")):
    rng = np.random.default_rng(0)
    for case in cases:
        folder = root / "2018LA_Seg_Training Set" / case
        folder.mkdir(parents=True)
        label = np.zeros((40, 36, 20), np.uint8)
        label[10:28, 8:26, 4:15] = 1
        with h5py.File(folder / "mri_norm2.h5", "w") as f:
            f["image"] = (rng.normal(size=label.shape) + 2 * label).astype(np.float32)
            f["label"] = label
    (root / "test.list").write_text("\n".join(cases) + "\n")


def _write_acdc(root, cases=("patient002_frame01", "patient001_frame02")):
    rng = np.random.default_rng(1)
    (root / "data").mkdir(parents=True)
    for case in cases:
        label = np.zeros((2, 40, 48), np.uint8)
        label[:, 8:20, 8:20] = 1
        label[:, 20:30, 10:30] = 2
        with h5py.File(root / "data" / f"{case}.h5", "w") as f:
            f["image"] = (rng.random(label.shape) * 0.2 + label / 4).astype(np.float32)
            f["label"] = label
    (root / "test.list").write_text("\n".join(cases) + "\n")


def _checkpoint(method, dataset, classes):
    """Weights whose tested head predicts background everywhere and whose other heads predict foreground."""
    torch.manual_seed(0)
    model = get_method(method).build_model(dataset, classes, "train", "cpu")
    state = model.state_dict()
    tested, others = TESTED_HEAD[(method, dataset)]
    background = torch.full((classes,), -10.0)
    background[0] = 10.0
    state[f"{tested}.weight"].zero_()
    state[f"{tested}.bias"].copy_(background)
    for head in others:
        state[f"{head}.weight"].zero_()
        state[f"{head}.bias"].copy_(-background)
    return state


@pytest.mark.parametrize("method", BASELINES)
def test_la_method_flag_picks_the_network_and_the_tested_output(tmp_path, method):
    data = tmp_path / "LA"
    _write_la(data)
    name = get_method(method).name
    ckpt = tmp_path / "model" / f"LA_{name}_4_labeled" / "VNet" / "VNet_best_model.pth"
    ckpt.parent.mkdir(parents=True)
    torch.save(_checkpoint(method, "LA", 2), ckpt)
    summary = test_la.main([  # default --exp: the method's name
        "--root_path", str(data), "--model_root", str(tmp_path / "model"), "--method", method, "--labelnum", "4",
        "--patch_size", "32", "32", "16", "--stride_xy", "16", "--stride_z", "8", "--device", "cpu",
        "--save_nii", "0",
    ])
    assert summary["method"] == method and summary["exp"] == name
    assert summary["empty_predictions"] == 2  # the tested head says background; the others would not
    assert (ckpt.parent / "test" / "performance.json").is_file()


@pytest.mark.parametrize("method", BASELINES)
def test_acdc_method_flag_picks_the_network_and_the_tested_output(tmp_path, method):
    data = tmp_path / "ACDC"
    _write_acdc(data)
    ckpt = tmp_path / "w" / "unet_best_model.pth"
    ckpt.parent.mkdir()
    torch.save(_checkpoint(method, "ACDC", 4), ckpt)
    summary = test_acdc.main(["--root_path", str(data), "--ckpt", str(ckpt), "--method", method,
                              "--patch_size", "32", "32", "--device", "cpu", "--save_nii", "0"])
    assert summary["method"] == method
    assert summary["empty_predictions"] == 2 * 3  # every volume-class pair: background predicted everywhere


def test_wrong_method_for_a_checkpoint_fails_clearly(tmp_path):
    data = tmp_path / "ACDC"
    _write_acdc(data)
    ckpt = tmp_path / "w" / "unet_best_model.pth"
    ckpt.parent.mkdir()
    torch.save(_checkpoint("mcnet", "ACDC", 4), ckpt)
    with pytest.raises(Exception, match="decoder1"):
        test_acdc.main(["--root_path", str(data), "--ckpt", str(ckpt), "--method", "dtc", "--device", "cpu"])


# ----------------------------------------------------------------------------- shell scripts


def _paper_rows(tables):
    with open(PAPER, newline="") as f:
        return {(r["table"], r["method"], int(r["labeled"])) for r in csv.DictReader(f) if r["table"] in tables}


def _runs(script, *args, env=None):
    out = subprocess.run(["bash", os.path.join(ROOT, script), *args], capture_output=True, text=True, check=True,
                         env=env)
    return [line for line in out.stdout.splitlines() if line and not line.startswith("#")]


def _flag(words, flag):
    return words[words.index(flag) + 1] if flag in words else None


@pytest.mark.parametrize("script,tables", [("train_la.sh", ("1", "3")), ("train_acdc.sh", ("2",))])
def test_scripts_cover_every_row_of_the_tables(tmp_path, script, tables):
    env = dict(os.environ, MODEL_ROOT=str(tmp_path / "model"))
    lines = _runs(script, "--dry-run", env=env)
    covered = set()
    for line in lines:
        train, test = line.split(" && ")
        t, s = train.split(), test.split()
        exp, n, method = _flag(t, "--exp"), int(_flag(t, "--labelnum")), _flag(t, "--method")
        assert _flag(s, "--exp") == exp and int(_flag(s, "--labelnum")) == n and _flag(s, "--method") == method
        if script == "train_la.sh":
            assert _flag(s, "--nms") == "1"  # LA: largest connected component for every method
        if method is not None:
            assert exp == get_method(method).name
        for table, paper_name in summarize.EXP_TO_PAPER[exp].items():
            if table in tables:
                covered.add((table, paper_name, n))
    assert _paper_rows(tables) <= covered, sorted(_paper_rows(tables) - covered)
    assert len(lines) == len(set(lines))


def test_print_gives_one_self_contained_line_per_run(tmp_path):
    env = dict(os.environ, MODEL_ROOT=str(tmp_path / "model"))
    lines = _runs("train_acdc.sh", "--print", env=env)
    assert len(lines) == 15
    for line in lines:
        assert line.startswith("cd ") and "--gpu" not in line and "code/train_acdc.py" in line


@pytest.mark.parametrize("form", [["--seeds", "1337,1338"], ["--seeds=1337,1338"]])
def test_seeds_list_every_run_once_per_seed_in_its_own_folder(tmp_path, form):
    env = dict(os.environ, MODEL_ROOT=str(tmp_path / "model"))
    one = _runs("train_la.sh", "--dry-run", env=env)
    two = _runs("train_la.sh", "--dry-run", *form, env=env)
    assert len(two) == 2 * len(one)
    runs = {}
    for line in two:
        train, test = line.split(" && ")
        t, s = train.split(), test.split()
        assert _flag(s, "--exp") == _flag(t, "--exp") and _flag(s, "--which") == "both"
        runs[(_flag(t, "--exp"), _flag(t, "--labelnum"))] = int(_flag(t, "--seed"))
    assert len(runs) == len(two)  # every (folder, labels) pair is distinct
    for (exp, n), seed in runs.items():
        if seed == 1337:
            assert "_seed" not in exp and (exp + "_seed1338", n) in runs  # the released folder name
        else:
            assert seed == 1338 and exp.endswith("_seed1338")
    printed = _runs("train_acdc.sh", "--print", "--seeds", "1,2,3", env=env)
    assert len(printed) == 3 * 15 and sum("--exp SSNet_seed2 " in line for line in printed) == 2


def test_bad_arguments_are_refused():
    for args in (["zero"], ["--fast"], ["--seeds"], ["--seeds", "1,a"], ["--seeds", "5,5"]):
        out = subprocess.run(["bash", os.path.join(ROOT, "train_la.sh"), *args], capture_output=True, text=True)
        assert out.returncode == 2 and "train_la.sh" in out.stderr


def _fake_python(tmp_path, fail_exp=""):
    """A stand-in for python that logs each training run's GPU (its CUDA_VISIBLE_DEVICES; it fails on
    --gpu, without --device cuda or without OMP_NUM_THREADS) and time span and writes test results."""
    path = tmp_path / "fakepython"
    path.write_text(f"""#!/usr/bin/env bash
script=$1; shift
args=("$@"); root=""; exp=""; n=""; gpu="$CUDA_VISIBLE_DEVICES"; device=""
for ((i = 0; i < ${{#args[@]}}; i++)); do
  case "${{args[i]}}" in
    --model_root) root=${{args[i+1]}} ;; --exp) exp=${{args[i+1]}} ;;
    --labelnum) n=${{args[i+1]}} ;; --gpu) exit 4 ;; --device) device=${{args[i+1]}} ;;
  esac
done
[ "$device" = cuda ] && [ -n "$gpu" ] && [ "$OMP_NUM_THREADS" -ge 1 ] || exit 5
case "$script" in
  code/train_la.py)
    [ "$exp" = "{fail_exp}" ] && exit 3
    echo "start $gpu $exp $n $(date +%s.%N)" >> "$root/trace"; sleep 0.15
    echo "end $gpu $exp $n $(date +%s.%N)" >> "$root/trace" ;;
  code/test_la.py)
    mkdir -p "$root/LA_${{exp}}_${{n}}_labeled/VNet/test"
    echo ok > "$root/LA_${{exp}}_${{n}}_labeled/VNet/test/performance.txt" ;;
esac
""")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(path)


def test_runs_are_scheduled_one_per_gpu_side_by_side(tmp_path):
    model_root = tmp_path / "model"
    model_root.mkdir()
    env = dict(os.environ, MODEL_ROOT=str(model_root), PYTHON=_fake_python(tmp_path, fail_exp="DTC"))
    out = subprocess.run(["bash", os.path.join(ROOT, "train_la.sh"), "3", "5"], capture_output=True, text=True,
                         env=env, timeout=120)
    assert out.returncode == 1  # the two DTC runs failed ...
    assert "not finished: LA DTC 4 labeled" in out.stderr
    done = sorted(p.parent.parent.parent.name for p in model_root.glob("*/VNet/test/performance.txt"))
    assert len(done) == 19 and not any("DTC" in d for d in done)  # ... the 19 others all ran
    events = [line.split() for line in (model_root / "trace").read_text().splitlines()]
    spans = {}
    for kind, gpu, exp, n, t in events:
        spans.setdefault((exp, n), {})[kind] = (gpu, float(t))
    assert {s["start"][0] for s in spans.values()} == {"3", "5"}
    for gpu in ("3", "5"):  # never two runs at once on one GPU
        mine = sorted((s["start"][1], s["end"][1]) for s in spans.values() if s["start"][0] == gpu)
        assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(mine, mine[1:]))
    starts = sorted(s["start"][1] for s in spans.values())
    ends = sorted(s["end"][1] for s in spans.values())
    assert starts[1] < ends[0]  # two runs did overlap: side by side
    # a second call skips everything already done
    again = subprocess.run(["bash", os.path.join(ROOT, "train_la.sh"), "3", "--dry-run"], capture_output=True,
                           text=True, env=env)
    assert again.stdout.count("code/train_la.py") == 2 and again.stderr.count("skip") == 19


def test_summarize_maps_baseline_runs_to_the_paper_rows(tmp_path):
    for exp, n, dice in (("MCNet", 4, 0.8), ("URPC", 7, 0.7)):
        dataset = "LA" if exp == "MCNet" else "ACDC"
        folder = tmp_path / f"{dataset}_{exp}_{n}_labeled" / ("VNet" if dataset == "LA" else "unet") / "test"
        folder.mkdir(parents=True)
        (folder / "performance.json").write_text(json.dumps(
            {"mean": {"dice": dice, "jaccard": 0.5, "hd95": 3.0, "asd": 1.0}}))
    text = summarize.main(["--model_root", str(tmp_path)])
    assert "| MC-Net | 4 | 80.00 | 83.59 |" in text
    assert "| URPC | 7 | 70.00 | 83.10 |" in text


def test_slurm_writes_one_array_task_per_pending_run(tmp_path):
    model_root = tmp_path / "model"
    env = dict(os.environ, MODEL_ROOT=str(model_root), PYTHON=_fake_python(tmp_path))
    pending = _runs("train_la.sh", "--dry-run", "--seeds", "1337,7", env=env)
    subprocess.run(["bash", os.path.join(ROOT, "train_la.sh"), "--slurm", "--seeds", "1337,7"], check=True, env=env,
                   capture_output=True, text=True)
    script = model_root / "LA_runs.sbatch"
    text = script.read_text()
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    assert f"#SBATCH --array=0-{len(pending) - 1}" in text and "#SBATCH --gres=gpu:1" in text
    tasks = [line for line in text.splitlines() if line.strip()[:1].isdigit() and ") mkdir -p " in line]
    assert len(tasks) == len(pending) == 42  # 21 rows x 2 seeds
    assert sum("--exp SSNet_seed7 " in t for t in tasks) == 2 and all("run.log" in t for t in tasks)
    # one task as SLURM runs it (SLURM sets CUDA_VISIBLE_DEVICES to the task's GPU)
    run = subprocess.run(["bash", str(script)], env=dict(env, SLURM_ARRAY_TASK_ID="1", CUDA_VISIBLE_DEVICES="0"),
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert (model_root / "LA_SSNet_seed7_4_labeled" / "VNet" / "test" / "performance.txt").is_file()
    assert (model_root / "LA_SSNet_seed7_4_labeled" / "run.log").is_file()
    bad = subprocess.run(["bash", str(script)], env=dict(env, SLURM_ARRAY_TASK_ID="99"), capture_output=True, text=True)
    assert bad.returncode == 2 and "no run for array task 99" in bad.stderr
