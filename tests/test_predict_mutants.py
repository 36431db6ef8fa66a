"""predict's parts one by one, each against a reference computed here: palette colours, blended pixels,
PNG and JPEG coding settings read back from the files, a video's FPS and frame count read back, the
sentences the user is told, the names and numbers of the summary.

No test here trains or exports a model: the models are a hand-made 1x1-convolution ONNX whose class
is ``round(7 * R / 255)`` of a pixel's red value (as tests/test_predict_inputs.py), so each test runs in
well under a second and ``make mutate MODULE=edgeseg/predict/`` stays quick.
"""
import colorsys
import json
import os
import stat
import struct
import threading
import zlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from edgeseg.errors import ConfigError, DataError, InputFileError, MissingDependencyError
from edgeseg.predict import colors, sources, writers
from edgeseg.predict import api as predict_api
from edgeseg.spec import DatasetInfo, ModelFacts

SIZE = 16
CLASSES = 8
MEAN_R, STD_R = 123.675, 58.395


def _cv2():
    return pytest.importorskip("cv2", reason="OpenCV is not installed: pip install 'edgeseg[video]'")


def _golden(count):
    """The documented default colours: golden-angle hues at lightness 0.5, saturation 0.75."""
    return [tuple(int(255 * c) for c in colorsys.hls_to_rgb((i * 0.618034) % 1.0, 0.5, 0.75)) for i in range(count)]


def _ramp_onnx(path: Path, classes: int = CLASSES, size=(SIZE, SIZE), class_map: bool = False,
               static_batch: bool = False) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    k = np.arange(classes, dtype=np.float64)
    weight = np.zeros((classes, 3, 1, 1), np.float32)
    weight[:, 0, 0, 0] = k * (classes - 1) * STD_R / 255
    bias = (k * (classes - 1) * MEAN_R / 255 - k * k / 2).astype(np.float32)
    batch = 1 if static_batch else "n"
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["logits"])]
    if class_map:
        nodes.append(helper.make_node("ArgMax", ["logits"], ["classes"], axis=1, keepdims=0))
        output = helper.make_tensor_value_info("classes", TensorProto.INT64, [batch, *size])
    else:
        output = helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, classes, *size])
    graph = helper.make_graph(nodes, "ramp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, *size])],
                              [output], [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(bias, "b")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


@pytest.fixture(scope="module")
def ramp(tmp_path_factory) -> Path:
    return _ramp_onnx(tmp_path_factory.mktemp("ramp") / "ramp.onnx")


def _red(cls: int) -> int:
    return int(round(255 * cls / (CLASSES - 1)))


def _bands(classes, size=SIZE, green=90, blue=160) -> np.ndarray:
    """A size x size image of vertical bands of equal width, band i in class ``classes[i]``."""
    image = np.zeros((size, size, 3), np.uint8)
    image[:, :, 1], image[:, :, 2] = green, blue
    width = size // len(classes)
    for index, cls in enumerate(classes):
        image[:, index * width:(index + 1) * width, 0] = _red(cls)
    return image


def _expected(image: np.ndarray) -> np.ndarray:
    return np.rint(7 * image[:, :, 0].astype(np.float64) / 255).astype(np.int64)


class _Said(list):
    """Stands in for console.say: keeps each sentence."""

    def __call__(self, message):
        self.append(message)


# --- colors ------------------------------------------------------------------------------------------------------

def test_default_palette_is_the_golden_angle_hues():
    assert colors.default_palette(5) == _golden(5)
    assert colors.default_palette(0) == []


def test_palette_table_completes_a_short_palette_and_cuts_a_long_one():
    table = colors.palette_table(None, 3)
    assert table.dtype == np.uint8 and table.tolist() == [list(c) for c in _golden(3)]
    short = DatasetInfo(num_classes=4, palette=((1, 2, 3), (4, 5, 6)))
    assert colors.palette_table(short, 4).tolist() == [[1, 2, 3], [4, 5, 6]] + [list(c) for c in _golden(4)[2:]]
    long = DatasetInfo(num_classes=2, palette=((1, 2, 3), (4, 5, 6), (7, 8, 9)))
    assert colors.palette_table(long, 2).tolist() == [[1, 2, 3], [4, 5, 6]]
    # no class known: still one colour to paint with
    assert colors.palette_table(long, 0).tolist() == [[1, 2, 3]]
    assert colors.palette_table(None, 0).shape == (0, 3)


def test_colorize_paints_each_index_and_clips_past_the_palette():
    table = np.array([[10, 20, 30], [40, 50, 60], [70, 80, 90]], np.uint8)
    mask = np.array([[0, 1], [2, 9]])
    assert colors.colorize(mask, table).tolist() == [[[10, 20, 30], [40, 50, 60]], [[70, 80, 90], [70, 80, 90]]]


def test_mask_image_is_a_palette_png_for_uint8_and_16_bit_grey_past_it():
    table = np.array([[255, 0, 0], [0, 0, 255]], np.uint8)
    mask = np.array([[0, 1, 1], [1, 0, 0]], np.uint8)
    image = colors.mask_image(mask, table)
    assert image.mode == "P"
    np.testing.assert_array_equal(np.asarray(image), mask)
    assert image.getpalette()[:6] == [255, 0, 0, 0, 0, 255]
    assert np.asarray(image.convert("RGB"))[0, 1].tolist() == [0, 0, 255]
    wide = np.array([[0, 300], [65535, 7]], np.int64)
    grey = colors.mask_image(wide, table)
    assert grey.mode == "I;16"
    np.testing.assert_array_equal(np.asarray(grey), wide)


def test_flat_palette_is_768_values_and_at_most_256_colours():
    assert colors.flat_palette([(1, 2, 3)]) == [1, 2, 3] + [0] * 765
    table = [(i % 256, 0, 0) for i in range(300)]
    flat = colors.flat_palette(table)
    assert len(flat) == 768 and flat[-3:] == [255, 0, 0] and flat[:6] == [0, 0, 0, 1, 0, 0]
    assert all(isinstance(v, int) for v in colors.flat_palette(np.array([[1, 2, 3]], np.uint8)))


def _reference_blend(image, mask, table, alpha):
    return (1 - alpha) * image.astype(np.float64) + alpha * np.asarray(table, np.float64)[mask]


def test_overlay_is_the_documented_blend_and_alpha_is_clamped():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)
    mask = rng.integers(0, 3, (6, 5)).astype(np.uint8)
    table = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255]], np.uint8)
    for alpha in (0.0, 0.3, 0.5, 1.0):
        got = colors.overlay(image, mask, table, alpha).astype(np.float64)
        assert np.abs(got - _reference_blend(image, mask, table, alpha)).max() <= 1, alpha
    mid = np.array([[128, 64, 200], [30, 90, 150], [220, 180, 40]], np.uint8)  # not 0/255: extrapolation shows
    np.testing.assert_array_equal(colors.overlay(image, mask, mid, 1.7), mid[mask])
    np.testing.assert_array_equal(colors.overlay(image, mask, mid, -0.4), image)
    # default alpha is one half
    half = colors.overlay(image, mask, table).astype(np.float64)
    assert np.abs(half - _reference_blend(image, mask, table, 0.5)).max() <= 1
    with pytest.raises(ValueError) as error:
        colors.overlay(image[:4], mask, table)
    assert str(error.value) == "image is 5x4 but the mask is 5x6"


def test_blend_past_256_colours_and_16_bit_masks_uses_the_whole_table():
    image = np.full((2, 3, 3), 100, np.uint8)
    table = np.array([[i % 256, (i * 7) % 256, 255 - i % 256] for i in range(300)], np.uint8)
    for mask in (np.array([[0, 1, 2], [3, 4, 5]], np.uint8), np.array([[0, 299, 2], [260, 4, 5]], np.uint16)):
        got = np.asarray(colors.blend(Image.fromarray(image), mask, table, 1.0))
        np.testing.assert_array_equal(got, table[mask])
    # a paletted image given is the one whose colours are blended in (predict makes it once for the PNG too)
    mask = np.zeros((2, 3), np.uint8)
    small = np.array([[9, 9, 9], [200, 100, 50]], np.uint8)
    other = Image.fromarray(np.ones((2, 3), np.uint8))
    other.putpalette(colors.flat_palette(small))
    got = np.asarray(colors.blend(Image.fromarray(image), mask, small, 1.0, other))
    assert got.reshape(-1, 3).tolist() == [[200, 100, 50]] * 6


# --- writers: choices, files --------------------------------------------------------------------------------------

def test_default_save_per_kind():
    assert writers.default_save("images") == {"masks", "overlays"}
    for kind in ("video", "camera", "stream", "csi"):
        assert writers.default_save(kind) == {"video"}


def test_parse_save_reads_commas_and_repeats_and_none():
    assert writers.parse_save(None) is None
    assert writers.parse_save([]) is None
    assert writers.parse_save([" , ", ""]) is None
    assert writers.parse_save(["masks, overlays", "video"]) == {"masks", "overlays", "video"}
    assert writers.parse_save(["none"]) == set()
    assert writers.parse_save(["masks,none"]) == {"masks"}
    with pytest.raises(ConfigError) as error:
        writers.parse_save(["zzz,masks", "bogus"])
    assert str(error.value) == "--save bogus, zzz is not one of masks, overlays, video (or none)."


def _idat_zlib_header(path: Path) -> bytes:
    data = path.read_bytes()[8:]
    while data:
        length, kind = struct.unpack(">I4s", data[:8])
        if kind == b"IDAT":
            return data[8:10]
        data = data[12 + length:]
    raise AssertionError("no IDAT")


def test_mask_png_is_written_whole_at_compression_level_1(tmp_path):
    mask = (np.arange(64).reshape(8, 8) % 3).astype(np.uint8)
    image = colors.mask_image(mask, np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9]], np.uint8))
    writers.write_mask_png(tmp_path / "m.png", image)
    assert [p.name for p in tmp_path.iterdir()] == ["m.png"]
    # zlib's header says the level class: 0x01 is the fastest (level 1), 0x5e levels 2-5, 0x9c the default 6
    assert _idat_zlib_header(tmp_path / "m.png") == bytes([0x78, 0x01])
    with Image.open(tmp_path / "m.png") as read:
        assert read.mode == "P"
        np.testing.assert_array_equal(np.asarray(read), mask)


def test_video_fps_defaults_to_30_when_the_source_has_none(tmp_path):
    for given in (0, 0.0, None, -5):
        assert writers.VideoOut(tmp_path / "v.mp4", given).fps == 30.0
    assert writers.VideoOut(tmp_path / "v.mp4", 12.5).fps == 12.5
    assert writers.DEFAULT_VIDEO_FPS == 30.0


def test_video_is_written_under_a_temporary_name_and_reads_back_with_its_fps_and_frames(tmp_path):
    cv2 = _cv2()
    video = writers.VideoOut(tmp_path / "clip.mp4", 0)
    assert video.close() is None and not list(tmp_path.iterdir())  # nothing written: no file
    frames = [np.full((24, 40, 3), (60 * i, 255 - 60 * i, 30), np.uint8) for i in range(4)]
    for frame in frames:
        video.write(frame)
    partial = [p.name for p in tmp_path.iterdir()]
    assert len(partial) == 1 and partial[0].startswith(".tmp-clip-") and partial[0].endswith(".mp4")
    assert video.frames == 4
    assert video.close() == tmp_path / "clip.mp4"
    assert [p.name for p in tmp_path.iterdir()] == ["clip.mp4"]
    assert stat.S_IMODE((tmp_path / "clip.mp4").stat().st_mode) == 0o644
    capture = cv2.VideoCapture(str(tmp_path / "clip.mp4"))
    try:
        assert capture.get(cv2.CAP_PROP_FPS) == pytest.approx(30.0)
        assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 4
        assert int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)) == 40 and int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)) == 24
        fourcc = int(capture.get(cv2.CAP_PROP_FOURCC))
        # MPEG-4 part 2, which FFmpeg names FMP4 when it reads back what was written as mp4v
        assert bytes((fourcc >> (8 * i)) & 0xFF for i in range(4)) == b"FMP4"
        read = []
        while True:
            ok, bgr = capture.read()
            if not ok:
                break
            read.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    finally:
        capture.release()
    assert len(read) == 4
    for got, frame in zip(read, frames):  # RGB in, RGB back (not swapped to BGR): coded, so close on average
        assert np.abs(got.astype(np.int64) - frame).mean() < 6


def test_a_discarded_video_leaves_no_file(tmp_path):
    _cv2()
    video = writers.VideoOut(tmp_path / "clip.mp4", 10)
    video.write(np.zeros((16, 16, 3), np.uint8))
    video.discard()
    assert not list(tmp_path.iterdir()) and video.writer is None
    video.discard()  # twice is harmless


