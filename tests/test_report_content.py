"""`edgeseg report` measured against references computed here: IoU counted with numpy from labels the test
wrote, latencies the test fed in (a stand-in for the timer), the report's tables against its JSON, and
the PNG figures' sizes and pixels.

The stages are hand-made 1x1-convolution ONNX models whose class is a known function of one colour
channel, ``round(7 * C / 255)``: no training, so each test runs in about a second.
"""
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from edgeseg.errors import ConfigError, InputFileError
from edgeseg.report import api as report_api
from edgeseg.report import figures, measure
from edgeseg.report.run_folder import MANIFEST, RunFolder, Stage, read_run_folder, write_manifest

SIZE = 16
CLASSES = 8
MEAN = (123.675, 116.28, 103.53)  # ImageNet's, in 0-255 units: what edgeseg normalises with by default
STD = (58.395, 57.12, 57.375)
NAMES = ["sky", "building", "road", "sidewalk", "tree", "car", "person", "pole"]
PALETTE = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255), (255, 0, 255), (128, 0, 0),
           (0, 128, 0)]


def _ramp_onnx(path: Path, channel: int) -> Path:
    """Logits c * 7 * C/255 - c^2/2 of channel ``channel`` (before normalising): class round(7 * C / 255)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    k = np.arange(CLASSES, dtype=np.float64)
    weight = np.zeros((CLASSES, 3, 1, 1), np.float32)
    weight[:, channel, 0, 0] = k * 7 * STD[channel] / 255
    bias = (k * 7 * MEAN[channel] / 255 - k * k / 2).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w", "b"], ["logits"])], "ramp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", CLASSES, SIZE, SIZE])],
        [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(bias, "b")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def _level(cls: int) -> int:
    return int(round(255 * cls / 7))


def _scene(index: int):
    """Image ``index``: red bands in classes (index + b) % 8, green bands in classes (3 * b + index) % 8."""
    image = np.zeros((SIZE, SIZE, 3), np.uint8)
    for band in range(4):
        columns = slice(4 * band, 4 * band + 4)
        image[:, columns, 0] = _level((index + band) % 8)
        image[:, columns, 1] = _level((3 * band + index) % 8)
    return image


def _by_channel(image: np.ndarray, channel: int) -> np.ndarray:
    return np.rint(7 * image[:, :, channel].astype(np.float64) / 255).astype(np.int64)


def _iou(predictions, labels, ignore=255):
    """Per-class IoU (%) from one confusion matrix over all images, None for a class never seen."""
    confusion = np.zeros((CLASSES, CLASSES), np.int64)
    for prediction, label in zip(predictions, labels):
        keep = label != ignore
        np.add.at(confusion, (label[keep], prediction[keep]), 1)
    tp = np.diag(confusion).astype(np.float64)
    union = confusion.sum(0) + confusion.sum(1) - tp
    return {NAMES[c]: (None if union[c] == 0 else 100.0 * tp[c] / union[c]) for c in range(CLASSES)}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run folder with two stages (red-channel and green-channel models) and 5 labelled val images whose
    labels are the red model's classes, with a strip of ignored pixels."""
    root = tmp_path_factory.mktemp("report")
    data = root / "data"
    for sub in ("images", "labels"):
        (data / "val" / sub).mkdir(parents=True)
    labels = []
    for index in range(5):
        image = _scene(index)
        label = _by_channel(image, 0).astype(np.uint8)
        label[:2, :] = 255
        Image.fromarray(image).save(data / "val" / "images" / f"{index}.png")
        Image.fromarray(label).save(data / "val" / "labels" / f"{index}.png")
        labels.append(label)
    (data / "dataset.yaml").write_text(yaml.safe_dump({"name": "bands", "num_classes": CLASSES, "ignore_index": 255,
                                                       "classes": NAMES, "palette": [list(c) for c in PALETTE]}))
    folder = root / "run"
    folder.mkdir()
    _ramp_onnx(folder / "red.onnx", 0)
    _ramp_onnx(folder / "green.onnx", 1)
    _ramp_onnx(folder / "blue.onnx", 2)
    write_manifest(folder, "bands run", [Stage("red", "red.onnx"), Stage("green", "green.onnx"),
                                         Stage("blue", "blue.onnx")], data=str(data), notes=["made by a test"])
    images = [_scene(i) for i in range(5)]
    expected = {name: _iou([_by_channel(i, c) for i in images], labels) for c, name in enumerate(("red", "green",
                                                                                                 "blue"))}
    return folder, data, labels, expected


class _Timer:
    """Stands in for time_inference: records (stage's batch id, warmup, iters) and answers known latencies."""

    def __init__(self, opened_by_batch=None):
        self.calls = []

    def __call__(self, runner, batch, warmup=10, iters=50):
        self.calls.append((runner, batch.shape, warmup, iters, np.array(batch)))
        round_index = sum(1 for c in self.calls if c[0] is runner) - 1
        base = 10.0 if self.calls[0][0] is runner else 20.0  # the first stage timed: 10 ms a round, the others 20
        host = [base * (round_index + 1) + i + 0.0000123 for i in range(iters)]  # past 4 decimals: rounding shows
        return host, [h / 2 for h in host]


class _Spy:
    """Wraps a figure function, keeping each call's keyword arguments (and the path)."""

    def __init__(self, function):
        self.function, self.calls = function, []

    def __call__(self, path, *args, **kwargs):
        self.calls.append((Path(path), args, kwargs))
        return self.function(path, *args, **kwargs)


