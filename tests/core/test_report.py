"""The comparison report: units, one column per target, non-fitting columns, every format."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from rich.console import Console

from hwmap import Assumption, Bottleneck, Fidelity, KPIs, LayerCost, Provenance
from hwmap import report
from hwmap.report_detail import layers_csv, layers_table, sensitivity_table

LONG = ("weight_memory: weights need 3,932 bytes but the SRAM holds 1,024 bytes; "
        "reduce the model or choose a preset with more SRAM | pipe")


def fits(config: str, scale: float = 1.0, **kw: object) -> KPIs:
    d = dict(target="toy_cpu", config=config, model="zoo:digits_cnn", latency_s=6.66e-5 * scale,
             throughput_inf_per_s=15015.0 / scale, energy_per_inference_j=1.54e-8 * scale, power_w=2.31e-4,
             weight_memory_bytes=3932, activation_memory_bytes=1024, ops_per_inference=25600, ops_kind="MAC",
             utilization=0.962, resources={"layers": 6, "cycles": 6656, "tiles": {"used": 3, "free": 1}},
             fidelity=Fidelity("top1_agreement", 0.9972, 360), accuracy=0.978, reference_accuracy=0.981,
             layers=[LayerCost("conv1", "Conv", latency_s=4e-5 * scale, cycles=4000,
                               energy_j={"compute": 5e-9 * scale, "memory": 4e-9 * scale}, ops=16000),
                     LayerCost("fc", "Gemm", latency_s=2.66e-5 * scale, cycles=2656,
                               energy_j={"compute": 3e-9 * scale, "memory": 3.4e-9 * scale}, ops=9600)],
             bottleneck=Bottleneck("layers run one at a time; conv1 takes the longest", "MAC unit", "conv1"),
             energy_breakdown={"compute": 8e-9 * scale, "memory": 7.4e-9 * scale},
             provenance=Provenance(data={"name": "zoo:digits", "samples": 360, "calibration_samples": 90,
                                         "scored_samples": 270}),
             assumptions={"mac_pj": Assumption(0.23, "pJ", "Horowitz, ISSCC 2014")})
    d.update(kw)
    return KPIs(**d)  # type: ignore[arg-type]


def records() -> list[KPIs]:
    return [fits("toy-default"),
            KPIs.not_fitting("toy_cpu", "toy-small", "zoo:digits_cnn", [LONG, "unsupported_op at node 'lif': x"]),
            fits("toy-slow", scale=1000.0, fidelity=None, accuracy=None, resources={})]


def render(table: object, width: int = 200) -> str:
    con = Console(width=width, record=True, color_system=None)
    con.print(table)
    return con.export_text()


@pytest.mark.parametrize("value, unit, kw, text", [
    (6.66e-5, "s", {"highest": 1.0}, "66.6 µs"),
    (0.9996e-3, "s", {"highest": 1.0}, "1 ms"),
    (999.4e-6, "s", {"highest": 1.0}, "999 µs"),
    (3.2e-9, "s", {"highest": 1.0}, "3.2 ns"),
    (12.0, "s", {"highest": 1.0}, "12 s"),
    (1.54e-8, "J", {}, "15.4 nJ"),
    (2.5e-3, "J", {}, "2.5 mJ"),
    (2.31e-4, "W", {}, "231 µW"),
    (1.5, "W", {}, "1.5 W"),
    (3932, "B", {"lowest": 1.0}, "3.93 kB"),
    (4_200_000, "B", {"lowest": 1.0}, "4.2 MB"),
    (512, "B", {"lowest": 1.0}, "512 B"),
    (0, "B", {"lowest": 1.0}, "0 B"),
    (None, "s", {}, "—"),
])
def test_si_units(value: float | None, unit: str, kw: dict[str, float], text: str) -> None:
    assert report.format_si(value, unit, **kw) == text


@pytest.mark.parametrize("value, text", [(25600, "25.6k MAC"), (568_740_352, "569M MAC"), (10.46e9, "10.5G MAC"),
                                         (999, "999 MAC"), (0, "0 MAC")])
def test_counts(value: float, text: str) -> None:
    assert report.format_count(value, "MAC") == text


def test_table_has_one_column_per_target() -> None:
    recs = records()
    t = report.table(recs)
    assert len(t.columns) == 1 + len(recs)
    text = render(t)
    for needle in ("toy-default", "toy-small", "toy-slow", "66.6 µs", "66.6 ms", "15k inf/s", "15 inf/s",
                   "15.4 nJ", "15.4 µJ", "231 µW", "3.93 kB", "1.02 kB", "25.6k MAC", "96.2 %",
                   "top1_agreement=0.997", "97.8 %", "layers=6", "tiles.used=3", "does not fit", "• weight_memory"):
        assert needle in text, needle
    rows = [name for name, _ in report.rows(recs)]
    assert rows == ["fits", "violations", "latency", "throughput", "energy/inference", "  compute", "  memory", "power",
                    "weight memory", "activation memory", "ops", "utilization", "fidelity", "accuracy",
                    "reference accuracy", "samples", "bottleneck", "key resources"]
    cells = dict(report.rows(recs))
    assert cells["  compute"][0] == ["8 nJ (51.9 %)"] and cells["samples"][0] == ["90 cal. / 270 scored"]
    assert cells["reference accuracy"][0] == ["98.1 %"]
    assert cells["bottleneck"][0] == ["layers run one at a time; conv1 takes the", "longest", "layer: conv1"]


def test_rows_nobody_has_are_left_out() -> None:
    bare = fits("x", reference_accuracy=None, provenance=Provenance(), energy_breakdown={"compute": 1.54e-8})
    names = [name for name, _ in report.rows([bare])]
    assert "reference accuracy" not in names and "samples" not in names and "  memory" not in names


def test_labels_are_not_rich_markup() -> None:
    text = render(report.table([fits("imc [bold]4 cores[/bold]", model="net[/x].onnx")]))
    assert "imc [bold]4 cores[/bold]" in text and "net[/x].onnx on 1 target" in text


def test_the_violations_row_only_when_something_does_not_fit() -> None:
    assert "violations" not in [name for name, _ in report.rows([fits("a"), fits("b")])]


def test_violations_are_wrapped_and_truncated() -> None:
    many = KPIs.not_fitting("toy_cpu", "tiny", "m", [f"rule_{i}: " + "x " * 40 for i in range(10)])
    cells = dict(report.rows([many]))["violations"][0]
    assert len(cells) == report.VIOLATION_LINES
    assert all(len(line) <= report.VIOLATION_WIDTH for line in cells)
    assert cells[-1].startswith("… (") and cells[-1].endswith("more lines)")
    text = render(report.table([many]), width=120)
    assert "does not fit" in text and "rule_0" in text and "rule_9" not in text


def test_a_non_fitting_column_shows_nothing_else() -> None:
    cells = dict(report.rows(records()))
    assert all(cells[name][1] == ["—"] for name in ("latency", "power", "fidelity", "key resources"))
    assert cells["fits"] == [["yes"], ["does not fit"], ["yes"]]


def test_json_is_the_full_records_and_deterministic() -> None:
    recs = records()
    text = report.to_json(recs)
    assert text == report.to_json(records())
    data = json.loads(text)
    assert [d["config"] for d in data] == ["toy-default", "toy-small", "toy-slow"]
    assert all(list(d) == sorted(d) for d in data)
    assert [KPIs.from_json(d).dumps() for d in data] == [r.dumps() for r in recs]


def test_csv_is_one_flat_row_per_target() -> None:
    recs = records()
    text = report.to_csv(recs)
    assert text == report.to_csv(records())
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == 3
    head = text.splitlines()[0].split(",")
    assert head[:4] == ["target", "config", "model", "fits"]
    assert head[-1] == "violations"
    assert [h for h in head if h.startswith("energy_j.")] == ["energy_j.compute", "energy_j.converters",
                                                              "energy_j.memory", "energy_j.communication",
                                                              "energy_j.reprogramming", "energy_j.static"]
    assert [h for h in head if h.startswith("resources.")] == ["resources.cycles", "resources.layers",
                                                                "resources.tiles.free", "resources.tiles.used"]
    a, b, c = rows
    assert float(a["latency_s"]) == recs[0].latency_s  # exact round trip
    assert (a["fits"], a["fidelity_metric"], a["fidelity_value"], a["ops_kind"]) == \
        ("true", "top1_agreement", "0.9972", "MAC")
    assert a["resources.tiles.used"] == "3" and a["violations"] == ""
    assert (a["energy_j.compute"], a["energy_j.static"], a["bottleneck_layer"], a["scored_samples"],
            a["reference_accuracy"]) == ("8e-09", "", "conv1", "270", "0.981")
    assert b["fits"] == "false" and b["latency_s"] == ""
    assert b["violations"] == f"{LONG}; unsupported_op at node 'lif': x"
    assert c["fidelity_metric"] == "" and c["resources.layers"] == ""


def test_markdown_is_a_github_table_with_targets_as_columns() -> None:
    text = report.to_markdown(records())
    assert text == report.to_markdown(records())
    lines = text.splitlines()
    table = [line for line in lines if line.startswith("|")]
    assert table[0] == "| KPI | toy-default (toy_cpu) | toy-small (toy_cpu) | toy-slow (toy_cpu) |"
    assert table[1] == "|---|---:|---:|---:|"
    for line in table:
        # every row has exactly 4 cells: unescaped pipes only as separators
        assert len(line.replace("\\|", "").split("|")) == 6, line
    viol = next(line for line in table if line.startswith("| violations |"))
    assert "<br>" in viol and "SRAM \\|" in viol
    assert any(line.startswith("| latency | 66.6 µs | — | 66.6 ms |") for line in table)


def test_plot_writes_a_deterministic_png(tmp_path: Path) -> None:
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    report.plot(records(), a)
    report.plot(records(), b)
    assert a.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert a.read_bytes() == b.read_bytes()


def test_plot_log_scale_only_for_wide_ranges_and_hatched_non_fitting_bars() -> None:
    import matplotlib.pyplot as plt

    fig = report.figure(records())
    try:
        axes = {ax.get_title(): ax for ax in fig.axes if ax.get_title()}
        assert axes["latency (log)"].get_yscale() == "log"  # 1000× apart
        assert axes["power"].get_yscale() == "linear"
        power = axes["power"]
        hatched = [p for p in power.patches if p.get_hatch()]
        assert len(hatched) == 1  # the non-fitting target
        texts = [t.get_text() for t in power.texts]
        assert "does not fit" in texts and texts.count("231 µW\n1×") == 2
        fidelity = axes["fidelity"]
        assert "n/a" in [t.get_text() for t in fidelity.texts]  # toy-slow reported none
        lat = [t.get_text() for t in axes["latency (log)"].texts]
        assert "66.6 ms\n1000×" in lat
    finally:
        plt.close(fig)


def test_empty_and_all_failing(tmp_path: Path) -> None:
    bad = [KPIs.not_fitting("x", "only", "m", ["nope"])]
    for recs in ([], bad):
        render(report.table(recs))
        report.to_markdown(recs)
        report.to_csv(recs)
        report.plot(recs, tmp_path / "p.png")
    assert json.loads(report.to_json([])) == []


def test_the_per_layer_table_and_csv() -> None:
    rec = fits("toy-default")
    text = render(layers_table(rec))
    for needle in ("conv1", "Gemm", "40 µs", "4,000", "9 nJ", "58.4 %", "16k MAC", "total", "15.4 nJ", "100 %",
                   "bottleneck: layers run one at a time; conv1 takes the longest (layer conv1)"):
        assert needle in text, needle
    rows = list(csv.DictReader(io.StringIO(layers_csv([rec, fits("toy-slow", scale=2.0)]))))
    assert [(r["config"], r["layer"]) for r in rows] == [("toy-default", "conv1"), ("toy-default", "fc"),
                                                         ("toy-slow", "conv1"), ("toy-slow", "fc")]
    assert float(rows[0]["energy_j"]) == pytest.approx(9e-9) and rows[0]["energy_j.converters"] == ""
    assert layers_csv([rec]) == layers_csv([fits("toy-default")])


def test_the_sensitivity_table() -> None:
    rec = fits("toy-default", sensitivity={
        "energy.noc_pj_per_bit_hop": {"value": 0.5, "unit": "pJ/bit/hop", "source": "assumed: order of magnitude",
                                      "x0.5": {"value": 0.25, "latency_s": 1.0, "throughput_inf_per_s": 1.0,
                                               "energy_per_inference_j": 0.9, "power_w": 0.9},
                                      "x2": {"value": 1.0, "error": "out of range"}}})
    text = render(sensitivity_table(rec), width=240)
    assert "energy.noc_pj_per_bit_hop" in text and "0.5 pJ/bit/hop" in text and "0.9× → n/a" in text
    assert "assumed: order of magnitude" in text