def test_a_video_opencv_cannot_encode_is_one_sentence_and_no_file(tmp_path, monkeypatch):
    cv2 = _cv2()
    made = []

    class Closed:
        def __init__(self, *args):
            made.append(args)

        def isOpened(self):
            return False

        def release(self):
            made.append("released")

    monkeypatch.setattr(cv2, "VideoWriter", Closed)
    video = writers.VideoOut(tmp_path / "clip.mp4", 12)
    with pytest.raises(ConfigError) as error:
        video.write(np.zeros((10, 20, 3), np.uint8))
    assert str(error.value) == ("OpenCV cannot write clip.mp4 (no mp4v encoder here); use --save masks or "
                                "--save overlays instead.")
    assert not list(tmp_path.iterdir()) and made[-1] == "released"
    name, fourcc, fps, size = made[0]
    assert fourcc == cv2.VideoWriter_fourcc(*"mp4v") and fps == 12 and size == (20, 10)
    assert Path(name).parent == tmp_path


# --- writers: the window ------------------------------------------------------------------------------------------

def _no_display(monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setattr(os, "uname", lambda: SimpleNamespace(sysname="Linux"))


def test_window_without_a_display_says_so_once(monkeypatch):
    said = _Said()
    monkeypatch.setattr(writers, "say", said)
    _no_display(monkeypatch)
    window = writers.Window()
    assert window.available is False
    assert said == ["[yellow]--show: no display here (DISPLAY is not set); continuing without a window[/yellow]"]
    assert window.show(np.zeros((2, 2, 3), np.uint8)) is True  # nothing shown, the run goes on
    window.close()  # no OpenCV call


@pytest.mark.parametrize("where", ["DISPLAY", "WAYLAND_DISPLAY", "Darwin", "nt"])
def test_window_is_available_where_there_is_a_display(monkeypatch, where):
    said = _Said()
    monkeypatch.setattr(writers, "say", said)
    _no_display(monkeypatch)
    if where == "Darwin":
        monkeypatch.setattr(os, "uname", lambda: SimpleNamespace(sysname="Darwin"))
    elif where == "nt":
        monkeypatch.setattr(os, "name", "nt")
    else:
        monkeypatch.setenv(where, ":1")
    available = writers.Window().available
    monkeypatch.undo()
    assert available is True and said == []


class _FakeCv2:
    """OpenCV's window calls, recorded; waitKey answers ``key``; imshow raises ``error`` when given."""

    class error(Exception):
        pass

    COLOR_RGB2BGR = 4

    def __init__(self, key=-1, fail=False):
        self.key, self.fail, self.shown, self.destroyed = key, fail, [], 0

    def cvtColor(self, rgb, code):
        assert code == self.COLOR_RGB2BGR
        return rgb[:, :, ::-1]

    def imshow(self, title, bgr):
        if self.fail:
            raise self.error("The function is not implemented")
        self.shown.append((title, bgr.copy()))

    def waitKey(self, delay):
        assert delay == 1
        return self.key

    def destroyAllWindows(self):
        self.destroyed += 1


@pytest.mark.parametrize("key, goes_on", [(-1, True), (ord("q"), False), (27, False), (0x100 | ord("q"), False),
                                          (0x100 | 27, False), (ord("a"), True), (28, True)])
def test_window_shows_bgr_frames_and_stops_on_q_or_esc(monkeypatch, key, goes_on):
    fake = _FakeCv2(key)
    monkeypatch.setattr(writers, "require_cv2", lambda what: fake)
    monkeypatch.setenv("DISPLAY", ":1")
    window = writers.Window()
    rgb = np.arange(12, dtype=np.uint8).reshape(2, 2, 3)
    assert window.show(rgb) is goes_on
    assert fake.shown[0][0] == "edgeseg predict"
    np.testing.assert_array_equal(fake.shown[0][1], rgb[:, :, ::-1])
    window.close()
    assert fake.destroyed == 1


def test_a_headless_opencv_turns_the_window_off_with_one_line(monkeypatch):
    fake = _FakeCv2(fail=True)
    said = _Said()
    monkeypatch.setattr(writers, "require_cv2", lambda what: fake)
    monkeypatch.setattr(writers, "say", said)
    monkeypatch.setenv("DISPLAY", ":1")
    window = writers.Window()
    assert window.show(np.zeros((2, 2, 3), np.uint8)) is True and window.available is False
    assert said == ["[yellow]--show: this OpenCV has no GUI (opencv-python-headless); pip install opencv-python for "
                    "a window. Continuing without one[/yellow]"]
    window.close()
    assert fake.destroyed == 0


# --- writers: Outputs ---------------------------------------------------------------------------------------------

PALETTE = np.array([(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255), (255, 0, 255),
                    (128, 0, 0), (0, 128, 0)], np.uint8)


def _images_source(tmp_path, names):
    paths = [tmp_path / "in" / f"{n}.png" for n in names]
    return sources.Source("images", "in", str(tmp_path / "in"), paths, list(names))


def _quantization(image: np.ndarray, quality: int):
    import io

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    return Image.open(buffer).quantization


def test_outputs_write_each_images_mask_overlay_and_record(tmp_path, monkeypatch):
    said = _Said()
    monkeypatch.setattr(writers, "say", said)
    out = tmp_path / "out"
    outputs = writers.Outputs(out, None, PALETTE, 0.25, show=False)
    source = _images_source(tmp_path, ["a", "sub/b"])
    outputs.begin(source)
    assert outputs.current == {"masks", "overlays"} and (out / "masks").is_dir() and (out / "overlays").is_dir()
    images = {"a": _bands([0, 3, 5, 7]), "sub/b": _bands([6, 1])}
    for name, image in images.items():
        outputs.write(name, image, _expected(image).astype(np.uint8))
    assert outputs.end() is None and said == []
    assert outputs.written == {"masks": 2, "overlays": 2, "videos": 0} and outputs.videos == []
    assert outputs.files == [
        {"input": str(tmp_path / "in" / "a.png"), "mask": "masks/a.png", "overlay": "overlays/a.jpg"},
        {"input": str(tmp_path / "in" / "sub/b.png"), "mask": "masks/sub/b.png", "overlay": "overlays/sub/b.jpg"}]
    for name, image in images.items():
        with Image.open(out / "masks" / f"{name}.png") as mask:
            assert mask.mode == "P"
            np.testing.assert_array_equal(np.asarray(mask), _expected(image))
            assert mask.getpalette()[:24] == PALETTE.reshape(-1).tolist()
        with Image.open(out / "overlays" / f"{name}.jpg") as overlay:
            assert overlay.format == "JPEG"
            assert overlay.quantization == _quantization(image, 90)  # quality 90
            got = np.asarray(overlay.convert("RGB"))
            errors = [np.abs(got - _reference_blend(image, _expected(image), PALETTE, a)).mean() for a in (0.25, 0.5)]
            assert errors[0] < 8 and errors[0] < errors[1] / 2  # JPEG-coded: close to alpha 0.25, not to 0.5
    outputs.close()


def test_outputs_write_only_what_save_asks_for(tmp_path):
    image = _bands([2, 5])
    mask = _expected(image).astype(np.uint8)
    out = tmp_path / "masks-only"
    outputs = writers.Outputs(out, {"masks"}, PALETTE, 0.5, show=False)
    outputs.begin(_images_source(tmp_path, ["a"]))
    outputs.write("a", image, mask)
    assert sorted(p.name for p in out.iterdir()) == ["masks"]
    assert outputs.files == [{"input": str(tmp_path / "in" / "a.png"), "mask": "masks/a.png"}]
    assert outputs.written == {"masks": 1, "overlays": 0, "videos": 0}

    out = tmp_path / "overlays-only"
    outputs = writers.Outputs(out, {"overlays"}, PALETTE, 0.5, show=False)
    outputs.begin(_images_source(tmp_path, ["sub/a"]))
    outputs.write("sub/a", image, mask)
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == ["overlays", "overlays/sub",
                                                                             "overlays/sub/a.jpg"]
    assert outputs.files == [{"input": str(tmp_path / "in" / "sub/a.png"), "overlay": "overlays/sub/a.jpg"}]
    assert outputs.written == {"masks": 0, "overlays": 1, "videos": 0}

    out = tmp_path / "nothing"
    outputs = writers.Outputs(out, set(), PALETTE, 0.5, show=False)
    outputs.begin(_images_source(tmp_path, ["a"]))
    outputs.write("a", image, mask)
    assert not out.exists() and outputs.files == [] and outputs.written == {"masks": 0, "overlays": 0, "videos": 0}


def test_outputs_number_a_name_given_twice_and_say_so(tmp_path, monkeypatch):
    said = _Said()
    monkeypatch.setattr(writers, "say", said)
    image = _bands([1])
    outputs = writers.Outputs(tmp_path / "out", {"masks"}, PALETTE, 0.5, show=False)
    outputs.begin(_images_source(tmp_path, ["a"]))
    for name in ("a", "A", "a", "b"):
        outputs.write(name, image, _expected(image).astype(np.uint8))
    assert sorted(p.name for p in (tmp_path / "out" / "masks").iterdir()) == ["A-2.png", "a-3.png", "a.png", "b.png"]
    # only the input the source named gets a record (not "A", "b"); each mask under the name it got
    assert outputs.files == [{"input": str(tmp_path / "in" / "a.png"), "mask": "masks/a.png"},
                             {"input": str(tmp_path / "in" / "a.png"), "mask": "masks/a-3.png"}]
    outputs.end()
    assert said == ["[yellow]2 output name(s) were taken already, so they got a number: A -> A-2, a -> a-3[/yellow]"]
    said.clear()
    outputs.end()
    assert said == []  # said once
    for _ in range(4):
        outputs.write("b", image, _expected(image).astype(np.uint8))
    outputs.end()
    assert said == ["[yellow]4 output name(s) were taken already, so they got a number: b -> b-2, b -> b-3, "
                    "b -> b-4, b -> b-5[/yellow]"]
    said.clear()
    for _ in range(6):
        outputs.write("c", image, _expected(image).astype(np.uint8))
    outputs.end()
    assert said == ["[yellow]5 output name(s) were taken already, so they got a number: c -> c-2, c -> c-3, "
                    "c -> c-4, c -> c-5, ...[/yellow]"]


class _Capture:
    """A capture Source without a file: ``kind`` and ``fps`` as given."""

    def __init__(self, kind="video", name="clip", spec="clip.mp4", fps=12.0):
        self.kind, self.name, self.spec, self.fps = kind, name, spec, fps
        self.names, self.paths = [], []

    def leave_out(self, folder):
        return 0


def test_outputs_write_a_captures_video_and_its_record(tmp_path):
    cv2 = _cv2()
    out = tmp_path / "out"
    outputs = writers.Outputs(out, {"video", "masks"}, PALETTE, 1.0, show=False)
    outputs.begin(_Capture())
    frames = [_bands([i, 7 - i]) for i in range(3)]
    for index, frame in enumerate(frames):
        outputs.write(f"clip_{index:06d}", frame, _expected(frame).astype(np.uint8))
    assert outputs.end() == out / "clip.mp4"
    assert outputs.written == {"masks": 3, "overlays": 0, "videos": 1} and outputs.videos == [str(out / "clip.mp4")]
    assert outputs.files == [{"input": "clip.mp4", "video": "clip.mp4", "masks": "masks/clip_*.png"}]
    assert outputs.video is None
    capture = cv2.VideoCapture(str(out / "clip.mp4"))
    assert capture.get(cv2.CAP_PROP_FPS) == pytest.approx(12.0)
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 3
    ok, bgr = capture.read()
    capture.release()
    # alpha 1: the frame is the class colours themselves
    assert ok and np.abs(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB).astype(np.int64) - PALETTE[_expected(frames[0])]).mean() < 8

    # a second capture of the same name gets a number; only the video asked for: no masks in its record
    outputs = writers.Outputs(out, {"video"}, PALETTE, 1.0, show=False)
    outputs.video_names = {"clip"}
    outputs.begin(_Capture(name="clip"))
    outputs.write("clip_000000", frames[0], _expected(frames[0]).astype(np.uint8))
    assert outputs.end() == out / "clip-2.mp4"
    assert outputs.files == [{"input": "clip.mp4", "video": "clip-2.mp4"}]

    # a capture that gave no frame: no video, no record
    outputs = writers.Outputs(out, {"video"}, PALETTE, 1.0, show=False)
    outputs.begin(_Capture(name="empty", spec="empty.mp4"))
    assert outputs.end() is None and outputs.files == [] and outputs.written["videos"] == 0
    assert not (out / "empty.mp4").exists()


