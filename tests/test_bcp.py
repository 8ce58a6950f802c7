"""BCP (--method bcp): its pseudo-labels against a naive largest-component filter, its flags and
released defaults, and the two-stage run end to end (pre-train in pre_train/, self-train from the
best pre-train weights, resumable in the second stage with the same result, tested by the test
scripts). The copy-paste pieces are in tests/test_copy_paste.py."""
from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import torch

import test_acdc
import train_acdc
import train_la
from engine.checkpoints import CheckpointError
from methods.bcp import BCP, largest_component, pseudo_labels
from test_training import ACDC_FLAGS


def _naive_largest(mask, connectivity):
    """Flood fill (26- or 8-neighbourhood): the largest component, ties to the first met in raster order."""
    mask = np.asarray(mask, bool)
    seen = np.zeros_like(mask)
    best = []
    offsets = [o for o in np.ndindex(*(3,) * mask.ndim) if any(v != 1 for v in o)]
    for start in zip(*np.nonzero(mask)):
        if seen[start]:
            continue
        comp, stack = [], [start]
        seen[start] = True
        while stack:
            p = stack.pop()
            comp.append(p)
            for o in offsets:
                q = tuple(a + b - 1 for a, b in zip(p, o))
                if connectivity == 1 and sum(abs(b - 1) for b in o) != 1:
                    continue
                if all(0 <= c < s for c, s in zip(q, mask.shape)) and mask[q] and not seen[q]:
                    seen[q] = True
                    stack.append(q)
        if len(comp) > len(best):
            best = comp
    out = np.zeros_like(mask)
    for p in best:
        out[p] = True
    return out


def test_largest_component_uses_full_connectivity():
    rng = np.random.default_rng(0)
    for shape in ((7, 6, 5), (9, 8)):
        for _ in range(5):
            mask = rng.random(shape) < 0.35
            assert np.array_equal(largest_component(mask), _naive_largest(mask, connectivity=None))
    assert not largest_component(np.zeros((4, 4), bool)).any()


def test_pseudo_labels_la_and_acdc_against_naive():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 2, 6, 5, 4, generator=g)
    got = pseudo_labels(logits, binary=True)
    fg = (torch.softmax(logits, 1)[:, 1] >= 0.5).numpy()
    want = np.stack([_naive_largest(f, None) for f in fg]).astype(np.int64)
    assert got.dtype == torch.int64 and np.array_equal(got.numpy(), want)
    logits = torch.randn(3, 4, 9, 8, generator=g)
    got = pseudo_labels(logits, binary=False).numpy()
    seg = logits.argmax(1).numpy()
    want = np.zeros_like(seg)
    for i in range(3):
        for c in (1, 2, 3):
            want[i][_naive_largest(seg[i] == c, None)] = c
    assert np.array_equal(got, want)


def test_released_defaults_apply_only_to_flags_not_given():
    la = train_la.parse_args(["--method", "bcp"])
    assert (la.batch_size, la.labeled_bs, la.max_iterations, la.val_start) == (8, 4, 15000, 200)
    assert la.options.bcp_pretrain_iterations == 2000 and la.exp == "BCP"
    assert train_la.parse_args(["--method", "bcp", "--batch_size", "6"]).batch_size == 6
    acdc = train_acdc.parse_args(["--method", "bcp"])
    assert (acdc.batch_size, acdc.labeled_bs, acdc.max_iterations) == (24, 12, 30000)
    assert acdc.options.bcp_pretrain_iterations == 10000
    ssnet_budget = train_la.parse_args(["--method", "bcp", "--bcp_budget", "ssnet"])
    assert (ssnet_budget.batch_size, ssnet_budget.max_iterations) == (4, 13000)  # 2000 + 13000 = SS-Net's 15000
    assert train_la.parse_args([]).batch_size == 4  # other methods keep SS-Net's defaults
    with pytest.raises(ValueError, match="--lds"):
        train_la.parse_args(["--method", "bcp", "--lds", "kl"])
    stages = BCP.stages(la, train_la.DATASET)
    assert [(s.name, s.folder, s.iterations, s.lr_steps) for s in stages] == [
        ("pre_train", "pre_train", 2000, False), ("self_train", "", 15000, True)]
    assert not BCP.stages(acdc, train_acdc.DATASET)[1].lr_steps  # ACDC: constant learning rate


