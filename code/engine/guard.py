"""Stopping a diverged run: the first non-finite loss ends training with the iteration, the loss
terms and a hint, and no checkpoint is ever written from non-finite weights.

The check adds no host-device synchronisation to the critical path. On the CPU each
iteration's loss is checked at once (there is no device to wait for). On CUDA the finite flag
of iteration n is copied to the host without blocking and read after iteration n + 1 has been
queued, so the GPU always has a step to run; a divergence is then seen one iteration late,
and since no checkpoint is written in between (:meth:`FiniteGuard.check` runs before every
validation and save), the last good ``last.pth`` is kept.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["TrainingDiverged", "FiniteGuard", "non_finite_tensors", "require_finite_weights"]


class TrainingDiverged(RuntimeError):
    """The loss or the weights of a training run became NaN or infinite."""


class FiniteGuard:
    """Watches the training loss of every iteration (see the module docstring).

    Args:
        device: where the losses live.
        log_keys: names of the values passed to :meth:`watch` (for the message).
    """

    def __init__(self, device: torch.device, log_keys: Sequence[str]) -> None:
        self.lagged = torch.device(device).type == "cuda"
        self.log_keys = list(log_keys)
        self._pending: tuple[int, torch.Tensor, torch.Tensor, torch.cuda.Event | None] | None = None

    def watch(self, iteration: int, loss: torch.Tensor, values: torch.Tensor) -> None:
        """Record iteration ``iteration``'s trained ``loss`` and its logged ``values`` (one per
        log key); raise if an earlier (CUDA) or this (CPU) iteration's loss is not finite."""
        finite = torch.isfinite(loss.detach()).all()
        if not self.lagged:
            if not bool(finite):
                self._raise(iteration, values)
            return
        self.check()  # iteration - 1: queued long ago, so (almost always) done
        flag = finite.to("cpu", non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        self._pending = (iteration, flag, values, event)

    def check(self) -> None:
        """Read the flag still in flight (CUDA); raise :class:`TrainingDiverged` if it says so."""
        if self._pending is None:
            return
        iteration, flag, values, event = self._pending
        self._pending = None
        if event is not None:
            event.synchronize()
        if not bool(flag):
            self._raise(iteration, values)

    def _raise(self, iteration: int, values: torch.Tensor) -> None:
        terms = ", ".join(f"{k} {v:.4g}" for k, v in zip(self.log_keys, values.detach().float().cpu().tolist()))
        raise TrainingDiverged(f"the loss is not finite at iteration {iteration} ({terms}): the run diverged")


def non_finite_tensors(state: dict[str, torch.Tensor]) -> list[str]:
    """Names of the floating-point tensors of ``state`` holding a NaN or an infinity (one host
    synchronisation for all of them)."""
    names = [k for k, v in state.items() if torch.is_tensor(v) and v.is_floating_point() and v.numel()]
    if not names:
        return []
    ok = torch.stack([torch.isfinite(state[k]).all() for k in names]).cpu().tolist()
    return [k for k, good in zip(names, ok) if not good]


def require_finite_weights(model: nn.Module, iteration: int) -> None:
    """Raise :class:`TrainingDiverged` if a parameter or buffer of ``model`` is not finite."""
    bad = non_finite_tensors(model.state_dict())
    if bad:
        raise TrainingDiverged(f"the weights are not finite after iteration {iteration} ({len(bad)} tensors, e.g. "
                               f"{', '.join(bad[:3])}): the run diverged")
