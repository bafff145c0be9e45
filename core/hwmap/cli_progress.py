"""The command line's view of long work (:class:`hwmap.progress.Progress`).

On a terminal: a rich progress display on stderr, one line per running stage, with a bar,
done/total, elapsed time and ETA once the stage reports its progress (a simulation over
many samples), and a spinner until then; finished stages that took over a second stay on
screen with their time. Without a terminal (a pipe, a CI log): one line per finished stage
over a second, with its time. ``-q`` silences both.
"""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from typing import Any, Iterator

from .text import markup_escape

__all__ = ["LineProgress", "RichProgress", "make_progress", "SLOW_STAGE_S"]

#: A finished stage that took longer than this stays visible on a terminal.
SLOW_STAGE_S = 1.0


class LineProgress:
    """One line per finished stage that took over :data:`SLOW_STAGE_S`: ``hwmap: <stage>: 1.23 s``."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet

    @contextmanager
    def stage(self, label: str) -> Iterator[None]:
        t0 = time.perf_counter()
        yield
        took = time.perf_counter() - t0
        if not self.quiet and took > SLOW_STAGE_S:
            print(f"hwmap: {label}: {took:.2f} s", file=sys.stderr, flush=True)

    def update(self, done: int, total: int) -> None:
        pass


class RichProgress:
    """A live rich display on stderr (use as a context manager around the work)."""

    def __init__(self, console: Any) -> None:
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn,
                                   TimeElapsedColumn, TimeRemainingColumn)

        self.console = console
        self.bar = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=console,
                            transient=True)
        self._task: Any = None

    def __enter__(self) -> "RichProgress":
        self.bar.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.bar.stop()

    @contextmanager
    def stage(self, label: str) -> Iterator[None]:

        outer = self._task
        task = self.bar.add_task(markup_escape(label), total=None)
        self._task = task
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.bar.remove_task(task)
            self._task = outer
            took = time.perf_counter() - t0
            if took > SLOW_STAGE_S:
                self.bar.console.print(f"[dim]{markup_escape(label)}: {took:.1f} s[/dim]", highlight=False)

    def update(self, done: int, total: int) -> None:
        if self._task is not None:
            self.bar.update(self._task, completed=done, total=total)


@contextmanager
def make_progress(quiet: bool = False) -> Iterator[Any]:
    """The right :class:`~hwmap.progress.Progress` for stderr: rich on a terminal, lines
    otherwise, nothing with ``quiet``."""
    from rich.console import Console

    console = Console(stderr=True, highlight=False)
    if quiet or not console.is_terminal:
        yield LineProgress(quiet)
        return
    with RichProgress(console) as progress:
        yield progress
