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

BCP, one iteration of each stage (``--method bcp``)::

    git clone https://github.com/DeepMed-Lab-ECNU/BCP /tmp/BCP          # the authors' code, not shipped here
    python scripts/compare_released.py --method bcp --dataset LA --released /tmp/BCP      # ~5 min on 2 cores
    python scripts/compare_released.py --method bcp --dataset ACDC --released /tmp/BCP    # ~2 min
    # smaller (seconds): --dataset ACDC --patch_size 32 32 --labeled_bs 2 (batch 2 x labeled_bs), or
    # --dataset LA --patch_size 48 48 48 --labeled_bs 2 --seed 47 (the released V-Net needs >= 48 per side)
    # on a busy machine OMP_NUM_THREADS=1 is often faster

For each stage (pre-train, then self-train) the released script's own
``pre_train`` / ``self_train`` function runs for exactly one iteration, and ours
runs ``BCP.for_stage`` (built from our parsed flags), ``make_optimizer`` and
``engine.trainer.train_step``, on the same synthetic batch (default: the released
patch and batch, LA 112x112x80 x 8, ACDC 256x256 x 24), the same initial weights
and the same seed (``random``, ``numpy`` and ``torch`` seeded alike before each side,
so the box (numpy) and the dropout masks (torch, on the CPU) are drawn alike; the
teacher runs in train mode on both). Self-train starts both sides from the released
pre-train result, written as the released checkpoint ``{'net', 'opt'}`` and as ours
(``<model>_best_model.pth``, ``best_optimizer.pth``): ACDC continues that SGD state,
LA starts a fresh one. The released scripts parse flags and train at import, so
they are not imported: their statements are selected with ``ast`` and executed from
the released file (the parser, parsed with ``--pre_max_iteration 1`` etc., the
module-level assignments and the ``def``s; not the imports, the seeding block or
``__main__``); the names the imports bind are the real libraries and the released
``utils/losses.py``, ``utils/ramps.py``, ``networks/{VNet,unet}.py`` (imported by
path), ``net_factory``/``BCP_net`` and ``utils/BCP_utils.py``'s functions (again
selected with ``ast``), except the data pipeline (a loader of the one batch),
tensorboard (records the scalars), tqdm and validation (not reached). ``.cuda()``
is a no-op and ``--torch_zero_grad`` applies as above. The table gives, per stage,
the max abs difference of every logged loss term (ACDC self-train: ours logs the two
mixed images' losses, the released script their Dice and CE sums; both are compared,
from the recorded ``mix_loss`` results), the box, the teacher's logits and
pseudo-labels, the student's logits, each ``mix_loss`` result, the gradients, the
student's state_dict and SGD momentum after the step, the teacher's state_dict
after EMA and the numpy/torch generator states after the step. The exit status is
0 when all agree: floating values to ``1e-5`` x their magnitude (float rounding),
masks, labels, integer buffers and generator states exactly. At an LA patch other
than 112x112x80 ours gets ``copy_paste_mask(range_size=(112, 112, 80))``, the
released literal corner ranges (printed as a note; choose a ``--seed`` whose box
falls in the patch). ``tests/test_bcp_released.py`` runs it at a tiny size.

AD-MT, iterations with each teacher (``--method admt``)::

    git clone https://github.com/ZhenZHAO/AD-MT /tmp/ADMT               # the authors' code, not shipped here
    python scripts/compare_released.py --method admt --dataset LA --released /tmp/ADMT     # ~10 min on 2 cores
    python scripts/compare_released.py --method admt --dataset ACDC --released /tmp/ADMT   # ~5 min
    # smaller (seconds): --dataset ACDC --patch_size 32 32 --labeled_bs 2 (batch 2 x labeled_bs), or
    # --dataset LA --patch_size 16 16 16 --labeled_bs 2 (the V-Net needs multiples of 16);
    # --iterations 3 --rampup 0: a third iteration with a non-zero EMA momentum (0.5)

