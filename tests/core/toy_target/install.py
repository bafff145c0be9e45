"""Install ``toy_target`` (and throw-away siblings) as fake distributions, as pip would.

``write_dist`` writes ``NAME-VERSION.dist-info`` with ``METADATA`` and ``entry_points.txt``
into a folder; with that folder on ``sys.path`` (or PYTHONPATH for a subprocess),
``importlib.metadata`` finds the distribution and hwmap autoloads its entry points.
"""

from __future__ import annotations

import os
from pathlib import Path

from hwmap.registry import AUTOLOAD_ENV, ENTRY_POINT_GROUP

__all__ = ["write_dist", "subprocess_env", "TESTS_CORE"]

#: tests/core: the folder that makes ``import toy_target`` work.
TESTS_CORE = Path(__file__).resolve().parent.parent


def write_dist(root: Path, name: str, entry_points: dict[str, str], version: str = "0.1") -> Path:
    """Write ``root/NAME-VERSION.dist-info`` declaring ``entry_points`` (entry-point name ->
    ``module`` or ``module:attr``) in the group ``hwmap.targets``."""
    info = root / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    lines = [f"[{ENTRY_POINT_GROUP}]"] + [f"{k} = {v}" for k, v in entry_points.items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    return info


def subprocess_env(*paths: Path, autoload: bool = True) -> dict[str, str]:
    """Environment for ``python -m hwmap.cli`` in a subprocess: ``paths`` (folders holding
    fake distributions) and tests/core first on PYTHONPATH; autoloading on or off."""
    env = dict(os.environ)
    parts = [str(p) for p in paths] + [str(TESTS_CORE)]
    if env.get("PYTHONPATH"):
        parts.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(parts)
    env.pop(AUTOLOAD_ENV, None)
    if not autoload:
        env[AUTOLOAD_ENV] = "1"
    env.pop("HWMAP_DEBUG", None)
    env["COLUMNS"] = "200"
    return env
