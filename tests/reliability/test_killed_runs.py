"""What a user sees after the process is killed: runs resume, artifacts are whole or absent."""
import json
import signal
import subprocess
import sys
import time



def _edgeseg(*args):
    return [sys.executable, "-m", "edgeseg.cli", *args]


def test_train_killed_with_sigkill_resumes_and_loses_at_most_one_epoch(tiny_data, tmp_path):
    out = tmp_path / "t.pt"
    args = ["train", "--arch", "unet", "--arch-arg", "base_channels=8", "--arch-arg", "encoder_depth=2",
            "--data", str(tiny_data), "--epochs", "40", "--batch-size", "4", "--val-every", "40", "--out", str(out)]
    process = subprocess.Popen(_edgeseg(*args), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = tmp_path / "t.pt.state"
    deadline = time.time() + 120
    while not state.exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.05)
    assert state.exists(), "no training state appeared after the first epoch"
    time.sleep(0.3)
    process.send_signal(signal.SIGKILL)
    process.wait()
    if not out.exists():  # killed before the end, as intended
        done = sum(1 for _ in (tmp_path / "t.pt.log.csv").open()) - 1
        result = subprocess.run(_edgeseg(*args, "--resume"), capture_output=True, text=True)
        assert result.returncode == 0, result.stderr[-2000:]
        assert f"Resuming after epoch {done}" in result.stderr.replace("\n", " ")
    meta = json.loads((tmp_path / "t.pt.json").read_text())
    assert meta["training"]["config"]["epochs"] == 40
    assert out.exists() and not state.exists()
