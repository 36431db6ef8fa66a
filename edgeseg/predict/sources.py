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
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
from rich.markup import escape

from edgeseg.console import say
from edgeseg.data.images import HEIF_HINT, HEIF_SUFFIXES, PHOTO_SUFFIXES, heif_readable, read_image
from edgeseg.errors import DataError, EdgesegError, InputFileError, MissingDependencyError

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v")
LIST_SUFFIXES = (".txt", ".lst")
SHOWN_RENAMES = 4  # the rename line names this many inputs, then counts the rest
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
    # each path's output name: no suffix, "/" where it mirrors a subfolder of the folder or glob given
    # (masks/<name>.png, overlays/<name>.jpg); a capture's is ``name`` (<name>.mp4)
    names: List[str] = field(default_factory=list)
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
            names = self.names if len(self.names) == len(self.paths) else settle_names(self.paths, self.names)[0]
            yield from _image_frames(self.paths, names, max_frames, stop)
            return
        self.open()
        yield from _capture_frames(self, max_frames, stop)

    def leave_out(self, folder: Path) -> int:
        """Drop the images under ``folder`` (predict's --out inside a folder it reads: a second run must not
        segment the first run's masks and overlays); one line says how many. Returns that count."""
        if self.kind != "images" or not self.paths:
            return 0
        inside = os.path.abspath(folder) + os.sep
        keep = [i for i, p in enumerate(self.paths) if not os.path.abspath(p).startswith(inside)]
        dropped = len(self.paths) - len(keep)
        if dropped:
            names = self.names if len(self.names) == len(self.paths) else settle_names(self.paths, self.names)[0]
            self.paths, self.names = [self.paths[i] for i in keep], [names[i] for i in keep]
            say(f"[yellow]Leaving out {dropped} image(s) under {escape(str(folder))}: it is where this run writes "
                f"(--out), so they are a previous run's masks and overlays[/yellow]")
        return dropped


def _relative_name(path: Path, root: Path) -> str:
    """``path`` under ``root`` without its suffix, with "/" between folders: the name its outputs mirror."""
    return path.relative_to(root).with_suffix("").as_posix()


def settle_names(paths: List[Path], names: Optional[List[str]] = None) -> Tuple[List[str], List[Tuple[Path, str]]]:
    """Output names no two of which are the same file, and the (input, new name) of each input renamed.

    ``names`` are the wished ones (default: each path's stem). Where several inputs wish for one name
    (compared without case: macOS and Windows folders ignore it), *all* of them are renamed, never just
    the later ones: ``frame-2.png`` would not say which input it came from. First each keeps its own
    suffix, ``frame.jpg`` -> ``frame.jpg.png``, ``frame.png`` -> ``frame.png.png``, so an output's stem is
    its input's file name; where that still repeats (``a/frame.jpg``, ``b/frame.jpg``), the outputs mirror
    the inputs' paths under their common folder, ``a/frame.png``, ``b/frame.png`` (with the suffix where
    even those repeat). A name still taken after that (an input named ``frame.jpg.png`` beside the pair)
    gets ``-2``, ``-3``: said too, never silent.
    """
    wished = list(names) if names is not None and len(names) == len(paths) else [p.stem for p in paths]
    settled = list(wished)
    groups: Dict[str, List[int]] = defaultdict(list)
    for index, name in enumerate(wished):
        groups[name.casefold()].append(index)
    moved = [i for indices in groups.values() if len(indices) > 1 for i in indices]
    for indices in groups.values():
        if len(indices) > 1:
            for index, name in zip(indices, _apart([paths[i] for i in indices], [wished[i] for i in indices])):
                settled[index] = name
    # an input that kept its own name keeps it; a renamed one meeting it is the one numbered
    moved_set = set(moved)
    taken = {settled[i].casefold() for i in range(len(paths)) if i not in moved_set}
    for index in sorted(moved):
        candidate, number = settled[index], 1
        while candidate.casefold() in taken:
            number += 1
            candidate = f"{settled[index]}-{number}"
        taken.add(candidate.casefold())
        settled[index] = candidate
    renamed = [(paths[i], settled[i]) for i in range(len(paths)) if settled[i] != wished[i]]
    return settled, renamed


