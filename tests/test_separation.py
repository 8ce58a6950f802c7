"""Tests for code/utils/separation.py: prototype memory, Eq. (4) loss and the per-iteration step."""
from __future__ import annotations
import copy
import math

import pytest
import torch
import torch.nn as nn

from utils.separation import PrototypeMemory, SeparationHeads, separation_loss, separation_step, split_by_class

D = 32  # embedding size of SS-Net's heads


def _mlp(dim_in, dim_out, slope=None):
    act = nn.ReLU() if slope is None else nn.LeakyReLU(slope)
    return nn.Sequential(nn.Linear(dim_in, D), nn.BatchNorm1d(D), act, nn.Linear(D, dim_out))


class TinySSNet(nn.Module):
    """Stand-in for V-Net/U-Net + SS-Net heads: returns (logits, features (B, 16, *spatial))."""

    def __init__(self, dims: int, num_classes: int):
        super().__init__()
        conv = nn.Conv2d if dims == 2 else nn.Conv3d
        bn = nn.BatchNorm2d if dims == 2 else nn.BatchNorm3d
        drop = nn.Dropout2d if dims == 2 else nn.Dropout3d
        self.num_classes = num_classes
        self.body = nn.Sequential(conv(1, 8, 3, padding=1), bn(8), nn.ReLU(), drop(0.2),
                                  conv(8, 16, 3, padding=1), bn(16), nn.ReLU())
        self.out_conv = conv(16, num_classes, 1)
        self.projection_head = _mlp(16, D)
        self.prediction_head = _mlp(D, D)
        for c in range(num_classes):
            setattr(self, f"contrastive_class_selector_{c}", _mlp(D, 1, slope=0.2))
        for c in range(num_classes):
            setattr(self, f"contrastive_class_selector_memory{c}", _mlp(D, 1, slope=0.2))

    @property
    def feature_selectors(self):
        return [getattr(self, f"contrastive_class_selector_{c}") for c in range(self.num_classes)]

    @property
    def memory_selectors(self):
        return [getattr(self, f"contrastive_class_selector_memory{c}") for c in range(self.num_classes)]

    def forward(self, x):
        features = self.body(x)
        return self.out_conv(features), features


def _model(dims=2, num_classes=3, seed=0):
    torch.manual_seed(seed)
    return TinySSNet(dims, num_classes).train()


def _heads(model):
    """The model's four heads as a user with their own heads passes them."""
    return SeparationHeads(model.projection_head, model.prediction_head, model.feature_selectors,
                           model.memory_selectors)


class FirstCoordinate(nn.Module):
    """Deterministic selector: the score is the first coordinate (sigmoid keeps the order)."""

    def forward(self, v):
        return v[:, :1]


# ---------------------------------------------------------------- naive references (loops)
def naive_update(memory, features, labels, selectors, per_class, keep):
    for c in range(len(memory)):
        rows = [i for i in range(features.shape[0]) if int(labels[i]) == c]
        if not rows:
            continue
        fc = features[rows]
        if len(rows) > per_class:
            with torch.no_grad():
                scores = torch.sigmoid(selectors[c](fc))[:, 0].tolist()
            ranked = sorted(range(len(rows)), key=lambda i: scores[i], reverse=(keep == "highest"))
            fc = fc[ranked[:per_class]]
        memory[c] = fc.detach().clone()


def naive_loss(features, labels, memory, fsel, msel, weighting="released"):
    num_classes = len(memory)
    total = 0.0
    for c in range(num_classes):
        rows = [i for i in range(features.shape[0]) if int(labels[i]) == c]
        z = memory[c]
        if z is None or len(rows) <= 1 or z.shape[0] <= 1:
            continue
        f = features[rows]
        z_norm = z / z.norm(dim=1, keepdim=True).clamp_min(1e-12)
        wf = torch.sigmoid(fsel[c](f.detach()))[:, 0]
        wf = wf / wf.mean()
        if weighting == "released":
            wz = [1.0] * z.shape[0]
        else:
            wz_t = torch.sigmoid(msel[c](z_norm))[:, 0]
            wz = (wz_t / wz_t.mean()).tolist()
        term = 0.0
        for j in range(f.shape[0]):
            for i in range(z.shape[0]):
                cos = torch.dot(f[j], z[i]) / (f[j].norm() * z[i].norm())
                term = term + (1 - cos) * wf[j] * wz[i]
        total = total + term / (f.shape[0] * z.shape[0])
    return total / num_classes


