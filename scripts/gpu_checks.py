"""The checks of scripts/gpu_check.sh that need Python. Each prints one line per verdict,
``PASS name: ...``, ``FAIL name: ...`` or ``INFO name: ...`` (a number without a target, or a
target not applied in a smoke run), and appends it as JSON to ``--json``.

    python scripts/gpu_checks.py imports [--require_cuda]   # every module a run needs (+ a CUDA GPU)
    python scripts/gpu_checks.py parity --device cuda        # CPU vs CUDA, one SS-Net step, TF32 off and on
    python scripts/gpu_checks.py syncs --device cuda         # host-device syncs of one SS-Net iteration
    python scripts/gpu_checks.py resume --runs A B ...       # uninterrupted vs resumed train_la.py run
    python scripts/gpu_checks.py profile --root DATA ...     # torch.profiler over the real training loop
    python scripts/gpu_checks.py compile --device cuda       # --compile: compile time, recompiles, step
    python scripts/gpu_checks.py summary RESULTS             # targets, projections, stage times

``parity``: the same weights, batch and VAT noise (drawn on the CPU generator, as released) on the
CPU and on the device, dropout off, cuDNN deterministic; one :func:`engine.trainer.train_step` with
a zero learning rate (the weights stay; the gradients of the step are read). Compared: every loss
term, EVERY parameter gradient and every BatchNorm running statistic, each tensor by its largest
difference over its largest magnitude. TF32 off (``--tf32 0``): <= 1e-4. TF32 on (``--tf32 1``):
<= 1e-2, because TF32 rounds each convolution input to 10 mantissa bits (unit roundoff 2^-11,
about 5e-4) and the V-Net chains some 30 convolutions forward and again backward, with VAT's
direction pass on top (a normalised gradient of a small difference, which magnifies relative
errors): 1e-3 to 1e-2 is what correct TF32 arithmetic gives, while a wrong kernel, layout or
noise gives differences of order 1.

``resume``: level 1 (``--deterministic 1``) promises cuDNN's deterministic convolution
algorithms and no autotuning, not ``torch.use_deterministic_algorithms``: a kernel with atomic
adds (e.g. the trilinear upsampling backward; the V-Net has none, but the check lists any found)
may round differently from run to run. The check first runs two identical SS-Net steps twice
(``determinism probe``) and lists the operators torch flags as nondeterministic. If the two runs
are bit-identical, the resumed run must be too (weights, optimiser state, prototype memory);
otherwise they must agree within 1e-3 of each tensor's scale. Iteration count, every RNG state
and the loader position must be identical in either case.

``summary`` reads the JSON files the benchmark stages wrote and applies the targets of issue 20:
default (fp32, TF32 off) iteration <= 110 ms, bf16 fast setting <= 50 ms, GPU busy >= 90 % in the
fast setting (from ``profile``), loader wait <= 2 % of wall time, a full LA run <= 30 min by
default and <= 15 min in the fast setting.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "code"))

#: modules a training or test run imports (module name -> pip package)
NEEDED = {"torch": "torch", "numpy": "numpy", "h5py": "h5py", "scipy": "scipy", "medpy": "medpy",
          "SimpleITK": "SimpleITK", "tqdm": "tqdm", "tensorboardX": "tensorboardX", "skimage": "scikit-image",
          "sklearn": "scikit-learn", "matplotlib": "matplotlib", "thop": "thop"}
#: the most host-device synchronisations one SS-Net training iteration may make
MAX_SYNCS = 4
#: parity bounds (largest difference / largest magnitude of each tensor)
PARITY_TOL = {False: 1e-4, True: 1e-2}
#: resume bound where level 1 is not bit-reproducible on the device
RESUME_TOL = 1e-3
#: issue 20's targets
TARGETS = {"step_fp32_ms": 110.0, "step_fast_ms": 50.0, "busy_fast": 0.90, "loader_share": 0.02,
           "full_run_default_min": 30.0, "full_run_fast_min": 15.0}
#: training flags of the two settings the profile and the projections use
SETTING_FLAGS = {"default": [], "fast": ["--amp", "bf16", "--deterministic", "0", "--channels_last", "on"]}
#: assumed crop sizes of the released LA h5 volumes (x, y, z) for the validation projection (see summary)
ASSUMED_LA_VOLUMES = ((120, 120, 88), (150, 150, 88))

Verdict = dict[str, Any]


def verdict(name: str, ok: bool, detail: str, info: bool = False) -> Verdict:
    """One check's result, printed as ``PASS``/``FAIL``/``INFO name: detail``. ``info``: a number
    without a target (or a smoke run); it never fails unless ``ok`` is false."""
    word = "FAIL" if not ok else "INFO" if info else "PASS"
    print(f"{word} {name}: {detail}", flush=True)
    return {"check": name, "pass": bool(ok), "info": bool(info and ok), "detail": detail}


# --------------------------------------------------------------------------- shared helpers
def _la_args(device: str, patch: Sequence[int], batch: int, labeled_bs: int, extra: Sequence[str] = ()) -> Any:
    import train_la
    return train_la.parse_args(["--device", str(device), "--patch_size", *map(str, patch), "--batch_size",
                                str(batch), "--labeled_bs", str(labeled_bs), *extra])


def _setup(device: str, patch: Sequence[int] = (64, 64, 48), batch: int = 4, labeled_bs: int = 2,
           dropout: bool = True, extra: Sequence[str] = (), weights: dict[str, Any] | None = None,
           lr: float | None = None) -> tuple[Any, Any, Any, Any, Any]:
    """SS-Net on LA as train_la.py builds it from the flags (seeded as a run, speed options
    applied), its optimiser (SGD; ``lr`` overrides the learning rate), a synthetic batch and the
    speed options. ``weights``: a state_dict to start from; ``dropout=False`` sets every p to 0."""
    import torch

    from benchmark import synthetic_batch
    from engine.run import seed_everything
    from engine.speed import setup_speed
    from engine.trainer import make_optimizer
    from methods import get_method

    args = _la_args(device, patch, batch, labeled_bs, extra)
    seed_everything(args.seed, int(args.deterministic))
    dev = torch.device(device)
    method = get_method("ssnet").from_config(args, "LA", 2, dev)
    if weights is not None:
        method.model.load_state_dict(weights)
    if not dropout:
        for m in method.model.modules():
            if isinstance(m, (torch.nn.Dropout, torch.nn.Dropout3d, torch.nn.Dropout2d)):
                m.p = 0.0
    speed = setup_speed(method.model, dev, **args.speed())
    if lr is None:
        optimizer = make_optimizer(method.model, args.base_lr)
    else:  # plain SGD: lr 0 leaves the weights, and no weight decay or momentum touches the gradients
        optimizer = torch.optim.SGD(method.model.parameters(), lr=lr)
    image, label = synthetic_batch("LA", batch, list(patch), 2, dev)
    return method, optimizer, image, label, speed


def _sync(device: Any) -> None:
    import torch
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def leaves(obj: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(path, leaf) of nested dicts, lists and tuples."""
    if isinstance(obj, dict):
        for k in sorted(obj, key=str):
            yield from leaves(obj[k], f"{prefix}/{k}")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from leaves(v, f"{prefix}[{i}]")
    else:
        yield prefix, obj


