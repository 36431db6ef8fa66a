import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgeseg.cli.main import COMMANDS, cli

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_has_help_with_an_example(command):
    result = CliRunner().invoke(cli, [command, "--help"])
    assert result.exit_code == 0
    # the example must reach the user as a line of its own, not re-wrapped into the prose
    assert re.search(rf"^\s*(Example: )?edgeseg {command}\b", result.output, re.MULTILINE), result.output
    assert "Example" in result.output


def test_top_level_help_does_not_import_torch():
    code = ("import sys\nfrom edgeseg.cli.main import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('torch', 'onnxruntime', 'tensorrt', 'onnx') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"


def test_user_errors_are_one_line_with_nonzero_exit(tmp_path):
    result = subprocess.run([sys.executable, "-m", "edgeseg.cli", "export", str(tmp_path / "missing.pt")],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert re.fullmatch(r"Error: Model file .*missing\.pt does not exist; check the path\.\n", result.stderr)


def test_output_folder_must_exist(tiny_student, tmp_path):
    result = CliRunner().invoke(cli, ["export", str(tiny_student), "--out", str(tmp_path / "no" / "m.onnx")])
    assert result.exit_code == 2 and "does not exist" in result.output


def test_info_shows_the_sidecar_and_detects_tampering(tiny_onnx, tmp_path):
    import shutil

    result = CliRunner().invoke(cli, ["info", str(tiny_onnx)])
    assert result.exit_code == 0 and "matches the file" in result.output and "lraspp-mobilenetv3-small" in result.output
    copy = tmp_path / "x.onnx"
    shutil.copy(tiny_onnx, copy)
    shutil.copy(tiny_onnx.with_name("student.onnx.json"), tmp_path / "x.onnx.json")
    with open(copy, "ab") as handle:
        handle.write(b"0")
    result = CliRunner().invoke(cli, ["info", str(copy), "--json"])
    assert json.loads(result.output)["sha256_matches"] is False


def _readme_tour():
    """The commands of every block tagged `<!-- tour -->` in the manual (docs/) and README.md, in order."""
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    lines = []
    for page in pages:
        for block in re.findall(r"<!-- tour -->\s*```(?:bash|sh)\n(.*?)```", page.read_text(), re.S):
            lines += [line for line in block.splitlines() if line.startswith("edgeseg ")]
    assert lines, "the manual (docs/index.md) must hold the tour block that this test runs"
    return lines


def test_readme_tour_runs_command_by_command(tmp_path, isolated_cache):
    env = dict(os.environ, EDGESEG_CACHE=str(isolated_cache))
    for line in _readme_tour():
        args = line.split()[1:]
        result = subprocess.run([sys.executable, "-m", "edgeseg.cli", *args], cwd=tmp_path, env=env,
                                capture_output=True, text=True)
        assert result.returncode == 0, f"README example failed: {line}\n{result.stderr[-2000:]}"
    assert (tmp_path / "bench.json").exists()
