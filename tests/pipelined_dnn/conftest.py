"""Make ``hwmap_pipelined_dnn`` importable from the source tree while the plugin is not
installed in the venv (it is once its entry point is wired; then this is a no-op)."""

from __future__ import annotations

import sys
from pathlib import Path

_PLUGIN = Path(__file__).resolve().parents[2] / "plugins" / "pipelined_dnn"
if str(_PLUGIN) not in sys.path:
    sys.path.insert(0, str(_PLUGIN))