def identical(a: Any, b: Any) -> tuple[bool, str]:
    """Whether two nested structures are equal leaf by leaf (tensors bit for bit); the first
    differing path."""
    import torch

    la, lb = list(leaves(a)), list(leaves(b))
    if [p for p, _ in la] != [p for p, _ in lb]:
        return False, "different structure"
    for (path, x), (_, y) in zip(la, lb):
        if torch.is_tensor(x) or torch.is_tensor(y):
            if not (torch.is_tensor(x) and torch.is_tensor(y) and x.shape == y.shape and x.dtype == y.dtype
                    and torch.equal(x.cpu(), y.cpu())):
                return False, path
        elif x != y and not (isinstance(x, float) and isinstance(y, float) and x != x and y != y):
            return False, path
    return True, ""


def relative_differences(a: Any, b: Any) -> tuple[float, str, bool]:
    """Over the tensor leaves of two nested structures: the largest ``max|a - b| / max|a|`` (each
    tensor by its own scale), the path where it occurs, and whether every leaf is bit-identical.
    A leaf present on one side only, or of another shape, counts as ``inf``."""
    import torch

    la, lb = dict(leaves(a)), dict(leaves(b))
    worst, where, exact = 0.0, "", True
    for path in sorted(set(la) | set(lb)):
        x, y = la.get(path), lb.get(path)
        if not (torch.is_tensor(x) and torch.is_tensor(y)):
            same = x == y if not (torch.is_tensor(x) or torch.is_tensor(y)) else False
            if not same:
                worst, where, exact = float("inf"), path, False
            continue
        x, y = x.detach().cpu(), y.detach().cpu()
        if x.shape != y.shape:
            worst, where, exact = float("inf"), path, False
            continue
        if x.dtype.is_floating_point or y.dtype.is_floating_point:
            x, y = x.double(), y.double()
        if torch.equal(x, y):
            continue
        exact = False
        diff = float((x - y).abs().max())
        scale = float(x.abs().max()) if x.numel() else 0.0
        rel = diff / scale if scale > 0 else float("inf")
        if rel > worst:
            worst, where = rel, path
    return worst, where, exact


# --------------------------------------------------------------------------- imports
def check_imports(require_cuda: bool = False, env_path: str | None = None) -> tuple[Verdict, int]:
    """Every module a run needs; with ``require_cuda`` also a visible CUDA GPU. Returns the
    verdict and the exit status (0 ok, 1 missing modules, 3 no GPU)."""
    missing = []
    for module, package in NEEDED.items():
        try:
            importlib.import_module(module)
        except Exception as err:  # noqa: BLE001 (any failure to import counts)
            missing.append(f"{module} (pip install {package}: {type(err).__name__}: {err})")
    result = verdict("imports", not missing, "all present" if not missing else "missing " + "; ".join(missing))
    if missing:
        return result, 1
    import torch

    cuda = torch.cuda.is_available() and torch.cuda.device_count() > 0
    env = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
           "gpu": torch.cuda.get_device_name(0) if cuda else None, "host": platform.node(),
           "cpus": os.cpu_count()}
    if env_path:
        with open(env_path, "w") as f:
            json.dump(env, f, indent=2)
    if require_cuda and not cuda:
        print(f"no CUDA GPU is visible (torch {torch.__version__}, CUDA build {torch.version.cuda})", file=sys.stderr)
        return result, 3
    return result, 0


