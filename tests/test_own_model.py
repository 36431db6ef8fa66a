"""A model trained outside edgeseg enters every verb: the checkpoint shapes users have, and foreign ONNX.

The model is torchvision's LR-ASPP-MobileNetV3 trained a few steps here, with plain
torchvision and torch code, as a user's own training script would.
"""
from __future__ import annotations

import argparse
import shutil
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from edgeseg.checkpoint import load_model
from edgeseg.cli.main import cli
from edgeseg.data.dataset import dataset_info, resolve_split
from edgeseg.errors import ConfigError, InputFileError
from edgeseg.runtime.preprocess import preprocess
from edgeseg.spec import IMAGENET_MEAN, ModelFacts, stats_in_255_units

ARCH = "torchvision:lraspp_mobilenet_v3_large"


def _users_model(num_classes: int):
    """torchvision's LR-ASPP trained for three SGD steps on random data, outside edgeseg."""
    from torchvision.models.segmentation import lraspp_mobilenet_v3_large

    torch.manual_seed(0)
    net = lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=num_classes)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.05)
    images, labels = torch.randn(2, 3, 64, 64), torch.randint(0, num_classes, (2, 64, 64))
    net.train()
    for _ in range(3):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(net(images)["out"], labels).backward()
        optimizer.step()
    return net.eval()


@pytest.fixture(scope="module")
def users_model(tiny_data):
    return _users_model(dataset_info(tiny_data).num_classes)


def _run(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


def _reference_batch(tiny_data):
    split = resolve_split(tiny_data, "val")
    spec = ModelFacts(input_size=(64, 64)).input_spec()
    return np.concatenate([preprocess(split.image(i), spec) for i in range(len(split))])


def _shapes(state_dict):
    """The checkpoint layouts users arrive with, each holding the same weights."""
    return {
        "bare": state_dict,
        "torchvision-reference": {"model": state_dict, "optimizer": {"state": {}, "param_groups": []},
                                  "lr_scheduler": {"last_epoch": 3}, "epoch": 29,
                                  "args": argparse.Namespace(model="lraspp_mobilenet_v3_large", lr=0.02)},
        "lightning": {"state_dict": {f"model.{k}": v for k, v in state_dict.items()}, "epoch": 3,
                      "global_step": 120, "pytorch-lightning_version": "2.4.0"},
        "ddp": {f"module.{k}": v for k, v in state_dict.items()},
        "mmseg": {"meta": {"mmseg_version": "1.2.2", "epoch": 3}, "state_dict": state_dict},
    }


@pytest.mark.parametrize("shape", ["bare", "torchvision-reference", "lightning", "ddp", "mmseg"])
def test_each_checkpoint_shape_loads_with_identical_outputs(users_model, tmp_path, shape):
    path = tmp_path / f"{shape}.pth"
    torch.save(_shapes(users_model.state_dict())[shape], path)
    loaded = load_model(path, facts=ModelFacts(arch=ARCH, input_size=(64, 64)))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), users_model(x)["out"], rtol=0, atol=0)
    source = loaded.meta["source"]
    assert source["matched"] == len([k for k in users_model.state_dict() if not k.startswith("aux")])
    assert source["missing"] == [] and source["mismatched"] == []
    assert loaded.input_spec.height == 64 and loaded.input_spec.mean == IMAGENET_MEAN


def test_registered_name_takes_torchvision_weights_too(users_model, tmp_path):
    path = tmp_path / "model.pth"
    torch.save(users_model.state_dict(), path)
    loaded = load_model(path, facts=ModelFacts(arch="lraspp-mobilenetv3-large", input_size=(64, 64)))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), users_model(x)["out"], rtol=0, atol=0)


