"""A CPU demo of what unlabeled data buys: SS-Net vs the supervised-only U-Net.

    python code/demo.py            # 8-9 minutes on 2 CPU cores
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
30000 iterations (the ramp ends with the run). This is not the paper's
benchmark: the data are synthetic and the run is short, and the comparison
changes with ``--seed`` (measured in the README: SS-Net ahead with the
default seed, behind with seeds 1 and 2).
"""
import argparse
import json
import logging
import os
import shutil
import sys
import time
from typing import Dict, List, Optional


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METRICS = ("dice", "jaccard", "hd95", "asd")
RUNS = (("supervised", "Supervised", ["--supervised_only"]), ("ssnet", "SSNet", []))


def budget(args: argparse.Namespace) -> Dict[str, int]:
    if args.quick:
        return dict(patients=8, iterations=12, patch=32, batch=4, labeled_bs=2, labelnum=2, hw=(40, 56))
    if args.long:
        return dict(patients=30, iterations=2400, patch=64, batch=8, labeled_bs=4, labelnum=3, hw=(80, 140))
    return dict(patients=30, iterations=1200, patch=64, batch=8, labeled_bs=4, labelnum=3, hw=(80, 140))


def train_and_test(name: str, exp: str, extra: List[str], data: str, models: str, b: Dict[str, int],
                   seed: int, device: str) -> Dict[str, float]:
    import test_acdc
    import train_acdc

    n = b["iterations"]
    flags = ["--root_path", data, "--model_root", models, "--exp", exp, "--labelnum", str(b["labelnum"]),
             "--max_iterations", str(n), "--batch_size", str(b["batch"]), "--labeled_bs", str(b["labeled_bs"]),
             "--patch_size", str(b["patch"]), str(b["patch"]), "--seed", str(seed), "--device", device,
             # the paper ramps over its whole run (200 x 150 = 30000 iterations): scale to this run
             "--consistency_rampup", str(max(n / 150.0, 1.0)),
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
    return {m: float(result["mean"][m]) for m in METRICS}


def examples(data: str, models: str, b: Dict[str, int], out_png: str, device: str) -> None:
    """Image | ground truth | supervised | SS-Net for the middle slice of a few test volumes."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from dataloaders.h5io import load_h5
    from dataloaders.splits import read_list
    from networks.net_factory import net_factory
    from utils.checkpoints import load_weights
    from utils.inference import test_single_volume_2d

    nets = {}
    for name, exp, _ in RUNS:
        net = net_factory("unet", 1, 4, "test", device)
        load_weights(net, os.path.join(models, f"ACDC_{exp}_{b['labelnum']}_labeled", "unet", "unet_best_model.pth"),
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


def main(argv: Optional[List[str]] = None) -> Dict[str, object]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=os.path.join(ROOT, "model", "demo"), help="output folder")
    p.add_argument("--seed", type=int, default=1337, help="seed for data and both trainings")
    p.add_argument("--device", default="cpu", help="cpu (the demo's setting), auto or cuda")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_true", help="tiny budget: the pipeline in under a minute")
    g.add_argument("--long", action="store_true", help="twice the iterations of the default")
    args = p.parse_args(argv)
    from dataloaders.synthetic import make_acdc

    b = budget(args)
    t0 = time.time()
    os.makedirs(args.out, exist_ok=True)
    data, models = os.path.join(args.out, "data"), os.path.join(args.out, "runs")
    for d in (data, models):
        shutil.rmtree(d, ignore_errors=True)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    make_acdc(data, patients=b["patients"], seed=args.seed, hw_range=b["hw"], progress=True)
    results: Dict[str, object] = {}
    for name, exp, extra in RUNS:
        results[name] = train_and_test(name, exp, extra, data, models, b, args.seed, args.device)
    examples(data, models, b, os.path.join(args.out, "examples.png"), args.device)
    from dataloaders.splits import patients_in_order, read_list
    from dataloaders.synthetic import acdc_group
    labeled = patients_in_order(read_list(os.path.join(data, "train_slices.list")))[:b["labelnum"]]
    results.update(labeled_patients=b["labelnum"],
                   labeled_groups={p: acdc_group(int(p[len("patient"):]), b["patients"]) for p in labeled},
                   iterations=b["iterations"],
                   train_patients=len(read_list(os.path.join(data, "train.list"))) // 2,
                   test_volumes=len(read_list(os.path.join(data, "test.list"))),
                   slice_size=b["patch"], batch_size=b["batch"], labeled_bs=b["labeled_bs"], seed=args.seed,
                   seconds=round(time.time() - t0, 1))
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    groups = ", ".join(f"{p} {g}" for p, g in results["labeled_groups"].items())
    lines = [f"\nSynthetic ACDC-like data: {results['labeled_patients']} labeled ({groups}) of "
             f"{results['train_patients']} training patients, {results['test_volumes']} test volumes; "
             f"{b['iterations']} iterations, {b['patch']}x{b['patch']} slices, SS-Net batch {b['batch']} "
             f"({b['labeled_bs']} labeled), supervised batch {b['labeled_bs']} (labeled); "
             f"mean over classes RV/Myo/LV.\n",
             "| Method | Dice (%) | Jaccard (%) | 95HD (voxel) | ASD (voxel) |", "|---|---|---|---|---|"]
    for name, label in (("supervised", "U-Net (supervised only)"), ("ssnet", "SS-Net")):
        r = results[name]
        lines.append(f"| {label} | {100 * r['dice']:.2f} | {100 * r['jaccard']:.2f} | {r['hd95']:.2f} | "
                     f"{r['asd']:.2f} |")
    lines.append(f"\n{results['seconds']:.0f} s; results: {os.path.join(args.out, 'results.json')}, "
                 f"picture: {os.path.join(args.out, 'examples.png')}")
    lines.append("One seed, one short run on synthetic data: the README's demo section shows how much the "
                 "comparison changes with --seed (it is not a reliable measure of SS-Net's gain).")
    print("\n".join(lines))
    return results


if __name__ == "__main__":
    main()
    sys.exit(0)
