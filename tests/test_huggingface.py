"""Hugging Face models in every verb, from folders the tests make (a tiny SegFormer with random weights).

The independent reference is transformers itself: its model's logits and its own
``post_process_semantic_segmentation`` (which upsamples the logits before the argmax).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from click.testing import CliRunner  # noqa: E402

from edgeseg.cli.main import cli  # noqa: E402
from edgeseg.data.synthetic import CLASSES  # noqa: E402
from edgeseg.spec import ModelFacts  # noqa: E402

NUM_CLASSES = len(CLASSES)  # the synthetic data's classes, so the folder's model can be trained and evaluated there
MEAN, STD = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]


def tiny_segformer(num_labels: int = NUM_CLASSES, seed: int = 0):
    torch.manual_seed(seed)
    config = transformers.SegformerConfig(
        num_channels=3, num_encoder_blocks=4, depths=[1, 1, 1, 1], sr_ratios=[8, 4, 2, 1],
        hidden_sizes=[8, 16, 24, 32], num_attention_heads=[1, 1, 1, 1], decoder_hidden_size=32,
        num_labels=num_labels, id2label={i: name for i, name in enumerate(CLASSES[:num_labels])},
        label2id={name: i for i, name in enumerate(CLASSES[:num_labels])}, semantic_loss_ignore_index=255)
    return transformers.SegformerForSemanticSegmentation(config).eval()


def save_folder(model, folder: Path, size=(64, 64)) -> Path:
    model.save_pretrained(folder)
    processor = transformers.SegformerImageProcessor(size={"height": size[0], "width": size[1]}, image_mean=MEAN,
                                                     image_std=STD)
    processor.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def hf_model():
    return tiny_segformer()


@pytest.fixture(scope="module")
def hf_folder(hf_model, tmp_path_factory) -> Path:
    return save_folder(hf_model, tmp_path_factory.mktemp("hf") / "segformer-tiny")


def hf_reference_mask(model, image: np.ndarray, size=(64, 64)) -> np.ndarray:
    """transformers' own pipeline: its processor, its model, its post-processing (logits upsampled, then argmax)."""
    processor = transformers.SegformerImageProcessor(size={"height": size[0], "width": size[1]}, image_mean=MEAN,
                                                     image_std=STD)
    inputs = processor(images=image, return_tensors="pt")
    with torch.no_grad():
        outputs = model(**inputs)
    return processor.post_process_semantic_segmentation(outputs, target_sizes=[image.shape[:2]])[0].numpy()


def test_a_folder_says_its_architecture_classes_size_and_normalisation(hf_folder):
    from edgeseg.huggingface import find_folder, read_folder

    facts = read_folder(find_folder(hf_folder))
    assert facts.architecture == "SegformerForSemanticSegmentation"
    assert facts.num_classes == NUM_CLASSES and facts.classes == CLASSES
    assert facts.input_size == (64, 64) and facts.ignore_index == 255
    # transformers rescales by 1/255 then normalises in 0-1 units; edgeseg works in 0-255 units
    assert facts.mean == pytest.approx([m * 255 for m in MEAN]) and facts.std == pytest.approx([s * 255 for s in STD])


def test_a_loaded_folder_gives_hf_logits_upsampled_before_the_argmax(hf_folder, hf_model):
    from edgeseg.checkpoint import load_model

    loaded = load_model(hf_folder)  # no --arch, no --num-classes, no --input-size: the folder says them
    assert loaded.arch == "hf:SegformerForSemanticSegmentation" and loaded.num_classes == NUM_CLASSES
    assert (loaded.input_spec.height, loaded.input_spec.width) == (64, 64)
    assert loaded.dataset.class_names() == list(CLASSES)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ours = loaded.model(x)
        theirs = hf_model(x).logits
    assert theirs.shape[-1] == 16  # SegFormer's logits are at 1/4 resolution
    expected = torch.nn.functional.interpolate(theirs, size=(64, 64), mode="bilinear", align_corners=False)
    assert ours.shape == (2, NUM_CLASSES, 64, 64)
    torch.testing.assert_close(ours, expected)


