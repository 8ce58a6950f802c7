"""Time SS-Net's real training iteration and the test-time sliding window.

    python code/benchmark.py --setting la --patch_size 64 64 48 --batch_size 4 --labeled_bs 2 \\
        --iters 5 --device cpu --json out.json

The training iteration is :func:`engine.trainer.train_step` with the method that
``train_la.py`` / ``train_acdc.py`` build from the same flags (same code path),
fed synthetic tensors of the setting's shape. The step time is the host clock
between two device syncs, ONE per iteration (at its end, nothing inside the
step); the median of ``--iters`` iterations after ``--warmup`` is reported.
Nothing in the timed code is replaced or wrapped.

The phases (the method's losses: forward passes, separation, VAT; zero_grad;
backward; optimiser step; after-step work) come from ``torch.profiler`` over
``--profile_iters`` further iterations, cut at the ranges torch.optim records
itself (``Optimizer.zero_grad#...``, ``Optimizer.step#...``), with the top
operators (CPU: self time) or kernels (CUDA: device time, each phase's
kernels found by the time their launch was made). Under the profiler a step
runs a little slower; its phases are shares of that profiled step, not of the
median above.

Then the sliding window of ``test_la.py`` (LA) or the slice-wise inference of
``test_acdc.py`` (ACDC) is timed at each ``--sw_batch``, and the data-loader
wait per iteration of the real training loop (loader, sampler, workers and
transforms on synthetic files, real training steps in between) for both
``--loader`` kinds: the released re-created DataLoader and the default loader
that keeps its workers.

``--amp bf16`` times both under bfloat16 autocast (training flag ``--amp``).
The other training flags go after ``--``: the default is the path users run
(``--deterministic 1``, ``--tf32 0``, so ``--channels_last auto`` is off,
fp32); the fast options are e.g. ``-- --tf32 1``, ``-- --deterministic 0``
(cudnn.benchmark) and ``--amp bf16 -- --deterministic 0 --channels_last on``.
Inference is warmed up on the same volume it is timed on.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from typing import Any, Callable

import numpy as np
import torch

import train_acdc
import train_la
from methods import get_method
from networks.net_factory import resolve_device
from engine.host_memory import keep_freed_host_memory
from engine.inference import test_single_case, test_single_volume_2d
from engine.inference import AMP_MODES
from engine.run import seed_everything
from engine.speed import setup_speed
from engine.trainer import make_optimizer, train_step

#: --setting -> the training script whose flags, loader and method are timed
SETTINGS = {"la": train_la, "acdc": train_acdc}


def setting(name: str):
    """(training script module, its dataset description, C) of ``--setting name``."""
    module = SETTINGS[name]
    return module, module.DATASET, module.DATASET.num_classes


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA); nothing on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def synthetic_batch(dataset: str, batch: int, patch: list[int], num_classes: int, device: torch.device):
    """Images with a bright blob whose voxels are labeled foreground (so the
    separation loss has correct predictions to work with after a few steps)."""
    g = torch.Generator().manual_seed(0)
    image = torch.randn((batch, 1, *patch), generator=g)
    grids = torch.meshgrid(*[torch.linspace(-1, 1, s) for s in patch], indexing="ij")
    r2 = sum(x ** 2 for x in grids)
    label = torch.zeros((batch, *patch), dtype=torch.long)
    for c in range(1, num_classes):
        label[:, (r2 < (0.6 / c) ** 2)] = c
    image += label[:, None].float()
    return image.to(device), label.to(device)


# --------------------------------------------------------------------------- torch.profiler traces
#: the range benchmark.py puts around each profiled training step (its own code, not the library's)
STEP_LABEL = "benchmark.train_step"
#: ranges torch.optim records itself: ``Optimizer.zero_grad#SGD.zero_grad``, ``Optimizer.step#SGD.step``
ZERO_GRAD_PREFIX = "Optimizer.zero_grad#"
OPT_STEP_PREFIX = "Optimizer.step#"
#: runtime calls in which the host waits for the device
SYNC_CALLS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize", "cudaMemcpy",
              "cuStreamSynchronize", "cuCtxSynchronize", "cuEventSynchronize")
#: host-side operators that read a device value (each a synchronisation on CUDA)
READ_OPS = ("aten::_local_scalar_dense", "aten::nonzero", "aten::item")
#: trace categories of work on the device
DEVICE_CATEGORIES = ("kernel", "gpu_memcpy", "gpu_memset")
#: phases of one train_step, between the optimiser's own ranges (see :func:`step_phases`)
PHASES = ("method_step", "zero_grad", "backward", "optimizer", "after_step")


def profile_trace(run: Callable[[], None], iterations: int, device: torch.device,
                  trace_path: str | None = None) -> list[dict[str, Any]]:
    """Run ``run()`` ``iterations`` times under ``torch.profiler`` (CPU, and CUDA on a CUDA device;
    no shapes, stacks or memory, to keep the overhead low) and return the complete events
    (``ph == "X"``) of its Chrome trace, also written to ``trace_path`` if given (open it in
    Perfetto or chrome://tracing)."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(iterations):
            run()
    with tempfile.TemporaryDirectory() as tmp:
        path = trace_path or os.path.join(tmp, "trace.json")
        prof.export_chrome_trace(path)
        with open(path) as f:
            data = json.load(f)
    events = []
    for e in data.get("traceEvents", []):
        if e.get("ph") == "X" and "dur" in e and "ts" in e:
            e["ts"], e["dur"] = float(e["ts"]), float(e["dur"])
            events.append(e)
    return events


def annotations(events: list[dict[str, Any]], prefix: str) -> list[dict[str, Any]]:
    """Host-side ``record_function`` ranges whose name starts with ``prefix``, in time order."""
    return sorted((e for e in events if e.get("cat") == "user_annotation" and e["name"].startswith(prefix)),
                  key=lambda e: e["ts"])


def _end(e: dict[str, Any]) -> float:
    return e["ts"] + e["dur"]


def union_us(intervals: list[tuple[float, float]], lo: float, hi: float) -> float:
    """Length of the union of ``intervals`` clipped to ``[lo, hi]`` (overlapping kernels count once)."""
    total, cur_lo, cur_hi = 0.0, None, None
    for a, b in sorted((max(a, lo), min(b, hi)) for a, b in intervals if b > lo and a < hi):
        if cur_hi is None or a > cur_hi:
            if cur_hi is not None:
                total += cur_hi - cur_lo
            cur_lo, cur_hi = a, b
        else:
            cur_hi = max(cur_hi, b)
    if cur_hi is not None:
        total += cur_hi - cur_lo
    return total


def device_work(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Kernels, device copies and memsets of the trace."""
    return [e for e in events if e.get("cat") in DEVICE_CATEGORIES]


def launch_times(events: list[dict[str, Any]]) -> dict[Any, float]:
    """Correlation id -> host time of the runtime/driver call that launched it (cudaLaunchKernel,
    cuLaunchKernel for compiled kernels, cudaMemcpyAsync, ...)."""
    out = {}
    for e in events:
        if e.get("cat") in ("cuda_runtime", "cuda_driver"):
            corr = e.get("args", {}).get("correlation")
            if corr is not None:
                out[corr] = e["ts"]
    return out


def busy_share(events: list[dict[str, Any]], lo: float, hi: float) -> float:
    """Share of ``[lo, hi]`` (µs) in which the device runs at least one kernel, copy or memset."""
    if hi <= lo:
        return 0.0
    return union_us([(e["ts"], _end(e)) for e in device_work(events)], lo, hi) / (hi - lo)


def self_times(events: list[dict[str, Any]], lo: float = float("-inf"),
               hi: float = float("inf")) -> dict[str, list[float]]:
    """Operator name -> [self host time µs, calls] of the ``cpu_op`` events starting in ``[lo, hi]``;
    self time = the op's duration less that of the ops nested directly in it (same thread)."""
    by_thread: dict[Any, list[dict[str, Any]]] = {}
    for e in events:
        if e.get("cat") == "cpu_op" and lo <= e["ts"] <= hi:
            by_thread.setdefault((e.get("pid"), e.get("tid")), []).append(e)
    out: dict[str, list[float]] = {}

    def finish(entry: list[Any]) -> None:
        slot = out.setdefault(entry[1], [0.0, 0])
        slot[0] += max(entry[2], 0.0)
        slot[1] += 1

    for evs in by_thread.values():
        evs.sort(key=lambda e: (e["ts"], -e["dur"]))
        stack: list[list[Any]] = []  # [end, name, self time]
        for e in evs:
            while stack and stack[-1][0] <= e["ts"] + 1e-3:
                finish(stack.pop())
            if stack:
                stack[-1][2] -= e["dur"]
            stack.append([_end(e), e["name"], e["dur"]])
        while stack:
            finish(stack.pop())
    return out


def top_ops(events: list[dict[str, Any]], lo: float, hi: float, iterations: int, n: int = 10,
            device: bool = False) -> list[dict[str, Any]]:
    """The ``n`` largest entries per iteration in ``[lo, hi]``: device kernels/copies by total
    device time (``device=True``) or host operators by self time."""
    if device:
        totals: dict[str, list[float]] = {}
        for e in device_work(events):
            if lo <= e["ts"] <= hi:
                slot = totals.setdefault(e["name"], [0.0, 0])
                slot[0] += e["dur"]
                slot[1] += 1
    else:
        totals = self_times(events, lo, hi)
    grand = sum(v[0] for v in totals.values()) or 1.0
    rows = sorted(totals.items(), key=lambda kv: -kv[1][0])[:n]
    return [{"name": name[:120], "ms_per_iteration": us / 1000 / max(iterations, 1),
             "calls_per_iteration": calls / max(iterations, 1), "share": us / grand} for name, (us, calls) in rows]


def host_stalls(events: list[dict[str, Any]], lo: float, hi: float, iterations: int) -> dict[str, dict[str, float]]:
    """Per iteration in ``[lo, hi]``: calls and host time of each runtime call that waits for the
    device (:data:`SYNC_CALLS`), of ``cudaMemcpyAsync`` (it waits when the host memory is pageable),
    and the calls of the operators that read a device value (:data:`READ_OPS`)."""
    out: dict[str, dict[str, float]] = {}
    it = max(iterations, 1)
    for e in events:
        if not lo <= e["ts"] <= hi:
            continue
        name = e["name"]
        if (e.get("cat") in ("cuda_runtime", "cuda_driver") and (name in SYNC_CALLS or name == "cudaMemcpyAsync")) \
                or (e.get("cat") == "cpu_op" and name in READ_OPS):
            slot = out.setdefault(name, {"calls_per_iteration": 0.0, "ms_per_iteration": 0.0})
            slot["calls_per_iteration"] += 1 / it
            slot["ms_per_iteration"] += e["dur"] / 1000 / it
    return out


def step_phases(events: list[dict[str, Any]]) -> list[dict[str, dict[str, float]]]:
    """For each :data:`STEP_LABEL` range: the phases of :func:`engine.trainer.train_step`, cut at
    the ranges torch.optim records itself (no hook in the training code): ``method_step`` (the
    method's forward passes, separation, VAT with its direction pass, losses: everything before
    ``optimizer.zero_grad``), ``zero_grad``, ``backward`` (``loss.backward()``, up to
    ``optimizer.step``), ``optimizer`` and ``after_step``. Per phase ``host`` = seconds of host time
    (on the CPU the phase's cost; on CUDA only its launch time) and ``device`` = seconds of the
    kernels launched in it (CUDA traces; 0 on the CPU). A step without the optimiser's ranges is
    one phase ``step``."""
    launches = launch_times(events)
    work = device_work(events)
    zero_grads, opt_steps = annotations(events, ZERO_GRAD_PREFIX), annotations(events, OPT_STEP_PREFIX)
    out = []
    for step in annotations(events, STEP_LABEL):
        s, e = step["ts"], _end(step)
        z = next((a for a in zero_grads if s <= a["ts"] <= e), None)
        o = next((a for a in opt_steps if s <= a["ts"] <= e), None)
        if z is None or o is None:
            cuts = [("step", s, e)]
        else:
            cuts = [("method_step", s, z["ts"]), ("zero_grad", z["ts"], _end(z)), ("backward", _end(z), o["ts"]),
                    ("optimizer", o["ts"], _end(o)), ("after_step", _end(o), e)]
        phases = {name: {"host": max(b - a, 0.0) / 1e6, "device": 0.0} for name, a, b in cuts}
        for k in work:
            t = launches.get(k.get("args", {}).get("correlation"))
            if t is None:
                continue
            for name, a, b in cuts:
                if a <= t < b or (name == cuts[-1][0] and t == b):
                    phases[name]["device"] += k["dur"] / 1e6
                    break
        out.append(phases)
    return out


def loop_profile(events: list[dict[str, Any]], top: int = 10) -> dict[str, Any]:
    """A training loop's trace, between the end of its first and of its last optimiser step (so
    whole iterations: loader wait, step, logging): iterations, host time per iteration, device busy
    share, device time per iteration, top kernels (CUDA) and top host operators, host stalls."""
    marks = [_end(a) for a in annotations(events, OPT_STEP_PREFIX)]
    if len(marks) < 2:
        raise ValueError(f"the trace holds {len(marks)} optimiser steps; at least 2 are needed")
    lo, hi, n = marks[0], marks[-1], len(marks) - 1
    work = [e for e in device_work(events) if lo <= e["ts"] <= hi]
    has_device = bool(device_work(events))
    return {"iterations": n, "iteration_s": (hi - lo) / 1e6 / n,
            "busy_share": busy_share(events, lo, hi) if has_device else None,
            "device_s_per_iteration": union_us([(e["ts"], _end(e)) for e in work], lo, hi) / 1e6 / n,
            "top_kernels": top_ops(events, lo, hi, n, top, device=True) if has_device else [],
            "top_host_ops": top_ops(events, lo, hi, n, top),
            "host_stalls": host_stalls(events, lo, hi, n)}


def profile_training(step: Callable[[], Any], iterations: int, device: torch.device, top: int = 10,
                     trace_path: str | None = None) -> dict[str, Any]:
    """Phases and top operators of ``iterations`` training steps under ``torch.profiler``: each step
    in a :data:`STEP_LABEL` range, one device sync after it (outside the range)."""
    from torch.profiler import record_function

    def run() -> None:
        with record_function(STEP_LABEL):
            step()
        sync(device)

    events = profile_trace(run, iterations, device, trace_path)
    steps = step_phases(events)
    ranges = annotations(events, STEP_LABEL)
    lo, hi = ranges[0]["ts"], _end(ranges[-1])
    cuda = device.type == "cuda"
    key = "device" if cuda else "host"
    phases = {name: statistics.median(p[name][key] for p in steps) for name in steps[0]}
    return {"iterations": iterations, "clock": "device (kernels by launching phase)" if cuda else "host",
            "phases": phases,
            "phases_host": {name: statistics.median(p[name]["host"] for p in steps) for name in steps[0]},
            "profiled_step_s": statistics.median(_end(r) - r["ts"] for r in ranges) / 1e6,
            "top_ops": top_ops(events, lo, hi, iterations, top, device=cuda),
            "host_stalls": host_stalls(events, lo, hi, iterations),
            "busy_share": busy_share(events, lo, hi) if cuda else None}


def time_training(args: argparse.Namespace, device: torch.device) -> dict[str, object]:
    """The training step of the setting: ``--warmup`` untimed steps, ``--iters`` timed ones (host
    clock, ONE device sync per iteration, at its end, so the time between two syncs is one whole
    step), then ``--profile_iters`` more under ``torch.profiler`` for the phases and top ops."""
    module, dataset, num_classes = setting(args.setting)
    targs = module.parse_args(["--device", str(device), "--batch_size", str(args.batch_size), "--labeled_bs",
                               str(args.labeled_bs), "--patch_size", *map(str, args.patch_size),
                               "--amp", args.amp] + args.train_flags)
    args.amp = targs.amp  # a --amp among the training flags wins; inference uses the same (benchmark's own flags)
    seed_everything(targs.seed, targs.deterministic)  # what a run with these flags uses (default 1)
    method = get_method(targs.method).from_config(targs, dataset, num_classes, device)
    speed = setup_speed(method.model, device, **targs.speed())
    optimizer = make_optimizer(method.model, targs.base_lr)
    image, label = synthetic_batch(dataset, args.batch_size, args.patch_size, num_classes, device)

    losses: list[torch.Tensor] = []

    def step() -> None:
        # iter_num past the ramp-up so every loss term has its full weight
        out = train_step(method, optimizer, image, label, 10 ** 6, amp=speed.amp, channels_last=speed.channels_last,
                         zero_grad=targs.zero_grad)
        losses.append(out["loss"].detach())  # kept on the device, read once after the timing

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(args.warmup):
        step()
    sync(device)
    totals = []
    last = time.perf_counter()
    for _ in range(args.iters):
        step()
        sync(device)  # the one host-device sync of the iteration
        now = time.perf_counter()
        totals.append(now - last)
        last = now
    peak = torch.cuda.max_memory_allocated(device) / 2 ** 20 if device.type == "cuda" else None
    finite = bool(torch.isfinite(torch.stack(losses)).all()) and all(
        bool(torch.isfinite(p).all()) for p in method.model.parameters())  # after the timing: no sync inside
    if not finite:
        logging.warning("the loss or the weights are not finite after the timed steps: the step diverged, so its "
                        "time is not that of a training run")
    losses.clear()
    result: dict[str, object] = {
        "amp": speed.amp, "channels_last": speed.channels_last, "compiled": speed.compiled, "tf32": speed.tf32,
        "deterministic": targs.deterministic, "train_step_s": statistics.median(totals),
        "train_step_all_s": totals, "finite": finite, "peak_memory_mib": peak, "phases": {}, "profile": None}
    if args.profile_iters > 0:
        prof = profile_training(step, args.profile_iters, device, args.top_ops, args.trace)
        result["phases"] = prof["phases"]
        result["phases_source"] = (f"torch.profiler over {args.profile_iters} more iterations, "
                                   f"{prof['clock']} time, cut at the optimiser's zero_grad/step ranges")
        result["profile"] = prof
    return result


def time_loaders(args: argparse.Namespace, device: torch.device) -> dict[str, dict[str, float]]:
    """Data-loader wait per iteration of the real training loop on synthetic files: for each
    ``--loader`` (released: DataLoader re-created every sampler epoch; reseed: workers kept),
    the time ``next()`` blocks between real training steps (same flags, ``--num_workers``)."""
    import tempfile

    from dataloaders.synthetic import make_acdc, make_la
    from engine import training
    from engine.stream import EpochStream

    module, dataset, num_classes = setting(args.setting)
    out: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as root:
        if dataset.spatial_dims == 3:
            make_la(root, cases=2 * args.loader_cases + 2, seed=0,
                    size=[int(p * 1.3) for p in args.patch_size])
        else:
            make_acdc(root, patients=max(10, 2 * args.loader_cases), seed=0)
        for kind in ("released", "reseed"):
            flags = ["--root_path", root, "--device", str(device), "--batch_size", str(args.batch_size),
                     "--labeled_bs", str(args.labeled_bs), "--patch_size", *map(str, args.patch_size),
                     "--labelnum", str(args.loader_cases), "--num_workers", str(args.num_workers),
                     "--loader", kind] + args.train_flags
            targs = module.parse_args(flags)
            seed_everything(targs.seed, deterministic=True)
            loader = training.build_loader(targs, dataset)[0]
            method = get_method(targs.method).from_config(targs, dataset, num_classes, device)
            speed = setup_speed(method.model, device, **dict(targs.speed(), deterministic=True))
            optimizer = make_optimizer(method.model, targs.base_lr)
            stream = EpochStream(loader)
            waits, steps = [], []
            for i in range(args.warmup + args.iters):
                t0 = time.perf_counter()
                batch = next(stream)
                t1 = time.perf_counter()
                image = batch["image"].to(device, non_blocking=True)
                label = batch["label"].to(device, non_blocking=True).long()
                train_step(method, optimizer, image, label, i, amp=speed.amp, channels_last=speed.channels_last)
                sync(device)
                if i >= args.warmup:
                    waits.append(t1 - t0)
                    steps.append(time.perf_counter() - t1)
            if hasattr(loader, "close"):
                loader.close()
            out[kind] = {"iteration_s_mean": statistics.mean(waits) + statistics.mean(steps),
                         "wait_s_mean": statistics.mean(waits), "wait_s_median": statistics.median(waits),
                         "wait_s_max": max(waits), "step_s_median": statistics.median(steps),
                         "iteration_over_step": (statistics.mean(waits) + statistics.mean(steps))
                         / statistics.mean(steps), "iterations_per_epoch": len(loader)}
    return out


def time_inference(args: argparse.Namespace, device: torch.device) -> dict[str, object]:
    module, dataset, num_classes = setting(args.setting)
    from networks.net_factory import net_factory
    model = net_factory(dataset.model, 1, num_classes, "test", device).eval()
    out = {}
    rng = np.random.default_rng(0)
    if dataset.spatial_dims == 3:  # LA: the sliding window; ACDC: slice by slice
        vol = rng.standard_normal(args.volume).astype(np.float32)
        patch = tuple(args.patch_size)
        from engine.inference import sliding_window_starts
        n_windows = int(np.prod([len(sliding_window_starts(max(v, p), p, s)) for v, p, s in
                                 zip(vol.shape, patch, (args.stride_xy, args.stride_xy, args.stride_z))]))
        for b in args.sw_batch:
            test_single_case(model, vol, args.stride_xy, args.stride_z, patch, num_classes, sw_batch=b,
                             amp=args.amp)  # warm-up on the same volume (cudnn autotuning, allocator)
            sync(device)
            t0 = time.perf_counter()
            test_single_case(model, vol, args.stride_xy, args.stride_z, patch, num_classes, sw_batch=b, amp=args.amp)
            sync(device)
            out[str(b)] = n_windows / (time.perf_counter() - t0)
        out["volume"] = list(vol.shape)
        out["windows_per_volume"] = n_windows
        out["strides"] = [args.stride_xy, args.stride_xy, args.stride_z]
    else:
        vol = rng.random((args.slices, 224, 208), dtype=np.float32)
        for b in args.sw_batch:
            test_single_volume_2d(model, vol, num_classes, tuple(args.patch_size), batch=b, amp=args.amp)
            sync(device)
            t0 = time.perf_counter()
            test_single_volume_2d(model, vol, num_classes, tuple(args.patch_size), batch=b, amp=args.amp)
            sync(device)
            out[str(b)] = args.slices / (time.perf_counter() - t0)
    return out


def run_schedule(name: str) -> dict[str, int]:
    """What a full default run of the setting does besides its steps (for projections): iterations,
    the validation schedule, the validation volumes (lines of the default data folder's
    ``test.list``, which model selection uses by default) and the LA sliding-window strides."""
    from dataloaders.splits import read_list
    from engine.run import REPO_ROOT

    module, dataset, _ = setting(name)
    d = module.parse_args([])
    lst = os.path.join(REPO_ROOT, d.root_path, "test.list")
    out = {"max_iterations": d.max_iterations, "val_start": d.val_start, "val_interval": d.val_interval,
           "validation_volumes": len(read_list(lst)) if os.path.isfile(lst) else None}
    if hasattr(d, "stride_xy"):
        out.update(stride_xy=d.stride_xy, stride_z=d.stride_z)
    return out


def main(argv: list[str] | None = None) -> dict[str, object]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--setting", choices=sorted(SETTINGS), default="la", help="la (V-Net, 3D) or acdc (U-Net, 2D)")
    p.add_argument("--patch_size", type=int, nargs="+", default=None, help="default: the paper's size")
    p.add_argument("--batch_size", type=int, default=None, help="default: the paper's (LA 4, ACDC 24)")
    p.add_argument("--labeled_bs", type=int, default=None, help="default: half the batch")
    p.add_argument("--iters", type=int, default=10, help="timed iterations (median reported)")
    p.add_argument("--warmup", type=int, default=2, help="untimed iterations first")
    p.add_argument("--profile_iters", type=int, default=2,
                   help="iterations after the timed ones run under torch.profiler for the phases and top ops "
                        "(0: no profile)")
    p.add_argument("--top_ops", type=int, default=10, help="how many top operators / kernels to report")
    p.add_argument("--trace", default=None, help="also write the profiler's Chrome trace to this file (Perfetto)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--amp", choices=AMP_MODES, default="none",
                   help="none (fp32) or bf16 (bfloat16 autocast) for the training step and the inference")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--sw_batch", type=int, nargs="+", default=[1, 4], help="sliding-window batches to time")
    p.add_argument("--volume", type=int, nargs=3, default=None,
                   help="LA test volume size (default: 1.5x the patch in x/y, patch+2 strides in z)")
    p.add_argument("--slices", type=int, default=10, help="ACDC test volume slices")
    p.add_argument("--stride_xy", type=int, default=18, help="LA sliding-window stride x/y")
    p.add_argument("--stride_z", type=int, default=4, help="LA sliding-window stride z")
    p.add_argument("--skip_inference", action="store_true", help="time the training iteration only")
    p.add_argument("--skip_loader", action="store_true", help="do not time the data loaders")
    p.add_argument("--num_workers", type=int, default=4, help="loader workers for the loader timing (released: 4)")
    p.add_argument("--loader_cases", type=int, default=4,
                   help="labeled cases (LA) / patients (ACDC) of the loader timing: LA 4 = an epoch of 2 iterations")
    p.add_argument("--keep_host_memory", type=int, default=1,
                   help="1 (as training): let glibc keep freed memory on CPU; 0: system default")
    p.add_argument("--json", default=None, help="write the results to this JSON file")
    p.add_argument("train_flags", nargs="*", help="extra training flags after --, e.g. -- --lds kl")
    args = p.parse_args(argv)
    if args.iters < 1 or args.warmup < 0 or args.profile_iters < 0:
        p.error("--iters must be >= 1, --warmup and --profile_iters >= 0")
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    la = args.setting == "la"
    args.patch_size = args.patch_size or ([112, 112, 80] if la else [256, 256])
    args.batch_size = args.batch_size or (4 if la else 24)
    args.labeled_bs = args.labeled_bs or args.batch_size // 2
    if la and args.volume is None:
        ps = args.patch_size
        args.volume = [ps[0] * 3 // 2, ps[1] * 3 // 2, ps[2] + 2 * args.stride_z]
    device = resolve_device(args.device)
    if device.type == "cpu" and args.keep_host_memory:
        keep_freed_host_memory()  # as train_la.py / train_acdc.py do by default
    result: dict[str, object] = {"setting": args.setting, "device": str(device),
                                 "device_name": torch.cuda.get_device_name(device) if device.type == "cuda"
                                 else platform.processor() or platform.machine(),
                                 "threads": torch.get_num_threads(), "torch": torch.__version__,
                                 "patch_size": args.patch_size, "batch_size": args.batch_size,
                                 "labeled_bs": args.labeled_bs, "train_flags": args.train_flags}
    result.update(time_training(args, device))
    result["schedule"] = run_schedule(args.setting)
    if not args.skip_inference:
        result["windows_per_s" if la else "slices_per_s"] = time_inference(args, device)
    if not args.skip_loader:
        result["loader"] = time_loaders(args, device)
    print(f"device {result['device']} ({result['device_name']}), torch {result['torch']}, "
          f"{result['threads']} threads; {args.setting} patch {args.patch_size}, batch {args.batch_size} "
          f"({args.labeled_bs} labeled)")
    print(f"amp {result['amp']}, tf32 {result['tf32']}, deterministic {result['deterministic']}, channels_last "
          f"{result['channels_last']}, compile {result['compiled']}")
    print(f"train step: median {result['train_step_s']:.3f} s over {args.iters} iterations "
          f"(one device sync per iteration)")
    prof = result.get("profile")
    if prof:
        print(f"phases ({result['phases_source']}; profiled step {prof['profiled_step_s']:.3f} s):")
        for k, v in result["phases"].items():
            print(f"  {k:<12} {v:.4f} s")
        print(f"top {'kernels' if device.type == 'cuda' else 'operators (self time)'} per iteration:")
        for row in prof["top_ops"]:
            print(f"  {row['ms_per_iteration']:9.2f} ms {100 * row['share']:5.1f} % "
                  f"{row['calls_per_iteration']:6.1f} calls  {row['name'][:90]}")
        if prof["host_stalls"]:
            print("host waits per iteration: " + ", ".join(
                f"{k} {v['calls_per_iteration']:.1f} calls {v['ms_per_iteration']:.2f} ms"
                for k, v in prof["host_stalls"].items()))
        if prof["busy_share"] is not None:
            print(f"GPU busy {100 * prof['busy_share']:.1f} % of the profiled steps")
    if result["peak_memory_mib"] is not None:
        print(f"peak GPU memory {result['peak_memory_mib']:.0f} MiB")
    for key in ("windows_per_s", "slices_per_s"):
        for b, v in result.get(key, {}).items():
            if isinstance(v, float):
                print(f"inference sw_batch {b}: {v:.2f} {key.replace('_per_s', '')}/s")
    for kind, r in result.get("loader", {}).items():
        print(f"loader {kind:<8} ({args.num_workers} workers, {r['iterations_per_epoch']} iterations per epoch): "
              f"wait per iteration mean {r['wait_s_mean']:.3f} s (median {r['wait_s_median']:.3f}, max "
              f"{r['wait_s_max']:.3f}), step {r['step_s_median']:.3f} s, iteration {r['iteration_s_mean']:.3f} s = "
              f"{r['iteration_s_mean'] / result['train_step_s']:.2f}x the pure step (a re-fork also slows the steps "
              f"around it)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
    sys.exit(0)