The released ``train`` of ``code/train_post_3d_aut.py`` (LA) / ``code/train_post_2d_aut.py`` (ACDC)
runs, configured by its ``cfgs/config_3d_la_aut.yml`` / ``cfgs/config_2d_aut.yml``, and ours runs
``ADMT.for_stage`` (from our parsed flags), ``make_optimizer`` and per iteration the learning rate of
``engine.training.learning_rate`` (as ``Trainer`` sets it) and ``engine.trainer.train_step``, for
``--iterations`` (default 2) iterations on the same synthetic batches (default: the released patch and
batch, LA 112x112x80 x 4, ACDC 256x256 x 24; the unlabeled items first, as the released sampler orders
them; weak and strong views: the released side gets ``image_weak``, ``image_strong``, ``label_aug``,
ours the same tensors as ``image`` (B, 2, *S) = [weak, strong] and ``label``), the same initial
weights of the student, teacher 1 and teacher 2 (each its own, loaded into both sides; the output
convolution scaled by ``--logit_scale`` and its class-0 bias raised by ``--background_bias``, so that
confident pseudo-labels, teachers' conflicts and the student's labels all occur from iteration 0) and
the same seed (``random``, ``numpy``, ``torch`` seeded alike before each side builds its networks). The
switch's first period, once drawn on both sides, is set to ``--first_period`` (default 1): iteration 0
runs teacher 1 (the photometric strong view), iteration 1 teacher 2 (CutMix of the weak views). Both
iterations run at 0.01 (the released poly rate is set after each step from the step's 0-based index).
The released script is not imported (it parses flags and trains under ``__main__``): its ``def``s and
the first statements of its ``__main__`` block (the parser, parsed from ``--cfg <yaml>``, and the yaml
read through ``update_values``) are executed from the released file; then ``batch_size``,
``labeled_bs``, ``patch_size`` and ``seed`` (and ``consistency_rampup`` with ``--rampup``) are set, and
the released ``train`` runs on a loader of the prepared batches until the validation after the last
one (a stand-in that ends the run). The names its imports bind are the real libraries and the
released ``utils/losses.py``, ``utils/ramps.py``, ``dataloaders/mixaugs.py``, ``networks/{vnet,unet}.py``
(imported by path), ``net_factory``, ``train_utils.py``'s ``AlternateUpdate`` and
``get_compromise_pseudo_btw_tea_stu`` and ``utils/util.py``'s helpers (selected with ``ast``), except the
data pipeline, tensorboard and pandas (record the scalars and the csv row), tqdm and validation;
``.cuda()`` is a no-op and ``--torch_zero_grad`` applies as above. The table gives, per iteration, every
logged term (the released tensorboard scalars and csv row: total, supervised, unsupervised loss, weight,
high-confidence ratio, conflict ratio (the released count per item / voxels), the active teacher), the
learning rate of the step and the one set after it, both teachers' logits, CutMix's image, pseudo-labels,
confidences and conflict mask, the student's logits, the conflict combating's inputs (ensemble
pseudo-labels and confidences, the student's labels and confidences, the teachers' conflict mask) and
results, the gradients, the student's state_dict and SGD momentum after the step, both teachers'
state_dicts after the EMA, the switch (active, counter, period) and the numpy/torch/python generator
states after; also the three networks as built from the seed and the settings both sides read. The exit
status is 0 when all agree (tolerances as for BCP). ``tests/test_admt_released.py`` runs it at a tiny size.
"""
from __future__ import annotations
import argparse
import ast
import contextlib
import functools
import importlib.util
import io
import json
import logging
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
import types
import warnings
from typing import Any

import numpy as np
import torch

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


class Progress:
    """Stand-in for the released scripts' ``tqdm``: iterates, prints nothing."""

    def __init__(self, iterable: Any, **kwargs: Any) -> None:
        self.iterable = iterable

    def __iter__(self) -> Any:
        return iter(self.iterable)

    def close(self) -> None:
        pass


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


# =========================================================================== BCP: one iteration
#
# The released scripts run argparse and two whole training stages at import, so they are not
# imported: their top-level statements are read with ``ast`` and only these are executed, from the
# released file itself (tracebacks show its lines): the argument parser (parsed with the argv
# below), the module-level assignments (``pre_max_iterations = args.pre_max_iteration``,
# ``dice_loss = losses.DiceLoss(4)``, ...) and every ``def``. Not executed: the imports (the names
# they bind are given, see :meth:`ReleasedBCP._script_namespace`), the seeding block (each side is
# seeded here) and ``__main__``. Then the released ``pre_train`` / ``self_train`` function itself
# runs, with ``--pre_max_iteration 1`` etc., so its loop makes exactly one iteration on a loader
# that yields one fixed batch.

BCP_SCRIPTS = {"LA": "LA_BCP_train.py", "ACDC": "ACDC_BCP_train.py"}
BCP_RELEASED_SIZE = {"LA": ((112, 112, 80), 8, 4), "ACDC": ((256, 256), 24, 12)}  # patch, batch, labeled
LA_MASK_RANGE = (112, 112, 80)  # the literals of the released LA context_mask (utils/BCP_utils.py:23-25)
BCP_STAGES = ("pre_train", "self_train")

#: our logged key -> the released tensorboard scalar holding the same term (per dataset and stage)
BCP_LOGGED = {
    ("LA", "pre_train"): {"loss": "pre/loss_all", "loss_dice": "pre/loss_dice", "loss_ce": "pre/loss_ce"},
    ("LA", "self_train"): {"loss": "Self/loss_all", "loss_labeled_outside": "Self/loss_l",
                           "loss_unlabeled_outside": "Self/loss_u"},
    ("ACDC", "pre_train"): {"loss": "info/total_loss", "loss_dice": "info/mix_dice", "loss_ce": "info/mix_ce"},
    ("ACDC", "self_train"): {"loss": "info/total_loss"},  # the others: run_released_bcp, run_ours_bcp
}

#: tolerance of a floating quantity: max |released - ours| <= RTOL * max |released| + ATOL
BCP_RTOL, BCP_ATOL = 1e-5, 1e-7


def _module_from_path(name: str, path: str) -> Any:
    """Import the released file ``path`` as module ``name`` (not through ``sys.path``, where our own
    ``utils`` and ``networks`` packages are)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _exec_released(path: str, ns: dict[str, Any], keep: Any) -> list[ast.stmt]:
    """Execute in ``ns`` the top-level statements of the released file ``path`` that ``keep(node)``
    selects, compiled from that file (line numbers kept). Returns them."""
    with open(path) as f:
        tree = ast.parse(f.read(), filename=path)
    body = [n for n in tree.body if keep(n)]
    exec(compile(ast.Module(body=body, type_ignores=[]), path, "exec"), ns)  # the released code, from its file
    return body


def _assigned_names(node: ast.stmt) -> set[str]:
    """Names bound by a plain ``name = ...`` statement (empty for anything else)."""
    if isinstance(node, ast.Assign) and all(isinstance(t, ast.Name) for t in node.targets):
        return {t.id for t in node.targets}
    return set()


def _is_parser_statement(node: ast.stmt) -> bool:
    if _assigned_names(node) == {"parser"}:
        return True
    return (isinstance(node, ast.Expr) and isinstance(node.value, ast.Call)
            and isinstance(node.value.func, ast.Attribute) and isinstance(node.value.func.value, ast.Name)
            and node.value.func.value.id == "parser")


def _defs(*names: str) -> Any:
    return lambda n: isinstance(n, ast.FunctionDef) and n.name in names or bool(_assigned_names(n) & set(names))


def _detach(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, (tuple, list)):
        return type(value)(_detach(v) for v in value)
    return value


def _first(output: Any) -> torch.Tensor:
    return output if isinstance(output, torch.Tensor) else output[0]


def _seed(seed: int) -> None:
    """Both sides: the global generators the step draws from, seeded alike before each side."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class _Recorder:
    """What one side's iteration produced: models, optimisers, logged scalars, calls of the mask,
    pseudo-label and loss functions (in call order), and the models' forward outputs."""

    def __init__(self) -> None:
        self.models: list[Any] = []
        self.optimizers: list[Any] = []
        self.scalars: dict[str, Any] = {}
        self.calls: dict[str, list[Any]] = {"mask": [], "plab": [], "mix_loss": []}
        self.outputs: list[list[torch.Tensor]] = []

    def wrap(self, kind: str, fn: Any) -> Any:
        def recorded(*a: Any, **k: Any) -> Any:
            out = fn(*a, **k)
            self.calls[kind].append(_detach(out))
            return out
        return recorded

    def watch(self, model: Any) -> Any:
        """Record ``model`` and the logits of each of its forward passes."""
        outs: list[torch.Tensor] = []
        model.register_forward_hook(lambda m, i, o: outs.append(_first(o).detach().clone()))
        self.models.append(model)
        self.outputs.append(outs)
        return model


@contextlib.contextmanager
def _released_torch(zero_grad: str) -> Any:
    """The released code on this machine: ``.cuda()`` a no-op; with ``zero_grad == "1.8"``,
    ``optimizer.zero_grad()`` fills zeros as on PyTorch 1.8 (as the SS-Net comparison does)."""
    saved = torch.Tensor.cuda, torch.nn.Module.cuda, torch.optim.Optimizer.zero_grad
    torch.Tensor.cuda = lambda self, *a, **k: self
    torch.nn.Module.cuda = lambda self, *a, **k: self
    if zero_grad == "1.8":
        torch.optim.Optimizer.zero_grad = lambda self, set_to_none=False: saved[2](self, set_to_none=set_to_none)
    try:
        yield
    finally:
        torch.Tensor.cuda, torch.nn.Module.cuda, torch.optim.Optimizer.zero_grad = saved


class ReleasedBCP:
    """The released BCP code of ``dataset`` from the checkout ``root``, loaded without running it."""

    def __init__(self, root: str, dataset: str) -> None:
        self.dataset = dataset
        self.code = os.path.join(root, "code")
        self.script = os.path.join(self.code, BCP_SCRIPTS[dataset])
        tag = f"bcp_released_{dataset.lower()}"
        with _released_torch("current"):
            self.losses = _module_from_path(f"{tag}_losses", os.path.join(self.code, "utils", "losses.py"))
            self.ramps = _module_from_path(f"{tag}_ramps", os.path.join(self.code, "utils", "ramps.py"))
            vnet = _module_from_path(f"{tag}_vnet", os.path.join(self.code, "networks", "VNet.py"))
            unet = _module_from_path(f"{tag}_unet", os.path.join(self.code, "networks", "unet.py"))
            # networks/net_factory.py: its two functions, over the released network classes
            self.factory: dict[str, Any] = {"UNet": unet.UNet, "UNet_2d": unet.UNet_2d, "VNet": vnet.VNet,
                                            "nn": torch.nn}
            _exec_released(os.path.join(self.code, "networks", "net_factory.py"), self.factory,
                           _defs("net_factory", "BCP_net"))
            # utils/BCP_utils.py (LA): its loss objects and the functions the LA script imports from it
            self.bcp_utils: dict[str, Any] = {"np": np, "torch": torch, "nn": torch.nn, "random": random,
                                              "mask_DiceLoss": self.losses.mask_DiceLoss}
            _exec_released(os.path.join(self.code, "utils", "BCP_utils.py"), self.bcp_utils,
                           _defs("DICE", "CE", "context_mask", "mix_loss", "update_ema_variables",
                                 "parameter_sharing"))

    def _script_namespace(self, rec: _Recorder, batch: dict[str, torch.Tensor],
                          init: dict[str, torch.Tensor] | None, network: Any = None) -> dict[str, Any]:
        """The names the script's imports bind: the real libraries and released modules, except the
        data pipeline (a loader of the one batch), tensorboard (records the scalars), tqdm and the
        validation modules (not reached in one iteration), and the network factory and SGD, wrapped
        to record what they build (the pre-train network then gets the common initial weights)."""
        from skimage.measure import label

        class OneBatchLoader:  # DataLoader: the training loader yields `batch` once; the others nothing
            def __init__(self, dataset: Any = None, batch_size: int = 1, shuffle: bool = False,
                         batch_sampler: Any = None, **kwargs: Any) -> None:
                self.batches = [batch] if batch_sampler is not None else []

            def __len__(self) -> int:
                return max(1, len(self.batches))

            def __iter__(self) -> Any:
                return iter([{k: v.clone() for k, v in b.items()} for b in self.batches])

        class Writer:  # tensorboardX.SummaryWriter
            def __init__(self, *a: Any, **k: Any) -> None:
                pass

            def add_scalar(self, tag: str, value: Any, step: Any = None) -> None:
                rec.scalars[tag] = _detach(value)

            def add_image(self, *a: Any, **k: Any) -> None:
                pass

            add_images = add_image

            def close(self) -> None:
                pass

        class Stub:  # datasets, transforms, samplers: built by the script, unused with OneBatchLoader
            def __init__(self, *a: Any, **k: Any) -> None:
                pass

            def __len__(self) -> int:
                return 10 ** 4

        def built(net: Any) -> Any:
            if init is not None and not rec.models:
                net.load_state_dict(init)
            return rec.watch(net)

        def net_factory(*a: Any, **k: Any) -> Any:
            return built(network() if network is not None else self.factory["net_factory"](*a, **k))

        def BCP_net(*a: Any, **k: Any) -> Any:  # noqa: N802 (the released name)
            return built(network() if network is not None else self.factory["BCP_net"](*a, **k))

        def sgd(*a: Any, **k: Any) -> Any:
            rec.optimizers.append(torch.optim.SGD(*a, **k))
            return rec.optimizers[-1]

        stub_module = types.SimpleNamespace
        ns: dict[str, Any] = {
            "__name__": "bcp_released_script", "os": os, "sys": sys, "logging": logging, "random": random,
            "shutil": shutil, "time": time, "argparse": argparse, "np": np, "torch": torch, "nn": torch.nn,
            "F": torch.nn.functional, "cudnn": torch.backends.cudnn, "optim": stub_module(SGD=sgd),
            "CrossEntropyLoss": torch.nn.CrossEntropyLoss, "label": label, "tqdm": Progress,
            "SummaryWriter": Writer, "DataLoader": OneBatchLoader, "transforms": stub_module(Compose=Stub),
            "losses": self.losses, "ramps": self.ramps, "test_3d_patch": None, "val_2d": None,
            "net_factory": net_factory, "BCP_net": BCP_net,
            "LAHeart": Stub, "BaseDataSets": Stub, "RandomRotFlip": Stub, "RandomCrop": Stub, "ToTensor": Stub,
            "RandomGenerator": Stub, "TwoStreamBatchSampler": Stub, "ThreeStreamBatchSampler": Stub,
        }
        for name in ("context_mask", "mix_loss", "parameter_sharing", "update_ema_variables"):
            ns[name] = self.bcp_utils[name]  # LA: from utils.BCP_utils import ... (ACDC defines its own)
        return ns

    def load_script(self, rec: _Recorder, batch: dict[str, torch.Tensor], init: dict[str, torch.Tensor] | None,
                    argv: list[str], network: Any = None) -> tuple[dict[str, Any], str]:
        """The script's parser (parsed with ``argv``), module-level assignments and functions in a
        fresh namespace; its mask, pseudo-label and loss functions wrapped to record their results.
        Returns the namespace and a one-line account of what was executed."""
        ns = self._script_namespace(rec, batch, init, network)
        parser = _exec_released(self.script, ns, _is_parser_statement)
        ns["args"] = ns["parser"].parse_args(argv)
        body = _exec_released(self.script, ns, lambda n: isinstance(n, ast.FunctionDef) or (
            bool(_assigned_names(n)) and not _assigned_names(n) & {"parser", "args"}))
        if self.dataset == "ACDC":
            ns["args"].patch_size = None  # type=list in the released parser; only the (stubbed) transform reads it
        names = {"LA": ("context_mask", "get_cut_mask", "mix_loss"),
                 "ACDC": ("generate_mask", "get_ACDC_masks", "mix_loss")}[self.dataset]
        for kind, name in zip(("mask", "plab", "mix_loss"), names):
            ns[name] = rec.wrap(kind, ns[name])
        account = (f"{os.path.basename(self.script)}: parser (lines {parser[0].lineno}-{parser[-1].lineno}) with "
                   f"argv {' '.join(argv)}; {sum(isinstance(n, ast.Assign) for n in body)} module-level "
                   f"assignments and {sum(isinstance(n, ast.FunctionDef) for n in body)} functions")
        return ns, account


def _bcp_batch(dataset: str, patch: tuple[int, ...], batch: int, seed: int) -> dict[str, torch.Tensor]:
    """A synthetic batch: a blob per item (LA: binary; ACDC: classes 3, 2, 1 inside out), image =
    label + noise, standardised. Labels as the released loaders give them (LA int64, ACDC uint8)."""
    rs = np.random.RandomState(seed)
    grids = np.meshgrid(*[np.arange(s, dtype=np.float64) for s in patch], indexing="ij")
    images, labels = [], []
    for _ in range(batch):
        r = np.sqrt(sum(((g - rs.uniform(0.35, 0.65) * s) / (rs.uniform(0.15, 0.3) * s)) ** 2
                        for g, s in zip(grids, patch)))
        if dataset == "LA":
            lab = (r < 1).astype(np.int64)
        else:
            lab = np.select([r < 0.5, r < 0.8, r < 1.1], [3, 2, 1], 0).astype(np.uint8)
        img = lab.astype(np.float64) * 0.7 + rs.normal(0.0, 0.5, size=patch)
        images.append(((img - img.mean()) / img.std()).astype(np.float32))
        labels.append(lab)
    return {"image": torch.from_numpy(np.stack(images)[:, None]), "label": torch.from_numpy(np.stack(labels))}


def _side_summary(rec: _Recorder, model: Any, optimizer: Any, teacher: Any | None,
                  logged: dict[str, Any]) -> dict[str, Any]:
    """One side's results after the iteration, in a common form."""
    return {
        "logged": {k: float(v) for k, v in logged.items()},
        "calls": rec.calls,
        "student_out": rec.outputs[0],
        "teacher_out": rec.outputs[1] if teacher is not None else [],
        "grads": {n: (None if q.grad is None else q.grad.detach().clone()) for n, q in model.named_parameters()},
        "student": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "teacher": ({k: v.detach().clone() for k, v in teacher.state_dict().items()} if teacher is not None
                    else None),
        "momentum": {k: v["momentum_buffer"].clone() for k, v in optimizer.state_dict()["state"].items()
                     if v.get("momentum_buffer") is not None},
        "np_state": np.random.get_state()[1].copy(),
        "torch_state": torch.get_rng_state().clone(),
    }


def run_released_bcp(rel: ReleasedBCP, stage: str, batch: dict[str, torch.Tensor], seed: int, labeled_bs: int,
                     init: dict[str, torch.Tensor] | None, start: str | None, zero_grad: str,
                     network: Any = None) -> tuple[dict[str, Any], Any, str]:
    """One iteration of the released ``stage`` function. ``init``: the pre-train network's initial
    weights; ``start``: the folder holding ``<model>_best_model.pth`` ({'net', 'opt'}) for
    self-train. Returns the summary, the optimiser and an account of what ran."""
    rec = _Recorder()
    iters = (["--pre_max_iteration", "1", "--self_max_iteration", "1"] if rel.dataset == "LA"
             else ["--pre_iterations", "1", "--max_iterations", "1"])
    argv = ["--batch_size", str(batch["image"].shape[0]), "--labeled_bs", str(labeled_bs),
            "--seed", str(seed), *iters]
    printed = io.StringIO()  # the released print()s ("Total slices is: ...") and warnings are not shown
    with _released_torch(zero_grad), contextlib.redirect_stdout(printed), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ns, account = rel.load_script(rec, batch, init, argv, network)
        ns["pre_snapshot_path"] = start or ""  # a global of ACDC's pre_train (file name only)
        with tempfile.TemporaryDirectory() as out:
            _seed(seed)
            if stage == "pre_train":
                ns["pre_train"](ns["args"], out)
            else:
                ns["self_train"](ns["args"], start, out)
    teacher = rec.models[1] if stage == "self_train" else None
    logged = {ours: rec.scalars[theirs] for ours, theirs in BCP_LOGGED[(rel.dataset, stage)].items()}
    if (rel.dataset, stage) == ("ACDC", "self_train"):
        logged["mix_dice"], logged["mix_ce"] = rec.scalars["info/mix_dice"], rec.scalars["info/mix_ce"]
        (unl_dice, unl_ce), (l_dice, l_ce) = rec.calls["mix_loss"]
        logged["loss_unlabeled_outside"] = (unl_dice + unl_ce) / 2
        logged["loss_labeled_outside"] = (l_dice + l_ce) / 2
    return _side_summary(rec, rec.models[0], rec.optimizers[0], teacher, logged), rec.optimizers[0], account


def run_ours_bcp(dataset: str, stage: str, batch: dict[str, torch.Tensor], seed: int, labeled_bs: int,
                 patch: tuple[int, ...], init: dict[str, torch.Tensor] | None, start: str | None,
                 zero_grad: str, network: Any = None) -> dict[str, Any]:
    """One iteration of ours: ``BCP.for_stage`` from the parsed flags, ``make_optimizer`` (plus the
    optimiser state the method carries, as ``Trainer.__init__`` does) and ``train_step``."""
    import methods.bcp as bcp_module
    from datasets import get_dataset
    from engine.trainer import make_optimizer, train_step
    from engine.training import parse_args

    d = get_dataset(dataset)
    flags = ["--method", "bcp", "--device", "cpu", "--seed", str(seed), "--batch_size", str(batch["image"].shape[0]),
             "--labeled_bs", str(labeled_bs), "--patch_size", *map(str, patch),
             "--zero_grad", "zero" if zero_grad == "1.8" else "none"]
    config = parse_args(d, flags)
    stages = {s.name: s for s in bcp_module.BCP.stages(config, d)}
    rec = _Recorder()
    names = {"mask": "copy_paste_mask", "plab": "pseudo_labels",
             "mix_loss": "bcp_mix_loss_la" if dataset == "LA" else "bcp_mix_loss_acdc"}
    saved = {name: getattr(bcp_module, name) for name in names.values()}
    build_model = bcp_module.BCP.__dict__["build_model"]
    mask_fn = saved["copy_paste_mask"]
    if dataset == "LA" and tuple(patch) != LA_MASK_RANGE:  # the released corner ranges at another patch size
        mask_fn = functools.partial(mask_fn, range_size=LA_MASK_RANGE)
    try:
        for kind, name in names.items():
            setattr(bcp_module, name, rec.wrap(kind, mask_fn if kind == "mask" else saved[name]))
        if network is not None:
            bcp_module.BCP.build_model = classmethod(lambda cls, *a, **k: network())
        _seed(seed)
        method = bcp_module.BCP.for_stage(config, d, d.num_classes, torch.device("cpu"), stages[stage], start)
        if init is not None:
            method.model.load_state_dict(init)
        rec.watch(method.model)
        if method.teacher is not None:
            rec.watch(method.teacher)
        optimizer = make_optimizer(method.model, config.base_lr)
        if method.optimizer_state is not None:  # as Trainer.__init__ (engine/trainer.py)
            optimizer.load_state_dict(method.optimizer_state)
        image, label = batch["image"].clone(), batch["label"].clone().long()  # as Trainer._train
        out = train_step(method, optimizer, image, label, 0, zero_grad=config.zero_grad)
    finally:
        for name, fn in saved.items():
            setattr(bcp_module, name, fn)
        bcp_module.BCP.build_model = build_model
    logged = {k: out[k] for k in method.log_keys}
    if (dataset, stage) == ("ACDC", "self_train"):
        (unl_dice, unl_ce), (l_dice, l_ce) = rec.calls["mix_loss"]
        logged["mix_dice"], logged["mix_ce"] = unl_dice + l_dice, unl_ce + l_ce
    return _side_summary(rec, method.model, optimizer, method.teacher, logged)


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """(max |a - b|, max |a|) in float64; inf if the shapes differ."""
    if tuple(a.shape) != tuple(b.shape):
        return float("inf"), 0.0
    if a.dtype == b.dtype and torch.equal(a, b):
        return 0.0, 0.0
    a64, b64 = a.double(), b.double()
    return (float((a64 - b64).abs().max()) if a.numel() else 0.0,
            float(a64.abs().max()) if a.numel() else 0.0)


class _Table:
    """Rows ``| stage | quantity | compared | max abs diff | agree |``."""

    def __init__(self) -> None:
        self.rows = ["| stage | quantity | compared | max abs diff | agree |", "|---|---|---|---|---|"]
        self.bad = 0

    def add(self, stage: str, quantity: str, compared: str, diff: float, ok: bool) -> None:
        self.bad += 0 if ok else 1
        self.rows.append(f"| {stage} | {quantity} | {compared} | {diff:.3g} | {'yes' if ok else 'NO'} |")

    def floats(self, stage: str, quantity: str, rel: list[torch.Tensor] | dict[str, Any],
               ours: list[torch.Tensor] | dict[str, Any], exact: bool = False) -> None:
        """Tensors in order (lists) or by name (dicts, None entries: no gradient, must match)."""
        if isinstance(rel, dict):
            if set(rel) != set(ours):
                only = sorted(set(rel) ^ set(ours))[:3]
                self.add(stage, quantity, f"names differ, e.g. {only}", float("inf"), False)
                return
            nones = [k for k in rel if (rel[k] is None) != (ours[k] is None)]
            if nones:
                self.add(stage, quantity, f"no gradient on one side only: {nones[:3]}", float("inf"), False)
                return
            pairs = [(k, rel[k], ours[k]) for k in rel if rel[k] is not None]
        else:
            if len(rel) != len(ours):
                self.add(stage, quantity, f"{len(rel)} released, {len(ours)} ours", float("inf"), False)
                return
            pairs = [(str(i), a, b) for i, (a, b) in enumerate(zip(rel, ours))]
        worst, worst_name, ok = 0.0, "", True
        for name, a, b in pairs:
            diff, scale = _max_diff(a, b)
            floating = a.is_floating_point() and not exact
            ok = ok and (diff <= BCP_RTOL * scale + BCP_ATOL if floating else diff == 0)
            if diff > worst or not worst_name:
                worst, worst_name = diff, name
        numel = sum(a.numel() for _, a, _ in pairs)
        where = f", largest at {worst_name}" if isinstance(rel, dict) and worst > 0 else ""
        self.add(stage, quantity, f"{len(pairs)} tensors, {numel} values{where}", worst, ok)


def compare_bcp_stage(table: _Table, stage: str, rel: dict[str, Any], ours: dict[str, Any]) -> None:
    """Every quantity of one stage's iteration: logged terms, box, pseudo-labels, loss calls, logits,
    gradients, student weights and momentum after the step, teacher after EMA, generator states."""
    for key in rel["logged"]:
        r, o = rel["logged"][key], ours["logged"].get(key)
        diff = abs(r - o) if o is not None else float("inf")
        table.add(stage, f"logged {key}", f"{r:.8f} vs {o if o is None else f'{o:.8f}'}", diff,
                  diff <= BCP_RTOL * abs(r) + BCP_ATOL)
    for key in sorted(set(ours["logged"]) - set(rel["logged"])):
        table.add(stage, f"logged {key}", "ours only: no released counterpart", float("inf"), False)
    masks = lambda side: [m.float() for call in side["calls"]["mask"] for m in call]  # noqa: E731
    table.floats(stage, "box mask, loss mask", masks(rel), masks(ours), exact=True)
    if rel["calls"]["plab"] or ours["calls"]["plab"]:
        table.floats(stage, "teacher logits (unlabeled a, b)", rel["teacher_out"], ours["teacher_out"])
        table.floats(stage, "pseudo-labels (a, b)", [p.long() for p in rel["calls"]["plab"]],
                     [p.long() for p in ours["calls"]["plab"]], exact=True)
    table.floats(stage, "student logits (each forward)", rel["student_out"], ours["student_out"])
    flat = lambda side: [torch.as_tensor(v) for call in side["calls"]["mix_loss"]  # noqa: E731
                         for v in (call if isinstance(call, tuple) else (call,))]
    if rel["calls"]["mix_loss"] or ours["calls"]["mix_loss"]:
        table.floats(stage, "mix_loss results (each call)", flat(rel), flat(ours))
    table.floats(stage, "gradients", rel["grads"], ours["grads"])
    table.floats(stage, "student state_dict after SGD", rel["student"], ours["student"])
    table.floats(stage, "SGD momentum buffers", rel["momentum"], ours["momentum"])
    if rel["teacher"] is not None or ours["teacher"] is not None:
        table.floats(stage, "teacher state_dict after EMA", rel["teacher"] or {}, ours["teacher"] or {})
    table.floats(stage, "numpy / torch generator states after", [torch.from_numpy(rel["np_state"].astype(np.int64)),
                 rel["torch_state"]], [torch.from_numpy(ours["np_state"].astype(np.int64)), ours["torch_state"]],
                 exact=True)


def compare_bcp(released: str, dataset: str, patch: tuple[int, ...], batch_size: int, labeled_bs: int, seed: int,
                zero_grad: str = "1.8", log: Any = print, network: Any = None
                ) -> tuple[list[str], int, dict[str, Any]]:
    """One iteration of each BCP stage on ``dataset``, released against ours. Returns the table's
    rows, the number of disagreements and facts about the run (the box, pseudo-label counts).

    ``network``: None (the released networks there, ours here), or for a quick test a function
    building one small network that both sides then use in place of their own (the released V-Net
    needs patches of at least 48 voxels per side, its ``pool`` of the deepest features)."""
    if batch_size != 2 * labeled_bs or labeled_bs % 2:
        raise ValueError("BCP: --batch_size must be 2 x --labeled_bs and --labeled_bs even (halves a and b of the "
                         "labeled and unlabeled items)")
    rel = ReleasedBCP(released, dataset)
    batch = _bcp_batch(dataset, patch, batch_size, seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 1)
        from methods.bcp import BCP
        net = network() if network is not None else BCP.build_model(dataset, 2 if dataset == "LA" else 4,
                                                                      "train", "cpu")
        init = {k: v.clone() for k, v in net.state_dict().items()}
    table, facts = _Table(), {}
    with tempfile.TemporaryDirectory() as tmp:
        released_start, ours_start = os.path.join(tmp, "released"), os.path.join(tmp, "ours")
        for stage in BCP_STAGES:
            t0 = time.time()
            r, optimizer, account = run_released_bcp(rel, stage, batch, seed, labeled_bs,
                                                     init if stage == "pre_train" else None,
                                                     released_start if stage == "self_train" else None, zero_grad,
                                                     network)
            t1 = time.time()
            o = run_ours_bcp(dataset, stage, batch, seed, labeled_bs, patch, init if stage == "pre_train" else None,
                             ours_start if stage == "self_train" else None, zero_grad, network)
            log(f"{dataset} {stage}: released {account} [{t1 - t0:.1f}s]; ours BCP.for_stage + train_step "
                f"[{time.time() - t1:.1f}s]")
            mask = r["calls"]["mask"][0][0]
            inside = (mask == 0).nonzero().unbind(1)
            box = [(int(i.min()), int(i.max()) + 1) for i in inside] if (mask == 0).any() else []
            facts[stage] = {"pasted_voxels": int((mask == 0).sum()), "box": box,
                            "pseudo_foreground": [int((p > 0).sum()) for p in r["calls"]["plab"]]}
            log(f"  box (pasted region) {box or 'EMPTY'}: {facts[stage]['pasted_voxels']} voxels per item"
                + (f"; pseudo-label foreground voxels {facts[stage]['pseudo_foreground']}"
                   if r["calls"]["plab"] else ""))
            compare_bcp_stage(table, stage, r, o)
            if stage == "pre_train":  # self-train of both sides starts from the released pre-train result
                weights = {k: v.clone() for k, v in r["student"].items()}
                os.makedirs(released_start)
                os.makedirs(ours_start)
                model = "VNet" if dataset == "LA" else "unet"
                torch.save({"net": weights, "opt": optimizer.state_dict()},
                           os.path.join(released_start, f"{model}_best_model.pth"))
                torch.save(weights, os.path.join(ours_start, f"{model}_best_model.pth"))
                torch.save(optimizer.state_dict(), os.path.join(ours_start, "best_optimizer.pth"))
    table.rows += ["", f"{table.bad} disagreements (floating quantities: max abs diff <= {BCP_RTOL:g} x max abs "
                   f"released + {BCP_ATOL:g}; masks, pseudo-labels, integer buffers and generator states: equal)"]
    return table.rows, table.bad, facts


def _sizes(args: argparse.Namespace, released: tuple[tuple[int, ...], int, int]) -> tuple[tuple[int, ...], int, int]:
    """(patch, batch, labeled batch) of a one-iteration comparison: the flags given, else the released
    sizes; a batch of twice --labeled_bs when only that is given."""
    patch_default, batch_default, labeled_default = released
    patch = tuple(args.patch_size or patch_default)
    if len(patch) != len(patch_default):
        raise SystemExit(f"--patch_size takes {len(patch_default)} numbers for {args.dataset}")
    labeled_bs = args.labeled_bs or labeled_default
    return patch, args.batch_size or (2 * labeled_bs if args.labeled_bs else batch_default), labeled_bs


def _report(rows: list[str], out: str | None, name: str) -> None:
    """Print the comparison table, and write it to ``out/name`` when --out is given."""
    text = "\n".join(rows)
    if out:
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, name), "w") as f:
            f.write(text + "\n")
    print(text)


