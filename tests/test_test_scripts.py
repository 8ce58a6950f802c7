"""code/test_la.py and code/test_acdc.py end to end on tiny h5 data (CPU)."""
from __future__ import annotations
import csv
import importlib
import math

import h5py
import numpy as np
import pytest
import torch

from networks.net_factory import net_factory
from engine.checkpoints import CheckpointError

test_la = importlib.import_module("test_la")
test_acdc = importlib.import_module("test_acdc")

LA_CASES = ["CASE_A", "CASE_B"]
ACDC_CASES = ["patient002_frame01", "patient001_frame02"]


def _write_la(root):
    rng = np.random.default_rng(0)
    for case in LA_CASES:
        folder = root / "2018LA_Seg_Training Set" / case
        folder.mkdir(parents=True)
        label = np.zeros((40, 36, 20), np.uint8)
        label[10:28, 8:26, 4:15] = 1
        image = (rng.normal(size=label.shape) + 2 * label).astype(np.float32)
        with h5py.File(folder / "mri_norm2.h5", "w") as f:
            f["image"] = image
            f["label"] = label
    (root / "test.list").write_text("\n".join(LA_CASES) + "\n")


def _write_acdc(root):
    rng = np.random.default_rng(1)
    (root / "data").mkdir(parents=True)
    for case in ACDC_CASES:
        label = np.zeros((3, 40, 48), np.uint8)
        label[:, 8:20, 8:20] = 1
        label[:, 20:30, 10:30] = 2
        label[:, 12:24, 30:44] = 3
        image = (rng.random(label.shape) * 0.2 + label / 4).astype(np.float32)
        with h5py.File(root / "data" / f"{case}.h5", "w") as f:
            f["image"] = image
            f["label"] = label
    (root / "test.list").write_text("\n".join(ACDC_CASES) + "\n")


def _save(model, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)


def _csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_la_end_to_end_with_default_snapshot_path(tmp_path):
    data = tmp_path / "LA"
    _write_la(data)
    torch.manual_seed(0)
    snapshot = tmp_path / "model" / "LA_Tiny_4_labeled" / "VNet"
    _save(net_factory("VNet", 1, 2, mode="train", device="cpu"), snapshot / "VNet_best_model.pth")
    summary = test_la.main([
        "--root_path", str(data), "--model_root", str(tmp_path / "model"), "--exp", "Tiny", "--labelnum", "4",
        "--patch_size", "32", "32", "16", "--stride_xy", "16", "--stride_z", "8", "--sw_batch", "3",
        "--device", "cpu",
    ])
    out = snapshot / "test"
    rows = _csv(out / "metrics_per_case.csv")
    assert [r["case"] for r in rows] == LA_CASES
    assert summary["cases"] == 2
    text = (out / "performance.txt").read_text()
    assert text.startswith("average metric is [")
    assert "empty prediction" in text
    for i in range(2):
        assert (out / "predictions" / f"{i:02d}_pred.nii.gz").is_file()
        assert (out / "predictions" / f"{i:02d}_scores.nii.gz").is_file()
    expected = np.nanmean([float(r["dice"]) for r in rows])
    assert summary["mean"]["dice"] == pytest.approx(expected)
    assert (out / "performance.json").is_file() and (out / "test_log.txt").is_file()


