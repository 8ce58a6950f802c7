"""SASSNet: shape-aware semi-supervised segmentation (Li et al., MICCAI 2020), as its public code trains it.

Segmenter: V-Net / U-Net with a segmentation head and a tanh SDF head
(:mod:`networks.vnet_sdf`, :mod:`networks.unet_sdf`; C channels each, the
documented choice of README "Baselines"). Discriminator D
(:mod:`networks.discriminator`) on (SDF map, image) pairs, with its own Adam
optimiser (lr 1e-4, betas (0.9, 0.99)).

Generator step (this module's :meth:`SASSNet.step`, model in train mode, D in eval mode):

    L_G = Dice(p_L, y) + beta * MSE(s_L, SDF_gt) + w(t) * CE(D(s_U, x_U), 1)

with p = softmax of the segmentation logits, s the SDF prediction, SDF_gt of
:mod:`methods.sdf`, beta = 0.3, target 1 = "labeled" (the generator wants the
unlabeled SDFs to look labeled); cross-entropy of the segmentation is logged,
not added (released). ``w(t) = lambda * sigmoid_rampup(t // 150, L)``.

Discriminator step (:meth:`SASSNet.after_step`, after the segmenter's SGD
step; model in eval mode, D in train mode): the SDFs of the whole batch are
recomputed without gradient and ``L_D = CE(D(s, x), [1] * B_L + [0] * B_U)``
(released: the hard-coded [1, 1, 0, 0] of batch 4 / 2 labeled).

Constants (README "Baselines"): lambda = 0.015, the public value for SASSNet's
smallest labeled set (0.01 at 16 LA labels, 0.015 at 8), used for every row
of Tables 1-2 (all at most 10% labels); L = 40 on LA (public), 200 on ACDC
(no public 2D SASSNet; 200 is the 2D ramp of every SSL4MIS baseline over
30000 iterations). Dice: LA the foreground channel, ACDC the 4-class mean.

``--baseline_heads released`` (LA): the public code's 1-channel heads
(:class:`methods.common.SDFBaseline`): p = sigmoid(z), Dice on p, BCE logged,
the SDF of label > 0, and D = FC3DDiscriminator on the 1-channel SDF map;
every weight, ramp and the discriminator step unchanged.
"""
from __future__ import annotations
import argparse
import logging
from typing import Any
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from datasets import get_dataset
from methods.base import RunConfig
from methods.common import BASELINE_HEADS, PROJECT_HEADS, SDFBaseline, check_heads
from networks.discriminator import FC3DDiscriminator, FCDiscriminator

logger = logging.getLogger(__name__)

D_LR = 1e-4
D_BETAS = (0.9, 0.99)


def discriminator_targets(batch_size: int, labeled_bs: int, device: Any = None) -> torch.Tensor:
    """Class targets of the discriminator step: 1 for the labeled items, 0 for the unlabeled (B,) long."""
    target = torch.zeros(batch_size, dtype=torch.long, device=device)
    target[:labeled_bs] = 1
    return target