def _size(inches_wide: float, inches_high: float, dpi: int = 110):
    """The pixel size matplotlib saves a figure of that many inches at: each side truncated."""
    return int(inches_wide * dpi + 1e-6), int(inches_high * dpi + 1e-6)


def _colour_pixels(path: Path, colour) -> int:
    """How many pixels of the PNG are exactly ``colour``."""
    rgb = np.asarray(Image.open(path).convert("RGB")).astype(np.int32)
    packed = (rgb[:, :, 0] << 16) | (rgb[:, :, 1] << 8) | rgb[:, :, 2]
    return int(np.count_nonzero(packed == ((colour[0] << 16) | (colour[1] << 8) | colour[2])))


def _stub_figures(monkeypatch):
    """Figures not under test: an empty PNG file each, written where the report asks (rendering takes ~0.5 s)."""
    import edgeseg.plots

    def stub(path, *args, **kwargs):
        Path(path).write_bytes(b"\x89PNG\r\n\x1a\n")
        return Path(path)

    for module, name in ((edgeseg.plots, "latency_accuracy_png"), (figures, "per_class_iou_png"),
                         (figures, "mask_grid_png")):
        monkeypatch.setattr(module, name, stub)


def test_report_measures_each_stage_against_counted_iou_and_fed_latencies(run, tmp_path, monkeypatch):
    import edgeseg.plots

    folder, data, labels, expected = run
    timer = _Timer()
    monkeypatch.setattr(measure, "time_inference", timer)
    said = []
    monkeypatch.setattr(report_api, "say", said.append)
    grid = _Spy(figures.mask_grid_png)  # drawn: its pixels are checked below
    _stub_figures(monkeypatch)  # the other two are drawn in the tests of figures
    pareto = _Spy(edgeseg.plots.latency_accuracy_png)
    per_class = _Spy(figures.per_class_iou_png)
    monkeypatch.setattr(edgeseg.plots, "latency_accuracy_png", pareto)
    monkeypatch.setattr(figures, "per_class_iou_png", per_class)
    monkeypatch.setattr(figures, "mask_grid_png", grid)
    shown = []
    import edgeseg.benchmark.table

    monkeypatch.setattr(edgeseg.benchmark.table, "print_table", lambda rows, title=None: shown.append((rows, title)))
    import contextlib

    import edgeseg.runtime.loader

    progress = []

    @contextlib.contextmanager
    def progress_bar(description, total):
        counted = [0]
        yield lambda n=1, **fields: counted.__setitem__(0, counted[0] + n)
        progress.append((description, total, counted[0]))

    monkeypatch.setattr(measure, "progress_bar", progress_bar)
    described, opened_with, evaluated = [], [], []
    real_describe, real_open, real_accuracy = measure.describe, measure.open_runner, measure.accuracy_pass
    monkeypatch.setattr(measure, "describe", lambda path, trust: described.append((Path(path), trust))
                        or real_describe(path, trust))
    monkeypatch.setattr(measure, "open_runner", lambda *args: opened_with.append(args) or real_open(*args))
    monkeypatch.setattr(measure, "accuracy_pass", lambda runner, artifact, split, description: evaluated.append(
        description) or real_accuracy(runner, artifact, split, description))
    measured_with = []
    real_measure = measure.measure_stages
    monkeypatch.setattr(measure, "measure_stages", lambda artifacts, split, **kwargs: measured_with.append(
        (list(artifacts), kwargs)) or real_measure(artifacts, split, **kwargs))
    out = tmp_path / "out" / "nested"
    document = report_api.report(str(folder), out=str(out), rounds=3, iters_per_round=4, warmup=5, mask_images=2,
                                 threads=3)

    rows = document["stages"]
    assert [r["stage"] for r in rows] == ["red", "green", "blue"]
    assert [r["artifact"] for r in rows] == ["red.onnx", "green.onnx", "blue.onnx"]
    assert all(r["num_images"] == 5 for r in rows)
    for row in rows:
        counted = expected[row["stage"]]
        assert set(row["per_class_iou"]) == set(NAMES)
        for name in NAMES:
            if counted[name] is None:
                assert row["per_class_iou"][name] is None
            else:
                assert row["per_class_iou"][name] == pytest.approx(counted[name], abs=1e-3), (row["stage"], name)
        present = [v for v in counted.values() if v is not None]
        assert row["miou"] == pytest.approx(sum(present) / len(present), abs=1e-3)
        assert "confusion" not in row
    assert rows[0]["miou"] == pytest.approx(100.0) and rows[1]["miou"] < 50
    for row in rows:  # what the artifact itself is, as bench says it
        assert (row["backend"], row["precision"], row["device"], row["input"], row["batch"], row["output"]) == (
            "onnxruntime", "fp32", "cpu", [SIZE, SIZE], 1, "logits")
        assert row["size_mb"] == round((folder / row["artifact"]).stat().st_size / 1e6, 4)
        assert row["params"] == CLASSES * 3 + CLASSES  # the 1x1 convolution's weights and biases

    # latency: the stages take turns, round after round; the first round warms up fully, later ones once
    runners = [c[0] for c in timer.calls[:3]]
    assert len({id(r) for r in runners}) == 3
    assert [(runners.index(c[0]), c[2], c[3]) for c in timer.calls] == [
        (0, 5, 4), (1, 5, 4), (2, 5, 4), (0, 1, 4), (1, 1, 4), (2, 1, 4), (0, 1, 4), (1, 1, 4), (2, 1, 4)]
    # every call times the first image, normalised with ImageNet's mean and std
    reference = ((_scene(0).astype(np.float64) - MEAN) / STD).transpose(2, 0, 1)[None]
    for call in timer.calls:
        np.testing.assert_allclose(call[4], reference, atol=1e-4)
    assert progress == [("latency, stages interleaved", 9, 9)]
    assert [d for d in described if d[0].suffix == ".onnx"][-3:] == [(folder / n, False) for n in
                                                                     ("red.onnx", "green.onnx", "blue.onnx")]
    assert [o[1:] for o in opened_with] == [("cpu", 3, False, False, False)] * 3
    assert evaluated == ["eval red", "eval green", "eval blue"]
    for row, base in zip(rows, (10.0, 20.0, 20.0)):
        host = [base * (r + 1) + i + 0.0000123 for r in range(3) for i in range(4)]
        assert row["iterations"] == 12
        assert row["round_p50_ms"] == [round(float(np.median(host[i:i + 4])), 4) for i in (0, 4, 8)]
        assert row["latency_ms"]["p50"] == round(float(np.percentile(host, 50)), 4)
        assert row["compute_latency_ms"]["max"] == round(max(host) / 2, 4)
    # the paired speed-up of green over red is each round's ratio of p50s: 11.5/21.5, 21.5/41.5, 31.5/61.5
    ratios = [(11.5 + 0.0000123) / (21.5 + 0.0000123), (21.5 + 0.0000123) / (41.5 + 0.0000123),
              (31.5 + 0.0000123) / (61.5 + 0.0000123)]
    assert rows[1]["speedup_vs_first"] == round(float(np.median(ratios)), 3)

    written = json.loads((out / "report.json").read_text())
    assert written["stages"] == json.loads(json.dumps(rows))
    assert written["title"] == "bands run"
    assert written["dataset"] == {"name": "bands", "root": str(data / "val"), "num_images": 5, "num_classes": 8} or \
        written["dataset"] == {"name": "bands", "root": str(data), "num_images": 5, "num_classes": 8}
    assert written["timing"] == {"rounds": 3, "iters_per_round": 4, "warmup": 5, "batch": 1, "device": "cpu"}
    root = written["dataset"]["root"]
    assert written["notes"] == [
        "made by a test",
        f"mIoU over all 5 images of {root}, predictions resized to the labels' native size.",
        "Latency: batch 1 on cpu, 3 rounds x 4 calls with the stages taking turns (after 5 warm-up calls each), so "
        "speed-ups compare like with like: each is the median over rounds of that round's ratio of p50s, with the "
        "lowest and highest round's in brackets (a wide bracket means the machine was too noisy to tell)."]
    assert written["figures"] == {"latency vs mIoU": "latency_vs_miou.png", "per-class IoU": "per_class_iou.png",
                                  "predicted masks": "masks.png"}

    # the Markdown's per-class table says what the JSON measured, to one decimal
    markdown = (out / "report.md").read_text()
    for row in rows:
        values = " | ".join("-" if row["per_class_iou"][n] is None else f"{row['per_class_iou'][n]:.1f}"
                            for n in NAMES)
        assert f"| {row['stage']} | {values} |" in markdown
    assert "| stage | " + " | ".join(NAMES) + " |" in markdown

    # the figures: what each was given, and their pixels
    assert pareto.calls[0][0] == out / "latency_vs_miou.png"
    assert pareto.calls[0][1][0] == {r["stage"]: [{"x": r["latency_ms"]["p50"], "y": r["miou"]}] for r in rows}
    assert pareto.calls[0][2] == {"title": "bands run: mIoU vs latency per stage (cpu, batch 1)"}
    assert per_class.calls[0][0] == out / "per_class_iou.png"
    assert per_class.calls[0][2] == {"title": "bands run: per-class IoU"}
    assert [r["stage"] for r in per_class.calls[0][1][0]] == ["red", "green", "blue"]
    assert per_class.calls[0][1][0][1]["per_class_iou"] == rows[1]["per_class_iou"]
    assert measured_with == [(["red", "green", "blue"], dict(
        rounds=3, iters_per_round=4, warmup=5, mask_images=2, device="cpu", threads=3, trust_checkpoint=False,
        trust_engine=False, allow_engine_host_code=False))]
    assert grid.calls[0][0] == out / "masks.png"
    assert grid.calls[0][2] == {"palette": PALETTE, "class_names": NAMES, "title": "red vs blue vs ground truth"}
    masks = grid.calls[0][1][0]
    assert masks["indices"] == [0, 4] and list(masks["predictions"]) == ["red", "blue"]
    for position, index in enumerate((0, 4)):
        np.testing.assert_array_equal(masks["images"][position], _scene(index))
        np.testing.assert_array_equal(masks["labels"][position], labels[index])
        np.testing.assert_array_equal(masks["predictions"]["red"][position], _by_channel(_scene(index), 0))
        np.testing.assert_array_equal(masks["predictions"]["blue"][position], _by_channel(_scene(index), 2))
    for name in written["figures"].values():
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for colour in PALETTE:  # each class is in some label and prediction: its colour is painted in the grid
        assert _colour_pixels(out / "masks.png", colour) > 50, colour

    assert said == [f"Measuring 3 stages on 5 images of {root}",
                    f"Wrote {out / 'report.md'}, {out / 'report.json'} and 3 figures"]
    assert [([r["stage"] for r in table], title) for table, title in shown] == [(["red", "green", "blue"], "bands run")]
    assert not (folder / "report.md").exists()


