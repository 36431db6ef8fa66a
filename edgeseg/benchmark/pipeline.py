"""The accuracy pass as a three-stage pipeline: decode + pre-process, inference, post-process.

The first and last stages run on their own threads; PIL decoding and the C core release
the GIL, so on a multi-core host they overlap with the runtime instead of adding to it.
Each stage's time per image is still measured on its own, so the phase split is honest.
"""
from __future__ import annotations

import queue
import threading
import time
from typing import Callable, Dict, Iterable, Optional, Sequence

_DONE = object()


class _Stage(threading.Thread):
    """Runs ``work(item)`` for each item of ``inbox`` (or of ``source``), putting results in ``outbox``."""

    def __init__(self, work: Callable, inbox: Optional[queue.Queue], outbox: Optional[queue.Queue],
                 source: Optional[Iterable] = None):
        super().__init__(daemon=True)
        self.work, self.inbox, self.outbox, self.source = work, inbox, outbox, source
        self.error: Optional[BaseException] = None
        self.seconds = 0.0
        self.stop = threading.Event()

    def _items(self):
        if self.source is not None:
            yield from self.source
            return
        while True:
            item = self.inbox.get()
            if item is _DONE:
                return
            yield item

    def run(self) -> None:
        try:
            for item in self._items():
                if self.stop.is_set():
                    return
                started = time.perf_counter()
                result = self.work(item)
                self.seconds += time.perf_counter() - started
                if self.outbox is not None:
                    self.outbox.put(result)
        except BaseException as exc:  # handed to the main thread, which re-raises it
            self.error = exc
        finally:
            if self.outbox is not None:
                self.outbox.put(_DONE)


def _put(box: queue.Queue, item, reader: threading.Thread) -> bool:
    """Put ``item`` unless the thread that reads ``box`` has died (then it would block forever)."""
    while True:
        try:
            box.put(item, timeout=0.05)
            return True
        except queue.Full:
            if not reader.is_alive():
                return False


def _stop_producer(producer: _Stage, loaded: queue.Queue) -> None:
    """Stop the producer, taking items off ``loaded`` so one blocked on the full queue can see the stop."""
    producer.stop.set()
    while producer.is_alive():
        try:
            loaded.get_nowait()
        except queue.Empty:
            producer.join(timeout=0.01)


def run_pipeline(count: int, load: Callable[[int], object], infer: Callable[[object], object],
                 finish: Callable[[object], None], depth: int = 4, items: Optional[Iterable] = None,
                 more_infers: Sequence[Callable[[object], object]] = ()) -> Dict[str, float]:
    """load(i) on a thread -> infer(item) here -> finish(result) on a thread; return seconds per stage.

    ``items`` replaces ``range(count)`` as what ``load`` is given, for sources of unknown
    length (a video, a camera); the producer thread iterates it, so the decoding a
    generator does overlaps with inference too. On an exception here (Ctrl-C included)
    the producer stops and the finisher still drains what was already inferred.

    ``more_infers``: further inference callables (each its own runner, i.e. its own
    ONNX Runtime session), run on threads beside ``infer``: several single-threaded
    streams keep CPU cores busier than one multi-threaded one, which waits for its
    slowest thread at every operator (OpenVINO's throughput mode; 1.16x on 2 cores in
    benchmarks/results/ort_cpu_layouts.md). ``finish`` still
    sees the results in the order ``load`` produced them.
    """
    if more_infers:
        return _run_streams(count, load, [infer, *more_infers], finish, depth, items)
    loaded: queue.Queue = queue.Queue(maxsize=depth)
    inferred: queue.Queue = queue.Queue(maxsize=depth)
    producer = _Stage(load, None, loaded, source=range(count) if items is None else items)
    consumer = _Stage(finish, inferred, None)
    producer.start()
    consumer.start()
    infer_seconds = 0.0
    wall = time.perf_counter()
    try:
        while True:
            item = loaded.get()
            if item is _DONE:
                break
            started = time.perf_counter()
            result = infer(item)
            infer_seconds += time.perf_counter() - started
            if not _put(inferred, result, consumer):
                break
    finally:
        _stop_producer(producer, loaded)
        _put(inferred, _DONE, consumer)
        consumer.join()
    for stage in (producer, consumer):
        if stage.error is not None:
            raise stage.error
    return {"load": producer.seconds, "infer": infer_seconds, "finish": consumer.seconds,
            "wall": time.perf_counter() - wall}


def _run_streams(count: int, load: Callable, infers: Sequence[Callable], finish: Callable, depth: int,
                 items: Optional[Iterable]) -> Dict[str, float]:
    """run_pipeline with one inference thread per callable; results are re-ordered before ``finish``."""
    loaded: queue.Queue = queue.Queue(maxsize=depth * len(infers))
    inferred: queue.Queue = queue.Queue(maxsize=depth * len(infers))
    source = enumerate(range(count) if items is None else items)
    producer = _Stage(lambda pair: (pair[0], load(pair[1])), None, loaded, source=source)
    pending: Dict[int, object] = {}
    next_index = [0]

    def in_order(pair):
        pending[pair[0]] = pair[1]
        while next_index[0] in pending:  # a later frame may be inferred first: hold it until its turn
            finish(pending.pop(next_index[0]))
            next_index[0] += 1

    consumer = _Stage(in_order, inferred, None)
    stop = threading.Event()
    lock = threading.Lock()
    infer_seconds = [0.0]

    def stream(infer: Callable) -> None:
        while not stop.is_set():
            try:
                item = loaded.get(timeout=0.05)
            except queue.Empty:
                continue
            if item is _DONE:
                loaded.put(item)  # the other streams stop on it too
                return
            started = time.perf_counter()
            result = (item[0], infer(item[1]))
            with lock:
                infer_seconds[0] += time.perf_counter() - started
            if not _put(inferred, result, consumer):
                stop.set()

    workers = [_Stage(lambda _, infer=infer: stream(infer), None, None, source=[None]) for infer in infers]
    wall = time.perf_counter()
    producer.start()
    consumer.start()
    for worker in workers:
        worker.start()
    try:
        while any(worker.is_alive() for worker in workers):  # the main thread stays free for Ctrl-C
            for worker in workers:
                worker.join(timeout=0.05)
            if any(stage.error is not None for stage in (producer, consumer, *workers)):
                break
    finally:
        stop.set()
        _stop_producer(producer, loaded)
        for worker in workers:
            worker.join()
        _put(inferred, _DONE, consumer)
        consumer.join()
    for stage in (producer, *workers, consumer):
        if stage.error is not None:
            raise stage.error
    return {"load": producer.seconds, "infer": infer_seconds[0], "finish": consumer.seconds,
            "wall": time.perf_counter() - wall}
