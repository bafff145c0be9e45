"""Install the example target (and throw-away siblings) as fake distributions, as pip would.

``write_dist`` writes ``NAME-VERSION.dist-info`` with ``METADATA`` and ``entry_points.txt``
into a folder; with that folder on ``sys.path`` (or PYTHONPATH for a subprocess),
``importlib.metadata`` finds the distribution and hwmap autoloads its entry points. The
tests install the toy CPU of ``examples/toy_cpu`` this way, as the distribution
``toy-target`` 0.1 with the entry point ``toy_cpu = hwmap_toy_cpu.plugin``, its source
folder on the path: never into the virtual environment, where ``hwmap demo`` would show it
beside the real targets.
"""

from __future__ import annotations

import importlib.metadata as md
import os
from pathlib import Path

from hwmap.registry import AUTOLOAD_ENV, ENTRY_POINT_GROUP

__all__ = ["write_dist", "subprocess_env", "installed_example", "TOY_CPU_EXAMPLE", "TOY_ENTRY_POINT",
           "TOY_DISTRIBUTION"]

#: examples/toy_cpu: the folder that makes ``import hwmap_toy_cpu`` work.
TOY_CPU_EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "toy_cpu"
#: The toy CPU's entry point, as its pyproject.toml declares it.
TOY_ENTRY_POINT = {"toy_cpu": "hwmap_toy_cpu.plugin"}
#: The example's distribution name, as its pyproject.toml declares it.
TOY_DISTRIBUTION = "hwmap-toy-cpu"


def write_dist(root: Path, name: str, entry_points: dict[str, str], version: str = "0.1") -> Path:
    """Write ``root/NAME-VERSION.dist-info`` declaring ``entry_points`` (entry-point name ->
    ``module`` or ``module:attr``) in the group ``hwmap.targets``."""
    info = root / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    lines = [f"[{ENTRY_POINT_GROUP}]"] + [f"{k} = {v}" for k, v in entry_points.items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    return info


def installed_example() -> str | None:
    """Where the example distribution ``hwmap-toy-cpu`` is installed on ``sys.path`` (its
    metadata folder), or ``None``. An installed copy (``pip install -e examples/toy_cpu``
    also leaves ``hwmap_toy_cpu.egg-info`` in the example's folder, which the tests put on
    the path) registers ``toy_cpu`` a second time beside the tests' own."""
    try:
        dist = md.distribution(TOY_DISTRIBUTION)
    except md.PackageNotFoundError:
        return None
    return str(getattr(dist, "_path", None) or dist.locate_file(""))


def subprocess_env(*paths: Path, autoload: bool = True, example: bool = True) -> dict[str, str]:
    """Environment for ``python -m hwmap.cli`` in a subprocess: ``paths`` (folders holding
    fake distributions) and, with ``example``, examples/toy_cpu first on PYTHONPATH;
    autoloading on or off."""
    env = dict(os.environ)
    parts = [str(p) for p in paths] + ([str(TOY_CPU_EXAMPLE)] if example else [])
    if env.get("PYTHONPATH"):
        parts.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(parts)
    env.pop(AUTOLOAD_ENV, None)
    if not autoload:
        env[AUTOLOAD_ENV] = "1"
    env.pop("HWMAP_DEBUG", None)
    env["COLUMNS"] = "200"
    return env
