"""The training scripts' whole run for any dataset description: flags, data, method,
validation, the loop. ``train_la.py`` / ``train_acdc.py`` are this module with the LA / ACDC
description (:mod:`datasets`).

What differs between datasets is read from the description:

* the flags' defaults, and the validation procedure's own flags (:data:`VALIDATIONS`,
  keyed by the type of the description's ``procedure``: :class:`~datasets.SlidingWindow`
  adds ``--stride_xy`` / ``--stride_z``, :class:`~datasets.SliceWise` adds
  ``--val_batch``); ``--lr_step`` where the schedule has steps;
* the training set, its labeled part and the two-stream sampler
  (:func:`build_loader`);
* the validation cases (:func:`validation_names`) and the scalars logged;
* the random draw the released validation makes (``validation_draws``).
"""
from __future__ import annotations
import argparse
import logging
import os
from dataclasses import dataclass
from typing import Any, Callable
from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import BatchSampler, SubsetRandomSampler

from datasets import DatasetDescription, SliceWise, SlidingWindow
from dataloaders.h5io import check_files
from dataloaders.sampler import draw_loader_base_seed, seed_everything
from dataloaders.splits import read_list
from methods import get_method
from methods.base import Stage
from networks.net_factory import cuda_nondeterministic_ops
from engine.inference import validate_acdc_volumes, validate_la_cases
from engine.run import device_from_flags, setup_logging, snapshot_dir
from engine.snapshot import check_output_folder, open_snapshot, refuse_existing_run
from engine.checkpoints import read_checkpoint
from engine.config import TrainConfig
from engine.trainer import (Trainer, add_common_args, make_train_loader, read_resume_state, setup_device,
                            write_config)
from engine.visualize import add_slice_snapshot, add_volume_snapshot

logger = logging.getLogger(__name__)

Validate = Callable[[torch.nn.Module], tuple[float, dict[str, float]]]


def _sliding_window_args(p: argparse.ArgumentParser, d: DatasetDescription) -> None:
    p.add_argument("--stride_xy", type=int, default=d.procedure.stride_xy,
                   help="validation sliding-window stride in x and y")
    p.add_argument("--stride_z", type=int, default=d.procedure.stride_z, help="validation sliding-window stride in z")


def _sliding_window(config: TrainConfig, d: DatasetDescription, names: list[str]) -> Validate:
    """Mean foreground Dice over whole volumes by sliding window (released ``var_all_case_LA``)."""
    def validate(model: torch.nn.Module) -> tuple[float, dict[str, float]]:
        dice = validate_la_cases(model, config.root_path, names, d.num_classes, config.patch_size,
                                 config.stride_xy, config.stride_z, sw_batch=config.sw_batch, amp=config.amp,
                                 case_path=d.case_path)
        return dice, {"4_val/dice": dice}
    return validate


def _slices_args(p: argparse.ArgumentParser, d: DatasetDescription) -> None:
    p.add_argument("--val_batch", type=int, default=16, help="slices per forward pass in validation")


def _slices(config: TrainConfig, d: DatasetDescription, names: list[str]) -> Validate:
    """Per-class Dice and 95HD of volumes predicted slice by slice (released ``val_2d``); the score
    is the mean Dice over the foreground classes."""
    def validate(model: torch.nn.Module) -> tuple[float, dict[str, float]]:
        per_class = validate_acdc_volumes(model, config.root_path, names, d.num_classes, config.patch_size,
                                          batch=config.val_batch, amp=config.amp, case_path=d.case_path)
        scalars = {f"4_val/{n}_dice": float(per_class[i, 0]) for i, n in enumerate(d.class_names)}
        scalars.update({f"4_val/{n}_hd95": float(per_class[i, 1]) for i, n in enumerate(d.class_names)})
        scalars["4_val/mean_dice"] = float(per_class[:, 0].mean())
        scalars["4_val/mean_hd95"] = float(np.nanmean(per_class[:, 1]))
        return scalars["4_val/mean_dice"], scalars
    return validate


@dataclass(frozen=True)
class ValidationProcedure:
    """A validation procedure: its flags, the validate function, the tensorboard image writer."""

    add_args: Callable[[argparse.ArgumentParser, DatasetDescription], None]
    make: Callable[[TrainConfig, DatasetDescription, list[str]], Validate]
    image_fn: Callable[..., None]


