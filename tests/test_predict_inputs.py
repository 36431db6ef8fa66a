"""Which images a folder, glob or list gives predict, and the name each one's outputs get.

The model is a hand-made ONNX (one 1x1 convolution) whose class is a known function of a
pixel's red value, ``round(7 * R / 255)``, so each expected mask is computed here with numpy
from the input file alone. Every input gets its own class, so a mask written under another
input's name is caught by its pixels, not only by the file list.
"""
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from edgeseg.cli.main import cli
from edgeseg.data.images import read_label
from edgeseg.errors import DataError
from edgeseg.predict import predict
from edgeseg.predict.sources import classify, resolve_sources, settle_names

SIZE = 16  # the model's static input: images at this size are not resized
CLASSES = 8
MEAN_R, STD_R = 123.675, 58.395  # ImageNet's R in 0-255 units: what edgeseg normalises with by default


@pytest.fixture(scope="module")
def ramp(tmp_path_factory) -> Path:
    """A 1x1 conv whose logits c * 7 * R/255 - c^2/2 peak at c = round(7 * R/255) (R before normalising)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    k = np.arange(CLASSES, dtype=np.float64)
    weight = np.zeros((CLASSES, 3, 1, 1), np.float32)
    weight[:, 0, 0, 0] = k * (CLASSES - 1) * STD_R / 255
    bias = (k * (CLASSES - 1) * MEAN_R / 255 - k * k / 2).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w", "b"], ["logits"])], "ramp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", CLASSES, SIZE, SIZE])],
        [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(bias, "b")])
    path = tmp_path_factory.mktemp("ramp") / "ramp.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def _image(path: Path, cls: int) -> Path:
    """A SIZExSIZE picture whose left half is class ``cls`` and right half class 7 - ``cls`` (a JPEG: all of it
    ``cls``, as its ringing at an edge would blur the classes there)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = np.zeros((SIZE, SIZE, 3), np.uint8)
    image[:, :, 1], image[:, :, 2] = 90, 160
    image[:, :, 0] = round(255 * cls / 7)
    if path.suffix != ".jpg":
        image[:, SIZE // 2:, 0] = round(255 * (7 - cls) / 7)
    Image.fromarray(image).save(path, **({"quality": 95} if path.suffix == ".jpg" else {}))
    return path


def _expected(path: Path) -> np.ndarray:
    """The model's class map of the file as decoded (JPEG's few levels of error included)."""
    red = np.asarray(Image.open(path).convert("RGB"))[:, :, 0].astype(np.float64)
    exact = 7 * red / 255
    assert np.abs(exact - np.floor(exact) - 0.5).min() > 0.05, "a red value sits on a class boundary"
    return np.rint(exact).astype(np.int64)


def _tree(folder: Path, suffix: str):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob(f"*{suffix}")) if folder.is_dir() else []


def _said(result, line: str) -> bool:
    """Whether the run printed ``line``; compared without whitespace, as rich wraps long lines, mid-path too."""
    return "".join(line.split()) in "".join(result.output.split())


def _run(ramp, args, out: Path):
    result = CliRunner().invoke(cli, ["predict", str(ramp), *map(str, args), "--out", str(out),
                                      "--json", str(out.parent / f"{out.name}.json")])
    assert result.exit_code == 0, result.output
    return result, json.loads((out.parent / f"{out.name}.json").read_text())


def _assert_masks_are_of(out: Path, expected_inputs: dict) -> None:
    """masks/ holds exactly these names, each the model's prediction for its input; overlays alike."""
    assert _tree(out / "masks", ".png") == sorted(f"{n}.png" for n in expected_inputs)
    assert _tree(out / "overlays", ".jpg") == sorted(f"{n}.jpg" for n in expected_inputs)
    for name, source in expected_inputs.items():
        np.testing.assert_array_equal(read_label(out / "masks" / f"{name}.png"), _expected(source), err_msg=name)


def test_a_folder_gives_its_subfolders_too_and_outputs_mirror_it(ramp, tmp_path):
    street = tmp_path / "street"
    inputs = {"a": _image(street / "a.png", 1), "b": _image(street / "b.jpg", 2),
              "day/c": _image(street / "day" / "c.png", 3), "day/deep/d": _image(street / "day" / "deep" / "d.png", 4),
              "night/c": _image(street / "night" / "c.png", 5)}
    _image(street / ".thumbnails" / "a.png", 6)  # hidden folders are not inputs
    (street / ".DS_Store").write_bytes(b"x")
    (street / "notes.txt").write_text("taken on the A40")
    (street / "day" / "clip.mp4").write_bytes(b"x")
    result, summary = _run(ramp, [street], tmp_path / "out")
    assert summary["frames"] == 5 and summary["written"]["masks"] == 5
    _assert_masks_are_of(tmp_path / "out", inputs)
    assert _said(result, f"Leaving out 2 file(s) in {street} that are not images (1 .txt, 1 .mp4); give a video or a "
                         f"list file on its own")
    assert "Renamed" not in result.output  # mirroring the folder needs no renaming


