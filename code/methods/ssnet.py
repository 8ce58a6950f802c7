"""One SS-Net training iteration (paper Sec. 2, Eq. (5)), and its ablations.

    loss = L_seg + w(t) * (L_lds + 0.1 * (L_cs(labeled) + L_cs(unlabeled)))

``L_seg`` is the soft Dice of the labeled half (LA: binary Dice of the
foreground probability; ACDC: 4-class Dice with one-hot targets); cross-entropy
is computed and logged but not added (released behaviour). ``L_lds`` is VAT on
the whole batch with a Dice distance (:mod:`utils.vat`); ``L_cs`` the prototype
separation loss (:mod:`utils.separation`). ``w(t)`` is the sigmoid ramp-up of
:func:`utils.ramps.consistency_weight`.

The training scripts own data, optimiser, schedule, logging, checkpoints and
validation; this module builds the network and computes one iteration's losses.
The order of random draws follows the released scripts (forward pass, then
separation, then VAT), so a seeded run reproduces theirs.
"""
from typing import Any, Dict

import torch
import torch.nn.functional as F
from torch import nn

from networks.net_factory import net_factory
from utils.losses import binary_dice_loss, cross_entropy_loss, DiceLoss
from utils.ramps import consistency_weight
from utils.separation import PrototypeMemory, separation_step
from utils.vat import VATLoss

#: VAT distance for ``--lds dice`` per dataset (the released choice).
DICE_DISTANCE = {"LA": "dice", "ACDC": "class_dice"}


