"""What predict and the Segmenter write, pixel by pixel, against references computed here.

The model is a hand-made ONNX (one 1x1 convolution) whose class is a known function of a
pixel's red value: ``round((K - 1) * R / 255)``. So every expected mask, overlay, share of
pixels and class index above 255 is computed in the test with numpy from the input image
alone, never by asking edgeseg.
"""
import json
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import edgeseg
from edgeseg.cli.main import cli
from edgeseg.data.images import read_label
from edgeseg.predict import predict
from edgeseg.spec import ModelFacts

HEIGHT, WIDTH = 48, 64  # the ramp models' static input size: images at this size are not resized
# what edgeseg normalises with when a model records no mean/std (ImageNet's R, in 0-255 units)
MEAN_R, STD_R = 123.675, 58.395
# 8 class colours far from the test images' own colours, so an overlay differs clearly from its image
PALETTE = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255), (255, 0, 255), (128, 0, 0),
           (0, 128, 0)]


def _cv2():
    return pytest.importorskip("cv2", reason="OpenCV is not installed: pip install 'edgeseg[video]'")


def _ramp_onnx(path: Path, num_classes: int, class_map: bool = False) -> Path:
    """A 1x1 conv whose logits c * (K-1) * R/255 - c^2/2 peak at c = round((K-1) * R/255), written for inputs
    normalised with ImageNet's mean/std (R/255 = (v * STD_R + MEAN_R) / 255); ``class_map`` adds ArgMax."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    k = np.arange(num_classes, dtype=np.float64)
    weight = np.zeros((num_classes, 3, 1, 1), np.float32)
    weight[:, 0, 0, 0] = k * (num_classes - 1) * STD_R / 255
    bias = (k * (num_classes - 1) * MEAN_R / 255 - k * k / 2).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["logits"])]
    if class_map:
        nodes.append(helper.make_node("ArgMax", ["logits"], ["classes"], axis=1, keepdims=0))
        output = helper.make_tensor_value_info("classes", TensorProto.INT64, ["n", HEIGHT, WIDTH])
    else:
        output = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", num_classes, HEIGHT, WIDTH])
    graph = helper.make_graph(nodes, "ramp", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                             ["n", 3, HEIGHT, WIDTH])],
                              [output], [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(bias, "b")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def _expected_mask(image: np.ndarray, num_classes: int) -> np.ndarray:
    """The ramp model's class map, from the red channel alone (grey images: their one channel)."""
    red = (image if image.ndim == 2 else image[:, :, 0]).astype(np.float64)
    exact = (num_classes - 1) * red / 255
    assert np.abs(exact - np.floor(exact) - 0.5).min() > 0.05, "a red value sits on a class boundary"
    return np.rint(exact).astype(np.int64)


def _red_for(cls: int, num_classes: int) -> int:
    """A red value well inside class ``cls`` of the ramp model."""
    return int(round(255 * cls / (num_classes - 1)))


def _bands(classes, widths=None, num_classes: int = 8, green: int = 90, blue: int = 160) -> np.ndarray:
    """An HEIGHTxWIDTH RGB image of vertical bands, band i in class ``classes[i]``, ``widths[i]`` pixels wide."""
    widths = widths or [WIDTH // len(classes)] * len(classes)
    assert sum(widths) == WIDTH
    image = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    image[:, :, 1], image[:, :, 2] = green, blue
    start = 0
    for cls, width in zip(classes, widths):
        image[:, start:start + width, 0] = _red_for(cls, num_classes)
        start += width
    return image


def _blend(image: np.ndarray, mask: np.ndarray, palette, alpha: float) -> np.ndarray:
    """(1 - alpha) * image + alpha * colour, in float: the documented overlay (colors.overlay's docstring)."""
    colours = np.asarray(palette, np.float64)[mask]
    return (1 - alpha) * image.astype(np.float64) + alpha * colours


def _write_video(cv2, path: Path, frames) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (WIDTH, HEIGHT))
    for rgb in frames:
        writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    writer.release()


def _read_video(cv2, path: Path):
    capture, frames = cv2.VideoCapture(str(path)), []
    while True:
        ok, bgr = capture.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    capture.release()
    return frames