def test_report_defaults_write_into_the_run_folder_and_options_bound_the_work(run, tmp_path, monkeypatch):
    import shutil

    folder, data, labels, expected = run
    copy = tmp_path / "run"
    shutil.copytree(folder, copy)
    _stub_figures(monkeypatch)
    monkeypatch.setattr(measure, "time_inference", _Timer())
    said = []
    monkeypatch.setattr(report_api, "say", said.append)
    shown = []
    import edgeseg.benchmark.table

    monkeypatch.setattr(edgeseg.benchmark.table, "print_table", lambda rows, title=None: shown.append(title))
    document = report_api.report(str(copy), rounds=1, iters_per_round=1, warmup=0, mask_images=0, max_images=2,
                                 show=False)
    assert shown == []
    assert (copy / "report.md").is_file() and (copy / "report.json").is_file()
    assert sorted(p.name for p in copy.glob("*.png")) == ["latency_vs_miou.png", "per_class_iou.png"]
    assert document["figures"] == {"latency vs mIoU": "latency_vs_miou.png", "per-class IoU": "per_class_iou.png"}
    assert all(row["num_images"] == 2 for row in document["stages"]) and document["dataset"]["num_images"] == 2
    two = _iou([_by_channel(_scene(i), 1) for i in range(2)], labels[:2])
    for name in NAMES:
        got = document["stages"][1]["per_class_iou"][name]
        assert got is None if two[name] is None else got == pytest.approx(two[name], abs=1e-3)
    assert said[-1] == f"Wrote {copy / 'report.md'}, {copy / 'report.json'} and 2 figures"
    # max_images past the split's size: all of it
    document = report_api.report(str(copy), out=str(tmp_path / "all"), rounds=1, iters_per_round=1, warmup=0,
                                 mask_images=0, max_images=50, show=False)
    assert document["dataset"]["num_images"] == 5


