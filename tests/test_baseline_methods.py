"""The five baseline methods: one iteration in 2D and 3D, overfitting a fixed batch, and
each method-specific term against a naive computation on small tensors."""
from __future__ import annotations
import logging
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from datasets import get_dataset
from methods import METHODS, build_test_model, get_method
from methods.common import sq_dice_loss
from methods.dtc import DTC, dual_task_consistency
from methods.mcnet import MCNet, mcnet2d_dice_loss, mutual_consistency, sharpen
from methods.sassnet import SASSNet, discriminator_targets
from methods.sdf import compute_sdf, normalized_sdf, sdf_to_mask
from methods.uamt import (UAMT, masked_consistency, uncertainty_map, uncertainty_threshold, update_ema)
from methods.urpc import rectified_consistency
from utils.ramps import sigmoid_rampup

BASELINES = ["uamt", "sassnet", "dtc", "urpc", "mcnet"]
SETTINGS = {"LA": ((4, 1, 32, 16, 16), 2), "ACDC": ((4, 1, 32, 32), 4)}
LATE = 10 ** 5  # an iteration past every ramp: all loss terms at full weight


def method_config(shape, method, **kw):
    """The run settings of ``method`` from the training flags' defaults of the dataset of ``shape``
    (LA: 3D, ACDC: 2D), with the flags ``kw`` set (the method's options checked as at parse time)."""
    from engine.config import TrainConfig
    from engine.training import build_parser
    d = get_dataset("LA" if len(shape) == 5 else "ACDC")
    flags = build_parser(d).parse_args(["--method", method])
    values = dict(labeled_bs=2, max_iterations=100, patch_size=list(shape[2:]))
    values.update(kw)
    for k, v in values.items():
        setattr(flags, k, v)
    return TrainConfig.from_flags(flags, d.name, get_method(method).options_from_flags(flags), exp="test",
                                  device="cpu")


def _method(name, dataset, **kw):
    shape, classes = SETTINGS[dataset]
    return get_method(name).from_config(method_config(shape, name, **kw), dataset, classes, torch.device("cpu"))


def _batch(dataset, seed=0):
    """A fixed batch whose image carries its label (so a network can fit it)."""
    shape, _ = SETTINGS[dataset]
    g = torch.Generator().manual_seed(seed)
    y = torch.zeros((shape[0],) + shape[2:], dtype=torch.long)
    if dataset == "LA":
        y[:, 8:24, 4:12, 4:12] = 1
    else:
        y[:, 4:14, 4:14] = 1
        y[:, 16:28, 6:20] = 2
        y[:, 6:26, 22:30] = 3
    return torch.randn(shape, generator=g) * 0.5 + y.unsqueeze(1).float(), y


def test_registry_lists_the_five_baselines():
    assert set(BASELINES) <= set(METHODS)
    assert [get_method(m).name for m in BASELINES] == ["UAMT", "SASSNet", "DTC", "URPC", "MCNet"]


# ----------------------------------------------------------------------------- one iteration, overfitting


