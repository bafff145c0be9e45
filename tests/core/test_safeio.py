"""Reading untrusted files: regular files only, declared sizes checked before allocation."""

from __future__ import annotations

import io
import os
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest

from hwmap import DataError, ModelError
from hwmap.limits import DEFAULT_MAX_MEMORY, ENV, check_size, max_memory, parse_size, set_max_memory
from hwmap.safeio import load_npz, read_file


@pytest.fixture(autouse=True)
def _default_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV, raising=False)
    set_max_memory(None)
    yield
    set_max_memory(None)


def _npy_member(shape: tuple[int, ...], dtype: str = "<f4", data: bytes = b"") -> bytes:
    """An ``.npy`` whose header declares ``shape`` but which holds only ``data``."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buf.getvalue() + data


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, blob in members.items():
            z.writestr(name, blob)
    return buf.getvalue()


@pytest.mark.parametrize("text, n", [("1024", 1024), ("2G", 2 << 30), ("512M", 512 << 20), ("1.5k", 1536),
                                     ("64MiB", 64 << 20), ("3gb", 3 << 30)])
def test_parse_size(text: str, n: int) -> None:
    assert parse_size(text) == n


@pytest.mark.parametrize("text", ["", "lots", "-1G", "0", "nanG", "infM"])
def test_parse_size_refuses(text: str) -> None:
    with pytest.raises(DataError, match="memory size"):
        parse_size(text)


def test_the_limit_comes_from_the_option_then_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert max_memory() == DEFAULT_MAX_MEMORY == 1 << 30
    monkeypatch.setenv(ENV, "256M")
    assert max_memory() == 256 << 20
    set_max_memory(4096)
    assert max_memory() == 4096
    with pytest.raises(DataError, match=r"array 'x' would take 8 KiB, more than the 4 KiB memory limit \(raise it "
                                        r"with --max-memory or HWMAP_MAX_MEMORY\)"):
        check_size(8192, "array 'x'")


def test_a_declared_size_above_the_limit_is_refused_from_the_header(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.npz"
    # 4 GiB declared, a few bytes stored: refused before anything that size exists
    bomb.write_bytes(_zip({"x.npy": _npy_member((1 << 20, 1 << 10), "<f4")}))
    tracemalloc.start()
    with pytest.raises(DataError, match=r"array 'x' \[1048576, 1024\] float32 would take 4 GiB, more than the 1 GiB"):
        load_npz(bomb)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 16 << 20


def test_a_truncated_array_is_an_error_not_garbage(tmp_path: Path) -> None:
    short = tmp_path / "short.npz"
    short.write_bytes(_zip({"x.npy": _npy_member((4, 4), "<f4", b"\0" * 12)}))
    with pytest.raises(DataError, match="array 'x': cannot read"):
        load_npz(short)


@pytest.mark.parametrize("members, needle", [
    ({"x.npy": _npy_member((2,), "|O")}, "has dtype object: only numbers and booleans"),
    ({"x.txt": b"hello"}, "member 'x.txt' is not an .npy array"),
    ({"x.npy": b"not an npy"}, "member 'x.npy': not a readable .npy header"),
])
def test_what_is_not_a_plain_array_is_refused(tmp_path: Path, members: dict[str, bytes], needle: str) -> None:
    p = tmp_path / "odd.npz"
    p.write_bytes(_zip(members))
    with pytest.raises(DataError, match=needle):
        load_npz(p)


def test_a_npy_renamed_npz_and_a_non_zip(tmp_path: Path) -> None:
    npy = tmp_path / "x.npz"
    np.save(tmp_path / "x.npy", np.zeros(3))
    os.replace(tmp_path / "x.npy", npy)
    with pytest.raises(DataError, match="is a single .npy array, not an .npz archive"):
        load_npz(npy)
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(DataError, match="not an .npz \\(zip\\) archive"):
        load_npz(junk)


def test_a_good_npz_round_trips(tmp_path: Path) -> None:
    p = tmp_path / "ok.npz"
    np.savez(p, x=np.arange(6, dtype=np.float32).reshape(2, 3), y=np.array([1, 2]), b=np.array([True]))
    got = load_npz(p)
    assert got["x"].tolist() == [[0, 1, 2], [3, 4, 5]] and got["y"].dtype == np.int64 and got["b"].dtype == bool


def test_only_regular_files_are_read(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="is not a regular file"):
        read_file(Path("/dev/zero"), what="model file", error=ModelError)
    with pytest.raises(DataError, match="is a directory"):
        read_file(tmp_path)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(DataError, match="not a regular file"):  # never blocks waiting for a writer
        read_file(fifo)
    target = tmp_path / "real.bin"
    target.write_bytes(b"abc")
    link = tmp_path / "link.bin"
    link.symlink_to(target)
    assert read_file(link) == b"abc"
    with pytest.raises(DataError, match="is a symbolic link; refused"):
        read_file(link, follow_symlinks=False)
    big = tmp_path / "big.bin"
    big.write_bytes(b"\0" * 5000)
    with pytest.raises(DataError, match=r"file \(5,000 bytes\) would take 4.88 KiB, more than the 4 KiB"):
        read_file(big, limit=4096)
