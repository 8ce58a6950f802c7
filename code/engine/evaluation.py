"""The test scripts' whole run for any dataset description (:func:`test_main`): the
common flags, the device, the snapshot layout, where the checkpoint and the results
are, the test log file and ``--expect``. ``test_la.py`` / ``test_acdc.py`` are
:func:`test_main` with the LA / ACDC description; the per-case procedure, its own
flags and how ``test.list`` is read come from the type of the description's
``procedure`` (:mod:`engine.testing`)."""
from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Callable, Sequence

import torch
from tqdm.contrib.logging import logging_redirect_tqdm

from dataloaders.h5io import check_files
from datasets import DatasetDescription, get_dataset
from methods import METHODS, get_method
from networks.net_factory import resolve_device
from engine.checkpoints import require_checkpoint
from engine.config import TestConfig, options_from_flags
from engine.inference import AMP_MODES, check_amp
from engine.speed import set_tf32
from engine.run import REPO_ROOT, add_log_file, device_from_flags, snapshot_dir
from engine.testing import read_cases, test_procedure
from utils.metrics import EMPTY_POLICIES


def add_common_args(p: argparse.ArgumentParser, dataset: str | DatasetDescription) -> None:
    """The flags every test script has (reference names kept): which run and
    checkpoint, where results go, the device, autocast and the empty-prediction policy;
    the defaults of ``--labelnum`` and ``--model`` are the dataset description's."""
    d = get_dataset(dataset)
    dataset = d.name
    units, labelnum, model = d.labelnum_unit, d.labelnum, d.model
    p.add_argument("--exp", default=None,
                   help="experiment name of the snapshot folder; default: the method's name (SSNet, UAMT, SASSNet, "
                        "DTC, URPC, MCNet)")
    p.add_argument("--labelnum", type=int, default=labelnum, help=f"labeled {units} of the run (snapshot folder name)")
    p.add_argument("--model", default=model, help="snapshot subfolder and checkpoint name; also the network "
                   "of --method ssnet (the baselines build their own)")
    p.add_argument("--method", default="ssnet", choices=tuple(sorted(METHODS)),
                   help="method whose checkpoint is evaluated; decides the network and the output tested "
                        "(UA-MT student, SASSNet/DTC segmentation head, URPC main output, MC-Net decoder 1)")
    p.add_argument("--model_root", default=os.path.join(REPO_ROOT, "model"),
                   help="folder holding the snapshot folders (use pretrained_pth for the released checkpoints)")
    p.add_argument("--ckpt", default=None, help=f"checkpoint file; default <model_root>/{dataset}_<exp>_<labelnum>"
                                                "_labeled/<model>/<model>_best_model.pth")
    p.add_argument("--which", choices=("best", "last", "both"), default="best",
                   help="checkpoint of the run to test: best (<model>_best_model.pth, selected as released; "
                        "results in test/), last (<model>_last_model.pth, the final iterate; results in "
                        "test_last/) or both, so the optimism of the selection can be seen")
    p.add_argument("--expect", default=None,
                   help="compare the result with the authors' released test results of their checkpoints "
                        "(LA4, LA8, ACDC3, ACDC7; data/released_results.json) or a JSON file of the same form, "
                        "and print a verdict: do your data and evaluation match the authors'?")
    p.add_argument("--out_dir", default=None, help="where results go; default <folder of the checkpoint>/test "
                   "(test_last for --which last)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--gpu", default=None, help="alias of --device: a GPU index N means cuda:N, the N-th VISIBLE "
                   "GPU (after CUDA_VISIBLE_DEVICES); an error if --device says otherwise")
    p.add_argument("--tf32", type=int, choices=(0, 1), default=0,
                   help="0 (faithful): IEEE fp32 convolutions on the GPU; 1: TensorFloat-32 (Ampere and later, faster)")
    p.add_argument("--amp", choices=AMP_MODES, default="none",
                   help="none: fp32 (faithful); bf16: forward passes under bfloat16 autocast (CUDA GPUs of compute "
                        "capability >= 8.0; also runs on the CPU), probabilities in float32")
    p.add_argument("--empty_policy", default="reference", choices=EMPTY_POLICIES,
                   help="empty prediction of a class: 'reference' scores 0 on all four metrics (released; 95HD/ASD 0 "
                        "is the best value), 'nan' makes 95HD/ASD NaN and leaves it out of their means")


CHECKPOINT_FILES = {"best": "{model}_best_model.pth", "last": "{model}_last_model.pth"}
RESULT_DIRS = {"best": "test", "last": "test_last"}


