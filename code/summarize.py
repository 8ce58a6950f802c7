"""Collect every test result under model/ into the paper's tables, side by side
with the published numbers (``data/paper_tables.csv``).

    python code/summarize.py [--model_root model] [--out results.md]

Each row is one snapshot folder ``model/{LA|ACDC}_{exp}_{labelnum}_labeled/{net}/``
that holds ``test/performance.json`` (written by test_la.py / test_acdc.py).
Dice and Jaccard are shown in %, 95HD and ASD in voxels, as in the paper.
"""
import argparse
import csv
import glob
import json
import os
import re
import sys
from typing import Dict, List, Optional, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FOLDER = re.compile(r"^(LA|ACDC)_(.+)_(\d+)_labeled$")
#: experiment name (train_la.sh / train_acdc.sh) -> the paper's method name per table.
EXP_TO_PAPER = {
    "SSNet": {"1": "SS-Net", "2": "SS-Net", "3": "Lseg+Llds(Dice)+Lcs"},
    "Supervised": {"1": "V-Net", "2": "U-Net", "3": "Lseg"},
    "LDS_KL": {"3": "Lseg+Llds(KL)"},
    "LDS_Dice": {"3": "Lseg+Llds(Dice)"},
    "CS": {"3": "Lseg+Lcs"},
    # the baselines (--method uamt|sassnet|dtc|urpc|mcnet; exp = the method's name)
    "UAMT": {"1": "UA-MT", "2": "UA-MT"},
    "SASSNet": {"1": "SASSNet", "2": "SASSNet"},
    "DTC": {"1": "DTC", "2": "DTC"},
    "URPC": {"1": "URPC", "2": "URPC"},
    "MCNet": {"1": "MC-Net", "2": "MC-Net"},
}
TABLES = {"1": "LA", "2": "ACDC", "3": "LA"}
COLUMNS = ("dice", "jaccard", "hd95", "asd")


def load_paper(path: str) -> Dict[Tuple[str, str, int], Dict[str, float]]:
    out = {}
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            out[(r["table"], r["method"], int(r["labeled"]))] = {
                "dice": float(r["dice"]), "jaccard": float(r["jaccard"]),
                "hd95": float(r["hd95_voxel"]), "asd": float(r["asd_voxel"]), "unlabeled": int(r["unlabeled"])}
    return out


def collect(model_root: str) -> List[Dict[str, object]]:
    """Every finished test under ``model_root`` as a dict (fractions converted to %)."""
    rows = []
    for path in sorted(glob.glob(os.path.join(model_root, "*", "*", "test", "performance.json"))):
        run_folder = os.path.basename(os.path.dirname(os.path.dirname(os.path.dirname(path))))
        m = FOLDER.match(run_folder)
        if not m:
            continue
        with open(path) as f:
            perf = json.load(f)
        mean = perf["mean"]
        rows.append({"dataset": m.group(1), "exp": m.group(2), "labeled": int(m.group(3)), "path": path,
                     "dice": 100 * mean["dice"], "jaccard": 100 * mean["jaccard"],
                     "hd95": mean["hd95"], "asd": mean["asd"], "empty": perf.get("empty_predictions", 0)})
    return rows


def fmt(v: Optional[float]) -> str:
    return "—" if v is None else f"{v:.2f}"


def tables(rows: List[Dict[str, object]], paper: Dict[Tuple[str, str, int], Dict[str, float]]) -> str:
    lines: List[str] = []
    for table, dataset in TABLES.items():
        # paper rows of this table in their order, then ours that the paper lacks
        order = [(meth, n) for (t, meth, n) in paper if t == table]
        ours = {}
        for r in rows:
            name = EXP_TO_PAPER.get(r["exp"], {}).get(table)
            if r["dataset"] == dataset and name:
                ours[(name, r["labeled"])] = r
            elif r["dataset"] == dataset and table != "3" and r["exp"] not in EXP_TO_PAPER:
                ours[(r["exp"], r["labeled"])] = r
        keys = order + [k for k in ours if k not in order]
        lines += [f"\n### Table {table} ({dataset})\n",
                  "| Method | Labeled | Dice (%) | paper | Jaccard (%) | paper | 95HD | paper | ASD | paper |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for meth, n in keys:
            p = paper.get((table, meth, n), {})
            o = ours.get((meth, n), {})
            cells = []
            for c in COLUMNS:
                cells += [fmt(o.get(c)), fmt(p.get(c))]
            lines.append(f"| {meth} | {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> str:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model_root", default=os.path.join(ROOT, "model"), help="folder with the snapshot folders")
    ap.add_argument("--paper", default=os.path.join(ROOT, "data", "paper_tables.csv"), help="published numbers")
    ap.add_argument("--out", default=None, help="also write the markdown to this file")
    args = ap.parse_args(argv)
    rows = collect(args.model_root)
    text = (f"Results found under {args.model_root}: {len(rows)} run(s). "
            "'—' = not run yet. Ours: mean over the test cases; paper: published.\n" + tables(rows, load_paper(args.paper)))
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return text


if __name__ == "__main__":
    main()
    sys.exit(0)
