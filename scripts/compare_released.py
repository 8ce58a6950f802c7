"""Run the released SS-Net ACDC training script beside ours and compare the logs line by line.

    git clone https://github.com/ycwu1997/SS-Net /tmp/SS-Net      # the authors' code, not shipped here
    python code/dataloaders/synthetic.py --dataset ACDC --cases 20 --out /tmp/data/ACDC --seed 2026
    python scripts/compare_released.py --released /tmp/SS-Net --root_path /tmp/data/ACDC \
        --iterations 400 --patch_size 128 128 --batch_size 8 --labeled_bs 4 --labelnum 3 \
        --consistency 0.1 --consistency_rampup 1 --out /tmp/cmp

The released ``code/train_ss_2d.py`` runs unmodified, on the CPU, in a copy
of its ``code/`` folder. The launcher only adapts it to the machine and the
size of the run, and each adaptation is printed:

* ``.cuda()`` of tensors and modules is a no-op (no GPU needed);
* ``torchvision.transforms.Compose``, its only use of torchvision, comes from
  a ten-line stand-in (torchvision is not a dependency here);
* ``--patch_size`` (``type=list`` in the released parser, so not settable from
  the command line) and the validation zoom size of ``utils/val_2d.py``
  (fixed at 256 there, ``--patch_size`` here) both take ``--patch_size``;
* the labeled slice count, a fixed table of the real data's counts in the
  released script, is counted from ``train_slices.list`` as ours does;
* ``--torch_zero_grad 1.8`` (default) makes ``optimizer.zero_grad()`` fill
  zeros as on PyTorch 1.8, the version of the released runs, which our
  ``--zero_grad zero`` (the default) reproduces; ``current`` keeps this
  PyTorch's default (set to None), for a run of ours with ``--zero_grad none``.

Both runs use the same seed, data and four loader workers. The table printed
gives each iteration's total loss from both logs (ours prints 4 decimals) and
each validation's mean Dice; the exit status is 0 when every logged loss and
validation Dice agree to the printed digits.
"""
from __future__ import annotations
import argparse
import json
import os
import re
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

LAUNCHER = r'''
import argparse, os, runpy, sys
cfg = {cfg!r}
sys.path[:0] = [cfg["shim"], os.path.join(os.getcwd(), "code")]
import torch
torch.Tensor.cuda = lambda self, *a, **k: self
torch.nn.Module.cuda = lambda self, *a, **k: self
if cfg["zero_grad"] == "1.8":
    _zero_grad = torch.optim.Optimizer.zero_grad
    torch.optim.Optimizer.zero_grad = lambda self, set_to_none=False: _zero_grad(self, set_to_none=set_to_none)
_parse = argparse.ArgumentParser.parse_args
def parse_args(self, *a, **k):
    args = _parse(self, *a, **k)
    args.patch_size = list(cfg["patch_size"])
    return args
argparse.ArgumentParser.parse_args = parse_args
import utils.val_2d as val_2d
val_2d.test_single_volume.__defaults__ = (list(cfg["patch_size"]),)
import dataloaders.dataset as dataset
_Sampler = dataset.TwoStreamBatchSampler
class CountedSampler(_Sampler):
    def __init__(self, primary, secondary, batch_size, secondary_batch_size):
        total = len(primary) + len(secondary)
        n = cfg["labeled_slices"]
        super().__init__(list(range(n)), list(range(n, total)), batch_size, secondary_batch_size)
dataset.TwoStreamBatchSampler = CountedSampler
sys.argv = ["train_ss_2d.py"] + cfg["argv"]
runpy.run_path(os.path.join("code", "train_ss_2d.py"), run_name="__main__")
'''

SHIM = '''"""Stand-in for torchvision.transforms.Compose, the released script's only torchvision use."""


class Compose:
    def __init__(self, transforms):
        self.transforms = list(transforms)

    def __call__(self, sample):
        for t in self.transforms:
            sample = t(sample)
        return sample
'''