def test_outputs_abort_discards_the_unfinished_video(tmp_path):
    _cv2()
    outputs = writers.Outputs(tmp_path, None, PALETTE, 0.5, show=False)
    outputs.begin(_Capture(kind="camera", name="camera0", spec="0"))
    assert outputs.current == {"video"}
    frame = _bands([3])
    outputs.write("camera0_000000", frame, _expected(frame).astype(np.uint8))
    outputs.abort()
    assert outputs.video is None and list(tmp_path.iterdir()) == []
    outputs.abort()


def test_outputs_show_frames_in_the_window_and_stop_when_closed(tmp_path, monkeypatch):
    fake = _FakeCv2(key=ord("q"))
    monkeypatch.setattr(writers, "require_cv2", lambda what: fake)
    monkeypatch.setenv("DISPLAY", ":1")
    outputs = writers.Outputs(tmp_path / "out", set(), PALETTE, 1.0, show=True)
    outputs.begin(_images_source(tmp_path, ["a"]))
    frame = _bands([2, 4])
    outputs.write("a", frame, _expected(frame).astype(np.uint8))
    assert outputs.stopped is True
    np.testing.assert_array_equal(fake.shown[0][1][:, :, ::-1], PALETTE[_expected(frame)])
    outputs.close()
    assert fake.destroyed == 1


# --- sources ------------------------------------------------------------------------------------------------------

def _png(path: Path, cls: int = 1) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(_bands([cls])).save(path)
    return path


def test_classify_names_each_kind_of_source(tmp_path):
    stream = sources.classify("RTSP://10.0.0.2:554/cam one/")
    assert (stream.kind, stream.name, stream.spec) == ("stream", "10.0.0.2_554_cam_one", "RTSP://10.0.0.2:554/cam one/")
    for scheme in ("rtsps://", "rtmp://", "http://", "https://"):
        assert sources.classify(scheme + "h/x").kind == "stream"
    assert sources.classify("http://???").name == "source"
    assert sources.classify("http://proxy/get?u=rtsp://cam").name == "proxy_get_u_rtsp_cam"  # split at the first ://
    with pytest.raises(InputFileError, match="does not exist"):
        sources.classify(str(tmp_path / "MissingX.png"))  # an X is not a wildcard
    csi = sources.classify("csi://2")
    assert (csi.kind, csi.name, csi.spec) == ("csi", "csi2", "csi://2")
    assert sources.classify("CSI://3").name == "csi3"
    with pytest.raises(sources.SourceError) as error:
        sources.classify("csi://front")
    assert str(error.value) == "csi://front is not a CSI camera; write csi://0 (the sensor id)."
    camera = sources.classify("3")
    assert (camera.kind, camera.name, camera.spec) == ("camera", "camera3", "3")
    device = sources.classify("/dev/video1")
    assert (device.kind, device.name, device.spec) == ("camera", "video1", "/dev/video1")
    image = _png(tmp_path / "Street.PNG")
    single = sources.classify(str(image))
    assert (single.kind, single.name, single.spec, single.paths, single.names) == (
        "images", "Street", str(image), [image], ["Street"])
    assert single.total == 1
    (tmp_path / "drive.MKV").write_bytes(b"x")
    video = sources.classify(str(tmp_path / "drive.MKV"))
    assert (video.kind, video.name, video.spec, video.paths) == ("video", "drive", str(tmp_path / "drive.MKV"),
                                                                [tmp_path / "drive.MKV"])
    assert video.total is None
    (tmp_path / "notes.pdf").write_bytes(b"x")
    with pytest.raises(InputFileError) as error:
        sources.classify(str(tmp_path / "notes.pdf"))
    assert str(error.value) == (
        f"{tmp_path / 'notes.pdf'} is neither an image ({', '.join(sources.PHOTO_SUFFIXES)}), a video "
        f"({', '.join(sources.VIDEO_SUFFIXES)}) nor a list of paths (.txt); give one of those.")
    with pytest.raises(InputFileError) as error:
        sources.classify(str(tmp_path / "gone.png"))
    assert str(error.value) == (f"Source {tmp_path / 'gone.png'} does not exist; give an image, a folder, a glob, a "
                                f"list file, a video, a camera (0, /dev/video0), csi://0 or an rtsp:// address.")


def test_a_list_file_reads_paths_relative_to_itself_without_comments(tmp_path):
    a = _png(tmp_path / "imgs" / "a.png")
    b = _png(tmp_path / "elsewhere" / "b.png")
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "val.LST").write_text(f"# the val split\n\n  ../imgs/a.png  \n{b}\n   # indented comment\n")
    listed = sources.classify(str(tmp_path / "lists" / "val.LST"))
    assert (listed.kind, listed.name, listed.spec, listed.names) == ("images", "val", str(tmp_path / "lists" / "val.LST"),
                                                                     ["a", "b"])
    assert listed.paths == [tmp_path / "lists" / "../imgs/a.png", b]
    assert a.exists()


def test_a_folder_is_walked_in_order_without_hidden_files_and_says_what_it_left_out(tmp_path, monkeypatch):
    said = _Said()
    monkeypatch.setattr(sources, "say", said)
    root = tmp_path / "street"
    for name in ("b.png", "a.JPG", "sub/c.png", "sub/deeper/d.png", "a_dir/e.png", ".hidden/f.png", ".g.png"):
        _png(root / name)
    for name in ("notes.txt", "x.TXT", "README", "clip.mp4", "sub/y.csv", "z.json"):
        (root / name).write_bytes(b"x")
    (root / "sub" / "loop").symlink_to(root, target_is_directory=True)  # a link back up: followed once, no loop
    source = sources.classify(str(root))
    assert (source.kind, source.name, source.spec) == ("images", "street", str(root))
    assert source.names == ["a", "b", "a_dir/e", "sub/c", "sub/deeper/d"]
    assert source.paths == [root / "a.JPG", root / "b.png", root / "a_dir/e.png", root / "sub/c.png",
                            root / "sub/deeper/d.png"]
    assert said == [f"[yellow]Leaving out 6 file(s) in {root} that are not images (2 .txt, 1 without suffix, 1 .mp4, "
                    f"1 .json, ...); give a video or a list file on its own[/yellow]"]


def test_the_not_images_line_names_up_to_four_suffixes_and_hints_only_for_videos_and_lists(monkeypatch):
    from collections import Counter

    said = _Said()
    monkeypatch.setattr(sources, "say", said)
    sources._not_images_line(3, Counter({".csv": 2, "": 1}), "in [data]")
    sources._not_images_line(4, Counter({".a": 1, ".b": 1, ".c": 1, ".d": 1}), "x")
    sources._not_images_line(1, Counter({".lst": 1}), "y")
    assert said == ["[yellow]Leaving out 3 file(s) in \\[data] that are not images (2 .csv, 1 without "
                    "suffix)[/yellow]",
                    "[yellow]Leaving out 4 file(s) x that are not images (1 .a, 1 .b, 1 .c, 1 .d)[/yellow]",
                    "[yellow]Leaving out 1 file(s) y that are not images (1 .lst); give a video or a list file on "
                    "its own[/yellow]"]


def test_heic_photos_are_left_out_with_one_line_without_pillow_heif(tmp_path, monkeypatch):
    said = _Said()
    monkeypatch.setattr(sources, "say", said)
    _png(tmp_path / "a.png")
    (tmp_path / "b.HEIC").write_bytes(b"x")
    (tmp_path / "c.heif").write_bytes(b"x")
    monkeypatch.setattr(sources, "heif_readable", lambda: False)
    assert sources._photos(tmp_path) == [tmp_path / "a.png"]
    assert said == [f"[yellow]Leaving out 2 HEIC photo(s) in {tmp_path}: {sources.HEIF_HINT}[/yellow]"]
    said.clear()
    monkeypatch.setattr(sources, "heif_readable", lambda: True)
    assert sources._photos(tmp_path) == [tmp_path / "a.png", tmp_path / "b.HEIC", tmp_path / "c.heif"]
    assert said == []


def test_a_glob_is_named_under_its_fixed_folders(tmp_path, monkeypatch):
    said = _Said()
    monkeypatch.setattr(sources, "say", said)
    for name in ("seq1/001.png", "seq1/002.PNG", "seq2/001.png", "seq2/notes.txt", "seq1/a.TXT", "seq2/clip.mp4"):
        (_png(tmp_path / name) if name.lower().endswith(".png") else (tmp_path / name).write_bytes(b"x"))
    spec = str(tmp_path / "seq*" / "*")
    source = sources.classify(spec)
    assert (source.kind, source.name, source.spec) == ("images", "glob", spec)
    assert source.names == ["seq1/001", "seq1/002", "seq2/001"]
    assert said == [f"[yellow]Leaving out 3 file(s) matching {spec} that are not images (2 .txt, 1 .mp4); give a "
                    f"video or a list file on its own[/yellow]"]
    assert source.paths == [tmp_path / "seq1/001.png", tmp_path / "seq1/002.PNG", tmp_path / "seq2/001.png"]
    _png(tmp_path / "seq1" / "deep" / "x.png")
    recursive = sources.classify(str(tmp_path / "**" / "*.png"))  # ** reaches into every depth
    assert recursive.names == ["seq1/001", "seq1/deep/x", "seq2/001"]
    with pytest.raises(DataError) as error:
        sources.classify(str(tmp_path / "*.jpg"))
    assert str(error.value) == (f"No image matches {tmp_path / '*.jpg'}; check the pattern (quote it so the shell "
                                f"leaves it alone).")
    assert sources._glob_root(Path("a/b/*/c.png")) == Path("a/b")
    assert sources._glob_root(Path("a/b?/c.png")) == Path("a")
    assert sources._glob_root(Path("a/[bc]/d.png")) == Path("a")
    assert sources._glob_root(Path("*.png")) == Path(".")


def test_a_folder_without_images_is_one_sentence(tmp_path):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(DataError) as error:
        sources.classify(str(tmp_path / "empty"))
    assert str(error.value) == (f"Folder {tmp_path / 'empty'} holds no images ({', '.join(sources.PHOTO_SUFFIXES)}), "
                                f"nor do its subfolders; give a folder of images or a video.")


def test_settle_names_renames_every_input_sharing_a_name(tmp_path):
    paths = [tmp_path / "a" / "x.jpg", tmp_path / "b" / "x.jpg", tmp_path / "c" / "Y.png", tmp_path / "y.jpg",
             tmp_path / "z.png"]
    settled, renamed = sources.settle_names(paths)
    assert settled == ["a/x", "b/x", "Y.png", "y.jpg", "z"]
    assert renamed == [(paths[0], "a/x"), (paths[1], "b/x"), (paths[2], "Y.png"), (paths[3], "y.jpg")]
    # three alike where even the mirrored stems repeat (a/x.jpg, a/X.png): the mirrored paths with suffixes
    three = [tmp_path / "a" / "x.jpg", tmp_path / "b" / "x.jpg", tmp_path / "a" / "X.png"]
    assert sources.settle_names(three)[0] == ["a/x.jpg", "b/x.jpg", "a/X.png"]
    # names given in full are used; a wrong count falls back to the stems
    assert sources.settle_names(paths[:2], ["p", "q"]) == (["p", "q"], [])
    assert sources.settle_names(paths[:2], ["p"])[0] == ["a/x", "b/x"]
    # where even the mirrored paths repeat, the suffix stays; a rename meeting a kept name is numbered
    same = [tmp_path / "f.jpg", tmp_path / "f.jpg"]
    assert sources.settle_names(same)[0] == ["f.jpg", "f.jpg-2"]
    clash = [tmp_path / "a.jpg", tmp_path / "a.png", tmp_path / "a.jpg.png"]
    assert sources.settle_names(clash)[0] == ["a.jpg-2", "a.png", "a.jpg"]
    assert sources.settle_names(clash, ["a", "a", "A.jpg"])[0] == ["a.jpg-2", "a.png", "A.jpg"]


def test_image_frames_decode_in_order_and_report_unreadable_files(tmp_path):
    good = [_png(tmp_path / f"{i}.png", i) for i in range(3)]
    (tmp_path / "bad.png").write_bytes(b"not a png")
    paths = [good[0], tmp_path / "bad.png", good[1], good[2]]
    source = sources.Source("images", "in", "in", paths, ["g0", "bad", "g1", "g2"])
    frames = list(source.frames())
    assert [(f.name, f.index) for f in frames] == [("g0", 0), ("bad", 1), ("g1", 2), ("g2", 3)]
    assert frames[1].image is None and "bad.png" in frames[1].error
    for frame, cls in zip([frames[0], frames[2], frames[3]], range(3)):
        assert frame.error is None and frame.decode_s > 0
        np.testing.assert_array_equal(frame.image, _bands([cls]))
    assert [f.name for f in source.frames(max_frames=2)] == ["g0", "bad"]
    stop = threading.Event()
    stop.set()
    assert list(source.frames(stop=stop)) == []
    # names that do not match the paths are settled from the paths
    assert [f.name for f in sources.Source("images", "in", "in", good[:2], ["only-one"]).frames()] == ["0", "1"]


