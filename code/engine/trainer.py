"""The training loop of every run (:mod:`engine.training` sets it up for a dataset).

This module owns: the training flags, seeding, the snapshot folder and its log,
the optimiser and learning-rate schedule, tensorboard scalars and images,
validation and model selection, checkpoints, and ``--resume``. The batches
come from :class:`engine.stream.EpochStream`.

Checkpoints in the snapshot folder:
* ``{model}_best_model.pth`` and ``iter_<n>_dice_<d>.pth``: bare state_dicts
  (the released format), written when the selection score improves;
* ``{model}_last_model.pth``: the final iterate, a bare state_dict
  (``test_*.py --which last``);
* ``last.pth``: weights, optimiser, iteration, best score, the method's state
  (prototype memory), every RNG state and the loader position, for ``--resume``;
  tensors and plain values only, read back with ``torch.load(weights_only=True)``.

Every checkpoint is written to a temporary file, synced and renamed
(:func:`engine.checkpoints.save_checkpoint`): a kill or a full disk never leaves
a half-written file, and the previous good one stays. A non-finite loss stops
the run (:mod:`engine.guard`) before anything is written from its weights.

Speed options (all off in the faithful defaults): :mod:`engine.speed`.
"""
from __future__ import annotations
import argparse
import glob
import json
import logging
import os
import sys
import time
from typing import Any, Callable

import torch
from torch import nn

from datasets import DatasetDescription
from methods import METHODS, add_method_args
from methods.base import Method
from networks.net_factory import resolve_device
from engine.checkpoints import CheckpointError, load_training_state, read_weights, save_checkpoint
from engine.guard import FiniteGuard, TrainingDiverged, require_finite_weights
from engine.host_memory import keep_freed_host_memory
from engine.inference import AMP_MODES, amp_autocast
from engine.config import TrainConfig
from engine.run import REPO_ROOT
from engine.snapshot import check_resume_flags
from engine.speed import setup_speed, to_channels_last
from engine.stream import EpochStream, rng_state, set_rng_state

logger = logging.getLogger(__name__)

__all__ = ["add_common_args", "make_train_loader", "make_optimizer", "train_step", "Trainer",
           "setup_device", "read_resume_state", "write_config", "LAST_KEYS"]

#: what every ``last.pth`` holds (checked on ``--resume`` before anything else is done)
LAST_KEYS = ("model", "optimizer", "iter_num", "best", "best_iter", "method", "rng", "config")


