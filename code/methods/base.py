"""The method interface every semi-supervised method implements (SS-Net and the baselines).

The run engine (:mod:`engine.trainer`) knows a method only through this class:

* ``add_args(parser, dataset)`` (class method): the method's OWN flags, added to
  the training parser in a group of their own (``--help`` lists them under the
  method's name); ``Options``: the frozen dataclass of those flags (a field per
  flag, same name); ``options_from_flags(flags)`` builds and checks it once,
  after parsing;
* ``from_config(config, dataset, num_classes, device)`` (class method): the
  method with its network(s) built from the run's settings (:class:`RunConfig`,
  the engine's ``TrainConfig``; ``config.options`` is the method's ``Options``)
  and the dataset description;
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
import dataclasses
from dataclasses import dataclass
from collections.abc import Callable
from typing import Any, Protocol

import torch
from torch import nn

from datasets import DatasetDescription


#: field metadata of a value computed from the flags, not a flag itself
DERIVED = {"derived": True}


def options_from_flags(kind: type, flags: argparse.Namespace, **values: Any) -> Any:
    """An instance of the dataclass ``kind`` whose fields take the parsed flags' values of the same
    name (``values`` override them; a derived field absent from the flags keeps its default);
    list values become tuples.

    Raises:
        ValueError: a field that is no flag and has no default.
    """
    given = vars(flags)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(kind):
        if f.name in values:
            kwargs[f.name] = values[f.name]
        elif f.name in given:
            value = given[f.name]
            kwargs[f.name] = tuple(value) if isinstance(value, list) else value
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ValueError(f"no flag --{f.name} for {kind.__name__}.{f.name}")
    return kind(**kwargs)


@dataclass(frozen=True)
class NoOptions:
    """The options of a method without flags of its own."""


def read_weights_only(path: str, device: torch.device) -> Any:
    """``torch.load(path, map_location=device, weights_only=True)``: a file that needs Python
    objects is refused, never run."""
    return torch.load(path, map_location=device, weights_only=True)


@dataclass(frozen=True)
class Stage:
    """One training stage of a method (most have one; BCP pre-trains, then self-trains).

    Attributes:
        name: e.g. ``"train"``, ``"pre_train"``.
        folder: its subfolder of the snapshot folder (``""``: the snapshot folder itself, where
            the final stage writes the checkpoints the test scripts read).
        iterations: how many iterations it runs.
        lr_steps: the learning rate x0.1 every ``--lr_step`` iterations of the stage (where the
            dataset's schedule steps); False: constant.
        lr_poly: a power p: the learning rate is ``base * (1 - max(n - 1, 0) / iterations) ** p``
            after n iterations instead (AD-MT's released poly schedule, set after each step).
    """

    name: str
    folder: str
    iterations: int
    lr_steps: bool = True
    lr_poly: float | None = None


class RunConfig(Protocol):
    """What a method reads of the run's settings (the engine's ``TrainConfig`` has these fields)."""

    model: str
    labeled_bs: int
    batch_size: int
    max_iterations: int
    patch_size: tuple[int, ...]
    supervised_only: bool
    options: Any


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

    #: the frozen dataclass of this method's own flags (fields named as the flags)
    Options: type = NoOptions
    #: a state for the trainer's optimiser to start from (None: a fresh SGD)
    optimizer_state: dict[str, Any] | None = None

    @classmethod
    def run_defaults(cls, dataset: DatasetDescription, flags: argparse.Namespace) -> dict[str, Any]:
        """Defaults of the run's flags (``--batch_size``, ``--max_iterations``, ...) that this
        method's public code sets otherwise than SS-Net's, used where the flag is not given
        (none by default)."""
        return {}

    @classmethod
    def train_dataset(cls, dataset: DatasetDescription, root: str, patch_size: tuple[int, ...], cache: bool) -> Any:
        """The training loader's dataset (the description's, with its released augmentation, by
        default; a method that needs other views of each item returns its own)."""
        return dataset.train_dataset(root, patch_size, cache)

    @classmethod
    def batch_sampler(cls, labeled: list[int], unlabeled: list[int], batch_size: int, labeled_bs: int) -> Any:
        """The training batches' indices: ``labeled_bs`` labeled then ``batch_size - labeled_bs``
        unlabeled items, an epoch being one pass over the labeled ones (the released two-stream
        sampler) by default."""
        from dataloaders.sampler import TwoStreamBatchSampler
        return TwoStreamBatchSampler(labeled, unlabeled, batch_size, batch_size - labeled_bs)

    @classmethod
    def stages(cls, config: RunConfig, dataset: DatasetDescription) -> tuple[Stage, ...]:
        """The training stages, in order (one by default: ``--max_iterations`` in the snapshot folder)."""
        return (Stage("train", "", config.max_iterations),)

    @classmethod
    def for_stage(cls, config: RunConfig, dataset: str | DatasetDescription, num_classes: int,
                  device: torch.device, stage: Stage, previous: str | None,
                  read: Callable[[str, torch.device], Any] = read_weights_only) -> Method:
        """The method of ``stage`` (``previous``: the folder of the stage before it, whose
        checkpoints it may start from, read with ``read(path, device)``: the engine passes its
        reader, which names an empty, damaged or refused file in one message);
        :meth:`from_config` by default."""
        return cls.from_config(config, dataset, num_classes, device)

    @classmethod
    def saves_best_optimizer(cls, dataset: DatasetDescription, stage: Stage) -> bool:
        """Whether ``stage`` also keeps the optimiser state of its best validation
        (``best_optimizer.pth``) for the next stage (no by default)."""
        return False

    @classmethod
    def options_from_flags(cls, flags: argparse.Namespace) -> Any:
        """This method's :attr:`Options` from the parsed flags, checked (at parse time, before
        anything is read or written).

        Raises:
            ValueError: a flag this method refuses.
        """
        return options_from_flags(cls.Options, flags)

    @classmethod
    @abc.abstractmethod
    def build_model(cls, dataset: str | DatasetDescription, num_classes: int, mode: str = "train",
                    device: Any | None = None, model: str | None = None) -> nn.Module:
        """The method's network (``mode`` ``"train"`` or ``"test"``); ``model`` is ``--model``."""

    @classmethod
    def test_model_kwargs(cls, state: Any) -> dict[str, Any]:
        """Extra :meth:`build_model` arguments read off the weights ``state`` of the checkpoint a
        test script evaluates (none by default; SASSNet/DTC: the heads the shapes show)."""
        return {}

    @classmethod
    @abc.abstractmethod
    def from_config(cls, config: RunConfig, dataset: str | DatasetDescription, num_classes: int,
                    device: torch.device) -> Method:
        """The method as the run's settings describe it (``config.options``: its :attr:`Options`),
        its networks on ``device``."""

    @abc.abstractmethod
    def step(self, image: torch.Tensor, label: torch.Tensor, iter_num: int) -> dict[str, torch.Tensor]:
        """Losses of one iteration: image (B, 1, *S), label (B, *S), labeled items first."""

    def after_step(self, iter_num: int) -> None:
        """Work after the optimiser step (nothing by default)."""

    def kept_best(self, score: float) -> float:
        """The best score kept after a validation ``score`` beat the best so far (the next score must
        beat what this returns): ``score`` itself by default."""
        return score

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