class _Display:
    """A double of OpenCV's window: records every frame shown and presses ``key`` at the ``press_at``-th waitKey."""

    def __init__(self, monkeypatch, cv2, press_at=None, key=ord("q")):
        self.cv2, self.shown, self.waits, self.destroyed = cv2, [], 0, 0
        self.press_at, self.key = press_at, key
        monkeypatch.setenv("DISPLAY", ":99")
        monkeypatch.setattr(cv2, "imshow", self.imshow)
        monkeypatch.setattr(cv2, "waitKey", self.wait_key)
        monkeypatch.setattr(cv2, "destroyAllWindows", self.destroy)

    def imshow(self, title, bgr):
        self.shown.append(self.cv2.cvtColor(bgr, self.cv2.COLOR_BGR2RGB))

    def wait_key(self, delay):
        self.waits += 1
        return self.key if self.waits == self.press_at else -1  # -1: no key, as OpenCV answers

    def destroy(self):
        self.destroyed += 1


@pytest.fixture(scope="module")
def ramp8(tmp_path_factory) -> Path:
    return _ramp_onnx(tmp_path_factory.mktemp("ramp8") / "ramp8.onnx", 8)


@pytest.fixture()
def streets(tmp_path):
    """A dataset folder whose dataset.yaml names 8 classes with PALETTE, for --data / ModelFacts(dataset=...)."""
    import yaml

    from edgeseg.data.dataset import dataset_info

    folder = tmp_path / "classes"
    for sub in ("images", "labels"):
        (folder / "val" / sub).mkdir(parents=True)
    Image.fromarray(_bands([0, 1])).save(folder / "val" / "images" / "x.png")
    Image.fromarray(np.zeros((HEIGHT, WIDTH), np.uint8)).save(folder / "val" / "labels" / "x.png")
    names = ["sky", "building", "road", "sidewalk", "vegetation", "car", "pedestrian", "pole"]
    (folder / "dataset.yaml").write_text(yaml.safe_dump({"name": "streets", "num_classes": 8, "ignore_index": 255,
                                                         "classes": names, "palette": [list(c) for c in PALETTE]}))
    info = dataset_info(folder)
    assert info.class_names() == names and [tuple(c) for c in info.palette] == PALETTE
    return folder, info


def test_the_ramp_model_is_what_the_tests_assume(ramp8):
    image = _bands(range(8))
    with edgeseg.Segmenter(ramp8) as seg:
        mask = seg(image)
    np.testing.assert_array_equal(mask, _expected_mask(image, 8))
    assert set(np.unique(mask)) == set(range(8))


def test_overlays_video_and_window_show_the_mask_at_alpha(ramp8, streets, tmp_path, monkeypatch):
    """Overlay JPEGs, the overlay video and the --show window carry (1 - alpha) * image + alpha * palette colour
    (Pillow's blend: within 1 of it before JPEG/mp4 coding)."""
    cv2 = _cv2()
    data, info = streets
    alpha = 0.4
    images = {"a": _bands([0, 3, 5, 7]), "b": _bands([6, 1, 2, 4], widths=[16, 32, 8, 8], green=30, blue=220)}
    (tmp_path / "in").mkdir()
    for name, image in images.items():
        Image.fromarray(image).save(tmp_path / "in" / f"{name}.png")
    _write_video(cv2, tmp_path / "clip.mp4", [_bands([i % 8, (i + 4) % 8]) for i in range(3)])
    video_in = _read_video(cv2, tmp_path / "clip.mp4")  # the frames as decoded: predict sees these pixels
    display = _Display(monkeypatch, cv2)
    summary = predict(str(ramp8), [str(tmp_path / "in"), str(tmp_path / "clip.mp4")], tmp_path / "out",
                      save=["masks,overlays,video"], alpha=alpha, show=True,
                      facts=ModelFacts(dataset=info))
    assert summary["frames"] == 5 and summary["written"] == {"masks": 5, "overlays": 5, "videos": 1}
    inputs = [images["a"], images["b"], *video_in]
    references = [_blend(image, _expected_mask(image, 8), PALETTE, alpha) for image in inputs]
    for image, reference in zip(inputs, references):  # the test is only as good as the mask is visible
        assert np.abs(reference - image).mean() > 25

    # the window: lossless, so within Pillow's rounding
    assert len(display.shown) == 5 and display.destroyed == 1
    for shown, reference in zip(display.shown, references):
        assert np.abs(shown.astype(np.float64) - reference).max() <= 1
    # the JPEG overlays, and the mp4: coded, so close on average
    names = ["a", "b"] + [f"clip_{i:06d}" for i in range(3)]
    for name, reference in zip(names, references):
        overlay = np.asarray(Image.open(tmp_path / "out" / "overlays" / f"{name}.jpg").convert("RGB"))
        assert np.abs(overlay - reference).mean() < 5, name
    video_out = _read_video(cv2, tmp_path / "out" / "clip.mp4")
    assert len(video_out) == 3
    for frame, reference in zip(video_out, references[2:]):
        assert np.abs(frame - reference).mean() < 8
    # and the masks beside them
    for name, image in zip(names, inputs):
        np.testing.assert_array_equal(read_label(tmp_path / "out" / "masks" / f"{name}.png"), _expected_mask(image, 8))


