"""MkDocs hook: publish benchmarks/results/ inside the site, under results/raw/.

Why: the manual's results pages link to the committed reports (Markdown with their
figures, JSON, commands.sh) that live outside docs/. Adding them as site files at build
time keeps one copy (the one benchmarks/*.py write), keeps the reports' own relative links
(figures beside them) working, and lets `mkdocs build --strict` check every link into them.
"""
from __future__ import annotations

from pathlib import Path

from mkdocs.structure.files import File

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"
PREFIX = "results/raw"


def on_files(files, config):
    for path in sorted(RESULTS.rglob("*")):
        if path.is_file():
            uri = f"{PREFIX}/{path.relative_to(RESULTS).as_posix()}"
            files.append(File.generated(config, uri, abs_src_path=str(path)))
    return files
