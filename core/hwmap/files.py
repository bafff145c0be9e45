"""Writing where the user said, and nowhere else.

Every file hwmap writes goes through :func:`write_atomic`: it is built in a temporary file of
an unpredictable name created exclusively in the destination folder (so a planted symlink
is never followed) and renamed into place, so an interrupted write leaves the old file or
none. :func:`check_output_file` refuses a destination before any work is done: a missing
folder is never created, a directory is never written over. Temporaries carry the creating
process's id, and :func:`remove_stale` deletes those a killed process left behind (never
anything without hwmap's marker).
"""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

from .errors import DataError
from .output_record import unrecorded_entries, write_record

__all__ = ["pid_alive", "write_atomic", "write_text_atomic", "check_output_file", "check_output_dir", "temp_dir", "commit_dir",
           "remove_stale", "MARKER", "TEMP_PREFIX"]

#: Temporary files and folders hwmap creates start with this, then the process id.
TEMP_PREFIX = ".hwmap-tmp-"
#: A file hwmap puts in each temporary folder it creates: only such folders are ever removed
#: as stale.
MARKER = ".hwmap-partial"


def _prefix() -> str:
    return f"{TEMP_PREFIX}{os.getpid()}-"


def check_output_file(path: str | Path, option: str) -> Path:
    """``path`` if a file can be written there: its folder exists and it is not a directory.
    ``option`` names the command-line option in the error."""
    p = Path(path)
    if p.name in ("", ".", ".."):
        raise DataError(f"{option} must name a file, not {str(path)!r}", where=str(path))
    if p.is_dir():
        raise DataError(f"{option}: is a directory; name a file", where=str(path))
    if not p.parent.is_dir():
        raise DataError(f"{option}: no such folder {str(p.parent)!r} (hwmap does not create it)", where=str(path))
    return p


def check_output_dir(path: str | Path, own: Callable[[Path], list[str]] = unrecorded_entries,
                     option: str = "-o") -> Path:
    """``path`` if hwmap may (re)create a directory there: its folder exists, it is not a
    symbolic link, and if it exists it is a directory holding nothing but what ``own(path)``
    does not list as foreign (``own`` returns the entries hwmap did not write; by default
    what :func:`hwmap.output_record.unrecorded_entries` finds: the directory
    :func:`commit_dir` put there, unchanged since)."""
    p = Path(path)
    where = str(path)
    if p.name in ("", ".", ".."):
        raise DataError(f"{option} must name a directory to create or replace, not {where!r}", where=where)
    if p.is_symlink():
        raise DataError(f"{option}: is a symbolic link; name the directory itself", where=where)
    if not p.parent.is_dir():
        raise DataError(f"{option}: no such folder {str(p.parent)!r} (hwmap does not create it)", where=where)
    if p.exists():
        if not p.is_dir():
            raise DataError(f"{option}: exists and is not a directory", where=where)
        foreign = own(p)
        if foreign:
            shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
            raise DataError(f"{option}: holds files hwmap did not write ({shown}); it replaces only its own "
                            "output directories: choose another -o or move them", where=where)
    return p


@functools.cache
def umask() -> int:
    """The process's umask, read once, when an output is first committed (reading it means
    setting it): ``mkstemp`` and ``mkdtemp`` create private (0600/0700) entries, and what
    hwmap hands the user is given the modes any other tool's output would have."""
    old = os.umask(0o022)
    os.umask(old)
    return old


def commit_dir(tmp: Path, path: Path) -> None:
    """Put the finished folder ``tmp`` (from :func:`temp_dir`) at ``path``, replacing what
    :func:`check_output_dir` accepted there."""
    (tmp / MARKER).unlink(missing_ok=True)
    write_record(tmp)  # what hwmap wrote there: only that is replaced later (check_output_dir)
    os.chmod(tmp, 0o777 & ~umask())
    if not path.exists():
        os.replace(tmp, path)
        return
    old = temp_dir(path.parent)
    try:
        os.replace(path, old / "previous")
        os.replace(tmp, path)
    finally:
        shutil.rmtree(old, ignore_errors=True)


def write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a fresh temporary file beside ``path`` (same suffix, so a writer
    that picks its format by suffix still does), then rename it to ``path``."""
    path = Path(path)
    fd, name = tempfile.mkstemp(prefix=_prefix(), suffix=path.suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~umask())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text_atomic(path: Path, text: str) -> None:
    """:func:`write_atomic` for text (UTF-8)."""
    def write(tmp: Path) -> None:
        tmp.write_text(text, encoding="utf-8")

    write_atomic(path, write)


def temp_dir(parent: Path) -> Path:
    """A new, empty, marked folder in ``parent`` to build an output directory in."""
    d = Path(tempfile.mkdtemp(prefix=_prefix(), dir=parent))
    (d / MARKER).write_bytes(b"")
    return d


def remove_stale(parent: Path) -> None:
    """Remove the marked temporary folders (and temporary files) in ``parent`` whose creating
    process no longer runs: what a killed hwmap left behind."""
    try:
        entries = list(parent.iterdir())
    except OSError:
        return
    for entry in entries:
        if not entry.name.startswith(TEMP_PREFIX):
            continue
        pid_text = entry.name[len(TEMP_PREFIX):].split("-", 1)[0]
        if not pid_text.isdigit() or pid_alive(int(pid_text)):
            continue
        if entry.is_dir() and not entry.is_symlink():
            if (entry / MARKER).is_file():
                shutil.rmtree(entry, ignore_errors=True)
        elif entry.is_file() and not entry.is_symlink():
            entry.unlink(missing_ok=True)


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` runs on this host (this process included)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
