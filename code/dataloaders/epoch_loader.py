"""A training loader that yields the released loader's batches without re-forking its workers.

The released scripts iterate ``DataLoader(db, batch_sampler=TwoStreamBatchSampler(...),
num_workers=4, worker_init_fn=...)`` once per sampler epoch, so every epoch
forks 4 new worker processes (with 4 labeled LA cases an epoch is 2
iterations) and nothing is prefetched across the epoch boundary.
:class:`ReseedingLoader` keeps its workers alive and, at the start of each
epoch, re-seeds them exactly as fresh ``DataLoader`` workers are seeded, so
the batches are bit-identical to the released loader's:

* main process, at each ``iter()``, as a multi-process ``DataLoader``
  iterator does: the sampler's iterator is created (``TwoStreamBatchSampler``
  draws the labeled permutation from ``numpy.random`` there), one 64-bit base
  seed is drawn from the torch generator, and the sampler's iterator is
  created again (a second permutation, the one used);
* worker ``w``: ``random.seed(base + w)``, ``torch.manual_seed(base + w)``,
  ``numpy.random.seed`` from PyTorch's ``_generate_state(base, w)``,
  ``torch.set_num_threads(1)``, the worker info, then ``worker_init_fn(w)``;
* index batches go round-robin to the workers (batch k to worker k mod W),
  ``prefetch_factor x W`` at the start of the epoch and one more each time a
  batch is handed out, so the sampler's lazy ``numpy.random`` draws happen at
  the same points of the main process as with ``DataLoader``;
* batches are returned in sampler order.

What the released order forbids: the next epoch's base seed is drawn from
the global torch generator after the current epoch's last training step
(whose dropout masks and VAT noise consume it), so no batch of the next epoch
can be prepared before that step ends. Within an epoch everything is
prefetched. With ``num_workers=0`` the plain ``DataLoader`` is used (nothing
to fork). Workers are started with ``fork`` (Linux); where fork is not
available the released loader is used.

Workers never outlive the main process: on Linux each asks the kernel for
``SIGKILL`` when its parent dies (``prctl(PR_SET_PDEATHSIG)``), and on every
system each waits for work with a timeout and exits once its parent pid has
changed (the parent is gone, as torch's own worker watchdog checks), so a
``kill -9`` of the trainer leaves no worker behind.
"""
from __future__ import annotations

import ctypes
import itertools
import logging
import multiprocessing
import os
import queue
import random
import signal
import sys
from typing import Any, Callable
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torch.utils.data._utils.collate import default_collate

from dataloaders.sampler import draw_loader_base_seed

__all__ = ["ReseedingLoader", "LOADERS", "make_loader"]

logger = logging.getLogger(__name__)

#: --loader choices
LOADERS = ("reseed", "released")

