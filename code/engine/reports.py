"""What the test procedures (:mod:`engine.testing`) share: the result files
(``metrics_per_case.csv``, ``performance.txt``, ``performance.json``) and the summary dict.

Each procedure keeps its per-case loop and the lines that differ (the
performance.txt metric lines, the empty-prediction line, its summary entries).
"""
from __future__ import annotations

import csv
import json
import logging
import os
from collections.abc import Sequence

import numpy as np

METRICS = ("dice", "jaccard", "hd95", "asd")


def prediction_dir(out_dir: str, save_nii: bool) -> str:
    """Create ``out_dir`` (and ``<out_dir>/predictions`` if ``save_nii``); return the predictions folder."""
    os.makedirs(out_dir, exist_ok=True)
    pred_dir = os.path.join(out_dir, "predictions")
    if save_nii:
        os.makedirs(pred_dir, exist_ok=True)
    return pred_dir


def empty_rule(policy: str) -> str:
    """``policy <policy>: <what an empty prediction scores>``, for the empty-prediction line."""
    rule = ("scored 0 on all four metrics; 95HD/ASD 0 is the best possible value" if policy == "reference"
            else "95HD/ASD NaN, left out of their means")
    return f"policy {policy}: {rule}"


def build_summary(dataset: str, mean: np.ndarray, std: np.ndarray, cases: int, rows: list[dict],
                  extra_info: dict | None, *, empty_policy: str, nms: bool, patch_size: Sequence[int], amp: str,
                  stats: dict | None = None, settings: dict | None = None) -> dict:
    """The ``performance.json`` dict, keys in this order: dataset, metrics, mean, std, ``stats``
    (the dataset's own statistics), cases, empty_predictions, empty_policy, nms, patch_size,
    ``settings`` (the dataset's own inference flags), amp, ``extra_info``, per_case (``rows``)."""
    return {
        "dataset": dataset,
        "metrics": list(METRICS),
        "mean": dict(zip(METRICS, mean.tolist())),
        "std": dict(zip(METRICS, std.tolist())),
        **(stats or {}),
        "cases": cases,
        "empty_predictions": sum(r["empty_prediction"] for r in rows),
        "empty_policy": empty_policy,
        "nms": bool(nms),
        "patch_size": list(patch_size),
        **(settings or {}),
        "amp": amp,
        **(extra_info or {}),
        "per_case": rows,
    }


def write_reports(out_dir: str, summary: dict, columns: Sequence[str], txt_lines: Sequence[str], empty_line: str,
                  extra_info: dict | None, mean: np.ndarray) -> dict:
    """Write the three result files to ``out_dir`` and log the result; returns ``summary`` with their
    paths added (``csv``, ``performance_txt``, ``performance_json``).

    ``metrics_per_case.csv``: ``summary["per_case"]`` with ``columns``; ``performance.txt``:
    ``txt_lines`` (each ending in a newline), ``empty_line``, then one ``key: value`` line per
    ``extra_info`` entry; ``performance.json``: ``summary``. ``mean`` (dice, jaccard, hd95, asd) is logged.
    """
    logger = logging.getLogger(f"test_{summary['dataset'].lower()}")
    csv_path = os.path.join(out_dir, "metrics_per_case.csv")
    with open(csv_path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns))
        writer.writeheader()
        writer.writerows(summary["per_case"])
    perf_path = os.path.join(out_dir, "performance.txt")
    with open(perf_path, "w", encoding="utf-8") as handle:
        handle.writelines(txt_lines)
        handle.write(empty_line + "\n")
        for key, value in (extra_info or {}).items():
            handle.write(f"{key}: {value}\n")
    json_path = os.path.join(out_dir, "performance.json")
    with open(json_path, "w", encoding="utf-8") as handle:
        json.dump(summary, handle, indent=2, allow_nan=True)
    logger.info("average metric is %s (dice, jaccard, hd95, asd)", mean)
    logger.info(empty_line)
    logger.info("Wrote %s, %s and %s", perf_path, csv_path, json_path)
    summary.update(csv=csv_path, performance_txt=perf_path, performance_json=json_path)
    return summary
