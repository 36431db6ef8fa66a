"""Where frames come from: images (a file, a folder, a glob, a list file), a video, a camera, a stream.

``resolve_sources`` turns the SOURCE arguments into ``Source`` objects before any model
is loaded, so a typo fails at once. Each source yields ``Frame`` objects; decoding
happens inside the iteration, which ``predict`` runs on its producer thread so that it
overlaps with inference. Images need only Pillow; videos and cameras need OpenCV (the
``video`` extra), imported only when one is asked for.
"""
from __future__ import annotations

import glob
import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, List, Optional, Sequence

import numpy as np

from edgeseg.console import say
from edgeseg.data.images import HEIF_HINT, HEIF_SUFFIXES, PHOTO_SUFFIXES, heif_readable, list_images, read_image
from edgeseg.errors import DataError, EdgesegError, InputFileError, MissingDependencyError

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v")
LIST_SUFFIXES = (".txt", ".lst")
STREAM_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://")
OPEN_TIMEOUT_MS = 5000  # a stream that does not answer within this is refused, not waited on for ever


class SourceError(EdgesegError):
    """A camera or stream that cannot be opened."""


@dataclass
class Frame:
    """One picture to segment; ``image`` is None (and ``error`` says why) when it could not be decoded."""

    name: str  # stem of the files written for it
    index: int
    image: Optional[np.ndarray]
    error: Optional[str] = None
    decode_s: float = 0.0


def require_cv2(what: str):
    """OpenCV, or one sentence saying how to get it."""
    # FFmpeg inside OpenCV prints its own warnings (a refused connection, a damaged frame) past Python;
    # edgeseg says what matters in one line instead. Read once, when OpenCV first loads FFmpeg.
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    try:
        import cv2
    except ImportError as exc:
        raise MissingDependencyError(f"{what} needs OpenCV: pip install 'edgeseg[video]' (opencv-python-headless; "
                                     f"on Jetson use JetPack's python3-opencv). Images need only Pillow.") from exc
    return cv2


@dataclass
class Source:
    """Images to read one by one (``kind == "images"``) or one capture (video, camera, csi, stream)."""

    kind: str
    name: str
    spec: str = ""
    paths: List[Path] = field(default_factory=list)
    fps: float = 0.0  # of a capture, once opened
    expected_frames: Optional[int] = None  # a video's own frame count, once opened
    ended_early: Optional[str] = None  # why a capture stopped before its end
    _capture: object = None

    @property
    def total(self) -> Optional[int]:
        return len(self.paths) if self.kind == "images" else self.expected_frames

    def open(self) -> "Source":
        """Open a capture (raises SourceError for a camera or stream that does not open); no-op for images."""
        if self.kind != "images" and self._capture is None:
            self._capture = _open_capture(self)
        return self

    def close(self) -> None:
        if self._capture is not None:
            self._capture.release()
            self._capture = None

    def frames(self, max_frames: Optional[int] = None, stop: Optional[threading.Event] = None) -> Iterator[Frame]:
        """Decoded frames, up to ``max_frames``, until ``stop`` is set; unreadable images come as error frames."""
        if self.kind == "images":
            yield from _image_frames(self.paths, output_names(self.paths), max_frames, stop)
            return
        self.open()
        yield from _capture_frames(self, max_frames, stop)


def output_names(paths: List[Path]) -> List[str]:
    """Each image's output name: its stem, or where stems repeat (seq01/000001.png, seq02/000001.png) its path
    under the images' common folder without the suffix, so masks/ mirrors the tree instead of numbering."""
    stems = [p.stem for p in paths]
    if len(set(stems)) == len(stems):
        return stems
    root = Path(os.path.commonpath([str(p.resolve().parent) for p in paths]))
    return [p.resolve().relative_to(root).with_suffix("").as_posix() for p in paths]


def _image_frames(paths: List[Path], names: List[str], max_frames: Optional[int], stop) -> Iterator[Frame]:
    for index, path in enumerate(paths[:max_frames] if max_frames else paths):
        if stop is not None and stop.is_set():
            return
        started = time.perf_counter()
        try:
            image, error = read_image(path, upright=True), None
        except DataError as exc:  # one bad file must not stop a 10,000-image run
            image, error = None, str(exc)
        yield Frame(names[index], index, image, error, time.perf_counter() - started)


