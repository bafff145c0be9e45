"""``hwmap convert`` in-process: the report, bad input as one line and exit code 2, ``-o`` as a
saved graph that loads back equal (byte-identical on a second run) and is a MODEL for the
other commands, and ``--nir`` with what NIR loses."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from guard import run_cli
from hwmap import ConversionConfig, ParseOptions, convert_to_snn, load_data, load_model
from hwmap.execute import run
from hwmap.flow import model_inputs, split_data
from hwmap.graph import Graph, Node, Tensor


def _convert(*args: str) -> tuple[int, str, str]:
    r = run_cli(["convert", *args, "-q"])
    assert "Traceback" not in r.stderr + r.stdout
    return r.code, r.stdout, r.stderr


def _one_error(*args: str) -> str:
    code, out, err = _convert(*args)
    lines = err.splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("hwmap: error: "), (code, err)
    return lines[0]


def test_report_json(tmp_path: Path) -> None:
    code, out, err = _convert("zoo:digits_cnn", "--data", "zoo:digits", "--timesteps", "2,4", "--encoding",
                              "direct,rate", "--json")
    assert code == 0, err
    rep = json.loads(out)
    assert (rep["calibration_samples"], rep["scored_samples"]) == (90, 270)
    assert rep["ann_accuracy"] == pytest.approx(264 / 270)
    assert [(r["encoding"], r["timesteps"]) for r in rep["runs"]] == [("direct", 2), ("direct", 4), ("rate", 2),
                                                                      ("rate", 4)]
    for r in rep["runs"]:
        assert 0 <= r["agreement"] <= 1 and 0 <= r["accuracy"] <= 1 and r["spikes_per_inference"] > 0
    direct = {r["timesteps"]: r for r in rep["runs"] if r["encoding"] == "direct"}
    assert direct[4]["spikes_per_inference"] > direct[2]["spikes_per_inference"]
    assert direct[4]["rel_rms_error"] < direct[2]["rel_rms_error"]
    assert rep["saved"] == {"encoding": "direct", "timesteps": 4}
    assert [s["node"] for s in rep["conversion"]["scales"]] == ["relu1", "relu2"]


def test_spikes_per_inference_are_every_if_spike(tmp_path: Path) -> None:
    """The count equals the IF outputs summed over steps and neurons, from a collecting run."""
    from hwmap.convert import count_spikes

    g = load_model("zoo:digits_cnn")
    calib, scored = split_data(load_data("zoo:digits"))
    assert calib is not None
    conv = convert_to_snn(g, model_inputs(g, calib)["input"], ConversionConfig(timesteps=3))
    x = model_inputs(g, scored)["input"][:7]
    outs, spikes = count_spikes(conv, x, batch_size=3)
    every = run(conv.graph, {"input": x}, collect=True)
    expected = sum(every[t].reshape(7, -1).sum(axis=1) for t in ("relu1", "relu2"))
    np.testing.assert_array_equal(spikes, expected)
    np.testing.assert_array_equal(outs["output"], every["output"])


def test_table_output() -> None:
    code, out, err = _convert("zoo:digits_mlp", "--data", "zoo:digits", "--timesteps", "8", "--set",
                              "normalization=layer")
    assert code == 0, err
    text = " ".join(out.split())
    assert "the first 90 samples of zoo:digits calibrate, the other 270 are scored" in text
    assert "layer-wise scales at percentile 99.9" in text and "spikes/inference" in text
    assert "relu1" in text


def _sigmoid_graph(folder: Path) -> Path:
    rng = np.random.default_rng(0)
    f32 = np.float32
    g = Graph("sig", ["input"], ["output"], [
        Node("flatten", "Flatten", ["input"], ["flat"], {"axis": 1}),
        Node("fc1", "Gemm", ["flat"], ["h"], {"transB": 1}, {"B": rng.normal(size=(16, 64)).astype(f32)}),
        Node("squash", "Sigmoid", ["h"], ["a"]),
        Node("fc2", "Gemm", ["a"], ["output"], {"transB": 1}, {"B": rng.normal(size=(10, 16)).astype(f32)}),
    ], {"input": Tensor("input", (1, 1, 8, 8)), "flat": Tensor("flat", (1, 64)), "h": Tensor("h", (1, 16)),
        "a": Tensor("a", (1, 16)), "output": Tensor("output", (1, 10))}).validate()
    g.save(folder)
    return folder


def test_refusals_are_one_line_and_exit_2(tmp_path: Path) -> None:
    sig = _sigmoid_graph(tmp_path / "sig")
    line = _one_error(str(sig), "--data", "zoo:digits")
    assert "node 'squash' (Sigmoid): no spiking counterpart" in line
    for bad in ("0", "4,-1", "2,x"):
        line = _one_error("zoo:digits_cnn", "--data", "zoo:digits", "--timesteps", bad)
        assert line.startswith(f"hwmap: error: --timesteps {bad!r}: "), line
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, x=np.zeros((8, 3, 5, 5), np.float32))
    line = _one_error("zoo:digits_cnn", "--data", str(wrong))
    assert "samples of shape [3, 5, 5] do not fit model input 'input' of shape [1, 8, 8]" in line
    assert "encoding 'latency'" in _one_error("zoo:digits_cnn", "--data", "zoo:digits", "--encoding", "latency")
    assert "percentile" in _one_error("zoo:digits_cnn", "--data", "zoo:digits", "--set", "percentile=0")
    assert "give it with --timesteps" in _one_error("zoo:digits_cnn", "--data", "zoo:digits", "--set",
                                                    "conversion.timesteps=4")
    assert "leaves no sample to calibrate" in _one_error("zoo:digits_cnn", "--data", "zoo:digits", "--calibrate", "0")
    assert "already spiking" in _one_error("zoo:digits_snn", "--data", "zoo:digits")


def test_output_dir_is_the_converted_graph_byte_for_byte(tmp_path: Path) -> None:
    outs = [tmp_path / "a", tmp_path / "b"]
    for o in outs:
        code, _, err = _convert("zoo:digits_cnn", "--data", "zoo:digits", "--timesteps", "2,6", "-o", str(o))
        assert code == 0, err
    assert sorted(p.name for p in outs[0].iterdir()) == [".hwmap-output.json", "graph.json", "params.npz"]
    for name in (".hwmap-output.json", "graph.json", "params.npz"):
        assert (outs[0] / name).read_bytes() == (outs[1] / name).read_bytes()
    # the same graph the pass makes (at the largest T), loaded back exactly
    g = load_model("zoo:digits_cnn")
    calib, scored = split_data(load_data("zoo:digits"))
    assert calib is not None
    expected = convert_to_snn(g, model_inputs(g, calib)["input"], ConversionConfig(timesteps=6)).graph
    loaded = Graph.load(outs[0])
    assert loaded.digest() == expected.digest()
    assert loaded.to_json() == expected.to_json()
    # a MODEL for every command: the same outputs through the saved-graph frontend
    x = model_inputs(g, scored)["input"][:9]
    again = load_model(str(outs[0]), ParseOptions())
    np.testing.assert_array_equal(run(again, {"input": x})["output"], run(expected, {"input": x})["output"])
    # rewriting it in place is allowed (its own files); a folder with other files is refused
    code, _, err = _convert("zoo:digits_cnn", "--data", "zoo:digits", "--timesteps", "3", "-o", str(outs[0]))
    assert code == 0, err
    (outs[1] / "mine.txt").write_text("keep me")
    line = _one_error("zoo:digits_cnn", "--data", "zoo:digits", "-o", str(outs[1]))
    assert "holds files hwmap did not write (mine.txt)" in line
    assert (outs[1] / "mine.txt").read_text() == "keep me"


def test_compile_takes_the_converted_graph(tmp_path: Path) -> None:
    """``hwmap compile DIR`` on what ``convert -o DIR`` wrote: through the throw-away spiking
    target, whose legalize leaves an already converted graph as it is."""
    from spiking_toy import KIND, plugin

    from hwmap.testing import registered

    out = tmp_path / "snn"
    code, _, err = _convert("zoo:digits_cnn", "--data", "zoo:digits", "--timesteps", "8", "-o", str(out))
    assert code == 0, err
    with registered(plugin):
        r = run_cli(["compile", str(out), "--target", f"{KIND}:default", "--data", "zoo:digits", "-o",
                     str(tmp_path / "cdir"), "-q"])
    assert r.code == 0, r.stderr
    kpis = json.loads((tmp_path / "cdir" / "kpis.json").read_text())
    assert kpis["fidelity"]["value"] == 1.0  # the simulator runs the graph it was given


def test_nir_export_says_what_is_lost_and_restoring_it_is_exact(tmp_path: Path) -> None:
    import nir

    from hwmap.frontends.nir import graph_from_nir

    path = tmp_path / "snn.nir"
    code, _, err = _convert("zoo:digits_cnn", "--data", "zoo:digits", "--timesteps", "4", "--nir", str(path))
    assert code == 0, err
    warning = [line for line in err.splitlines() if line.startswith("hwmap: warning:")]
    assert len(warning) == 1
    for lost in ("the encoder (encoding direct, timesteps 4)", "reset by subtraction",
                 "the initial membrane potential v_init", "the readout (membrane", "the time step dt = 0.001 s"):
        assert lost in warning[0], warning[0]
    graph = nir.read(path)
    assert graph.metadata["hwmap_encoder"] == {"encoding": "direct", "timesteps": 4}
    assert {k: v.metadata for k, v in graph.nodes.items() if type(v).__name__ == "IF"} == {
        "relu1": {"hwmap_reset": "subtract", "hwmap_v_init": 0.5}, "relu2": {"hwmap_reset": "subtract",
                                                                            "hwmap_v_init": 0.5}}
    back = graph_from_nir(graph, name="back", options=ParseOptions(dt=1e-3))
    for n in back.nodes:  # restore what NIR lost
        if n.op == "IF":
            n.attrs["reset"] = "subtract"
            n.params["v_init"] = np.asarray(0.5, np.float32)
    g = load_model("zoo:digits_cnn")
    calib, scored = split_data(load_data("zoo:digits"))
    assert calib is not None
    conv = convert_to_snn(g, model_inputs(g, calib)["input"], ConversionConfig(timesteps=4))
    x = model_inputs(g, scored)["input"][:12]
    every = run(conv.graph, {"input": x}, collect=True)
    per_step = run(back, {back.inputs[0]: every["input_encoded"]})[back.outputs[0]]
    np.testing.assert_array_equal(per_step, every["output_current"])
    np.testing.assert_allclose(per_step.mean(axis=1), every["output"], rtol=1e-6, atol=1e-6)


def test_help_says_what_each_option_does() -> None:
    import subprocess
    import sys

    hwmap = Path(sys.executable).with_name("hwmap")
    p = subprocess.run([str(hwmap), "convert", "--help"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    text = " ".join(p.stdout.split())
    for fragment in ("example: hwmap convert zoo:digits_cnn --data zoo:digits --timesteps 1,2,4,8",
                     "--timesteps T[,T...] time-step counts", "(default: 1,2,4,8)", "--nir FILE.nir",
                     "what NIR cannot say", "percentile=auto"):
        assert fragment in text, fragment
