"""Tests for code/utils/vat.py (SS-Net's VAT smoothness loss), 2D and 3D, on tiny stand-in networks."""
from __future__ import annotations
import copy
import itertools
import math

import pytest
import torch
import torch.nn as nn

from utils.vat import VATLoss, frozen_bn_stats, l2_normalize, vat_distance, vat_lds

INPUT_SHAPES = {"2d": (2, 1, 8, 8), "3d": (2, 1, 6, 6, 4)}


class TinyNet(nn.Module):
    """conv-BN-ReLU-dropout-conv-BN-ReLU + 1x1 conv; returns (logits, features) or logits only.

    The dropout sits BEFORE a BatchNorm so the running statistics depend on the dropout draws.
    """

    def __init__(self, dims: int, num_classes: int = 2, dropout: float = 0.3, tuple_output: bool = True):
        super().__init__()
        conv = nn.Conv2d if dims == 2 else nn.Conv3d
        bn = nn.BatchNorm2d if dims == 2 else nn.BatchNorm3d
        drop = nn.Dropout2d if dims == 2 else nn.Dropout3d
        self.body = nn.Sequential(
            conv(1, 8, 3, padding=1), bn(8), nn.ReLU(), drop(dropout),
            conv(8, 16, 3, padding=1), bn(16), nn.ReLU(),
        )
        self.out_conv = conv(16, num_classes, 1)
        self.tuple_output = tuple_output

    def forward(self, x):
        features = self.body(x)
        logits = self.out_conv(features)
        return (logits, features) if self.tuple_output else logits


def _net(dims, seed=0, **kw):
    torch.manual_seed(seed)
    net = TinyNet(2 if dims == "2d" else 3, **kw)
    net.train()
    return net