def _capture_frames(source: Source, max_frames: Optional[int], stop) -> Iterator[Frame]:
    cv2 = require_cv2("Reading videos and cameras")
    capture = source._capture
    index = 0
    while max_frames is None or index < max_frames:
        if stop is not None and stop.is_set():
            return
        started = time.perf_counter()
        ok, bgr = capture.read()
        if not ok or bgr is None:
            break
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB) if bgr.ndim == 3 else cv2.cvtColor(bgr, cv2.COLOR_GRAY2RGB)
        name = f"{source.name}_{index:06d}"
        yield Frame(name, index, rgb, None, time.perf_counter() - started)
        index += 1
    if max_frames is not None and index >= max_frames:
        return
    if source.kind == "video":
        if source.expected_frames and index < source.expected_frames:
            source.ended_early = (f"{source.spec} ended after {index} of its {source.expected_frames} frames "
                                  f"(the file is damaged or cut short)")
    else:
        source.ended_early = f"{source.spec} stopped sending frames after {index}"


def _capture_target(source: Source, cv2):
    """(what VideoCapture opens, API preference, open parameters) for a source."""
    timeouts = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, OPEN_TIMEOUT_MS, cv2.CAP_PROP_READ_TIMEOUT_MSEC, OPEN_TIMEOUT_MS]
    if source.kind == "camera":
        return (int(source.spec) if source.spec.isdigit() else source.spec), cv2.CAP_ANY, []
    if source.kind == "csi":
        return csi_pipeline(int(source.spec[len("csi://"):] or 0)), cv2.CAP_GSTREAMER, []
    if source.kind == "stream":
        return source.spec, cv2.CAP_FFMPEG, timeouts
    return source.spec, cv2.CAP_ANY, []


def csi_pipeline(sensor_id: int, width: int = 1280, height: int = 720, fps: int = 30) -> str:
    """The GStreamer pipeline JetPack's OpenCV opens a CSI camera with (nvarguscamerasrc, NVMM -> BGR appsink)."""
    return (f"nvarguscamerasrc sensor-id={sensor_id} ! video/x-raw(memory:NVMM), width={width}, height={height}, "
            f"framerate={fps}/1 ! nvvidconv ! video/x-raw, format=BGRx ! videoconvert ! video/x-raw, format=BGR ! "
            f"appsink drop=1 max-buffers=2")


def _open_capture(source: Source):
    cv2 = require_cv2("Reading videos and cameras")
    if source.kind == "csi" and "GStreamer:                   YES" not in cv2.getBuildInformation():
        raise SourceError(f"{source.spec} needs OpenCV built with GStreamer (JetPack's python3-opencv); this "
                          f"OpenCV {cv2.__version__} has none.")
    target, api, params = _capture_target(source, cv2)
    quiet = _quiet_opencv(cv2)
    try:
        capture = cv2.VideoCapture(target, api, params) if params else cv2.VideoCapture(target, api)
    finally:
        quiet()
    if not capture.isOpened():
        capture.release()
        if source.kind == "video":
            raise InputFileError(f"{source.spec} is not a video OpenCV can read; check the file or convert it "
                                 f"to mp4 (H.264).")
        what = {"camera": "Camera", "csi": "CSI camera", "stream": "Stream"}[source.kind]
        hint = ("check that it is plugged in and not used by another program, or list cameras with "
                "`v4l2-ctl --list-devices`" if source.kind != "stream" else
                f"it refused or did not answer within {OPEN_TIMEOUT_MS // 1000} s; check the address and the network")
        raise SourceError(f"{what} {source.spec} cannot be opened: {hint}.")
    auto_rotation = getattr(cv2, "CAP_PROP_ORIENTATION_AUTO", None)  # OpenCV >= 4.5 (JetPack 4's 4.1 lacks it)
    if source.kind in ("video", "stream") and auto_rotation is not None:
        # a phone's portrait video is stored sideways with a rotation tag; OpenCV 4.11 stopped turning such
        # frames upright by default (opencv issue 26795), so ask for it whatever the version's default
        capture.set(auto_rotation, 1)
    source.fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
    if source.kind == "video":
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        source.expected_frames = count if count > 0 else None
    return capture


