"""Semi-supervised methods, one module each, behind one small interface.

A method object has:

* ``model``: the network the trainer optimises (SGD over ``model.parameters()``)
  and validates, and whose state_dict is the checkpoint;
* ``log_keys``: names of the scalars that ``step`` returns (the trainer logs
  their means every ``--log_interval`` iterations);
* ``step(image, label, iter_num) -> dict``: one iteration's losses; ``"loss"``
  is back-propagated by the trainer; ``"probs"`` (optional) are the softmax
  probabilities of the batch for image snapshots;
* ``after_step(iter_num)``: work after the optimiser step (e.g. an EMA teacher
  or a discriminator update); ``iter_num`` counts the iterations done;
* ``state_dict()`` / ``load_state_dict(state, device)``: extra state a resumed
  run needs (prototype memory, teacher, discriminator and its optimiser);
* classmethod ``from_args(args, dataset, num_classes, device)``;
* optional classmethod ``build_model(dataset, num_classes, mode, device)``: the
  method's network, whose first output is the one validated and tested (the
  baselines have it; SS-Net's network is ``net_factory(--model)``).

``get_method(name)`` returns the class for ``--method``;
``build_test_model(...)`` builds the network a test script evaluates.

The baselines of Tables 1-2 (README "Baselines"): ``uamt`` (UA-MT), ``sassnet``
(SASSNet), ``dtc`` (DTC), ``urpc`` (URPC), ``mcnet`` (MC-Net v1); each keeps
the losses, weights and ramps of its public code under SS-Net's training
setting (iterations, batch, optimiser, schedule, data, model selection).
"""
import importlib
from typing import Any, Optional

from torch import nn

#: --method value -> "module:Class"
METHODS = {
    "ssnet": "methods.ssnet:SSNet",
    "uamt": "methods.uamt:UAMT",
    "sassnet": "methods.sassnet:SASSNet",
    "dtc": "methods.dtc:DTC",
    "urpc": "methods.urpc:URPC",
    "mcnet": "methods.mcnet:MCNet",
}


def get_method(name: str) -> Any:
    if name not in METHODS:
        raise ValueError(f"unknown --method {name!r}; choose one of {', '.join(sorted(METHODS))}")
    module, cls = METHODS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def build_test_model(method: str, dataset: str, num_classes: int, device: Any,
                     model: Optional[str] = None) -> nn.Module:
    """The network whose checkpoint a test script loads for ``--method`` (test mode, no dropout).

    Its first output is the one the method is tested on: SS-Net's
    ``net_factory(model)`` logits; UA-MT the student; SASSNet/DTC the
    segmentation head; URPC the main (full-resolution) output; MC-Net decoder 1.

    Args:
        method: a key of :data:`METHODS`.
        dataset: ``"LA"`` or ``"ACDC"``.
        num_classes: output classes C.
        device: where to build it.
        model: network name for methods without ``build_model`` (SS-Net: ``VNet``/``unet``).
    """
    cls = get_method(method)
    build = getattr(cls, "build_model", None)
    if build is not None:
        return build(dataset, num_classes, "test", device)
    from networks.net_factory import net_factory

    if model is None:
        model = "VNet" if dataset == "LA" else "unet"
    return net_factory(model, in_chns=1, class_num=num_classes, mode="test", device=device)
