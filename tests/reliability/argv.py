"""The reliability cases write command lines with {name} placeholders for files made at run time."""
from __future__ import annotations

from typing import Mapping, Sequence


def fill(argv: Sequence[str], values: Mapping[str, object]) -> list:
    """``argv`` with every ``{name}`` replaced by ``str(values[name])``."""
    filled = []
    for arg in argv:
        for name, value in values.items():
            arg = arg.replace("{" + name + "}", str(value))
        filled.append(arg)
    return filled
