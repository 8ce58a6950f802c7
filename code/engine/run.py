"""What every run of the scripts shares, each fact in one place: the repository root, the
snapshot folder layout, the log format and log files, seeding, ``--device`` / ``--gpu``,
boolean and the command-line error handling."""
from __future__ import annotations
import logging
import logging.handlers
import os
import sys
from typing import Any, Callable

from dataloaders.sampler import seed_everything
from dataloaders.splits import REPO_ROOT

__all__ = ["REPO_ROOT", "LOG_FORMAT", "snapshot_dir", "setup_logging", "add_log_file", "seed_everything",
           "device_from_flags", "run_cli"]

#: every log line of training and test runs: ``[HH:MM:SS.mmm] message``
LOG_FORMAT = logging.Formatter("[%(asctime)s.%(msecs)03d] %(message)s", datefmt="%H:%M:%S")


def snapshot_dir(model_root: str, dataset: str, exp: str, labelnum: int, model: str) -> str:
    """``<model_root>/<dataset>_<exp>_<labelnum>_labeled/<model>`` (the reference's layout)."""
    return os.path.join(model_root, f"{dataset}_{exp}_{labelnum}_labeled", model)


def setup_logging(snapshot: str | None = None) -> None:
    """A training run's log: stderr at once, replacing the handlers of an earlier run in this
    process, and ``<snapshot>/log.txt`` (appended) once the snapshot folder may be written.

    Call it first without ``snapshot`` (the lines logged meanwhile are held in memory), then with
    it: the held lines go to ``log.txt`` first, so the file has the whole run.
    """
    root = logging.getLogger()
    held = [h for h in root.handlers if isinstance(h, logging.handlers.MemoryHandler)]
    if snapshot is None or not held:
        for h in list(root.handlers):
            root.removeHandler(h)
        console = logging.StreamHandler(sys.stderr)
        console.setFormatter(LOG_FORMAT)
        root.addHandler(console)
        root.setLevel(logging.INFO)
        if snapshot is None:
            root.addHandler(logging.handlers.MemoryHandler(capacity=100000, flushLevel=logging.CRITICAL + 1))
            return
    file_handler = logging.FileHandler(os.path.join(snapshot, "log.txt"), encoding="utf-8")
    file_handler.setFormatter(LOG_FORMAT)
    for h in held:
        h.setTarget(file_handler)
        h.flush()
        root.removeHandler(h)
        h.close()
    root.addHandler(file_handler)


def add_log_file(path: str) -> list[logging.Handler]:
    """A test run: log to ``path`` (rewritten) and to stderr, as training does, unless a console
    handler exists;
    returns the handlers to remove when the evaluation ends."""
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    handlers: list[logging.Handler] = [logging.FileHandler(path, mode="w", encoding="utf-8")]
    if not any(isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler) for h in root.handlers):
        handlers.append(logging.StreamHandler(sys.stderr))
    for h in handlers:
        h.setFormatter(LOG_FORMAT)
        root.addHandler(h)
    return handlers


def device_from_flags(device: str, gpu: str | None) -> str:
    """Merge ``--device`` and its alias ``--gpu``: a bare index N means ``cuda:N``, the N-th of
    the VISIBLE devices (those ``CUDA_VISIBLE_DEVICES`` leaves). Both given and different: an error.

    Raises:
        ValueError: ``--device`` and ``--gpu`` disagree.
    """
    if gpu is None:
        return device
    alias = f"cuda:{gpu}" if str(gpu).isdigit() else str(gpu)
    if device not in ("auto", alias):
        raise ValueError(f"--device {device} and --gpu {gpu} disagree; pass only one of them.")
    return alias


def run_cli(main: Callable[[], Any], prog: str | None = None) -> int:
    """Run a script's ``main`` and return the exit status of the script: 0, or 1 for bad input
    (missing files, bad data, bad flags, no GPU) and faults (a diverged run, a full disk), which
    end with one logged line instead of a traceback."""
    try:
        main()
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        logging.getLogger().error("%serror: %s", f"{prog}: " if prog else "", e)  # stderr (and the run's log)
        return 1
    return 0
