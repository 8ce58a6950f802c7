"""Whole seeded runs consume the random streams as the released training loops do.

The component tests check one iteration; these check the loop around it
(docs/random_streams.md): a tiny run of ``train_acdc.py`` / ``train_la.py``
with validations in the middle must end with the same weights and the same
generator state as a transcription of the released loop's sequence of calls
(``train_ss_2d.py``: a ``DataLoader`` over the validation volumes, whose
iterator draws one torch seed per validation; ``train_ss_3d.py``: the volumes
read directly, no draw; both: ``optimizer.zero_grad()`` of PyTorch 1.8, which
fills zeros). ``--resume`` across a validation and in the middle of a sampler
epoch must give the uninterrupted run.
"""
from __future__ import annotations
import random

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

import train_acdc
import train_la
from dataloaders.acdc import ACDC
from dataloaders.sampler import draw_loader_base_seed
from dataloaders.splits import labeled_slice_count, read_list
from methods import get_method
from engine.run import seed_everything
from engine.trainer import make_optimizer, train_step

CPU = torch.device("cpu")
ACDC_FLAGS = ["--patch_size", "32", "32", "--batch_size", "4", "--labeled_bs", "2", "--labelnum", "1",
              "--num_workers", "0", "--device", "cpu", "--log_interval", "1", "--val_start", "2",
              "--val_interval", "2", "--save_interval", "1", "--consistency_rampup", "0"]
LA_FLAGS = ["--patch_size", "32", "32", "16", "--labelnum", "2", "--num_workers", "0", "--device", "cpu",
            "--log_interval", "1", "--val_start", "2", "--val_interval", "2", "--stride_xy", "16",
            "--stride_z", "16", "--save_interval", "1", "--lr_step", "3", "--consistency_rampup", "0"]


@pytest.fixture(scope="module")
def acdc_root(tiny_data):
    return tiny_data("acdc", patients=5, seed=3, hw_range=(48, 64), slice_range=(4, 4))


@pytest.fixture(scope="module")
def la_root(tiny_data):
    return tiny_data("la", cases=5, seed=3, size=(40, 40, 24))


def _states():
    return torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()


@pytest.mark.parametrize("workers", [0, 1])
def test_draw_loader_base_seed_is_what_a_loader_iterator_draws(acdc_root, workers):
    db = ACDC(acdc_root, split="val")
    torch.manual_seed(5)
    np.random.seed(5)
    random.seed(5)
    before = _states()
    it = iter(DataLoader(db, batch_size=1, shuffle=False, num_workers=workers))
    after_loader = _states()
    del it
    torch.set_rng_state(before[0])
    draw_loader_base_seed()
    after_draw = _states()
    assert not torch.equal(before[0], after_loader[0])  # the iterator did draw
    assert torch.equal(after_loader[0], after_draw[0])
    for a, b in zip(after_loader[1:], after_draw[1:]):  # numpy, python untouched by both
        assert np.array_equal(a, b) if isinstance(a, np.ndarray) else a == b
    assert np.array_equal(before[1], after_draw[1]) and before[2] == after_draw[2]


# ---------------------------------------------------------------- transcriptions of the released loops


def released_acdc_loop(args, root):
    """train_ss_2d.py's sequence of calls (SS-Net's iteration is methods.ssnet, tested
    bit-identical elsewhere); returns the model and the torch generator state at the end."""
    seed_everything(args.seed, True)  # __main__: cudnn flags, random, numpy, torch
    method = get_method("ssnet").from_config(args, "ACDC", 4, CPU)  # net_factory(...), FeatureMemory
    loader = train_acdc.build_loader(args)  # TwoStreamBatchSampler, RandomGenerator, worker_init_fn
    valloader = DataLoader(ACDC(root, split="val"), batch_size=1, shuffle=False, num_workers=1)
    optimizer = make_optimizer(method.model, args.base_lr)
    model, it = method.model, 0
    model.train()
    while it < args.max_iterations:  # for _ in range(max_epoch): for batch in trainloader
        for batch in loader:
            out = method.step(batch["image"], batch["label"].long(), it)
            optimizer.zero_grad(set_to_none=False)  # PyTorch 1.8's zero_grad(): zeros, not None
            out["loss"].backward()
            optimizer.step()
            it += 1
            if it % args.val_interval == 0:  # iter_num > 0 and iter_num % 200 == 0
                model.eval()
                for vb in valloader:  # creating the iterator draws the workers' base seed
                    image = vb["image"][0].unsqueeze(1).float()  # (S, 1, H, W)
                    with torch.no_grad():
                        model(F.interpolate(image, size=tuple(args.patch_size), mode="nearest"))
                model.train()
            if it >= args.max_iterations:
                break
    return model, torch.get_rng_state()


