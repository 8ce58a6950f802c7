"""The checks of scripts/gpu_check.sh that need Python: each prints one line ``PASS name: ...`` or
``FAIL name: ...`` (and writes it as JSON with ``--json``).

    python scripts/gpu_checks.py imports                 # every module a run needs
    python scripts/gpu_checks.py parity --device cuda     # CPU vs CUDA, one SS-Net step at 64x64x48
    python scripts/gpu_checks.py syncs --device cuda      # host-device syncs of one SS-Net iteration
    python scripts/gpu_checks.py compile --device cuda    # --compile does not recompile after iteration 2

``parity``: the same weights and batch on the CPU and on the device, dropout off, TF32 off: the VAT
noise must be identical, the losses within 1e-4 relative and the parameters after the SGD step
within 1e-4 (absolute, relative to their scale). ``syncs``: one warmed-up iteration under
``torch.cuda.set_sync_debug_mode("warn")``, counting the synchronising calls; the bound is the
count stated in docs/performance.md (4: the separation step's candidate selection and its three
class splits).
"""
import argparse
import importlib
import json
import os
import sys
import warnings
from typing import Dict, List, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "code"))

#: modules a training or test run imports (module name -> pip package)
NEEDED = {"torch": "torch", "numpy": "numpy", "h5py": "h5py", "scipy": "scipy", "medpy": "medpy",
          "SimpleITK": "SimpleITK", "tqdm": "tqdm", "tensorboardX": "tensorboardX", "skimage": "scikit-image",
          "sklearn": "scikit-learn", "matplotlib": "matplotlib", "thop": "thop"}
#: the most host-device synchronisations one SS-Net training iteration may make
MAX_SYNCS = 4


def verdict(name: str, ok: bool, detail: str) -> Dict[str, object]:
    print(f"{'PASS' if ok else 'FAIL'} {name}: {detail}", flush=True)
    return {"check": name, "pass": bool(ok), "detail": detail}


def check_imports() -> Dict[str, object]:
    missing = []
    for module, package in NEEDED.items():
        try:
            importlib.import_module(module)
        except Exception as err:  # noqa: BLE001 (any failure to import counts)
            missing.append(f"{module} (pip install {package}: {type(err).__name__}: {err})")
    return verdict("imports", not missing, "all present" if not missing else "missing " + "; ".join(missing))


def _setup(device, patch=(64, 64, 48), batch=4, labeled_bs=2, dropout=False):
    import torch

    import train_la
    from benchmark import synthetic_batch
    from methods import get_method
    from engine.trainer import make_optimizer

    args = train_la.parse_args(["--device", str(device), "--patch_size", *map(str, patch), "--batch_size", str(batch),
                                "--labeled_bs", str(labeled_bs)])
    method = get_method("ssnet").from_args(args, "LA", 2, torch.device(device))
    if not dropout:
        for m in method.model.modules():
            if isinstance(m, (torch.nn.Dropout, torch.nn.Dropout3d, torch.nn.Dropout2d)):
                m.p = 0.0
    optimizer = make_optimizer(method.model, args.base_lr)
    image, label = synthetic_batch("LA", batch, list(patch), 2, torch.device(device))
    return method, optimizer, image, label


def check_parity(device: str) -> Dict[str, object]:
    import torch

    from engine.trainer import train_step
    import utils.vat as vat

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.deterministic = True
    noises, runs, weights = {}, {}, None
    for dev in ("cpu", device):
        torch.manual_seed(0)
        method, optimizer, image, label = _setup(dev)
        if weights is None:
            weights = {k: v.clone() for k, v in method.model.state_dict().items()}
        method.model.load_state_dict(weights)  # the same starting point on both devices
        drawn: List[torch.Tensor] = []
        original = vat.uniform_noise

        def record(shape, where, _orig=original):
            d = _orig(shape, where)
            drawn.append(d.detach().cpu())
            return d

        vat.uniform_noise = record
        try:
            torch.manual_seed(1)
            out = train_step(method, optimizer, image, label, 10 ** 6)
        finally:
            vat.uniform_noise = original
        noises[dev] = drawn
        runs[dev] = ({k: float(out[k].detach()) for k in method.log_keys},
                     {n: p.detach().cpu() for n, p in method.model.named_parameters()})
    same_noise = len(noises["cpu"]) == len(noises[device]) and all(
        torch.equal(a, b) for a, b in zip(noises["cpu"], noises[device]))
    loss_err = max(abs(runs["cpu"][0][k] - runs[device][0][k]) / max(abs(runs["cpu"][0][k]), 1e-8)
                   for k in runs["cpu"][0])
    param_err = max(float((runs["cpu"][1][n] - runs[device][1][n]).abs().max()
                          / runs["cpu"][1][n].abs().max().clamp_min(1e-8)) for n in runs["cpu"][1])
    ok = same_noise and loss_err <= 1e-4 and param_err <= 1e-4
    return verdict("parity", ok, f"VAT noise identical: {same_noise}; max relative loss difference "
                                 f"{loss_err:.2e} (<= 1e-4); max parameter difference after the step "
                                 f"{param_err:.2e} of the tensor's scale (<= 1e-4)")


def check_syncs(device: str) -> Dict[str, object]:
    import torch

    from engine.trainer import train_step

    if torch.device(device).type != "cuda":
        return verdict("syncs", False, "needs a CUDA device")
    method, optimizer, image, label = _setup(device, dropout=True)
    for i in range(3):  # warm-up; the memory fills on the first iterations
        train_step(method, optimizer, image, label, 10 ** 6 + i)
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


def check_compile(device: str) -> Dict[str, object]:
    import torch

    from engine.speed import check_compile as can_compile
    from engine.trainer import train_step

    try:
        can_compile(torch.device(device))
    except RuntimeError as err:
        return verdict("compile", False, str(err))
    from torch._dynamo.utils import counters

    method, optimizer, image, label = _setup(device, dropout=True)
    method.model.compile()
    for i in range(2):
        train_step(method, optimizer, image, label, 10 ** 6 + i)
    after_two = sum(counters["stats"].values()) if "stats" in counters else 0
    frames = dict(counters.get("frames", {}))
    for i in range(2, 6):
        train_step(method, optimizer, image, label, 10 ** 6 + i)
    later = sum(counters["stats"].values()) if "stats" in counters else 0
    recompiles = dict(counters.get("recompiles", {}))
    ok = later == after_two and not recompiles
    return verdict("compile", ok, f"dynamo stats after 2 iterations {after_two}, after 6 {later}; recompiles "
                                  f"{recompiles or 'none'}; frames {frames}")


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("check", choices=("imports", "parity", "syncs", "compile"), help="which check")
    p.add_argument("--device", default="cuda", help="the device compared with the CPU / checked")
    p.add_argument("--json", default=None, help="append the verdict as one JSON line to this file")
    args = p.parse_args(argv)
    if args.check == "imports":
        result = check_imports()
    else:
        result = {"parity": check_parity, "syncs": check_syncs, "compile": check_compile}[args.check](args.device)
    if args.json:
        with open(args.json, "a") as f:
            f.write(json.dumps(result) + "\n")
    return 0 if result["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