def main_bcp(args: argparse.Namespace) -> int:
    if not os.path.isfile(os.path.join(args.released, "code", BCP_SCRIPTS[args.dataset])):
        raise SystemExit(f"--released {args.released}: no code/{BCP_SCRIPTS[args.dataset]} there; clone "
                         "DeepMed-Lab-ECNU/BCP and pass its folder")
    sys.path.insert(0, os.path.join(ROOT, "code"))
    patch, batch_size, labeled_bs = _sizes(args, BCP_RELEASED_SIZE[args.dataset])
    if args.dataset == "LA" and patch != LA_MASK_RANGE:
        print(f"note: patch {patch} is not the released 112x112x80; the released context_mask draws the box corner "
              f"in ranges of the literals 112, 112, 80, so ours gets copy_paste_mask(range_size={LA_MASK_RANGE})")
    print(f"BCP {args.dataset}: patch {patch}, batch {batch_size} ({labeled_bs} labeled), seed {args.seed}, "
          f"zero_grad {args.torch_zero_grad}, torch {torch.__version__} on the CPU", flush=True)
    rows, bad, facts = compare_bcp(args.released, args.dataset, patch, batch_size, labeled_bs, args.seed,
                                   args.torch_zero_grad)
    _report(rows, args.out, f"comparison_bcp_{args.dataset}.md")
    if not all(f["pasted_voxels"] for f in facts.values()):
        print("warning: the box lies outside the patch (nothing pasted); choose another --seed")
    return 0 if bad == 0 else 1


