"""Make ``hwmap_digital_snn`` and the helpers of this folder importable from the source tree
(the plugin is installed in the venv by ``make setup``; then the first part is a no-op)."""

from __future__ import annotations

import sys
from pathlib import Path

_PLUGIN = Path(__file__).resolve().parents[2] / "plugins" / "digital_snn"
_HERE = Path(__file__).resolve().parent
for p in (_PLUGIN, _HERE):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))
