"""Masks out: ``edgeseg predict`` on images, videos, cameras and streams, and the ``Segmenter`` for applications.

Deploy side: torch-free for .onnx and .engine models, Python 3.8 like ``runtime`` and
``benchmark``, whose Runner contract, C core and threaded pipeline it reuses.
"""
from edgeseg.predict.api import predict
from edgeseg.predict.segmenter import Segmenter

__all__ = ["Segmenter", "predict"]
