"""SS-Net's successors (BCP, AD-MT) in the tables and reports: train_la.sh / train_acdc.sh list their
block only when asked (--successors / --rows), AD-MT's rows only once --method admt exists;
code/summarize.py shows them beside their published numbers (data/successor_results.csv) with the
paired comparison of SS-Net against each; code/complexity.py counts their networks."""
from __future__ import annotations
import csv
import importlib
import json
import os
import stat
import subprocess

import numpy as np
import pytest

from engine.run import REPO_ROOT as ROOT
from test_summarize import CASES, write_run

summarize = importlib.import_module("summarize")

SUCCESSOR_CSV = os.path.join(ROOT, "data", "successor_results.csv")


# ----------------------------------------------------------------------------- published numbers


def test_successor_file_names_a_source_for_every_value():
    with open(SUCCESSOR_CSV, newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows
    for r in rows:
        assert r["method"] in summarize.SUCCESSORS.values()
        assert int(r["labeled"]) in summarize.SUCCESSOR_LABELS[r["dataset"]]
        assert r["kind"] in ("paper", "released") and r["verified"] in ("yes", "no") and r["source"].strip()
        if r["kind"] == "released":  # a released file: its path and commit
            assert "@ " in r["source"] and "training-logs/performance_" in r["source"]
    published = summarize.load_successors(SUCCESSOR_CSV)
    # AD-MT's released performance files (ZhenZHAO/AD-MT training-logs/performance_*.txt), checked
    for (ds, n), dice in {("LA", 4): 89.634391, ("LA", 8): 90.58308, ("ACDC", 3): 88.847053,
                          ("ACDC", 7): 89.459463}.items():
        value = published[("AD-MT", ds, n, "released")]
        assert value["dice"] == dice and value["verified"]
    assert summarize.load_successors(os.path.join(ROOT, "no_such.csv")) == {}


# ----------------------------------------------------------------------------- summarize.py


@pytest.fixture()
def runs(tmp_path):
    """SS-Net, BCP and AD-MT on LA with 4 labels, seeds 1337 and 1338 (AD-MT: 1338 only), best and last:
    BCP is SS-Net plus 0.03 on every case, AD-MT equals SS-Net."""
    rng = np.random.default_rng(3)
    base = {s: rng.uniform(0.6, 0.85, size=len(CASES)) for s in (1337, 1338)}
    root = tmp_path / "model"
    for s, d in base.items():
        for which, shift in (("test", 0.0), ("test_last", -0.01)):
            write_run(root, "SSNet", s, d + shift, which)
            write_run(root, "BCP", s, d + shift + 0.03, which)
    write_run(root, "ADMT", 1338, base[1338])
    return root, base


def test_successor_rows_beside_their_published_numbers(runs, tmp_path):
    root, base = runs
    text = summarize.main(["--model_root", str(root), "--json", str(tmp_path / "r.json")])
    bcp = [100 * (base[s].mean() + 0.03) for s in (1337, 1338)]
    m, sd = np.mean(bcp), np.std(bcp, ddof=1)
    assert "### Successors (LA), best checkpoint" in text and "### Successors (LA), last checkpoint" in text
    assert "### Successors (ACDC), best checkpoint" in text
    # ours beside BCP's paper numbers (starred: not checked against the paper here) ...
    assert f"| BCP | 4 | {m:.2f} ± {sd:.2f} (n=2) | 88.02* | — |" in text
    # ... AD-MT's one seed beside its released file (checked), SS-Net beside its paper and released numbers
    assert f"| AD-MT | 4 | {100 * base[1338].mean():.2f} | — | 89.63 |" in text
    ssnet = [100 * base[s].mean() for s in (1337, 1338)]
    assert f"| SS-Net | 4 | {np.mean(ssnet):.2f} ± {np.std(ssnet, ddof=1):.2f} (n=2) | 86.33 | 86.33 |" in text
    assert "| AD-MT | 7 | — | — | 89.46 |" in text  # no run yet: the published numbers alone
    # the successors are not appended to the paper's Table 1
    table1 = text.split("### Table 1 (LA), best checkpoint")[1].split("###")[0]
    assert "BCP" not in table1 and "ADMT" not in table1


def test_paired_comparison_of_ssnet_against_each_successor(runs, tmp_path):
    root, _ = runs
    text = summarize.main(["--model_root", str(root), "--json", str(tmp_path / "r.json")])
    comps = json.loads((tmp_path / "r.json").read_text())["successor_comparisons"]
    got = {(c["against"], c["which"]): c for c in comps}
    assert set(got) == {("BCP", "best"), ("BCP", "last"), ("ADMT", "best")}
    bcp = got[("BCP", "best")]
    assert bcp["method"] == "SSNet" and bcp["seeds"] == [1337, 1338] and bcp["cases"] == len(CASES)
    assert bcp["mean"] == pytest.approx(-3.0) and bcp["ci95"] == pytest.approx([-3.0, -3.0])
    assert bcp["wilcoxon_p"] < 0.001
    admt = got[("ADMT", "best")]  # matched seeds only: 1338
    assert admt["seeds"] == [1338] and admt["mean"] == 0.0 and admt["wilcoxon_p"] == 1.0
    assert "| LA | 4 | best | BCP | 2 | 20 | -3.00 | [-3.00, -3.00] |" in text
    assert "| LA | 4 | last | BCP | 2 | 20 | -3.00 | [-3.00, -3.00] |" in text
    assert "| LA | 4 | best | AD-MT | 1 | 20 | +0.00 | [+0.00, +0.00] | 1 |" in text


def test_no_successor_runs_gives_published_numbers_and_a_note(tmp_path):
    text = summarize.main(["--model_root", str(tmp_path)])
    assert "| BCP | 3 | — | 87.59* | — |" in text and "| AD-MT | 3 | — | — | 88.85 |" in text
    assert "No SS-Net and successor runs with a seed in common yet" in text
    assert "### Successors (LA), last checkpoint" not in text


# ----------------------------------------------------------------------------- train_la.sh / train_acdc.sh


def _stand_in_python(tmp_path, admt: bool):
    """A python that answers only the `--method admt --help` question (yes when ``admt``), and logs it."""
    path = tmp_path / ("python_admt" if admt else "python_no_admt")
    path.write_text(f"""#!/usr/bin/env bash
echo "$*" >> "{tmp_path}/asked"
[ "$2 $3 $4" = "--method admt --help" ] || exit 9
exit {0 if admt else 2}
""")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(path)


def _listed(script, *args, env):
    out = subprocess.run(["bash", os.path.join(ROOT, script), *args], capture_output=True, text=True, env=env,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    rows = []
    for line in out.stdout.splitlines():
        if line and not line.startswith("#"):
            train = line.split(" && ")[0].split()
            exp, n = train[train.index("--exp") + 1], int(train[train.index("--labelnum") + 1])
            method = train[train.index("--method") + 1] if "--method" in train else None
            rows.append((exp, n, method))
    return rows, out.stderr


@pytest.mark.parametrize("script,labels", [("train_la.sh", (4, 8)), ("train_acdc.sh", (3, 7))])
def test_successor_block_is_selected_apart_from_the_paper_rows(tmp_path, script, labels):
    env = dict(os.environ, MODEL_ROOT=str(tmp_path / "model"), PYTHON=_stand_in_python(tmp_path, admt=False))
    paper, err = _listed(script, "--dry-run", env=env)
    # the default: exactly the paper's rows, and python is not asked about AD-MT
    assert not any(exp in ("BCP", "ADMT") for exp, _, _ in paper) and len(paper) == len(set(paper))
    assert len(paper) == (21 if script == "train_la.sh" else 15) and not (tmp_path / "asked").exists()
    # --successors: SS-Net and BCP at the paper's label counts; AD-MT left out while --method admt is missing
    succ, err = _listed(script, "--dry-run", "--successors", env=env)
    assert succ == [r for n in labels for r in (("SSNet", n, None), ("BCP", n, "bcp"))]
    assert "--method admt is not there yet" in err
    assert (tmp_path / "asked").read_text().count("--method admt --help") == 1  # asked once
    assert _listed(script, "--dry-run", "--rows", "successors", env=env)[0] == succ
    # --rows all: both blocks, SS-Net once
    both, _ = _listed(script, "--dry-run", "--rows=all", env=env)
    assert both == paper + [r for r in succ if r not in paper]
    # once `train_*.py --method admt --help` works, AD-MT's rows are there
    env_admt = dict(env, PYTHON=_stand_in_python(tmp_path, admt=True))
    with_admt, err = _listed(script, "--dry-run", "--successors", env=env_admt)
    assert with_admt == [r for n in labels for r in (("SSNet", n, None), ("BCP", n, "bcp"), ("ADMT", n, "admt"))]
    assert "not there yet" not in err
    forced, _ = _listed(script, "--dry-run", "--successors", env=dict(env, PYTHON="false", FORCE_METHODS="admt"))
    assert forced == with_admt


def test_successor_rows_take_seeds_print_and_slurm_like_every_row(tmp_path):
    model_root = tmp_path / "model"
    env = dict(os.environ, MODEL_ROOT=str(model_root), PYTHON=_stand_in_python(tmp_path, admt=True))
    rows, _ = _listed("train_acdc.sh", "--dry-run", "--successors", "--seeds", "1337,5", env=env)
    assert len(rows) == 12 and ("BCP_seed5", 7, "bcp") in rows and ("ADMT", 3, "admt") in rows
    printed = subprocess.run(["bash", os.path.join(ROOT, "train_acdc.sh"), "--print", "--successors"], env=env,
                             capture_output=True, text=True, check=True).stdout.splitlines()
    bcp = [line for line in printed if "--exp BCP " in line]
    assert len(bcp) == 2 and all(line.startswith("cd ") and "--which both" in line for line in bcp)
    assert all(line.count("--method bcp") == 2 for line in bcp)  # trained and tested as BCP
    subprocess.run(["bash", os.path.join(ROOT, "train_la.sh"), "--slurm", "--successors"], env=env, check=True,
                   capture_output=True, text=True)
    text = (model_root / "LA_runs.sbatch").read_text()
    tasks = [line for line in text.splitlines() if ") mkdir -p " in line]
    assert len(tasks) == 6 and sum("--exp ADMT " in t for t in tasks) == 2 and "#SBATCH --array=0-5" in text


def test_bad_rows_are_refused():
    for args in (["--rows"], ["--rows", "tables"], ["--rows=some"]):
        out = subprocess.run(["bash", os.path.join(ROOT, "train_la.sh"), *args], capture_output=True, text=True)
        assert out.returncode == 2 and "--rows" in out.stderr


def test_help_prints_the_whole_header():
    out = subprocess.run(["bash", os.path.join(ROOT, "train_acdc.sh"), "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "--successors" in out.stdout and "MODEL_ROOT (default model)" in out.stdout
    assert "set -euo" not in out.stdout


# ----------------------------------------------------------------------------- complexity.py


def test_complexity_counts_the_successors():
    import complexity
    from networks.net_factory import net_factory
    rows = {(r.dataset, r.method): r for r in complexity.successor_rows()}
    assert set(rows) == {(ds, m) for ds in ("LA", "ACDC") for m in ("BCP", "AD-MT")}
    # ACDC: BCP tests SS-Net's U-Net (heads built: SS-Net's parameters), AD-MT its student U-Net
    unet = complexity.count_params(net_factory("unet", 1, 4, "test", "cpu", with_heads=False))
    ssnet = complexity.count_params(net_factory("unet", 1, 4, "test", "cpu"))
    assert complexity.count_params(rows[("ACDC", "BCP")].build()) == ssnet
    assert complexity.count_params(rows[("ACDC", "AD-MT")].build()) == unet
    assert "3 U-Nets" in rows[("ACDC", "AD-MT")].note
    line = complexity.format_table([{"dataset": "ACDC", "method": "AD-MT", "params_M": unet / 1e6, "macs_G": 3.0,
                                     "paper_params_M": float("nan"), "paper_macs_G": float("nan"),
                                     "input": "1x1x256x256", "note": "n"}]).splitlines()[-1]
    assert line == "| ACDC | AD-MT | 1.814 | — | 3.00 | — | — | 1x1x256x256 | n |"