def test_acdc_end_to_end_with_ckpt(tmp_path):
    data = tmp_path / "ACDC"
    _write_acdc(data)
    torch.manual_seed(0)
    ckpt = tmp_path / "elsewhere" / "unet_best_model.pth"
    _save(net_factory("unet", 1, 4, device="cpu"), ckpt)
    summary = test_acdc.main([
        "--root_path", str(data), "--ckpt", str(ckpt), "--patch_size", "64", "64", "--sw_batch", "2",
        "--device", "cpu", "--empty_policy", "nan", "--detail", "1",
    ])
    out = ckpt.parent / "test"
    rows = _csv(out / "metrics_per_case.csv")
    # sorted case order, three classes per volume
    assert [(r["case"], r["class"]) for r in rows] == [(c, str(k)) for c in sorted(ACDC_CASES) for k in (1, 2, 3)]
    text = (out / "performance.txt").read_text()
    assert "metric is [array(" in text and "average metric is" in text
    for case in ACDC_CASES:
        for kind in ("pred", "img", "gt"):
            assert (out / "predictions" / f"{case}_{kind}.nii.gz").is_file()
    dice = [float(r["dice"]) for r in rows]
    assert summary["mean"]["dice"] == pytest.approx(np.nanmean(np.reshape(dice, (2, 3)), axis=0).mean())
    assert summary["empty_policy"] == "nan"
    assert all(not math.isnan(d) for d in dice)


def test_missing_checkpoint_and_data_fail_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="LA_SSNet_4_labeled"):
        test_la.main(["--model_root", str(tmp_path / "model"), "--root_path", str(tmp_path), "--device", "cpu"])
    ckpt = tmp_path / "w" / "unet_best_model.pth"
    _save(net_factory("unet", 1, 4, device="cpu"), ckpt)
    with pytest.raises(FileNotFoundError, match="test.list"):
        test_acdc.main(["--ckpt", str(ckpt), "--root_path", str(tmp_path / "nodata"), "--device", "cpu"])


