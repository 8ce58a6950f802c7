"""AD-MT iterations against the released code (ZhenZHAO/AD-MT), at a tiny size.

``scripts/compare_released.py --method admt`` runs the released ``train`` of
``code/train_post_3d_aut.py`` (LA) / ``code/train_post_2d_aut.py`` (ACDC), configured by its
``cfgs/*.yml``, and ours (``ADMT.for_stage`` + ``train_step``) on the same batches (weak and strong
views), initial weights (student, teacher 1, teacher 2) and seed, with the teacher switch's first
period set to 1 on both sides: iteration 0 runs teacher 1 (the photometric strong view), iteration 1
teacher 2 (CutMix). Compared per iteration: every logged term, the learning rate, the teachers' and
the student's logits, CutMix and the conflict combating (inputs and results), the gradients, the
student and its SGD momentum after the step, both teachers after the EMA, the switch and the
generator states.

Needs the released code, never shipped here: ``git clone https://github.com/ZhenZHAO/AD-MT /tmp/ADMT``
(or set ``ADMT_RELEASED`` to a checkout); skipped without it.

Sizes: batch 4 = 2 unlabeled + 2 labeled. ACDC with the released and our U-Nets at 32x32. LA at
16x16x16 (the smallest patch the V-Net's four poolings allow) with one small V-Net (4 filters) used by
both sides: the full V-Net's 9.4M parameters, copied for every iteration's snapshot, would take most
of the time; the full-size comparison (``--dataset LA``, released V-Net against ours) is the script's.
The LA run makes a third iteration with R = 0 (``rampup=0`` on both sides), where the EMA momentum is
0.5 instead of 0.
"""
from __future__ import annotations

import os

import pytest
import torch

RELEASED = os.environ.get("ADMT_RELEASED", "/tmp/ADMT")
FILES = ("code/train_post_3d_aut.py", "code/train_post_2d_aut.py", "cfgs/config_3d_la_aut.yml",
         "cfgs/config_2d_aut.yml")

pytestmark = pytest.mark.skipif(
    not all(os.path.isfile(os.path.join(RELEASED, f)) for f in FILES),
    reason=f"the released AD-MT code is not at {RELEASED} (git clone https://github.com/ZhenZHAO/AD-MT there, "
           "or set ADMT_RELEASED)")


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: both sides compute alike whatever the count, and on a shared machine one
    thread is faster here than two contending ones."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _quantities(rows: list[str]) -> set[tuple[str, str]]:
    return {tuple(c.strip() for c in r.split("|")[1:3]) for r in rows if r.startswith("| it ")}


def _expected(iterations: int) -> set[tuple[str, str]]:
    every = {"logged loss", "logged loss_sup", "logged loss_unsup", "logged weight", "logged high_ratio",
             "logged conflict_ratio", "logged teacher", "learning rate of the step",
             "teacher 1 logits (weak unlabeled)", "teacher 2 logits (weak unlabeled)", "student logits",
             "combat result: pseudo-labels", "gradients",
             "student state_dict after SGD", "SGD momentum buffers", "teacher 1 state_dict after EMA",
             "teacher 2 state_dict after EMA", "switch after (active T1, counter, period)",
             "numpy / torch / python generator states after"}
    out = {("it 0 (T1)", q) for q in every} | {("it 1 (T2)", q) for q in every}
    out |= {("it 1 (T2)", f"CutMix {q}") for q in ("image", "pseudo-labels", "confidences", "teachers' conflict mask")}
    return out | {("it 2 (T2)", q) for q in every if iterations > 2}


def _check_facts(facts: dict) -> None:
    its = facts["iterations"]
    assert [f["teacher"] for f in its[:2]] == [1, 2] and [f["cutmix"] for f in its[:2]] == [False, True]
    assert its[1]["cutmix_changed"] > 0  # iteration 1's CutMix pasted from the other item
    for f in its:  # the unsupervised branch is exercised: confident pseudo-labels, conflicts, the student's labels
        assert 0 < f["kept_before_combat"] < f["voxels"]
        assert f["teacher_conflicts"] > 0 and f["student_took"] > 0


def test_acdc_iterations_match_released(compare):
    rows, bad, facts = compare.compare_admt(RELEASED, "ACDC", (32, 32), 4, 2, seed=1337, iterations=2,
                                            logit_scale=8.0, background_bias=3.0, log=lambda *a: None)
    assert bad == 0, "\n".join(rows)
    assert _expected(2) <= _quantities(rows)
    _check_facts(facts)


def test_la_iterations_match_released(compare):
    from networks.vnet import VNet

    class SmallVNet(VNet):  # the logits alone, as the released V-Net returns them
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = super().forward(x)
            return out if isinstance(out, torch.Tensor) else out[0]

    def small_vnet() -> torch.nn.Module:
        return SmallVNet(n_channels=1, n_classes=2, n_filters=4, has_dropout=True, with_heads=False)

    # seed 1339: CutMix pairs the two unlabeled items in iteration 1 (randperm(2) is the identity half the time)
    rows, bad, facts = compare.compare_admt(RELEASED, "LA", (16, 16, 16), 4, 2, seed=1339, iterations=3, rampup=0.0,
                                            logit_scale=4.0, background_bias=1.0, log=lambda *a: None,
                                            network=small_vnet)
    assert bad == 0, "\n".join(rows)
    assert _expected(3) <= _quantities(rows)
    _check_facts(facts)
    assert "| settings | rampup R | 0.0 vs 0.0 |" in "\n".join(rows)