@pytest.mark.parametrize("option", [dict(rounds=0), dict(iters_per_round=0), dict(warmup=-1), dict(mask_images=-1)])
def test_report_refuses_options_out_of_range(run, option):
    folder = run[0]
    with pytest.raises(ConfigError) as error:
        report_api.report(str(folder), show=False, **option)
    assert str(error.value) == ("--rounds and --iters must be at least 1; --warmup and --masks cannot be negative.")


def test_report_needs_data_where_the_run_names_none(run, tmp_path, monkeypatch):
    folder, data, labels, expected = run
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("red.onnx", "green.onnx"):
        (bare / name).write_bytes((folder / name).read_bytes())
    write_manifest(bare, "bare run", [Stage("red", "red.onnx"), Stage("green", "green.onnx")])
    with pytest.raises(ConfigError) as error:
        report_api.report(str(bare), show=False)
    assert str(error.value) == f"{bare} does not say which data it was made for; pass --data DIR."
    monkeypatch.setattr(measure, "time_inference", _Timer())
    _stub_figures(monkeypatch)
    document = report_api.report(str(bare), data=str(data), rounds=1, iters_per_round=1, warmup=0, mask_images=1,
                                 show=False)
    assert document["stages"][0]["miou"] == pytest.approx(100.0)


def test_a_dataset_without_a_palette_is_drawn_in_the_default_colours(run, tmp_path, monkeypatch):
    import shutil

    folder, data, labels, expected = run
    plain = tmp_path / "plain"
    shutil.copytree(data, plain)
    (plain / "dataset.yaml").write_text(yaml.safe_dump({"name": "plain", "num_classes": CLASSES, "classes": NAMES}))
    _stub_figures(monkeypatch)
    grid = _Spy(figures.mask_grid_png)
    monkeypatch.setattr(figures, "mask_grid_png", grid)
    monkeypatch.setattr(measure, "time_inference", _Timer())
    report_api.report(str(folder), data=str(plain), out=str(tmp_path / "out"), rounds=1, iters_per_round=1, warmup=0,
                      mask_images=1, show=False)
    assert grid.calls[0][2]["palette"] == figures.default_palette(CLASSES)


def test_a_stage_with_another_class_count_is_refused_before_anything_is_measured(run, tmp_path, monkeypatch):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    folder, data, labels, expected = run
    odd = tmp_path / "odd"
    odd.mkdir()
    (odd / "red.onnx").write_bytes((folder / "red.onnx").read_bytes())
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["logits"])], "five",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 5, SIZE, SIZE])],
        [numpy_helper.from_array(np.zeros((5, 3, 1, 1), np.float32), "w")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(odd / "five.onnx"))
    write_manifest(odd, "odd", [Stage("red", "red.onnx"), Stage("five", "five.onnx")], data=str(data))
    timer = _Timer()
    monkeypatch.setattr(measure, "time_inference", timer)
    refusal = (f"five.onnx's output says 5 classes but {data / 'dataset.yaml'} says 8; fix num_classes in "
               f"{data / 'dataset.yaml'}, or use a model trained for this data.")
    with pytest.raises(Exception) as error:
        report_api.report(str(odd), out=str(tmp_path / "out"), show=False)
    assert str(error.value) == refusal
    assert timer.calls == [] and not (tmp_path / "out" / "report.json").exists()
    # the first stage is the one whose count the data is read with: refused before anything is made
    write_manifest(odd, "odd", [Stage("five", "five.onnx"), Stage("red", "red.onnx")], data=str(data))
    with pytest.raises(Exception) as error:
        report_api.report(str(odd), out=str(tmp_path / "out2"), show=False)
    assert str(error.value) == refusal and not (tmp_path / "out2").exists()


# --- measure ------------------------------------------------------------------------------------------------------

