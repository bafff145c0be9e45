"""What the commands of :mod:`hwmap.cli` share: the options that say what to read (the input
shape, ``--data``), the console they print on, warnings on stderr, and the output files they
write (refused before any work, written atomically).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from .errors import HwmapError
from .files import check_output_file, write_atomic, write_text_atomic
from .text import one_line, printable

__all__ = ["stdout_console", "warn", "parse_shape", "parse_options", "write_output", "check_outputs", "plot_to",
           "data_arg", "check_calibrate"]


def stdout_console() -> Any:
    """A rich console on stdout, at least 100 columns wide (160 when stdout is no terminal)."""
    from rich.console import Console

    return Console(highlight=False, width=max(100, _terminal_width()))


def _terminal_width() -> int:
    try:
        return os.get_terminal_size().columns
    except OSError:
        return 160


def warn(message: str) -> None:
    """``hwmap: warning: MESSAGE`` on stderr, on one line."""
    print(f"hwmap: warning: {one_line(message)}", file=sys.stderr)


def parse_shape(text: str | None) -> tuple[int, ...] | None:
    """``--input-shape`` (``1,3,224,224`` or ``1x3x224x224``) as a tuple, ``None`` when not given."""
    if text is None:
        return None
    try:
        shape = tuple(int(p) for p in text.replace("x", ",").split(",") if p.strip())
    except ValueError:
        raise HwmapError(f"--input-shape {text!r}: expected comma-separated integers, e.g. 1,3,224,224") from None
    if not shape or any(d <= 0 for d in shape):
        raise HwmapError(f"--input-shape {text!r}: dimensions must be positive integers")
    return shape


def parse_options(args: argparse.Namespace) -> Any:
    """The :class:`hwmap.source.ParseOptions` the command line sets (``--input-shape``, ``--dt``)."""
    from .source import ParseOptions

    return ParseOptions(input_shape=parse_shape(getattr(args, "input_shape", None)), dt=getattr(args, "dt", None))


def write_output(text: str, path: str | None) -> None:
    """``text`` to stdout (``path`` missing or ``-``; control characters escaped) or atomically to ``path``."""
    if path is None or path == "-":
        sys.stdout.write(printable(text))
    else:
        write_text_atomic(Path(path), text)


def check_outputs(args: argparse.Namespace, *options: str) -> None:
    """Refuse every output file the command was given (``--output``, ``--plot``, ...) before
    any work: a missing folder is never created, a directory never written over."""
    for name in options:
        value = getattr(args, name, None)
        if value and value != "-":
            check_output_file(value, "--" + name if name != "output" or args.command != "simulate" else "-o")


def plot_to(path: str, draw: Any) -> None:
    """``draw(tmp_path)`` into a temporary file beside ``path``, renamed into place."""
    write_atomic(Path(path), draw)
    print(one_line(f"wrote {path}"), file=sys.stderr)


def data_arg(args: argparse.Namespace) -> Any:
    """The data set ``--data`` names, or ``None`` when not given."""
    from .data import load_data

    return load_data(args.data) if getattr(args, "data", None) else None


def check_calibrate(args: argparse.Namespace, data: Any) -> None:
    """Refuse ``--calibrate`` without ``--data``."""
    if args.calibrate is not None and data is None:
        raise HwmapError("--calibrate needs --data: it sets how many of its samples calibrate")
