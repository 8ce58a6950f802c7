"""The CUDA path, checked on the CPU where the CPU can show it (issue 20): which kernels a step
needs under --deterministic 2, --tf32, the VAT noise drawn ahead of the step."""
from __future__ import annotations
import json
import os

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import train_acdc
import train_la
from datasets import get_dataset
from engine.speed import set_tf32
from engine.trainer import make_optimizer, train_step
from engine.training import cuda_determinism_blockers
from methods import get_method
from utils.losses import cross_entropy_loss, logged_cross_entropy

#: aten operations without a deterministic CUDA kernel (torch.use_deterministic_algorithms' list)
CUDA_NONDETERMINISTIC_ATEN = {
    "nll_loss2d_forward", "upsample_linear1d_backward", "upsample_bilinear2d_backward", "upsample_bicubic2d_backward",
    "upsample_trilinear3d_backward", "max_pool3d_with_indices_backward", "avg_pool3d_backward",
    "_adaptive_avg_pool2d_backward", "_adaptive_avg_pool3d_backward", "adaptive_max_pool2d_backward",
    "fractional_max_pool2d_backward", "fractional_max_pool3d_backward", "reflection_pad3d_backward",
    "_embedding_bag", "histc", "_ctc_loss_backward", "grid_sampler_2d_backward", "kthvalue", "median",
}


class _Ops(TorchDispatchMode):
    """Records the name of every aten operation run (forward and backward)."""

    def __init__(self):
        super().__init__()
        self.names = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.add(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))


SETTINGS = {
    "LA": (train_la, ["--patch_size", "32", "32", "16"], (2, 1, 32, 32, 16), 2),
    "ACDC": (train_acdc, ["--patch_size", "32", "32", "--batch_size", "4", "--labeled_bs", "2"], (4, 1, 32, 32), 4),
}


