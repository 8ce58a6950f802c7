"""Collect every test result under model/ into the paper's tables, side by side
with the published numbers (``data/paper_tables.csv``).

    python code/summarize.py [--model_root model] [--out results.md]

    python code/summarize.py --csv results.csv --json results.json

A run is a snapshot folder ``model/{LA|ACDC}_{exp}_{labelnum}_labeled/{net}/``
holding ``test/performance.json`` (the selected checkpoint, "best") and/or
``test_last/performance.json`` (the final iterate), written by test_la.py /
test_acdc.py. Runs of one row with other seeds (``<exp>_seed<S>``, from
``train_*.sh --seeds``) are gathered into the row: each cell is the mean ±
sd over the seeds (n shown). Paired comparisons (each method against the
supervised-only row, SS-Net against each baseline) give the mean Dice
difference over the common seeds and test cases, a 95 % two-way paired
bootstrap interval (seeds x cases) and the Wilcoxon signed-rank p-value over
the per-case Dice pairs; "best minus last" shows what selecting a checkpoint
(on the test set, for LA as released) adds. Dice and Jaccard in %, 95HD and
ASD in voxels, as in the paper.

Successors of SS-Net (``train_*.sh --successors``: exp ``BCP`` = ``--method bcp``,
``ADMT`` = ``--method admt``) are left out of the paper's tables and shown in
their own table per dataset and checkpoint, beside their published numbers
(``data/successor_results.csv``: paper tables and released performance files,
each with its source; values not checked against their source are starred),
with SS-Net's row for reference, and the paired comparison of SS-Net against
each successor over the common seeds and test cases (same statistics as above).
"""
from __future__ import annotations
import argparse
import csv
import glob
import json
import os
import re
import sys

import numpy as np

from datasets import names
from engine.evaluation import per_case_dice
from engine.run import REPO_ROOT as ROOT
from utils.statistics import mean_sd, paired_bootstrap, wilcoxon_p

#: a snapshot folder name, ``<dataset>_<exp>_<labelnum>_labeled`` (engine.run.snapshot_dir)
FOLDER = re.compile(r"^(%s)_(.+)_(\d+)_labeled$" % "|".join(map(re.escape, names())))
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
#: successors of SS-Net (train_*.sh --successors): experiment name -> method name in data/successor_results.csv
SUCCESSORS = {"BCP": "BCP", "ADMT": "AD-MT"}
#: the label counts of the successor rows per dataset (the paper's semi-supervised settings)
SUCCESSOR_LABELS = {"LA": (4, 8), "ACDC": (3, 7)}
#: SS-Net's paper table per dataset, for its reference row beside the successors
SSNET_TABLE = {"LA": "1", "ACDC": "2"}


def load_paper(path: str) -> dict[tuple[str, str, int], dict[str, float]]:
    out = {}
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            out[(r["table"], r["method"], int(r["labeled"]))] = {
                "dice": float(r["dice"]), "jaccard": float(r["jaccard"]),
                "hd95": float(r["hd95_voxel"]), "asd": float(r["asd_voxel"]), "unlabeled": int(r["unlabeled"])}
    return out


def load_successors(path: str) -> dict[tuple[str, str, int, str], dict[str, object]]:
    """(method, dataset, labeled, kind) -> published metrics of a successor, ``kind`` "paper" (a paper's
    table) or "released" (a released performance file), with ``verified`` (checked against the source
    text) and ``source``. No file: nothing."""
    out: dict[tuple[str, str, int, str], dict[str, object]] = {}
    if not os.path.isfile(path):
        return out
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            out[(r["method"], r["dataset"], int(r["labeled"]), r["kind"])] = {
                "dice": float(r["dice"]), "jaccard": float(r["jaccard"]), "hd95": float(r["hd95_voxel"]),
                "asd": float(r["asd_voxel"]), "verified": r["verified"].strip().lower() == "yes",
                "source": r["source"]}
    return out