# ---------------------------------------------------------------- split_by_class
def test_split_by_class_equals_boolean_masks():
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(50, 4, generator=g)
    labels = torch.randint(0, 4, (50,), generator=g)
    labels[labels == 2] = 1  # class 2 absent
    groups = split_by_class(feats, labels, 4)
    assert len(groups) == 4 and groups[2].shape == (0, 4)
    for c in range(4):
        assert torch.equal(groups[c], feats[labels == c])
    with pytest.raises(ValueError, match="outside 0..3"):
        split_by_class(feats, torch.full((50,), 255), 4)
    with pytest.raises(TypeError, match="integer"):
        split_by_class(feats, labels.float(), 4)


# ---------------------------------------------------------------- PrototypeMemory
@pytest.mark.parametrize("keep", ["lowest", "highest"])
def test_memory_update_matches_naive_loop(keep):
    model = _model(num_classes=3)
    g = torch.Generator().manual_seed(1)
    feats = torch.randn(40, D, generator=g)
    labels = torch.tensor([1] * 25 + [2] * 3 + [1] * 12)
    mem = PrototypeMemory(3, per_class=8, keep=keep)
    mem.update(feats, labels, model.feature_selectors)
    ref = [None] * 3
    naive_update(ref, feats, labels, model.feature_selectors, 8, keep)
    assert mem.memory[0] is None  # absent class stays empty
    for c in (1, 2):
        assert mem.memory[c].shape == ref[c].shape
        assert torch.allclose(mem.memory[c], ref[c])
    assert mem.memory[1].shape[0] == 8 and mem.memory[2].shape[0] == 3  # <= per_class, small class kept whole


def test_lowest_and_highest_pick_opposite_ends():
    feats = torch.zeros(20, D)
    feats[:, 0] = torch.randperm(20).float()  # distinct scores
    labels = torch.ones(20, dtype=torch.long)
    selectors = [FirstCoordinate(), FirstCoordinate()]
    low, high = PrototypeMemory(2, 5, "lowest"), PrototypeMemory(2, 5, "highest")
    low.update(feats, labels, selectors)
    high.update(feats, labels, selectors)
    assert sorted(low.memory[1][:, 0].tolist()) == [0, 1, 2, 3, 4]
    assert sorted(high.memory[1][:, 0].tolist()) == [15, 16, 17, 18, 19]


def test_memory_replaces_keeps_absent_classes_and_handles_single_and_empty():
    sel = [FirstCoordinate()] * 3
    mem = PrototypeMemory(3, per_class=4)
    a = torch.randn(6, D)
    mem.update(a, torch.tensor([1, 1, 1, 2, 1, 1]), sel)
    assert mem.memory[1].shape == (4, D) and mem.memory[2].shape == (1, D)  # single vector stored
    assert torch.equal(mem.memory[2][0], a[3])
    old_two = mem.memory[2]
    b = torch.randn(2, D)
    mem.update(b, torch.tensor([1, 1]), sel)
    assert torch.equal(mem.memory[1], b)  # replaced, not accumulated
    assert mem.memory[2] is old_two  # absent class keeps its memory
    mem.update(torch.zeros(0, D), torch.zeros(0, dtype=torch.long), sel)  # no candidates at all
    assert torch.equal(mem.memory[1], b)


