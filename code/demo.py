"""A CPU demo of what unlabeled data buys: SS-Net vs the supervised-only U-Net.

    python code/demo.py            # one seed (about 6 minutes on 2 CPU cores), beside the stored K = 5 run
    python code/demo.py --seeds 5  # the pre-registered K = 5 experiment of the README
    python code/demo.py --quick    # the same pipeline in under a minute (tests)

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
RUNS = (("supervised", "Supervised", ["--supervised_only"]), ("ssnet", "SSNet", []))
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


def train_and_test(name: str, exp: str, extra: list[str], data: str, models: str, b: dict[str, int],
                   seed: int, device: str) -> tuple[dict[str, float], list[float]]:
    """Train and test one method; returns its mean metrics and the per-volume Dice
    (mean over RV, Myo, LV) in test.list order."""
    import test_acdc
    import train_acdc

    n = b["iterations"]
    flags = ["--root_path", data, "--model_root", models, "--exp", exp, "--labelnum", str(b["labelnum"]),
             "--max_iterations", str(n), "--batch_size", str(b["batch"]), "--labeled_bs", str(b["labeled_bs"]),
             "--patch_size", str(b["patch"]), str(b["patch"]), "--seed", str(seed), "--device", device,
             # the paper ramps over its whole run (200 x 150 = 30000 iterations): scale to this run
             "--consistency_rampup", str(max(n / 150.0, 1.0)), "--magnitude_scaling", MAGNITUDE_SCALING,
             "--num_workers", "0", "--val_start", str(max(n // 6, 1)), "--val_interval", str(max(n // 6, 1)),
             "--log_interval", str(max(n // 12, 1)), "--save_interval", str(n), "--image_interval", str(n)]
    if name == "supervised":
        # the same labeled slices per iteration as SS-Net's labeled half, and nothing else
        extra = extra + ["--batch_size", str(b["labeled_bs"]), "--labeled_bs", str(b["labeled_bs"])]
    logging.info("training %s (%d iterations)", name, n)
    train_acdc.main(flags + extra)
    result = test_acdc.main(["--root_path", data, "--model_root", models, "--exp", exp,
                             "--labelnum", str(b["labelnum"]), "--device", device, "--save_nii", "0",
                             "--detail", "0", "--patch_size", str(b["patch"]), str(b["patch"])])
    from engine.evaluation import per_case_dice
    return {m: float(result["mean"][m]) for m in METRICS}, list(per_case_dice(result["per_case"]).values())


def examples(data: str, models: str, b: dict[str, int], out_png: str, device: str) -> None:
    """Image | ground truth | supervised | SS-Net for the middle slice of a few test volumes."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from dataloaders.h5io import load_h5
    from dataloaders.splits import read_list
    from networks.net_factory import net_factory
    from engine.checkpoints import load_weights
    from engine.run import snapshot_dir
    from engine.inference import test_single_volume_2d

    nets = {}
    for name, exp, _ in RUNS:
        net = net_factory("unet", 1, 4, "test", device)
        load_weights(net, os.path.join(snapshot_dir(models, "ACDC", exp, b["labelnum"], "unet"), "unet_best_model.pth"),
                     device)
        nets[name] = net.eval()
    names = read_list(os.path.join(data, "test.list"))[:4]
    fig, axes = plt.subplots(len(names), 4, figsize=(8, 2.1 * len(names)), squeeze=False)
    for row, case in zip(axes, names):
        vol = load_h5(os.path.join(data, "data", f"{case}.h5"))
        z = vol["image"].shape[0] // 2
        panels = [vol["image"][z], vol["label"][z]]
        for name in ("supervised", "ssnet"):
            pred = test_single_volume_2d(nets[name], vol["image"][z:z + 1], 4, (b["patch"], b["patch"]))
            panels.append(pred[0])
        for ax, img, title in zip(row, panels, ("image", "ground truth", "supervised", "SS-Net")):
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
    for name, exp, extra in RUNS:
        results[name], per_case[name] = train_and_test(name, exp, extra, data, models, b, seed, args.device)
    examples(data, models, b, os.path.join(out, "examples.png"), args.device)
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


