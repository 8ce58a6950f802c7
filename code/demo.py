"""A CPU demo of what unlabeled data buys: SS-Net vs the supervised-only U-Net.

    python code/demo.py            # one seed (about 6 minutes on 2 CPU cores), beside the stored K = 5 run
    python code/demo.py --seeds 5  # the pre-registered K = 5 experiment of the README
    python code/demo.py --quick    # the same pipeline in under a minute (tests)
    python code/demo.py --methods bcp,admt --seeds 5   # SS-Net's successors under the same rules (README)

It writes a small synthetic ACDC-like dataset with the repository's generator
(``dataloaders/synthetic.py``), trains the supervised-only U-Net and SS-Net
with ``train_acdc.py`` (same labeled patients, seed, iterations, slice size and
batch; the supervised model sees the same labeled slices per iteration as
SS-Net's labeled half and nothing else), evaluates both with ``test_acdc.py`` on held-out patients, prints a
Table-2-style markdown table and writes ``<out>/results.json`` and
``<out>/examples.png``. Everything but the budget is the paper's ACDC setting:
the budget is CPU-sized (smaller slices, batch and iteration count), and the
loss ramp-up is scaled to the run's length as the paper's ramp relates to its
30000 iterations (the ramp ends with the run), and the VAT epsilon to the
slice size (``--magnitude_scaling rms``: the paper's per-pixel perturbation).
This is not the paper's benchmark: the data are synthetic and the run is
short, and one seed's comparison changes with ``--seed``; ``--seeds K``
reports K seeds with the paired difference and its 95 % interval.
"""
from __future__ import annotations
import argparse
import json
import logging
import os
import shutil
import sys
import time

from engine.run import REPO_ROOT as ROOT

METRICS = ("dice", "jaccard", "hd95", "asd")
#: --methods name -> (--exp, display name)
METHODS = {"supervised": ("Supervised", "U-Net (supervised only)"), "ssnet": ("SSNet", "SS-Net"),
           "bcp": ("BCP", "BCP"), "admt": ("ADMT", "AD-MT")}
#: the paper's ACDC iterations; the demo's budget divides every released count of iterations by
#: 30000 / its iterations (SS-Net's ramp, BCP's pre-train, AD-MT's ramp and switch period)
PAPER_ITERATIONS = 30000
#: --seeds K runs the first K of these (pre-registered in the README before the K = 5 run)
SEEDS = (1337, 1, 2, 3, 4, 5, 6, 7, 8, 9)
#: the VAT perturbation keeps the paper's per-pixel RMS at the demo's slice size (6 at 256x256 -> 1.5 at 64x64)
MAGNITUDE_SCALING = "rms"
STORED = os.path.join(ROOT, "docs", "demo_seeds.json")


def budget(args: argparse.Namespace) -> dict[str, int]:
    if args.quick:
        return dict(patients=8, iterations=12, patch=32, batch=4, labeled_bs=2, labelnum=2, hw=(40, 56))
    # 100 patients split as the real ACDC (70 training, 10 validation, 20 test = 40 test volumes)
    if args.long:
        return dict(patients=100, iterations=2400, patch=64, batch=8, labeled_bs=4, labelnum=3, hw=(80, 140))
    return dict(patients=100, iterations=1200, patch=64, batch=8, labeled_bs=4, labelnum=3, hw=(80, 140))


