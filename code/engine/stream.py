"""The training batches of a run: a new loader iterator every sampler epoch, as the released
``for epoch: for batch in trainloader`` loop makes them, with the loader position and every RNG
state saved for an exact ``--resume``."""
from __future__ import annotations
import logging
import random
from typing import Any
from collections.abc import Iterator

import numpy as np
import torch

logger = logging.getLogger(__name__)


def _is_cuda(device: torch.device | None) -> bool:
    return device is not None and torch.device(device).type == "cuda"


def rng_state(device: torch.device | None = None) -> dict[str, Any]:
    """The python, numpy and torch CPU generator states, plus the CUDA one of ``device``.

    Only tensors and Python builtins, so that a checkpoint holding it loads with
    ``torch.load(weights_only=True)``: numpy's legacy MT19937 state is stored as
    ``{"bit_generator", "key" (int64 tensor of the uint32 key), "pos", "has_gauss",
    "cached_gaussian"}``. ``"cuda"`` (the generator of ``device`` only) is present
    when ``device`` is a CUDA device.
    """
    name, key, pos, has_gauss, cached = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {"bit_generator": str(name), "key": torch.from_numpy(np.asarray(key).astype(np.int64)),
                  "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if _is_cuda(device):
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_numpy_state(saved: Any) -> None:
    if isinstance(saved, dict):  # the form written by rng_state()
        key = saved["key"]
        key = key.numpy() if torch.is_tensor(key) else np.asarray(key)
        np.random.set_state((saved["bit_generator"], key.astype(np.uint32), int(saved["pos"]),
                             int(saved["has_gauss"]), float(saved["cached_gaussian"])))
    else:  # np.random.get_state()'s tuple, as older versions stored it
        np.random.set_state(saved)


def _cuda_entry(saved: Any, device: torch.device) -> torch.Tensor | None:
    """The saved CUDA state for ``device``: the tensor itself, or from the per-GPU list
    (``get_rng_state_all()``) that older versions stored, the element of the device's index."""
    if torch.is_tensor(saved):
        return saved
    states = list(saved)
    index = device.index if device.index is not None else torch.cuda.current_device()
    if 0 <= index < len(states):
        return states[index]
    if states:
        logger.warning("the checkpoint's CUDA RNG states (one per GPU, %d) have none for %s: using that of GPU 0",
                       len(states), device)
        return states[0]
    logger.warning("the checkpoint holds an empty list of CUDA RNG states: the CUDA generator is not restored")
    return None


def set_rng_state(state: dict[str, Any], device: torch.device | None = None) -> None:
    """Restore :func:`rng_state` (also the numpy tuple / per-GPU list form of older checkpoints).

    The CUDA state is restored only for a CUDA ``device`` when the state holds one.
    """
    random.setstate(state["python"])
    _set_numpy_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if not _is_cuda(device) or state.get("cuda") is None:
        return
    device = torch.device(device)
    if not torch.cuda.is_available():
        logger.warning("the run's device is %s but CUDA is not available: its RNG state is not restored", device)
        return
    cuda_state = _cuda_entry(state["cuda"], device)
    if cuda_state is not None:
        torch.cuda.set_rng_state(cuda_state, device)


def worker_death_error(err: RuntimeError) -> RuntimeError:
    """A data-loader worker killed by the system most often ran out of shared memory (/dev/shm, where
    workers put their batches; Docker gives a container 64 MB): say so and what to do."""
    return RuntimeError(f"{err}. A data-loader worker died; the usual cause is a full shared-memory "
                        "filesystem /dev/shm, through which workers send their batches (check `df -h /dev/shm`; "
                        "Docker's default is 64 MB). Give the container more (docker run --shm-size=8g ...) or "
                        "load in the main process with --num_workers 0 (slower, and the batches differ from "
                        "the released 4-worker run)")


class EpochStream:
    """Training batches forever: a new pass over ``loader`` (a new sampler epoch,
    so a new iterator, which draws its workers' base seed from the global torch
    generator, as the released ``for epoch: for batch in trainloader`` does)
    after each.

    For an exact ``--resume`` it keeps the RNG states taken right before the
    current epoch's iterator was created and how many of its batches were taken
    (:meth:`state_dict`); :meth:`load_state_dict` re-creates that iterator from
    those states and takes the same batches again, so the sampler, the worker
    seeds and the augmentation draws continue as in the uninterrupted run (at
    the cost of re-loading at most one epoch of batches). ``device``: the run's device;
    for a CUDA one its generator state is kept too (:func:`rng_state`).
    """

    def __init__(self, loader: Any, device: torch.device | None = None) -> None:
        self.loader = loader
        self.device = device
        self._iterator: Iterator[Any] | None = None
        self.epoch_rng: dict[str, Any] | None = None
        self.taken = 0

    def __iter__(self) -> EpochStream:
        return self

    def _new_epoch(self) -> None:
        self.epoch_rng = rng_state(self.device)
        self._iterator = iter(self.loader)
        self.taken = 0

    def __next__(self) -> Any:
        if self._iterator is None:
            self._new_epoch()
        try:
            batch = next(self._iterator)
        except RuntimeError as err:
            if "DataLoader worker" in str(err):
                raise worker_death_error(err) from err
            raise
        except StopIteration:
            if self.taken == 0:
                raise RuntimeError("the training loader yielded no batch: check the dataset and the "
                                   "batch sizes") from None
            self._new_epoch()
            return next(self)
        self.taken += 1
        return batch

    @property
    def exhausted(self) -> bool:
        """The current epoch's last batch has been taken (the next :func:`next` starts a new epoch)."""
        try:
            return self._iterator is not None and self.taken >= len(self.loader)
        except TypeError:  # a loader without a length
            return False

    def start_next_epoch(self) -> None:
        """Start the next epoch's iterator now (its base-seed and sampler draws happen here), so
        that its workers load while the current step runs. Only where nothing draws from the
        global generators between this call and the next :func:`next` (see ``engine.trainer``)."""
        self._new_epoch()

    def state_dict(self) -> dict[str, Any]:
        return {"epoch_rng": self.epoch_rng, "taken": self.taken}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Replay the saved epoch up to where it was; the caller then restores the
        RNG states of the moment of saving (:func:`set_rng_state`)."""
        if state.get("epoch_rng") is None:  # saved before the first batch: start afresh
            self._iterator, self.epoch_rng, self.taken = None, None, 0
            return
        set_rng_state(state["epoch_rng"], self.device)
        self._new_epoch()
        for _ in range(int(state["taken"])):
            next(self._iterator)
            self.taken += 1