def test_a_glob_names_outputs_as_its_folder_does(ramp, tmp_path):
    """'drive/**/*.png' and 'drive/' write the same files: the glob's fixed part is the folder mirrored."""
    drive = tmp_path / "drive"
    inputs = {f"{s}/{f}": _image(drive / s / f"{f}.png", c) for c, (s, f) in enumerate(
        [("seq01", "000001"), ("seq01", "000002"), ("seq02", "000001")], start=1)}
    _run(ramp, [drive / "**" / "*.png"], tmp_path / "globbed")
    _run(ramp, [drive], tmp_path / "folder")
    _assert_masks_are_of(tmp_path / "globbed", inputs)
    _assert_masks_are_of(tmp_path / "folder", inputs)


def test_a_folder_with_no_image_anywhere_is_one_sentence(tmp_path):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "sub" / "notes.txt").write_text("x")
    with pytest.raises(DataError, match=r"holds no images \(.*\), nor do its subfolders; give a folder of images"):
        classify(str(tmp_path / "empty"))


def test_same_stem_in_one_folder_keeps_each_suffix_and_says_so(ramp, tmp_path):
    shots = tmp_path / "shots"
    inputs = {"frame.jpg": _image(shots / "frame.jpg", 1), "frame.png": _image(shots / "frame.png", 6),
              "other": _image(shots / "other.png", 3)}
    result, summary = _run(ramp, [shots], tmp_path / "out")
    _assert_masks_are_of(tmp_path / "out", inputs)
    assert _said(result, f"Renamed the outputs of 2 input(s) that share a name, so none overwrites another: "
                         f"{shots / 'frame.jpg'} -> masks/frame.jpg.png, {shots / 'frame.png'} -> masks/frame.png.png")


def test_same_file_name_given_from_two_folders_mirrors_their_paths(ramp, tmp_path):
    first, second = _image(tmp_path / "a" / "frame.jpg", 2), _image(tmp_path / "b" / "frame.jpg", 5)
    result, summary = _run(ramp, [first, second], tmp_path / "out")
    _assert_masks_are_of(tmp_path / "out", {"a/frame": first, "b/frame": second})
    assert _said(result, f"Renamed the outputs of 2 input(s) that share a name, so none overwrites another: "
                         f"{first} -> masks/a/frame.png, {second} -> masks/b/frame.png")


def test_two_folders_with_the_same_file_names_each_get_their_own(ramp, tmp_path):
    day, night = _image(tmp_path / "day" / "001.png", 1), _image(tmp_path / "night" / "001.png", 6)
    lone = _image(tmp_path / "night" / "002.png", 4)
    result, _ = _run(ramp, [tmp_path / "day", tmp_path / "night"], tmp_path / "out")
    _assert_masks_are_of(tmp_path / "out", {"day/001": day, "night/001": night, "002": lone})
    assert _said(result, f"Renamed the outputs of 2 input(s) that share a name, so none overwrites another: "
                         f"{day} -> masks/day/001.png, {night} -> masks/night/001.png")


def test_names_differing_only_in_case_are_told_apart(tmp_path):
    """macOS and Windows folders ignore case: Frame.png and frame.jpg would write one frame.png there."""
    paths = [tmp_path / "Frame.png", tmp_path / "frame.jpg", tmp_path / "x" / "other.png"]
    names, renamed = settle_names(paths)
    assert names == ["Frame.png", "frame.jpg", "other"]
    assert renamed == [(paths[0], "Frame.png"), (paths[1], "frame.jpg")]


def test_different_suffixes_in_different_folders_keep_their_suffix_not_their_folder(tmp_path):
    """The shortest names that tell them apart: the file names, before the paths."""
    paths = [tmp_path / "a" / "frame.jpg", tmp_path / "b" / "frame.png"]
    assert settle_names(paths)[0] == ["frame.jpg", "frame.png"]


def test_a_renamed_output_meeting_an_inputs_own_name_is_the_one_numbered(tmp_path):
    paths = [tmp_path / "frame.jpg", tmp_path / "frame.jpg.png", tmp_path / "frame.png"]
    names, renamed = settle_names(paths)
    assert names == ["frame.jpg-2", "frame.jpg", "frame.png"]  # frame.jpg.png keeps its own name
    assert renamed == [(paths[0], "frame.jpg-2"), (paths[2], "frame.png")]


def test_two_videos_with_one_name_write_two_videos(tmp_path):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "drive.mp4").write_bytes(b"x")  # classify opens nothing
    sources = resolve_sources([str(tmp_path / "a" / "drive.mp4"), str(tmp_path / "b" / "drive.mp4")])
    assert [s.name for s in sources] == ["a/drive", "b/drive"]


