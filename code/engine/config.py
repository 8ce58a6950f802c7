"""The typed settings of a run, each built once from the parsed flags, checked in one place and
frozen: :class:`TrainConfig` (the training scripts) and :class:`TestConfig` (the test scripts).

The flags stay argparse flags, with their help text and the dataset description's defaults
(:func:`engine.training.build_parser`, :func:`engine.evaluation.build_parser`); every flag is a
field of the config of the same name (``tests/test_config.py`` checks the parsers against the
fields). A method's own flags are the fields of its ``Options`` (:mod:`methods.base`), held in
``TrainConfig.options``; a test procedure's flags are those of its options type
(:mod:`engine.testing`), held in ``TestConfig.procedure``.

``to_dict()`` is the flat ``{flag: value}`` form written to ``config.json`` and ``last.pth``
(and compared on ``--resume``).
"""
from __future__ import annotations

import argparse
import dataclasses
import math
from dataclasses import dataclass, field, fields
from typing import Any

from methods.base import DERIVED, options_from_flags

__all__ = ["TrainConfig", "TestConfig", "options_from_flags", "flat_dict", "DERIVED"]


def _plain(value: Any) -> Any:
    """Tuples as lists (the JSON form, and the form the flags had in older ``config.json``)."""
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


def flat_dict(obj: Any) -> dict[str, Any]:
    """``{name: value}`` of a config or options dataclass, nested dataclasses merged in (in field
    order; a nested dataclass's fields follow the outer ones), tuples as lists."""
    out: dict[str, Any] = {}
    nested = []
    for f in fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            nested.append(value)
        elif value is not None or not f.metadata.get("omit_none"):
            out[f.name] = _plain(value)
    for value in nested:
        out.update(flat_dict(value))
    return out


#: a procedure's own validation flags: absent from config.json where the procedure has none
_PROCEDURE_FLAG = {"omit_none": True}


@dataclass(frozen=True)
class TrainConfig:
    """Every setting of one training run (the training flags; see ``--help`` for each).

    ``options`` is the method's own typed options (``Method.Options``); ``lr_step`` is None
    where the dataset's schedule has no steps; ``stride_xy``/``stride_z`` (sliding-window
    validation) and ``val_batch`` (slice-wise validation) are None where the dataset's
    validation procedure has no such flag.
    """

    dataset: str
    root_path: str
    method: str
    exp: str
    model: str
    labelnum: int
    max_iterations: int
    batch_size: int
    labeled_bs: int
    base_lr: float
    seed: int
    deterministic: int
    patch_size: tuple[int, ...]
    device: str
    gpu: str | None
    num_workers: int
    keep_host_memory: int
    loader: str
    cache_data: int
    zero_grad: str
    select: str
    val_num: int
    val_start: int
    val_interval: int
    sw_batch: int
    log_interval: int
    image_interval: int
    save_interval: int
    resume: bool
    overwrite: bool
    model_root: str
    tf32: int
    amp: str
    channels_last: str
    compile: bool
    supervised_only: bool
    lr_step: int | None = field(default=None, metadata=_PROCEDURE_FLAG)
    stride_xy: int | None = field(default=None, metadata=_PROCEDURE_FLAG)
    stride_z: int | None = field(default=None, metadata=_PROCEDURE_FLAG)
    val_batch: int | None = field(default=None, metadata=_PROCEDURE_FLAG)
    options: Any = None

    @classmethod
    def from_flags(cls, flags: argparse.Namespace, dataset: str, options: Any, **values: Any) -> TrainConfig:
        """The config of the parsed training ``flags`` and the method's ``options``; ``values``
        replace flags (``exp`` and ``device`` once completed). Checked (:meth:`check`).

        Raises:
            ValueError: naming the bad flag.
        """
        config = options_from_flags(cls, flags, dataset=dataset, options=options, **values)
        config.check()
        return config

    def check(self) -> None:
        """The checks that need no file: ranges and combinations of flags.

        Raises:
            ValueError: naming the flag and what it must be.
        """
        if self.resume and self.overwrite:
            raise ValueError("--resume continues the run in the snapshot folder, --overwrite deletes it: give one")
        if self.labelnum < 1:
            raise ValueError(f"--labelnum must be >= 1, got {self.labelnum}")
        if self.batch_size < 1:
            raise ValueError(f"--batch_size must be >= 1, got {self.batch_size}")
        if not 0 < self.labeled_bs <= self.batch_size:
            raise ValueError(f"--labeled_bs must be in 1..--batch_size ({self.batch_size}), got {self.labeled_bs}")
        if not self.supervised_only and self.labeled_bs == self.batch_size:
            raise ValueError("--labeled_bs equals --batch_size: no unlabeled items per batch; "
                             "use --supervised_only for labeled-only training")
        if not (math.isfinite(self.base_lr) and self.base_lr > 0):
            raise ValueError(f"--base_lr must be a positive number, got {self.base_lr}")
        if any(s < 1 for s in self.patch_size):
            raise ValueError(f"--patch_size must be positive, got {' '.join(map(str, self.patch_size))}")
        for flag in ("max_iterations", "log_interval", "val_interval", "save_interval", "image_interval", "sw_batch",
                     "stride_xy", "stride_z", "val_batch", "lr_step"):
            value = getattr(self, flag)  # a procedure's or schedule's own flag may be None
            if value is not None and value < 1:
                raise ValueError(f"--{flag} must be >= 1, got {value}")
        for flag in ("val_start", "num_workers"):
            if getattr(self, flag) < 0:
                raise ValueError(f"--{flag} must be >= 0, got {getattr(self, flag)}")

    def to_dict(self) -> dict[str, Any]:
        """``{flag: value}``: the run's fields, then the method's options (``config.json``)."""
        return flat_dict(self)

    def speed(self) -> dict[str, Any]:
        """The keyword arguments of :func:`engine.speed.setup_speed` that these settings give."""
        return {"amp": self.amp, "deterministic": bool(self.deterministic), "channels_last": self.channels_last,
                "compile": self.compile, "tf32": bool(self.tf32)}

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with ``changes`` (checked again)."""
        config = dataclasses.replace(self, **changes)
        config.check()
        return config


@dataclass(frozen=True)
class TestConfig:
    """Every setting of one test-script run (the test flags; see ``--help`` for each).

    ``procedure`` holds the flags of the dataset's test procedure (:mod:`engine.testing`);
    ``exp`` is completed with the method's name when the flag is not given.
    """

    __test__ = False  # not a pytest test class

    root_path: str
    exp: str
    labelnum: int
    model: str
    method: str
    model_root: str
    ckpt: str | None
    which: str
    expect: str | None
    out_dir: str | None
    device: str
    gpu: str | None
    tf32: int
    amp: str
    empty_policy: str
    num_classes: int
    procedure: Any = None

    @classmethod
    def from_flags(cls, flags: argparse.Namespace, procedure: Any, **values: Any) -> TestConfig:
        """The config of the parsed test ``flags`` and the test procedure's options; ``values``
        replace flags (``exp`` once completed)."""
        return options_from_flags(cls, flags, procedure=procedure, **values)

    def to_dict(self) -> dict[str, Any]:
        """``{flag: value}`` in the order of the flags (the test log's ``Arguments`` line)."""
        return flat_dict(self)
