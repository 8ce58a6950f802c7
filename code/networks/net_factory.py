"""``net_factory``: build a network by the reference's names, on a device."""
from __future__ import annotations
from typing import Callable

import torch
from torch import nn

from networks.mcnet import MCNet2d, MCNet3d
from networks.unet import UNet
from networks.unet_sdf import UNetSDF
from networks.urpc import UNet3DDeepSup, UNetURPC
from networks.vnet import VNet
from networks.vnet_sdf import VNetSDF

_ALIASES = {"vnet": "VNet", "v-net": "VNet", "unet": "unet", "u-net": "unet"}

#: The baselines' networks (names of their public code, lower case) -> builder(in_chns, class_num, dropout).
#: They carry no SS-Net heads (``with_heads`` does not apply to them).
BASELINE_NETWORKS: dict[str, Callable[[int, int, bool], nn.Module]] = {
    "vnet_sdf": lambda i, c, d: VNetSDF(n_channels=i, n_classes=c, has_dropout=d),        # SASSNet / DTC, LA
    "unet_sdf": lambda i, c, d: UNetSDF(in_chns=i, class_num=c),                          # SASSNet / DTC, ACDC
    "mcnet3d_v1": lambda i, c, d: MCNet3d(n_channels=i, n_classes=c, has_dropout=d),      # MC-Net, LA
    "mcnet2d_v1": lambda i, c, d: MCNet2d(in_chns=i, class_num=c),                        # MC-Net, ACDC
    "unet_3d_dv_semi": lambda i, c, d: UNet3DDeepSup(in_channels=i, n_classes=c),         # URPC, LA
    "unet_urpc": lambda i, c, d: UNetURPC(in_chns=i, class_num=c),                        # URPC, ACDC
}


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``None``/``"auto"``: CUDA when available, else CPU. A CUDA device on a
    machine without one raises with what to do instead."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(
                f"device '{device}' was asked for but this machine has no usable CUDA GPU "
                f"(torch {torch.__version__}, CUDA build: {torch.version.cuda}); "
                "pass --device cpu (slow but exact) or install a CUDA build of PyTorch"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise RuntimeError(
                f"device '{device}' does not exist: {torch.cuda.device_count()} CUDA device(s) visible"
            )
    return dev


def net_factory(net_type: str = "unet", in_chns: int = 1, class_num: int = 4, mode: str = "train",
                device: str | torch.device | None = None, with_heads: bool = True) -> nn.Module:
    """Build ``"VNet"`` (3D, LA) or ``"unet"`` (2D, ACDC) with SS-Net's heads, or a baseline's network.

    Args:
        net_type: ``"VNet"`` or ``"unet"`` (case-insensitive; ``"V-Net"``/``"U-Net"`` accepted), or
            one of :data:`BASELINE_NETWORKS`: ``vnet_sdf``/``unet_sdf`` (SASSNet, DTC),
            ``mcnet3d_v1``/``mcnet2d_v1`` (MC-Net), ``unet_3D_dv_semi``/``unet_urpc`` (URPC).
        in_chns: input channels.
        class_num: output classes.
        mode: ``"train"`` (V-Net with Dropout3d) or ``"test"`` (without); the
            checkpoint is the same either way. For the baselines it applies to
            the V-Net-based ``vnet_sdf`` and ``mcnet3d_v1``; the 2D networks and
            ``unet_3D_dv_semi`` drop out in ``model.train()`` whatever the mode.
        device: ``None``/``"auto"`` picks CUDA when available, else CPU.
        with_heads: ``False`` builds the backbone alone (no SS-Net heads); only
            for ``VNet``/``unet`` (the baselines' networks have no such heads).
    """
    key = str(net_type).lower()
    name = _ALIASES.get(key)
    if name is None and key not in BASELINE_NETWORKS:
        raise ValueError(f"unknown net_type '{net_type}': use 'VNet' (3D, LA) or 'unet' (2D, ACDC), "
                         f"or a baseline network: {', '.join(sorted(BASELINE_NETWORKS))}")
    if mode not in ("train", "test"):
        raise ValueError(f"mode must be 'train' or 'test', got '{mode}'")
    if name is None:
        return BASELINE_NETWORKS[key](in_chns, class_num, mode == "train").to(resolve_device(device))
    if name == "VNet":
        net: nn.Module = VNet(n_channels=in_chns, n_classes=class_num, has_dropout=(mode == "train"),
                              with_heads=with_heads)
    else:
        net = UNet(in_chns=in_chns, class_num=class_num, with_heads=with_heads)
    return net.to(resolve_device(device))


#: module types whose CUDA kernels (forward or backward) have no deterministic implementation, so
#: ``torch.use_deterministic_algorithms(True)`` stops a training step that uses them (PyTorch's
#: list; the interpolating ``nn.Upsample`` modes are checked separately)
_CUDA_NONDETERMINISTIC_MODULES = {
    nn.MaxPool3d: "max_pool3d_with_indices_backward (nn.MaxPool3d)",
    nn.AvgPool3d: "avg_pool3d_backward (nn.AvgPool3d)",
    nn.AdaptiveAvgPool2d: "adaptive_avg_pool2d_backward (nn.AdaptiveAvgPool2d)",
    nn.AdaptiveAvgPool3d: "adaptive_avg_pool3d_backward (nn.AdaptiveAvgPool3d)",
    nn.AdaptiveMaxPool2d: "adaptive_max_pool2d_backward (nn.AdaptiveMaxPool2d)",
    nn.FractionalMaxPool2d: "fractional_max_pool2d_backward (nn.FractionalMaxPool2d)",
    nn.FractionalMaxPool3d: "fractional_max_pool3d_backward (nn.FractionalMaxPool3d)",
    nn.ReflectionPad3d: "reflection_pad3d_backward (nn.ReflectionPad3d)",
    nn.EmbeddingBag: "embedding_bag (nn.EmbeddingBag)",
}
_INTERPOLATING = {"linear": "upsample_linear1d", "bilinear": "upsample_bilinear2d",
                  "bicubic": "upsample_bicubic2d", "trilinear": "upsample_trilinear3d"}


def cuda_nondeterministic_ops(model: nn.Module) -> list:
    """The operations of ``model``'s modules that have no deterministic CUDA kernel in training
    (one entry per kind, e.g. ``"upsample_bilinear2d_backward (nn.Upsample, bilinear)"``); empty
    when every module is fine. Functional calls inside ``forward`` are not seen."""
    found = []
    for module in model.modules():
        if isinstance(module, nn.Upsample) and module.mode in _INTERPOLATING:
            found.append(f"{_INTERPOLATING[module.mode]}_backward (nn.Upsample, {module.mode})")
        for kind, op in _CUDA_NONDETERMINISTIC_MODULES.items():
            if isinstance(module, kind):
                found.append(op)
    return sorted(set(found))