def method_flags(name: str, n: int, b: dict[str, int]) -> list[str]:
    """A method's own flags at the demo's budget of ``n`` iterations: each released count of
    iterations scaled by ``n / 30000``, as SS-Net's ramp is (README, the demo's rules)."""
    scale = n / PAPER_ITERATIONS
    if name == "supervised":
        # the same labeled slices per iteration as SS-Net's labeled half, and nothing else
        return ["--supervised_only", "--batch_size", str(b["labeled_bs"]), "--labeled_bs", str(b["labeled_bs"]),
                "--consistency_rampup", str(max(n / 150.0, 1.0)), "--magnitude_scaling", MAGNITUDE_SCALING]
    if name == "ssnet":
        # the paper ramps over its whole run (200 x 150 = 30000 iterations): scale to this run
        return ["--consistency_rampup", str(max(n / 150.0, 1.0)), "--magnitude_scaling", MAGNITUDE_SCALING]
    if name == "bcp":  # pre-train 10000 -> 400 at 1200 iterations; self-train the run's n
        return ["--method", "bcp", "--bcp_pretrain_iterations", str(max(round(10000 * scale), 1))]
    if name == "admt":  # ramp R = 50 (x 150 iterations) and switch period P <= 50 iterations, scaled
        return ["--method", "admt", "--admt_rampup", str(50 * scale), "--admt_period", str(max(round(50 * scale), 1))]
    raise ValueError(f"--methods: unknown method {name!r}; one of {', '.join(METHODS)}")


