"""Faults around checkpoints: RNG state without numpy objects, atomic writes on a full disk,
safe reading of training checkpoints (empty, truncated, code-running, old format), and
the test scripts' weight loading (training last.pth, NaN weights)."""
from __future__ import annotations
import logging
import os
import random

import numpy as np
import pytest
import torch
from torch import nn

from engine import checkpoints, stream
from engine.checkpoints import CheckpointError

REQUIRED = ("model", "optimizer", "iter_num", "rng")


def _draws():
    return (random.random(), np.random.rand(3).tolist(), np.random.randn(), torch.rand(3).tolist())


def _builtins_and_tensors_only(obj) -> bool:
    if torch.is_tensor(obj) or obj is None or type(obj) in (bool, int, float, str):
        return True
    if type(obj) in (tuple, list):
        return all(_builtins_and_tensors_only(x) for x in obj)
    if type(obj) is dict:
        return all(type(k) is str and _builtins_and_tensors_only(v) for k, v in obj.items())
    return False


# ------------------------------------------------------------------ 1. RNG state


def test_rng_state_round_trip_is_exact_and_numpy_free():
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    np.random.randn()  # leaves a cached gaussian in numpy's state
    state = stream.rng_state()
    assert _builtins_and_tensors_only(state), "rng_state() must hold only tensors and Python builtins"
    expected = _draws()
    _draws()
    stream.set_rng_state(state)
    assert _draws() == expected


def test_rng_state_loads_weights_only(tmp_path):
    random.seed(4), np.random.seed(5), torch.manual_seed(6)
    path = tmp_path / "rng.pth"
    torch.save({"rng": stream.rng_state()}, path)
    expected = _draws()
    _draws()
    loaded = torch.load(path, weights_only=True)
    stream.set_rng_state(loaded["rng"])
    assert _draws() == expected


def test_set_rng_state_accepts_old_numpy_tuple():
    np.random.seed(7)
    old = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    expected = _draws()
    stream.set_rng_state(old)
    assert _draws() == expected


class _FakeCuda:
    """Records what the RNG functions would do to a GPU, without one."""

    def __init__(self, monkeypatch, available: bool):
        self.calls = []
        monkeypatch.setattr(torch.cuda, "is_available", lambda: available)
        monkeypatch.setattr(torch.cuda, "set_rng_state", lambda s, d="cuda": self.calls.append(("set", s, d)))
        monkeypatch.setattr(torch.cuda, "get_rng_state",
                            lambda d="cuda": self.calls.append(("get", d)) or torch.full((4,), 9, dtype=torch.uint8))
        monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda s: self.calls.append(("set_all", s)))
        monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: self.calls.append(("get_all",)) or [])


def _old_state_with_cuda_list(n_gpus: int):
    state = stream.rng_state()
    state["numpy"] = np.random.get_state()
    state["cuda"] = [torch.full((4,), i, dtype=torch.uint8) for i in range(n_gpus)]
    return state


def test_old_cuda_list_without_cuda_is_accepted_untouched(monkeypatch):
    fake = _FakeCuda(monkeypatch, available=False)
    np.random.seed(8)
    state = _old_state_with_cuda_list(2)
    expected = _draws()
    stream.set_rng_state(state)  # a CPU run
    assert _draws() == expected
    stream.set_rng_state(state, torch.device("cpu"))
    stream.set_rng_state(state, torch.device("cuda:1"))  # CUDA absent: warned, not touched
    assert fake.calls == []
    assert "cuda" not in stream.rng_state()
    assert fake.calls == []


def test_cuda_state_is_the_run_device_only(monkeypatch, caplog):
    fake = _FakeCuda(monkeypatch, available=True)
    assert "cuda" not in stream.rng_state()  # CPU run: no GPU state even with GPUs visible
    assert "cuda" not in stream.rng_state(torch.device("cpu"))
    assert fake.calls == []
    state = stream.rng_state(torch.device("cuda:1"))
    assert fake.calls == [("get", torch.device("cuda:1"))]
    fake.calls.clear()
    stream.set_rng_state(state, torch.device("cuda:1"))
    assert [c[0] for c in fake.calls] == ["set"] and torch.equal(fake.calls[0][1], state["cuda"])
    assert fake.calls[0][2] == torch.device("cuda:1")
    fake.calls.clear()
    stream.set_rng_state(_old_state_with_cuda_list(3), torch.device("cuda:2"))  # old list: its GPU 2
    assert [c[0] for c in fake.calls] == ["set"] and int(fake.calls[0][1][0]) == 2
    fake.calls.clear()
    with caplog.at_level(logging.WARNING, logger="engine.stream"):
        stream.set_rng_state(_old_state_with_cuda_list(1), torch.device("cuda:3"))  # no GPU 3: the first
    assert [c[0] for c in fake.calls] == ["set"] and int(fake.calls[0][1][0]) == 0
    assert "GPU 0" in caplog.text


# ------------------------------------------------------------------ 2. atomic writes


