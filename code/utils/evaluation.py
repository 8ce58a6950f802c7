"""What test_la.py and test_acdc.py share: their common flags, the device, the
snapshot layout, where the checkpoint and the results are, and the test log file."""
from __future__ import annotations

import argparse
import logging
import os
import sys

import torch

from methods import METHODS, get_method
from networks.net_factory import resolve_device
from utils.checkpoints import require_checkpoint
from utils.inference import AMP_MODES, check_amp
from utils.metrics import EMPTY_POLICIES

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def add_common_args(p: argparse.ArgumentParser, dataset: str, model: str, labelnum: int) -> None:
    """The flags both test scripts have (reference names kept): which run and
    checkpoint, where results go, the device, autocast and the empty-prediction policy."""
    units = "cases" if dataset == "LA" else "patients"
    p.add_argument("--exp", default=None,
                   help="experiment name of the snapshot folder; default: the method's name (SSNet, UAMT, SASSNet, "
                        "DTC, URPC, MCNet)")
    p.add_argument("--labelnum", type=int, default=labelnum, help=f"labeled {units} of the run (snapshot folder name)")
    p.add_argument("--model", default=model, help="snapshot subfolder and checkpoint name; also the network "
                   "of --method ssnet (the baselines build their own)")
    p.add_argument("--method", default="ssnet", choices=tuple(sorted(METHODS)),
                   help="method whose checkpoint is evaluated; decides the network and the output tested "
                        "(UA-MT student, SASSNet/DTC segmentation head, URPC main output, MC-Net decoder 1)")
    p.add_argument("--model_root", default=os.path.join(REPO_ROOT, "model"),
                   help="folder holding the snapshot folders (use pretrained_pth for the released checkpoints)")
    p.add_argument("--ckpt", default=None, help=f"checkpoint file; default <model_root>/{dataset}_<exp>_<labelnum>"
                                                "_labeled/<model>/<model>_best_model.pth")
    p.add_argument("--out_dir", default=None, help="where results go; default <folder of the checkpoint>/test")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--gpu", default=None, help="alias of --device: a GPU index N means cuda:N")
    p.add_argument("--amp", choices=AMP_MODES, default="none",
                   help="none: fp32 (faithful); bf16: forward passes under bfloat16 autocast (CUDA GPUs of compute "
                        "capability >= 8.0; also runs on the CPU), probabilities in float32")
    p.add_argument("--empty_policy", default="reference", choices=EMPTY_POLICIES,
                   help="empty prediction of a class: 'reference' scores 0 on all four metrics (released; 95HD/ASD 0 "
                        "is the best value), 'nan' makes 95HD/ASD NaN and leaves it out of their means")


def device_from_flags(device: str, gpu: str | None) -> str:
    """Merge ``--device`` and its alias ``--gpu`` (a bare index N means cuda:N)."""
    if gpu is None:
        return device
    alias = f"cuda:{gpu}" if str(gpu).isdigit() else str(gpu)
    if device not in ("auto", alias):
        raise ValueError(f"--device {device} and --gpu {gpu} disagree; pass only one of them.")
    return alias


def snapshot_dir(model_root: str, dataset: str, exp: str, labelnum: int, model: str) -> str:
    """``<model_root>/<dataset>_<exp>_<labelnum>_labeled/<model>`` (the reference's layout)."""
    return os.path.join(model_root, f"{dataset}_{exp}_{labelnum}_labeled", model)


def prepare_evaluation(parser: argparse.ArgumentParser, args: argparse.Namespace,
                       dataset: str) -> tuple[torch.device, str, str]:
    """Check the common flags (errors go through ``parser.error``) and return
    ``(device, checkpoint path, results folder)``; a missing checkpoint fails
    here, naming the path tried, before any work."""
    try:
        device = resolve_device(device_from_flags(args.device, args.gpu))
        check_amp(args.amp, device)
    except (ValueError, RuntimeError) as err:  # bad value, or CUDA asked for without a GPU
        parser.error(str(err))
    if args.sw_batch < 1:
        parser.error(f"--sw_batch must be >= 1, got {args.sw_batch}")
    if args.exp is None:
        args.exp = get_method(args.method).name
    ckpt = args.ckpt or os.path.join(snapshot_dir(args.model_root, dataset, args.exp, args.labelnum, args.model),
                                     f"{args.model}_best_model.pth")
    out_dir = args.out_dir or os.path.join(os.path.dirname(os.path.abspath(ckpt)), "test")
    require_checkpoint(ckpt)
    return device, ckpt, out_dir


def add_log_file(path: str) -> list[logging.Handler]:
    """Log to ``path`` (and stdout unless a console handler exists); returns the
    handlers to remove when the evaluation ends."""
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    fmt = logging.Formatter("[%(asctime)s] %(message)s", datefmt="%H:%M:%S")
    handlers: list[logging.Handler] = [logging.FileHandler(path, mode="w", encoding="utf-8")]
    if not any(isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler) for h in root.handlers):
        handlers.append(logging.StreamHandler(sys.stdout))
    for h in handlers:
        h.setFormatter(fmt)
        root.addHandler(h)
    return handlers
