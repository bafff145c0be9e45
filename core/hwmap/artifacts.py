"""What ``emit`` wrote, and the only way back into it: :class:`Artifacts` and ``artifacts.json``.

A compile directory is input (users share them), so a simulator opens its artifacts only
through :class:`Artifacts`: a name the manifest lists (:data:`MANIFEST`), a plain relative
path inside the artifacts directory (:func:`name_problem`), a regular file reached without a
symbolic link, within the memory bound. The manifest records the digests of the graph and
of the effective config (:func:`config_digest`) the artifacts were compiled from.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Optional

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from .errors import DataError, TargetError
from .jsonio import dumps
from .limits import max_memory
from .safeio import JSON_EXPANSION, load_npz, member, open_member, parse_json, read_all, read_doc

if TYPE_CHECKING:
    from .graph import Graph
    from .target import Target

__all__ = ["Artifacts", "MANIFEST", "name_problem", "read_manifest", "artifact_path", "open_artifact",
           "read_artifact", "config_digest"]

#: The artifacts manifest, inside ``artifacts/``.
MANIFEST = "artifacts.json"

_SHA256 = r"^[0-9a-f]{64}$"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass
class Artifacts:
    """What ``emit`` wrote: the directory and the files in it (relative paths, in the order
    written), plus ``manifest`` facts the simulator needs to find its way (JSON-able).

    A compile directory is input (users share them), so a simulator reads its artifacts
    only through :meth:`open`, :meth:`read_bytes`, :meth:`read_json` or :meth:`load_npz`:
    they open a file only if ``files`` lists it, it is a plain relative path inside
    ``directory`` (no absolute path, no ``..``, no symbolic link on the way) and a regular
    file (no device, FIFO or directory), and only within the memory bound
    (:func:`hwmap.limits.max_memory`) or the smaller ``max_bytes`` the plugin gives.
    Anything else is a :class:`hwmap.TargetError` naming the file (and never quoting it).

    ``graph_sha256`` and ``config_sha256`` are the digests of the parsed graph and the
    effective config the artifacts were compiled from (:meth:`write_manifest` records
    them; ``hwmap simulate`` refuses artifacts whose digests are not those of the compile
    directory's ``graph/`` and ``target.json``).
    """

    directory: Path
    files: list[str]
    manifest: dict[str, Any] = field(default_factory=dict)
    graph_sha256: str | None = None
    config_sha256: str | None = None

    def path(self, name: str) -> Path:
        """Where listed artifact ``name`` is (checked as the class docstring says; it need
        not exist yet)."""
        return artifact_path(self, name)

    def open(self, name: str, *, max_bytes: int | None = None) -> IO[bytes]:
        """Listed artifact ``name`` opened for binary reading (a seekable file object)."""
        return open_artifact(self, name, max_bytes)

    def read_bytes(self, name: str, *, max_bytes: int | None = None) -> bytes:
        """The bytes of listed artifact ``name``."""
        return read_artifact(self, name, max_bytes)

    def read_json(self, name: str, *, max_bytes: int | None = None) -> Any:
        """Listed artifact ``name`` parsed as JSON (UTF-8, nesting and size bounded:
        :func:`hwmap.safeio.read_json`)."""
        limit = max_memory() // JSON_EXPANSION if max_bytes is None else min(max_bytes, max_memory() // JSON_EXPANSION)
        return parse_json(self.read_bytes(name, max_bytes=limit), what="artifact", where=str(self.path(name)),
                          error=TargetError)

    def load_npz(self, name: str) -> dict[str, np.ndarray]:
        """Every array of listed ``.npz`` artifact ``name``, sizes checked from the arrays'
        headers before any is read (:func:`hwmap.safeio.load_npz`)."""
        with self.open(name) as f:
            return load_npz(f, where=str(self.path(name)), error=TargetError)

    def write_manifest(self, graph: Graph | None = None, target: Target | None = None) -> Path:
        """Write ``artifacts.json``: the files, the manifest and, given the parsed ``graph``
        and the ``target`` the artifacts were compiled for, their digests. A listed name
        that is not a plain relative path inside the directory is a :class:`TargetError`
        (a plugin bug: ``simulate`` would refuse it)."""
        for name in self.files:
            problem = name_problem(name)
            if problem:
                raise TargetError(f"emit listed artifact {str(name)[:80]!r}, which {problem}",
                                  where=str(self.directory))
        if graph is not None:
            self.graph_sha256 = graph.digest()
        if target is not None:
            self.config_sha256 = config_digest(target)
        doc: dict[str, Any] = {"files": self.files, "manifest": self.manifest}
        if self.graph_sha256 is not None:
            doc["graph_sha256"] = self.graph_sha256
        if self.config_sha256 is not None:
            doc["config_sha256"] = self.config_sha256
        p = self.directory / MANIFEST
        p.write_text(dumps(doc))
        return p

    @classmethod
    def read(cls, directory: Path) -> "Artifacts":
        """The artifacts ``directory/artifacts.json`` lists, checked against its schema
        (:func:`read_manifest`; a :class:`hwmap.DataError` naming it)."""
        return read_manifest(Path(directory))


# -- names and paths ------------------------------------------------------------------------------
def name_problem(name: object) -> str | None:
    """Why ``name`` cannot name an artifact (``None``: it can): it must be a relative path
    of plain components separated by ``/`` (no absolute path, no ``.`` or ``..``, no
    backslash, no control character) and not the manifest itself."""
    if not isinstance(name, str) or not name:
        return "is not a file name"
    if _CONTROL.search(name) or "\\" in name:
        return "holds a control character or a backslash"
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        return "is an absolute path"
    if any(part in ("", ".", "..") for part in name.split("/")):
        return "is not a plain relative path (an empty, '.' or '..' component)"
    if name == MANIFEST:
        return "is the manifest itself"
    return None


def artifact_path(artifacts: Artifacts, name: str) -> Path:
    """The path of artifact ``name``: a listed, plain relative name (see :func:`name_problem`)
    without a symbolic link below ``artifacts.directory`` (it need not exist yet). Errors
    about artifacts are :class:`~hwmap.errors.TargetError` s (the target's own files)."""
    manifest = str(Path(artifacts.directory) / MANIFEST)
    problem = name_problem(name)
    if problem:
        raise TargetError(f"artifact {str(name)[:80]!r} {problem}; refused", where=manifest)
    if name not in artifacts.files:
        raise TargetError(f"artifact {name[:80]!r} is not listed in {MANIFEST}; refused", where=manifest)
    return member(Path(artifacts.directory), name, what="artifact", error=TargetError, missing_ok=True)


def open_artifact(artifacts: Artifacts, name: str, max_bytes: int | None = None) -> IO[bytes]:
    """Artifact ``name`` opened for reading: listed, a regular file inside the directory
    (:func:`artifact_path`), at most ``max_bytes`` long when given and within the memory
    bound."""
    artifact_path(artifacts, name)
    f = open_member(Path(artifacts.directory), name, what="artifact", error=TargetError)
    size = os.fstat(f.fileno()).st_size
    if max_bytes is not None and size > max_bytes:
        f.close()
        raise TargetError(f"artifact is {size:,} bytes, more than the {max_bytes:,} its target reads",
                          where=str(Path(artifacts.directory) / name))
    return f


def read_artifact(artifacts: Artifacts, name: str, max_bytes: int | None = None) -> bytes:
    """The bytes of artifact ``name`` (see :func:`open_artifact`)."""
    with open_artifact(artifacts, name, max_bytes) as f:
        return read_all(f, what="artifact", where=str(Path(artifacts.directory) / name), error=TargetError)


def config_digest(target: Target) -> str:
    """SHA-256 of a target's effective config (kind, name and every value, as
    ``kpis.json`` ``provenance.sha256.config`` records it)."""
    return hashlib.sha256(dumps(target.config_dict()).encode()).hexdigest()


# -- artifacts.json -----------------------------------------------------------------------------------
class _ManifestDoc(BaseModel):
    """``artifacts/artifacts.json``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    files: list[str]
    manifest: dict[str, Any] = Field(default_factory=dict)
    graph_sha256: Optional[str] = Field(default=None, pattern=_SHA256)
    config_sha256: Optional[str] = Field(default=None, pattern=_SHA256)


def read_manifest(directory: Path) -> Artifacts:
    """The :class:`Artifacts` an ``artifacts.json`` in ``directory`` lists, checked against
    its schema; every listed name must be a plain relative path (:func:`name_problem`),
    listed once."""
    directory = Path(directory)
    path = member(directory, MANIFEST, what="artifacts manifest")
    where = str(path)
    m = read_doc(path, _ManifestDoc, "artifacts manifest")
    seen: set[str] = set()
    for i, name in enumerate(m.files):
        problem = name_problem(name)
        if problem:
            raise DataError(f"files[{i}] {name[:80]!r} {problem}; an artifact must be a file inside the artifacts "
                            "directory; refused", where=where)
        if name in seen:
            raise DataError(f"files[{i}] {name[:80]!r} is listed twice", where=where)
        seen.add(name)
    return Artifacts(directory, list(m.files), m.manifest, m.graph_sha256, m.config_sha256)
