"""The paper's Fig. 1 toy study: two moons at three dispersions.

    python code/two_moons.py [--out model/two_moons] [--quick]

For each dispersion gamma (the noise of ``sklearn.datasets.make_moons``) a
4-layer MLP is trained on a handful of labeled points, once with the labeled
loss alone and once with SS-Net's two losses added on the unlabeled points:
VAT on the inputs (``utils.vat.VATLoss``, Dice distance) and the prototype
separation loss on the 16-d features (``utils.separation``). It prints the test
accuracy of both and saves t-SNE plots of the test features (rows: supervised,
SS-Net; columns: gamma) as ``two_moons.png``, like the paper's figure.

Toy-scale choices (not the paper's image settings): VAT xi 0.1 and epsilon 0.3
in input units (the points span about 3 units), full-batch Adam.
"""
from __future__ import annotations
import argparse
import json
import logging
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from networks.heads import SSNetHeadsMixin
from utils.losses import cross_entropy_loss
from utils.ramps import sigmoid_rampup
from utils.separation import PrototypeMemory, separation_step
from utils.vat import VATLoss
from dataloaders.splits import REPO_ROOT as ROOT



class MoonMLP(SSNetHeadsMixin, nn.Module):
    """4 linear layers: 2 -> 64 -> 64 -> 16 (features) -> 2 (logits), with SS-Net's heads."""

    def __init__(self, num_classes: int = 2) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.body = nn.Sequential(nn.Linear(2, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(),
                                  nn.Linear(64, 16), nn.ReLU())
        self.out = nn.Linear(16, num_classes)
        self._add_ssnet_heads(num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.body(x)
        return self.out(f), f


def make_data(gamma: float, n_labeled: int, n_unlabeled: int, n_test: int, seed: int):
    from sklearn.datasets import make_moons
    x, y = make_moons(n_labeled + n_unlabeled + n_test, noise=gamma, random_state=seed)
    rng = np.random.default_rng(seed)
    # labeled: the first n_labeled/2 of each class; unlabeled and test: the rest
    idx = np.concatenate([np.flatnonzero(y == c)[: n_labeled // 2] for c in (0, 1)])
    rest = np.setdiff1d(np.arange(len(y)), idx)
    rng.shuffle(rest)
    unl, test = rest[:n_unlabeled], rest[n_unlabeled:]
    t = lambda a: torch.as_tensor(a, dtype=torch.float32)  # noqa: E731
    return (t(x[idx]), torch.as_tensor(y[idx])), t(x[unl]), (t(x[test]), torch.as_tensor(y[test]))


def train(gamma: float, ssnet: bool, args: argparse.Namespace) -> tuple[MoonMLP, float]:
    torch.manual_seed(args.seed)
    (xl, yl), xu, (xt, yt) = make_data(gamma, args.labeled, args.unlabeled, args.test, args.seed)
    model = MoonMLP()
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    vat = VATLoss(xi=0.1, epsilon=0.3, distance="dice")
    memory = PrototypeMemory(2, per_class=32)
    x = torch.cat([xl, xu]) if ssnet else xl
    lbs = len(xl)
    for it in range(args.iters):
        model.train()
        logits, feats = model(x)
        loss = cross_entropy_loss(logits[:lbs], yl)
        if ssnet:
            probs = F.softmax(logits, 1)
            # (N, 16) -> (N, 16, 1): the losses take (B, C, *spatial)
            cs_l, cs_u = separation_step(feats[..., None], probs[..., None], yl[:, None], lbs, memory, heads=model)
            w = sigmoid_rampup(it, args.iters // 4)
            loss = loss + w * (vat(model, x) + 0.1 * (cs_l + cs_u))
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        acc = (model(xt)[0].argmax(1) == yt).float().mean().item()
    return model, acc


def plot(results: list[dict[str, object]], path: str, seed: int) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.manifold import TSNE

    gammas = sorted({r["gamma"] for r in results})
    fig, axes = plt.subplots(2, len(gammas), figsize=(3.2 * len(gammas), 6.4), squeeze=False)
    for r in results:
        ax = axes[0 if r["method"] == "supervised" else 1][gammas.index(r["gamma"])]
        emb = TSNE(n_components=2, init="pca", random_state=seed, perplexity=30).fit_transform(r["features"])
        for c, color in ((0, "tab:blue"), (1, "tab:orange")):
            m = r["labels"] == c
            ax.scatter(emb[m, 0], emb[m, 1], s=3, c=color, label=f"class {c}")
        ax.set_xticks([]); ax.set_yticks([])  # noqa: E702
        ax.set_title(f"{'Supervised' if r['method'] == 'supervised' else 'SS-Net'}, gamma={r['gamma']}\n"
                     f"test acc {100 * r['accuracy']:.1f}%", fontsize=9)
    axes[0][0].legend(loc="best", fontsize=7, markerscale=3)
    fig.suptitle("t-SNE of the MLP's 16-d features on two moons (test points)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, object]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gammas", type=float, nargs="+", default=[0.1, 0.2, 0.3], help="moon dispersions (noise)")
    p.add_argument("--labeled", type=int, default=6, help="labeled points (half per class)")
    p.add_argument("--unlabeled", type=int, default=600, help="unlabeled points")
    p.add_argument("--test", type=int, default=600, help="test points (also t-SNE'd)")
    p.add_argument("--iters", type=int, default=600, help="full-batch training iterations")
    p.add_argument("--lr", type=float, default=0.01, help="Adam learning rate")
    p.add_argument("--seed", type=int, default=0, help="random seed (data and weights)")
    p.add_argument("--out", default=os.path.join(ROOT, "model", "two_moons"), help="output folder")
    p.add_argument("--quick", action="store_true", help="tiny run for tests (seconds)")
    args = p.parse_args(argv)
    if args.quick:
        args.iters, args.unlabeled, args.test, args.gammas = 60, 100, 100, args.gammas[:2]
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    os.makedirs(args.out, exist_ok=True)
    t0 = time.time()
    results = []
    from tqdm import tqdm
    for gamma in tqdm(args.gammas, desc="two moons", file=sys.stderr):
        for method in ("supervised", "ssnet"):
            model, acc = train(gamma, method == "ssnet", args)
            _, _, (xt, yt) = make_data(gamma, args.labeled, args.unlabeled, args.test, args.seed)
            with torch.no_grad():
                feats = model(xt)[1].numpy()
            results.append({"gamma": gamma, "method": method, "accuracy": acc, "features": feats,
                            "labels": yt.numpy()})
    png = os.path.join(args.out, "two_moons.png")
    plot(results, png, args.seed)
    table = ["| gamma | supervised acc (%) | SS-Net acc (%) |", "|---|---|---|"]
    summary = {"gammas": args.gammas, "labeled": args.labeled, "iterations": args.iters, "accuracy": {}}
    for gamma in args.gammas:
        acc = {r["method"]: r["accuracy"] for r in results if r["gamma"] == gamma}
        table.append(f"| {gamma} | {100 * acc['supervised']:.1f} | {100 * acc['ssnet']:.1f} |")
        summary["accuracy"][str(gamma)] = acc
    summary.update(seconds=round(time.time() - t0, 1), figure=png)
    print("\n".join(table))
    print(f"figure: {png}")
    with open(os.path.join(args.out, "two_moons.json"), "w") as f:
        json.dump(summary, f, indent=2)
    return summary


if __name__ == "__main__":
    main()
    sys.exit(0)
