"""Training scripts end to end on tiny synthetic data (CPU): snapshots,
checkpoints, exact resume, the supervised baseline, clear errors."""
from __future__ import annotations
import json
import os

import pytest
import torch

import train_acdc
import train_la
from methods import get_method

LA_FLAGS = ["--max_iterations", "4", "--patch_size", "32", "32", "16", "--labelnum", "2", "--num_workers", "0",
            "--device", "cpu", "--log_interval", "2", "--val_start", "2", "--val_interval", "2",
            "--stride_xy", "16", "--stride_z", "16", "--save_interval", "2"]
ACDC_FLAGS = ["--max_iterations", "4", "--patch_size", "32", "32", "--batch_size", "4", "--labeled_bs", "2",
              "--labelnum", "1", "--num_workers", "0", "--device", "cpu", "--log_interval", "2",
              "--val_start", "2", "--val_interval", "2", "--save_interval", "2"]


def test_la_run_writes_snapshot(la_root, tmp_path):
    summary = train_la.main(["--root_path", la_root, "--model_root", str(tmp_path)] + LA_FLAGS)
    snap = tmp_path / "LA_SSNet_2_labeled" / "VNet"
    assert summary["iterations"] == 4 and summary["snapshot"] == str(snap)
    assert (snap / "VNet_best_model.pth").is_file() and (snap / "last.pth").is_file()
    assert any(f.startswith("iter_") and f.endswith(".pth") for f in os.listdir(snap))
    config = json.loads((snap / "config.json").read_text())
    assert config["lds"] == "dice" and config["magnitude"] == 10.0 and config["consistency_rampup"] == 40.0
    log = (snap / "log.txt").read_text()
    assert "iteration 4: loss" in log and "validation score" in log
    assert os.listdir(snap / "log")  # tensorboard events
    # the best checkpoint is a bare state_dict in the released layout
    state = torch.load(snap / "VNet_best_model.pth", weights_only=True)
    assert "encoder.block_one.conv.0.weight" in state and "contrastive_class_selector_memory1.3.bias" in state


@pytest.mark.long
def test_la_resume_is_exact(la_root, tmp_path):
    """Interrupted at iteration 2 and resumed to 4 == one run of 4 iterations.
    (With 2 labeled cases and labeled_bs 2, every iteration ends a sampler epoch,
    so the restored RNG states reproduce the data order too.)"""
    flags = ["--root_path", la_root, "--lr_step", "3"] + LA_FLAGS
    train_la.main(flags + ["--model_root", str(tmp_path / "a")])
    straight = torch.load(tmp_path / "a" / "LA_SSNet_2_labeled" / "VNet" / "last.pth", weights_only=True)

    stop = [f if f != "4" else "2" for f in flags]  # --max_iterations 2
    train_la.main(stop + ["--model_root", str(tmp_path / "b")])
    summary = train_la.main(flags + ["--model_root", str(tmp_path / "b"), "--resume"])
    resumed = torch.load(tmp_path / "b" / "LA_SSNet_2_labeled" / "VNet" / "last.pth", weights_only=True)
    assert summary["iterations"] == 4 and resumed["iter_num"] == 4
    # lr after 4 iterations with --lr_step 3: 0.01 * 0.1
    assert resumed["optimizer"]["param_groups"][0]["lr"] == pytest.approx(0.001)
    for k, v in straight["model"].items():
        assert torch.equal(v, resumed["model"][k]), k
    log = (tmp_path / "b" / "LA_SSNet_2_labeled" / "VNet" / "log.txt").read_text()
    assert "resumed from" in log and "at iteration 2" in log


