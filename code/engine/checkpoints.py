"""Loading model weights from checkpoint files, including untrusted ones.

The released SS-Net checkpoints (``VNet_best_model.pth``, ``unet_best_model.pth``)
are bare ``state_dict``s. Files from elsewhere are loaded with
``torch.load(..., weights_only=True)`` so that they cannot run code, and with
``map_location`` set to the chosen device so that a file saved on a GPU loads on
a CPU-only machine.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

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
        CheckpointError: unreadable file, no weights inside, or keys/shapes that
            do not match the model.
    """
    path = require_checkpoint(path)
    if device is None:
        param = next(iter(model.parameters()), None)
        device = param.device if param is not None else torch.device("cpu")
    try:
        obj = torch.load(path, map_location=device, weights_only=True)
    except Exception as err:  # unpickling errors, truncated files, non-tensor objects
        raise CheckpointError(
            f"Cannot read checkpoint {path} with torch.load(weights_only=True): {err}. "
            "The file must hold tensors (a state_dict or a dict of them); files that need "
            "arbitrary Python objects are refused because they could run code."
        ) from err
    state = extract_state_dict(obj, path)
    check_state_dict(model, state, path)
    model.load_state_dict(state, strict=True)
    logger.info("Loaded weights from %s", path)
    return model