def parse_test_flags(parser: argparse.ArgumentParser, d: DatasetDescription,
                     argv: Sequence[str] | None = None) -> TestConfig:
    """The test run's settings from ``argv`` (``--exp`` defaults to the method's name), the test
    procedure's flags checked (errors go through ``parser.error``)."""
    flags = parser.parse_args(argv)
    procedure = options_from_flags(test_procedure(d).options, flags)
    try:
        procedure.check()
    except ValueError as err:
        parser.error(str(err))
    return TestConfig.from_flags(flags, procedure, exp=flags.exp or get_method(flags.method).name)


def prepare_evaluation(parser: argparse.ArgumentParser, args: TestConfig,
                       dataset: str | DatasetDescription) -> list[tuple[str, torch.device, str, str]]:
    """Check the common flags (errors go through ``parser.error``) and return one
    ``(which, device, checkpoint path, results folder)`` per checkpoint to test
    (``--which both``: best, then last); a missing checkpoint fails here, naming
    the path tried, before any work."""
    dataset = get_dataset(dataset).name
    try:
        device = resolve_device(device_from_flags(args.device, args.gpu))
        check_amp(args.amp, device)
        set_tf32(bool(args.tf32))
    except (ValueError, RuntimeError) as err:  # bad value, or CUDA asked for without a GPU
        parser.error(str(err))
    kinds = ("best", "last") if args.which == "both" else (args.which,)
    if args.ckpt and args.which != "best":
        parser.error("--ckpt names one file; --which last|both finds the run's files from --model_root, --exp, "
                     "--labelnum and --model (drop --ckpt)")
    if args.out_dir and len(kinds) > 1:
        parser.error("--out_dir holds one checkpoint's results; with --which both leave it out "
                     "(results go to <snapshot>/test and <snapshot>/test_last)")
    jobs = []
    for which in kinds:
        ckpt = args.ckpt or os.path.join(snapshot_dir(args.model_root, dataset, args.exp, args.labelnum, args.model),
                                         CHECKPOINT_FILES[which].format(model=args.model))
        out_dir = args.out_dir or os.path.join(os.path.dirname(os.path.abspath(ckpt)), RESULT_DIRS[which])
        if which == "last" and not os.path.isfile(ckpt):
            raise FileNotFoundError(f"No final-iterate checkpoint at {os.path.abspath(ckpt)}: training writes it at "
                                    "its last iteration (runs trained by an earlier version of this repository do "
                                    "not have it; their final weights are the 'model' entry of last.pth)")
        require_checkpoint(ckpt)
        jobs.append((which, device, ckpt, out_dir))
    return jobs


def run_evaluations(args: TestConfig, jobs: list[tuple[str, torch.device, str, str]],
                    dataset: str | DatasetDescription, num_cases: int,
                    evaluate: Callable[[torch.nn.Module, str, dict], dict]) -> dict:
    """Test every ``(which, device, checkpoint, out_dir)`` of :func:`prepare_evaluation`.

    For each: the log file ``<out_dir>/test_log.txt``, the method's test network
    with the checkpoint's weights, then ``evaluate(model, out_dir, extra_info)``
    (the dataset's per-case procedure, which writes the result files). With
    ``--expect`` the result is compared with the authors' (:func:`check_expected`).
    Returns the first checkpoint's summary; with ``--which both`` the last
    iterate's summary is its ``"last"`` entry.
    """
    import time

    from methods import build_test_model
    from engine.checkpoints import load_weights, read_weights

    description = get_dataset(dataset)
    dataset = description.name
    logger = logging.getLogger(f"test_{dataset.lower()}")
    expected = load_expected(args.expect, dataset) if args.expect else None
    summaries = {}
    for which, device, ckpt, out_dir in jobs:
        os.makedirs(out_dir, exist_ok=True)
        handlers = add_log_file(os.path.join(out_dir, "test_log.txt"))
        try:
            logger.info("Arguments: %s", args.to_dict())
            model = build_test_model(args.method, description, args.num_classes, device, args.model,
                                     state=read_weights(ckpt))
            load_weights(model, ckpt, device)
            logger.info("Evaluating the %s checkpoint %s on %d %s test volumes from %s on %s; results go to %s",
                        which, ckpt, num_cases, dataset, args.root_path, device, out_dir)
            start = time.time()
            summary = evaluate(model, out_dir, {"checkpoint": os.path.abspath(ckpt), "which": which,
                                                "method": args.method, "model": args.model, "exp": args.exp,
                                                "labelnum": args.labelnum})
            if expected is not None:
                summary["expect"] = check_expected(summary, expected, out_dir)
            logger.info("Done in %.1f s", time.time() - start)
            summaries[which] = summary
        finally:
            for h in handlers:
                logging.getLogger().removeHandler(h)
                h.close()
    first = summaries[jobs[0][0]]
    if len(summaries) > 1:
        first["last"] = summaries["last"]
    return first


