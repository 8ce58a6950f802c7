"""The baselines' networks: sizes (the paper's Params column), output order and shapes,
train/eval behaviour, URPC's perturbations, the SASSNet discriminators."""
from __future__ import annotations
import numpy as np
import pytest
import torch
from torch import nn

import complexity
from networks import unet as unet2d
from networks.discriminator import FC3DDiscriminator, FCDiscriminator
from networks.mcnet import MCNet2d, MCNet3d
from networks.net_factory import BASELINE_NETWORKS, net_factory
from networks.urpc import FeatureNoise, UNet3DDeepSup, UNetURPC, feature_dropout
from networks.unet_sdf import UNetSDF
from networks.vnet_sdf import VNetSDF

X3D = (2, 1, 32, 16, 16)
X2D = (2, 1, 32, 32)

# (table dataset, paper method, net_factory name, classes, exact parameter count)
SIZES = [
    ("LA", "UA-MT", "VNet", 2, 9_448_866),
    ("LA", "SASSNet", "vnet_sdf", 2, 9_448_900),
    ("LA", "DTC", "vnet_sdf", 2, 9_448_900),
    ("LA", "URPC", "unet_3D_dv_semi", 2, 5_884_504),
    ("LA", "MC-Net", "mcnet3d_v1", 2, 12_347_716),
    ("ACDC", "UA-MT", "unet", 4, 1_813_764),
    ("ACDC", "SASSNet", "unet_sdf", 4, 1_814_344),
    ("ACDC", "DTC", "unet_sdf", 4, 1_814_344),
    ("ACDC", "URPC", "unet_urpc", 4, 1_831_060),
    ("ACDC", "MC-Net", "mcnet2d_v1", 4, 2_577_624),
]


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("dataset,method,name,classes,expected", SIZES)
def test_parameter_counts_equal_the_paper(dataset, method, name, classes, expected):
    model = net_factory(name, 1, classes, "test", "cpu", with_heads=False)
    n = _count(model)
    assert n == expected
    paper_params, _ = complexity.paper_complexity()[(dataset, method)]
    assert abs(n / 1e6 - paper_params) < 0.01, f"{method} ({dataset}): {n / 1e6:.4f} M vs paper {paper_params}"


def test_complexity_lists_every_baseline_row():
    listed = {(r.dataset, r.method) for r in complexity.rows()}
    paper = set(complexity.paper_complexity())
    assert paper <= listed, f"rows missing from code/complexity.py: {sorted(paper - listed)}"


def test_sdf_head_adds_exactly_one_c_channel_head():
    assert _count(VNetSDF(1, 2)) - _count(net_factory("VNet", 1, 2, "test", "cpu", with_heads=False)) == 16 * 2 + 2
    assert _count(UNetSDF(1, 4)) - _count(net_factory("unet", 1, 4, "test", "cpu", with_heads=False)) == 16 * 4 * 9 + 4


@pytest.mark.parametrize("name,shape,classes,n_out", [
    ("vnet_sdf", X3D, 2, 2), ("mcnet3d_v1", X3D, 2, 2), ("unet_3D_dv_semi", X3D, 2, 4),
    ("unet_sdf", X2D, 4, 2), ("mcnet2d_v1", X2D, 4, 2), ("unet_urpc", X2D, 4, 4),
])
@pytest.mark.parametrize("training", [True, False])
def test_outputs_have_the_input_size(name, shape, classes, n_out, training):
    torch.manual_seed(0)
    model = net_factory(name, 1, classes, "train", "cpu").train(training)
    outs = model(torch.randn(shape))
    assert len(outs) == n_out
    for o in outs:
        assert o.shape == (shape[0], classes) + shape[2:]