def _traced_step(dataset, method_key):
    script, flags, shape, classes = SETTINGS[dataset]
    args = script.parse_args(flags + ["--method", method_key, "--device", "cpu", "--labeled_bs",
                                      str(shape[0] // 2)])
    torch.manual_seed(0)
    method = get_method(method_key).from_config(args, get_dataset(dataset), classes, torch.device("cpu"))
    image, label = torch.randn(shape), torch.randint(0, classes, (shape[0],) + shape[2:])
    optimizer = make_optimizer(method.model, 0.01)
    with _Ops() as ops:
        train_step(method, optimizer, image, label, 0)
    return args, ops.names & CUDA_NONDETERMINISTIC_ATEN


def test_the_logged_cross_entropy_equals_the_loss_to_rounding():
    torch.manual_seed(1)
    logits, labels = torch.randn(2, 4, 16, 16, 8) * 3, torch.randint(0, 4, (2, 16, 16, 8))
    assert logged_cross_entropy(logits, labels).item() == pytest.approx(cross_entropy_loss(logits, labels).item(),
                                                                       rel=1e-6)
    assert not logged_cross_entropy(logits.requires_grad_(), labels).requires_grad


def test_the_default_la_step_needs_no_kernel_without_a_deterministic_cuda_version():
    """SS-Net on LA logs a cross-entropy it does not train on; on CUDA nll_loss2d has no
    deterministic kernel, so --deterministic 2 stopped at the first step. Traced on the CPU: the
    step runs no operation of the list."""
    _, blocked = _traced_step("LA", "ssnet")
    assert blocked == set()


@pytest.mark.parametrize("dataset, method_key", [("LA", "ssnet"), ("ACDC", "ssnet"), ("LA", "uamt"), ("LA", "mcnet")])
def test_the_parse_time_check_agrees_with_the_traced_step(dataset, method_key):
    args, blocked = _traced_step(dataset, method_key)
    args = args.replace(device="cuda", deterministic=2)
    named = {b.split(" ")[0] for b in cuda_determinism_blockers(args, get_dataset(dataset))}
    assert named == blocked, (named, blocked)


def test_deterministic_2_on_cuda_is_refused_at_parse_time_naming_the_operation():
    with pytest.raises(ValueError, match=r"upsample_bilinear2d_backward[\s\S]*--deterministic 1[\s\S]*--device cpu"):
        train_acdc.parse_args(["--device", "cuda", "--deterministic", "2"])
    assert train_la.parse_args(["--device", "cuda", "--deterministic", "2"]).deterministic == 2
    assert train_acdc.parse_args(["--device", "cpu", "--deterministic", "2"]).deterministic == 2


def test_tf32_flag_sets_the_backends_and_is_recorded(tiny_data, tmp_path):
    try:
        assert set_tf32(True) == {"tf32": True, "cudnn_conv": "tf32", "cuda_matmul": "tf32"}
        assert set_tf32(False) == {"tf32": False, "cudnn_conv": "ieee", "cuda_matmul": "ieee"}
        root = tiny_data("acdc", patients=5, seed=3, hw_range=(48, 64), slice_range=(3, 4))
        summary = train_acdc.main(["--root_path", root, "--model_root", str(tmp_path), "--max_iterations", "1",
                                   "--patch_size", "32", "32", "--batch_size", "4", "--labeled_bs", "2",
                                   "--labelnum", "1", "--num_workers", "0", "--device", "cpu", "--select", "last",
                                   "--tf32", "1"])
        assert summary["tf32"] is True
        config = json.load(open(os.path.join(summary["snapshot"], "config.json")))
        assert config["tf32"] == 1
        assert torch.backends.cudnn.conv.fp32_precision == "tf32"
        assert train_acdc.parse_args([]).tf32 == 0  # faithful default: IEEE fp32
    finally:
        set_tf32(False)


def _three_iterations(predraw):
    """SS-Net on LA with a network without dropout, so that the forward draws nothing from the
    CPU generator, as on CUDA: the VAT noise drawn before the step or inside it is the same."""
    from methods.ssnet import SSNet
    torch.manual_seed(3)
    model = SSNet.build_model("LA", 2, "test", "cpu")  # test mode: no dropout
    method = SSNet("LA", model, 2, 1)
    method.predraw_noise = predraw
    optimizer = make_optimizer(model, 0.01)
    torch.manual_seed(4)
    losses = []
    for n in range(3):
        image, label = torch.randn(2, 1, 16, 16, 16), torch.randint(0, 2, (2, 16, 16, 16))
        out = train_step(method, optimizer, image, label, n)
        losses.append([out[k].item() for k in method.log_keys])
    return losses, model.state_dict(), torch.get_rng_state()


def test_vat_noise_drawn_ahead_gives_the_same_run():
    a_losses, a_state, a_rng = _three_iterations(False)
    b_losses, b_state, b_rng = _three_iterations(True)
    assert a_losses == b_losses and torch.equal(a_rng, b_rng)
    for k, v in a_state.items():
        assert torch.equal(v, b_state[k]), k


def test_vat_noise_is_drawn_inside_the_step_on_the_cpu():
    """On the CPU the forward's dropout masks come from the same generator as the noise, so the
    noise must be drawn where the released code draws it: the default there is in the step."""
    from methods.ssnet import SSNet
    method = SSNet("LA", SSNet.build_model("LA", 2, "train", "cpu"), 2, 1)
    assert method.predraw_noise is False
    method.prepare_step(torch.zeros(2, 1, 16, 16, 16))
    assert method._noise is None


class _Augmented(torch.utils.data.Dataset):
    """Items whose values depend on the worker's random streams (as augmentation does)."""

    def __len__(self):
        return 6

    def __getitem__(self, i):
        import random

        import numpy as np
        return torch.tensor([float(i), random.random(), float(np.random.rand()), torch.rand(()).item()])


def _stream_run(early, workers, resume_at=None):
    """12 iterations of (take a batch, a CPU-generator draw standing for the VAT noise): with
    ``early``, the next epoch starts right after that draw when the epoch is used up, as the
    trainer does on CUDA. ``resume_at``: save there and continue in a new stream."""
    from dataloaders.epoch_loader import make_loader
    from dataloaders.sampler import TwoStreamBatchSampler, seed_everything
    from engine.stream import EpochStream, rng_state, set_rng_state

    def new_stream():
        sampler = TwoStreamBatchSampler([0, 1, 2, 3], [4, 5], 3, 1)  # 2 batches an epoch
        return EpochStream(make_loader("reseed", _Augmented(), sampler, workers, None, False))

    seed_everything(5)
    stream, seen = new_stream(), []
    for it in range(12):
        if it == resume_at:
            state, rng = stream.state_dict(), rng_state()
            stream.loader.close() if hasattr(stream.loader, "close") else None
            stream = new_stream()
            stream.load_state_dict(state)
            set_rng_state(rng)
        batch = next(stream)
        seen.append((batch, torch.rand(3)))
        if early and stream.exhausted and it < 11:  # as the trainer: not after the last iteration
            stream.start_next_epoch()
    return seen, torch.get_rng_state()


@pytest.mark.parametrize("workers", [0, 2])
def test_starting_the_next_epoch_early_gives_the_same_batches_and_streams(workers):
    base, base_rng = _stream_run(False, workers)
    for resume_at in (None, 4, 5):
        early, early_rng = _stream_run(True, workers, resume_at)
        assert torch.equal(base_rng, early_rng)
        for (b1, n1), (b2, n2) in zip(base, early):
            assert torch.equal(b1, b2) and torch.equal(n1, n2)


def test_the_trainer_starts_an_epoch_early_only_where_nothing_draws_in_between():
    from engine.trainer import Trainer

    class Stream:
        exhausted = True

    trainer = Trainer.__new__(Trainer)
    trainer.stream, trainer.validation_draws = Stream(), (lambda: None)
    trainer.config = type("A", (), {"max_iterations": 10})()
    trainer.iterations = 10
    trainer.should_validate = lambda n: n % 4 == 0
    trainer.method = type("M", (), {"step_uses_cpu_generator": False})()
    assert [n for n in range(1, 11) if trainer._may_start_next_epoch(n)] == [1, 2, 3, 5, 6, 7, 9]
    trainer.method.step_uses_cpu_generator = True  # e.g. SS-Net on the CPU: dropout draws from it
    assert not any(trainer._may_start_next_epoch(n) for n in range(1, 11))
