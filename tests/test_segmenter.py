"""edgeseg.Segmenter: an HxW class map at the image's own size, from either output form."""
import numpy as np
import pytest
from PIL import Image

import edgeseg
from edgeseg.errors import ConfigError
from edgeseg.runtime.preprocess import preprocess, resize_label


@pytest.fixture(scope="module")
def odd_image():
    return np.random.default_rng(5).integers(0, 255, (389, 517, 3), dtype=np.uint8)  # 517 wide, 389 high


@pytest.mark.parametrize("model", ["tiny_onnx", "tiny_class_map_onnx"])
def test_call_gives_an_hxw_map_at_the_images_size(model, odd_image, request):
    path = request.getfixturevalue(model)
    with edgeseg.Segmenter(path) as seg:
        mask = seg(odd_image)
        expected_small = seg.runner.infer(preprocess(odd_image, seg.spec))
    assert mask.shape == (389, 517) and mask.dtype == np.uint8
    small = expected_small if expected_small.ndim == 3 else expected_small.argmax(1)
    np.testing.assert_array_equal(mask, resize_label(small[0].astype(np.uint8), 389, 517))


def test_both_output_forms_give_the_same_masks(tiny_onnx, tiny_class_map_onnx, odd_image):
    images = [odd_image, odd_image[:64, :100], odd_image[:, :, ::-1].copy()]
    with edgeseg.Segmenter(tiny_onnx) as logits, edgeseg.Segmenter(tiny_class_map_onnx) as classes:
        for image in images:
            np.testing.assert_array_equal(logits(image), classes(image))


def test_batch_equals_one_by_one_and_accepts_pil_and_paths(tiny_onnx, odd_image, tmp_path):
    Image.fromarray(odd_image).save(tmp_path / "frame.png")
    inputs = [odd_image, Image.fromarray(odd_image[:100, :200]), tmp_path / "frame.png", str(tmp_path / "frame.png")]
    with edgeseg.Segmenter(tiny_onnx, max_batch=3) as seg:
        singles = [seg(image) for image in inputs]
        batched = seg.batch(inputs)
    assert [m.shape for m in batched] == [(389, 517), (100, 200), (389, 517), (389, 517)]
    for single, one in zip(singles, batched):
        np.testing.assert_array_equal(single, one)


def test_overlay_blends_the_palette(tiny_onnx, odd_image):
    with edgeseg.Segmenter(tiny_onnx) as seg:
        mask = seg(odd_image)
        assert np.array_equal(seg.overlay(odd_image, mask, alpha=0.0), odd_image)
        full = seg.overlay(odd_image, mask, alpha=1.0)
        np.testing.assert_array_equal(full, seg.palette[mask])
        half = seg.overlay(odd_image, mask, alpha=0.5).astype(int)
    assert np.abs(half - (odd_image.astype(int) + seg.palette[mask].astype(int)) / 2).max() <= 1


def test_stream_yields_frames_and_masks(tiny_onnx, tiny_data):
    with edgeseg.Segmenter(tiny_onnx) as seg:
        pairs = list(seg.stream(str(tiny_data / "val" / "images"), max_frames=3))
    assert len(pairs) == 3
    assert all(frame.shape[:2] == mask.shape for frame, mask in pairs)


def test_stream_of_a_video(tiny_onnx, tmp_path):
    cv2 = pytest.importorskip("cv2", reason="OpenCV is not installed: pip install 'edgeseg[video]'")
    writer = cv2.VideoWriter(str(tmp_path / "v.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 10, (70, 50))
    for value in range(6):
        writer.write(np.full((50, 70, 3), value * 40, np.uint8))
    writer.release()
    with edgeseg.Segmenter(tiny_onnx) as seg:
        pairs = list(seg.stream(str(tmp_path / "v.mp4")))
    assert len(pairs) == 6 and pairs[0][1].shape == (50, 70)


@pytest.mark.parametrize("image, message", [
    (np.zeros((10, 10, 3), np.float32), "uint8"),
    (np.zeros((10, 10, 2), np.uint8), "HxWx3"),
    ("not-an-image.txt", "does not exist"),
    (42, "not int"),
])
def test_bad_images_are_one_sentence(tiny_onnx, image, message):
    from edgeseg.errors import EdgesegError

    with edgeseg.Segmenter(tiny_onnx) as seg, pytest.raises(EdgesegError, match=message):
        seg(image)


def test_grey_and_rgba_arrays_are_accepted(tiny_onnx, odd_image):
    with edgeseg.Segmenter(tiny_onnx) as seg:
        assert seg(odd_image[:, :, 0]).shape == (389, 517)
        rgba = np.concatenate([odd_image, np.full((389, 517, 1), 255, np.uint8)], axis=2)
        np.testing.assert_array_equal(seg(rgba), seg(odd_image))


def test_max_batch_must_be_positive(tiny_onnx):
    with pytest.raises(ConfigError, match="max_batch"):
        edgeseg.Segmenter(tiny_onnx, max_batch=0)


def test_spin_wait_off_reaches_onnx_runtime(tiny_onnx, odd_image):
    with edgeseg.Segmenter(tiny_onnx, spin_wait=False) as quiet, edgeseg.Segmenter(tiny_onnx) as default:
        options = quiet.runner.session.get_session_options()
        assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
        with pytest.raises(RuntimeError, match="does not have"):  # never set: ONNX Runtime default, spinning
            default.runner.session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning")
        np.testing.assert_array_equal(quiet(odd_image), default(odd_image))


def test_the_readme_example_runs(tiny_onnx, odd_image, tmp_path, monkeypatch, capsys):
    import re
    import shutil
    from pathlib import Path

    cv2 = pytest.importorskip("cv2", reason="OpenCV is not installed: pip install 'edgeseg[video]'")
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    code = re.search(r"<!-- segmenter-example -->\n```python\n(.*?)```", readme, re.S).group(1)
    assert len(code.strip().splitlines()) <= 11
    shutil.copy(tiny_onnx, tmp_path / "pruned.int8.onnx")
    shutil.copy(tiny_onnx.with_name(tiny_onnx.name + ".json"), tmp_path / "pruned.int8.onnx.json")
    for name in ("street.jpg", "a.jpg", "b.jpg"):
        Image.fromarray(odd_image).save(tmp_path / name)
    writer = cv2.VideoWriter(str(tmp_path / "drive.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 10, (64, 48))
    for value in range(4):
        writer.write(np.full((48, 64, 3), value * 50, np.uint8))
    writer.release()
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})
    assert Image.open(tmp_path / "street-overlay.jpg").size == (517, 389)
    assert capsys.readouterr().out.count("(48, 64, 3)") == 4
