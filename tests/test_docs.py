"""The manual builds: `mkdocs build --strict` (mkdocs.yml, docs/) with no warning.

Why: the manual is made from the code (the CLI reference from the click commands, the
Python API from the docstrings) and links into benchmarks/results/; a renamed option, a
moved report or a broken link must fail here rather than publish a page that lies. The
build checks every relative link and anchor (mkdocs.yml's `validation`) and every
included snippet (README.md's Segmenter example, benchmarks/results/zoo.md).
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

if not os.environ.get("CI"):  # `make test` installs the docs extra (part of dev); CI must have it
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocs_click")
    pytest.importorskip("mkdocstrings_handlers.python")
    pytest.importorskip("material")


def test_manual_builds_strict_without_warnings(tmp_path):
    site = tmp_path / "site"
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    log = result.stdout + result.stderr
    warnings = [line for line in log.splitlines() if re.match(r"\s*(WARNING|ERROR)\b", line)]
    assert result.returncode == 0 and not warnings, f"mkdocs build --strict failed:\n{log[-4000:]}"
    # the generated parts really are there: every CLI verb, every public function, the committed reports
    cli_page = (site / "reference" / "cli" / "index.html").read_text()
    from edgeseg.cli.main import COMMANDS

    for verb in COMMANDS:
        assert f'id="edgeseg-{verb}"' in cli_page, f"the CLI reference lacks `edgeseg {verb}`"
    api_page = (site / "reference" / "api" / "index.html").read_text()
    import edgeseg

    for name in edgeseg.__all__:
        if name != "__version__":
            assert re.search(rf'id="edgeseg\.[\w.]+\.{name}"', api_page), f"the API reference lacks edgeseg.{name}"
    assert (site / "results" / "raw" / "camvid-cpu" / "report" / "index.html").exists()
    assert (site / "results" / "raw" / "camvid-cpu" / "masks.png").exists()
