"""Print the paper's Complexity columns (Params in M, MACs in G) for our networks.

    python code/complexity.py [--device cpu]

MACs are counted with thop (``thop.profile``) on one input at the paper's size:
1x1x112x112x80 for the LA networks, 1x1x256x256 for the ACDC networks. thop
counts the multiply-accumulates of Conv/ConvTranspose (bias excluded), Linear,
2 ops per element for affine BatchNorm, and interpolation for Upsample; ReLU,
LeakyReLU, MaxPool and Dropout count 0. The SS-Net heads are used only by the
training losses, so they add parameters but no MACs to a forward pass.
Params are all trainable parameters (``sum(p.numel())``, the same as thop).
The paper's numbers come from ``data/paper_tables.csv``.

A second table counts SS-Net's successors (``train_*.sh --successors``; not in
the paper, so no published column): BCP, the network ``--method bcp`` builds
and tests (SS-Net's V-Net / U-Net, its heads built but unused: parameters, no
MACs); AD-MT, the student V-Net / U-Net that is tested (training holds three
such networks: the student and two EMA teachers). A method that
``code/methods`` does not have yet (AD-MT until ``--method admt`` exists) is
counted as the network its released code trains, the dataset's backbone
without heads, and says so in its note.
"""
from __future__ import annotations
import argparse
import contextlib
import csv
import io
import logging
import os
import sys
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from datasets import get_dataset
from engine.run import REPO_ROOT
from networks.net_factory import net_factory

PAPER_TABLES = os.path.join(REPO_ROOT, "data", "paper_tables.csv")


@dataclass
class Row:
    dataset: str
    method: str                       # the name used in the paper's tables
    build: Callable[[], nn.Module]
    input_shape: tuple[int, ...]
    note: str = ""


#: the paper's rows per dataset, in its table order: (method name in the paper, --method whose network
#: is counted (from the dataset description), SS-Net heads included, note)
TABLE_ROWS = {
    "LA": (("V-Net", "ssnet", False, "backbone"),
           ("UA-MT", "uamt", False, "student V-Net (EMA teacher not counted)"),
           ("SASSNet", "sassnet", True, "V-Net + 2-ch tanh SDF head (discriminator not counted)"),
           ("DTC", "dtc", True, "V-Net + 2-ch tanh SDF head"),
           ("URPC", "urpc", True, "3D U-Net, deep supervision, InstanceNorm"),
           ("MC-Net", "mcnet", True, "V-Net encoder + deconv and trilinear decoders"),
           ("SS-Net", "ssnet", True, "V-Net + SS-Net heads")),
    "ACDC": (("U-Net", "ssnet", False, "backbone"),
             ("UA-MT", "uamt", False, "student U-Net (EMA teacher not counted)"),
             ("SASSNet", "sassnet", True, "U-Net + 4-ch 3x3 tanh SDF head (discriminator not counted)"),
             ("DTC", "dtc", True, "U-Net + 4-ch 3x3 tanh SDF head"),
             ("URPC", "urpc", True, "U-Net + 4 aux 3x3 heads (dp4 unused)"),
             ("MC-Net", "mcnet", True, "U-Net encoder + bilinear and deconv decoders"),
             ("SS-Net", "ssnet", True, "U-Net + SS-Net heads")),
}


#: SS-Net's successors per dataset: (method name, --method, backbone fallback while --method is missing, note)
SUCCESSOR_ROWS = {
    "LA": (("BCP", "bcp", "SS-Net's V-Net, heads built but unused (EMA teacher not counted)"),
           ("AD-MT", "admt", "student V-Net; training holds 3 V-Nets (student + 2 EMA teachers), tested: student")),
    "ACDC": (("BCP", "bcp", "SS-Net's U-Net, heads built but unused (EMA teacher not counted)"),
             ("AD-MT", "admt", "student U-Net; training holds 3 U-Nets (student + 2 EMA teachers), tested: student")),
}


def successor_rows() -> list[Row]:
    """The successors' tested networks: as ``methods.build_test_model`` builds them for their
    ``--method``, or, for a method not in ``code/methods`` yet, the dataset's backbone without heads
    (AD-MT's released student, docs/admt_spec.md section 2)."""
    from methods import METHODS, build_test_model

    def tested(method: str, dataset: str, classes: int) -> Callable[[], nn.Module]:
        return lambda: build_test_model(method, dataset, classes, "cpu")

    def backbone(name: str, classes: int) -> Callable[[], nn.Module]:
        return lambda: net_factory(name, 1, classes, "test", "cpu", with_heads=False)

    out = []
    for dataset, table in SUCCESSOR_ROWS.items():
        d = get_dataset(dataset)
        for name, method, note in table:
            if method in METHODS and method in d.methods:
                build = tested(method, dataset, d.num_classes)
            else:
                build = backbone(d.method("ssnet").network, d.num_classes)
                note += f" (--method {method} not in code/methods yet: counted as the backbone without heads)"
            out.append(Row(dataset, name, build, (1, 1, *d.patch_size), note))
    return out


