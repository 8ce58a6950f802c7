"""Time SS-Net's real training iteration and the test-time sliding window.

    python code/benchmark.py --setting la --patch_size 64 64 48 --batch_size 4 --labeled_bs 2 \\
        --iters 5 --device cpu --json out.json

The training iteration is :func:`engine.trainer.train_step` with the method that
``train_la.py`` / ``train_acdc.py`` build from the same flags (same code path),
fed synthetic tensors of the setting's shape. Timing is device-synchronised;
the median of ``--iters`` iterations after ``--warmup`` is reported, broken
down by phase (forward, separation, VAT incl. the supervised Dice, backward,
optimiser step). Then the sliding window of ``test_la.py`` (LA) or the
slice-wise inference of ``test_acdc.py`` (ACDC) is timed at each ``--sw_batch``,
and the data-loader wait per iteration of the real training loop (loader,
sampler, workers and transforms on synthetic files, real training steps in
between) for both ``--loader`` kinds: the released re-created DataLoader and
the default loader that keeps its workers.

``--amp bf16`` times both under bfloat16 autocast (training flag ``--amp``).
The other training flags go after ``--``: the default is the path users run
(``--deterministic 1``, so ``--channels_last auto`` is off, fp32); the fast
options are e.g. ``-- --deterministic 0`` (cudnn.benchmark) and
``--amp bf16 -- --deterministic 0 --channels_last on``. Inference is warmed up
on the same volume it is timed on.
"""
import argparse
import contextlib
import json
import logging
import platform
import statistics
import sys
import time
from typing import Callable, Dict, Iterator, List, Optional

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
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def synthetic_batch(dataset: str, batch: int, patch: List[int], num_classes: int, device: torch.device):
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


@contextlib.contextmanager
def phase_marks(method: object, optimizer: torch.optim.Optimizer, hook: Callable[[str], None],
                compiled: bool) -> Iterator[Callable[[], None]]:
    """Phase marks inside :func:`engine.trainer.train_step`, set up here so that the training code
    carries no timing hooks: ``hook(name)`` is called when a phase ends: after the method's first
    forward pass of a step (``forward``; not with a compiled network), after SS-Net's separation
    step (``separation``), after its VAT loss (``vat``, which includes the supervised Dice computed
    before it) and when the optimiser step starts (``backward``); the caller marks the end of the
    step. A phase a method lacks (a baseline, ``--cs off``) is not marked; its time goes to the
    next mark. Yields ``new_step()``, to call before each step; everything is restored on exit."""
    import methods.ssnet as ssnet_module

    model, vat = method.model, getattr(method, "vat", None)
    separation, step = ssnet_module.separation_step, optimizer.step
    forwards = [0]

    def marked(fn: Callable, name: str) -> Callable:
        def wrapper(*a, **k):
            out = fn(*a, **k)
            hook(name)
            return out
        return wrapper

    def first_forward(*a, **k):
        out = type(model).forward(model, *a, **k)
        forwards[0] += 1
        if forwards[0] == 1:
            hook("forward")
        return out

    def marked_step(*a, **k):
        hook("backward")
        return step(*a, **k)

    if not compiled:
        model.forward = first_forward
    ssnet_module.separation_step = marked(separation, "separation")
    optimizer.step = marked_step
    if vat is not None:
        method.vat = marked(vat, "vat")
    try:
        yield lambda: forwards.__setitem__(0, 0)
    finally:
        ssnet_module.separation_step = separation
        del optimizer.step
        if not compiled:
            del model.forward
        if vat is not None:
            method.vat = vat


