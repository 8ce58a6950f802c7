"""Networks of URPC (Luo et al., MICCAI 2021, uncertainty rectified pyramid consistency).

* :class:`UNet3DDeepSup` (LA): the 3D U-Net with deep supervision of SSL4MIS
  (``unet_3D_dv_semi``, feature_scale 4 -> channels 16, 32, 64, 128, 256).
  Each level is 2 x (conv 3x3x3 - InstanceNorm3d (no affine parameters) -
  ReLU); MaxPool3d(2) between levels; each up stage upsamples the deeper map
  trilinearly x2 (align_corners=False), concatenates [skip, upsampled] and
  applies the two-conv block; Dropout3d p = 0.5, 0.3, 0.2, 0.1 after the up
  stages (deep to shallow). Deep supervision: 1x1x1 heads on the four up
  stages, upsampled trilinearly x8, x4, x2 to the input size. Output order
  ``(dsv1, dsv2, dsv3, dsv4)`` (dsv1 = full resolution, the tested output).
  Convolution weights: Kaiming normal (fan_in), as released. No LA code exists
  for URPC; SS-Net's Table 1 row (5.88 M / 69.43 G) is this network with
  C = 2 at 112x112x80 (README "Baselines").
* :class:`UNetURPC` (ACDC): the 2D U-Net of :mod:`networks.unet` with extra
  3x3 heads after ``up1`` (128 ch), ``up2`` (64 ch), ``up3`` (32 ch), resized
  to the input size with nearest interpolation; in training mode each aux
  head sees a perturbed feature map: element-wise dropout p = 0.5 (``up1``),
  :func:`feature_dropout` (``up2``), :class:`FeatureNoise` (``up3``). Output
  order ``(main, aux1, aux2, aux3)``. ``out_conv_dp4`` (256 -> C) exists in
  the public model but is never used; it is kept so the parameter count
  (1.83 M) and the state_dict match.
"""
from __future__ import annotations
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from networks import unet as unet2d
from networks.validation import check_input

FILTERS_3D = (16, 32, 64, 128, 256)
UP_DROPOUT_3D = (0.5, 0.3, 0.2, 0.1)


# ----------------------------------------------------------------------------- 3D


class UnetConv3(nn.Module):
    """2 x (Conv3d 3x3x3 - InstanceNorm3d - ReLU), as ``conv1`` and ``conv2``."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv3d(in_channels, out_channels, 3, 1, 1),
                                   nn.InstanceNorm3d(out_channels), nn.ReLU(inplace=True))
        self.conv2 = nn.Sequential(nn.Conv3d(out_channels, out_channels, 3, 1, 1),
                                   nn.InstanceNorm3d(out_channels), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x))


class UnetUp3(nn.Module):
    """Trilinear x2 of the deeper map, concatenation [skip, up], :class:`UnetConv3`."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = UnetConv3(in_channels + out_channels, out_channels)
        self.up = nn.Upsample(scale_factor=2, mode="trilinear", align_corners=False)

    def forward(self, skip: torch.Tensor, deep: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([skip, self.up(deep)], dim=1))