RELEASED_LOSS = re.compile(r"iteration (\d+) : loss : ([-\d.eE]+)")
RELEASED_VAL = re.compile(r"iteration (\d+) : mean_dice : ([-\d.eE]+)")
OURS_LOSS = re.compile(r"iteration (\d+): loss ([-\d.eE]+)")
OURS_VAL = re.compile(r"iteration (\d+): validation score ([-\d.eE]+)")


def parse_log(path: str, loss_re: re.Pattern[str],
              val_re: re.Pattern[str]) -> tuple[dict[int, float], dict[int, float]]:
    """Per-iteration total loss and per-validation score from a log file."""
    losses: dict[int, float] = {}
    vals: dict[int, float] = {}
    with open(path) as f:
        for line in f:
            m = loss_re.search(line)
            if m:
                losses[int(m.group(1))] = float(m.group(2))
            m = val_re.search(line)
            if m:
                vals[int(m.group(1))] = float(m.group(2))
    return losses, vals


def run_released(args: argparse.Namespace, labeled_slices: int) -> str:
    work = os.path.join(args.out, "released")
    if os.path.isdir(work):
        shutil.rmtree(work)
    shutil.copytree(os.path.join(args.released, "code"), os.path.join(work, "code"),
                    ignore=shutil.ignore_patterns("__pycache__"))
    shim = os.path.join(work, "shim", "torchvision")
    os.makedirs(shim)
    with open(os.path.join(shim, "__init__.py"), "w") as f:
        f.write("")
    with open(os.path.join(shim, "transforms.py"), "w") as f:
        f.write(SHIM)
    argv = ["--root_path", os.path.abspath(args.root_path), "--max_iterations", str(args.iterations),
            "--batch_size", str(args.batch_size), "--labeled_bs", str(args.labeled_bs),
            "--labelnum", str(args.labelnum), "--seed", str(args.seed), "--consistency", str(args.consistency),
            "--consistency_rampup", str(args.consistency_rampup), "--magnitude", str(args.magnitude)]
    cfg = dict(shim=os.path.join(work, "shim"), patch_size=args.patch_size, labeled_slices=labeled_slices,
               zero_grad=args.torch_zero_grad, argv=argv)
    with open(os.path.join(work, "launch.py"), "w") as f:
        f.write(LAUNCHER.format(cfg=cfg))
    print(f"released: {args.released}/code/train_ss_2d.py in {work} ({json.dumps(cfg)})", flush=True)
    with open(os.path.join(work, "stdout.txt"), "w") as out:
        subprocess.run([sys.executable, "launch.py"], cwd=work, check=True, stdout=out, stderr=subprocess.STDOUT)
    return os.path.join(work, "model", f"ACDC_SSNet_{args.labelnum}_labeled", "unet", "log.txt")


def run_ours(args: argparse.Namespace) -> str:
    model_root = os.path.join(args.out, "ours")
    cmd = [sys.executable, os.path.join(ROOT, "code", "train_acdc.py"), "--root_path", args.root_path,
           "--model_root", model_root, "--max_iterations", str(args.iterations),
           "--patch_size", *map(str, args.patch_size), "--batch_size", str(args.batch_size),
           "--labeled_bs", str(args.labeled_bs), "--labelnum", str(args.labelnum), "--seed", str(args.seed),
           "--consistency", str(args.consistency), "--consistency_rampup", str(args.consistency_rampup),
           "--magnitude", str(args.magnitude), "--device", "cpu", "--log_interval", "1", "--overwrite",
           "--zero_grad", "zero" if args.torch_zero_grad == "1.8" else "none", *args.ours_flags]
    print("ours: " + " ".join(cmd), flush=True)
    with open(os.path.join(args.out, "ours_stdout.txt"), "w") as out:
        subprocess.run(cmd, check=True, stdout=out, stderr=subprocess.STDOUT)
    return os.path.join(model_root, f"ACDC_SSNet_{args.labelnum}_labeled", "unet", "log.txt")


def agree(released: float | None, ours: float | None) -> bool:
    """Equal to the printed digits: ours prints 4 decimals, the released script 6."""
    return released is not None and ours is not None and abs(released - ours) <= 0.5e-4 + 0.5e-6 + 1e-9


