"""Cycle-level simulation of the configured pipeline, vectorized over pixels.

Every engine works through *items* (the pixels it produces; the pixels it accumulates for
the global pools) in raster order, one item every ``cpp = cycles / items`` cycles, and
is blocked by three things only:

* **data**: item i needs its producer's pixel ``need(i)`` (the bottom-right pixel of its
  window, :func:`~.layers.need_last`) to have been written;
* **space**: the producer writes pixel n into the FIFO of an edge only when pixel
  ``n − Cap`` has been released, ``Cap`` = the FIFO's depth plus the consumer's line
  buffer (its window rows, :mod:`.buffers`); a pixel is released when the last item that
  reads it (:func:`~.layers.release_last`) is done. A fork writes every consumer's FIFO,
  so it waits for the fullest;
* **its own output**: an engine starts an item only once the previous item's output is
  written (a global pool, once the previous frame's result is written).

In max-plus form these are, per engine, ``s_i = max(s_{i−1} + cpp, e_i)`` with ``e_i`` the
data and space bounds, solved for all items at once as ``s = i·cpp + cummax(e − i·cpp)``.
Data bounds point upstream and space bounds downstream, so the engines are swept in
topological order until no time changes (the least fixed point: the earliest schedule
the rules allow); the sweeps alternate between topological and reverse order, so that
back-pressure travels upstream in one sweep. A configuration that can deadlock has no finite schedule: its times keep
growing, the sweeps do not settle, and the result says ``deadlock`` with the engines whose
times still moved. Frames enter from the source engine (the input interface), as fast as it can push them
(``pace=None``) or one every ``pace`` cycles, its pixels at the interface's rate or, with
``spread``, evenly over the frame period (a camera; what the FIFOs are sized with). The
map stage measures the initiation interval with frames spread over the analytic II: no
engine can finish a frame in fewer cycles than its own, so the measured interval is never
below it, and whatever stalls the pipeline still shows (frames then queue at the input and
the interval grows), while the sweeps settle in a few passes instead of replaying a flood
of back-pressure pixel by pixel. The latency is that of one frame through the empty
pipeline, its pixels entering at the interface's full rate (:func:`latency`).

Measured: the completion time of each frame at the graph outputs, the initiation interval
between the last two frames, the latency of the first frame (from its first pixel leaving
the source), each engine's busy, back-pressured and starved cycles over the last frame,
and each edge's peak occupancy (pixels held in its FIFO and the consumer's line buffer).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

__all__ = ["SimLayer", "Edge", "SimResult", "simulate", "latency", "MAX_SWEEPS"]

#: Sweeps after which a schedule that still moves is declared a deadlock.
MAX_SWEEPS = 400
_NEG = -np.inf


@dataclass
class Edge:
    """Producer → consumer stream: ``need`` (per consumer item of a frame, the producer pixel
    it needs last), ``last`` (per producer pixel of a frame, the consumer item that reads it
    last, −1 for none), ``fifo`` and ``buffer`` depths in pixels (``None``: unbounded)."""

    producer: int
    need: np.ndarray
    last: np.ndarray
    fifo: int | None
    buffer: int


@dataclass
class SimLayer:
    name: str
    items: int  # work items per frame
    out_items: int  # pixels written per frame
    cpp: float  # cycles per work item
    per_input: bool = False  # one output per frame, written after the frame's last item
    edges: list[Edge] = field(default_factory=list)


@dataclass
class SimResult:
    frames: int
    done: list[float]  # completion time of each frame at the graph outputs
    ii: float  # cycles between the last two frames
    latency: float  # first frame: first source pixel to last output pixel
    sweeps: int
    deadlock: bool
    moving: list[str]  # engines whose times still moved when the sweeps stopped
    busy: dict[str, float]  # cycles working in the last frame period
    blocked: dict[str, float]  # cycles waiting for FIFO space (back-pressure) in the last frame
    starved: dict[str, float]  # cycles waiting for data in the last frame
    occupancy: list[dict[str, Any]]  # per edge: producer, consumer, peak pixels held
    timeline: dict[str, list[list[float]]] = field(default_factory=dict)  # per engine: [start, end] per frame

    def to_json(self) -> dict[str, Any]:
        return {"frames": self.frames, "frame_done_cycles": self.done, "initiation_interval_cycles": self.ii,
                "latency_cycles": self.latency, "sweeps": self.sweeps, "deadlock": self.deadlock,
                "moving": self.moving, "busy_cycles": self.busy, "blocked_cycles": self.blocked,
                "starved_cycles": self.starved, "occupancy": self.occupancy, "timeline": self.timeline}


def _cummax_linear(e: np.ndarray, cpp: float) -> np.ndarray:
    """s_i = max(s_{i−1} + cpp, e_i), s_0 = e_0."""
    idx = np.arange(e.size, dtype=np.float64) * cpp
    return idx + np.maximum.accumulate(e - idx)


class _State:
    def __init__(self, layers: Sequence[SimLayer], frames: int) -> None:
        self.s = [np.zeros(x.items * frames) for x in layers]
        self.f = [np.zeros(x.items * frames) for x in layers]
        self.tw = [np.zeros(x.out_items * frames) for x in layers]


def simulate(layers: Sequence[SimLayer], outputs: Sequence[int], frames: int, *, pace: float | None = None,
             spread: bool = False, bounded: bool = True, max_sweeps: int = MAX_SWEEPS,
             timeline: bool = False) -> SimResult:
    """Run ``frames`` frames through ``layers`` (topological order, the source first) and
    measure them at the ``outputs`` engines (see the module docstring)."""
    n = len(layers)
    consumers: list[list[tuple[int, int]]] = [[] for _ in range(n)]
    for ci, lay in enumerate(layers):
        for ei, e in enumerate(lay.edges):
            consumers[e.producer].append((ci, ei))
    # global (all frames) index arrays, built once
    need = [[_tile(e.need, layers[e.producer].out_items, frames) for e in lay.edges] for lay in layers]
    last = [[_tile_last(e.last, lay.items, frames) for e in lay.edges] for lay in layers]
    st = _State(layers, frames)
    src = layers[0]
    if pace is None:
        arrive = np.zeros(src.items * frames)
    else:
        k = np.arange(src.items * frames)
        arrive = (k // src.items) * pace + ((k % src.items) * (pace / src.items) if spread else 0.0)
    sweeps, settled, moving = 0, False, []
    for sweeps in range(1, (max_sweeps if bounded else 1) + 1):
        changed: list[str] = []
        order = range(n) if sweeps % 2 else range(n - 1, -1, -1)  # forward, then backward (space flows upstream)
        for li in order:
            lay = layers[li]
            space = _space(li, layers, consumers, st, last, frames) if bounded else None
            a = arrive if li == 0 else _data(lay, need[li], st)
            new_tw = _update(lay, a, space, st, li, frames)
            if not np.array_equal(new_tw, st.tw[li]):
                changed.append(lay.name)
            st.tw[li] = new_tw
        if not changed or not bounded:
            settled = True
            break
        moving = changed
    deadlock = bounded and not settled
    done = [float(max(st.tw[o][(fr + 1) * layers[o].out_items - 1] for o in outputs)) for fr in range(frames)]
    ii = done[-1] - done[-2] if frames >= 2 else done[-1] - float(st.s[0][0])
    latency = done[0] - float(st.s[0][0])
    busy, blocked, starved = _activity(layers, st, frames)
    occupancy = _occupancy(layers, st, last, frames)
    tl = {}
    if timeline:
        for li, lay in enumerate(layers):
            tl[lay.name] = [[float(st.s[li][fr * lay.items]), float(st.f[li][(fr + 1) * lay.items - 1])]
                            for fr in range(frames)]
    return SimResult(frames, done, float(ii), float(latency), sweeps, deadlock, moving if deadlock else [],
                     busy, blocked, starved, occupancy, tl)


def _tile(local: np.ndarray, period: int, frames: int) -> np.ndarray:
    return (local[None, :] + (np.arange(frames) * period)[:, None]).reshape(-1)


def _tile_last(local: np.ndarray, period: int, frames: int) -> np.ndarray:
    g = _tile(local, period, frames)
    return np.where(np.tile(local, frames) < 0, -1, g)


def _data(lay: SimLayer, needs: list[np.ndarray], st: _State) -> np.ndarray:
    a = None
    for e, idx in zip(lay.edges, needs):
        t = st.tw[e.producer][idx]
        a = t if a is None else np.maximum(a, t)
    assert a is not None
    return a


def _released(lay_idx: int, e: Edge, last: np.ndarray, st: _State) -> np.ndarray:
    """Per producer pixel (all frames): when the consumer frees it (monotone: slots free in order)."""
    f = st.f[lay_idx]
    t = np.where(last >= 0, f[np.maximum(last, 0)], _NEG)
    return np.maximum.accumulate(t)


def _space(li: int, layers: Sequence[SimLayer], consumers: list[list[tuple[int, int]]], st: _State,
           last: list[list[np.ndarray]], frames: int) -> np.ndarray | None:
    """Per output pixel of engine ``li``: the earliest time its FIFOs have room for it."""
    total = layers[li].out_items * frames
    b = None
    for ci, ei in consumers[li]:
        e = layers[ci].edges[ei]
        if e.fifo is None:
            continue
        cap = e.fifo + e.buffer
        if cap >= total:
            continue
        rel = _released(ci, e, last[ci][ei], st)
        t = np.full(total, _NEG)
        t[cap:] = rel[:total - cap]
        b = t if b is None else np.maximum(b, t)
    return b


def _update(lay: SimLayer, a: np.ndarray, space: np.ndarray | None, st: _State, li: int,
            frames: int) -> np.ndarray:
    if not lay.per_input:
        e = a.copy()
        if space is not None:
            e[1:] = np.maximum(e[1:], space[:-1])
        s = _cummax_linear(e, lay.cpp)
        f = s + lay.cpp
        tw = f if space is None else np.maximum(f, space)
        st.s[li], st.f[li] = s, f
        return tw
    e = a.copy()
    starts = np.arange(1, frames) * lay.items
    e[starts] = np.maximum(e[starts], st.tw[li][:frames - 1])  # accumulators free once the last result is out
    s = _cummax_linear(e, lay.cpp)
    f = s + lay.cpp
    tw = f[np.arange(1, frames + 1) * lay.items - 1]
    if space is not None:
        tw = np.maximum(tw, space)
    st.s[li], st.f[li] = s, f
    return tw


def _activity(layers: Sequence[SimLayer], st: _State,
              frames: int) -> tuple[dict[str, float], dict[str, float], dict[str, float]]:
    """Busy, blocked and starved cycles of each engine over the last frame's items."""
    busy, blocked, starved = {}, {}, {}
    for li, lay in enumerate(layers):
        lo, hi = (frames - 1) * lay.items, frames * lay.items
        s, f = st.s[li][lo:hi], st.f[li][lo:hi]
        prev_f = np.concatenate([[st.f[li][lo - 1]] if lo > 0 else [s[0]], f[:-1]])
        if lay.per_input:
            prev_w = prev_f
        else:
            tw = st.tw[li][lo:hi]
            prev_w = np.concatenate([[st.tw[li][lo - 1]] if lo > 0 else [s[0]], tw[:-1]])
        busy[lay.name] = float(lay.cpp * lay.items)
        blocked[lay.name] = float(np.sum(np.maximum(prev_w - prev_f, 0)))
        starved[lay.name] = float(np.sum(np.maximum(s - prev_w, 0)))
    return busy, blocked, starved


def _occupancy(layers: Sequence[SimLayer], st: _State, last: list[list[np.ndarray]],
               frames: int) -> list[dict[str, Any]]:
    out = []
    for ci, lay in enumerate(layers):
        for ei, e in enumerate(lay.edges):
            rel = _released(ci, e, last[ci][ei], st)
            w = st.tw[e.producer]
            freed = np.searchsorted(rel, w, side="right")  # pixels released by the time pixel n is written
            held = np.arange(1, w.size + 1) - np.minimum(freed, np.arange(w.size))
            out.append({"producer": layers[e.producer].name, "consumer": lay.name,
                        "peak_pixels": int(held.max()) if held.size else 0})
    return out


def latency(layers: Sequence[SimLayer], outputs: Sequence[int]) -> float:
    """Cycles from the first input pixel to the last output pixel of one frame through the
    empty pipeline, the input at the interface's full rate (no FIFO ever fills on one frame
    that the bounded pipeline would not also pass at the bottleneck's pace)."""
    return simulate(layers, outputs, 1, bounded=False).latency