@pytest.mark.parametrize("dataset", ["LA", "ACDC"])
@pytest.mark.parametrize("name", BASELINES)
def test_loss_falls_when_overfitting_one_batch(name, dataset):
    torch.manual_seed(0)
    np.random.seed(0)
    method = _method(name, dataset)
    x, y = _batch(dataset)
    opt = torch.optim.SGD(method.model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    losses = []
    steps = 15 if dataset == "LA" else 20
    for _ in range(steps):
        out = method.step(x, y, LATE)
        assert set(method.log_keys) <= set(out)
        assert all(out[k].dim() == 0 and torch.isfinite(out[k]) for k in method.log_keys)
        assert out["probs"].shape == (x.shape[0], SETTINGS[dataset][1]) + x.shape[2:]
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        method.after_step(LATE + 1)
        losses.append(float(out["loss"].detach()))
    assert np.mean(losses[-5:]) < 0.9 * np.mean(losses[:5]), losses


@pytest.mark.parametrize("dataset", ["LA", "ACDC"])
@pytest.mark.parametrize("name", BASELINES)
def test_training_weights_load_into_the_test_network(name, dataset):
    """The checkpoint (model.state_dict()) loads strictly into the test-time network, whose
    output equals the first output of the trained model in eval mode."""
    torch.manual_seed(0)
    method = _method(name, dataset)
    shape, classes = SETTINGS[dataset]
    test_model = build_test_model(name, dataset, classes, "cpu")
    test_model.load_state_dict(method.model.state_dict(), strict=True)
    x = torch.randn(shape)
    method.model.eval()
    test_model.eval()
    with torch.no_grad():
        assert torch.allclose(test_model(x)[0], method.model(x)[0])


def test_batch_without_unlabeled_items_is_refused():
    method = _method("dtc", "ACDC")
    x, y = _batch("ACDC")
    with pytest.raises(ValueError, match="no unlabeled item"):
        method.step(x[:2], y[:2], 0)


def test_ssnet_only_flags_are_refused_and_weights_reported(caplog):
    shape, classes = SETTINGS["ACDC"]
    # methods raise ValueError; the scripts turn it into a message (run_cli)
    with pytest.raises(ValueError, match="--method ssnet --supervised_only"):
        method_config(shape, "urpc", supervised_only=True)
    with pytest.raises(ValueError, match="--lds"):
        method_config(shape, "mcnet", lds="kl")
    with caplog.at_level(logging.INFO):
        m = get_method("mcnet").from_config(method_config(shape, "mcnet"), "ACDC", classes, "cpu")
    assert (m.consistency, m.consistency_rampup) == (0.1, 200.0)
    assert "not used" in caplog.text
    config = method_config(shape, "mcnet", baseline_consistency=0.5, baseline_rampup=10)
    m = get_method("mcnet").from_config(config, "ACDC", classes, "cpu")
    assert (m.consistency, m.consistency_rampup) == (0.5, 10.0)


@pytest.mark.parametrize("name,dataset,expected", [
    ("uamt", "LA", (0.1, 40.0)), ("uamt", "ACDC", (0.1, 200.0)),
    ("sassnet", "LA", (0.015, 40.0)), ("sassnet", "ACDC", (0.015, 200.0)),
    ("dtc", "LA", (1.0, 40.0)), ("dtc", "ACDC", (0.1, 200.0)),
    ("urpc", "LA", (0.1, 40.0)), ("urpc", "ACDC", (0.1, 200.0)),
    ("mcnet", "LA", (1.0, 40.0)), ("mcnet", "ACDC", (0.1, 200.0)),
])
def test_own_weights(name, dataset, expected):
    """The public code's (lambda, L), as the dataset description holds them and the method uses them."""
    from datasets import get_dataset

    setting = get_dataset(dataset).method(name)
    assert (setting.weight, setting.rampup) == expected
    shape, classes = SETTINGS[dataset]
    m = get_method(name).from_config(method_config(shape, name), dataset, classes, "cpu")
    assert (m.consistency, m.consistency_rampup) == expected


def test_ramp_uses_the_count_before_or_after_the_increment():
    shape, classes = SETTINGS["LA"]
    dtc = _method("dtc", "LA")
    mc = _method("mcnet", "LA")
    # iteration 149 done: DTC (public code) ramps from 149 // 150 = 0, MC-Net from 150 // 150 = 1
    assert dtc.weight(149) == pytest.approx(1.0 * sigmoid_rampup(0, 40))
    assert mc.weight(149) == pytest.approx(1.0 * sigmoid_rampup(1, 40))
    assert mc.weight(LATE) == 1.0


def test_sq_dice_matches_the_public_forms():
    g = torch.Generator().manual_seed(0)
    p = torch.softmax(torch.randn(2, 2, 4, 4, 3, generator=g), 1)
    y = torch.randint(0, 2, (2, 4, 4, 3), generator=g)
    fg, t = p[:, 1], (y == 1).float()
    naive = 1 - (2 * (fg * t).sum() + 1e-5) / ((fg ** 2).sum() + (t ** 2).sum() + 1e-5)
    assert sq_dice_loss(p, y, "LA") == pytest.approx(float(naive), rel=1e-6)
    p4 = torch.softmax(torch.randn(2, 4, 5, 6, generator=g), 1)
    y4 = torch.randint(0, 4, (2, 5, 6), generator=g)
    terms = [1 - (2 * (p4[:, c] * (y4 == c)).sum() + 1e-5) / ((p4[:, c] ** 2).sum() + (y4 == c).sum() + 1e-5)
             for c in range(4)]
    assert sq_dice_loss(p4, y4, "ACDC") == pytest.approx(float(sum(terms) / 4), rel=1e-6)


# ----------------------------------------------------------------------------- UA-MT


def test_uamt_uncertainty_and_threshold_against_naive():
    g = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(8, 2, 3, 4, 5, generator=g), 2)  # (T, B, C, H, W)
    u = uncertainty_map(probs)
    mu = probs.numpy().mean(0)
    naive = -(mu * np.log(mu + 1e-6)).sum(1, keepdims=True)
    assert u.shape == (2, 1, 4, 5)
    np.testing.assert_allclose(u.numpy(), naive, rtol=1e-5)
    assert uncertainty_threshold(0, 6000) == pytest.approx((0.75 + 0.25 * math.exp(-5)) * math.log(2))
    assert uncertainty_threshold(6000, 6000) == pytest.approx(math.log(2))
    assert uncertainty_threshold(9000, 6000) == pytest.approx(math.log(2))