def test_segmenter_overlay_blends_at_alpha(ramp8):
    image = _bands([2, 7, 0, 5])
    with edgeseg.Segmenter(ramp8, facts=ModelFacts(num_classes=8)) as seg:
        for alpha in (0.25, 0.7):
            got = seg.overlay(image, seg(image), alpha=alpha).astype(np.float64)
            reference = _blend(image, _expected_mask(image, 8), seg.palette, alpha)
            assert np.abs(got - reference).max() <= 1


def test_stats_give_each_class_its_own_share(ramp8, streets, tmp_path):
    """--stats: the share of each class name equals that class's pixel count in the written masks."""
    data, info = streets
    names = info.class_names()
    # eight bands of eight different widths: any shuffle of the classes changes the shares
    widths = [1, 2, 3, 4, 6, 10, 16, 22]
    classes = [5, 0, 7, 2, 6, 1, 3, 4]
    (tmp_path / "in").mkdir()
    Image.fromarray(_bands(classes, widths)).save(tmp_path / "in" / "one.png")
    Image.fromarray(_bands([3, 3], [32, 32])).save(tmp_path / "in" / "two.png")  # all class 3
    result = CliRunner().invoke(cli, ["predict", str(ramp8), str(tmp_path / "in"), "--out", str(tmp_path / "out"),
                                      "--data", str(data), "--stats", "--json", str(tmp_path / "s.json"),
                                      "--save", "masks"])
    assert result.exit_code == 0, result.output
    share = json.loads((tmp_path / "s.json").read_text())["class_share_percent"]

    masks = [read_label(tmp_path / "out" / "masks" / f"{n}.png") for n in ("one", "two")]
    counts = np.bincount(np.concatenate([m.ravel() for m in masks]), minlength=8)
    expected = {names[i]: 100.0 * counts[i] / counts.sum() for i in range(8)}
    # independently of the masks: band widths in pixels
    by_width = np.zeros(8)
    for cls, width in zip(classes, widths):
        by_width[cls] += width * HEIGHT
    by_width[3] += WIDTH * HEIGHT
    np.testing.assert_allclose(counts, by_width)
    assert set(share) == set(names)
    for name in names:
        assert share[name] == pytest.approx(expected[name], abs=1e-3), name
    # the printed table says the same, row by row
    printed = dict(re.findall(r"(\w+)\s*[│|]\s*([\d.]+)\s*[│|]", result.output))
    for name in names:
        assert float(printed[name]) == pytest.approx(expected[name], abs=0.006), name


def test_stream_yields_the_masks_a_call_gives(ramp8, tmp_path):
    """Segmenter.stream: each frame's mask is the model's mask of that frame (from a folder and from a video)."""
    cv2 = _cv2()
    frames = [_bands([i, (i + 3) % 8, 7 - i, 4]) for i in range(4)]
    (tmp_path / "in").mkdir()
    for index, frame in enumerate(frames):
        Image.fromarray(frame).save(tmp_path / "in" / f"{index}.png")
    _write_video(cv2, tmp_path / "clip.mp4", frames)
    with edgeseg.Segmenter(ramp8) as seg:
        from_folder = list(seg.stream(str(tmp_path / "in")))
        from_video = list(seg.stream(str(tmp_path / "clip.mp4"), max_frames=3))
        called = [seg(frame) for frame, _ in from_video]
    assert len(from_folder) == 4 and len(from_video) == 3
    for (frame, mask), original in zip(from_folder, frames):
        np.testing.assert_array_equal(frame, original)
        np.testing.assert_array_equal(mask, _expected_mask(original, 8))
    for (frame, mask), expected in zip(from_video, called):
        np.testing.assert_array_equal(mask, _expected_mask(frame, 8))
        np.testing.assert_array_equal(mask, expected)
        assert len(np.unique(mask)) >= 3


