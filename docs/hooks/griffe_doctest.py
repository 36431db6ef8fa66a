"""Griffe extension: show the docstrings' ``>>>`` examples as Python sessions.

Why: edgeseg's docstrings end with a doctest line, not a Google "Examples:" section;
Markdown would read ``>>>`` as three nested block quotes. This fences each
``>>>`` line and the lines after it, up to a blank line (continuations, output), as ``pycon``.
"""
from __future__ import annotations

import re

import griffe


def fence_doctests(text: str) -> str:
    out, block = [], []
    for line in text.splitlines() + [""]:
        stripped = line.strip()
        if stripped.startswith(">>>") or (block and stripped):  # a session, up to the next blank line
            cleaned = re.sub(r"\s*# doctest:.*$", "", line)
            if cleaned.strip() != "...":  # a continuation line that held only a doctest flag
                block.append(cleaned)
            continue
        if block:
            out += ["```pycon", *block, "```"]
            block = []
        out.append(line)
    return "\n".join(out[:-1])


class DoctestFences(griffe.Extension):
    def on_instance(self, *, obj, **kwargs) -> None:
        if obj.docstring is not None and ">>>" in obj.docstring.value:
            obj.docstring.value = fence_doctests(obj.docstring.value)