def test_uamt_masked_consistency_normaliser():
    g = torch.Generator().manual_seed(1)
    ps = torch.softmax(torch.randn(2, 4, 3, 3, generator=g), 1)
    pt = torch.softmax(torch.randn(2, 4, 3, 3, generator=g), 1)
    mask = (torch.rand(2, 1, 3, 3, generator=g) > 0.5).float()
    num = sum(float(mask[b, 0, i, j]) * float((ps[b, c, i, j] - pt[b, c, i, j]) ** 2)
              for b in range(2) for c in range(4) for i in range(3) for j in range(3))
    # released: 2 * sum(mask) even with 4 channels
    assert float(masked_consistency(ps, pt, mask)) == pytest.approx(num / (2 * float(mask.sum()) + 1e-16), rel=1e-5)
    assert float(masked_consistency(ps, pt, torch.zeros_like(mask))) == 0.0


def test_uamt_ema_update():
    torch.manual_seed(0)
    student, teacher = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2)), nn.Sequential(nn.Linear(3, 2),
                                                                                       nn.BatchNorm1d(2))
    teacher[1].running_mean.fill_(5.0)
    t0 = [p.detach().clone() for p in teacher.parameters()]
    assert update_ema(teacher, student, 0.99, 0) == 0.0  # alpha = min(1 - 1/1, 0.99): copy the student
    assert all(torch.equal(t, s) for t, s in zip(teacher.parameters(), student.parameters()))
    for t, v in zip(teacher.parameters(), t0):
        t.data.copy_(v)
    alpha = update_ema(teacher, student, 0.99, 1000)
    assert alpha == 0.99
    for t, v, s in zip(teacher.parameters(), t0, student.parameters()):
        assert torch.allclose(t, 0.99 * v + 0.01 * s)
    assert torch.all(teacher[1].running_mean == 5.0)  # buffers are not averaged
    assert update_ema(teacher, student, 0.99, 9) == pytest.approx(0.9)  # min(1 - 1/10, 0.99)


def test_uamt_teacher_is_frozen_in_train_mode_and_follows_after_step():
    torch.manual_seed(0)
    method = _method("uamt", "ACDC")
    assert all(not p.requires_grad for p in method.teacher.parameters())
    x, y = _batch("ACDC")
    out = method.step(x, y, 0)
    assert method.teacher.training
    out["loss"].backward()
    assert all(p.grad is None for p in method.teacher.parameters())
    method.after_step(1)  # global step 0: alpha 0, the teacher becomes the student
    assert all(torch.equal(t, s) for t, s in zip(method.teacher.parameters(), method.model.parameters()))
    state = method.state_dict()
    other = _method("uamt", "ACDC")
    other.load_state_dict(state, torch.device("cpu"))
    assert all(torch.equal(a, b) for a, b in zip(other.teacher.state_dict().values(),
                                                 method.teacher.state_dict().values()))


def test_uamt_teacher_runs_eight_stochastic_passes():
    torch.manual_seed(0)
    method = _method("uamt", "ACDC")
    calls = []
    method.teacher.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    x, y = _batch("ACDC")
    method.step(x, y, 0)
    # one pass on the 2 noisy unlabeled items, then 4 passes on them repeated twice (= 8 maps)
    assert calls == [2, 4, 4, 4, 4]


# ----------------------------------------------------------------------------- SDF, DTC


def _naive_edt(mask):
    """Distance of every True pixel to the nearest False pixel (0 on False), brute force."""
    inside = np.argwhere(mask)
    outside = np.argwhere(~mask)
    out = np.zeros(mask.shape)
    for p in inside:
        out[tuple(p)] = np.sqrt(((outside - p) ** 2).sum(1)).min()
    return out


