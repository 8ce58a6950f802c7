"""V-Net / U-Net: shapes, dropout, released state_dict layout, sizes, bad input."""
from __future__ import annotations
import json
import os

import pytest
import torch

from conftest import SHARED_REFERENCE
from networks.net_factory import net_factory, resolve_device

MANIFEST = os.path.join(SHARED_REFERENCE, "state_dict_keys.json")
CASES = [("VNet", 2, (2, 1, 32, 32, 16)), ("unet", 4, (2, 1, 32, 48))]


@pytest.mark.parametrize("net_type,classes,shape", CASES)
@pytest.mark.parametrize("mode", ["train", "test"])
def test_output_shapes(net_type, classes, shape, mode):
    torch.manual_seed(0)
    model = net_factory(net_type, 1, classes, mode, "cpu")
    for training in (True, False):
        model.train(training)
        logits, feats = model(torch.randn(shape))
        assert logits.shape == (shape[0], classes) + shape[2:]
        assert feats.shape == (shape[0], 16) + shape[2:]


@pytest.mark.parametrize("net_type,classes,shape", CASES)
def test_dropout_only_in_train_mode(net_type, classes, shape):
    torch.manual_seed(0)
    x = torch.randn(shape)
    model = net_factory(net_type, 1, classes, "train", "cpu")
    model.train()
    a, b = model(x)[0], model(x)[0]
    assert not torch.allclose(a, b), "train mode must draw dropout masks"
    model.eval()
    assert torch.equal(model(x)[0], model(x)[0]), "eval mode must be deterministic"


def test_vnet_test_mode_has_no_dropout():
    torch.manual_seed(0)
    x = torch.randn(2, 1, 32, 32, 16)
    model = net_factory("VNet", 1, 2, "test", "cpu").train()  # batch statistics, but no dropout
    assert torch.equal(model(x)[0], model(x)[0])
    train_model = net_factory("VNet", 1, 2, "train", "cpu")
    train_model.load_state_dict(model.state_dict(), strict=True)  # same checkpoint either way


@pytest.mark.skipif(not os.path.exists(MANIFEST), reason="../shared/reference/state_dict_keys.json is absent")
@pytest.mark.parametrize("net_type,classes,key", [("VNet", 2, "VNet_LA_2class"), ("unet", 4, "unet_ACDC_4class")])
def test_state_dict_matches_released_layout(net_type, classes, key):
    with open(MANIFEST) as f:
        ref = json.load(f)[key]
    model = net_factory(net_type, 1, classes, "test", "cpu")
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert sorted(set(ref) - set(ours)) == [] and sorted(set(ours) - set(ref)) == []
    assert ours == ref
    # A checkpoint in the released layout loads strictly.
    fake = {k: torch.full(shape, 0.5) if shape else torch.tensor(3) for k, shape in ref.items()}
    model.load_state_dict(fake, strict=True)
    first = list(ref)[0]
    assert torch.equal(model.state_dict()[first], torch.full(ref[first], 0.5))


@pytest.mark.parametrize("net_type,classes,heads,expected", [
    ("VNet", 2, False, 9_448_866), ("VNet", 2, True, 9_457_318),
    ("unet", 4, False, 1_813_764), ("unet", 4, True, 1_826_828),
])
def test_parameter_counts(net_type, classes, heads, expected):
    model = net_factory(net_type, 1, classes, "test", "cpu", with_heads=heads)
    n = sum(p.numel() for p in model.parameters())
    assert n == expected
    paper = {("VNet", False): 9.44, ("VNet", True): 9.46, ("unet", False): 1.81, ("unet", True): 1.83}
    assert abs(n / 1e6 - paper[(net_type, heads)]) < 0.01


@pytest.mark.parametrize("net_type,classes", [("VNet", 2), ("unet", 4)])
def test_selector_lists_follow_state_dict(net_type, classes):
    model = net_factory(net_type, 1, classes, "test", "cpu")
    assert len(model.feature_selectors) == classes == len(model.memory_selectors)
    for c in range(classes):
        assert model.feature_selectors[c] is getattr(model, f"contrastive_class_selector_{c}")
        assert model.memory_selectors[c] is getattr(model, f"contrastive_class_selector_memory{c}")
    backbone = net_factory(net_type, 1, classes, "test", "cpu", with_heads=False)
    with pytest.raises(RuntimeError, match="with_heads"):
        backbone.feature_selectors  # noqa: B018 (the attribute access itself must raise)


@pytest.mark.parametrize("net_type,x,match", [
    ("VNet", torch.zeros(1, 2, 32, 32, 16), "input channel"),
    ("VNet", torch.zeros(1, 1, 32, 32, 20), "multiple of 16"),
    ("VNet", torch.zeros(32, 32, 16), "5-D tensor"),
    ("unet", torch.zeros(1, 3, 32, 32), "input channel"),
    ("unet", torch.zeros(1, 1, 30, 32), "multiple of 16"),
    ("unet", torch.zeros(1, 1, 1, 32, 32), "4-D tensor"),
])
def test_bad_input_errors(net_type, x, match):
    model = net_factory(net_type, 1, 2, "test", "cpu").eval()
    with pytest.raises(ValueError, match=match):
        model(x)


def test_factory_names_and_devices():
    assert type(net_factory("vnet", 1, 2, "test", "cpu")).__name__ == "VNet"
    assert type(net_factory("U-Net", 1, 4, "test", "cpu")).__name__ == "UNet"
    with pytest.raises(ValueError, match="unknown net_type"):
        net_factory("resnet", 1, 2)
    with pytest.raises(ValueError, match="mode"):
        net_factory("unet", 1, 4, mode="eval")
    assert resolve_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        assert resolve_device(None).type == "cpu"
        with pytest.raises(RuntimeError, match="--device cpu"):
            resolve_device("cuda")


def test_complexity_rows():
    import complexity
    result = {(r["dataset"], r["method"]): r for r in complexity.table("cpu", only="ACDC")}
    unet = result[("ACDC", "U-Net")]
    assert round(unet["params_M"], 2) == unet["paper_params_M"] == 1.81
    assert abs(unet["macs_G"] - unet["paper_macs_G"]) / unet["paper_macs_G"] < 0.01
