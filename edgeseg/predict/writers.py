"""What predict writes: palette PNG masks, JPEG overlays, an overlay video; and the --show window.

Every file is written atomically (a temporary name in the same folder, renamed when
complete), so an interrupted run leaves whole files or none. A video is finished and
renamed when its source ends, cleanly or not: what was written is a playable file.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Set

import numpy as np
from PIL import Image
from rich.markup import escape

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
        # what each input became, relative to ``out``: {"input", "mask", "overlay"} per image written,
        # {"input", "video"} per capture; the summary's "files" (--json)
        self.files: List[dict] = []
        self.names: Set[str] = set()  # of masks/ and overlays/ files, lower-cased (see _unique)
        self.video_names: Set[str] = set()
        self.numbered: List[str] = []  # "wished -> given" for names _unique had to number
        self.inputs: Dict[str, str] = {}  # output name -> the image it is for, in the current source
        self.current: Set[str] = set()
        self.video: Optional[VideoOut] = None
        self.source: Optional[Source] = None
        self.stopped = False  # the user closed the window

    def begin(self, source: Source) -> None:
        self.current = self.save if self.save is not None else default_save(source.kind)
        self.source = source
        source.leave_out(self.out)  # --out inside a folder being read: its earlier masks are not inputs
        self.inputs = dict(zip(source.names, (str(p) for p in source.paths))) if source.kind == "images" else {}
        for folder in ("masks", "overlays"):
            if folder in self.current:
                (self.out / folder).mkdir(parents=True, exist_ok=True)
        if "video" in self.current and source.kind != "images":
            path = self.out / f"{self._unique(source.name, self.video_names)}.mp4"
            path.parent.mkdir(parents=True, exist_ok=True)  # a name that mirrors a folder (sources.settle_names)
            self.video = VideoOut(path, source.fps)

    def _unique(self, wished: str, taken: Set[str]) -> str:
        """A name not given yet. resolve_sources settles every input's name beforehand, so this numbers
        (a-2) only what it cannot foresee, e.g. an image named like a video's frame (drive_000000.png);
        each such rename is said when its source ends. Compared without case, as macOS and Windows do."""
        name, number = wished, 1
        while name.casefold() in taken:
            number += 1
            name = f"{wished}-{number}"
        taken.add(name.casefold())
        if name != wished:
            self.numbered.append(f"{wished} -> {name}")
        return name

    def write(self, name: str, image: np.ndarray, mask: np.ndarray) -> None:
        wished, name = name, self._unique(name, self.names)
        if "/" in name:  # an image from a subfolder (see sources.settle_names): the outputs mirror the tree
            for folder in ("masks", "overlays"):
                if folder in self.current:
                    (self.out / folder / name).parent.mkdir(parents=True, exist_ok=True)
        record = {"input": self.inputs[wished]} if wished in self.inputs else None
        paletted = mask_image(mask, self.palette)  # one P image serves the PNG and the overlay's colours
        if "masks" in self.current:
            write_mask_png(self.out / "masks" / f"{name}.png", paletted)
            self.written["masks"] += 1
            if record is not None:
                record["mask"] = f"masks/{name}.png"
        if "overlays" in self.current and record is not None:
            record["overlay"] = f"overlays/{name}.jpg"
        if record is not None and len(record) > 1:
            self.files.append(record)
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
        if self.source is not None and self.source.kind != "images":
            record = {"input": self.source.spec}
            if path is not None:
                record["video"] = path.relative_to(self.out).as_posix()
            if "masks" in self.current:
                record["masks"] = f"masks/{self.source.name}_*.png"  # one per frame, numbered from 000000
            if len(record) > 1:
                self.files.append(record)
        self.video = None
        if self.numbered:
            say(f"[yellow]{len(self.numbered)} output name(s) were taken already, so they got a number: "
                f"{escape(', '.join(self.numbered[:4]))}{', ...' if len(self.numbered) > 4 else ''}[/yellow]")
            self.numbered = []
        return path

    def abort(self) -> None:
        if self.video is not None:
            self.video.discard()
            self.video = None

    def close(self) -> None:
        if self.window is not None:
            self.window.close()