def test_sdf_against_a_naive_computation():
    mask = np.zeros((9, 11), bool)
    mask[2:7, 3:9] = True
    sdf = normalized_sdf(mask)
    pos, neg = _naive_edt(mask), _naive_edt(~mask)
    naive = neg / neg.max() - pos / pos.max()
    inner = mask & ~np.pad(mask, 1)[2:, 1:-1] | mask & ~np.pad(mask, 1)[:-2, 1:-1] | \
        mask & ~np.pad(mask, 1)[1:-1, 2:] | mask & ~np.pad(mask, 1)[1:-1, :-2]
    naive[inner] = 0
    np.testing.assert_allclose(sdf, naive, atol=1e-12)
    assert sdf.min() == -1.0 and sdf.max() == 1.0
    assert (sdf[mask] <= 0).all() and (sdf[~mask] > 0).all()
    assert (sdf[inner] == 0).all()


def test_sdf_channels_and_degenerate_masks():
    labels = np.zeros((2, 8, 8, 4), np.int64)
    labels[0, 2:6, 2:6, 1:3] = 1
    out = compute_sdf(labels, 2)
    assert out.shape == (2, 2, 8, 8, 4) and out.dtype == np.float32
    np.testing.assert_allclose(out[0, 1], normalized_sdf(labels[0] == 1), atol=1e-6)
    np.testing.assert_allclose(out[0, 0], normalized_sdf(labels[0] == 0), atol=1e-6)
    assert (out[0, 0][labels[0] == 1] > 0).all()  # background SDF is positive on the foreground
    assert not out[1].any()  # empty foreground and full background: all zero
    one = compute_sdf(np.array([[[0, 2, 3, 0]]]), 1)
    np.testing.assert_allclose(one[0, 0], normalized_sdf(np.array([[0, 2, 3, 0]]) > 0))


def test_dtc_transform_and_consistency_against_naive():
    s = torch.tensor([-0.5, -1e-3, 0.0, 1e-3, 0.5])
    with np.errstate(over="ignore"):  # exp(750) overflows to inf: 1 / (1 + inf) = 0
        np.testing.assert_allclose(sdf_to_mask(s).numpy(), 1 / (1 + np.exp(1500 * s.double().numpy())), rtol=1e-5)
    assert sdf_to_mask(s)[0] > 0.999 and sdf_to_mask(s)[-1] < 1e-3 and float(sdf_to_mask(s)[2]) == 0.5
    g = torch.Generator().manual_seed(0)
    sdf = torch.tanh(torch.randn(2, 2, 3, 4, generator=g)) * 1e-3
    probs = torch.softmax(torch.randn(2, 2, 3, 4, generator=g), 1)
    naive = np.mean((1 / (1 + np.exp(1500 * sdf.double().numpy())) - probs.double().numpy()) ** 2)
    assert float(dual_task_consistency(sdf, probs)) == pytest.approx(naive, rel=1e-5)


def test_dtc_consistency_covers_the_whole_batch_without_detach(monkeypatch):
    import methods.dtc as dtc_module

    seen = []
    original = dtc_module.dual_task_consistency
    monkeypatch.setattr(dtc_module, "dual_task_consistency",
                        lambda sdf, probs: seen.append((sdf.shape[0], sdf.requires_grad)) or original(sdf, probs))
    torch.manual_seed(0)
    method = _method("dtc", "ACDC")
    x, y = _batch("ACDC")
    out = method.step(x, y, LATE)
    assert seen == [(4, True)]  # labeled + unlabeled items, SDF not detached
    (grad,) = torch.autograd.grad(out["loss_consistency"], [method.model.out_conv_sdf.weight])
    assert grad.abs().sum() > 0


# ----------------------------------------------------------------------------- SASSNet


class _StubD(nn.Module):
    """A discriminator that records its inputs and returns fixed logits (+ a trainable offset)."""

    def __init__(self):
        super().__init__()
        self.bias = nn.Parameter(torch.tensor([0.3, -0.2]))
        self.calls = []

    def forward(self, sdf, image):
        self.calls.append((sdf.shape[0], self.training, sdf.requires_grad))
        return sdf.mean(dim=tuple(range(1, sdf.dim())))[:, None] * 0 + self.bias + sdf.sum() * 0


