"""Loading model weights from checkpoint files, including untrusted ones.

The released SS-Net checkpoints (``VNet_best_model.pth``, ``unet_best_model.pth``)
are bare ``state_dict``s. Files from elsewhere are loaded with
``torch.load(..., weights_only=True)`` so that they cannot run code, and with
``map_location`` set to the chosen device so that a file saved on a GPU loads on
a CPU-only machine.

Training checkpoints (``last.pth``) are written atomically with
:func:`save_checkpoint` and read back with :func:`load_training_state`, under the
same weights-only rules (plus the numpy globals needed for the numpy RNG state
that older versions stored as an array).
"""
from __future__ import annotations

import logging
import os
import pickle
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

logger = logging.getLogger(__name__)

#: Keys under which training scripts commonly store the weights.
CONTAINER_KEYS = ("state_dict", "model_state_dict", "model", "net", "network", "weights")
#: Prefixes added by ``nn.DataParallel`` / ``DistributedDataParallel`` and ``torch.compile``.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")

RELEASED_HINT = (
    "The authors' released checkpoints (github.com/ycwu1997/SS-Net, folder pretrained_pth/) "
    "go to e.g. pretrained_pth/LA_SSNet_4_labeled/VNet/VNet_best_model.pth or "
    "pretrained_pth/ACDC_SSNet_7_labeled/unet/unet_best_model.pth; pass the file with --ckpt, "
    "or train first (code/train_la.py, code/train_acdc.py) to create "
    "model/<dataset>_<exp>_<labelnum>_labeled/<model>/<model>_best_model.pth."
)

_MAX_LISTED = 40


class CheckpointError(RuntimeError):
    """A checkpoint file cannot be read or does not fit the model."""


def _numpy_array_globals() -> list:
    """The numpy globals needed to unpickle a plain numeric ndarray, and nothing else.

    Older ``last.pth`` files hold ``np.random.get_state()``, whose key is a uint32
    array. ``_reconstruct`` is allowed under both its numpy 1 and numpy 2 module
    names, so that files written with either load with either.
    """
    try:
        from numpy._core import multiarray
    except ImportError:  # numpy < 2
        from numpy.core import multiarray
    reconstruct = multiarray._reconstruct
    dtype_classes = {type(np.dtype(code)) for code in "?bBhHiIlLqQefdgFDG"}
    allowed: list = [(reconstruct, "numpy.core.multiarray._reconstruct"),
                     (reconstruct, "numpy._core.multiarray._reconstruct"), np.ndarray, np.dtype]
    allowed += sorted((c for c in dtype_classes if c is not np.dtype), key=lambda c: c.__name__)
    return allowed


_GLOBAL_RE = re.compile(r"GLOBAL ([\w.]+)")


def read_checkpoint(path: str, map_location: str | torch.device) -> Any:
    """``torch.load(path, weights_only=True)``, with one :class:`CheckpointError` per kind of failure.

    Shared by :func:`load_training_state`, :func:`load_weights` and the stages that start from the
    previous stage's files (``Method.for_stage``'s ``read``): empty file,
    truncated or damaged file, and a file needing Python objects (refused, never
    run) each get one message naming ``path``.
    """
    if os.path.getsize(path) == 0:
        raise CheckpointError(
            f"Checkpoint {path} is empty (0 bytes): the write that made it was interrupted, e.g. by a kill "
            "or a full disk. Delete it and use another checkpoint (or rerun the training that writes it)."
        )
    try:
        with torch.serialization.safe_globals(_numpy_array_globals()):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        text = str(err)
        if "GLOBAL" in text or "Can only build" in text or "Can only create new object" in text:
            found = _GLOBAL_RE.search(text)
            needs = f" (it needs {found.group(1)})" if found else ""
            raise CheckpointError(
                f"Checkpoint {path} refused: it holds Python objects that could run code when loaded{needs}; "
                "only tensors and plain values are accepted (torch.load with weights_only=True). "
                "Use a file that holds a state_dict, e.g. re-save it with torch.save(model.state_dict(), ...) "
                "where you trust it."
            ) from None
        raise _damaged(path, err) from None
    except PermissionError as err:
        raise CheckpointError(f"Checkpoint {path} cannot be read ({err.strerror}): check its permissions.") from None
    except (OSError, RuntimeError, EOFError, KeyError, IndexError, ValueError, TypeError, AttributeError) as err:
        # a cut-short zip makes the reader seek before the start (EINVAL) or miss its central directory
        raise _damaged(path, err) from None