def test_save_checkpoint_round_trip_leaves_no_tmp(tmp_path):
    path = str(tmp_path / "last.pth")
    checkpoints.save_checkpoint({"a": torch.arange(3), "n": 1}, path)
    checkpoints.save_checkpoint({"a": torch.arange(4), "n": 2}, path)
    loaded = torch.load(path, weights_only=True)
    assert loaded["n"] == 2 and torch.equal(loaded["a"], torch.arange(4))
    assert os.listdir(tmp_path) == ["last.pth"]


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full to simulate a full disk")
def test_save_checkpoint_full_disk_keeps_previous_file(tmp_path):
    path = str(tmp_path / "last.pth")
    torch.save({"n": 1}, path)
    before = open(path, "rb").read()
    os.symlink("/dev/full", path + ".tmp")  # every write to the temporary file fails with ENOSPC
    with pytest.raises(CheckpointError) as info:
        checkpoints.save_checkpoint({"a": torch.zeros(1000), "n": 2}, path)
    text = str(info.value)
    assert path in text and "disk full" in text and "kept" in text
    assert open(path, "rb").read() == before
    assert not os.path.lexists(path + ".tmp")
    assert os.path.exists("/dev/full")


# ------------------------------------------------------------------ 3. reading last.pth


def _make_marker(path):
    with open(path, "w") as f:
        f.write("code ran")
    return {}


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (_make_marker, (self.marker,))


def _training_state(model: nn.Module, rng) -> dict:
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    return {"model": model.state_dict(), "optimizer": opt.state_dict(), "iter_num": 12, "best": 0.5,
            "best_iter": 10, "rng": rng, "loader": {"epoch_rng": rng, "taken": 2},
            "config": {"model": "unet", "base_lr": 0.01}}


def _old_rng():
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 2, 3))


def test_load_training_state_never_runs_code(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "last.pth"
    torch.save({"model": {}, "optimizer": {}, "iter_num": 1, "rng": _RunsCode(str(marker))}, path)
    with pytest.raises(CheckpointError) as info:
        checkpoints.load_training_state(str(path), REQUIRED)
    assert str(path) in str(info.value) and "refused" in str(info.value)
    assert not marker.exists()


def test_load_training_state_empty_file(tmp_path):
    path = tmp_path / "last.pth"
    path.write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"empty \(0 bytes\)") as info:
        checkpoints.load_training_state(str(path), REQUIRED)
    assert str(path) in str(info.value)


def test_load_training_state_truncated_file(tmp_path):
    path = tmp_path / "last.pth"
    torch.save(_training_state(_net(), stream.rng_state()), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or damaged") as info:
        checkpoints.load_training_state(str(path), REQUIRED)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_load_training_state_missing_keys(tmp_path):
    path = tmp_path / "last.pth"
    torch.save({"model": {}, "iter_num": 3}, path)
    with pytest.raises(CheckpointError, match="not a training checkpoint of this repository: missing keys") as info:
        checkpoints.load_training_state(str(path), REQUIRED)
    assert "'optimizer'" in str(info.value) and "'rng'" in str(info.value) and str(path) in str(info.value)
    torch.save([1, 2], path)
    with pytest.raises(CheckpointError, match="not a training checkpoint"):
        checkpoints.load_training_state(str(path), REQUIRED)


def test_load_training_state_old_and_new_format(tmp_path):
    np.random.seed(11)
    for name, make_rng in (("old.pth", _old_rng), ("new.pth", stream.rng_state)):
        path = tmp_path / name
        net = _net()  # seeds torch: before the states are taken
        torch.save(_training_state(net, make_rng()), path)
        expected = _draws()
        _draws()
        state = checkpoints.load_training_state(str(path), REQUIRED)
        assert state["iter_num"] == 12
        stream.set_rng_state(state["rng"])
        assert _draws() == expected, name


# ------------------------------------------------------------------ 4. load_weights


def test_load_weights_empty_file(tmp_path):
    path = tmp_path / "unet_best_model.pth"
    path.write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"empty \(0 bytes\)") as info:
        checkpoints.load_weights(_net(), str(path))
    assert str(path) in str(info.value) and "arbitrary" not in str(info.value)


def test_load_weights_truncated_file(tmp_path):
    path = tmp_path / "unet_best_model.pth"
    torch.save(_net().state_dict(), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or damaged") as info:
        checkpoints.load_weights(_net(), str(path))
    assert str(path) in str(info.value)


@pytest.mark.parametrize("form", ["old", "new"])
def test_load_weights_training_checkpoint(tmp_path, caplog, form):
    src = _net()
    with torch.no_grad():
        src[0].weight.add_(1.0)
    path = tmp_path / "last.pth"
    torch.save(_training_state(src, _old_rng() if form == "old" else stream.rng_state()), path)
    dst = _net()
    with caplog.at_level(logging.WARNING, logger="engine.checkpoints"):
        checkpoints.load_weights(dst, str(path), device="cpu")
    assert torch.equal(dst[0].weight, src[0].weight)
    text = caplog.text
    assert "training checkpoint at iteration 12" in text
    assert "unet_best_model.pth" in text and "unet_last_model.pth" in text and "--which last" in text


def test_load_weights_refuses_nan_weights(tmp_path):
    src = _net()
    with torch.no_grad():
        src[0].weight[0, 0, 0, 0] = float("nan")
        src[0].bias[1] = float("inf")
    path = tmp_path / "unet_best_model.pth"
    torch.save(src.state_dict(), path)
    dst = _net()
    before = dst[0].weight.clone()
    with pytest.raises(CheckpointError, match="diverged; use an earlier checkpoint") as info:
        checkpoints.load_weights(dst, str(path))
    assert str(path) in str(info.value) and "0.weight" in str(info.value) and "0.bias" in str(info.value)
    assert torch.equal(dst[0].weight, before)
