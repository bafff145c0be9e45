"""The listing codec of :class:`~hwmap_analog_imc.program.Program`: ``program.lst``.

The text form (one ``KEYWORD key=value ...`` line per record, WEIGHTS cell rows in hex) is
described in :mod:`hwmap_analog_imc.program`; records with a ``SPEC`` are formatted and parsed
generically from it.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np

from hwmap import TargetError

from .program_records import (
    NONE, VERSION, AccumRec, AdcRec, BlockRec, Config, DigitalRec, LayerRec, PostOpRec, ReadRec, TensorRec,
    TransferRec, WeightsRec, field_names,
)

if TYPE_CHECKING:
    from .program import Program

__all__ = ["to_listing", "from_listing"]

_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
_UNHEX = np.full(256, 255, dtype=np.uint8)
_UNHEX[_HEX] = np.arange(16, dtype=np.uint8)


def _fmt(kind: str, v: Any) -> str:
    if kind in ("u32", "i32", "u64"):
        return str(int(v))
    if kind == "f64":
        return repr(float(v))
    if kind == "str":
        return json.dumps(v, ensure_ascii=True).replace(" ", "\\u0020")
    if kind == "ref":
        return "-" if v == NONE else f"@{v}"
    if kind == "u32s":
        return ",".join(str(int(x)) for x in v) or "-"
    if kind == "params":
        return json.dumps(dict(v), ensure_ascii=True, separators=(",", ":")).replace(" ", "\\u0020")
    raise AssertionError(kind)  # pragma: no cover


def _parse(kind: str, s: str) -> Any:
    if kind in ("u32", "i32", "u64"):
        return int(s)
    if kind == "f64":
        return float(s)
    if kind == "str":
        v = json.loads(s)
        if not isinstance(v, str):
            raise ValueError(f"expected a JSON string, got {s}")
        return v
    if kind == "ref":
        return NONE if s == "-" else int(s[1:]) if s.startswith("@") else int("x")
    if kind == "u32s":
        return () if s == "-" else tuple(int(x) for x in s.split(","))
    if kind == "params":
        d = json.loads(s)
        if not isinstance(d, dict):
            raise ValueError(f"expected a JSON object, got {s}")
        return tuple((str(k), int(v)) for k, v in d.items())
    raise AssertionError(kind)  # pragma: no cover


def _line(rec: Any) -> str:
    names = field_names(type(rec))  # type: ignore[arg-type]  # a record class is hashable
    return rec.KEYWORD + " " + " ".join(f"{n}={_fmt(k, getattr(rec, n))}" for n, k in zip(names, rec.SPEC))


def to_listing(p: Program) -> str:
    """The ``program.lst`` text of ``p``."""
    out = [f"HWMAP-IMC-LISTING version={VERSION}",
           "; hwmap analog_imc program: one instruction per line (see hwmap_analog_imc.program)",
           "; --- CONFIG: the chip this program was compiled for", _line(p.config),
           f"; --- CONSTS: {len(p.consts)} arrays"]
    for i, a in enumerate(p.consts):
        shape = "x".join(str(d) for d in a.shape) or "-"
        vals = " ".join(repr(float(x)) for x in a.reshape(-1)) if a.dtype.kind == "f" else \
            " ".join(str(int(x)) for x in a.reshape(-1))
        out.append(f"CONST id={i} dtype={a.dtype.str} shape={shape} :" + (" " + vals if vals else ""))
    out.append(f"; --- TENSORS: {len(p.tensors)}")
    out += [_line(t) for t in p.tensors]
    out.append(f"; --- LAYERS: {len(p.layers)} crossbar layers")
    out += [_line(x) for x in p.layers]
    out.append(f"; --- SWITCHES: {len(p.blocks)} blocks of concatenated elements (block id = position)")
    out += [_line(x) for x in p.blocks]
    out.append("; --- WEIGHTS: cell levels, one row of hex digits per cell row")
    text = "\n".join(out) + "\n"
    parts = [text]
    for w in p.weights:
        rows, cols = w.cells.shape
        parts.append(f"WEIGHTS block={w.block} cycle={w.cycle} core={w.core} elem_row={w.elem_row} "
                     f"elem_col={w.elem_col} bits={w.bits} cells={rows}x{cols}\n")
        if rows and cols:
            parts.append(_hex_rows(w.cells, 1 if w.bits <= 4 else 2))
    out = ["; --- ADC: shifts (LSB = 2^shift column-sum units) per plane × filter column"]
    for adc in p.adc:
        out.append(f"ADC block={adc.block} adc_bits={adc.adc_bits} planes={adc.shifts.shape[0]} "
                   f"cols={adc.shifts.shape[1]} "
                   f"shifts={','.join(str(int(s)) for s in adc.shifts.reshape(-1)) or '-'}")
    out.append("; --- SCHEDULE: per computation cycle and core, READ (DAC + ADC) then ACCUM (partial sums)")
    last: tuple[int, int] | None = None
    for ins in p.schedule:
        if (ins.cycle, ins.core) != last:
            last = (ins.cycle, ins.core)
            out.append(f"; cycle {ins.cycle} core {ins.core}")
        out.append(_line(ins))
    out.append(f"; --- POSTOPS: {len(p.postops)} fused post-operations")
    out += [_line(x) for x in p.postops]
    out.append(f"; --- DIGITAL: {len(p.digital)} ops on the cores' digital logic")
    out += [_line(x) for x in p.digital]
    out.append(f"; --- NOC: {len(p.noc)} transfers per inference")
    out += [_line(x) for x in p.noc]
    out.append("END")
    parts.append("\n".join(out) + "\n")
    return "".join(parts)


def _hex_rows(cells: np.ndarray, digits: int) -> str:
    rows, cols = cells.shape
    c = cells.astype(np.uint8)
    if digits == 1:
        body = _HEX[c & 15]
    else:
        body = np.stack([_HEX[c >> 4], _HEX[c & 15]], axis=-1).reshape(rows, 2 * cols)
    buf = np.empty((rows, body.shape[1] + 3), dtype=np.uint8)
    buf[:, :2] = ord(" ")
    buf[:, 2:-1] = body
    buf[:, -1] = ord("\n")
    return buf.tobytes().decode("ascii")


_LISTING_CLASSES = {cls.KEYWORD: cls for cls in (Config, TensorRec, LayerRec, BlockRec, ReadRec, AccumRec,
                                                 PostOpRec, DigitalRec, TransferRec)}


def from_listing(text: str, where: str) -> dict[str, Any]:
    """The fields of the :class:`Program` a listing shows (its constructor's keywords;
    :func:`~hwmap_analog_imc.program.parse_listing` builds and checks it);
    :class:`hwmap.TargetError` naming the line."""
    lines = text.split("\n")
    it: Iterator[tuple[int, str]] = iter(enumerate(lines, start=1))
    first = next(it, (1, ""))[1].strip()
    if not first.startswith("HWMAP-IMC-LISTING"):
        raise TargetError("not an analog_imc program listing (first line is not HWMAP-IMC-LISTING)", where=where)
    if first != f"HWMAP-IMC-LISTING version={VERSION}":
        raise TargetError(f"listing {first.split(' ', 1)[-1]!r}, this reader reads version={VERSION}", where=where)
    recs: dict[str, list[Any]] = {k: [] for k in ("CONFIG", "CONST", "TENSOR", "LAYER", "BLOCK", "WEIGHTS", "ADC",
                                                  "SCHEDULE", "POSTOP", "DIGITAL", "NOC")}
    ended = False
    lineno = 1
    try:
        for lineno, raw in it:
            line = raw.strip()
            if not line or line.startswith(";"):
                continue
            if line == "END":
                ended = True
                break
            kw, _, rest = line.partition(" ")
            if kw == "CONST":
                head, sep, vals = rest.partition(" :")
                kv = _pairs(head)
                if not sep or int(kv["id"]) != len(recs["CONST"]):
                    raise ValueError("CONST lines must be numbered 0, 1, ... and end their header with ' :'")
                dtype = np.dtype(kv["dtype"])
                if dtype.kind not in "biuf":
                    raise ValueError(f"constant dtype {dtype} is not numeric")
                shape = () if kv["shape"] == "-" else tuple(int(d) for d in kv["shape"].split("x"))
                items = vals.split()
                conv = float if dtype.kind == "f" else int
                recs["CONST"].append(np.array([conv(v) for v in items], dtype=dtype).reshape(shape))
            elif kw == "WEIGHTS":
                kv = _pairs(rest)
                rows, cols = (int(d) for d in kv["cells"].split("x"))
                bits = int(kv["bits"])
                digits = 1 if bits <= 4 else 2
                body = []
                for _ in range(rows):
                    lineno, row = next(it)
                    body.append(row.strip())
                cells = _unhex(body, cols, digits) if rows and cols else np.zeros((rows, cols), dtype=np.uint8)
                recs["WEIGHTS"].append(WeightsRec(int(kv["block"]), int(kv["cycle"]), int(kv["core"]),
                                                  int(kv["elem_row"]), int(kv["elem_col"]), bits, cells))
            elif kw == "ADC":
                kv = _pairs(rest)
                planes, cols = int(kv["planes"]), int(kv["cols"])
                sh = [] if kv["shifts"] == "-" else [int(s) for s in kv["shifts"].split(",")]
                recs["ADC"].append(AdcRec(int(kv["block"]), int(kv["adc_bits"]),
                                          np.array(sh, dtype=np.uint8).reshape(planes, cols)))
            elif kw in _LISTING_CLASSES:
                cls = _LISTING_CLASSES[kw]
                kv = _pairs(rest)
                names = field_names(cls)
                if kv.keys() != set(names):
                    raise ValueError(f"{kw} takes the keys {', '.join(names)}")
                rec = cls(*(_parse(k, kv[n]) for n, k in zip(names, cls.SPEC)))
                recs["SCHEDULE" if kw in ("READ", "ACCUM") else kw].append(rec)
            else:
                raise ValueError(f"unknown keyword {kw!r}")
    except StopIteration:
        raise TargetError("truncated: a WEIGHTS record is missing cell rows", where=where) from None
    except (ValueError, KeyError, TypeError, IndexError, OverflowError) as e:
        raise TargetError(f"line {lineno}: {e}", where=where) from None
    except RecursionError:
        raise TargetError(f"line {lineno}: a JSON value nests too deep", where=where) from None
    if not ended:
        raise TargetError("truncated: no END line", where=where)
    if len(recs["CONFIG"]) != 1:
        raise TargetError(f"{len(recs['CONFIG'])} CONFIG lines, expected 1", where=where)
    return {"config": recs["CONFIG"][0], "consts": recs["CONST"], "tensors": recs["TENSOR"], "layers": recs["LAYER"],
            "blocks": recs["BLOCK"], "weights": recs["WEIGHTS"], "adc": recs["ADC"], "schedule": recs["SCHEDULE"],
            "postops": recs["POSTOP"], "digital": recs["DIGITAL"], "noc": recs["NOC"]}


def _pairs(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for tok in text.split():
        key, sep, value = tok.partition("=")
        if not sep or key in out:
            raise ValueError(f"expected distinct key=value tokens, got {tok!r}")
        out[key] = value
    return out


def _unhex(rows: list[str], cols: int, digits: int) -> np.ndarray:
    width = cols * digits
    if any(len(r) != width for r in rows):
        raise ValueError(f"a cell row does not hold {cols} cells of {digits} hex digits")
    codes = _UNHEX[np.frombuffer("".join(rows).encode("ascii"), dtype=np.uint8)]
    if (codes == 255).any():
        raise ValueError("a cell row holds a character that is not a hex digit")
    codes = codes.reshape(len(rows), cols, digits)
    return (codes[..., 0] if digits == 1 else (codes[..., 0] << 4) | codes[..., 1]).astype(np.uint8)