def test_predict_on_a_folder_matches_transformers_post_processing(hf_folder, hf_model):
    from edgeseg.predict.segmenter import Segmenter

    image = (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)
    with Segmenter(hf_folder) as segmenter:
        mask = segmenter(image)
    reference = hf_reference_mask(hf_model, image)
    # one pixel in a thousand may flip where two classes' upsampled scores tie to float precision
    assert (mask == reference).mean() > 0.999


def test_export_upsamples_in_the_graph_and_matches_pytorch(hf_folder, hf_model, tmp_path):
    import onnx
    import onnxruntime as ort

    from edgeseg.exporting.api import export

    out = tmp_path / "segformer.onnx"
    sidecar = export(str(hf_folder), str(out))
    assert sidecar["model"]["arch"] == "hf:SegformerForSemanticSegmentation"
    assert sidecar["dataset"]["classes"] == list(CLASSES)
    graph = onnx.load(str(out)).graph
    assert graph.node[-1].op_type == "Resize"  # the upsampling is the graph's last step, before any argmax
    x = np.random.default_rng(1).standard_normal((1, 3, 64, 64)).astype(np.float32)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    logits = session.run(None, {session.get_inputs()[0].name: x})[0]
    with torch.no_grad():
        expected = torch.nn.functional.interpolate(hf_model(torch.from_numpy(x)).logits, size=(64, 64),
                                                   mode="bilinear", align_corners=False).numpy()
    np.testing.assert_allclose(logits, expected, atol=1e-4)


def test_prune_a_folder_and_the_checkpoint_rebuilds_without_it(hf_folder, tmp_path):
    import shutil

    from edgeseg.checkpoint import load_model
    from edgeseg.pruning.api import prune

    folder = shutil.copytree(hf_folder, tmp_path / "copy")
    out = tmp_path / "pruned.pt"
    sidecar = prune(str(folder), str(out), ratio=0.5)
    shutil.rmtree(folder)  # the pruned checkpoint needs neither the folder nor transformers' download
    loaded = load_model(out)
    assert loaded.arch == "hf:SegformerForSemanticSegmentation"
    hidden = {name: m.out_features for name, m in loaded.model.named_modules()
              if isinstance(m, torch.nn.Linear) and name.endswith("mlp.fc1")}
    # every Mix-FFN's hidden width halved (4 x the stage width before); the residual stream keeps its widths
    assert hidden == {f"net.segformer.stages.{i}.blocks.0.mlp.fc1": 2 * w for i, w in enumerate([8, 16, 24, 32])}
    residual = {name: m.out_features for name, m in loaded.model.named_modules()
                if isinstance(m, torch.nn.Linear) and name.endswith(("mlp.fc2", "attention.o_proj", "output.dense"))}
    assert sorted(set(residual.values())) == [8, 16, 24, 32] and len(residual) >= 4
    assert sidecar["model"]["params"] < sidecar["prune"]["params_before"]
    assert loaded.model(torch.zeros(1, 3, 64, 64)).shape == (1, NUM_CLASSES, 64, 64)


def test_a_folder_distils_as_teacher_and_as_student(hf_folder, tiny_data, tmp_path):
    from edgeseg.checkpoint import load_model
    from edgeseg.distillation.api import distill

    as_teacher = tmp_path / "from-hf.pt"
    distill(str(hf_folder), str(tiny_data), str(as_teacher), student="unet", student_args={"base_channels": 4,
            "encoder_depth": 2}, epochs=1, batch_size=4, tensorboard=False)
    assert load_model(as_teacher).arch == "unet"
    as_student = tmp_path / "hf-student.pt"
    distill(str(hf_folder), str(tiny_data), str(as_student), student=str(hf_folder), epochs=1, batch_size=4,
            tensorboard=False)
    student = load_model(as_student)
    assert student.arch == "hf:SegformerForSemanticSegmentation"
    original = load_model(hf_folder).model
    trained = dict(student.model.named_parameters())
    # the student started from the folder's weights and was trained: close to them, not equal, not random
    first = "net.segformer.stages.0.patch_embeddings.proj.weight"
    before = dict(original.named_parameters())[first]
    assert not torch.equal(trained[first], before)
    assert (trained[first] - before).abs().max() < 0.05 * before.abs().max() + 0.05