def _quiet_opencv(cv2):
    """Silence OpenCV's own warnings while opening (a missing camera prints several); return the undo."""
    logging = getattr(getattr(cv2, "utils", None), "logging", None)
    if logging is None:
        return lambda: None
    level = logging.getLogLevel()
    logging.setLogLevel(logging.LOG_LEVEL_SILENT)
    return lambda: logging.setLogLevel(level)


def _stem(spec: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", spec).strip("_") or "source"


def _read_list(path: Path) -> List[Path]:
    """Paths listed one a line (blank lines and # comments skipped), relative to the list file's folder."""
    paths = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            listed = Path(line).expanduser()
            paths.append(listed if listed.is_absolute() else path.parent / listed)
    return paths


def _photos(folder: Path) -> List[Path]:
    """A folder's images, with its HEIC photos where pillow-heif can read them (one line when it cannot)."""
    photos = list_images(folder, PHOTO_SUFFIXES)
    heic = [p for p in photos if p.suffix.lower() in HEIF_SUFFIXES]
    if heic and not heif_readable():
        say(f"[yellow]Leaving out {len(heic)} HEIC photo(s) in {folder}: {HEIF_HINT}[/yellow]")
        return [p for p in photos if p.suffix.lower() not in HEIF_SUFFIXES]
    return photos


def classify(spec: str) -> Source:
    """One SOURCE argument -> a Source (nothing is opened or decoded yet)."""
    lowered = spec.lower()
    if lowered.startswith(STREAM_SCHEMES):
        return Source("stream", _stem(spec.split("://", 1)[1]), spec)
    if lowered.startswith("csi://"):
        if not spec[len("csi://"):].isdigit():
            raise SourceError(f"{spec} is not a CSI camera; write csi://0 (the sensor id).")
        return Source("csi", f"csi{spec[len('csi://'):]}", spec)
    if spec.isdigit():
        return Source("camera", f"camera{spec}", spec)
    if spec.startswith("/dev/video"):
        return Source("camera", Path(spec).name, spec)
    path = Path(spec).expanduser()
    if path.is_dir():
        images = _photos(path)
        if not images:
            nested = next((p for p in path.rglob("*") if p.suffix.lower() in PHOTO_SUFFIXES), None)
            if nested is not None:  # e.g. Cityscapes' leftImg8bit/val/<city>/*.png
                raise DataError(f"Folder {path} holds no images itself, but its subfolders do (e.g. "
                                f"{nested.relative_to(path)}); give them all with a quoted glob: "
                                f"'{path / '**' / ('*' + nested.suffix)}'.")
            raise DataError(f"Folder {path} holds no images ({', '.join(PHOTO_SUFFIXES)}); give a "
                            f"folder of images or a video.")
        return Source("images", path.name, spec, images)
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix in PHOTO_SUFFIXES:
            return Source("images", path.stem, spec, [path])
        if suffix in VIDEO_SUFFIXES:
            return Source("video", path.stem, str(path))
        if suffix in LIST_SUFFIXES:
            return Source("images", path.stem, spec, _read_list(path))
        raise InputFileError(f"{path} is neither an image ({', '.join(PHOTO_SUFFIXES)}), a video "
                             f"({', '.join(VIDEO_SUFFIXES)}) nor a list of paths (.txt); give one of those.")
    if any(char in spec for char in "*?["):
        matches = sorted(Path(p) for p in glob.glob(str(path), recursive=True)  # ** reaches into subfolders
                         if Path(p).suffix.lower() in PHOTO_SUFFIXES)
        if not matches:
            raise DataError(f"No image matches {spec}; check the pattern (quote it so the shell leaves it alone).")
        return Source("images", "glob", spec, matches)
    raise InputFileError(f"Source {spec} does not exist; give an image, a folder, a glob, a list file, a video, "
                         f"a camera (0, /dev/video0), csi://0 or an rtsp:// address.")


def resolve_sources(specs: Sequence[str]) -> List[Source]:
    """Every image source merged into one (in the order given), then each capture on its own."""
    sources = [classify(spec) for spec in specs]
    images = [s for s in sources if s.kind == "images"]
    merged = []
    if images:
        name = images[0].name if len(images) == 1 else "images"
        merged.append(Source("images", name, ", ".join(s.spec for s in images), [p for s in images for p in s.paths]))
    return merged + [s for s in sources if s.kind != "images"]