class SASSNet(SDFBaseline):
    """SASSNet on LA (3D) or ACDC (2D).

    Args:
        dataset, model, num_classes, labeled_bs: see :class:`methods.common.Baseline`
            (``model(x)`` returns ``(logits, sdf)``).
        discriminator: :class:`networks.discriminator.FC3DDiscriminator` (LA) or
            :class:`networks.discriminator.FCDiscriminator` (ACDC), on the model's device.
        consistency, consistency_rampup: lambda and L of the adversarial weight.
        beta: weight of the SDF loss (0.3).
        d_lr: learning rate of the discriminator's Adam (1e-4).
        heads: ``"project"`` (C-channel heads) or ``"released"`` (LA: the public 1-channel heads;
            the discriminator then takes a 1-channel SDF map, as released).
    """

    key = "sassnet"
    name = "SASSNet"
    args_title = "--method sassnet and dtc"
    log_keys = ("loss", "loss_dice", "loss_sdf", "loss_ce", "loss_adv", "loss_D", "consistency_weight")

    def __init__(self, dataset: Any, model: nn.Module, num_classes: int, labeled_bs: int,
                 discriminator: nn.Module, consistency: float | None = None,
                 consistency_rampup: float | None = None, beta: float = 0.3, d_lr: float = D_LR,
                 heads: str = PROJECT_HEADS) -> None:
        super().__init__(dataset, model, num_classes, labeled_bs, consistency, consistency_rampup, heads)
        self.discriminator = discriminator
        self.d_optimizer = torch.optim.Adam(discriminator.parameters(), lr=d_lr, betas=D_BETAS)
        self.beta = beta
        self._image: torch.Tensor | None = None
        self._last_d_loss: torch.Tensor | None = None
        self._out: dict[str, torch.Tensor] | None = None

    @staticmethod
    def build_discriminator(dataset: Any, num_classes: int, patch_size: Sequence[int],
                            device: Any | None = None) -> nn.Module:
        """FC3DDiscriminator (3D datasets: LA) or FCDiscriminator (2D: ACDC) for C-channel SDF maps
        and 1-channel images."""
        cls = FC3DDiscriminator if get_dataset(dataset).spatial_dims == 3 else FCDiscriminator
        d = cls(num_classes, patch_size=patch_size)
        return d if device is None else d.to(device)

    @classmethod
    def add_args(cls, parser: Any, dataset: Any) -> None:
        """``--beta`` and ``--baseline_heads`` (DTC reads them too)."""
        parser.add_argument("--beta", type=float, default=0.3, help="SASSNet/DTC: weight of the SDF regression loss")

        def heads(value: str) -> str:
            try:
                return check_heads(value, dataset, cls.key)
            except ValueError as err:
                raise argparse.ArgumentTypeError(str(err)) from None

        parser.add_argument("--baseline_heads", type=heads, default=PROJECT_HEADS,
                            metavar="{%s}" % ",".join(BASELINE_HEADS),
                            help="SASSNet/DTC heads: 'project' (C-channel softmax segmentation and C-channel tanh "
                                 "SDF heads: the MACs of SS-Net's tables) or 'released' (LA only: the public 3D "
                                 "code's 1-channel sigmoid segmentation and 1-channel tanh SDF heads, losses as "
                                 "released; tested as sigmoid > 0.5)")

    @classmethod
    def kwargs_from_config(cls, config: RunConfig, dataset: Any, num_classes: int,
                           device: torch.device) -> dict[str, Any]:
        """The discriminator (built after the segmentation network, for the SDF head's channels),
        ``--beta`` and ``--baseline_heads``."""
        kwargs = super().kwargs_from_config(config, dataset, num_classes, device)
        sdf_channels = 1 if config.options.baseline_heads != PROJECT_HEADS else num_classes
        kwargs["discriminator"] = cls.build_discriminator(dataset, sdf_channels, list(config.patch_size), device)
        return kwargs

    def step(self, image: torch.Tensor, label: torch.Tensor, iter_num: int) -> dict[str, torch.Tensor]:
        """Generator losses of one iteration; image (B, 1, *S), label (B, *S), labeled items first."""
        self.check_batch(image, label)
        lbs = self.labeled_bs
        self.model.train()
        self.discriminator.eval()
        logits, sdf = self.model(image)
        probs, out = self.supervised_terms(logits, sdf, label[:lbs])
        d_out = self.discriminator(sdf[lbs:], image[lbs:])
        out["loss_adv"] = F.cross_entropy(d_out, torch.ones(d_out.shape[0], dtype=torch.long, device=d_out.device))
        w = self.weight(iter_num)
        out["loss"] = out["loss_dice"] + self.beta * out["loss_sdf"] + w * out["loss_adv"]
        out["consistency_weight"] = torch.tensor(w)
        # the discriminator loss is computed in after_step; until then, the previous iteration's
        out["loss_D"] = self._last_d_loss if self._last_d_loss is not None else logits.new_zeros(())
        out["probs"] = self.snapshot_probs(probs)
        self._image, self._out = image.detach(), out
        return out

    def discriminator_step(self, image: torch.Tensor) -> torch.Tensor:
        """One Adam step of D on the whole batch (SDFs recomputed in eval mode without gradient)."""
        was_training = self.model.training
        self.model.eval()
        self.discriminator.train()
        try:
            with torch.no_grad():
                sdf = self.model(image)[1]
            d_out = self.discriminator(sdf, image)
            loss = F.cross_entropy(d_out, discriminator_targets(image.shape[0], self.labeled_bs, d_out.device))
            self.d_optimizer.zero_grad(set_to_none=True)  # also drops the generator step's gradients in D
            loss.backward()
            self.d_optimizer.step()
        finally:
            self.model.train(was_training)
        return loss.detach()

    def after_step(self, iter_num: int) -> None:
        """The discriminator update of the iteration that just ran."""
        if self._image is None:
            raise RuntimeError("SASSNet.after_step called before step")
        self._last_d_loss = self.discriminator_step(self._image)
        if self._out is not None:
            self._out["loss_D"] = self._last_d_loss
        self._image, self._out = None, None

    def state_dict(self) -> dict[str, Any]:
        return {"discriminator": {k: v.detach().cpu() for k, v in self.discriminator.state_dict().items()},
                "d_optimizer": self.d_optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any], device: torch.device) -> None:
        self.discriminator.load_state_dict(state["discriminator"], strict=True)
        self.d_optimizer.load_state_dict(state["d_optimizer"])