def test_resume_without_checkpoint_fails_clearly(la_root, tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint at .*last.pth"):
        train_la.main(["--root_path", la_root, "--model_root", str(tmp_path), "--resume"] + LA_FLAGS)


def test_acdc_run_and_test_script(acdc_root, tmp_path):
    summary = train_acdc.main(["--root_path", acdc_root, "--model_root", str(tmp_path)] + ACDC_FLAGS)
    snap = tmp_path / "ACDC_SSNet_1_labeled" / "unet"
    assert summary["iterations"] == 4 and (snap / "unet_best_model.pth").is_file()
    assert "4_val" in (snap / "log.txt").read_text() or "validation score" in (snap / "log.txt").read_text()
    import test_acdc
    result = test_acdc.main(["--root_path", acdc_root, "--labelnum", "1", "--model_root", str(tmp_path),
                             "--device", "cpu", "--save_nii", "0"])
    assert (snap / "test" / "performance.txt").is_file()
    assert result["cases"] == len(open(os.path.join(acdc_root, "test.list")).read().split())


def test_supervised_only_and_ablation_flags(acdc_root, tmp_path):
    args = train_acdc.parse_args(["--supervised_only", "--exp", "Supervised"])
    assert args.options.lds == "none" and args.options.cs == "off"
    summary = train_acdc.main(["--root_path", acdc_root, "--model_root", str(tmp_path), "--supervised_only",
                               "--exp", "Supervised", "--select", "last"] + ACDC_FLAGS)
    assert summary["iterations"] == 4
    assert (tmp_path / "ACDC_Supervised_1_labeled" / "unet" / "unet_best_model.pth").is_file()
    log = (tmp_path / "ACDC_Supervised_1_labeled" / "unet" / "log.txt").read_text()
    assert "loss_lds 0.0000" in log and "loss_cs_l 0.0000" in log


def test_bad_flags_and_missing_data(tmp_path):
    with pytest.raises(ValueError, match="labeled_bs"):
        train_la.parse_args(["--labeled_bs", "5", "--batch_size", "4"])
    with pytest.raises(ValueError, match="--supervised_only"):
        train_la.parse_args(["--labeled_bs", "4", "--batch_size", "4"])
    with pytest.raises(FileNotFoundError, match="list file not found"):
        train_la.main(["--root_path", str(tmp_path / "nowhere"), "--model_root", str(tmp_path)] + LA_FLAGS)


class _DiesInWorker(torch.utils.data.Dataset):
    """A dataset whose worker is killed by SIGBUS, as a full /dev/shm does."""

    def __len__(self):
        return 4

    def __getitem__(self, i):
        import signal
        os.kill(os.getpid(), signal.SIGBUS)


def test_a_worker_killed_by_the_system_names_dev_shm():
    from engine.stream import EpochStream
    loader = torch.utils.data.DataLoader(_DiesInWorker(), batch_size=2, num_workers=1)
    with pytest.raises(RuntimeError, match=r"DataLoader worker[\s\S]*/dev/shm[\s\S]*--shm-size[\s\S]*--num_workers 0"):
        next(EpochStream(loader))


def test_gpu_and_device_conflict_is_an_error():
    with pytest.raises(ValueError, match="disagree"):
        train_la.parse_args(["--device", "cpu", "--gpu", "0"])
    assert train_la.parse_args(["--gpu", "1"]).device == "cuda:1"


def test_resume_loads_rng_states_on_the_cpu(acdc_root, tmp_path):
    """last.pth is read on the CPU whatever the run's device: loading it onto the device (the
    'meta' device stands in for CUDA here) would make the RNG states device tensors, and
    torch.set_rng_state refuses them."""
    from engine.trainer import Trainer
    flags = ["--root_path", acdc_root, "--model_root", str(tmp_path)] + ACDC_FLAGS + ["--max_iterations", "2"]
    train_acdc.main(flags)
    args = train_acdc.parse_args(flags + ["--resume"])
    method = get_method("ssnet").from_config(args, "ACDC", 4, torch.device("cpu"))
    snap = str(tmp_path / "ACDC_SSNet_1_labeled" / "unet")
    trainer = Trainer(args, method, train_acdc.build_loader(args), snap, lambda n: 0.01, None, lambda n: False)
    trainer.device = torch.device("meta")
    trainer.load_last()
    saved = torch.load(os.path.join(snap, "last.pth"), weights_only=True)
    assert trainer.iter_num == 2 and torch.equal(torch.get_rng_state(), saved["rng"]["torch"])


def test_deterministic_2_runs_and_repeats(acdc_root, tmp_path):
    flags = ["--root_path", acdc_root] + ACDC_FLAGS + ["--max_iterations", "2", "--deterministic", "2"]
    try:
        for run in ("a", "b"):
            train_acdc.main(flags + ["--model_root", str(tmp_path / run)])
            assert torch.are_deterministic_algorithms_enabled()
    finally:
        torch.use_deterministic_algorithms(False)
    a, b = (torch.load(tmp_path / r / "ACDC_SSNet_1_labeled" / "unet" / "last.pth", weights_only=True) for r in "ab")
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"


def test_scripts_turn_library_errors_into_one_message(capsys):
    """Methods and the engine raise ValueError / RuntimeError / FileNotFoundError; run_cli (every
    training script's __main__) prints one line naming the script and exits with status 1."""
    import logging

    from engine.run import run_cli

    def bad():
        raise ValueError("--lds is an SS-Net ablation flag; URPC has no such loss term")

    handler = logging.StreamHandler()  # stderr, as setup_logging gives a run
    logging.getLogger().addHandler(handler)
    try:
        status = run_cli(bad, "train_acdc.py")  # the script's __main__ passes it to sys.exit
    finally:
        logging.getLogger().removeHandler(handler)
    assert status == 1 and run_cli(lambda: None) == 0
    assert "train_acdc.py: error: --lds is an SS-Net ablation flag" in capsys.readouterr().err
