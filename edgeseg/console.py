"""Where edgeseg talks to people: one rich console on stderr and progress bars for long work.

Results (tables, JSON) go to stdout so they can be piped; chatter goes to stderr.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

console = Console(stderr=True, highlight=False)
out = Console(highlight=False)
if not out.is_terminal:  # piped or in CI: don't squeeze tables into 80 columns
    out.width = 160


def say(message: str) -> None:
    console.print(message)


@contextlib.contextmanager
def progress_bar(description: str, total: int) -> Iterator:
    """Yield ``advance(n=1, **fields)``; the bar shows count, elapsed and remaining time."""
    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[status]}"),
                        console=console, transient=False)
    with progress:
        task = progress.add_task(description, total=total, status="")

        def advance(n: int = 1, status: str = "") -> None:
            progress.update(task, advance=n, status=status)

        yield advance