# --------------------------------------------------------------------------- parity
def one_step(device: str, weights: dict[str, Any], tf32: bool, patch: Sequence[int], batch: int,
             labeled_bs: int) -> dict[str, Any]:
    """One SS-Net train_step on ``device`` from ``weights`` (dropout off, lr 0): losses, every
    parameter gradient, the BatchNorm running statistics, the prototype memory and the CPU
    generator state after the step (the VAT noise is drawn from it)."""
    import torch

    from engine.trainer import train_step

    method, optimizer, image, label, speed = _setup(device, patch, batch, labeled_bs, dropout=False,
                                                    extra=["--tf32", "1" if tf32 else "0"], weights=weights,
                                                    lr=0.0)
    torch.manual_seed(1)
    out = train_step(method, optimizer, image, label, 10 ** 6, amp=speed.amp, channels_last=speed.channels_last)
    _sync(device)
    return {"losses": {k: float(out[k].detach()) for k in method.log_keys},
            "grads": {n: None if p.grad is None else p.grad.detach().cpu() for n, p in method.model.named_parameters()},
            "bn": {n: b.detach().cpu() for n, b in method.model.named_buffers()
                   if n.rsplit(".", 1)[-1] in ("running_mean", "running_var", "num_batches_tracked")},
            "memory": method.state_dict(), "cpu_rng": torch.get_rng_state()}


def check_parity(device: str, patch: Sequence[int], batch: int, labeled_bs: int, smoke: bool) -> list[Verdict]:
    """CPU vs ``device`` with TF32 off and on (module docstring)."""
    import torch

    from engine.speed import set_tf32

    torch.manual_seed(0)
    weights = {k: v.clone() for k, v in _setup("cpu", patch, batch, labeled_bs)[0].model.state_dict().items()}
    ref = one_step("cpu", weights, False, patch, batch, labeled_bs)
    out = []
    for tf32 in (False, True):
        got = one_step(device, weights, tf32, patch, batch, labeled_bs)
        set_tf32(False)
        tol = PARITY_TOL[tf32]
        noise = torch.equal(ref["cpu_rng"], got["cpu_rng"])
        loss_err = max(abs(ref["losses"][k] - got["losses"][k]) / max(abs(ref["losses"][k]), 1e-6)
                       for k in ref["losses"])
        missing = [n for n in ref["grads"] if (ref["grads"][n] is None) != (got["grads"][n] is None)]
        grad_err, grad_at, _ = relative_differences({n: g for n, g in ref["grads"].items() if g is not None},
                                                    {n: g for n, g in got["grads"].items() if g is not None})
        bn_err, bn_at, _ = relative_differences(ref["bn"], got["bn"])
        mem_err, _, mem_exact = relative_differences(ref["memory"], got["memory"])
        ok = noise and not missing and max(loss_err, grad_err, bn_err) <= tol
        name = "parity_tf32" if tf32 else "parity"
        what = f"CPU vs {device}" + (" (smoke: the CPU against itself)" if smoke else "")
        out.append(verdict(name, ok, (
            f"{what}, TF32 {'on' if tf32 else 'off'}, one SS-Net step at {'x'.join(map(str, patch))} batch {batch}: "
            f"VAT noise identical {noise} (same seed and the same CPU-generator state after the step, the noise "
            f"being its only draw); largest relative difference of the loss terms {loss_err:.1e}, of "
            f"{len(ref['grads'])} parameter gradients {grad_err:.1e} ({grad_at or '-'}), of the BatchNorm running "
            f"statistics {bn_err:.1e} ({bn_at or '-'}) (each <= {tol:g}); gradients present on one side only: "
            f"{missing or 'none'}; prototype memory {'identical' if mem_exact else f'differs by {mem_err:.1e}'} "
            f"(information)")))
    return out


# --------------------------------------------------------------------------- syncs
def check_syncs(device: str, patch: Sequence[int], batch: int, labeled_bs: int) -> Verdict:
    """Synchronising calls of one warmed-up SS-Net iteration (torch.cuda.set_sync_debug_mode)."""
    import torch

    from engine.trainer import train_step

    method, optimizer, image, label, speed = _setup(device, patch, batch, labeled_bs)
    for i in range(2):  # warm-up; the memory fills on the first iterations
        train_step(method, optimizer, image, label, 10 ** 6 + i)
    if torch.device(device).type != "cuda":
        return verdict("syncs", True, f"the step runs on {device}; synchronisations are counted on CUDA only",
                       info=True)
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            train_step(method, optimizer, image, label, 10 ** 6 + 3)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    syncs = [str(w.message).splitlines()[0] for w in caught if "synchroniz" in str(w.message).lower()]
    return verdict("syncs", len(syncs) <= MAX_SYNCS, f"{len(syncs)} synchronising calls in one SS-Net iteration "
                                                     f"(<= {MAX_SYNCS}): {syncs}")


# --------------------------------------------------------------------------- resume
def _nondeterministic_op(message: str) -> str:
    """The operator a ``use_deterministic_algorithms(warn_only=True)`` warning names."""
    if "CuBLAS" in message or "CUBLAS_WORKSPACE_CONFIG" in message:
        return "cuBLAS matrix products (CUBLAS_WORKSPACE_CONFIG unset)"
    return message.split(" does not have a deterministic")[0].strip()[:100]