def test_masks_are_predicted_on_images_spread_over_the_split(run):
    from edgeseg.data.dataset import resolve_split
    from edgeseg.runtime.loader import describe, open_runner

    folder, data, labels, expected = run
    split = resolve_split(data, "val")
    artifact = describe(folder / "green.onnx")
    with open_runner(artifact, "cpu", None, False, False, False) as runner:
        opened = {"green": (artifact, runner)}
        assert measure._predict_masks(opened, split, 0) == {"images": [], "labels": [], "predictions": {}}
        assert measure._predict_masks(opened, split, -2) == {"images": [], "labels": [], "predictions": {}}
        assert measure._predict_masks(opened, split, 1)["indices"] == [0]
        assert measure._predict_masks(opened, split, 2)["indices"] == [0, 4]
        assert measure._predict_masks(opened, split, 4)["indices"] == [0, 1, 2, 4]
        every = measure._predict_masks(opened, split, 9)
    assert every["indices"] == [0, 1, 2, 3, 4]
    for position in range(5):
        np.testing.assert_array_equal(every["labels"][position], labels[position])
        np.testing.assert_array_equal(every["predictions"]["green"][position], _by_channel(_scene(position), 1))


# --- the run folder -----------------------------------------------------------------------------------------------

def test_the_manifest_round_trips(tmp_path):
    for name in ("a.onnx", "b.onnx"):
        (tmp_path / name).write_bytes(b"x")
    path = write_manifest(tmp_path, "my run", [Stage("first", "a.onnx"), Stage("second", "b.onnx")], data="/d",
                          notes=["n1", "n2"])
    assert path == tmp_path / MANIFEST == tmp_path / "stages.json"
    assert json.loads(path.read_text()) == {"title": "my run", "data": "/d", "notes": ["n1", "n2"], "stages": [
        {"name": "first", "artifact": "a.onnx"}, {"name": "second", "artifact": "b.onnx"}]}
    run = read_run_folder(str(tmp_path))
    assert run == RunFolder(tmp_path, "my run", [Stage("first", "a.onnx"), Stage("second", "b.onnx")], "/d",
                            ["n1", "n2"])
    assert run.artifact(run.stages[1]) == tmp_path / "b.onnx"
    write_manifest(tmp_path, "", [Stage("first", "a.onnx")])
    assert json.loads(path.read_text()) == {"title": "", "data": None, "notes": [],
                                            "stages": [{"name": "first", "artifact": "a.onnx"}]}
    untitled = read_run_folder(tmp_path)
    assert untitled.title == tmp_path.name and untitled.data is None and untitled.notes == []
    (tmp_path / MANIFEST).write_text(json.dumps({"stages": [{"name": 7, "artifact": "a.onnx"}]}))
    assert read_run_folder(tmp_path).stages == [Stage("7", "a.onnx")]


@pytest.mark.parametrize("content, kind", [("{not json", "JSONDecodeError"), ('{"title": "t"}', "KeyError"),
                                           ('{"stages": [1]}', "TypeError"), ('{"stages": [{"name": "a"}]}',
                                                                               "KeyError")])
def test_a_broken_manifest_is_one_sentence(tmp_path, content, kind):
    (tmp_path / MANIFEST).write_text(content)
    with pytest.raises(InputFileError) as error:
        read_run_folder(tmp_path)
    assert str(error.value) == (f"{tmp_path / MANIFEST} is not a valid stage list ({kind}); rerun the pipeline that "
                                f"wrote it.")


def test_a_run_folder_that_is_missing_things_says_what(tmp_path):
    with pytest.raises(InputFileError) as error:
        read_run_folder(tmp_path / "nowhere")
    assert str(error.value) == f"Run folder {tmp_path / 'nowhere'} does not exist; give the folder a pipeline run wrote."
    with pytest.raises(InputFileError) as error:
        read_run_folder(tmp_path)
    assert str(error.value) == (f"{tmp_path} has no stages.json; give the folder that `edgeseg demo` or "
                                f"benchmarks/camvid/run.py wrote.")
    (tmp_path / "stages.json").mkdir()
    with pytest.raises(InputFileError, match="has no stages.json"):
        read_run_folder(tmp_path)
    (tmp_path / "stages.json").rmdir()
    write_manifest(tmp_path, "t", [])
    with pytest.raises(ConfigError) as error:
        read_run_folder(tmp_path)
    assert str(error.value) == f"{tmp_path / 'stages.json'} lists no stages; there is nothing to report."
    (tmp_path / "here.onnx").write_bytes(b"x")
    (tmp_path / "dir.onnx").mkdir()
    write_manifest(tmp_path, "t", [Stage("a", "gone.onnx"), Stage("b", "here.onnx"), Stage("c", "dir.onnx")])
    with pytest.raises(InputFileError) as error:
        read_run_folder(tmp_path)
    assert str(error.value) == (f"{tmp_path} lacks gone.onnx, dir.onnx, listed in stages.json; rerun the stages that "
                                f"make them.")


# --- figures ------------------------------------------------------------------------------------------------------

def test_default_palette_is_golden_angle_hues():
    import colorsys

    assert figures.default_palette(4) == [tuple(int(255 * c) for c in colorsys.hls_to_rgb((i * 0.618034) % 1.0, 0.5,
                                                                                          0.75)) for i in range(4)]