def add_common_args(p: argparse.ArgumentParser, d: DatasetDescription) -> None:
    """The training flags: the run's, with the defaults of dataset ``d``, then every method's own
    flags in a group per method (:func:`methods.add_method_args`)."""
    p.add_argument("--root_path", default=d.root_path, help="dataset folder (see data/README.md)")
    p.add_argument("--method", default="ssnet", choices=sorted(METHODS), help="semi-supervised method")
    p.add_argument("--exp", default=None,
                   help="experiment name (snapshot folder name part); default: the method's name, e.g. SSNet")
    p.add_argument("--model", default=d.model, help=f"SS-Net's network ({d.model} on {d.name})")
    shares = ", ".join(f"{n} = {share}" for n, share in d.labelnum_shares.items())
    p.add_argument("--labelnum", type=int, default=d.labelnum,
                   help=f"labeled training {d.labelnum_unit}" + (f" ({shares})" if shares else "").replace("%", "%%"))
    p.add_argument("--max_iterations", "--max_iteration", dest="max_iterations", type=int,
                   default=d.max_iterations, help="training iterations")
    p.add_argument("--batch_size", type=int, default=d.batch_size, help="batch size (labeled + unlabeled)")
    p.add_argument("--labeled_bs", type=int, default=d.labeled_bs, help="labeled items per batch")
    p.add_argument("--supervised_only", action="store_true",
                   help="batches of labeled items only and the supervised loss only (the paper's V-Net / U-Net "
                        "rows; --method ssnet)")
    p.add_argument("--base_lr", type=float, default=0.01, help="SGD learning rate")
    if d.lr_step is not None:
        p.add_argument("--lr_step", type=int, default=d.lr_step,
                       help="multiply the learning rate by 0.1 every N iterations")
    p.add_argument("--seed", type=int, default=1337, help="random seed")
    p.add_argument("--deterministic", type=int, choices=(0, 1, 2), default=1,
                   help="1 (released): cuDNN deterministic, no cudnn.benchmark; a CUDA run still varies a little "
                        "from run to run (bilinear/trilinear upsampling backward and other atomic-add kernels). "
                        "2: also torch.use_deterministic_algorithms(True) with CUBLAS_WORKSPACE_CONFIG=:4096:8: "
                        "the same GPU, driver and flags give the same run twice (slower; an op without a "
                        "deterministic kernel raises). 0: cudnn.benchmark on (fastest, not repeatable)")
    p.add_argument("--patch_size", type=int, nargs="+", default=list(d.patch_size), help="training crop size")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--gpu", default=None, help="alias of --device: --gpu N is cuda:N, the N-th VISIBLE GPU (after "
                   "CUDA_VISIBLE_DEVICES, so train_*.sh runs each job with CUDA_VISIBLE_DEVICES=<id> --device cuda); "
                   "an error if --device says otherwise")
    p.add_argument("--num_workers", type=int, default=4, help="data-loader worker processes (0: main process)")
    p.add_argument("--keep_host_memory", type=int, default=1,
                   help="1: on CPU, let glibc keep freed memory for reuse (faster, same results; "
                        "resident memory stays at its peak). 0: system default")
    p.add_argument("--loader", choices=("reseed", "released"), default="reseed",
                   help="training loader: reseed (default) yields the released loader's batches bit for bit from "
                        "workers kept alive and re-seeded each sampler epoch as fresh ones (no re-fork); released: "
                        "torch's DataLoader as the released scripts use it (new workers every sampler epoch)")
    p.add_argument("--cache_data", type=int, default=1,
                   help="1: decode every training file once, before the workers start, and keep it in memory "
                        "(same samples; LA needs about 15 MB per case); 0: read the h5 file at every access, "
                        "as released")
    p.add_argument("--zero_grad", choices=["zero", "none"], default="zero",
                   help="how gradients are cleared before each backward: zero (released, PyTorch 1.8's "
                        "zero_grad(): filled with zeros, so a parameter a step leaves unused, e.g. the selector "
                        "of a class absent from the batch, still moves by momentum and weight decay) or none "
                        "(PyTorch >= 2.0's default set_to_none=True: unused parameters are skipped)")
    val = (f"best on the last --val_num training {d.item} (held out)" if d.holdout_from_train
           else "best mean Dice on val.list")
    p.add_argument("--select", choices=["test", "val", "last"], default=d.select,
                   help=f"model selection: val = {val}, test = best on the test cases (leaks the test set), "
                        f"last = the final iterate; the released code: {d.select}")
    p.add_argument("--val_num", type=int, default=d.val_num,
                   help="with --select val: how many of the last training cases are held out for validation")
    p.add_argument("--val_start", type=int, default=d.val_start, help="first iteration that validates")
    p.add_argument("--val_interval", type=int, default=200, help="validate every N iterations")
    p.add_argument("--sw_batch", type=int, default=4, help="sliding-window patches per forward in validation")
    p.add_argument("--log_interval", type=int, default=20,
                   help="log losses every N iterations (the only host syncs of the loop)")
    p.add_argument("--image_interval", type=int, default=200, help="tensorboard images every N iterations")
    p.add_argument("--save_interval", type=int, default=200, help="write last.pth every N iterations")
    p.add_argument("--resume", action="store_true",
                   help="continue from <snapshot>/last.pth with the run's own flags (only flags that change "
                        "neither the math nor the random streams may differ, e.g. --num_workers, --device, "
                        "--log_interval); a finished run re-creates missing or damaged final files")
    p.add_argument("--overwrite", action="store_true",
                   help="delete the run already in the snapshot folder (checkpoints, logs, test results) and "
                        "start again; without it a folder holding a run is refused")
    p.add_argument("--model_root", default=os.path.join(REPO_ROOT, "model"), help="folder holding the snapshot folders")
    # Speed options (README "Speed options"); the defaults are the faithful fp32 run.
    p.add_argument("--tf32", type=int, choices=(0, 1), default=0,
                   help="0 (faithful): IEEE fp32 convolutions and matrix products on the GPU, as on the V100 of the "
                        "published runs (PyTorch would otherwise let cuDNN use TF32 on A100/H100/H200); 1: TF32 "
                        "(Ampere and later; faster, about 3 decimal digits in the convolution inputs)")
    p.add_argument("--amp", choices=AMP_MODES, default="none",
                   help="mixed precision: none (fp32, faithful default) or bf16 (bfloat16 autocast of the forward "
                        "passes in training and validation; losses in float32; meant for CUDA GPUs of compute "
                        "capability >= 8.0; also runs on the CPU)")
    p.add_argument("--channels_last", choices=("auto", "on", "off"), default="auto",
                   help="channels-last memory format (NHWC / NDHWC) for the model and the batches: auto = on "
                        "only on CUDA with --deterministic 0; same math, layout only (dropout masks are drawn "
                        "in memory order, so a run is not bit-identical to one without it)")
    p.add_argument("--compile", action="store_true",
                   help="compile the network with torch.compile (needs Triton on CUDA, a C++ compiler on the CPU; "
                        "the first iterations are slow while it compiles)")
    add_method_args(p, d)


