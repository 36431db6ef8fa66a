"""edgeseg/foreign_checkpoint.py checked piece by piece with a small torch model built here (no session fixtures).

The references are the checkpoints' own contents: which names a layout stores, which of
them the model has, and the exact sentences a user reads. Written after ``make mutate``
found these untested (benchmarks/results/mutation/foreign_checkpoint.md).
"""
from __future__ import annotations

import argparse

import pytest
import torch
from torch import nn

from edgeseg.errors import InputFileError, speak_to_cli
from edgeseg.foreign_checkpoint import (LoadReport, _few, architecture_named_in, find_state_dict, fit_state_dict,
                                        load_foreign_weights)


class Small(nn.Module):
    def __init__(self, classes: int = 3):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.classifier = nn.Conv2d(4, classes, 1)

    def forward(self, x):
        return self.classifier(torch.relu(self.bn(self.conv(x))))


def trained(seed: int = 0) -> Small:
    torch.manual_seed(seed)
    model = Small()
    for p in model.parameters():
        nn.init.normal_(p)
    model.bn.running_mean.normal_()
    return model.eval()


def test_each_layout_is_named_by_what_it_holds():
    weights = trained().state_dict()
    assert find_state_dict(weights) == (weights, "bare state_dict")
    assert find_state_dict({"model": weights, "args": None})[1] == "torchvision reference checkpoint"
    assert find_state_dict({"meta": {}, "state_dict": weights})[1] == "MMSegmentation checkpoint"
    assert find_state_dict({"state_dict": weights, "pytorch-lightning_version": "2.4"})[1] == "Lightning checkpoint"
    # a key that merely follows the state_dict is not Lightning's
    assert find_state_dict({"state_dict": weights, "epoch": 3})[1] == "checkpoint with a state_dict"
    found, name = find_state_dict({"model_state_dict": weights, "optimizer_state_dict": {}})
    assert found is weights and name == "checkpoint with a model_state_dict"
    assert find_state_dict([weights]) == (None, "")
    assert find_state_dict({"epoch": 3, "note": "no tensors"}) == (None, "")


def test_the_load_report_says_exactly_what_fitted():
    report = LoadReport("bare state_dict", 5, ("a",), ("x", "y", "z", "w"), ("b",))
    assert report.summary() == "5 tensors matched, 1 missing, 4 unexpected (x, y, z and 1 more), 1 of another shape"
    assert report.to_dict() == {"format": "bare state_dict", "matched": 5, "missing": ["a"],
                                "unexpected": ["x", "y", "z", "w"], "mismatched": ["b"]}
    assert LoadReport("f", 2, (), (), ()).summary() == "2 tensors matched, 0 missing, 0 unexpected"
    assert _few(["a", "b", "c"]) == "a, b, c" and _few(["a", "b", "c", "d", "e"]) == "a, b, c and 2 more"


def test_a_checkpoint_names_only_torchvisions_segmentation_models():
    assert architecture_named_in({"args": argparse.Namespace(model="fcn_resnet50")}) == "torchvision:fcn_resnet50"
    assert architecture_named_in({"args": argparse.Namespace(lr=0.02)}) is None  # no model argument
    assert architecture_named_in({"args": argparse.Namespace(model=7)}) is None
    assert architecture_named_in({"model": {}}) is None
    assert architecture_named_in([("args", None)]) is None  # not a dict at all


def test_names_as_the_model_has_them_load_as_they_are():
    source = trained(1)
    model = Small()
    report = load_foreign_weights(model, source.state_dict(), "m.pth", "bare state_dict", "small")
    assert report.matched == len(source.state_dict()) and report.unexpected == () and report.missing == ()
    for name, tensor in source.state_dict().items():
        assert torch.equal(model.state_dict()[name], tensor), name


def test_prefixes_are_stripped_only_from_the_names_that_carry_them():
    weights = {f"model.{k}": v for k, v in trained(2).state_dict().items()}
    weights["loss_fn.weight"] = torch.ones(3)  # a training framework's own tensor, without the prefix
    fitting, (missing, unexpected, mismatched) = fit_state_dict(Small(), weights)
    assert set(fitting) == set(Small().state_dict()) and missing == () and mismatched == ()
    assert unexpected == ("loss_fn.weight",)


def test_when_nothing_fits_the_file_is_reported_under_its_own_names():
    weights = {"encoder.stem.weight": torch.zeros(2), "head.weight": torch.zeros(2)}
    fitting, (missing, unexpected, mismatched) = fit_state_dict(Small(), weights)
    assert fitting == {} and unexpected == ("encoder.stem.weight", "head.weight")  # not 'net.'-prefixed guesses
    assert set(missing) == {k for k in Small().state_dict() if not k.endswith("num_batches_tracked")}


def test_batchnorms_step_counter_may_be_missing():
    source = trained(3)
    weights = {k: v for k, v in source.state_dict().items() if not k.endswith("num_batches_tracked")}
    model = Small()
    load_foreign_weights(model, weights, "m.pth", "bare state_dict", "small")  # loads: nothing left random
    model.eval()
    x = torch.randn(1, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(model(x), source(x))


def test_a_load_leaving_tensors_random_names_them_in_the_users_language():
    weights = trained(4).state_dict()
    weights["classifier.weight"] = torch.zeros(5, 4, 1, 1)  # trained for 5 classes, the model has 3
    with pytest.raises(InputFileError) as python:
        load_foreign_weights(Small(), weights, "m.pth", "bare state_dict", "small")
    assert str(python.value) == ("The weights in m.pth would leave 1 of small's 9 tensors random (classifier.weight "
                                 "have another shape); check ModelFacts(arch=..., num_classes=...) against the model "
                                 "that was trained.")
    del weights["conv.bias"]
    weights.pop("classifier.weight")
    speak_to_cli(True)
    try:
        with pytest.raises(InputFileError) as cli:
            load_foreign_weights(Small(), weights, "m.pth", "bare state_dict", "small")
    finally:
        speak_to_cli(False)
    assert str(cli.value) == ("The weights in m.pth would leave 2 of small's 9 tensors random (conv.bias, "
                              "classifier.weight are missing); check --arch and --num-classes against the model that "
                              "was trained.")