def test_a_load_leaving_part_of_the_model_random_is_refused(users_model, tmp_path):
    state = {k: v for k, v in users_model.state_dict().items() if not k.startswith("classifier.high")}
    path = tmp_path / "partial.pth"
    torch.save(state, path)
    with pytest.raises(InputFileError, match=r"leave \d+ of .* tensors random .*classifier\.high_classifier"):
        load_model(path, facts=ModelFacts(arch=ARCH, num_classes=users_model.classifier.high_classifier.out_channels,
                                          input_size=(64, 64)))
    torch.save(users_model.state_dict(), path)  # the right file under the wrong architecture
    with pytest.raises(InputFileError, match="random"):
        load_model(path, facts=ModelFacts(arch="torchvision:deeplabv3_mobilenet_v3_large", input_size=(64, 64)))


def test_foreign_checkpoint_needs_arch_and_says_so(users_model, tmp_path):
    path = tmp_path / "model.pth"
    torch.save(_shapes(users_model.state_dict())["mmseg"], path)
    # Python is told Python's argument, the command line its option
    with pytest.raises(ConfigError, match=r"MMSegmentation checkpoint.*facts=ModelFacts\(arch=NAME\)"):
        load_model(path)
    result = CliRunner().invoke(cli, ["export", str(path), "--out", str(tmp_path / "m.onnx")])
    assert result.exit_code == 2 and "--arch NAME" in result.output and "Traceback" not in result.output
    assert "ModelFacts" not in result.output
    result = CliRunner().invoke(cli, ["export", str(path), "--arch", ARCH, "--out", str(tmp_path / "m.onnx")])
    assert result.exit_code == 2 and "--input-size" in result.output
    assert not (tmp_path / "m.onnx").exists()
    output = _run("export", path, "--arch", ARCH, "--input-size", "64x64", "--out", tmp_path / "m.onnx")
    assert "MMSegmentation checkpoint" in output and "tensors matched, 0 missing" in output  # the load report
    assert "ImageNet's mean/std" in output  # the stated default


def test_a_torchvision_reference_checkpoint_names_its_architecture(users_model, tmp_path):
    path = tmp_path / "model_29.pth"
    torch.save(_shapes(users_model.state_dict())["torchvision-reference"], path)  # args.model names it
    loaded = load_model(path, facts=ModelFacts(input_size=(64, 64)))  # no arch given
    assert loaded.arch == ARCH
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), users_model(x)["out"], rtol=0, atol=0)
    payload = _shapes(users_model.state_dict())["torchvision-reference"]
    payload["args"] = argparse.Namespace(model="resnet50")  # a classifier's name is not taken as a segmenter
    torch.save(payload, path)
    with pytest.raises(ConfigError, match="does not say its architecture"):
        load_model(path, facts=ModelFacts(input_size=(64, 64)))


def test_mean_and_std_in_either_unit():
    assert stats_in_255_units((0.485, 0.456, 0.406)) == pytest.approx(IMAGENET_MEAN)
    assert stats_in_255_units((123.675, 116.28, 103.53)) == pytest.approx(IMAGENET_MEAN)
    with pytest.raises(ConfigError, match="three values"):
        stats_in_255_units((0.5, 0.5))