def test_grey_images_are_segmented_as_their_rgb_conversion(ramp8, tmp_path):
    """A single-channel image (array, PIL L image, grey PNG file) gives the mask and overlay of the same image
    converted to RGB: never those of a black image."""
    grey = _bands([2, 5, 7, 4])[:, :, 0].copy()  # HxW: grey values well inside classes 2, 5, 7, 4
    rgb = np.stack([grey] * 3, axis=2)
    expected = _expected_mask(grey, 8)
    assert set(np.unique(expected)) == {2, 4, 5, 7}
    Image.fromarray(grey).save(tmp_path / "grey.png")
    assert Image.open(tmp_path / "grey.png").mode == "L"
    with edgeseg.Segmenter(ramp8) as seg:
        for image in (grey, Image.fromarray(grey), tmp_path / "grey.png"):
            np.testing.assert_array_equal(seg(image), expected)
        reference = _blend(rgb, expected, seg.palette, 0.5)
        assert np.abs(seg.overlay(grey, expected).astype(np.float64) - reference).max() <= 1
        assert np.abs(seg.overlay(Image.fromarray(grey), expected).astype(np.float64) - reference).max() <= 1
    (tmp_path / "in").mkdir()
    Image.fromarray(grey).save(tmp_path / "in" / "grey.png")
    Image.fromarray(rgb).save(tmp_path / "in" / "rgb.png")
    predict(str(ramp8), [str(tmp_path / "in")], tmp_path / "out", save=["masks,overlays"])
    for name in ("grey", "rgb"):
        np.testing.assert_array_equal(read_label(tmp_path / "out" / "masks" / f"{name}.png"), expected)
    overlays = [np.asarray(Image.open(tmp_path / "out" / "overlays" / f"{n}.jpg")) for n in ("grey", "rgb")]
    np.testing.assert_array_equal(overlays[0], overlays[1])


def test_grey_video_frames_are_segmented_as_their_rgb_conversion(ramp8, tmp_path, monkeypatch):
    """A capture that hands out single-channel frames (a grey camera): each frame is expanded to RGB, not lost.
    The double plays 2-D uint8 frames, as VideoCapture.read does for a grey source."""
    cv2 = _cv2()
    greys = [_bands([i, 7 - i, 3, 6])[:, :, 0].copy() for i in range(3)]

    class GreyCapture:
        def __init__(self, *args):
            self.left = list(greys)

        def isOpened(self):
            return True

        def read(self):
            return (True, self.left.pop(0)) if self.left else (False, None)

        def get(self, prop):
            return {cv2.CAP_PROP_FPS: 10.0, cv2.CAP_PROP_FRAME_COUNT: len(greys)}.get(prop, 0.0)

        def set(self, prop, value):
            return True

        def release(self):
            pass

    (tmp_path / "grey.mp4").write_bytes(b"played by the double")
    monkeypatch.setattr(cv2, "VideoCapture", GreyCapture)
    summary = predict(str(ramp8), [str(tmp_path / "grey.mp4")], tmp_path / "out", save=["masks"])
    assert summary["frames"] == 3
    for index, grey in enumerate(greys):
        np.testing.assert_array_equal(read_label(tmp_path / "out" / "masks" / f"grey_{index:06d}.png"),
                                      _expected_mask(grey, 8))
    with edgeseg.Segmenter(ramp8) as seg:
        pairs = list(seg.stream(str(tmp_path / "grey.mp4")))
    assert len(pairs) == 3
    for (frame, mask), grey in zip(pairs, greys):
        np.testing.assert_array_equal(frame, np.stack([grey] * 3, axis=2))
        np.testing.assert_array_equal(mask, _expected_mask(grey, 8))


def test_max_frames_bounds_the_whole_run_across_sources(ramp8, tmp_path):
    """--max-frames N: 'Stop after N frames' for the run, not for each source (5 + 2 of two 5-frame videos)."""
    cv2 = _cv2()
    for name in ("first", "second"):
        _write_video(cv2, tmp_path / f"{name}.mp4", [_bands([i, 7 - i]) for i in range(5)])
    summary = predict(str(ramp8), [str(tmp_path / "first.mp4"), str(tmp_path / "second.mp4")], tmp_path / "out",
                      save=["masks,video"], max_frames=7)
    assert summary["frames"] == 7
    masks = sorted(p.name for p in (tmp_path / "out" / "masks").iterdir())
    assert masks == [f"first_{i:06d}.png" for i in range(5)] + [f"second_{i:06d}.png" for i in range(2)]
    assert len(_read_video(cv2, tmp_path / "out" / "first.mp4")) == 5
    assert len(_read_video(cv2, tmp_path / "out" / "second.mp4")) == 2
    # images and a video: the images count towards the same N; a source left with none is not started
    (tmp_path / "in").mkdir()
    for index in range(3):
        Image.fromarray(_bands([index, 4])).save(tmp_path / "in" / f"{index}.png")
    summary = predict(str(ramp8), [str(tmp_path / "in"), str(tmp_path / "first.mp4"), str(tmp_path / "second.mp4")],
                      tmp_path / "out2", save=["masks"], max_frames=4)
    assert summary["frames"] == 4
    assert sorted(p.name for p in (tmp_path / "out2" / "masks").iterdir()) == [
        "0.png", "1.png", "2.png", "first_000000.png"]