def build_parser(d: DatasetDescription, doc: str | None = None) -> argparse.ArgumentParser:
    """The test flags of dataset ``d`` (``doc``: the script's docstring, whose first paragraph
    heads ``--help``): ``--root_path``, the common flags, ``--num_classes``, then the flags of
    the description's test procedure (:mod:`engine.testing`)."""
    proc = test_procedure(d)
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0] if doc else None,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--root_path", default=os.path.join(REPO_ROOT, d.root_path),
                   help=f"{d.name} folder with test.list and, for each <case> listed, "
                        f"{d.case_path('', '<case>')}")
    add_common_args(p, d)
    p.add_argument("--num_classes", type=int, default=d.num_classes,
                   help="output channels of the network (background included)")
    proc.add_args(p, d)
    return p


def test_main(d: DatasetDescription, argv: Sequence[str] | None = None, doc: str | None = None) -> dict:
    """A test script's ``main`` for dataset ``d``: parse ``argv`` (:func:`build_parser`), check the
    flags (the common ones, then the procedure's), read the cases of ``<root_path>/test.list``,
    check every test volume, then test the checkpoint(s) of ``--which`` with the description's
    procedure, which writes ``metrics_per_case.csv``, ``performance.txt``, ``performance.json``
    (and with ``--save_nii 1`` the NIfTI files) to each results folder.

    Returns:
        The (first) summary (see :func:`run_evaluations`).
    """
    proc = test_procedure(d)
    parser = build_parser(d, doc)
    args = parse_test_flags(parser, d, argv)
    jobs = prepare_evaluation(parser, args, d)
    cases = read_cases(os.path.join(args.root_path, "test.list"), d.procedure.sorted_cases)
    # every test volume checked before the first is evaluated
    check_files([d.case_path(args.root_path, c) for c in cases], d.num_classes, 3, desc="check test data")

    def run(model: torch.nn.Module, out_dir: str, extra_info: dict) -> dict:
        with logging_redirect_tqdm():  # log lines do not break the progress bar
            return proc.evaluate(d, model, args, cases, out_dir, extra_info)

    return run_evaluations(args, jobs, d, len(cases), run)


test_main.__test__ = False  # a library function, not a pytest test


def script_functions(d: DatasetDescription, doc: str | None = None) -> tuple[
        Callable[[], argparse.ArgumentParser], Callable[..., dict]]:
    """A test script's ``build_parser()`` and ``main(argv)`` for dataset ``d`` (``doc``: the
    script's docstring, its ``--help`` text)."""
    def parser() -> argparse.ArgumentParser:
        return build_parser(d, doc)

    def main(argv: Sequence[str] | None = None) -> dict:
        return test_main(d, argv, doc)

    return parser, main


def per_case_dice(per_case: list[dict]) -> dict[str, float]:
    """Dice of each case from a test summary's ``per_case`` rows, in their order (a fraction):
    LA has one row per case; ACDC one per volume and class, averaged over the classes (NaN rows
    left out; NaN when all are)."""
    values: dict[str, list[float]] = {}
    for row in per_case:
        values.setdefault(str(row["case"]), []).append(float(row["dice"]))
    out = {}
    for case, v in values.items():
        finite = [x for x in v if x == x]
        out[case] = sum(finite) / len(finite) if finite else float("nan")
    return out


# ---------------------------------------------------------------------- "is my data the authors' data?"

RELEASED_RESULTS = os.path.join(REPO_ROOT, "data", "released_results.json")


