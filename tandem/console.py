"""Terminal output shared by the CLI: one console, progress bars for anything a person waits on."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


@contextmanager
def progress_bar(description: str, total: float | None = None) -> Iterator:
    """Yield update(done, total, description=None) for a long step; rich draws it (plain lines off a terminal)."""
    with Progress(SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console, transient=False) as progress:
        task = progress.add_task(description, total=total)

        def update(done: float, total_: float | None = None, description: str | None = None) -> None:
            extra = {"description": description} if description is not None else {}
            progress.update(task, completed=done, total=total_ if total_ is not None else total, **extra)

        yield update
