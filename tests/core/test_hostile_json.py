"""JSON from untrusted files, wherever it is parsed: its parsed size is bounded
(:data:`hwmap.safeio.JSON_EXPANSION` bytes of memory per byte of text, against the memory
limit) and its nesting too, and a failure is one line, exit 2.

Found by hostile review: a 30 MB ``.xylo.json`` of empty lists took 1.5 GB to parse (the
frontend allowed 256 MB files: 13 GB), and an ``-o`` directory whose
``artifacts/artifacts.json`` nests 200,000 levels made ``hwmap compile`` exit 3 with a
RecursionError while it checked whose files the directory held."""

from __future__ import annotations

import shutil
import tracemalloc
from pathlib import Path

import pytest

import guard
from hwmap import DataError
from hwmap import registry as _registry
from hwmap.limits import set_max_memory
from hwmap.safeio import JSON_EXPANSION, parse_json
from test_safeio import _default_limit  # noqa: F401  (autouse: the default 1 GiB limit in every test)


def _empty_lists(n: int) -> bytes:
    return b"{\"weights_in\": [" + b",".join([b"[]"] * n) + b"]}"


def test_parse_json_bounds_what_the_text_becomes() -> None:
    raw = _empty_lists(100_000)  # 300 kB
    set_max_memory(len(raw) * JSON_EXPANSION - 1)
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match="bytes of JSON, parsed"):
            parse_json(raw, what="spec", where="w")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        set_max_memory(None)
    assert peak < 1 << 20, f"{peak:,} bytes"
    assert parse_json(raw, what="spec", where="w")["weights_in"][0] == []


def test_a_xylo_json_that_parses_past_the_limit_is_refused_before_parsing(tmp_path: Path) -> None:
    path = tmp_path / "big.xylo.json"
    path.write_bytes(_empty_lists(400_000))  # 1.2 MB of text, about 26 MB once parsed
    run = guard.run_cli(["profile", str(path), "--max-memory", "16M", "-q"])
    assert run.code == 2, run.stderr
    line = run.error_line()
    assert str(path) in line and "memory limit" in line
    assert run.peak < 8 << 20, f"{run.peak:,} bytes"


def test_an_output_directory_with_a_deeply_nested_manifest_is_refused_not_a_crash(
        tmp_path: Path, toy_registry: _registry.Registry) -> None:
    """``-o DIR`` holding an ``artifacts.json`` nested past any JSON parser's recursion:
    unreadable, so the artifacts it would list are not hwmap's and DIR is left alone."""
    out = tmp_path / "out"
    first = guard.run_cli(["compile", "zoo:digits_mlp", "--target", "toy_cpu:default", "-o", str(out), "-q"])
    assert first.code == 0, first.stderr
    listed = sorted(p.name for p in (out / "artifacts").iterdir())
    (out / "artifacts" / "artifacts.json").write_text("[" * 200_000)
    backup = shutil.copytree(out, tmp_path / "backup")
    run = guard.run_cli(["compile", "zoo:digits_mlp", "--target", "toy_cpu:default", "-o", str(out), "-q"])
    assert run.code == 2, run.stderr
    line = run.error_line()
    assert "holds files hwmap did not write" in line and "RecursionError" not in line
    assert sorted(p.name for p in (out / "artifacts").iterdir()) == listed
    assert (out / "artifacts" / "artifacts.json").read_text() == (backup / "artifacts" / "artifacts.json").read_text()