def compare(released: tuple[dict[int, float], dict[int, float]], ours: tuple[dict[int, float], dict[int, float]],
            every: int) -> tuple[list[str], int]:
    """Markdown rows and the number of disagreements (to the printed digits, see :func:`agree`)."""
    rows = ["| iteration | released loss | ours | equal |", "|---|---|---|---|"]
    bad = 0
    first_bad: int | None = None
    for it in sorted(set(released[0]) | set(ours[0])):
        r, o = released[0].get(it), ours[0].get(it)
        same = agree(r, o)
        if not same:
            bad += 1
            first_bad = it if first_bad is None else first_bad
        if it % every == 0 or it == 1 or not same and bad <= 5:
            rows.append(f"| {it} | {r} | {o} | {'yes' if same else 'NO'} |")
    rows += ["", "| validation at | released mean Dice | ours | equal |", "|---|---|---|---|"]
    for it in sorted(released[1]):
        r, o = released[1][it], ours[1].get(it)
        same = agree(r, o)
        bad += 0 if same else 1
        rows.append(f"| {it} | {r} | {o} | {'yes' if same else 'NO'} |")
    for it in sorted(set(ours[1]) - set(released[1])):  # ours also validates the last iterate
        rows.append(f"| {it} | (not validated) | {ours[1][it]} | ours only: final iterate |")
    rows.append("")
    rows.append(f"{len(ours[0])} iterations logged by ours, {len(released[0])} by the released script; "
                f"{bad} disagreements" + (f", the first at iteration {first_bad}" if first_bad else ""))
    return rows, bad


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--released", required=True, help="a checkout of ycwu1997/SS-Net (holds code/train_ss_2d.py)")
    p.add_argument("--root_path", required=True, help="ACDC folder in the released layout (e.g. synthetic data)")
    p.add_argument("--out", required=True, help="work folder (both runs, logs, comparison.md)")
    p.add_argument("--iterations", type=int, default=400, help="training iterations of both runs")
    p.add_argument("--patch_size", type=int, nargs=2, default=[128, 128], help="training and validation slice size")
    p.add_argument("--batch_size", type=int, default=8, help="batch size")
    p.add_argument("--labeled_bs", type=int, default=4, help="labeled items per batch")
    p.add_argument("--labelnum", type=int, default=3, help="labeled patients")
    p.add_argument("--seed", type=int, default=1337, help="seed of both runs")
    p.add_argument("--consistency", type=float, default=0.1, help="final unsupervised weight")
    p.add_argument("--consistency_rampup", type=float, default=200.0, help="ramp length in units of 150 iterations")
    p.add_argument("--magnitude", type=float, default=6.0, help="VAT epsilon")
    p.add_argument("--torch_zero_grad", choices=["1.8", "current"], default="1.8",
                   help="optimizer.zero_grad() of the released run: 1.8 (zero-filled, as on PyTorch 1.8) or "
                        "current (this PyTorch's default); ours gets the matching --zero_grad")
    p.add_argument("--print_every", type=int, default=50, help="table rows every N iterations")
    p.add_argument("--ours_flags", nargs=argparse.REMAINDER, default=[], help="extra flags for our train_acdc.py")
    args = p.parse_args(argv)
    if not os.path.isfile(os.path.join(args.released, "code", "train_ss_2d.py")):
        p.error(f"--released {args.released}: no code/train_ss_2d.py there; clone ycwu1997/SS-Net and pass its folder")
    sys.path.insert(0, os.path.join(ROOT, "code"))
    from dataloaders.splits import labeled_slice_count  # noqa: E402 (code/ on the path first)

    os.makedirs(args.out, exist_ok=True)
    labeled = labeled_slice_count(args.root_path, args.labelnum)
    released_log = run_released(args, labeled)
    ours_log = run_ours(args)
    rows, bad = compare(parse_log(released_log, RELEASED_LOSS, RELEASED_VAL),
                        parse_log(ours_log, OURS_LOSS, OURS_VAL), args.print_every)
    text = "\n".join(rows)
    with open(os.path.join(args.out, "comparison.md"), "w") as f:
        f.write(text + "\n")
    print(text)
    return 0 if bad == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
