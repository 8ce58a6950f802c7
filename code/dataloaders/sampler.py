"""Two-stream batch sampler (labeled + unlabeled) and data-loader worker seeding.

Released semantics (UA-MT's ``TwoStreamBatchSampler``, used unchanged by SS-Net):
every batch is ``primary_batch_size = batch_size - secondary_batch_size``
indices taken from ONE fresh permutation of the primary (labeled) indices,
followed by ``secondary_batch_size`` indices from an endless chain of fresh
permutations of the secondary (unlabeled) indices. An epoch ends when the
labeled permutation is exhausted, so ``len(sampler) = len(primary) // primary_batch_size``
(a remainder of labeled indices is dropped for that epoch). The permutations
come from the global ``numpy.random`` (or ``rng``): the labeled one is drawn
when ``iter()`` is called, each unlabeled one when the previous is used up.
"""
from __future__ import annotations

import itertools
import random
from typing import Callable
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler

__all__ = ["TwoStreamBatchSampler", "iterate_once", "iterate_eternally", "grouper",
           "WorkerInit", "make_worker_init_fn", "seed_everything", "draw_loader_base_seed"]


def iterate_once(indices: Sequence[int], rng=None) -> np.ndarray:
    """One random permutation of ``indices`` (``rng`` defaults to the global numpy RNG)."""
    return (np.random if rng is None else rng).permutation(indices)


def iterate_eternally(indices: Sequence[int], rng=None) -> Iterator[int]:
    """Endless stream: a fresh permutation of ``indices``, drawn lazily each time the last ends."""
    def infinite_shuffles():
        while True:
            yield (np.random if rng is None else rng).permutation(indices)
    return itertools.chain.from_iterable(infinite_shuffles())


def grouper(iterable: Iterable[int], n: int) -> Iterator[tuple[int, ...]]:
    """Consecutive chunks of exactly ``n`` items; an incomplete last chunk is dropped."""
    args = [iter(iterable)] * n
    return zip(*args)


class TwoStreamBatchSampler(Sampler):
    """Batches of ``batch_size - secondary_batch_size`` labeled + ``secondary_batch_size`` unlabeled.

    Args:
        primary_indices: labeled dataset indices (e.g. ``range(labelnum)``).
        secondary_indices: unlabeled dataset indices (disjoint from the labeled ones).
        batch_size: total batch size (LA 4, ACDC 24).
        secondary_batch_size: unlabeled part of the batch (``batch_size - labeled_bs``).
        rng: optional ``numpy.random.RandomState``/``Generator`` for the permutations;
            default None uses the global ``numpy.random`` as the released code does.

    Raises:
        ValueError: sizes are not positive, a stream has fewer indices than its part of
            the batch, indices repeat, or the two streams overlap.
    """

    def __init__(self, primary_indices: Sequence[int], secondary_indices: Sequence[int],
                 batch_size: int, secondary_batch_size: int, rng=None) -> None:
        self.primary_indices = [int(i) for i in primary_indices]
        self.secondary_indices = [int(i) for i in secondary_indices]
        self.batch_size = int(batch_size)
        self.secondary_batch_size = int(secondary_batch_size)
        self.primary_batch_size = self.batch_size - self.secondary_batch_size
        self.rng = rng
        if self.secondary_batch_size <= 0:
            raise ValueError(f"TwoStreamBatchSampler: secondary (unlabeled) batch size must be > 0, "
                             f"got {self.secondary_batch_size} (= batch_size - labeled_bs); lower --labeled_bs.")
        if self.primary_batch_size <= 0:
            raise ValueError(f"TwoStreamBatchSampler: labeled batch size batch_size - secondary_batch_size = "
                             f"{self.batch_size} - {self.secondary_batch_size} = {self.primary_batch_size} "
                             "must be > 0; use --labeled_bs >= 1 and --batch_size > --labeled_bs.")
        if len(self.primary_indices) < self.primary_batch_size:
            raise ValueError(f"TwoStreamBatchSampler: {len(self.primary_indices)} labeled samples are fewer "
                             f"than the labeled batch size {self.primary_batch_size}; raise --labelnum or "
                             "lower --labeled_bs.")
        if len(self.secondary_indices) < self.secondary_batch_size:
            raise ValueError(f"TwoStreamBatchSampler: {len(self.secondary_indices)} unlabeled samples are fewer "
                             f"than the unlabeled batch size {self.secondary_batch_size}; lower --batch_size "
                             "or --labelnum, or add unlabeled data.")
        for name, idx in (("labeled", self.primary_indices), ("unlabeled", self.secondary_indices)):
            if len(set(idx)) != len(idx):
                raise ValueError(f"TwoStreamBatchSampler: the {name} indices contain duplicates.")
        overlap = set(self.primary_indices) & set(self.secondary_indices)
        if overlap:
            raise ValueError(f"TwoStreamBatchSampler: {len(overlap)} indices are both labeled and unlabeled "
                             f"(e.g. {sorted(overlap)[:5]}); the two streams must be disjoint.")

    def __iter__(self) -> Iterator[list[int]]:
        primary_iter = iterate_once(self.primary_indices, self.rng)
        secondary_iter = iterate_eternally(self.secondary_indices, self.rng)
        pairs = zip(grouper(primary_iter, self.primary_batch_size),
                    grouper(secondary_iter, self.secondary_batch_size))
        return ([int(i) for i in p + s] for p, s in pairs)

    def __len__(self) -> int:
        return len(self.primary_indices) // self.primary_batch_size