# =========================================================================== AD-MT: iterations of each teacher
#
# As for BCP, the released script is not imported (it parses flags and trains under ``__main__``).
# Executed from the released file: every top-level ``def`` (``train``, ``update_ema_variables``,
# ``get_current_consistency_weight``, ACDC ``patients_to_slices``) and the first statements of its
# ``__main__`` block, the parser through ``update_values(options_yaml, args)`` (flags parsed from a
# patched ``sys.argv``, then the released yaml of ``cfgs/`` read from the checkout's root, which
# overrides them). Not executed: the imports (the names they bind are given, see
# :meth:`ReleasedADMT._namespace`), the GPU, seeding, output and logging statements of ``__main__``
# (each side is seeded here), and its ``train(...)`` call: the released ``train`` is called here, on
# a loader of the prepared batches; it stops at the validation that follows the loader's last batch.

ADMT_SCRIPTS = {"LA": ("train_post_3d_aut.py", "config_3d_la_aut.yml"),
                "ACDC": ("train_post_2d_aut.py", "config_2d_aut.yml")}
ADMT_RELEASED_SIZE = {"LA": ((112, 112, 80), 4, 2), "ACDC": ((256, 256), 24, 12)}  # patch, batch, labeled
#: default scale of the output convolution and bias added to its class-0 output (see :func:`_admt_inits`)
ADMT_INIT = {"LA": (4.0, 0.0), "ACDC": (8.0, 3.0)}
ADMT_ROLES = ("student", "teacher 1", "teacher 2")  # the released build order: model, ema_model, ema_model_another