def test_bench_and_eval_run_a_folder_in_pytorch_with_its_sizes(hf_folder, hf_model, tiny_data, tmp_path):
    from edgeseg.arch.profile import count_params
    from edgeseg.benchmark.api import bench_one
    from edgeseg.data.dataset import resolve_split
    from edgeseg.metrics import confusion_matrix, summarize

    split = resolve_split(tiny_data, "val")
    result = bench_one(hf_folder, split, warmup=1, iters=2)
    assert result["backend"] == "pytorch"
    assert result["params"] == sum(p.numel() for p in hf_model.parameters()) == count_params(hf_model)
    weights = (hf_folder / "model.safetensors").stat().st_size
    assert weights / 1e6 < result["size_mb"] < (weights + 20000) / 1e6  # the weights and the two small JSON files
    # mIoU against transformers' own masks, counted here
    confusion = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64)
    for index in range(len(split)):
        image, label = split.image(index), split.label(index)
        confusion += confusion_matrix(hf_reference_mask(hf_model, image), label, NUM_CLASSES, split.info.ignore_index)
    assert result["miou"] == pytest.approx(summarize(confusion, list(CLASSES))["miou"], abs=0.05)


def test_a_hub_cache_repository_loads_offline_by_its_id(hf_folder, tmp_path, monkeypatch):
    import shutil

    from edgeseg.checkpoint import load_model

    repo = tmp_path / "hub" / "models--someone--segformer-tiny"
    shutil.copytree(hf_folder, repo / "snapshots" / "0123abc")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abc")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    by_id = load_model("someone/segformer-tiny")
    by_folder = load_model(repo)
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(by_id.model(x), by_folder.model(x))
    assert by_id.arch == "hf:SegformerForSemanticSegmentation"


def test_the_weights_file_alone_is_read_with_its_folder(hf_folder):
    from edgeseg.checkpoint import load_model

    loaded = load_model(hf_folder / "model.safetensors")  # a user pointing at the file, not the folder
    assert loaded.arch == "hf:SegformerForSemanticSegmentation" and loaded.num_classes == NUM_CLASSES


def test_a_safetensors_without_config_reads_its_classes_from_the_classifier(hf_model, tmp_path):
    from safetensors.torch import save_file

    from edgeseg.arch.torchvision_models import classes_in_state_dict

    state = {k: v.contiguous() for k, v in hf_model.state_dict().items()}
    save_file(state, tmp_path / "weights.safetensors")
    from safetensors.torch import load_file

    stored = load_file(tmp_path / "weights.safetensors")
    last_4d = [v for k, v in stored.items() if v.ndim == 4][-1]
    assert last_4d.shape[0] != NUM_CLASSES  # file order is sorted names: the last 4-D tensor is not the classifier
    assert classes_in_state_dict(stored) == NUM_CLASSES


def test_an_image_classifier_folder_is_refused_in_one_sentence(tmp_path):
    config = transformers.SegformerConfig(hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1],
                                          num_attention_heads=[1, 1, 1, 1], num_labels=3)
    transformers.SegformerForImageClassification(config).save_pretrained(tmp_path / "classifier")
    from edgeseg.checkpoint import load_model
    from edgeseg.errors import ConfigError

    with pytest.raises(ConfigError, match="SegformerForImageClassification, which does not output per-pixel"):
        load_model(tmp_path / "classifier")
    result = CliRunner().invoke(cli, ["export", str(tmp_path / "classifier"), "--out", str(tmp_path / "c.onnx")])
    assert result.exit_code == 2 and "does not output per-pixel class logits" in result.output
    assert not (tmp_path / "c.onnx").exists()


def test_a_pickled_hf_model_runs_with_trust_and_gives_full_size_logits(tmp_path):
    from edgeseg.checkpoint import load_model
    from edgeseg.errors import UntrustedFileError

    hf_model = tiny_segformer(seed=1)
    path = tmp_path / "whole.pt"
    torch.save(hf_model, path)  # before its first forward: transformers 5 then adds hooks that do not pickle
    with pytest.raises(UntrustedFileError, match="trust_checkpoint=True"):  # Python is told Python's argument
        load_model(path)
    loaded = load_model(path, trust_checkpoint=True)
    x = torch.randn(1, 3, 64, 64)
    expected = torch.nn.functional.interpolate(hf_model(x).logits, size=(64, 64), mode="bilinear",
                                               align_corners=False)
    torch.testing.assert_close(loaded.model(x), expected)
    assert loaded.num_classes == NUM_CLASSES


