"""MC-Net (Wu et al., MICCAI 2021): one encoder, two decoders that differ in upsampling.

The ``_v1`` (two-decoder) models of the public MC-Net code, used in SS-Net's
Tables 1 and 2:

* :class:`MCNet3d` (LA): the V-Net encoder of :mod:`networks.vnet` (Dropout3d
  on ``x5`` drawn once, shared by both decoders) and two V-Net decoders, each
  with its own Dropout3d on ``x9`` and its own 1x1x1 head (C = 2):
  ``decoder1`` upsamples with 2x2x2 transposed convolutions (the plain V-Net),
  ``decoder2`` with trilinear x2 (align_corners=True) + 3x3x3 conv + BN + ReLU.
* :class:`MCNet2d` (ACDC): the U-Net encoder of :mod:`networks.unet` and two
  decoders: ``decoder1`` = the plain U-Net decoder (1x1 conv + bilinear x2),
  ``decoder2`` = 2x2 stride-2 transposed convolutions in every up block. (The
  upsampling assignment is mirrored relative to 3D, as in the public code.)

``forward`` returns ``(logits_decoder1, logits_decoder2)``; MC-Net is tested on
decoder 1 only, which is the first output. Module names follow the public
checkpoints (``decoder1.block_five_up.conv.0.weight``,
``decoder2.block_five_up.conv.1.weight``, ``decoder2.up1.up.weight`` ...).
"""
from __future__ import annotations

import torch
from torch import nn

from networks import unet as unet2d
from networks import vnet as vnet3d
from networks.validation import check_input


class _TrilinearUp(nn.Module):
    """Trilinear x2 (align_corners=True) - Conv3d 3x3x3 - BN - ReLU (sequential ``conv``)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Upsample(scale_factor=2, mode="trilinear", align_corners=True),
            nn.Conv3d(in_channels, out_channels, kernel_size=3, padding=1),
            nn.BatchNorm3d(out_channels),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class TrilinearDecoder(vnet3d.Decoder):
    """V-Net decoder whose four upsampling blocks are trilinear x2 + 3x3x3 conv + BN + ReLU."""

    def __init__(self, num_classes: int, n_filters: int = 16, has_dropout: bool = False) -> None:
        super().__init__(num_classes, n_filters, has_dropout)
        f = n_filters
        self.block_five_up = _TrilinearUp(16 * f, 8 * f)
        self.block_six_up = _TrilinearUp(8 * f, 4 * f)
        self.block_seven_up = _TrilinearUp(4 * f, 2 * f)
        self.block_eight_up = _TrilinearUp(2 * f, f)


class DeconvUpBlock(nn.Module):
    """U-Net up block with a 2x2 stride-2 transposed convolution instead of 1x1 conv + bilinear."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int, dropout_p: float = 0.0) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(in_channels, skip_channels, kernel_size=2, stride=2)
        self.conv = unet2d.ConvBlock(2 * skip_channels, out_channels, dropout_p)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([skip, self.up(x)], dim=1))


class DeconvDecoder(unet2d.Decoder):
    """U-Net decoder whose up blocks upsample with transposed convolutions."""

    def __init__(self, num_classes: int) -> None:
        super().__init__(num_classes)
        c = unet2d.FEATURE_CHANNELS
        self.up1 = DeconvUpBlock(c[4], c[3], c[3])
        self.up2 = DeconvUpBlock(c[3], c[2], c[2])
        self.up3 = DeconvUpBlock(c[2], c[1], c[1])
        self.up4 = DeconvUpBlock(c[1], c[0], c[0])


class MCNet3d(nn.Module):
    """MC-Net v1 for 3D volumes (LA).

    Args:
        n_channels: input channels (1).
        n_classes: output classes C (2).
        n_filters: channels of the first stage (16).
        has_dropout: Dropout3d(0.5) on the bottleneck (shared) and on each
            decoder's last feature map (training).

    ``forward(x)`` with x (B, n_channels, H, W, D), sides multiples of 16,
    returns ``(logits1, logits2)``, each (B, C, H, W, D).
    """

    def __init__(self, n_channels: int = 1, n_classes: int = 2, n_filters: int = 16,
                 has_dropout: bool = False) -> None:
        super().__init__()
        self.in_channels = n_channels
        self.num_classes = n_classes
        self.encoder = vnet3d.Encoder(n_channels, n_filters, has_dropout)
        self.decoder1 = vnet3d.Decoder(n_classes, n_filters, has_dropout)
        self.decoder2 = TrilinearDecoder(n_classes, n_filters, has_dropout)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        check_input(x, "MCNet3d", spatial_dims=3, in_channels=self.in_channels, multiple=16)
        features: list[torch.Tensor] = self.encoder(x)
        return self.decoder1(features)[0], self.decoder2(features)[0]


class MCNet2d(nn.Module):
    """MC-Net v1 for 2D slices (ACDC).

    Args:
        in_chns: input channels (1).
        class_num: output classes C (4).

    ``forward(x)`` with x (B, in_chns, H, W), sides multiples of 16, returns
    ``(logits1, logits2)``, each (B, C, H, W).
    """

    def __init__(self, in_chns: int = 1, class_num: int = 4) -> None:
        super().__init__()
        self.in_channels = in_chns
        self.num_classes = class_num
        self.encoder = unet2d.Encoder(in_chns)
        self.decoder1 = unet2d.Decoder(class_num)
        self.decoder2 = DeconvDecoder(class_num)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        check_input(x, "MCNet2d", spatial_dims=2, in_channels=self.in_channels, multiple=16)
        features = self.encoder(x)
        return self.decoder1(features)[0], self.decoder2(features)[0]
