"""The device program (what the device is configured with) and its bitstream: step 4 of the
chapter's Section 3.4.6, parameter configuration serialised to a bitstream.

A :class:`Program` holds integers only, as the device's memories do: the dense input weights
``W_in`` (``n_in × n_hid × n_syn``), the recurrent weights ``W_rec`` (``n_hid × n_hid ×
n_syn``, stored sparse: per target neuron its non-zero weights, the fan-in list), the dense
output weights ``W_out`` (``n_hid × n_out``), each neuron's threshold, bias and decays, the
hidden neurons' alias table (Xylo's neuron aliasing: pairs ``(source, target)``, applied in
order after each step's spikes, :mod:`.simulator`), the device's arithmetic settings, and the host's side of the I/O (how static data becomes input
events, how the outputs become the result).

The bitstream (``program.bin``), little-endian throughout::

    header   magic "HWSNNBS\\0" (8 bytes) | version u16 | section count u16 | body length u32
    section  tag (4 ASCII bytes) | payload length u32 | payload          (repeated)
    trailer  CRC-32 (zlib) of every byte before it, u32

Sections, in this order (each exactly once):

* ``DEVC`` 16 × i32: n_in, n_hid, n_out, n_syn, state_bits, decay form (0 bit shift,
  1 multiplicative), decay_bits, hidden spikes per step, output spikes per step, input
  events per step, weight shifts in / rec / out, weight_bits, 0, 0;
* ``HNRN`` i32 arrays: hidden thresholds [n_hid], biases [n_hid], membrane decays [n_hid],
  synaptic decays [n_hid × n_syn];
* ``ONRN`` i32 arrays: output thresholds, biases, membrane decays, synaptic decays [n_out];
* ``WIN `` i16 [n_in × n_hid × n_syn], C order;
* ``WREC`` u32 fan-in counts [n_hid], then the non-zero recurrent weights linearised by
  target neuron (each neuron's list sorted by source, then synapse), each entry 7 bytes:
  source u32, synapse u8, weight i16;
* ``WOUT`` i16 [n_hid × n_out];
* ``ALIA`` u32 pair count, then the alias pairs in the order they act, each source u32,
  target u32 (hidden neuron ids; Rockpool's ``aliases`` lists flattened by source, each
  source's targets in their order);
* ``HOST`` encoding u8 (0 event counts given, 1 direct, 2 rate, 3 poisson), readout u8
  (0 spikes per step, 1 spike mean, 2 spike sum, 3 integrator: the output synaptic current
  after the last step), 2 zero bytes, timesteps u32, lag u32, seed u64, input scale f64,
  dt f64, then output scale f64 [n_out] and output offset f64 [n_out];
* ``LAYR`` u32 count, then per layer: name length u16, UTF-8 name, kind u8 (0 hidden,
  1 output), first neuron u32, end u32 (exclusive), depth u32 (its lag in steps).

:func:`read_program` checks every field (sizes against the file before any allocation,
values against the device's ranges) and raises :class:`hwmap.TargetError` naming the file.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field

import numpy as np

from hwmap import TargetError
from hwmap.limits import check_size

__all__ = ["Program", "Layer", "write_program", "read_program", "MAGIC", "VERSION", "ENCODINGS", "READOUTS",
           "MAX_SIZE"]

MAGIC = b"HWSNNBS\x00"
#: Version 2 added the ``ALIA`` section (version 1 had no aliases); the reader takes 2 only.
VERSION = 2
ENCODINGS = ("events", "direct", "rate", "poisson")
READOUTS = ("spikes", "spike_mean", "spike_sum", "integrator")
#: Largest neuron or channel count a bitstream may declare (checked before allocating).
MAX_SIZE = 1 << 16
_HEADER = struct.Struct("<8sHHI")
_SECTION = struct.Struct("<4sI")
_DEVC = struct.Struct("<16i")
_HOST = struct.Struct("<BBxxIIQdd")
_ENTRY = np.dtype([("src", "<u4"), ("syn", "u1"), ("w", "<i2")])
_ORDER = (b"DEVC", b"HNRN", b"ONRN", b"WIN ", b"WREC", b"WOUT", b"ALIA", b"HOST", b"LAYR")


@dataclass(frozen=True)
class Layer:
    """A population's place on the device: neurons ``[start, stop)`` of the hidden
    population (``output`` False) or of the output neurons, and its lag in steps."""

    name: str
    output: bool
    start: int
    stop: int
    depth: int

    @property
    def size(self) -> int:
        return self.stop - self.start


@dataclass
class Program:
    """The integer configuration of the device and the host's I/O (module docstring)."""

    n_in: int
    n_hid: int
    n_out: int
    n_syn: int
    state_bits: int
    decay: str
    decay_bits: int
    hidden_spikes: int
    output_spikes: int
    input_events: int
    weight_bits: int
    w_in: np.ndarray
    w_rec: np.ndarray
    w_out: np.ndarray
    hid_threshold: np.ndarray
    hid_bias: np.ndarray
    hid_dmem: np.ndarray
    hid_dsyn: np.ndarray
    out_threshold: np.ndarray
    out_bias: np.ndarray
    out_dmem: np.ndarray
    out_dsyn: np.ndarray
    shift_in: int = 0
    shift_rec: int = 0
    shift_out: int = 0
    encoding: str = "events"
    readout: str = "spikes"
    timesteps: int = 0
    lag: int = 0
    seed: int = 0
    input_scale: float = 1.0
    dt_s: float = 1e-3
    out_scale: np.ndarray = field(default_factory=lambda: np.zeros(0))
    out_offset: np.ndarray = field(default_factory=lambda: np.zeros(0))
    layers: list[Layer] = field(default_factory=list)
    #: Alias pairs ``(source, target)`` of hidden neurons, ``P × 2``, in the order they act.
    aliases: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.int64))

    def fan_in(self) -> np.ndarray:
        """Non-zero recurrent weights into each hidden neuron (over its synapses)."""
        return np.count_nonzero(self.w_rec, axis=(0, 2)).astype(np.int64)

    @property
    def memory_words(self) -> int:
        """Words of the sparse recurrent memory in use (one per non-zero weight)."""
        return int(np.count_nonzero(self.w_rec))


