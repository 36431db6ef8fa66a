import numpy as np

from edgeseg.data.dataset import resolve_split
from edgeseg.data.synthetic import CLASSES, IGNORE_INDEX, SyntheticConfig, render_scene, write_dataset


def test_same_seed_gives_identical_scenes():
    a = render_scene(np.random.default_rng([0, 5]), 64, 96)
    b = render_scene(np.random.default_rng([0, 5]), 64, 96)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def test_different_seeds_give_different_scenes():
    a = render_scene(np.random.default_rng([0, 5]), 64, 96)[0]
    b = render_scene(np.random.default_rng([1, 5]), 64, 96)[0]
    assert not np.array_equal(a, b)


def test_scenes_hold_several_classes_and_only_valid_labels():
    seen = set()
    for i in range(10):
        image, label = render_scene(np.random.default_rng([0, i]), 96, 128)
        assert image.shape == (96, 128, 3) and image.dtype == np.uint8
        values = set(np.unique(label).tolist())
        assert values <= set(range(len(CLASSES))) | {IGNORE_INDEX}
        seen |= values
    assert len(seen - {IGNORE_INDEX}) == len(CLASSES)  # every class occurs somewhere


def test_written_dataset_is_deterministic_and_readable(tmp_path):
    config = SyntheticConfig(seed=1, num_train=3, num_val=2, height=32, width=48)
    first = write_dataset(tmp_path / "a", config)
    second = write_dataset(tmp_path / "b", config)
    for split in ("train", "val"):
        for name in sorted((first / split / "labels").iterdir()):
            assert name.read_bytes() == (second / split / "labels" / name.name).read_bytes()
    split = resolve_split(first, "val")
    assert len(split) == 2 and split.info.num_classes == len(CLASSES) and split.info.ignore_index == 255
    assert split.label(0).shape == (32, 48)


def test_scene_style_1_is_the_suites_and_style_2_draws_more_wider_pedestrians_and_poles():
    from edgeseg.data.synthetic import PEDESTRIAN, POLE, SCENE_STYLES

    def shares(style):
        counts = np.zeros(256)
        for i in range(30):
            counts += np.bincount(render_scene(np.random.default_rng([0, i]), 96, 128, style)[1].ravel(),
                                  minlength=256)
        return counts[PEDESTRIAN] / counts[:8].sum(), counts[POLE] / counts[:8].sum()

    pedestrians_1, poles_1 = shares(SCENE_STYLES[1])
    pedestrians_2, poles_2 = shares(SCENE_STYLES[2])
    assert pedestrians_2 > 1.5 * pedestrians_1 and poles_2 > 1.8 * poles_1
    # style 1 is the default, and what render_scene draws without a style (the suite's figures were taken on it)
    assert SyntheticConfig().scene_style == 1
    same = render_scene(np.random.default_rng([0, 3]), 32, 48)
    styled = render_scene(np.random.default_rng([0, 3]), 32, 48, SCENE_STYLES[1])
    assert np.array_equal(same[0], styled[0]) and np.array_equal(same[1], styled[1])
