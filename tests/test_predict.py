"""edgeseg predict: masks that score what eval scores, every video frame out, bad input handled."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from edgeseg.cli.main import cli
from edgeseg.data.dataset import resolve_split
from edgeseg.data.images import read_label
from edgeseg.errors import ConfigError, DataError, InputFileError, MissingDependencyError
from edgeseg.metrics import confusion_matrix, summarize
from edgeseg.predict import predict
from edgeseg.predict.sources import SourceError, classify, resolve_sources


def _cv2():
    return pytest.importorskip("cv2", reason="OpenCV is not installed: pip install 'edgeseg[video]' "
                                             "(opencv-python-headless) to run the video and camera tests")


def _masks_miou(masks: Path, split) -> float:
    info = split.info
    confusion = np.zeros((info.num_classes, info.num_classes), dtype=np.int64)
    for index, (image, _) in enumerate(split.pairs):
        mask, label = read_label(masks / f"{image.stem}.png"), split.label(index)
        assert mask.shape == label.shape  # at the source image's own size
        confusion += confusion_matrix(mask.reshape(-1), label.reshape(-1), info.num_classes, info.ignore_index)
    return summarize(confusion, info.class_names())["miou"]


@pytest.mark.parametrize("model", ["tiny_onnx", "tiny_class_map_onnx"])
def test_predicted_masks_score_what_eval_scores(model, tiny_data, tmp_path, request):
    from edgeseg.benchmark.api import eval as evaluate

    path = request.getfixturevalue(model)
    split = resolve_split(tiny_data, "val")
    result = CliRunner().invoke(cli, ["predict", str(path), str(tiny_data / "val" / "images"), "--out",
                                      str(tmp_path / "out"), "--json", str(tmp_path / "summary.json")])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["frames"] == len(split) and summary["written"]["masks"] == len(split)
    assert summary["written"]["overlays"] == len(split) and set(summary["phases_ms"]) == {
        "decode", "preprocess", "inference", "postprocess", "encode"}
    assert _masks_miou(tmp_path / "out" / "masks", split) == evaluate(str(path), str(tiny_data))["miou"]


def test_masks_are_palette_pngs_at_each_images_size(tiny_onnx, tiny_data, tmp_path):
    folder = tmp_path / "odd"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name, (h, w) in {"wide": (389, 517), "small": (31, 45)}.items():
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(folder / f"{name}.png")
    summary = predict(str(tiny_onnx), [str(folder)], tmp_path / "out", save=["masks,overlays"], alpha=0.3)
    assert summary["frames"] == 2
    palette = [tuple(c) for c in resolve_split(tiny_data, "val").info.palette]
    for name, (h, w) in {"wide": (389, 517), "small": (31, 45)}.items():
        mask = Image.open(tmp_path / "out" / "masks" / f"{name}.png")
        assert mask.mode == "P" and mask.size == (w, h)
        flat = mask.getpalette()[: 3 * len(palette)]
        assert [tuple(flat[i:i + 3]) for i in range(0, len(flat), 3)] == palette
        assert np.asarray(mask).max() < len(palette)  # reads back as class indices
        assert Image.open(tmp_path / "out" / "overlays" / f"{name}.jpg").size == (w, h)


def test_an_unreadable_image_is_skipped_and_counted(tiny_onnx, tiny_data, tmp_path):
    folder = tmp_path / "images"
    shutil.copytree(tiny_data / "val" / "images", folder)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    result = CliRunner().invoke(cli, ["predict", str(tiny_onnx), str(folder), "--out", str(tmp_path / "out"),
                                      "--save", "masks", "--json", str(tmp_path / "s.json")])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "s.json").read_text())
    good = len(list((tiny_data / "val" / "images").iterdir()))
    assert summary["frames"] == good and summary["skipped"] == 1 and "broken" in summary["skipped_files"][0]
    assert len(list((tmp_path / "out" / "masks").iterdir())) == good
    assert not (tmp_path / "out" / "overlays").exists()  # --save masks only
    assert "1 unreadable image(s) skipped" in result.output


def test_list_files_globs_and_stats(tiny_onnx, tiny_data, tmp_path):
    images = sorted((tiny_data / "val" / "images").iterdir())
    listing = tmp_path / "list.txt"
    listing.write_text(f"# two images\n{images[0]}\n\n{images[1]}\n")
    assert [p.name for p in classify(str(listing)).paths] == [images[0].name, images[1].name]
    pattern = str(tiny_data / "val" / "images" / "*.png")
    assert len(classify(pattern).paths) == len(images)
    result = CliRunner().invoke(cli, ["predict", str(tiny_onnx), str(listing), pattern, "--out", str(tmp_path / "o"),
                                      "--stats", "--max-frames", "3", "--json", str(tmp_path / "s.json")])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["frames"] == 3 and abs(sum(summary["class_share_percent"].values()) - 100) < 1e-6
    assert "Share of pixels per class" in result.output
    # the same image twice: the second mask must not overwrite the first
    assert len(list((tmp_path / "o" / "masks").iterdir())) == 3


@pytest.mark.parametrize("args, error", [
    (["missing-folder"], "does not exist"),
    (["{data}", "--save", "pictures"], "--save pictures is not one of"),
    (["{data}", "--alpha", "2"], "--alpha must be between 0 and 1"),
    (["csi://zero"], "write csi://0"),
])
def test_bad_input_is_one_sentence_and_writes_nothing(tiny_onnx, tiny_data, tmp_path, args, error):
    args = [a.replace("{data}", str(tiny_data / "val" / "images")) for a in args]
    result = CliRunner().invoke(cli, ["predict", str(tiny_onnx), *args, "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and error in result.output and result.output.count("\n") == 1, result.output
    assert not (tmp_path / "out").exists()


def test_a_camera_that_does_not_exist_is_exit_code_2(tiny_onnx, tmp_path):
    _cv2()
    result = CliRunner().invoke(cli, ["predict", str(tiny_onnx), "97", "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "Camera 97 cannot be opened" in result.output, result.output
    assert result.output.count("\n") == 1 and not (tmp_path / "out").exists()


def test_a_stream_that_does_not_answer_is_exit_code_2(tiny_onnx, tmp_path):
    _cv2()
    with pytest.raises(SourceError, match="Stream rtsp://127.0.0.1:9/none cannot be opened"):
        predict(str(tiny_onnx), ["rtsp://127.0.0.1:9/none"], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def _write_video(cv2, path: Path, frames: int, size=(80, 60), fourcc="mp4v") -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 10, size)
    rng = np.random.default_rng(0)
    for index in range(frames):
        writer.write(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))
    writer.release()


def _count_frames(cv2, path: Path) -> int:
    capture, count = cv2.VideoCapture(str(path)), 0
    while capture.read()[0]:
        count += 1
    capture.release()
    return count


def _tag_rotated_90(path: Path) -> None:
    """Give an mp4 a phone's portrait tag: the track's display matrix turns it 90 degrees (ISO/IEC 14496-12 tkhd)."""
    import struct

    data = bytearray(path.read_bytes())
    box = data.find(b"tkhd")
    assert data[box + 4] == 0  # version 0: 32-bit times, so the matrix sits 40 bytes after the type
    matrix = box + 4 + 4 + 20 + 8 + 8
    width, height = struct.unpack(">II", data[matrix + 36:matrix + 44])
    data[matrix:matrix + 36] = struct.pack(">9i", 0, 0x10000, 0, -0x10000, 0, 0, height, 0, 0x40000000)
    path.write_bytes(bytes(data))


def test_a_phones_portrait_video_comes_out_upright(tiny_onnx, tmp_path, monkeypatch):
    """A video tagged 'turn 90 degrees' is segmented and written as players show it, whatever OpenCV's default:
    the double opens captures with auto-rotation off, as OpenCV 4.11 does (opencv issue 26795)."""
    cv2 = _cv2()
    if not hasattr(cv2, "CAP_PROP_ORIENTATION_AUTO"):
        pytest.skip(f"OpenCV {cv2.__version__} cannot turn videos by their rotation tag (added in 4.5)")
    _write_video(cv2, tmp_path / "portrait.mp4", 3, size=(80, 60))
    _tag_rotated_90(tmp_path / "portrait.mp4")
    real_capture = cv2.VideoCapture

    def capture_like_opencv_4_11(*args):
        opened = real_capture(*args)
        opened.set(cv2.CAP_PROP_ORIENTATION_AUTO, 0)
        return opened

    monkeypatch.setattr(cv2, "VideoCapture", capture_like_opencv_4_11)
    predict(str(tiny_onnx), [str(tmp_path / "portrait.mp4")], tmp_path / "out", save=["video", "masks"])
    monkeypatch.setattr(cv2, "VideoCapture", real_capture)
    masks = sorted((tmp_path / "out" / "masks").iterdir())
    assert len(masks) == 3 and all(read_label(mask).shape == (80, 60) for mask in masks)  # 60 wide, 80 tall
    written = real_capture(str(tmp_path / "out" / "portrait.mp4"))
    ok, frame = written.read()
    assert ok and frame.shape[:2] == (80, 60)


def test_a_phones_portrait_photo_is_segmented_upright(tiny_onnx, tmp_path):
    """EXIF orientation 6 (stored sideways, shown turned 90 degrees clockwise): the model sees the photo as
    viewers show it, and the mask has the shown size; an array is taken as it is."""
    from edgeseg.data.images import read_image
    from edgeseg.predict import Segmenter

    stored = np.zeros((30, 40, 3), dtype=np.uint8)
    stored[:, :10] = 255  # a bright band on the stored left: on the shown top
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(tmp_path / "phone.jpg", exif=exif, quality=95)
    summary = predict(str(tiny_onnx), [str(tmp_path / "phone.jpg")], tmp_path / "out", save=["masks"])
    assert summary["frames"] == 1
    assert read_label(tmp_path / "out" / "masks" / "phone.png").shape == (40, 30)
    shown = read_image(tmp_path / "phone.jpg", upright=True)
    assert shown.shape == (40, 30, 3) and shown[:10].mean() > 200 and shown[12:].mean() < 50
    with Segmenter(str(tiny_onnx)) as segmenter:
        from_path = segmenter(tmp_path / "phone.jpg")
        assert np.array_equal(from_path, segmenter(shown))
        assert segmenter(read_image(tmp_path / "phone.jpg")).shape == (30, 40)  # stored pixels: stored size


def test_a_photo_with_damaged_exif_is_read_as_stored(tmp_path, monkeypatch):
    """Older Pillows raise on malformed EXIF: the photo is still good, so it is read as stored, not skipped."""
    from edgeseg.data.images import read_image

    stored = np.zeros((30, 40, 3), dtype=np.uint8)
    Image.fromarray(stored).save(tmp_path / "odd.jpg")

    def damaged(_image):
        raise SyntaxError("not a TIFF IFD")

    monkeypatch.setattr(Image.Image, "getexif", damaged)
    assert read_image(tmp_path / "odd.jpg", upright=True).shape == (30, 40, 3)


def test_nested_folders_are_reached_from_the_top_folder_or_a_glob(tiny_onnx, tmp_path):
    """A Cityscapes-like tree (leftImg8bit/val/<city>/*.png): the top folder and '**' give the same masks, by city."""
    root = tmp_path / "leftImg8bit" / "val"
    for city in ("bremen", "ulm"):
        (root / city).mkdir(parents=True)
        Image.fromarray(np.zeros((30, 40, 3), dtype=np.uint8)).save(root / city / f"{city}_000000.png")
    for name, given in (("folder", root), ("glob", root / "**" / "*.png")):
        summary = predict(str(tiny_onnx), [str(given)], tmp_path / name, save=["masks"])
        assert summary["frames"] == 2
        assert sorted(p.relative_to(tmp_path / name / "masks").as_posix()
                      for p in (tmp_path / name / "masks").rglob("*.png")) == [
            "bremen/bremen_000000.png", "ulm/ulm_000000.png"]


def test_repeated_file_names_in_subfolders_keep_their_folders(tiny_onnx, tmp_path):
    """Video sequences as frame folders (seq01/000001.png, seq02/000001.png): masks/ mirrors the tree."""
    for sequence in ("seq01", "seq02"):
        (tmp_path / "drive" / sequence).mkdir(parents=True)
        for frame in ("000001", "000002"):
            Image.fromarray(np.zeros((30, 40, 3), dtype=np.uint8)).save(tmp_path / "drive" / sequence / f"{frame}.png")
    summary = predict(str(tiny_onnx), [str(tmp_path / "drive" / "**" / "*.png")], tmp_path / "out",
                      save=["masks", "overlays"])
    assert summary["frames"] == 4
    for folder, suffix in (("masks", ".png"), ("overlays", ".jpg")):
        written = sorted(p.relative_to(tmp_path / "out" / folder).as_posix()
                         for p in (tmp_path / "out" / folder).rglob(f"*{suffix}"))
        assert written == [f"{s}/{f}{suffix}" for s in ("seq01", "seq02") for f in ("000001", "000002")]


def test_iphone_heic_photos_are_read_with_pillow_heif_or_named_without_it(tiny_onnx, tmp_path, monkeypatch):
    """A folder from an iPhone: JPEGs and HEICs. With pillow-heif every photo is segmented; without it the
    HEICs are left out with one line naming the fix, and a HEIC given alone is skipped with that sentence."""
    from edgeseg.data import images

    folder = tmp_path / "phone"
    folder.mkdir()
    Image.fromarray(np.full((30, 40, 3), 90, dtype=np.uint8)).save(folder / "IMG_0001.jpg")
    pillow_heif = pytest.importorskip("pillow_heif", reason="pillow-heif is not installed: pip install pillow-heif")
    # written through pillow-heif's own API: registering its opener is what edgeseg must do, not the test
    pillow_heif.from_pillow(Image.fromarray(np.full((30, 40, 3), 90, dtype=np.uint8))).save(folder / "IMG_0002.HEIC")
    summary = predict(str(tiny_onnx), [str(folder)], tmp_path / "with", save=["masks"])
    assert summary["frames"] == 2 and read_label(tmp_path / "with" / "masks" / "IMG_0002.png").shape == (30, 40)

    monkeypatch.setattr(images, "heif_readable", lambda: False)
    monkeypatch.setattr("edgeseg.predict.sources.heif_readable", lambda: False)
    result = CliRunner().invoke(cli, ["predict", str(tiny_onnx), str(folder), "--out", str(tmp_path / "without")])
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())  # rich wraps long lines
    assert "Leaving out 1 HEIC photo(s) in" in said and ": pip install pillow-heif" in said
    assert sorted(p.name for p in (tmp_path / "without" / "masks").iterdir()) == ["IMG_0001.png"]
    with pytest.raises(DataError, match="is a HEIC photo, which Pillow reads only with pillow-heif"):
        images.read_image(folder / "IMG_0002.HEIC")


def test_a_video_gives_every_frame_out(tiny_onnx, tmp_path):
    cv2 = _cv2()
    _write_video(cv2, tmp_path / "drive.mp4", 12)
    result = CliRunner().invoke(cli, ["predict", str(tiny_onnx), str(tmp_path / "drive.mp4"), "--out",
                                      str(tmp_path / "out"), "--save", "video", "--save", "masks"])
    assert result.exit_code == 0, result.output
    assert _count_frames(cv2, tmp_path / "out" / "drive.mp4") == 12
    masks = sorted((tmp_path / "out" / "masks").iterdir())
    assert [m.name for m in masks] == [f"drive_{i:06d}.png" for i in range(12)]
    assert Image.open(masks[0]).size == (80, 60)
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".tmp")]


def test_a_video_that_breaks_midway_ends_cleanly_with_what_was_read(tiny_onnx, tmp_path):
    cv2 = _cv2()
    _write_video(cv2, tmp_path / "full.avi", 30, fourcc="MJPG")
    data = (tmp_path / "full.avi").read_bytes()
    (tmp_path / "cut.avi").write_bytes(data[: len(data) // 2])
    summary = predict(str(tiny_onnx), [str(tmp_path / "cut.avi")], tmp_path / "out")
    assert 0 < summary["frames"] < 30 and "ended after" in summary["sources"][0]["ended_early"]
    assert _count_frames(cv2, tmp_path / "out" / "cut.mp4") == summary["frames"]  # complete and playable


def test_max_frames_bounds_a_capture(tiny_onnx, tmp_path):
    cv2 = _cv2()
    _write_video(cv2, tmp_path / "long.mp4", 20)
    summary = predict(str(tiny_onnx), [str(tmp_path / "long.mp4")], tmp_path / "out", max_frames=5)
    assert summary["frames"] == 5 and _count_frames(cv2, tmp_path / "out" / "long.mp4") == 5
    assert "ended_early" not in summary["sources"][0]


def test_sources_are_classified_without_opening_anything(tmp_path):
    assert classify("0").kind == "camera" and classify("/dev/video0").kind == "camera"
    assert classify("csi://1").kind == "csi" and classify("rtsp://10.0.0.2/cam").kind == "stream"
    (tmp_path / "a.mkv").write_bytes(b"x")
    assert classify(str(tmp_path / "a.mkv")).kind == "video"
    (tmp_path / "notes.pdf").write_bytes(b"x")
    with pytest.raises(InputFileError, match="neither an image"):
        classify(str(tmp_path / "notes.pdf"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no images"):
        classify(str(tmp_path / "empty"))
    with pytest.raises(DataError, match="No image matches"):
        classify(str(tmp_path / "*.jpg"))
    merged = resolve_sources([str(tmp_path / "a.mkv"), "0"])
    assert [s.kind for s in merged] == ["video", "camera"]


def test_video_without_opencv_says_how_to_get_it(tiny_onnx, tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "cv2", None)
    (tmp_path / "a.mp4").write_bytes(b"x")
    with pytest.raises(MissingDependencyError, match=r"pip install 'edgeseg\[video\]'"):
        predict(str(tiny_onnx), [str(tmp_path / "a.mp4")], tmp_path / "out")


def test_save_choices_are_validated():
    from edgeseg.predict.writers import parse_save

    assert parse_save(["masks,overlays", "video"]) == {"masks", "overlays", "video"}
    assert parse_save(None) is None and parse_save(["none"]) == set()
    with pytest.raises(ConfigError):
        parse_save(["mask"])


@pytest.mark.parametrize("streams", [1, 2])
def test_ctrl_c_ends_a_capture_cleanly_with_complete_files(tiny_onnx, tmp_path, monkeypatch, streams):
    """Ctrl-C (KeyboardInterrupt in inference) ends the run; the mp4 holds every frame written, in order."""
    cv2 = _cv2()
    from edgeseg.predict import api

    _write_video(cv2, tmp_path / "live.mp4", 30)
    original, calls = api.Segmenter, [0]

    class Interrupted(original):
        def _open_runner(self):
            runner = super()._open_runner()
            infer = runner.infer

            def infer_until_ctrl_c(batch):
                calls[0] += 1  # counted over every stream
                if calls[0] == 8:
                    raise KeyboardInterrupt
                return infer(batch)

            runner.infer = infer_until_ctrl_c
            return runner

    monkeypatch.setattr(api, "Segmenter", Interrupted)
    summary = predict(str(tiny_onnx), [str(tmp_path / "live.mp4")], tmp_path / "out", save=["video,masks"],
                      streams=streams)
    assert summary["interrupted"] and summary["streams"] == streams
    # one stream: exactly the 7 frames inferred before; two: those of them that precede every frame in flight
    assert summary["frames"] == 7 if streams == 1 else 1 <= summary["frames"] <= 7
    assert _count_frames(cv2, tmp_path / "out" / "live.mp4") == summary["frames"]
    masks = sorted(p.name for p in (tmp_path / "out" / "masks").iterdir())
    assert len(masks) == summary["frames"]
    assert not [p for p in (tmp_path / "out").rglob(".tmp*")]


def test_show_without_a_display_says_so_and_carries_on(tiny_onnx, tiny_data, tmp_path, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    result = CliRunner().invoke(cli, ["predict", str(tiny_onnx), str(tiny_data / "val" / "images"), "--out",
                                      str(tmp_path / "out"), "--show", "--save", "none", "--stats"])
    assert result.exit_code == 0, result.output
    assert "no display here" in result.output and "Share of pixels per class" in result.output
    assert not [p for p in (tmp_path / "out").rglob("*") if p.is_file()]  # --save none writes nothing


def test_csi_without_gstreamer_in_opencv_is_one_sentence(tiny_onnx, tmp_path):
    cv2 = _cv2()
    if "GStreamer:                   YES" in cv2.getBuildInformation():
        pytest.skip("this OpenCV has GStreamer; the refusal is for pip's OpenCV, which has none")
    result = CliRunner().invoke(cli, ["predict", str(tiny_onnx), "csi://0", "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "needs OpenCV built with GStreamer" in result.output, result.output
    assert result.output.count("\n") == 1 and not (tmp_path / "out").exists()


def test_csi_camera_opens_jetpacks_pipeline_through_gstreamer(tiny_onnx, tmp_path, monkeypatch):
    """JetPack's OpenCV (GStreamer YES) opens csi://N as an nvarguscamerasrc pipeline; frames then flow as from
    any capture. The double stands in for the camera: it plays a video written here, and when asked for anything
    but the GStreamer pipeline it does not open, as VideoCapture does for a target it cannot handle."""
    cv2 = _cv2()
    _write_video(cv2, tmp_path / "sensor.mp4", 6)
    real_capture, opened = cv2.VideoCapture, []

    def capture(target, api=None, *params):
        if api != cv2.CAP_GSTREAMER or not str(target).startswith("nvarguscamerasrc sensor-id=1 "):
            return real_capture(str(tmp_path / "missing.mp4"))  # isOpened() is False
        opened.append(target)
        return real_capture(str(tmp_path / "sensor.mp4"))

    build = cv2.getBuildInformation()
    monkeypatch.setattr(cv2, "getBuildInformation", lambda: build + "\n    GStreamer:                   YES\n")
    monkeypatch.setattr(cv2, "VideoCapture", capture)
    summary = predict(str(tiny_onnx), ["csi://1"], tmp_path / "out", save=["masks"], max_frames=4)
    assert summary["frames"] == 4 and len(list((tmp_path / "out" / "masks").iterdir())) == 4
    assert "appsink" in opened[0] and "format=BGR" in opened[0]
    with pytest.raises(SourceError, match="CSI camera csi://0 cannot be opened"):
        predict(str(tiny_onnx), ["csi://0"], tmp_path / "out2")
    assert not (tmp_path / "out2").exists()


def test_streams_run_side_by_side_and_finish_in_order():
    import random
    import threading
    import time

    from edgeseg.benchmark.pipeline import run_pipeline

    used, finished = {}, []

    def infer_on(name):
        def infer(item):
            used[name] = used.get(name, 0) + 1
            time.sleep(random.random() * 0.004)  # streams overtake each other
            return item, threading.current_thread().name
        return infer

    run_pipeline(60, lambda i: i, infer_on("a"), lambda pair: finished.append(pair[0]),
                 more_infers=[infer_on("b"), infer_on("c")])
    assert finished == list(range(60))  # in the order loaded, whichever stream inferred each
    assert set(used) == {"a", "b", "c"} and sum(used.values()) == 60

    def broken(item):
        raise ValueError("stream failed")

    with pytest.raises(ValueError, match="stream failed"):
        run_pipeline(20, lambda i: i, infer_on("a"), lambda pair: None, more_infers=[broken])


def test_stream_count_defaults(tiny_data, monkeypatch):
    from edgeseg.predict import api

    folder, camera = classify(str(tiny_data / "val" / "images")), classify("0")
    monkeypatch.setattr(api, "_cores", lambda: 2)
    assert api.stream_count(None, "onnxruntime", "cpu", [folder]) == 2
    assert api.stream_count(None, "onnxruntime", "cpu", [camera]) == 1  # live: each frame's latency first
    assert api.stream_count(None, "tensorrt", "cuda", [folder]) == 1
    assert api.stream_count(None, "pytorch", "cpu", [folder]) == 1
    assert api.stream_count(3, "pytorch", "cpu", [folder]) == 3
    assert api._threads_per_stream(2) == 1 and api._threads_per_stream(1) is None
    monkeypatch.setattr(api, "_cores", lambda: 1)
    assert api.stream_count(None, "onnxruntime", "cpu", [folder]) == 1


def test_two_streams_write_what_one_writes(tiny_onnx, tiny_data, tmp_path):
    one = predict(str(tiny_onnx), [str(tiny_data / "val" / "images")], tmp_path / "one", save=["masks"], streams=1)
    two = predict(str(tiny_onnx), [str(tiny_data / "val" / "images")], tmp_path / "two", save=["masks"], streams=2)
    assert (one["streams"], two["streams"]) == (1, 2) and one["frames"] == two["frames"] > 0
    for mask in (tmp_path / "one" / "masks").iterdir():
        assert np.array_equal(read_label(mask), read_label(tmp_path / "two" / "masks" / mask.name))
    with pytest.raises(ConfigError, match="--streams must be at least 1"):
        predict(str(tiny_onnx), [str(tiny_data / "val" / "images")], tmp_path / "bad", streams=0)