#: type of ``DatasetDescription.procedure`` -> its validation procedure
VALIDATIONS: dict[type, ValidationProcedure] = {
    SlidingWindow: ValidationProcedure(_sliding_window_args, _sliding_window, add_volume_snapshot),
    SliceWise: ValidationProcedure(_slices_args, _slices, add_slice_snapshot),
}


def procedure(d: DatasetDescription) -> ValidationProcedure:
    """The validation procedure of ``d`` (by the type of ``d.procedure``).

    Raises:
        ValueError: a procedure type without a validation here.
    """
    kind = type(d.procedure)
    if kind not in VALIDATIONS:
        raise ValueError(f"dataset {d.name}: no validation for procedure {kind.__name__}; one of "
                         f"{', '.join(k.__name__ for k in VALIDATIONS)} (engine/training.py VALIDATIONS)")
    return VALIDATIONS[kind]


def build_parser(d: DatasetDescription, description: str | None = None) -> argparse.ArgumentParser:
    """The training flags of dataset ``d`` (``description``: the script's docstring for ``--help``)."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(p, d)
    procedure(d).add_args(p, d)
    return p


def parse_args(d: DatasetDescription, argv: Sequence[str] | None = None,
               description: str | None = None) -> TrainConfig:
    """Parse and check the training flags of ``d`` (every flag, before anything is read or
    written): the run's settings, with the method's own options (``Method.options_from_flags``).

    Raises:
        ValueError: naming the bad flag (the scripts print it as one line, exit status 1).
    """
    parser = build_parser(d, description)
    flags = parser.parse_args(argv)
    method = get_method(flags.method)
    d.method(flags.method)  # a ValueError naming the methods the dataset has
    given = given_flags(parser, argv)
    for name, value in method.run_defaults(d, flags).items():
        if name not in given:  # the method's own default of a run flag, where the flag is not given
            setattr(flags, name, value)
    args = TrainConfig.from_flags(flags, d.name, method.options_from_flags(flags),
                                  exp=flags.exp if flags.exp is not None else method.name,
                                  device=device_from_flags(flags.device, flags.gpu))
    if len(args.patch_size) != d.spatial_dims:
        example = " ".join(map(str, d.patch_size))
        raise ValueError(f"--patch_size takes {d.spatial_dims} numbers for {d.name}, e.g. {example}")
    if args.select == "val" and d.holdout_from_train and args.val_num < 1:
        raise ValueError(f"--select val holds out the last --val_num training {d.item} for validation; "
                         f"--val_num must be >= 1, got {args.val_num}")
    blockers = cuda_determinism_blockers(args, d)
    if blockers:
        raise ValueError(
            f"--deterministic 2 on CUDA: --method {args.method} on {d.name} uses {', '.join(blockers)}, which "
            "has no deterministic CUDA kernel, so the run would stop at its first step. Use --deterministic 1 (the "
            "released setting: cuDNN deterministic; those kernels add in varying order, so two runs differ in "
            "the last bits) or --device cpu (repeatable).")
    return args


def learning_rate(base_lr: float, stage: Stage, lr_step: int | None) -> Callable[[int], float]:
    """The learning rate after ``n`` iterations of ``stage``: ``base * (1 - max(n - 1, 0) / N) ** power``
    (``stage.lr_poly``, N its iterations: AD-MT's released loop sets the rate after the step of 0-based
    index i from i, so the first two iterations run at ``base``), ``base * 0.1 ** (n // lr_step)``
    (``stage.lr_steps`` where the dataset's schedule steps) or constant."""
    if stage.lr_poly is not None:
        return lambda n: base_lr * (1.0 - max(n - 1, 0) / stage.iterations) ** stage.lr_poly
    if stage.lr_steps and lr_step:
        return lambda n: base_lr * 0.1 ** (n // lr_step)
    return lambda n: base_lr


def given_flags(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> set[str]:
    """The destinations of the flags given in ``argv`` (not those left at their defaults)."""
    saved = [(a, a.default) for a in parser._actions]
    try:
        for a, _ in saved:
            a.default = argparse.SUPPRESS
        return set(vars(parser.parse_args(argv)))
    finally:
        for a, default in saved:
            a.default = default


def cuda_determinism_blockers(args: TrainConfig, d: DatasetDescription) -> list[str]:
    """With ``--deterministic 2`` on a CUDA device (``auto`` where a GPU is visible): the operations
    of the method's network and trained losses that have no deterministic CUDA kernel (empty
    otherwise, and on the CPU). The network is built on the ``meta`` device: no memory, no
    random draws."""
    cuda = str(args.device).startswith("cuda") or (args.device == "auto" and torch.cuda.is_available())
    if int(args.deterministic) < 2 or not cuda:
        return []
    method = get_method(args.method)
    with torch.random.fork_rng(devices=[]), torch.device("meta"):
        model = method.build_model(d, d.num_classes, "train", "meta", model=args.model)
    return cuda_nondeterministic_ops(model) + list(method.cuda_nondeterministic)


def check_item_counts(args: TrainConfig, d: DatasetDescription, n_train: int) -> None:
    """The flags that need the length of the training list (read, not decoded): ``--val_num``
    with ``--select val`` and ``--labelnum``.

    Raises:
        ValueError: naming the flag, the list and how many items it has.
    """
    held = args.val_num if args.select == "val" and d.holdout_from_train else 0
    if held >= n_train:
        raise ValueError(f"--select val --val_num {args.val_num} would hold out every one of the {n_train} training "
                         f"{d.item} of {d.train_list}; choose --val_num below {n_train}")
    n_labeled = d.labeled_items(args.root_path, args.labelnum)
    if n_labeled > n_train - held:
        raise ValueError(f"--labelnum {args.labelnum} asks for {n_labeled} labeled training {d.item}, but "
                         f"{d.train_list} has {n_train}" + (f", {held} of them held out by --val_num" if held else "")
                         + "; choose a smaller --labelnum")


def build_loader(args: TrainConfig, d: DatasetDescription,
                 n_train: int | None = None) -> tuple[Any, list[int]]:
    """The two-stream loader (labeled-only with ``--supervised_only``) over the training items:
    the first ``labeled_items(root, --labelnum)`` are labeled, the rest (less those held out for
    ``--select val``) unlabeled. Returns the loader and the held-out item indices."""
    method = get_method(args.method)
    db = method.train_dataset(d, args.root_path, args.patch_size, bool(args.cache_data))
    db.preload(progress=True)  # with --cache_data 1: decoded once, before any worker starts
    total = len(db)
    if n_train is not None and n_train != total:
        raise ValueError(f"{d.train_list} lists {n_train} training {d.item}, the training set has {total}")
    held_out = (list(range(total - args.val_num, total))
                if args.select == "val" and d.holdout_from_train else [])
    usable = total - len(held_out)
    n_labeled = d.labeled_items(args.root_path, args.labelnum)
    if n_labeled > usable:
        raise ValueError(f"--labelnum {args.labelnum} exceeds the {usable} usable training {d.item}")
    logger.info("%d training %s, %d labeled (--labelnum %d)%s", total, d.item, n_labeled, args.labelnum,
                 f", {len(held_out)} held out for validation" if held_out else "")
    labeled = list(range(n_labeled))
    if args.supervised_only:
        if n_labeled < args.batch_size:
            raise ValueError(f"--supervised_only: {n_labeled} labeled {d.item} < --batch_size {args.batch_size}")
        sampler = BatchSampler(SubsetRandomSampler(labeled), args.batch_size, drop_last=True)
    else:
        sampler = method.batch_sampler(labeled, list(range(n_labeled, usable)), args.batch_size, args.labeled_bs)
    return make_train_loader(args.loader, db, sampler, args.num_workers, args.seed, args.device), held_out


def validation_names(args: TrainConfig, d: DatasetDescription, train_ids: list[str],
                     held_out: list[int]) -> list[str]:
    """The volumes model selection validates on: held-out training items (``--select val`` on a
    ``holdout_from_train`` dataset) or the lines of ``<select>.list``."""
    if args.select == "val" and d.holdout_from_train:
        return [train_ids[i] for i in held_out]
    return read_list(os.path.join(args.root_path, f"{args.select}.list"))


def train(args: TrainConfig, d: DatasetDescription) -> dict[str, object]:
    """One training run of ``args.method`` on dataset ``d`` (``args``: the run's settings from
    :func:`parse_args`); returns the run summary.

    Everything that can be checked is checked before the snapshot folder is written: the lists,
    the flags against them, the output folder, an earlier run there (refused unless ``--resume``
    or ``--overwrite``), ``last.pth`` and its flags on ``--resume``, every training file (decoded
    and checked) and every validation volume.
    """
    setup_logging()  # stderr now; log.txt once the snapshot folder is opened
    train_ids = read_list(os.path.join(args.root_path, d.train_list))
    check_item_counts(args, d, len(train_ids))
    snapshot = snapshot_dir(args.model_root, d.name, args.exp, args.labelnum, args.model)
    check_output_folder(args.model_root, snapshot)
    method_cls = get_method(args.method)
    stages = method_cls.stages(args, d)
    folders = [os.path.join(snapshot, s.folder) if s.folder else snapshot for s in stages]
    resume_states: list[dict[str, Any] | None] = [None] * len(stages)
    if args.resume:  # every stage that has a last.pth (the first must), read and checked now
        for i, (stage, folder) in enumerate(zip(stages, folders)):
            path = os.path.join(folder, "last.pth")
            if i == 0 or os.path.isfile(path):
                resume_states[i] = read_resume_state(path, args, stage.iterations)
    else:
        refuse_existing_run(snapshot, args.overwrite)
    device = setup_device(args.device, bool(args.keep_host_memory))
    loader, held_out = build_loader(args, d, len(train_ids))  # decodes and checks the training data
    names: list[str] = []
    if args.select != "last":
        names = validation_names(args, d, train_ids, held_out)
        check_files([d.case_path(args.root_path, n) for n in names], d.num_classes, 3, progress=True,
                    desc=f"check {args.select} data")
    removed = open_snapshot(snapshot, clear=args.overwrite)
    for folder in folders:
        os.makedirs(folder, exist_ok=True)
    setup_logging(snapshot)
    if removed:
        logger.warning("--overwrite: deleted the earlier run in %s (%s)", snapshot, ", ".join(removed))
    seed_everything(args.seed, int(args.deterministic))
    validate = None
    if names:
        logger.info("model selection on %d %s volumes%s", len(names), args.select,
                     " (the TEST set: released behaviour)" if args.select == "test" else "")
        validate = procedure(d).make(args, d, names)
    image_fn = procedure(d).image_fn
    lr_step = args.lr_step if d.lr_step is not None else None  # the flag exists where the schedule steps
    summary: dict[str, object] = {}
    previous: str | None = None
    for i, (stage, folder, state) in enumerate(zip(stages, folders, resume_states)):
        if len(stages) > 1:
            logger.info("stage %d of %d: %s, %d iterations, in %s", i + 1, len(stages), stage.name,
                        stage.iterations, folder)
        if i > 0:  # a new loader for each stage, as the released two-stage scripts make
            loader, _ = build_loader(args, d, len(train_ids))
        method = method_cls.for_stage(args, d, d.num_classes, device, stage, previous, read=read_checkpoint)
        trainer = Trainer(
            args, method, loader, folder, lr_at=learning_rate(args.base_lr, stage, lr_step),
            validate=validate,
            should_validate=lambda n: n >= args.val_start and n % args.val_interval == 0,
            # The released 2D script validates through DataLoader(db_val, batch_size=1, num_workers=1): creating
            # that iterator takes one base seed from the global torch generator. We read the volumes directly
            # (faster) but make the same draw where the released loop makes it (also with --select last), so the
            # dropout masks and VAT noise after each validation are the released run's.
            validation_draws=draw_loader_base_seed if d.validation_draws else None,
            image_fn=lambda w, img, lab, probs, n: image_fn(w, img, lab, probs, n, args.labeled_bs),
            device=device, iterations=stage.iterations,
            save_best_optimizer=method_cls.saves_best_optimizer(d, stage))
        if state is not None:
            trainer.load_last(state)
            resume_states[i] = None
        if i == 0:
            write_config(args, snapshot, device)
        summary = trainer.train()
        previous = folder
    return summary


def script_functions(d: DatasetDescription, doc: str | None) -> tuple[Callable[..., TrainConfig],
                                                                          Callable[..., dict[str, object]],
                                                                          Callable[..., dict[str, object]]]:
    """A training script's ``parse_args(argv)``, ``train(args)`` and ``main(argv)`` for dataset ``d``
    (``doc``: the script's docstring, its ``--help`` text)."""
    def parse(argv: Sequence[str] | None = None) -> TrainConfig:
        return parse_args(d, argv, doc)

    def run(args: TrainConfig) -> dict[str, object]:
        return train(args, d)

    def main(argv: Sequence[str] | None = None) -> dict[str, object]:
        return run(parse(argv))

    return parse, run, main