def _i32(a: np.ndarray) -> bytes:
    return np.ascontiguousarray(a, dtype="<i4").tobytes()


def write_program(p: Program) -> bytes:
    """The bitstream of ``p`` (module docstring); the same program gives the same bytes."""
    dev = _DEVC.pack(p.n_in, p.n_hid, p.n_out, p.n_syn, p.state_bits, 0 if p.decay == "bitshift" else 1,
                     p.decay_bits, p.hidden_spikes, p.output_spikes, p.input_events, p.shift_in, p.shift_rec,
                     p.shift_out, p.weight_bits, 0, 0)
    hid = b"".join(_i32(a.ravel()) for a in (p.hid_threshold, p.hid_bias, p.hid_dmem, p.hid_dsyn))
    out = b"".join(_i32(a.ravel()) for a in (p.out_threshold, p.out_bias, p.out_dmem, p.out_dsyn))
    win = np.ascontiguousarray(p.w_in, dtype="<i2").tobytes()
    counts = p.fan_in()
    dst, src, syn = [], [], []
    for j in range(p.n_hid):  # linearised by target neuron: its fan-in list, by source then synapse
        s, k = np.nonzero(p.w_rec[:, j, :])
        dst.append(np.full(len(s), j))
        src.append(s)
        syn.append(k)
    d_all, s_all, k_all = (np.concatenate(x) if x else np.zeros(0, np.int64) for x in (dst, src, syn))
    entries = np.zeros(len(s_all), _ENTRY)
    entries["src"], entries["syn"] = s_all, k_all
    entries["w"] = p.w_rec[s_all, d_all, k_all] if len(s_all) else np.zeros(0)
    wrec = np.ascontiguousarray(counts, dtype="<u4").tobytes() + entries.tobytes()
    wout = np.ascontiguousarray(p.w_out, dtype="<i2").tobytes()
    pairs = np.asarray(p.aliases, np.int64).reshape(-1, 2)
    alia = struct.pack("<I", len(pairs)) + np.ascontiguousarray(pairs, dtype="<u4").tobytes()
    host = _HOST.pack(ENCODINGS.index(p.encoding), READOUTS.index(p.readout), p.timesteps, p.lag, p.seed,
                      float(p.input_scale), float(p.dt_s))
    host += np.ascontiguousarray(p.out_scale, dtype="<f8").tobytes() + np.ascontiguousarray(p.out_offset,
                                                                                            dtype="<f8").tobytes()
    layr = struct.pack("<I", len(p.layers))
    for lay in p.layers:
        name = lay.name.encode("utf-8")
        layr += struct.pack("<H", len(name)) + name + struct.pack("<BIII", int(lay.output), lay.start, lay.stop,
                                                                  lay.depth)
    body = b"".join(_SECTION.pack(tag, len(data)) + data
                    for tag, data in zip(_ORDER, (dev, hid, out, win, wrec, wout, alia, host, layr)))
    head = _HEADER.pack(MAGIC, VERSION, len(_ORDER), len(body))
    blob = head + body
    return blob + struct.pack("<I", zlib.crc32(blob))