def test_memory_state_dict_round_trips_exactly():
    sel = [FirstCoordinate()] * 3
    mem = PrototypeMemory(3, per_class=4)
    mem.update(torch.randn(7, D), torch.tensor([1, 1, 1, 2, 1, 1, 1]), sel)
    state = mem.state_dict()
    assert state["memory"][0] is None and state["memory"][1].device.type == "cpu"
    assert all(m is None or not m.requires_grad for m in state["memory"])
    for device in (None, torch.device("cpu")):
        other = PrototypeMemory(3, per_class=4)
        other.load_state_dict(state, device=device)
        assert other.memory[0] is None
        for c in (1, 2):
            assert other.memory[c].dtype == mem.memory[c].dtype and torch.equal(other.memory[c], mem.memory[c])
        assert other.state_dict()["memory"][1].equal(state["memory"][1])
    other.load_state_dict({"memory": [None] * 3})  # an empty memory
    assert other.memory == [None, None, None]
    with pytest.raises(ValueError, match="3 classes"):
        other.load_state_dict({"memory": [None] * 2})
    with pytest.raises(ValueError, match=r"class 1 holds \(5, 32\)"):
        other.load_state_dict({"memory": [None, torch.zeros(5, D), None]})  # more than per_class


def test_memory_is_detached_and_on_the_features_device():
    model = _model(num_classes=2)
    feats = torch.randn(50, D, requires_grad=True) * 2
    mem = PrototypeMemory(2, per_class=10)
    mem.update(feats, torch.ones(50, dtype=torch.long), model.feature_selectors)
    assert not mem.memory[1].requires_grad and mem.memory[1].grad_fn is None
    assert mem.memory[1].device == feats.device


def test_bad_memory_arguments_raise():
    with pytest.raises(ValueError, match="keep"):
        PrototypeMemory(2, keep="top")
    with pytest.raises(ValueError, match="per_class"):
        PrototypeMemory(2, per_class=0)
    mem = PrototypeMemory(3)
    with pytest.raises(ValueError, match="one selector per class"):
        mem.update(torch.randn(4, D), torch.ones(4, dtype=torch.long), [FirstCoordinate()])
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        mem.update(torch.randn(4, D), torch.ones(5, dtype=torch.long), [FirstCoordinate()] * 3)


# ---------------------------------------------------------------- separation_loss
def _memory_with(num_classes, sizes, seed=2):
    g = torch.Generator().manual_seed(seed)
    return [None if n is None else torch.randn(n, D, generator=g) for n in sizes]


@pytest.mark.parametrize("weighting", ["released", "mean"])
def test_separation_loss_matches_naive_loop(weighting):
    model = _model(num_classes=4)
    g = torch.Generator().manual_seed(3)
    feats = torch.randn(30, D, generator=g)
    labels = torch.tensor([0] * 6 + [1] * 10 + [2] * 1 + [3] * 13)
    memory = _memory_with(4, [5, 7, 6, 1])  # class 2: one feature; class 3: one memory vector -> skipped
    feats_a = feats.clone().requires_grad_(True)
    feats_b = feats.clone().requires_grad_(True)
    got = separation_loss(feats_a, labels, memory, model.feature_selectors, model.memory_selectors, weighting)
    expected = naive_loss(feats_b, labels, memory, model.feature_selectors, model.memory_selectors, weighting)
    assert got.dtype == torch.float32 and got.dim() == 0
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)
    # same gradient w.r.t. the features (the feature weights see detached features)
    got.backward()
    expected.backward()
    assert torch.allclose(feats_a.grad, feats_b.grad, rtol=1e-4, atol=1e-7)


class _ConstSelector(nn.Module):
    """Scores about 5 for every vector: a very different memory weighting."""

    def forward(self, v):
        return 5.0 + 0.01 * v[:, :1]


