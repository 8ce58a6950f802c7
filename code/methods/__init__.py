"""Semi-supervised methods, one module each, behind one interface (:class:`methods.base.Method`).

``get_method(name)`` returns the class for ``--method``; ``add_method_args``
adds every method's own flags to a training parser; ``build_test_model(...)``
builds the network a test script evaluates. A method reads its dataset facts
(network, loss forms, released weights) from the dataset description
(:mod:`datasets`), never from the dataset's name.

The baselines of Tables 1-2 (README "Baselines"): ``uamt`` (UA-MT), ``sassnet``
(SASSNet), ``dtc`` (DTC), ``urpc`` (URPC), ``mcnet`` (MC-Net v1); each keeps
the losses, weights and ramps of its public code under SS-Net's training
setting (iterations, batch, optimiser, schedule, data, model selection).

SS-Net's successors (README "Successors"): ``bcp`` (BCP, two stages), each with
its own released batch, iterations and schedule as the defaults of the flags not
given (``Method.run_defaults``, ``Method.stages``).
"""
from __future__ import annotations
import argparse
import importlib
from typing import Any

from torch import nn

from datasets import DatasetDescription
from methods.base import Method, add_method_args as _add_method_args

#: --method value -> "module:Class"
METHODS = {
    "ssnet": "methods.ssnet:SSNet",
    "uamt": "methods.uamt:UAMT",
    "sassnet": "methods.sassnet:SASSNet",
    "dtc": "methods.dtc:DTC",
    "urpc": "methods.urpc:URPC",
    "mcnet": "methods.mcnet:MCNet",
    "bcp": "methods.bcp:BCP",
    "admt": "methods.admt:ADMT",
}


def get_method(name: str) -> type[Method]:
    """The class of ``--method name``.

    Raises:
        ValueError: an unknown name.
    """
    if name not in METHODS:
        raise ValueError(f"unknown --method {name!r}; choose one of {', '.join(sorted(METHODS))}")
    module, cls = METHODS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def add_method_args(parser: argparse.ArgumentParser, dataset: DatasetDescription) -> None:
    """Every method's own flags, grouped by the class that defines them (see :mod:`methods.base`)."""
    _add_method_args(parser, dataset, [get_method(name) for name in METHODS])


def build_test_model(method: str, dataset: Any, num_classes: int, device: Any,
                     model: str | None = None, state: Any = None) -> nn.Module:
    """The network whose checkpoint a test script loads for ``--method`` (test mode, no dropout).

    Its first output is the one the method is tested on: SS-Net's
    ``net_factory(model)`` logits; UA-MT the student; SASSNet/DTC the
    segmentation head; URPC the main (full-resolution) output; MC-Net decoder 1.

    Args:
        method: a key of :data:`METHODS`.
        dataset: a dataset name or description (:mod:`datasets`).
        num_classes: output classes C.
        device: where to build it.
        model: SS-Net's network name (``--model``; default the dataset's).
        state: the weights the network will load (optional): the method may read its shape off
            them (SASSNet/DTC: ``--baseline_heads`` of the run, from the heads' shapes).
    """
    cls = get_method(method)
    kwargs = {} if state is None else cls.test_model_kwargs(state)
    return cls.build_model(dataset, num_classes, "test", device, model=model, **kwargs)
