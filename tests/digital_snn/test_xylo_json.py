"""The ``.xylo.json`` frontend: Rockpool's Xylo specifications import bit-exactly. The graph
it builds runs in hwmap's reference executor spike for spike as XyloSim runs the
specification, and compiled on the digital_snn target its bitstream simulates spike for
spike the same; every malformed file is refused in one line naming the file and the key."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hwmap import ModelError, load_model
from hwmap.config import load_target
from hwmap.execute import run
from hwmap.flow import compile_model
from hwmap_digital_snn import xylo_json
from hwmap_digital_snn.simulator import run_program, load
from hwmap_digital_snn.xylo_json import read_spec, save_xylo_json

from xylo_specs import random_spec, xylosim_run

pytest.importorskip("xylosim.v2")

CASES: dict[str, dict[str, Any]] = {
    "two synapses, recurrent, shifts": dict(seed=0),
    "one synapse, recurrent": dict(seed=1, n_syn=1),
    "feed-forward, input to a third of the neurons": dict(seed=2, recurrent=False, n_res=12),
    "output shift, no input shift": dict(seed=3, shifts=(0, 1, 1)),
}


def _events(seed: int, batch: int = 3, steps: int = 90, n_in: int = 16) -> np.ndarray:
    rng = np.random.default_rng(100 + seed)
    return (rng.random((batch, steps, n_in)) < 0.35) * rng.integers(1, 3, (batch, steps, n_in))


@pytest.mark.parametrize("case", list(CASES))
def test_the_graph_runs_as_xylosim(case: str, tmp_path: Path) -> None:
    spec = random_spec(**CASES[case])
    path = save_xylo_json(spec, tmp_path / "net.xylo.json")
    g = load_model(str(path))
    assert [n.op for n in g.nodes][-4:] == ["LIFBitshift", "Delay", "Gemm", "LIFBitshift"]
    x = _events(CASES[case]["seed"])
    got = run(g, {"input": x.astype(np.float32)}, collect=True)
    ref, hidden = xylosim_run(spec, x)
    np.testing.assert_array_equal(got["output"], ref)
    assert int(got["hidden"].sum()) == hidden
    assert 0 < ref.mean() < 0.9 and got["hidden"].max() >= 2, "weak check: outputs silent or saturated, no multi-spike"


@pytest.mark.parametrize("case", list(CASES))
def test_the_compiled_bitstream_runs_as_xylosim(case: str, tmp_path: Path) -> None:
    spec = random_spec(**CASES[case])
    path = save_xylo_json(spec, tmp_path / "net.xylo.json")
    r = compile_model(str(path), load_target("digital_snn:xylo-audio2"), tmp_path / "out")
    assert r.legalized.fits, r.legalized.violations
    res = r.kpis.resources
    assert res["hidden_neurons_used"] == 40 and res["output_neurons_used"] == 8
    assert r.artifacts is not None
    p = load(r.artifacts)
    assert p.n_syn == np.asarray(spec["weights_in"]).ndim - 1
    x = _events(CASES[case]["seed"])
    ref, hidden = xylosim_run(spec, x)
    act = run_program(p, x.astype(np.float64), x.shape[1], x.shape[0])
    np.testing.assert_array_equal(act.out_spikes, ref)
    assert int(act.hidden_spikes.sum()) == hidden
    # shifted weights are stored as int8 with the smallest shift that holds them exactly
    assert np.abs(p.w_in).max() <= 128 and np.abs(p.w_rec).max() <= 128 and np.abs(p.w_out).max() <= 128
    for w, shift, key in ((p.w_in, p.shift_in, "weights_in"), (p.w_out, p.shift_out, "weights_out")):
        assert np.abs(w * 2**shift).max() == np.abs(np.asarray(spec[key])).max() * 2**spec[key.replace("weights",
                                                                                                   "weight_shift")]


def test_the_hidden_population_is_one_node_holding_w_rec(tmp_path: Path) -> None:
    spec = random_spec(0)
    g = load_model(str(save_xylo_json(spec, tmp_path / "a.xylo.json")))
    hidden = next(n for n in g.nodes if n.name == "hidden")
    assert hidden.inputs == ["w_in", "w_in_2"]
    np.testing.assert_array_equal(hidden.params["w_rec"], np.asarray(spec["weights_rec"]) * 2)  # shift 1 folded in
    assert g.meta["dt"] == 1e-3 and g.name == "a"


def test_save_and_read_round_trip(tmp_path: Path) -> None:
    spec = random_spec(4)
    spec["aliases"] = [[j + 20, 3] if j == 2 else [j + 20] if j < 20 else [] for j in range(40)]
    path = save_xylo_json({**spec, "mapped_graph": object()}, tmp_path / "b.xylo.json")
    back = read_spec(path)
    for k, v in spec.items():
        if k == "aliases":
            continue
        want = np.asarray(v)
        if k == "weights_in":  # read back padded to every hidden neuron (Nres = 20 of 40 take input)
            want = np.concatenate([want, np.zeros((16, 20, 2), int)], axis=1)
        assert back[k] == v if k == "dt" else np.array_equal(np.asarray(back[k]), want), k
    # the alias lists as (source, target) pairs in their order; the hidden node holds them
    assert back["aliases"].tolist() == [[j, t] for j, ts in enumerate(spec["aliases"]) for t in ts]
    hidden = next(n for n in load_model(str(path)).nodes if n.name == "hidden")
    np.testing.assert_array_equal(hidden.params["aliases"], back["aliases"])
    with pytest.raises(ValueError, match="quantize"):
        save_xylo_json({**spec, "threshold": np.full(40, 0.5)}, tmp_path / "c.xylo.json")
    with pytest.raises(ValueError, match=r"\.xylo\.json"):
        save_xylo_json(spec, tmp_path / "c.json")


def _doc(**over: object) -> dict:
    spec = random_spec(5, n_hid=6, n_in=3, n_out=2, n_res=6, fan_in=32)
    doc = json.loads(json.dumps({k: (np.asarray(v).tolist() if k not in ("dt",) else v) for k, v in spec.items()}))
    for k, v in over.items():
        if v is None:
            doc.pop(k)
        else:
            doc[k] = v
    return doc


BAD = {
    "not json": (b"{not json", "not valid JSON"),
    "not an object": (b"[1, 2]", "JSON object"),
    "unknown key": (_doc(treshold=[1]), "treshold: is not a Xylo specification key"),
    "missing threshold": (_doc(threshold=None), "threshold: is missing"),
    "ragged weights": (_doc(weights_out=[[1, 2], [3]] + [[0, 0]] * 4), "weights_out: is not a rectangular array"),
    "float weight": (_doc(weights_out=[[1.5, 2]] + [[0, 0]] * 5), "weights_out: holds float 1.5"),
    "bool threshold": (_doc(threshold_out=[True, 3]), "threshold_out: holds bool"),
    "string dash": (_doc(dash_mem=["1"] * 6), "dash_mem: holds str"),
    "weight out of range": (_doc(weights_out=[[200, 2]] + [[0, 0]] * 5), "weights_out: holds 200, outside -128..127"),
    "huge integer": (_doc(bias=[10**30] * 6), "bias: holds an integer beyond 64 bits"),
    "threshold zero": (_doc(threshold=[0] * 6), "threshold: holds 0, outside 1..32767"),
    "wrong length": (_doc(dash_syn=[1, 1]), "dash_syn: has shape [2]; expected [6]"),
    "w_rec not square": (_doc(weights_rec=[[0] * 5] * 6), "weights_rec: has shape [6, 5]"),
    "more input targets than neurons": (_doc(weights_in=[[0] * 7] * 3), "weights_in: has shape [3, 7, 1]: needs"),
    "three synapses": (_doc(weights_in=[[[0, 0, 0]] * 6] * 3), "weights_in: has shape [3, 6, 3]"),
    "shift out of range": (_doc(weight_shift_in=16), "weight_shift_in: = 16: must be an integer from 0 to 15"),
    "alias target out of range": (_doc(aliases=[[6]] + [[]] * 5), "aliases: hidden neuron 0 has alias target 6"),
    "alias target not an integer": (_doc(aliases=[[]] * 5 + [[1.5]]), "aliases: hidden neuron 5 has alias target 1.5"),
    "aliases not one list per neuron": (_doc(aliases=[[1]]), "aliases: must be 6 lists"),
    "negative dt": (_doc(dt=-1), "dt: = -1"),
    "too many neurons": (_doc(weights_out=[[0]] * 20000), "weights_out: has shape [20000, 1]: more than 16384"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_malformed_specifications_are_refused_naming_file_and_key(case: str, tmp_path: Path) -> None:
    content, needle = BAD[case]
    path = tmp_path / "bad.xylo.json"
    path.write_bytes(content if isinstance(content, bytes) else json.dumps(content).encode())
    with pytest.raises(ModelError) as e:
        load_model(str(path))
    msg = str(e.value)
    assert needle in msg and str(path) in msg and "\n" not in msg, msg


def test_the_size_is_bounded_before_reading(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = save_xylo_json(random_spec(0), tmp_path / "big.xylo.json")
    monkeypatch.setattr(xylo_json, "MAX_BYTES", 1000)
    with pytest.raises(ModelError, match="big.xylo.json"):
        load_model(str(path))


def test_other_files_are_not_ours(tmp_path: Path) -> None:
    from hwmap import ParseOptions
    from hwmap_digital_snn.plugin import hwmap_parse

    assert hwmap_parse(str(tmp_path / "x.json"), ParseOptions()) is None
    assert hwmap_parse("zoo:digits_snn", ParseOptions()) is None


def test_the_cli_refuses_in_one_line_with_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "bad.xylo.json"
    path.write_text(json.dumps(_doc(threshold=[0] * 6)))
    p = subprocess.run([sys.executable, "-m", "hwmap.cli", "compile", str(path), "--target", "digital_snn:xylo-audio2",
                        "-o", str(tmp_path / "out")], capture_output=True, text=True, timeout=240)
    assert p.returncode == 2, p.stderr
    lines = [line for line in p.stderr.splitlines() if line.startswith("hwmap: error")]
    assert len(lines) == 1 and "bad.xylo.json" in lines[0] and "threshold" in lines[0], p.stderr
    assert "Traceback" not in p.stderr


def test_a_spec_over_the_device_is_a_named_violation(tmp_path: Path) -> None:
    spec = random_spec(0, n_syn=2)
    path = save_xylo_json(spec, tmp_path / "two.xylo.json")
    from hwmap_digital_snn import plugin

    legal = plugin.hwmap_legalize(load_model(str(path)), load_target("digital_snn:xylo-imu"))
    rules = {v.rule for v in legal.violations}
    assert "synapses" in rules, legal.violations
    spec["dash_mem"] = np.full(40, 15)
    legal = plugin.hwmap_legalize(load_model(str(save_xylo_json(spec, tmp_path / "m.xylo.json"))),
                                  load_target("digital_snn:xylo-audio2", ['hardware.decay="multiplicative"']))
    assert "integer_neurons" in {v.rule for v in legal.violations}
