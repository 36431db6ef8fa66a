"""``edgeseg.Segmenter``: image in, class map out, for applications.

It is the three steps ``predict`` pipelines, callable one by one: ``prepare`` (resize and
normalise, as at training and calibration), ``runner.infer`` (any Runner: ONNX Runtime,
TensorRT, PyTorch) and ``finish`` (class map from logits or from a model with the
argmax in its graph, resized nearest to the image's own size). Torch is imported only
for .pt checkpoints.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from edgeseg.errors import ConfigError, option
from edgeseg.spec import ModelFacts
from edgeseg.runtime.loader import describe, open_runner
from edgeseg.runtime.outputs import LOGITS, output_kind, to_class_map
from edgeseg.runtime.preprocess import preprocess, resize_label

if TYPE_CHECKING:  # Pillow is imported where it is used
    from PIL import Image

ImageLike = Union[np.ndarray, str, Path, "Image.Image"]


def as_rgb(image: ImageLike) -> np.ndarray:
    """An HxWx3 uint8 RGB array from an array, a PIL image or a path (grey expanded, alpha dropped).

    A path is read upright, as its EXIF orientation says (a phone's portrait photo); arrays
    and PIL images are taken as they are.
    """
    if isinstance(image, (str, Path)):
        from edgeseg.data.images import read_image
        from edgeseg.fileio import require_file

        return read_image(require_file(image, "Image"), upright=True)  # as photo viewers show it (EXIF)
    if not isinstance(image, np.ndarray):
        from PIL import Image

        if not isinstance(image, Image.Image):
            raise ConfigError(f"Segmenter takes an HxWx3 uint8 RGB array, a PIL image or a path, not "
                              f"{type(image).__name__}.")
        return np.asarray(image.convert("RGB"))
    if image.dtype != np.uint8:
        raise ConfigError(f"Segmenter takes uint8 images (0-255), got {image.dtype}; convert with "
                          f"(image * 255).astype(np.uint8) if yours is 0-1 floats.")
    if image.ndim == 2:
        return np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim == 3 and image.shape[2] in (3, 4):
        return np.ascontiguousarray(image[:, :, :3])
    raise ConfigError(f"Segmenter takes an HxWx3 RGB array, got shape {image.shape}.")


class Segmenter:
    """A model that turns images into class maps at the images' own size.

    ``spin_wait=False`` stops ONNX Runtime's idle workers from busy-waiting (its default),
    leaving the cores to threads that decode and encode beside it: predict sets it, and
    on 2 cores it gave predict 1.07x the FPS of a run with spinning on
    (benchmarks/results/predict_overhead.md).

    ``facts`` say what an ONNX exported by another tool does not record (``ModelFacts(input_size=(360, 480))``
    for one with a dynamic input size; mean/std when not ImageNet's; the dataset's class names and palette).

    >>> seg = Segmenter("pruned.int8.onnx")  # doctest: +SKIP
    >>> mask = seg(image)                    # HxW uint8 (uint16 past 255 classes)  # doctest: +SKIP
    """

    def __init__(self, model: Union[str, Path], device: str = "cpu", *, threads: Optional[int] = None,
                 max_batch: int = 8, trust_checkpoint: bool = False, trust_engine: bool = False,
                 allow_engine_host_code: bool = False, spin_wait: bool = True, facts: Optional[ModelFacts] = None):
        if max_batch < 1:
            raise ConfigError(f"max_batch must be at least 1, got {max_batch}.")
        self.artifact = describe(model, trust_checkpoint, facts)
        self.spec = self.artifact.input_spec
        self.info = self.artifact.dataset
        model_facts = self.artifact.meta.get("model") or {}
        self.num_classes: Optional[int] = (self.info.num_classes if self.info is not None
                                           else model_facts.get("num_classes"))
        self.max_batch = max_batch
        self.device = device
        self._runner_args = (device, threads, trust_checkpoint, trust_engine, allow_engine_host_code)
        self._spin_wait = spin_wait
        self.runner = self._open_runner()
        self.more_runners: List = []
        self._palette: Optional[np.ndarray] = None

    def _open_runner(self):
        runner = open_runner(self.artifact, *self._runner_args)
        if hasattr(runner, "spin_wait"):  # ONNX Runtime: off when other threads share the cores (predict)
            runner.spin_wait = self._spin_wait
        runner.activate()
        return runner

    def add_streams(self, count: int) -> list:
        """Open ``count`` more runners of the same model (own sessions) for parallel streams; closed with it."""
        for _ in range(count):
            self.more_runners.append(self._open_runner())
        return self.more_runners

    # --- the three steps -------------------------------------------------------------------------
    def prepare(self, image: np.ndarray) -> np.ndarray:
        """HxWx3 uint8 RGB -> the model's 1x3xhxw input (resized bilinear, normalised)."""
        return preprocess(image, self.spec)

    def finish(self, output: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
        """One output row (1xCxhxw logits or a 1xhxw class map) -> the HxW class map at ``size``."""
        if output_kind(output) == LOGITS:
            if self.num_classes is None:
                self.num_classes = int(output.shape[1])
            elif output.shape[1] != self.num_classes:  # e.g. an engine from elsewhere under another --data
                raise ConfigError(f"{self.artifact.path.name} outputs {output.shape[1]} classes, not the "
                                  f"{self.num_classes} it was described with; give the matching "
                                  f"{option('--num-classes/--data', 'ModelFacts(num_classes=...)/dataset')}.")
        classes = to_class_map(output, self.num_classes)[0]
        return resize_label(classes, size[0], size[1])

    # --- what applications call ------------------------------------------------------------------
    def __call__(self, image: ImageLike) -> np.ndarray:
        """The HxW class map of one image, at that image's size."""
        rgb = as_rgb(image)
        return self.finish(self.runner.infer(self.prepare(rgb)), rgb.shape[:2])

    def batch(self, images: Sequence[ImageLike]) -> List[np.ndarray]:
        """Class maps of several images (any sizes), run ``max_batch`` at a time."""
        rgbs = [as_rgb(image) for image in images]
        masks: List[np.ndarray] = []
        for start in range(0, len(rgbs), self.max_batch):
            chunk = rgbs[start:start + self.max_batch]
            output = self.runner.infer(np.concatenate([self.prepare(rgb) for rgb in chunk]))
            masks.extend(self.finish(output[i:i + 1], rgb.shape[:2]) for i, rgb in enumerate(chunk))
        return masks

    def stream(self, source: str, max_frames: Optional[int] = None) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
        """(frame, class map) for each frame of a video, camera, stream, folder or glob; unreadable images skipped."""
        from edgeseg.predict.sources import classify

        opened = classify(str(source)).open()
        try:
            for frame in opened.frames(max_frames):
                if frame.image is not None:
                    yield frame.image, self(frame.image)
        finally:
            opened.close()

    @property
    def palette(self) -> np.ndarray:
        """Cx3 uint8 colours of the classes (the dataset's, or distinct ones where it names none)."""
        if self._palette is None:
            from edgeseg.predict.colors import palette_table

            self._palette = palette_table(self.info, self.num_classes or 256)
        return self._palette

    def class_names(self) -> List[str]:
        if self.info is not None:
            return self.info.class_names()
        return [f"class{i}" for i in range(self.num_classes or 0)]

    def overlay(self, image: ImageLike, mask: np.ndarray, alpha: float = 0.5) -> np.ndarray:
        """The image with the class colours blended in at ``alpha`` (HxWx3 uint8)."""
        from edgeseg.predict.colors import overlay

        return overlay(as_rgb(image), mask, self.palette, alpha)

    # --- lifetime --------------------------------------------------------------------------------
    def close(self) -> None:
        for runner in [self.runner, *self.more_runners]:
            runner.deactivate()
        self.more_runners = []

    def __enter__(self) -> "Segmenter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
