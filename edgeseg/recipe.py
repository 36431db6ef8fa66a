"""YAML recipes: a verb's options written down once, e.g. models/camvid-distill.yaml.

A recipe has one section per verb (``train:``, ``distill:``); each key is an option of
that verb, spelled as on the command line without the dashes (``batch_size`` or
``batch-size``). ``--recipe FILE`` fills in every option the command line leaves out,
so ``edgeseg distill teacher.pt --recipe r.yaml --epochs 5`` runs the recipe for 5 epochs.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Iterable

from edgeseg.errors import ConfigError, InputFileError

# recipe keys holding mappings, and the repeatable KEY=VALUE option each one feeds
_MAPPINGS = {"arch_args": "arch_arg", "student_args": "student_arg", "loss_weights": "loss_weight"}


def load_recipe(path: str | Path, section: str, allowed: Iterable[str]) -> Dict[str, object]:
    """The ``section`` of the recipe at ``path`` as option defaults (names as the verb's parameters)."""
    import yaml

    path = Path(path)
    try:
        document = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise InputFileError(f"Cannot read the recipe {path} ({exc.strerror}); check the path.") from exc
    except yaml.YAMLError as exc:
        raise InputFileError(f"The recipe {path} is not valid YAML ({type(exc).__name__}); fix its syntax.") from exc
    if not isinstance(document, dict) or not isinstance(document.get(section), dict):
        raise ConfigError(f"The recipe {path} has no '{section}:' section of options; add one.")
    allowed = set(allowed)
    options: Dict[str, object] = {}
    for key, value in document[section].items():
        name = str(key).replace("-", "_")
        if name in _MAPPINGS and isinstance(value, dict):
            name, value = _MAPPINGS[name], [f"{k}={v}" for k, v in value.items()]
        if name not in allowed:
            raise ConfigError(f"The recipe {path} sets '{key}' under '{section}:', which is not an option of "
                              f"edgeseg {section}; use one of: {', '.join(sorted(allowed))}.")
        options[name] = value
    return options
