"""Host-device synchronisations of utils.separation.separation_step (issue 20), and the exactness of its
device-side grouping: ONE synchronisation per call, and losses, gradients and prototype memory
bit-identical (torch.equal on the CPU) to a plain boolean-mask reference written below."""
from __future__ import annotations
import contextlib
import copy
from collections.abc import Iterator

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from utils.separation import PrototypeMemory, separation_step, split_by_class

D = 32  # embedding size of SS-Net's heads
FEATURES = 16  # decoder channels


# ---------------------------------------------------------------- counting host synchronisations
#: Tensor methods that, on a CUDA tensor, wait for the device (they hand data or a data-dependent
#: size to the host). Counted at the Python level because on a CPU tensor tolist/cpu/numpy never
#: reach the dispatcher.
SYNC_METHODS = ("tolist", "item", "cpu", "numpy", "nonzero", "__bool__", "__int__", "__float__", "__index__")

#: aten ops that synchronise on CUDA (a Python scalar result, or an output size that depends on the
#: data: torch.bincount reads the maximum, unique / masked_select / boolean indexing run nonzero).
SYNC_OPS = ("_local_scalar_dense", "nonzero", "masked_select", "_unique", "_unique2", "unique_dim",
            "unique_consecutive", "unique_dim_consecutive", "bincount", "histc", "equal", "is_nonzero")


def _has_bool_index(args) -> bool:
    indices = args[1] if len(args) > 1 else ()
    return any(isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8) for i in indices or ())


