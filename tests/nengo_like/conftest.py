"""Make ``hwmap_nengo_like`` importable from the source tree (installed by ``make setup``)."""

from __future__ import annotations

import sys
from pathlib import Path

_PLUGIN = Path(__file__).resolve().parents[2] / "plugins" / "nengo_like"
if str(_PLUGIN) not in sys.path:
    sys.path.insert(0, str(_PLUGIN))
