"""SASSNet's discriminators (Li et al., MICCAI 2020): does a signed-distance map
come from a labeled or an unlabeled image?

Both take the SDF map s (B, C_sdf, *S) and the image x (B, 1, *S); two stems
(4^d conv, stride 2, padding 1, -> 64 channels) on s (``conv0``) and x
(``conv1``) are summed, then three more stride-2 convolutions 64 -> 128 -> 256
-> 512, average pooling and a Linear layer give 2-class logits (B, 2)
(class 1 = "labeled").

* :class:`FC3DDiscriminator` (LA, public SASSNet code): LeakyReLU(0.2) and
  Dropout3d(0.5) after the summed stems and after the next two convolutions,
  LeakyReLU after the last; AvgPool3d over the whole 7x7x5 map of a
  112x112x80 patch; Linear(512, 2).
* :class:`FCDiscriminator` (ACDC): no public 2D SASSNet exists; this is the 2D
  discriminator of SSL4MIS (its DAN baseline), fed with the SDF map instead of
  the softmax map: no activation after the summed stems, LeakyReLU(0.2) after
  each of the next three convolutions and Dropout2d(0.5) after the first two;
  AvgPool2d(7) (stride 7) leaves 2x2 of the 16x16 map of a 256x256 slice;
  Linear(2048, 2).

Patch sizes other than the released ones (small test inputs): the 3D pooling
always averages the whole final map (= AvgPool3d(7, 7, 5) at 112x112x80); the
2D pooling kernel is min(7, side) per axis and the Linear layer takes whatever
the pooling leaves. Released sizes give the released layers exactly.
"""
from __future__ import annotations
from collections.abc import Sequence

import torch
from torch import nn


def _final_map(patch_size: Sequence[int], name: str) -> tuple[int, ...]:
    """Side lengths after four k4-s2-p1 convolutions (each halves, rounding down)."""
    sizes = tuple(int(s) for s in patch_size)
    out = []
    for s in sizes:
        for _ in range(4):
            s = (s + 2 - 4) // 2 + 1
        out.append(s)
    if any(s < 1 for s in out):
        raise ValueError(f"{name}: patch size {sizes} is too small; every side must be at least 16")
    return tuple(out)


class FC3DDiscriminator(nn.Module):
    """3D SDF-map discriminator of SASSNet.

    Args:
        num_classes: channels of the SDF map (C_sdf).
        patch_size: training patch (H, W, D) the pooling is sized for (112, 112, 80).
        ndf: channels of the stems (64).
        n_channel: image channels (1).

    ``forward(sdf, image)``: (B, C_sdf, H, W, D), (B, n_channel, H, W, D) -> logits (B, 2).
    """

    def __init__(self, num_classes: int, patch_size: Sequence[int] = (112, 112, 80), ndf: int = 64,
                 n_channel: int = 1) -> None:
        super().__init__()
        if len(patch_size) != 3:
            raise ValueError(f"FC3DDiscriminator: patch_size needs 3 sides, got {tuple(patch_size)}")
        self.patch_size = tuple(int(s) for s in patch_size)
        self.conv0 = nn.Conv3d(num_classes, ndf, kernel_size=4, stride=2, padding=1)
        self.conv1 = nn.Conv3d(n_channel, ndf, kernel_size=4, stride=2, padding=1)
        self.conv2 = nn.Conv3d(ndf, ndf * 2, kernel_size=4, stride=2, padding=1)
        self.conv3 = nn.Conv3d(ndf * 2, ndf * 4, kernel_size=4, stride=2, padding=1)
        self.conv4 = nn.Conv3d(ndf * 4, ndf * 8, kernel_size=4, stride=2, padding=1)
        self.avgpool = nn.AvgPool3d(_final_map(self.patch_size, "FC3DDiscriminator"))
        self.classifier = nn.Linear(ndf * 8, 2)
        self.leaky_relu = nn.LeakyReLU(negative_slope=0.2, inplace=True)
        self.dropout = nn.Dropout3d(0.5)

    def forward(self, sdf: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        if tuple(sdf.shape[2:]) != self.patch_size or tuple(image.shape[2:]) != self.patch_size:
            raise ValueError(f"FC3DDiscriminator was built for patches {self.patch_size}; got SDF "
                             f"{tuple(sdf.shape)} and image {tuple(image.shape)}")
        x = self.dropout(self.leaky_relu(self.conv0(sdf) + self.conv1(image)))
        x = self.dropout(self.leaky_relu(self.conv2(x)))
        x = self.dropout(self.leaky_relu(self.conv3(x)))
        x = self.leaky_relu(self.conv4(x))
        return self.classifier(self.avgpool(x).flatten(1))


class FCDiscriminator(nn.Module):
    """2D SDF-map discriminator (SASSNet on ACDC; SSL4MIS's 2D layout).

    Args:
        num_classes: channels of the SDF map (C_sdf).
        patch_size: training slice (H, W) the pooling is sized for (256, 256).
        ndf: channels of the stems (64).
        n_channel: image channels (1).

    ``forward(sdf, image)``: (B, C_sdf, H, W), (B, n_channel, H, W) -> logits (B, 2).
    """

    def __init__(self, num_classes: int, patch_size: Sequence[int] = (256, 256), ndf: int = 64,
                 n_channel: int = 1) -> None:
        super().__init__()
        if len(patch_size) != 2:
            raise ValueError(f"FCDiscriminator: patch_size needs 2 sides, got {tuple(patch_size)}")
        self.patch_size = tuple(int(s) for s in patch_size)
        final = _final_map(self.patch_size, "FCDiscriminator")
        kernel = tuple(min(7, s) for s in final)
        pooled = [s // k for s, k in zip(final, kernel)]
        self.conv0 = nn.Conv2d(num_classes, ndf, kernel_size=4, stride=2, padding=1)
        self.conv1 = nn.Conv2d(n_channel, ndf, kernel_size=4, stride=2, padding=1)
        self.conv2 = nn.Conv2d(ndf, ndf * 2, kernel_size=4, stride=2, padding=1)
        self.conv3 = nn.Conv2d(ndf * 2, ndf * 4, kernel_size=4, stride=2, padding=1)
        self.conv4 = nn.Conv2d(ndf * 4, ndf * 8, kernel_size=4, stride=2, padding=1)
        self.classifier = nn.Linear(ndf * 8 * pooled[0] * pooled[1], 2)
        self.avgpool = nn.AvgPool2d(kernel)
        self.leaky_relu = nn.LeakyReLU(negative_slope=0.2, inplace=True)
        self.dropout = nn.Dropout2d(0.5)

    def forward(self, sdf: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        if tuple(sdf.shape[2:]) != self.patch_size or tuple(image.shape[2:]) != self.patch_size:
            raise ValueError(f"FCDiscriminator was built for slices {self.patch_size}; got SDF "
                             f"{tuple(sdf.shape)} and image {tuple(image.shape)}")
        x = self.conv0(sdf) + self.conv1(image)
        x = self.dropout(self.leaky_relu(self.conv2(x)))
        x = self.dropout(self.leaky_relu(self.conv3(x)))
        x = self.leaky_relu(self.conv4(x))
        return self.classifier(self.avgpool(x).flatten(1))