@pytest.mark.parametrize("name,shape,classes", [("vnet_sdf", X3D, 2), ("unet_sdf", X2D, 4)])
def test_sdf_output_is_tanh_bounded_and_second(name, shape, classes):
    torch.manual_seed(0)
    model = net_factory(name, 1, classes, "test", "cpu").eval()
    x = torch.randn(shape)
    with torch.no_grad():
        logits, sdf = model(x)
        features = model.decoder(model.encoder(x))[1]
        assert torch.equal(logits, model.decoder.out_conv(features))
        assert torch.allclose(sdf, torch.tanh(model.out_conv_sdf(features)))
    assert sdf.abs().max() < 1


def test_mcnet3d_first_output_is_the_deconv_decoder():
    torch.manual_seed(0)
    model = MCNet3d(1, 2, has_dropout=False).eval()
    x = torch.randn(X3D)
    with torch.no_grad():
        out1, out2 = model(x)
        feats = model.encoder(x)
        assert torch.equal(out1, model.decoder1(feats)[0])
        assert torch.equal(out2, model.decoder2(feats)[0])
    assert isinstance(model.decoder1.block_five_up.conv[0], nn.ConvTranspose3d)
    up2 = model.decoder2.block_five_up.conv
    assert isinstance(up2[0], nn.Upsample) and up2[0].mode == "trilinear" and up2[0].align_corners
    assert isinstance(up2[1], nn.Conv3d) and up2[1].kernel_size == (3, 3, 3)
    keys = model.state_dict().keys()
    assert "decoder1.block_five_up.conv.0.weight" in keys and "decoder2.block_five_up.conv.1.weight" in keys


def test_mcnet2d_decoders_mirror_the_3d_assignment():
    model = MCNet2d(1, 4)
    assert isinstance(model.decoder1.up1.up, nn.Upsample) and hasattr(model.decoder1.up1, "conv1x1")
    assert isinstance(model.decoder2.up1.up, nn.ConvTranspose2d) and not hasattr(model.decoder2.up1, "conv1x1")


def test_mcnet3d_dropout_mask_of_the_encoder_is_shared():
    # Dropout3d on x5 is drawn once: with the decoders' own dropout off, both see the same bottleneck.
    torch.manual_seed(0)
    model = MCNet3d(1, 2, has_dropout=True).train()
    model.decoder1.has_dropout = model.decoder2.has_dropout = False
    x = torch.randn(X3D)
    seen = []
    for dec in (model.decoder1, model.decoder2):
        dec.block_five_up.register_forward_hook(lambda m, i, o: seen.append(i[0].detach().clone()))
    model(x)
    assert torch.equal(seen[0], seen[1])
    assert (seen[0] == 0).any()  # some channels were dropped


def test_urpc3d_instancenorm_has_no_parameters_and_eval_is_deterministic():
    model = UNet3DDeepSup(1, 2)
    norms = [m for m in model.modules() if isinstance(m, nn.InstanceNorm3d)]
    assert norms and all(not list(m.parameters()) for m in norms)
    x = torch.randn(X3D)
    model.eval()
    with torch.no_grad():
        a, b = model(x), model(x)
    assert all(torch.equal(p, q) for p, q in zip(a, b))
    model.train()
    assert not torch.equal(model(x)[0], model(x)[0])  # Dropout3d on the up stages


def test_urpc2d_aux_heads_are_perturbed_only_in_training():
    torch.manual_seed(0)
    model = UNetURPC(1, 4)
    x = torch.randn(X2D)
    model.eval()
    with torch.no_grad():
        a, b = model(x), model(x)
        assert all(torch.equal(p, q) for p, q in zip(a, b))
        plain = unet2d.Decoder.forward(model.decoder, model.encoder(x))[0]  # the U-Net path, no aux heads
        assert torch.equal(a[0], plain)
    model.train()
    torch.manual_seed(1)
    np.random.seed(1)
    first = model(x)
    torch.manual_seed(1)
    np.random.seed(1)
    again = model(x)
    assert all(torch.equal(p, q) for p, q in zip(first, again))  # perturbations follow the seeds
    np.random.seed(2)
    torch.manual_seed(2)
    other = model(x)
    assert any(not torch.equal(p, q) for p, q in zip(first[1:], other[1:]))


