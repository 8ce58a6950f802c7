"""V-Net with a signed-distance head (SASSNet, Li et al. MICCAI 2020; DTC, Luo et al. AAAI 2021).

The V-Net of :mod:`networks.vnet` (same encoder, decoder and ``mode="train"``
dropout) with a second 1x1x1 head on the last decoder feature map ``x9``:

* ``decoder.out_conv``: segmentation logits ``z`` (B, C, H, W, D);
* ``out_conv_sdf`` + tanh: the signed-distance prediction ``s`` in (-1, 1)
  (B, C_sdf, H, W, D), negative inside an object, positive outside.

Head channels (documented choice, README "Baselines"): both heads have C
channels (2 on LA), which is what the MACs of SS-Net's Table 1 imply (47.05 G,
vs 47.02 G for 1-channel heads); the public SASSNet/DTC code uses one channel
for each head (``sdf_channels=1`` with ``n_classes=1`` builds that variant:
:func:`released_vnet_sdf`, ``--baseline_heads released``).

Output order differs from the public code, which returns ``(sdf, logits)``:
here the segmentation logits come first, because the trainer, the validation
and the test scripts evaluate the first output (SASSNet and DTC are tested on
the segmentation head).
"""
from __future__ import annotations

import torch
from torch import nn

from networks.validation import check_input
from networks.vnet import Decoder, Encoder


class VNetSDF(nn.Module):
    """V-Net with a segmentation head and a tanh signed-distance head.

    Args:
        n_channels: input channels (1 for LA MRI).
        n_classes: segmentation channels C (2 for LA).
        n_filters: channels of the first stage (16).
        has_dropout: Dropout3d(0.5) after ``block_five`` and ``block_nine``
            (training; the public SASSNet/DTC scripts train with it).
        sdf_channels: channels of the SDF head (default: ``n_classes``).

    ``forward(x)`` with x (B, n_channels, H, W, D), each side a multiple of 16,
    returns ``(logits (B, C, H, W, D), sdf (B, C_sdf, H, W, D))``.
    """

    def __init__(self, n_channels: int = 1, n_classes: int = 2, n_filters: int = 16,
                 has_dropout: bool = False, sdf_channels: int | None = None) -> None:
        super().__init__()
        self.in_channels = n_channels
        self.num_classes = n_classes
        self.sdf_channels = n_classes if sdf_channels is None else sdf_channels
        self.encoder = Encoder(n_channels, n_filters, has_dropout)
        self.decoder = Decoder(n_classes, n_filters, has_dropout)
        self.out_conv_sdf = nn.Conv3d(n_filters, self.sdf_channels, 1, padding=0)
        self.tanh = nn.Tanh()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        check_input(x, "VNetSDF", spatial_dims=3, in_channels=self.in_channels, multiple=16)
        logits, x9 = self.decoder(self.encoder(x))
        return logits, self.tanh(self.out_conv_sdf(x9))


def released_vnet_sdf(n_channels: int = 1, has_dropout: bool = False) -> VNetSDF:
    """The public SASSNet/DTC 3D network (``VNet(n_classes=num_classes - 1)``): a 1-channel
    segmentation logit ``z`` (tested as sigmoid(z) > 0.5) and a 1-channel tanh SDF head.

    The public module names map onto this one's: ``block_*`` -> ``encoder.block_*`` (through
    ``block_five``) or ``decoder.block_*`` (from ``block_five_up``), ``out_conv2`` (segmentation) ->
    ``decoder.out_conv``, ``out_conv`` (SDF) -> ``out_conv_sdf``; the public forward returns
    ``(sdf, logits)``, this one ``(logits, sdf)``.
    """
    return VNetSDF(n_channels=n_channels, n_classes=1, has_dropout=has_dropout, sdf_channels=1)