def test_colourise_paints_the_palette_and_black_past_it():
    palette = [(10, 20, 30), (200, 100, 0)]
    rgb = figures.colourise(np.array([[0, 1, 2], [255, 300, 1]]), palette)
    assert rgb.dtype == np.uint8
    assert rgb.tolist() == [[[10, 20, 30], [200, 100, 0], [0, 0, 0]], [[0, 0, 0], [0, 0, 0], [200, 100, 0]]]
    long = [(i, 255 - i, 7) for i in range(256)] + [(1, 1, 1)] * 10
    assert figures.colourise(np.array([[255, 3]]), long).tolist() == [[[255, 0, 7], [3, 252, 7]]]


def test_per_class_bars_are_as_long_as_the_ious(tmp_path):
    import matplotlib.pyplot as plt

    rows = [{"stage": "a", "per_class_iou": {"sky": 90.0, "road": None, "car": 20.0}},
            {"stage": "b", "per_class_iou": {"sky": 60.0, "road": 50.0, "car": 10.0}}]
    path = figures.per_class_iou_png(tmp_path / "c.png", rows, title="t")
    assert path == tmp_path / "c.png" and sorted(p.name for p in tmp_path.iterdir()) == ["c.png"]
    with Image.open(path) as image:
        # figsize (8, 0.45 * 3 classes * max(1, 2 / 3) + 1.5) inches at 110 dpi
        assert image.size == _size(8, 0.45 * 3 + 1.5)
    # matplotlib's first two colours: the bars' areas are in proportion to their values (110 : 120)
    first, second = _colour_pixels(path, (0x1F, 0x77, 0xB4)), _colour_pixels(path, (0xFF, 0x7F, 0x0E))
    assert first > 1000 and second / first == pytest.approx(120 / 110, rel=0.06)
    assert plt.get_fignums() == []  # closed


def test_per_class_figure_grows_with_stages_and_classes(tmp_path):
    rows = [{"stage": f"s{i}", "per_class_iou": {f"c{j}": 10.0 * j for j in range(5)}} for i in range(6)]
    with Image.open(figures.per_class_iou_png(tmp_path / "big.png", rows, title="t")) as image:
        assert image.size == _size(8, 0.45 * 5 * 2 + 1.5)
    empty = [{"stage": "s", "per_class_iou": {}}]
    with Image.open(figures.per_class_iou_png(tmp_path / "empty.png", empty, title="t")) as image:
        assert image.size == _size(8, 1.5)


def test_mask_grid_shows_images_labels_and_predictions_in_the_palette(tmp_path):
    import matplotlib.pyplot as plt

    image = np.zeros((8, 8, 3), np.uint8)
    image[:, :, 1] = 77
    masks = {"images": [image, image], "labels": [np.zeros((8, 8), np.int64), np.full((8, 8), 255)],
             "predictions": {"a": [np.ones((8, 8), np.int64), np.ones((8, 8), np.int64)],
                             "b": [np.full((8, 8), 2), np.full((8, 8), 2)]}}
    palette = [(250, 10, 10), (10, 250, 10), (10, 10, 250)]
    path = figures.mask_grid_png(tmp_path / "m.png", masks, palette=palette, class_names=["x", "y", "z"], title="T")
    assert path == tmp_path / "m.png"
    with Image.open(path) as grid:
        # 4 columns (image, ground truth, a, b) x 2 rows: figsize (2.6 * 4, 2.1 * 2 + 0.9) at 110 dpi
        assert grid.size == _size(2.6 * 4, 2.1 * 2 + 0.9)
    painted = {c: _colour_pixels(path, c) for c in palette + [(0, 77, 0)]}
    assert painted[(0, 77, 0)] > 1000  # the image panels
    assert painted[(250, 10, 10)] > 1000 and painted[(10, 250, 10)] > 2000 and painted[(10, 10, 250)] > 2000
    assert plt.get_fignums() == []
    # without names: no legend; one image is one row
    one = {"images": [image], "labels": [np.zeros((8, 8), np.int64)], "predictions": {"a": [np.ones((8, 8), np.int64)]}}
    with Image.open(figures.mask_grid_png(tmp_path / "one.png", one, palette=palette)) as grid:
        assert grid.size == _size(2.6 * 3, 2.1 + 0.9)


def _capture_figures(monkeypatch):
    """Keep each figure figures._save is given (its artists read before it is closed)."""
    kept = []
    real = figures._save

    def save(figure, path):
        kept.append(figure)
        return real(figure, path)

    monkeypatch.setattr(figures, "_save", save)
    return kept


def test_per_class_bars_group_by_class_one_bar_per_stage(tmp_path, monkeypatch):
    kept = _capture_figures(monkeypatch)
    rows = [{"stage": "a", "per_class_iou": {"sky": 90.0, "road": None, "car": 20.0}},
            {"stage": "b", "per_class_iou": {"sky": 60.0, "road": 50.0, "car": 10.0}},
            {"stage": "c", "per_class_iou": {"sky": 30.0, "road": 40.0}}]
    figures.per_class_iou_png(tmp_path / "c.png", rows, title="The title")
    axes = kept[0].axes[0]
    height = 0.8 / 3
    # barh centres each bar on its position
    bars = [(round(p.get_y() + p.get_height() / 2, 6), round(p.get_width(), 6), round(p.get_height(), 6))
            for p in axes.patches]
    assert bars == [(round(position + index * height, 6), value, round(height, 6))
                    for index, values in enumerate([(90, 0, 20), (60, 50, 10), (30, 40, 0)])
                    for position, value in enumerate(values)]
    assert [t.get_text() for t in axes.get_yticklabels()] == ["sky", "road", "car"]
    np.testing.assert_allclose(axes.get_yticks(), np.arange(3) + height)
    assert axes.yaxis_inverted() and axes.get_xlim() == (0, 100)
    assert axes.get_xlabel() == "IoU (%)" and axes.get_title() == "The title" and axes.title.get_fontsize() == 10
    legend = axes.get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["a", "b", "c"] and legend.get_texts()[0].get_fontsize() == 7
    assert legend._loc == 4  # lower right
    assert all(line.get_visible() for line in axes.get_xgridlines()) and not any(
        line.get_visible() for line in axes.get_ygridlines())
    assert axes.get_xgridlines()[0].get_alpha() == 0.3
    assert kept[0].get_size_inches().tolist() == pytest.approx([8, 0.45 * 3 * 1.0 + 1.5])
    assert kept[0].dpi == 110


