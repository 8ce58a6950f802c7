"""AD-MT (``--method admt``): each piece of ``utils/admt.py`` against a naive computation, the
released draw orders (CutMix, the teacher switch), the training views, the released code's own
functions where ``/tmp/ADMT`` (github ZhenZHAO/AD-MT) is present, and tiny end-to-end runs of
the training and test scripts on synthetic data (CPU)."""
from __future__ import annotations

import ast
import json
import math
import os
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from utils import admt as A

RELEASED = os.environ.get("ADMT_RELEASED", "/tmp/ADMT")


# ----------------------------------------------------------------------------- helpers
def _probs(shape, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(torch.randn(shape, generator=g, dtype=torch.float64) * 3, dim=1)


def _naive_ensemble(p1, p2, temperature=1.0):
    """Element by element in float64 with math."""
    b, c = p1.shape[:2]
    flat1 = p1.movedim(1, -1).reshape(-1, c).tolist()
    flat2 = p2.movedim(1, -1).reshape(-1, c).tolist()
    conf, lab, confl = [], [], []
    for a, q in zip(flat1, flat2):
        h1 = -sum(x * math.log2(x + 1e-10) for x in a)
        h2 = -sum(x * math.log2(x + 1e-10) for x in q)
        w1 = math.exp(-h1) / (math.exp(-h1) + math.exp(-h2))
        mix = [(w1 * x + (1 - w1) * y) ** (1 / temperature) for x, y in zip(a, q)]
        s = sum(mix)
        mix = [m / s for m in mix]
        k = max(range(c), key=lambda i: mix[i])
        conf.append(mix[k])
        lab.append(k)
        confl.append(max(range(c), key=lambda i: a[i]) != max(range(c), key=lambda i: q[i]))
    shape = (b,) + tuple(p1.shape[2:])
    return (torch.tensor(conf, dtype=torch.float64).reshape(shape), torch.tensor(lab).reshape(shape),
            torch.tensor(confl).reshape(shape))


def _naive_dice(probs, label, ignore=None):
    b, c = probs.shape[:2]
    p = probs.movedim(1, -1).reshape(-1, c).tolist()
    y = label.reshape(-1).tolist()
    keep = [True] * len(y) if ignore is None else (~ignore.reshape(-1)).tolist()
    total = 0.0
    for k in range(c):
        inter = sum(p[i][k] * (y[i] == k) for i in range(len(y)) if keep[i])
        ps = sum(p[i][k] ** 2 for i in range(len(y)) if keep[i])
        gs = sum(float(y[i] == k) for i in range(len(y)) if keep[i])
        total += 1 - (2 * inter + 1e-5) / (ps + gs + 1e-5)
    return total / c


def _naive_ce(logits, target, keep):
    c = logits.shape[1]
    lg = logits.movedim(1, -1).reshape(-1, c).tolist()
    y = target.reshape(-1).tolist()
    kp = keep.reshape(-1).tolist()
    vals = [math.log(sum(math.exp(v) for v in row)) - row[t] for row, t, k in zip(lg, y, kp) if k]
    return sum(vals) / len(vals)


# ----------------------------------------------------------------------------- pseudo-labels
@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_ensemble_matches_naive_entropy_in_bits(temperature):
    p1, p2 = _probs((2, 3, 3, 4), 0), _probs((2, 3, 3, 4), 1)
    p2[0, :, 0, 0] = p1[0, :, 0, 0].flip(0)  # same entropy, swapped classes
    conf, lab, confl = A.ensemble_teachers(p1, p2, temperature)
    n_conf, n_lab, n_confl = _naive_ensemble(p1, p2, temperature)
    assert torch.allclose(conf, n_conf, rtol=1e-12, atol=1e-12)
    assert torch.equal(lab, n_lab) and torch.equal(confl, n_confl)
    # entropy in bits: a uniform 2-class pixel has 1 bit
    assert A.entropy_bits(torch.full((1, 2, 1), 0.5, dtype=torch.float64)).item() == pytest.approx(1.0, abs=1e-9)


def test_combat_conflicts_matches_naive():
    g = torch.Generator().manual_seed(2)
    y, ys = torch.randint(0, 3, (2, 5, 5), generator=g), torch.randint(0, 3, (2, 5, 5), generator=g)
    c, cs = torch.rand(2, 5, 5, generator=g), torch.rand(2, 5, 5, generator=g)
    cs[0, 0, :2] = c[0, 0, :2]  # equal confidence: the teacher keeps it (strictly greater needed)
    tconf = torch.rand(2, 5, 5, generator=g) < 0.6
    for mask in (tconf, None):
        ny, nc = y.clone(), c.clone()
        for idx in np.ndindex(*y.shape):
            conflict = y[idx] != ys[idx] and (mask is None or bool(mask[idx]))
            if conflict and cs[idx] > c[idx]:
                ny[idx], nc[idx] = ys[idx], cs[idx]
        out_y, out_c, out_m = A.combat_conflicts(y, c, ys, cs, mask)
        assert torch.equal(out_y, ny) and torch.equal(out_c, nc)
        assert torch.equal(out_m, (y != ys) & (mask if mask is not None else True))
    assert not torch.equal(A.combat_conflicts(y, c, ys, cs, tconf)[0], A.combat_conflicts(y, c, ys, cs, None)[0])


# ----------------------------------------------------------------------------- CutMix
@pytest.mark.parametrize("spatial", [(8, 6), (8, 6, 4)])
def test_cutmix_released_draw_order_and_naive_paste(spatial):
    b = 3
    g = torch.Generator().manual_seed(4)
    image = torch.randn((b, 2) + spatial, generator=g)
    lab = torch.randint(0, 4, (b,) + spatial, generator=g)
    conf = torch.rand((b,) + spatial, generator=g)
    np.random.seed(7)
    torch.manual_seed(7)
    mixed, (m_lab, m_conf), perm = A.cut_mix(image, (lab, conf), prob=1.0)
    after = (np.random.random(), torch.rand(1).item())
    # the released order, drawn by hand: coin, randperm, beta(4, 4), centres x, y[, z]
    np.random.seed(7)
    torch.manual_seed(7)
    assert np.random.random() < 1.0
    n_perm = torch.randperm(b)
    lam = np.random.beta(4, 4)
    centres = [np.random.randint(size=[b], low=int(x / 8), high=x) for x in spatial]
    assert (np.random.random(), torch.rand(1).item()) == after
    assert torch.equal(perm, n_perm)
    cut = [int(x * np.sqrt(1 - lam)) for x in spatial]
    n_img, n_lab, n_conf = image.clone(), lab.clone(), conf.clone()
    for i in range(b):
        j = int(n_perm[i])
        for pos in np.ndindex(*spatial):
            inside = all(max(cc[i] - s // 2, 0) <= p < min(cc[i] + s // 2, x)
                         for p, cc, s, x in zip(pos, centres, cut, spatial))
            if inside:
                n_img[(i, slice(None)) + pos] = image[(j, slice(None)) + pos]
                n_lab[(i,) + pos] = lab[(j,) + pos]
                n_conf[(i,) + pos] = conf[(j,) + pos]
    assert torch.equal(mixed, n_img) and torch.equal(m_lab, n_lab) and torch.equal(m_conf, n_conf)


def test_cutmix_not_applied_draws_only_the_coin():
    image = torch.randn(2, 1, 8, 8)
    np.random.seed(0)
    coin = np.random.random()
    np.random.seed(0)
    out, maps, perm = A.cut_mix(image, (torch.zeros(2, 8, 8),), prob=coin)  # coin < coin is False
    assert perm is None and torch.equal(out, image) and out is not image
    np.random.seed(0)
    np.random.random()
    assert np.random.random() == np.random.RandomState(0).random_sample(2)[1]


# ----------------------------------------------------------------------------- EMA and switch
def test_ema_alpha_warm_up():
    assert [A.ema_alpha(g, 40) for g in (0, 39, 40)] == [0.0, 0.0, 0.0]
    assert A.ema_alpha(41, 40) == 0.5 and A.ema_alpha(43, 40) == pytest.approx(0.75)
    assert A.ema_alpha(139, 40) == 0.99 and A.ema_alpha(10_000, 40) == 0.99
    assert A.ema_alpha(100, 50, decay=0.3) == 0.3


def _bn_net(seed):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
    net.train()
    net(torch.randn(2, 1, 5, 5))  # running statistics away from their initial values
    return net


@pytest.mark.parametrize("alpha", [0.0, 0.75])
def test_ema_update_parameters_and_buffers(alpha):
    t, s = _bn_net(0), _bn_net(1)
    before = {k: v.clone() for k, v in t.state_dict().items()}
    A.ema_update(t, s, alpha)
    for k, v in t.state_dict().items():
        expected = before[k].double() * alpha + s.state_dict()[k].double() * (1 - alpha)
        if v.dtype.is_floating_point:
            assert torch.allclose(v.double(), expected, atol=1e-6), k
        else:  # num_batches_tracked
            assert v.item() == int(expected.item()), k
    if alpha == 0.0:
        for k, v in t.state_dict().items():
            assert torch.equal(v, s.state_dict()[k]), k


@pytest.mark.parametrize("seed", range(6))
def test_switch_random_periods_in_released_order(seed):
    np.random.seed(seed)
    sw = A.AlternateSwitch(5)
    flags = []
    for _ in range(40):
        flags.append(sw.active)
        sw.update()
    np.random.seed(seed)
    expected, flag = [], True
    while len(expected) < 41:
        expected += [flag] * int(np.random.randint(1, 6))
        flag = not flag
    assert flags == expected[:40]
    state = sw.state_dict()
    other = A.AlternateSwitch(5)
    other.load_state_dict(state)
    assert other.state_dict() == state and other.remaining == sw.remaining >= 1


# ----------------------------------------------------------------------------- losses
def test_dice_and_masked_dice_match_naive():
    p = _probs((2, 4, 3, 3), 5)
    y = torch.randint(0, 4, (2, 3, 3), generator=torch.Generator().manual_seed(5))
    ignore = torch.rand(2, 3, 3, generator=torch.Generator().manual_seed(6)) < 0.4
    assert A.dice_loss(p, y).item() == pytest.approx(_naive_dice(p, y), abs=1e-12)
    assert A.dice_loss(p, y, ignore).item() == pytest.approx(_naive_dice(p, y, ignore), abs=1e-12)
    logits = torch.randn(2, 4, 3, 3, dtype=torch.float64)
    conf = torch.rand(2, 3, 3, dtype=torch.float64)
    conf[0, 0, 0] = 0.5  # at the threshold: kept
    got = A.masked_dice(logits, y, conf, 0.5).item()
    assert got == pytest.approx(_naive_dice(torch.softmax(logits, 1), y, conf < 0.5), abs=1e-12)
    assert A.masked_dice(logits, y, torch.zeros(2, 3, 3), 0.5).item() == 0.0  # all ignored: 1 - 1e-5 / 1e-5


def test_supervised_and_thresholded_ce_match_naive():
    logits = torch.randn(2, 2, 3, 3, 2, dtype=torch.float64)
    y = torch.randint(0, 2, (2, 3, 3, 2))
    naive_sup = (_naive_ce(logits, y, torch.ones_like(y, dtype=torch.bool))
                 + _naive_dice(torch.softmax(logits, 1), y)) / 2
    assert A.supervised_loss(logits, y).item() == pytest.approx(naive_sup, abs=1e-12)
    conf = torch.rand(2, 3, 3, 2, dtype=torch.float64)
    conf[0, 0, 0, 0] = 0.8  # at the threshold: kept (>=)
    got = A.thresholded_ce(logits, y, conf, 0.8)
    assert got.item() == pytest.approx(_naive_ce(logits, y, conf >= 0.8), abs=1e-12)
    target = y.clone()
    target[conf < 0.8] = -100
    assert got.item() == pytest.approx(F.cross_entropy(logits, target, ignore_index=-100).item(), abs=1e-12)
    assert A.thresholded_ce(logits, y, torch.zeros_like(conf), 0.8).item() == 0.0  # released: NaN


# ----------------------------------------------------------------------------- training views
def test_la_views_weak_is_ssnet_crop_and_strong_is_the_released_photometry():
    from dataloaders.admt_views import LAWeakStrong
    from dataloaders.transforms import RandomCrop, RandomRotFlip
    rng = np.random.RandomState(0)
    sample = {"image": rng.randn(20, 18, 12).astype(np.float32), "label": (rng.rand(20, 18, 12) > 0.5).astype(np.uint8)}
    for seed in range(4):  # seeds 1 and 3 apply the colour step, some the noise
        np.random.seed(seed)
        out = LAWeakStrong((16, 16, 8))(dict(sample))
        np.random.seed(seed)
        ref = RandomCrop((16, 16, 8))(RandomRotFlip()(dict(sample)))
        weak = ref["image"].astype(np.float32)
        a = 1 + np.random.uniform(-0.5, 0.5)
        b = np.random.uniform(-0.5, 0.5)
        x = weak.astype(np.float64)
        if np.random.uniform() < 0.8:
            lo, hi = x.min(), x.max()
            n = a * (x - lo) / (hi - lo)
            x = np.clip(n + b * n.mean(), 0, 1) * (hi - lo) + lo
        s = np.random.uniform(0.1, 1.0)
        if np.random.uniform() < 0.2:
            x = x + np.clip(s * np.random.randn(*x.shape), -2 * s, 2 * s)
        assert out["image"].shape == (2, 16, 16, 8) and out["image"].dtype == torch.float32
        assert torch.equal(out["image"][0], torch.from_numpy(weak))
        assert torch.equal(out["label"], torch.from_numpy(ref["label"]))
        assert np.allclose(out["image"][1].numpy(), x, atol=2e-5)


def _blend(x, degenerate, factor):
    """PIL's ImagingBlend on uint8 (float32 arithmetic; truncation; clipping when extrapolating)."""
    t = np.float32(degenerate) + np.float32(factor) * (x.astype(np.float32) - np.float32(degenerate))
    return np.clip(t, 0, 255).astype(np.uint8)


def _naive_jitter(u8, perm, factors):
    x = u8
    for k in perm:
        if k == 0:
            x = _blend(x, 0, factors[k])
        elif k == 1:
            x = _blend(x, int(x.mean() + 0.5), factors[k])
    return x  # saturation and hue leave a 1-channel image as it is


@pytest.mark.parametrize("order", ["0.8", "0.9"])
def test_color_jitter_draws_and_pil_arithmetic(order):
    from PIL import Image
    from dataloaders.admt_views import JITTER_RANGES, color_jitter_l
    u8 = (np.random.RandomState(1).rand(9, 7) * 255).astype(np.uint8)
    for seed in range(6):
        torch.manual_seed(seed)
        got = np.array(color_jitter_l(Image.fromarray(u8), order))
        torch.manual_seed(seed)
        perm = [int(k) for k in torch.randperm(4)]
        if order == "0.8":  # k-th uniform -> k-th applied operation
            draws = [torch.empty(()).uniform_(*JITTER_RANGES[k]).item() for k in perm]
            factors = dict(zip(perm, draws))
        else:  # b, c, s, h drawn up front
            factors = {k: torch.empty(()).uniform_(*JITTER_RANGES[k]).item() for k in range(4)}
        assert np.array_equal(got, _naive_jitter(u8, perm, factors)), seed


def test_acdc_views_weak_is_ssnet_geometry_and_strong_is_quantised():
    from dataloaders.admt_views import ACDCWeakStrong
    from dataloaders.transforms import RandomGenerator
    rng = np.random.RandomState(2)
    sample = {"image": rng.rand(20, 24).astype(np.float32), "label": rng.randint(0, 4, (20, 24)).astype(np.uint8)}
    seen_blur = False
    for seed in range(40):
        random.seed(seed), np.random.seed(seed), torch.manual_seed(seed)
        out = ACDCWeakStrong((16, 16))(dict(sample))
        random.seed(seed), np.random.seed(seed), torch.manual_seed(seed)
        ref = RandomGenerator((16, 16))(dict(sample))
        assert out["image"].shape == (2, 16, 16) and torch.equal(out["image"][0], ref["image"][0])
        assert torch.equal(out["label"], ref["label"])
        u8 = (ref["image"][0].numpy() * 255).astype(np.uint8)
        strong = out["image"][1].numpy() * 255
        assert np.allclose(strong, np.round(strong), atol=1e-3) and strong.min() >= 0 and strong.max() <= 255
        if np.random.random() < 0.8:  # the draws after the geometry (state continues from ref's)
            perm = [int(k) for k in torch.randperm(4)]
            from dataloaders.admt_views import JITTER_RANGES
            u8 = _naive_jitter(u8, perm, {k: torch.empty(()).uniform_(*JITTER_RANGES[k]).item() for k in perm})
        if random.random() < 0.2:
            seen_blur = True
            np.random.uniform(0.1, 2.0)
            continue  # PIL's blur itself is not re-implemented here
        assert np.array_equal(np.round(strong).astype(np.uint8), u8), seed
    assert seen_blur


# ----------------------------------------------------------------------------- the released code
def _released(path, names, namespace):
    """The named top-level functions/classes/assignments of a released file, executed in ``namespace``."""
    tree = ast.parse(open(os.path.join(RELEASED, path)).read())
    keep = []
    for node in tree.body:
        named = getattr(node, "name", None)
        targets = [t.id for t in getattr(node, "targets", []) if isinstance(t, ast.Name)]
        if named in names or set(targets) & set(names):
            keep.append(node)
    exec(compile(ast.Module(body=keep, type_ignores=[]), path, "exec"), namespace)
    return namespace


needs_released = pytest.mark.skipif(not os.path.isdir(os.path.join(RELEASED, "code")),
                                    reason="the released AD-MT code is not at /tmp/ADMT")


@needs_released
@pytest.mark.filterwarnings("ignore:This overload of add_")  # the released EMA's add_(alpha, tensor)
def test_equal_to_released_functions():
    ns = {"np": np, "torch": torch, "F": F, "nn": nn}
    _released("code/dataloaders/mixaugs.py", {"rand_bbox", "rand_bbox_3d", "cut_mix", "cut_mix_3d"}, ns)
    _released("code/train_utils.py", {"AlternateUpdate", "get_compromise_pseudo_btw_tea_stu"}, ns)
    _released("code/utils/losses.py", {"DiceLoss"}, ns)
    _released("code/train_post_3d_aut.py", {"update_ema_variables"}, ns)
    g = torch.Generator().manual_seed(0)
    for spatial, fn in (((16, 12), ns["cut_mix"]), ((8, 8, 8), ns["cut_mix_3d"])):
        img = torch.randn((4, 1) + spatial, generator=g)
        y, c = torch.randint(0, 2, (4,) + spatial, generator=g), torch.rand((4,) + spatial, generator=g)
        m = torch.rand((4,) + spatial, generator=g) < 0.5
        np.random.seed(3), torch.manual_seed(3)
        mine = A.cut_mix(img, (y, c, m), prob=1.0)
        np.random.seed(3), torch.manual_seed(3)
        assert np.random.random() < 1.0
        theirs = fn(img, y, c, m)
        assert all(torch.equal(a, b) for a, b in zip((mine[0], *mine[1]), theirs))
    y, ys = torch.randint(0, 3, (2, 6, 6), generator=g), torch.randint(0, 3, (2, 6, 6), generator=g)
    c, cs, m = torch.rand(2, 6, 6, generator=g), torch.rand(2, 6, 6, generator=g), torch.rand(2, 6, 6, generator=g) < .5
    theirs = ns["get_compromise_pseudo_btw_tea_stu"](y, c, ys, cs, "pixel_confidence", m)
    assert all(torch.equal(a, b) for a, b in zip(A.combat_conflicts(y, c, ys, cs, m), theirs))
    p = torch.softmax(torch.randn(2, 4, 6, 6, generator=g), 1)
    dice = ns["DiceLoss"](4)
    assert torch.equal(A.dice_loss(p, y), dice(p, y.unsqueeze(1).float(), ignore=torch.zeros_like(y).float()))
    assert torch.equal(A.dice_loss(p, y, c < 0.5), dice(p, y.unsqueeze(1).float(), ignore=(c < 0.5).float()))
    np.random.seed(5)
    theirs_sw = ns["AlternateUpdate"](7, initial_flag=True, flag_random=True)
    seq_theirs = []
    for _ in range(50):
        seq_theirs.append(theirs_sw.get_alternate_state())
        theirs_sw.update()
    np.random.seed(5)
    sw = A.AlternateSwitch(7)
    seq = []
    for _ in range(50):
        seq.append(sw.active)
        sw.update()
    assert seq == seq_theirs
    for gs in (0, 39, 40, 41, 60, 500):
        t, s, t2 = _bn_net(0), _bn_net(1), _bn_net(0)
        ns["update_ema_variables"](s, t2, 0.99, gs, {"consistency_rampup": 40})
        A.ema_update(t, s, A.ema_alpha(gs, 40, 0.99))
        for (k, a), b in zip(t.state_dict().items(), t2.state_dict().values()):
            assert torch.equal(a, b.to(a.dtype)) if a.dtype.is_floating_point else a.item() == int(b.item()), (gs, k)


@needs_released
def test_la_strong_view_equal_to_released_classes():
    ns = {"np": np, "wraps": __import__("functools").wraps}
    _released("code/dataloaders/randcolor.py", {"MAX_VALUES_BY_DTYPE", "clip", "clipped", "preserve_shape",
                                                 "_brightness_contrast_adjust_non_uint",
                                                 "brightness_contrast_adjust"}, ns)
    _released("code/dataloaders/dataset_3d.py", {"RandomBrightnessContrast", "RandomGaussianNoise"}, ns)
    from dataloaders.admt_views import brightness_contrast_3d, gaussian_noise_3d
    x = np.random.RandomState(0).randn(10, 9, 8).astype(np.float32)
    color, noise = ns["RandomBrightnessContrast"](0.5, 0.5, prob=0.8), ns["RandomGaussianNoise"]([0.1, 1.0], 0.2)
    for seed in range(8):
        np.random.seed(seed)
        theirs = noise(color(x.copy())).astype(np.float32)
        np.random.seed(seed)
        mine = gaussian_noise_3d(brightness_contrast_3d(x.copy())).astype(np.float32)
        assert np.array_equal(mine, theirs), seed


# ----------------------------------------------------------------------------- the method, end to end
LA_FLAGS = ["--max_iterations", "2", "--patch_size", "16", "16", "16", "--labelnum", "2", "--num_workers", "0",
            "--device", "cpu", "--log_interval", "1", "--val_start", "2", "--val_interval", "2",
            "--stride_xy", "16", "--stride_z", "16", "--save_interval", "2", "--method", "admt",
            "--admt_period", "1"]
ACDC_FLAGS = ["--max_iterations", "4", "--patch_size", "32", "32", "--batch_size", "4", "--labeled_bs", "2",
              "--labelnum", "1", "--num_workers", "0", "--device", "cpu", "--log_interval", "1",
              "--val_start", "2", "--val_interval", "2", "--save_interval", "2", "--method", "admt"]


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread (the runs are tiny; on a shared 2-core machine threads only wait)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_released_run_defaults_and_flags(la_root, acdc_root):
    import train_acdc
    import train_la
    la = train_la.parse_args(["--method", "admt", "--root_path", la_root, "--labelnum", "2"])
    assert (la.batch_size, la.labeled_bs, la.max_iterations, la.seed, la.base_lr) == (4, 2, 15000, 2023, 0.01)
    n_train = len(open(os.path.join(la_root, "train.list")).read().split())
    assert la.val_interval == la.val_start == 4 * ((n_train - 2) // 2)  # every 4 epochs of the unlabeled items
    assert train_la.parse_args(["--method", "admt", "--val_interval", "7"]).val_interval == 7  # given: kept
    o = la.options
    assert (o.admt_threshold, o.admt_period, o.admt_rampup, o.admt_weight, o.admt_loss) == (0.8, 19, 40.0, 2.0, "ce")
    ac = train_acdc.parse_args(["--method", "admt", "--root_path", "nowhere"])
    assert (ac.batch_size, ac.labeled_bs, ac.max_iterations, ac.seed) == (24, 12, 30000, 2023)
    assert ac.val_interval == 200  # the list cannot be read: the project's grid
    o = ac.options
    assert (o.admt_threshold, o.admt_period, o.admt_rampup, o.admt_loss) == (0.95, 50, 50.0, "dice")
    # 2 epochs of (22 slices - 8 labeled) // (4 - 2) = 7 iterations
    assert train_acdc.parse_args(["--method", "admt", "--root_path", acdc_root, "--batch_size", "4",
                                  "--labeled_bs", "2", "--labelnum", "1"]).val_interval == 14
    with pytest.raises(ValueError, match="admt_period"):
        train_la.parse_args(["--method", "admt", "--admt_period", "0"])
    with pytest.raises(ValueError, match="--lds"):
        train_la.parse_args(["--method", "admt", "--lds", "none"])


def test_la_train_and_test_scripts(la_root, tmp_path):
    import test_la
    import train_la
    summary = train_la.main(["--root_path", la_root, "--model_root", str(tmp_path)] + LA_FLAGS)
    snap = tmp_path / "LA_ADMT_2_labeled" / "VNet"
    assert summary["iterations"] == 2 and (snap / "VNet_best_model.pth").is_file()
    log = (snap / "log.txt").read_text()
    # --admt_period 1: teacher 1 then teacher 2 (the CutMix branch)
    assert "iteration 1: " in log and "teacher 1.0000" in log and "teacher 2.0000" in log
    last = torch.load(snap / "last.pth", weights_only=True)
    state = last["method"]
    assert set(state) == {"teacher1", "teacher2", "switch"} and state["switch"]["active"] is True
    best = torch.load(snap / "VNet_best_model.pth", weights_only=True)
    assert set(best) == set(last["model"]) and "encoder.block_one.conv.0.weight" in best
    assert not any("contrastive" in k for k in best)
    # first two iterations: alpha 0, so each teacher IS the student of its own iteration (T2 after iteration 2)
    for k, v in state["teacher2"].items():
        if v.dtype.is_floating_point:
            assert torch.equal(v, last["model"][k]), k
    # released poly order: the rate set after the step of 0-based index 1 is 0.01 (1 - 1/2) ** 0.9
    assert last["optimizer"]["param_groups"][0]["lr"] == pytest.approx(0.01 * 0.5 ** 0.9)
    result = test_la.main(["--root_path", la_root, "--labelnum", "2", "--model_root", str(tmp_path),
                           "--method", "admt", "--patch_size", "16", "16", "16", "--stride_xy", "16",
                           "--stride_z", "16", "--device", "cpu", "--save_nii", "0"])
    assert result["method"] == "admt" and (snap / "test" / "performance.json").is_file()


def test_acdc_train_resume_and_test_scripts(acdc_root, tmp_path, monkeypatch):
    """Interrupted after iteration 2 (last.pth written there) and resumed == one run of 4 iterations
    (the poly schedule depends on --max_iterations, so the interrupted run has the same flags)."""
    import test_acdc
    import train_acdc
    from methods.admt import ADMT
    flags = ["--root_path", acdc_root] + ACDC_FLAGS + ["--admt_period", "2", "--select", "last"]
    train_acdc.main(flags + ["--model_root", str(tmp_path / "a")])
    snap_a = tmp_path / "a" / "ACDC_ADMT_1_labeled" / "unet"
    straight = torch.load(snap_a / "last.pth", weights_only=True)
    step = ADMT.step

    def interrupted(self, image, label, iter_num):
        if iter_num == 2:
            raise KeyboardInterrupt
        return step(self, image, label, iter_num)

    monkeypatch.setattr(ADMT, "step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train_acdc.main(flags + ["--model_root", str(tmp_path / "b")])
    monkeypatch.setattr(ADMT, "step", step)
    train_acdc.main(flags + ["--model_root", str(tmp_path / "b"), "--resume"])
    resumed = torch.load(tmp_path / "b" / "ACDC_ADMT_1_labeled" / "unet" / "last.pth", weights_only=True)
    for k, v in straight["model"].items():
        assert torch.equal(v, resumed["model"][k]), k
    for t in ("teacher1", "teacher2"):
        for k, v in straight["method"][t].items():
            assert torch.equal(v, resumed["method"][t][k]), (t, k)
    assert straight["method"]["switch"] == resumed["method"]["switch"]
    config = json.loads((snap_a / "config.json").read_text())
    assert config["method"] == "admt" and config["admt_loss"] == "dice" and config["seed"] == 2023
    result = test_acdc.main(["--root_path", acdc_root, "--labelnum", "1", "--model_root", str(tmp_path / "a"),
                             "--method", "admt", "--patch_size", "32", "32", "--device", "cpu", "--save_nii", "0"])
    n_test = len(open(os.path.join(acdc_root, "test.list")).read().split())
    assert result["method"] == "admt" and result["cases"] == n_test


def test_batch_layout_is_checked():
    from methods.admt import ADMT
    from types import SimpleNamespace
    opts = SimpleNamespace(admt_threshold=0.95, admt_period=3, admt_rampup=50.0, admt_weight=2.0,
                           admt_ema_decay=0.99, admt_cutmix_prob=1.0, admt_temperature=1.0, admt_loss="dice")
    nets = [ADMT.build_model("ACDC", 4, "train", "cpu") for _ in range(3)]
    method = ADMT("ACDC", *nets, num_classes=4, labeled_bs=2, options=opts)
    with pytest.raises(ValueError, match=r"\(B, 2, \*S\)"):
        method.step(torch.zeros(4, 1, 16, 16), torch.zeros(4, 16, 16, dtype=torch.long), 0)
    with pytest.raises(ValueError, match="no unlabeled item"):
        method.step(torch.zeros(2, 2, 16, 16), torch.zeros(2, 16, 16, dtype=torch.long), 0)


def test_poly_rate_follows_the_released_loop():
    """The released loop runs step i at the rate set after step i - 1 from i - 1 (0.01 for steps 0 and 1)."""
    from engine.training import learning_rate
    from methods.base import Stage

    n_iter = 50
    rate = learning_rate(0.01, Stage("train", "", n_iter, lr_steps=False, lr_poly=0.9), None)
    released, lr = [], 0.01
    for i in range(n_iter):
        released.append(lr)
        lr = 0.01 * (1 - i / n_iter) ** 0.9
    assert [rate(n) for n in range(n_iter)] == pytest.approx(released, rel=1e-12)