def load_expected(name_or_path: str, dataset: str) -> dict:
    """An entry of ``data/released_results.json`` (``LA4``, ``LA8``, ``ACDC3``, ``ACDC7``) or a JSON
    file of the same form (``{"dataset", "mean": {metric: value}, "per_class": {...}, "decimals"}``;
    without ``decimals`` each value counts as printed with the digits it has).

    Raises:
        ValueError: unknown name, a file that is not of that form, or another dataset's result.
    """
    import json

    if os.path.isfile(name_or_path):
        with open(name_or_path, encoding="utf-8") as f:
            entry = json.load(f)
        source = name_or_path
    else:
        with open(RELEASED_RESULTS, encoding="utf-8") as f:
            table = json.load(f)
        if name_or_path not in table["results"]:
            raise ValueError(f"--expect {name_or_path}: not a file, nor one of the released results "
                             f"{', '.join(sorted(table['results']))} ({RELEASED_RESULTS})")
        entry = dict(table["results"][name_or_path], name=name_or_path)
        source = f"{RELEASED_RESULTS} [{name_or_path}]"
    if not isinstance(entry, dict) or not isinstance(entry.get("mean"), dict):
        raise ValueError(f"--expect {name_or_path}: expected a JSON object with a 'mean' entry of metric values")
    if entry.get("dataset", dataset) != dataset:
        raise ValueError(f"--expect {name_or_path} is a {entry['dataset']} result; this is the {dataset} test")
    entry["source"] = source
    return entry


def _decimals(value: float) -> int:
    text = repr(float(value))
    if "e" in text or "." not in text:
        return 6
    return len(text.split(".")[1])


def _compare_values(ours: dict, theirs: dict, decimals: int | None = None) -> list[dict]:
    rows = []
    for metric, expected in theirs.items():
        if metric not in ours:
            continue
        tolerance = 0.5 * 10 ** -(decimals if decimals is not None else _decimals(expected)) + 1e-12
        diff = float(ours[metric]) - float(expected)
        rows.append({"metric": metric, "ours": float(ours[metric]), "expected": float(expected),
                     "difference": diff, "equal": abs(diff) <= tolerance})
    return rows


def likely_causes(rows: list[dict], dataset: str) -> list[str]:
    """What usually explains a mismatch, from which metrics differ and by how much."""
    dice = [r for r in rows if r["metric"] in ("dice", "jaccard")]
    dist = [r for r in rows if r["metric"] in ("hd95", "asd")]
    big_dice = any(abs(r["difference"]) > 0.01 for r in dice)
    hints = get_dataset(dataset).mismatch_hints
    causes = []
    if big_dice:
        causes.append("different images: " + hints.get("images", "other h5 files than the authors'"))
    if not big_dice and any(not r["equal"] for r in dist):
        causes.append("surface distances only: voxel spacing (the released metrics are in voxels, spacing 1)"
                      + (", or " + hints["distances"] if "distances" in hints else ""))
    if not big_dice and any(not r["equal"] for r in dice):
        causes.append("small Dice differences: the evaluation settings (LA: --stride_xy 18 --stride_z 4, "
                      "--patch_size 112 112 80, --nms 1; ACDC: --patch_size 256 256), a different test list, "
                      "or floating-point differences of another GPU / PyTorch version (about 1e-4)")
    return causes or ["—"]


def check_expected(summary: dict, expected: dict, out_dir: str) -> dict:
    """Compare a test summary with ``expected`` (:func:`load_expected`), log a verdict, write
    ``<out_dir>/expect.json`` and return the comparison (``match``: every value equal to the
    printed digits of the expected one)."""
    import json

    logger = logging.getLogger(f"test_{summary['dataset'].lower()}")
    decimals = expected.get("decimals")
    rows = [dict(r, part="mean") for r in _compare_values(summary["mean"], expected["mean"], decimals)]
    for name, values in (expected.get("per_class") or {}).items():
        ours = (summary.get("per_class") or {}).get(name, {}).get("mean")
        if ours is not None:
            rows += [dict(r, part=name) for r in _compare_values(ours, values, decimals)]
    match = bool(rows) and all(r["equal"] for r in rows)
    result = {"source": expected["source"], "match": match, "rows": rows,
              "causes": [] if match else likely_causes(rows, summary["dataset"])}
    if match:
        logger.info("--expect: MATCH with %s: every metric equals the authors' result to its printed digits; "
                    "your data and evaluation are the authors'", expected["source"])
    else:
        logger.info("--expect: MISMATCH with %s:", expected["source"])
        for r in rows:
            logger.info("  %-5s %-8s ours %.8f  authors %.8f  difference %+.8f%s", r["part"], r["metric"], r["ours"],
                        r["expected"], r["difference"], "" if r["equal"] else "  <-")
        for c in result["causes"]:
            logger.info("  likely cause: %s", c)
    with open(os.path.join(out_dir, "expect.json"), "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)
    return result