def load_released(path: str) -> dict[tuple[str, int], dict[str, float]]:
    """(dataset, labelnum) -> SS-Net's released test results (``data/released_results.json``) in the
    tables' units (Dice, Jaccard in %). No file: nothing."""
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        results = json.load(f)["results"]
    return {(r["dataset"], int(r["labelnum"])): {c: (100 if c in ("dice", "jaccard") else 1) * r["mean"][c]
                                                 for c in COLUMNS} for r in results.values()}


SEED_SUFFIX = re.compile(r"^(.+)_seed(\d+)$")
RESULT_DIRS = {"test": "best", "test_last": "last"}
BASELINE_EXPS = ("UAMT", "SASSNet", "DTC", "URPC", "MCNet")


def _seed_of(snapshot: str, exp: str) -> tuple[str, int]:
    """(experiment without the seed suffix, seed): the seed from the run's config.json, else from an
    ``_seed<S>`` suffix of the experiment name, else 1337 (the released seed, the default)."""
    m = SEED_SUFFIX.match(exp)
    base, seed = (m.group(1), int(m.group(2))) if m else (exp, 1337)
    config = os.path.join(snapshot, "config.json")
    if os.path.isfile(config):
        with open(config) as f:
            seed = int(json.load(f).get("seed", seed))
    return base, seed


def collect(model_root: str) -> list[dict[str, object]]:
    """Every finished test under ``model_root`` as a dict (fractions converted to %): one per
    snapshot folder and checkpoint (``test/`` = best, ``test_last/`` = last iterate)."""
    rows = []
    for path in sorted(glob.glob(os.path.join(model_root, "*", "*", "test*", "performance.json"))):
        result_dir = os.path.basename(os.path.dirname(path))
        if result_dir not in RESULT_DIRS:
            continue
        snapshot = os.path.dirname(os.path.dirname(path))
        m = FOLDER.match(os.path.basename(os.path.dirname(snapshot)))
        if not m:
            continue
        with open(path) as f:
            perf = json.load(f)
        exp, seed = _seed_of(snapshot, m.group(2))
        mean = perf["mean"]
        rows.append({"dataset": m.group(1), "exp": exp, "seed": seed, "labeled": int(m.group(3)),
                     "which": RESULT_DIRS[result_dir], "path": path,
                     "dice": 100 * mean["dice"], "jaccard": 100 * mean["jaccard"],
                     "hd95": mean["hd95"], "asd": mean["asd"], "empty": perf.get("empty_predictions", 0),
                     "per_case": {c: 100 * d for c, d in per_case_dice(perf.get("per_case") or []).items()}})
    return rows


def fmt(v: float | None) -> str:
    return "—" if v is None or v != v else f"{v:.2f}"


def _group(rows: list[dict[str, object]]) -> dict[tuple[str, str, int, str], dict[int, dict[str, object]]]:
    """(dataset, exp, labeled, which) -> {seed: run}."""
    groups: dict[tuple[str, str, int, str], dict[int, dict[str, object]]] = {}
    for r in rows:
        groups.setdefault((r["dataset"], r["exp"], r["labeled"], r["which"]), {})[r["seed"]] = r
    return groups


def describe(runs: dict[int, dict[str, object]]) -> dict[str, object]:
    """Mean, sd and n over the seeds of each metric (sd NaN for one seed)."""
    out: dict[str, object] = {"n": len(runs), "seeds": sorted(runs)}
    for c in COLUMNS:
        mean, sd, _ = mean_sd([runs[s][c] for s in sorted(runs)])
        out[c] = {"mean": mean, "sd": sd}
    return out


def cell(stat: dict[str, float], n: int) -> str:
    if n < 2:
        return fmt(stat["mean"])
    return f"{stat['mean']:.2f} ± {stat['sd']:.2f} (n={n})"


