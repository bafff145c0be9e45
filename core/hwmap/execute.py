"""The reference executor: run a neutral graph on numpy arrays with each op's own semantics.

This is what "the reference model" means in fidelity numbers: ONNX semantics for ONNX ops
(checked against onnxruntime in the tests) and forward-Euler NIR semantics for neurons
(:mod:`hwmap.ops.neuron`).

* Inputs are batch first. Their batch size ``N`` may differ from the batch ``B`` the graph
  was parsed with: ops run on ``N``, and a Reshape whose constant target shape starts with
  ``B`` (on a tensor whose batch is ``B``) is rebased to ``N`` for the run.
* A graph with any stateful op (an op with ``step``: NIR neurons, Delay) runs over discrete
  time: every input is ``(N, T, *features)``, the nodes run once per step in order, each
  stateful node carrying its state, and outputs are ``(N, T, *features)``.
* An *encoded* graph (one holding an ``Encoder``, :mod:`hwmap.ops.time`) takes static inputs
  ``(N, *features)`` like an ANN. The nodes that depend on no encoder run once, before the
  steps; the encoders' downstream runs the encoders' ``timesteps`` steps (static tensors are
  seen unchanged at every step); a ``Readout``'s output is the value it has after the last
  step, and the nodes that depend on it run once, after the steps. Graph outputs computed
  per step are ``(N, T, *features)``; the others (a Readout's result) are static, shaped
  like the ANN's outputs. A stateful node outside the steps, a Readout of a static tensor,
  an Encoder of a per-step tensor, or encoders that disagree on the step count are refused
  naming the node.
* ``quantized=True`` runs the graph with its quantization annotations applied (fake
  quantization, :meth:`~hwmap.graph.QuantAnnotation.fake_quantize`): every parameter with a
  ``param_quant`` annotation (fused sub-nodes' included) is quantized before its node
  evaluates, and every tensor with a ``quant`` annotation (graph inputs, node outputs, and
  the intermediate results inside a fused node) when it is produced. This is the one
  quantized reference every target is judged against when it claims to be bit exact.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import numpy as np

from .errors import DataError, GraphError, HwmapError
from .graph import Graph, Node, QuantAnnotation
from .ops import get_op

__all__ = ["run", "run_batched", "is_stateful", "is_encoded", "has_time_axis", "encoded_steps", "per_step_tensors"]


def is_stateful(graph: Graph) -> bool:
    """Whether the graph holds an op that carries state over time steps."""
    return any(get_op(n.op, where=f"node {n.name!r}").step is not None for n in graph.nodes)


def is_encoded(graph: Graph) -> bool:
    """Whether the graph holds an ``Encoder``: it takes static data and makes the steps itself."""
    return any(n.op == "Encoder" for n in graph.nodes)


def encoded_steps(graph: Graph) -> int:
    """How many time steps an encoded graph runs (its Encoders' ``timesteps``); 1 otherwise."""
    return _phases(graph, graph.nodes).count if is_encoded(graph) else 1


def per_step_tensors(graph: Graph) -> set[str]:
    """The tensors an encoded graph computes once per time step (empty for other graphs)."""
    return set(_phases(graph, graph.nodes).per_step) if is_encoded(graph) else set()


def has_time_axis(graph: Graph) -> bool:
    """Whether the graph's inputs are ``(N, T, *features)``: stateful and not encoded."""
    return is_stateful(graph) and not is_encoded(graph)


def run(graph: Graph, inputs: Mapping[str, np.ndarray], *, quantized: bool = False,
        collect: bool = False) -> dict[str, np.ndarray]:
    """Run ``graph`` on ``inputs`` (graph input name -> batch-first array).

    Returns the graph outputs by name, or with ``collect`` every tensor computed (graph
    inputs included; with ``quantized``, as fake-quantized). Stateful graphs take and
    return ``(N, T, *features)`` arrays. ``quantized``: apply the graph's quantization
    annotations (see the module docstring); without annotations the result is the same.
    Raises :class:`DataError` for a missing, unknown or mis-shaped input, and before anything
    runs when the graph at the inputs' batch needs more than the memory limit
    (:meth:`~hwmap.graph.Graph.check_memory`), and :class:`GraphError` (naming the node) when
    an op cannot evaluate.
    """
    stateful = is_stateful(graph)
    timed = stateful and not is_encoded(graph)
    arrays, n = _check_inputs(graph, inputs, timed)
    # Refused before anything is evaluated: the nodes' tensors at this batch, from shapes.
    graph.check_memory(batch=n, error=DataError, where=f"graph {graph.name!r}")
    nodes = _rebase_batch(graph, n)
    quants: dict[str, QuantAnnotation] = {}
    hidden: set[str] = set()
    if quantized:
        nodes, quants, hidden = _quantized_nodes(graph, nodes)
    wanted = None if collect else list(graph.outputs)
    if not stateful:
        env = _fake_quantize_all(arrays, quants)
        _forward(nodes, env, None, quants)
        return _select(env, wanted, graph, hidden)
    if not timed:
        return _run_encoded(graph, nodes, _fake_quantize_all(arrays, quants), quants, wanted, hidden)
    steps = next(iter(arrays.values())).shape[1] if arrays else 1
    states: dict[str, Any] = {}
    frames: list[dict[str, np.ndarray]] = []
    for t in range(steps):
        env = _fake_quantize_all({k: v[:, t] for k, v in arrays.items()}, quants)
        _forward(nodes, env, states, quants)
        frames.append(_select(env, wanted, graph, hidden))
    return {k: np.stack([f[k] for f in frames], axis=1) for k in frames[0]}


def run_batched(graph: Graph, x: np.ndarray, batch_size: int = 256, *,
                progress: Callable[[int, int], None] | None = None) -> dict[str, np.ndarray]:
    """Run a one-input graph over a large batch ``x`` in slices of ``batch_size``.

    Returns the outputs concatenated along the batch axis. ``progress(done, total)`` is
    called after each slice (for the CLI's progress bar).
    """
    if len(graph.inputs) != 1:
        raise DataError(f"run_batched takes graphs with one input; {graph.name!r} has {len(graph.inputs)} "
                        f"({', '.join(graph.inputs)})")
    if batch_size < 1:
        raise DataError(f"batch_size must be at least 1, got {batch_size}")
    x = np.asarray(x)
    if x.ndim < 1 or x.shape[0] == 0:
        raise DataError(f"input {graph.inputs[0]!r} must be batch first with at least one sample, "
                        f"got shape {list(x.shape)}")
    total = x.shape[0]
    parts: dict[str, list[np.ndarray]] = {}
    for start in range(0, total, batch_size):
        out = run(graph, {graph.inputs[0]: x[start:start + batch_size]})
        for k, v in out.items():
            parts.setdefault(k, []).append(v)
        if progress is not None:
            progress(min(start + batch_size, total), total)
    return {k: np.concatenate(v, axis=0) for k, v in parts.items()}


# -- internals -----------------------------------------------------------------------------
def _expected(shape: tuple[int, ...], stateful: bool) -> str:
    """``[N, 3, 8, 8]`` (or ``[N, T, ...]`` for stateful graphs): what an input must look like."""
    return "[" + ", ".join(["N", *(["T"] if stateful else []), *map(str, shape[1:])]) + "]"


def _check_inputs(graph: Graph, inputs: Mapping[str, np.ndarray], stateful: bool) -> tuple[dict[str, np.ndarray], int]:
    """Validate names and shapes; return the arrays in their declared dtypes and the batch size."""
    if not isinstance(inputs, Mapping):
        raise DataError(f"inputs must map input names to arrays, got {type(inputs).__name__}")
    unknown = sorted(set(inputs) - set(graph.inputs))
    if unknown:
        raise DataError(f"unknown input {unknown[0]!r}; graph {graph.name!r} takes {', '.join(graph.inputs)}")
    arrays: dict[str, np.ndarray] = {}
    batch: tuple[int, ...] | None = None
    for name in graph.inputs:
        if name not in inputs:
            raise DataError(f"missing input {name!r}; graph {graph.name!r} takes {', '.join(graph.inputs)}")
        declared = graph.tensor(name)
        a = np.asarray(inputs[name])
        if not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
            raise DataError(f"input {name!r} has non-numeric dtype {a.dtype}")
        lead = 2 if stateful else 1
        want = declared.shape
        if len(want) == 0:
            raise DataError(f"input {name!r} is declared as a scalar; inputs must be batch first")
        if a.ndim != len(want) - 1 + lead or a.shape[lead:] != want[1:] or min(a.shape[:lead]) < 1:
            raise DataError(f"input {name!r} has shape {list(a.shape)}, the graph expects "
                            f"{_expected(want, stateful)} (declared {list(want)})")
        if batch is not None and a.shape[:lead] != batch:
            raise DataError(f"input {name!r} has leading dims {list(a.shape[:lead])}, other inputs "
                            f"{list(batch)}: all inputs share N" + (" and T" if stateful else ""))
        batch = a.shape[:lead]
        try:
            dtype = np.dtype(declared.dtype)
        except TypeError:
            dtype = np.dtype(np.float32)
        arrays[name] = a.astype(dtype, copy=False)
    return arrays, (batch[0] if batch else 1)


def _rebase_batch(graph: Graph, n: int) -> list[Node]:
    """Nodes as they run at batch ``n``: constant Reshape targets starting with ``B`` get ``n``."""
    if not graph.inputs:
        return graph.nodes
    b = graph.tensor(graph.inputs[0]).shape[0]
    if b == n:
        return graph.nodes
    out = []
    for node in graph.nodes:
        target = node.params.get("shape") if node.op == "Reshape" else None
        data = node.inputs[0] if node.inputs else None
        if (target is not None and target.ndim == 1 and target.size and int(target[0]) == b
                and data in graph.tensors and graph.tensors[data].shape[:1] == (b,)):
            rebased = np.array(target, copy=True)
            rebased[0] = n
            node = dataclasses.replace(node, params={**node.params, "shape": rebased})
        out.append(node)
    return out


_NUMPY_ERRORS = (ValueError, IndexError, TypeError, ZeroDivisionError, FloatingPointError)


def _forward(nodes: list[Node], env: dict[str, np.ndarray], states: dict[str, Any] | None,
             quants: Mapping[str, QuantAnnotation]) -> None:
    """Evaluate ``nodes`` in order into ``env``; ``states`` carries stateful ops across steps;
    an output named in ``quants`` is fake-quantized as it is produced."""
    for node in nodes:
        where = f"node {node.name!r} ({node.op})"
        opdef = get_op(node.op, where=where)
        try:
            args = [env[t] for t in node.inputs]
        except KeyError as e:
            raise GraphError(f"input {e.args[0]!r} has not been computed (graph out of order?)", where=where) from None
        try:
            if opdef.step is not None:
                if states is None:
                    raise GraphError("stateful op run outside a time loop", where=where)
                outs, states[node.name] = opdef.step(node, args, states.get(node.name))
            elif opdef.evaluate is not None:
                outs = opdef.evaluate(node, args)
            else:
                raise GraphError("op has no reference semantics", where=where)
        except HwmapError:
            raise
        except _NUMPY_ERRORS as e:
            raise GraphError(f"evaluation failed: {e}", where=where) from None
        if len(outs) != len(node.outputs):
            raise GraphError(f"op gave {len(outs)} outputs for {len(node.outputs)} declared", where=where)
        env.update(_fake_quantize_all(dict(zip(node.outputs, outs)), quants))


@dataclasses.dataclass
class _Phases:
    """An encoded graph's nodes split by when they run, and its tensors by how they vary."""

    before: list[Node]
    steps: list[Node]
    after: list[Node]
    per_step: list[str]  # tensors with one value per step
    results: list[str]  # the Readouts' outputs: their value after the last step
    count: int  # the number of steps


def _phases(graph: Graph, nodes: list[Node]) -> _Phases:
    """Split an encoded graph's ``nodes`` (in order) as the module docstring says."""
    from .ops.time import encoder_settings

    ph = _Phases([], [], [], [], [], 0)
    per_step: set[str] = set()
    after: set[str] = set()
    counts: dict[int, str] = {}
    for node in nodes:
        where = f"node {node.name!r} ({node.op})"
        stateful = get_op(node.op, where=where).step is not None
        timed_in = any(t in per_step for t in node.inputs)
        after_in = any(t in after for t in node.inputs)
        if node.op == "Encoder":
            if timed_in or after_in:
                raise GraphError("an Encoder's input must be static data, not a tensor computed per time step",
                                 where=where)
            counts.setdefault(encoder_settings(node)[1], node.name)
        elif node.op == "Readout" and not timed_in:
            raise GraphError("a Readout's input must be computed per time step (downstream of an Encoder)",
                             where=where)
        elif timed_in and after_in:
            raise GraphError("mixes a tensor computed per time step with a Readout's result", where=where)
        if node.op == "Encoder" or timed_in:
            ph.steps.append(node)
            (ph.results if node.op == "Readout" else ph.per_step).extend(node.outputs)
            (after if node.op == "Readout" else per_step).update(node.outputs)
            continue
        if stateful:
            raise GraphError(f"a stateful op {'after a Readout' if after_in else 'before any Encoder'} would run "
                             "once, not over the time steps", where=where)
        (ph.after if after_in else ph.before).append(node)
        if after_in:
            after.update(node.outputs)
    if len(counts) > 1:
        named = ", ".join(f"{name!r} {t}" for t, name in counts.items())
        raise GraphError(f"its Encoders disagree on the number of time steps ({named})", where=f"graph {graph.name!r}")
    ph.count = next(iter(counts))
    return ph


def _run_encoded(graph: Graph, nodes: list[Node], env: dict[str, np.ndarray], quants: Mapping[str, QuantAnnotation],
                 wanted: list[str] | None, hidden: set[str]) -> dict[str, np.ndarray]:
    """Run an encoded graph on static inputs ``env`` (see the module docstring)."""
    ph = _phases(graph, nodes)
    _forward(ph.before, env, None, quants)
    keep = [t for t in ph.per_step if t not in hidden and (wanted is None or t in wanted)]
    states: dict[str, Any] = {}
    frames: list[list[np.ndarray]] = []
    step_env = env
    for _ in range(ph.count):
        step_env = dict(env)
        _forward(ph.steps, step_env, states, quants)
        frames.append([step_env[t] for t in keep])
    env.update({t: step_env[t] for t in ph.results})
    _forward(ph.after, env, None, quants)
    env.update({t: np.stack([f[i] for f in frames], axis=1) for i, t in enumerate(keep)})
    return _select(env, wanted, graph, hidden)


def _select(env: dict[str, np.ndarray], wanted: list[str] | None, graph: Graph,
            hidden: set[str]) -> dict[str, np.ndarray]:
    if wanted is None:
        return {k: v for k, v in env.items() if k not in hidden}
    missing = [t for t in wanted if t not in env]
    if missing:
        raise GraphError(f"graph output {missing[0]!r} is not produced by any node", where=f"graph {graph.name!r}")
    return {t: env[t] for t in wanted}


# -- quantized runs ------------------------------------------------------------------------------
def _fake_quantize_all(values: dict[str, np.ndarray], quants: Mapping[str, QuantAnnotation]) -> dict[str, np.ndarray]:
    """``values`` with every array whose name carries an annotation fake-quantized."""
    if not quants:
        return values
    return {k: quants[k].fake_quantize(v) if k in quants else v for k, v in values.items()}


def _quantized_params(node: Node) -> dict[str, np.ndarray]:
    """A node's params, those with a ``param_quant`` annotation fake-quantized."""
    return {k: node.param_quant[k].fake_quantize(v) if k in node.param_quant else v for k, v in node.params.items()}


def _quantized_nodes(graph: Graph, nodes: list[Node]) -> tuple[list[Node], dict[str, QuantAnnotation], set[str]]:
    """The nodes as a quantized run evaluates them, the annotation of every tensor it
    fake-quantizes, and the names of the fused nodes' private intermediates.

    Parameters are fake-quantized once here (not per time step). A fused node is unrolled
    into its compute node and post-ops (:func:`hwmap.ops.fused.plan` deals out the inputs
    exactly as the fused op does), so the intermediate results its sub-nodes' output tensors
    annotate are quantized too; they run under private names (``fused-node/i``) that never
    collide with the graph's tensors and are not returned by ``collect``.
    """
    from .ops.fused import plan

    quants = {name: t.quant for name, t in graph.tensors.items() if t.quant is not None}
    out: list[Node] = []
    hidden: set[str] = set()
    for node in nodes:
        if not node.fused:
            out.append(dataclasses.replace(node, params=_quantized_params(node)))
            continue
        p = plan(node)
        subs = [p.compute] + [post.node for post in p.posts]
        names = [_private(graph, f"{node.name}/{i}") for i in range(len(subs) - 1)] + [node.outputs[0]]
        for sub, name in zip(subs[:-1], names):
            hidden.add(name)
            original = graph.tensors.get(sub.outputs[0]) if sub.outputs else None
            if original is not None and original.quant is not None:
                quants[name] = original.quant
        out.append(Node(p.compute.name, p.compute.op, list(node.inputs[:p.n_compute_inputs]), [names[0]],
                        p.compute.attrs, _quantized_params(node)))
        rest = list(node.inputs[p.n_compute_inputs:])
        for i, post in enumerate(p.posts, start=1):
            extra, rest = rest[:post.extra], rest[post.extra:]
            out.append(Node(post.node.name, post.node.op, extra[:post.position] + [names[i - 1]]
                            + extra[post.position:], [names[i]], post.node.attrs, _quantized_params(post.node)))
    return out, quants, hidden


def _private(graph: Graph, name: str) -> str:
    """``name``, primed until no tensor of ``graph`` has it."""
    while name in graph.tensors:
        name += "'"
    return name
