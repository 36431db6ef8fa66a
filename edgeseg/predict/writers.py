"""What predict writes: palette PNG masks, JPEG overlays, an overlay video; and the --show window.

Every file is written atomically (a temporary name in the same folder, renamed when
complete), so an interrupted run leaves whole files or none. A video is finished and
renamed when its source ends, cleanly or not: what was written is a playable file.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Dict, Optional, Set

import numpy as np
from PIL import Image

from edgeseg.console import say
from edgeseg.errors import ConfigError
from edgeseg.fileio import atomic_path
from edgeseg.predict.colors import blend, mask_image
from edgeseg.predict.sources import Source, require_cv2

SAVE_CHOICES = ("masks", "overlays", "video")
PNG_COMPRESS_LEVEL = 1  # masks are flat regions: level 1 is ~3x faster than 6 and barely bigger
JPEG_QUALITY = 90
DEFAULT_VIDEO_FPS = 30.0


def default_save(kind: str) -> Set[str]:
    """Masks and overlays for images; the overlay video for videos, cameras and streams."""
    return {"masks", "overlays"} if kind == "images" else {"video"}


def parse_save(values) -> Optional[Set[str]]:
    """``--save masks,overlays`` (repeatable) -> a set; None when not given (each source's default)."""
    chosen = {v.strip() for value in (values or ()) for v in str(value).split(",") if v.strip()}
    if not chosen:
        return None
    unknown = chosen - set(SAVE_CHOICES) - {"none"}
    if unknown:
        raise ConfigError(f"--save {', '.join(sorted(unknown))} is not one of {', '.join(SAVE_CHOICES)} (or none).")
    return chosen - {"none"}


def write_mask_png(path: Path, image) -> None:
    """A palette PNG (mode P: opens as colours, reads back as class indices); 16-bit grey past 256 classes."""
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG", compress_level=PNG_COMPRESS_LEVEL)


class VideoOut:
    """An mp4 written under a temporary name and renamed into place by ``close``."""

    def __init__(self, path: Path, fps: float):
        self.path, self.fps = path, fps if fps and fps > 0 else DEFAULT_VIDEO_FPS
        self.writer = None
        self.tmp: Optional[Path] = None
        self.frames = 0

    def write(self, rgb: np.ndarray) -> None:
        cv2 = require_cv2("Writing a video")
        if self.writer is None:
            fd, name = tempfile.mkstemp(prefix=f".tmp-{self.path.stem}-", suffix=self.path.suffix, dir=self.path.parent)
            os.close(fd)
            self.tmp = Path(name)
            height, width = rgb.shape[:2]
            self.writer = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, (width, height))
            if not self.writer.isOpened():
                self.discard()
                raise ConfigError(f"OpenCV cannot write {self.path.name} (no mp4v encoder here); use --save masks "
                                  f"or --save overlays instead.")
        self.writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        self.frames += 1

    def close(self) -> Optional[Path]:
        """Finish the file and move it into place; None when no frame was written."""
        if self.writer is None:
            return None
        self.writer.release()
        self.writer = None
        os.chmod(self.tmp, 0o644)
        os.replace(self.tmp, self.path)
        return self.path

    def discard(self) -> None:
        if self.writer is not None:
            self.writer.release()
            self.writer = None
        if self.tmp is not None:
            self.tmp.unlink(missing_ok=True)


class Window:
    """--show: an OpenCV window where there is a display; one line and no window where there is not."""

    def __init__(self):
        self.available = bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
                              or os.name == "nt" or os.uname().sysname == "Darwin")
        if not self.available:
            say("[yellow]--show: no display here (DISPLAY is not set); continuing without a window[/yellow]")

    def show(self, rgb: np.ndarray) -> bool:
        """Show a frame; False once the user pressed q or Esc."""
        if not self.available:
            return True
        cv2 = require_cv2("--show")
        try:
            cv2.imshow("edgeseg predict", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
            key = cv2.waitKey(1) & 0xFF
        except cv2.error:
            self.available = False
            say("[yellow]--show: this OpenCV has no GUI (opencv-python-headless); pip install opencv-python for a "
                "window. Continuing without one[/yellow]")
            return True
        return key not in (ord("q"), 27)

    def close(self) -> None:
        if self.available:
            require_cv2("--show").destroyAllWindows()


class Outputs:
    """Writes what ``--save`` asks for, one frame at a time, for one source after another."""

    def __init__(self, out: Path, save: Optional[Set[str]], palette: np.ndarray, alpha: float, show: bool):
        self.out, self.save, self.palette, self.alpha = out, save, palette, alpha
        self.window = Window() if show else None
        self.written: Dict[str, int] = {"masks": 0, "overlays": 0, "videos": 0}
        self.videos = []
        self.names: Set[str] = set()
        self.current: Set[str] = set()
        self.video: Optional[VideoOut] = None
        self.stopped = False  # the user closed the window

    def begin(self, source: Source) -> None:
        self.current = self.save if self.save is not None else default_save(source.kind)
        for folder in ("masks", "overlays"):
            if folder in self.current:
                (self.out / folder).mkdir(parents=True, exist_ok=True)
        if "video" in self.current and source.kind != "images":
            self.video = VideoOut(self.out / f"{self._unique(source.name)}.mp4", source.fps)

    def _unique(self, stem: str) -> str:
        """Two sources with an a.png each must not overwrite each other: the second becomes a-2."""
        name, number = stem, 1
        while name in self.names:
            number += 1
            name = f"{stem}-{number}"
        self.names.add(name)
        return name

    def write(self, name: str, image: np.ndarray, mask: np.ndarray) -> None:
        name = self._unique(name)
        if "/" in name:  # an image from a subfolder (see sources.output_names): the outputs mirror the tree
            for folder in ("masks", "overlays"):
                if folder in self.current:
                    (self.out / folder / name).parent.mkdir(parents=True, exist_ok=True)
        paletted = mask_image(mask, self.palette)  # one P image serves the PNG and the overlay's colours
        if "masks" in self.current:
            write_mask_png(self.out / "masks" / f"{name}.png", paletted)
            self.written["masks"] += 1
        needs_overlay = "overlays" in self.current or self.video is not None or self.window is not None
        if not needs_overlay:
            return
        blended = blend(Image.fromarray(image), mask, self.palette, self.alpha, paletted)
        if "overlays" in self.current:
            with atomic_path(self.out / "overlays" / f"{name}.jpg") as tmp:
                blended.save(tmp, format="JPEG", quality=JPEG_QUALITY)
            self.written["overlays"] += 1
        if self.video is not None or self.window is not None:
            rgb = np.asarray(blended)
            if self.video is not None:
                self.video.write(rgb)
            if self.window is not None and not self.window.show(rgb):
                self.stopped = True

    def end(self) -> Optional[Path]:
        """Finish the current source's video (complete, playable) and return its path."""
        path = self.video.close() if self.video is not None else None
        if path is not None:
            self.written["videos"] += 1
            self.videos.append(str(path))
        self.video = None
        return path

    def abort(self) -> None:
        if self.video is not None:
            self.video.discard()
            self.video = None

    def close(self) -> None:
        if self.window is not None:
            self.window.close()
