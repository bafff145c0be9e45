"""The NIR frontend: graphs built with the ``nir`` package, written with ``nir.write``, parsed,
and stepped through ``hwmap.execute`` against hand-written numpy loops of the NIR equations
(forward Euler, spike when ``v > v_threshold``, reset to ``v_reset``, states start at 0)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from hwmap import ModelError, ParseOptions, load_model
from hwmap.execute import run
from hwmap.frontends import nir as nir_frontend
from hwmap.frontends.nir import graph_from_nir

nir = pytest.importorskip("nir")

DT = 1e-3
RNG = np.random.default_rng(7)


@pytest.fixture(autouse=True)
def _fresh_rng() -> None:
    """Each test draws the same numbers whether it runs alone or with the others."""
    global RNG
    RNG = np.random.default_rng(7)


def _write(tmp_path: Path, graph: object, name: str = "net.nir") -> str:
    path = tmp_path / name
    nir.write(path, graph)
    return str(path)


def _lif_params(n: int, tau: float = 0.005, thr: float = 1.0) -> dict[str, np.ndarray]:
    return {"tau": np.full(n, tau), "r": RNG.uniform(0.5, 1.5, n), "v_leak": RNG.uniform(-0.1, 0.1, n),
            "v_threshold": np.full(n, thr), "v_reset": np.zeros(n)}


# -- numpy references of the NIR equations -----------------------------------------------------

def _lif_ref(currents: np.ndarray, p: dict[str, np.ndarray]) -> np.ndarray:
    """tau dv/dt = (v_leak - v) + r I; z = v > v_thr; v <- v_reset where z. currents: (N, T, n)."""
    v = np.zeros(currents.shape[:1] + currents.shape[2:])
    out = np.zeros_like(currents)
    for t in range(currents.shape[1]):
        v = v + DT / p["tau"] * ((p["v_leak"] - v) + p["r"] * currents[:, t])
        z = v > p["v_threshold"]
        v = np.where(z, p["v_reset"], v)
        out[:, t] = z
    return out


def _if_ref(currents: np.ndarray, r: np.ndarray, thr: np.ndarray) -> np.ndarray:
    v = np.zeros(currents.shape[:1] + currents.shape[2:])
    out = np.zeros_like(currents)
    for t in range(currents.shape[1]):
        v = v + DT * r * currents[:, t]
        z = v > thr
        v = np.where(z, 0.0, v)
        out[:, t] = z
    return out


def _li_ref(currents: np.ndarray, tau: np.ndarray, r: np.ndarray, v_leak: np.ndarray) -> np.ndarray:
    v = np.zeros(currents.shape[:1] + currents.shape[2:])
    out = np.zeros_like(currents)
    for t in range(currents.shape[1]):
        v = v + DT / tau * ((v_leak - v) + r * currents[:, t])
        out[:, t] = v
    return out


def _conv2d_ref(x: np.ndarray, w: np.ndarray, b: np.ndarray, pad: int) -> np.ndarray:
    """Direct cross-correlation, stride 1: x (N, C, H, W), w (O, C, k, k)."""
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    k = w.shape[-1]
    h, wd = xp.shape[2] - k + 1, xp.shape[3] - k + 1
    out = np.zeros((x.shape[0], w.shape[0], h, wd))
    for i in range(h):
        for j in range(wd):
            out[:, :, i, j] = np.einsum("nckl,ockl->no", xp[:, :, i:i + k, j:j + k], w)
    return out + b[None, :, None, None]


# -- Affine → LIF → Affine → LIF ---------------------------------------------------------------

def _mlp_graph() -> tuple[object, dict[str, np.ndarray]]:
    w1, b1 = RNG.normal(size=(5, 3)), RNG.normal(size=5)
    w2, b2 = RNG.uniform(0, 1, size=(2, 5)), RNG.uniform(0, 0.1, size=2)
    p1, p2 = _lif_params(5, thr=0.05), _lif_params(2, thr=0.15)
    g = nir.NIRGraph(
        nodes={"in": nir.Input(np.array([3])), "fc1": nir.Affine(w1, b1), "lif1": nir.LIF(**p1),
               "fc2": nir.Affine(w2, b2), "lif2": nir.LIF(**p2), "out": nir.Output(np.array([2]))},
        edges=[("in", "fc1"), ("fc1", "lif1"), ("lif1", "fc2"), ("fc2", "lif2"), ("lif2", "out")])
    return g, {"w1": w1, "b1": b1, "w2": w2, "b2": b2, **{f"1{k}": v for k, v in p1.items()},
               **{f"2{k}": v for k, v in p2.items()}}


def test_affine_lif_chain_from_file(tmp_path: Path) -> None:
    graph, ref = _mlp_graph()
    g = load_model(_write(tmp_path, graph), ParseOptions(dt=DT))
    assert g.name == "net" and g.inputs == ["in"] and g.outputs == ["out"]
    assert [(n.name, n.op) for n in g.nodes] == [("fc1", "Gemm"), ("lif1", "LIF"), ("fc2", "Gemm"), ("lif2", "LIF")]
    assert {k: t.shape for k, t in g.tensors.items()} == {"in": (1, 3), "fc1": (1, 5), "lif1": (1, 5),
                                                          "fc2": (1, 2), "out": (1, 2)}
    fc1, lif1 = g.node("fc1"), g.node("lif1")
    assert fc1.attrs["transB"] == 1 and fc1.attrs["dt"] == DT and g.meta["dt"] == DT
    np.testing.assert_array_equal(fc1.params["B"], ref["w1"].astype(np.float32))
    np.testing.assert_array_equal(fc1.params["C"], ref["b1"].astype(np.float32))
    assert sorted(lif1.params) == ["r", "tau", "v_leak", "v_reset", "v_threshold"]
    assert all(v.dtype == np.float32 and v.shape == (5,) for v in lif1.params.values())

    x = RNG.uniform(0, 1, size=(2, 25, 3)).astype(np.float32)  # (N, T, features)
    got = run(g, {"in": x})["out"]
    p = lambda i: {k: ref[f"{i}{k}"] for k in ("tau", "r", "v_leak", "v_threshold", "v_reset")}  # noqa: E731
    s1 = _lif_ref(x.astype(np.float64) @ ref["w1"].T + ref["b1"], p(1))
    s2 = _lif_ref(s1 @ ref["w2"].T + ref["b2"], p(2))
    # the comparison only means something if both layers fire, and not at every step
    assert got.shape == (2, 25, 2) and 0 < s1.mean() < 1 and 0 < s2.mean() < 1
    np.testing.assert_array_equal(got, s2)


def test_in_memory_graph_and_batch_option() -> None:
    graph, _ = _mlp_graph()
    g = graph_from_nir(graph, name="mlp", options=ParseOptions(dt=DT, batch=4))
    assert g.tensor("in").shape == (4, 3) and g.tensor("out").shape == (4, 2)


def test_missing_dt(tmp_path: Path) -> None:
    graph, _ = _mlp_graph()
    with pytest.raises(ModelError, match="pass --dt"):
        load_model(_write(tmp_path, graph), ParseOptions())
    with pytest.raises(ModelError, match="positive"):
        graph_from_nir(graph, name="mlp", options=ParseOptions(dt=-1.0))


def test_corrupt_file(tmp_path: Path) -> None:
    bad = tmp_path / "broken.nir"
    bad.write_bytes(np.random.default_rng(0).bytes(300))
    with pytest.raises(ModelError, match="not a readable NIR file") as info:
        load_model(str(bad), ParseOptions(dt=DT))
    assert "broken.nir" in str(info.value) and "\n" not in str(info.value)
    graph, _ = _mlp_graph()
    good = Path(_write(tmp_path, graph))
    (tmp_path / "cut.nir").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ModelError, match="cut.nir"):
        load_model(str(tmp_path / "cut.nir"), ParseOptions(dt=DT))


# -- Conv2d → IF → SumPool2d → Flatten → Affine → LI ---------------------------------------------

def test_conv_if_sumpool_flatten_affine_li(tmp_path: Path) -> None:
    wc, bc = RNG.normal(size=(4, 2, 3, 3)), RNG.normal(size=4)
    r_if, thr_if = RNG.uniform(0.5, 1.5, (4, 6, 6)), np.full((4, 6, 6), 0.01)
    wa, ba = RNG.normal(size=(3, 36)), RNG.normal(size=3)
    tau, r_li, leak = np.full(3, 0.01), np.ones(3), np.zeros(3)
    graph = nir.NIRGraph(
        nodes={"in": nir.Input(np.array([2, 6, 6])),
               "conv": nir.Conv2d(input_shape=(6, 6), weight=wc, stride=1, padding=1, dilation=1, groups=1, bias=bc),
               "if": nir.IF(r=r_if, v_threshold=thr_if),
               "pool": nir.SumPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]), padding=np.array([0, 0])),
               "flat": nir.Flatten(input_type={"input": np.array([4, 3, 3])}, start_dim=0),
               "fc": nir.Affine(wa, ba), "li": nir.LI(tau=tau, r=r_li, v_leak=leak),
               "out": nir.Output(np.array([3]))},
        edges=[("in", "conv"), ("conv", "if"), ("if", "pool"), ("pool", "flat"), ("flat", "fc"), ("fc", "li"),
               ("li", "out")])
    g = load_model(_write(tmp_path, graph), ParseOptions(dt=DT))
    assert [n.op for n in g.nodes] == ["Conv", "IF", "SumPool2d", "Reshape", "Gemm", "LI"]
    conv = g.node("conv")
    assert conv.attrs["pads"] == [1, 1, 1, 1] and conv.attrs["kernel_shape"] == [3, 3]
    assert conv.attrs["strides"] == [1, 1] and conv.attrs["group"] == 1 and conv.attrs["dilations"] == [1, 1]
    assert g.node("flat").params["shape"].tolist() == [1, 36]
    assert [g.tensor(t).shape for t in ("conv", "pool", "flat", "out")] == [(1, 4, 6, 6), (1, 4, 3, 3), (1, 36),
                                                                           (1, 3)]

    x = RNG.uniform(0, 1, size=(2, 8, 2, 6, 6)).astype(np.float32)
    got = run(g, {"in": x})["out"]
    cur = np.stack([_conv2d_ref(x[:, t].astype(np.float64), wc, bc, 1) for t in range(8)], axis=1)
    spikes = _if_ref(cur, r_if, thr_if)
    pooled = spikes.reshape(2, 8, 4, 3, 2, 3, 2).sum(axis=(4, 6))
    v = _li_ref(pooled.reshape(2, 8, 36) @ wa.T + ba, tau, r_li, leak)
    assert 0 < spikes.mean() < 1
    np.testing.assert_allclose(got, v, rtol=1e-5, atol=1e-5)


# -- scalar parameters, leading batch axis, summed edges, delays ------------------------------------

def test_scalar_parameters_broadcast() -> None:
    w = RNG.uniform(0, 1, size=(4, 3))
    graph = nir.NIRGraph(
        nodes={"in": nir.Input(np.array([3])), "fc": nir.Linear(w),
               "lif": nir.LIF(tau=np.array(0.02), r=np.array(2.0), v_leak=np.array(0.0), v_threshold=np.array(0.3)),
               "out": nir.Output(np.array([4]))},
        edges=[("in", "fc"), ("fc", "lif"), ("lif", "out")], type_check=False)
    g = graph_from_nir(graph, name="scalar", options=ParseOptions(dt=DT))
    fc, lif = g.node("fc"), g.node("lif")
    assert "C" not in fc.params and fc.attrs["transB"] == 1
    for k, v in {"tau": 0.02, "r": 2.0, "v_leak": 0.0, "v_threshold": 0.3, "v_reset": 0.0}.items():
        assert lif.params[k].dtype == np.float32 and lif.params[k].shape == (4,)
        np.testing.assert_array_equal(lif.params[k], np.float32(v))
    x = RNG.uniform(0, 1, size=(1, 12, 3)).astype(np.float32)
    p = {"tau": 0.02, "r": 2.0, "v_leak": 0.0, "v_threshold": 0.3, "v_reset": 0.0}
    ref = _lif_ref(x.astype(np.float64) @ w.T, p)
    assert 0 < ref.mean() < 1
    np.testing.assert_array_equal(run(g, {"in": x})["out"], ref)


def test_leading_batch_axis_is_tolerated() -> None:
    w, b = RNG.normal(size=(4, 3)), RNG.normal(size=4)
    graph = nir.NIRGraph(nodes={"in": nir.Input(np.array([1, 3])), "fc": nir.Affine(w, b),
                                "out": nir.Output(np.array([4]))},
                         edges=[("in", "fc"), ("fc", "out")], type_check=False)
    g = graph_from_nir(graph, name="b", options=ParseOptions(batch=2))
    assert g.tensor("in").shape == (2, 3) and g.tensor("out").shape == (2, 4) and g.meta["dt"] is None
    x = RNG.normal(size=(2, 3)).astype(np.float32)  # no neurons: a stateless graph
    np.testing.assert_allclose(run(g, {"in": x})["out"], x @ w.T + b, rtol=1e-5, atol=1e-5)


def test_edges_into_one_node_are_summed() -> None:
    wa, wb = RNG.normal(size=(3, 2)), RNG.normal(size=(3, 2))
    p = _lif_params(3, thr=0.5)
    graph = nir.NIRGraph(
        nodes={"in": nir.Input(np.array([2])), "a": nir.Linear(wa), "b": nir.Linear(wb), "lif": nir.LIF(**p),
               "out": nir.Output(np.array([3]))},
        edges=[("in", "a"), ("in", "b"), ("a", "lif"), ("b", "lif"), ("lif", "out")])
    g = graph_from_nir(graph, name="sum", options=ParseOptions(dt=DT))
    assert [n.op for n in g.nodes] == ["Gemm", "Gemm", "Sum", "LIF"]
    assert g.node("lif_sum").inputs == ["a", "b"]
    x = RNG.uniform(0, 1, size=(1, 15, 2)).astype(np.float32)
    ref = _lif_ref(x.astype(np.float64) @ (wa + wb).T, p)
    assert 0 < ref.mean() < 1
    np.testing.assert_array_equal(run(g, {"in": x})["out"], ref)


def test_delay(tmp_path: Path) -> None:
    graph = nir.NIRGraph(nodes={"in": nir.Input(np.array([3])), "d": nir.Delay(np.array([0.002, 0.001, 0.0])),
                                "out": nir.Output(np.array([3]))},
                         edges=[("in", "d"), ("d", "out")])
    g = load_model(_write(tmp_path, graph), ParseOptions(dt=DT))
    assert [n.op for n in g.nodes] == ["Delay"]
    np.testing.assert_array_equal(g.node("d").params["delay"], np.float32([0.002, 0.001, 0.0]))
    x = RNG.normal(size=(1, 6, 3)).astype(np.float32)
    got = run(g, {"in": x})["out"]
    for i, steps in enumerate((2, 1, 0)):
        np.testing.assert_array_equal(got[0, steps:, i], x[0, : 6 - steps, i])
        np.testing.assert_array_equal(got[0, :steps, i], 0)


def test_cubalif_and_integrator() -> None:
    n = 3
    w = RNG.uniform(0, 1, size=(n, 2))
    cuba = {"tau_syn": np.full(n, 0.004), "tau_mem": np.full(n, 0.008), "r": RNG.uniform(1, 2, n),
            "v_leak": np.zeros(n), "v_threshold": np.full(n, 0.1), "v_reset": np.full(n, -0.05),
            "w_in": RNG.uniform(0.5, 1.5, n)}
    graph = nir.NIRGraph(
        nodes={"in": nir.Input(np.array([2])), "fc": nir.Linear(w), "cuba": nir.CubaLIF(**cuba),
               "acc": nir.I(r=np.array(0.5)), "out": nir.Output(np.array([n]))},
        edges=[("in", "fc"), ("fc", "cuba"), ("cuba", "acc"), ("acc", "out")], type_check=False)
    g = graph_from_nir(graph, name="cuba", options=ParseOptions(dt=DT))
    assert [n_.op for n_ in g.nodes] == ["Gemm", "CubaLIF", "Integrator"]
    assert sorted(g.node("cuba").params) == sorted(cuba)
    np.testing.assert_array_equal(g.node("acc").params["r"], np.full(n, 0.5, np.float32))
    x = RNG.uniform(0, 1, size=(1, 20, 2)).astype(np.float32)
    # tau_syn di/dt = -i + w_in S;  tau_mem dv/dt = (v_leak - v) + r i  (the updated i enters v);
    # then the integrator dv/dt = r I.
    i = v = acc = np.zeros((1, n))
    spikes, ref = [], []
    for t in range(20):
        s_in = x[:, t].astype(np.float64) @ w.T
        i = i + DT / cuba["tau_syn"] * (-i + cuba["w_in"] * s_in)
        v = v + DT / cuba["tau_mem"] * ((cuba["v_leak"] - v) + cuba["r"] * i)
        z = v > cuba["v_threshold"]
        v = np.where(z, cuba["v_reset"], v)
        acc = acc + DT * 0.5 * z
        spikes.append(z)
        ref.append(acc)
    assert 0 < np.mean(spikes) < 1
    np.testing.assert_allclose(run(g, {"in": x})["out"], np.stack(ref, axis=1), rtol=1e-6, atol=1e-9)


def test_flatten_dims_counting_the_batch_axis() -> None:
    graph = nir.NIRGraph(
        nodes={"in": nir.Input(np.array([4, 3, 3])),
               "flat": nir.Flatten(input_type={"input": np.array([1, 4, 3, 3])}, start_dim=1),
               "out": nir.Output(np.array([36]))},
        edges=[("in", "flat"), ("flat", "out")], type_check=False)
    g = graph_from_nir(graph, name="flat", options=ParseOptions(batch=2))
    assert g.tensor("in").shape == (2, 4, 3, 3) and g.tensor("out").shape == (2, 36)
    bad = nir.NIRGraph(
        nodes={"in": nir.Input(np.array([4, 3, 3])),
               "flat": nir.Flatten(input_type={"input": np.array([1, 4, 3, 3])}, start_dim=0),
               "out": nir.Output(np.array([36]))},
        edges=[("in", "flat"), ("flat", "out")], type_check=False)
    with pytest.raises(ModelError, match="flatten the batch axis"):
        graph_from_nir(bad, name="flat", options=ParseOptions(batch=2))


# -- conv padding, pooling and flatten conventions against torch -----------------------------------

def test_conv_padding_and_avgpool_match_torch() -> None:
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    w2 = RNG.normal(size=(3, 2, 4, 4))
    w1 = RNG.normal(size=(2, 3, 3))
    graph = nir.NIRGraph(
        nodes={"in": nir.Input(np.array([2, 7, 7])),
               "same": nir.Conv2d(input_shape=None, weight=w2, stride=1, padding="same", dilation=1, groups=1,
                                  bias=np.zeros(3)),
               "avg": nir.AvgPool2d(kernel_size=np.array([3, 3]), stride=np.array([2, 2]), padding=np.array([1, 1])),
               "flat": nir.Flatten(input_type={"input": None}, start_dim=1, end_dim=2),
               "c1": nir.Conv1d(input_shape=None, weight=w1, stride=2, padding=1, dilation=2, groups=1,
                                bias=np.ones(2)),
               "out": nir.Output(np.array([2, 7]))},
        edges=[("in", "same"), ("same", "avg"), ("avg", "flat"), ("flat", "c1"), ("c1", "out")], type_check=False)
    g = graph_from_nir(graph, name="conv", options=ParseOptions())
    assert g.node("same").attrs["pads"] == [1, 1, 2, 2]  # torch's 'same': the odd pixel at the end
    assert g.node("avg").op == "AveragePool" and g.node("avg").attrs["count_include_pad"] == 1
    assert g.tensor("flat").shape == (1, 3, 16)
    x = RNG.normal(size=(1, 2, 7, 7)).astype(np.float32)
    t = torch.from_numpy(x).double()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch notes that an even kernel makes it pad a copy
        y = F.conv2d(t, torch.from_numpy(w2), padding="same")
    y = F.avg_pool2d(y, 3, stride=2, padding=1, count_include_pad=True).flatten(2)
    y = F.conv1d(y, torch.from_numpy(w1), torch.ones(2, dtype=torch.float64), stride=2, padding=1, dilation=2)
    np.testing.assert_allclose(run(g, {"in": x})["out"], y.numpy(), rtol=1e-4, atol=1e-4)


# -- refusals ------------------------------------------------------------------------------------

def test_recurrent_graph_is_refused() -> None:
    p = _lif_params(3)
    graph = nir.NIRGraph(
        nodes={"in": nir.Input(np.array([3])), "fc": nir.Linear(np.eye(3)), "lif": nir.LIF(**p),
               "rec": nir.Linear(np.eye(3)), "out": nir.Output(np.array([3]))},
        edges=[("in", "fc"), ("fc", "lif"), ("lif", "rec"), ("rec", "lif"), ("lif", "out")], type_check=False)
    with pytest.raises(ModelError, match="recurrent NIR graphs are not supported by this frontend") as info:
        graph_from_nir(graph, name="rnn", options=ParseOptions(dt=DT))
    assert "'lif', 'rec'" in str(info.value) and "'fc'" not in str(info.value)


@pytest.mark.parametrize("nodes,edges,message", [
    ({"in": "Input3", "fc": "Affine43"}, [("in", "fc"), ("fc", "ghost")], "unknown node 'ghost'"),
    ({"in": "Input3", "fc": "Affine45"}, [("in", "fc")], "takes 5 features"),
    ({"in": "Input3", "sub": "Graph"}, [("in", "sub")], "nested NIRGraph"),
])
def test_malformed_graphs(nodes: dict[str, str], edges: list[tuple[str, str]], message: str) -> None:
    make = {"Input3": lambda: nir.Input(np.array([3])),
            "Affine43": lambda: nir.Affine(np.ones((4, 3)), np.zeros(4)),
            "Affine45": lambda: nir.Affine(np.ones((4, 5)), np.zeros(4)),
            "Graph": lambda: nir.NIRGraph(nodes={"i": nir.Input(np.array([3])), "o": nir.Output(np.array([3]))},
                                          edges=[("i", "o")])}
    graph = nir.NIRGraph(nodes={k: make[v]() for k, v in nodes.items()}, edges=edges, type_check=False)
    with pytest.raises(ModelError, match=message):
        graph_from_nir(graph, name="bad", options=ParseOptions(dt=DT))


def test_not_ours_and_missing_package(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert nir_frontend.hwmap_parse("model.onnx", ParseOptions()) is None
    assert nir_frontend.hwmap_parse("pkg.mod:fn", ParseOptions()) is None
    graph, _ = _mlp_graph()
    path = _write(tmp_path, graph)
    monkeypatch.setitem(__import__("sys").modules, "nir", None)
    with pytest.raises(ModelError, match=r"install hwmap\[nir\]"):
        nir_frontend.hwmap_parse(path, ParseOptions(dt=DT))


def test_parse_is_deterministic(tmp_path: Path) -> None:
    graph, _ = _mlp_graph()
    path = _write(tmp_path, graph)
    for d in ("a", "b"):
        load_model(path, ParseOptions(dt=DT)).save(tmp_path / d)
    for f in ("graph.json", "params.npz"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()
