"""The written method interface (methods/base.py): every method implements it, owns its flags,
and reports bad input with ValueError."""
from __future__ import annotations
import argparse
import dataclasses
import inspect

import pytest

import train_la
from datasets import get_dataset
from engine.training import build_parser
from methods import METHODS, get_method
from methods.base import Method, add_method_args


@pytest.mark.parametrize("key", sorted(METHODS))
def test_every_method_implements_the_interface(key):
    cls = get_method(key)
    assert issubclass(cls, Method) and cls.key == key
    assert not inspect.isabstract(cls), f"{cls.__name__} leaves {sorted(cls.__abstractmethods__)} abstract"
    for name in ("add_args", "options_from_flags", "from_config", "build_model", "step", "after_step", "state_dict",
                 "load_state_dict"):
        assert callable(getattr(cls, name))
    assert dataclasses.is_dataclass(cls.Options) and cls.Options.__dataclass_params__.frozen


def _group_of(parser, flag):
    for group in parser._action_groups:
        if any(flag in action.option_strings for action in group._group_actions):
            return group.title
    return None


def test_each_method_owns_its_flags_in_help():
    parser = build_parser(get_dataset("LA"))
    assert _group_of(parser, "--magnitude") == _group_of(parser, "--prototype_keep") == "SS-Net (--method ssnet)"
    assert _group_of(parser, "--ema_decay") == "--method uamt"
    assert _group_of(parser, "--temperature") == "--method mcnet"
    assert _group_of(parser, "--beta") == "--method sassnet and dtc"
    assert _group_of(parser, "--baseline_consistency").startswith("baselines")
    text = parser.format_help()
    ssnet_section = text[text.index("SS-Net (--method ssnet):"):text.index("baselines (--method")]
    assert "--magnitude MAGNITUDE" in ssnet_section and "--ema_decay" not in ssnet_section
    # the defaults of a method's flags come from the dataset description
    assert build_parser(get_dataset("ACDC")).get_default("magnitude") == 6.0
    assert train_la.parse_args([]).options.magnitude == 10.0


def test_a_flag_defined_by_a_shared_base_is_added_once():
    parser = argparse.ArgumentParser()
    # SASSNet and DTC both inherit the baselines' flags; they must not be added twice (argparse would raise)
    add_method_args(parser, get_dataset("LA"), [get_method("sassnet"), get_method("dtc"), get_method("uamt")])
    assert parser.parse_args(["--beta", "0.5", "--baseline_rampup", "3"]).beta == 0.5


def test_the_method_completes_its_own_options():
    args = train_la.parse_args(["--supervised_only", "--magnitude_scaling", "rms", "--patch_size", "56", "56", "40"])
    assert (args.options.lds, args.options.cs) == ("none", "off")
    assert args.options.magnitude == pytest.approx(10.0 / 8 ** 0.5)
    assert args.options.magnitude_at_released_patch == 10.0


def test_a_baseline_refuses_ssnet_flags_when_parsing(tmp_path):
    """Before any snapshot folder is made: the parser's error, naming what to do instead."""
    with pytest.raises(ValueError, match="--method ssnet --supervised_only"):
        train_la.parse_args(["--method", "urpc", "--supervised_only", "--model_root", str(tmp_path)])
    with pytest.raises(ValueError, match="--cs is an SS-Net ablation flag"):
        train_la.parse_args(["--method", "dtc", "--cs", "off"])
    assert not any(tmp_path.iterdir())