def test_wrong_network_checkpoint_lists_keys(tmp_path):
    data = tmp_path / "ACDC"
    _write_acdc(data)
    ckpt = tmp_path / "w" / "unet_best_model.pth"
    _save(net_factory("unet", 1, 4, device="cpu"), ckpt)
    with pytest.raises(CheckpointError, match=r"shape mismatches[\s\S]*out_conv"):
        test_acdc.main(["--ckpt", str(ckpt), "--root_path", str(data), "--device", "cpu", "--num_classes", "3"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_cuda_request_without_gpu(tmp_path, capsys):
    data = tmp_path / "ACDC"
    _write_acdc(data)
    ckpt = tmp_path / "w" / "unet_best_model.pth"
    _save(net_factory("unet", 1, 4, device="cpu"), ckpt)
    with pytest.raises(SystemExit):
        test_acdc.main(["--ckpt", str(ckpt), "--root_path", str(data), "--gpu", "0"])
    assert "CUDA" in capsys.readouterr().err


@pytest.mark.parametrize("policy", ["reference", "nan"])
def test_la_empty_predictions_are_counted(tmp_path, policy):
    data = tmp_path / "LA"
    _write_la(data)
    model = net_factory("VNet", 1, 2, mode="test", device="cpu")
    state = model.state_dict()
    state["decoder.out_conv.weight"].zero_()
    state["decoder.out_conv.bias"].copy_(torch.tensor([10.0, -10.0]))  # background everywhere
    ckpt = tmp_path / "w" / "VNet_best_model.pth"
    ckpt.parent.mkdir()
    torch.save(state, ckpt)
    summary = test_la.main([
        "--root_path", str(data), "--ckpt", str(ckpt), "--patch_size", "32", "32", "16", "--stride_xy", "16",
        "--stride_z", "8", "--device", "cpu", "--save_nii", "0", "--empty_policy", policy,
    ])
    assert summary["empty_predictions"] == 2
    assert "2 of 2 cases had an empty prediction" in (ckpt.parent / "test" / "performance.txt").read_text()
    assert summary["mean"]["dice"] == 0.0
    if policy == "reference":
        assert summary["mean"]["hd95"] == 0.0 and summary["mean"]["asd"] == 0.0
    else:
        assert math.isnan(summary["mean"]["hd95"]) and math.isnan(summary["mean"]["asd"])
    assert not (ckpt.parent / "test" / "predictions").exists()


def _acdc_snapshot(tmp_path):
    """A snapshot folder with different best and last checkpoints."""
    data = tmp_path / "ACDC"
    _write_acdc(data)
    snapshot = tmp_path / "model" / "ACDC_Tiny_3_labeled" / "unet"
    torch.manual_seed(0)
    _save(net_factory("unet", 1, 4, device="cpu"), snapshot / "unet_best_model.pth")
    torch.manual_seed(1)
    _save(net_factory("unet", 1, 4, device="cpu"), snapshot / "unet_last_model.pth")
    flags = ["--root_path", str(data), "--model_root", str(tmp_path / "model"), "--exp", "Tiny",
             "--patch_size", "64", "64", "--device", "cpu", "--save_nii", "0"]
    return snapshot, flags


def test_which_both_tests_best_and_last_apart(tmp_path):
    snapshot, flags = _acdc_snapshot(tmp_path)
    summary = test_acdc.main(flags + ["--which", "both"])
    assert summary["which"] == "best" and summary["last"]["which"] == "last"
    assert summary["checkpoint"].endswith("unet_best_model.pth")
    assert summary["last"]["checkpoint"].endswith("unet_last_model.pth")
    assert (snapshot / "test" / "performance.json").is_file()
    assert (snapshot / "test_last" / "performance.json").is_file()
    assert summary["mean"]["dice"] != summary["last"]["mean"]["dice"]  # two different networks
    last_only = test_acdc.main(flags + ["--which", "last", "--out_dir", str(tmp_path / "l")])
    assert last_only["mean"] == summary["last"]["mean"]


def test_which_last_without_final_checkpoint_and_bad_combinations(tmp_path):
    snapshot, flags = _acdc_snapshot(tmp_path)
    (snapshot / "unet_last_model.pth").unlink()
    with pytest.raises(FileNotFoundError, match="final-iterate checkpoint.*last.pth"):
        test_acdc.main(flags + ["--which", "last"])
    with pytest.raises(SystemExit):
        test_acdc.main(flags + ["--which", "both", "--ckpt", str(snapshot / "unet_best_model.pth")])


def test_expect_match_and_mismatch(tmp_path):
    import json
    snapshot, flags = _acdc_snapshot(tmp_path)
    first = test_acdc.main(flags)
    expected = {"dataset": "ACDC", "mean": first["mean"],
                "per_class": {k: v["mean"] for k, v in first["per_class"].items()}}
    (tmp_path / "match.json").write_text(json.dumps(expected))
    ok = test_acdc.main(flags + ["--expect", str(tmp_path / "match.json")])
    assert ok["expect"]["match"] is True and ok["expect"]["causes"] == []
    assert json.loads((snapshot / "test" / "expect.json").read_text())["match"] is True
    shifted = json.loads(json.dumps(expected))
    shifted["mean"]["dice"] += 0.03
    shifted["per_class"]["RV"]["hd95"] += 1.0
    (tmp_path / "mismatch.json").write_text(json.dumps(shifted))
    bad = test_acdc.main(flags + ["--expect", str(tmp_path / "mismatch.json")])
    assert bad["expect"]["match"] is False
    unequal = {(r["part"], r["metric"]) for r in bad["expect"]["rows"] if not r["equal"]}
    assert unequal == {("mean", "dice"), ("RV", "hd95")}
    wrong = [r for r in bad["expect"]["rows"] if r["part"] == "mean" and r["metric"] == "dice"][0]
    assert wrong["difference"] == pytest.approx(-0.03)
    assert any("different images" in c for c in bad["expect"]["causes"])
    assert "MISMATCH" in (snapshot / "test" / "test_log.txt").read_text()


def test_expect_names_the_released_results(tmp_path):
    from engine.evaluation import load_expected
    la4 = load_expected("LA4", "LA")
    assert la4["mean"]["dice"] == 0.86332867 and la4["decimals"] == 8
    acdc7 = load_expected("ACDC7", "ACDC")
    assert acdc7["per_class"]["LV"]["asd"] == 1.57257902
    with pytest.raises(ValueError, match="LA result"):
        load_expected("LA8", "ACDC")
    with pytest.raises(ValueError, match="not a file, nor one of"):
        load_expected("LA5", "LA")