def rows() -> list[Row]:
    """The networks to count, in the paper's table order (the baselines as their methods build them),
    at the released patch of each dataset (batch 1)."""
    def net(name: str, classes: int, heads: bool) -> Callable[[], nn.Module]:
        return lambda: net_factory(name, 1, classes, "test", "cpu", with_heads=heads)

    out = []
    for dataset, table in TABLE_ROWS.items():
        d = get_dataset(dataset)
        for paper_name, method, heads, note in table:
            network = d.method(method).network
            out.append(Row(dataset, paper_name, net(network, d.num_classes, heads), (1, 1, *d.patch_size), note))
    return out


def paper_complexity(path: str = PAPER_TABLES) -> dict[tuple[str, str], tuple[float, float]]:
    """(dataset, method) -> (params_M, macs_G) as published."""
    out: dict[tuple[str, str], tuple[float, float]] = {}
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            if r["params_M"] and r["macs_G"]:
                out[(r["dataset"], r["method"])] = (float(r["params_M"]), float(r["macs_G"]))
    return out


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, input_shape: tuple[int, ...], device: str = "cpu") -> float:
    """Multiply-accumulates of one forward pass, counted by thop."""
    try:
        from thop import profile
    except ImportError as e:  # pragma: no cover - requirements install it
        raise SystemExit("thop is needed for MACs: pip install thop") from e
    model = model.to(device).eval()
    # thop prints a line per trilinear Upsample it cannot count (it counts them 0); keep stdout clean.
    with torch.no_grad(), contextlib.redirect_stdout(io.StringIO()):
        macs, _ = profile(model, inputs=(torch.zeros(input_shape, device=device),), verbose=False)
    # thop leaves counters in the modules' buffers; they are not part of the model.
    for m in model.modules():
        for name in ("total_ops", "total_params"):
            if name in m._buffers:
                del m._buffers[name]
    return float(macs)


def table(device: str = "cpu", only: str | None = None, successors: bool = False) -> list[dict[str, object]]:
    """The paper's rows (or, with ``successors``, the successors' rows) counted on ``device``."""
    paper = paper_complexity()
    out = []
    for r in (successor_rows() if successors else rows()):
        if only and r.dataset != only:
            continue
        model = r.build()
        params = count_params(model)
        macs = count_macs(model, r.input_shape, device)
        p_params, p_macs = paper.get((r.dataset, r.method), (float("nan"), float("nan")))
        out.append({"dataset": r.dataset, "method": r.method, "params_M": params / 1e6, "macs_G": macs / 1e9,
                    "paper_params_M": p_params, "paper_macs_G": p_macs,
                    "input": "x".join(map(str, r.input_shape)), "note": r.note})
    return out


def format_table(result: list[dict[str, object]]) -> str:
    lines = ["| Dataset | Method | Params (M) | paper | MACs (G) | paper | diff MACs | input | note |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in result:
        if r["paper_macs_G"] != r["paper_macs_G"]:  # not in the paper (the successors)
            lines.append(f"| {r['dataset']} | {r['method']} | {r['params_M']:.3f} | — | {r['macs_G']:.2f} | — | — | "
                         f"{r['input']} | {r['note']} |")
            continue
        diff = 100.0 * (r["macs_G"] - r["paper_macs_G"]) / r["paper_macs_G"]
        lines.append(f"| {r['dataset']} | {r['method']} | {r['params_M']:.3f} | {r['paper_params_M']:.2f} | "
                     f"{r['macs_G']:.2f} | {r['paper_macs_G']:.2f} | {diff:+.2f}% | {r['input']} | {r['note']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict[str, object]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="device to count on (MACs do not depend on it)")
    parser.add_argument("--dataset", choices=["LA", "ACDC"], default=None, help="only this table's rows")
    parser.add_argument("--no-successors", dest="successors", action="store_false",
                        help="leave out the table of SS-Net's successors (BCP, AD-MT)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    result = table(args.device, args.dataset)
    print(format_table(result))
    if args.successors:
        succ = table(args.device, args.dataset, successors=True)
        print("\nSuccessors of SS-Net (train_*.sh --successors; not in the paper):\n")
        print(format_table(succ))
        result = result + succ
    print("\nParams: all parameters in millions, 3 decimals (the paper prints 2: V-Net 9.449 M is its 9.44).\n"
          "MACs: thop.profile of one forward pass (Conv/ConvTranspose/Linear multiply-accumulates without "
          "bias, 2 per element for affine BatchNorm, Upsample interpolation; activations, pooling and dropout "
          "count 0; thop counts trilinear upsampling (URPC LA, MC-Net LA) as 0). The SS-Net heads run only in the "
          "training losses: parameters, no forward MACs. Baselines: the network each method trains and tests; "
          "UA-MT's EMA teacher and SASSNet's discriminator are training-only and not counted, as in the paper.")
    return result


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
