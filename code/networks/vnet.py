"""V-Net (Milletari et al. 2016) as used by SS-Net on LA, with SS-Net's heads.

Encoder stages of 1, 2, 3, 3, 3 conv3x3x3-BN-ReLU with 16..256 channels, joined
by 2x2x2 stride-2 convolutions; the decoder upsamples with 2x2x2 transposed
convolutions whose output is ADDED to the matching encoder stage, then 3, 3, 2,
1 convolutions and a 1x1x1 output conv. In ``mode="train"`` Dropout3d(0.5)
follows ``block_five`` and ``block_nine`` (released behaviour). Module names
follow the released checkpoints (``encoder.block_two.conv.3.weight`` ...).
"""
from __future__ import annotations

import torch
from torch import nn

from networks.heads import SSNetHeadsMixin
from networks.validation import check_input


class ConvBlock(nn.Module):
    """``n_stages`` x (Conv3d 3x3x3 - BatchNorm3d - ReLU); the sequential is named ``conv``."""

    def __init__(self, n_stages: int, in_channels: int, out_channels: int) -> None:
        super().__init__()
        ops: list[nn.Module] = []
        for i in range(n_stages):
            ops += [
                nn.Conv3d(in_channels if i == 0 else out_channels, out_channels, 3, padding=1),
                nn.BatchNorm3d(out_channels),
                nn.ReLU(inplace=True),
            ]
        self.conv = nn.Sequential(*ops)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class _Resample(nn.Module):
    """Stride-2 (transposed) convolution with kernel 2 - BatchNorm3d - ReLU."""

    def __init__(self, conv: nn.Module, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(conv, nn.BatchNorm3d(out_channels), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def _down(cin: int, cout: int) -> _Resample:
    return _Resample(nn.Conv3d(cin, cout, 2, stride=2, padding=0), cout)


def _up(cin: int, cout: int) -> _Resample:
    return _Resample(nn.ConvTranspose3d(cin, cout, 2, stride=2, padding=0), cout)


class Encoder(nn.Module):
    def __init__(self, in_channels: int, n_filters: int = 16, has_dropout: bool = False) -> None:
        super().__init__()
        f = n_filters
        self.has_dropout = has_dropout
        self.block_one = ConvBlock(1, in_channels, f)
        self.block_one_dw = _down(f, 2 * f)
        self.block_two = ConvBlock(2, 2 * f, 2 * f)
        self.block_two_dw = _down(2 * f, 4 * f)
        self.block_three = ConvBlock(3, 4 * f, 4 * f)
        self.block_three_dw = _down(4 * f, 8 * f)
        self.block_four = ConvBlock(3, 8 * f, 8 * f)
        self.block_four_dw = _down(8 * f, 16 * f)
        self.block_five = ConvBlock(3, 16 * f, 16 * f)
        self.dropout = nn.Dropout3d(p=0.5)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x1 = self.block_one(x)
        x2 = self.block_two(self.block_one_dw(x1))
        x3 = self.block_three(self.block_two_dw(x2))
        x4 = self.block_four(self.block_three_dw(x3))
        x5 = self.block_five(self.block_four_dw(x4))
        if self.has_dropout:
            x5 = self.dropout(x5)
        return [x1, x2, x3, x4, x5]


class Decoder(nn.Module):
    def __init__(self, num_classes: int, n_filters: int = 16, has_dropout: bool = False) -> None:
        super().__init__()
        f = n_filters
        self.has_dropout = has_dropout
        self.block_five_up = _up(16 * f, 8 * f)
        self.block_six = ConvBlock(3, 8 * f, 8 * f)
        self.block_six_up = _up(8 * f, 4 * f)
        self.block_seven = ConvBlock(3, 4 * f, 4 * f)
        self.block_seven_up = _up(4 * f, 2 * f)
        self.block_eight = ConvBlock(2, 2 * f, 2 * f)
        self.block_eight_up = _up(2 * f, f)
        self.block_nine = ConvBlock(1, f, f)
        self.out_conv = nn.Conv3d(f, num_classes, 1, padding=0)
        self.dropout = nn.Dropout3d(p=0.5)

    def forward(self, skips: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        x1, x2, x3, x4, x5 = skips
        x = self.block_six(self.block_five_up(x5) + x4)
        x = self.block_seven(self.block_six_up(x) + x3)
        x = self.block_eight(self.block_seven_up(x) + x2)
        x9 = self.block_nine(self.block_eight_up(x) + x1)
        if self.has_dropout:
            x9 = self.dropout(x9)
        return self.out_conv(x9), x9


class VNet(SSNetHeadsMixin, nn.Module):
    """3D V-Net with SS-Net's heads.

    Args:
        n_channels: input channels (1 for LA MRI).
        n_classes: output classes C (2 for LA).
        n_filters: channels of the first stage (16).
        has_dropout: Dropout3d(0.5) after ``block_five`` and ``block_nine``
            (``mode="train"`` of :func:`net_factory`).
        with_heads: add the projection/prediction/selector heads (SS-Net);
            ``False`` gives the plain backbone.

    ``forward(x)`` with x (B, n_channels, H, W, D), each side a multiple of 16,
    returns ``(logits (B, C, H, W, D), features (B, 16, H, W, D))``.
    """

    def __init__(self, n_channels: int = 1, n_classes: int = 2, n_filters: int = 16,
                 has_dropout: bool = False, with_heads: bool = True) -> None:
        super().__init__()
        if n_filters != 16 and with_heads:
            raise ValueError("SS-Net's heads take 16-channel features: use n_filters=16 or with_heads=False")
        self.in_channels = n_channels
        self.num_classes = n_classes
        self.encoder = Encoder(n_channels, n_filters, has_dropout)
        self.decoder = Decoder(n_classes, n_filters, has_dropout)
        if with_heads:
            self._add_ssnet_heads(n_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        check_input(x, "VNet", spatial_dims=3, in_channels=self.in_channels, multiple=16)
        return self.decoder(self.encoder(x))
