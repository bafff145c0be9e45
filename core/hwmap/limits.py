"""How much memory an input may make hwmap allocate.

Every declared size in a file a user hands hwmap — the arrays of an ``.npz``, the datasets
of a ``.nir``, the tensors of a model at its input shape, the tables of an emitted program
— is checked against :func:`max_memory` before anything that size is allocated, so a
hostile or broken file is refused (exit 2, one line) instead of exhausting the machine.
The default is 1 GiB; ``--max-memory`` on the command line or the environment variable
``HWMAP_MAX_MEMORY`` (bytes, or with a K/M/G suffix) raises or lowers it.
"""

from __future__ import annotations

import os
from typing import Callable

from .errors import DataError, HwmapError

__all__ = ["max_memory", "set_max_memory", "parse_size", "check_size", "DEFAULT_MAX_MEMORY", "ENV"]

#: The default bound on what one input may make hwmap allocate, in bytes.
DEFAULT_MAX_MEMORY = 1 << 30
#: The environment variable that sets the bound (``--max-memory`` wins over it).
ENV = "HWMAP_MAX_MEMORY"

_override: int | None = None
_SUFFIXES = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str) -> int:
    """``"512M"`` -> 536870912 (binary multiples; a trailing ``B``/``iB`` is allowed)."""
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    suffix = t[-1:] if t[-1:] in _SUFFIXES and t[-1:] != "" and not t[-1:].isdigit() else ""
    number = t[: len(t) - len(suffix)] if suffix else t
    try:
        value = float(number)
    except ValueError:
        raise DataError(f"memory size {text!r}: expected a number of bytes with an optional K, M, G or T, "
                        "e.g. 2G") from None
    if not value > 0 or value != value or value == float("inf"):
        raise DataError(f"memory size {text!r}: must be a positive number of bytes")
    return int(value * _SUFFIXES[suffix])


def set_max_memory(n: int | None) -> None:
    """Set the bound for this process (``None``: back to the environment or the default)."""
    global _override
    _override = n


def max_memory() -> int:
    """The bound in bytes: :func:`set_max_memory`, else ``HWMAP_MAX_MEMORY``, else 1 GiB."""
    if _override is not None:
        return _override
    env = os.environ.get(ENV)
    if env:
        try:
            return parse_size(env)
        except DataError as e:
            raise DataError(f"environment variable {ENV}: {e}") from None
    return DEFAULT_MAX_MEMORY


def _human(n: float) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{int(n)} B"


def check_size(nbytes: float, what: str, *, where: str | None = None,
               error: Callable[..., HwmapError] = DataError, limit: int | None = None) -> None:
    """Refuse ``what`` (e.g. "array 'x'") if it would take more than the bound."""
    bound = max_memory() if limit is None else limit
    if nbytes > bound:
        raise error(f"{what} would take {_human(nbytes)}, more than the {_human(bound)} memory limit "
                    f"(raise it with --max-memory or {ENV})", where=where)