def test_users_model_goes_through_prune_export_calibrate_bench(users_model, tiny_data, tmp_path):
    """The done-criterion: a state_dict trained outside edgeseg, every verb, outputs kept exactly through export."""
    model = tmp_path / "model_29.pth"
    torch.save(_shapes(users_model.state_dict())["torchvision-reference"], model)
    given = ["--arch", ARCH, "--input-size", "64x64", "--mean", "0.485,0.456,0.406", "--std", "0.229,0.224,0.225"]

    _run("export", model, *given, "--data", tiny_data, "--out", tmp_path / "model.onnx")
    meta = json.loads((tmp_path / "model.onnx.json").read_text())
    assert meta["input"]["height"] == 64 and meta["input"]["mean"] == pytest.approx(list(IMAGENET_MEAN))
    assert meta["model"]["arch"] == ARCH and meta["source"]["format"] == "torchvision reference checkpoint"
    assert meta["dataset"]["classes"] == list(dataset_info(tiny_data).class_names())  # from --data's dataset.yaml
    import onnxruntime as ort

    batch = _reference_batch(tiny_data)
    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    onnx_logits = session.run(None, {session.get_inputs()[0].name: batch})[0]
    with torch.no_grad():
        torch_logits = users_model(torch.from_numpy(batch))["out"].numpy()
    np.testing.assert_allclose(onnx_logits, torch_logits, atol=1e-4)
    assert (onnx_logits.argmax(1) == torch_logits.argmax(1)).all()

    _run("prune", model, *given, "--ratio", "0.25", "--out", tmp_path / "pruned.pt")
    pruned_meta = json.loads((tmp_path / "pruned.pt.json").read_text())
    assert pruned_meta["source"]["given"]["input_size"] == [64, 64]
    assert pruned_meta["model"]["params"] < sum(p.numel() for p in users_model.parameters())
    _run("export", tmp_path / "pruned.pt", "--out", tmp_path / "pruned.onnx")  # no facts: the sidecar has them

    _run("calibrate", tmp_path / "model.onnx", "--images", tiny_data, "--num", "4", "--method", "minmax",
         "--no-bias-correction")
    assert json.loads((tmp_path / "model.int8.onnx.json").read_text())["source"]["given"]["arch"] == ARCH
    _run("bench", tmp_path / "model.onnx", tmp_path / "model.int8.onnx", tmp_path / "pruned.pt",
         "--data", tiny_data, "--iters", "2", "--warmup", "1", "--json", tmp_path / "bench.json")
    results = json.loads((tmp_path / "bench.json").read_text())["results"]
    assert [r["input"] for r in results] == [[64, 64]] * 3
    # the user's file itself runs in PyTorch with the same facts: the "your model, PyTorch" row, scored as its export
    _run("bench", model, *given, "--data", tiny_data, "--iters", "2", "--warmup", "1",
         "--json", tmp_path / "torch.json")
    own = json.loads((tmp_path / "torch.json").read_text())  # one model: its result alone
    assert own["backend"] == "pytorch" and own["miou"] == pytest.approx(results[0]["miou"], abs=0.01)
    assert own["params"] == sum(p.numel() for k, p in users_model.named_parameters() if not k.startswith("aux"))
    from edgeseg.benchmark.api import eval as evaluate

    # bench scores the foreign model's ONNX exactly as eval does (both read its facts from the sidecar)
    assert results[0]["miou"] == evaluate(str(tmp_path / "model.onnx"), str(tiny_data))["miou"]


def _plain_onnx(model, path, dynamic: bool):
    """What other tools write: torch.onnx.export with its default names, no sidecar."""
    kwargs = {"dynamic_axes": {"input.1": {0: "n", 2: "h", 3: "w"}}} if dynamic else {}
    torch.onnx.export(model, (torch.zeros(1, 3, 64, 64),), str(path), dynamo=False, opset_version=17,
                      input_names=["input.1"], **kwargs)


def test_foreign_onnx_into_calibrate_bench_and_build_engine(users_model, tiny_data, tmp_path):
    static, dynamic = tmp_path / "static.onnx", tmp_path / "dynamic.onnx"
    _plain_onnx(users_model, static, dynamic=False)
    _plain_onnx(users_model, dynamic, dynamic=True)
    _run("calibrate", static, "--images", tiny_data, "--num", "4", "--method", "minmax", "--no-bias-correction")
    meta = json.loads((tmp_path / "static.int8.onnx.json").read_text())
    assert meta["input"]["height"] == 64 and meta["model"]["num_classes"] == dataset_info(tiny_data).num_classes
    assert meta["onnx"]["input"] == "input.1" and meta["source"]["format"].startswith("ONNX from")

    result = CliRunner().invoke(cli, ["bench", str(dynamic), "--iters", "2"])
    assert result.exit_code == 2 and "--input-size" in result.output
    result = CliRunner().invoke(cli, ["bench", str(static), "--input-size", "32x32", "--iters", "2"])
    assert result.exit_code == 2 and "fixed to 64x64" in result.output
    _run("bench", dynamic, "--input-size", "64x64", "--data", tiny_data, "--iters", "2", "--json",
         tmp_path / "bench.json")
    assert json.loads((tmp_path / "bench.json").read_text())["input"] == [64, 64]

    _run("build-engine", dynamic, "--input-size", "64x64", "--backend", "onnxruntime",
         "--out", tmp_path / "dynamic.ort.onnx")
    assert json.loads((tmp_path / "dynamic.onnx.json").read_text())["source"]["given"]["input_size"] == [64, 64]
    assert json.loads((tmp_path / "dynamic.ort.onnx.json").read_text())["input"]["width"] == 64