def test_urpc2d_keeps_the_unused_dp4_head():
    model = UNetURPC(1, 4)
    assert model.decoder.out_conv_dp4.in_channels == 256
    used = set()
    x = torch.randn(X2D)
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            m.register_forward_hook(lambda mod, i, o, name=name: used.add(name))
    model(x)
    assert "decoder.out_conv_dp4" not in used and "decoder.out_conv_dp1" in used


def test_feature_dropout_against_a_naive_mask():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 4, 5, generator=g)
    np.random.seed(7)
    out = feature_dropout(x)
    np.random.seed(7)
    u = np.random.uniform(0.7, 0.9)
    for b in range(2):
        att = x[b].mean(0)
        keep = att < att.max() * u
        assert torch.allclose(out[b], x[b] * keep)
        assert (~keep).any()  # the maximum itself is always dropped


def test_feature_noise_is_shared_by_the_batch_and_bounded():
    torch.manual_seed(0)
    x = torch.ones(3, 2, 4, 4)
    out = FeatureNoise(0.3)(x)
    assert torch.equal(out[0], out[1]) and torch.equal(out[1], out[2])
    assert out.min() >= 0.7 and out.max() <= 1.3 and out.std() > 0
    with pytest.raises(ValueError, match="uniform_range"):
        FeatureNoise(-1)


def test_discriminators_have_the_released_layers_at_released_sizes():
    d3 = FC3DDiscriminator(2)
    assert tuple(d3.avgpool.kernel_size) == (7, 7, 5) and d3.classifier.in_features == 512
    assert d3.conv0.in_channels == 2 and d3.conv1.in_channels == 1
    d2 = FCDiscriminator(4)
    assert d2.avgpool.kernel_size == (7, 7) and d2.classifier.in_features == 2048
    with pytest.raises(ValueError, match="at least 16"):
        FCDiscriminator(4, patch_size=(8, 32))


@pytest.mark.parametrize("cls,c,shape", [(FC3DDiscriminator, 2, (32, 16, 16)), (FCDiscriminator, 4, (32, 48))])
def test_discriminator_logits_and_shape_check(cls, c, shape):
    torch.manual_seed(0)
    d = cls(c, patch_size=shape).eval()
    out = d(torch.randn((3, c) + shape), torch.randn((3, 1) + shape))
    assert out.shape == (3, 2)
    with pytest.raises(ValueError, match="was built for"):
        d(torch.randn((3, c) + tuple(s * 2 for s in shape)), torch.randn((3, 1) + tuple(s * 2 for s in shape)))


def test_net_factory_names_and_errors():
    for name in BASELINE_NETWORKS:
        assert net_factory(name.upper(), 1, 2, "test", "cpu") is not None
    with pytest.raises(ValueError, match="mcnet3d_v1"):
        net_factory("mcnet", 1, 2)
    assert isinstance(net_factory("vnet_sdf", 1, 2, "train", "cpu").encoder.has_dropout, bool)
    assert net_factory("vnet_sdf", 1, 2, "train", "cpu").encoder.has_dropout
    assert not net_factory("mcnet3d_v1", 1, 2, "test", "cpu").decoder2.has_dropout


@pytest.mark.parametrize("model,shape,msg", [
    (lambda: VNetSDF(1, 2), (1, 1, 30, 32, 16), "multiple of 16"),
    (lambda: UNetURPC(1, 4), (1, 2, 32, 32), "input channel"),
    (lambda: MCNet2d(1, 4), (1, 32, 32), "4-D tensor"),
])
def test_bad_inputs_fail_clearly(model, shape, msg):
    with pytest.raises(ValueError, match=msg):
        model()(torch.randn(shape))
