"""``net_factory``: build a network by the reference's names, on a device."""
from typing import Optional, Union

import torch
from torch import nn

from networks.unet import UNet
from networks.vnet import VNet

_ALIASES = {"vnet": "VNet", "v-net": "VNet", "unet": "unet", "u-net": "unet"}


def resolve_device(device: Optional[Union[str, torch.device]] = None) -> torch.device:
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
                device: Optional[Union[str, torch.device]] = None, with_heads: bool = True) -> nn.Module:
    """Build ``"VNet"`` (3D, LA) or ``"unet"`` (2D, ACDC) with SS-Net's heads.

    Args:
        net_type: ``"VNet"`` or ``"unet"`` (case-insensitive; ``"V-Net"``/``"U-Net"`` accepted).
        in_chns: input channels.
        class_num: output classes.
        mode: ``"train"`` (V-Net with Dropout3d) or ``"test"`` (without); the
            checkpoint is the same either way.
        device: ``None``/``"auto"`` picks CUDA when available, else CPU.
        with_heads: ``False`` builds the backbone alone (no SS-Net heads).
    """
    name = _ALIASES.get(str(net_type).lower())
    if name is None:
        raise ValueError(f"unknown net_type '{net_type}': use 'VNet' (3D, LA) or 'unet' (2D, ACDC)")
    if mode not in ("train", "test"):
        raise ValueError(f"mode must be 'train' or 'test', got '{mode}'")
    if name == "VNet":
        net: nn.Module = VNet(n_channels=in_chns, n_classes=class_num, has_dropout=(mode == "train"),
                              with_heads=with_heads)
    else:
        net = UNet(in_chns=in_chns, class_num=class_num, with_heads=with_heads)
    return net.to(resolve_device(device))
