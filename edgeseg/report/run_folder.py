"""What a pipeline run folder holds: ``stages.json``, naming each stage's artifact in pipeline order.

``edgeseg demo`` and ``benchmarks/camvid/run.py`` write it; ``edgeseg report`` reads it, so a
finished run can be measured again (on another split, or on another machine) without
training anything.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

from edgeseg.errors import ConfigError, InputFileError
from edgeseg.fileio import write_json_atomic

MANIFEST = "stages.json"


@dataclass(frozen=True)
class Stage:
    name: str
    artifact: str  # relative to the run folder


@dataclass
class RunFolder:
    root: Path
    title: str
    stages: List[Stage]
    data: Optional[str] = None  # the labelled data the run was made for (its val split is measured)
    notes: List[str] = field(default_factory=list)

    def artifact(self, stage: Stage) -> Path:
        return self.root / stage.artifact


def write_manifest(root: str | Path, title: str, stages: List[Stage], *, data: Optional[str] = None,
                   notes: Optional[List[str]] = None) -> Path:
    root = Path(root)
    document = {"title": title, "data": data, "notes": notes or [],
                "stages": [{"name": s.name, "artifact": s.artifact} for s in stages]}
    path = root / MANIFEST
    write_json_atomic(path, document)
    return path


def read_run_folder(root: str | Path) -> RunFolder:
    root = Path(root)
    path = root / MANIFEST
    if not root.is_dir():
        raise InputFileError(f"Run folder {root} does not exist; give the folder a pipeline run wrote.")
    if not path.is_file():
        raise InputFileError(f"{root} has no {MANIFEST}; give the folder that `edgeseg demo` or "
                             f"benchmarks/camvid/run.py wrote.")
    try:
        document = json.loads(path.read_text())
        stages = [Stage(str(s["name"]), str(s["artifact"])) for s in document["stages"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise InputFileError(f"{path} is not a valid stage list ({type(exc).__name__}); rerun the pipeline "
                             f"that wrote it.") from exc
    if not stages:
        raise ConfigError(f"{path} lists no stages; there is nothing to report.")
    run = RunFolder(root, str(document.get("title") or root.name), stages, document.get("data"),
                    list(document.get("notes") or []))
    missing = [s.artifact for s in stages if not run.artifact(s).is_file()]
    if missing:
        raise InputFileError(f"{root} lacks {', '.join(missing)}, listed in {MANIFEST}; rerun the stages "
                             f"that make them.")
    return run
