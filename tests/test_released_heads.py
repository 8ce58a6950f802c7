"""SASSNet and DTC with ``--baseline_heads released``: the public 3D code's 1-channel sigmoid
segmentation and 1-channel tanh SDF heads (LA), against naive computations; the default
(``project``, C-channel heads) unchanged; the 1-channel output tested as sigmoid > 0.5.

The optional last section runs one training iteration of the released LA code itself (its
network, discriminator, ``dice_loss``, ``compute_sdf`` and ramp, from clones at /tmp/SASSnet
(kleinzcy/SASSnet) and /tmp/DTC (HiLab-git/DTC); the loop bodies of ``train_gan_sdfloss.py``
and ``train_la_dtc.py`` written out below, ``.cuda()`` left out) and compares the losses and the
updated weights bit for bit.
"""
from __future__ import annotations

import ast
import importlib.util
import math
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.ndimage import distance_transform_edt
from skimage.segmentation import find_boundaries
from torch import nn

from datasets import get_dataset
from engine.inference import _probabilities
from engine.inference import test_single_case as single_case
from methods import get_method
from methods.common import (PROJECT_HEADS, RELEASED_HEADS, check_heads, heads_of_state_dict, logged_bce,
                            released_dice_loss, sq_dice_loss, two_class_probs)
from methods.dtc import DTC
from methods.sdf import sdf_target
from networks.discriminator import FC3DDiscriminator
from networks.vnet_sdf import VNetSDF, released_vnet_sdf
from test_baseline_methods import method_config

SASS_ROOT = "/tmp/SASSnet"
DTC_ROOT = "/tmp/DTC"
SHAPE = (4, 1, 32, 32, 16)  # LA-like batch: 2 labeled + 2 unlabeled, sides multiples of 16
LATE = 10 ** 5


def _config(method, heads=None, **kw):
    """The LA run settings of ``method`` at SHAPE, with ``--baseline_heads heads`` when given."""
    return method_config(SHAPE, method, **kw, **({} if heads is None else {"baseline_heads": heads}))


def _method(name, heads=None, **kw):
    return get_method(name).from_config(_config(name, heads, **kw), "LA", 2, torch.device("cpu"))


def _batch(seed=0):
    """Image (4, 1, 32, 32, 16) carrying a box label, labels (4, 32, 32, 16) in {0, 1}."""
    g = torch.Generator().manual_seed(seed)
    y = torch.zeros((SHAPE[0],) + SHAPE[2:], dtype=torch.long)
    y[0, 8:24, 4:12, 4:12] = 1
    y[1, 4:20, 10:26, 2:10] = 1
    y[2, 10:22, 10:22, 5:12] = 1
    y[3, 2:12, 2:30, 3:9] = 1
    return torch.randn(SHAPE, generator=g) * 0.5 + y.unsqueeze(1).float(), y


# ----------------------------------------------------------------------------- flag and networks


def test_flag_default_is_project_and_released_is_parsed():
    for name in ("sassnet", "dtc"):
        assert _config(name).options.baseline_heads == PROJECT_HEADS
        assert _config(name, "released").options.baseline_heads == RELEASED_HEADS
        assert _method(name).heads == PROJECT_HEADS


def test_released_heads_refused_on_acdc_and_unknown_values():
    from engine.training import build_parser
    parser = build_parser(get_dataset("ACDC"))
    with pytest.raises(SystemExit):
        parser.parse_args(["--method", "dtc", "--baseline_heads", "released"])
    assert parser.parse_args(["--method", "dtc"]).baseline_heads == PROJECT_HEADS
    with pytest.raises(ValueError, match="unet_sdf"):
        check_heads(RELEASED_HEADS, "ACDC", "sassnet")
    with pytest.raises(ValueError, match="must be one of"):
        check_heads("two", "LA", "dtc")
    with pytest.raises(ValueError):
        DTC.build_model("ACDC", 4, heads=RELEASED_HEADS)
    with pytest.raises(SystemExit):
        build_parser(get_dataset("LA")).parse_args(["--method", "dtc", "--baseline_heads", "one"])


