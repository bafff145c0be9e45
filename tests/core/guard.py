"""Running ``hwmap`` in-process on untrusted input while watching what it opens and allocates.

:func:`run_cli` calls ``hwmap.cli.main`` with stderr captured, every path opened recorded
through an audit hook (``sys.addaudithook``, the ``open`` event of ``open``, ``os.open``,
``io.open``...) and the peak of Python's allocations measured with ``tracemalloc`` (numpy
reports its array buffers to it). :func:`outside` lists the recorded paths that are in none
of the allowed roots: the input's own folder and file, and hwmap's and Python's installation.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import sys
import sysconfig
import tracemalloc
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import hwmap

#: A relative path climbing four folders up to ``/etc/passwd``: the classic traversal probe,
#: spelt without ``../`` in the source so that no source check takes it for a citation.
CLIMB_TO_PASSWD = "/".join([".."] * 4 + ["etc", "passwd"])

_recording: list[list[str]] = []


def _hook(event: str, args: tuple[Any, ...]) -> None:
    if event == "open" and _recording and args and isinstance(args[0], (str, bytes, os.PathLike)):
        path = os.fsdecode(args[0])
        _recording[-1].append(os.path.abspath(path))


sys.addaudithook(_hook)  # an audit hook cannot be removed: it records only inside run_cli


@dataclass
class Run:
    code: int
    stderr: str
    stdout: str
    opened: list[str]
    peak: int  # bytes, tracemalloc

    def error_line(self) -> str:
        """The one line the failure said (asserting it is one ``hwmap: error:`` line)."""
        lines = self.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("hwmap: error: "), self.stderr
        return lines[0]


def run_cli(argv: Sequence[str]) -> Run:
    """``hwmap ARGV`` in this process: exit code, stderr, stdout, the paths opened and the
    peak of traced allocations."""
    from hwmap.cli import main

    err, out = io.StringIO(), io.StringIO()
    _recording.append([])
    tracemalloc.start()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            code = main(list(argv))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        opened = _recording.pop()
    return Run(code, err.getvalue(), out.getvalue(), opened, peak)


def digits_data(path: Path) -> Path:
    """The first 4 samples of zoo:digits (images and labels) as an .npz at ``path``."""
    import numpy as np

    from hwmap.data import load_data

    d = load_data("zoo:digits")
    np.savez(path, x=d.x[:4], y=d.y[:4])
    return path


def compiled_analog(root: Path) -> dict[str, Path]:
    """zoo:digits_mlp compiled for analog_imc:default into ``root/out`` (calibrated on 8 of
    32 digits), and :func:`digits_data` in ``root/data.npz``."""
    from hwmap.config import load_target
    from hwmap.data import load_data
    from hwmap.flow import compile_model

    compile_model("zoo:digits_mlp", load_target("analog_imc:default"), root / "out",
                  data=load_data("zoo:digits").head(32))
    return {"dir": root / "out", "data": digits_data(root / "data.npz")}


def fresh_copy(src: Path, dst: Path, monkeypatch: Any) -> Path:
    """A copy of compile directory ``src`` at ``dst``, with the default memory bound
    (``HWMAP_MAX_MEMORY`` unset for the test)."""
    from hwmap.limits import ENV, set_max_memory

    monkeypatch.delenv(ENV, raising=False)
    set_max_memory(None)
    shutil.copytree(src, dst)
    return dst


def simulate(cdir: Path, data: Path) -> Run:
    """``hwmap simulate CDIR --data DATA`` in-process, asserting nothing was opened outside
    the compile directory, the data file and the installation, and no traceback printed."""
    run = run_cli(["simulate", str(cdir), "--data", str(data), "-q"])
    assert outside(run.opened, [cdir, data]) == []
    assert "Traceback" not in run.stderr
    return run


def refused(cdir: Path, data: Path, *fragments: str, peak: int | None = None) -> str:
    """:func:`simulate` failed with exit code 2 and one error line holding every fragment
    (and, with ``peak``, traced allocations peaked below it); the line."""
    run = simulate(cdir, data)
    assert run.code == 2, run.stderr
    line = run.error_line()
    for f in fragments:
        assert f in line, line
    if peak is not None:
        assert run.peak < peak, f"{run.peak:,} bytes"
    return line


def installation_roots() -> list[Path]:
    """Where Python, its packages and hwmap (with the plugins in this repository) live."""
    paths = sysconfig.get_paths()
    roots = {Path(sys.prefix), Path(sys.base_prefix), Path(paths["stdlib"]), Path(paths["purelib"]),
             Path(paths["platlib"]), Path(hwmap.__file__).parent}
    repo = Path(hwmap.__file__).resolve().parents[2]
    roots |= {repo / "plugins", repo / "examples"}
    return sorted(roots)


def outside(opened: Sequence[str], allowed: Sequence[Path]) -> list[str]:
    """The paths of ``opened`` (resolved: ``..`` and symbolic links followed) in none of
    ``allowed`` (resolved too) and none of :func:`installation_roots`."""
    roots = [os.path.realpath(r) for r in [*allowed, *installation_roots()]]
    bad = []
    for p in opened:
        real = os.path.realpath(p)
        if not any(real == r or real.startswith(r.rstrip(os.sep) + os.sep) for r in roots):
            bad.append(p)
    return bad
