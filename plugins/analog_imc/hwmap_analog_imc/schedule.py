"""The analog IMC schedule: when each node of a mapping runs, and what limits throughput.

Given a :class:`~.estimate.CostModel` (each node's crossbar reads and digital work per
(cycle, core), the NoC transfers):

* a layer's time on a core is the largest of its reads (one after the other: a core's row
  drivers and ADCs serve one read at a time), its link serialization in and out
  (``bits / (link_width_bits · clock_hz)``) and its digital work (``ops / (clock_hz · ADCs)``:
  one digital lane per ADC) — they stream concurrently — plus the hop latency
  (``hops · hop_latency_cycles / clock_hz``); blocks of one layer on different cores run in
  parallel, so a layer's time is the largest over its cores;
* digital nodes run on the logic of their core, concurrently with its crossbar reads; pure
  re-indexing (Flatten, Reshape, Squeeze, Unsqueeze, Identity, Constant) takes no time;
* within a computation cycle nodes start in graph order once a fraction ``φ`` of each input
  produced in the same cycle exists (``φ``: a convolution's line buffer
  ``((K_h−1)·W + K_w) / (H·W)`` of its input, the buffering of ISAAC's inter-layer pipeline,
  Shafiee et al., ISCA 2016; 1 for fully connected layers, global pooling, Softmax,
  Transpose; 0 for element-wise nodes) and the resources they use are free (nodes on one
  core's array, or its logic, do not overlap); a node ends no earlier than its own time
  after it starts and one position's worth of it after its last input ends: layers on
  distinct cores pipeline, layers on one core run one after the other;
* with several computation cycles the weights of each cycle are programmed before it runs
  (``rows written · program_row_s``, cores in parallel) and every batch of ``b =
  schedule.batch`` inferences reprograms all cycles (the chip holds the last cycle's weights
  when the next batch needs the first's); the batch's inferences stream through a cycle as
  through a one-cycle pipeline: the first takes the cycle's span, each further one its
  initiation interval (the busiest array, logic or link of that cycle's cores). Latency (of
  the batch: every inference waits for the last cycle) = Σ over cycles of (programming +
  span + (b − 1) · interval);
* throughput: one cycle — steady state, successive inferences overlap, ``1 / max over
  cores (array, logic, link busy)``; several cycles — ``b / latency`` (no overlap across a
  reprogramming).

The throughput bottleneck is the busiest (cycle, core, resource) of :data:`RESOURCES`
with one cycle, "reprogramming every computation cycle" with several; ``Timing.loads``
says which node loads each resource how much (the record names the layer from it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .estimate import CostModel

__all__ = ["RESOURCES", "Timing", "schedule", "distinct_rows"]


def distinct_rows(tiles: set[tuple[int, int, int]]) -> int:
    """Rows covered by ``(group, row_start, row_count)`` tiles, overlaps counted once."""
    total = 0
    by_group: dict[int, list[tuple[int, int]]] = {}
    for grp, r0, rc in tiles:
        by_group.setdefault(grp, []).append((r0, r0 + rc))
    for spans in by_group.values():
        end = -1
        for a, b in sorted(spans):
            if b > end:
                total += b - max(a, end)
                end = b
    return total


#: The resources of a core a node can keep busy, as the bottleneck names them.
RESOURCES = ("crossbar reads", "digital logic", "NoC link")


@dataclass
class Timing:
    """The schedule's result. ``node_s``: each node's own busy time per inference (its
    slowest core, summed over cycles); ``loads``: per (cycle, core, resource of
    :data:`RESOURCES`), the seconds each node keeps it busy; ``bottleneck_slot``: the
    (cycle, core, resource) limiting a one-cycle mapping's throughput (``None`` when several
    cycles are reprogrammed, or nothing is busy)."""

    node_s: dict[str, float]
    cycle_span_s: list[float]  # per cycle: the time the batch spends in it (programming excluded)
    programming_s: list[float]
    latency_s: float
    bottleneck_s: float
    bottleneck: str
    loads: dict[tuple[int, int, str], dict[str, float]] = field(default_factory=dict)
    bottleneck_slot: tuple[int, int, str] | None = None


_Busy = dict[tuple[int, int], dict[str, float]]
_Loads = dict[tuple[int, int, str], dict[str, float]]


def _times(model: CostModel) -> tuple[dict[tuple[str, int], float], _Busy, _Loads]:
    """Per (node, cycle): the node's time (its slowest core); per (cycle, core): how long its
    array, logic and link are busy per inference; and per (cycle, core, resource) each
    node's part of that."""
    hw, noc = model.hw, model.cfg.noc
    link = noc.link_width_bits * hw.clock_hz
    hop_s = noc.hop_latency_cycles / hw.clock_hz
    ser: dict[tuple[str, int, int], float] = {}
    hop: dict[tuple[str, int, int], float] = {}
    for t in model.transfers:
        for k in (t.src, t.dst):  # both ends are busy serializing
            key = (t.node, t.cycle, k)
            ser[key] = ser.get(key, 0.0) + t.bits / link
            hop[key] = max(hop.get(key, 0.0), t.hops * hop_s)
    lanes = {c.index: c.adcs for c in model.bp.cores}
    per_node: dict[tuple[str, int], float] = {}
    busy: _Busy = {}
    loads: _Loads = {}
    for name, cost in model.costs.items():
        slots = set(cost.array_s) | set(cost.logic_ops)
        slots |= {(c, k) for (n, c, k) in ser if n == name}
        for c, k in sorted(slots):
            a = cost.array_s.get((c, k), 0.0)
            lg = cost.logic_ops.get((c, k), 0.0) / (hw.clock_hz * lanes[k])
            s = ser.get((name, c, k), 0.0)
            span = max(a, lg, s) + hop.get((name, c, k), 0.0)
            per_node[(name, c)] = max(per_node.get((name, c), 0.0), span)
            b = busy.setdefault((c, k), {what: 0.0 for what in RESOURCES})
            for what, v in zip(RESOURCES, (a, lg, s)):
                b[what] += v
                if v > 0:
                    load = loads.setdefault((c, k, what), {})
                    load[name] = load.get(name, 0.0) + v
    return per_node, busy, loads