def _damaged(path: str, err: BaseException) -> CheckpointError:
    text = str(err).strip()
    first = text.splitlines()[0].split(". ")[0][:200] if text else ""  # torch's first sentence
    return CheckpointError(
        f"Checkpoint {path} is truncated or damaged: not a complete torch file "
        f"({type(err).__name__}{': ' + first if first else ''}). It was probably cut short by an interrupted "
        "write or copy: copy it again, or use another checkpoint."
    )


def save_checkpoint(obj: Any, path: str) -> None:
    """``torch.save(obj)`` to ``path`` atomically: a complete new file, or the previous one untouched.

    Writes ``path + ".tmp"`` in the same folder, flushes and fsyncs it, then
    renames it over ``path``.

    Raises:
        CheckpointError: the write failed (full disk, read-only folder, ...); the
            temporary file is removed and the previous ``path`` (if any) is kept.
    """
    path = os.fspath(path)
    tmp = path + ".tmp"
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        try:
            if os.path.lexists(tmp):
                os.remove(tmp)
        except OSError as cleanup:
            logger.warning("Could not remove the temporary file %s: %s", tmp, cleanup)
        if isinstance(err, (OSError, RuntimeError)):
            detail = " ".join(str(err).split())
            raise CheckpointError(
                f"Cannot write checkpoint {path}: is the disk full or the folder "
                f"{os.path.dirname(os.path.abspath(path))} read-only? The previous file at {path} (if any) "
                f"is kept unchanged. Error: {type(err).__name__}: {detail}"
            ) from err
        raise
    try:  # make the rename itself durable; not possible on every filesystem
        fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def load_training_state(path: str, required: Sequence[str]) -> dict:
    """Read a training checkpoint (``last.pth``) on the CPU, weights-only.

    Also reads files of older versions, which stored numpy's RNG state as an
    ndarray (only the numpy globals for a plain numeric array are allowed).

    Raises:
        FileNotFoundError: no file at ``path``.
        CheckpointError: empty, truncated or damaged file; a file needing other
            Python objects (refused, never run); not a dict holding ``required``.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No training checkpoint at {path}: check the path (run folder / --exp / --labelnum).")
    obj = read_checkpoint(path, "cpu")
    missing = [k for k in required if not isinstance(obj, Mapping) or k not in obj]
    if missing:
        held = (f"its keys are {', '.join(repr(k) for k in list(obj)[:20]) or '(none)'}" if isinstance(obj, Mapping)
                else f"it holds a {type(obj).__name__}, not a dict")
        raise CheckpointError(
            f"Checkpoint {path} is not a training checkpoint of this repository: missing keys "
            f"{', '.join(repr(k) for k in missing)} ({held}). Pass the last.pth written by this repository's "
            "training scripts."
        )
    return obj


#: Keys by which :func:`load_weights` recognises a training checkpoint (``last.pth``).
TRAINING_KEYS = ("model", "iter_num", "optimizer")
_MAX_NONFINITE = 5


def _training_weights(obj: Any, path: str) -> Any:
    """For a training ``last.pth``: its ``"model"`` weights, with a warning saying what they are."""
    if not (isinstance(obj, Mapping) and all(k in obj for k in TRAINING_KEYS)):
        return obj
    it = obj["iter_num"]
    config = obj.get("config")
    model = config.get("model") if isinstance(config, Mapping) and config.get("model") else "<model>"
    logger.warning(
        "%s is a training checkpoint at iteration %s: its weights (the iterate at iteration %s) are tested. "
        "The run's selected model is %s_best_model.pth and its final iterate %s_last_model.pth (--which last), "
        "in the same folder.", path, it, it, model, model)
    return obj["model"]


def check_finite(state: Mapping[str, torch.Tensor], path: str = "<checkpoint>") -> None:
    """Raise :class:`CheckpointError` if a floating-point tensor of ``state`` holds NaN or Inf."""
    bad = [k for k, v in state.items()
           if torch.is_tensor(v) and (v.is_floating_point() or v.is_complex()) and not bool(torch.isfinite(v).all())]
    if bad:
        shown = ", ".join(bad[:_MAX_NONFINITE]) + (f", ... ({len(bad)} in all)" if len(bad) > _MAX_NONFINITE else "")
        raise CheckpointError(
            f"Checkpoint {path} holds non-finite weights (NaN/Inf) in: {shown}. The run that wrote it diverged; "
            "use an earlier checkpoint (e.g. an iter_<N>_dice_<score>.pth of that run)."
        )


def _is_state_dict(obj: Mapping) -> bool:
    return len(obj) > 0 and all(isinstance(k, str) and torch.is_tensor(v) for k, v in obj.items())


def extract_state_dict(obj: Any, path: str = "<checkpoint>") -> dict[str, torch.Tensor]:
    """Return the weights held by a loaded checkpoint object.

    Accepts a bare ``state_dict`` or a dict holding one under one of
    :data:`CONTAINER_KEYS` (searched in that order, nested dicts included), and
    strips a ``module.`` (DataParallel) or ``_orig_mod.`` (torch.compile)
    prefix carried by every key.

    Raises:
        CheckpointError: nothing that looks like a state_dict was found.
    """
    if not isinstance(obj, Mapping):
        raise CheckpointError(
            f"Checkpoint {path} holds a {type(obj).__name__}, not a state_dict or a dict holding one."
        )
    if _is_state_dict(obj):
        state = dict(obj)
    else:
        state = None
        for key in CONTAINER_KEYS:
            inner = obj.get(key)
            if isinstance(inner, Mapping):
                try:
                    state = extract_state_dict(inner, path)
                except CheckpointError:
                    continue
                logger.info("Weights taken from key %r of %s", key, path)
                break
        if state is None:
            keys = ", ".join(repr(k) for k in list(obj.keys())[:20])
            raise CheckpointError(
                f"Checkpoint {path} is a dict without model weights: expected a bare state_dict "
                f"(names -> tensors) or one under {CONTAINER_KEYS}; its top-level keys are: {keys or '(none)'}."
            )
    for prefix in WRAPPER_PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
            logger.info("Stripped the %r prefix from the keys of %s", prefix, path)
    return state


def _listing(title: str, items: list[str]) -> str:
    shown = items[:_MAX_LISTED]
    more = f"\n    ... and {len(items) - len(shown)} more" if len(items) > len(shown) else ""
    return f"  {title} ({len(items)}):\n    " + "\n    ".join(shown) + more


def check_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor], path: str = "<checkpoint>") -> None:
    """Raise :class:`CheckpointError` unless ``state`` fits ``model`` exactly.

    The message lists the missing keys, the unexpected keys and the keys whose
    tensor shapes differ, with the file's path.
    """
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in expected
        if k in state and tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    if not (missing or unexpected or shapes):
        return
    parts = [f"Checkpoint {path} does not match the model ({type(model).__name__}):"]
    if missing:
        parts.append(_listing("missing keys (in the model, not in the file)", missing))
    if unexpected:
        parts.append(_listing("unexpected keys (in the file, not in the model)", unexpected))
    if shapes:
        parts.append(_listing("shape mismatches", shapes))
    parts.append(
        "Check --model and --num_classes against the run that wrote the file "
        "(LA: VNet, 2 classes; ACDC: unet, 4 classes)."
    )
    raise CheckpointError("\n".join(parts))


def require_checkpoint(path: str | os.PathLike) -> str:
    """Return ``path`` as a string if a file exists there, else raise.

    Raises:
        FileNotFoundError: names the path tried and where the released
            checkpoints go.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"No checkpoint at {os.path.abspath(path)} (tried this path). {RELEASED_HINT}"
        )
    return path