def test_a_file_given_twice_is_segmented_once(ramp, tmp_path):
    folder = tmp_path / "in"
    inputs = {"0": _image(folder / "0.png", 1), "1": _image(folder / "1.png", 2)}
    result, summary = _run(ramp, [folder, folder / "1.png", folder / "*.png"], tmp_path / "out")
    assert summary["frames"] == 2
    _assert_masks_are_of(tmp_path / "out", inputs)
    assert _said(result, f"Leaving out 3 image(s) given more than once (e.g. {folder / '1.png'}): each is segmented "
                         f"once")


def test_out_inside_the_folder_read_is_not_read_back(ramp, tmp_path):
    """predict photos/ --out photos/predictions twice: the second run segments the photos, not the first run's
    masks and overlays."""
    photos = tmp_path / "photos"
    inputs = {"a": _image(photos / "a.png", 1), "trip/b": _image(photos / "trip" / "b.jpg", 5)}
    out = photos / "predictions"
    _run(ramp, [photos], out)
    result, summary = _run(ramp, [photos], out)
    assert summary["frames"] == 2
    _assert_masks_are_of(out, inputs)
    assert _said(result, f"Leaving out 4 image(s) under {out}: it is where this run writes (--out), so they are a "
                         f"previous run's masks and overlays")


def test_the_writer_records_the_output_each_input_got(ramp, tmp_path, monkeypatch):
    """The record the summary's "files" is made of, read from the writer itself."""
    from edgeseg.predict import api, writers

    made = []

    class Recorded(writers.Outputs):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(api, "Outputs", Recorded)
    first, second = _image(tmp_path / "a" / "frame.jpg", 2), _image(tmp_path / "b" / "frame.jpg", 5)
    lone = _image(tmp_path / "b" / "lone.png", 3)
    predict(str(ramp), [str(first), str(tmp_path / "b")], tmp_path / "out", save=["masks", "overlays"])
    assert made[0].files == [
        {"input": str(first), "mask": "masks/a/frame.png", "overlay": "overlays/a/frame.jpg"},
        {"input": str(second), "mask": "masks/b/frame.png", "overlay": "overlays/b/frame.jpg"},
        {"input": str(lone), "mask": "masks/lone.png", "overlay": "overlays/lone.jpg"}]
    for record in made[0].files:
        np.testing.assert_array_equal(read_label(tmp_path / "out" / record["mask"]), _expected(Path(record["input"])))


def test_an_image_named_like_a_video_frame_is_numbered_and_said(ramp, tmp_path, monkeypatch):
    """What resolve_sources cannot foresee (a video's frames are named when read) the writer numbers, and says."""
    cv2 = pytest.importorskip("cv2", reason="OpenCV is not installed: pip install 'edgeseg[video]'")
    from edgeseg.predict import api, writers

    made = []

    class Recorded(writers.Outputs):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(api, "Outputs", Recorded)
    frame = np.zeros((SIZE, SIZE, 3), np.uint8)
    frame[:, :, 0] = round(255 * 6 / 7)
    writer = cv2.VideoWriter(str(tmp_path / "drive.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 10, (SIZE, SIZE))
    writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    still = _image(tmp_path / "stills" / "drive_000000.png", 1)
    result = CliRunner().invoke(cli, ["predict", str(ramp), str(tmp_path / "stills"), str(tmp_path / "drive.mp4"),
                                      "--out", str(tmp_path / "out"), "--save", "masks"])
    assert result.exit_code == 0, result.output
    assert _tree(tmp_path / "out" / "masks", ".png") == ["drive_000000-2.png", "drive_000000.png"]
    np.testing.assert_array_equal(read_label(tmp_path / "out" / "masks" / "drive_000000.png"), _expected(still))
    assert (read_label(tmp_path / "out" / "masks" / "drive_000000-2.png") == 6).mean() > 0.9  # the video's frame
    assert _said(result, "1 output name(s) were taken already, so they got a number: drive_000000 -> drive_000000-2")
    assert made[0].files == [{"input": str(still), "mask": "masks/drive_000000.png"},
                             {"input": str(tmp_path / "drive.mp4"), "masks": "masks/drive_*.png"}]


def test_the_json_summary_names_the_output_each_input_got(ramp, tmp_path):
    first, second = _image(tmp_path / "shots" / "frame.jpg", 2), _image(tmp_path / "shots" / "frame.png", 5)
    _, summary = _run(ramp, [tmp_path / "shots", "--save", "masks"], tmp_path / "out")
    assert summary["files"] == [{"input": str(first), "mask": "masks/frame.jpg.png"},
                                {"input": str(second), "mask": "masks/frame.png.png"}]