@pytest.mark.parametrize("key, streams", [(ord("q"), 1), (27, 2)], ids=["q-one-stream", "esc-two-streams"])
def test_q_or_esc_in_the_window_stops_after_that_frame(ramp8, tmp_path, monkeypatch, key, streams):
    """--show: q (or Esc) pressed while frame k is shown ends the run after k frames: nothing more is shown or
    written (not even the frames already decoded and inferred behind it), and later sources are not started."""
    cv2 = _cv2()
    (tmp_path / "in").mkdir()
    for index in range(40):
        Image.fromarray(_bands([index % 8, 3])).save(tmp_path / "in" / f"{index:02d}.png")
    _write_video(cv2, tmp_path / "later.mp4", [_bands([1, 2])] * 3)
    display = _Display(monkeypatch, cv2, press_at=3, key=key)
    summary = predict(str(ramp8), [str(tmp_path / "in"), str(tmp_path / "later.mp4")], tmp_path / "out",
                      save=["masks"], show=True, streams=streams)
    assert summary["frames"] == 3 and len(display.shown) == 3 and display.destroyed == 1
    assert sorted(p.name for p in (tmp_path / "out" / "masks").iterdir()) == ["00.png", "01.png", "02.png"]
    assert summary["written"]["videos"] == 0
    # another key does not stop it
    other = _Display(monkeypatch, cv2, press_at=3, key=ord("a"))
    summary = predict(str(ramp8), [str(tmp_path / "in")], tmp_path / "out2", save=["masks"], show=True)
    assert summary["frames"] == 40 and len(other.shown) == 40


@pytest.mark.parametrize("class_map", [False, True], ids=["logits", "class-map"])
def test_more_than_255_classes_write_16_bit_masks(tmp_path, class_map):
    """300 classes: masks are 16-bit PNGs whose indices above 255 read back as written, and the overlay takes
    each pixel's own colour (palette past 256 entries)."""
    model = _ramp_onnx(tmp_path / "ramp300.onnx", 300, class_map=class_map)
    facts = ModelFacts(num_classes=300)
    classes = [299, 0, 256, 281, 117, 270, 2, 290]  # four of them above 255
    image = _bands(classes, num_classes=300)
    expected = _expected_mask(image, 300)
    assert expected.max() == 299 and sorted(np.unique(expected)) == sorted(classes)
    (tmp_path / "in").mkdir()
    Image.fromarray(image).save(tmp_path / "in" / "many.png")
    summary = predict(str(model), [str(tmp_path / "in")], tmp_path / "out", save=["masks,overlays"], facts=facts,
                      stats=True)
    assert summary["frames"] == 1
    written = Image.open(tmp_path / "out" / "masks" / "many.png")
    assert written.mode.startswith("I")  # 16-bit grey (I;16), not an 8-bit palette
    np.testing.assert_array_equal(np.asarray(written).astype(np.int64), expected)
    share = summary["class_share_percent"]
    assert share["class256"] == pytest.approx(100 / 8) and share["class299"] == pytest.approx(100 / 8)
    with edgeseg.Segmenter(model, facts=facts) as seg:
        mask = seg(image)
        assert mask.dtype == np.uint16
        np.testing.assert_array_equal(mask, expected)
        palette = seg.palette
        overlay = seg.overlay(image, mask, alpha=0.6).astype(np.float64)
    assert len(palette) == 300 and len({tuple(c) for c in palette[classes]}) == len(classes)
    assert np.abs(overlay - _blend(image, expected, palette, 0.6)).max() <= 1
    jpeg = np.asarray(Image.open(tmp_path / "out" / "overlays" / "many.jpg").convert("RGB"))
    assert np.abs(jpeg - _blend(image, expected, palette, 0.5)).mean() < 10
