import numpy as np
import pytest

from edgeseg.metrics import confusion_matrix, iou_per_class, mean_iou, pixel_accuracy, summarize


def test_confusion_and_iou_by_hand():
    label = np.array([[0, 0, 1, 1], [2, 2, 255, 1]])
    pred = np.array([[0, 1, 1, 1], [2, 0, 2, 1]])
    cm = confusion_matrix(pred, label, 3, 255)
    assert cm.tolist() == [[1, 1, 0], [0, 3, 0], [1, 0, 1]]  # the ignored pixel is not counted
    ious = iou_per_class(cm)
    # class 0: tp 1, fp 1, fn 1 -> 1/3; class 1: tp 3, fp 1 -> 3/4; class 2: tp 1, fn 1 -> 1/2
    assert ious == pytest.approx([100 / 3, 75.0, 50.0])
    assert mean_iou(cm) == pytest.approx((100 / 3 + 75 + 50) / 3)


def test_global_matrix_is_not_a_mean_of_per_image_ious():
    big = confusion_matrix(np.zeros(100, int), np.zeros(100, int), 2, 255)
    small = confusion_matrix(np.array([1]), np.array([0]), 2, 255)
    # one wrong pixel in a tiny image barely moves the global IoU
    assert iou_per_class(big + small)[0] == pytest.approx(100 * 100 / 101)


def test_absent_classes_are_nan_and_excluded():
    cm = confusion_matrix(np.zeros(4, int), np.zeros(4, int), 3, 255)
    summary = summarize(cm, ["a", "b", "c"])
    assert summary["per_class_iou"] == {"a": 100.0, "b": None, "c": None}
    assert summary["miou"] == 100.0


@pytest.mark.parametrize("bad", [3, 7, -1])
def test_a_prediction_outside_the_classes_is_an_error_not_a_count(bad):
    label = np.array([0, 1, 2, 255])
    pred = np.array([0, 1, bad, 0])
    with pytest.raises(ValueError, match=rf"prediction {bad} is outside the 3 classes \(0-2\)"):
        confusion_matrix(pred, label, 3, 255)


@pytest.mark.parametrize("pred_dtype", [np.uint8, np.int32])
def test_both_confusion_kernels_refuse_an_out_of_range_prediction_and_leave_the_matrix_alone(pred_dtype):
    from edgeseg.runtime import native

    label = np.array([[0, 1, 2, 2], [1, 1, 0, 255]], np.uint8)
    pred = np.array([[0, 1, 2, 1], [1, 9, 0, 0]], pred_dtype)  # 9 of 3 classes, after pixels already counted
    kernels = [native.confusion_numpy] + ([native.accumulate_confusion] if native._native is not None else [])
    for kernel in kernels:
        matrix = np.full((3, 3), 5, np.int64)
        with pytest.raises(ValueError, match=r"prediction 9 is outside the 3 classes \(0-2\)"):
            kernel(matrix, pred, label, 255)
        assert (matrix == 5).all(), kernel.__name__  # nothing half-counted


def test_pixel_accuracy_and_the_summary_by_hand():
    label = np.array([[0, 0, 1, 1], [2, 2, 255, 1]])
    pred = np.array([[0, 1, 1, 1], [2, 0, 2, 1]])
    summary = summarize(confusion_matrix(pred, label, 3, 255), ["road", "car", "sky"])
    # 5 of the 7 counted pixels are right; per-class IoU rounded to 4 decimals under the class names
    assert summary == {"miou": round((100 / 3 + 75 + 50) / 3, 4), "pixel_accuracy": round(500 / 7, 4),
                       "per_class_iou": {"road": 33.3333, "car": 75.0, "sky": 50.0}}


def test_labels_outside_the_classes_are_skipped_not_counted():
    label = np.array([0, 1, 2, -1, 7, 255])  # 2 and 7 lie outside 2 classes, -1 below them
    pred = np.array([0, 1, 1, 1, 0, 0])
    assert confusion_matrix(pred, label, 2, 255).tolist() == [[1, 0], [0, 1]]


def test_an_empty_matrix_gives_nan_not_an_error():
    empty = np.zeros((3, 3), np.int64)
    assert np.isnan(mean_iou(empty)) and np.isnan(pixel_accuracy(empty))


def _bootstrap_by_loop(frames_a, frames_b, block, rounds, level, seed):
    """The circular block bootstrap written out one round at a time, from its definition."""
    rng = np.random.default_rng(seed)
    count = len(frames_a)
    differences = []
    for _ in range(rounds):
        picked = []
        while len(picked) < count:
            start = int(rng.integers(0, count))
            picked += [(start + k) % count for k in range(block)]
        picked = picked[:count]
        differences.append(mean_iou(sum(frames_b[i] for i in picked)) - mean_iou(sum(frames_a[i] for i in picked)))
    tail = 100 * (1 - level) / 2
    return np.percentile(differences, [tail, 100 - tail])


def _frames(rng, count, classes, error):
    """Per-frame confusions: 50-150 pixels per class and frame, a fraction ``error`` of them predicted wrong."""
    frames = np.zeros((count, classes, classes), np.int64)
    for frame in frames:
        for c in range(classes):
            pixels = int(rng.integers(50, 150))
            wrong = int(rng.binomial(pixels, error))
            frame[c, c] = pixels - wrong
            frame[c, (c + 1 + int(rng.integers(0, classes - 1))) % classes] += wrong
    return frames


@pytest.mark.parametrize("block", [1, 5])
def test_the_paired_interval_is_the_bootstraps_percentiles(block):
    from edgeseg.metrics import paired_miou_interval

    rng = np.random.default_rng(4)
    a = _frames(rng, 40, 4, 0.2)
    b = a.copy()
    b[::3] = _frames(rng, len(b[::3]), 4, 0.1)  # every third frame better
    got = paired_miou_interval(a, b, block=block, rounds=4000, seed=1)
    low, high = _bootstrap_by_loop(a, b, block, 4000, 0.95, 1)
    assert got["difference"] == pytest.approx(mean_iou(b.sum(0)) - mean_iou(a.sum(0)), abs=1e-4)
    assert 0 < low < got["difference"] < high
    # the same draws as the loop (same seed, same order): the same percentiles
    assert (got["low"], got["high"]) == pytest.approx((low, high), abs=1e-3)


def test_identical_models_differ_by_exactly_nothing_and_neighbours_widen_the_interval():
    from edgeseg.metrics import paired_miou_interval

    rng = np.random.default_rng(0)
    a = _frames(rng, 30, 3, 0.2)
    same = paired_miou_interval(a, a.copy())
    assert (same["difference"], same["low"], same["high"]) == (0, 0, 0)
    # a drive whose frames come in runs of 6 near-duplicates: single-frame draws pretend 30 independent frames
    runs_a = np.repeat(_frames(rng, 5, 3, 0.2), 6, axis=0)
    runs_b = np.repeat(_frames(rng, 5, 3, 0.2), 6, axis=0)
    single = paired_miou_interval(runs_a, runs_b, block=1, rounds=3000)
    blocks = paired_miou_interval(runs_a, runs_b, block=6, rounds=3000)
    assert blocks["high"] - blocks["low"] > 1.3 * (single["high"] - single["low"])
    with pytest.raises(ValueError, match="same frames"):
        paired_miou_interval(a, a[:-1])
