"""C core vs its numpy twin: pre-processing, and argmax + confusion, at CamVid and Cityscapes sizes.

Target (issue 3): the C core at least 5x faster. Run: python benchmarks/native_core.py
"""
from __future__ import annotations

import sys
import time

import numpy as np

from common import alternate, machine, median, write_results

from edgeseg.runtime import native

MEAN, STD = (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)
CASES = [("CamVid 360x480, 11 classes", 360, 480, 11), ("Cityscapes 1024x2048, 19 classes", 1024, 2048, 19)]


def main(rounds: int = 15) -> None:
    if native._native is None:
        sys.exit("The C core is not built here; install edgeseg with a C compiler (pip install -e .).")
    rng = np.random.default_rng(0)
    rows, document = [], {"machine": machine(), "rounds": rounds, "cases": []}
    for title, height, width, classes in CASES:
        image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        logits = rng.standard_normal((1, classes, height, width)).astype(np.float32)
        label = rng.integers(0, classes + 1, (height, width)).astype(np.uint8)  # classes == ignore index
        pre_out = np.empty((1, 3, height, width), np.float32)
        arg_out = np.empty((1, height, width), np.uint8)
        matrix = np.zeros((classes, classes), np.int64)

        def c_post():
            native._native.argmax(logits, arg_out)
            native._native.confusion(arg_out, label, matrix, classes)

        def numpy_post():
            native.argmax_numpy(logits, arg_out)
            native.confusion_numpy(matrix, arg_out, label, classes)

        samples = alternate({
            "pre_c": lambda: native._native.normalize(image, (1 / 58.395, 1 / 57.12, 1 / 57.375),
                                                      (-123.675 / 58.395, -116.28 / 57.12, -103.53 / 57.375),
                                                      pre_out, False),
            "pre_numpy": lambda: native.normalize_numpy(image, MEAN, STD, pre_out),
            "post_c": c_post, "post_numpy": numpy_post,
        }, rounds)
        case = {"case": title, **{f"{k}_ms": median(v) for k, v in samples.items()}}
        case["pre_speedup"] = round(case["pre_numpy_ms"] / case["pre_c_ms"], 2)
        case["post_speedup"] = round(case["post_numpy_ms"] / case["post_c_ms"], 2)
        document["cases"].append(case)
        rows.append(f"| {title} | {case['pre_numpy_ms']:.2f} | {case['pre_c_ms']:.2f} | {case['pre_speedup']}x "
                    f"| {case['post_numpy_ms']:.2f} | {case['post_c_ms']:.2f} | {case['post_speedup']}x |")
    markdown = "\n".join([
        "# C core vs numpy twin (median ms per image, one process, interleaved)", "",
        f"Machine: {document['machine']['cpu']}, {document['machine']['cores']} cores; "
        f"{rounds} rounds; {time.strftime('%Y-%m-%d')}.", "",
        "| case | pre-process numpy | pre-process C | speed-up | argmax+confusion numpy | argmax+confusion C | speed-up |",
        "|---|---:|---:|---:|---:|---:|---:|", *rows, ""])
    write_results("native_core", document, markdown)


if __name__ == "__main__":
    main()