def test_leave_out_drops_the_images_under_out_and_says_how_many(tmp_path, monkeypatch):
    said = _Said()
    monkeypatch.setattr(sources, "say", said)
    paths = [_png(tmp_path / "a.png"), _png(tmp_path / "out" / "masks" / "a.png"), _png(tmp_path / "outer" / "b.png")]
    source = sources.Source("images", "in", str(tmp_path), list(paths), ["a", "out/masks/a", "outer/b"])
    assert source.leave_out(tmp_path / "out") == 1
    assert source.paths == [paths[0], paths[2]] and source.names == ["a", "outer/b"]  # "outer" is not under "out"
    assert said == [f"[yellow]Leaving out 1 image(s) under {tmp_path / 'out'}: it is where this run writes (--out), "
                    f"so they are a previous run's masks and overlays[/yellow]"]
    assert source.leave_out(tmp_path / "elsewhere") == 0 and len(said) == 1
    unnamed = sources.Source("images", "in", str(tmp_path), list(paths))
    assert unnamed.leave_out(tmp_path / "out") == 1 and unnamed.names == ["a", "b"]
    assert sources.Source("images", "in", "in").leave_out(tmp_path) == 0
    video = sources.Source("video", "v", "v.mp4", [tmp_path / "out" / "v.mp4"])
    assert video.leave_out(tmp_path / "out") == 0 and video.paths == [tmp_path / "out" / "v.mp4"]


def test_resolve_sources_merges_images_settles_names_and_says_each_rename(tmp_path, monkeypatch):
    said = _Said()
    monkeypatch.setattr(sources, "say", said)
    one = _png(tmp_path / "one.png")
    merged = sources.resolve_sources([str(one)])
    assert [(s.kind, s.name, s.spec, s.names) for s in merged] == [("images", "one", str(one), ["one"])]
    for name in ("a", "b", "c"):
        _png(tmp_path / "x" / f"{name}.png")
        _png(tmp_path / "y" / f"{name}.jpg")
    for folder in ("v1", "v2"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "drive.mp4").write_bytes(b"x")
    specs = [str(tmp_path / "x"), str(tmp_path / "y"), str(tmp_path / "v1" / "drive.mp4"),
             str(tmp_path / "v2" / "drive.mp4")]
    said.clear()
    merged = sources.resolve_sources(specs)
    assert [(s.kind, s.name) for s in merged] == [("images", "images"), ("video", "v1/drive"), ("video", "v2/drive")]
    assert merged[0].spec == f"{tmp_path / 'x'}, {tmp_path / 'y'}"
    assert merged[0].names == ["a.png", "b.png", "c.png", "a.jpg", "b.jpg", "c.jpg"]
    shown = [f"{tmp_path / 'x' / n}.png -> masks/{n}.png.png" for n in "abc"]
    assert said == [f"[yellow]Renamed the outputs of 8 input(s) that share a name, so none overwrites another: "
                    f"{', '.join(shown + [str(tmp_path / 'y' / 'a.jpg') + ' -> masks/a.jpg.png'])}, and 4 more"
                    f"[/yellow]"]
    said.clear()
    merged = sources.resolve_sources([str(tmp_path / "x" / "a.png"), str(tmp_path / "y" / "a.jpg")])
    assert said == [f"[yellow]Renamed the outputs of 2 input(s) that share a name, so none overwrites another: "
                    f"{tmp_path / 'x' / 'a.png'} -> masks/a.png.png, {tmp_path / 'y' / 'a.jpg'} -> "
                    f"masks/a.jpg.png[/yellow]"]
    said.clear()
    sources.resolve_sources([str(tmp_path / "v1" / "drive.mp4"), "0"])
    assert said == []


def test_a_file_given_twice_is_read_once_and_said(tmp_path, monkeypatch):
    said = _Said()
    monkeypatch.setattr(sources, "say", said)
    a, b = _png(tmp_path / "a.png"), _png(tmp_path / "b.png")
    paths, names = sources._once([a, b, tmp_path / "." / "b.png", a], ["a", "b", "b2", "a2"])
    assert (paths, names) == ([a, b], ["a", "b"])
    assert said == [f"[yellow]Leaving out 2 image(s) given more than once (e.g. {tmp_path / 'b.png'}): each is "
                    f"segmented once[/yellow]"]
    said.clear()
    assert sources._once([a, b], ["a", "b"]) == ([a, b], ["a", "b"]) and said == []


class _FakeCapture:
    """A cv2.VideoCapture double: ``frames`` (BGR or grey) then nothing; properties as given."""

    def __init__(self, frames=(), opened=True, props=None):
        self.frames, self.opened, self.props = list(frames), opened, dict(props or {})
        self.released, self.set_calls = 0, []

    def isOpened(self):
        return self.opened

    def read(self):
        return (True, self.frames.pop(0)) if self.frames else (False, None)

    def get(self, prop):
        return self.props.get(prop, 0.0)

    def set(self, prop, value):
        self.set_calls.append((prop, value))

    def release(self):
        self.released += 1


class _SourceCv2:
    """The OpenCV calls sources makes, with distinct constants; VideoCapture returns ``capture``."""

    CAP_ANY, CAP_GSTREAMER, CAP_FFMPEG = 0, 1800, 1900
    CAP_PROP_OPEN_TIMEOUT_MSEC, CAP_PROP_READ_TIMEOUT_MSEC = 53, 54
    CAP_PROP_FPS, CAP_PROP_FRAME_COUNT, CAP_PROP_ORIENTATION_AUTO = 5, 7, 49
    COLOR_BGR2RGB, COLOR_GRAY2RGB = 4, 8
    __version__ = "4.99.0"

    def __init__(self, capture=None, gstreamer=True, log=True):
        self.capture, self.opened_with, self.levels = capture or _FakeCapture(), [], []
        self.gstreamer = gstreamer
        if log:
            fake = self

            class Logging:
                LOG_LEVEL_SILENT = 0

                @staticmethod
                def getLogLevel():
                    return 3

                @staticmethod
                def setLogLevel(level):
                    fake.levels.append((level, len(fake.opened_with)))

            self.utils = SimpleNamespace(logging=Logging)

    def getBuildInformation(self):
        return "  GStreamer:                   YES (1.20)" if self.gstreamer else "  GStreamer:                   NO"

    def VideoCapture(self, *args):
        self.opened_with.append(args)
        return self.capture

    def cvtColor(self, image, code):
        if code == self.COLOR_BGR2RGB:
            return image[:, :, ::-1]
        assert code == self.COLOR_GRAY2RGB
        return np.repeat(image[:, :, None], 3, axis=2)


def _use(monkeypatch, fake):
    monkeypatch.setattr(sources, "require_cv2", lambda what: fake)
    return fake


def test_captures_open_with_the_right_target_api_and_timeouts(monkeypatch):
    fake = _use(monkeypatch, _SourceCv2())
    assert sources._capture_target(sources.classify("2"), fake) == (2, fake.CAP_ANY, [])
    assert sources._capture_target(sources.classify("/dev/video0"), fake) == ("/dev/video0", fake.CAP_ANY, [])
    assert sources._capture_target(sources.classify("csi://1"), fake) == (sources.csi_pipeline(1), fake.CAP_GSTREAMER,
                                                                           [])
    assert sources._capture_target(sources.Source("csi", "csi", "csi://"), fake)[0] == sources.csi_pipeline(0)
    assert sources._capture_target(sources.classify("rtsp://h/s"), fake) == (
        "rtsp://h/s", fake.CAP_FFMPEG, [53, 5000, 54, 5000])
    assert sources._capture_target(sources.Source("video", "v", "v.mp4"), fake) == ("v.mp4", fake.CAP_ANY, [])
    assert sources.csi_pipeline(3) == (
        "nvarguscamerasrc sensor-id=3 ! video/x-raw(memory:NVMM), width=1280, height=720, framerate=30/1 ! "
        "nvvidconv ! video/x-raw, format=BGRx ! videoconvert ! video/x-raw, format=BGR ! appsink drop=1 max-buffers=2")
    assert "width=640, height=480, framerate=60/1" in sources.csi_pipeline(0, 640, 480, 60)


def test_opening_a_video_reads_its_fps_and_frame_count_quietly(monkeypatch):
    capture = _FakeCapture(props={5: 24.0, 7: 48.0})
    fake = _use(monkeypatch, _SourceCv2(capture))
    source = sources.Source("video", "v", "v.mp4")
    assert source.open() is source and source._capture is capture
    assert fake.opened_with == [("v.mp4", fake.CAP_ANY)]  # no parameters: the two-argument call
    assert (source.fps, source.expected_frames, source.total) == (24.0, 48, 48)
    assert capture.set_calls == [(49, 1)]  # portrait videos upright
    assert fake.levels == [(0, 0), (3, 1)]  # silent while opening, then as it was
    source.open()
    assert len(fake.opened_with) == 1  # opened once
    source.close()
    assert capture.released == 1 and source._capture is None
    source.close()
    assert capture.released == 1

    fake = _use(monkeypatch, _SourceCv2(_FakeCapture(props={7: -1.0}), log=False))
    source = sources.Source("video", "v", "v.mp4").open()
    assert (source.fps, source.expected_frames) == (0.0, None)

    stream_capture = _FakeCapture(props={5: 15.0, 7: 99.0})
    fake = _use(monkeypatch, _SourceCv2(stream_capture))
    stream = sources.classify("rtsp://h/s").open()
    assert fake.opened_with == [("rtsp://h/s", fake.CAP_FFMPEG, [53, 5000, 54, 5000])]
    assert (stream.fps, stream.expected_frames) == (15.0, None) and stream_capture.set_calls == [(49, 1)]

    camera_capture = _FakeCapture()
    _use(monkeypatch, _SourceCv2(camera_capture))
    sources.classify("0").open()
    assert camera_capture.set_calls == []  # a camera is not rotated


def test_captures_that_do_not_open_are_one_sentence(monkeypatch):
    for spec, kind, message in [
            ("v.mp4", "video", "v.mp4 is not a video OpenCV can read; check the file or convert it to mp4 (H.264)."),
            ("0", "camera", "Camera 0 cannot be opened: check that it is plugged in and not used by another program, "
                            "or list cameras with `v4l2-ctl --list-devices`."),
            ("csi://1", "csi", "CSI camera csi://1 cannot be opened: check that it is plugged in and not used by "
                               "another program, or list cameras with `v4l2-ctl --list-devices`."),
            ("rtsp://h/s", "stream", "Stream rtsp://h/s cannot be opened: it refused or did not answer within 5 s; "
                                     "check the address and the network.")]:
        capture = _FakeCapture(opened=False)
        _use(monkeypatch, _SourceCv2(capture))
        source = sources.Source(kind, "x", spec)
        with pytest.raises(InputFileError if kind == "video" else sources.SourceError) as error:
            source.open()
        assert str(error.value) == message and capture.released == 1
    _use(monkeypatch, _SourceCv2(gstreamer=False))
    with pytest.raises(sources.SourceError) as error:
        sources.classify("csi://0").open()
    assert str(error.value) == ("csi://0 needs OpenCV built with GStreamer (JetPack's python3-opencv); this OpenCV "
                                "4.99.0 has none.")


