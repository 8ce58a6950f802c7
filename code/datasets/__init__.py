"""One description per dataset, and the registry the rest of the code reads.

A :class:`DatasetDescription` holds what differs between the datasets: the
classes, the spatial rank, the released training setting (patch, batch,
iterations, schedule, loss weights), the network each method trains, the
training set and its labeled part, and which validation and test procedure
applies (:class:`SlidingWindow` or :class:`SliceWise`, typed objects holding the
facts that procedure needs). The methods (:mod:`methods`), the training and test
scripts, the run engine and ``check_data.py`` take their dataset facts from here;
none of them compares dataset names. The engine maps each procedure type to its
implementation (training validation, test procedure and their flags); this
package does not import the engine.

Adding a dataset (say Pancreas-CT with a V-Net, as MC-Net's authors did):

1. write ``code/datasets/<name>.py`` defining ``DESCRIPTION =
   DatasetDescription(...)`` (copy ``la.py`` for a 3D sliding-window setting,
   ``acdc.py`` for a 2D slice setting), with a ``train_dataset`` function
   returning its training ``torch.utils.data.Dataset``;
2. add one line ``"<Name>": "datasets.<name>"`` to :data:`REGISTRY`.

``engine.training.train(args, get_dataset("<Name>"))`` then trains any method
listed in its ``methods`` and writes ``model/<Name>_<exp>_<n>_labeled/<model>/``;
``engine.evaluation.test_main(get_dataset("<Name>"), argv)`` tests its checkpoints
with the description's procedure and writes ``test/performance.json`` and the
other result files (tests/test_datasets_registry.py does both with a tiny made-up
dataset). Two-line scripts like ``train_la.py`` and ``test_la.py`` give it
command lines.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

#: dataset name (the snapshot folder prefix, ``--dataset`` choice) -> module defining ``DESCRIPTION``
REGISTRY: dict[str, str] = {
    "LA": "datasets.la",
    "ACDC": "datasets.acdc",
}


class DiceForm(str, Enum):
    """A dataset's supervised Dice: ``FOREGROUND``, the binary Dice of channel 1 against
    [label == 1] (LA); ``CLASSES``, the mean over the C classes with one-hot targets (ACDC)."""

    FOREGROUND = "foreground"
    CLASSES = "classes"


class VatDistance(str, Enum):
    """SS-Net's VAT distance for ``--lds dice`` (:func:`utils.vat.vat_distance`): ``DICE``, the
    binary Dice distance of channel 1 (LA); ``CLASS_DICE``, the class-averaged one (ACDC)."""

    DICE = "dice"
    CLASS_DICE = "class_dice"


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


@dataclass(frozen=True)
class SlidingWindow:
    """Validation and test by 3D windows over whole volumes, softmax probabilities averaged
    (released LA procedure); the test scores the foreground of each case.

    Attributes:
        stride_xy, stride_z: window strides along x/y and z (released LA: 18, 4).
        nms: the test's ``--nms`` default: keep the largest connected component (released LA: on).
        sorted_cases: test the names of ``test.list`` stripped of extensions and sorted
            (False: as listed, predictions named by their index there, as released for LA).
    """

    stride_xy: int
    stride_z: int
    nms: bool = True
    sorted_cases: bool = False

    def __post_init__(self) -> None:
        for name in ("stride_xy", "stride_z"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"SlidingWindow: {name} must be >= 1, got {getattr(self, name)}")


@dataclass(frozen=True)
class SliceWise:
    """Validation and test slice by slice, each slice zoomed to the patch and back (released
    ACDC procedure); the test scores each foreground class of each volume.

    Attributes:
        nms: the test's ``--nms`` default: keep the largest 3D component of each class
            (not in the released ACDC test: off).
        sorted_cases: test the names of ``test.list`` stripped of extensions and sorted
            (released ACDC test: True).
        nii_spacing: voxel spacing written into the saved NIfTI files (released ACDC: (1, 1, 10)).
    """

    nms: bool = False
    sorted_cases: bool = True
    nii_spacing: tuple[float, float, float] = (1.0, 1.0, 10.0)


#: the procedure types a description may name (the engine implements each)
Procedure = SlidingWindow | SliceWise


def first_items(root: str, labelnum: int) -> int:
    """``labeled_items`` when ``--labelnum`` counts training items: the first ``labelnum`` are labeled."""
    return labelnum


def method_table(networks: Mapping[str, str], weights: Mapping[str, float], rampup: float,
                 options: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, MethodSetting]:
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
        labelnum: default ``--labelnum``.
        labelnum_shares: ``--labelnum`` values of the paper's tables and the share of the
            training set they label (``{4: "5%", 8: "10%", 80: "all"}``), for ``--help``.
        labelnum_unit: what ``--labelnum`` counts (``"cases"``, ``"patients"``).
        labeled_items: ``(root, labelnum) -> n``: how many leading training items are labeled.
        train_dataset: ``(root, patch_size, cache) -> Dataset`` of the training items with
            the released augmentation (the training loader's dataset).
        patch_size, batch_size, labeled_bs, max_iterations: the released training setting.
        lr_step: multiply the learning rate by 0.1 every ``lr_step`` iterations (a
            ``--lr_step`` flag); ``None``: constant learning rate.
        consistency, consistency_rampup, magnitude: SS-Net's w(t) and VAT epsilon.
        vat_distance: SS-Net's VAT distance for ``--lds dice`` (:class:`VatDistance`).
        dice: the supervised Dice form (:class:`DiceForm`).
        methods: ``--method`` key -> :class:`MethodSetting`.
        select, val_num, val_start: model selection defaults (``select`` is the released
            code's choice).
        holdout_from_train: ``--select val`` holds out the last ``--val_num``
            training items (True) or reads ``val.list`` (False).
        procedure: the validation and test procedure with its facts, a
            :class:`SlidingWindow` (3D windows over whole volumes) or a
            :class:`SliceWise` (each slice resized to the patch); the engine maps its
            type to the implementation (:mod:`engine.training`, :mod:`engine.testing`).
        validation_draws: the released loop's validation makes one torch draw
            (a DataLoader iterator's base seed) each time it runs.
        layout: which on-disk layout ``check_data.py`` checks (``"LA"``, ``"ACDC"``; none if empty).
        mismatch_hints: for ``test_*.py --expect``: ``"images"``, what makes the images differ
            from the authors'; ``"distances"``, what changes only the surface distances.
    """

    name: str
    num_classes: int
    class_names: tuple[str, ...]
    spatial_dims: int
    root_path: str
    case_path: Callable[[str, str], str]
    train_dataset: Callable[[str, tuple[int, ...], bool], Any]
    labelnum: int
    patch_size: tuple[int, ...]
    batch_size: int
    labeled_bs: int
    max_iterations: int
    consistency: float
    consistency_rampup: float
    magnitude: float
    vat_distance: VatDistance
    dice: DiceForm
    methods: Mapping[str, MethodSetting]
    select: str
    val_start: int
    procedure: Procedure
    train_list: str = "train.list"
    item: str = "cases"
    labelnum_unit: str = "cases"
    labeled_items: Callable[[str, int], int] = first_items
    lr_step: int | None = None
    labelnum_shares: Mapping[int, str] = field(default_factory=dict)
    val_num: int = 0
    holdout_from_train: bool = False
    validation_draws: bool = False
    layout: str = ""
    mismatch_hints: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # the forms as their typed values (a plain string names one; another string is refused here)
        object.__setattr__(self, "dice", DiceForm(self.dice))
        object.__setattr__(self, "vat_distance", VatDistance(self.vat_distance))
        if not isinstance(self.procedure, (SlidingWindow, SliceWise)):
            raise ValueError(f"dataset {self.name}: procedure must be a SlidingWindow(stride_xy, stride_z) or a "
                             f"SliceWise() (datasets/__init__.py), got {self.procedure!r}")

    @property
    def model(self) -> str:
        """SS-Net's network (the ``--model`` default): the ``"ssnet"`` entry of ``methods``."""
        return self.method("ssnet").network

    def method(self, key: str) -> MethodSetting:
        """The setting of ``--method key`` on this dataset; a ValueError names those there are."""
        if key not in self.methods:
            listed = ", ".join(sorted(self.methods))
            raise ValueError(f"--method {key} has no setting for the {self.name} dataset "
                             f"(its description, {REGISTRY.get(self.name, self.name)}, lists: {listed})")
        return self.methods[key]


def names() -> tuple[str, ...]:
    """The registered dataset names."""
    return tuple(REGISTRY)


def get_dataset(dataset: str | DatasetDescription) -> DatasetDescription:
    """The description of ``dataset`` (a name, or a description, returned as it is).

    Raises:
        ValueError: an unknown name.
    """
    if isinstance(dataset, DatasetDescription):
        return dataset
    if dataset not in REGISTRY:
        raise ValueError(f"unknown dataset {dataset!r}; registered: {', '.join(names())} (datasets/__init__.py)")
    return importlib.import_module(REGISTRY[dataset]).DESCRIPTION

