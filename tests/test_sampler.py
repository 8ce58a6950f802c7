"""TwoStreamBatchSampler: composition, epoch length, determinism, released RNG order; worker seeding."""
from __future__ import annotations
import random

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from dataloaders.sampler import TwoStreamBatchSampler, grouper, make_worker_init_fn, seed_everything

LABELED = list(range(5))
UNLABELED = list(range(5, 12))


def test_every_batch_is_labeled_then_unlabeled():
    np.random.seed(0)
    s = TwoStreamBatchSampler(LABELED, UNLABELED, batch_size=4, secondary_batch_size=2)
    batches = list(s)
    assert len(batches) == len(s) == 2  # 5 // 2, the odd labeled index is dropped this epoch
    for b in batches:
        assert len(b) == 4
        assert all(i in LABELED for i in b[:2]) and all(i in UNLABELED for i in b[2:])
    labeled_seen = [i for b in batches for i in b[:2]]
    assert len(set(labeled_seen)) == 4  # one permutation: no labeled index repeats in an epoch


def test_labeled_exhausted_once_per_epoch_unlabeled_stream_continues():
    np.random.seed(1)
    s = TwoStreamBatchSampler([0, 1, 2, 3], [4, 5, 6], batch_size=3, secondary_batch_size=1)
    batches = list(s)
    assert len(batches) == 2
    assert sorted(i for b in batches for i in b[:2]) == [0, 1, 2, 3]
    # many epochs: the unlabeled stream visits every index about equally often
    counts = np.zeros(7, int)
    for _ in range(300):
        for b in s:
            counts[b[2]] += 1
    assert counts[4:].min() > 150 and counts[:4].sum() == 0


def test_released_rng_order():
    np.random.seed(7)
    batches = list(TwoStreamBatchSampler(LABELED, UNLABELED, 4, 2))
    np.random.seed(7)
    perm_l = np.random.permutation(LABELED)  # drawn when the epoch starts
    perm_u = np.random.permutation(UNLABELED)  # drawn lazily on the first batch
    assert batches[0] == [*perm_l[:2], *perm_u[:2]]
    assert batches[1] == [*perm_l[2:4], *perm_u[2:4]]


def test_unlabeled_permutations_chain_across_their_end():
    np.random.seed(3)
    batches = list(TwoStreamBatchSampler(list(range(8)), [8, 9, 10], 3, 2))
    np.random.seed(3)
    np.random.permutation(8)
    stream = np.concatenate([np.random.permutation([8, 9, 10]) for _ in range(6)])
    assert len(batches) == 8
    assert [i for b in batches for i in b[1:]] == stream[:16].tolist()


def test_deterministic_under_seed_and_with_own_rng():
    np.random.seed(11)
    a = list(TwoStreamBatchSampler(LABELED, UNLABELED, 4, 2))
    np.random.seed(11)
    b = list(TwoStreamBatchSampler(LABELED, UNLABELED, 4, 2))
    assert a == b
    c = list(TwoStreamBatchSampler(LABELED, UNLABELED, 4, 2, rng=np.random.RandomState(11)))
    assert c == a  # RandomState(11) draws what np.random.seed(11) draws


def test_grouper_drops_incomplete_chunk():
    assert list(grouper("ABCDEFG", 3)) == [tuple("ABC"), tuple("DEF")]


@pytest.mark.parametrize("args,match", [
    ((LABELED, UNLABELED, 4, 0), "secondary .* must be > 0"),
    ((LABELED, UNLABELED, 2, 2), "labeled batch size"),
    (([0], UNLABELED, 4, 2), "fewer than the labeled batch size"),
    ((LABELED, [5], 4, 2), "fewer than the unlabeled batch size"),
    (([0, 1, 1], UNLABELED, 4, 2), "duplicates"),
    (([0, 1, 5], UNLABELED, 4, 2), "both labeled and unlabeled"),
])
def test_argument_validation(args, match):
    with pytest.raises(ValueError, match=match):
        TwoStreamBatchSampler(*args)


class _Echo(Dataset):
    def __len__(self):
        return 12

    def __getitem__(self, i):
        return {"i": i, "r": random.random()}


def test_dataloader_with_sampler_and_worker_init():
    seed_everything(5)
    s = TwoStreamBatchSampler(LABELED, UNLABELED, 4, 2)
    loader = DataLoader(_Echo(), batch_sampler=s, num_workers=0, worker_init_fn=make_worker_init_fn(5))
    batches = [b["i"].tolist() for b in loader]
    assert len(batches) == 2 and all(set(b[:2]) <= set(LABELED) for b in batches)


def test_worker_init_fn_seeds_random_with_seed_plus_id():
    make_worker_init_fn(100)(3)
    a = random.random()
    random.seed(103)
    assert a == random.random()
    seed_everything(9)
    t = torch.rand(1)
    torch.manual_seed(9)
    assert torch.equal(t, torch.rand(1))