def _apart(paths: List[Path], names: List[str]) -> List[str]:
    """Names that tell apart inputs wishing for one name (see settle_names)."""
    def distinct(candidates):
        return len({c.casefold() for c in candidates}) == len(candidates)

    with_suffix = [name + path.suffix for name, path in zip(names, paths)]
    if distinct(with_suffix):
        return with_suffix
    absolute = [Path(os.path.abspath(p)) for p in paths]
    try:
        root = Path(os.path.commonpath([str(p.parent) for p in absolute]))
    except ValueError:  # on different drives: nothing in common to mirror
        return with_suffix
    mirrored = [p.relative_to(root).with_suffix("").as_posix() for p in absolute]
    if distinct(mirrored):
        return mirrored
    return [p.relative_to(root).as_posix() for p in absolute]


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


def _walk(folder: Path) -> Tuple[List[Path], Counter]:
    """Every image in ``folder`` and its subfolders (each folder's own files first, then its subfolders, by
    name), and the suffixes of the other files. Names starting with "." (.git, .DS_Store, thumbnails) are
    not looked at; a linked folder is followed once (a link back up the tree cannot loop)."""
    images: List[Path] = []
    others: Counter = Counter()
    seen = set()
    for top, dirs, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(top)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith("."):
                continue
            suffix = os.path.splitext(name)[1].lower()
            if suffix in PHOTO_SUFFIXES:
                images.append(Path(top) / name)
            else:
                others[suffix] += 1
    return images, others


def _not_images_line(count: int, suffixes: Counter, where: str) -> None:
    """One line for the files a folder or glob holds that predict does not read, by suffix."""
    kinds = ", ".join(f"{n} {s or 'without suffix'}" for s, n in suffixes.most_common(4))
    more = ", ..." if len(suffixes) > 4 else ""
    hint = ("; give a video or a list file on its own" if any(s in VIDEO_SUFFIXES + LIST_SUFFIXES for s in suffixes)
            else "")
    say(f"[yellow]Leaving out {count} file(s) {escape(where)} that are not images ({kinds}{more}){hint}[/yellow]")


def _photos(folder: Path) -> List[Path]:
    """A folder's images, subfolders included, with its HEIC photos where pillow-heif can read them.

    Subfolders are always walked: a folder given is all the images in it, as torchvision's ImageFolder
    reads one (Ultralytics' ``source=dir/`` reads only the top level and says nothing of the rest). Every
    file left out is counted in one line: other types by suffix, HEIC photos without pillow-heif.
    """
    photos, others = _walk(folder)
    if others:
        _not_images_line(sum(others.values()), others, f"in {folder}")
    heic = [p for p in photos if p.suffix.lower() in HEIF_SUFFIXES]
    if heic and not heif_readable():
        say(f"[yellow]Leaving out {len(heic)} HEIC photo(s) in {escape(str(folder))}: {HEIF_HINT}[/yellow]")
        return [p for p in photos if p.suffix.lower() not in HEIF_SUFFIXES]
    return photos