BCP_FLAGS = ["--method", "bcp", "--bcp_pretrain_iterations", "2", "--save_interval", "1"]


def test_two_stages_resume_and_test(acdc_root, tmp_path):
    flags = ["--root_path", acdc_root] + ACDC_FLAGS + BCP_FLAGS
    straight = train_acdc.main(flags + ["--model_root", str(tmp_path / "a")])
    snap = straight["snapshot"]
    for name in ("pre_train/unet_best_model.pth", "pre_train/best_optimizer.pth", "pre_train/last.pth",
                 "unet_best_model.pth", "unet_last_model.pth", "last.pth", "config.json"):
        assert os.path.isfile(os.path.join(snap, name)), name
    # stopped after 2 self-train iterations, then resumed to 4: the same run
    train_acdc.main(flags + ["--model_root", str(tmp_path / "b"), "--max_iterations", "2"])
    # a damaged pre-train optimiser state is named in one message when self-train starts from it
    # (the resumed, finished pre-train stage rewrites a damaged best model, not this file)
    shutil.copytree(tmp_path / "b", tmp_path / "c")
    kept = os.path.join(str(tmp_path / "c"), os.path.relpath(snap, str(tmp_path / "a")), "pre_train",
                        "best_optimizer.pth")
    with open(kept, "r+b") as f:
        f.truncate(os.path.getsize(kept) // 2)
    with pytest.raises(CheckpointError, match=r"best_optimizer.pth is truncated or damaged"):
        train_acdc.main(flags + ["--model_root", str(tmp_path / "c"), "--resume"])
    resumed = train_acdc.main(flags + ["--model_root", str(tmp_path / "b"), "--resume"])
    a = torch.load(os.path.join(snap, "last.pth"), weights_only=True)
    b = torch.load(os.path.join(resumed["snapshot"], "last.pth"), weights_only=True)
    for part in ("model",):
        assert all(torch.equal(a[part][k], b[part][k]) for k in a[part])
    assert all(torch.equal(a["method"]["teacher"][k], b["method"]["teacher"][k]) for k in a["method"]["teacher"])
    with pytest.raises(ValueError, match="already holds a run"):
        train_acdc.main(flags + ["--model_root", str(tmp_path / "a")])
    summary = test_acdc.main(["--root_path", acdc_root, "--model_root", str(tmp_path / "a"), "--method", "bcp",
                              "--labelnum", "1", "--patch_size", "32", "32", "--device", "cpu", "--save_nii", "0"])
    assert summary["cases"] >= 1


def test_self_train_needs_the_pre_train_weights(tmp_path):
    config = train_acdc.parse_args(["--method", "bcp", "--device", "cpu"])
    stage = BCP.stages(config, train_acdc.DATASET)[1]
    with pytest.raises(FileNotFoundError, match="pre-train"):
        BCP.for_stage(config, train_acdc.DATASET, 4, torch.device("cpu"), stage, str(tmp_path))


@pytest.mark.parametrize("dataset, best_iter", [("LA", 2), ("ACDC", 1)])
def test_la_selection_compares_with_the_rounded_best_as_released(dataset, best_iter, tmp_path):
    """LA_BCP_train.py keeps ``best_dice = round(dice, 4)`` and compares the next raw Dice with it:
    0.88121 after 0.88123 (kept as 0.8812) replaces the best checkpoint; ACDC compares raw scores."""
    from engine.trainer import Trainer

    script = train_la if dataset == "LA" else train_acdc
    config = script.parse_args(["--method", "bcp", "--device", "cpu"])
    method = BCP(dataset, torch.nn.Conv2d(1, 2, 1), 2, 4, stage="pre_train")
    scores = iter([0.88123, 0.88121])
    trainer = Trainer(config, method, None, str(tmp_path), lambda n: 0.01, lambda model: (next(scores), {}),
                      lambda n: True)
    for trainer.iter_num in (1, 2):
        trainer.run_validation()
    assert trainer.best_iter == best_iter
    assert trainer.best == (0.8812 if dataset == "LA" else 0.88123)
