"""One description per dataset, and the registry the rest of the code reads.

A :class:`DatasetDescription` holds what differs between the datasets: the
classes, the spatial rank, the released training setting (patch, batch,
iterations, schedule, loss weights), the network each method trains, the
training set and its labeled part, and which validation and test procedure
applies. The methods (:mod:`methods`), the training and test scripts, the run
engine and ``check_data.py`` take their dataset facts from here; none of them
compares dataset names.

Adding a dataset (say Pancreas-CT with a V-Net, as MC-Net's authors did):

1. write ``code/datasets/<name>.py`` defining ``DESCRIPTION =
   DatasetDescription(...)`` (copy ``la.py`` for a 3D sliding-window setting,
   ``acdc.py`` for a 2D slice setting), with a ``train_dataset`` function
   returning its training ``torch.utils.data.Dataset``;
2. add one line ``"<Name>": "datasets.<name>"`` to :data:`REGISTRY`.

``engine.training.train(args, get_dataset("<Name>"))`` then trains any method
listed in its ``methods`` and writes ``model/<Name>_<exp>_<n>_labeled/<model>/``
(tests/test_datasets_registry.py does this with a tiny made-up dataset).
"""
import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

#: dataset name (the snapshot folder prefix, ``--dataset`` choice) -> module defining ``DESCRIPTION``
REGISTRY: Dict[str, str] = {
    "LA": "datasets.la",
    "ACDC": "datasets.acdc",
}


@dataclass(frozen=True)
class MethodSetting:
    """How one method trains on a dataset, as in that method's public code.

    Attributes:
        network: a :func:`networks.net_factory.net_factory` name.
        weight, rampup: a baseline's own unsupervised weight lambda and ramp
            length L (units of 150 iterations); SS-Net's are the description's
            ``consistency`` / ``consistency_rampup``.
        options: further released constants of that method on this dataset.
    """

    network: str
    weight: float = 0.0
    rampup: float = 0.0
    options: Mapping[str, Any] = field(default_factory=dict)


def first_items(root: str, labelnum: int) -> int:
    """``labeled_items`` when ``--labelnum`` counts training items: the first ``labelnum`` are labeled."""
    return labelnum


def method_table(networks: Mapping[str, str], weights: Mapping[str, float], rampup: float,
                 options: Optional[Mapping[str, Mapping[str, Any]]] = None) -> Dict[str, MethodSetting]:
    """``methods`` of a description: ``--method`` -> :class:`MethodSetting` from the network of each
    method, each baseline's own weight lambda, the baselines' ramp length L (one per dataset in
    their public code) and further constants per method."""
    options = options or {}
    return {key: MethodSetting(network, weights.get(key, 0.0), rampup if key in weights else 0.0,
                               dict(options.get(key, {})))
            for key, network in networks.items()}


