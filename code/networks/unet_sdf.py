"""2D U-Net with a signed-distance head (SASSNet / DTC on ACDC).

No public 2D SASSNet or DTC code exists from their authors. The closest public
design (SSL4MIS ``cross_val_dev`` branch, ``unet_dtc``) adds to the U-Net of
:mod:`networks.unet` a second 3x3 convolution 16 -> C followed by tanh beside
the segmentation head; SS-Net's Table 2 complexity (1.81 M / 3.02 G) matches
that design exactly, so both SASSNet-2D and DTC-2D use it here:

* ``decoder.out_conv``: segmentation logits (B, C, H, W);
* ``out_conv_sdf`` + tanh: per-class signed distance (B, C, H, W) in (-1, 1).

The segmentation logits come first in the output (the tested output).
"""
from __future__ import annotations

import torch
from torch import nn

from networks.unet import FEATURE_CHANNELS, Decoder, Encoder
from networks.validation import check_input


class UNetSDF(nn.Module):
    """2D U-Net with a segmentation head and a tanh signed-distance head.

    Args:
        in_chns: input channels (1).
        class_num: segmentation channels C (4 for ACDC).
        sdf_channels: channels of the SDF head (default: ``class_num``).

    ``forward(x)`` with x (B, in_chns, H, W), each side a multiple of 16,
    returns ``(logits (B, C, H, W), sdf (B, C_sdf, H, W))``. Dropout is active
    in ``model.train()`` only.
    """

    def __init__(self, in_chns: int = 1, class_num: int = 4, sdf_channels: int | None = None) -> None:
        super().__init__()
        self.in_channels = in_chns
        self.num_classes = class_num
        self.sdf_channels = class_num if sdf_channels is None else sdf_channels
        self.encoder = Encoder(in_chns)
        self.decoder = Decoder(class_num)
        self.out_conv_sdf = nn.Conv2d(FEATURE_CHANNELS[0], self.sdf_channels, kernel_size=3, padding=1)
        self.tanh = nn.Tanh()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        check_input(x, "UNetSDF", spatial_dims=2, in_channels=self.in_channels, multiple=16)
        logits, x_last = self.decoder(self.encoder(x))
        return logits, self.tanh(self.out_conv_sdf(x_last))
