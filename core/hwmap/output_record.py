"""What hwmap wrote in an output directory, so that ``-o DIR`` replaces only that.

A directory hwmap commits (``compile -o``, ``convert -o``: :func:`hwmap.files.commit_dir`)
carries :data:`RECORD`, the SHA-256 of every file in it as written. An existing ``-o``
directory may be replaced only when every file in it is one the record lists, with the bytes
the record says: a file the user added or edited since, a symbolic link, a folder the
record does not account for, or a directory without a readable record (written by someone
else, or by an hwmap before the record existed) is left alone. Names alone do not make a
file hwmap's: a ``kpis.json`` of the user's own, or an ``artifacts.json`` listing the user's
files, does not match a digest hwmap recorded.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path
from typing import Any

from .errors import HwmapError
from .safeio import parse_json, read_file

__all__ = ["RECORD", "RECORD_LIMIT", "write_record", "unrecorded_entries"]

#: The record's name in an output directory.
RECORD = ".hwmap-output.json"
#: The largest record read back (bytes); a longer one is not hwmap's.
RECORD_LIMIT = 16 << 20
_FORMAT = "hwmap.output"
_CHUNK = 1 << 20


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _walk(root: Path) -> tuple[list[str], list[str], list[str]]:
    """``(regular files, folders, anything else)`` under ``root`` as sorted POSIX paths
    relative to it; symbolic links are never followed (they are "anything else")."""
    files, folders, other = [], [], []
    for top, dirs, names in os.walk(root, followlinks=False):
        rel = Path(top).relative_to(root)
        for name in dirs + names:
            st = os.lstat(Path(top) / name)
            path = (rel / name).as_posix()
            if stat.S_ISREG(st.st_mode):
                files.append(path)
            elif stat.S_ISDIR(st.st_mode):
                folders.append(path)
            else:  # a link (to a folder too: os.walk does not enter it), a device...
                other.append(path)
    return sorted(files), sorted(folders), sorted(other)


def write_record(directory: Path) -> None:
    """Write :data:`RECORD` in ``directory`` (finished, not yet committed): every regular
    file's SHA-256, paths sorted, so equal outputs give byte-identical records."""
    files, _, _ = _walk(directory)
    digests = {f: _sha256(directory / f) for f in files if f != RECORD}
    text = json.dumps({"format": _FORMAT, "files": digests}, indent=1, sort_keys=True) + "\n"
    (directory / RECORD).write_text(text, encoding="utf-8")


def _recorded(directory: Path) -> dict[str, str]:
    try:
        raw = read_file(directory / RECORD, what="output record", follow_symlinks=False, limit=RECORD_LIMIT)
        doc: Any = parse_json(raw, what="output record", where=str(directory))
    except (HwmapError, OSError, ValueError):
        return {}
    files = doc.get("files") if isinstance(doc, dict) and doc.get("format") == _FORMAT else None
    if not isinstance(files, dict):
        return {}
    return {k: v for k, v in files.items() if isinstance(k, str) and isinstance(v, str)}


def unrecorded_entries(directory: Path) -> list[str]:
    """What in the existing directory ``directory`` hwmap did not write as it is now (empty:
    it may be replaced): files the record does not list or whose bytes changed, links and
    other non-files, and folders holding nothing hwmap wrote (POSIX paths, sorted)."""
    files, folders, other = _walk(directory)
    recorded = _recorded(directory)
    out = list(other)
    for f in files:
        if f == RECORD and recorded:
            continue
        if f not in recorded or recorded[f] != _sha256(directory / f):
            out.append(f)
    for d in folders:  # a folder holding nothing hwmap wrote (an empty one too) is the user's
        inside = d + "/"
        if not any(f.startswith(inside) for f in recorded if f in files) and not any(o.startswith(inside) for o in out):
            out.append(inside)
    return sorted(out)