#: our logged key -> the released record of the same iteration (tensorboard tag, or ``csv/<column>`` of the
#: per-iteration csv row); ``conflict_ratio``: the released count per item, divided here by the voxels of an
#: item (ours logs the fraction); ``teacher``: the released switch state when the batch was fetched
ADMT_LOGGED = {"loss": "info/total_loss", "loss_sup": "info/loss_lb", "loss_unsup": "info/loss_ulb",
               "weight": "info/consistency_weight", "high_ratio": "csv/high_ratio",
               "conflict_ratio": "info/conflict_ratio", "teacher": "switch at fetch"}


class _ValidationReached(Exception):
    """Raised by the validation stand-in: the released loop has run every prepared batch."""


class _ADMTRecorder:
    """One side's AD-MT run: per iteration the recorded calls (CutMix, conflict combating, the optimiser
    step), the forward outputs of each network, and a snapshot after the iteration's last statement
    (weights, momentum, switch, generator states)."""

    def __init__(self) -> None:
        self.models: dict[str, Any] = {}
        self.built: dict[str, dict[str, torch.Tensor]] = {}
        self.optimizer: Any = None
        self.switch: Any = None
        self.scalars: dict[int, dict[str, float]] = {}
        self.at_fetch: list[bool] = []
        self.iterations: list[dict[str, Any]] = []
        self._reset()

    def _reset(self) -> None:
        self.calls: dict[str, list[Any]] = {"cutmix": [], "combat": [], "step": []}
        self.outputs: dict[str, list[torch.Tensor]] = {role: [] for role in ADMT_ROLES}

    def watch(self, role: str, model: Any) -> Any:
        self.models[role] = model
        model.register_forward_hook(lambda m, i, o: self.outputs[role].append(_first(o).detach().clone()))
        return model

    def watch_optimizer(self, optimizer: Any, names: dict[int, str]) -> Any:
        """Record the learning rate and the gradients (by parameter name) at each ``step()``."""
        self.optimizer = optimizer
        step = optimizer.step

        def recorded(*a: Any, **k: Any) -> Any:
            grads = {}
            for p in optimizer.param_groups[0]["params"]:
                grads[names[id(p)]] = None if p.grad is None else p.grad.detach().clone()
            self.calls["step"].append({"lr": float(optimizer.param_groups[0]["lr"]), "grads": grads})
            return step(*a, **k)

        optimizer.step = recorded
        return optimizer

    def snapshot(self, switch_state: tuple[int, int, int], key: Any) -> None:
        """The state after an iteration; ``key`` maps a state_dict key to ours."""
        states = {role: {key(k): v.detach().clone() for k, v in m.state_dict().items()}
                  for role, m in self.models.items()}
        names = [key(n) for n, _ in self.models["student"].named_parameters()]
        opt_state = self.optimizer.state_dict()["state"]
        self.iterations.append({
            "calls": self.calls, "outputs": self.outputs, "states": states, "switch": switch_state,
            "momentum": {names[i]: s["momentum_buffer"].clone() for i, s in opt_state.items()
                         if s.get("momentum_buffer") is not None},
            "np_state": np.random.get_state()[1].copy(), "torch_state": torch.get_rng_state().clone(),
            "py_state": torch.tensor(random.getstate()[1], dtype=torch.int64)})
        self._reset()

    def wrap(self, kind: str, fn: Any, normalise: Any) -> Any:
        def recorded(*a: Any, **k: Any) -> Any:
            out = fn(*a, **k)
            self.calls[kind].append(_detach(normalise(a, out)))
            return out
        return recorded


def _admt_key_map(released_keys: list[str], ours: dict[str, torch.Tensor]) -> dict[str, str]:
    """Released state_dict key -> ours, by position (the released LA V-Net has no ``encoder.`` /
    ``decoder.`` prefixes; the U-Nets' keys are equal). Checked: same count, ours ends with the
    released key."""
    keys = list(ours)
    if len(keys) != len(released_keys) or not all(o == r or o.endswith("." + r) for r, o in zip(released_keys, keys)):
        raise RuntimeError("AD-MT: the released network's state_dict does not correspond to ours key by key")
    return dict(zip(released_keys, keys))