def test_sassnet_targets_and_generator_loss_against_naive():
    assert discriminator_targets(4, 2).tolist() == [1, 1, 0, 0]
    assert discriminator_targets(24, 12).tolist() == [1] * 12 + [0] * 12
    torch.manual_seed(0)
    shape, classes = SETTINGS["ACDC"]
    model = get_method("sassnet").build_model("ACDC", classes, "train", "cpu")
    stub = _StubD()
    method = SASSNet("ACDC", model, classes, 2, stub, consistency=0.015, consistency_rampup=200)
    x, y = _batch("ACDC")
    out = method.step(x, y, LATE)
    assert stub.calls == [(2, False, True)]  # unlabeled SDFs, D in eval mode, with gradient to the segmenter
    naive_adv = -math.log(math.exp(-0.2) / (math.exp(0.3) + math.exp(-0.2)))  # target 1 = "labeled"
    v = {k: float(t.detach()) for k, t in out.items() if k != "probs"}
    assert v["loss_adv"] == pytest.approx(naive_adv, rel=1e-6)
    assert v["loss"] == pytest.approx(v["loss_dice"] + 0.3 * v["loss_sdf"] + 0.015 * naive_adv, rel=1e-6)
    bias = stub.bias.detach().clone()
    method.after_step(LATE + 1)
    assert stub.calls[-1] == (4, True, False)  # whole batch, D in train mode, SDFs without gradient
    assert model.training  # restored after the discriminator step
    naive_d = float(F.cross_entropy(bias.expand(4, 2), torch.tensor([1, 1, 0, 0])))
    assert not torch.equal(bias, stub.bias.detach())  # D took an Adam step
    assert float(out["loss_D"]) == pytest.approx(naive_d, rel=1e-6)


