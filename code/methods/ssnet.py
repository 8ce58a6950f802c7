"""One SS-Net training iteration (paper Sec. 2, Eq. (5)), and its ablations.

    loss = L_seg + w(t) * (L_lds + 0.1 * (L_cs(labeled) + L_cs(unlabeled)))

``L_seg`` is the soft Dice of the labeled half (LA: binary Dice of the
foreground probability; ACDC: 4-class Dice with one-hot targets); cross-entropy
is computed and logged but not added (released behaviour). ``L_lds`` is VAT on
the whole batch with a Dice distance (:mod:`utils.vat`); ``L_cs`` the prototype
separation loss (:mod:`utils.separation`). ``w(t)`` is the sigmoid ramp-up of
:func:`utils.ramps.consistency_weight`.

The run engine (:mod:`engine.trainer`) owns data, optimiser, schedule, logging,
checkpoints and validation; this module builds the network, states SS-Net's
flags and computes one iteration's losses (:meth:`SSNet.step`). The order of
random draws follows the released scripts (forward pass, then separation, then
VAT; on CUDA the VAT noise is drawn before the forward, in
:meth:`SSNet.prepare_step`, which draws from the CPU generator only), so a
seeded run reproduces theirs.
"""
from __future__ import annotations
import argparse
import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from datasets import DatasetDescription, DiceForm, get_dataset
from methods.base import DERIVED, Method, RunConfig, options_from_flags
from networks.net_factory import net_factory
from utils.losses import binary_dice_loss, logged_cross_entropy, DiceLoss
from utils.ramps import consistency_weight
from utils.separation import PrototypeMemory, separation_step
from utils.vat import VATLoss, uniform_noise


def rms_scaled_magnitude(magnitude: float, patch: list[int], released_patch: list[int]) -> float:
    """``--magnitude_scaling rms``: epsilon is an L2 norm over the whole input, so the same
    per-pixel RMS at another size needs ``magnitude * sqrt(prod(patch) / prod(released_patch))``
    (ACDC: 6 at 256x256 -> 1.5 at 64x64; LA: 10 at 112x112x80 -> 10 sqrt(voxels / 1003520))."""
    if len(patch) != len(released_patch):
        raise ValueError(f"--patch_size {patch} and the released patch {released_patch} differ in rank")
    return float(magnitude * math.sqrt(float(np.prod(patch)) / float(np.prod(released_patch))))


@dataclass(frozen=True)
class SSNetOptions:
    """SS-Net's own flags (see ``--help``); ``released_patch`` is the dataset's released patch
    (for ``--magnitude_scaling rms``), ``magnitude_at_released_patch`` the ``--magnitude`` given
    when it was rescaled."""

    consistency: float
    consistency_rampup: float
    magnitude: float
    magnitude_scaling: str
    lds: str
    cs: str
    prototype_keep: str
    memory_weighting: str
    released_patch: tuple[int, ...]
    magnitude_at_released_patch: float | None = field(default=None, metadata={**DERIVED, "omit_none": True})