def _x(dims, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(INPUT_SHAPES[dims], generator=g)


def _buffers(model):
    return {k: v.clone() for k, v in model.named_buffers()}


# ---------------------------------------------------------------- distances against naive loops
def _naive_distance(q, p, distance):
    num_classes = q.shape[1]
    positions = list(itertools.product(*(range(s) for s in (q.shape[0],) + tuple(q.shape[2:]))))
    at = lambda t, c, pos: float(t[(pos[0], c) + pos[1:]])  # noqa: E731
    if distance == "dice":
        inter = sum(at(q, c, pos) * at(p, c, pos) for c in range(num_classes) for pos in positions)
        total = sum(at(q, c, pos) + at(p, c, pos) for c in range(num_classes) for pos in positions)
        return 1 - (2 * inter + 1e-8) / (total + 1e-8)
    if distance == "class_dice":
        terms = []
        for c in range(num_classes):
            inter = sum(at(q, c, pos) * at(p, c, pos) for pos in positions)
            sq = sum(at(q, c, pos) ** 2 for pos in positions)
            sp = sum(at(p, c, pos) ** 2 for pos in positions)
            terms.append(1 - (2 * inter + 1e-10) / (sq + sp + 1e-10))
        return sum(terms) / num_classes
    kl = 0.0
    for pos in positions:
        for c in range(num_classes):
            pc = at(p, c, pos)
            kl += pc * (math.log(pc) - math.log(at(q, c, pos))) if pc > 0 else 0.0
    return kl / len(positions)


@pytest.mark.parametrize("dims", ["2d", "3d"])
@pytest.mark.parametrize("distance", ["dice", "class_dice", "kl"])
def test_distance_matches_naive_loop(dims, distance):
    shape = (2, 3) + INPUT_SHAPES[dims][2:]
    g = torch.Generator().manual_seed(2)
    logits_hat = torch.randn(shape, generator=g) * 2
    p = torch.softmax(torch.randn(shape, generator=g) * 2, dim=1)
    got = vat_distance(logits_hat, p, distance)
    assert got.dtype == torch.float32 and got.dim() == 0
    expected = _naive_distance(torch.softmax(logits_hat, dim=1), p, distance)
    assert got.item() == pytest.approx(expected, rel=1e-5)
    # identical predictions: KL 0 and dice/class_dice minimal (0 for one-hot p)
    one_hot = torch.nn.functional.one_hot(p.argmax(1), 3).movedim(-1, 1).float()
    same = vat_distance(torch.log(one_hot.clamp_min(1e-30)), one_hot, distance)
    assert same.item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("dims", ["2d", "3d"])
def test_l2_normalize_per_sample(dims):
    d = torch.randn(INPUT_SHAPES[dims]) * torch.tensor([0.1, 30.0]).view(-1, *([1] * (len(INPUT_SHAPES[dims]) - 1)))
    n = l2_normalize(d)
    norms = n.flatten(1).norm(dim=1)
    assert torch.allclose(norms, torch.ones(2), rtol=1e-6)
    # direction kept
    assert torch.allclose(n[0] * d[0].norm(), d[0], rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- the perturbation
@pytest.mark.parametrize("dims, distance, eps", [("3d", "dice", 10.0), ("2d", "class_dice", 6.0), ("2d", "kl", 2.0)])
def test_r_adv_has_norm_epsilon_per_sample(dims, distance, eps):
    net = _net(dims)
    lds, r_adv = vat_lds(net, _x(dims), xi=10.0, epsilon=eps, ip=1, distance=distance)
    assert r_adv.shape == INPUT_SHAPES[dims] and not r_adv.requires_grad
    norms = r_adv.flatten(1).norm(dim=1)
    assert torch.allclose(norms, torch.full((2,), eps), rtol=1e-5)
    assert torch.isfinite(lds) and lds.requires_grad


def test_noise_is_drawn_after_the_clean_pass_from_the_cpu_generator():
    """With ip=0 the perturbation is the normalised noise itself: checks the order of random draws."""
    net = _net("2d")
    x = _x("2d")
    twin = copy.deepcopy(net)
    torch.manual_seed(42)
    _, r_adv = vat_lds(net, x, epsilon=3.0, ip=0)
    torch.manual_seed(42)
    with torch.no_grad():
        twin(x)  # the clean pass consumes the dropout draws first
    noise = torch.rand(x.shape).sub(0.5)
    assert torch.allclose(r_adv, 3.0 * l2_normalize(noise), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("dims", ["2d", "3d"])
def test_adversarial_direction_beats_random_directions(dims):
    """D at x + r_adv exceeds D at x + epsilon * (random unit direction), averaged over seeds."""
    net = _net(dims, dropout=0.0)
    net.eval()  # fixed function: compare directions only
    eps = 2.0
    adv, rnd = [], []
    for seed in range(4):
        x = _x(dims, seed=10 + seed)
        torch.manual_seed(seed)
        lds, _ = vat_lds(net, x, xi=1.0, epsilon=eps, ip=1, distance="class_dice")
        adv.append(lds.item())
        with torch.no_grad():
            p = torch.softmax(net(x)[0], dim=1)
            for k in range(4):
                g = torch.Generator().manual_seed(1000 * seed + k)
                direction = l2_normalize(torch.randn(x.shape, generator=g))
                rnd.append(vat_distance(net(x + eps * direction)[0], p, "class_dice").item())
    assert sum(adv) / len(adv) > 1.5 * sum(rnd) / len(rnd)


# ---------------------------------------------------------------- BatchNorm and gradients
@pytest.mark.parametrize("dims", ["2d", "3d"])
def test_bn_buffers_equal_one_plain_train_forward(dims):
    net = _net(dims)
    twin = copy.deepcopy(net)
    before = _buffers(net)
    x = _x(dims)
    torch.manual_seed(7)
    VATLoss(epsilon=6.0, distance="dice")(net, x)
    torch.manual_seed(7)
    with torch.no_grad():
        twin(x)
    after_vat, after_plain = _buffers(net), _buffers(twin)
    for k in after_plain:
        assert torch.equal(after_vat[k], after_plain[k]), k
    # the clean pass did update the statistics once
    assert any(not torch.equal(before[k], after_vat[k]) for k in before if "running_mean" in k)
    assert all(int(v) == 1 for k, v in after_vat.items() if k.endswith("num_batches_tracked"))
    assert all(m.track_running_stats for m in net.modules() if hasattr(m, "track_running_stats"))


def test_bn_flags_restored_when_the_perturbed_pass_raises():
    net = _net("2d")
    calls = {"n": 0}

    def fail_on_second_call(module, inputs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("boom")

    handle = net.register_forward_pre_hook(fail_on_second_call)
    with pytest.raises(RuntimeError, match="boom"):
        vat_lds(net, _x("2d"))
    handle.remove()
    assert all(m.track_running_stats for m in net.modules() if hasattr(m, "track_running_stats"))
    with pytest.raises(ValueError, match="x"):
        with frozen_bn_stats(net):
            assert not any(m.track_running_stats for m in net.modules() if hasattr(m, "track_running_stats"))
            raise ValueError("x")
    assert all(m.track_running_stats for m in net.modules() if hasattr(m, "track_running_stats"))


@pytest.mark.parametrize("dims", ["2d", "3d"])
def test_grad_buffers_untouched_and_lds_reaches_the_model(dims):
    net = _net(dims)
    sentinel = {n: torch.full_like(p, 0.25) for n, p in net.named_parameters()}
    for n, p in net.named_parameters():
        p.grad = sentinel[n].clone()
    lds = VATLoss(epsilon=10.0, distance="dice")(net, _x(dims))
    for n, p in net.named_parameters():
        assert torch.equal(p.grad, sentinel[n]), f"direction pass touched {n}.grad"
    lds.backward()
    changed = [n for n, p in net.named_parameters() if not torch.equal(p.grad, sentinel[n])]
    assert "out_conv.weight" in changed and "body.0.weight" in changed


def test_logits_only_model_gives_the_same_loss():
    net = _net("2d")
    twin = copy.deepcopy(net)
    twin.tuple_output = False
    x = _x("2d")
    torch.manual_seed(3)
    a = VATLoss(distance="class_dice")(net, x)
    torch.manual_seed(3)
    b = VATLoss(distance="class_dice")(twin, x)
    assert torch.equal(a, b)


@pytest.mark.parametrize("distance", ["dice", "class_dice", "kl"])
def test_runs_under_autocast_and_returns_float32(distance):
    net = _net("3d")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        lds = VATLoss(epsilon=10.0, distance=distance)(net, _x("3d"))
    assert lds.dtype == torch.float32 and lds.dim() == 0 and torch.isfinite(lds)
    lds.backward()
    assert net.out_conv.weight.grad is not None


def test_more_power_iterations_run():
    lds, r_adv = vat_lds(_net("2d"), _x("2d"), ip=3, epsilon=1.5)
    assert torch.allclose(r_adv.flatten(1).norm(dim=1), torch.full((2,), 1.5), rtol=1e-5)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="distance"):
        VATLoss(distance="l2")
    with pytest.raises(ValueError, match="xi"):
        VATLoss(xi=0.0)
    with pytest.raises(ValueError, match="epsilon"):
        VATLoss(epsilon=-1.0)
    with pytest.raises(ValueError, match="ip"):
        VATLoss(ip=-1)

    class DictNet(nn.Module):
        def forward(self, x):
            return {"logits": x}

    with pytest.raises(TypeError, match="first item is the logits"):
        VATLoss()(DictNet(), torch.rand(2, 2, 4, 4))


def test_direction_pass_freezes_and_restores_parameters():
    """The direction pass runs with parameters frozen (no weight-gradient work)
    and gives every flag back, also when the model raises."""
    from utils.vat import frozen_parameters

    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3, padding=1))
    net[0].bias.requires_grad_(False)  # a caller's frozen parameter stays frozen
    seen = []

    class Spy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, x):
            seen.append(self.net[0].weight.requires_grad)
            return self.net(x)

    spy = Spy()
    VATLoss(xi=1.0, epsilon=1.0, distance="class_dice")(spy, torch.randn(2, 1, 8, 8))
    assert seen == [True, False, True]  # prediction pass (no_grad), direction pass, final pass
    assert net[0].weight.requires_grad and not net[0].bias.requires_grad
    with pytest.raises(RuntimeError):
        with frozen_parameters(net):
            raise RuntimeError("boom")
    assert net[0].weight.requires_grad and not net[0].bias.requires_grad


