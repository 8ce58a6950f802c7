"""The default training loader (--loader reseed) yields the released DataLoader's batches bit for bit,
over several sampler epochs, with 0, 2 and 4 workers, and leaves the main process's generators where
the DataLoader leaves them; the data cache changes nothing."""
from __future__ import annotations
import os
import random
import signal

import numpy as np
import pytest
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, SubsetRandomSampler

from dataloaders.acdc import ACDC
from dataloaders.epoch_loader import ReseedingLoader, make_loader
from dataloaders.la_heart import LAHeart
from dataloaders.sampler import TwoStreamBatchSampler, make_worker_init_fn
from dataloaders.transforms import Compose, RandomCrop, RandomGenerator, RandomRotFlip, ToTensor

EPOCHS = 5


@pytest.fixture(scope="module")
def la_root(tiny_data):
    return tiny_data("la", cases=8, seed=3, size=(40, 40, 24))


def _la(root, cache=False):
    return LAHeart(root, "train", cache=cache,
                   transform=Compose([RandomRotFlip(), RandomCrop((32, 32, 16)), ToTensor()]))


def _acdc(root, cache=False):
    return ACDC(root, "train", transform=RandomGenerator((32, 32)), cache=cache)


def _run(make_loader_fn, sampler_fn):
    """EPOCHS passes as the trainer makes them, with main-process draws between batches
    (a training step's dropout and noise); returns the batches and the generator states."""
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    loader = make_loader_fn(sampler_fn())
    batches = []
    for _ in range(EPOCHS):
        for b in loader:
            batches.append({k: v.clone() for k, v in b.items() if isinstance(v, torch.Tensor)})
            torch.rand(5)
    if hasattr(loader, "close"):
        loader.close()
    return batches, torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()


def _assert_same(a, b):
    assert len(a[0]) == len(b[0]) > EPOCHS
    for x, y in zip(a[0], b[0]):
        assert x.keys() == y.keys()
        for k in x:
            assert torch.equal(x[k], y[k]), k
    assert torch.equal(a[1], b[1]) and np.array_equal(a[2], b[2]) and a[3] == b[3]


@pytest.mark.parametrize("workers", [0, 2, 4])
@pytest.mark.parametrize("dataset", ["LA", "ACDC"])
def test_reseeding_loader_gives_the_released_batches(la_root, acdc_root, dataset, workers):
    if dataset == "LA":
        db, cached = _la(la_root), _la(la_root, cache=True)
        sampler = lambda: TwoStreamBatchSampler([0, 1, 2, 3], [4, 5], 4, 2)  # noqa: E731
    else:
        db, cached = _acdc(acdc_root), _acdc(acdc_root, cache=True)
        n = len(db)
        sampler = lambda: TwoStreamBatchSampler(list(range(7)), list(range(7, n)), 4, 2)  # noqa: E731
    init = make_worker_init_fn(1337)
    released = _run(lambda s: DataLoader(db, batch_sampler=s, num_workers=workers, worker_init_fn=init), sampler)
    ours = _run(lambda s: ReseedingLoader(db, s, workers, init), sampler)
    _assert_same(released, ours)
    cached.preload()
    _assert_same(released, _run(lambda s: ReseedingLoader(cached, s, workers, init), sampler))


def test_labeled_only_sampler_draws_as_released(la_root):
    """--supervised_only: SubsetRandomSampler draws its permutation from the torch generator."""
    db = _la(la_root)
    sampler = lambda: BatchSampler(SubsetRandomSampler([0, 1, 2, 3, 4, 5]), 2, drop_last=True)  # noqa: E731
    init = make_worker_init_fn(1337)
    _assert_same(_run(lambda s: DataLoader(db, batch_sampler=s, num_workers=2, worker_init_fn=init), sampler),
                 _run(lambda s: ReseedingLoader(db, s, 2, init), sampler))


def test_workers_are_kept_across_epochs(la_root):
    loader = ReseedingLoader(_la(la_root), TwoStreamBatchSampler([0, 1], [2, 3], 2, 1), 2, make_worker_init_fn(0))
    list(loader)
    pids = [p.pid for p in loader._workers]
    list(loader)
    assert [p.pid for p in loader._workers] == pids and all(p.is_alive() for p in loader._workers)
    loader.close()
    assert not loader._workers


class _Broken(Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, i):
        if i == 3:
            raise ValueError("case 3 is corrupt")
        if i == 2:
            os.kill(os.getpid(), signal.SIGBUS)
        return torch.zeros(1)


def test_worker_errors_reach_the_main_process():
    loader = ReseedingLoader(_Broken(), [[0], [3]], 1)
    with pytest.raises(ValueError, match="case 3 is corrupt"):
        list(loader)
    loader = ReseedingLoader(_Broken(), [[0], [2]], 1, timeout=0.5)
    with pytest.raises(RuntimeError, match="DataLoader worker 0 .* killed by signal: Bus error"):
        list(loader)


def test_make_loader_kinds(la_root):
    db, s = _la(la_root), TwoStreamBatchSampler([0, 1], [2, 3], 2, 1)
    assert isinstance(make_loader("reseed", db, s, 2, None, False), ReseedingLoader)
    assert isinstance(make_loader("released", db, s, 2, None, False), DataLoader)
    with pytest.raises(ValueError, match="--loader"):
        make_loader("fast", db, s, 2, None, False)