class ReleasedADMT:
    """The released AD-MT code of ``dataset`` from the checkout ``root``, loaded without running it."""

    def __init__(self, root: str, dataset: str) -> None:
        self.root, self.dataset = root, dataset
        self.code = os.path.join(root, "code")
        script, cfg = ADMT_SCRIPTS[dataset]
        self.script, self.cfg = os.path.join(self.code, script), cfg
        tag = f"admt_released_{dataset.lower()}"
        with _released_torch("current"):
            self.losses = _module_from_path(f"{tag}_losses", os.path.join(self.code, "utils", "losses.py"))
            self.ramps = _module_from_path(f"{tag}_ramps", os.path.join(self.code, "utils", "ramps.py"))
            self.mixaugs = _module_from_path(f"{tag}_mixaugs", os.path.join(self.code, "dataloaders", "mixaugs.py"))
            vnet = _module_from_path(f"{tag}_vnet", os.path.join(self.code, "networks", "vnet.py"))
            unet = _module_from_path(f"{tag}_unet", os.path.join(self.code, "networks", "unet.py"))
            # networks/net_factory.py: its function, over the released network classes
            self.factory: dict[str, Any] = {"VNet": vnet.VNet, **{n: getattr(unet, n) for n in (
                "UNet", "UNet_DS", "UNet_URPC", "UNet_CCT")}}
            _exec_released(os.path.join(self.code, "networks", "net_factory.py"), self.factory, _defs("net_factory"))
            # train_utils.py: the switch and the conflict combating; utils/util.py: the script's helpers
            self.train_utils: dict[str, Any] = {"np": np, "torch": torch, "F": torch.nn.functional}
            _exec_released(os.path.join(self.code, "train_utils.py"), self.train_utils, lambda n: (
                isinstance(n, (ast.FunctionDef, ast.ClassDef))
                and n.name in ("AlternateUpdate", "get_compromise_pseudo_btw_tea_stu")))
            from datetime import datetime
            self.util: dict[str, Any] = {"np": np, "datetime": datetime}
            _exec_released(os.path.join(self.code, "utils", "util.py"), self.util, lambda n: (
                isinstance(n, (ast.FunctionDef, ast.ClassDef)) and n.name in ("time_str", "update_values",
                                                                              "AverageMeter")))

    def _namespace(self, rec: _ADMTRecorder, batches: list[dict[str, torch.Tensor]],
                   inits: list[dict[str, torch.Tensor]], first_period: int, network: Any = None) -> dict[str, Any]:
        """The names the script's imports bind: the real libraries and released modules, except the data
        pipeline (a loader of the prepared batches), tensorboard and pandas (record the scalars), tqdm
        and validation (raises :class:`_ValidationReached`); the network factory, SGD and the switch are
        wrapped to record what they build (the networks then get the common initial weights; the
        switch's first period, once drawn, is set to ``first_period`` unless 0)."""
        import yaml

        key = {"map": None}  # released state_dict key -> ours, known once the student is built

        def to_ours(k: str) -> str:
            return key["map"][k]

        def switch_state() -> tuple[int, int, int]:
            s = rec.switch
            return int(s.flag_alternate), int(s._counter), int(s.random_alternate_period)

        def done(k: int) -> None:  # iteration k has run its last statement
            if len(rec.iterations) == k:
                rec.snapshot(switch_state(), to_ours)

        class Loader:  # DataLoader: the training loader (a batch sampler) yields the batches; others one placeholder
            def __init__(self, dataset: Any = None, batch_size: int = 1, shuffle: bool = False,
                         batch_sampler: Any = None, **kwargs: Any) -> None:
                self.training = batch_sampler is not None

            def __len__(self) -> int:
                return len(batches) if self.training else 1

            def __iter__(self) -> Any:
                if not self.training:
                    yield {"image": None, "label": None}  # ACDC's validation loader: to the validation stand-in
                    return
                for k, b in enumerate(batches):
                    if k:
                        done(k - 1)  # the loop asks for batch k after iteration k - 1
                    rec.at_fetch.append(bool(rec.switch.flag_alternate))
                    yield {n: v.clone() for n, v in b.items()}
                done(len(batches) - 1)

        def validation(*a: Any, **k: Any) -> Any:  # val_3D.var_all_case_LA / val_2D.test_single_volume
            done(len(batches) - 1)
            raise _ValidationReached

        class Writer:  # torch.utils.tensorboard.SummaryWriter
            def __init__(self, *a: Any, **k: Any) -> None:
                pass

            def add_scalar(self, tag: str, value: Any, step: int) -> None:
                rec.scalars.setdefault(int(step), {})[tag] = float(value)

            def close(self) -> None:
                pass

        class Frame:  # pandas.DataFrame of the per-iteration csv row: its columns recorded, nothing written
            def __init__(self, data: dict[str, Any], index: Any) -> None:
                row = rec.scalars.setdefault(int(list(index)[0]), {})
                row.update({f"csv/{k}": float(v) for k, v in data.items()})

            def to_csv(self, *a: Any, **k: Any) -> None:
                pass

        class Stub:  # datasets, transforms: built by the script, unused with Loader
            def __init__(self, *a: Any, **k: Any) -> None:
                pass

            def __len__(self) -> int:
                return 10 ** 4

        def net_factory(*a: Any, **k: Any) -> Any:
            net = network() if network is not None else self.factory["net_factory"](*a, **k)
            role = ADMT_ROLES[len(rec.models)]
            if key["map"] is None:
                key["map"] = _admt_key_map(list(net.state_dict()), inits[0])
            rec.built[role] = {to_ours(n): v.detach().clone() for n, v in net.state_dict().items()}
            net.load_state_dict({n: inits[len(rec.models)][to_ours(n)] for n in net.state_dict()})
            return rec.watch(role, net)

        def sgd(params: Any, *a: Any, **k: Any) -> Any:
            params = list(params)
            names = {id(p): to_ours(n) for n, p in rec.models["student"].named_parameters()}
            return rec.watch_optimizer(torch.optim.SGD(params, *a, **k), names)

        class AlternateUpdate(self.train_utils["AlternateUpdate"]):  # noqa: N801 (the released name)
            def __init__(inner, *a: Any, **k: Any) -> None:  # noqa: N805
                super().__init__(*a, **k)
                if first_period:
                    inner.random_alternate_period = first_period
                rec.switch = inner

        combat = self.train_utils["get_compromise_pseudo_btw_tea_stu"]
        mix = self.mixaugs.cut_mix_3d if self.dataset == "LA" else self.mixaugs.cut_mix
        ns: dict[str, Any] = {
            "__name__": "admt_released_script", "argparse": argparse, "logging": logging, "os": os,
            "osp": os.path, "random": random, "sys": sys, "yaml": yaml, "np": np, "torch": torch,
            "cudnn": torch.backends.cudnn, "nn": torch.nn, "F": torch.nn.functional, "optim": types.SimpleNamespace(
                SGD=sgd), "pd": types.SimpleNamespace(DataFrame=Frame), "SummaryWriter": Writer,
            "CrossEntropyLoss": torch.nn.CrossEntropyLoss, "DataLoader": Loader,
            "transforms": types.SimpleNamespace(Compose=Stub), "tqdm": Progress, "net_factory": net_factory,
            "losses": self.losses, "ramps": self.ramps, "update_values": self.util["update_values"],
            "time_str": self.util["time_str"], "AverageMeter": self.util["AverageMeter"],
            "AlternateUpdate": AlternateUpdate,
            "get_compromise_pseudo_btw_tea_stu": rec.wrap("combat", combat, lambda a, out: (
                [a[0], a[1], a[2], a[3], a[5]], list(out))),
            "LAHeart": Stub, "Pancreas": Stub, "BaseDataSets": Stub, "WeakStrongAugment": Stub,
            "TwoStreamBatchSampler": Stub, "var_all_case_LA": validation, "var_all_case_Pancrease": validation,
            "test_single_volume": validation,
        }
        ns["cut_mix_3d" if self.dataset == "LA" else "cut_mix"] = rec.wrap("cutmix", mix, lambda a, out: list(out))
        return ns

    def load(self, rec: _ADMTRecorder, batches: list[dict[str, torch.Tensor]], inits: list[dict[str, torch.Tensor]],
             argv: list[str], overrides: dict[str, Any], first_period: int,
             network: Any = None) -> tuple[dict[str, Any], dict[str, Any], str]:
        """The script's functions, and its parsed flags updated from the released yaml, then from
        ``overrides`` (the batch and patch of the comparison, which the yaml would set otherwise).
        Returns the namespace, the flags (a dict, as released) and an account of what was executed."""
        ns = self._namespace(rec, batches, inits, first_period, network)
        defs = _exec_released(self.script, ns, lambda n: isinstance(n, ast.FunctionDef))
        with open(self.script) as f:
            tree = ast.parse(f.read(), filename=self.script)
        main = [n for n in tree.body if isinstance(n, ast.If) and "__main__" in ast.unparse(n.test)][0].body
        end = next(i for i, n in enumerate(main) if isinstance(n, ast.Expr) and isinstance(n.value, ast.Call)
                   and isinstance(n.value.func, ast.Name) and n.value.func.id == "update_values")
        block = main[:end + 1]
        saved_argv, saved_cwd = sys.argv, os.getcwd()
        try:
            sys.argv = [os.path.basename(self.script)] + argv
            os.chdir(self.root)  # the yaml is read from './cfgs' (the released scripts run from the root)
            exec(compile(ast.Module(body=block, type_ignores=[]), self.script, "exec"), ns)
        finally:
            sys.argv = saved_argv
            os.chdir(saved_cwd)
        args = ns["args"]
        args.update(overrides)
        account = (f"{os.path.basename(self.script)}: {len(defs)} functions ({', '.join(n.name for n in defs)}); "
                   f"__main__ lines {block[0].lineno}-{block[-1].end_lineno} (parser, argv {' '.join(argv)}, "
                   f"cfgs/{self.cfg} via update_values); then set {json.dumps(overrides)}")
        return ns, args, account


def _admt_batches(dataset: str, patch: tuple[int, ...], batch: int, seed: int,
                  iterations: int) -> list[dict[str, torch.Tensor]]:
    """One synthetic batch per iteration, UNLABELED items first (the released sampler's order): the
    weak view as :func:`_bcp_batch` makes the image, the strong view a photometric change of it
    (per item contrast, brightness and noise). Labels as the released loaders give them (LA int64,
    ACDC uint8)."""
    out = []
    for k in range(iterations):
        b = _bcp_batch(dataset, patch, batch, seed + 1000 * k)
        rs = np.random.RandomState(seed + 1000 * k + 1)
        weak = b["image"]
        shape = (batch,) + (1,) * (weak.dim() - 1)
        contrast = torch.from_numpy(rs.uniform(0.5, 1.5, size=shape).astype(np.float32))
        shift = torch.from_numpy(rs.uniform(-0.5, 0.5, size=shape).astype(np.float32))
        noise = torch.from_numpy(rs.normal(0.0, 0.2, size=tuple(weak.shape)).astype(np.float32))
        out.append({"image_weak": weak, "image_strong": weak * contrast + shift + noise, "label_aug": b["label"]})
    return out


def _admt_inits(dataset: str, seed: int, scale: float, background: float,
                network: Any = None) -> list[dict[str, torch.Tensor]]:
    """The common initial weights of the student, teacher 1 and teacher 2 (ours, built in turn from
    ``seed``), the output convolution of each multiplied by ``scale`` and ``background`` added to its
    bias of class 0 (sharper softmax maps on which the teachers agree more often, so that pseudo-labels
    pass the confidence thresholds and the conflict combating acts from iteration 0)."""
    from methods.admt import ADMT

    inits = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for _ in ADMT_ROLES:
            net = network() if network is not None else ADMT.build_model(dataset, 2 if dataset == "LA" else 4,
                                                                         "train", "cpu")
            state = {k: v.detach().clone() for k, v in net.state_dict().items()}
            for k in state:
                if k.split(".")[-2] == "out_conv":
                    state[k] = state[k] * scale
                    if k.endswith("bias"):
                        state[k][0] += background
            inits.append(state)
    return inits


def run_released_admt(rel: ReleasedADMT, batches: list[dict[str, torch.Tensor]], seed: int, labeled_bs: int,
                      patch: tuple[int, ...], inits: list[dict[str, torch.Tensor]], first_period: int,
                      rampup: float | None, zero_grad: str,
                      network: Any = None) -> tuple[_ADMTRecorder, dict[str, Any], str]:
    """The released ``train`` on ``batches`` (seeded with ``seed``, as its ``__main__`` seeds ``random``,
    ``numpy`` and ``torch``); it stops at the validation after the last batch."""
    rec = _ADMTRecorder()
    overrides: dict[str, Any] = {"batch_size": int(batches[0]["image_weak"].shape[0]), "labeled_bs": labeled_bs,
                                 "patch_size": list(patch), "seed": seed}
    if rampup is not None:
        overrides["consistency_rampup"] = rampup
    printed = io.StringIO()
    with _released_torch(zero_grad), contextlib.redirect_stdout(printed), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the released EMA's deprecated add_(Number, Tensor)
        ns, args, account = rel.load(rec, batches, inits, ["--cfg", rel.cfg], overrides, first_period, network)
        with tempfile.TemporaryDirectory() as out:
            _seed(seed)
            try:
                ns["train"](args, out)
            except _ValidationReached:
                pass
            else:
                raise RuntimeError("the released train() returned before its first validation")
    if len(rec.iterations) != len(batches):
        raise RuntimeError(f"the released loop ran {len(rec.iterations)} iterations of {len(batches)}")
    voxels = int(np.prod(patch))
    for k, it in enumerate(rec.iterations):
        row = rec.scalars[k + 1]
        it["logged"] = {ours: (2.0 - rec.at_fetch[k] if theirs == "switch at fetch" else
                               row[theirs] / voxels if ours == "conflict_ratio" else row[theirs])
                        for ours, theirs in ADMT_LOGGED.items()}
        it["lr_after"] = row["info/lr"]
    return rec, args, account


