"""Hostile ``.npz`` archives whose harm is in the zip container rather than in an array's
header: a central directory of hundreds of thousands of entries costs Python about 700 bytes
of ``ZipInfo`` per entry once :class:`zipfile.ZipFile` parses it (an 86 MB file of a million
empty entries took 690 MB), so within the default 1 GiB file size it could take 8 GiB. The
number of entries is read from the end-of-central-directory record first and refused above
:data:`hwmap.safeio.MAX_NPZ_MEMBERS`."""

from __future__ import annotations

import io
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest

from hwmap import DataError
from hwmap.safeio import MAX_NPZ_MEMBERS, load_npz
from test_safeio import _default_limit  # noqa: F401  (autouse: the default 1 GiB limit in every test)
from test_untrusted_data import data_refused


def _many_members(path: Path, n: int) -> Path:
    """An .npz holding a valid ``x`` then ``n`` empty members (no compression)."""
    buf = io.BytesIO()
    np.save(buf, np.zeros((4, 1, 8, 8), np.float32))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr("x.npy", buf.getvalue())
        for i in range(n):
            z.writestr(f"{i:x}", b"")
    return path


def test_an_archive_of_too_many_entries_is_refused_from_its_end_record(tmp_path: Path) -> None:
    path = _many_members(tmp_path / "many.npz", 4 * MAX_NPZ_MEMBERS)
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match=f"{4 * MAX_NPZ_MEMBERS + 1:,} entries, more than the "
                                            f"{MAX_NPZ_MEMBERS:,}") as e:
            load_npz(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert str(path) in str(e.value)
    # the file's bytes (about 22 MB) are read; the entries are never parsed into ZipInfo objects
    assert peak < path.stat().st_size + (16 << 20), f"{peak:,} bytes for a {path.stat().st_size:,}-byte file"


def test_through_the_command_line_it_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _many_members(tmp_path / "many.npz", MAX_NPZ_MEMBERS)
    line = data_refused(capsys, path)
    assert "entries" in line and "x.npy" not in line


def test_an_archive_at_the_bound_still_loads(tmp_path: Path) -> None:
    """Empty members are directories to no one: the bound counts entries, and an archive
    with fewer is read as before (its non-.npy member refused by name)."""
    path = _many_members(tmp_path / "ok.npz", MAX_NPZ_MEMBERS - 1)
    with pytest.raises(DataError, match="member '0' is not an .npy array"):
        load_npz(path)
    good = tmp_path / "good.npz"
    np.savez(good, x=np.ones(3, np.float32), y=np.arange(3))
    assert sorted(load_npz(good)) == ["x", "y"]