def test_predict_and_segmenter_take_a_foreign_onnx_with_what_it_does_not_record(users_model, tiny_data, tmp_path):
    """A plain torch.onnx.export with a dynamic input size: predict asks for --input-size, then runs with it, in
    --data's palette; Segmenter takes the same facts."""
    from PIL import Image

    import edgeseg
    from edgeseg.data.images import read_label

    dynamic = tmp_path / "dynamic.onnx"
    _plain_onnx(users_model, dynamic, dynamic=True)
    image = tiny_data / "val" / "images"
    result = CliRunner().invoke(cli, ["predict", str(dynamic), str(image), "--out", str(tmp_path / "no")])
    assert result.exit_code == 2 and "give it with --input-size HEIGHTxWIDTH" in result.output, result.output
    _run("predict", dynamic, image, "--input-size", "64x64", "--data", tiny_data, "--save", "masks",
         "--out", tmp_path / "out")
    masks = sorted((tmp_path / "out" / "masks").iterdir())
    assert len(masks) == len(list(image.iterdir()))
    palette = dataset_info(tiny_data).palette
    written = Image.open(masks[0]).getpalette()[:3 * len(palette)]
    assert written == [v for colour in palette for v in colour]  # --data's colours, not the default palette
    with edgeseg.Segmenter(str(dynamic), facts=edgeseg.ModelFacts(input_size=(64, 64))) as segmenter:
        first = sorted(image.iterdir())[0]
        assert np.array_equal(segmenter(first), read_label(masks[0]))

    # --data that is no dataset, or one with another class count, is one sentence, not the default palette
    result = CliRunner().invoke(cli, ["predict", str(dynamic), str(image), "--input-size", "64x64", "--data",
                                      str(tmp_path / "nowhere"), "--out", str(tmp_path / "bad")])
    assert result.exit_code == 2 and "names no classes: it is no dataset edgeseg reads" in result.output, result.output
    other = tmp_path / "other"
    shutil.copytree(tiny_data, other)
    import yaml

    described = yaml.safe_load((other / "dataset.yaml").read_text())  # one class fewer than the model has
    described.update(num_classes=len(palette) - 1, classes=described["classes"][:-1], palette=described["palette"][:-1])
    (other / "dataset.yaml").write_text(yaml.safe_dump(described))
    result = CliRunner().invoke(cli, ["predict", str(dynamic), str(image), "--input-size", "64x64", "--data",
                                      str(other), "--out", str(tmp_path / "bad")])
    assert result.exit_code == 2 and (f"dynamic.onnx's output says {len(palette)} classes but the dataset given for "
                                      f"class names (--data, ") in result.output, result.output
    assert not (tmp_path / "bad").exists()
    # an output wider or narrower than the model was described with is refused at the first image
    with edgeseg.Segmenter(str(dynamic), facts=edgeseg.ModelFacts(input_size=(64, 64))) as segmenter:
        segmenter.num_classes += 1
        with pytest.raises(ConfigError, match=f"outputs {len(palette)} classes, not the {len(palette) + 1}"):
            segmenter(first)