#: seconds a worker waits for a task before checking that its parent is still alive
PARENT_CHECK_INTERVAL = 1.0

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _set_parent_death_signal() -> bool:
    """Linux: have the kernel send this process ``SIGKILL`` when its parent dies.

    Returns True when set; False on other systems or if ``prctl`` fails (the
    worker's parent-pid check still ends it then). The kernel sends the signal
    when the parent THREAD that forked ends, so the loader's workers must be
    started from a thread that lives as long as the run (the main thread).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        rc = libc.prctl(ctypes.c_int(_PR_SET_PDEATHSIG), ctypes.c_ulong(int(signal.SIGKILL)),
                        ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0))
    except (OSError, AttributeError) as err:
        logger.debug("prctl(PR_SET_PDEATHSIG) unavailable: %s", err)
        return False
    if rc != 0:
        logger.debug("prctl(PR_SET_PDEATHSIG) failed: errno %d", ctypes.get_errno())
        return False
    return True


def _next_task(tasks: Any, parent_pid: int) -> Any:
    """The next message of ``tasks``; ends this worker process if its parent has died."""
    while True:
        try:
            return tasks.get(timeout=PARENT_CHECK_INTERVAL)
        except queue.Empty:
            if os.getppid() != parent_pid:
                # The parent is gone (we were re-parented): leave at once. os._exit, not a
                # return, so that no queue feeder thread blocks on a pipe nobody reads.
                os._exit(0)


def _worker_loop(dataset: Dataset, collate_fn: Callable, init_fn: Callable[[int], None] | None, wid: int,
                 num_workers: int, tasks: Any, results: Any, parent_pid: int | None = None) -> None:
    from torch._utils import ExceptionWrapper
    from torch.utils.data._utils import worker as torch_worker

    parent_pid = os.getppid() if parent_pid is None else parent_pid
    _set_parent_death_signal()
    if os.getppid() != parent_pid:  # the parent died before the death signal was armed
        os._exit(0)
    torch.set_num_threads(1)
    epoch = -1
    while True:
        msg = _next_task(tasks, parent_pid)
        if msg is None:
            return
        if msg[0] == "epoch":  # re-seed exactly as a freshly started DataLoader worker
            _, epoch, base_seed = msg
            seed = base_seed + wid
            random.seed(seed)
            torch.manual_seed(seed)
            np.random.seed(torch_worker._generate_state(base_seed, wid))
            torch_worker._worker_info = torch_worker.WorkerInfo(id=wid, num_workers=num_workers, seed=seed,
                                                                dataset=dataset)
            if init_fn is not None:
                try:
                    init_fn(wid)
                except Exception:  # noqa: BLE001 (sent to the main process)
                    results.put((epoch, -1, ExceptionWrapper(where=f"in loader worker {wid} (worker_init_fn)")))
            continue
        _, epoch, k, indices = msg
        try:
            results.put((epoch, k, collate_fn([dataset[i] for i in indices])))
        except Exception:  # noqa: BLE001
            results.put((epoch, k, ExceptionWrapper(where=f"in loader worker {wid}")))


class ReseedingLoader:
    """Batches of ``DataLoader(dataset, batch_sampler=batch_sampler, num_workers=...,
    worker_init_fn=...)`` (one pass per ``iter()``), from workers kept alive across
    passes and re-seeded at each as fresh ones (see the module docstring).

    Args:
        dataset: map-style dataset.
        batch_sampler: yields lists of indices (e.g. ``TwoStreamBatchSampler``).
        num_workers: worker processes (0: the plain ``DataLoader`` in the main process).
        worker_init_fn: called in each worker after its seeding, as in ``DataLoader``.
        pin_memory: pin each batch (CUDA runs), in the main process.
        prefetch_factor: index batches outstanding per worker (``DataLoader``'s default 2).
        generator: torch generator of the base seed (default: the global one).
        timeout: seconds to wait for a batch before checking the workers are alive.
    """

    def __init__(self, dataset: Dataset, batch_sampler: Any, num_workers: int = 0,
                 worker_init_fn: Callable[[int], None] | None = None, pin_memory: bool = False,
                 prefetch_factor: int = 2, generator: torch.Generator | None = None,
                 collate_fn: Callable = default_collate, timeout: float = 5.0) -> None:
        if num_workers < 0 or prefetch_factor < 1:
            raise ValueError(f"ReseedingLoader: num_workers must be >= 0 and prefetch_factor >= 1, got "
                             f"{num_workers} and {prefetch_factor}")
        self.dataset, self.batch_sampler = dataset, batch_sampler
        self.num_workers, self.worker_init_fn = int(num_workers), worker_init_fn
        self.pin_memory, self.prefetch_factor, self.generator = pin_memory, int(prefetch_factor), generator
        self.collate_fn, self.timeout = collate_fn, timeout
        self._workers: list[Any] = []
        self._tasks: list[Any] = []
        self._results: Any = None
        self._epoch = 0
        self._plain = DataLoader(dataset, batch_sampler=batch_sampler, num_workers=0, collate_fn=collate_fn,
                                 pin_memory=pin_memory, generator=generator) if num_workers == 0 else None

    def __len__(self) -> int:
        return len(self.batch_sampler)

    # ------------------------------------------------------------------ workers
    def _start(self) -> None:
        ctx = multiprocessing.get_context("fork")
        self._results = ctx.Queue()
        parent_pid = os.getpid()  # recorded before the fork: the workers watch for it to change
        for wid in range(self.num_workers):
            tasks = ctx.Queue()
            p = ctx.Process(target=_worker_loop, daemon=True,
                            args=(self.dataset, self.collate_fn, self.worker_init_fn, wid, self.num_workers,
                                  tasks, self._results, parent_pid))
            p.start()
            self._workers.append(p)
            self._tasks.append(tasks)

    def close(self) -> None:
        """Stop the workers (also done when the loader is garbage-collected or at exit)."""
        for t in self._tasks:
            try:
                t.put(None)
            except (OSError, ValueError):
                pass
        for p in self._workers:
            p.join(timeout=2)
            if p.is_alive():
                p.terminate()
        self._workers, self._tasks = [], []

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 (interpreter shutdown)
            pass

    def _check_alive(self) -> None:
        for wid, p in enumerate(self._workers):
            if not p.is_alive():
                code = p.exitcode
                how = (f"is killed by signal: {signal.strsignal(-code)}" if code is not None and code < 0
                       else f"exited with code {code}")
                self.close()
                raise RuntimeError(f"DataLoader worker {wid} (pid {p.pid}) {how}")

    def _get(self) -> Any:
        while True:
            try:
                return self._results.get(timeout=self.timeout)
            except queue.Empty:
                self._check_alive()

    # ------------------------------------------------------------------ one pass
    def __iter__(self) -> Iterator[Any]:
        if self._plain is not None:
            return iter(self._plain)
        if not self._workers:
            self._start()
        return self._epoch_batches()

    def _epoch_batches(self) -> Iterator[Any]:
        # The order of a multi-process DataLoader iterator: the sampler's iterator is created,
        # the base seed drawn, then (in _reset) the sampler's iterator created AGAIN and used;
        # TwoStreamBatchSampler draws its labeled permutation at iter(), so two are drawn per
        # epoch and the first is discarded (PyTorch >= 1.7, so also the released runs' 1.8).
        iter(self.batch_sampler)
        base_seed = draw_loader_base_seed(self.generator)
        sampler_iter = iter(self.batch_sampler)
        self._epoch += 1
        epoch = self._epoch
        for t in self._tasks:
            t.put(("epoch", epoch, base_seed))
        cycle = itertools.cycle(range(self.num_workers))
        sent = 0

        def put() -> None:
            nonlocal sent
            indices = next(sampler_iter, None)
            if indices is not None:
                self._tasks[next(cycle)].put(("batch", epoch, sent, list(indices)))
                sent += 1

        for _ in range(self.prefetch_factor * self.num_workers):  # at iter(), as DataLoader's _reset
            put()
        return self._yield(epoch, put, lambda: sent)

    def _yield(self, epoch: int, put: Callable[[], None], sent: Callable[[], int]) -> Iterator[Any]:
        from torch._utils import ExceptionWrapper
        from torch.utils.data._utils.pin_memory import pin_memory

        ready: dict = {}
        k = 0
        while k < sent():
            while k not in ready:
                e, j, data = self._get()
                if isinstance(data, ExceptionWrapper):
                    self.close()
                    data.reraise()
                if e == epoch:  # results of an abandoned earlier pass are dropped
                    ready[j] = data
            data = ready.pop(k)
            k += 1
            put()  # as DataLoader: the next index batch goes out before this batch is returned
            if self.pin_memory and torch.cuda.is_available():
                data = pin_memory(data)
            yield data


def make_loader(kind: str, dataset: Dataset, batch_sampler: Any, num_workers: int,
                worker_init_fn: Callable[[int], None] | None, pin_memory: bool) -> Any:
    """``--loader``: ``reseed`` (default, :class:`ReseedingLoader`) or ``released``
    (``DataLoader``, re-created workers each sampler epoch)."""
    if kind not in LOADERS:
        raise ValueError(f"--loader must be one of {', '.join(LOADERS)}, got {kind!r}")
    fork = "fork" in multiprocessing.get_all_start_methods() and os.name == "posix"
    if kind == "reseed" and fork:
        return ReseedingLoader(dataset, batch_sampler, num_workers, worker_init_fn, pin_memory)
    if kind == "reseed":
        logger.info("--loader reseed needs the fork start method; using the released DataLoader")
    return DataLoader(dataset, batch_sampler=batch_sampler, num_workers=num_workers, pin_memory=pin_memory,
                      worker_init_fn=worker_init_fn)
