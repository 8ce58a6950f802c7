"""Speed options of a run (all off in the faithful defaults): ``--tf32 1`` (TensorFloat-32
convolutions and matrix products on Ampere and later GPUs), ``--amp bf16`` (bfloat16 autocast
around the method's forward passes and losses; the losses are float32, no GradScaler),
``--channels_last`` (NHWC / NDHWC memory format of the model and the inputs; ``auto`` = on for
CUDA with ``--deterministic 0``), ``--compile`` (``torch.compile`` of the network)."""
from __future__ import annotations
import logging
import os
import shutil
import sys
from dataclasses import dataclass

import torch
from torch import nn

from engine.inference import check_amp

logger = logging.getLogger(__name__)


def resolve_channels_last(mode: str, device: torch.device, deterministic: bool) -> bool:
    """``--channels_last``: ``on`` / ``off``, or ``auto`` = on only for CUDA with ``--deterministic 0``."""
    if mode not in ("auto", "on", "off"):
        raise ValueError(f"--channels_last must be auto, on or off, got {mode!r}")
    if mode == "auto":
        return torch.device(device).type == "cuda" and not deterministic
    return mode == "on"


def to_channels_last(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> ``torch.channels_last``; (B, C, H, W, D) -> ``torch.channels_last_3d``;
    other ranks unchanged. Same values and shape, only the memory layout changes."""
    if x.dim() == 4:
        return x.contiguous(memory_format=torch.channels_last)
    if x.dim() == 5:
        return x.contiguous(memory_format=torch.channels_last_3d)
    return x


def model_to_channels_last(model: nn.Module) -> nn.Module:
    """Convert, in place, every 4-D / 5-D parameter and buffer (the convolution
    weights) to the channels-last layout of its rank; returns ``model``.
    (``Module.to(memory_format=...)`` takes one format and fails on a mix of 4-D and 5-D weights.)"""
    with torch.no_grad():
        for tensor in list(model.parameters()) + list(model.buffers()):
            if tensor.dim() in (4, 5):
                tensor.data = to_channels_last(tensor.data)
    return model


def check_compile(device: torch.device) -> None:
    """Fail early, with what to do, where ``torch.compile`` cannot work.

    Raises:
        RuntimeError: torch without ``torch.compile``, a Python version dynamo does
            not support, CUDA without Triton, or CPU without a C++ compiler.
    """
    if not hasattr(torch, "compile") or not hasattr(nn.Module, "compile"):
        raise RuntimeError(f"--compile needs PyTorch >= 2.2 (this is {torch.__version__}); drop --compile")
    from torch import _dynamo  # only when compiling
    if not _dynamo.is_dynamo_supported():
        raise RuntimeError(f"--compile: torch.compile does not support this Python "
                           f"({sys.version.split()[0]}) with torch {torch.__version__}; drop --compile")
    if torch.device(device).type == "cuda":
        from torch.utils._triton import has_triton
        if not has_triton():
            raise RuntimeError("--compile on CUDA needs Triton (pip install triton, matching your torch); "
                               "or drop --compile")
    else:
        compilers = [os.environ.get("CXX"), "g++", "c++", "clang++"]
        if not any(c and shutil.which(c) for c in compilers):
            raise RuntimeError("--compile on the CPU needs a C++ compiler (g++, c++ or clang++ on PATH, or $CXX); "
                               "install one or drop --compile")


def set_tf32(enabled: bool) -> dict:
    """``--tf32``: let CUDA convolutions (cuDNN) and matrix products use TensorFloat-32 (Ampere and
    later: 10-bit mantissa inputs, float32 accumulation) or keep them in IEEE float32.

    PyTorch's own default lets cuDNN convolutions use TF32, so without this an A100/H100/H200 run is
    not fp32; the published numbers came from a V100, which has no TF32. ``enabled=False`` (the
    faithful default) asks for IEEE fp32 everywhere. No effect on the CPU or on GPUs before Ampere.
    Returns the settings now in force (for the log and the run summary).
    """
    precision = "tf32" if enabled else "ieee"
    cudnn_conv = getattr(torch.backends.cudnn, "conv", None)
    if cudnn_conv is not None and hasattr(cudnn_conv, "fp32_precision"):  # torch >= 2.9
        cudnn_conv.fp32_precision = precision
        torch.backends.cudnn.rnn.fp32_precision = precision
        torch.backends.cuda.matmul.fp32_precision = precision
        return {"tf32": bool(enabled), "cudnn_conv": cudnn_conv.fp32_precision,
                "cuda_matmul": torch.backends.cuda.matmul.fp32_precision}
    torch.backends.cudnn.allow_tf32 = bool(enabled)
    torch.backends.cuda.matmul.allow_tf32 = bool(enabled)
    return {"tf32": bool(enabled), "cudnn_conv": "tf32" if torch.backends.cudnn.allow_tf32 else "ieee",
            "cuda_matmul": "tf32" if torch.backends.cuda.matmul.allow_tf32 else "ieee"}


@dataclass
class SpeedOptions:
    """The resolved speed flags of a run (see :func:`setup_speed`)."""

    amp: str = "none"
    channels_last: bool = False
    compiled: bool = False
    tf32: bool = False


def setup_speed(model: nn.Module, device: torch.device, amp: str = "none", deterministic: bool = True,
                channels_last: str = "off", compile: bool = False, tf32: bool = False) -> SpeedOptions:
    """Apply ``--amp`` / ``--channels_last`` / ``--compile`` / ``--tf32`` to ``model`` (in place)
    before the optimiser is built; returns what is in effect for :func:`train_step`.

    ``--compile`` uses ``model.compile()``, which compiles the module in place, so
    ``state_dict`` keys (checkpoints) stay those of the plain network.

    Same math, not the same random draws: with channels-last the dropout masks
    are drawn in memory order, and compiled code draws them with its own
    generator, so those runs are not bit-identical to the faithful fp32 run
    (equally random; losses agree to float rounding when dropout is off).

    Args:
        channels_last: ``"auto"`` (on only on CUDA without determinism), ``"on"`` or ``"off"``.

    Raises:
        ValueError: a bad ``--amp`` value. RuntimeError: ``--compile`` where it cannot work.
    """
    device = torch.device(device)
    check_amp(amp, device)
    in_effect = resolve_channels_last(channels_last, device, deterministic)
    if in_effect:
        model_to_channels_last(model)
    if compile:
        check_compile(device)
        model.compile()
    set_tf32(tf32)
    options = SpeedOptions(amp=amp, channels_last=in_effect, compiled=bool(compile), tf32=bool(tf32))
    if options != SpeedOptions():
        logger.info("speed options: amp %s, channels_last %s, compile %s, tf32 %s", amp, in_effect, compile, tf32)
    return options
