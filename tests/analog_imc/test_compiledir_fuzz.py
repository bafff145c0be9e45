"""Property: whatever edits a compile directory carries, ``hwmap simulate`` exits 0 or 2 (never
3, never a traceback), opens nothing outside the compile directory, the data file and the
installation, and stays within a memory bound.

Random edits of ``artifacts/artifacts.json``, ``target.json``, ``graph/graph.json`` (values
replaced, keys dropped or added, items duplicated, bytes cut or inserted) and
``artifacts/program.bin`` (fields overwritten with interesting numbers, bytes cut or
inserted, or a decoded record changed and encoded again), with the checksum recomputed so
the edit gets past it and, for an edited graph or config that still loads, the digests in
``artifacts.json`` recorded again so the edit gets past those too. ``HWMAP_MAX_MEMORY`` is
128M; Python's traced allocations must peak below 256 MiB.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import struct
import tempfile
import zlib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import guard
from guard import CLIMB_TO_PASSWD, outside, run_cli
from hwmap import HwmapError
from hwmap.compiledir import stamp
from hwmap.limits import ENV, set_max_memory
from hwmap_analog_imc.program import Program, field_names

PEAK = 256 << 20
EXAMPLES = int(os.environ.get("HWMAP_FUZZ_EXAMPLES", "60"))

STRINGS = [CLIMB_TO_PASSWD, "/dev/zero", "/etc/passwd", "program.bin", "program.lst", "kpis.json", "",
           "..", "artifacts.json", "a/" + CLIMB_TO_PASSWD, "analog_imc", "toy_cpu", "Gemm", "Relu", "float32",
           "object", "hwmap.graph", "0" * 64, "\x1b[31m", "input", "output"]
INTS = [0, 1, -1, 2, 7, 255, 256, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 500_000_000, 2**63, -(2**63), 10**30]
FLOATS = [0.0, -0.0, 1e-300, 1e300, float("nan"), float("inf"), -1.0, 0.5]

scalars = (st.none() | st.booleans() | st.sampled_from(INTS) | st.integers(-1000, 1000) | st.sampled_from(FLOATS)
           | st.sampled_from(STRINGS) | st.text(max_size=12))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.sampled_from(STRINGS) | st.text(max_size=8), inner, max_size=4),
                      max_leaves=10)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """zoo:digits_mlp compiled for analog_imc:default (calibrated), and 4 samples to simulate."""
    return guard.compiled_analog(tmp_path_factory.mktemp("fuzz"))


# -- JSON edits --------------------------------------------------------------------------------------------
def _slots(doc: Any) -> list[tuple[Any, Any]]:
    """Every (container, key or index) in ``doc``."""
    out: list[tuple[Any, Any]] = []
    todo = [doc]
    while todo:
        c = todo.pop()
        keys = list(c) if isinstance(c, dict) else range(len(c)) if isinstance(c, list) else []
        for k in keys:
            out.append((c, k))
            todo.append(c[k])
    return out


def edit_json(draw: Any, raw: bytes) -> bytes:
    kind = draw(st.sampled_from(["replace", "replace", "delete", "add", "duplicate", "bytes"]))
    if kind == "bytes":
        return edit_bytes(draw, raw)
    doc = json.loads(raw)
    slots = _slots(doc)
    if not slots:
        return json.dumps(draw(values)).encode()
    c, k = slots[draw(st.integers(0, len(slots) - 1))]
    if kind == "replace":
        c[k] = draw(values)
    elif kind == "delete":
        del c[k]
    elif kind == "add":
        if isinstance(c, dict):
            c[draw(st.sampled_from(STRINGS) | st.text(max_size=8))] = draw(values)
        else:
            c.insert(draw(st.integers(0, len(c))), draw(values))
    elif isinstance(c, list):
        c.append(json.loads(json.dumps(c[k])))
    else:
        c[k] = [c[k], c[k]]
    return json.dumps(doc).encode()


def edit_bytes(draw: Any, raw: bytes) -> bytes:
    at = draw(st.integers(0, len(raw)))
    kind = draw(st.sampled_from(["cut", "insert", "overwrite"]))
    blob = draw(st.binary(min_size=1, max_size=16) | st.sampled_from([b"[" * 200, b"\xff\xfe", b"\0", b"{}"]))
    if kind == "cut":
        return raw[:at] + raw[at + draw(st.integers(1, 64)):]
    if kind == "insert":
        return raw[:at] + blob + raw[at:]
    return raw[:at] + blob + raw[at + len(blob):]


# -- program.bin edits -------------------------------------------------------------------------------------
def with_length_and_crc(body: bytes) -> bytes:
    """The header's file length set to the file's, the CRC-32 recomputed."""
    b = bytearray(body)
    if len(b) >= 24:
        struct.pack_into("<Q", b, 16, len(b) + 4 if len(b) < 28 else len(b))
    if len(b) < 28:
        return bytes(b) + struct.pack("<I", zlib.crc32(bytes(b)) & 0xFFFFFFFF)
    return bytes(b[:-4]) + struct.pack("<I", zlib.crc32(bytes(b[:-4])) & 0xFFFFFFFF)


def edit_program(draw: Any, raw: bytes) -> bytes:
    kind = draw(st.sampled_from(["field", "field", "record", "record", "bytes"]))
    if kind == "record":
        return edit_record(draw, raw)
    if kind == "bytes":
        return with_length_and_crc(edit_bytes(draw, raw))
    width = draw(st.sampled_from([4, 8]))
    at = draw(st.integers(0, len(raw) - 4 - width))
    value = draw(st.sampled_from(INTS) | st.integers(0, 2**64 - 1)) % (1 << (8 * width))
    b = bytearray(raw)
    b[at:at + width] = value.to_bytes(width, "little")
    return with_length_and_crc(bytes(b))


def edit_record(draw: Any, raw: bytes) -> bytes:
    """A decoded record's field set to an interesting value of its wire type, encoded again."""
    p = Program.from_bytes(raw)
    tables = {name: getattr(p, name) for name in ("tensors", "layers", "blocks", "schedule", "postops", "digital",
                                                   "noc") if getattr(p, name)}
    name = draw(st.sampled_from(["config", *tables]))
    rec = p.config if name == "config" else None
    if rec is None:
        i = draw(st.integers(0, len(tables[name]) - 1))
        rec = tables[name][i]
    spec = dict(zip(field_names(type(rec)), getattr(type(rec), "SPEC")))
    fname = draw(st.sampled_from(sorted(spec)))
    wire = spec[fname]
    if wire in ("u32", "ref"):
        value: Any = draw(st.sampled_from([v for v in INTS if 0 <= v < 2**32]) | st.integers(0, 64))
    elif wire == "i32":
        value = draw(st.sampled_from([0, 1, -1, 2**31 - 1, -(2**31), 127, -128]))
    elif wire == "u64":
        value = draw(st.sampled_from([v for v in INTS if 0 <= v < 2**64]))
    elif wire == "f64":
        value = draw(st.sampled_from(FLOATS))
    elif wire == "str":
        value = draw(st.sampled_from(STRINGS[:-3]) | st.sampled_from(['{"a": [[[[]]]]}', "[]", "{}", "null"]))
    elif wire == "u32s":
        value = tuple(draw(st.lists(st.sampled_from([0, 1, 2, 3, 64, 2**31, 2**32 - 1]), max_size=5)))
    else:  # params
        value = tuple(draw(st.lists(st.tuples(st.sampled_from(["B", "W", "shape", "x"]),
                                              st.sampled_from([0, 1, 2**32 - 1])), max_size=3)))
    new = dataclasses.replace(rec, **{fname: value})
    if name == "config":
        p.config = new
    else:
        tables[name][i] = new
    return p.to_bytes()


