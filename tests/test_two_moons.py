"""The two-moons toy study runs end to end and writes its figure and table."""
from __future__ import annotations
import json
import os

import two_moons


def test_quick_run_writes_outputs(tmp_path):
    summary = two_moons.main(["--quick", "--out", str(tmp_path)])
    assert os.path.getsize(tmp_path / "two_moons.png") > 10_000
    saved = json.loads((tmp_path / "two_moons.json").read_text())
    assert saved["gammas"] == summary["gammas"] and len(saved["gammas"]) == 2
    for acc in saved["accuracy"].values():
        assert set(acc) == {"supervised", "ssnet"}
        assert all(0.5 <= v <= 1.0 for v in acc.values())  # both learn something on 6 labels


def test_mlp_returns_logits_and_features():
    import torch
    model = two_moons.MoonMLP()
    logits, feats = model(torch.zeros(5, 2))
    assert logits.shape == (5, 2) and feats.shape == (5, 16)
    assert len(model.feature_selectors) == 2