def released_la_loop(args, root):
    """train_ss_3d.py's sequence of calls; its validation (test_3d_patch.var_all_case_LA)
    reads the test volumes with h5py and runs the model on windows: no random draw."""
    seed_everything(args.seed, True)
    method = get_method("ssnet").from_config(args, "LA", 2, CPU)
    n_train = len(read_list(f"{root}/train.list"))
    loader, _ = train_la.build_loader(args, n_train)
    optimizer = make_optimizer(method.model, args.base_lr)
    model, it = method.model, 0
    while it < args.max_iterations:
        for batch in loader:
            model.train()
            out = method.step(batch["image"], batch["label"].long(), it)
            optimizer.zero_grad(set_to_none=False)
            out["loss"].backward()
            optimizer.step()
            it += 1
            if it % args.lr_step == 0:
                for g in optimizer.param_groups:
                    g["lr"] = args.base_lr * 0.1 ** (it // args.lr_step)
            if it % args.val_interval == 0:
                model.eval()
                for case in read_list(f"{root}/test.list"):
                    with h5py.File(f"{root}/2018LA_Seg_Training Set/{case}/mri_norm2.h5", "r") as f:
                        image = torch.from_numpy(f["image"][:32, :32, :16].astype(np.float32))
                    with torch.no_grad():
                        model(image[None, None])
                model.train()
            if it >= args.max_iterations:
                break
    return model, torch.get_rng_state()


def _last(model_root, dataset, labelnum, model):
    return torch.load(f"{model_root}/{dataset}_SSNet_{labelnum}_labeled/{model}/last.pth", weights_only=True)


def _assert_same_run(ours, model, torch_state):
    for k, v in model.state_dict().items():
        assert torch.equal(v, ours["model"][k]), k
    assert torch.equal(ours["rng"]["torch"], torch_state)


def test_acdc_run_equals_the_released_loop_through_validations(acdc_root, tmp_path):
    flags = ["--root_path", acdc_root, "--max_iterations", "6"] + ACDC_FLAGS
    train_acdc.main(flags + ["--model_root", str(tmp_path)])  # validations after 2, 4 and 6
    ours = _last(tmp_path, "ACDC", 1, "unet")
    model, torch_state = released_acdc_loop(train_acdc.parse_args(flags), acdc_root)
    _assert_same_run(ours, model, torch_state)


@pytest.mark.long
def test_la_run_equals_the_released_loop_through_validations(la_root, tmp_path):
    flags = ["--root_path", la_root, "--max_iterations", "4"] + LA_FLAGS
    train_la.main(flags + ["--model_root", str(tmp_path)])
    ours = _last(tmp_path, "LA", 2, "VNet")
    model, torch_state = released_la_loop(train_la.parse_args(flags), la_root)
    _assert_same_run(ours, model, torch_state)


def test_acdc_select_last_trains_the_same_model(acdc_root, tmp_path):
    """The validation draw is made with --select last too: selection never changes training."""
    flags = ["--root_path", acdc_root, "--max_iterations", "4"] + ACDC_FLAGS
    train_acdc.main(flags + ["--model_root", str(tmp_path / "val")])
    train_acdc.main(flags + ["--model_root", str(tmp_path / "last"), "--select", "last"])
    a, b = _last(tmp_path / "val", "ACDC", 1, "unet"), _last(tmp_path / "last", "ACDC", 1, "unet")
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k


@pytest.mark.parametrize("workers", ["0", "2"])
def test_acdc_resume_mid_epoch_across_a_validation_is_exact(acdc_root, tmp_path, workers):
    """Stopped after iteration 3 (a validation at 2, in the middle of a 4-iteration
    sampler epoch) and resumed to 6 (validations at 4 and 6) == one run of 6."""
    per_epoch = labeled_slice_count(acdc_root, 1) // 2
    assert per_epoch > 3 and 3 % per_epoch != 0  # the stop falls inside an epoch
    flags = ["--root_path", acdc_root] + ACDC_FLAGS + ["--num_workers", workers]
    train_acdc.main(flags + ["--max_iterations", "6", "--model_root", str(tmp_path / "a")])
    train_acdc.main(flags + ["--max_iterations", "3", "--model_root", str(tmp_path / "b")])
    train_acdc.main(flags + ["--max_iterations", "6", "--model_root", str(tmp_path / "b"), "--resume"])
    straight, resumed = _last(tmp_path / "a", "ACDC", 1, "unet"), _last(tmp_path / "b", "ACDC", 1, "unet")
    assert resumed["iter_num"] == 6
    for k, v in straight["model"].items():
        assert torch.equal(v, resumed["model"][k]), k
    assert torch.equal(straight["rng"]["torch"], resumed["rng"]["torch"])
    assert straight["rng"]["python"] == resumed["rng"]["python"]
    assert torch.equal(straight["rng"]["numpy"]["key"], resumed["rng"]["numpy"]["key"])
    for m, n in zip(straight["method"]["memory"], resumed["method"]["memory"]):
        assert (m is None and n is None) or torch.equal(m, n)
    assert straight["grad_present"] == resumed["grad_present"]


@pytest.mark.long
def test_la_resume_across_a_validation_is_exact(la_root, tmp_path):
    flags = ["--root_path", la_root] + LA_FLAGS
    train_la.main(flags + ["--max_iterations", "5", "--model_root", str(tmp_path / "a")])
    train_la.main(flags + ["--max_iterations", "3", "--model_root", str(tmp_path / "b")])
    train_la.main(flags + ["--max_iterations", "5", "--model_root", str(tmp_path / "b"), "--resume"])
    straight, resumed = _last(tmp_path / "a", "LA", 2, "VNet"), _last(tmp_path / "b", "LA", 2, "VNet")
    for k, v in straight["model"].items():
        assert torch.equal(v, resumed["model"][k]), k
    assert torch.equal(straight["rng"]["torch"], resumed["rng"]["torch"])


class _TwoHeads(torch.nn.Module):
    """A step that uses head ``b`` only on even iterations."""

    def __init__(self):
        super().__init__()
        self.a, self.b = torch.nn.Linear(2, 1), torch.nn.Linear(2, 1)


class _AlternatingMethod:
    log_keys = ("loss",)

    def __init__(self):
        torch.manual_seed(0)
        self.model = _TwoHeads()

    def step(self, image, label, iter_num):
        x = image.flatten(1)[:, :2]
        loss = self.model.a(x).pow(2).mean()
        if iter_num % 2 == 0:
            loss = loss + self.model.b(x).pow(2).mean()
        return {"loss": loss}

    def prepare_step(self, image):
        pass

    def after_step(self, iter_num):
        pass


@pytest.mark.parametrize("mode", ["zero", "none"])
def test_zero_grad_modes(mode):
    """zero (released, PyTorch 1.8): an unused head still moves by momentum and weight
    decay; none (PyTorch >= 2.0): it is skipped."""
    method = _AlternatingMethod()
    opt = make_optimizer(method.model, 0.1)
    image, label = torch.ones(3, 1, 2, 2), torch.zeros(3, 2, 2, dtype=torch.long)
    train_step(method, opt, image, label, 0, zero_grad=mode)
    b_after_use = method.model.b.weight.detach().clone()
    train_step(method, opt, image, label, 1, zero_grad=mode)  # b unused
    moved = not torch.equal(b_after_use, method.model.b.weight)
    assert moved == (mode == "zero")