class SSNet(Method):
    """SS-Net on a dataset description (LA: V-Net, ACDC: U-Net).

    Args:
        dataset: a dataset name (``"LA"``, ``"ACDC"``) or description (:mod:`datasets`): the
            VAT distance of ``--lds dice``, the supervised Dice form and the defaults below.
        model: the network from :func:`networks.net_factory.net_factory`.
        num_classes: C.
        labeled_bs: how many leading items of each batch are labeled.
        lds: ``"dice"`` (released), ``"kl"`` (Table 3 ablation) or ``"none"``.
        cs: use the separation loss.
        supervised_only: the batch holds labeled items only and the loss is
            ``L_seg`` alone (the paper's V-Net / U-Net rows).
        consistency, consistency_rampup: w(t) = consistency * sigmoid_rampup(t // 150, rampup)
            (default: the dataset's, LA 1.0 / 40, ACDC 0.1 / 200).
        magnitude: VAT epsilon (default: the dataset's, LA 10, ACDC 6).
        xi: VAT xi (10).
        prototype_keep: ``"lowest"`` (released) or ``"highest"`` (the paper's text).
        memory_weighting: ``"released"`` (every prototype weight is 1: the released
            code rescales the memory weights over an axis of size 1) or ``"mean"``
            (sigmoid(selector) rescaled to mean 1, as the paper describes).
        ramp_after_increment: w(t) from the iteration count after the increment (the
            released 3D script) or before it (the 2D script); default: the dataset's.
    """

    key = "ssnet"
    name = "SSNet"
    args_title = "SS-Net (--method ssnet)"
    Options = SSNetOptions
    log_keys = ("loss", "loss_dice", "loss_ce", "loss_lds", "loss_cs_l", "loss_cs_u", "consistency_weight")

    def __init__(self, dataset: str | DatasetDescription, model: nn.Module, num_classes: int, labeled_bs: int,
                 lds: str = "dice", cs: bool = True, supervised_only: bool = False,
                 consistency: float | None = None, consistency_rampup: float | None = None,
                 magnitude: float | None = None, xi: float = 10.0, prototype_keep: str = "lowest",
                 memory_weighting: str = "released", ramp_after_increment: bool | None = None) -> None:
        data = get_dataset(dataset)
        if lds not in ("dice", "kl", "none"):
            raise ValueError(f"--lds must be dice, kl or none, got {lds!r}")
        self.data, self.dataset = data, data.name
        self.model = model
        self.num_classes = num_classes
        self.labeled_bs = labeled_bs
        self.lds, self.cs, self.supervised_only = lds, cs, supervised_only
        self.consistency = data.consistency if consistency is None else consistency
        self.consistency_rampup = data.consistency_rampup if consistency_rampup is None else consistency_rampup
        self.ramp_after_increment = (bool(data.method(self.key).options.get("ramp_after_increment", False))
                                     if ramp_after_increment is None else ramp_after_increment)
        self.vat = None if lds == "none" else VATLoss(
            xi=xi, epsilon=data.magnitude if magnitude is None else magnitude, ip=1,
            distance=data.vat_distance.value if lds == "dice" else "kl")
        self.memory_weighting = memory_weighting
        self.memory = PrototypeMemory(num_classes, per_class=32, keep=prototype_keep)
        self.multiclass_dice = DiceLoss(num_classes) if data.dice is DiceForm.CLASSES else None
        #: draw the VAT noise in :meth:`prepare_step`, before the step's forward passes are queued:
        #: the same draw in the same order of the CPU generator wherever the forward draws nothing
        #: from it, i.e. on CUDA (dropout masks come from the CUDA generator), the default there
        self.predraw_noise = next(model.parameters()).device.type == "cuda"
        self._noise: torch.Tensor | None = None

    @classmethod
    def add_args(cls, parser: Any, dataset: DatasetDescription) -> None:
        """SS-Net's loss weights, VAT and prototype flags and its ablations (Table 3)."""
        parser.add_argument("--consistency", type=float, default=dataset.consistency,
                            help="final weight of the unsupervised losses")
        parser.add_argument("--consistency_rampup", type=float, default=dataset.consistency_rampup,
                            help="ramp-up length in units of 150 iterations")
        parser.add_argument("--magnitude", type=float, default=dataset.magnitude,
                            help="VAT epsilon (perturbation norm)")
        parser.add_argument(
            "--magnitude_scaling", choices=["fixed", "rms"], default="fixed",
            help="fixed (released): --magnitude is the L2 norm of the perturbation at any --patch_size. "
                 "rms: --magnitude is meant at the released patch (%s) and is scaled by "
                 "sqrt(patch voxels / released patch voxels), which keeps the per-pixel RMS of the "
                 "perturbation, e.g. 6 at 256x256 -> 1.5 at 64x64" % "x".join(map(str, dataset.patch_size)))
        parser.set_defaults(released_patch=list(dataset.patch_size))
        parser.add_argument("--lds", choices=["dice", "kl", "none"], default="dice",
                            help="smoothness loss distance (Table 3: dice = released, kl = original VAT, none = off)")
        parser.add_argument("--cs", choices=["on", "off"], default="on",
                            help="inter-class separation loss (Table 3)")
        parser.add_argument("--prototype_keep", choices=["lowest", "highest"], default="lowest",
                            help="prototype selection: lowest attention scores (released) or highest (paper text)")
        parser.add_argument("--memory_weighting", choices=["released", "mean"], default="released",
                            help="prototype weights in the separation loss: released (all 1, as the released code "
                                 "computes them) or mean (sigmoid(selector) rescaled to mean 1, as the paper "
                                 "describes)")

    @classmethod
    def options_from_flags(cls, flags: argparse.Namespace) -> SSNetOptions:
        """SS-Net's options: ``--supervised_only`` turns both unsupervised terms off;
        ``--magnitude_scaling rms`` rescales ``--magnitude`` to ``--patch_size``."""
        options = options_from_flags(SSNetOptions, flags)
        if flags.supervised_only:
            options = dataclasses.replace(options, lds="none", cs="off")
        if options.magnitude_scaling == "rms":
            options = dataclasses.replace(
                options, magnitude_at_released_patch=options.magnitude,
                magnitude=rms_scaled_magnitude(options.magnitude, list(flags.patch_size), list(options.released_patch)))
        return options

    @classmethod
    def build_model(cls, dataset: str | DatasetDescription, num_classes: int, mode: str = "train",
                    device: Any | None = None, model: str | None = None) -> nn.Module:
        """``net_factory(model)`` with SS-Net's heads; ``model`` defaults to the dataset's (VNet, unet)."""
        if model is None:
            model = get_dataset(dataset).method(cls.key).network
        return net_factory(model, in_chns=1, class_num=num_classes, mode=mode, device=device)

    @classmethod
    def from_config(cls, config: RunConfig, dataset: str | DatasetDescription, num_classes: int,
                    device: torch.device) -> SSNet:
        o: SSNetOptions = config.options
        model = cls.build_model(dataset, num_classes, "train", device, model=config.model)
        return cls(dataset, model, num_classes, config.labeled_bs, lds=o.lds, cs=o.cs == "on",
                   supervised_only=config.supervised_only, consistency=o.consistency,
                   consistency_rampup=o.consistency_rampup, magnitude=o.magnitude,
                   prototype_keep=o.prototype_keep, memory_weighting=o.memory_weighting)
    @property
    def step_uses_cpu_generator(self) -> bool:  # type: ignore[override]
        """On CUDA (:attr:`predraw_noise`) the step draws only from the CUDA generator once the
        noise is drawn."""
        return not self.predraw_noise

    def prepare_step(self, image: torch.Tensor) -> None:
        """With :attr:`predraw_noise`: the VAT noise of the coming step, drawn now (about 4 M numbers
        for an LA batch, tens of ms of host work, done while the GPU still runs the previous
        iteration instead of between the step's forward passes)."""
        if self.predraw_noise and self.vat is not None and not self.supervised_only:
            self._noise = uniform_noise(image.shape, image.device)

    def supervised_loss(self, probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Soft Dice of the labeled part: probs (L, C, *S), labels (L, *S)."""
        if self.multiclass_dice is None:
            return binary_dice_loss(probs[:, 1], labels == 1)
        return self.multiclass_dice(probs, labels.unsqueeze(1))

    def weight(self, iter_num: int) -> float:
        """w(t) for the iteration about to run (``iter_num`` iterations done before it)."""
        t = iter_num + 1 if self.ramp_after_increment else iter_num
        return consistency_weight(t, self.consistency, self.consistency_rampup)

    def step(self, image: torch.Tensor, label: torch.Tensor, iter_num: int) -> dict[str, torch.Tensor]:
        """Losses of one iteration. image (B, 1, *S), label (B, *S) with the
        labeled items first. Returns a dict of scalar tensors; ``"loss"`` is
        the one to back-propagate. Host synchronisations: one, in
        :func:`utils.separation.separation_step` (every group size of the memory
        update and of both losses, read at once); the VAT noise goes to a GPU by a
        non-blocking copy from pinned memory (drawn in :meth:`prepare_step` on CUDA)."""
        model = self.model
        model.train()
        logits, features = model(image)
        probs = F.softmax(logits, dim=1)
        lbs = image.shape[0] if self.supervised_only else self.labeled_bs
        labels = label[:lbs]
        out: dict[str, torch.Tensor] = {}
        zero = logits.new_zeros(())
        if self.cs and not self.supervised_only:
            out["loss_cs_l"], out["loss_cs_u"] = separation_step(
                features, probs, labels, lbs, self.memory, heads=model, memory_weighting=self.memory_weighting)
        else:
            out["loss_cs_l"] = out["loss_cs_u"] = zero
        out["loss_ce"] = logged_cross_entropy(logits[:lbs], labels)  # logged, not optimised
        out["loss_dice"] = self.supervised_loss(probs[:lbs], labels)
        if self.vat is not None and not self.supervised_only:
            noise, self._noise = self._noise, None
            out["loss_lds"] = self.vat(model, image, noise)
        else:
            out["loss_lds"] = zero
        w = 0.0 if self.supervised_only else self.weight(iter_num)
        out["loss"] = out["loss_dice"] + w * (out["loss_lds"] + 0.1 * (out["loss_cs_l"] + out["loss_cs_u"]))
        out["consistency_weight"] = torch.tensor(w)
        out["probs"] = probs.detach()
        return out

    def state_dict(self) -> dict[str, Any]:
        """What a resumed run needs besides the model: the prototype memory."""
        return self.memory.state_dict()

    def load_state_dict(self, state: dict[str, Any], device: torch.device) -> None:
        self.memory.load_state_dict(state, device)