def time_training(args: argparse.Namespace, device: torch.device) -> Dict[str, object]:
    module, dataset, num_classes = setting(args.setting)
    targs = module.parse_args(["--device", str(device), "--batch_size", str(args.batch_size), "--labeled_bs",
                               str(args.labeled_bs), "--patch_size", *map(str, args.patch_size),
                               "--amp", args.amp] + args.train_flags)
    args.amp = targs.amp  # a --amp among the training flags wins; inference uses the same
    seed_everything(targs.seed, targs.deterministic)  # what a run with these flags uses (default 1)
    method = get_method(targs.method).from_args(targs, dataset, num_classes, device)
    speed = setup_speed(targs, method.model, device)
    optimizer = make_optimizer(method.model, targs.base_lr)
    image, label = synthetic_batch(dataset, args.batch_size, args.patch_size, num_classes, device)
    marks: List[tuple] = []

    def hook(name: str) -> None:
        sync(device)
        marks.append((name, time.perf_counter()))

    totals, phases = [], {}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with phase_marks(method, optimizer, hook, speed.compiled) as new_step:
        # iter_num past the ramp-up so every loss term has its full weight
        for i in range(args.warmup + args.iters):
            marks.clear()
            new_step()
            sync(device)
            t0 = time.perf_counter()
            marks.append(("start", t0))
            train_step(method, optimizer, image, label, 10 ** 6, amp=speed.amp, channels_last=speed.channels_last)
            hook("step")  # after_step's work ends the optimiser phase
            if i >= args.warmup:
                totals.append(time.perf_counter() - t0)
                for (_, a), (name, b) in zip(marks[:-1], marks[1:]):
                    phases.setdefault(name, []).append(b - a)
    peak = torch.cuda.max_memory_allocated(device) / 2 ** 20 if device.type == "cuda" else None
    return {"amp": speed.amp, "channels_last": speed.channels_last, "compiled": speed.compiled,
            "train_step_s": statistics.median(totals), "train_step_all_s": totals,
            "phases": {k: statistics.median(v) for k, v in phases.items()}, "peak_memory_mib": peak}


def time_loaders(args: argparse.Namespace, device: torch.device) -> Dict[str, Dict[str, float]]:
    """Data-loader wait per iteration of the real training loop on synthetic files: for each
    ``--loader`` (released: DataLoader re-created every sampler epoch; reseed: workers kept),
    the time ``next()`` blocks between real training steps (same flags, ``--num_workers``)."""
    import tempfile

    from dataloaders.synthetic import make_acdc, make_la
    from engine import training
    from engine.stream import EpochStream

    module, dataset, num_classes = setting(args.setting)
    out: Dict[str, Dict[str, float]] = {}
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
            method = get_method(targs.method).from_args(targs, dataset, num_classes, device)
            speed = setup_speed(targs, method.model, device, deterministic=True)
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


def time_inference(args: argparse.Namespace, device: torch.device) -> Dict[str, object]:
    module, dataset, num_classes = setting(args.setting)
    from networks.net_factory import net_factory
    model = net_factory(dataset.model, 1, num_classes, "test", device).eval()
    out = {}
    rng = np.random.default_rng(0)
    if dataset.validation == "sliding_window":
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


def main(argv: Optional[List[str]] = None) -> Dict[str, object]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--setting", choices=sorted(SETTINGS), default="la", help="la (V-Net, 3D) or acdc (U-Net, 2D)")
    p.add_argument("--patch_size", type=int, nargs="+", default=None, help="default: the paper's size")
    p.add_argument("--batch_size", type=int, default=None, help="default: the paper's (LA 4, ACDC 24)")
    p.add_argument("--labeled_bs", type=int, default=None, help="default: half the batch")
    p.add_argument("--iters", type=int, default=10, help="timed iterations (median reported)")
    p.add_argument("--warmup", type=int, default=2, help="untimed iterations first")
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
    result: Dict[str, object] = {"setting": args.setting, "device": str(device),
                                 "device_name": torch.cuda.get_device_name(device) if device.type == "cuda"
                                 else platform.processor() or platform.machine(),
                                 "threads": torch.get_num_threads(), "torch": torch.__version__,
                                 "patch_size": args.patch_size, "batch_size": args.batch_size,
                                 "labeled_bs": args.labeled_bs, "train_flags": args.train_flags}
    result.update(time_training(args, device))
    if not args.skip_inference:
        result["windows_per_s" if la else "slices_per_s"] = time_inference(args, device)
    if not args.skip_loader:
        result["loader"] = time_loaders(args, device)
    print(f"device {result['device']} ({result['device_name']}), torch {result['torch']}, "
          f"{result['threads']} threads; {args.setting} patch {args.patch_size}, batch {args.batch_size} "
          f"({args.labeled_bs} labeled)")
    print(f"amp {result['amp']}, channels_last {result['channels_last']}, compile {result['compiled']}")
    print(f"train step: median {result['train_step_s']:.3f} s over {args.iters} iterations")
    for k, v in result["phases"].items():
        print(f"  {k:<11} {v:.3f} s")
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
