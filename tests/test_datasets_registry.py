"""Adding a dataset is one new file plus one registry line (code/datasets/__init__.py): shown
here with a tiny made-up 3D dataset, "Toy", that the methods, the training engine, the
validation and the test procedure then handle without any other change."""
from __future__ import annotations
import json
import sys
import textwrap

import pytest
import torch

import datasets
from datasets import DatasetDescription, SlidingWindow, get_dataset
from engine import evaluation, training
from methods import get_method

TOY_MODULE = '''
"""Toy: a made-up 3D dataset in LA's on-disk layout, trained with a constant learning rate."""
from dataloaders.la_heart import LAHeart, la_case_path
from dataloaders.transforms import Compose, RandomCrop, ToTensor
from datasets import DatasetDescription, SlidingWindow, method_table


def train_dataset(root, patch_size, cache):
    return LAHeart(base_dir=root, split="train", cache=cache,
                   transform=Compose([RandomCrop(tuple(patch_size)), ToTensor()]))


DESCRIPTION = DatasetDescription(
    name="Toy", num_classes=2, class_names=("organ",), spatial_dims=3, root_path="data/Toy",
    case_path=la_case_path, train_dataset=train_dataset, labelnum=2,
    patch_size=(32, 32, 16), batch_size=2, labeled_bs=1, max_iterations=3,
    consistency=0.5, consistency_rampup=1.0, magnitude=2.0, vat_distance="dice", dice="foreground",
    methods=method_table({"ssnet": "VNet", "mcnet": "mcnet3d_v1"}, {"mcnet": 0.3}, rampup=1.0,
                         options={"mcnet": {"seg_weight": 0.5}}),
    select="test", val_start=2, procedure=SlidingWindow(stride_xy=16, stride_z=16),
)
'''


@pytest.fixture
def toy(tmp_path, monkeypatch):
    """The new file (toy_dataset.py on the import path) and its registry line."""
    folder = tmp_path / "modules"
    folder.mkdir()
    (folder / "toy_dataset.py").write_text(textwrap.dedent(TOY_MODULE))
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.setitem(datasets.REGISTRY, "Toy", "toy_dataset")
    yield get_dataset("Toy")
    sys.modules.pop("toy_dataset", None)


def test_registry_knows_the_shipped_datasets():
    assert set(datasets.names()) >= {"LA", "ACDC"}
    for name in ("LA", "ACDC"):
        d = get_dataset(name)
        assert isinstance(d, DatasetDescription) and d.name == name
        assert set(d.methods) == {"ssnet", "uamt", "sassnet", "dtc", "urpc", "mcnet", "bcp", "admt"}
    with pytest.raises(ValueError, match="unknown dataset 'Pancreas'.*LA, ACDC"):
        get_dataset("Pancreas")


def test_a_new_dataset_trains_and_tests_from_its_description(toy, tiny_data, tmp_path):
    root = tiny_data("la", cases=4, seed=5, size=(40, 40, 24))
    parser = training.build_parser(toy)
    assert parser.get_default("patch_size") == [32, 32, 16] and parser.get_default("consistency") == 0.5
    assert parser.get_default("stride_xy") == parser.get_default("stride_z") == 16  # its validation windows
    assert "--lr_step" not in parser.format_help()  # constant learning rate: no step flag
    args = training.parse_args(toy, ["--root_path", root, "--model_root", str(tmp_path), "--device", "cpu",
                                     "--num_workers", "0", "--val_interval", "1"])
    summary = training.train(args, toy)
    snapshot = tmp_path / "Toy_SSNet_2_labeled" / "VNet"
    assert summary["iterations"] == 3 and summary["best_iter"] in (2, 3)  # validated from --val_start 2
    assert (snapshot / "VNet_best_model.pth").is_file() and (snapshot / "VNet_last_model.pth").is_file()
    method = get_method("ssnet").from_config(args, toy, toy.num_classes, torch.device("cpu"))
    assert (method.vat.epsilon, method.consistency, method.ramp_after_increment) == (2.0, 0.5, False)

    # the test procedure of its type (SlidingWindow), with the description's facts as defaults
    test_parser = evaluation.build_parser(toy)
    assert test_parser.get_default("stride_xy") == test_parser.get_default("stride_z") == 16
    assert test_parser.get_default("nms") == 1 and test_parser.get_default("patch_size") == [32, 32, 16]
    result = evaluation.test_main(toy, ["--root_path", root, "--model_root", str(tmp_path), "--device", "cpu",
                                        "--save_nii", "0"])
    with open(snapshot / "test" / "performance.json", encoding="utf-8") as f:
        written = json.load(f)
    assert written["dataset"] == "Toy" and written["metrics"] == ["dice", "jaccard", "hd95", "asd"]
    assert set(written["mean"]) == {"dice", "jaccard", "hd95", "asd"} and written["cases"] == result["cases"] >= 1
    assert written["stride_xy"] == 16 and written["nms"] is True
    assert (snapshot / "test" / "metrics_per_case.csv").is_file() and (snapshot / "test" / "performance.txt").is_file()


def test_a_method_without_a_setting_is_refused_by_name(toy):
    assert get_method("mcnet").build_model(toy, 2, "test").__class__.__name__ == "MCNet3d"
    with pytest.raises(ValueError, match="--method uamt has no setting for the Toy dataset.*mcnet, ssnet"):
        get_method("uamt").build_model(toy, 2, "test")


def test_a_procedure_is_a_typed_object(toy):
    """A description names its procedure by type; a string (the old form) is refused by name."""
    with pytest.raises(ValueError, match="procedure must be a SlidingWindow"):
        DatasetDescription(**{**toy.__dict__, "procedure": "sliding_window"})
    with pytest.raises(ValueError, match="stride_z must be >= 1"):
        SlidingWindow(stride_xy=16, stride_z=0)


def test_shapes_come_from_the_description(toy):
    with pytest.raises(ValueError, match="--patch_size takes 3 numbers"):  # Toy is 3D
        training.parse_args(toy, ["--patch_size", "32", "32", "--device", "cpu"])