def run_ours_admt(dataset: str, batches: list[dict[str, torch.Tensor]], seed: int, labeled_bs: int,
                  patch: tuple[int, ...], inits: list[dict[str, torch.Tensor]], first_period: int,
                  rampup: float | None, zero_grad: str, network: Any = None) -> tuple[_ADMTRecorder, Any]:
    """Ours: ``ADMT.for_stage`` from the parsed flags, ``make_optimizer``, then per iteration the
    learning rate ``learning_rate(...)(k)`` (as ``Trainer`` sets it) and ``train_step``."""
    import methods.admt as admt_module
    from datasets import get_dataset
    from engine.trainer import make_optimizer, train_step
    from engine.training import learning_rate, parse_args

    d = get_dataset(dataset)
    flags = ["--method", "admt", "--device", "cpu", "--seed", str(seed),
             "--batch_size", str(batches[0]["image_weak"].shape[0]), "--labeled_bs", str(labeled_bs),
             "--patch_size", *map(str, patch), "--zero_grad", "zero" if zero_grad == "1.8" else "none"]
    if rampup is not None:
        flags += ["--admt_rampup", str(rampup)]
    config = parse_args(d, flags)
    (stage,) = admt_module.ADMT.stages(config, d)
    rec = _ADMTRecorder()
    saved = {name: getattr(admt_module, name) for name in ("cut_mix", "combat_conflicts")}
    build_model = admt_module.ADMT.__dict__["build_model"]
    try:
        if network is not None:
            admt_module.ADMT.build_model = classmethod(lambda cls, *a, **k: network())
        admt_module.cut_mix = rec.wrap("cutmix", saved["cut_mix"], lambda a, out: [out[0], *out[1]])
        admt_module.combat_conflicts = rec.wrap("combat", saved["combat_conflicts"],
                                                lambda a, out: (list(a[:5]), list(out)))
        _seed(seed)
        method = admt_module.ADMT.for_stage(config, d, d.num_classes, torch.device("cpu"), stage, None)
        for role, net, init in zip(ADMT_ROLES, (method.model, *method.teachers), inits):
            rec.built[role] = {k: v.detach().clone() for k, v in net.state_dict().items()}
            net.load_state_dict(init)
            rec.watch(role, net)
        if first_period:
            method.switch.period = first_period
        names = {id(p): n for n, p in method.model.named_parameters()}
        optimizer = rec.watch_optimizer(make_optimizer(method.model, config.base_lr), names)
        lr_at = learning_rate(config.base_lr, stage, None)
        for k, b in enumerate(batches):
            for g in optimizer.param_groups:  # Trainer.set_lr
                g["lr"] = lr_at(k)
            image = torch.cat((b["image_weak"], b["image_strong"]), dim=1)  # (B, 2, *S): [weak, strong]
            label = b["label_aug"].clone().long()  # as Trainer._train
            rec.at_fetch.append(method.switch.active)
            out = train_step(method, optimizer, image, label, k, zero_grad=config.zero_grad)
            s = method.switch
            rec.snapshot((int(s.active), s.counter, s.period), lambda n: n)
            rec.iterations[-1]["logged"] = {n: float(out[n]) for n in method.log_keys}
            rec.iterations[-1]["lr_after"] = lr_at(k + 1)
    finally:
        for name, fn in saved.items():
            setattr(admt_module, name, fn)
        admt_module.ADMT.build_model = build_model
    return rec, config


def compare_admt_iteration(table: _Table, stage: str, rel: dict[str, Any], ours: dict[str, Any]) -> None:
    """Every quantity of one iteration (see :func:`compare_admt`)."""
    for key, r in rel["logged"].items():
        o = ours["logged"].get(key)
        diff = abs(r - o) if o is not None else float("inf")
        table.add(stage, f"logged {key}", f"{r:.8f} vs {o if o is None else f'{o:.8f}'}", diff,
                  diff <= BCP_RTOL * abs(r) + BCP_ATOL)
    for key in sorted(set(ours["logged"]) - set(rel["logged"])):
        table.add(stage, f"logged {key}", "ours only: no released counterpart", float("inf"), False)
    lrs = [[c["lr"] for c in side["calls"]["step"]] for side in (rel, ours)]
    table.add(stage, "learning rate of the step", f"{lrs[0]} vs {lrs[1]}",
              abs(lrs[0][0] - lrs[1][0]) if len(lrs[0]) == len(lrs[1]) == 1 else float("inf"),
              len(lrs[0]) == len(lrs[1]) == 1 and abs(lrs[0][0] - lrs[1][0]) <= BCP_RTOL * lrs[0][0])
    for role in ("teacher 1", "teacher 2"):
        table.floats(stage, f"{role} logits (weak unlabeled)", rel["outputs"][role], ours["outputs"][role])
    def pick(side: dict[str, Any], kind: str, index: tuple[int, ...], exact: bool) -> list[torch.Tensor]:
        """Item ``index`` of each recorded call of ``kind`` (labels and masks as integers)."""
        out = []
        for call in side["calls"][kind]:
            for i in index:
                call = call[i]
            out.append(call.long() if exact else call)
        return out

    if rel["calls"]["cutmix"] or ours["calls"]["cutmix"]:
        for i, what in enumerate(("image", "pseudo-labels", "confidences", "teachers' conflict mask")):
            exact = what in ("pseudo-labels", "teachers' conflict mask")
            table.floats(stage, f"CutMix {what}", pick(rel, "cutmix", (i,), exact), pick(ours, "cutmix", (i,), exact),
                         exact=exact)
    table.floats(stage, "student logits", rel["outputs"]["student"], ours["outputs"]["student"])
    for j, what in enumerate(("ensemble pseudo-labels", "ensemble confidences", "student labels (weak view)",
                              "student confidences", "teachers' conflict mask")):
        exact = j in (0, 2, 4)
        table.floats(stage, f"combat input: {what}", pick(rel, "combat", (0, j), exact),
                     pick(ours, "combat", (0, j), exact), exact=exact)
    for j, what in enumerate(("pseudo-labels", "confidences", "conflict mask C")):
        exact = j != 1
        table.floats(stage, f"combat result: {what}", pick(rel, "combat", (1, j), exact),
                     pick(ours, "combat", (1, j), exact), exact=exact)
    grads = lambda side: side["calls"]["step"][0]["grads"] if side["calls"]["step"] else {}  # noqa: E731
    table.floats(stage, "gradients", grads(rel), grads(ours))
    table.floats(stage, "student state_dict after SGD", rel["states"]["student"], ours["states"]["student"])
    table.floats(stage, "SGD momentum buffers", rel["momentum"], ours["momentum"])
    for role in ("teacher 1", "teacher 2"):
        table.floats(stage, f"{role} state_dict after EMA", rel["states"][role], ours["states"][role])
    table.floats(stage, "switch after (active T1, counter, period)", [torch.tensor(rel["switch"])],
                 [torch.tensor(ours["switch"])], exact=True)
    diff = abs(rel["lr_after"] - ours["lr_after"])
    table.add(stage, "learning rate set after", f"{rel['lr_after']:.10g} vs {ours['lr_after']:.10g}", diff,
              diff <= BCP_RTOL * rel["lr_after"])
    table.floats(stage, "numpy / torch / python generator states after",
                 [torch.from_numpy(rel["np_state"].astype(np.int64)), rel["torch_state"], rel["py_state"]],
                 [torch.from_numpy(ours["np_state"].astype(np.int64)), ours["torch_state"], ours["py_state"]],
                 exact=True)


