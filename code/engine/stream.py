"""The training batches of a run: a new loader iterator every sampler epoch, as the released
``for epoch: for batch in trainloader`` loop makes them, with the loader position and every RNG
state saved for an exact ``--resume``."""
import random
from typing import Any, Dict, Iterator, Optional

import numpy as np
import torch


def rng_state() -> Dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


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
    the cost of re-loading at most one epoch of batches). With
    ``--persistent_workers 1`` the workers' generators carry over from earlier
    epochs, so that replay cannot reproduce them.
    """

    def __init__(self, loader: Any) -> None:
        self.loader = loader
        self._iterator: Optional[Iterator[Any]] = None
        self.epoch_rng: Optional[Dict[str, Any]] = None
        self.taken = 0

    def __iter__(self) -> "EpochStream":
        return self

    def _new_epoch(self) -> None:
        self.epoch_rng = rng_state()
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
                raise RuntimeError("the training loader yielded no batch: check the dataset and the batch sizes")
            self._new_epoch()
            return next(self)
        self.taken += 1
        return batch

    def state_dict(self) -> Dict[str, Any]:
        return {"epoch_rng": self.epoch_rng, "taken": self.taken}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Replay the saved epoch up to where it was; the caller then restores the
        RNG states of the moment of saving (:func:`set_rng_state`)."""
        if state.get("epoch_rng") is None:  # saved before the first batch: start afresh
            self._iterator, self.epoch_rng, self.taken = None, None, 0
            return
        set_rng_state(state["epoch_rng"])
        self._new_epoch()
        for _ in range(int(state["taken"])):
            next(self._iterator)
            self.taken += 1