def _glob_root(path: Path) -> Path:
    """The folder a glob's matches are named under: its parts before the first wildcard."""
    fixed = []
    for part in path.parts:
        if any(char in part for char in "*?["):
            break
        fixed.append(part)
    return Path(*fixed) if fixed else Path(".")


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
            raise DataError(f"Folder {path} holds no images ({', '.join(PHOTO_SUFFIXES)}), nor do its subfolders; "
                            f"give a folder of images or a video.")
        # outputs mirror the folder: street/day/001.jpg -> masks/day/001.png, so no two can share a name
        return Source("images", path.name, spec, images, [_relative_name(p, path) for p in images])
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix in PHOTO_SUFFIXES:
            return Source("images", path.stem, spec, [path], [path.stem])
        if suffix in VIDEO_SUFFIXES:
            return Source("video", path.stem, str(path), [path])
        if suffix in LIST_SUFFIXES:
            listed = _read_list(path)
            return Source("images", path.stem, spec, listed, [p.stem for p in listed])
        raise InputFileError(f"{path} is neither an image ({', '.join(PHOTO_SUFFIXES)}), a video "
                             f"({', '.join(VIDEO_SUFFIXES)}) nor a list of paths (.txt); give one of those.")
    if any(char in spec for char in "*?["):
        found = [Path(p) for p in glob.glob(str(path), recursive=True)]  # ** reaches into subfolders
        matches = sorted(p for p in found if p.suffix.lower() in PHOTO_SUFFIXES)
        others = Counter(p.suffix.lower() for p in found if p.suffix.lower() not in PHOTO_SUFFIXES and p.is_file())
        if not matches:
            raise DataError(f"No image matches {spec}; check the pattern (quote it so the shell leaves it alone).")
        if others:
            _not_images_line(sum(others.values()), others, f"matching {spec}")
        # named like a folder's: 'drive/**/*.png' -> masks/seq01/000001.png, as 'drive/' gives
        root = _glob_root(path)
        return Source("images", "glob", spec, matches, [_relative_name(p, root) for p in matches])
    raise InputFileError(f"Source {spec} does not exist; give an image, a folder, a glob, a list file, a video, "
                         f"a camera (0, /dev/video0), csi://0 or an rtsp:// address.")


def resolve_sources(specs: Sequence[str]) -> List[Source]:
    """Every image source merged into one (in the order given), then each capture on its own; each output
    name settled here, before anything runs, and every rename said in one line (see settle_names)."""
    sources = [classify(spec) for spec in specs]
    images = [s for s in sources if s.kind == "images"]
    captures = [s for s in sources if s.kind != "images"]
    merged = []
    renamed: List[Tuple[Path, str]] = []
    if images:
        paths, names = _once([p for s in images for p in s.paths], [n for s in images for n in s.names])
        names, renamed = settle_names(paths, names)
        name = images[0].name if len(images) == 1 else "images"
        merged.append(Source("images", name, ", ".join(s.spec for s in images), paths, names))
    # two videos called drive.mp4 (or drive.mp4 and drive.avi) would write one drive.mp4
    settled, renamed_captures = settle_names([s.paths[0] if s.paths else Path(s.spec) for s in captures],
                                             [s.name for s in captures])
    for source, name in zip(captures, settled):
        source.name = name
    shown = ([f"{escape(str(p))} -> masks/{escape(n)}.png" for p, n in renamed]
             + [f"{escape(str(p))} -> {escape(n)}.mp4" for p, n in renamed_captures])
    if shown:
        more = (f", and {len(shown) - SHOWN_RENAMES} more"
                if len(shown) > SHOWN_RENAMES else "")
        say(f"[yellow]Renamed the outputs of {len(shown)} input(s) that share a name, so none overwrites another: "
            f"{', '.join(shown[:SHOWN_RENAMES])}{more}[/yellow]")
    return merged + captures


def _once(paths: List[Path], names: List[str]) -> Tuple[List[Path], List[str]]:
    """Each image once: a file given twice (a folder and a glob over it) would be segmented twice into two
    identical masks; one line says how many repeats were left out."""
    seen, keep = set(), []
    for index, path in enumerate(paths):
        real = os.path.realpath(path)
        if real not in seen:
            seen.add(real)
            keep.append(index)
    if len(keep) < len(paths):
        kept = set(keep)
        first = next(p for i, p in enumerate(paths) if i not in kept)
        say(f"[yellow]Leaving out {len(paths) - len(keep)} image(s) given more than once (e.g. "
            f"{escape(str(first))}): each is segmented once[/yellow]")
    return [paths[i] for i in keep], [names[i] for i in keep]