def determinism_probe(device: str, patch: Sequence[int], batch: int, labeled_bs: int,
                      extra: Sequence[str] = ()) -> dict[str, Any]:
    """Two identical runs of two SS-Net steps at ``--deterministic 1`` (same seed, weights, batch,
    dropout and VAT draws): whether weights, gradients and prototype memory come out bit-identical,
    their largest relative difference, and the operators of a third step that torch reports as
    having no deterministic implementation (``use_deterministic_algorithms(True, warn_only=True)``)."""
    import torch

    from engine.trainer import train_step

    runs = []
    for _ in range(2):
        method, optimizer, image, label, speed = _setup(device, patch, batch, labeled_bs, extra=extra)
        for i in range(2):
            train_step(method, optimizer, image, label, i, amp=speed.amp, channels_last=speed.channels_last)
        _sync(device)
        runs.append({"weights": {k: v.detach().cpu().clone() for k, v in method.model.state_dict().items()},
                     "grads": {n: p.grad.detach().cpu().clone() for n, p in method.model.named_parameters()
                               if p.grad is not None},
                     "memory": method.state_dict()})
    diff, where, exact = relative_differences(runs[0], runs[1])
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            train_step(method, optimizer, image, label, 2, amp=speed.amp, channels_last=speed.channels_last)
            _sync(device)
    finally:
        torch.use_deterministic_algorithms(False)
    flagged = sorted({_nondeterministic_op(str(w.message)) for w in caught if "deterministic" in str(w.message)})
    return {"bitwise": exact, "max_difference": diff, "where": where, "nondeterministic_ops": flagged}


def check_resume(runs: Sequence[str], device: str, patch: Sequence[int], batch: int, labeled_bs: int,
                 labelnum: int, extra: Sequence[str]) -> Verdict:
    """The uninterrupted run ``runs[0]`` vs the interrupted-and-resumed run ``runs[1]`` (their
    ``--model_root`` folders), against what level 1 guarantees on ``device`` (module docstring)."""
    import torch

    from engine.run import snapshot_dir

    probe = determinism_probe(device, patch, batch, labeled_bs, extra)
    states = []
    for root in runs:
        path = os.path.join(snapshot_dir(root, "LA", "SSNet", labelnum, "VNet"), "last.pth")
        states.append(torch.load(path, map_location="cpu", weights_only=True))
    a, b = states
    same_iter = a["iter_num"] == b["iter_num"]
    rng_same, rng_at = identical(a["rng"], b["rng"])
    loader_same, loader_at = identical(a.get("loader"), b.get("loader"))
    w_err, w_at, w_exact = relative_differences(a["model"], b["model"])
    o_err, o_at, o_exact = relative_differences(a["optimizer"]["state"], b["optimizer"]["state"])
    m_err, m_at, m_exact = relative_differences(a["method"], b["method"])
    exact_needed = probe["bitwise"]
    if exact_needed:
        numbers_ok = w_exact and o_exact and m_exact
        rule = ("level 1 is bit-reproducible here (two identical runs agree bit for bit): the resumed run must "
                "be bit-identical")
    else:
        numbers_ok = max(w_err, o_err, m_err) <= RESUME_TOL
        rule = (f"level 1 is NOT bit-reproducible here (two identical runs differ by {probe['max_difference']:.1e} "
                f"at {probe['where']}): the resumed run must agree within {RESUME_TOL:g} of each tensor's scale")
    ok = same_iter and rng_same and loader_same and numbers_ok

    def show(err: float, at: str, exact: bool) -> str:
        return "bit-identical" if exact else f"differ by {err:.1e} ({at})"

    return verdict("resume", ok, (
        f"{rule}; operators torch flags as nondeterministic: {probe['nondeterministic_ops'] or 'none'}. "
        f"Iterations {a['iter_num']} / {b['iter_num']}; weights {show(w_err, w_at, w_exact)}; optimiser momentum "
        f"{show(o_err, o_at, o_exact)}; prototype memory {show(m_err, m_at, m_exact)}; RNG states "
        f"{'identical' if rng_same else 'differ at ' + rng_at}; loader position "
        f"{'identical' if loader_same else 'differs at ' + loader_at}"))


