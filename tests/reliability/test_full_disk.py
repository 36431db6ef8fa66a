"""A full disk, simulated with a file-size limit (RLIMIT_FSIZE: writes past it fail with EFBIG, as on a full
tmpfs), gives one clear sentence and leaves no partial artifact."""
from __future__ import annotations

import resource
import signal
import subprocess
import sys

import pytest

from tests.reliability.argv import fill

LIMIT_BYTES = 100_000  # smaller than every artifact the tiny models make


def _limited():
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # report EFBIG to the writer instead of killing the process
    resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT_BYTES, LIMIT_BYTES))


CASES = [
    ("disk: export onto a full disk", ["export", "{student}", "--out", "{out}/x.onnx"], "x.onnx"),
    ("disk: prune onto a full disk", ["prune", "{student}", "--ratio", "0.3", "--out", "{out}/p.pt"], "p.pt"),
    ("disk: calibrate onto a full disk", ["calibrate", "{onnx}", "--images", "{data}/train/images", "--num", "4",
                                          "--out", "{out}/q.int8.onnx"], "q.int8.onnx"),
    ("disk: train onto a full disk", ["train", "--arch", "unet", "--arch-arg", "base_channels=8", "--data", "{data}",
                                      "--epochs", "1", "--no-tensorboard", "--out", "{out}/t.pt"], "t.pt"),
]


@pytest.mark.parametrize("case,argv,output", CASES, ids=[c[0] for c in CASES])
def test_full_disk_is_one_sentence_and_no_partial_file(case, argv, output, tmp_path, tiny_student, tiny_onnx,
                                                       tiny_data):
    filled = fill(argv, {"student": tiny_student, "onnx": tiny_onnx, "data": tiny_data, "out": tmp_path})
    result = subprocess.run([sys.executable, "-m", "edgeseg.cli", *filled], capture_output=True, text=True,
                            preexec_fn=_limited)
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: Out of disk space") and "Traceback" not in result.stderr, result.stderr[-1500:]
    leftovers = [p.name for p in tmp_path.iterdir()]
    assert output not in leftovers and not [n for n in leftovers if n.startswith(".tmp-")], leftovers