def test_weightings_differ_and_released_memory_weights_are_one():
    model = _model(num_classes=2)
    feats = torch.randn(12, D)
    labels = torch.ones(12, dtype=torch.long)
    memory = _memory_with(2, [None, 6])
    sel, msel = model.feature_selectors, model.memory_selectors
    released = separation_loss(feats, labels, memory, sel, msel, "released")
    mean = separation_loss(feats, labels, memory, sel, msel, "mean")
    assert not math.isclose(released.item(), mean.item(), rel_tol=1e-4)
    # released behaviour: every memory weight is w / w = 1, whatever the memory selector says
    other = separation_loss(feats, labels, memory, sel, [msel[0], _ConstSelector()], "released")
    assert other.item() == pytest.approx(released.item(), rel=1e-6)
    assert separation_loss(feats, labels, memory, sel, [msel[0], _ConstSelector()], "mean").item() != pytest.approx(
        mean.item(), rel=1e-4)


def test_gradients_reach_features_and_selectors_never_the_memory():
    model = _model(num_classes=3)
    feats = torch.randn(20, D, requires_grad=True)
    labels = torch.tensor([1] * 10 + [2] * 10)
    memory = [None, torch.randn(4, D), torch.randn(5, D)]
    loss = separation_loss(feats, labels, memory, model.feature_selectors, model.memory_selectors, "mean")
    loss.backward()
    assert feats.grad is not None and feats.grad.abs().sum() > 0
    assert model.contrastive_class_selector_1[0].weight.grad.abs().sum() > 0
    assert model.contrastive_class_selector_memory2[0].weight.grad.abs().sum() > 0
    assert all(m is None or (not m.requires_grad and m.grad is None) for m in memory)


def test_no_nan_for_absent_classes_and_identical_features():
    model = _model(num_classes=3)
    sel, msel = model.feature_selectors, model.memory_selectors
    # nothing in memory: a zero constant
    ones = torch.ones(8, dtype=torch.long)
    zero = separation_loss(torch.randn(8, D), ones, [None] * 3, sel, msel)
    assert zero.item() == 0.0 and zero.dtype == torch.float32
    # class 2 absent from the features, class 0 absent from memory
    loss = separation_loss(torch.randn(8, D), ones, [None, torch.randn(3, D), torch.randn(3, D)], sel, msel)
    assert torch.isfinite(loss) and loss.item() > 0
    # all features and memory vectors identical (BatchNorm variance 0): distance 0, no NaN
    v = torch.randn(1, D)
    same = separation_loss(v.repeat(6, 1), ones[:6], [None, v.repeat(4, 1), None], sel, msel, "mean")
    assert torch.isfinite(same) and same.item() == pytest.approx(0.0, abs=1e-6)
    # all-zero vectors
    zeros = separation_loss(torch.zeros(6, D), ones[:6], [None, torch.zeros(4, D), None], sel, msel)
    assert torch.isfinite(zeros)


def test_skipped_classes_still_count_in_the_average():
    model = _model(num_classes=2)
    feats = torch.randn(10, D)
    memory = [None, torch.randn(4, D)]
    ones = torch.ones(10, dtype=torch.long)
    two = separation_loss(feats, ones, memory, model.feature_selectors, model.memory_selectors)
    model4 = _model(num_classes=4)
    for c in range(2):  # same selectors for classes 0, 1
        getattr(model4, f"contrastive_class_selector_{c}").load_state_dict(model.feature_selectors[c].state_dict())
        getattr(model4, f"contrastive_class_selector_memory{c}").load_state_dict(model.memory_selectors[c].state_dict())
    four = separation_loss(feats, ones, memory + [None, None],
                           model4.feature_selectors, model4.memory_selectors)
    assert four.item() == pytest.approx(two.item() / 2, rel=1e-6)


def test_bad_loss_arguments_raise():
    model = _model(num_classes=2)
    with pytest.raises(ValueError, match="memory_weighting"):
        separation_loss(torch.randn(3, D), torch.ones(3, dtype=torch.long), [None, None],
                        model.feature_selectors, model.memory_selectors, "paper")
    with pytest.raises(ValueError, match="one feature selector"):
        separation_loss(torch.randn(3, D), torch.ones(3, dtype=torch.long), [None] * 3,
                        model.feature_selectors, model.memory_selectors)