# --------------------------------------------------------------------------- profile of the real loop
def build_trainer(args: argparse.Namespace) -> tuple[Any, Any]:
    """The pieces :func:`engine.training.train` builds for ``args`` (``--select last``): the real
    loader, method and :class:`engine.trainer.Trainer` (snapshot folder cleared). Returns
    (trainer, loader)."""
    import train_la
    from engine import training
    from engine.run import seed_everything, setup_logging, snapshot_dir
    from engine.snapshot import open_snapshot
    from engine.trainer import Trainer, setup_device
    from methods import get_method

    d = train_la.DATASET
    setup_logging()
    snapshot = snapshot_dir(args.model_root, d.name, args.exp, args.labelnum, args.model)
    device = setup_device(args.device, bool(args.keep_host_memory))
    loader, _ = training.build_loader(args, d)
    open_snapshot(snapshot, clear=True)
    setup_logging(snapshot)
    seed_everything(args.seed, int(args.deterministic))
    method = get_method(args.method).from_config(args, d, d.num_classes, device)
    lr_step = args.lr_step
    trainer = Trainer(args, method, loader, snapshot,
                      lr_at=(lambda n: args.base_lr * 0.1 ** (n // lr_step)) if lr_step else (lambda n: args.base_lr),
                      validate=None, should_validate=lambda n: False, device=device)
    return trainer, loader


def check_profile(root: str, out: str, device: str, patch: Sequence[int], labelnum: int, warmup: int, iters: int,
                  num_workers: int, settings: Sequence[str], top: int, references: dict[str, str],
                  keep_trace: bool, smoke: bool) -> list[Verdict]:
    """``torch.profiler`` over ``iters`` iterations of the real train_la.py loop per setting, after
    ``warmup`` unprofiled ones (workers started, cuDNN tuned) of the same Trainer: GPU busy share
    between the end of the first and of the last profiled optimiser step, device time, top kernels,
    host stalls; the fast setting's busy share against its target."""
    import torch

    import train_la
    from benchmark import loop_profile, profile_trace
    from engine.guard import TrainingDiverged

    verdicts = []
    for name in settings:
        setting_flags, note = list(SETTING_FLAGS[name]), ""
        if smoke and torch.device(device).type == "cpu" and "--amp" in setting_flags:
            # bf16 CPU autocast at the smoke's toy patches (seen at 16x16x16 and 32x32x16, a 1x1x1 or 2x2x1
            # bottleneck) gives non-finite weights within a few iterations: the smoke checks the code path in fp32
            i = setting_flags.index("--amp")
            del setting_flags[i:i + 2]
            note = " (smoke on the CPU: fp32, bf16 diverges at toy sizes)"
        flags = ["--root_path", root, "--model_root", out, "--exp", f"profile_{name}", "--device", device,
                 "--patch_size", *map(str, patch), "--labelnum", str(labelnum), "--select", "last",
                 "--max_iterations", str(warmup), "--save_interval", "1000000", "--log_interval", "1000000",
                 "--num_workers", str(num_workers)] + setting_flags
        args = train_la.parse_args(flags)
        trainer, loader = build_trainer(args)
        dev = torch.device(trainer.device)
        try:
            trainer.train()  # the unprofiled warm-up
            trainer.config = args.replace(max_iterations=warmup + iters)
            trainer.iterations = warmup + iters
            summary: dict[str, Any] = {}
            trace = os.path.join(out, f"trace_{name}.json") if keep_trace else None
            events = profile_trace(lambda s=summary, t=trainer: s.update(t.train()), 1, dev, trace)
        except TrainingDiverged as err:
            verdicts.append(verdict(f"profile_{name}", False, f"{' '.join(setting_flags)}{note}: {err}"))
            continue
        finally:
            if hasattr(loader, "close"):
                loader.close()
        loop = loop_profile(events, top)
        loop.update(setting=name, flags=setting_flags, loader_wait_share=summary.get("loader_wait_share"))
        ref = references.get(name)
        if ref and os.path.isfile(ref):
            with open(ref) as f:
                step = json.load(f)["train_step_s"]
            loop["device_over_unprofiled_step"] = loop["device_s_per_iteration"] / step if step > 0 else None
        with open(os.path.join(out, f"profile_{name}.json"), "w") as f:
            json.dump(loop, f, indent=2)
        stalls = ", ".join(f"{k} {v['calls_per_iteration']:.1f}x {v['ms_per_iteration']:.2f} ms"
                           for k, v in loop["host_stalls"].items()) or "none"
        kernels = "; ".join(f"{r['name'][:50]} {r['ms_per_iteration']:.1f} ms" for r in loop["top_kernels"][:3])
        busy = loop["busy_share"]
        ratio = loop.get("device_over_unprofiled_step")
        what = " ".join(setting_flags) or "defaults"
        detail = (f"{loop['iterations']} iterations of the train_la.py loop ({what}{note},"
                  f" {'x'.join(map(str, patch))}): {1000 * loop['iteration_s']:.1f} ms per iteration under the "
                  f"profiler, GPU busy {'n/a (no GPU)' if busy is None else f'{100 * busy:.1f} %'}"
                  + (f" (target >= {100 * TARGETS['busy_fast']:.0f} %)" if name == "fast" else "")
                  + f", device time {1000 * loop['device_s_per_iteration']:.1f} ms per iteration"
                  + (f" = {100 * ratio:.0f} % of the unprofiled benchmark step" if ratio else "")
                  + f"; host stalls per iteration: {stalls}; top kernels: {kernels or 'n/a'}; loader wait "
                  f"{100 * (loop['loader_wait_share'] or 0):.1f} % (profile_{name}.json)")
        if name == "fast" and not smoke:
            verdicts.append(verdict(f"profile_{name}", busy is not None and busy >= TARGETS["busy_fast"], detail))
        else:
            verdicts.append(verdict(f"profile_{name}", True, detail, info=True))
    return verdicts


# --------------------------------------------------------------------------- compile
def check_compile(device: str, patch: Sequence[int], batch: int, labeled_bs: int, iters: int,
                  backend: str) -> Verdict:
    """``--compile``: time of the first two iterations (compilation), graphs and frames compiled
    by then and after ``iters`` more (none may be added: no recompilation), the compiled step."""
    import torch

    from engine.trainer import train_step

    try:
        if backend == "inductor":
            from engine.speed import check_compile as can_compile
            can_compile(torch.device(device))
            method, optimizer, image, label, speed = _setup(device, patch, batch, labeled_bs, extra=["--compile"])
        else:  # e.g. "eager" in a smoke run: dynamo's capture and guards without code generation
            method, optimizer, image, label, speed = _setup(device, patch, batch, labeled_bs)
            method.model.compile(backend=backend)
    except RuntimeError as err:
        return verdict("compile", False, str(err))
    from torch._dynamo.utils import counters

    def compiled() -> tuple[int, int]:
        return int(counters["stats"].get("unique_graphs", 0)), int(counters["frames"].get("ok", 0))

    def step(i: int) -> None:
        train_step(method, optimizer, image, label, 10 ** 6 + i, amp=speed.amp, channels_last=speed.channels_last)

    t0 = time.perf_counter()
    for i in range(2):
        step(i)
    _sync(device)
    first_two = time.perf_counter() - t0
    after_two = compiled()
    times, last = [], time.perf_counter()
    for i in range(2, 2 + iters):
        step(i)
        _sync(device)
        now = time.perf_counter()
        times.append(now - last)
        last = now
    later = compiled()
    median = statistics.median(times)
    ok = later == after_two
    return verdict("compile", ok, (
        f"backend {backend}, {'x'.join(map(str, patch))} batch {batch}: first 2 iterations {first_two:.1f} s "
        f"(compilation about {first_two - 2 * median:.1f} s); graphs/frames compiled after 2 iterations "
        f"{after_two[0]}/{after_two[1]}, after {2 + iters} {later[0]}/{later[1]} (no recompilation after "
        f"iteration 2 required); compiled step median {1000 * median:.1f} ms over {iters} iterations"))


# --------------------------------------------------------------------------- summary
def windows(volume: Sequence[int], patch: Sequence[int], strides: Sequence[int]) -> int:
    """Sliding windows of one volume (engine.inference.sliding_window_starts: ceil((v - p) / s) + 1
    per axis, a volume smaller than the patch padded to it)."""
    n = 1
    for v, p, s in zip(volume, patch, strides):
        n *= -(-(max(v, p) - p) // s) + 1
    return n


def _load(res: str, name: str) -> dict[str, Any] | None:
    path = os.path.join(res, name)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def step_verdicts(la: dict[str, dict[str, Any] | None], acdc: dict[str, Any] | None,
                  stage_ok: dict[str, bool], smoke: bool) -> list[Verdict]:
    """Step times against the targets (fp32 <= 110 ms, fast <= 50 ms; the others information),
    ACDC and the validation throughput (information)."""
    out: list[Verdict] = []
    targets = {"fp32": TARGETS["step_fp32_ms"], "fast": TARGETS["step_fast_ms"]}
    for key, b in la.items():
        name = f"step_la_{key}"
        if b is None:
            if stage_ok.get(name):
                out.append(_quiet(name, False, f"the stage wrote no bench_la_{key}.json"))
            continue
        ms, mem = 1000 * b["train_step_s"], b.get("peak_memory_mib")
        detail = (f"LA {'x'.join(map(str, b['patch_size']))} batch {b['batch_size']} SS-Net step {ms:.1f} ms "
                  f"(amp {b['amp']}, tf32 {b.get('tf32')}, deterministic {b.get('deterministic')}, channels_last "
                  f"{b['channels_last']}), peak memory {'n/a' if mem is None else f'{mem:.0f} MiB'}")
        if b.get("phases"):
            detail += "; phases " + ", ".join(f"{k} {1000 * v:.1f}" for k, v in b["phases"].items()) + " ms"
        target, finite = targets.get(key), b.get("finite", True)
        if not finite:
            detail += "; NON-FINITE loss or weights after the timed steps (a diverging step is not a valid time)"
        if target is None or smoke:
            out.append(_quiet(name, finite or smoke, detail + (f" (target <= {target:.0f} ms not applied: smoke)"
                                                               if target else ""), info=True))
        else:
            out.append(_quiet(name, finite and ms <= target, detail + f" (target <= {target:.0f} ms)"))
    if acdc:
        rates = ", ".join(f"batch {k} {v:.1f}" for k, v in (acdc.get("slices_per_s") or {}).items())
        out.append(_quiet("step_acdc", True, (
            f"ACDC {'x'.join(map(str, acdc['patch_size']))} batch {acdc['batch_size']} step "
            f"{1000 * acdc['train_step_s']:.1f} ms, peak memory {acdc.get('peak_memory_mib')} MiB; slices/s "
            f"{rates or 'n/a'}"), info=True))
    elif stage_ok.get("step_acdc"):
        out.append(_quiet("step_acdc", False, "the stage wrote no bench_acdc.json"))
    for key in ("fp32", "fast"):
        b = la.get(key)
        if b and "windows_per_s" in b:
            w = b["windows_per_s"]
            rates = ", ".join(f"sw_batch {k} {v:.1f}" for k, v in w.items() if k.isdigit())
            out.append(_quiet(f"validation_{key}", True, (
                f"LA sliding window ({b['amp']}) windows/s: {rates}; volume {'x'.join(map(str, w['volume']))} = "
                f"{w['windows_per_volume']} windows"), info=True))
    return out


def loader_verdict(res: str, stage_ok: dict[str, bool], smoke: bool) -> tuple[list[Verdict], float]:
    """The loader wait of the ``loader`` stage's train_la.py run (<= 2 % of its wall time), and the
    wait per iteration (for the projections; 0 without the run)."""
    import re

    log = os.path.join(res, "loader_run", "LA_SSNet_4_labeled", "VNet", "log.txt")
    found = []
    if os.path.isfile(log):
        with open(log) as f:
            found = re.findall(r"training finished: (\{.*\})", f.read())
    if not found:
        return ([_quiet("loader", False, "train_la.py finished but its log has no 'training finished' line")]
                if stage_ok.get("loader") else []), 0.0
    s = json.loads(found[-1])
    share, target = s["loader_wait_share"], TARGETS["loader_share"]
    detail = (f"{s['iterations']} iterations of train_la.py (defaults, --labelnum 4: a sampler epoch is 2 "
              f"iterations): loader wait {s['loader_wait_s']} s = {100 * share:.2f} % of {s['seconds']} s, "
              f"{1000 * s['seconds'] / max(s['iterations'], 1):.1f} ms per iteration of the whole loop "
              f"(target <= {100 * target:.0f} %{' not applied: smoke' if smoke else ''})")
    per_iteration = s["loader_wait_s"] / max(s["iterations"], 1)
    return [_quiet("loader", smoke or share <= target, detail, info=smoke)], per_iteration


def full_run_verdicts(la: dict[str, dict[str, Any] | None], loader_wait_per_it: float,
                      smoke: bool) -> list[Verdict]:
    """A full LA run projected from the default (fp32) and the fast benchmark: max_iterations x
    (step + loader wait per iteration) + the validations of the schedule, each on the validation
    volumes, at the training's --sw_batch 4 and the windows of the benchmark's volume."""
    out: list[Verdict] = []
    for key, name, target in (("fp32", "full_run_default", TARGETS["full_run_default_min"]),
                              ("fast", "full_run_fast", TARGETS["full_run_fast_min"])):
        b = la.get(key)
        if not b or "4" not in b.get("windows_per_s", {}) or "schedule" not in b:
            continue
        sch, w = b["schedule"], b["windows_per_s"]
        volumes = sch.get("validation_volumes") or 20
        stride = w.get("strides") or (sch["stride_xy"], sch["stride_xy"], sch["stride_z"])
        validations = len(range(sch["val_start"], sch["max_iterations"] + 1, sch["val_interval"]))
        train_s = sch["max_iterations"] * (b["train_step_s"] + loader_wait_per_it)

        projected = (train_s + validations * volumes * w["windows_per_volume"] / w["4"]) / 60
        alt = []
        for volume in ASSUMED_LA_VOLUMES:
            n = windows(volume, b["patch_size"], stride)
            alt.append(f"{'x'.join(map(str, volume))} ({n} windows) "
                       f"{(train_s + validations * volumes * n / w['4']) / 60:.1f} min")
        detail = (f"{'default (fp32, TF32 off)' if key == 'fp32' else 'fast (bf16, channels-last, cudnn.benchmark)'}: "
                  f"projected {projected:.1f} min = {sch['max_iterations']} x ("
                  f"{1000 * b['train_step_s']:.1f} ms step + "
                  f"{1000 * loader_wait_per_it:.1f} ms loader wait) + {validations} validations x {volumes} volumes x "
                  f"{w['windows_per_volume'] / w['4']:.2f} s ({w['windows_per_volume']} windows of the benchmark's "
                  f"{'x'.join(map(str, w['volume']))} volume at sw_batch 4, {w['4']:.1f} windows/s). Assumption: the "
                  f"released LA h5 volumes are the raw 576x576x88 / 640x640x88 scans cropped to the atrium plus "
                  f"margins, about 120-150 x 120-150 x 88, so the benchmark's volume errs long; with those: "
                  f"{', '.join(alt)}. "
                  f"Checkpoint writes not included (target <= {target:.0f} min"
                  f"{' not applied: smoke' if smoke else ''})")
        out.append(_quiet(name, smoke or projected <= target, detail, info=smoke))
    return out


def _quiet(name: str, ok: bool, detail: str, info: bool = False) -> Verdict:
    """A verdict, not printed (the summary prints every verdict at its end)."""
    return {"check": name, "pass": bool(ok), "info": bool(info and ok), "detail": detail}


def summarize(res: str, seconds: int, smoke: bool) -> int:
    """Verdicts from the stage outputs in ``res``, printed with the stage times; summary.json
    written. Returns 1 if any check failed, else 0. Imports no torch (it runs after a failure too)."""
    path = os.path.join(res, "verdicts.jsonl")
    verdicts: list[Verdict] = []
    if os.path.isfile(path):
        with open(path) as f:
            verdicts = [json.loads(line) for line in f if line.strip()]
    stages: list[tuple[str, float, str]] = []
    if os.path.isfile(os.path.join(res, "stages.tsv")):
        with open(os.path.join(res, "stages.tsv")) as f:
            for line in f:
                parts = line.rstrip("\n").split("\t")
                if len(parts) == 3:
                    stages.append((parts[0], float(parts[1]), parts[2]))
    stage_ok = {name: status == "ok" for name, _, status in stages}
    added: list[Verdict] = []
    try:
        la = {k: _load(res, f"bench_la_{k}.json") for k in ("fp32", "tf32", "bf16", "fast")}
        added += step_verdicts(la, _load(res, "bench_acdc.json"), stage_ok, smoke)
        loader, wait_per_it = loader_verdict(res, stage_ok, smoke)
        added += loader + full_run_verdicts(la, wait_per_it, smoke)
    except (KeyError, TypeError, ValueError, ZeroDivisionError) as err:  # a malformed stage output
        added.append(_quiet("summary", False, f"cannot read the stage outputs: {type(err).__name__}: {err}"))
    # every stage gets a line: one that wrote no verdict of its own is reported by its exit
    names = [v["check"] for v in verdicts + added]
    for name, secs, status in stages:
        if not any(c == name or c.startswith(name + "_") for c in names):
            added.append(_quiet(name, status == "ok", f"stage {status} in {secs:.0f} s", info=status == "ok"))

    env = _load(res, "env.json") or {}
    order = {name: i for i, (name, _, _) in enumerate(stages)}

    def rank(v: Verdict) -> int:  # with its stage, in stage order; derived checks (validation, full run) last
        owner = [n for n in order if v["check"] == n or v["check"].startswith(n + "_")]
        return order[max(owner, key=len)] if owner else len(order)

    out = sorted(verdicts + added, key=rank)
    where = env.get("gpu") or ("the CPU" if smoke else "no recorded GPU")
    print(f"gpu_check {time.strftime('%Y-%m-%dT%H:%M:%S')} on {where}, torch "
          f"{env.get('torch')}, CUDA {env.get('cuda')}, {env.get('cpus')} CPUs; {seconds} s"
          + (" (GPU_CHECK_SMOKE=1: toy sizes on the CPU, targets not applied)" if smoke else ""))
    for v in out:
        word = "FAIL" if not v["pass"] else "INFO" if v.get("info") else "PASS"
        print(f"{word} {v['check']}: {v['detail']}")
    if stages:
        print("stage times: " + ", ".join(f"{n} {s:.0f} s{'' if st == 'ok' else f' ({st})'}" for n, s, st in stages)
              + f"; total {seconds} s")
    failed = [v["check"] for v in out if not v["pass"]]
    print("result: " + ("every check passed" if not failed else "FAILED: " + ", ".join(failed)))
    with open(os.path.join(res, "summary.json"), "w") as f:
        json.dump({"env": env, "seconds": seconds, "smoke": smoke, "stages": stages, "verdicts": out}, f, indent=2)
    return 1 if failed else 0


# --------------------------------------------------------------------------- command line
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("check", choices=("imports", "parity", "syncs", "resume", "profile", "compile", "summary"),
                   help="which check")
    p.add_argument("results", nargs="?", default=None, help="summary: the results folder")
    p.add_argument("--device", default="cuda", help="the device compared with the CPU / checked")
    p.add_argument("--json", default=None, help="append the verdicts as JSON lines to this file")
    p.add_argument("--patch_size", type=int, nargs=3, default=[64, 64, 48], help="LA patch of the check")
    p.add_argument("--batch_size", type=int, default=4, help="batch of the check")
    p.add_argument("--labeled_bs", type=int, default=2, help="labeled items per batch")
    p.add_argument("--require_cuda", action="store_true", help="imports: exit 3 when no CUDA GPU is visible")
    p.add_argument("--env", default=None, help="imports: write torch/CUDA/GPU versions to this JSON file")
    p.add_argument("--runs", nargs=2, default=None, metavar=("STRAIGHT", "RESUMED"),
                   help="resume: --model_root of the uninterrupted and of the resumed run")
    p.add_argument("--labelnum", type=int, default=8, help="resume/profile: --labelnum of the runs")
    p.add_argument("--train_flags", default="", help="resume: further training flags of the runs (one string)")
    p.add_argument("--root", default=None, help="profile: the LA data folder (--root_path)")
    p.add_argument("--out", default=None, help="profile: folder for the runs and profile_<setting>.json")
    p.add_argument("--warmup", type=int, default=3, help="profile: unprofiled iterations first")
    p.add_argument("--iters", type=int, default=11, help="profile: profiled iterations; compile: timed iterations")
    p.add_argument("--num_workers", type=int, default=4, help="profile: loader workers (train_la.py's default)")
    p.add_argument("--settings", nargs="+", choices=sorted(SETTING_FLAGS), default=["default", "fast"],
                   help="profile: which settings")
    p.add_argument("--reference", nargs="*", default=[], metavar="SETTING=BENCH_JSON",
                   help="profile: benchmark.py JSON of the same setting, for device time / unprofiled step")
    p.add_argument("--top", type=int, default=10, help="profile: how many top kernels / operators")
    p.add_argument("--keep_trace", action="store_true", help="profile: keep the Chrome traces (trace_<setting>.json)")
    p.add_argument("--backend", default="inductor", help="compile: torch.compile backend (eager in smoke runs)")
    p.add_argument("--smoke", action="store_true", help="a GPU_CHECK_SMOKE run: targets reported, not applied")
    p.add_argument("--seconds", type=int, default=0, help="summary: the whole check's wall time")
    args = p.parse_args(argv)
    status = 0
    if args.check == "summary":
        if not args.results:
            p.error("summary needs the results folder")
        return summarize(args.results, args.seconds, args.smoke)
    if args.check == "imports":
        result, status = check_imports(args.require_cuda, args.env)
        results = [result]
    elif args.check == "parity":
        results = check_parity(args.device, args.patch_size, args.batch_size, args.labeled_bs, args.smoke)
    elif args.check == "syncs":
        results = [check_syncs(args.device, args.patch_size, args.batch_size, args.labeled_bs)]
    elif args.check == "resume":
        if not args.runs:
            p.error("resume needs --runs STRAIGHT RESUMED")
        results = [check_resume(args.runs, args.device, args.patch_size, args.batch_size, args.labeled_bs,
                                args.labelnum, args.train_flags.split())]
    elif args.check == "profile":
        if not (args.root and args.out):
            p.error("profile needs --root and --out")
        if args.warmup < 1 or args.iters < 2:
            p.error("profile needs --warmup >= 1 and --iters >= 2 (the window runs between optimiser steps)")
        refs = dict(r.split("=", 1) for r in args.reference)
        results = check_profile(args.root, args.out, args.device, args.patch_size, args.labelnum, args.warmup,
                                args.iters, args.num_workers, args.settings, args.top, refs, args.keep_trace,
                                args.smoke)
    else:
        results = [check_compile(args.device, args.patch_size, args.batch_size, args.labeled_bs, args.iters,
                                 args.backend)]
    if args.json:
        with open(args.json, "a") as f:
            for r in results:
                f.write(json.dumps(r) + "\n")
    return status or (0 if all(r["pass"] for r in results) else 1)


if __name__ == "__main__":
    sys.exit(main())
