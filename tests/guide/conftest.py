"""The example target as a user installs it: its wheel, built from a copy of examples/toy_cpu
by the build backend its pyproject.toml names, and unpacked into a folder (what ``pip
install`` does with a pure-Python wheel). Subprocesses given that folder on PYTHONPATH, and
not the example's source folder, see ``hwmap-toy-cpu`` exactly as installed."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from fake_dist import TOY_CPU_EXAMPLE, subprocess_env


@pytest.fixture(scope="session")
def example_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``hwmap_toy_cpu-VERSION-py3-none-any.whl`` built from examples/toy_cpu."""
    pytest.importorskip("setuptools", minversion="77")  # the example's build-system.requires
    root = tmp_path_factory.mktemp("example-build")
    src = root / "src"
    shutil.copytree(TOY_CPU_EXAMPLE, src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    build = ("import sys\nfrom setuptools import build_meta\n"
             "name = build_meta.build_wheel(sys.argv[1])\nprint('WHEEL', name)\n")
    p = subprocess.run([sys.executable, "-c", build, str(root / "dist")], cwd=src, capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stderr
    (name,) = [line.split(" ", 1)[1] for line in p.stdout.splitlines() if line.startswith("WHEEL ")]
    return root / "dist" / name


@pytest.fixture(scope="session")
def example_site(example_wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding the unpacked wheel: the package and its ``.dist-info``."""
    site = tmp_path_factory.mktemp("example-site")
    with zipfile.ZipFile(example_wheel) as z:
        z.extractall(site)
    return site


@pytest.fixture(scope="session")
def installed_env(example_site: Path) -> dict[str, str]:
    """Environment for a subprocess that sees the example only as installed from its wheel."""
    return subprocess_env(example_site, example=False)