@contextlib.contextmanager
def count_host_syncs() -> Iterator[list[str]]:
    """Record, in a list, every operation inside the block that would be a host-device sync on CUDA.

    Two layers: the Tensor methods of ``SYNC_METHODS`` are wrapped (outermost call counted once),
    and a dispatch mode sees the aten ops of ``SYNC_OPS`` and boolean-mask indexing whichever Python
    call they come from (``x[mask]``, ``torch.where(mask)``, ``torch.unique``, ...). Not caught:
    ``.to("cpu")`` (on a CPU tensor it cannot be told from a same-device ``.to(device)``).
    """
    events: list[str] = []
    depth = [0]

    class _Ops(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            name = func.overloadpacket.__name__
            if depth[0] == 0 and (name in SYNC_OPS or (
                    name in ("index", "index_put", "index_put_", "_index_put_impl_") and _has_bool_index(args))):
                events.append(f"aten.{name}")
            return func(*args, **(kwargs or {}))

    def wrap(name, original):
        def counted(self, *args, **kwargs):
            if depth[0] == 0:
                events.append(name)
            depth[0] += 1
            try:
                return original(self, *args, **kwargs)
            finally:
                depth[0] -= 1
        return counted

    saved = {name: (name in torch.Tensor.__dict__, getattr(torch.Tensor, name)) for name in SYNC_METHODS}
    try:
        for name, (_, original) in saved.items():
            setattr(torch.Tensor, name, wrap(name, original))
        with _Ops():
            yield events
    finally:
        for name, (own, original) in saved.items():
            if own:
                setattr(torch.Tensor, name, original)
            else:
                delattr(torch.Tensor, name)


def test_the_counter_sees_every_kind_of_sync():
    """The counter would catch a regression: each of these is one CUDA sync, and it is counted."""
    x = torch.arange(6.0)
    mask = x > 2
    cases = {
        "tolist": lambda: x.tolist(), "item": lambda: x[0].item(), "cpu": lambda: x.cpu(),
        "numpy": lambda: x.numpy(), "nonzero": lambda: mask.nonzero(), "__bool__": lambda: bool(x[1]),
        "__int__": lambda: int(x[1]), "__float__": lambda: float(x[1]),
        "aten.index": lambda: x[mask], "aten.nonzero": lambda: torch.where(mask),
        "aten.masked_select": lambda: torch.masked_select(x, mask), "aten._unique2": lambda: torch.unique(x),
        "aten.bincount": lambda: torch.bincount(mask.long()), "aten.equal": lambda: torch.equal(x, x),
    }
    before = {name: getattr(torch.Tensor, name) for name in SYNC_METHODS}
    for expected, call in cases.items():
        with count_host_syncs() as events:
            call()
        assert events == [expected], (expected, events)
    with count_host_syncs() as events:  # device-side work only
        order = torch.sort(mask.long(), stable=True).indices
        torch.searchsorted(mask.long()[order], torch.arange(3)).diff()
        x.index_select(0, order).cumsum(0)
        torch.split(x, [2, 4])
    assert events == []
    assert all(getattr(torch.Tensor, name) is method for name, method in before.items())  # restored


# ---------------------------------------------------------------- a tiny SS-Net (heads only)
def _mlp(dim_in, dim_out, slope=None):
    act = nn.ReLU() if slope is None else nn.LeakyReLU(slope)
    return nn.Sequential(nn.Linear(dim_in, D), nn.BatchNorm1d(D), act, nn.Linear(D, dim_out))


class Heads(nn.Module):
    """SS-Net's four heads (projection, prediction, per-class feature and memory selectors)."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.projection_head = _mlp(FEATURES, D)
        self.prediction_head = _mlp(D, D)
        self.feature_selectors = nn.ModuleList(_mlp(D, 1, 0.2) for _ in range(num_classes))
        self.memory_selectors = nn.ModuleList(_mlp(D, 1, 0.2) for _ in range(num_classes))


def _batch(spatial, num_classes, labeled_bs=2, batch=4, absent=(), seed=0):
    """Leaf features (B, F, *S), softmax probs (B, C, *S) without the ``absent`` classes, labels (L, *S)."""
    g = torch.Generator().manual_seed(seed)
    features = torch.randn((batch, FEATURES) + spatial, generator=g).requires_grad_(True)
    logits = torch.randn((batch, num_classes) + spatial, generator=g) * 3
    for c in absent:
        logits[:, c] -= 100.0  # never predicted, never a pseudo-label
    probs = torch.softmax(logits, dim=1)
    labels = probs[:labeled_bs].argmax(1)
    noise = torch.randint(0, num_classes, labels.shape, generator=g)
    wrong = torch.rand(labels.shape, generator=g) < 0.3
    labels = torch.where(wrong, noise, labels)  # some wrong predictions: not candidates
    for c in absent:
        labels[labels == c] = 0  # absent from the labels too
    return features, probs, labels


# ---------------------------------------------------------------- (a) one host synchronisation
@pytest.mark.parametrize("spatial, labeled_bs", [((6, 5), 2), ((4, 3, 3), 2), ((6, 5), 4), ((7,), 1)])
def test_separation_step_makes_exactly_one_host_sync(spatial, labeled_bs):
    """Before issue 20: 4 (candidate nonzero + one tolist per split_by_class). Now 1, on every call:
    empty memory (first step) and filled memory (later steps), with and without unlabeled samples."""
    num_classes = 3
    heads = Heads(num_classes).train()
    memory = PrototypeMemory(num_classes, per_class=4)
    for step in range(3):
        features, probs, labels = _batch(spatial, num_classes, labeled_bs, seed=step)
        with count_host_syncs() as events:
            loss_l, loss_u = separation_step(features, probs, labels, labeled_bs, memory, heads)
        assert len(events) == 1, f"step {step}: {len(events)} host syncs: {events}"
        (loss_l + loss_u).backward()
    assert memory.memory[1] is not None and loss_l.item() > 0  # the loss path (with memory) was counted


def test_one_host_sync_under_bf16_autocast():
    heads = Heads(3).train()
    memory = PrototypeMemory(3, per_class=4)
    for step in range(2):
        features, probs, labels = _batch((6, 5), 3, seed=step)
        with count_host_syncs() as events, torch.autocast("cpu", dtype=torch.bfloat16):
            separation_step(features, probs, labels, 2, memory, heads)
        assert len(events) == 1, events


def test_split_by_class_and_update_keep_one_sync_each():
    feats, labels = torch.randn(20, D), torch.randint(0, 3, (20,))
    with count_host_syncs() as events:
        split_by_class(feats, labels, 3)
    assert events == ["tolist"]
    with count_host_syncs() as events:
        PrototypeMemory(3, per_class=4).update(feats, labels, Heads(3).feature_selectors)
    assert events == ["tolist"]


# ---------------------------------------------------------------- (b) bit-identity with a plain reference
def reference_step(features, probs, labels, labeled_bs, memory, heads, weighting):
    """The separation step written plainly: boolean masks, one class at a time (the pre-issue-20 op
    order: candidates projected in row-major order, each class's rows in their original order)."""
    num_classes, channels = memory.num_classes, features.shape[1]
    last = features.movedim(1, -1)
    with torch.no_grad():
        prediction = probs[:labeled_bs].max(dim=1).indices
        pseudo = probs[labeled_bs:].max(dim=1).indices
        candidate = (prediction == labels) & (prediction > 0)
    modes = [(m, m.training) for m in heads.projection_head.modules()]
    heads.projection_head.eval()
    with torch.no_grad():
        projected = heads.projection_head(last[:labeled_bs][candidate])
    for m, mode in modes:
        m.training = mode
    candidate_labels = labels[candidate]
    for c in range(num_classes):
        rows = projected[candidate_labels == c]
        if rows.shape[0] == 0:
            continue
        if rows.shape[0] > memory.per_class:
            with torch.no_grad():
                scores = torch.sigmoid(heads.feature_selectors[c](rows))[:, 0]
                order = torch.sort(scores, dim=0, descending=memory.keep == "highest").indices
            memory.memory[c] = rows[order[: memory.per_class]]
        else:
            memory.memory[c] = rows.clone()

    def loss(feats, labs):
        total = torch.zeros(())
        if all(m is None or m.shape[0] <= 1 for m in memory.memory):
            return total
        for c in range(num_classes):
            f, z = feats[labs == c], memory.memory[c]
            if z is None or z.shape[0] <= 1 or f.shape[0] <= 1:
                continue
            z_norm = F.normalize(z, dim=1)
            distances = 1 - torch.mm(F.normalize(f, dim=1), z_norm.t())
            w_f = torch.sigmoid(heads.feature_selectors[c](f.detach()))
            w_f = (w_f.shape[0] / w_f.sum(dim=0)) * w_f
            w_z = torch.sigmoid(heads.memory_selectors[c](z_norm)).t()
            if weighting == "released":
                w_z = (w_z.shape[0] / w_z.sum(dim=0)) * w_z
            else:
                w_z = (w_z.shape[1] / w_z.sum(dim=1, keepdim=True)) * w_z
            total = total + (distances * w_f * w_z).mean()
        return total / num_classes

    loss_l = loss(heads.prediction_head(heads.projection_head(last[:labeled_bs].reshape(-1, channels))),
                  labels.reshape(-1))
    if labeled_bs == features.shape[0]:
        return loss_l, torch.zeros(())
    loss_u = loss(heads.prediction_head(heads.projection_head(last[labeled_bs:].reshape(-1, channels))),
                  pseudo.reshape(-1))
    return loss_l, loss_u


def _run(step_fn, heads, memory, batches, labeled_bs, weighting):
    """Several steps; after each: losses, gradients (features, every parameter), buffers, memory."""
    record = []
    for features, probs, labels in batches:
        features = features.detach().clone().requires_grad_(True)
        heads.zero_grad(set_to_none=True)
        loss_l, loss_u = step_fn(features, probs, labels, labeled_bs, memory, heads, weighting)
        (loss_l + 0.5 * loss_u).backward()
        record.append({
            "losses": [loss_l.detach(), loss_u.detach()], "features.grad": features.grad,
            **{f"grad {n}": p.grad for n, p in heads.named_parameters()},
            **{f"buffer {n}": b.clone() for n, b in heads.named_buffers()},
            **{f"memory {c}": m for c, m in enumerate(memory.memory)},
        })
    return record


def _new_step(features, probs, labels, labeled_bs, memory, heads, weighting):
    return separation_step(features, probs, labels, labeled_bs, memory, heads, memory_weighting=weighting)


def _identical(a, b):
    if a is None or b is None:
        return a is b
    if isinstance(a, list):
        return all(_identical(x, y) for x, y in zip(a, b))
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)


CASES = [  # spatial, classes, absent classes, labeled_bs, per_class, keep, weighting
    ((6, 5), 3, (), 2, 4, "lowest", "released"),
    ((6, 5), 4, (2,), 2, 3, "highest", "mean"),
    ((4, 3, 3), 3, (), 2, 5, "lowest", "mean"),
    ((4, 3, 3), 5, (1, 3), 1, 2, "highest", "released"),
    ((5, 4, 3), 4, (), 4, 1000, "lowest", "released"),  # all labeled; every candidate kept
    ((9,), 2, (), 2, 3, "lowest", "mean"),  # point sets
]


@pytest.mark.parametrize("spatial, num_classes, absent, labeled_bs, per_class, keep, weighting", CASES)
def test_separation_step_bit_identical_to_boolean_mask_reference(spatial, num_classes, absent, labeled_bs,
                                                                 per_class, keep, weighting):
    """torch.equal on losses, feature and parameter gradients, BatchNorm buffers and the memory rows
    (same rows in the same order), over 3 steps (empty memory, then filled; absent classes keep theirs)."""
    torch.manual_seed(0)
    heads = Heads(num_classes).train()
    batches = [_batch(spatial, num_classes, labeled_bs, absent=absent if s != 1 else (), seed=10 + s)
               for s in range(3)]
    got = _run(_new_step, copy.deepcopy(heads), PrototypeMemory(num_classes, per_class, keep),
               batches, labeled_bs, weighting)
    ref = _run(reference_step, copy.deepcopy(heads), PrototypeMemory(num_classes, per_class, keep),
               batches, labeled_bs, weighting)
    for step, (g, r) in enumerate(zip(got, ref)):
        assert g.keys() == r.keys()
        different = [k for k in g if not _identical(g[k], r[k])]
        assert not different, f"step {step}: not bit-identical: {different}"
    # the comparison had substance: non-zero losses, a class above per_class was ranked, absent classes
    assert any(float(v) > 0 for rec in got[1:] for v in rec["losses"])
    assert any(m is not None and m.shape[0] == per_class for m in (got[-1][f"memory {c}"]
                                                                   for c in range(num_classes))) or per_class > 100
    assert got[-1]["memory 0"] is None  # background is never a candidate


def test_step_errors_on_out_of_range_labels_like_split_by_class():
    heads = Heads(3).train()
    features, probs, labels = _batch((6, 5), 3, seed=1)
    memory = PrototypeMemory(3, per_class=4)
    separation_step(features, probs, labels, 2, memory, heads)  # fills the memory
    bad = labels.clone()
    bad[0, 0] = 7
    with pytest.raises(ValueError, match="outside 0..2"):
        separation_step(features, probs, bad, 2, memory, heads)
    two_class_memory = PrototypeMemory(2, per_class=4)  # probs have 3 classes: candidates of class 2
    with pytest.raises(ValueError, match="outside 0..1"):
        separation_step(features, probs, labels.clamp(max=2), 2, two_class_memory, heads)
    with pytest.raises(ValueError, match="memory_weighting"):
        separation_step(features, probs, labels, 2, memory, heads, memory_weighting="paper")