def train_and_test(name: str, data: str, models: str, b: dict[str, int],
                   seed: int, device: str) -> tuple[dict[str, float], list[float]]:
    """Train and test one method; returns its mean metrics and the per-volume Dice
    (mean over RV, Myo, LV) in test.list order."""
    import test_acdc
    import train_acdc

    n = b["iterations"]
    exp = METHODS[name][0]
    flags = ["--root_path", data, "--model_root", models, "--exp", exp, "--labelnum", str(b["labelnum"]),
             "--max_iterations", str(n), "--batch_size", str(b["batch"]), "--labeled_bs", str(b["labeled_bs"]),
             "--patch_size", str(b["patch"]), str(b["patch"]), "--seed", str(seed), "--device", device,
             "--num_workers", "0", "--val_start", str(max(n // 6, 1)), "--val_interval", str(max(n // 6, 1)),
             "--log_interval", str(max(n // 12, 1)), "--save_interval", str(n), "--image_interval", str(n)]
    extra = method_flags(name, n, b)
    logging.info("training %s (%d iterations)", name, n)
    train_acdc.main(flags + extra)
    method = extra[extra.index("--method") + 1] if "--method" in extra else "ssnet"
    result = test_acdc.main(["--root_path", data, "--model_root", models, "--exp", exp, "--method", method,
                             "--labelnum", str(b["labelnum"]), "--device", device, "--save_nii", "0",
                             "--detail", "0", "--patch_size", str(b["patch"]), str(b["patch"])])
    from engine.evaluation import per_case_dice
    return {m: float(result["mean"][m]) for m in METRICS}, list(per_case_dice(result["per_case"]).values())


def examples(data: str, models: str, b: dict[str, int], out_png: str, device: str,
             methods: tuple[str, ...] = ("supervised", "ssnet")) -> None:
    """Image | ground truth | each method, for the middle slice of a few test volumes."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from dataloaders.h5io import load_h5
    from dataloaders.splits import read_list
    from methods import build_test_model
    from engine.checkpoints import load_weights
    from engine.run import snapshot_dir
    from engine.inference import test_single_volume_2d

    nets = {}
    for name in methods:
        key = "ssnet" if name == "supervised" else name
        net = build_test_model(key, "ACDC", 4, device)
        load_weights(net, os.path.join(snapshot_dir(models, "ACDC", METHODS[name][0], b["labelnum"], "unet"),
                                       "unet_best_model.pth"), device)
        nets[name] = net.eval()
    names = read_list(os.path.join(data, "test.list"))[:4]
    fig, axes = plt.subplots(len(names), 2 + len(methods), figsize=(2 * (2 + len(methods)), 2.1 * len(names)),
                             squeeze=False)
    for row, case in zip(axes, names):
        vol = load_h5(os.path.join(data, "data", f"{case}.h5"))
        z = vol["image"].shape[0] // 2
        panels = [vol["image"][z], vol["label"][z]]
        for name in methods:
            pred = test_single_volume_2d(nets[name], vol["image"][z:z + 1], 4, (b["patch"], b["patch"]))
            panels.append(pred[0])
        titles = ("image", "ground truth") + tuple(METHODS[m][1] for m in methods)
        for ax, img, title in zip(row, panels, titles):
            if title == "image":
                ax.imshow(img, cmap="gray")
            else:
                ax.imshow(img, cmap="viridis", vmin=0, vmax=3, interpolation="nearest")
            ax.set_title(f"{title}" if title != "image" else case, fontsize=8)
            ax.axis("off")
    fig.suptitle("Synthetic ACDC-like test slices (0 bg, 1 RV, 2 Myo, 3 LV)", fontsize=9)
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    del torch


def run_seed(args: argparse.Namespace, b: dict[str, int], seed: int, out: str) -> dict[str, object]:
    """One seed: its data, both trainings and tests, the picture; returns its results."""
    from dataloaders.splits import patients_in_order, read_list
    from dataloaders.synthetic import acdc_group, make_acdc

    t0 = time.time()
    os.makedirs(out, exist_ok=True)
    data, models = os.path.join(out, "data"), os.path.join(out, "runs")
    for d in (data, models):
        shutil.rmtree(d, ignore_errors=True)
    make_acdc(data, patients=b["patients"], seed=seed, hw_range=b["hw"], progress=True)
    results: dict[str, object] = {}
    per_case: dict[str, list[float]] = {}
    for name in args.methods:
        results[name], per_case[name] = train_and_test(name, data, models, b, seed, args.device)
    examples(data, models, b, os.path.join(out, "examples.png"), args.device, tuple(args.methods))
    labeled = patients_in_order(read_list(os.path.join(data, "train_slices.list")))[:b["labelnum"]]
    results.update(labeled_patients=b["labelnum"],
                   labeled_groups={p: acdc_group(int(p[len("patient"):]), b["patients"]) for p in labeled},
                   iterations=b["iterations"],
                   train_patients=len(read_list(os.path.join(data, "train.list"))) // 2,
                   test_volumes=len(read_list(os.path.join(data, "test.list"))),
                   slice_size=b["patch"], batch_size=b["batch"], labeled_bs=b["labeled_bs"], seed=seed,
                   magnitude_scaling=MAGNITUDE_SCALING, per_case_dice=per_case,
                   seconds=round(time.time() - t0, 1))
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    return results


def stored_ssnet_dice(seeds: list[int], b: dict[str, object] | None) -> list[float] | None:
    """SS-Net's mean Dice per seed in the stored five-seed run (docs/demo_seeds.json, ``per_seed_dice``),
    for ``seeds`` at the budget ``b``; None where the stored run lacks a seed or had another budget."""
    if not os.path.isfile(STORED) or b is None:
        return None
    with open(STORED) as f:
        stored = json.load(f)
    plain = {k: list(v) if isinstance(v, tuple) else v for k, v in b.items()}
    if stored.get("budget") != plain:
        return None
    table = dict(zip(stored["seeds"], stored.get("per_seed_dice", {}).get("ssnet", [])))
    return [table[s] for s in seeds] if all(s in table for s in seeds) else None


def aggregate(runs: list[dict[str, object]], b: dict[str, object] | None = None) -> dict[str, object]:
    """Mean +- sd over seeds per method and metric; SS-Net minus supervised mean Dice per seed
    with its t-interval over seeds and the Wilcoxon p over the per-volume Dice pairs of all seeds;
    SS-Net minus each successor (BCP, AD-MT) per seed with its t-interval (SS-Net of this run, or of
    the stored five-seed run when this run did not train it)."""
    from utils.statistics import mean_sd, t_interval, wilcoxon_p

    names = [m for m in METHODS if m in runs[0]]
    seeds = [r["seed"] for r in runs]
    out: dict[str, object] = {"seeds": seeds, "k": len(runs), "methods": names}
    for name in names:
        out[name] = {m: dict(zip(("mean", "sd", "n"), mean_sd([r[name][m] for r in runs]))) for m in METRICS}
    pairs = [("ssnet", "supervised", "dice_difference")] + [("ssnet", m, f"ssnet_minus_{m}") for m in names
                                                            if m not in ("ssnet", "supervised")]
    for a_name, b_name, key in pairs:
        if b_name not in names:
            continue
        a_dice, source = None, "this run"
        if a_name in names:
            a_dice = [r[a_name]["dice"] for r in runs]
        else:
            a_dice, source = stored_ssnet_dice(seeds, b), "the stored five-seed run (docs/demo_seeds.json)"
        if a_dice is None:
            continue
        diffs = [x - r[b_name]["dice"] for x, r in zip(a_dice, runs)]
        mean, low, high = t_interval(diffs)
        entry = {"per_seed": diffs, "mean": mean, "ci95": [low, high], "interval": "Student t over seeds (df K-1)",
                 "minuend": METHODS[a_name][1], "subtrahend": METHODS[b_name][1], "ssnet_from": source}
        if a_name in names:
            a = [v for r in runs for v in r["per_case_dice"][a_name]]
            c = [v for r in runs for v in r["per_case_dice"][b_name]]
            entry.update(wilcoxon_p=wilcoxon_p(a, c), pairs=len(a),
                         wilcoxon_over="per-volume Dice (mean of RV, Myo, LV), all seeds pooled")
        out[key] = entry
    return out


def pct(v: float) -> str:
    return f"{100 * v:.2f}"


def report(agg: dict[str, object]) -> list[str]:
    """Markdown lines for a K-seed result."""
    lines = [f"K = {agg['k']} seeds ({', '.join(map(str, agg['seeds']))}); mean +- sd over seeds:\n",
             "| Method | Dice (%) | Jaccard (%) | 95HD (voxel) | ASD (voxel) |", "|---|---|---|---|---|"]
    for name in agg.get("methods", ["supervised", "ssnet"]):
        r = agg[name]
        cells = [f"{pct(r[m]['mean'])} +- {pct(r[m]['sd'])}" if m in ("dice", "jaccard")
                 else f"{r[m]['mean']:.2f} +- {r[m]['sd']:.2f}" for m in METRICS]
        lines.append(f"| {METHODS[name][1]} | " + " | ".join(cells) + " |")
    for key in ["dice_difference"] + [k for k in agg if k.startswith("ssnet_minus_")]:
        if key not in agg:
            continue
        d = agg[key]
        first, second = d.get("minuend", "SS-Net"), d.get("subtrahend", "supervised")
        line = (f"\n{first} minus {second}, mean Dice: {100 * d['mean']:+.2f} points, 95 % CI "
                f"[{100 * d['ci95'][0]:+.2f}, {100 * d['ci95'][1]:+.2f}] ({d['interval']}); per seed "
                + ", ".join(f"{100 * x:+.2f}" for x in d["per_seed"]))
        if "wilcoxon_p" in d:
            line += f"; Wilcoxon signed-rank p = {d['wilcoxon_p']:.3g} over {d['pairs']} {d['wilcoxon_over']}."
        else:
            line += f" ({first} from {d['ssnet_from']})."
        lines.append(line)
    return lines


def single_table(results: dict[str, object], b: dict[str, int]) -> list[str]:
    groups = ", ".join(f"{p} {g}" for p, g in results["labeled_groups"].items())
    lines = [f"\nSynthetic ACDC-like data (seed {results['seed']}): {results['labeled_patients']} labeled "
             f"({groups}) of {results['train_patients']} training patients, {results['test_volumes']} test "
             f"volumes; {b['iterations']} iterations, {b['patch']}x{b['patch']} slices, batch {b['batch']} "
             f"({b['labeled_bs']} labeled), supervised batch {b['labeled_bs']} (labeled); VAT epsilon scaled "
             f"to the slice size ({MAGNITUDE_SCALING}); mean over classes RV/Myo/LV.\n",
             "| Method | Dice (%) | Jaccard (%) | 95HD (voxel) | ASD (voxel) |", "|---|---|---|---|---|"]
    for name in (m for m in METHODS if m in results):
        r = results[name]
        lines.append(f"| {METHODS[name][1]} | {pct(r['dice'])} | {pct(r['jaccard'])} | {r['hd95']:.2f} | "
                     f"{r['asd']:.2f} |")
    return lines


def stored_comparison(results: dict[str, object]) -> list[str]:
    """Where one seed's result falls in the stored K = 5 run (docs/demo_seeds.json)."""
    if not os.path.isfile(STORED):
        return [f"(no stored multi-seed result at {STORED})"]
    with open(STORED) as f:
        stored = json.load(f)
    d = 100 * (results["ssnet"]["dice"] - results["supervised"]["dice"])
    per_seed = [100 * x for x in stored["dice_difference"]["per_seed"]]
    lines = ["", "The stored K = 5 run of the same rules (README, docs/demo_seeds.json):"] + report(stored)
    lines.append(f"This run: SS-Net minus supervised {d:+.2f} Dice points; the stored seeds range "
                 f"{min(per_seed):+.2f} to {max(per_seed):+.2f}.")
    return lines


def main(argv: list[str] | None = None) -> dict[str, object]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=os.path.join(ROOT, "model", "demo"), help="output folder")
    p.add_argument("--seed", type=int, default=1337, help="seed for data and both trainings (one-seed run)")
    p.add_argument("--seeds", type=int, default=None,
                   help=f"run K independent seeds, the first K of {', '.join(map(str, SEEDS))} (each draws its "
                        "own data and labeled patients), and report mean +- sd and the paired difference "
                        "with its 95 %% interval; overrides --seed")
    p.add_argument("--device", default="cpu", help="cpu (the demo's setting), auto or cuda")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_true", help="tiny budget: the pipeline in under a minute")
    g.add_argument("--long", action="store_true", help="twice the iterations of the default")
    p.add_argument("--methods", type=lambda v: [m.strip() for m in v.split(",") if m.strip()],
                   default=["supervised", "ssnet"],
                   help="comma-separated methods to train and test on each seed's data: supervised, ssnet, bcp, "
                        "admt (each released count of iterations scaled as SS-Net's ramp is; README)")
    args = p.parse_args(argv)
    unknown = [m for m in args.methods if m not in METHODS]
    if unknown or not args.methods:
        p.error(f"--methods: unknown {', '.join(unknown) or '(none given)'}; choose from {', '.join(METHODS)}")
    if args.seeds is not None and not 1 <= args.seeds <= len(SEEDS):
        p.error(f"--seeds must be in 1..{len(SEEDS)}, got {args.seeds}")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    b = budget(args)
    t0 = time.time()
    if args.seeds is None:
        results = run_seed(args, b, args.seed, args.out)
        lines = single_table(results, b)
        lines.append(f"\n{results['seconds']:.0f} s; results: {os.path.join(args.out, 'results.json')}, "
                     f"picture: {os.path.join(args.out, 'examples.png')}")
        lines.append("One seed is an anecdote: the comparison changes with --seed (each seed draws new data "
                     "and labeled patients).")
        if not args.quick and "ssnet" in results and "supervised" in results:
            lines += stored_comparison(results)
        print("\n".join(lines))
        return results
    runs = [run_seed(args, b, s, os.path.join(args.out, f"seed{s}")) for s in SEEDS[:args.seeds]]
    agg = aggregate(runs, b)
    agg.update(budget={k: list(v) if isinstance(v, tuple) else v for k, v in b.items()},
               magnitude_scaling=MAGNITUDE_SCALING, seconds=round(time.time() - t0, 1),
               per_seed_seconds=[r["seconds"] for r in runs])
    with open(os.path.join(args.out, "results_seeds.json"), "w") as f:
        json.dump(agg, f, indent=2)
    lines = report(agg) + [f"\n{agg['seconds']:.0f} s in all; results: {os.path.join(args.out, 'results_seeds.json')}"]
    print("\n".join(lines))
    return agg


if __name__ == "__main__":
    main()
    sys.exit(0)
