"""Numbers as a report shows them: three significant digits and an SI prefix.

Memory uses decimal prefixes (1 kB = 1000 B), as the KPI record counts bytes.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["format_si", "format_count", "fmt_time", "fmt_rate", "fmt_energy", "fmt_power", "fmt_bytes", "fmt_ops",
           "fmt_fraction", "fmt_scalar", "sig", "MISSING", "DOES_NOT_FIT"]

#: What a cell shows for a value that is not known.
MISSING = "—"
#: What a cell shows for a target that cannot take the model.
DOES_NOT_FIT = "does not fit"

_PREFIXES = [(1e9, "G"), (1e6, "M"), (1e3, "k"), (1.0, ""), (1e-3, "m"), (1e-6, "µ"), (1e-9, "n"), (1e-12, "p"),
             (1e-15, "f")]


# -- number formatting ---------------------------------------------------------------------------
def sig(x: float, digits: int = 3) -> str:
    """``x`` with ``digits`` significant digits, without exponent, trailing zeros kept off."""
    if x == 0:
        return "0"
    mag = math.floor(math.log10(abs(x)))
    decimals = max(0, digits - 1 - mag)
    text = f"{x:.{decimals}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def format_si(value: float | int | None, unit: str, *, lowest: float = 1e-15, highest: float = 1e9) -> str:
    """``0.00123, "s"`` -> ``"1.23 ms"``: three significant digits and an SI prefix between
    ``lowest`` and ``highest`` (so bytes never get a milli prefix)."""
    if value is None:
        return MISSING
    v = float(value)
    if not math.isfinite(v):
        return f"{v} {unit}".strip()
    if v == 0:
        return f"0 {unit}".strip()
    for factor, prefix in _PREFIXES:
        if factor > highest or factor < lowest:
            continue
        if abs(v) >= factor * 0.9995:  # 999.96 µs rounds to 1 ms, not "1000 µs"
            return f"{sig(v / factor)} {prefix}{unit}".strip()
    factor, prefix = next((f, p) for f, p in reversed(_PREFIXES) if lowest <= f <= highest)
    return f"{sig(v / factor)} {prefix}{unit}".strip()


def fmt_time(v: float | None) -> str:
    return format_si(v, "s", highest=1.0)


def format_count(value: float | int | None, unit: str) -> str:
    """``123456, "MAC"`` -> ``"123k MAC"``: a count with a k/M/G/T multiplier."""
    if value is None:
        return MISSING
    v = float(value)
    if not math.isfinite(v):
        return f"{v} {unit}"
    for factor, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= factor * 0.9995:
            return f"{sig(v / factor)}{prefix} {unit}"
    return f"{sig(v)} {unit}"


def fmt_rate(v: float | None) -> str:
    return format_count(v, "inf/s")


def fmt_energy(v: float | None) -> str:
    return format_si(v, "J", highest=1.0)


def fmt_power(v: float | None) -> str:
    return format_si(v, "W", highest=1e3)


def fmt_bytes(v: float | None) -> str:
    return format_si(v, "B", lowest=1.0)


def fmt_ops(v: float | None, kind: str | None) -> str:
    if v is None:
        return MISSING
    return format_count(v, kind or "ops")


def fmt_fraction(v: float | None) -> str:
    return MISSING if v is None else f"{sig(100.0 * float(v))} %"


def fmt_scalar(v: Any) -> str:
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return sig(v) if math.isfinite(v) and abs(v) >= 1e-3 else f"{v:.3g}"
    return str(v)
