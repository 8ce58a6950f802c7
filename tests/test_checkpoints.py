"""Checkpoint loading: bare/wrapped state_dicts, prefixes, clear failures."""
from __future__ import annotations
import pytest
import torch
from torch import nn

from engine.checkpoints import CheckpointError, load_weights


def _net(out_channels=2, extra=False):
    torch.manual_seed(0)
    layers = [nn.Conv3d(1, 4, 3, padding=1), nn.BatchNorm3d(4), nn.Conv3d(4, out_channels, 1)]
    if extra:
        layers.append(nn.Conv3d(out_channels, out_channels, 1))
    return nn.Sequential(*layers)


def _assert_same(a: nn.Module, b: nn.Module):
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb
        assert torch.equal(va, vb), ka


@pytest.mark.parametrize("wrap", [None, "state_dict", "model_state_dict", "model"])
@pytest.mark.parametrize("prefix", ["", "module."])
def test_bare_and_wrapped_state_dicts(tmp_path, wrap, prefix):
    src = _net()
    with torch.no_grad():
        src[0].weight.add_(1.0)
        src[1].running_mean.fill_(0.25)
    state = {prefix + k: v for k, v in src.state_dict().items()}
    obj = state if wrap is None else {wrap: state, "iteration": 7, "best": 0.5}
    path = tmp_path / "ckpt.pth"
    torch.save(obj, path)
    dst = _net()
    assert not torch.equal(dst[0].weight, src[0].weight)
    load_weights(dst, path, device="cpu")
    _assert_same(src, dst)


def test_map_location_cpu(tmp_path):
    src = _net()
    path = tmp_path / "w.pth"
    torch.save(src.state_dict(), path)
    dst = _net()
    load_weights(dst, str(path), device=torch.device("cpu"))
    assert dst[0].weight.device.type == "cpu"
    _assert_same(src, dst)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU to write a CUDA checkpoint")
def test_cuda_saved_checkpoint_loads_on_cpu(tmp_path):
    src = _net().cuda()
    path = tmp_path / "cuda.pth"
    torch.save(src.state_dict(), path)
    dst = _net()
    load_weights(dst, path, device="cpu")
    assert dst[0].weight.device.type == "cpu"
    assert torch.equal(dst[0].weight, src[0].weight.cpu())


def test_mismatch_lists_missing_unexpected_and_shapes(tmp_path):
    path = tmp_path / "other.pth"
    torch.save(_net(out_channels=4, extra=True).state_dict(), path)
    with pytest.raises(CheckpointError) as info:
        load_weights(_net(out_channels=2), path)
    text = str(info.value)
    assert str(path) in text
    assert "unexpected keys" in text and "3.weight" in text and "3.bias" in text
    assert "shape mismatches" in text and "2.weight" in text and "(4, 4, 1, 1, 1)" in text
    torch.save({"0.weight": torch.zeros(4, 1, 3, 3, 3)}, path)
    with pytest.raises(CheckpointError, match=r"missing keys[\s\S]*1\.running_mean"):
        load_weights(_net(), path)


def test_missing_file_names_path_and_release_location(tmp_path):
    path = tmp_path / "nope" / "VNet_best_model.pth"
    with pytest.raises(FileNotFoundError) as info:
        load_weights(_net(), path)
    assert str(path) in str(info.value)
    assert "pretrained_pth/LA_SSNet_4_labeled/VNet/VNet_best_model.pth" in str(info.value)


class _Payload:
    pass


def test_non_tensor_pickle_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"model": _net().state_dict(), "obj": _Payload()}, path)
    with pytest.raises(CheckpointError, match="weights_only"):
        load_weights(_net(), path)


def test_dict_without_weights(tmp_path):
    path = tmp_path / "meta.pth"
    torch.save({"iteration": 3, "lr": 0.01}, path)
    with pytest.raises(CheckpointError, match="'iteration'"):
        load_weights(_net(), path)