def test_cli_takes_a_folder_without_arch_and_refuses_a_contradicting_one(hf_folder, tmp_path):
    out = tmp_path / "m.onnx"
    ok = CliRunner().invoke(cli, ["export", str(hf_folder), "--out", str(out)])
    assert ok.exit_code == 0, ok.output
    assert json.loads(out.with_name("m.onnx.json").read_text())["model"]["arch"] == \
        "hf:SegformerForSemanticSegmentation"
    bad = CliRunner().invoke(cli, ["export", str(hf_folder), "--arch", "unet", "--out", str(tmp_path / "x.onnx")])
    assert bad.exit_code == 2
    assert "is a SegformerForSemanticSegmentation (its config.json says so); drop --arch unet" in bad.output
    assert not (tmp_path / "x.onnx").exists()


def test_a_folder_calibrates_to_int8_that_tensorrt_parses(hf_folder, tiny_data, tmp_path):
    import onnxruntime as ort

    from edgeseg.engine.trt_rules import check_for_tensorrt
    from edgeseg.exporting.api import export
    from edgeseg.quant.api import calibrate

    onnx_path = tmp_path / "segformer.onnx"
    export(str(hf_folder), str(onnx_path))
    calibrate(str(onnx_path), str(tiny_data), num=4, method="minmax", bias_correction=False)
    int8 = onnx_path.with_name("segformer.int8.onnx")
    meta = json.loads(int8.with_name(int8.name + ".json").read_text())
    assert meta["precision"] == "int8" and meta["model"]["arch"] == "hf:SegformerForSemanticSegmentation"
    for version in ("10.3.0", "11.1.0"):  # 8.5 has no LayerNormalization at opset 17: export with --opset 16 there
        assert check_for_tensorrt(str(int8), version) == [], version
    x = np.random.default_rng(2).standard_normal((1, 3, 64, 64)).astype(np.float32)
    run = [ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]) for p in (onnx_path, int8)]
    fp32, quantised = (s.run(None, {s.get_inputs()[0].name: x})[0] for s in run)
    assert (fp32.argmax(1) == quantised.argmax(1)).mean() > 0.8  # INT8 of a random tiny model: most pixels agree


def test_a_users_builder_returning_a_transformers_model_prunes(tmp_path):
    from edgeseg.checkpoint import load_model
    from edgeseg.pruning.api import prune

    builder = tmp_path / "my_segformer.py"
    builder.write_text(
        "import transformers\n\n\n"
        "def build(num_classes):\n"
        "    config = transformers.SegformerConfig(hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1],\n"
        "        num_attention_heads=[1, 1, 1, 1], decoder_hidden_size=32, num_labels=num_classes)\n"
        "    return transformers.SegformerForSemanticSegmentation(config)\n")
    model = tiny_segformer(num_labels=3, seed=2)
    torch.save(model.state_dict(), tmp_path / "weights.pth")
    facts = ModelFacts(arch=f"{builder}:build", input_size=(64, 64))
    loaded = load_model(tmp_path / "weights.pth", facts=facts)
    x = torch.randn(1, 3, 64, 64)
    expected = torch.nn.functional.interpolate(model(x).logits, size=(64, 64), mode="bilinear", align_corners=False)
    torch.testing.assert_close(loaded.model(x), expected)
    out = tmp_path / "pruned.pt"
    prune(str(tmp_path / "weights.pth"), str(out), ratio=0.5, facts=facts)
    pruned = load_model(out, trust_checkpoint=True)  # rebuilding runs the user's file again: trusted
    assert pruned.model(x).shape == (1, 3, 64, 64)


def test_info_on_a_folder_says_what_its_config_says_and_counts_the_model(hf_folder, hf_model):
    from edgeseg.arch.profile import count_macs
    from edgeseg.artifact_info import info
    from edgeseg.checkpoint import load_model

    summary = info(str(hf_folder), as_json=True)
    assert summary["arch"] == "hf:SegformerForSemanticSegmentation" and summary["classes"] == list(CLASSES)
    assert summary["input"]["height"] == 64 and summary["input"]["mean"] == pytest.approx([m * 255 for m in MEAN])
    assert summary["params"] == sum(p.numel() for p in hf_model.parameters())
    assert summary["macs"] == count_macs(load_model(hf_folder).model, 64, 64) > 0
    files = sum(f.stat().st_size for f in hf_folder.iterdir())
    assert summary["size_mb"] == round(files / 1e6, 3)
    result = CliRunner().invoke(cli, ["info", str(hf_folder)])
    assert result.exit_code == 0 and "Hugging Face folder: SegformerForSemanticSegmentation" in result.output