def test_uniform_noise_is_the_released_draw():
    """torch.rand(shape).sub(0.5) on the CPU generator, whatever the path (pinned for CUDA)."""
    from utils.vat import uniform_noise
    torch.manual_seed(3)
    ref = torch.rand(2, 1, 8, 8).sub(0.5)
    after_ref = torch.get_rng_state()
    torch.manual_seed(3)
    d = uniform_noise(torch.Size((2, 1, 8, 8)), torch.device("cpu"))
    assert torch.equal(d, ref) and torch.equal(torch.get_rng_state(), after_ref)
    if torch.cuda.is_available():
        torch.manual_seed(3)
        assert torch.equal(uniform_noise(torch.Size((2, 1, 8, 8)), torch.device("cuda")).cpu(), ref)


@pytest.mark.parametrize("distance,shape", [("dice", (2, 2, 6, 5, 4)), ("class_dice", (3, 4, 7, 6))])
def test_vat_dice_distances_agree_with_losses(distance, shape):
    """vat.py keeps its own Dice (it is copied alone); it must equal losses.py's to float rounding:
    the LA distance is binary_dice_loss over the whole softmax tensors, the ACDC one soft_dice_loss."""
    from utils.losses import binary_dice_loss, soft_dice_loss
    from utils.vat import vat_distance
    g = torch.Generator().manual_seed(7)
    logits_hat = torch.randn(shape, generator=g)
    p = torch.softmax(torch.randn(shape, generator=g), dim=1)
    q = torch.softmax(logits_hat, dim=1)
    ours = vat_distance(logits_hat, p, distance)
    reference = binary_dice_loss(q, p) if distance == "dice" else soft_dice_loss(q, p)
    assert torch.allclose(ours, reference, rtol=1e-6, atol=1e-7), (float(ours), float(reference))