def make_train_loader(kind: str, dataset: Any, batch_sampler: Any, num_workers: int, seed: int,
                      device: str) -> Any:
    """The training loader of ``--loader`` ``kind`` (workers seeded from ``seed`` as released; see
    :mod:`dataloaders.epoch_loader`): ``reseed`` gives the released batches from workers kept
    alive, ``released`` the released re-created ``DataLoader``; pinned memory unless ``device``
    is the CPU or no GPU is visible."""
    from dataloaders.epoch_loader import make_loader
    from dataloaders.sampler import make_worker_init_fn
    return make_loader(kind, dataset, batch_sampler, num_workers, make_worker_init_fn(seed),
                       torch.cuda.is_available() and device != "cpu")


def log_value(value: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A logged scalar as a float32 tensor on ``device`` without a host sync: a
    CPU scalar (e.g. the ramp weight) is filled in on the device instead of
    copied there, which on CUDA would wait for a pageable host-to-device copy."""
    if value.device != device and value.device.type == "cpu":
        return torch.full((), value.item(), dtype=torch.float32, device=device)
    return value.detach().float()


def make_optimizer(model: nn.Module, lr: float) -> torch.optim.Optimizer:
    """SGD, momentum 0.9, weight decay 1e-4 (released)."""
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=1e-4)


def train_step(method: Method, optimizer: torch.optim.Optimizer, image: torch.Tensor, label: torch.Tensor,
               iter_num: int, amp: str = "none", channels_last: bool = False,
               zero_grad: str = "zero", prepared: bool = False) -> dict[str, torch.Tensor]:
    """One training iteration: the method's losses, backward, optimiser step,
    the method's after-step work. ``iter_num`` iterations are done before it.
    (code/benchmark.py times exactly this function.)

    Args:
        image: (B, 1, H, W[, D]); label: (B, H, W[, D]).
        amp: ``"bf16"`` runs ``method.step`` (forward passes, VAT, separation and
            the losses, which compute in float32) under bfloat16 autocast; the
            backward and the optimiser step run outside it; no GradScaler is
            needed for bfloat16. ``"none"``: fp32.
        channels_last: give the image to the method in channels-last layout
            (the model should have been converted by :func:`setup_speed`).
        zero_grad: ``"zero"`` fills the gradients with zeros before the
            backward (``optimizer.zero_grad()`` of PyTorch 1.8, on which the
            released runs were made): a parameter this step does not use keeps
            a zero gradient, and SGD still applies momentum and weight decay to
            it. ``"none"`` sets them to None (PyTorch >= 2.0's default), and SGD
            skips such a parameter.
        prepared: the caller already ran ``method.prepare_step(image)``.
    """
    if not prepared:
        method.prepare_step(image)  # host work of the step (the VAT noise on CUDA) while the device is busy
    if channels_last:
        image = to_channels_last(image)
    with amp_autocast(image.device, amp):
        out = method.step(image, label, iter_num)
    optimizer.zero_grad(set_to_none=zero_grad == "none")
    out["loss"].backward()
    optimizer.step()
    method.after_step(iter_num + 1)
    return out


class Trainer:
    """Runs ``method`` for ``config.max_iterations`` iterations.

    Args:
        config: the run's settings (:class:`engine.config.TrainConfig`).
        method: a :class:`methods.base.Method`.
        loader: training batches (dicts with ``image`` and ``label``).
        snapshot: the snapshot folder.
        lr_at: learning rate to use after ``n`` iterations are done.
        validate: ``model -> (score, scalars)``: the selection score (higher is
            better) and extra tensorboard scalars; ``None`` with ``--select last``.
        should_validate: ``n -> bool`` whether to validate after iteration n.
        image_fn: ``(writer, image, label, probs, n)`` writes tensorboard images.
        validation_draws: called at every validation point (``should_validate``),
            also with ``--select last``: the random draws the released loop makes
            there outside the model (ACDC: the validation loader's base seed; LA:
            none). See docs/random_streams.md.
    """

    def __init__(self, config: TrainConfig, method: Method, loader: Any, snapshot: str,
                 lr_at: Callable[[int], float], validate: Callable[[nn.Module], tuple[float, dict[str, float]]] | None,
                 should_validate: Callable[[int], bool], image_fn: Callable[..., None] | None = None,
                 device: torch.device | None = None,
                 validation_draws: Callable[[], Any] | None = None, iterations: int | None = None,
                 save_best_optimizer: bool = False) -> None:
        from tensorboardX import SummaryWriter  # heavy import, only when training

        self.config, self.method, self.loader, self.snapshot = config, method, loader, snapshot
        self.model: nn.Module = method.model
        self.device = device or next(self.model.parameters()).device
        self.lr_at, self.validate, self.should_validate, self.image_fn = lr_at, validate, should_validate, image_fn
        self.validation_draws = validation_draws
        self.stream = EpochStream(loader, self.device)
        # before the optimiser: it holds the parameters
        self.speed = setup_speed(self.model, self.device, **config.speed())
        self.optimizer = make_optimizer(self.model, config.base_lr)
        if method.optimizer_state is not None:  # a stage that continues the previous stage's optimiser
            self.optimizer.load_state_dict(method.optimizer_state)
        self.iterations = config.max_iterations if iterations is None else iterations
        self.save_best_optimizer = save_best_optimizer
        self.writer = SummaryWriter(os.path.join(snapshot, "log"))
        self.iter_num = 0
        self.best = float("-inf")
        self.best_iter = -1
        self.history: list[dict[str, float]] = []
        self.guard = FiniteGuard(self.device, method.log_keys)
        self.saved_iter: int | None = None  # iteration of the last good last.pth

    # ------------------------------------------------------------------ checkpoints
    @property
    def last_path(self) -> str:
        return os.path.join(self.snapshot, "last.pth")

    def _weights(self) -> dict[str, torch.Tensor]:
        """The model's state_dict, refused (:class:`TrainingDiverged`) if anything in it is not finite."""
        self.guard.check()
        require_finite_weights(self.model, self.iter_num)
        return self.model.state_dict()

    def save_last(self) -> None:
        state = {"model": self._weights(), "optimizer": self.optimizer.state_dict(),
                 "iter_num": self.iter_num, "best": self.best, "best_iter": self.best_iter,
                 "method": self.method.state_dict(), "rng": rng_state(self.device),
                 "loader": self.stream.state_dict(),
                 # with --zero_grad zero, a parameter that had a gradient keeps a zero one, and SGD moves it
                 # even in a step that leaves it unused: a resumed run must start with the same ones
                 "grad_present": [n for n, q in self.model.named_parameters() if q.grad is not None],
                 "config": self.config.to_dict()}
        save_checkpoint(state, self.last_path)
        self.saved_iter = self.iter_num

    def load_last(self, state: dict[str, Any] | None = None) -> None:
        """Restore the run from ``last.pth`` (``state``: its content, already read by
        :func:`read_resume_state`; read here if None)."""
        if state is None:
            state = read_resume_state(self.last_path, self.config)
        self.model.load_state_dict(state["model"], strict=True)
        self.optimizer.load_state_dict(state["optimizer"])
        self.iter_num, self.best, self.best_iter = int(state["iter_num"]), float(state["best"]), int(state["best_iter"])
        self.saved_iter = self.iter_num
        self.method.load_state_dict(state["method"], self.device)
        present = set(state.get("grad_present", ()))
        for name, q in self.model.named_parameters():
            q.grad = torch.zeros_like(q) if name in present else None
        if "loader" in state:
            self.stream.load_state_dict(state["loader"])
        else:
            logger.warning("%s has no loader position (written by an older version): the data continue "
                            "with a new sampler epoch, not where the interrupted run was", self.last_path)
        set_rng_state(state["rng"], self.device)
        logger.info("resumed from %s at iteration %d (best %.4f at %d)", self.last_path, self.iter_num,
                     self.best, self.best_iter)

    def save_best(self, score: float) -> None:
        name = self.config.model
        weights = self._weights()
        save_checkpoint(weights, os.path.join(self.snapshot, f"iter_{self.iter_num}_dice_{round(score, 4)}.pth"))
        save_checkpoint(weights, os.path.join(self.snapshot, f"{name}_best_model.pth"))
        if self.save_best_optimizer:
            save_checkpoint(self.optimizer.state_dict(), os.path.join(self.snapshot, "best_optimizer.pth"))
        logger.info("iteration %d: new best %.4f, saved %s_best_model.pth", self.iter_num, score, name)

    def save_final(self) -> None:
        """The final iterate as a bare state_dict (``test_*.py --which last``)."""
        save_checkpoint(self._weights(), os.path.join(self.snapshot, f"{self.config.model}_last_model.pth"))

    def restore_final_files(self) -> None:
        """``--resume`` of a finished run: write again the final files that are missing or cannot be
        read (a kill or a full disk while they were written): ``<model>_last_model.pth`` from
        ``last.pth``, ``<model>_best_model.pth`` from its ``iter_<best_iter>_dice_*.pth`` twin (or,
        with ``--select last``, from ``last.pth``).

        Raises:
            CheckpointError: the best weights are in no intact file.
        """
        name = self.config.model
        last_model = os.path.join(self.snapshot, f"{name}_last_model.pth")
        if _intact(last_model) is None:
            self.save_final()
            logger.warning("re-created %s from %s (iteration %d)", last_model, self.last_path, self.iter_num)
        best_model = os.path.join(self.snapshot, f"{name}_best_model.pth")
        if _intact(best_model) is not None:
            logger.info("the run finished at iteration %d; its final files are intact, nothing to do", self.iter_num)
            return
        if self.config.select == "last" and self.best_iter == self.iter_num:
            weights: dict[str, torch.Tensor] | None = self._weights()
            source = self.last_path
        else:
            weights, source = None, ""
            pattern = os.path.join(glob.escape(self.snapshot), f"iter_{self.best_iter}_dice_*.pth")
            for twin in sorted(glob.glob(pattern)):
                weights, source = _intact(twin), twin
                if weights is not None:
                    break
        if weights is None:
            raise CheckpointError(
                f"{best_model} is missing or damaged, and the best weights (iteration {self.best_iter}) are in no "
                f"intact iter_{self.best_iter}_dice_*.pth file either: they cannot be re-created. The final iterate "
                f"is in {last_model} (test it with --which last), or train again with --overwrite.")
        save_checkpoint(weights, best_model)
        logger.warning("re-created %s from %s (iteration %d)", best_model, source, self.best_iter)

    # ------------------------------------------------------------------ loop
    def set_lr(self, lr: float) -> None:
        for g in self.optimizer.param_groups:
            g["lr"] = lr

    def run_validation(self, final: bool = False) -> None:
        if self.validation_draws is not None and self.should_validate(self.iter_num):
            # where the released loop validates, before any validation work; not at an extra final
            # validation (max_iterations off the validation grid), which the released loop does not make
            self.validation_draws()
        if self.validate is None:  # --select last: the last iterate is the model
            if final:
                self.best, self.best_iter = float("nan"), self.iter_num
                self.save_best(float("nan"))
            return
        t0 = time.time()
        score, scalars = self.validate(self.model)
        for k, v in scalars.items():
            self.writer.add_scalar(k, v, self.iter_num)
        improved = score > self.best
        if improved:
            self.best, self.best_iter = self.method.kept_best(score), self.iter_num
            self.save_best(score)
        self.writer.add_scalar("4_val/score", score, self.iter_num)
        self.writer.add_scalar("4_val/best", self.best, self.iter_num)
        logger.info("iteration %d: validation score %.4f (best %.4f at %d) [%.1fs]", self.iter_num, score,
                     self.best, self.best_iter, time.time() - t0)

    def train(self) -> dict[str, Any]:
        """Run the remaining iterations (all, or those after :meth:`load_last`); a run that had
        already finished only re-creates its missing final files. Returns the run summary.

        Raises:
            TrainingDiverged: a non-finite loss or weights; nothing was written from them and the
                message says which ``last.pth`` is the last good state.
        """
        try:
            return self._train()
        except TrainingDiverged as err:
            kept = (f"{self.last_path} keeps iteration {self.saved_iter}, the last good state"
                    if self.saved_iter is not None else "no checkpoint was written")
            raise TrainingDiverged(
                f"{err}. Nothing was saved from the diverged weights; {kept}. Usual causes: a learning rate too "
                "high (--base_lr), image values far outside the normalised range (check the data with "
                "python code/check_data.py), or bf16 overflow (--amp none). Fix the cause, then run again with "
                "--overwrite (or --resume from the last good state).") from None
        finally:
            self.writer.close()

    def _train(self) -> dict[str, Any]:
        from tqdm import tqdm

        cfg = self.config
        if self.iter_num >= self.iterations:  # --resume of a finished run
            self.restore_final_files()
        self.set_lr(self.lr_at(self.iter_num))
        pending: list[torch.Tensor] = []
        bar = tqdm(total=self.iterations, initial=self.iter_num, ncols=100, desc="train",
                   disable=None, file=sys.stderr)
        t_start = time.time()
        loader_wait = 0.0
        while self.iter_num < self.iterations:
            t_wait = time.perf_counter()
            batch = next(self.stream)
            loader_wait += time.perf_counter() - t_wait
            image = batch["image"].to(self.device, non_blocking=True)
            label = batch["label"].to(self.device, non_blocking=True).long()
            self.method.prepare_step(image)
            if self._may_start_next_epoch(self.iter_num + 1):
                self.stream.start_next_epoch()  # its workers load while this step runs
            out = train_step(self.method, self.optimizer, image, label, self.iter_num, amp=self.speed.amp,
                             channels_last=self.speed.channels_last,
                             zero_grad=cfg.zero_grad, prepared=True)
            self.iter_num += 1
            self.set_lr(self.lr_at(self.iter_num))
            pending.append(torch.stack([log_value(out[k], self.device) for k in self.method.log_keys]))
            self.guard.watch(self.iter_num, out["loss"], pending[-1])
            n = self.iter_num
            final = n == self.iterations
            if n % cfg.log_interval == 0 or final:
                self.guard.check()
                self.log(pending, bar)
                pending = []
            if self.image_fn is not None and "probs" in out and n % cfg.image_interval == 0:
                self.image_fn(self.writer, image, label, out["probs"], n)
            if self.should_validate(n) or final:
                self.guard.check()
                self.run_validation(final)
            if n % cfg.save_interval == 0 or final:
                self.save_last()
            if final:
                self.save_final()
            bar.update(1)
        bar.close()
        seconds = time.time() - t_start
        summary = {"iterations": self.iter_num, "best": self.best, "best_iter": self.best_iter,
                   "seconds": round(seconds, 1), "loader_wait_s": round(loader_wait, 2),
                   "loader_wait_share": round(loader_wait / seconds, 4) if seconds > 0 else 0.0,
                   "tf32": self.speed.tf32, "amp": self.speed.amp, "snapshot": self.snapshot}
        logger.info("training finished: %s", json.dumps(summary))
        return summary

    def _may_start_next_epoch(self, n: int) -> bool:
        """Whether the next sampler epoch may start before iteration ``n`` runs, with the batches and
        random streams of the released loop unchanged: the current epoch is used up, ``n`` is not
        the last iteration, nothing in the step draws from the CPU generators after
        :meth:`Method.prepare_step` (SS-Net on CUDA), and no validation draw (ACDC) comes at ``n``.
        The released loop draws the epoch's base seed after step ``n``; nothing draws in between."""
        return (self.stream.exhausted and n < self.iterations and not self.method.step_uses_cpu_generator
                and not (self.validation_draws is not None and self.should_validate(n)))

    def log(self, pending: list[torch.Tensor], bar: Any) -> None:
        """One host sync for ``log_interval`` iterations: the mean of each term."""
        values = torch.stack(pending).mean(0).tolist()
        scalars = dict(zip(self.method.log_keys, values))
        scalars["lr"] = self.optimizer.param_groups[0]["lr"]
        for k, v in scalars.items():
            self.writer.add_scalar(("1_loss/" if k.startswith("loss") else "2_train/") + k, v, self.iter_num)
        self.history.append({"iter": self.iter_num, **scalars})
        logger.info("iteration %d: " + ", ".join(f"{k} {v:.4f}" for k, v in scalars.items()), self.iter_num)
        bar.set_postfix({k.replace("loss_", ""): f"{v:.3f}" for k, v in scalars.items()
                         if k in ("loss", "loss_dice", "loss_lds", "loss_cs_l")})


def _intact(path: str) -> dict[str, torch.Tensor] | None:
    """The state_dict in the checkpoint file ``path``, or None if it is missing, empty or damaged."""
    try:
        return read_weights(path)
    except (FileNotFoundError, CheckpointError):
        return None


def read_resume_state(path: str, config: TrainConfig, iterations: int | None = None) -> dict[str, Any]:
    """Read the ``last.pth`` at ``path`` for ``--resume`` (tensors and plain values only: a file
    that needs anything else is refused, so it cannot run code) and check that ``config``
    continues the same run.

    Raises:
        FileNotFoundError: no ``last.pth``.
        CheckpointError: an empty, truncated, foreign or crafted file.
        ValueError: run-defining flags differ from the stored ones (each named), or
            ``--max_iterations`` is below the iterations done.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--resume: no checkpoint at {path}; run without --resume to start, "
                                "or check --exp/--labelnum/--model_root")
    state = load_training_state(path, LAST_KEYS)
    current = config.to_dict()
    if iterations is not None:  # a stage's own length (BCP's pre-train)
        current["max_iterations"] = iterations
    check_resume_flags(state["config"], current, path, int(state["iter_num"]))
    return state


def setup_device(name: str, keep_host_memory: bool = True) -> torch.device:
    """The run's device (``--device`` ``name``), made current on CUDA; on the CPU, freed host
    memory kept for reuse (``--keep_host_memory``). Raises RuntimeError for a CUDA device that is
    not there."""
    device = resolve_device(name)
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)  # kernels and caches of this run go to its GPU, never to GPU 0 as well
    if device.type == "cpu" and keep_host_memory:
        keep_freed_host_memory()
    return device


def write_config(run: TrainConfig, snapshot: str, device: torch.device) -> None:
    """``<snapshot>/config.json``: the run's settings (flags and method options), the resolved
    device and torch's version (written once the run has started or resumed, through a temporary
    file)."""
    config = dict(run.to_dict(), device_resolved=str(device), torch=torch.__version__)
    path = os.path.join(snapshot, "config.json")
    with open(path + ".tmp", "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)
    os.replace(path + ".tmp", path)
    logger.info("snapshot folder: %s", snapshot)
    logger.info("config: %s", json.dumps(config, sort_keys=True))