def test_sassnet_discriminator_has_its_own_optimiser():
    torch.manual_seed(0)
    method = _method("sassnet", "LA")
    opt = method.d_optimizer
    assert isinstance(opt, torch.optim.Adam) and opt.defaults["lr"] == 1e-4 and opt.defaults["betas"] == (0.9, 0.99)
    d_ids = {id(p) for p in method.discriminator.parameters()}
    assert not d_ids & {id(p) for p in method.model.parameters()}  # the trainer's SGD never sees D
    x, y = _batch("LA")
    seg_opt = torch.optim.SGD(method.model.parameters(), lr=0.01)
    d_before = [p.detach().clone() for p in method.discriminator.parameters()]
    out = method.step(x, y, LATE)
    seg_opt.zero_grad()
    out["loss"].backward()
    seg_opt.step()
    assert all(torch.equal(a, b) for a, b in zip(d_before, method.discriminator.parameters()))
    m_before = [p.detach().clone() for p in method.model.parameters()]
    method.after_step(LATE + 1)
    assert all(torch.equal(a, b) for a, b in zip(m_before, method.model.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(d_before, method.discriminator.parameters()))
    other = _method("sassnet", "LA")
    other.load_state_dict(method.state_dict(), torch.device("cpu"))
    assert all(torch.equal(a, b) for a, b in zip(other.discriminator.parameters(), method.discriminator.parameters()))
    assert other.d_optimizer.state_dict()["state"]


# ----------------------------------------------------------------------------- URPC


def test_urpc_rectified_consistency_against_naive():
    g = torch.Generator().manual_seed(0)
    probs = [torch.softmax(torch.randn(2, 3, 4, 5, generator=g), 1) for _ in range(4)]
    P = np.stack([p.double().numpy() for p in probs])
    mean = P.mean(0)
    total = 0.0
    for s in range(4):
        d = (mean * (np.log(mean) - np.log(P[s]))).sum(1, keepdims=True)  # KL(p_bar || p_s) per pixel
        v = np.exp(-d)
        total += np.mean((mean - P[s]) ** 2 * v) / (np.mean(v) + 1e-8) + np.mean(d)
    assert float(rectified_consistency(probs)) == pytest.approx(total / 4, rel=1e-5)
    same = [probs[0]] * 3
    assert float(rectified_consistency(same)) == pytest.approx(0.0, abs=1e-7)


def test_urpc_consistency_uses_only_unlabeled_items(monkeypatch):
    import methods.urpc as urpc_module

    seen = []
    original = urpc_module.rectified_consistency
    monkeypatch.setattr(urpc_module, "rectified_consistency",
                        lambda probs: seen.append([p.shape[0] for p in probs]) or original(probs))
    torch.manual_seed(0)
    method = _method("urpc", "ACDC")
    x, y = _batch("ACDC")
    out = method.step(x, y, 0)
    assert seen == [[2, 2, 2, 2]]  # the 4 outputs, unlabeled half only
    assert float(out["consistency_weight"]) == pytest.approx(0.1 * sigmoid_rampup(0, 200))


# ----------------------------------------------------------------------------- MC-Net


def test_mcnet_sharpening_against_naive():
    p = torch.tensor([0.0, 0.3, 0.5, 0.6, 1.0])
    expected = [0.0, 0.3 ** 10 / (0.3 ** 10 + 0.7 ** 10), 0.5, 0.6 ** 10 / (0.6 ** 10 + 0.4 ** 10), 1.0]
    np.testing.assert_allclose(sharpen(p, 0.1).numpy(), expected, rtol=1e-5)
    np.testing.assert_allclose(sharpen(p, 1.0).numpy(), p.numpy(), rtol=1e-6)
    with pytest.raises(ValueError, match="temperature"):
        sharpen(p, 0)


def test_mcnet_mutual_consistency_against_naive_and_not_detached():
    g = torch.Generator().manual_seed(0)
    a = torch.softmax(torch.randn(2, 2, 3, 3, generator=g), 1).requires_grad_()
    b = torch.softmax(torch.randn(2, 2, 3, 3, generator=g), 1).requires_grad_()
    A, B = a.detach().double().numpy(), b.detach().double().numpy()
    sh = lambda p: p ** 10 / (p ** 10 + (1 - p) ** 10)  # noqa: E731
    naive = np.mean((A - sh(B)) ** 2) + np.mean((B - sh(A)) ** 2)
    loss = mutual_consistency([a, b], 0.1)
    assert float(loss.detach()) == pytest.approx(naive, rel=1e-5)
    ga, gb = torch.autograd.grad(loss, [a, b])
    # released: no detach, the gradient also flows through the sharpened targets
    ga_if_detached = (2 * (a - sharpen(b, 0.1)) / a.numel()).detach()  # what a detached sharpen(a) would give
    assert not torch.allclose(ga, ga_if_detached)  # includes d/da of sharpen(a) in the (b, sharpen(a)) term
    assert ga.abs().sum() > 0 and gb.abs().sum() > 0


def test_mcnet2d_dice_released_quirk():
    y = torch.tensor([[[0, 1], [2, 3]]])
    perfect = F.one_hot(y, 4).permute(0, 3, 1, 2).float()
    assert float(mcnet2d_dice_loss(perfect, y, "released")) == pytest.approx(0.5)  # no factor 2: minimum 0.5
    assert float(mcnet2d_dice_loss(perfect, y, "factor2")) == pytest.approx(0.0, abs=1e-6)
    g = torch.Generator().manual_seed(0)
    p = torch.softmax(torch.randn(2, 4, 3, 5, generator=g), 1)
    t = torch.randint(0, 4, (2, 3, 5), generator=g)
    naive = np.mean([1 - float((p[:, c] * (t == c)).sum()) / (float((p[:, c] ** 2).sum()) + float((t == c).sum())
                                                              + 1e-10) for c in range(4)])
    assert float(mcnet2d_dice_loss(p, t)) == pytest.approx(naive, rel=1e-6)


def test_mcnet_loss_weights_per_dataset():
    torch.manual_seed(0)
    for dataset, seg_weight in (("LA", 0.5), ("ACDC", 1.0)):
        method = _method("mcnet", dataset)
        x, y = _batch(dataset)
        out = method.step(x, y, LATE)
        assert method.seg_weight == seg_weight
        v = {k: float(t.detach()) for k, t in out.items() if k != "probs"}
        assert v["loss"] == pytest.approx(seg_weight * v["loss_dice"] + method.consistency * v["loss_consistency"],
                                          rel=1e-6)
    with pytest.raises(ValueError, match="dice"):
        MCNet("ACDC", method.model, 4, 2, dice="other")


def test_uamt_and_dtc_construct_with_explicit_arguments():
    shape, classes = SETTINGS["ACDC"]
    model = get_method("dtc").build_model("ACDC", classes, "train", "cpu")
    assert DTC("ACDC", model, classes, 2).consistency == 0.1
    with pytest.raises(ValueError, match="passes"):
        UAMT("ACDC", get_method("uamt").build_model("ACDC", classes), classes, 2, 100, passes=3)
    with pytest.raises(ValueError, match="dataset"):
        DTC("BraTS", model, classes, 2)