def test_capture_frames_are_rgb_named_by_index_and_an_early_end_is_said(monkeypatch):
    bgr = [np.full((4, 6, 3), (i, 100, 200), np.uint8) for i in range(3)]
    grey = np.full((4, 6), 77, np.uint8)
    capture = _FakeCapture(bgr + [grey], props={7: 10.0})
    _use(monkeypatch, _SourceCv2(capture))
    source = sources.Source("video", "drive", "drive.mp4")
    frames = list(source.frames())
    assert [(f.name, f.index, f.error) for f in frames] == [(f"drive_{i:06d}", i, None) for i in range(4)]
    for frame, original in zip(frames, bgr):
        np.testing.assert_array_equal(frame.image, original[:, :, ::-1])
    np.testing.assert_array_equal(frames[3].image, np.full((4, 6, 3), 77, np.uint8))
    assert all(f.decode_s >= 0 for f in frames)
    assert source.ended_early == "drive.mp4 ended after 4 of its 10 frames (the file is damaged or cut short)"

    _use(monkeypatch, _SourceCv2(_FakeCapture(bgr, props={7: 3.0})))
    whole = sources.Source("video", "drive", "drive.mp4")
    assert len(list(whole.frames())) == 3 and whole.ended_early is None
    _use(monkeypatch, _SourceCv2(_FakeCapture(bgr, props={7: 0.0})))
    unknown = sources.Source("video", "drive", "drive.mp4")
    assert len(list(unknown.frames())) == 3 and unknown.ended_early is None

    _use(monkeypatch, _SourceCv2(_FakeCapture(bgr)))
    stream = sources.Source("stream", "cam", "rtsp://h/cam")
    assert len(list(stream.frames())) == 3
    assert stream.ended_early == "rtsp://h/cam stopped sending frames after 3"
    # a bound reached is not an early end, even for a stream
    _use(monkeypatch, _SourceCv2(_FakeCapture(bgr)))
    bounded = sources.Source("stream", "cam", "rtsp://h/cam")
    assert [f.index for f in bounded.frames(max_frames=3)] == [0, 1, 2] and bounded.ended_early is None
    _use(monkeypatch, _SourceCv2(_FakeCapture(bgr)))
    stop = threading.Event()
    stop.set()
    stopped = sources.Source("stream", "cam", "rtsp://h/cam")
    assert list(stopped.frames(stop=stop)) == []


def test_require_cv2_quiets_ffmpeg_and_says_how_to_install(monkeypatch):
    import sys

    monkeypatch.delenv("OPENCV_FFMPEG_LOGLEVEL", raising=False)
    monkeypatch.setitem(sys.modules, "cv2", None)
    with pytest.raises(MissingDependencyError) as error:
        sources.require_cv2("Reading videos")
    assert str(error.value) == ("Reading videos needs OpenCV: pip install 'edgeseg[video]' (opencv-python-headless; on "
                                "Jetson use JetPack's python3-opencv). Images need only Pillow.")
    assert os.environ["OPENCV_FFMPEG_LOGLEVEL"] == "-8"
    monkeypatch.setenv("OPENCV_FFMPEG_LOGLEVEL", "24")
    with pytest.raises(MissingDependencyError):
        sources.require_cv2("x")
    assert os.environ["OPENCV_FFMPEG_LOGLEVEL"] == "24"


def test_stem_of_a_stream_address():
    assert sources._stem("h/a b//c") == "h_a_b_c"
    assert sources._stem("__x-1.2__") == "x-1.2"
    assert sources._stem("///") == "source"


# --- api: the tally, the stream count, the summary and what is said ------------------------------------------------

class _Clock:
    def __init__(self, now=100.0):
        self.now = now

    def perf_counter(self):
        return self.now


def test_tally_counts_pixels_per_class_and_grows_when_the_count_is_unknown(monkeypatch):
    tally = predict_api._Tally(None)
    assert tally.class_pixels.tolist() == [] and tally.class_pixels.dtype == np.int64
    tally.count(np.array([[0, 2], [2, 2]], np.uint8))
    assert tally.class_pixels.tolist() == [1, 0, 3]
    tally.count(np.array([[1, 1]], np.uint8))
    assert tally.class_pixels.tolist() == [1, 2, 3]
    tally.count(np.array([[4]], np.uint8))
    assert tally.class_pixels.tolist() == [1, 2, 3, 0, 1]
    known = predict_api._Tally(4)
    known.count(np.array([1, 1, 0], np.uint16))
    assert known.class_pixels.tolist() == [1, 2, 0, 0]
    assert known.seconds == {"decode": 0.0, "preprocess": 0.0, "inference": 0.0, "postprocess": 0.0, "encode": 0.0}
    assert known.frames == 0 and known.skipped == []


def test_tally_fps_and_status_line(monkeypatch):
    clock = _Clock(100.0)
    monkeypatch.setattr(predict_api, "time", clock)
    tally = predict_api._Tally(2)
    assert tally.status() == "0.0 FPS, ms: dec 0.0 pre 0.0 inf 0.0 post 0.0 enc 0.0"
    tally.frames = 4
    tally.seconds.update(decode=0.004, preprocess=0.008, inference=0.02, postprocess=0.012, encode=0.04)
    clock.now = 102.0
    assert tally.fps() == 2.0
    assert tally.status() == "2.0 FPS, ms: dec 1.0 pre 2.0 inf 5.0 post 3.0 enc 10.0"
    clock.now = 100.0
    assert tally.fps() == pytest.approx(4e9)  # no time passed: no division by zero
    tally.frames = 1  # per frame: one frame's seconds are its own
    assert tally.status().endswith("ms: dec 4.0 pre 8.0 inf 20.0 post 12.0 enc 40.0")


def test_stream_count_by_backend_device_cores_and_source(monkeypatch):
    files = [sources.Source("images", "in", "in")]
    monkeypatch.setattr(predict_api, "_cores", lambda: 2)
    assert predict_api.stream_count(None, "onnxruntime", "cpu", files) == 2
    assert predict_api.stream_count(3, "tensorrt", "cuda", files) == 3
    assert predict_api.stream_count(1, "onnxruntime", "cpu", files) == 1
    assert predict_api.stream_count(None, "tensorrt", "cpu", files) == 1
    assert predict_api.stream_count(None, "onnxruntime", "cuda", files) == 1
    for kind in ("camera", "csi", "stream"):
        assert predict_api.stream_count(None, "onnxruntime", "cpu", files + [sources.Source(kind, "c", "0")]) == 1
    assert predict_api.stream_count(None, "onnxruntime", "cpu", files + [sources.Source("video", "v", "v")]) == 2
    monkeypatch.setattr(predict_api, "_cores", lambda: 1)
    assert predict_api.stream_count(None, "onnxruntime", "cpu", files) == 1


def test_threads_per_stream_share_the_cores(monkeypatch):
    monkeypatch.setattr(predict_api, "_cores", lambda: 5)
    assert predict_api._threads_per_stream(1) is None
    assert predict_api._threads_per_stream(2) == 2
    assert predict_api._threads_per_stream(5) == 1
    monkeypatch.setattr(predict_api, "_cores", lambda: 1)
    assert predict_api._threads_per_stream(2) == 1


def test_cores_are_the_ones_this_process_may_use(monkeypatch):
    assert predict_api._cores() == len(os.sched_getaffinity(0))
    monkeypatch.delattr(os, "sched_getaffinity")
    monkeypatch.setattr(os, "cpu_count", lambda: 6)
    assert predict_api._cores() == 6
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert predict_api._cores() == 1


@pytest.mark.parametrize("kwargs, message", [
    (dict(sources=[]), "Give at least one SOURCE: an image, a folder, a video, a camera (0) or a stream address."),
    (dict(alpha=1.5), "--alpha must be between 0 and 1, got 1.5."),
    (dict(alpha=-0.1), "--alpha must be between 0 and 1, got -0.1."),
    (dict(max_frames=0), "--max-frames must be at least 1, got 0."),
    (dict(streams=0), "--streams must be at least 1, got 0."),
])
def test_predict_refuses_bad_options_in_one_sentence(ramp, tmp_path, kwargs, message):
    _png(tmp_path / "a.png")
    args = dict(sources=[str(tmp_path / "a.png")])
    args.update(kwargs)
    with pytest.raises(ConfigError) as error:
        predict_api.predict(str(ramp), args.pop("sources"), tmp_path / "out", **args)
    assert str(error.value) == message
    assert not (tmp_path / "out").exists()


def test_predict_accepts_the_bounds_of_its_options(ramp, tmp_path, monkeypatch):
    monkeypatch.setattr(predict_api, "say", _Said())
    image = _png(tmp_path / "a.png", 3)
    for alpha in (0.0, 1.0):
        summary = predict_api.predict(str(ramp), str(image), tmp_path / f"out{alpha}", alpha=alpha, max_frames=1,
                                      streams=1, save=["overlays"])
        assert summary["frames"] == 1
    overlay = np.asarray(Image.open(tmp_path / "out1.0" / "overlays" / "a.jpg").convert("RGB")).astype(np.int64)
    golden = np.asarray(_golden(CLASSES))
    assert np.abs(overlay - golden[_expected(_bands([3]))]).mean() < 4  # alpha 1: the class colour itself
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError) as error:
        predict_api.predict(str(ramp), str(image), tmp_path / "file")
    assert str(error.value) == f"--out {tmp_path / 'file'} is a file; give a folder for the masks and overlays."


def test_the_summary_counts_and_names_what_was_done(ramp, tmp_path, monkeypatch):
    said = _Said()
    monkeypatch.setattr(predict_api, "say", said)
    monkeypatch.setattr(predict_api, "_cores", lambda: 4)
    for name, classes in {"a": [0, 0, 0, 5], "b": [7, 7]}.items():
        Image.fromarray(_bands(classes)).save(_png(tmp_path / "in" / f"{name}.png"))
    (tmp_path / "in" / "c.png").write_bytes(b"broken")
    summary = predict_api.predict(str(ramp), [str(tmp_path / "in")], tmp_path / "out", json_out=str(tmp_path / "s.json"))
    assert json.loads((tmp_path / "s.json").read_text()) == summary
    assert summary["model"] == str(ramp) and summary["backend"] == "onnxruntime" and summary["output"] == "logits"
    assert summary["streams"] == 2  # onnxruntime on a 4-core CPU reading files
    assert summary["sources"] == [{"source": str(tmp_path / "in"), "kind": "images"}]
    assert summary["out"] == str(tmp_path / "out") and summary["frames"] == 2 and summary["skipped"] == 1
    assert len(summary["skipped_files"]) == 1 and summary["skipped_files"][0].startswith("c: ")
    assert summary["interrupted"] is False
    assert summary["written"] == {"masks": 2, "overlays": 2, "videos": 0} and summary["videos"] == []
    assert [f["input"] for f in summary["files"]] == [str(tmp_path / "in" / "a.png"), str(tmp_path / "in" / "b.png")]
    assert set(summary["phases_ms"]) == set(predict_api.PHASES) and all(v > 0 for v in summary["phases_ms"].values())
    assert summary["fps"] == round(2 / summary["wall_s"], 3) or abs(summary["fps"] - 2 / summary["wall_s"]) < 0.01 * \
        summary["fps"]
    # a: 3/4 class 0, 1/4 class 5; b: all class 7; of 512 pixels (json_out turns the count on)
    assert summary["class_share_percent"] == {"class0": 37.5, "class1": 0.0, "class2": 0.0, "class3": 0.0,
                                              "class4": 0.0, "class5": 12.5, "class6": 0.0, "class7": 50.0}
    phases = ", ".join(f"{k} {v:.2f}" for k, v in summary["phases_ms"].items())
    assert said == [f"2 frame(s) at {summary['fps']:.1f} FPS (ms/frame: {phases}); wrote 2 masks, 2 overlays in "
                    f"{tmp_path / 'out'}", "[yellow]1 unreadable image(s) skipped[/yellow]"]


def test_shares_are_rounded_to_4_decimals_and_named_past_the_known_classes(tmp_path, monkeypatch):
    monkeypatch.setattr(predict_api, "say", _Said())
    model = _ramp_onnx(tmp_path / "cm.onnx", class_map=True)
    image = np.zeros((SIZE, SIZE, 3), np.uint8)
    image[:, :, 0] = _red(6)
    image[0, :3, 0] = _red(1)  # 3 of 256 pixels in class 1
    Image.fromarray(image).save(tmp_path / "x.png")
    summary = predict_api.predict(str(model), [str(tmp_path / "x.png")], tmp_path / "out", save=["masks"], stats=True,
                                  facts=ModelFacts(num_classes=2))
    # the facts say 2 classes, the map holds 6 too: counted and named all the same
    assert summary["class_share_percent"] == {"class0": 0.0, "class1": round(100 * 3 / 256, 4), "class2": 0.0,
                                              "class3": 0.0, "class4": 0.0, "class5": 0.0,
                                              "class6": round(100 * 253 / 256, 4)}