FILES = ["artifacts/artifacts.json", "target.json", "graph/graph.json", "artifacts/program.bin"]


@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example])
@given(data=st.data())
def test_any_edit_is_exit_0_or_2_inside_the_directory_and_the_bound(built: dict[str, Path], data: Any) -> None:
    draw = data.draw
    edits = draw(st.lists(st.sampled_from(FILES), min_size=1, max_size=3))
    restamp = draw(st.booleans())
    with tempfile.TemporaryDirectory(prefix="hwmap-fuzz-") as tmp, pytest.MonkeyPatch.context() as mp:
        mp.setenv(ENV, "128M")
        set_max_memory(None)
        cdir = Path(tmp) / "cdir"
        shutil.copytree(built["dir"], cdir)
        for rel in edits:
            path = cdir / rel
            raw = path.read_bytes()
            if rel.endswith(".bin"):
                try:
                    path.write_bytes(edit_program(draw, raw))
                except (HwmapError, struct.error, ValueError, OverflowError):
                    pass  # an earlier edit left nothing to decode, or a value its field cannot hold
            else:
                try:
                    path.write_bytes(edit_json(draw, raw))
                except ValueError:
                    path.write_bytes(edit_bytes(draw, raw))  # an earlier edit left no JSON
        if restamp and any(rel in ("target.json", "graph/graph.json") for rel in edits):
            try:
                stamp(cdir)  # the edited graph and config still load: past the digest check too
            except HwmapError:
                pass
        run = run_cli(["simulate", str(cdir), "--data", str(built["data"]), "-q"])
    note = f"edits {edits}: exit {run.code}, stderr {run.stderr[:400]!r}"
    assert run.code in (0, 2), note
    if run.code == 2:
        run.error_line()
    else:
        assert run.stderr == "", note  # no warning either
    assert "Traceback" not in run.stderr, note
    assert outside(run.opened, [cdir, built["data"]]) == [], note
    assert run.peak < PEAK, f"{note}; peak {run.peak:,} bytes"