class SSNet:
    """SS-Net on LA (``dataset="LA"``, V-Net) or ACDC (``dataset="ACDC"``, U-Net).

    Args:
        dataset: ``"LA"`` or ``"ACDC"``.
        model: the network from :func:`networks.net_factory.net_factory`.
        num_classes: C.
        labeled_bs: how many leading items of each batch are labeled.
        lds: ``"dice"`` (released), ``"kl"`` (Table 3 ablation) or ``"none"``.
        cs: use the separation loss.
        supervised_only: the batch holds labeled items only and the loss is
            ``L_seg`` alone (the paper's V-Net / U-Net rows).
        consistency, consistency_rampup: w(t) = consistency * sigmoid_rampup(t // 150, rampup).
        magnitude: VAT epsilon (LA 10, ACDC 6).
        xi: VAT xi (10).
        prototype_keep: ``"lowest"`` (released) or ``"highest"`` (the paper's text).
        memory_weighting: ``"released"`` (every prototype weight is 1: the released
            code rescales the memory weights over an axis of size 1) or ``"mean"``
            (sigmoid(selector) rescaled to mean 1, as the paper describes).
        ramp_after_increment: the released 3D script computes w(t) from the
            iteration count after the increment, the 2D script before it.
    """

    name = "SSNet"
    log_keys = ("loss", "loss_dice", "loss_ce", "loss_lds", "loss_cs_l", "loss_cs_u", "consistency_weight")

    def __init__(self, dataset: str, model: nn.Module, num_classes: int, labeled_bs: int, lds: str = "dice",
                 cs: bool = True, supervised_only: bool = False, consistency: float = 1.0,
                 consistency_rampup: float = 40.0, magnitude: float = 10.0, xi: float = 10.0,
                 prototype_keep: str = "lowest", memory_weighting: str = "released",
                 ramp_after_increment: bool = True, **_: Any) -> None:
        if dataset not in DICE_DISTANCE:
            raise ValueError(f"dataset must be 'LA' or 'ACDC', got {dataset!r}")
        if lds not in ("dice", "kl", "none"):
            raise ValueError(f"--lds must be dice, kl or none, got {lds!r}")
        self.dataset = dataset
        self.model = model
        self.num_classes = num_classes
        self.labeled_bs = labeled_bs
        self.lds, self.cs, self.supervised_only = lds, cs, supervised_only
        self.consistency, self.consistency_rampup = consistency, consistency_rampup
        self.ramp_after_increment = ramp_after_increment
        self.vat = None if lds == "none" else VATLoss(
            xi=xi, epsilon=magnitude, ip=1, distance=DICE_DISTANCE[dataset] if lds == "dice" else "kl")
        self.memory_weighting = memory_weighting
        self.memory = PrototypeMemory(num_classes, per_class=32, keep=prototype_keep)
        self.multiclass_dice = DiceLoss(num_classes) if dataset == "ACDC" else None
        #: optional ``callable(phase_name)`` called after each phase of ``step``
        #: (code/benchmark.py uses it to time phases; None in training).
        self.phase_hook = None

    def _phase(self, name: str) -> None:
        if self.phase_hook is not None:
            self.phase_hook(name)

    @classmethod
    def from_args(cls, args: Any, dataset: str, num_classes: int, device: torch.device) -> "SSNet":
        model = net_factory(args.model, in_chns=1, class_num=num_classes, mode="train", device=device)
        return cls(dataset, model, num_classes, args.labeled_bs, lds=args.lds, cs=args.cs == "on",
                   supervised_only=args.supervised_only, consistency=args.consistency,
                   consistency_rampup=args.consistency_rampup, magnitude=args.magnitude,
                   prototype_keep=args.prototype_keep, memory_weighting=args.memory_weighting, ramp_after_increment=(dataset == "LA"))

    def supervised_loss(self, probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Soft Dice of the labeled part: probs (L, C, *S), labels (L, *S)."""
        if self.multiclass_dice is None:
            return binary_dice_loss(probs[:, 1], labels == 1)
        return self.multiclass_dice(probs, labels.unsqueeze(1))

    def weight(self, iter_num: int) -> float:
        """w(t) for the iteration about to run (``iter_num`` iterations done before it)."""
        t = iter_num + 1 if self.ramp_after_increment else iter_num
        return consistency_weight(t, self.consistency, self.consistency_rampup)

    def step(self, image: torch.Tensor, label: torch.Tensor, iter_num: int) -> Dict[str, torch.Tensor]:
        """Losses of one iteration. image (B, 1, *S), label (B, *S) with the
        labeled items first. Returns a dict of scalar tensors; ``"loss"`` is
        the one to back-propagate. Host synchronisations: those of
        :func:`utils.separation.separation_step` (the data-dependent candidate
        selection and the class counts of the memory update and of each loss);
        the VAT noise goes to a GPU by a non-blocking copy from pinned memory."""
        model = self.model
        model.train()
        logits, features = model(image)
        probs = F.softmax(logits, dim=1)
        self._phase("forward")
        lbs = image.shape[0] if self.supervised_only else self.labeled_bs
        labels = label[:lbs]
        out: Dict[str, torch.Tensor] = {}
        zero = logits.new_zeros(())
        if self.cs and not self.supervised_only:
            out["loss_cs_l"], out["loss_cs_u"] = separation_step(
                features, probs, labels, lbs, self.memory, heads=model, memory_weighting=self.memory_weighting)
        else:
            out["loss_cs_l"] = out["loss_cs_u"] = zero
        self._phase("separation")
        out["loss_ce"] = cross_entropy_loss(logits[:lbs], labels).detach()  # logged, not optimised
        out["loss_dice"] = self.supervised_loss(probs[:lbs], labels)
        if self.vat is not None and not self.supervised_only:
            out["loss_lds"] = self.vat(model, image)
        else:
            out["loss_lds"] = zero
        self._phase("vat")
        w = 0.0 if self.supervised_only else self.weight(iter_num)
        out["loss"] = out["loss_dice"] + w * (out["loss_lds"] + 0.1 * (out["loss_cs_l"] + out["loss_cs_u"]))
        out["consistency_weight"] = torch.tensor(w)
        out["probs"] = probs.detach()
        return out

    def after_step(self, iter_num: int) -> None:
        """Nothing to do after the optimiser step."""

    def state_dict(self) -> Dict[str, Any]:
        """What a resumed run needs besides the model: the prototype memory."""
        return {"memory": [None if m is None else m.detach().cpu() for m in self.memory.memory]}

    def load_state_dict(self, state: Dict[str, Any], device: torch.device) -> None:
        self.memory.memory = [None if m is None else m.to(device) for m in state["memory"]]
