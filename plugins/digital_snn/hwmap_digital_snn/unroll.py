"""Linear layers the device has no unit for, unrolled into weight matrices (part of step 1 of
the chapter's Section 3.4.6, graph extraction).

The device multiplies spikes by dense (``W_in``, ``W_out``) or sparse (``W_rec``) weight
matrices and nothing else: no convolution, pooling or reshaping unit. Every chain of linear
ops between neuron layers is one affine map, so it becomes one matrix. For each tensor a
neuron layer (or a ``Readout``) reads, the *linear region* feeding it is walked back to its
*sources*: the input channels (an ``Encoder``'s output or the graph input) and the outputs
of neuron layers. If the region holds an op extraction cannot take as it is (a ``Conv``, an
``AveragePool``, a ``Mul`` by a constant...: anything but ``Gemm``, ``MatMul``, ``Add`` and
the shape-only ops), it is replaced by one
``Gemm`` per source (an ``Add`` of them for several sources) whose matrix ``M`` and bias
``b`` are the region's affine map, im2col style: each output feature (pixel·channel of a
feature map, in C order) is a row, so a neuron; each input feature a column, so an input
channel or a neuron of the source layer. For a convolution ``M`` is the convolution's
Toeplitz matrix: row ``(c_out, y, x)`` holds the kernel ``W[c_out]`` at the columns of the
input pixels its window covers (zero padding has no column), so a neuron's fan-in is its
kernel's size within the picture (``k·k·c_in`` inside, fewer on the border).

The map is *measured* on the region itself, with hwmap's executor: ``b`` is the region's
output for all-zero sources, column ``j`` of ``M`` its output for the ``j``-th unit vector
minus ``b``. So ``M`` is what the graph computes by construction (strides, padding,
dilation, groups, pooling windows, reshapes and transposes included) and nothing is
re-implemented here; the equivalence with the region is exact up to float32 rounding
(``tests/digital_snn/test_digits_cnn.py`` checks it on the converted ``zoo:digits_cnn``
against :func:`hwmap.execute.run`). The ``Gemm`` takes the name of the region's weighted
node (``conv1`` stays ``conv1``); a ``Reshape`` gives the read tensor its shape back, so
nothing after the region changes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hwmap import Graph, Node, Tensor

from .network import NEURON_OPS, PASS_OPS, WEIGHT_OPS

__all__ = ["unroll", "LINEAR_OPS", "EXTRACTABLE_OPS"]

#: Ops the walk takes as linear (with constant operands in ``params``; a node whose second
#: data input also depends on a source is bilinear and ends the walk).
LINEAR_OPS = ("Conv", "Gemm", "MatMul", "Mul", "Add", "Sub", "Sum", "AveragePool", "GlobalAveragePool",
              "Flatten", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Identity", "Dropout", "Concat",
              "BatchNormalization", "Pad")
#: Ops a region may hold and still be extracted as it is (a region of these alone is left as
#: it is: two weights in a row there stay a ``consecutive_weights`` violation).
EXTRACTABLE_OPS = set(WEIGHT_OPS) | set(PASS_OPS) | {"Add"}
#: Ops whose output is a source of a region (a spike train the device carries).
SOURCE_OPS = set(NEURON_OPS) | {"Encoder"}
#: Unit vectors measured at once.
CHUNK = 512


def unroll(graph: Graph) -> tuple[Graph, list[str]]:
    """``graph`` with every linear region extraction cannot take replaced by its matrices
    (module docstring), and a note per region replaced. ``graph`` is left untouched."""
    g = graph.copy()
    notes: list[str] = []
    producer = {t: n for n in g.nodes for t in n.outputs}
    sinks = [n.inputs[0] for n in g.nodes if (n.op in NEURON_OPS or n.op == "Readout") and n.inputs]
    for sink in sinks:
        region = _region(g, producer, sink)
        if region is None:
            continue
        nodes, sources = region
        if not nodes or all(n.op in EXTRACTABLE_OPS for n in nodes):
            continue
        notes.append(_replace(g, nodes, sources, sink))
        _drop_dead(g)
        producer = {t: n for n in g.nodes for t in n.outputs}
    if notes:
        g.validate()
    return g, notes


def _is_source(producer: dict[str, Node], graph: Graph, t: str) -> bool:
    n = producer.get(t)
    return n is None and t in graph.inputs or n is not None and n.op in SOURCE_OPS


def _region(g: Graph, producer: dict[str, Node], sink: str) -> tuple[list[Node], list[str]] | None:
    """The linear nodes between the sources and ``sink`` (graph order) and the sources, or
    ``None`` where the walk meets a node that is not linear."""
    seen: dict[str, Node] = {}
    sources: list[str] = []
    frontier = [sink]
    while frontier:
        t = frontier.pop()
        if _is_source(producer, g, t):
            if t not in sources:
                sources.append(t)
            continue
        n = producer.get(t)
        if n is None:
            return None  # a graph input that is no source cannot happen; be safe
        if n.name in seen:
            continue
        if n.op not in LINEAR_OPS:
            return None
        seen[n.name] = n
        frontier += [x for x in n.inputs if x]
    nodes = [n for n in g.nodes if n.name in seen]
    # bilinear nodes (a product of two tensors that both depend on sources) are not linear
    deps = _dependent(nodes, sources)
    for n in nodes:
        if n.op not in ("Add", "Sub", "Sum", "Concat") and sum(x in deps for x in n.inputs) > 1:
            return None
    return nodes, sorted(sources, key=lambda s: _order(g, producer, s))


def _order(g: Graph, producer: dict[str, Node], t: str) -> int:
    n = producer.get(t)
    return -1 if n is None else [m.name for m in g.nodes].index(n.name)


def _dependent(nodes: list[Node], sources: list[str]) -> set[str]:
    deps = set(sources)
    for n in nodes:
        if any(x in deps for x in n.inputs):
            deps.update(n.outputs)
    return deps


def _features(g: Graph, t: str) -> int:
    return int(np.prod(g.tensors[t].shape[1:], dtype=np.int64))


def affine_map(g: Graph, nodes: list[Node], sources: list[str], sink: str) -> tuple[list[np.ndarray], np.ndarray]:
    """The region's matrices (``sink features × source features``, one per source) and bias,
    measured with hwmap's executor (module docstring)."""
    from hwmap.execute import run

    tensors = {t: g.tensors[t] for n in nodes for t in (*n.inputs, *n.outputs) if t}
    for s in sources:
        tensors[s] = g.tensors[s]
    sub = Graph(f"{g.name}_region_{sink}", list(sources), [sink], [n.copy() for n in nodes], dict(tensors), {})
    shapes = {s: tuple(g.tensors[s].shape[1:]) for s in sources}

    def out(batch: dict[str, np.ndarray]) -> np.ndarray:
        y = run(sub, batch)[sink]
        return np.asarray(y, np.float64).reshape(len(y), -1)

    zeros = {s: np.zeros((1, *shapes[s]), np.float32) for s in sources}
    bias = out(zeros)[0]
    mats = []
    for s in sources:
        n_in = _features(g, s)
        cols = []
        for a in range(0, n_in, CHUNK):
            k = min(CHUNK, n_in - a)
            basis = np.zeros((k, n_in), np.float32)
            basis[np.arange(k), a + np.arange(k)] = 1.0
            batch = {r: np.zeros((k, *shapes[r]), np.float32) for r in sources}
            batch[s] = basis.reshape(k, *shapes[s])
            cols.append(out(batch) - bias[None, :])
        mats.append(np.concatenate(cols, axis=0).T)
    return mats, bias