@pytest.mark.parametrize("mode,dropout", [("train", True), ("test", False)])
@pytest.mark.parametrize("name", ["sassnet", "dtc"])
def test_released_network_shapes(name, mode, dropout):
    net = get_method(name).build_model("LA", 2, mode, "cpu", heads=RELEASED_HEADS)
    assert isinstance(net, VNetSDF) and net.encoder.has_dropout is dropout
    assert net.decoder.out_conv.out_channels == 1 and net.out_conv_sdf.out_channels == 1
    net.eval()
    with torch.no_grad():
        logits, sdf = net(torch.randn(SHAPE))
    assert logits.shape == sdf.shape == (SHAPE[0], 1) + SHAPE[2:]
    assert float(sdf.abs().max()) < 1
    # the public VNet(n_classes=1) size: the 2-channel network less one input row of each 16 -> C head
    project = get_method(name).build_model("LA", 2, mode, "cpu")
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(project) - count(net) == 2 * (16 + 1)
    with torch.no_grad():
        assert project(torch.randn(SHAPE))[0].shape[1] == 2


def test_released_sassnet_discriminator_takes_one_channel():
    m = _method("sassnet", "released")
    assert isinstance(m.discriminator, FC3DDiscriminator) and m.discriminator.conv0.in_channels == 1
    assert _method("sassnet").discriminator.conv0.in_channels == 2


# ----------------------------------------------------------------------------- each term, naive


def _naive_sdf(mask):
    mask = np.asarray(mask).astype(bool)
    if not mask.any():
        return np.zeros(mask.shape)
    pos, neg = distance_transform_edt(mask), distance_transform_edt(~mask)
    sdf = (neg - neg.min()) / (neg.max() - neg.min()) - (pos - pos.min()) / (pos.max() - pos.min())
    sdf[find_boundaries(mask, mode="inner")] = 0
    return sdf


def test_sdf_target_one_channel_is_the_sdf_of_the_foreground():
    _, y = _batch()
    y = y.clone()
    y[0, 0:2, 0:2, 0:2] = 2  # any non-zero label is foreground (released: astype(bool))
    y[1] = 0  # empty: left at zero
    got = sdf_target(y[:2], 1)
    assert got.shape == (2, 1) + SHAPE[2:] and got.dtype == torch.float32
    for b in range(2):
        np.testing.assert_allclose(got[b, 0].numpy(), _naive_sdf(y[b].numpy() > 0).astype(np.float32), atol=0)


def test_released_dice_and_bce_against_naive():
    g = torch.Generator().manual_seed(3)
    z = torch.randn((2, 1) + SHAPE[2:], generator=g)
    _, y = _batch()
    y = y[:2]
    p = torch.sigmoid(z).double().numpy()[:, 0]
    t = (y.numpy() == 1).astype(np.float64)
    naive = 1 - (2 * (p * t).sum() + 1e-5) / ((p * p).sum() + (t * t).sum() + 1e-5)
    assert float(released_dice_loss(torch.sigmoid(z), y)) == pytest.approx(naive, rel=1e-5)
    naive_bce = -np.mean(t * np.log(p) + (1 - t) * np.log(1 - p))
    bce = logged_bce(z.requires_grad_(), y)
    assert not bce.requires_grad and float(bce) == pytest.approx(naive_bce, rel=1e-5)
    # the smoothing matters where the sums are small: empty label, tiny probabilities
    tiny = torch.full((2, 1) + SHAPE[2:], 1e-5)
    tiny[0, 0, :2, :2, :2] = 1e-3
    sq = float((tiny.double() ** 2).sum())
    assert float(released_dice_loss(tiny, torch.zeros_like(y))) == pytest.approx(1 - 1e-5 / (sq + 1e-5), rel=1e-5)
    # the released Dice is the project's foreground Dice of the 2-class view [1 - p, p]
    fg = torch.sigmoid(z.detach())
    assert torch.equal(released_dice_loss(fg, y), sq_dice_loss(two_class_probs(fg), y, "LA"))