# ---------------------------------------------------------------- separation_step
def naive_step(model, features, probs, labels, lbs, memory, per_class, keep="lowest"):
    channels = features.shape[1]
    flat = features.movedim(1, -1)
    pred = probs[:lbs].argmax(dim=1)
    pseudo = probs[lbs:].argmax(dim=1)
    cand = (pred == labels) & (pred > 0)
    model.projection_head.eval()
    with torch.no_grad():
        proj = model.projection_head(flat[:lbs][cand])
    model.projection_head.train()
    naive_update(memory, proj, labels[cand], model.feature_selectors, per_class, keep)
    pl = model.prediction_head(model.projection_head(flat[:lbs].reshape(-1, channels)))
    loss_l = naive_loss(pl, labels.reshape(-1), memory, model.feature_selectors, model.memory_selectors)
    pu = model.prediction_head(model.projection_head(flat[lbs:].reshape(-1, channels)))
    loss_u = naive_loss(pu, pseudo.reshape(-1), memory, model.feature_selectors, model.memory_selectors)
    return loss_l, loss_u


@pytest.mark.parametrize("dims, shape", [(2, (4, 1, 6, 6)), (3, (4, 1, 4, 4, 3))])
def test_separation_step_matches_naive_composition(dims, shape):
    num_classes = 3
    model = _model(dims, num_classes)
    x = torch.randn(shape)
    torch.manual_seed(5)
    logits, features = model(x)
    probs = torch.softmax(logits, dim=1)
    labels = probs[:2].argmax(1).clone()
    labels.view(-1)[::4] = 0  # some wrong / background voxels
    mem = PrototypeMemory(num_classes, per_class=6)
    twin = copy.deepcopy(model)
    loss_l, loss_u = separation_step(features, probs, labels, 2, mem, _heads(model))
    ref_mem = [None] * num_classes
    ref_l, ref_u = naive_step(twin, features.detach(), probs.detach(), labels, 2, ref_mem, 6)
    assert loss_l.item() == pytest.approx(float(torch.as_tensor(ref_l).detach()), rel=1e-5)
    assert loss_u.item() == pytest.approx(float(torch.as_tensor(ref_u).detach()), rel=1e-5)
    assert loss_l.item() > 0 and loss_u.item() > 0
    assert mem.memory[0] is None  # background is never a candidate
    for c in range(1, num_classes):
        assert (mem.memory[c] is None) == (ref_mem[c] is None)
        if mem.memory[c] is not None:
            assert mem.memory[c].shape[0] <= 6 and torch.allclose(mem.memory[c], ref_mem[c], atol=1e-6)
    # heads are back in train mode, gradient reaches the backbone and the selectors
    assert all(m.training for m in model.projection_head.modules())
    (loss_l + loss_u).backward()
    assert model.body[0].weight.grad.abs().sum() > 0
    assert model.projection_head[0].weight.grad.abs().sum() > 0
    assert model.contrastive_class_selector_1[0].weight.grad is not None


def test_projection_is_done_in_eval_mode_and_mode_restored_on_error():
    model = _model(2, 3)
    seen = []
    hook = model.projection_head.register_forward_pre_hook(lambda m, i: seen.append(m.training))
    logits, features = model(torch.randn(3, 1, 6, 6))
    probs = torch.softmax(logits, 1)
    labels = probs[:2].argmax(1)
    separation_step(features, probs, labels, 2, PrototypeMemory(3, 4), _heads(model))
    assert seen == [False, True, True]  # candidates (eval), labeled, unlabeled (train)
    hook.remove()

    def boom(m, i):
        if not m.training:
            raise RuntimeError("boom")

    model.projection_head[1].register_forward_pre_hook(boom)
    with pytest.raises(RuntimeError, match="boom"):
        separation_step(features, probs, labels, 2, PrototypeMemory(3, 4), _heads(model))
    assert all(m.training for m in model.projection_head.modules())