def _replace(g: Graph, nodes: list[Node], sources: list[str], sink: str) -> str:
    """Put the matrices of the region in place of the node giving ``sink`` (the region's
    other nodes stay while anything else reads them); returns the note."""
    mats, bias = affine_map(g, nodes, sources, sink)
    weighted = [n for n in nodes if n.op not in PASS_OPS and n.op not in ("Add", "Sub", "Sum", "Concat")]
    base = (weighted[-1] if weighted else nodes[-1]).name
    sink_node = next(n for n in nodes if sink in n.outputs)
    # the weighted node's name moves to its Gemm when nothing else reads that node's output
    keeps = {n.name for n in nodes if n is not sink_node and _read_outside(g, n, nodes)}
    taken = ({n.name for n in g.nodes} - {n.name for n in nodes}) | keeps
    new: list[Node] = []
    sums: list[str] = []
    n_out = _features(g, sink)
    dtype = "float32"
    for i, (s, m) in enumerate(zip(sources, mats)):
        name = _fresh(base if len(sources) == 1 else f"{base}_from_{_producer_name(g, s)}", taken)
        taken.add(name)
        src = s
        if len(g.tensors[s].shape) != 2:
            flat = _fresh_tensor(g, f"{s}_flat", (1, _features(g, s)), dtype)
            new.append(Node(_fresh(f"{name}_flatten", taken), "Flatten", [s], [flat], {"axis": 1}))
            taken.add(new[-1].name)
            src = flat
        y = _fresh_tensor(g, f"{sink}_{name}_matrix", (1, n_out), dtype)
        params: dict[str, Any] = {"B": m.astype(np.float32)}
        if i == 0 and np.any(bias != 0):
            params["C"] = bias.astype(np.float32)
        new.append(Node(name, "Gemm", [src], [y], {"transB": 1}, params))
        sums.append(y)
    last = sums[0]
    if len(sums) > 1:
        last = _fresh_tensor(g, f"{sink}_sum", (1, n_out), dtype)
        new.append(Node(_fresh(f"{base}_add", taken), "Add", sums, [last]))
    if len(g.tensors[sink].shape) != 2:
        shape = np.asarray([-1, *g.tensors[sink].shape[1:]], np.int64)
        new.append(Node(_fresh(f"{base}_reshape", taken), "Reshape", [last], [sink], params={"shape": shape}))
    else:
        new[-1].outputs = [sink]
        g.tensors.pop(last, None)
    # the new nodes go where the node giving the sink was; the region's other nodes are
    # removed unless read outside the region (then they are dropped once dead)
    at = g.nodes.index(sink_node)
    g.nodes[at:at + 1] = new
    fresh = {id(n) for n in new}
    gone = {m.name for m in nodes} - keeps
    g.nodes = [n for n in g.nodes if id(n) in fresh or n.name not in gone]
    ops = ", ".join(sorted({n.op for n in nodes}))
    fan = [int(np.count_nonzero(m, axis=1).max(initial=0)) for m in mats]
    dims = "; ".join(f"{m.shape[0]}×{m.shape[1]} from {s!r} ({np.count_nonzero(m)} non-zero, fan-in up to {f})"
                     for s, m, f in zip(sources, mats, fan))
    return f"unrolled {ops} ({', '.join(n.name for n in nodes)}) into a weight matrix {dims}"


