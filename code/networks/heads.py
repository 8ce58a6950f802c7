"""SS-Net's heads on top of a segmentation backbone (shared by V-Net and U-Net).

The separation loss (paper Sec. 2.2) works on 32-d embeddings of the backbone's
last 16-channel decoder features:

* ``projection_head``: Linear(16, 32) - BN1d - ReLU - Linear(32, 32)
* ``prediction_head``: Linear(32, 32) - BN1d - ReLU - Linear(32, 32)
* per class ``c``: ``contrastive_class_selector_<c>`` (attention on pixel
  features) and ``contrastive_class_selector_memory<c>`` (attention on the
  prototypes; released name, no underscore before ``c``), each
  Linear(32, 32) - BN1d - LeakyReLU(0.2) - Linear(32, 1).

The attribute names are those of the released checkpoints, so their
state_dicts load with ``strict=True``.
"""
from __future__ import annotations

from torch import nn

FEATURE_CHANNELS = 16
EMBED_DIM = 32


def _mlp(dim_in: int, dim_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(dim_in, EMBED_DIM),
        nn.BatchNorm1d(EMBED_DIM),
        nn.ReLU(inplace=True),
        nn.Linear(EMBED_DIM, dim_out),
    )


def _selector() -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(EMBED_DIM, EMBED_DIM),
        nn.BatchNorm1d(EMBED_DIM),
        nn.LeakyReLU(negative_slope=0.2, inplace=True),
        nn.Linear(EMBED_DIM, 1),
    )


class SSNetHeadsMixin:
    """Adds SS-Net's projection, prediction and selector heads to an ``nn.Module``.

    Call :meth:`_add_ssnet_heads` at the end of ``__init__`` (after the
    backbone) so the state_dict keys come in the released order.
    """

    num_classes: int
    has_heads: bool = False

    def _add_ssnet_heads(self, num_classes: int) -> None:
        self.has_heads = True
        self.projection_head = _mlp(FEATURE_CHANNELS, EMBED_DIM)
        self.prediction_head = _mlp(EMBED_DIM, EMBED_DIM)
        for c in range(num_classes):
            setattr(self, f"contrastive_class_selector_{c}", _selector())
        for c in range(num_classes):
            setattr(self, f"contrastive_class_selector_memory{c}", _selector())

    def _require_heads(self) -> None:
        if not self.has_heads:
            raise RuntimeError(
                f"{type(self).__name__} was built with with_heads=False (backbone only); "
                "build it with with_heads=True to use SS-Net's separation heads."
            )

    @property
    def feature_selectors(self) -> list[nn.Module]:
        """``[contrastive_class_selector_0, ..., _{C-1}]`` (attention on pixel features)."""
        self._require_heads()
        return [getattr(self, f"contrastive_class_selector_{c}") for c in range(self.num_classes)]

    @property
    def memory_selectors(self) -> list[nn.Module]:
        """``[contrastive_class_selector_memory0, ..., memory{C-1}]`` (attention on prototypes)."""
        self._require_heads()
        return [getattr(self, f"contrastive_class_selector_memory{c}") for c in range(self.num_classes)]

    def forward_projection_head(self, features):  # released API name
        return self.projection_head(features)

    def forward_prediction_head(self, features):  # released API name
        return self.prediction_head(features)