class UnetDsv3(nn.Module):
    """Deep-supervision head: 1x1x1 conv to C classes, trilinear upsampling by ``scale_factor``."""

    def __init__(self, in_channels: int, num_classes: int, scale_factor: int) -> None:
        super().__init__()
        self.dsv = nn.Sequential(nn.Conv3d(in_channels, num_classes, kernel_size=1),
                                 nn.Upsample(scale_factor=scale_factor, mode="trilinear", align_corners=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dsv(x)


class UNet3DDeepSup(nn.Module):
    """3D U-Net with deep supervision (URPC on LA).

    Args:
        in_channels: input channels (1).
        n_classes: output classes C (2 on LA).
        filters: channels per level (16, 32, 64, 128, 256).

    ``forward(x)`` with x (B, in_channels, H, W, D), sides multiples of 16,
    returns four logits maps (B, C, H, W, D): ``(dsv1, dsv2, dsv3, dsv4)``.
    """

    def __init__(self, in_channels: int = 1, n_classes: int = 2, filters: Sequence[int] = FILTERS_3D) -> None:
        super().__init__()
        f = list(filters)
        self.in_channels = in_channels
        self.num_classes = n_classes
        self.conv1 = UnetConv3(in_channels, f[0])
        self.maxpool1 = nn.MaxPool3d(2)
        self.conv2 = UnetConv3(f[0], f[1])
        self.maxpool2 = nn.MaxPool3d(2)
        self.conv3 = UnetConv3(f[1], f[2])
        self.maxpool3 = nn.MaxPool3d(2)
        self.conv4 = UnetConv3(f[2], f[3])
        self.maxpool4 = nn.MaxPool3d(2)
        self.center = UnetConv3(f[3], f[4])
        self.up_concat4 = UnetUp3(f[4], f[3])
        self.up_concat3 = UnetUp3(f[3], f[2])
        self.up_concat2 = UnetUp3(f[2], f[1])
        self.up_concat1 = UnetUp3(f[1], f[0])
        self.dsv4 = UnetDsv3(f[3], n_classes, 8)
        self.dsv3 = UnetDsv3(f[2], n_classes, 4)
        self.dsv2 = UnetDsv3(f[1], n_classes, 2)
        self.dsv1 = nn.Conv3d(f[0], n_classes, kernel_size=1)
        self.dropout1 = nn.Dropout3d(p=UP_DROPOUT_3D[0])
        self.dropout2 = nn.Dropout3d(p=UP_DROPOUT_3D[1])
        self.dropout3 = nn.Dropout3d(p=UP_DROPOUT_3D[2])
        self.dropout4 = nn.Dropout3d(p=UP_DROPOUT_3D[3])
        for m in self.modules():  # released initialisation (weights only; biases keep PyTorch's default)
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, a=0, mode="fan_in")

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        check_input(x, "UNet3DDeepSup", spatial_dims=3, in_channels=self.in_channels, multiple=16)
        conv1 = self.conv1(x)
        conv2 = self.conv2(self.maxpool1(conv1))
        conv3 = self.conv3(self.maxpool2(conv2))
        conv4 = self.conv4(self.maxpool3(conv3))
        center = self.center(self.maxpool4(conv4))
        up4 = self.dropout1(self.up_concat4(conv4, center))
        up3 = self.dropout2(self.up_concat3(conv3, up4))
        up2 = self.dropout3(self.up_concat2(conv2, up3))
        up1 = self.dropout4(self.up_concat1(conv1, up2))
        return self.dsv1(up1), self.dsv2(up2), self.dsv3(up3), self.dsv4(up4)


# ----------------------------------------------------------------------------- 2D


def feature_dropout(x: torch.Tensor) -> torch.Tensor:
    """URPC's attention-based feature dropout on (B, C, H, W).

    ``a = mean_c x`` (B, 1, H, W); every position with ``a >= max(a) * u`` is
    zeroed, ``max`` per sample, ``u ~ U(0.7, 0.9)`` one scalar per call (drawn
    from numpy's global generator, as released).
    """
    attention = torch.mean(x, dim=1, keepdim=True)
    max_val = attention.reshape(x.shape[0], -1).max(dim=1, keepdim=True)[0]
    threshold = (max_val * float(np.random.uniform(0.7, 0.9))).view(x.shape[0], 1, 1, 1)
    return x * (attention < threshold).to(x.dtype)


class FeatureNoise(nn.Module):
    """URPC's multiplicative feature noise: ``x + x * n``, ``n ~ U(-r, r)`` of shape
    (C, H, W) shared by the batch (r = 0.3). Drawn on ``x``'s device (the public
    code draws on the CPU and copies)."""

    def __init__(self, uniform_range: float = 0.3) -> None:
        super().__init__()
        if uniform_range < 0:
            raise ValueError(f"FeatureNoise: uniform_range must be >= 0, got {uniform_range}")
        self.uniform_range = uniform_range

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.uniform_range
        noise = (torch.rand(x.shape[1:], device=x.device, dtype=x.dtype) * 2 - 1) * r
        return x + x * noise.unsqueeze(0)


class URPCDecoder(unet2d.Decoder):
    """The U-Net decoder with URPC's three auxiliary heads (and the unused ``out_conv_dp4``)."""

    def __init__(self, num_classes: int) -> None:
        super().__init__(num_classes)
        c = unet2d.FEATURE_CHANNELS
        self.out_conv_dp4 = nn.Conv2d(c[4], num_classes, kernel_size=3, padding=1)  # unused, as released
        self.out_conv_dp3 = nn.Conv2d(c[3], num_classes, kernel_size=3, padding=1)
        self.out_conv_dp2 = nn.Conv2d(c[2], num_classes, kernel_size=3, padding=1)
        self.out_conv_dp1 = nn.Conv2d(c[1], num_classes, kernel_size=3, padding=1)
        self.feature_noise = FeatureNoise()

    def forward_pyramid(self, skips: list[torch.Tensor], shape: Sequence[int]) -> tuple[torch.Tensor, ...]:
        x0, x1, x2, x3, x4 = skips
        x = self.up1(x4, x3)
        dp3 = self.out_conv_dp3(F.dropout(x, p=0.5) if self.training else x)
        x = self.up2(x, x2)
        dp2 = self.out_conv_dp2(feature_dropout(x) if self.training else x)
        x = self.up3(x, x1)
        dp1 = self.out_conv_dp1(self.feature_noise(x) if self.training else x)
        x = self.up4(x, x0)
        dp0 = self.out_conv(x)
        size = tuple(int(s) for s in shape)
        return (dp0, F.interpolate(dp1, size), F.interpolate(dp2, size), F.interpolate(dp3, size))


class UNetURPC(nn.Module):
    """2D U-Net with URPC's pyramid of perturbed auxiliary heads (ACDC).

    Args:
        in_chns: input channels (1).
        class_num: output classes C (4).

    ``forward(x)`` with x (B, in_chns, H, W), sides multiples of 16, returns
    four logits maps (B, C, H, W): ``(main, aux1, aux2, aux3)``.
    """

    def __init__(self, in_chns: int = 1, class_num: int = 4) -> None:
        super().__init__()
        self.in_channels = in_chns
        self.num_classes = class_num
        self.encoder = unet2d.Encoder(in_chns)
        self.decoder = URPCDecoder(class_num)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        check_input(x, "UNetURPC", spatial_dims=2, in_channels=self.in_channels, multiple=16)
        return self.decoder.forward_pyramid(self.encoder(x), x.shape[2:])