def _read_outside(g: Graph, n: Node, region: list[Node]) -> bool:
    """Whether a node outside ``region`` (or the graph's outputs) reads an output of ``n``."""
    names = {m.name for m in region}
    outs = set(n.outputs)
    return bool(outs & set(g.outputs)) or any(m.name not in names and outs & set(m.inputs) for m in g.nodes)


def _producer_name(g: Graph, t: str) -> str:
    return next((n.name for n in g.nodes if t in n.outputs), t)


def _fresh(base: str, taken: set[str]) -> str:
    name, i = base, 0
    while name in taken:
        i += 1
        name = f"{base}_{i}"
    return name


def _fresh_tensor(g: Graph, base: str, shape: tuple[int, ...], dtype: str) -> str:
    name = _fresh(base, set(g.tensors))
    g.tensors[name] = Tensor(name, shape, dtype)
    return name


def _drop_dead(g: Graph) -> None:
    """Remove the nodes none of whose outputs is read (nor a graph output), and their tensors."""
    while True:
        used = {t for n in g.nodes for t in n.inputs} | set(g.outputs)
        dead = [n for n in g.nodes if not any(t in used for t in n.outputs)]
        if not dead:
            break
        for n in dead:
            g.nodes.remove(n)
    live = {t for n in g.nodes for t in (*n.inputs, *n.outputs)} | set(g.inputs) | set(g.outputs)
    for t in list(g.tensors):
        if t not in live:
            del g.tensors[t]