def test_model_facts_take_mean_and_std_in_either_unit():
    import edgeseg

    facts = edgeseg.ModelFacts(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    assert facts.mean == pytest.approx((123.675, 116.28, 103.53)) and facts.std == pytest.approx((58.395, 57.12, 57.375))
    assert edgeseg.ModelFacts(mean=(123.675, 116.28, 103.53)).mean == (123.675, 116.28, 103.53)


def test_info_describes_a_foreign_onnx_from_its_graph(users_model, tmp_path):
    """No sidecar: info reads the graph (like polygraphy inspect) and says what the verbs will need."""
    dynamic = tmp_path / "dynamic.onnx"
    _plain_onnx(users_model, dynamic, dynamic=True)
    result = CliRunner().invoke(cli, ["info", str(dynamic)])
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())
    assert "input input.1 float32 [n, 3, h, w]" in said and "output logits" in said
    assert "edgeseg needs --input-size HEIGHTxWIDTH (the input size is dynamic)" in said
    result = CliRunner().invoke(cli, ["info", str(dynamic), "--json"])
    summary = json.loads(result.output)
    assert summary["inputs"] == [{"name": "input.1", "dtype": "float32", "shape": ["n", 3, "h", "w"]}]
    # the export folds BatchNorm into the convolutions: a little under the PyTorch model's parameter count
    assert 0.98 < summary["params"] / sum(p.numel() for p in users_model.parameters()) <= 1.0
    assert summary["operators"]["Conv"] == sum(isinstance(m, torch.nn.Conv2d) for m in users_model.modules())
    assert not summary["quantized"] and not summary["class_map_output"] and not (tmp_path / "dynamic.onnx.json").exists()


def test_your_own_architecture_file_with_a_ddp_state_dict(tmp_path):
    code = tmp_path / "mynet.py"
    code.write_text("from torch import nn\n\n"
                    "def build(num_classes):\n"
                    "    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),\n"
                    "                         nn.Conv2d(8, num_classes, 1))\n")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                              torch.nn.Conv2d(8, 3, 1)).eval()
    path = tmp_path / "ddp.pth"
    torch.save({f"module.{k}": v for k, v in net.state_dict().items()}, path)
    loaded = load_model(path, facts=ModelFacts(arch=f"{code}:build", input_size=(32, 32)))
    assert loaded.num_classes == 3  # read from the weights
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), net(x), rtol=0, atol=0)


def test_segmenter_runs_a_state_dict_in_pytorch_with_its_facts(users_model, tiny_data, tmp_path):
    from edgeseg.errors import EdgesegError
    from edgeseg.predict.segmenter import Segmenter
    from edgeseg.runtime.preprocess import resize_label

    path = tmp_path / "weights.pth"
    torch.save(users_model.state_dict(), path)
    with pytest.raises(EdgesegError) as refused:  # Python names Python's arguments, not the CLI's
        Segmenter(path)
    assert "facts=ModelFacts(arch=NAME)" in str(refused.value) and "--arch" not in str(refused.value)
    image = resolve_split(tiny_data, "val").image(0)
    with Segmenter(path, facts=ModelFacts(arch=ARCH, input_size=(64, 64))) as segmenter:
        assert segmenter.artifact.backend == "pytorch"
        mask = segmenter(image)
    spec = ModelFacts(input_size=(64, 64)).input_spec()
    with torch.no_grad():
        expected = users_model(torch.from_numpy(preprocess(image, spec)))["out"].argmax(1)[0].numpy()
    np.testing.assert_array_equal(mask, resize_label(expected.astype(np.uint8), *image.shape[:2]))
    assert not list(tmp_path.glob("weights.pth.*"))  # nothing written beside the user's file


def test_class_count_from_a_sorted_safetensors_file(users_model, tmp_path):
    """safetensors stores names sorted: LR-ASPP's classifier.scale.1 (128 channels) then comes last."""
    from safetensors.torch import load_file, save_file

    from edgeseg.arch.torchvision_models import classes_in_state_dict

    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in users_model.state_dict().items()}, path)
    stored = load_file(path)
    assert [v for v in stored.values() if v.ndim == 4][-1].shape[0] == 128
    classes = users_model.classifier.high_classifier.out_channels
    assert classes_in_state_dict(stored) == classes
    loaded = load_model(path, facts=ModelFacts(arch=ARCH, input_size=(64, 64)))  # no --num-classes
    assert loaded.num_classes == classes and loaded.meta["source"]["format"] == "safetensors file"
