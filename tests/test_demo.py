"""The demo's --quick run goes through the whole pipeline and writes its outputs."""
from __future__ import annotations
import json
import os

import pytest

import demo


@pytest.mark.long
def test_quick_demo_writes_results(tmp_path):
    results = demo.main(["--quick", "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "results.json").read_text())
    for method in ("supervised", "ssnet"):
        assert set(saved[method]) == {"dice", "jaccard", "hd95", "asd"}
        assert 0.0 <= saved[method]["dice"] <= 1.0 and 0.0 <= saved[method]["jaccard"] <= saved[method]["dice"] + 1e-9
    assert saved["labeled_patients"] == 2 and saved["iterations"] == results["iterations"] == 12
    assert len(saved["labeled_groups"]) == 2  # the first two patients of train_slices.list, with their groups
    assert set(saved["labeled_groups"].values()) <= {"DCM", "HCM", "MINF", "NOR", "RV"}
    assert saved["seconds"] > 0
    assert os.path.getsize(tmp_path / "examples.png") > 5_000
    # both runs were trained and tested by the real scripts
    for exp in ("Supervised", "SSNet"):
        assert (tmp_path / "runs" / f"ACDC_{exp}_2_labeled" / "unet" / "test" / "performance.json").is_file()


@pytest.mark.long
def test_quick_demo_with_two_seeds_reports_the_paired_difference(tmp_path):
    agg = demo.main(["--quick", "--seeds", "2", "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "results_seeds.json").read_text())
    assert saved["seeds"] == [1337, 1] and saved["k"] == 2
    per_seed = []
    for seed in (1337, 1):
        run = json.loads((tmp_path / f"seed{seed}" / "results.json").read_text())
        assert run["seed"] == seed and run["magnitude_scaling"] == "rms"
        per_seed.append(run["ssnet"]["dice"] - run["supervised"]["dice"])
        assert len(run["per_case_dice"]["ssnet"]) == run["test_volumes"]
    d = saved["dice_difference"]
    assert d["per_seed"] == per_seed
    assert abs(d["mean"] - sum(per_seed) / 2) < 1e-12
    assert d["ci95"][0] <= d["mean"] <= d["ci95"][1]  # t-interval over 2 seeds
    assert 0.0 <= d["wilcoxon_p"] <= 1.0 and d["pairs"] == 2 * run["test_volumes"]
    assert saved["supervised"]["dice"]["n"] == 2 and agg["k"] == 2


def test_successors_are_compared_with_the_stored_ssnet_seeds_at_its_budget():
    """--methods bcp at the stored run's budget: SS-Net minus BCP per seed uses the stored SS-Net
    Dice; at another budget no stored value is used."""
    import json

    stored = json.load(open(demo.STORED))
    b = dict(stored["budget"], hw=tuple(stored["budget"]["hw"]))
    runs = [{"seed": s, "bcp": {"dice": 0.70 + i / 100, "jaccard": 0.6, "hd95": 9.0, "asd": 3.0},
             "per_case_dice": {"bcp": [0.7]}} for i, s in enumerate(stored["seeds"])]
    agg = demo.aggregate(runs, b)
    want = [x - (0.70 + i / 100) for i, x in enumerate(stored["per_seed_dice"]["ssnet"])]
    assert agg["ssnet_minus_bcp"]["per_seed"] == pytest.approx(want)
    assert "stored" in agg["ssnet_minus_bcp"]["ssnet_from"] and "wilcoxon_p" not in agg["ssnet_minus_bcp"]
    assert "ssnet_minus_bcp" not in demo.aggregate(runs, dict(b, iterations=12))
    assert any("SS-Net minus BCP" in line for line in demo.report(agg))