def aggregate(runs: list[dict[str, object]]) -> dict[str, object]:
    """Mean +- sd over seeds per method and metric; SS-Net minus supervised mean Dice per
    seed with its t-interval over seeds; Wilcoxon p over the per-volume Dice pairs of all seeds."""
    from utils.statistics import mean_sd, t_interval, wilcoxon_p

    out: dict[str, object] = {"seeds": [r["seed"] for r in runs], "k": len(runs)}
    for name, _, _ in RUNS:
        out[name] = {m: dict(zip(("mean", "sd", "n"), mean_sd([r[name][m] for r in runs]))) for m in METRICS}
    diffs = [r["ssnet"]["dice"] - r["supervised"]["dice"] for r in runs]
    mean, low, high = t_interval(diffs)
    a = [v for r in runs for v in r["per_case_dice"]["ssnet"]]
    c = [v for r in runs for v in r["per_case_dice"]["supervised"]]
    out["dice_difference"] = {"per_seed": diffs, "mean": mean, "ci95": [low, high],
                              "interval": "Student t over seeds (df K-1)",
                              "wilcoxon_p": wilcoxon_p(a, c), "pairs": len(a),
                              "wilcoxon_over": "per-volume Dice (mean of RV, Myo, LV), all seeds pooled"}
    return out


def pct(v: float) -> str:
    return f"{100 * v:.2f}"


def report(agg: dict[str, object]) -> list[str]:
    """Markdown lines for a K-seed result."""
    lines = [f"K = {agg['k']} seeds ({', '.join(map(str, agg['seeds']))}); mean +- sd over seeds:\n",
             "| Method | Dice (%) | Jaccard (%) | 95HD (voxel) | ASD (voxel) |", "|---|---|---|---|---|"]
    for name, label in (("supervised", "U-Net (supervised only)"), ("ssnet", "SS-Net")):
        r = agg[name]
        cells = [f"{pct(r[m]['mean'])} +- {pct(r[m]['sd'])}" if m in ("dice", "jaccard")
                 else f"{r[m]['mean']:.2f} +- {r[m]['sd']:.2f}" for m in METRICS]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    d = agg["dice_difference"]
    lines.append(f"\nSS-Net minus supervised, mean Dice: {100 * d['mean']:+.2f} points, 95 % CI "
                 f"[{100 * d['ci95'][0]:+.2f}, {100 * d['ci95'][1]:+.2f}] ({d['interval']}); per seed "
                 + ", ".join(f"{100 * x:+.2f}" for x in d["per_seed"])
                 + f"; Wilcoxon signed-rank p = {d['wilcoxon_p']:.3g} over {d['pairs']} {d['wilcoxon_over']}.")
    return lines


def single_table(results: dict[str, object], b: dict[str, int]) -> list[str]:
    groups = ", ".join(f"{p} {g}" for p, g in results["labeled_groups"].items())
    lines = [f"\nSynthetic ACDC-like data (seed {results['seed']}): {results['labeled_patients']} labeled "
             f"({groups}) of {results['train_patients']} training patients, {results['test_volumes']} test "
             f"volumes; {b['iterations']} iterations, {b['patch']}x{b['patch']} slices, SS-Net batch {b['batch']} "
             f"({b['labeled_bs']} labeled), supervised batch {b['labeled_bs']} (labeled); VAT epsilon scaled "
             f"to the slice size ({MAGNITUDE_SCALING}); mean over classes RV/Myo/LV.\n",
             "| Method | Dice (%) | Jaccard (%) | 95HD (voxel) | ASD (voxel) |", "|---|---|---|---|---|"]
    for name, label in (("supervised", "U-Net (supervised only)"), ("ssnet", "SS-Net")):
        r = results[name]
        lines.append(f"| {label} | {pct(r['dice'])} | {pct(r['jaccard'])} | {r['hd95']:.2f} | {r['asd']:.2f} |")
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
    args = p.parse_args(argv)
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
        if not args.quick:
            lines += stored_comparison(results)
        print("\n".join(lines))
        return results
    runs = [run_seed(args, b, s, os.path.join(args.out, f"seed{s}")) for s in SEEDS[:args.seeds]]
    agg = aggregate(runs)
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
