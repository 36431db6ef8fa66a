"""Synthetic street scenes: edgeseg's embedded default dataset, deterministic from a seed.

Each image is a small road scene drawn with numpy: sky with clouds, a skyline of
textured buildings, a road in perspective with lane marks, sidewalks, grass and trees,
poles, cars and pedestrians sized by distance and drawn far-to-near so that near
objects occlude far ones, a few unlabelled clutter blobs (ignore index), then lighting
changes, shadows and sensor noise. Thin poles and small far objects make the task hard
enough that compressing a model costs accuracy unless it is done well, which is what the
demo shows.

The dataset is written once to a cache folder in the CamVid layout, so every stage
(and ``calibrate --images``) treats it like any other dataset.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Tuple

import numpy as np

CLASSES = ("sky", "building", "road", "sidewalk", "vegetation", "car", "pedestrian", "pole")
PALETTE = ((70, 130, 180), (70, 70, 70), (128, 64, 128), (244, 35, 232), (107, 142, 35), (0, 0, 142),
           (220, 20, 60), (153, 153, 153))
SKY, BUILDING, ROAD, SIDEWALK, VEGETATION, CAR, PEDESTRIAN, POLE = range(8)
IGNORE_INDEX = 255
FORMAT_VERSION = 1  # bump when the drawing changes, so old caches are not reused


@dataclass(frozen=True)
class SceneStyle:
    """How many pedestrians and poles a scene has, how near and how wide they are drawn."""

    pedestrians: Tuple[int, int]  # count drawn from [low, high)
    pedestrian_depth: Tuple[float, float]  # 0 at the horizon, 1 at the bottom of the image
    pedestrian_width: float  # of its height
    poles: Tuple[int, int]
    pole_depth: Tuple[float, float]
    pole_half_width: Tuple[float, float]  # (at least, share of the object size)


# 1: the scenes the suite's measured figures were taken on: poles 1-3 px wide, 0-3 pedestrians (0.6% and 1.8%
#    of the pixels). 2: the demo's, where a compressed 96x128 model can still resolve them: poles >= 2.5 px wide,
#    1-4 nearer, wider pedestrians (1.4% and 3.8%); pruning half of the U-Net kept pole 50.6 / pedestrian 73.9 IoU
#    here, 6.0 / 60.1 on style 1 (both with class weights)
SCENE_STYLES = {
    1: SceneStyle(pedestrians=(0, 4), pedestrian_depth=(0.1, 1.0), pedestrian_width=0.3,
                  poles=(1, 4), pole_depth=(0.1, 1.0), pole_half_width=(0.6, 0.04)),
    2: SceneStyle(pedestrians=(1, 5), pedestrian_depth=(0.25, 1.0), pedestrian_width=0.38,
                  poles=(2, 5), pole_depth=(0.2, 1.0), pole_half_width=(1.25, 0.07)),
}


@dataclass(frozen=True)
class SyntheticConfig:
    seed: int = 0
    num_train: int = 240
    num_val: int = 60
    height: int = 96
    width: int = 128
    scene_style: int = 1  # a key of SCENE_STYLES

    def __post_init__(self):
        if self.scene_style not in SCENE_STYLES:
            raise ValueError(f"scene_style {self.scene_style!r} is not one of {sorted(SCENE_STYLES)}.")


class _Canvas:
    """An image and its label map, painted together so they always agree."""

    def __init__(self, height: int, width: int, rng: np.random.Generator):
        self.h, self.w, self.rng = height, width, rng
        self.image = np.zeros((height, width, 3), dtype=np.float32)
        self.label = np.zeros((height, width), dtype=np.uint8)
        self.yy, self.xx = np.mgrid[0:height, 0:width].astype(np.float32)

    def paint(self, mask: np.ndarray, color, label: int, texture: float = 0.0, scale: float = 1.0) -> None:
        if not mask.any():
            return
        pixels = np.asarray(color, dtype=np.float32)[None, :] * np.ones((int(mask.sum()), 1), np.float32)
        if texture:
            noise = self.smooth_noise(scale)[mask][:, None]
            pixels = pixels * (1.0 + texture * noise)
        self.image[mask] = pixels
        self.label[mask] = label

    def smooth_noise(self, scale: float) -> np.ndarray:
        """Value noise in [-1, 1] with features of about ``scale`` pixels."""
        gh, gw = max(2, int(self.h / scale) + 2), max(2, int(self.w / scale) + 2)
        grid = self.rng.uniform(-1, 1, (gh, gw)).astype(np.float32)
        gy = np.linspace(0, gh - 1.001, self.h)
        gx = np.linspace(0, gw - 1.001, self.w)
        y0, x0 = gy.astype(int), gx.astype(int)
        fy, fx = (gy - y0)[:, None], (gx - x0)[None, :]
        top = grid[y0][:, x0] * (1 - fx) + grid[y0][:, x0 + 1] * fx
        bottom = grid[y0 + 1][:, x0] * (1 - fx) + grid[y0 + 1][:, x0 + 1] * fx
        return top * (1 - fy) + bottom * fy


def _draw_sky(c: _Canvas, horizon: float) -> None:
    rng, h = c.rng, c.h
    # vertical gradient plus soft clouds
    sky_top = np.array([60, 110, 200]) * rng.uniform(0.7, 1.1)
    sky = c.yy < horizon
    t = (c.yy / max(horizon, 1))[..., None]
    c.image[:] = sky_top * (1 - t) + np.array([180, 200, 230]) * t
    clouds = np.clip(c.smooth_noise(h / 4), 0, 1)[..., None] * 90 * rng.uniform(0.3, 1.0)
    c.image += clouds
    c.label[sky] = SKY


def _draw_ground(c: _Canvas, horizon: float, vanish_x: float) -> tuple:
    rng, h, w = c.rng, c.h, c.w
    sky = c.yy < horizon
    # ground below the horizon: grass first, sidewalks and road painted over it
    ground = ~sky
    c.paint(ground, np.array([70, 120, 40]) * rng.uniform(0.7, 1.2), VEGETATION, texture=0.35, scale=2)
    road_half = w * rng.uniform(0.35, 0.65)
    walk_width = w * rng.uniform(0.15, 0.3)
    depth = np.clip((c.yy - horizon) / max(h - horizon, 1), 0, 1)  # 0 at horizon, 1 at bottom
    offset = c.xx - vanish_x
    walk = ground & (np.abs(offset) < depth * (road_half + walk_width))
    c.paint(walk, np.array([190, 170, 150]) * rng.uniform(0.8, 1.1), SIDEWALK, texture=0.12, scale=1.5)
    tiles = walk & ((c.xx.astype(int) % 6 == 0) | (c.yy.astype(int) % 5 == 0))
    c.image[tiles] *= 0.8
    road = ground & (np.abs(offset) < depth * road_half)
    c.paint(road, np.array([90, 90, 95]) * rng.uniform(0.7, 1.2), ROAD, texture=0.15, scale=1.2)
    dashes = road & (np.abs(offset) < 0.03 * depth * road_half + 0.5) & ((c.yy.astype(int) // 4) % 2 == 0)
    c.image[dashes] = (230, 230, 210)
    return depth, road_half, walk_width


def _draw_buildings(c: _Canvas, horizon: float) -> None:
    rng = c.rng
    x = rng.uniform(-10, 5)
    while x < c.w:
        width = rng.uniform(0.12, 0.35) * c.w
        if rng.random() < 0.8:  # leave gaps of sky between some buildings
            top = rng.uniform(0.05, 0.8) * horizon
            box = (c.xx >= x) & (c.xx < x + width) & (c.yy >= top) & (c.yy < horizon + 2)
            base = rng.uniform(60, 200, 3) * np.array([1.0, 0.95, 0.9])
            c.paint(box, base, BUILDING, texture=0.1, scale=3)
            step_x, step_y = rng.integers(5, 9), rng.integers(6, 10)
            windows = box & ((c.xx - x) % step_x > 2) & ((c.yy - top) % step_y > 3) & (c.yy < horizon - 2)
            c.image[windows] = c.image[windows] * rng.uniform(0.3, 0.6) + rng.uniform(0, 60)
        x += width + rng.uniform(0, 8)


def _draw_tree(c: _Canvas, x: float, bottom: float, size: float, _style: SceneStyle) -> None:
    trunk = (np.abs(c.xx - x) < max(1.0, size * 0.08)) & (c.yy < bottom) & (c.yy > bottom - size * 0.6)
    c.paint(trunk, (90, 60, 40), VEGETATION, texture=0.2, scale=1)
    cy, radius = bottom - size * 0.9, size * 0.45
    blob = c.smooth_noise(2) * radius * 0.25
    crown = (c.xx - x) ** 2 + (c.yy - cy) ** 2 < (radius + blob) ** 2
    c.paint(crown, np.array([40, 110, 40]) * c.rng.uniform(0.7, 1.3), VEGETATION, texture=0.45, scale=1)


def _draw_pole(c: _Canvas, x: float, bottom: float, size: float, style: SceneStyle) -> None:
    half = max(style.pole_half_width[0], size * style.pole_half_width[1])
    pole = (np.abs(c.xx - x) < half) & (c.yy < bottom) & (c.yy > bottom - size * 1.6)
    c.paint(pole, np.array([150, 150, 150]) * c.rng.uniform(0.6, 1.2), POLE, texture=0.1, scale=1)
    if c.rng.random() < 0.5:  # a sign on top belongs to the pole class too
        top = bottom - size * 1.6
        sign = (np.abs(c.xx - x) < size * 0.15) & (c.yy > top) & (c.yy < top + size * 0.25)
        c.paint(sign, (200, 180, 40), POLE)


def _draw_car(c: _Canvas, x: float, bottom: float, size: float, _style: SceneStyle) -> None:
    rng = c.rng
    width, height = size * rng.uniform(1.4, 2.0), size * rng.uniform(0.7, 0.9)
    body = (np.abs(c.xx - x) < width / 2) & (c.yy < bottom - height * 0.1) & (c.yy > bottom - height * 0.6)
    cabin = (np.abs(c.xx - x) < width * 0.32) & (c.yy <= bottom - height * 0.6) & (c.yy > bottom - height)
    color = rng.uniform(20, 230, 3)
    c.paint(body | cabin, color, CAR, texture=0.05, scale=2)
    glass = (np.abs(c.xx - x) < width * 0.27) & (c.yy <= bottom - height * 0.62) & (c.yy > bottom - height * 0.92)
    c.image[glass] = np.array([40, 50, 70]) + rng.uniform(0, 40)
    for side in (-1, 1):
        wheel = (c.xx - (x + side * width * 0.3)) ** 2 + (c.yy - (bottom - height * 0.15)) ** 2 < (height * 0.17) ** 2
        c.paint(wheel, (15, 15, 15), CAR)


def _draw_pedestrian(c: _Canvas, x: float, bottom: float, size: float, style: SceneStyle) -> None:
    rng = c.rng
    height = size * 1.5
    width = height * style.pedestrian_width
    legs = (np.abs(c.xx - x) < width * 0.4) & (c.yy < bottom) & (c.yy >= bottom - height * 0.45)
    torso = (np.abs(c.xx - x) < width / 2) & (c.yy < bottom - height * 0.45) & (c.yy >= bottom - height * 0.85)
    head = (c.xx - x) ** 2 + (c.yy - (bottom - height * 0.92)) ** 2 < (width * 0.35) ** 2
    c.paint(legs, rng.uniform(10, 120, 3), PEDESTRIAN)
    c.paint(torso, rng.uniform(30, 250, 3), PEDESTRIAN, texture=0.1, scale=1)
    c.paint(head, (210, 170, 140), PEDESTRIAN)


def render_scene(rng: np.random.Generator, height: int, width: int,
                 style: SceneStyle = SCENE_STYLES[1]) -> Tuple[np.ndarray, np.ndarray]:
    """Draw one scene; return (RGB uint8 HxWx3 image, uint8 HxW label)."""
    c = _Canvas(height, width, rng)
    horizon = height * rng.uniform(0.35, 0.55)
    vanish_x = width * rng.uniform(0.35, 0.65)
    _draw_sky(c, horizon)
    _draw_buildings(c, horizon)
    depth, road_half, walk_width = _draw_ground(c, horizon, vanish_x)
    # objects with their ground position; drawn far to near so the near ones occlude
    objects = []
    for _ in range(rng.integers(1, 5)):
        objects.append(("car", rng.uniform(0.15, 1.0), rng.uniform(-0.8, 0.8)))
    for _ in range(rng.integers(*style.pedestrians)):
        objects.append(("pedestrian", rng.uniform(*style.pedestrian_depth),
                        rng.choice([-1, 1]) * rng.uniform(1.05, 1.3)))
    for _ in range(rng.integers(*style.poles)):
        objects.append(("pole", rng.uniform(*style.pole_depth), rng.choice([-1, 1]) * rng.uniform(1.02, 1.35)))
    for _ in range(rng.integers(0, 3)):
        objects.append(("tree", rng.uniform(0.05, 0.9), rng.choice([-1, 1]) * rng.uniform(1.4, 2.2)))
    objects.sort(key=lambda o: o[1])
    for kind, d, lateral in objects:
        bottom = horizon + d * (height - horizon)
        x = vanish_x + lateral * d * (road_half if kind == "car" else road_half + walk_width * 0.5)
        size = 4 + d * height * 0.35
        {"car": _draw_car, "pedestrian": _draw_pedestrian, "pole": _draw_pole, "tree": _draw_tree}[kind](
            c, x, bottom, size, style)
    # unlabelled clutter (bins, debris): the ignore index, so training and mIoU must honour it
    for _ in range(rng.integers(0, 3)):
        cy, cx, r = rng.uniform(horizon, height), rng.uniform(0, width), rng.uniform(1.5, 4)
        blob = (c.xx - cx) ** 2 + ((c.yy - cy) * 1.5) ** 2 < r ** 2
        c.paint(blob, rng.uniform(0, 255, 3), IGNORE_INDEX, texture=0.5, scale=1)
    # lighting, a cast shadow and sensor noise
    if rng.random() < 0.5:
        slope = rng.uniform(-1, 1)
        shadow = (c.xx - vanish_x) * slope + (c.yy - height) > rng.uniform(-height, 0)
        c.image[shadow & (c.yy > horizon)] *= rng.uniform(0.5, 0.8)
    c.image = c.image * rng.uniform(0.6, 1.3) + rng.uniform(-25, 25)
    c.image += rng.normal(0, rng.uniform(3, 12), c.image.shape)
    return np.clip(c.image, 0, 255).astype(np.uint8), c.label


def write_dataset(root: str | os.PathLike, config: SyntheticConfig = SyntheticConfig()) -> Path:
    """Write train/ and val/ splits plus dataset.yaml under ``root`` (atomically, as one folder)."""
    import yaml
    from PIL import Image

    root = Path(root)
    if (root / "dataset.yaml").exists():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{root.name}-", dir=root.parent))
    try:
        for split, count, offset in (("train", config.num_train, 0), ("val", config.num_val, 1_000_000)):
            (tmp / split / "images").mkdir(parents=True)
            (tmp / split / "labels").mkdir(parents=True)
            for i in range(count):
                # one generator per image: any image can be regenerated alone, in any order
                rng = np.random.default_rng([config.seed, offset + i])
                image, label = render_scene(rng, config.height, config.width, SCENE_STYLES[config.scene_style])
                Image.fromarray(image).save(tmp / split / "images" / f"{i:05d}.png")
                Image.fromarray(label, mode="L").save(tmp / split / "labels" / f"{i:05d}.png")
        meta = {"name": "synthetic-streets", "num_classes": len(CLASSES), "ignore_index": IGNORE_INDEX,
                "classes": list(CLASSES), "palette": [list(p) for p in PALETTE],
                "generator": {"format_version": FORMAT_VERSION, **config.__dict__}}
        (tmp / "dataset.yaml").write_text(yaml.safe_dump(meta, sort_keys=False))
        try:
            os.rename(tmp, root)
        except OSError:  # another process finished first; theirs is identical
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root


def cache_dir() -> Path:
    return Path(os.environ.get("EDGESEG_CACHE", Path.home() / ".cache" / "edgeseg"))


def default_synthetic_root(config: SyntheticConfig = SyntheticConfig()) -> Path:
    """Folder of the synthetic dataset for ``config``, generated on first use."""
    style = "" if config.scene_style == 1 else f"-style{config.scene_style}"
    name = (f"synthetic-v{FORMAT_VERSION}{style}-seed{config.seed}-{config.height}x{config.width}"
            f"-{config.num_train}-{config.num_val}")
    return write_dataset(cache_dir() / name, config)
