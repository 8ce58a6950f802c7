"""The typed run settings (engine.config): every flag is a field of the config (or of the
method's / test procedure's options) of the same name, the configs are frozen, checked once,
and config.json is the config."""
from __future__ import annotations

import dataclasses
import json

import pytest

import test_acdc
import test_la
import train_acdc
import train_la
from datasets import get_dataset
from engine import evaluation, training
from engine.config import TestConfig, TrainConfig
from engine.testing import test_procedure
from methods import METHODS, get_method

NOT_FIELDS = {"help"}


def _fields(kind):
    return [f.name for f in dataclasses.fields(kind)]


@pytest.mark.parametrize("dataset", ["LA", "ACDC"])
def test_every_training_flag_is_a_field_of_the_run_or_of_a_method(dataset):
    d = get_dataset(dataset)
    dests = {a.dest for a in training.build_parser(d)._actions} - NOT_FIELDS
    run = set(_fields(TrainConfig)) - {"dataset", "options"}
    methods = set().union(*(_fields(get_method(m).Options) for m in METHODS))
    derived = {f.name for m in METHODS for f in dataclasses.fields(get_method(m).Options) if f.metadata.get("derived")}
    procedure = {"stride_xy", "stride_z", "val_batch", "lr_step"}
    assert dests - run - methods == set()  # no flag without a field
    assert run - dests <= procedure  # a run field is a flag, or a procedure's flag another dataset has
    assert methods - derived - {"released_patch"} <= dests  # every option is a flag (or derived from flags)
    assert not (run & methods)  # a flag belongs to the run or to methods, not both


@pytest.mark.parametrize("dataset", ["LA", "ACDC"])
def test_test_flags_are_the_test_config_fields_in_order(dataset):
    d = get_dataset(dataset)
    dests = [a.dest for a in evaluation.build_parser(d)._actions if a.dest not in NOT_FIELDS]
    fields = [n for n in _fields(TestConfig) if n != "procedure"] + _fields(test_procedure(d).options)
    assert dests == fields  # same names, same order: the test log's "Arguments" line is unchanged


def test_configs_are_frozen_and_checked_once():
    config = train_la.parse_args(["--device", "cpu"])
    assert isinstance(config, TrainConfig) and config.options.magnitude == 10.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.base_lr = 1.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.options.magnitude = 1.0
    with pytest.raises(ValueError, match="--labeled_bs"):
        config.replace(labeled_bs=9)
    assert config.replace(max_iterations=7).max_iterations == 7
    assert config.exp == "SSNet" and config.patch_size == (112, 112, 80)


def test_each_method_gets_its_own_options():
    assert type(train_acdc.parse_args(["--method", "mcnet"]).options).__name__ == "MCNetOptions"
    uamt = train_la.parse_args(["--method", "uamt", "--ema_decay", "0.9"])
    assert uamt.options.ema_decay == 0.9 and not hasattr(uamt.options, "magnitude")
    flat = uamt.to_dict()
    assert flat["ema_decay"] == 0.9 and "magnitude" not in flat and "beta" not in flat
    assert "val_batch" not in flat and flat["stride_xy"] == 18  # LA has no slice-wise validation flag
    assert "stride_xy" not in train_acdc.parse_args([]).to_dict()


def test_config_json_is_the_config(tmp_path, la_root):
    from test_training import LA_FLAGS
    config = train_la.parse_args(["--root_path", la_root, "--model_root", str(tmp_path), "--method", "mcnet"]
                                 + LA_FLAGS + ["--max_iterations", "2"])
    summary = train_la.train(config)
    stored = json.loads(open(f"{summary['snapshot']}/config.json").read())
    extra = {"device_resolved", "torch"}
    assert {k: v for k, v in stored.items() if k not in extra} == json.loads(json.dumps(config.to_dict()))


def test_test_config_from_the_test_flags():
    for script, d in ((test_la, "LA"), (test_acdc, "ACDC")):
        parser = script.build_parser()
        config = evaluation.parse_test_flags(parser, get_dataset(d), ["--method", "uamt"])
        assert isinstance(config, TestConfig) and config.exp == "UAMT"
        assert config.procedure.patch_size == tuple(get_dataset(d).patch_size)
        assert list(config.to_dict())[:3] == ["root_path", "exp", "labelnum"]


def test_a_description_s_loss_forms_are_typed():
    from datasets import DiceForm, VatDistance
    la, acdc = get_dataset("LA"), get_dataset("ACDC")
    assert (la.dice, la.vat_distance) == (DiceForm.FOREGROUND, VatDistance.DICE)
    assert (acdc.dice, acdc.vat_distance) == (DiceForm.CLASSES, VatDistance.CLASS_DICE)
    assert dataclasses.replace(la, dice="classes").dice is DiceForm.CLASSES  # a plain string names a form
    with pytest.raises(ValueError, match="squares"):
        dataclasses.replace(la, dice="squares")