class _Reader:
    def __init__(self, data: bytes, where: str, tag: str) -> None:
        self.data, self.pos, self.where, self.tag = data, 0, where, tag

    def fail(self, what: str) -> TargetError:
        return TargetError(f"bitstream section {self.tag}: {what}", where=self.where)

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise self.fail(f"needs {n} more bytes at offset {self.pos}, holds {len(self.data)}")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def array(self, dtype: str | np.dtype, count: int) -> np.ndarray:
        dt = np.dtype(dtype)
        return np.frombuffer(self.take(dt.itemsize * count), dtype=dt).copy()

    def end(self) -> None:
        if self.pos != len(self.data):
            raise self.fail(f"{len(self.data) - self.pos} bytes left over")


def _check_range(r: _Reader, name: str, a: np.ndarray, lo: int, hi: int) -> None:
    if a.size and (int(a.min()) < lo or int(a.max()) > hi):
        raise r.fail(f"{name} holds {int(a.min())}..{int(a.max())}, outside {lo}..{hi}")


def read_program(data: bytes, where: str) -> Program:
    """The program a bitstream holds, every field checked (a :class:`TargetError` naming
    ``where`` for anything that is not a well-formed bitstream of this version)."""
    if len(data) < _HEADER.size + 4:
        raise TargetError(f"bitstream of {len(data)} bytes is shorter than its header", where=where)
    magic, version, count, length = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise TargetError("not a digital_snn bitstream (wrong magic)", where=where)
    if version != VERSION:
        raise TargetError(f"bitstream version {version}; this reader takes version {VERSION}", where=where)
    if _HEADER.size + length + 4 != len(data):
        raise TargetError(f"bitstream declares a body of {length} bytes; the file has "
                          f"{len(data) - _HEADER.size - 4}", where=where)
    (crc,) = struct.unpack_from("<I", data, len(data) - 4)
    if zlib.crc32(data[:-4]) != crc:
        raise TargetError("bitstream checksum does not match its contents", where=where)
    if count != len(_ORDER):
        raise TargetError(f"bitstream has {count} sections; version {VERSION} has {len(_ORDER)}", where=where)
    sections: dict[bytes, bytes] = {}
    pos = _HEADER.size
    for want in _ORDER:
        tag, n = _SECTION.unpack_from(data, pos)
        if tag != want:
            raise TargetError(f"bitstream section {want.decode()!r} expected at offset {pos}, found {tag!r}",
                              where=where)
        pos += _SECTION.size
        if pos + n > len(data) - 4:
            raise TargetError(f"bitstream section {want.decode()} runs past the end", where=where)
        sections[tag] = data[pos:pos + n]
        pos += n
    return _decode(sections, where)