class WorkerInit:
    """Picklable DataLoader ``worker_init_fn``: seeds worker ``w`` with ``seed + w`` (see ``make_worker_init_fn``)."""

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)

    def __call__(self, worker_id: int) -> None:
        random.seed(self.seed + worker_id)

    def __repr__(self) -> str:
        return f"WorkerInit(seed={self.seed})"


def make_worker_init_fn(seed: int) -> Callable[[int], None]:
    """Return the released DataLoader ``worker_init_fn``: worker ``w`` runs ``random.seed(seed + w)``.

    Only Python's ``random`` is seeded (it drives ``RandomGenerator``'s coin
    flips); each worker's ``numpy.random`` is seeded by PyTorch itself from the
    loader's base seed (PyTorch >= 1.9), which follows ``torch.manual_seed``. As
    released, workers are re-created and re-seeded every epoch, so ``random``
    draws repeat per worker per epoch. The returned object is picklable (works
    with the ``spawn`` start method).
    """
    return WorkerInit(seed)


def draw_loader_base_seed(generator=None) -> int:
    """Consume the random draw that creating a ``DataLoader`` iterator makes; return it.

    Every ``iter(DataLoader)`` (``for batch in loader``) takes one 64-bit base
    seed for its workers from ``generator`` (default: the global torch CPU
    generator), even with ``num_workers=0``, as
    ``torch.empty((), dtype=torch.int64).random_(generator=generator)``; the
    sampler may draw more (``SequentialSampler`` draws nothing). Code that
    replaces a released ``DataLoader`` by direct reading calls this where the
    released code created the iterator, so the global stream (dropout masks,
    VAT noise) stays where the released run had it.
    """
    import torch
    return int(torch.empty((), dtype=torch.int64).random_(generator=generator).item())


def seed_everything(seed: int, deterministic: int = 1) -> None:
    """Seed ``random``, numpy and torch (all devices), as the released scripts' ``__main__`` does,
    and set the determinism of ``--deterministic``: 0 cudnn.benchmark on; 1 (released) cuDNN
    deterministic, benchmark off; 2 also ``torch.use_deterministic_algorithms(True)`` (sets
    ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` if unset, before cuBLAS starts)."""
    import os

    import torch
    if int(deterministic) >= 2:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
    else:
        torch.use_deterministic_algorithms(False)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed(seed)
    torch.backends.cudnn.benchmark = not deterministic
    torch.backends.cudnn.deterministic = bool(deterministic)
