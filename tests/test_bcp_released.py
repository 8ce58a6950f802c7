"""One BCP iteration of each stage against the released code (DeepMed-Lab-ECNU/BCP), at a tiny size.

``scripts/compare_released.py --method bcp`` runs the released ``pre_train`` / ``self_train``
functions for one iteration and ours (``BCP.for_stage`` + ``train_step``) on the same batch, weights
and seed, and compares every logged loss, the box, the pseudo-labels, the logits, the gradients, the
weights and momentum after SGD, the teacher after EMA and the generator states.

Needs the released code, never shipped here: ``git clone https://github.com/DeepMed-Lab-ECNU/BCP
/tmp/BCP`` (or set ``BCP_RELEASED`` to a checkout); skipped without it.

Sizes: ACDC with the real U-Nets at 32x32 (batch 4 = 2 + 2). LA at 32x32x16 (batch 4 = 2 + 2) with
one small V-Net (4 filters) used by both sides, since the released V-Net needs at least 48 voxels per
side and a 48^3 backward takes seconds here; the released V-Net itself is checked against ours by
:func:`test_la_network_matches_released_vnet` (weights, forward, random draws).
"""
from __future__ import annotations

import os

import pytest
import torch

RELEASED = os.environ.get("BCP_RELEASED", "/tmp/BCP")
SCRIPTS = ("LA_BCP_train.py", "ACDC_BCP_train.py")

pytestmark = pytest.mark.skipif(
    not all(os.path.isfile(os.path.join(RELEASED, "code", s)) for s in SCRIPTS),
    reason=f"the released BCP code is not at {RELEASED} (git clone https://github.com/DeepMed-Lab-ECNU/BCP there, "
           "or set BCP_RELEASED)")


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: both sides compute alike whatever the count, and on a shared machine one
    thread is several times faster here than two contending ones."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _quantities(rows: list[str]) -> set[tuple[str, str]]:
    return {tuple(c.strip() for c in r.split("|")[1:3]) for r in rows if r.startswith("| pre_train")
            or r.startswith("| self_train")}


EXPECTED = {("pre_train", "gradients"), ("pre_train", "student state_dict after SGD"),
            ("pre_train", "logged loss"), ("pre_train", "box mask, loss mask"),
            ("self_train", "pseudo-labels (a, b)"), ("self_train", "teacher state_dict after EMA"),
            ("self_train", "gradients"), ("self_train", "SGD momentum buffers"),
            ("self_train", "logged loss_labeled_outside"), ("self_train", "logged loss_unlabeled_outside"),
            ("self_train", "numpy / torch generator states after")}


def test_acdc_one_iteration_matches_released(compare):
    rows, bad, facts = compare.compare_bcp(RELEASED, "ACDC", (32, 32), 4, 2, seed=1337, log=lambda *a: None)
    assert bad == 0, "\n".join(rows)
    assert EXPECTED | {("self_train", "logged mix_dice"), ("self_train", "logged mix_ce")} <= _quantities(rows)
    for stage in ("pre_train", "self_train"):
        assert 0 < facts[stage]["pasted_voxels"] < 32 * 32
    assert all(n > 0 for n in facts["self_train"]["pseudo_foreground"])


def test_la_one_iteration_matches_released(compare):
    from networks.vnet import VNet

    def small_vnet() -> torch.nn.Module:
        return VNet(n_channels=1, n_classes=2, n_filters=4, has_dropout=True, with_heads=False)

    # seed 210: the released corner ranges (literals 112, 112, 80) put the 21x21x10 box inside 32x32x16
    # (at (10, 5, 6); ranges from the patch itself would draw (10, 7, 4) from the same seed)
    rows, bad, facts = compare.compare_bcp(RELEASED, "LA", (32, 32, 16), 4, 2, seed=210, log=lambda *a: None,
                                           network=small_vnet)
    assert bad == 0, "\n".join(rows)
    assert EXPECTED <= _quantities(rows)
    for stage in ("pre_train", "self_train"):
        assert facts[stage]["pasted_voxels"] == 21 * 21 * 10
    assert all(n > 0 for n in facts["self_train"]["pseudo_foreground"])


def test_la_network_matches_released_vnet(compare):
    """The released V-Net (net_factory 'VNet', mode train) and ours: same keys in the same order, the
    same initial weights from the same seed, the same train-mode logits (dropout draws) and the same
    torch generator state after each."""
    from networks.net_factory import net_factory

    released = compare.ReleasedBCP(RELEASED, "LA")
    with compare._released_torch("current"):
        torch.manual_seed(5)
        theirs = released.factory["net_factory"](net_type="VNet", in_chns=1, class_num=2, mode="train")
        rng_theirs = torch.get_rng_state()
    torch.manual_seed(5)
    ours = net_factory("VNet", in_chns=1, class_num=2, mode="train", device="cpu")
    assert torch.equal(rng_theirs, torch.get_rng_state())
    a, b = theirs.state_dict(), ours.state_dict()
    assert list(a) == list(b)
    assert all(torch.equal(a[k], b[k]) for k in a)
    x = torch.randn(1, 1, 48, 48, 48, generator=torch.Generator().manual_seed(3))
    outs, states = [], []
    for net in (theirs, ours):
        net.train()
        torch.manual_seed(7)
        with torch.no_grad():
            outs.append(net(x)[0])
        states.append(torch.get_rng_state())
    assert torch.equal(outs[0], outs[1])
    assert torch.equal(states[0], states[1])
