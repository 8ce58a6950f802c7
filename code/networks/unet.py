"""2D U-Net (PyMIC style) as used by SS-Net on ACDC, with SS-Net's heads.

Channels 16, 32, 64, 128, 256. ConvBlock = conv3x3-BN-LeakyReLU-Dropout-conv3x3-BN-LeakyReLU
(``conv_conv``); encoder dropout 0.05, 0.1, 0.2, 0.3, 0.5 per level, decoder 0.
Each up block: 1x1 conv to the skip's channels, bilinear x2 (align_corners=True),
concatenation [skip, upsampled], ConvBlock. ``out_conv`` is a 3x3 conv.
Module names follow the released checkpoints.
"""
from __future__ import annotations
from collections.abc import Sequence

import torch
from torch import nn

from networks.heads import SSNetHeadsMixin
from networks.validation import check_input

FEATURE_CHANNELS = (16, 32, 64, 128, 256)
ENCODER_DROPOUT = (0.05, 0.1, 0.2, 0.3, 0.5)


class ConvBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, dropout_p: float) -> None:
        super().__init__()
        self.conv_conv = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1),
            nn.BatchNorm2d(out_channels),
            nn.LeakyReLU(),
            nn.Dropout(dropout_p),
            nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1),
            nn.BatchNorm2d(out_channels),
            nn.LeakyReLU(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_conv(x)


class DownBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, dropout_p: float) -> None:
        super().__init__()
        self.maxpool_conv = nn.Sequential(nn.MaxPool2d(2), ConvBlock(in_channels, out_channels, dropout_p))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.maxpool_conv(x)


class UpBlock(nn.Module):
    def __init__(self, in_channels: int, skip_channels: int, out_channels: int, dropout_p: float = 0.0) -> None:
        super().__init__()
        self.conv1x1 = nn.Conv2d(in_channels, skip_channels, kernel_size=1)
        self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)
        self.conv = ConvBlock(2 * skip_channels, out_channels, dropout_p)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([skip, self.up(self.conv1x1(x))], dim=1))


class Encoder(nn.Module):
    def __init__(self, in_channels: int, chns: Sequence[int] = FEATURE_CHANNELS,
                 dropout: Sequence[float] = ENCODER_DROPOUT) -> None:
        super().__init__()
        self.in_conv = ConvBlock(in_channels, chns[0], dropout[0])
        self.down1 = DownBlock(chns[0], chns[1], dropout[1])
        self.down2 = DownBlock(chns[1], chns[2], dropout[2])
        self.down3 = DownBlock(chns[2], chns[3], dropout[3])
        self.down4 = DownBlock(chns[3], chns[4], dropout[4])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x0 = self.in_conv(x)
        x1 = self.down1(x0)
        x2 = self.down2(x1)
        x3 = self.down3(x2)
        return [x0, x1, x2, x3, self.down4(x3)]


class Decoder(nn.Module):
    def __init__(self, num_classes: int, chns: Sequence[int] = FEATURE_CHANNELS) -> None:
        super().__init__()
        self.up1 = UpBlock(chns[4], chns[3], chns[3])
        self.up2 = UpBlock(chns[3], chns[2], chns[2])
        self.up3 = UpBlock(chns[2], chns[1], chns[1])
        self.up4 = UpBlock(chns[1], chns[0], chns[0])
        self.out_conv = nn.Conv2d(chns[0], num_classes, kernel_size=3, padding=1)

    def forward(self, skips: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        x0, x1, x2, x3, x4 = skips
        x = self.up3(self.up2(self.up1(x4, x3), x2), x1)
        x_last = self.up4(x, x0)
        return self.out_conv(x_last), x_last


class UNet(SSNetHeadsMixin, nn.Module):
    """2D U-Net with SS-Net's heads.

    Args:
        in_chns: input channels (1 for ACDC MRI).
        class_num: output classes C (4 for ACDC).
        with_heads: add the projection/prediction/selector heads (SS-Net);
            ``False`` gives the plain backbone.

    ``forward(x)`` with x (B, in_chns, H, W), each side a multiple of 16,
    returns ``(logits (B, C, H, W), features (B, 16, H, W))``. Dropout is active
    in ``model.train()`` only (as in the released code, ``mode`` does not change
    the U-Net).
    """

    def __init__(self, in_chns: int = 1, class_num: int = 4, with_heads: bool = True) -> None:
        super().__init__()
        self.in_channels = in_chns
        self.num_classes = class_num
        self.encoder = Encoder(in_chns)
        self.decoder = Decoder(class_num)
        if with_heads:
            self._add_ssnet_heads(class_num)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        check_input(x, "UNet", spatial_dims=2, in_channels=self.in_channels, multiple=16)
        return self.decoder(self.encoder(x))
