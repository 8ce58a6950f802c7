"""scripts/gpu_check.sh and scripts/gpu_checks.py (issue 20) without a GPU: the smoke run of every
stage at toy sizes on the CPU, and the pieces that turn measurements into verdicts (profiler trace
analysis, the comparisons of the parity and resume checks, the targets and projections of the
summary) on made-up inputs with known answers."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

import benchmark
from engine.inference import sliding_window_starts

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "scripts"))
import gpu_checks  # noqa: E402

GPU_CHECK = os.path.join(REPO, "scripts", "gpu_check.sh")
#: every stage of the script, in order
STAGES = ("imports", "parity", "syncs", "synthetic_data", "resume", "step_la_fp32", "step_la_tf32", "step_la_bf16",
          "step_la_fast", "step_acdc", "loader", "profile", "compile")


# --------------------------------------------------------------------------- the smoke run
@pytest.mark.long(110)  # about 110 s on one core: every stage's Python launched
def test_smoke_run_passes_with_a_verdict_per_stage(tmp_path):
    """GPU_CHECK_SMOKE=1: every stage at toy sizes on the CPU, exit 0, one verdict line (at least)
    per stage in summary.txt, the derived checks, the stage times."""
    env = dict(os.environ, GPU_CHECK_SMOKE="1", PYTHON=sys.executable, OMP_NUM_THREADS="1")
    out = tmp_path / "gc"
    proc = subprocess.run(["bash", GPU_CHECK, str(out)], env=env, capture_output=True, text=True, timeout=400)
    summary = (out / "summary.txt").read_text() if (out / "summary.txt").exists() else ""
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    lines = summary.splitlines()
    for stage in STAGES:
        assert any(line.split(" ", 1)[0] in ("PASS", "INFO") and
                   (line.split(" ", 2)[1].rstrip(":") == stage or line.split(" ", 2)[1].startswith(stage + "_"))
                   for line in lines), (stage, summary)
    for derived in ("parity_tf32", "profile_default", "profile_fast", "full_run_default", "full_run_fast",
                    "validation_fp32"):
        assert any(line.startswith(("PASS " + derived, "INFO " + derived)) for line in lines), (derived, summary)
    assert "FAIL" not in summary and lines[-1] == "result: every check passed"
    times = next(line for line in lines if line.startswith("stage times: "))
    assert all(f"{stage} " in times for stage in STAGES)
    assert "(GPU_CHECK_SMOKE=1" in lines[0]
    data = json.loads((out / "summary.json").read_text())
    assert data["smoke"] and all(v["pass"] for v in data["verdicts"])
    # the smoke resume is bit-exact on the CPU; the profile analysed the real loop
    resume = next(v for v in data["verdicts"] if v["check"] == "resume")
    assert "bit-identical" in resume["detail"] and "RNG states identical" in resume["detail"]
    loop = json.loads((out / "profile_runs" / "profile_default.json").read_text())
    assert loop["iterations"] == 2 and loop["busy_share"] is None and loop["top_host_ops"]


# --------------------------------------------------------------------------- trace analysis
def _ev(cat, name, ts, dur, tid=1, **args):
    return {"ph": "X", "cat": cat, "name": name, "ts": float(ts), "dur": float(dur), "pid": 1, "tid": tid,
            "args": args}


def test_union_and_busy_share_count_overlaps_once():
    assert benchmark.union_us([(0, 10), (5, 15), (20, 30)], 0, 100) == 25
    assert benchmark.union_us([(0, 10), (5, 15)], 8, 12) == 4
    events = [_ev("kernel", "k1", 0, 10), _ev("kernel", "k2", 5, 10), _ev("gpu_memcpy", "Memcpy HtoD", 50, 10),
              _ev("cpu_op", "aten::add", 0, 100)]
    assert benchmark.busy_share(events, 0, 100) == pytest.approx(0.25)
    assert benchmark.busy_share(events, 10, 10) == 0.0


def test_self_times_subtract_nested_ops():
    events = [_ev("cpu_op", "aten::conv3d", 0, 100), _ev("cpu_op", "aten::convolution", 10, 80),
              _ev("cpu_op", "aten::mkldnn_convolution", 20, 60), _ev("cpu_op", "aten::add", 200, 5, tid=2)]
    t = benchmark.self_times(events)
    assert t["aten::conv3d"] == [20.0, 1] and t["aten::convolution"] == [20.0, 1]
    assert t["aten::mkldnn_convolution"] == [60.0, 1] and t["aten::add"] == [5.0, 1]


def _cuda_step(t0):
    """A CUDA-like trace of one benchmark step starting at t0: host ranges, launches and kernels
    (kernel k of phase p launched at the phase's start, running later on the device)."""
    ev = [_ev("user_annotation", benchmark.STEP_LABEL, t0, 1000),
          _ev("user_annotation", "Optimizer.zero_grad#SGD.zero_grad", t0 + 400, 10),
          _ev("user_annotation", "Optimizer.step#SGD.step", t0 + 800, 100)]
    for corr, (launch, start, dur) in enumerate([(t0 + 1, t0 + 5, 300), (t0 + 420, t0 + 420, 500),
                                                 (t0 + 810, t0 + 950, 40)]):
        cid = int(t0) + corr
        ev.append(_ev("cuda_runtime", "cudaLaunchKernel", launch, 2, correlation=cid))
        ev.append(_ev("kernel", f"kernel_{corr}", start, dur, tid=7, correlation=cid))
    ev.append(_ev("cuda_runtime", "cudaStreamSynchronize", t0 + 300, 50))
    ev.append(_ev("cpu_op", "aten::_local_scalar_dense", t0 + 295, 60))
    return ev


def test_step_phases_cut_at_the_optimizer_ranges_and_attribute_kernels_by_launch():
    steps = benchmark.step_phases(_cuda_step(0) + _cuda_step(10_000))
    assert len(steps) == 2
    p = steps[0]
    assert list(p) == list(benchmark.PHASES)
    assert p["method_step"]["host"] == pytest.approx(400e-6) and p["backward"]["host"] == pytest.approx(390e-6)
    assert p["optimizer"]["host"] == pytest.approx(100e-6) and p["after_step"]["host"] == pytest.approx(100e-6)
    # kernels go to the phase that launched them, whenever they ran
    assert p["method_step"]["device"] == pytest.approx(300e-6)
    assert p["backward"]["device"] == pytest.approx(500e-6)
    assert p["optimizer"]["device"] == pytest.approx(40e-6)


def test_loop_profile_measures_between_optimizer_steps():
    events = _cuda_step(0) + _cuda_step(1000)
    loop = benchmark.loop_profile(events)
    # window: end of the first optimiser step (900) to the end of the second (1900)
    assert loop["iterations"] == 1 and loop["iteration_s"] == pytest.approx(1000e-6)
    # device work inside [900, 1900]: k2 of step 0 (420-920: 20), k3 of step 0 (950-990: 40),
    # k1 of step 1 (1005-1305: 300), k2 of step 1 (1420-1920: 480)
    assert loop["busy_share"] == pytest.approx((20 + 40 + 300 + 480) / 1000)
    stalls = loop["host_stalls"]
    assert stalls["cudaStreamSynchronize"]["calls_per_iteration"] == 1
    assert stalls["aten::_local_scalar_dense"]["ms_per_iteration"] == pytest.approx(0.06)
    assert loop["top_kernels"][0]["name"].startswith("kernel_")
    with pytest.raises(ValueError, match="optimiser steps"):
        benchmark.loop_profile(_cuda_step(0))


def test_profile_training_on_the_cpu_gives_every_phase():
    calls = []
    model = torch.nn.Linear(8, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)

    def step():
        loss = model(torch.randn(16, 8)).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        calls.append(1)

    prof = benchmark.profile_training(step, 2, torch.device("cpu"), top=3)
    assert len(calls) == 2 and set(prof["phases"]) == set(benchmark.PHASES)
    assert all(v >= 0 for v in prof["phases"].values()) and prof["busy_share"] is None
    assert sum(prof["phases"].values()) <= prof["profiled_step_s"] * 1.01 and len(prof["top_ops"]) == 3


# --------------------------------------------------------------------------- comparisons
def test_relative_differences_and_identical():
    a = {"w": torch.tensor([1.0, -2.0]), "m": [None, torch.ones(2)], "n": 3}
    b = {"w": torch.tensor([1.0, -2.0 + 2e-4]), "m": [None, torch.ones(2)], "n": 3}
    err, where, exact = gpu_checks.relative_differences(a, b)
    assert err == pytest.approx(1e-4, rel=1e-3) and where == "/w" and not exact
    assert gpu_checks.relative_differences(a, a) == (0.0, "", True)
    assert gpu_checks.relative_differences(a, {**a, "w": torch.ones(3)})[0] == float("inf")
    assert gpu_checks.identical(a, {k: v for k, v in a.items()}) == (True, "")
    assert gpu_checks.identical(a, b) == (False, "/w")
    assert gpu_checks.identical({"r": (1, 2)}, {"r": (1, 3)}) == (False, "/r[1]")


def test_window_count_matches_the_sliding_window():
    for volume, patch, stride in (((168, 168, 88), (112, 112, 80), (18, 18, 4)),
                                  ((120, 120, 88), (112, 112, 80), (18, 18, 4)),
                                  ((100, 130, 70), (112, 112, 80), (18, 18, 4))):
        expected = 1
        for v, p, s in zip(volume, patch, stride):
            expected *= len(sliding_window_starts(max(v, p), p, s))
        assert gpu_checks.windows(volume, patch, stride) == expected
    assert gpu_checks.windows((168, 168, 88), (112, 112, 80), (18, 18, 4)) == 75


# --------------------------------------------------------------------------- summary
def _bench(step_ms, amp="none", windows_per_s=None):
    out = {"patch_size": [112, 112, 80], "batch_size": 4, "train_step_s": step_ms / 1000, "amp": amp, "tf32": False,
           "deterministic": 1, "channels_last": False, "peak_memory_mib": 9000.0, "finite": True,
           "phases": {"method_step": 0.05}, "schedule": {"max_iterations": 15000, "val_start": 2000,
                                                          "val_interval": 200, "validation_volumes": 20,
                                                          "stride_xy": 18, "stride_z": 4}}
    if windows_per_s:
        out["windows_per_s"] = {"4": windows_per_s, "volume": [168, 168, 88], "windows_per_volume": 75,
                                "strides": [18, 18, 4]}
    return out


def _results(tmp_path, fp32_ms, fast_ms, loader_share=0.01, windows_per_s=400.0):
    res = tmp_path / "res"
    (res / "loader_run" / "LA_SSNet_4_labeled" / "VNet").mkdir(parents=True)
    (res / "bench_la_fp32.json").write_text(json.dumps(_bench(fp32_ms, windows_per_s=windows_per_s)))
    (res / "bench_la_fast.json").write_text(json.dumps(_bench(fast_ms, "bf16", windows_per_s=2 * windows_per_s)))
    summary = {"iterations": 100, "seconds": 10.0, "loader_wait_s": 10.0 * loader_share,
               "loader_wait_share": loader_share}
    (res / "loader_run" / "LA_SSNet_4_labeled" / "VNet" / "log.txt").write_text(
        f"[00:00:00.000] training finished: {json.dumps(summary)}\n")
    (res / "verdicts.jsonl").write_text(json.dumps({"check": "imports", "pass": True, "detail": "all present"}) + "\n")
    (res / "stages.tsv").write_text("imports\t3\tok\nstep_la_fp32\t20\tok\nstep_la_fast\t20\tok\nloader\t25\tok\n"
                                    "compile\t0\tnot run\n")
    return res


def test_summary_applies_the_targets(tmp_path, capsys):
    res = _results(tmp_path, fp32_ms=100, fast_ms=45)
    assert gpu_checks.summarize(str(res), 300, smoke=False) == 1  # the stage not run fails
    out = capsys.readouterr().out
    assert "PASS step_la_fp32: LA 112x112x80 batch 4 SS-Net step 100.0 ms" in out and "(target <= 110 ms)" in out
    assert "PASS step_la_fast:" in out and "PASS loader:" in out and "1.00 % of 10.0 s" in out
    # default: 15000 x (100 ms + 1 ms wait) + 66 validations x 20 volumes x 75 windows / 400 windows/s
    minutes = (15000 * 0.101 + 66 * 20 * 75 / 400) / 60
    assert f"PASS full_run_default: default (fp32, TF32 off): projected {minutes:.1f} min" in out
    assert "FAIL compile: stage not run in 0 s" in out
    assert "stage times: imports 3 s, step_la_fp32 20 s, step_la_fast 20 s, loader 25 s, compile 0 s (not run)" in out
    assert out.strip().splitlines()[-1] == "result: FAILED: compile"
    data = json.loads((res / "summary.json").read_text())
    assert [v["check"] for v in data["verdicts"]][:2] == ["imports", "step_la_fp32"]


def test_summary_fails_slow_steps_and_long_runs_but_not_in_smoke_runs(tmp_path, capsys):
    res = _results(tmp_path, fp32_ms=130, fast_ms=55, loader_share=0.05, windows_per_s=20.0)
    (res / "stages.tsv").write_text("step_la_fp32\t20\tok\n")
    assert gpu_checks.summarize(str(res), 300, smoke=False) == 1
    out = capsys.readouterr().out
    for name in ("step_la_fp32", "step_la_fast", "loader", "full_run_default", "full_run_fast"):
        assert f"FAIL {name}:" in out, name
    assert gpu_checks.summarize(str(res), 300, smoke=True) == 0
    out = capsys.readouterr().out
    assert "FAIL" not in out and "INFO step_la_fp32:" in out and "not applied: smoke" in out


def test_summary_fails_a_diverged_step(tmp_path, capsys):
    res = _results(tmp_path, fp32_ms=100, fast_ms=45)
    bench = json.loads((res / "bench_la_fast.json").read_text())
    bench["finite"] = False
    (res / "bench_la_fast.json").write_text(json.dumps(bench))
    assert gpu_checks.summarize(str(res), 300, smoke=False) == 1
    assert "FAIL step_la_fast:" in capsys.readouterr().out


def test_summary_survives_a_malformed_stage_output(tmp_path, capsys):
    res = _results(tmp_path, fp32_ms=100, fast_ms=45)
    (res / "bench_la_fp32.json").write_text(json.dumps({"patch_size": [1, 1, 1]}))
    assert gpu_checks.summarize(str(res), 300, smoke=False) == 1
    assert "FAIL summary: cannot read the stage outputs: KeyError" in capsys.readouterr().out


# --------------------------------------------------------------------------- resume verdict
def _last(root, weights, rng=1, iter_num=10):
    snap = root / "LA_SSNet_8_labeled" / "VNet"
    snap.mkdir(parents=True)
    state = {"iter_num": iter_num, "model": {"w": weights}, "optimizer": {"state": {0: {"momentum_buffer": weights}}},
             "method": {"memory": [None, weights[:2].clone()]}, "rng": {"torch": torch.tensor([rng])},
             "loader": {"taken": 1}}
    torch.save(state, snap / "last.pth")


@pytest.mark.parametrize("bitwise, difference, rng, ok", [
    (True, 0.0, 1, True),       # level 1 deterministic here: bit-identical required and found
    (True, 1e-7, 1, False),     # ... a last-bit difference fails
    (False, 1e-5, 1, True),     # atomics: within 1e-3 of the scale passes
    (False, 1e-2, 1, False),    # ... a real difference does not
    (False, 0.0, 2, False),     # an RNG state that differs always fails
])
def test_resume_verdict_follows_what_level_1_guarantees(tmp_path, monkeypatch, bitwise, difference, rng, ok):
    probe = {"bitwise": bitwise, "max_difference": 0.0 if bitwise else 3e-7, "where": "/weights/w",
             "nondeterministic_ops": [] if bitwise else ["index_add_cuda_"]}
    monkeypatch.setattr(gpu_checks, "determinism_probe", lambda *a, **k: probe)
    w = torch.linspace(-1, 1, 8)
    _last(tmp_path / "a", w)
    _last(tmp_path / "b", w + difference, rng=rng)
    v = gpu_checks.check_resume([str(tmp_path / "a"), str(tmp_path / "b")], "cpu", (16, 16, 16), 4, 2, 8, [])
    assert v["pass"] is ok, v["detail"]
    assert ("bit-reproducible here" if bitwise else "NOT bit-reproducible") in v["detail"]


def test_nondeterministic_operator_names():
    message = "upsample_trilinear3d_backward_out_cuda does not have a deterministic implementation, but you set ..."
    assert gpu_checks._nondeterministic_op(message) == "upsample_trilinear3d_backward_out_cuda"
    assert "cuBLAS" in gpu_checks._nondeterministic_op("... not deterministic because it uses CuBLAS and you have ...")
