"""code/summarize.py on fixture run folders with known per-case metrics: rows over seeds,
paired comparisons with intervals and p-values, best minus last, CSV and JSON outputs."""
from __future__ import annotations
import csv
import importlib
import json

import numpy as np
import pytest

from utils.statistics import mean_sd, paired_bootstrap, t_interval, wilcoxon_p

summarize = importlib.import_module("summarize")

CASES = [f"LA{i:02d}" for i in range(20)]


def write_run(root, exp, seed, dice, which="test", config_seed=True):
    """An LA run folder with 4 labels (seed 1337: the plain name) holding ``which``/performance.json
    with the per-case Dice ``dice`` (Jaccard = Dice - 0.1, 95HD 5, ASD 1) and config.json."""
    folder = f"LA_{exp}_4_labeled" if seed == 1337 else f"LA_{exp}_seed{seed}_4_labeled"
    snap = root / folder / "VNet"
    (snap / which).mkdir(parents=True, exist_ok=True)
    if config_seed:
        (snap / "config.json").write_text(json.dumps({"seed": seed}))
    rows = [{"case": c, "dice": float(d), "jaccard": float(d) - 0.1, "hd95": 5.0, "asd": 1.0}
            for c, d in zip(CASES, dice)]
    mean = {"dice": float(np.mean(dice)), "jaccard": float(np.mean(dice)) - 0.1, "hd95": 5.0, "asd": 1.0}
    (snap / which / "performance.json").write_text(json.dumps({"mean": mean, "per_case": rows}))


@pytest.fixture()
def runs(tmp_path):
    rng = np.random.default_rng(0)
    base = {s: rng.uniform(0.6, 0.85, size=len(CASES)) for s in (1337, 1338)}
    for s, d in base.items():
        write_run(tmp_path, "Supervised", s, d)
        write_run(tmp_path, "SSNet", s, d + 0.05)      # a constant shift of 0.05 on every case
        write_run(tmp_path, "UAMT", s, d + 0.05)       # identical to SS-Net
        write_run(tmp_path, "SSNet", s, d + 0.02, which="test_last")
    return tmp_path, base


def test_rows_are_mean_and_sd_over_seeds(runs, tmp_path):
    root, base = runs
    text = summarize.main(["--model_root", str(root), "--csv", str(tmp_path / "r.csv"),
                           "--json", str(tmp_path / "r.json")])
    seed_means = [100 * (base[s].mean() + 0.05) for s in (1337, 1338)]
    m, sd = np.mean(seed_means), np.std(seed_means, ddof=1)
    assert f"| SS-Net | 4 | {m:.2f} ± {sd:.2f} (n=2) | 86.33 |" in text
    content = json.loads((tmp_path / "r.json").read_text())
    row = content["rows"]["LA_SSNet_4_best"]
    assert row["n"] == 2 and row["seeds"] == [1337, 1338]
    assert row["dice"]["mean"] == pytest.approx(m, abs=1e-9) and row["dice"]["sd"] == pytest.approx(sd, abs=1e-9)
    with open(tmp_path / "r.csv", newline="") as f:
        lines = {(r["exp"], r["which"]): r for r in csv.DictReader(f)}
    assert float(lines[("SSNet", "best")]["dice_mean"]) == pytest.approx(m)
    assert lines[("SSNet", "last")]["n"] == "2"
    assert "last checkpoint" in text


def test_identical_runs_differ_by_zero_with_p_one(runs, tmp_path):
    root, _ = runs
    summarize.main(["--model_root", str(root), "--json", str(tmp_path / "r.json")])
    comps = json.loads((tmp_path / "r.json").read_text())["comparisons"]
    same = [c for c in comps if c["method"] == "SSNet" and c["against"] == "UAMT"][0]
    assert same["mean"] == 0.0 and same["ci95"] == [0.0, 0.0] and same["wilcoxon_p"] == 1.0
    assert same["seeds"] == [1337, 1338] and same["cases"] == len(CASES)


def test_constant_shift_is_found_with_small_p(runs, tmp_path):
    root, _ = runs
    text = summarize.main(["--model_root", str(root), "--json", str(tmp_path / "r.json")])
    content = json.loads((tmp_path / "r.json").read_text())
    shift = [c for c in content["comparisons"] if c["method"] == "SSNet" and c["against"] == "Supervised"
             and c["which"] == "best"][0]
    assert shift["mean"] == pytest.approx(5.0)
    assert shift["ci95"][0] == pytest.approx(5.0) and shift["ci95"][1] == pytest.approx(5.0)
    assert shift["wilcoxon_p"] < 0.001
    assert "| LA | 4 | best | SSNet | Supervised | 2 | 20 | +5.00 | [+5.00, +5.00] |" in text
    bml = content["best_minus_last"]
    assert [(r["exp"], round(r["mean"], 9)) for r in bml] == [("SSNet", 3.0)]


def test_seed_from_the_folder_name_without_config(tmp_path):
    write_run(tmp_path, "SSNet", 1338, np.full(len(CASES), 0.8), config_seed=False)
    rows = summarize.collect(str(tmp_path))
    assert [(r["exp"], r["seed"]) for r in rows] == [("SSNet", 1338)]


def test_statistics_helpers():
    assert mean_sd([1.0, 3.0]) == (2.0, pytest.approx(np.sqrt(2)), 2)
    mean, low, high = t_interval([1.0, 2.0, 3.0])
    assert mean == 2.0 and low == pytest.approx(2 - 4.302653 / np.sqrt(3), rel=1e-6)
    assert high == pytest.approx(2 + 4.302653 / np.sqrt(3), rel=1e-6)
    rng = np.random.default_rng(1)
    d = rng.normal(1.0, 1.0, size=(3, 30))
    m, lo, hi = paired_bootstrap(d)
    assert m == pytest.approx(d.mean()) and lo < m < hi and paired_bootstrap(d) == (m, lo, hi)  # seeded
    assert wilcoxon_p([1, 2, 3], [1, 2, 3]) == 1.0
    assert wilcoxon_p(np.arange(20) + 0.5, np.arange(20)) < 1e-5