def test_separation_step_all_labeled_and_autocast():
    model = _model(3, 2)
    logits, features = model(torch.randn(2, 1, 4, 4, 2))
    probs = torch.softmax(logits, 1)
    labels = torch.ones(2, 4, 4, 2, dtype=torch.uint8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        l_l, l_u = separation_step(features, probs, labels, 2, PrototypeMemory(2, 4), _heads(model))
    assert l_u.item() == 0.0
    for v in (l_l, l_u):
        assert v.dtype == torch.float32 and v.dim() == 0 and torch.isfinite(v)


def test_separation_loss_under_autocast_returns_float32():
    model = _model(num_classes=2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        feats = model.prediction_head(torch.randn(10, D))
        loss = separation_loss(feats, torch.ones(10, dtype=torch.long), [None, torch.randn(4, D)],
                               model.feature_selectors, model.memory_selectors)
    assert feats.dtype == torch.bfloat16
    assert loss.dtype == torch.float32 and torch.isfinite(loss) and loss.item() > 0


def test_bad_step_arguments_raise():
    model = _model(2, 2)
    logits, features = model(torch.randn(3, 1, 4, 4))
    probs = torch.softmax(logits, 1)
    args = (PrototypeMemory(2), _heads(model))
    with pytest.raises(ValueError, match="labeled_bs"):
        separation_step(features, probs, torch.zeros(3, 4, 4, dtype=torch.long), 4, *args)
    with pytest.raises(ValueError, match="labels"):
        separation_step(features, probs, torch.zeros(3, 4, 4, dtype=torch.long), 2, *args)
    with pytest.raises(ValueError, match="probs"):
        separation_step(features, probs[:, :, :2], torch.zeros(2, 4, 4, dtype=torch.long), 2, *args)
    with pytest.raises(TypeError, match="integer"):
        separation_step(features, probs, torch.zeros(2, 4, 4), 2, *args)


@pytest.mark.parametrize("spatial", [(), (2, 2, 2, 2)])
def test_step_rejects_other_than_1_2_or_3_spatial_dims(spatial):
    """Consistent shapes with 0 or 4 spatial dims: refused by the rank check, naming the shapes."""
    model = _model(2, 2)
    features = torch.randn((3, 16) + spatial)
    probs = torch.softmax(torch.randn((3, 2) + spatial), 1)
    labels = torch.zeros((2,) + spatial, dtype=torch.long)
    shapes = r"features \(3, 16.*probs \(3, 2.*1, 2 or 3 spatial dims"
    with pytest.raises(ValueError, match=shapes):
        separation_step(features, probs, labels, 2, PrototypeMemory(2), _heads(model))


def test_step_accepts_one_spatial_dim():
    """(B, F, N) point sets, as code/two_moons.py passes them."""
    model = _model(2, 2)
    features = torch.randn(4, 16, 5)
    probs = torch.softmax(torch.randn(4, 2, 5), 1)
    l_l, l_u = separation_step(features, probs, probs[:2].argmax(1), 2, PrototypeMemory(2), _heads(model))
    assert torch.isfinite(l_l) and torch.isfinite(l_u)


def test_model_as_heads_equals_separation_heads():
    model = _model(2, 3)
    torch.manual_seed(9)
    logits, features = model(torch.randn(4, 1, 6, 6))
    probs = torch.softmax(logits, 1)
    labels = probs[:2].argmax(1)
    twin = copy.deepcopy(model)
    a = separation_step(features, probs, labels, 2, PrototypeMemory(3, 4), heads=model)
    b = separation_step(features, probs, labels, 2, PrototypeMemory(3, 4), _heads(twin))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    with pytest.raises(ValueError, match="lacks"):
        separation_step(features, probs, labels, 2, PrototypeMemory(3, 4), heads=nn.Linear(2, 2))
    with pytest.raises(TypeError):  # the four heads as separate arguments: no longer a calling form
        separation_step(features, probs, labels, 2, PrototypeMemory(3, 4), *_heads(model))


# ---------------------------------------------------------------- mixed precision (--amp bf16)
def _bf16_inputs(dims=2, seed=0):
    """A model and fp32 (features, probs, labels) of its forward; the step itself runs under autocast."""
    model = _model(dims, 3, seed=seed)
    shape = (4, 1, 8, 8) if dims == 2 else (4, 1, 5, 5, 4)
    logits, features = model(torch.randn(shape))
    probs = torch.softmax(logits.detach(), 1)
    return model, features.detach(), probs, probs[:2].argmax(1)


@pytest.mark.parametrize("per_class", [4, 1000])  # classes above per_class (selector ranking) or not
def test_bf16_step_keeps_memory_and_losses_float32(per_class):
    model, features, probs, labels = _bf16_inputs()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert model.projection_head(features[:, :, 0, 0]).dtype == torch.bfloat16  # the heads run in bf16
        mem = PrototypeMemory(3, per_class=per_class)
        for _ in range(2):  # the second step's losses use the memory of the first
            l_l, l_u = separation_step(features, probs, labels, 2, mem, _heads(model))
    stored = [m for m in mem.memory if m is not None]
    assert stored and all(m.dtype == torch.float32 for m in stored)
    assert l_l.dtype == l_u.dtype == torch.float32 and l_l.item() > 0 and l_u.item() > 0
    (l_l + l_u).backward()
    assert model.contrastive_class_selector_1[0].weight.grad is not None
    # a bfloat16 memory of an older mixed-precision checkpoint is restored in float32, exactly
    state = {"memory": [None if m is None else m.bfloat16() for m in mem.memory]}
    other = PrototypeMemory(3, per_class=per_class)
    other.load_state_dict(state)
    for m, s in zip(other.memory, state["memory"]):
        assert (m is None) == (s is None) and (m is None or (m.dtype == torch.float32 and torch.equal(m, s.float())))


@pytest.mark.parametrize("dims, seed", [(2, 0), (3, 1), (2, 2)])
def test_bf16_step_agrees_with_fp32_step(dims, seed):
    """Same inputs, step under bf16 autocast vs plain fp32: losses within rtol 1e-2.

    Under autocast only the projection / prediction heads run in bfloat16: their Linear layers round
    inputs and weights to 8 significant bits (relative error 2^-9 ~ 2e-3 each), so the 32-d embeddings
    differ from fp32 by ~1e-2 relative after 4 layers; the loss (memory, cosine distances, selector
    weights, mean) is then computed in float32, and a mean of bounded cosine distances over many
    pairs damps the embedding error further (observed <= 1.1e-3 relative over 80 random draws, so
    1e-2 leaves a 10x margin). per_class is large so both runs store the same candidates (a ranking
    of near-equal scores could pick other rows)."""
    model, features, probs, labels = _bf16_inputs(dims, seed)
    g = torch.Generator().manual_seed(seed)
    init = [None, torch.randn(5, D, generator=g), torch.randn(5, D, generator=g)]
    results = {}
    for name, enabled in (("fp32", False), ("bf16", True)):
        mem = PrototypeMemory(3, per_class=1000)
        mem.memory = [None if m is None else m.clone() for m in init]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled):
            losses = separation_step(features, probs, labels, 2, mem, _heads(copy.deepcopy(model)))
        results[name] = losses, mem.memory
    (fp_l, fp_u), fp_mem = results["fp32"]
    (bf_l, bf_u), bf_mem = results["bf16"]
    assert fp_l.item() > 0 and fp_u.item() > 0
    assert bf_l.item() == pytest.approx(fp_l.item(), rel=1e-2)
    assert bf_u.item() == pytest.approx(fp_u.item(), rel=1e-2)
    for a, b in zip(fp_mem, bf_mem):  # same rows, embeddings within bf16 head precision
        assert (a is None) == (b is None)
        if a is not None:
            assert a.shape == b.shape and b.dtype == torch.float32
            assert torch.allclose(b, a, rtol=0, atol=3e-2 * a.abs().max().item())
