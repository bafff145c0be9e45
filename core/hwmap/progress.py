"""How the flow reports long work: named stages, and progress within a stage.

The flow runs each stage inside ``with progress.stage("legalizing for imc-8core-256"):``
and a simulator reports how far it has come through ``Target.report_progress(done,
total)``, which the flow routes to :meth:`Progress.update`. The command line shows a rich
progress bar with an ETA on a terminal and one line per finished stage with its time
otherwise (:mod:`hwmap.cli_progress`); library callers get :class:`NullProgress` unless they
pass their own.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import ContextManager, Iterator, Protocol

__all__ = ["Progress", "NullProgress"]


class Progress(Protocol):
    """What the flow reports to."""

    def stage(self, label: str) -> ContextManager[None]:
        """A context manager around one stage of work named ``label``."""
        ...

    def update(self, done: int, total: int) -> None:
        """Progress within the current stage: ``done`` of ``total`` units (samples)."""
        ...


class NullProgress:
    """Reports nothing."""

    @contextmanager
    def stage(self, label: str) -> Iterator[None]:
        yield

    def update(self, done: int, total: int) -> None:
        pass
