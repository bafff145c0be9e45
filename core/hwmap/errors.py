"""The project's own error types.

Every error a user can cause (a bad file, a wrong key, an unsupported op, a model too big for
a target) is raised as one of these, with a message that names what and where. The CLI turns
them into one line on stderr and an exit code; nothing else escapes as a traceback.
"""

from __future__ import annotations

import traceback
from pathlib import Path

__all__ = [
    "error_line",
    "describe_error",
    "HwmapError",
    "ModelError",
    "UnsupportedOpError",
    "GraphError",
    "ConfigError",
    "PluginError",
    "TargetError",
    "DataError",
    "DoesNotFitError",
]


class HwmapError(Exception):
    """Base class of every error hwmap raises on bad input. ``exit_code`` is the CLI's."""

    exit_code: int = 2

    def __init__(self, message: str, *, where: str | None = None) -> None:
        self.where = where
        super().__init__(f"{where}: {message}" if where else message)

    def lines(self) -> list[str]:
        """The error as one line per problem (the CLI prints each on its own line)."""
        return [str(self).replace("\n", " ")]


class ModelError(HwmapError):
    """A model source that cannot be read: missing, truncated, corrupt, unknown format."""


class UnsupportedOpError(ModelError):
    """A model uses an operation the neutral graph does not know."""


class GraphError(HwmapError):
    """A graph that is not well formed: dangling tensor, shape mismatch, cycle."""


class ConfigError(HwmapError):
    """A target configuration that is not valid TOML or does not match its schema.

    ``problems`` lists every problem found (the message is the first); each is reported on
    its own line, prefixed with ``where``.
    """

    def __init__(self, message: str, *, where: str | None = None, problems: list[str] | None = None) -> None:
        self.problems = list(problems) if problems else [message]
        super().__init__(message if len(self.problems) == 1 else
                         f"{message} (and {len(self.problems) - 1} more problem"
                         f"{'s' if len(self.problems) > 2 else ''})", where=where)

    def lines(self) -> list[str]:
        prefix = f"{self.where}: " if self.where else ""
        return [f"{prefix}{p}".replace("\n", " ") for p in self.problems]


class PluginError(HwmapError):
    """A target kind that is not installed, failed to load, or was registered twice."""


class TargetError(HwmapError):
    """A target plugin could not complete a stage for a reason other than fit."""


class DataError(HwmapError):
    """Input data (``--data``) that cannot be read or does not match the model."""


class DoesNotFitError(HwmapError):
    """The model does not fit the target; ``violations`` lists the design rules it breaks."""

    exit_code = 1

    def __init__(self, message: str, violations: list[str] | None = None, *, where: str | None = None) -> None:
        self.violations = list(violations or [])
        super().__init__(message, where=where)


def error_line(e: BaseException, *, limit: int | None = 300) -> str:
    """``e`` in one line, ``Type: message`` (runs of whitespace as one space; a message longer
    than ``limit`` characters cut to it, ending in ``...``)."""
    msg = " ".join(str(e).split())
    if limit is not None and len(msg) > limit:
        msg = msg[:limit - 3] + "..."
    return f"{type(e).__name__}: {msg}" if msg else type(e).__name__


def describe_error(e: BaseException) -> str:
    """What a check reports about an exception it caught: :func:`error_line` without a length
    limit and, for an error not of hwmap's types (a bug, in the core or a plugin), where it
    was raised, ``(at FILE:LINE)``."""
    text = error_line(e, limit=None)
    if not isinstance(e, HwmapError):
        tb = traceback.extract_tb(e.__traceback__)
        if tb:
            text += f" (at {Path(tb[-1].filename).name}:{tb[-1].lineno})"
    return text