@dataclass(frozen=True)
class DatasetDescription:
    """Everything dataset-specific a run needs (the released setting as defaults).

    Attributes:
        name: ``"LA"``, ``"ACDC"``: snapshot folder prefix ``<name>_<exp>_<n>_labeled``.
        num_classes: C, background included.
        class_names: names of classes 1..C-1.
        spatial_dims: 3 (volumes, (B, 1, H, W, D)) or 2 (slices, (B, 1, H, W)).
        root_path: default data folder, relative to the repository root.
        train_list: the list file of training items in the data folder.
        item: what one training item is (``"cases"``, ``"slices"``), for messages.
        case_path: ``(root, name) -> path`` of a validation/test volume's h5 file (a name of
            ``test.list`` / ``val.list``).
        labelnum, labelnum_help: default ``--labelnum`` and its help text.
        labelnum_unit: what ``--labelnum`` counts (``"cases"``, ``"patients"``).
        labeled_items: ``(root, labelnum) -> n``: how many leading training items are labeled.
        train_dataset: ``(root, patch_size, cache) -> Dataset`` of the training items with
            the released augmentation (the training loader's dataset).
        patch_size, batch_size, labeled_bs, max_iterations: the released training setting.
        lr_step: multiply the learning rate by 0.1 every ``lr_step`` iterations (a
            ``--lr_step`` flag); ``None``: constant learning rate.
        consistency, consistency_rampup, magnitude: SS-Net's w(t) and VAT epsilon.
        vat_distance: SS-Net's VAT distance for ``--lds dice`` (see :mod:`utils.vat`).
        dice: the supervised Dice form: ``"foreground"`` (binary Dice of channel 1)
            or ``"classes"`` (mean over the C classes, one-hot targets).
        methods: ``--method`` key -> :class:`MethodSetting`.
        select, select_help, val_num, val_start: model selection defaults.
        holdout_from_train: ``--select val`` holds out the last ``--val_num``
            training items (True) or reads ``val.list`` (False).
        validation: the validation and test procedure, ``"sliding_window"`` (3D
            windows over whole volumes) or ``"slices"`` (each slice resized to
            the patch); see :mod:`engine.training`.
        window_stride: ``(xy, z)`` strides of the sliding window in validation and test
            (needed with ``validation="sliding_window"``; released LA: 18, 4).
        validation_draws: the released loop's validation makes one torch draw
            (a DataLoader iterator's base seed) each time it runs.
        layout: which on-disk layout ``check_data.py`` checks (``"LA"``, ``"ACDC"``; none if empty).
        mismatch_hints: for ``test_*.py --expect``: ``"images"``, what makes the images differ
            from the authors'; ``"distances"``, what changes only the surface distances.
    """

    name: str
    num_classes: int
    class_names: Tuple[str, ...]
    spatial_dims: int
    root_path: str
    case_path: Callable[[str, str], str]
    train_dataset: Callable[[str, Tuple[int, ...], bool], Any]
    labelnum: int
    labelnum_help: str
    patch_size: Tuple[int, ...]
    batch_size: int
    labeled_bs: int
    max_iterations: int
    consistency: float
    consistency_rampup: float
    magnitude: float
    vat_distance: str
    dice: str
    methods: Mapping[str, MethodSetting]
    select: str
    val_start: int
    validation: str
    train_list: str = "train.list"
    item: str = "cases"
    labelnum_unit: str = "cases"
    labeled_items: Callable[[str, int], int] = first_items
    lr_step: Optional[int] = None
    select_help: str = "model selection: val, test or last (final iterate)"
    val_num: int = 0
    holdout_from_train: bool = False
    window_stride: Optional[Tuple[int, int]] = None
    validation_draws: bool = False
    layout: str = ""
    mismatch_hints: Mapping[str, str] = field(default_factory=dict)

    @property
    def model(self) -> str:
        """SS-Net's network (the ``--model`` default): the ``"ssnet"`` entry of ``methods``."""
        return self.method("ssnet").network

    def method(self, key: str) -> MethodSetting:
        """The setting of ``--method key`` on this dataset; a ValueError names those there are."""
        if key not in self.methods:
            raise ValueError(f"--method {key} has no setting for the {self.name} dataset "
                             f"(its description, {REGISTRY.get(self.name, self.name)}, lists: {', '.join(sorted(self.methods))})")
        return self.methods[key]


def names() -> Tuple[str, ...]:
    """The registered dataset names."""
    return tuple(REGISTRY)


def get_dataset(dataset: "str | DatasetDescription") -> DatasetDescription:
    """The description of ``dataset`` (a name, or a description, returned as it is).

    Raises:
        ValueError: an unknown name.
    """
    if isinstance(dataset, DatasetDescription):
        return dataset
    if dataset not in REGISTRY:
        raise ValueError(f"unknown dataset {dataset!r}; registered: {', '.join(names())} (datasets/__init__.py)")
    return importlib.import_module(REGISTRY[dataset]).DESCRIPTION

