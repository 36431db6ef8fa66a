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
    np.testing.assert_array_equal(colors.overlay(image, mask, table, 1.7), table[mask])
    np.testing.assert_array_equal(colors.overlay(image, mask, table, -0.4), image)
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
