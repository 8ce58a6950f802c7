"""The method interface every semi-supervised method implements (SS-Net and the baselines).

The run engine (:mod:`engine.trainer`) knows a method only through this class:

* ``add_args(parser, dataset)`` (class method): the method's OWN flags, added to
  the training parser in a group of their own (``--help`` lists them under the
  method's name); ``finish_args(args)`` checks and completes them after parsing;
* ``from_args(args, dataset, num_classes, device)`` (class method): the method
  with its network(s) built from the parsed flags and the dataset description;
* ``build_model(dataset, num_classes, mode, device, model)`` (class method): the
  network whose state_dict is the checkpoint; its first output is the one
  validated and tested;
* ``model``: that network (the trainer's SGD optimises ``model.parameters()``);
* ``log_keys``: names of the scalars :meth:`step` returns, logged as means;
* ``step(image, label, iter_num) -> dict``: one iteration's losses; ``"loss"`` is
  back-propagated by the trainer, ``"probs"`` (optional) are the batch's softmax
  probabilities for image snapshots;
* ``prepare_step(image)``: host work of the coming step that may run before it
  (SS-Net draws its VAT noise there on CUDA); ``step_uses_cpu_generator``: whether
  the step after it draws from the global CPU generators (if not, the trainer may
  start the next sampler epoch before the step);
* ``cuda_nondeterministic``: operations of the trained losses without a
  deterministic CUDA kernel (``--deterministic 2`` refuses them at parse time);
* ``after_step(iter_num)``: work after the optimiser step (EMA teacher,
  discriminator update); ``iter_num`` counts the iterations done;
* ``state_dict()`` / ``load_state_dict(state, device)``: what a resumed run needs
  besides the model and its optimiser (prototype memory, teacher, discriminator).

Methods raise ``ValueError`` (bad flags, batches or datasets) or
``RuntimeError``; the scripts turn them into one-line messages.
"""
from __future__ import annotations
import abc
import argparse
from typing import Any

import torch
from torch import nn

from datasets import DatasetDescription


class Method(abc.ABC):
    """Base class of every method (see the module docstring for the contract)."""

    #: the ``--method`` value
    key: str = ""
    #: display name, the default ``--exp`` (snapshot folder ``<dataset>_<name>_<n>_labeled``)
    name: str = "Method"
    log_keys: tuple[str, ...] = ("loss",)
    #: operations of this method's trained losses (not its networks, which
    #: :func:`networks.net_factory.cuda_nondeterministic_ops` inspects) that have no
    #: deterministic CUDA kernel, e.g. the spatial cross-entropy's ``nll_loss2d``
    cuda_nondeterministic: tuple[str, ...] = ()
    model: nn.Module

    #: the rest of a step, after :meth:`prepare_step`, may draw from the global CPU generators
    #: (e.g. dropout on the CPU); False lets the trainer start the next sampler epoch, whose
    #: loader draws its workers' base seed, before the step instead of after it
    step_uses_cpu_generator: bool = True

    def prepare_step(self, image: torch.Tensor) -> None:
        """Host work for the coming :meth:`step` that may run before it starts, while the device
        is still busy with the previous iteration (nothing by default)."""

    @classmethod
    def add_args(cls, parser: argparse._ActionsContainer, dataset: DatasetDescription) -> None:
        """Add this class's own flags (defaults may come from ``dataset``); none by default."""

    @classmethod
    def finish_args(cls, args: argparse.Namespace) -> None:
        """Check and complete the parsed flags of the method that runs (nothing by default).

        Raises:
            ValueError: a flag this method refuses.
        """

    @classmethod
    @abc.abstractmethod
    def build_model(cls, dataset: str | DatasetDescription, num_classes: int, mode: str = "train",
                    device: Any | None = None, model: str | None = None) -> nn.Module:
        """The method's network (``mode`` ``"train"`` or ``"test"``); ``model`` is ``--model``."""

    @classmethod
    @abc.abstractmethod
    def from_args(cls, args: argparse.Namespace, dataset: str | DatasetDescription, num_classes: int,
                  device: torch.device) -> Method:
        """The method as the parsed flags describe it, its networks on ``device``."""

    @abc.abstractmethod
    def step(self, image: torch.Tensor, label: torch.Tensor, iter_num: int) -> dict[str, torch.Tensor]:
        """Losses of one iteration: image (B, 1, *S), label (B, *S), labeled items first."""

    def after_step(self, iter_num: int) -> None:
        """Work after the optimiser step (nothing by default)."""

    def state_dict(self) -> dict[str, Any]:
        """Extra state for ``--resume`` besides the model (none by default)."""
        return {}

    def load_state_dict(self, state: dict[str, Any], device: torch.device) -> None:
        """Restore :meth:`state_dict` (nothing by default)."""


def add_method_args(parser: argparse.ArgumentParser, dataset: DatasetDescription, classes: Any) -> None:
    """Add every method's own flags to ``parser``, one argument group per class that defines
    ``add_args`` (a base class's flags once, however many methods inherit them)."""
    done = set()
    for cls in classes:
        for klass in reversed(cls.__mro__):
            own = vars(klass).get("add_args")
            if own is None or klass in done or klass is Method:
                continue
            done.add(klass)
            title = vars(klass).get("args_title") or f"--method {klass.key}"
            klass.add_args(parser.add_argument_group(title), dataset)