def compare_admt(released: str, dataset: str, patch: tuple[int, ...], batch_size: int, labeled_bs: int, seed: int,
                 iterations: int = 2, first_period: int = 1, rampup: float | None = None, logit_scale: float = 4.0,
                 background_bias: float = 0.0, zero_grad: str = "1.8", log: Any = print,
                 network: Any = None) -> tuple[list[str], int, dict[str, Any]]:
    """``iterations`` AD-MT iterations on ``dataset``, the released ``train`` against ours. Returns the
    table's rows, the number of disagreements and facts about the run (per iteration: the active
    teacher, the pseudo-labels kept, the teachers' conflicts, the voxels the student's labels took).

    ``network``: None (the released networks there, ours here), or for a quick test a function building
    one small network that both sides then use for all three (the full V-Net's 9.4M parameters make
    the copies of each iteration's snapshot the slow part at a tiny patch)."""
    if not 0 < labeled_bs < batch_size:
        raise ValueError("AD-MT: --labeled_bs must be >= 1 and < --batch_size (unlabeled items come first)")
    rel = ReleasedADMT(released, dataset)
    batches = _admt_batches(dataset, patch, batch_size, seed, iterations)
    inits = _admt_inits(dataset, seed + 1, logit_scale, background_bias, network)
    t0 = time.time()
    r, args, account = run_released_admt(rel, batches, seed, labeled_bs, patch, inits, first_period, rampup, zero_grad,
                                         network)
    t1 = time.time()
    o, config = run_ours_admt(dataset, batches, seed, labeled_bs, patch, inits, first_period, rampup, zero_grad,
                              network)
    log(f"{dataset}: released {account} [{t1 - t0:.1f}s]; ours ADMT.for_stage + train_step [{time.time() - t1:.1f}s]")
    table, facts = _Table(), {"iterations": []}
    for role in ADMT_ROLES:
        table.floats("build", f"{role} as built from the seed", r.built[role], o.built[role], exact=True)
    settings = {"max_iterations": (args["max_iterations"], config.max_iterations),
                "threshold": (args["conf_threshold"], config.options.admt_threshold),
                "period P": (args["alt_param_updating_period_iters"], config.options.admt_period),
                "rampup R": (args["consistency_rampup"], config.options.admt_rampup),
                "weight": (args["consistency"], config.options.admt_weight),
                "EMA decay": (args["ema_decay"], config.options.admt_ema_decay),
                "CutMix probability": (args["cutmix_prob"], config.options.admt_cutmix_prob),
                "unsupervised loss": (args["flag_ulb_loss_type"], config.options.admt_loss),
                "base lr": (args["base_lr"], config.base_lr)}
    for name, (a, b) in settings.items():
        table.add("settings", name, f"{a} vs {b}", 0.0 if a == b else float("inf"), a == b)
    threshold = config.options.admt_threshold
    for k, (ri, oi) in enumerate(zip(r.iterations, o.iterations)):
        stage = f"it {k} (T{1 if r.at_fetch[k] else 2})"
        compare_admt_iteration(table, stage, ri, oi)
        (inputs, results) = ri["calls"]["combat"][0]
        fact = {"teacher": 1 if r.at_fetch[k] else 2, "cutmix": bool(ri["calls"]["cutmix"]),
                "kept_before_combat": int((inputs[1] >= threshold).sum()),
                "kept": int((results[1] >= threshold).sum()), "teacher_conflicts": int(inputs[4].sum()),
                "student_took": int((results[1] != inputs[1]).sum()), "voxels": int(inputs[1].numel()),
                "cutmix_changed": 0}
        if ri["calls"]["cutmix"]:  # voxels of the unlabeled weak views the CutMix changed
            weak = batches[k]["image_weak"][:batch_size - labeled_bs]
            fact["cutmix_changed"] = int((ri["calls"]["cutmix"][0][0] != weak).sum())
        facts["iterations"].append(fact)
        mixed = f" (CutMix, {fact['cutmix_changed']} voxels changed)" if fact["cutmix"] else ""
        log(f"  iteration {k}: teacher {fact['teacher']} active{mixed}; "
            f"of {fact['voxels']} unlabeled voxels: {fact['kept_before_combat']} confident ensemble pseudo-labels, "
            f"{fact['kept']} kept after combating (>= {threshold}), "
            f"{fact['teacher_conflicts']} teachers' conflicts, {fact['student_took']} taken from the student")
    table.rows += ["", f"{table.bad} disagreements (floating quantities: max abs diff <= {BCP_RTOL:g} x max abs "
                   f"released + {BCP_ATOL:g}; labels, masks, the switch, integer buffers and generator states: "
                   "equal)"]
    return table.rows, table.bad, facts


def main_admt(args: argparse.Namespace) -> int:
    script, cfg = ADMT_SCRIPTS[args.dataset]
    if not (os.path.isfile(os.path.join(args.released, "code", script))
            and os.path.isfile(os.path.join(args.released, "cfgs", cfg))):
        raise SystemExit(f"--released {args.released}: no code/{script} and cfgs/{cfg} there; clone ZhenZHAO/AD-MT "
                         "and pass its folder")
    sys.path.insert(0, os.path.join(ROOT, "code"))
    patch, batch_size, labeled_bs = _sizes(args, ADMT_RELEASED_SIZE[args.dataset])
    iterations = args.iterations or 2
    scale, background = ADMT_INIT[args.dataset]
    scale = scale if args.logit_scale is None else args.logit_scale
    background = background if args.background_bias is None else args.background_bias
    print(f"AD-MT {args.dataset}: patch {patch}, batch {batch_size} ({batch_size - labeled_bs} unlabeled first, then "
          f"{labeled_bs} labeled), {iterations} iterations, first switch period "
          f"{args.first_period or 'as drawn'}, rampup {'released' if args.rampup is None else args.rampup}, "
          f"output layer x {scale:g}, class-0 bias + {background:g}, seed {args.seed}, "
          f"zero_grad {args.torch_zero_grad}, "
          f"torch {torch.__version__} on the CPU", flush=True)
    rows, bad, facts = compare_admt(args.released, args.dataset, patch, batch_size, labeled_bs, args.seed,
                                    iterations, args.first_period, args.rampup, scale, background,
                                    args.torch_zero_grad)
    _report(rows, args.out, f"comparison_admt_{args.dataset}.md")
    if {f["teacher"] for f in facts["iterations"]} != {1, 2}:
        print("note: only one teacher was active; --first_period 1 (default) switches after the first iteration")
    return 0 if bad == 0 else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--method", choices=["ssnet", "bcp", "admt"], default="ssnet",
                   help="ssnet: whole SS-Net ACDC runs compared log by log (default); bcp: one BCP iteration of "
                        "each stage compared quantity by quantity; admt: AD-MT iterations (teacher 1, then "
                        "teacher 2) compared quantity by quantity")
    p.add_argument("--dataset", choices=sorted(BCP_SCRIPTS), help="with --method bcp or admt: LA or ACDC")
    p.add_argument("--released", required=True,
                   help="a checkout of ycwu1997/SS-Net (holds code/train_ss_2d.py), or with --method bcp of "
                        "DeepMed-Lab-ECNU/BCP (holds code/LA_BCP_train.py and code/ACDC_BCP_train.py), or with "
                        "--method admt of ZhenZHAO/AD-MT (holds code/train_post_{3d,2d}_aut.py and cfgs/)")
    p.add_argument("--root_path", help="ACDC folder in the released layout (e.g. synthetic data); --method ssnet")
    p.add_argument("--out", help="work folder (both runs, logs, comparison.md); required with --method ssnet, "
                                 "with --method bcp / admt optional (comparison_<method>_<dataset>.md)")
    p.add_argument("--iterations", type=int, default=None,
                   help="training iterations of both runs (default 400; --method admt: 2)")
    p.add_argument("--patch_size", type=int, nargs="+", default=None,
                   help="training and validation slice size (default 128 128); --method bcp / admt: the patch "
                        "(default the released 112 112 80 on LA, 256 256 on ACDC)")
    p.add_argument("--batch_size", type=int, default=None,
                   help="batch size (default 8; --method bcp: the released 8 on LA, 24 on ACDC, or 2 x --labeled_bs; "
                        "--method admt: the released 4 on LA, 24 on ACDC, or 2 x --labeled_bs)")
    p.add_argument("--labeled_bs", type=int, default=None,
                   help="labeled items per batch (default 4; --method bcp: the released 4 on LA, 12 on ACDC; "
                        "--method admt: the released 2 on LA, 12 on ACDC)")
    p.add_argument("--labelnum", type=int, default=3, help="labeled patients")
    p.add_argument("--seed", type=int, default=1337, help="seed of both runs")
    p.add_argument("--consistency", type=float, default=0.1, help="final unsupervised weight")
    p.add_argument("--consistency_rampup", type=float, default=200.0, help="ramp length in units of 150 iterations")
    p.add_argument("--magnitude", type=float, default=6.0, help="VAT epsilon")
    p.add_argument("--torch_zero_grad", choices=["1.8", "current"], default="1.8",
                   help="optimizer.zero_grad() of the released run: 1.8 (zero-filled, as on PyTorch 1.8) or "
                        "current (this PyTorch's default); ours gets the matching --zero_grad")
    p.add_argument("--print_every", type=int, default=50, help="table rows every N iterations")
    p.add_argument("--first_period", type=int, default=1,
                   help="--method admt: the teacher switch's first period, set on both sides after it is drawn "
                        "(1, the default: teacher 1 in iteration 0, teacher 2 from iteration 1; 0: as drawn)")
    p.add_argument("--rampup", type=float, default=None,
                   help="--method admt: R of both sides (released consistency_rampup, our --admt_rampup; default "
                        "the released yaml's, 40 LA, 50 ACDC); 0 makes the EMA momentum non-zero from iteration 2")
    p.add_argument("--logit_scale", type=float, default=None,
                   help="--method admt: factor on the output convolution of the three initial networks (both "
                        "sides), for confident pseudo-labels from iteration 0 (default 4 LA, 8 ACDC; 1: the plain "
                        "initialisation)")
    p.add_argument("--background_bias", type=float, default=None,
                   help="--method admt: added to the output convolution's class-0 bias of the three initial "
                        "networks (default 0 LA, 3 ACDC: the teachers then agree often enough on ACDC for "
                        "ensemble pseudo-labels above 0.95)")
    p.add_argument("--ours_flags", nargs=argparse.REMAINDER, default=[], help="extra flags for our train_acdc.py")
    args = p.parse_args(argv)
    if args.method in ("bcp", "admt"):
        if args.dataset is None:
            p.error(f"--method {args.method} needs --dataset LA or ACDC")
        return main_bcp(args) if args.method == "bcp" else main_admt(args)
    args.iterations = 400 if args.iterations is None else args.iterations
    for flag in ("root_path", "out"):
        if getattr(args, flag) is None:
            p.error(f"the following arguments are required: --{flag}")
    args.patch_size = args.patch_size or [128, 128]
    if len(args.patch_size) != 2:
        p.error("--patch_size takes 2 numbers (the ACDC slice size)")
    args.batch_size = 8 if args.batch_size is None else args.batch_size
    args.labeled_bs = 4 if args.labeled_bs is None else args.labeled_bs
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