def test_the_stats_table_and_a_run_with_nothing_written(ramp, tmp_path, monkeypatch):
    from rich.console import Console

    import edgeseg.console

    said = _Said()
    monkeypatch.setattr(predict_api, "say", said)
    recorded = Console(record=True, width=120, file=open(os.devnull, "w"))
    monkeypatch.setattr(edgeseg.console, "out", recorded)
    _png(tmp_path / "in" / "a.png", 2)
    summary = predict_api.predict(str(ramp), [str(tmp_path / "in")], tmp_path / "out", save=["none"], stats=True)
    table = recorded.export_text()
    lines = table.splitlines()
    header = next(line for line in lines if line.startswith("┃"))
    assert "".join("".join(lines[:lines.index(header) - 1]).split()) == "Shareofpixelsperclass"
    assert [cell.strip() for cell in header.split("┃")[1:-1]] == ["class", "% of pixels"]
    body = [line.split("│")[1:-1] for line in lines if line.startswith("│")]
    assert {name.strip(): value.strip() for name, value in body} == {
        f"class{i}": ("100.00" if i == 2 else "0.00") for i in range(CLASSES)}
    assert all(value.startswith("  ") and value.endswith("0 ") for _, value in body)  # numbers to the right
    assert said[0].endswith(f"wrote nothing in {tmp_path / 'out'}") and len(said) == 1
    assert summary["written"] == {"masks": 0, "overlays": 0, "videos": 0}
    # without --stats nothing is counted and no table printed
    recorded = Console(record=True, width=120, file=open(os.devnull, "w"))
    monkeypatch.setattr(edgeseg.console, "out", recorded)
    summary = predict_api.predict(str(ramp), [str(tmp_path / "in")], tmp_path / "out2", save=["none"])
    assert summary["class_share_percent"] == {} and recorded.export_text() == ""


# --- the Segmenter ------------------------------------------------------------------------------------------------

def test_as_rgb_takes_arrays_pil_images_and_paths(tmp_path):
    from edgeseg.predict.segmenter import as_rgb

    rgb = _bands([1, 4])
    assert as_rgb(rgb) is not None
    np.testing.assert_array_equal(as_rgb(rgb), rgb)
    grey = rgb[:, :, 0]
    np.testing.assert_array_equal(as_rgb(grey), np.repeat(grey[:, :, None], 3, axis=2))
    rgba = np.concatenate([rgb, np.full((SIZE, SIZE, 1), 9, np.uint8)], axis=2)
    got = as_rgb(rgba)
    np.testing.assert_array_equal(got, rgb)
    assert got.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(as_rgb(Image.fromarray(rgba)), rgb)
    np.testing.assert_array_equal(as_rgb(Image.fromarray(grey)), np.repeat(grey[:, :, None], 3, axis=2))
    Image.fromarray(rgb).save(tmp_path / "x.png")
    np.testing.assert_array_equal(as_rgb(tmp_path / "x.png"), rgb)
    np.testing.assert_array_equal(as_rgb(str(tmp_path / "x.png")), rgb)
    for image, message in [
            (3, "Segmenter takes an HxWx3 uint8 RGB array, a PIL image or a path, not int."),
            (rgb.astype(np.float32), "Segmenter takes uint8 images (0-255), got float32; convert with "
                                     "(image * 255).astype(np.uint8) if yours is 0-1 floats."),
            (rgb[:, :, :2], "Segmenter takes an HxWx3 RGB array, got shape (16, 16, 2)."),
            (rgb[None], "Segmenter takes an HxWx3 RGB array, got shape (1, 16, 16, 3).")]:
        with pytest.raises(ConfigError) as error:
            as_rgb(image)
        assert str(error.value) == message


def test_segmenter_masks_overlay_palette_and_names(ramp):
    import edgeseg

    images = [_bands([0, 3, 5, 7]), _bands([6], size=32), _bands([2], size=8)]  # resized: each its own size
    with edgeseg.Segmenter(ramp) as seg:
        assert seg.num_classes == CLASSES and seg.max_batch == 8 and seg.device == "cpu"
        assert seg.runner.spin_wait is True
        for image in images:
            mask = seg(image)
            assert mask.dtype == np.uint8
            np.testing.assert_array_equal(mask, _expected(image))
        assert seg.class_names() == [f"class{i}" for i in range(CLASSES)]
        assert seg.palette.tolist() == [list(c) for c in _golden(CLASSES)]
        assert seg.palette is seg.palette  # made once
        got = seg.overlay(images[0], seg(images[0]), alpha=0.3).astype(np.float64)
        assert np.abs(got - _reference_blend(images[0], _expected(images[0]), _golden(CLASSES), 0.3)).max() <= 1
        half = seg.overlay(images[0], seg(images[0])).astype(np.float64)
        assert np.abs(half - _reference_blend(images[0], _expected(images[0]), _golden(CLASSES), 0.5)).max() <= 1


def test_segmenter_batches_max_batch_at_a_time(ramp):
    import edgeseg

    images = [_bands([i % 8, (i + 3) % 8]) for i in range(5)] + [_bands([2, 6], size=24)]
    with edgeseg.Segmenter(ramp, max_batch=2) as seg:
        sizes = []
        infer = seg.runner.infer
        seg.runner.infer = lambda batch: sizes.append(len(batch)) or infer(batch)
        masks = seg.batch(images)
    assert sizes == [2, 2, 2]
    assert len(masks) == 6
    for mask, image in zip(masks, images):
        np.testing.assert_array_equal(mask, _expected(image))
    with pytest.raises(ConfigError) as error:
        edgeseg.Segmenter(ramp, max_batch=0)
    assert str(error.value) == "max_batch must be at least 1, got 0."


def test_segmenter_opens_more_streams_and_closes_them_all(ramp):
    import edgeseg

    seg = edgeseg.Segmenter(ramp, spin_wait=False, threads=1)
    assert seg.runner.spin_wait is False
    more = seg.add_streams(2)
    assert len(more) == 2 and seg.more_runners is more and all(r is not seg.runner for r in more)
    assert all(r.spin_wait is False for r in more)
    image = _bands([1, 6])
    for runner in more:
        np.testing.assert_array_equal(seg.finish(runner.infer(seg.prepare(image)), (SIZE, SIZE)), _expected(image))
    closed = []
    for runner in [seg.runner, *more]:
        runner.deactivate = (lambda r: lambda: closed.append(r))(runner)
    with seg:
        pass
    assert closed == [seg.runner, *more] and seg.more_runners == []


def test_finish_refuses_logits_of_another_class_count_and_learns_an_unknown_one(ramp):
    import edgeseg

    with edgeseg.Segmenter(ramp) as seg:
        logits = np.zeros((1, 5, 4, 4), np.float32)
        logits[:, 3] = 1.0
        with pytest.raises(ConfigError) as error:
            seg.finish(logits, (4, 4))
        assert str(error.value) == ("ramp.onnx outputs 5 classes, not the 8 it was described with; give the matching "
                                    "ModelFacts(num_classes=...)/dataset.")
        seg.num_classes = None
        np.testing.assert_array_equal(seg.finish(logits, (8, 6)), np.full((8, 6), 3))
        assert seg.num_classes == 5
        # a class map is resized nearest to the size asked for
        classes = np.array([[[0, 1], [2, 3]]], np.int64)
        np.testing.assert_array_equal(seg.finish(classes, (4, 4)), np.kron([[0, 1], [2, 3]], np.ones((2, 2), int)))


def test_segmenter_with_a_dataset_takes_its_names_and_palette(ramp):
    import edgeseg

    info = DatasetInfo(num_classes=CLASSES, classes=tuple(f"c{i}" for i in range(CLASSES)), palette=tuple(
        tuple(int(v) for v in c) for c in PALETTE[:3]), name="mine")
    with edgeseg.Segmenter(ramp, facts=ModelFacts(dataset=info)) as seg:
        assert seg.class_names() == [f"c{i}" for i in range(CLASSES)]
        assert seg.palette.tolist() == PALETTE[:3].tolist() + [list(c) for c in _golden(CLASSES)[3:]]


def test_stream_skips_unreadable_images_and_closes_the_source(ramp, tmp_path):
    import edgeseg

    for index in range(3):
        _png(tmp_path / "in" / f"{index}.png", index + 2)
    (tmp_path / "in" / "0b.png").write_bytes(b"broken")
    with edgeseg.Segmenter(ramp) as seg:
        got = list(seg.stream(tmp_path / "in"))
        assert len(got) == 3
        for (frame, mask), cls in zip(got, (2, 3, 4)):
            np.testing.assert_array_equal(frame, _bands([cls]))
            np.testing.assert_array_equal(mask, _expected(_bands([cls])))
        assert [m[0, 0] for _, m in seg.stream(str(tmp_path / "in"), max_frames=2)] == [2]  # the broken one counts


# --- api: captures that end early, Ctrl-C, refusals before the model loads -----------------------------------------

def _fake_video(monkeypatch, tmp_path, frames, count, fail_at=None, name="drive.mp4"):
    """A .mp4 path whose capture is an OpenCV double giving ``frames`` (RGB) and saying ``count`` frames;
    ``fail_at``: Ctrl-C at that read."""
    (tmp_path / name).write_bytes(b"x")
    bgr = [f[:, :, ::-1].copy() for f in frames]

    class Capture(_FakeCapture):
        def read(self):
            self.reads = getattr(self, "reads", 0) + 1
            if fail_at is not None and self.reads == fail_at:
                raise KeyboardInterrupt
            return super().read()

    capture = Capture(bgr, props={5: 10.0, 7: float(count)})
    _use(monkeypatch, _SourceCv2(capture))
    return tmp_path / name, capture


def test_a_video_that_ends_early_says_so_and_keeps_what_was_read(ramp, tmp_path, monkeypatch):
    said = _Said()
    monkeypatch.setattr(predict_api, "say", said)
    frames = [_bands([i, 7 - i]) for i in range(3)]
    path, capture = _fake_video(monkeypatch, tmp_path, frames, 10)
    summary = predict_api.predict(str(ramp), [str(path)], tmp_path / "out", save=["masks"])
    assert summary["frames"] == 3 and capture.released >= 1
    early = f"{path} ended after 3 of its 10 frames (the file is damaged or cut short)"
    assert summary["sources"] == [{"source": str(path), "kind": "video", "ended_early": early}]
    assert f"[yellow]{early}; the output holds every frame read[/yellow]" in said
    for index, frame in enumerate(frames):
        np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "out" / "masks" / f"drive_{index:06d}.png")),
                                      _expected(frame))
    said.clear()
    path, _ = _fake_video(monkeypatch, tmp_path, frames, 10)
    summary = predict_api.predict(str(ramp), [str(path)], tmp_path / "out2")
    assert f"[yellow]{early}; drive.mp4 holds every frame read[/yellow]" in said
    assert summary["videos"] == [str(tmp_path / "out2" / "drive.mp4")] and summary["written"]["videos"] == 1
    said.clear()
    path, _ = _fake_video(monkeypatch, tmp_path, frames, 3)
    summary = predict_api.predict(str(ramp), [str(path)], tmp_path / "out3", save=["masks"])
    assert summary["sources"] == [{"source": str(path), "kind": "video"}]
    assert not any("holds every frame" in s for s in said)


def test_ctrl_c_ends_the_run_with_complete_files_and_says_so(ramp, tmp_path, monkeypatch):
    cv2 = _cv2()
    said = _Said()
    monkeypatch.setattr(predict_api, "say", said)
    frames = [_bands([i, 7 - i]) for i in range(5)]
    path, capture = _fake_video(monkeypatch, tmp_path, frames, 5, fail_at=4)
    summary = predict_api.predict(str(ramp), [str(path)], tmp_path / "out", save=["video"])
    assert summary["interrupted"] is True and summary["frames"] == 3
    assert "[yellow]Interrupted: every file written so far is complete[/yellow]" in said
    capture_out = cv2.VideoCapture(str(tmp_path / "out" / "drive.mp4"))
    assert int(capture_out.get(cv2.CAP_PROP_FRAME_COUNT)) == 3 and capture_out.get(cv2.CAP_PROP_FPS) == 10.0
    capture_out.release()
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["drive.mp4"]


def test_a_camera_that_does_not_open_fails_before_the_model_loads(ramp, tmp_path, monkeypatch):
    capture = _FakeCapture(opened=False)
    _use(monkeypatch, _SourceCv2(capture))
    opened = []
    monkeypatch.setattr(predict_api, "Segmenter", lambda *a, **k: opened.append(a))
    with pytest.raises(sources.SourceError, match="Camera 0 cannot be opened"):
        predict_api.predict(str(ramp), ["0"], tmp_path / "out")
    assert opened == [] and not (tmp_path / "out").exists()


def test_a_dataset_with_another_class_count_is_refused(ramp, tmp_path):
    info = DatasetInfo(num_classes=5, name="mine")
    _png(tmp_path / "a.png")
    with pytest.raises(ConfigError) as error:
        predict_api.predict(str(ramp), [str(tmp_path / "a.png")], tmp_path / "out", facts=ModelFacts(dataset=info))
    message = str(error.value)
    assert " says 8 classes but the dataset given for class names (--data, mine) says 5; give the dataset the model " \
           "was trained on (or fix num_classes in its dataset.yaml), or " in message
    assert not (tmp_path / "out").exists()
    # the same count is welcome, and names the classes
    info = DatasetInfo(num_classes=8, classes=tuple("abcdefgh"), name="mine")
    summary = predict_api.predict(str(ramp), [str(tmp_path / "a.png")], tmp_path / "out", facts=ModelFacts(dataset=info),
                                  stats=True)
    assert list(summary["class_share_percent"]) == list("abcdefgh")