def test_mask_grid_panels_are_the_palette_colours_with_names_and_titles(tmp_path, monkeypatch):
    from matplotlib.colors import to_rgb

    kept = _capture_figures(monkeypatch)
    image = np.zeros((4, 6, 3), np.uint8)
    image[:, :, 2] = 99
    labels = [np.array([[0, 1, 255, 2, 2, 2]] * 4), np.full((4, 6), 1)]
    predictions = {"first": [np.full((4, 6), 2), np.zeros((4, 6), np.int64)], "last": [np.ones((4, 6), np.int64)] * 2}
    palette = [(250, 10, 10), (10, 250, 10), (10, 10, 250)]
    figures.mask_grid_png(tmp_path / "m.png", {"images": [image, image], "labels": labels, "predictions": predictions},
                          palette=palette, class_names=["x", "y", "z", "beyond"], title="Grid")
    figure = kept[0]
    axes = figure.axes
    assert len(axes) == 8
    table = np.zeros((256, 3), np.uint8)
    table[:3] = palette
    panels = [image, table[labels[0]], table[predictions["first"][0]], table[predictions["last"][0]],
              image, table[labels[1]], table[predictions["first"][1]], table[predictions["last"][1]]]
    for axis, panel in zip(axes, panels):
        np.testing.assert_array_equal(np.asarray(axis.images[0].get_array()), panel)
        assert list(axis.get_xticks()) == [] and list(axis.get_yticks()) == []
    assert [a.get_title() for a in axes] == ["image", "ground truth", "first", "last", "", "", "", ""]
    assert axes[0].title.get_fontsize() == 8
    legend = figure.legends[0]
    assert [t.get_text() for t in legend.get_texts()] == ["x", "y", "z"]  # a name past the palette has no colour
    assert [tuple(round(v, 4) for v in to_rgb(h.get_facecolor())) for h in legend.legend_handles] == [
        tuple(round(c / 255, 4) for c in colour) for colour in palette]
    assert legend._ncols == 3 and legend.get_texts()[0].get_fontsize() == 7 and not legend.get_frame_on()
    assert figure._suptitle.get_text() == "Grid" and figure._suptitle.get_fontsize() == 10
    assert figure.get_size_inches().tolist() == pytest.approx([2.6 * 4, 2.1 * 2 + 0.9]) and figure.dpi == 110
    assert min(a.get_position().y0 for a in axes) >= 0.06  # room for the legend below
    # no names, no title: no legend
    figures.mask_grid_png(tmp_path / "n.png", {"images": [image], "labels": labels[:1],
                                               "predictions": {"only": predictions["last"][:1]}}, palette=palette)
    plain = kept[1]
    assert plain.legends == [] and plain._suptitle is None and len(plain.axes) == 3
    many = ["n%d" % i for i in range(8)]
    figures.mask_grid_png(tmp_path / "l.png", {"images": [image], "labels": labels[:1], "predictions": {}},
                          palette=[(i, i, i) for i in range(8)], class_names=many)
    assert kept[2].legends[0]._ncols == 6


def test_one_stage_gets_full_height_bars_on_a_0_to_100_axis_even_with_no_iou(tmp_path, monkeypatch):
    kept = _capture_figures(monkeypatch)
    figures.per_class_iou_png(tmp_path / "one.png", [{"stage": "only", "per_class_iou": {"sky": None, "road": None}}],
                              title="t")
    axes = kept[0].axes[0]
    assert [round(p.get_height(), 6) for p in axes.patches] == [0.8, 0.8]
    assert [p.get_width() for p in axes.patches] == [0, 0]
    assert axes.get_xlim() == (0, 100)


def test_measure_stages_defaults(run, monkeypatch):
    """Ten rounds of ten calls after ten warm-up calls, masks of four images, on the CPU, trusting nothing."""
    from edgeseg.data.dataset import resolve_split

    folder, data, labels, expected = run
    timer = _Timer()
    monkeypatch.setattr(measure, "time_inference", timer)
    opened_with = []
    real_open = measure.open_runner
    monkeypatch.setattr(measure, "open_runner", lambda *args: opened_with.append(args[1:]) or real_open(*args))
    measured = measure.measure_stages({"red": folder / "red.onnx"}, resolve_split(data, "val"))
    assert [(c[2], c[3]) for c in timer.calls] == [(10, 10)] + [(1, 10)] * 9
    assert measured["timing"] == {"rounds": 10, "iters_per_round": 10, "warmup": 10, "batch": 1, "device": "cpu"}
    assert measured["masks"]["indices"] == [0, 1, 2, 4] and measured["rows"][0]["device"] == "cpu"
    assert opened_with == [("cpu", None, False, False, False)]
    assert len(measured["rows"][0]["round_p50_ms"]) == 10