def _programming_s(model: CostModel) -> list[float]:
    """Per computation cycle: rows written on the busiest core × program_row_s."""
    rows: dict[tuple[int, int], list[tuple[int, int]]] = {}
    er = model.bp.element_rows
    for p in model.res.placements:
        rows.setdefault((p.cycle, p.core), []).append((p.elem_row * er, p.elem_row * er + p.row_count))
    out = [0.0] * model.res.computation_cycles
    for (c, _), spans in rows.items():
        out[c] = max(out[c], distinct_rows({(0, a, b - a) for a, b in spans}) * model.hw.program_row_s)
    return out


def schedule(model: CostModel) -> Timing:
    """Start and finish of every node, cycle by cycle (the module docstring's rules), the
    latency, and the resource that bounds throughput."""
    per_node, busy, loads = _times(model)
    cycles = max(1, model.res.computation_cycles)
    prog = _programming_s(model) if model.res.computation_cycles else []
    reprogram = model.res.computation_cycles > 1
    batch = model.cfg.schedule.batch if reprogram else 1
    start: dict[str, float] = {}
    finish: dict[str, float] = {}
    spans: list[float] = []
    clock = 0.0
    for c in range(cycles):
        if reprogram:
            clock += prog[c]
        c0 = clock
        free: dict[tuple[str, int], float] = {}
        end = c0
        for node in model.g.nodes:
            cost = model.costs[node.name]
            if c not in cost.cycles:
                continue
            t = per_node.get((node.name, c), 0.0)
            ready = c0
            tails = []
            for tin in node.inputs:
                m = model.producer.get(tin)
                if m is None or max(model.costs[m].cycles) != c or m not in finish:
                    continue
                ready = max(ready, start[m] + cost.fill * (finish[m] - start[m]))
                tails.append(finish[m])
            # the resource the node occupies: its cores' arrays (reads) or logic (digital nodes)
            kind = "array" if cost.crossbar else "logic"
            cores = {k for (cc, k) in (cost.array_s if cost.crossbar else cost.logic_ops) if cc == c}
            s = max([ready] + [free.get((kind, k), c0) for k in cores])
            f = max([s + t] + [x + t / max(1, cost.positions) for x in tails])
            for k in cores:
                free[(kind, k)] = max(free.get((kind, k), c0), f)
            start[node.name], finish[node.name] = s, f
            end = max(end, f)
        span = end - c0
        if batch > 1:  # the rest of the batch follows at the cycle's initiation interval
            span += (batch - 1) * max((max(b.values()) for (cc, _), b in busy.items() if cc == c), default=0.0)
        spans.append(span)
        clock = c0 + span
    latency = max(clock, 1.0 / model.hw.clock_hz)
    node_s = {n: 0.0 for n in model.costs}
    for (n, _), v in per_node.items():
        node_s[n] += v
    slot: tuple[int, int, str] | None = None
    if reprogram or not busy:
        bottleneck_s, which = latency, "reprogramming every computation cycle" if reprogram else "none"
    else:
        # the busiest resource of any core: a steady-state stream cannot go faster
        bottleneck_s, slot = max(((v, (c, k, what)) for (c, k), b in sorted(busy.items())
                                  for what, v in b.items()), key=lambda x: x[0])
        which = f"core {slot[1]} {slot[2]}"
    bottleneck_s = min(max(bottleneck_s, 1.0 / model.hw.clock_hz), latency)
    return Timing(node_s, spans, prog, latency, bottleneck_s, which, loads, slot)