def test_streams_share_the_cores_between_their_sessions(ramp, tmp_path, monkeypatch):
    made = []
    real = predict_api.Segmenter

    def spy(*args, **kwargs):
        made.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(predict_api, "Segmenter", spy)
    monkeypatch.setattr(predict_api, "_cores", lambda: 6)
    _png(tmp_path / "a.png")
    summary = predict_api.predict(str(ramp), [str(tmp_path / "a.png")], tmp_path / "out", streams=3)
    assert summary["streams"] == 3 and made[0]["threads"] == 2 and made[0]["spin_wait"] is False
    summary = predict_api.predict(str(ramp), [str(tmp_path / "a.png")], tmp_path / "out", streams=3, threads=5)
    assert made[1]["threads"] == 5
    summary = predict_api.predict(str(ramp), [str(tmp_path / "a.png")], tmp_path / "out", streams=1)
    assert summary["streams"] == 1 and made[2]["threads"] is None


# --- api: each phase's time, the progress bar, the skipped line, the streams -------------------------------------

class _ThreadClock:
    """perf_counter per thread, advancing ``step`` s at each call: a phase timed by two consecutive calls in one
    thread lasts exactly ``step``, whatever the other threads do."""

    def __init__(self, step):
        self.step, self.local = step, threading.local()

    def perf_counter(self):
        self.local.now = getattr(self.local, "now", 1000.0) + self.step
        return self.local.now


def test_each_phase_is_timed_per_frame(ramp, tmp_path, monkeypatch):
    from edgeseg.data.images import read_image

    monkeypatch.setattr(predict_api, "say", _Said())
    clock = _ThreadClock(0.5)
    monkeypatch.setattr(predict_api, "time", clock)
    monkeypatch.setattr(sources, "time", clock)
    printed = []
    monkeypatch.setattr(predict_api, "console", SimpleNamespace(print=printed.append))
    bars = []

    import contextlib

    @contextlib.contextmanager
    def progress_bar(label, total):
        steps = []
        bars.append((label, total, steps))
        yield lambda n=1, status="": steps.append((n, status))

    monkeypatch.setattr(predict_api, "progress_bar", progress_bar)
    folder = tmp_path / "a_folder_named_longer_than_24_characters"
    for index in range(4):
        _png(folder / f"{index}.png", index)
    (folder / "2b.png").write_bytes(b"broken")
    try:
        read_image(folder / "2b.png", upright=True)
    except DataError as exc:
        error = str(exc)
    for streams in (1, 2):
        bars.clear()
        printed.clear()
        summary = predict_api.predict(str(ramp), [str(folder)], tmp_path / f"out{streams}", save=["masks"],
                                      streams=streams)
        assert summary["frames"] == 4 and summary["skipped"] == 1
        # 4 frames each 0.5 s per phase; 5 decoded (the broken one too)
        assert summary["phases_ms"] == {"decode": 625.0, "preprocess": 500.0, "inference": 500.0,
                                        "postprocess": 500.0, "encode": 500.0}
        assert summary["skipped_files"] == [f"2b: {error}"]
        assert printed == [f"[yellow]skipped {error.replace('[', chr(92) + '[')}[/yellow]"]
        assert [(label, total) for label, total, _ in bars] == [("a_folder_named_longer_th", 5)]
        steps = bars[0][2]
        assert [n for n, _ in steps] == [1] * 5
        assert [s == "" for _, s in steps] == [False, False, False, True, False]  # the skipped one has no status
        assert all(s.endswith("FPS, ms: dec 625.0 pre 500.0 inf 500.0 post 500.0 enc 500.0") or "FPS, ms: dec" in s
                   for _, s in steps if s)
        assert steps[-1][1].endswith("FPS, ms: dec 625.0 pre 500.0 inf 500.0 post 500.0 enc 500.0")


def test_two_streams_both_infer(ramp, tmp_path, monkeypatch):
    import time as real_time

    monkeypatch.setattr(predict_api, "say", _Said())
    used = []
    real = predict_api.Segmenter

    def slow(runner, tag):
        infer = runner.infer

        def wrapped(batch):
            used.append(tag)
            real_time.sleep(0.02)
            return infer(batch)

        runner.infer = wrapped

    class Spy(real):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            slow(self.runner, "first")

        def add_streams(self, count):
            more = super().add_streams(count)
            for runner in more:
                slow(runner, "more")
            return more

    monkeypatch.setattr(predict_api, "Segmenter", Spy)
    for index in range(8):
        _png(tmp_path / "in" / f"{index}.png", index)
    summary = predict_api.predict(str(ramp), [str(tmp_path / "in")], tmp_path / "out", save=["masks"], streams=2)
    assert summary["frames"] == 8 and sorted(set(used)) == ["first", "more"] and len(used) == 8
    for index in range(8):
        np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "out" / "masks" / f"{index}.png")),
                                      _expected(_bands([index])))


def test_closing_the_window_stops_decoding_too(ramp, tmp_path, monkeypatch):
    monkeypatch.setattr(predict_api, "say", _Said())
    fake = _FakeCv2(key=ord("q"))
    monkeypatch.setattr(writers, "require_cv2", lambda what: fake)
    monkeypatch.setenv("DISPLAY", ":1")
    decoded = []
    real = sources.read_image
    monkeypatch.setattr(sources, "read_image", lambda path, upright: decoded.append(path) or real(path, upright))
    for index in range(60):
        _png(tmp_path / "in" / f"{index:02d}.png", index % 8)
    summary = predict_api.predict(str(ramp), [str(tmp_path / "in")], tmp_path / "out", save=["masks"], show=True,
                                  streams=1)
    assert summary["frames"] == 1 and len(fake.shown) == 1
    assert len(decoded) < 30  # the producer stopped: not every image was decoded


# --- smaller edges: EXIF orientation, defaults, folders made, several videos ----------------------------------------

def _portrait_jpeg(path: Path) -> np.ndarray:
    """A JPEG stored 16 wide x 8 high with EXIF orientation 6 (turn 90 degrees clockwise to view): returns the
    stored pixels; viewed upright it is 8 wide x 16 high."""
    stored = np.zeros((8, 16, 3), np.uint8)
    stored[:, :8, 0] = 255
    image = Image.fromarray(stored)
    exif = Image.Exif()
    exif[0x0112] = 6
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, exif=exif, quality=95)
    return stored


def test_photos_are_read_upright_as_their_exif_says(tmp_path):
    from edgeseg.predict.segmenter import as_rgb

    _portrait_jpeg(tmp_path / "phone.jpg")
    upright = as_rgb(tmp_path / "phone.jpg")
    assert upright.shape == (16, 8, 3)
    assert upright[1, 4, 0] > 200 and upright[14, 4, 0] < 50  # the red half went to the top
    frame = next(sources.Source("images", "in", "in", [tmp_path / "phone.jpg"], ["phone"]).frames())
    np.testing.assert_array_equal(frame.image, upright)
    with pytest.raises(InputFileError) as error:
        as_rgb(tmp_path / "gone.png")
    assert str(error.value) == f"Image {tmp_path / 'gone.png'} does not exist; check the path."
    with pytest.raises(ConfigError) as error:
        as_rgb(np.zeros((2, 2, 3, 3), np.uint8))
    assert str(error.value) == "Segmenter takes an HxWx3 RGB array, got shape (2, 2, 3, 3)."


def test_predict_defaults_show_no_window_and_trust_nothing(ramp, tmp_path, monkeypatch):
    window_said = _Said()
    monkeypatch.setattr(writers, "say", window_said)
    monkeypatch.setattr(predict_api, "say", _Said())
    _no_display(monkeypatch)
    made = []
    real = predict_api.Segmenter
    monkeypatch.setattr(predict_api, "Segmenter", lambda *a, **k: made.append((a, k)) or real(*a, **k))
    _png(tmp_path / "a.png")
    predict_api.predict(str(ramp), [str(tmp_path / "a.png")], tmp_path / "out")
    assert window_said == []  # no --show, so no window (and no line about one)
    assert made[0][0] == (str(ramp), "cpu")
    assert {k: made[0][1][k] for k in ("trust_checkpoint", "trust_engine", "allow_engine_host_code", "facts")} == {
        "trust_checkpoint": False, "trust_engine": False, "allow_engine_host_code": False, "facts": None}
    facts = ModelFacts(num_classes=8)
    predict_api.predict(str(ramp), [str(tmp_path / "a.png")], tmp_path / "out", trust_checkpoint=True,
                        trust_engine=True, allow_engine_host_code=True, facts=facts)
    assert {k: made[1][1][k] for k in ("trust_checkpoint", "trust_engine", "allow_engine_host_code", "facts")} == {
        "trust_checkpoint": True, "trust_engine": True, "allow_engine_host_code": True, "facts": facts}


def test_video_out_edges(tmp_path, monkeypatch):
    import sys

    assert writers.VideoOut(tmp_path / "v.mp4", 0.5).fps == 0.5
    fresh = writers.VideoOut(tmp_path / "v.mp4", 10)
    fresh.discard()  # nothing written yet: nothing to remove
    assert fresh.frames == 0 and fresh.tmp is None
    if importlib_util_find("cv2"):
        done = writers.VideoOut(tmp_path / "done.mp4", 10)
        done.write(np.zeros((16, 16, 3), np.uint8))
        assert done.close() == tmp_path / "done.mp4"
        done.discard()  # after close: the finished file stays
        assert (tmp_path / "done.mp4").is_file()
    monkeypatch.setitem(sys.modules, "cv2", None)
    with pytest.raises(MissingDependencyError) as error:
        writers.VideoOut(tmp_path / "x.mp4", 10).write(np.zeros((4, 4, 3), np.uint8))
    assert str(error.value).startswith("Writing a video needs OpenCV: pip install 'edgeseg[video]'")
    window = writers.Window.__new__(writers.Window)
    window.available = True
    with pytest.raises(MissingDependencyError) as error:
        window.show(np.zeros((2, 2, 3), np.uint8))
    assert str(error.value).startswith("--show needs OpenCV")


def importlib_util_find(name):
    import importlib.util

    return importlib.util.find_spec(name) is not None


def test_outputs_make_the_folders_they_need_and_count_every_video(tmp_path, monkeypatch):
    _cv2()
    said = _Said()
    monkeypatch.setattr(writers, "say", said)
    _no_display(monkeypatch)
    out = tmp_path / "not" / "there"
    outputs = writers.Outputs(out, {"video"}, PALETTE, 0.5, show=False)
    assert outputs.end() is None and outputs.files == []  # nothing begun: nothing to finish
    frame = _bands([1, 5])
    for name in ("v1/drive", "v2/drive"):
        outputs.begin(_Capture(name=name, spec=f"{name}.mp4"))
        outputs.write(f"{name}_000000", frame, _expected(frame).astype(np.uint8))
        outputs.end()
    assert outputs.written["videos"] == 2 and outputs.videos == [str(out / "v1/drive.mp4"), str(out / "v2/drive.mp4")]
    assert outputs.files == [{"input": "v1/drive.mp4", "video": "v1/drive.mp4"},
                             {"input": "v2/drive.mp4", "video": "v2/drive.mp4"}]
    deep = tmp_path / "deep"
    outputs = writers.Outputs(deep, {"masks", "overlays"}, PALETTE, 0.5, show=False)
    outputs.begin(_images_source(tmp_path, ["x/y/z"]))
    outputs.write("x/y/z", frame, _expected(frame).astype(np.uint8))
    assert (deep / "masks" / "x" / "y" / "z.png").is_file() and (deep / "overlays" / "x" / "y" / "z.jpg").is_file()
    assert said == []


def test_walk_follows_a_linked_folder_once_and_goes_on_after_a_loop(tmp_path):
    outside = tmp_path / "outside"
    _png(outside / "o.png")
    root = tmp_path / "root"
    _png(root / "a.png")
    _png(root / "sub" / "b.png")
    _png(root / "zz" / "c.png")
    (root / "linked").symlink_to(outside, target_is_directory=True)
    (root / "sub" / "loop").symlink_to(root, target_is_directory=True)
    images, others = sources._walk(root)
    assert [p.relative_to(root).as_posix() for p in images] == ["a.png", "linked/o.png", "sub/b.png", "zz/c.png"]
    assert others == {}
    assert sources._glob_root(Path("a/X/*.png")) == Path("a/X")


