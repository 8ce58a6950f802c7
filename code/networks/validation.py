"""Input checks shared by the networks: wrong rank, channels or sizes fail early
with a message that says what the network takes (instead of a shape error deep
inside a convolution)."""
from __future__ import annotations
import torch


def check_input(x: torch.Tensor, name: str, spatial_dims: int, in_channels: int, multiple: int) -> None:
    """Raise ``ValueError`` unless ``x`` is (B, in_channels, *spatial) with each
    spatial side a positive multiple of ``multiple``. Only reads shapes (no sync)."""
    axes = "(B, C, H, W, D)" if spatial_dims == 3 else "(B, C, H, W)"
    if x.dim() != spatial_dims + 2:
        raise ValueError(
            f"{name} takes a {spatial_dims + 2}-D tensor {axes}, got shape {tuple(x.shape)}; "
            + ("add the batch/channel axes, e.g. x[None, None]" if x.dim() == spatial_dims
               else "check the input's rank")
        )
    if x.shape[1] != in_channels:
        raise ValueError(
            f"{name} was built for {in_channels} input channel(s) but got {x.shape[1]} "
            f"(input shape {tuple(x.shape)}); build it with in_chns={x.shape[1]} or fix the input"
        )
    bad = [s for s in x.shape[2:] if s <= 0 or s % multiple]
    if bad:
        raise ValueError(
            f"{name} needs every spatial side to be a multiple of {multiple}, got {tuple(x.shape[2:])}; "
            "crop or pad the input (e.g. patch sizes 112x112x80 for LA, 256x256 for ACDC)"
        )
