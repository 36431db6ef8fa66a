"""What a user sees after the process is killed: runs resume, artifacts are whole or absent."""
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.reliability.argv import fill

DIE_BEFORE_PUBLISH = Path(__file__).with_name("die_before_publish.py")

def _edgeseg(*args):
    return [sys.executable, "-m", "edgeseg.cli", *args]


def _kill_after_first_epoch_and_resume(args: list, out: Path, epochs: int) -> None:
    """SIGKILL the run once its first epoch's state is written, resume it, check no epoch was lost or repeated."""
    process = subprocess.Popen(_edgeseg(*args), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = out.with_name(out.name + ".state")
    deadline = time.time() + 300
    while not state.exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.05)
    assert state.exists(), "no training state appeared after the first epoch"
    time.sleep(0.3)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not out.exists(), "the run finished before it could be killed; make it longer"
    log = out.with_name(out.name + ".log.csv")
    from edgeseg.training.state import load_state

    # the state is written before the log: a kill between the two leaves the log an epoch short, which the
    # resumed run rewrites from the state's history (checked below), so the state says where it resumes
    done = load_state(state)["epoch"]
    result = subprocess.run(_edgeseg(*args, "--resume"), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"Resuming after epoch {done}" in result.stderr.replace("\n", " ")
    logged = [int(line.split(",")[0]) for line in log.read_text().splitlines()[1:]]
    assert logged == list(range(1, epochs + 1)), "an epoch was lost or repeated"
    assert out.exists() and not state.exists()


def test_train_killed_with_sigkill_resumes_and_loses_at_most_one_epoch(tiny_data, tmp_path):
    out = tmp_path / "t.pt"
    args = ["train", "--arch", "unet", "--arch-arg", "base_channels=8", "--arch-arg", "encoder_depth=2",
            "--data", str(tiny_data), "--epochs", "40", "--batch-size", "4", "--val-every", "40", "--out", str(out)]
    _kill_after_first_epoch_and_resume(args, out, 40)
    meta = json.loads((tmp_path / "t.pt.json").read_text())
    assert meta["training"]["config"]["epochs"] == 40


def test_distill_killed_with_sigkill_resumes_and_loses_at_most_one_epoch(tiny_data, tiny_teacher, tmp_path):
    out = tmp_path / "s.pt"
    args = ["distill", str(tiny_teacher), "--student", "mobilenetv3-small", "--data", str(tiny_data), "--epochs",
            "30", "--batch-size", "4", "--val-every", "30", "--no-tensorboard", "--out", str(out)]
    _kill_after_first_epoch_and_resume(args, out, 30)


def _valid(path: Path) -> bool:
    """Whether ``path`` is a complete artifact of its kind (it loads)."""
    if path.suffix == ".pt":
        from edgeseg.checkpoint import load_model

        return load_model(path).num_classes > 0
    import onnx

    onnx.checker.check_model(onnx.load(str(path)))
    return True


WRITES = [
    ("killed: export killed while writing the ONNX file", "x.onnx", ["export", "{student}", "--out", "{out}"]),
    ("killed: prune killed while writing the pruned checkpoint", "p.pt",
     ["prune", "{student}", "--ratio", "0.3", "--out", "{out}"]),
    ("killed: calibrate killed while writing the Q/DQ model", "q.int8.onnx",
     ["calibrate", "{onnx}", "--images", "{data}/train/images", "--num", "4", "--out", "{out}"]),
    ("killed: build-engine killed while writing the engine", "e.ort.onnx",
     ["build-engine", "{int8}", "--int8", "--out", "{out}"]),
]


@pytest.mark.parametrize("case,name,argv", WRITES, ids=[w[0] for w in WRITES])
def test_a_kill_mid_write_leaves_the_old_artifact_or_none(case, name, argv, tmp_path, tiny_student, tiny_onnx,
                                                          tiny_int8, tiny_data):
    out = tmp_path / name
    args = fill(argv, {"student": tiny_student, "onnx": tiny_onnx, "int8": tiny_int8, "data": tiny_data, "out": out})

    def killed_run():
        result = subprocess.run([sys.executable, str(DIE_BEFORE_PUBLISH), str(out), *args], capture_output=True)
        assert result.returncode == -signal.SIGKILL, result.stderr.decode()[-1500:]

    killed_run()  # no artifact yet: none is left, not a partial one
    assert not out.exists()
    finished = subprocess.run(_edgeseg(*args), capture_output=True, text=True)
    assert finished.returncode == 0, finished.stderr[-1500:]
    old = out.read_bytes()
    sidecar = out.with_name(out.name + ".json").read_text()
    shutil.copy(tiny_student, tmp_path / "unrelated.pt")  # the folder may hold other files; they are untouched
    killed_run()  # an artifact exists: it is left exactly as it was
    assert out.read_bytes() == old and out.with_name(out.name + ".json").read_text() == sidecar
    assert (tmp_path / "unrelated.pt").read_bytes() == Path(tiny_student).read_bytes()
    assert _valid(out)