def _decode(s: dict[bytes, bytes], where: str) -> Program:
    r = _Reader(s[b"DEVC"], where, "DEVC")
    (n_in, n_hid, n_out, n_syn, state_bits, decay, decay_bits, hid_sp, out_sp, in_ev, sh_in, sh_rec, sh_out,
     wbits, _, _) = _DEVC.unpack(r.take(_DEVC.size))
    r.end()
    for name, v, lo, hi in (("n_in", n_in, 1, MAX_SIZE), ("n_hid", n_hid, 1, MAX_SIZE), ("n_out", n_out, 1, MAX_SIZE),
                            ("n_syn", n_syn, 1, 4), ("state_bits", state_bits, 4, 31), ("decay form", decay, 0, 1),
                            ("decay_bits", decay_bits, 1, 16), ("hidden spikes", hid_sp, 1, 2**15),
                            ("output spikes", out_sp, 1, 2**15), ("input events", in_ev, 1, 2**15),
                            ("weight shift in", sh_in, 0, 15), ("weight shift rec", sh_rec, 0, 15),
                            ("weight shift out", sh_out, 0, 15), ("weight_bits", wbits, 2, 16)):
        if not lo <= v <= hi:
            raise r.fail(f"{name} = {v}, outside {lo}..{hi}")
    check_size(n_hid * n_hid * n_syn * 8, f"section DEVC: the dense recurrent weights of {n_hid:,} hidden neurons × "
               f"{n_syn} synapses", where=where, error=TargetError)
    smax = 2 ** (state_bits - 1) - 1
    dmax = (state_bits - 1) if decay == 0 else 2**decay_bits - 1
    r = _Reader(s[b"HNRN"], where, "HNRN")
    hid = [r.array("<i4", n) for n in (n_hid, n_hid, n_hid, n_hid * n_syn)]
    r.end()
    r = _Reader(s[b"ONRN"], where, "ONRN")
    out = [r.array("<i4", n_out) for _ in range(4)]
    r.end()
    for tag, (th, b, dm, ds) in (("HNRN", hid), ("ONRN", out)):
        rr = _Reader(b"", where, tag)
        _check_range(rr, "thresholds", th, 1, smax)
        _check_range(rr, "biases", b, -smax - 1, smax)
        _check_range(rr, "membrane decays", dm, 0, dmax)
        _check_range(rr, "synaptic decays", ds, 0, dmax)
    wlim = 2 ** (wbits - 1)
    r = _Reader(s[b"WIN "], where, "WIN ")
    w_in = r.array("<i2", n_in * n_hid * n_syn).astype(np.int64).reshape(n_in, n_hid, n_syn)
    r.end()
    _check_range(r, "weights", w_in, -wlim, wlim - 1)
    r = _Reader(s[b"WREC"], where, "WREC")
    counts = r.array("<u4", n_hid).astype(np.int64)
    total = int(counts.sum())
    entries = np.frombuffer(r.take(_ENTRY.itemsize * total), dtype=_ENTRY)
    r.end()
    if total and (int(entries["src"].max()) >= n_hid or int(entries["syn"].max()) >= n_syn):
        raise r.fail("a recurrent weight names a source neuron or synapse the device does not have")
    _check_range(r, "weights", entries["w"], -wlim, wlim - 1)
    w_rec = np.zeros((n_hid, n_hid, n_syn), np.int64)
    dst = np.repeat(np.arange(n_hid), counts)
    w_rec[entries["src"].astype(np.int64), dst, entries["syn"].astype(np.int64)] = entries["w"]
    if np.count_nonzero(w_rec) != total:
        raise r.fail("the fan-in lists hold zero or repeated weights")
    r = _Reader(s[b"WOUT"], where, "WOUT")
    w_out = r.array("<i2", n_hid * n_out).astype(np.int64).reshape(n_hid, n_out)
    r.end()
    _check_range(r, "weights", w_out, -wlim, wlim - 1)
    r = _Reader(s[b"ALIA"], where, "ALIA")
    (n_pairs,) = struct.unpack("<I", r.take(4))
    aliases = r.array("<u4", 2 * n_pairs).astype(np.int64).reshape(n_pairs, 2)
    r.end()
    _check_range(r, "alias neuron ids", aliases, 0, n_hid - 1)
    r = _Reader(s[b"HOST"], where, "HOST")
    enc, ro, timesteps, lag, seed, in_scale, dt = _HOST.unpack(r.take(_HOST.size))
    out_scale, out_offset = r.array("<f8", n_out), r.array("<f8", n_out)
    r.end()
    if enc >= len(ENCODINGS) or ro >= len(READOUTS):
        raise r.fail(f"encoding {enc} or readout {ro} unknown")
    if not (np.isfinite(in_scale) and in_scale > 0 and np.isfinite(dt) and dt > 0
            and np.all(np.isfinite(out_scale)) and np.all(np.isfinite(out_offset))):
        raise r.fail("a scale, offset or dt is not a finite positive number")
    if enc > 0 and not 1 <= timesteps <= 1 << 16 or lag > MAX_SIZE:
        raise r.fail(f"timesteps {timesteps} or lag {lag} out of range")
    r = _Reader(s[b"LAYR"], where, "LAYR")
    (n_layers,) = struct.unpack("<I", r.take(4))
    if n_layers > MAX_SIZE:
        raise r.fail(f"{n_layers} layers")
    layers = []
    for _ in range(n_layers):
        (ln,) = struct.unpack("<H", r.take(2))
        try:
            name = r.take(ln).decode("utf-8")
        except UnicodeDecodeError:
            raise r.fail("a layer name is not UTF-8") from None
        kind, start, stop, depth = struct.unpack("<BIII", r.take(13))
        limit = n_out if kind else n_hid
        if kind > 1 or not 0 <= start < stop <= limit:
            raise r.fail(f"layer {name!r} spans neurons {start}..{stop} of {limit}")
        layers.append(Layer(name, bool(kind), start, stop, depth))
    r.end()
    return Program(n_in, n_hid, n_out, n_syn, state_bits, "bitshift" if decay == 0 else "multiplicative", decay_bits,
                   hid_sp, out_sp, in_ev, wbits, w_in, w_rec, w_out, hid[0].astype(np.int64), hid[1].astype(np.int64),
                   hid[2].astype(np.int64), hid[3].astype(np.int64).reshape(n_hid, n_syn), out[0].astype(np.int64),
                   out[1].astype(np.int64), out[2].astype(np.int64), out[3].astype(np.int64), sh_in, sh_rec, sh_out,
                   ENCODINGS[enc], READOUTS[ro], timesteps, lag, seed, in_scale, dt, out_scale, out_offset, layers,
                   aliases)