def test_cores_are_the_affinity_not_the_machine(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    assert predict_api._cores() == 1


def test_tally_stays_integer_when_it_grows():
    tally = predict_api._Tally(None)
    tally.count(np.array([3, 3], np.uint8))
    assert tally.class_pixels.dtype == np.int64 and tally.class_pixels.tolist() == [0, 0, 0, 2]


def test_a_16_bit_mask_is_painted_from_the_table_even_when_it_is_short():
    image = np.full((2, 2, 3), 10, np.uint8)
    table = np.array([[200, 0, 0], [0, 200, 0], [0, 0, 200]], np.uint8)
    mask = np.array([[0, 1], [2, 1]], np.uint16)
    np.testing.assert_array_equal(np.asarray(colors.blend(Image.fromarray(image), mask, table, 1.0)), table[mask])


def test_opencv_missing_is_said_wherever_a_capture_or_window_needs_it(monkeypatch):
    import sys

    source = sources.Source("video", "v", "v.mp4")
    source._capture = _FakeCapture([np.zeros((2, 2, 3), np.uint8)])
    monkeypatch.setitem(sys.modules, "cv2", None)
    with pytest.raises(MissingDependencyError) as error:
        list(source.frames())
    assert str(error.value).startswith("Reading videos and cameras needs OpenCV: ")
    with pytest.raises(MissingDependencyError) as error:
        sources.Source("video", "w", "w.mp4").open()
    assert str(error.value).startswith("Reading videos and cameras needs OpenCV: ")
    window = writers.Window.__new__(writers.Window)
    window.available = True
    with pytest.raises(MissingDependencyError) as error:
        window.close()
    assert str(error.value).startswith("--show needs OpenCV: ")


def test_capture_frames_time_each_decode_and_stop_on_an_empty_read(monkeypatch):
    class Capture(_FakeCapture):
        def read(self):
            return (True, None) if not self.frames else super().read()  # a read that says ok but gives nothing

    _use(monkeypatch, _SourceCv2(Capture([np.zeros((2, 2, 3), np.uint8)] * 2)))
    monkeypatch.setattr(sources, "time", _ThreadClock(0.25))
    frames = list(sources.Source("stream", "s", "rtsp://h/s").frames())
    assert [f.decode_s for f in frames] == [0.25, 0.25]


class _OldCv2(_SourceCv2):
    """OpenCV 4.1 (JetPack 4): no CAP_PROP_ORIENTATION_AUTO."""

    @property
    def CAP_PROP_ORIENTATION_AUTO(self):
        raise AttributeError("CAP_PROP_ORIENTATION_AUTO")


def test_frame_counts_and_an_old_opencv_without_auto_rotation(monkeypatch):
    capture = _FakeCapture(props={5: 25.0})
    _use(monkeypatch, _OldCv2(capture))
    source = sources.Source("video", "v", "v.mp4").open()
    assert capture.set_calls == [] and (source.fps, source.expected_frames) == (25.0, None)  # no count: unknown
    for count in (1, 2):
        _use(monkeypatch, _SourceCv2(_FakeCapture(props={7: float(count)})))
        assert sources.Source("video", "v", "v.mp4").open().expected_frames == count


def test_stream_names_keep_capitals_and_strip_only_underscores():
    assert sources.classify("rtsp://Cam/Front").name == "Cam_Front"
    assert sources._stem("Xa_") == "Xa"


def test_max_frames_counts_skipped_images_and_stops_before_a_source_with_none_left(ramp, tmp_path, monkeypatch):
    monkeypatch.setattr(predict_api, "say", _Said())
    for index in range(2):
        _png(tmp_path / "in" / f"{index}.png", index)
    (tmp_path / "in" / "1b.png").write_bytes(b"broken")
    frames = [_bands([i, 7 - i]) for i in range(5)]
    path, _ = _fake_video(monkeypatch, tmp_path, frames, 5)
    # 3 images (one unreadable) count towards 4: the video gives 1 frame
    summary = predict_api.predict(str(ramp), [str(tmp_path / "in"), str(path)], tmp_path / "out", save=["masks"],
                                  max_frames=4)
    assert summary["frames"] == 3 and summary["skipped"] == 1
    assert sorted(p.name for p in (tmp_path / "out" / "masks").iterdir()) == ["0.png", "1.png", "drive_000000.png"]
    # two videos (images always run first): the first gives the 3 frames asked for; the second is not started
    begun = []
    real_begin = writers.Outputs.begin
    monkeypatch.setattr(writers.Outputs, "begin", lambda self, source: begun.append(source.name) or real_begin(
        self, source))
    path, _ = _fake_video(monkeypatch, tmp_path, frames, 5)
    (tmp_path / "later.mp4").write_bytes(b"x")
    summary = predict_api.predict(str(ramp), [str(path), str(tmp_path / "later.mp4")], tmp_path / "out2",
                                  save=["masks"], max_frames=3)
    assert summary["frames"] == 3 and begun == ["drive"]
    assert sorted(p.name for p in (tmp_path / "out2" / "masks").iterdir()) == [f"drive_{i:06d}.png" for i in range(3)]


def test_predict_makes_a_nested_out_and_writes_to_predictions_by_default(ramp, tmp_path, monkeypatch):
    monkeypatch.setattr(predict_api, "say", _Said())
    _png(tmp_path / "a.png")
    summary = predict_api.predict(str(ramp), [str(tmp_path / "a.png")], tmp_path / "x" / "y" / "z", save=["masks"])
    assert (tmp_path / "x" / "y" / "z" / "masks" / "a.png").is_file() and summary["frames"] == 1
    monkeypatch.chdir(tmp_path)
    summary = predict_api.predict(str(ramp), [str(tmp_path / "a.png")])
    assert summary["out"] == "predictions"
    assert sorted(p.relative_to(tmp_path / "predictions").as_posix() for p in (tmp_path / "predictions").rglob("*")) \
        == ["masks", "masks/a.png", "overlays", "overlays/a.jpg"]
    # the default alpha is one half
    overlay = np.asarray(Image.open(tmp_path / "predictions" / "overlays" / "a.jpg").convert("RGB")).astype(np.float64)
    image = _bands([1])
    errors = [np.abs(overlay - _reference_blend(image, _expected(image), _golden(CLASSES), a)).mean()
              for a in (0.5, 0.4, 0.6)]
    assert errors[0] < min(errors[1:])


def test_the_summary_rounds_its_times(ramp, tmp_path, monkeypatch):
    monkeypatch.setattr(predict_api, "say", _Said())
    clock = _ThreadClock(0.000123457)
    monkeypatch.setattr(predict_api, "time", clock)
    monkeypatch.setattr(sources, "time", clock)
    _png(tmp_path / "a.png")
    summary = predict_api.predict(str(ramp), [str(tmp_path / "a.png")], tmp_path / "out", streams=1)
    # one frame: each phase is one step, 0.123457 ms, kept to 4 decimals
    assert summary["phases_ms"] == dict.fromkeys(predict_api.PHASES, 0.1235)
    assert 0 < summary["wall_s"] < 1 and round(summary["wall_s"], 4) == summary["wall_s"]
    assert summary["wall_s"] != round(summary["wall_s"], 3)
    fps = summary["fps"]
    assert round(fps, 3) == fps and fps != round(fps, 2) and abs(fps * summary["wall_s"] - 1) < 0.2


def test_json_out_counts_classes_without_printing_the_table(ramp, tmp_path, monkeypatch):
    from rich.console import Console

    import edgeseg.console

    monkeypatch.setattr(predict_api, "say", _Said())
    recorded = Console(record=True, width=120, file=open(os.devnull, "w"))
    monkeypatch.setattr(edgeseg.console, "out", recorded)
    _png(tmp_path / "a.png", 4)
    summary = predict_api.predict(str(ramp), [str(tmp_path / "a.png")], tmp_path / "out", json_out=str(tmp_path / "s.json"))
    assert summary["class_share_percent"]["class4"] == 100.0 and recorded.export_text() == ""


def test_resolve_sources_keeps_mirrored_names_and_names_each_capture(tmp_path, monkeypatch):
    said = _Said()
    monkeypatch.setattr(sources, "say", said)
    _png(tmp_path / "street" / "top.png")
    _png(tmp_path / "street" / "sub" / "c.png")
    merged = sources.resolve_sources([str(tmp_path / "street"), "rtsp://h/cam"])
    assert merged[0].names == ["top", "sub/c"] and merged[1].name == "h_cam" and said == []
    for folder in ("v1", "v2"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "drive.mp4").write_bytes(b"x")
    sources.resolve_sources([str(tmp_path / "v1" / "drive.mp4"), str(tmp_path / "v2" / "drive.mp4")])
    assert said == [f"[yellow]Renamed the outputs of 2 input(s) that share a name, so none overwrites another: "
                    f"{tmp_path / 'v1' / 'drive.mp4'} -> v1/drive.mp4, {tmp_path / 'v2' / 'drive.mp4'} -> "
                    f"v2/drive.mp4[/yellow]"]
    said.clear()
    for name in ("a", "b"):
        _png(tmp_path / "x4" / f"{name}.png")
        _png(tmp_path / "y4" / f"{name}.jpg")
    sources.resolve_sources([str(tmp_path / "x4"), str(tmp_path / "y4")])
    assert len(said) == 1 and said[0].startswith("[yellow]Renamed the outputs of 4 input(s)")
    assert said[0].endswith("masks/b.jpg.png[/yellow]")  # exactly four: all shown, no "and 0 more"


def test_class_names_without_a_dataset_are_numbered(ramp):
    import edgeseg

    with edgeseg.Segmenter(ramp) as seg:
        seg.info = None
        seg.num_classes = 3
        assert seg.class_names() == ["class0", "class1", "class2"]
        seg.num_classes = None
        assert seg.class_names() == []


def test_segmenter_describes_and_opens_with_the_flags_given(ramp, monkeypatch):
    import edgeseg
    from edgeseg.predict import segmenter as segmenter_module

    described, opened = [], []
    real_describe, real_open = segmenter_module.describe, segmenter_module.open_runner
    monkeypatch.setattr(segmenter_module, "describe", lambda *a: described.append(a[1:]) or real_describe(*a))
    monkeypatch.setattr(segmenter_module, "open_runner", lambda *a: opened.append(a[1:]) or real_open(*a))
    with edgeseg.Segmenter(ramp, max_batch=1) as seg:
        image = _bands([3, 6])
        assert [m.tolist() for m in seg.batch([image, image])] == [_expected(image).tolist()] * 2
    assert described == [(False, None)] and opened == [("cpu", None, False, False, False)]
    facts = ModelFacts(num_classes=8)
    with edgeseg.Segmenter(ramp, threads=1, trust_checkpoint=True, trust_engine=True, allow_engine_host_code=True,
                           facts=facts):
        pass
    assert described[1] == (True, facts) and opened[1] == ("cpu", 1, True, True, True)
    with pytest.raises(ConfigError, match="max_batch must be at least 1, got 0"):
        edgeseg.Segmenter(ramp, max_batch=0)


def test_the_class_count_comes_from_the_dataset_else_the_models_facts(ramp, monkeypatch):
    import dataclasses

    import edgeseg
    from edgeseg.predict import segmenter as segmenter_module

    real_describe = segmenter_module.describe
    change = {}

    def describe(*args):
        artifact = real_describe(*args)
        return dataclasses.replace(artifact, **change)

    monkeypatch.setattr(segmenter_module, "describe", describe)
    with edgeseg.Segmenter(ramp) as seg:
        meta = dict(seg.artifact.meta)
    change.update(meta=dict(meta, model={"num_classes": 5}))
    with edgeseg.Segmenter(ramp) as seg:
        assert seg.num_classes == 8  # the dataset's
    change.update(dataset=None)
    with edgeseg.Segmenter(ramp) as seg:
        assert seg.info is None and seg.num_classes == 5
    change.update(meta={k: v for k, v in meta.items() if k != "model"})
    with edgeseg.Segmenter(ramp) as seg:
        assert seg.num_classes is None


def test_finish_keeps_16_bit_maps_for_many_classes_and_names_the_cli_options(ramp, monkeypatch):
    import edgeseg
    import edgeseg.errors

    with edgeseg.Segmenter(ramp) as seg:
        seg.num_classes = 300
        mask = seg.finish(np.array([[[0, 7], [9, 3]]], np.int64), (2, 2))  # small values, but 300 classes
        assert mask.dtype == np.uint16 and mask.tolist() == [[0, 7], [9, 3]]
        seg.num_classes = 5
        monkeypatch.setattr(edgeseg.errors, "_speaking_to_cli", True)
        with pytest.raises(ConfigError) as error:
            seg.finish(np.zeros((1, 8, 2, 2), np.float32), (2, 2))
        assert str(error.value) == ("ramp.onnx outputs 8 classes, not the 5 it was described with; give the matching "
                                    "--num-classes/--data.")
