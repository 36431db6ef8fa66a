"""``edgeseg predict MODEL SOURCE... --out DIR``: masks, overlays and videos from any model edgeseg runs.

Each source runs through bench's three-stage pipeline (``benchmark.pipeline``): frames
are decoded and pre-processed on one thread, inferred here, and post-processed and
encoded on another, so on a folder predict keeps up with bench's inference-only FPS
(benchmarks/predict_overhead.py). Every phase is timed on its own for the live status
and the summary.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import List, Optional, Sequence, Union

import numpy as np

from rich.markup import escape

from edgeseg.benchmark.pipeline import run_pipeline
from edgeseg.console import console, progress_bar, say
from edgeseg.errors import ConfigError
from edgeseg.fileio import write_json_atomic
from edgeseg.predict.segmenter import Segmenter
from edgeseg.predict.sources import Frame, Source, resolve_sources
from edgeseg.predict.writers import Outputs, parse_save
from edgeseg.runtime.loader import backend_of
from edgeseg.spec import ModelFacts
from edgeseg.sidecar import model_output

PHASES = ("decode", "preprocess", "inference", "postprocess", "encode")


class _Tally:
    """Seconds per phase, frames done and skipped, pixels per class: shared by the pipeline's threads.

    Each field is written by one thread only (decode/preprocess by the producer,
    inference by the main thread, the rest by the finisher), so no lock is needed.
    """

    def __init__(self, num_classes: Optional[int]):
        self.seconds = dict.fromkeys(PHASES, 0.0)
        self.frames = 0
        self.skipped: List[str] = []
        self.class_pixels = np.zeros(num_classes or 0, dtype=np.int64)
        self.started = time.perf_counter()

    def count(self, mask: np.ndarray) -> None:
        counts = np.bincount(mask.ravel())
        if len(counts) > len(self.class_pixels):  # the class count was unknown: grow as classes appear
            grown = np.zeros(len(counts), dtype=np.int64)
            grown[: len(self.class_pixels)] = self.class_pixels
            self.class_pixels = grown
        self.class_pixels[: len(counts)] += counts

    def fps(self) -> float:
        return self.frames / max(time.perf_counter() - self.started, 1e-9)

    def status(self) -> str:
        per = {k: 1e3 * v / max(self.frames, 1) for k, v in self.seconds.items()}
        return (f"{self.fps():.1f} FPS, ms: dec {per['decode']:.1f} pre {per['preprocess']:.1f} "
                f"inf {per['inference']:.1f} post {per['postprocess']:.1f} enc {per['encode']:.1f}")


def _run_source(segmenter: Segmenter, source: Source, outputs: Outputs, tally: _Tally,
                max_frames: Optional[int], stats: bool) -> None:
    """One source through the pipeline; its video is finished (playable) whatever ends it."""
    stop = threading.Event()
    outputs.begin(source)

    def load(frame: Frame):
        tally.seconds["decode"] += frame.decode_s
        if frame.image is None:
            return frame, None
        started = time.perf_counter()
        batch = segmenter.prepare(frame.image)
        tally.seconds["preprocess"] += time.perf_counter() - started
        return frame, batch

    lock = threading.Lock()

    def inference_with(runner):
        def infer(item):
            frame, batch = item
            if batch is None:
                return frame, None
            started = time.perf_counter()
            output = runner.infer(batch)
            with lock:  # several streams add to one tally
                tally.seconds["inference"] += time.perf_counter() - started
            return frame, output
        return infer

    label = source.name[:24]
    with progress_bar(label, source.total) as advance:
        def finish(item):
            frame, output = item
            if outputs.stopped:  # q or Esc closed the window: frames still in the pipeline are not shown or written
                return
            if output is None:
                tally.skipped.append(f"{frame.name}: {frame.error}")
                console.print(f"[yellow]skipped {escape(str(frame.error))}[/yellow]")
                advance(1)
                return
            started = time.perf_counter()
            mask = segmenter.finish(output, frame.image.shape[:2])
            if stats:
                tally.count(mask)
            encoding = time.perf_counter()
            outputs.write(frame.name, frame.image, mask)
            tally.seconds["postprocess"] += encoding - started
            tally.seconds["encode"] += time.perf_counter() - encoding
            tally.frames += 1
            if outputs.stopped:
                stop.set()
            advance(1, status=tally.status())

        try:
            run_pipeline(0, load, inference_with(segmenter.runner), finish, items=source.frames(max_frames, stop),
                         more_infers=[inference_with(runner) for runner in segmenter.more_runners])
        except BaseException:
            outputs.end()  # what was written stays a complete, playable file
            raise
        finally:
            source.close()
    path = outputs.end()
    if source.ended_early:
        say(f"[yellow]{source.ended_early}; {path.name if path else 'the output'} holds every frame read[/yellow]")


def predict(model: Union[str, Path], sources: Union[str, Sequence[str]], out: Union[str, Path] = "predictions", *,
            save: Optional[Sequence[str]] = None, alpha: float = 0.5, show: bool = False, stats: bool = False,
            max_frames: Optional[int] = None, json_out: Optional[str] = None, device: str = "cpu",
            threads: Optional[int] = None, streams: Optional[int] = None, trust_checkpoint: bool = False,
            trust_engine: bool = False, allow_engine_host_code: bool = False,
            facts: Optional[ModelFacts] = None) -> dict:
    """Segment images, videos, cameras or streams with ``model``; write masks, overlays or videos under ``out``.

    Masks are palette PNGs at each image's own size (``out/masks/<stem>.png``; a folder's subfolders are mirrored,
    ``out/masks/day/001.png``, and inputs sharing a name keep their extension, ``frame.jpg.png``), overlays
    JPEGs (``out/overlays/<stem>.jpg``), videos mp4s with the overlay on every frame
    (``out/<stem>.mp4``). Unreadable images are skipped and counted; Ctrl-C ends a
    camera or stream cleanly. ``streams`` runs that many inference sessions side by side
    (default: see ``stream_count``). ``facts`` say what an ONNX exported elsewhere does not
    (input size, mean/std, class names). Returns the summary (also written to ``json_out``).

    >>> edgeseg.predict("pruned.int8.onnx", ["street/"], out="masks-out")  # doctest: +SKIP
    """
    specs = [sources] if isinstance(sources, (str, Path)) else [str(s) for s in sources]
    if not specs:
        raise ConfigError("Give at least one SOURCE: an image, a folder, a video, a camera (0) or a stream address.")
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"--alpha must be between 0 and 1, got {alpha}.")
    if max_frames is not None and max_frames < 1:
        raise ConfigError(f"--max-frames must be at least 1, got {max_frames}.")
    if streams is not None and streams < 1:
        raise ConfigError(f"--streams must be at least 1, got {streams}.")
    chosen = parse_save(save)
    resolved = resolve_sources([str(s) for s in specs])  # fails on a typo before the model is loaded
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; give a folder for the masks and overlays.")
    try:
        for source in resolved:  # a camera that does not open is one sentence, before anything is written
            source.open()
        # decoding and encoding threads run beside inference: ONNX Runtime must not busy-wait on their cores
        count = stream_count(streams, backend_of(model), device, resolved)  # the Segmenter opens the file
        segmenter = Segmenter(model, device, threads=threads or _threads_per_stream(count),
                              trust_checkpoint=trust_checkpoint, trust_engine=trust_engine,
                              allow_engine_host_code=allow_engine_host_code, spin_wait=False, facts=facts)
        given = facts.dataset if facts is not None else None
        if given is not None and segmenter.num_classes not in (None, given.num_classes):
            segmenter.close()
            from edgeseg.data.dataset import ClassCount

            said = ClassCount.of_model(segmenter.artifact.path, segmenter.artifact.meta, segmenter.num_classes)
            raise ConfigError(f"{said.said_by} says {said.num_classes} classes but the dataset given for class names "
                              f"(--data, {given.name}) says {given.num_classes}; give the dataset the model was "
                              f"trained on (or fix num_classes in its dataset.yaml), or {said.remedy}.")
        segmenter.add_streams(count - 1)
        summary = _segment_all(segmenter, resolved, out, chosen, alpha, show, stats or bool(json_out), max_frames)
    finally:
        for source in resolved:
            source.close()
    _report(summary, stats)
    if json_out:
        write_json_atomic(json_out, summary)
    return summary


def stream_count(streams: Optional[int], backend: str, device: str, sources: List[Source]) -> int:
    """How many inference sessions run side by side: ``streams`` if given, else 2 for ONNX Runtime on a CPU
    with 2+ cores reading files, 1 otherwise.

    Measured on 2 cores (LR-ASPP MobileNetV3-Large, 360x480, inference alone): two single-threaded
    sessions 59.0 FPS, one two-threaded session 50.9 (benchmarks/results/ort_cpu_layouts.md). A GPU runs one stream best; PyTorch's threads are
    process-wide; a live camera wants each frame's latency low, which one stream with every core gives.
    """
    if streams is not None:
        return streams
    live = any(source.kind in ("camera", "csi", "stream") for source in sources)
    if backend != "onnxruntime" or device != "cpu" or live or _cores() < 2:
        return 1
    return 2


def _cores() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _threads_per_stream(count: int) -> Optional[int]:
    """Each of several streams gets an equal share of the cores; one stream keeps the runtime's default."""
    return max(1, _cores() // count) if count > 1 else None


def _segment_all(segmenter: Segmenter, resolved: List[Source], out: Path, chosen, alpha: float, show: bool,
                 count: bool, max_frames: Optional[int]) -> dict:
    """Every source in turn through one model; Ctrl-C ends the run with every written file complete."""
    interrupted = False
    with segmenter:
        out.mkdir(parents=True, exist_ok=True)
        tally = _Tally(segmenter.num_classes)
        outputs = Outputs(out, chosen, segmenter.palette, alpha, show)
        try:
            for source in resolved:
                remaining = None if max_frames is None else max_frames - tally.frames - len(tally.skipped)
                if outputs.stopped or (remaining is not None and remaining <= 0):
                    break
                _run_source(segmenter, source, outputs, tally, remaining, count)
        except KeyboardInterrupt:
            interrupted = True
            say("[yellow]Interrupted: every file written so far is complete[/yellow]")
        finally:
            outputs.close()
        return _summary(segmenter, resolved, out, outputs, tally, interrupted)


def _summary(segmenter: Segmenter, sources: List[Source], out: Path, outputs: Outputs, tally: _Tally,
             interrupted: bool) -> dict:
    wall = time.perf_counter() - tally.started
    frames = max(tally.frames, 1)
    total = int(tally.class_pixels.sum())
    names = segmenter.class_names()
    share = ({(names[i] if i < len(names) else f"class{i}"): round(100.0 * int(c) / total, 4)
              for i, c in enumerate(tally.class_pixels)} if total else {})
    return {"model": str(segmenter.artifact.path), "backend": segmenter.runner.backend,
            "streams": 1 + len(segmenter.more_runners),
            "output": model_output(segmenter.artifact.meta)["kind"],
            "sources": [{"source": s.spec, "kind": s.kind, **({"ended_early": s.ended_early} if s.ended_early else {})}
                        for s in sources],
            "out": str(out), "frames": tally.frames, "skipped": len(tally.skipped), "skipped_files": tally.skipped,
            "interrupted": interrupted, "wall_s": round(wall, 4), "fps": round(tally.frames / max(wall, 1e-9), 3),
            "phases_ms": {k: round(1e3 * v / frames, 4) for k, v in tally.seconds.items()},
            "written": dict(outputs.written), "videos": outputs.videos, "files": outputs.files,
            "class_share_percent": share}


def _report(summary: dict, stats: bool) -> None:
    phases = ", ".join(f"{k} {v:.2f}" for k, v in summary["phases_ms"].items())
    written = ", ".join(f"{n} {k}" for k, n in summary["written"].items() if n)
    say(f"{summary['frames']} frame(s) at {summary['fps']:.1f} FPS (ms/frame: {phases}); wrote "
        f"{written or 'nothing'} in {summary['out']}")
    if summary["skipped"]:
        say(f"[yellow]{summary['skipped']} unreadable image(s) skipped[/yellow]")
    if stats and summary["class_share_percent"]:
        from rich.table import Table

        from edgeseg.console import out

        table = Table(title="Share of pixels per class")
        table.add_column("class")
        table.add_column("% of pixels", justify="right")
        for name, percent in summary["class_share_percent"].items():
            table.add_row(name, f"{percent:.2f}")
        out.print(table)