def _naive_parts(method, x, y, seed):
    """Outputs of the method's network for the dropout draws of ``seed`` and the naive supervised terms."""
    torch.manual_seed(seed)
    method.model.train()
    with torch.no_grad():
        z, s = method.model(x)
    p = torch.sigmoid(z).double().numpy()
    s = s.double().numpy()
    lbs = method.labeled_bs
    t = (y[:lbs].numpy() == 1).astype(np.float64)
    dice = 1 - (2 * (p[:lbs, 0] * t).sum() + 1e-5) / ((p[:lbs, 0] ** 2).sum() + (t ** 2).sum() + 1e-5)
    gt = np.stack([_naive_sdf(y[b].numpy() > 0) for b in range(lbs)]).astype(np.float32).astype(np.float64)
    mse = np.mean((s[:lbs, 0] - gt) ** 2)
    bce = -np.mean(t * np.log(p[:lbs, 0]) + (1 - t) * np.log(1 - p[:lbs, 0]))
    return z, s, p, dice, mse, bce


def _ramp(t, lam, length=40.0):
    cur = min(max(t // 150, 0), length)
    return lam * math.exp(-5.0 * (1 - cur / length) ** 2)


@pytest.mark.parametrize("iter_num", [0, 2999])
def test_dtc_released_step_against_naive(iter_num):
    torch.manual_seed(0)
    m = _method("dtc", "released")
    x, y = _batch()
    z, s, p, dice, mse, bce = _naive_parts(m, x, y, seed=7)
    with np.errstate(over="ignore"):
        consistency = np.mean((1 / (1 + np.exp(1500 * s)) - p) ** 2)  # whole batch, nothing detached
    w = _ramp(iter_num, 1.0)
    torch.manual_seed(7)
    out = m.step(x, y, iter_num)
    vals = {k: float(v.detach()) for k, v in out.items() if k != "probs"}
    assert vals["loss_dice"] == pytest.approx(dice, rel=1e-5)
    assert vals["loss_sdf"] == pytest.approx(mse, rel=1e-5)
    assert vals["loss_ce"] == pytest.approx(bce, rel=1e-5)
    assert vals["loss_consistency"] == pytest.approx(consistency, rel=1e-4)
    assert vals["consistency_weight"] == pytest.approx(w, rel=1e-6)
    assert vals["loss"] == pytest.approx(dice + 0.3 * mse + w * consistency, rel=1e-5)
    assert torch.allclose(out["probs"], torch.cat([1 - torch.sigmoid(z), torch.sigmoid(z)], 1))
    # the consistency reaches the unlabeled items and both heads
    m.model.zero_grad()
    out["loss_consistency"].backward()
    assert float(m.model.out_conv_sdf.weight.grad.abs().sum()) > 0
    assert float(m.model.decoder.out_conv.weight.grad.abs().sum()) > 0


@pytest.mark.parametrize("iter_num", [3000, LATE])
def test_sassnet_released_step_and_discriminator_against_naive(iter_num):
    torch.manual_seed(0)
    m = _method("sassnet", "released")
    x, y = _batch()
    z, s, p, dice, mse, bce = _naive_parts(m, x, y, seed=8)
    m.discriminator.eval()
    with torch.no_grad():
        d_out = m.discriminator(torch.from_numpy(s[2:]).float(), x[2:]).double()
    adv = float(-(d_out[:, 1] - torch.logsumexp(d_out, 1)).mean())  # target 1 = "labeled"
    w = _ramp(iter_num, 0.015)
    torch.manual_seed(8)
    out = m.step(x, y, iter_num)
    vals = {k: float(v.detach()) for k, v in out.items() if k != "probs"}
    assert vals["loss_dice"] == pytest.approx(dice, rel=1e-5)
    assert vals["loss_sdf"] == pytest.approx(mse, rel=1e-5)
    assert vals["loss_ce"] == pytest.approx(bce, rel=1e-5)
    assert vals["loss_adv"] == pytest.approx(adv, rel=1e-4)
    assert vals["loss"] == pytest.approx(dice + 0.3 * mse + w * adv, rel=1e-5)
    assert out["probs"].shape == (4, 2) + SHAPE[2:]
    out["loss"].backward()
    # the discriminator step: the whole batch's SDF in eval mode, targets [1, 1, 0, 0]
    m.model.eval()
    with torch.no_grad():
        s_all = m.model(x)[1]
    m.model.train()
    torch.manual_seed(9)
    m.discriminator.train()
    d_all = m.discriminator(s_all, x).detach().double()
    target = torch.tensor([1, 1, 0, 0])
    naive_d = float(-(d_all.gather(1, target[:, None])[:, 0] - torch.logsumexp(d_all, 1)).mean())
    torch.manual_seed(9)
    m.after_step(iter_num + 1)
    assert float(out["loss_D"]) == pytest.approx(naive_d, rel=1e-5)


# ----------------------------------------------------------------------------- default path unchanged


@pytest.mark.parametrize("name", ["sassnet", "dtc"])
def test_project_default_losses_are_the_c_channel_ones(name):
    """The default (no flag) computes the project's C-channel formulas, bit for bit."""
    from methods.dtc import dual_task_consistency
    from utils.losses import logged_cross_entropy
    torch.manual_seed(0)
    m = _method(name)
    assert m.model.decoder.out_conv.out_channels == 2 and m.model.out_conv_sdf.out_channels == 2
    x, y = _batch()
    torch.manual_seed(5)
    out = m.step(x, y, LATE)
    torch.manual_seed(5)
    logits, sdf = m.model(x)
    probs = F.softmax(logits, dim=1)
    assert torch.equal(out["loss_sdf"], F.mse_loss(sdf[:2], sdf_target(y[:2], 2)))
    assert torch.equal(out["loss_dice"], sq_dice_loss(probs[:2], y[:2], "LA"))
    assert torch.equal(out["loss_ce"], logged_cross_entropy(logits[:2], y[:2]))
    assert torch.equal(out["probs"], probs.detach())
    if name == "dtc":
        cons = dual_task_consistency(sdf, probs)
        assert torch.equal(out["loss_consistency"], cons)
        assert torch.equal(out["loss"], out["loss_dice"] + 0.3 * out["loss_sdf"] + m.weight(LATE) * cons)
    else:
        m.discriminator.eval()
        d_out = m.discriminator(sdf[2:], x[2:])
        adv = F.cross_entropy(d_out, torch.ones(2, dtype=torch.long))
        assert torch.equal(out["loss_adv"], adv)


# ----------------------------------------------------------------------------- test time


def test_checkpoint_heads_detected_and_loaded_into_the_test_network():
    for name in ("sassnet", "dtc"):
        for heads in (PROJECT_HEADS, RELEASED_HEADS):
            torch.manual_seed(0)
            m = _method(name, heads)
            state = m.model.state_dict()
            assert heads_of_state_dict(state) == heads
            test_model = get_method(name).build_model("LA", 2, "test", "cpu", heads=heads_of_state_dict(state))
            test_model.load_state_dict(state, strict=True)
            x = torch.randn(SHAPE)
            m.model.eval()
            test_model.eval()
            with torch.no_grad():
                assert torch.equal(test_model(x)[0], m.model(x)[0])
    assert heads_of_state_dict({}) == PROJECT_HEADS


def test_checkpoint_file_gives_the_test_network(tmp_path):
    """From a saved checkpoint: its weights say which heads (``test_model_kwargs``), the test
    network is built with them and loads the file strictly (the test scripts' loader)."""
    from engine.checkpoints import load_weights, read_weights
    for heads in (PROJECT_HEADS, RELEASED_HEADS):
        torch.manual_seed(0)
        m = _method("dtc", heads)
        path = str(tmp_path / f"{heads}.pth")
        torch.save(m.model.state_dict(), path)
        kwargs = DTC.test_model_kwargs(read_weights(path))
        assert kwargs == {"heads": heads}
        net = load_weights(DTC.build_model("LA", 2, "test", "cpu", **kwargs), path, "cpu")
        assert net.decoder.out_conv.out_channels == (1 if heads == RELEASED_HEADS else 2)


def test_one_channel_probabilities_and_channel_check():
    z = torch.randn(3, 1, 4, 4, 2)
    p = _probabilities(z, 2)
    assert torch.equal(p[:, 1:], torch.sigmoid(z)) and torch.equal(p[:, :1], 1 - torch.sigmoid(z))
    assert torch.equal(_probabilities(z, 1), torch.sigmoid(z))
    with pytest.raises(ValueError, match="num_classes"):
        _probabilities(z, 3)
    z2 = torch.randn(3, 2, 4, 4, 2)
    assert torch.equal(_probabilities(z2, 2), F.softmax(z2, dim=1))


class _OneChannel(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(4)
        self.conv = nn.Conv3d(1, 1, 3, padding=1)
        self.sdf = nn.Conv3d(1, 1, 1)

    def forward(self, x):
        return self.conv(x), torch.tanh(self.sdf(x))


def test_sliding_window_of_a_sigmoid_head_is_the_released_rule():
    """The released sigmoid test (score += sigmoid(z) per window, / count, score[0] > 0.5), naive."""
    model = _OneChannel().eval()
    image = np.random.default_rng(1).normal(size=(11, 10, 7)).astype(np.float32)
    patch, sxy, sz = (8, 8, 4), 3, 2
    score = np.zeros((1,) + image.shape, np.float32)
    cnt = np.zeros(image.shape, np.float32)
    w, h, d = image.shape
    for x in range(math.ceil((w - patch[0]) / sxy) + 1):
        xs = min(sxy * x, w - patch[0])
        for y in range(math.ceil((h - patch[1]) / sxy) + 1):
            ys = min(sxy * y, h - patch[1])
            for z in range(math.ceil((d - patch[2]) / sz) + 1):
                zs = min(sz * z, d - patch[2])
                crop = torch.from_numpy(image[xs:xs + 8, ys:ys + 8, zs:zs + 4][None, None].copy())
                with torch.no_grad():
                    prob = torch.sigmoid(model(crop)[0])[0].numpy()
                score[:, xs:xs + 8, ys:ys + 8, zs:zs + 4] += prob
                cnt[xs:xs + 8, ys:ys + 8, zs:zs + 4] += 1
    score /= cnt[None]
    label, got = single_case(model, image, sxy, sz, patch, num_classes=2, sw_batch=1)
    np.testing.assert_allclose(got[1], score[0], rtol=0, atol=1e-6)
    np.testing.assert_allclose(got[0] + got[1], 1.0, atol=1e-6)
    np.testing.assert_array_equal(label, (score[0] > 0.5).astype(np.uint8))


# ----------------------------------------------------------------------------- released code, one iteration

_ENCODER = {"block_one", "block_one_dw", "block_two", "block_two_dw", "block_three", "block_three_dw",
            "block_four", "block_four_dw", "block_five"}


def _ours(key):
    """A key of the public VNet (vnet_sdf.py) -> this repository's VNetSDF key."""
    head, rest = key.split(".", 1)
    if head == "out_conv":  # the public SDF head
        return "out_conv_sdf." + rest
    if head == "out_conv2":  # the public segmentation head
        return "decoder.out_conv." + rest
    return ("encoder." if head in _ENCODER else "decoder.") + key


def _module(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _released_function(path, name, namespace):
    """One top-level function of a released file (only it is run), in ``namespace``."""
    tree = ast.parse(open(path).read())
    node = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name)
    exec(compile(ast.Module(body=[node], type_ignores=[]), path, "exec"), namespace)
    return namespace[name]


def _released(root):
    from skimage import segmentation as skimage_seg
    code = os.path.join(root, "code")
    return {
        "net": _module(os.path.join(code, "networks/vnet_sdf.py"), f"released_vnet_sdf_{os.path.basename(root)}"),
        "losses": _module(os.path.join(code, "utils/losses.py"), f"released_losses_{os.path.basename(root)}"),
        "ramps": _module(os.path.join(code, "utils/ramps.py"), f"released_ramps_{os.path.basename(root)}"),
        "compute_sdf": _released_function(os.path.join(code, "utils/util.py"), "compute_sdf",
                                          {"np": np, "distance": distance_transform_edt,
                                           "skimage_seg": skimage_seg}),
        "code": code,
    }


def _copy_released_weights(ref, ours):
    mapped = {_ours(k): v for k, v in ref.state_dict().items()}
    ours.load_state_dict(mapped, strict=True)


def _assert_same_weights(ref, ours):
    state = ours.state_dict()
    for k, v in ref.state_dict().items():
        assert torch.equal(state[_ours(k)], v), k


@pytest.fixture
def np_bool(monkeypatch):
    """The released ``compute_sdf`` calls ``astype(np.bool)``, gone from NumPy >= 1.24."""
    monkeypatch.setattr(np, "bool", bool, raising=False)


@pytest.mark.skipif(not os.path.isdir(DTC_ROOT), reason="released DTC clone not at /tmp/DTC")
@pytest.mark.parametrize("iter_num", [4500])  # mid-ramp (4500 // 150 = 30 < 40)
def test_dtc_one_iteration_equals_released(np_bool, iter_num):
    R = _released(DTC_ROOT)
    torch.manual_seed(0)
    ref = R["net"].VNet(n_channels=1, n_classes=1, normalization="batchnorm", has_dropout=True)
    m = _method("dtc", "released")
    _copy_released_weights(ref, m.model)
    x, y = _batch(1)
    opt_ref = torch.optim.SGD(ref.parameters(), lr=0.01, momentum=0.9, weight_decay=0.0001)
    opt = torch.optim.SGD(m.model.parameters(), lr=0.01, momentum=0.9, weight_decay=0.0001)
    lbs = 2
    for it in (iter_num, iter_num + 1):  # two iterations: the second one sees the momentum
        # ---- released train_la_dtc.py, loop body (consistency 1.0, rampup 40, beta 0.3)
        ref.train()
        torch.manual_seed(100 + it)
        outputs_tanh, outputs = ref(x)
        outputs_soft = torch.sigmoid(outputs)
        with torch.no_grad():
            gt_dis = R["compute_sdf"](y[:].cpu().numpy(), outputs[:lbs, 0, ...].shape)
            gt_dis = torch.from_numpy(gt_dis).float()
        loss_sdf = nn.MSELoss()(outputs_tanh[:lbs, 0, ...], gt_dis)
        loss_seg = nn.BCEWithLogitsLoss()(outputs[:lbs, 0, ...], y[:lbs].float())
        loss_seg_dice = R["losses"].dice_loss(outputs_soft[:lbs, 0, :, :, :], y[:lbs] == 1)
        dis_to_mask = torch.sigmoid(-1500 * outputs_tanh)
        consistency_loss = torch.mean((dis_to_mask - outputs_soft) ** 2)
        supervised_loss = loss_seg_dice + 0.3 * loss_sdf
        consistency_weight = 1.0 * R["ramps"].sigmoid_rampup(it // 150, 40.0)
        loss = supervised_loss + consistency_weight * consistency_loss
        opt_ref.zero_grad()
        loss.backward()
        opt_ref.step()
        # ---- this repository (the trainer's SGD step)
        torch.manual_seed(100 + it)
        out = m.step(x, y, it)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        m.after_step(it + 1)
        assert torch.equal(out["loss_sdf"], loss_sdf)
        assert torch.equal(out["loss_dice"], loss_seg_dice)
        assert torch.equal(out["loss_ce"], loss_seg.detach())
        assert torch.equal(out["loss_consistency"], consistency_loss)
        assert m.weight(it) == consistency_weight
        assert torch.equal(out["loss"], loss)
        _assert_same_weights(ref, m.model)


@pytest.mark.skipif(not os.path.isdir(SASS_ROOT), reason="released SASSNet clone not at /tmp/SASSnet")
@pytest.mark.parametrize("iter_num", [4500])  # mid-ramp (4500 // 150 = 30 < 40)
def test_sassnet_one_iteration_equals_released(np_bool, iter_num):
    R = _released(SASS_ROOT)
    disc = _module(os.path.join(R["code"], "networks/discriminator.py"), "released_sassnet_discriminator")
    torch.manual_seed(0)
    ref = R["net"].VNet(n_channels=1, n_classes=1, normalization="batchnorm", has_dropout=True)
    D = disc.FC3DDiscriminator(num_classes=1)
    # the only change: the pooling is sized for the released 112x112x80 patch (7x7x5 final map);
    # this 32x32x16 patch leaves 2x2x1, which this repository's discriminator averages whole
    D.avgpool = nn.AvgPool3d((2, 2, 1))
    m = _method("sassnet", "released")
    _copy_released_weights(ref, m.model)
    m.discriminator.load_state_dict(D.state_dict(), strict=True)
    x, y = _batch(2)
    lbs = 2
    consistency = m.consistency  # 0.015: the public value for 8 LA labels (README; argparse default 0.01)
    Dopt = torch.optim.Adam(D.parameters(), lr=1e-4, betas=(0.9, 0.99))
    opt_ref = torch.optim.SGD(ref.parameters(), lr=0.01, momentum=0.9, weight_decay=0.0001)
    opt = torch.optim.SGD(m.model.parameters(), lr=0.01, momentum=0.9, weight_decay=0.0001)
    for it in (iter_num, iter_num + 1):
        # ---- released train_gan_sdfloss.py, loop body
        Dtarget = torch.tensor([1, 1, 0, 0])
        ref.train()
        D.eval()
        torch.manual_seed(200 + it)
        outputs_tanh, outputs = ref(x)
        outputs_soft = torch.sigmoid(outputs)
        with torch.no_grad():
            gt_dis = R["compute_sdf"](y[:].cpu().numpy(), outputs[:lbs, 0, ...].shape)
            gt_dis = torch.from_numpy(gt_dis).float()
        loss_sdf = nn.MSELoss()(outputs_tanh[:lbs, 0, ...], gt_dis)
        loss_seg = nn.BCEWithLogitsLoss()(outputs[:lbs, 0, ...], y[:lbs].float())
        loss_seg_dice = R["losses"].dice_loss(outputs_soft[:lbs, 0, :, :, :], y[:lbs] == 1)
        consistency_weight = consistency * R["ramps"].sigmoid_rampup(it // 150, 40.0)
        supervised_loss = loss_seg_dice + 0.3 * loss_sdf
        Doutputs = D(outputs_tanh[lbs:], x[lbs:])
        loss_adv = F.cross_entropy(Doutputs, (Dtarget[:lbs]).long())
        loss = supervised_loss + consistency_weight * loss_adv
        opt_ref.zero_grad()
        loss.backward()
        opt_ref.step()
        ref.eval()
        D.train()
        with torch.no_grad():
            outputs_tanh, outputs = ref(x)
        torch.manual_seed(300 + it)
        Doutputs = D(outputs_tanh, x)
        D_loss = F.cross_entropy(Doutputs, Dtarget.long())
        Dopt.zero_grad()
        D_loss.backward()
        Dopt.step()
        # ---- this repository: step, the trainer's SGD step, then the discriminator step
        torch.manual_seed(200 + it)
        out = m.step(x, y, it)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        torch.manual_seed(300 + it)
        m.after_step(it + 1)
        assert torch.equal(out["loss_sdf"], loss_sdf)
        assert torch.equal(out["loss_dice"], loss_seg_dice)
        assert torch.equal(out["loss_ce"], loss_seg.detach())
        assert torch.equal(out["loss_adv"], loss_adv)
        assert m.weight(it) == consistency_weight
        assert torch.equal(out["loss"], loss)
        assert torch.equal(out["loss_D"], D_loss.detach())
        _assert_same_weights(ref, m.model)
        for k, v in D.state_dict().items():
            assert torch.equal(m.discriminator.state_dict()[k], v), k


def test_parser_help_names_the_choices():
    from engine.training import build_parser
    text = build_parser(get_dataset("LA")).format_help()
    assert "--baseline_heads {project,released}" in text
    net = released_vnet_sdf()
    assert (net.num_classes, net.sdf_channels, net.encoder.has_dropout) == (1, 1, False)