def read_weights(path: str) -> dict[str, torch.Tensor]:
    """The weights in the checkpoint file ``path`` (bare state_dict or a dict holding one), read
    weights-only on the CPU.

    Raises:
        FileNotFoundError: no file at ``path``.
        CheckpointError: an empty, truncated, refused or weightless file.
    """
    path = require_checkpoint(path)
    return extract_state_dict(read_checkpoint(path, "cpu"), path)


def load_weights(model: nn.Module, path: str, device: str | torch.device | None = None) -> nn.Module:
    """Load a checkpoint file into ``model`` (strict) and return the model.

    ``torch.load(path, weights_only=True, map_location=device)``: no code from
    the file is run, and CUDA-saved tensors land on ``device``.

    Args:
        model: the network to fill; it stays on its device.
        path: a ``.pth`` file holding a bare state_dict or a dict holding one.
        device: where to map the tensors while loading; default: the model's
            device.

    Returns:
        ``model``, with the weights loaded.

    Raises:
        FileNotFoundError: no file at ``path`` (the message says where the
            released checkpoints go).
        CheckpointError: empty, truncated or refused file, no weights inside,
            keys/shapes that do not match the model, or NaN/Inf weights.

    A training ``last.pth`` (keys ``model``, ``iter_num``, ``optimizer``) is
    accepted: its ``model`` weights are used, with a warning.
    """
    path = require_checkpoint(path)
    if device is None:
        param = next(iter(model.parameters()), None)
        device = param.device if param is not None else torch.device("cpu")
    obj = _training_weights(read_checkpoint(path, device), path)
    state = extract_state_dict(obj, path)
    check_state_dict(model, state, path)
    check_finite(state, path)
    model.load_state_dict(state, strict=True)
    logger.info("Loaded weights from %s", path)
    return model
