"""Reading files users hand hwmap, with every declared size checked first.

:func:`read_file` reads a regular file only (never a device, a FIFO or a directory), and only
if it is no larger than the bound. :func:`load_npz` reads an ``.npz`` member by member: each
must be an ``.npy`` array of a plain numeric or boolean dtype (no pickles, no objects), and
the arrays' sizes, read from their headers, must fit the bound together before any is
loaded; a zip bomb is refused from its headers, a ``.npy`` renamed ``.npz`` is named as such.
"""

from __future__ import annotations

import io
import math
import os
import stat
import zipfile
from pathlib import Path
from typing import IO, Any, Callable

import numpy as np

from .errors import DataError, HwmapError
from .limits import check_size, max_memory

__all__ = ["read_file", "load_npz", "open_regular"]

_NPY_MAGIC = b"\x93NUMPY"


def open_regular(path: Path, *, what: str = "file", error: Callable[..., HwmapError] = DataError,
                 follow_symlinks: bool = True, limit: int | None = None) -> IO[bytes]:
    """``path`` opened for reading after checking it is a regular file within the bound.
    ``follow_symlinks=False`` refuses a symbolic link (for files inside directories hwmap
    wrote, where none belongs)."""
    where = str(path)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | (0 if follow_symlinks else getattr(os, "O_NOFOLLOW", 0))
    try:
        if not follow_symlinks and os.path.islink(path):
            raise error(f"{what} is a symbolic link; refused", where=where)
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise error(f"no such {what}", where=where) from None
    except IsADirectoryError:
        raise error(f"{what} is a directory", where=where) from None
    except OSError as e:
        raise error(f"cannot open {what}: {e.strerror or e}", where=where) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file (a device, FIFO or socket)"
            raise error(f"{what} is {kind}; refused", where=where)
        check_size(st.st_size, f"{what} ({st.st_size:,} bytes)", where=where, error=error, limit=limit)
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_file(path: Path, *, what: str = "file", error: Callable[..., HwmapError] = DataError,
              follow_symlinks: bool = True, limit: int | None = None) -> bytes:
    """The bytes of the regular file ``path`` (see :func:`open_regular`)."""
    with open_regular(path, what=what, error=error, follow_symlinks=follow_symlinks, limit=limit) as f:
        size = os.fstat(f.fileno()).st_size  # checked against the bound; read() preallocates what it is asked
        data = f.read(size + 1)
    if len(data) > size:
        raise error(f"{what} grew while it was read", where=str(path))
    return data


def _npy_header(f: IO[bytes]) -> tuple[tuple[int, ...], bool, np.dtype[Any]]:
    """The shape, order and dtype an ``.npy`` stream declares (read before its data)."""
    fmt = np.lib.format
    version = fmt.read_magic(f)
    if version == (1, 0):
        return fmt.read_array_header_1_0(f)  # type: ignore[no-any-return]
    if version == (2, 0):
        return fmt.read_array_header_2_0(f)  # type: ignore[no-any-return]
    return fmt._read_array_header(f, version)  # type: ignore[attr-defined,no-any-return]  # 3.0: UTF-8 header


def load_npz(source: Path | bytes | IO[bytes], *, where: str | None = None,
             error: Callable[..., HwmapError] = DataError, limit: int | None = None) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` by key (a path, its bytes, or a binary file object)."""
    where = where or (str(source) if isinstance(source, (str, Path)) else "the .npz")
    bound = max_memory() if limit is None else limit
    if isinstance(source, (str, Path)):
        blob: IO[bytes] = io.BytesIO(read_file(Path(source), what=".npz file", error=error, limit=limit))
    elif isinstance(source, (bytes, bytearray)):
        blob = io.BytesIO(bytes(source))
    else:
        blob = source
    head = blob.read(len(_NPY_MAGIC))
    blob.seek(0)
    if head == _NPY_MAGIC:
        raise error("is a single .npy array, not an .npz archive (save with numpy.savez)", where=where)
    try:
        archive = zipfile.ZipFile(blob)
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise error(f"not an .npz (zip) archive: {e}", where=where) from None
    with archive:
        members = archive.infolist()
        headers: list[tuple[str, zipfile.ZipInfo, np.dtype[Any], tuple[int, ...], bool]] = []
        total = 0
        for m in members:
            if m.is_dir():
                continue
            if not m.filename.endswith(".npy"):
                raise error(f"member {m.filename!r} is not an .npy array", where=where)
            check_size(total + m.file_size, f"the arrays of the archive (declared {total + m.file_size:,} bytes)",
                       where=where, error=error, limit=bound)
            try:
                with archive.open(m) as f:
                    shape, fortran, dtype = _npy_header(f)
            except (ValueError, OSError, zipfile.BadZipFile, EOFError, RuntimeError) as e:
                raise error(f"member {m.filename!r}: not a readable .npy header: {e}", where=where) from None
            if dtype.hasobject or dtype.kind not in "biufc":
                raise error(f"array {m.filename[:-4]!r} has dtype {dtype}: only numbers and booleans are read",
                            where=where)
            nbytes = math.prod(shape) * dtype.itemsize
            total += nbytes
            check_size(total, f"array {m.filename[:-4]!r} {list(shape)} {dtype}", where=where, error=error,
                       limit=bound)
            headers.append((m.filename[:-4], m, dtype, shape, fortran))
        out: dict[str, np.ndarray] = {}
        for key, m, dtype, shape, fortran in headers:
            try:
                with archive.open(m) as f:
                    out[key] = np.lib.format.read_array(f, allow_pickle=False)
            except (ValueError, OSError, zipfile.BadZipFile, EOFError, RuntimeError) as e:
                raise error(f"array {key!r}: cannot read: {e}", where=where) from None
            if out[key].shape != shape or out[key].dtype != dtype:
                raise error(f"array {key!r} does not match its header", where=where)
    return out