def tables(rows: list[dict[str, object]], paper: dict[tuple[str, str, int], dict[str, float]],
           which: str = "best") -> str:
    """The paper's tables with our ``which`` checkpoint's results: mean ± sd over seeds (n) beside the paper."""
    groups = _group(rows)
    lines: list[str] = []
    for table, dataset in TABLES.items():
        # paper rows of this table in their order, then ours that the paper lacks
        order = [(meth, n) for (t, meth, n) in paper if t == table]
        ours = {}
        for (ds, exp, n, w), runs in groups.items():
            if ds != dataset or w != which:
                continue
            name = EXP_TO_PAPER.get(exp, {}).get(table)
            if name:
                ours[(name, n)] = runs
            elif table != "3" and exp not in EXP_TO_PAPER and exp not in SUCCESSORS:  # successors: own table
                ours[(exp, n)] = runs
        keys = order + [k for k in ours if k not in order]
        lines += [f"\n### Table {table} ({dataset}), {which} checkpoint\n",
                  "| Method | Labeled | Dice (%) | paper | Jaccard (%) | paper | 95HD | paper | ASD | paper |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for meth, n in keys:
            p = paper.get((table, meth, n), {})
            runs = ours.get((meth, n))
            cells = []
            for c in COLUMNS:
                cells += [cell(describe(runs)[c], len(runs)) if runs else "—", fmt(p.get(c))]
            lines.append(f"| {meth} | {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def paired(a: dict[int, dict[str, object]], b: dict[int, dict[str, object]]) -> dict[str, object] | None:
    """Dice of run set ``a`` minus ``b`` over their common seeds and test cases (percentage points):
    mean, 95 % two-way paired bootstrap interval (seeds x cases), Wilcoxon p over the per-case pairs."""
    seeds = sorted(set(a) & set(b))
    if not seeds:
        return None
    cases = sorted(set.intersection(*[set(a[s]["per_case"]) & set(b[s]["per_case"]) for s in seeds]))
    if not cases:
        diffs = np.array([[a[s]["dice"] - b[s]["dice"]] for s in seeds])  # no per-case results: run means
        x = y = None
    else:
        x = np.array([[a[s]["per_case"][c] for c in cases] for s in seeds])
        y = np.array([[b[s]["per_case"][c] for c in cases] for s in seeds])
        diffs = x - y
    mean, low, high = paired_bootstrap(diffs)
    p = wilcoxon_p(x.ravel(), y.ravel()) if x is not None else float("nan")
    return {"seeds": seeds, "cases": len(cases), "mean": mean, "ci95": [low, high], "wilcoxon_p": p}


def comparisons(rows: list[dict[str, object]], which: str = "best") -> list[dict[str, object]]:
    """Each method against the supervised-only row of the same dataset and label count, and SS-Net
    against each baseline."""
    groups = _group(rows)
    out = []
    for (ds, exp, n, w), runs in sorted(groups.items()):
        if w != which:
            continue
        against = []
        if exp != "Supervised":
            against.append("Supervised")
        if exp == "SSNet":
            against += list(BASELINE_EXPS)
        for other in against:
            ref = groups.get((ds, other, n, w))
            res = paired(runs, ref) if ref else None
            if res:
                out.append({"dataset": ds, "labeled": n, "which": w, "method": exp, "against": other, **res})
    return out


def successor_comparisons(rows: list[dict[str, object]], which: str = "best") -> list[dict[str, object]]:
    """SS-Net against each successor of the same dataset and label count (``paired``: SS-Net minus
    the successor over their common seeds and test cases)."""
    groups = _group(rows)
    out = []
    for (ds, exp, n, w), runs in sorted(groups.items()):
        if w != which or exp not in SUCCESSORS:
            continue
        ssnet = groups.get((ds, "SSNet", n, w))
        res = paired(ssnet, runs) if ssnet else None
        if res:
            out.append({"dataset": ds, "labeled": n, "which": w, "method": "SSNet", "against": exp, **res})
    return out


def _published(value: dict[str, object] | None, column: str) -> str:
    """A published number, starred when it was not checked against its source."""
    if not value:
        return "—"
    return fmt(value[column]) + ("" if value["verified"] else "*")


def successor_tables(rows: list[dict[str, object]], paper: dict[tuple[str, str, int], dict[str, float]],
                     published: dict[tuple[str, str, int, str], dict[str, object]],
                     released: dict[tuple[str, int], dict[str, float]], which: str = "best") -> str:
    """Per dataset: SS-Net and each successor at the successor label counts, ours (mean ± sd over seeds)
    beside the published paper and released numbers."""
    groups = _group(rows)
    lines: list[str] = []
    for dataset, labels in SUCCESSOR_LABELS.items():
        found = sorted({n for (ds, exp, n, w) in groups if ds == dataset and exp in SUCCESSORS and w == which})
        lines += [f"\n### Successors ({dataset}), {which} checkpoint\n",
                  "| Method | Labeled | Dice (%) | paper | released | Jaccard (%) | paper | released "
                  "| 95HD | paper | released | ASD | paper | released |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for n in sorted(set(labels) | set(found)):
            for exp, name in (("SSNet", "SS-Net"), *SUCCESSORS.items()):
                runs = groups.get((dataset, exp, n, which))
                if exp == "SSNet":
                    p = paper.get((SSNET_TABLE[dataset], "SS-Net", n))
                    p = {**p, "verified": True} if p else None  # data/paper_tables.csv: the paper's tables
                    r = released.get((dataset, n))
                    r = {**r, "verified": True} if r else None  # data/released_results.json
                else:
                    p = published.get((name, dataset, n, "paper"))
                    r = published.get((name, dataset, n, "released"))
                cells = []
                for c in COLUMNS:
                    cells += [cell(describe(runs)[c], len(runs)) if runs else "—", _published(p, c), _published(r, c)]
                lines.append(f"| {name} | {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def best_minus_last(rows: list[dict[str, object]]) -> list[dict[str, object]]:
    """Per row: mean over the common seeds of best-checkpoint Dice minus last-iterate Dice (points)."""
    groups = _group(rows)
    out = []
    for (ds, exp, n, w), runs in sorted(groups.items()):
        last = groups.get((ds, exp, n, "last"))
        if w != "best" or not last:
            continue
        seeds = sorted(set(runs) & set(last))
        if seeds:
            d = [runs[s]["dice"] - last[s]["dice"] for s in seeds]
            mean, sd, k = mean_sd(d)
            out.append({"dataset": ds, "exp": exp, "labeled": n, "n": k, "mean": mean, "sd": sd})
    return out


def report(rows: list[dict[str, object]], paper: dict[tuple[str, str, int], dict[str, float]],
           published: dict[tuple[str, str, int, str], dict[str, object]] | None = None,
           released: dict[tuple[str, int], dict[str, float]] | None = None) -> tuple[str, dict]:
    """The markdown text and the JSON-ready content of every table."""
    published = published or {}
    released = released or {}
    parts = [tables(rows, paper, "best")]
    if any(r["which"] == "last" for r in rows):
        parts.append(tables(rows, paper, "last"))
    comps = comparisons(rows, "best") + comparisons(rows, "last")
    if comps:
        parts += ["\n### Paired comparisons (Dice, percentage points)\n",
                  "Difference of mean Dice over the same seeds and test cases; 95 % CI: two-way paired "
                  "bootstrap over seeds and cases (10000 resamples, percentile); p: Wilcoxon signed-rank "
                  "over the per-case Dice pairs of all common seeds (ACDC: a volume's mean over RV, Myo, LV).\n",
                  "| Dataset | Labeled | Checkpoint | Method | vs | Seeds | Cases | Difference | 95 % CI | p |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for c in comps:
            parts.append(f"| {c['dataset']} | {c['labeled']} | {c['which']} | {c['method']} | {c['against']} | "
                         f"{len(c['seeds'])} | {c['cases']} | {c['mean']:+.2f} | "
                         f"[{c['ci95'][0]:+.2f}, {c['ci95'][1]:+.2f}] | {c['wilcoxon_p']:.3g} |")
    bml = best_minus_last(rows)
    if bml:
        parts += ["\n### Best (selected) minus last iterate, Dice (points)\n",
                  "| Dataset | Method | Labeled | Seeds | Best − last |", "|---|---|---|---|---|"]
        for r in bml:
            sd = f" ± {r['sd']:.2f}" if r["n"] > 1 else ""
            parts.append(f"| {r['dataset']} | {r['exp']} | {r['labeled']} | {r['n']} | {r['mean']:+.2f}{sd} |")
    parts.append(successor_tables(rows, paper, published, released, "best"))
    if any(r["which"] == "last" and r["exp"] in SUCCESSORS for r in rows):
        parts.append(successor_tables(rows, paper, published, released, "last"))
    parts.append("\npaper / released: published numbers (SS-Net: data/paper_tables.csv and "
                 "data/released_results.json; successors: data/successor_results.csv, with each value's source); "
                 "* = not checked against its source.")
    succ = successor_comparisons(rows, "best") + successor_comparisons(rows, "last")
    parts += ["\n### SS-Net against its successors (Dice, percentage points)\n",
              "SS-Net minus the successor over the same seeds and test cases; 95 % CI: two-way paired bootstrap "
              "over seeds and cases (10000 resamples, percentile); p: Wilcoxon signed-rank over the per-case Dice "
              "pairs of all common seeds (ACDC: a volume's mean over RV, Myo, LV).\n"]
    if succ:
        parts += ["| Dataset | Labeled | Checkpoint | SS-Net vs | Seeds | Cases | Difference | 95 % CI | p |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for c in succ:
            parts.append(f"| {c['dataset']} | {c['labeled']} | {c['which']} | {SUCCESSORS[c['against']]} | "
                         f"{len(c['seeds'])} | {c['cases']} | {c['mean']:+.2f} | "
                         f"[{c['ci95'][0]:+.2f}, {c['ci95'][1]:+.2f}] | {c['wilcoxon_p']:.3g} |")
    else:
        parts.append("No SS-Net and successor runs with a seed in common yet (train_*.sh --successors).")
    groups = {f"{k[0]}_{k[1]}_{k[2]}_{k[3]}": {"dataset": k[0], "exp": k[1], "labeled": k[2], "which": k[3],
                                               **describe(v)} for k, v in sorted(_group(rows).items())}
    return "\n".join(parts), {"rows": groups, "comparisons": comps, "best_minus_last": bml,
                               "successor_comparisons": succ}


def write_csv(path: str, content: dict) -> None:
    """One line per (dataset, method, labeled, checkpoint): mean and sd of each metric over the seeds."""
    stats = [f"{c}_{s}" for c in COLUMNS for s in ("mean", "sd")]
    fields = ["dataset", "exp", "labeled", "which", "n", "seeds"] + stats
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for g in content["rows"].values():
            w.writerow({"dataset": g["dataset"], "exp": g["exp"], "labeled": g["labeled"], "which": g["which"],
                        "n": g["n"], "seeds": " ".join(map(str, g["seeds"])),
                        **{f"{c}_{s}": g[c][s] for c in COLUMNS for s in ("mean", "sd")}})


def main(argv: list[str] | None = None) -> str:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model_root", default=os.path.join(ROOT, "model"), help="folder with the snapshot folders")
    ap.add_argument("--paper", default=os.path.join(ROOT, "data", "paper_tables.csv"), help="published numbers")
    ap.add_argument("--successors", default=os.path.join(ROOT, "data", "successor_results.csv"),
                    help="published numbers of SS-Net's successors (BCP, AD-MT), each with its source")
    ap.add_argument("--released", default=os.path.join(ROOT, "data", "released_results.json"),
                    help="SS-Net's released test results (beside the successors)")
    ap.add_argument("--out", default=None, help="also write the markdown to this file")
    ap.add_argument("--csv", default=None, help="also write one CSV line per row and checkpoint (mean, sd over seeds)")
    ap.add_argument("--json", default=None, help="also write every row, comparison and best-minus-last as JSON")
    args = ap.parse_args(argv)
    rows = collect(args.model_root)
    body, content = report(rows, load_paper(args.paper), load_successors(args.successors),
                           load_released(args.released))
    text = (f"Results found under {args.model_root}: {len(rows)} test result(s). '—' = not run yet. Ours: "
            "mean over the test cases of each run, then mean ± sd over seeds (n = seeds; one seed: its value); "
            "paper: published.\n" + body)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    if args.csv:
        write_csv(args.csv, content)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(content, f, indent=2)
    return text


if __name__ == "__main__":
    main()
    sys.exit(0)