def write_folder(folder: Path, config: dict, processor: dict = None, weights: str = "model.safetensors") -> Path:
    """A folder as transformers writes it, from hand-written JSON (no model needed to read its facts)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    if processor is not None:
        (folder / "preprocessor_config.json").write_text(json.dumps(processor))
    (folder / weights).write_bytes(b"0")
    return folder


MOBILEVIT = {"architectures": ["MobileViTForSemanticSegmentation"], "model_type": "mobilevit",
             "id2label": {"0": "background", "1": "person"}}


@pytest.mark.parametrize("processor, size, mean, std, color", [
    # transformers 5 writes MobileViT's image_mean/std but no do_normalize: MobileViT only rescales, to BGR, after
    # a centre crop of crop_size
    ({"image_processor_type": "MobileViTImageProcessor", "crop_size": {"height": 256, "width": 256},
      "size": {"shortest_edge": 288}, "image_mean": [0.5] * 3, "image_std": [0.5] * 3},
     (256, 256), [0.0] * 3, [255.0] * 3, "BGR"),
    # the older feature-extractor form: integers, and every switch spelled out
    ({"feature_extractor_type": "MobileViTFeatureExtractor", "crop_size": 512, "size": 544, "do_center_crop": True,
      "do_flip_channel_order": False}, (512, 512), [0.0] * 3, [255.0] * 3, "RGB"),
    # BEiT: a crop size it does not use, and its own rescale factor and mean/std
    ({"image_processor_type": "BeitImageProcessor", "size": {"height": 640, "width": 320},
      "crop_size": {"height": 224, "width": 224}, "do_center_crop": False, "rescale_factor": 0.5,
      "image_mean": [0.5, 0.25, 1.0], "image_std": [0.5, 0.5, 0.5]}, (640, 320), [1.0, 0.5, 2.0], [1.0] * 3, "RGB"),
    # no processor at all: ImageNet's normalisation, the size from --input-size
    (None, None, [123.675, 116.28, 103.53], [58.395, 57.12, 57.375], "RGB"),
])
def test_the_image_processor_says_size_normalisation_and_channel_order(tmp_path, processor, size, mean, std, color):
    from edgeseg.huggingface import read_folder

    facts = read_folder(write_folder(tmp_path / "m", MOBILEVIT, processor))
    assert facts.input_size == size and facts.color == color
    assert list(facts.mean) == pytest.approx(mean) and list(facts.std) == pytest.approx(std)
    assert facts.classes == ("background", "person") and facts.num_classes == 2


def test_the_hub_cache_picks_the_snapshot_refs_main_names_and_ids_may_hold_dots(tmp_path, monkeypatch):
    import os
    import time

    from edgeseg.huggingface import default_output, display_name, find_folder

    repo = tmp_path / "hub" / "models--apple--mobilevitv2-1.0-voc-deeplabv3"
    old = write_folder(repo / "snapshots" / "aaa", MOBILEVIT)
    new = write_folder(repo / "snapshots" / "bbb", MOBILEVIT)
    os.utime(old, (time.time() + 100, time.time() + 100))  # the newest folder is not the one refs/main names
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("bbb\n")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.chdir(tmp_path)
    assert find_folder("apple/mobilevitv2-1.0-voc-deeplabv3") == new
    assert find_folder(repo) == new and display_name(new) == "mobilevitv2-1.0-voc-deeplabv3"
    assert default_output(new, ".onnx") == tmp_path / "mobilevitv2-1.0-voc-deeplabv3.onnx"  # not in the cache
    assert default_output(tmp_path / "x-1.0-voc", ".onnx") == tmp_path / "x-1.0-voc.onnx"  # dots kept
    assert find_folder("apple/not-cached") is None and find_folder("missing.pt") is None


def test_only_a_config_transformers_wrote_makes_a_folder(tmp_path):
    from edgeseg.huggingface import find_folder

    timm_like = write_folder(tmp_path / "timm", {"architecture": "resnet18", "num_classes": 3})
    assert find_folder(timm_like) is None
    assert find_folder(write_folder(tmp_path / "bin", MOBILEVIT, weights="pytorch_model.bin")) == tmp_path / "bin"


def test_a_weights_file_beside_another_tools_config_is_a_state_dict(tmp_path):
    from safetensors.torch import save_file

    from edgeseg.checkpoint import load_model

    model = tiny_segformer(num_labels=3, seed=3)
    folder = tmp_path / "smp-export"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"encoder_name": "resnet18", "classes": 3}))  # smp's, not HF's
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, folder / "model.safetensors")
    builder = tmp_path / "build.py"
    builder.write_text("import transformers\n\n\ndef build(num_classes):\n"
                       "    return transformers.SegformerForSemanticSegmentation(transformers.SegformerConfig(\n"
                       "        hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1], num_attention_heads=[1, 1, 1, 1],\n"
                       "        decoder_hidden_size=32, num_labels=num_classes))\n")
    loaded = load_model(folder / "model.safetensors", facts=ModelFacts(arch=f"{builder}:build", input_size=(64, 64)))
    assert loaded.meta["source"]["format"] == "safetensors file" and loaded.num_classes == 3


def test_a_pickled_pytorch_model_bin_is_refused_before_transformers_reads_it(hf_folder, tmp_path):
    import shutil

    from edgeseg.checkpoint import load_model
    from edgeseg.errors import UntrustedFileError

    folder = shutil.copytree(hf_folder, tmp_path / "bin-only")
    (folder / "model.safetensors").unlink()
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save({"weight": Payload()}, folder / "pytorch_model.bin")
    with pytest.raises(UntrustedFileError, match="pytorch_model.bin holds pickled Python objects"):
        load_model(folder)
    assert not marker.exists()


def test_a_missing_model_path_is_one_sentence_in_every_verb(tmp_path):
    for verb in (["bench", "missing.pt", "--iters", "1"], ["eval", "missing.pt", "--data", str(tmp_path)],
                 ["export", "missing.pt"], ["info", "missing.pt"]):
        result = CliRunner().invoke(cli, verb)
        assert result.exit_code == 2 and "missing.pt does not exist" in result.output, (verb, result.output)
        assert "Traceback" not in result.output


def test_an_architecture_torch_onnx_cannot_write_is_one_sentence(tmp_path, capfd):
    config = transformers.BeitConfig(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=37,
                                     image_size=64, patch_size=16, out_indices=[0, 1, 2, 3], pool_scales=[1, 2],
                                     auxiliary_channels=8, num_labels=3, use_auxiliary_head=False,
                                     use_relative_position_bias=True)
    transformers.BeitForSemanticSegmentation(config).save_pretrained(tmp_path / "beit")
    transformers.BeitImageProcessor(size={"height": 64, "width": 64}).save_pretrained(tmp_path / "beit")
    capfd.readouterr()
    result = CliRunner().invoke(cli, ["export", str(tmp_path / "beit"), "--out", str(tmp_path / "b.onnx")])
    assert result.exit_code == 2 and "torch.onnx could not export this model at 64x64, opset 17" in result.output
    assert "exports only with a fixed batch" in result.output and not (tmp_path / "b.onnx").exists()
    native = capfd.readouterr()
    assert native.out.count("\n") < 5  # the exporter's TorchScript dump is not printed
    refused = CliRunner().invoke(cli, ["prune", str(tmp_path / "beit"), "--out", str(tmp_path / "p.pt")])
    assert refused.exit_code == 2 and "edgeseg does not prune BeitForSemanticSegmentation" in refused.output


def test_a_folders_size_is_what_it_loads(hf_folder, tmp_path):
    import shutil

    from edgeseg.runtime.loader import size_bytes

    folder = shutil.copytree(hf_folder, tmp_path / "snapshot")
    (folder / "tf_model.h5").write_bytes(b"0" * 5000)  # a hub repository's other frameworks' copies
    (folder / "flax_model.msgpack").write_bytes(b"0" * 5000)
    (folder / "pytorch_model.bin").write_bytes(b"0" * 5000)  # transformers reads the safetensors
    loaded = [folder / n for n in ("model.safetensors", "config.json", "preprocessor_config.json")]
    assert size_bytes(folder) == sum(f.stat().st_size for f in loaded)
