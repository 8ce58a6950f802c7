"""The snapshot folder of a training run, guarded: what counts as a run there, refusing to
overwrite one (``--overwrite`` clears it first), checking that the folder can be written before
any work, and the flags a ``--resume`` must keep.

Nothing here writes until :func:`open_snapshot`; every check before it raises ``ValueError``
(bad flags or paths) with one message naming the path or flag and what to do.
"""
from __future__ import annotations

import fnmatch
import logging
import os
import shutil
from collections.abc import Mapping
from typing import Any

logger = logging.getLogger(__name__)

__all__ = ["RUN_FILES", "RUN_FOLDERS", "RESUME_FREE_FLAGS", "run_files", "check_output_folder",
           "refuse_existing_run", "open_snapshot", "changed_flags", "check_resume_flags"]

#: files a training run writes into its snapshot folder (the checkpoints make it "a run")
CHECKPOINT_PATTERNS = ("last.pth", "*_best_model.pth", "*_last_model.pth", "iter_*.pth", "best_optimizer.pth")
RUN_FILES = CHECKPOINT_PATTERNS + ("*.pth.tmp", "config.json", "log.txt")
#: folders a run (or testing it) writes there: tensorboard events, test results
RUN_FOLDERS = ("log", "test", "test_last", "pre_train")
#: subfolders of earlier training stages (BCP's pre-train), which hold checkpoints of the same run
STAGE_FOLDERS = ("pre_train",)

#: flags that may differ on ``--resume``: they change neither the math nor the random streams
#: (where the data are read from, how fast, how often to log or save, where the run runs).
#: Every other flag defines the run. ``max_iterations`` may grow (a longer run, the same
#: iterations first) but not fall below the iterations already done.
RESUME_FREE_FLAGS = frozenset({
    "resume", "overwrite", "root_path", "model_root", "device", "gpu", "num_workers", "keep_host_memory",
    "loader", "cache_data", "log_interval", "image_interval", "save_interval", "sw_batch", "val_batch",
    "deterministic", "compile", "max_iterations",
})


def run_files(snapshot: str) -> list[str]:
    """The checkpoint files of a run in ``snapshot`` (empty if none or no folder)."""
    if not os.path.isdir(snapshot):
        return []
    found = sorted(f for f in os.listdir(snapshot) if any(fnmatch.fnmatch(f, p) for p in CHECKPOINT_PATTERNS))
    for stage in STAGE_FOLDERS:
        found += [f"{stage}/{f}" for f in run_files(os.path.join(snapshot, stage))]
    return found


def check_output_folder(model_root: str, snapshot: str) -> None:
    """Check, without writing, that ``snapshot`` (below ``model_root``) can be a folder: no part of
    the path is an existing file, and the deepest existing folder is writable.

    Raises:
        ValueError: naming the part of the path that is in the way, or the folder that cannot
            be written, and ``--model_root``.
    """
    path = os.path.abspath(snapshot)
    while True:
        if os.path.exists(path) and not os.path.isdir(path):
            raise ValueError(f"cannot write the snapshot folder {snapshot}: {path} is a file, not a folder. "
                             f"Move that file away or choose another --model_root (now {model_root}).")
        if os.path.isdir(path):
            break
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    if os.path.isdir(path) and not os.access(path, os.W_OK | os.X_OK):
        raise ValueError(f"cannot write the snapshot folder {snapshot}: {path} is read-only for this user. "
                         f"Choose a writable --model_root (now {model_root}).")


def refuse_existing_run(snapshot: str, overwrite: bool) -> None:
    """Stop a new run from mixing with, or rewinding, the run already in ``snapshot``.

    Raises:
        ValueError: ``snapshot`` holds checkpoints and ``overwrite`` is false; names
            ``--resume`` and ``--overwrite``.
    """
    found = run_files(snapshot)
    if found and not overwrite:
        shown = ", ".join(found[:4]) + (f" and {len(found) - 4} more" if len(found) > 4 else "")
        raise ValueError(f"{snapshot} already holds a run ({shown}). Add --resume to continue it (or to "
                         "re-create its final files if it finished), --overwrite to delete it and start again, "
                         "or choose another --exp / --model_root.")


def _clear_run(snapshot: str) -> list[str]:
    """Delete the files and folders a run writes (:data:`RUN_FILES`, :data:`RUN_FOLDERS`) in
    ``snapshot``; other files stay. Returns the names removed."""
    removed = []
    for name in sorted(os.listdir(snapshot)):
        path = os.path.join(snapshot, name)
        if os.path.isdir(path) and not os.path.islink(path):
            if name in RUN_FOLDERS:
                shutil.rmtree(path)
                removed.append(name + "/")
        elif any(fnmatch.fnmatch(name, p) for p in RUN_FILES):
            os.remove(path)
            removed.append(name)
    return removed


def open_snapshot(snapshot: str, clear: bool = False) -> list[str]:
    """Create ``snapshot`` (and its parents), with ``clear`` delete an earlier run's files first
    (``--overwrite``), and prove that a file can be written there. Returns the names removed.

    Raises:
        RuntimeError: the folder cannot be created or written (read-only, full disk), with
            the path and the system's reason.
    """
    try:
        os.makedirs(snapshot, exist_ok=True)
        removed = _clear_run(snapshot) if clear else []
        probe = os.path.join(snapshot, ".write_test")
        with open(probe, "wb") as f:
            f.write(b"0" * 4096)
            f.flush()
            os.fsync(f.fileno())
        os.remove(probe)
    except OSError as err:
        raise RuntimeError(f"cannot write in the snapshot folder {snapshot} ({err.strerror or err}): is the disk "
                           "full or the folder read-only? Free space or choose another --model_root.") from err
    return removed


def changed_flags(stored: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """The run-defining flags (all but :data:`RESUME_FREE_FLAGS`) whose value in ``current``
    differs from ``stored``, as ``--flag: stored -> current`` lines. Flags missing on either side
    (another version of the code) are not compared."""
    def norm(v: Any) -> Any:
        return list(v) if isinstance(v, tuple) else v

    return [f"--{k}: {stored[k]!r} in the run, {current[k]!r} now" for k in sorted(current)
            if k in stored and k not in RESUME_FREE_FLAGS and norm(stored[k]) != norm(current[k])]


def check_resume_flags(stored: Mapping[str, Any], current: Mapping[str, Any], path: str,
                       iterations_done: int) -> None:
    """Refuse a ``--resume`` whose flags define another run than the one stored in ``path``.

    Raises:
        ValueError: one message listing every changed flag (``--method`` first, with the method
            stored), or a ``--max_iterations`` below the iterations already done.
    """
    changes = changed_flags(stored, current)
    changes.sort(key=lambda line: not line.startswith("--method:"))
    if changes:
        raise ValueError(f"--resume: {path} was written by a run with other flags:\n  " + "\n  ".join(changes) +
                         "\nResume with the run's own flags (they are in its config.json), or start a new run "
                         "with --overwrite or another --exp.")
    if int(current.get("max_iterations", iterations_done)) < iterations_done:
        raise ValueError(f"--resume: {path} is at iteration {iterations_done}, beyond --max_iterations "
                         f"{current['max_iterations']}; give --max_iterations >= {iterations_done}.")
