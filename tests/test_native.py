"""The C core and its numpy twin must agree bit for bit (accuracy may never depend on the build)."""
import numpy as np
import pytest

from edgeseg.runtime import native

MEAN, STD = (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)
needs_c = pytest.mark.skipif(native._native is None, reason="the C core is not built in this environment")


@needs_c
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("swap_rb", [False, True])
def test_normalize_matches_numpy_bit_for_bit(dtype, swap_rb):
    image = np.random.default_rng(0).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    got = native.normalize(image, MEAN, STD, dtype=dtype, swap_rb=swap_rb)
    want = native.normalize_numpy(image, MEAN, STD, np.empty_like(got), swap_rb)
    assert got.shape == (1, 3, 37, 53) and got.dtype == dtype
    assert np.array_equal(got.view(np.uint8), want.view(np.uint8))


@needs_c
def test_float16_rounding_of_every_representable_step():
    # all 256 input levels with extreme scales exercise overflow, subnormals and ties
    image = np.arange(256, dtype=np.uint8).repeat(3).reshape(16, 16, 3)
    for mean, std in (((0, 0, 0), (1e-4, 1e-3, 1e-2)), ((128, 128, 128), (1e6, 3e5, 7e4)), ((0.5,) * 3, (3.0,) * 3)):
        got = native.normalize(image, mean, std, dtype=np.float16)
        want = native.normalize_numpy(image, mean, std, np.empty_like(got))
        assert np.array_equal(got.view(np.uint16), want.view(np.uint16))


@needs_c
@pytest.mark.parametrize("classes", [1, 11, 19, 300])
def test_argmax_matches_numpy_including_ties_and_nan(classes):
    rng = np.random.default_rng(classes)
    logits = rng.standard_normal((2, classes, 9, 7)).astype(np.float32)
    logits[0, :, 0, 0] = 1.0  # a tie: the first class wins
    if classes > 3:
        logits[1, 2, 1, 1] = np.nan  # numpy returns the first NaN
    got = native.argmax(logits)
    assert got.dtype == (np.uint8 if classes <= 256 else np.int32)
    assert np.array_equal(got, logits.argmax(1))


@needs_c
@pytest.mark.parametrize("label_dtype", [np.uint8, np.int32, np.int64])
def test_confusion_matches_numpy(label_dtype):
    rng = np.random.default_rng(1)
    pred = rng.integers(0, 11, (50, 60)).astype(np.uint8)
    label = rng.integers(0, 12, (50, 60)).astype(label_dtype)  # 11 is the ignore index
    got = native.accumulate_confusion(np.zeros((11, 11), np.int64), pred, label, 11)
    want = native.confusion_numpy(np.zeros((11, 11), np.int64), pred, label, 11)
    assert np.array_equal(got, want) and got.sum() == (label != 11).sum()


def test_the_numpy_twin_is_correct_on_its_own():
    # values that tell the mean from the std: (10 - 2) / 4, (128 - 100) / 8, (255 - 55) / 0.5
    image = np.array([[[10, 128, 255]]], dtype=np.uint8)
    out = native.normalize_numpy(image, (2, 100, 55), (4, 8, 0.5), np.empty((1, 3, 1, 1), np.float32))
    assert out.ravel().tolist() == [2.0, 3.5, 400.0]
    swapped = native.normalize_numpy(image, (2, 100, 55), (4, 8, 0.5), np.empty((1, 3, 1, 1), np.float32), True)
    assert swapped.ravel().tolist() == [(255 - 2) / 4, 3.5, (10 - 55) / 0.5]  # B and R trade places, not mean/std
    logits = np.array([[[[0.0]], [[2.0]], [[1.0]]]], dtype=np.float32)
    assert native.argmax_numpy(logits, np.empty((1, 1, 1), np.uint8)).item() == 1


def test_bad_buffers_are_rejected():
    if native._native is None:
        pytest.skip("the C core is not built in this environment")
    with pytest.raises(ValueError, match="uint8 of shape"):
        native._native.normalize(np.zeros((4, 4), np.uint8), (1, 1, 1), (0, 0, 0), np.zeros(48, np.float32), False)
    with pytest.raises(ValueError, match="int32 output"):
        native._native.argmax(np.zeros((1, 300, 2, 2), np.float32), np.zeros((1, 2, 2), np.uint8))


def test_the_c_core_is_built_where_a_compiler_exists():
    import shutil

    if not (shutil.which("cc") or shutil.which("gcc")):
        pytest.skip("no C compiler here: the numpy twin is the expected backend")
    assert native.BACKEND == "c", "the package build did not compile edgeseg/runtime/_native.c"
