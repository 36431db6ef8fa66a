"""Untrusted files: a checkpoint that would run code is refused by every command, and never runs.

The payload creates a file when unpickled; the cases check the refusal *and* that the
file was never created. `--trust-checkpoint` is the only way past (and then the code does
run: that is the risk the option's help and the README name).
"""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from tests.reliability.argv import fill


class _CreatesAFile:
    """Unpickling this calls open(marker, "w"): harmless here, but any code could be in its place."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture()
def evil(tmp_path, tiny_student):
    marker = tmp_path / "payload-ran"
    path = tmp_path / "evil.pt"
    payload = torch.load(tiny_student, map_location="cpu", weights_only=True)
    payload["extra"] = _CreatesAFile(str(marker))
    torch.save(payload, path)
    return path, marker


CASES = [
    ("untrusted: export a checkpoint carrying a pickle payload", ["export", "{evil}", "--out", "{tmp}/o.onnx"], "o.onnx"),
    ("untrusted: prune a checkpoint carrying a pickle payload", ["prune", "{evil}", "--ratio", "0.3", "--out",
                                                                 "{tmp}/p.pt"], "p.pt"),
    ("untrusted: distill from a teacher carrying a pickle payload",
     ["distill", "{evil}", "--data", "{data}", "--student", "mobilenetv3-small", "--epochs", "1", "--out",
      "{tmp}/s.pt"], "s.pt"),
    ("untrusted: bench a checkpoint carrying a pickle payload", ["bench", "{evil}", "--iters", "1"], None),
    ("untrusted: eval a checkpoint carrying a pickle payload", ["eval", "{evil}", "--data", "{data}"], None),
]


def _run(argv, evil_path, tmp_path, data):
    filled = fill(argv, {"evil": evil_path, "tmp": tmp_path, "data": data})
    return subprocess.run([sys.executable, "-m", "edgeseg.cli", *filled], capture_output=True, text=True)


@pytest.mark.parametrize("case,argv,output", CASES, ids=[c[0] for c in CASES])
def test_pickle_payload_is_refused_and_never_runs(case, argv, output, evil, tmp_path, tiny_data):
    path, marker = evil
    result = _run(argv, path, tmp_path, tiny_data)
    assert result.returncode != 0, result.stdout + result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("Error:") and "--trust-checkpoint" in last and "Traceback" not in result.stderr
    assert not marker.exists(), f"{case}: the payload ran"
    if output:
        assert not (tmp_path / output).exists()


def test_trusting_the_checkpoint_is_the_only_way_past_and_then_the_code_runs(evil, tmp_path, tiny_data):
    path, marker = evil
    _run(["eval", "{evil}", "--data", "{data}", "--trust-checkpoint"], path, tmp_path, tiny_data)
    assert marker.exists(), "--trust-checkpoint should load the file as it is (running its code)"