def test_masks_are_predicted_at_the_labels_own_size(run, tmp_path):
    from edgeseg.data.dataset import resolve_split
    from edgeseg.runtime.loader import describe, open_runner

    folder = run[0]
    data = tmp_path / "wide"
    for sub in ("images", "labels"):
        (data / "val" / sub).mkdir(parents=True)
    image = np.zeros((16, 32, 3), np.uint8)
    image[:, :, 0] = _level(5)
    Image.fromarray(image).save(data / "val" / "images" / "w.png")
    Image.fromarray(np.full((16, 32), 5, np.uint8)).save(data / "val" / "labels" / "w.png")
    (data / "dataset.yaml").write_text(yaml.safe_dump({"name": "wide", "num_classes": CLASSES, "classes": NAMES}))
    split = resolve_split(data, "val")
    artifact = describe(folder / "red.onnx")
    with open_runner(artifact, "cpu", None, False, False, False) as runner:
        masks = measure._predict_masks({"red": (artifact, runner)}, split, 1)
    prediction = masks["predictions"]["red"][0]
    assert prediction.shape == (16, 32) and set(np.unique(prediction)) == {5}


def test_report_defaults_and_trust_reach_the_measurement(run, tmp_path, monkeypatch):
    import edgeseg.runtime.loader

    folder = run[0]
    _stub_figures(monkeypatch)
    grid = _Spy(figures.mask_grid_png)
    monkeypatch.setattr(figures, "mask_grid_png", grid)
    timer = _Timer()
    monkeypatch.setattr(measure, "time_inference", timer)
    described = []
    real_describe = edgeseg.runtime.loader.describe
    monkeypatch.setattr(edgeseg.runtime.loader, "describe", lambda path, *args: described.append(
        (Path(path).name, *args)) or real_describe(path, *args))
    document = report_api.report(str(folder), out=str(tmp_path / "out"), show=False)
    # 10 rounds of 10 calls per stage after 10 warm-up calls; masks of 4 images
    assert [(c[2], c[3]) for c in timer.calls[:4]] == [(10, 10)] * 3 + [(1, 10)] and len(timer.calls) == 30
    assert document["timing"] == {"rounds": 10, "iters_per_round": 10, "warmup": 10, "batch": 1, "device": "cpu"}
    assert grid.calls[0][1][0]["indices"] == [0, 1, 2, 4]
    assert described[0] == ("red.onnx", False)  # the first stage, read for its class count, trusting nothing
    described.clear()
    with pytest.raises(Exception):
        report_api.report(str(folder), out=str(tmp_path / "out2"), show=False, trust_checkpoint=True,
                          trust_engine=True, allow_engine_host_code=True, device="nowhere")
    assert described[0] == ("red.onnx", True)


def test_data_without_a_dataset_yaml_takes_the_first_stages_class_count_and_the_ignore_index_given(run, tmp_path,
                                                                                                    monkeypatch):
    import shutil

    folder, data, labels, expected = run
    plain = tmp_path / "plain"
    shutil.copytree(data / "val", plain / "val")
    for index, label in enumerate(labels):  # the unlabelled strip marked 3 here, as is class 3
        Image.fromarray(np.where(label == 255, 3, label).astype(np.uint8)).save(plain / "val" / "labels" / f"{index}.png")
    _stub_figures(monkeypatch)
    monkeypatch.setattr(measure, "time_inference", _Timer())
    document = report_api.report(str(folder), data=str(plain), out=str(tmp_path / "out"), rounds=1, iters_per_round=1,
                                 warmup=0, mask_images=0, show=False, ignore_index=3)
    assert document["dataset"]["num_classes"] == CLASSES
    # label 3 is now unlabelled: every class is counted without those pixels
    relabelled = [np.where(label == 3, 255, label) for label in labels]
    green = _iou([_by_channel(_scene(i), 1) for i in range(5)], relabelled)
    assert green != _iou([_by_channel(_scene(i), 1) for i in range(5)], labels)  # the ignore index matters here
    for index, name in enumerate(NAMES):  # no dataset.yaml: the classes are numbered
        got = document["stages"][1]["per_class_iou"][f"class{index}"]
        assert got is None if green[name] is None else got == pytest.approx(green[name], abs=1e-3), name


def test_colourise_paints_labels_past_255_black_with_a_long_palette():
    palette = [(i, 100, 200) for i in range(50)]
    assert figures.colourise(np.array([[300, 44]]), palette).tolist() == [[[0, 0, 0], [44, 100, 200]]]


def test_the_mask_grid_leaves_room_below_for_the_legend(tmp_path, monkeypatch):
    kept = _capture_figures(monkeypatch)
    image = np.zeros((4, 6, 3), np.uint8)
    masks = {"images": [image], "labels": [np.zeros((4, 6), np.int64)], "predictions": {"a": [np.ones((4, 6), int)]}}
    palette = [(250, 10, 10), (10, 250, 10)]
    figures.mask_grid_png(tmp_path / "named.png", masks, palette=palette, class_names=["x", "y"])
    figures.mask_grid_png(tmp_path / "plain.png", masks, palette=palette)
    named, plain = ([a.get_position() for a in figure.axes] for figure in kept)
    assert kept[0].legends[0]._loc == 8  # lower center
    # the legend's strip (6% of the height) pushes the panels up; without names they use the whole figure
    assert min(p.y0 for p in named) > min(p.y0 for p in plain) + 0.02
    assert max(p.y1 for p in plain) < 1 and min(p.y0 for p in plain) < 0.5
    assert min(p.x0 for p in named) < 0.1 and min(p.x0 for p in plain) < 0.1
