"""What an analog IMC estimate rests on: every config constant and every model, with sources.

:func:`assumptions` is the KPI record's ``assumptions``: ``target.constants()`` (each config
value with its unit and the source its preset, ``--set`` or the schema default gave it),
then each part of the analytic model in words (``model.*``) citing where it comes from (the
paper it follows, the chapter, or "hwmap analytic model" and why), then the facts of this
run (calibration, whether activity was measured, buffer warnings, mapping notes).
"""

from __future__ import annotations

from typing import Any

from hwmap import Assumption, Target

from .hardware import AnalogIMCConfig
from .legalize import META_KEY, SYNTHETIC_NOTE

__all__ = ["assumptions", "ISAAC_PAPER", "PUMA_PAPER", "MODEL"]

ISAAC_PAPER = "Shafiee et al., ISCA 2016 (ISAAC)"
PUMA_PAPER = "Ankit et al., ASPLOS 2019 (PUMA)"
#: Source of what this plugin derives itself.
MODEL = "hwmap analog_imc analytic model"
_SIM = "hwmap analog_imc simulator (program.bin read back from disk)"


def _models(planes: int) -> dict[str, Assumption]:
    """The analytic model's parts in words (see :mod:`.estimate`'s docstring for the equations)."""
    return {
        "model.counts": Assumption(
            "blocks of one layer copy sharing word lines (cycle, core, group, row tile, element row) are read "
            "together; per read: its rows DAC conversions, its used columns ADC conversions, rows × columns cell "
            f"reads; reads = positions × {planes} input bit-plane(s) (ceil(input_bits / dac_bits))", "",
            f"{MODEL}: counts of the mapping's blocks, read as the emitter's READ instructions group them; "
            f"bit-serial inputs as {ISAAC_PAPER} streams them"),
        "model.read_time": Assumption(
            "the DACs' settling + read_pulse_s + (most of a read's columns one ADC converts) × one conversion at "
            "adc_bits; columns_per_adc neighbouring columns share an ADC; a core performs one read at a time", "",
            f"{ISAAC_PAPER} and {PUMA_PAPER}: ADCs time-multiplexed over their columns, ~100 ns per 128-column read"),
        "model.converters": Assumption(
            "ADC energy per conversion = max(adc_pj_per_conversion × 2^(adc_bits − adc_reference_bits), "
            "10^((6.02·adc_bits + 1.76 − adc_fom_s_db)/10) / 2): the Walden bound of the reference converter, "
            "then the thermal-noise (Schreier) bound, 4× per bit; SAR conversion time adc_conversion_s × "
            "(adc_bits + 1) / (adc_reference_bits + 1); DAC energy dac_pj_per_input × 2^(dac_bits − "
            "dac_reference_bits) (binary-weighted), settling dac_settle_s × (dac_bits + 1) / "
            "(dac_reference_bits + 1) (to half an LSB); resolution taken as ENOB", "",
            "Walden, IEEE JSAC 1999 (FoM_W); Schreier & Temes 2005 (FoM_S); Murmann's ADC performance survey; "
            "Saberi et al., IEEE TCAS-I 2011 (capacitive DAC energy)"),
        "model.latency": Assumption(
            "blocks of a layer on different cores run in parallel; a layer's time on a core is the largest of its "
            "reads, link serialization and digital work, plus hop latency; within a computation cycle a node starts "
            "when its inputs' line-buffer share exists and its core is free (layers on distinct cores pipeline, on "
            "one core they run in turn); with several cycles each is preceded by programming its rows "
            "(program_row_s per row, cores in parallel)", "",
            f"{MODEL}: the mapping's dataflow, layers pipelined through line buffers as in {ISAAC_PAPER}'s "
            "inter-layer pipeline; computation cycles and reprogramming from the chapter, Section 3.4.5"),
        "model.throughput": Assumption(
            "one computation cycle: steady state, 1 / the busiest core's crossbar, logic or link time; several: "
            "batch / latency (every batch of schedule.batch inferences reprograms every cycle; within a cycle the "
            "batch's inferences follow one another at the cycle's initiation interval)", "",
            f"{MODEL}: a pipeline runs at the pace of its busiest stage; nothing overlaps a reprogramming "
            "(the chapter, Section 3.4.5: a new computation cycle reprograms the cores)"),
        "model.energy": Assumption(
            "ADC conversions, DAC conversions, cell reads, buffer bits (input vector read and output written per "
            "position, digital nodes' tensors once), NoC bits × hops, digital ops (shift-add per conversion, partial "
            "sums, bias/post-ops/re-quantization per output), programming (several cycles), each times its energy "
            "constant, plus static energy; energy_breakdown: converters = ADC + DAC, compute = cell reads + digital "
            "ops, memory = buffers, communication = NoC, reprogramming = programming, static", "",
            f"{MODEL}: event counts × the per-event energies of [energy] (each constant's source is listed with it)"),
        "model.static": Assumption(
            "static energy per inference = (static_w_per_core + buffer_leakage_w_per_mbit × the buffers' Mibit) × "
            "cores used / throughput, so power = energy × throughput includes leakage; a layer's share is its busy "
            "time over all layers' busy time", "",
            f"{MODEL}: static power over the time one inference occupies the chip"),
        "model.programming": Assumption(
            "several computation cycles: all used cells reprogrammed once per batch of schedule.batch inferences "
            "(1 / batch of them per inference; the simulator's count where it ran), in the energy and latency; one "
            "cycle: a one-time cost (resources.programming_one_time_j), not per inference", "",
            f"the chapter, Section 3.4.5 (a new computation cycle reprograms the weights); batches ({MODEL})"),
        "model.noc": Assumption(
            "the emitter's transfers on an XY-routed mesh: filters whose row tiles sit on several cores send partial "
            "sums of input_bits + weight_bits + max(1, ceil(log2 rows)) + 1 bits to the core accumulating them, every "
            "other copy finishes its outputs (post-ops, re-quantization) on its own core; each core reading a tensor "
            "receives only the part it reads (a copy: its input rows) from the cores holding it, at the tensor's bits; "
            "time bits / (link_width_bits × clock_hz) + hops × hop_latency_cycles / clock_hz", "",
            f"{MODEL}: the NOC records of the emitted program (both use dataflow.plan_transfers)"),
        "model.digital_lanes": Assumption("one digital lane per ADC on each core, one op per lane per clock", "",
                                          "assumed: the digital logic is as wide as the ADC read-out feeding it"),
        "model.layers": Assumption(
            "one entry per node of the legalized graph that costs something (crossbar layers, fused groups, digital "
            "nodes); latency_s is the node's own busy time (its slowest core, summed over cycles): nodes overlap in "
            "the pipeline, so the layers' times add up to more than the latency; energy_j splits the node's events by "
            "kind, every event counted on one node", "", f"{MODEL}"),
        "model.activation_memory": Assumption(
            "the largest input + output working set over (cycle, core): a convolution's line buffer ((K_h−1)·W + K_w) "
            "input vectors, a fully connected layer's input vector, in the share of rows the core holds, plus one "
            "output vector of the filters it holds", "",
            f"{MODEL}: line buffers as {ISAAC_PAPER}'s inter-layer pipeline needs them"),
    }


def _calibration(meta: dict[str, Any]) -> Assumption:
    calib = meta.get(META_KEY, {}).get("calibration", {})
    source = ("hwmap analog_imc legalization: minimum-MSE activation clipping and bias correction (Nagel et al., "
              "'A White Paper on Neural Network Quantization', arXiv 2106.08295)")
    if calib.get("source") == "synthetic":
        return Assumption(f"{SYNTHETIC_NOTE} ({calib.get('samples')} seeded samples)", "", source)
    if calib.get("source") == "data":
        return Assumption(f"activation scales calibrated (minimum-MSE clipping) and {calib.get('bias_corrected', 0)} "
                          f"layers' biases corrected for weight rounding on {calib.get('samples')} samples of --data",
                          "", source)
    return Assumption("quantization carried by the model", "", "the model's own quantization annotations (QDQ, QONNX)")


def assumptions(target: Target, planes: int, meta: dict[str, Any], activity: dict[str, Any] | None,
                buffer_need: tuple[int, int], notes: list[str]) -> dict[str, Assumption]:
    """The record's ``assumptions``: the config's constants, the models, and this run's facts.

    ``planes``: input bit-planes per read; ``meta``: the legalized graph's ``meta`` (its
    calibration); ``buffer_need``: the busiest core's input and output working sets (bytes);
    ``notes``: the mapping's notes."""
    cfg = target.config_as(AnalogIMCConfig)
    hw = cfg.hardware
    out: dict[str, Assumption] = dict(target.constants())
    out.update(_models(planes))
    out["calibration"] = _calibration(meta)
    samples = (activity or {}).get("samples")
    if activity:
        out["activity"] = Assumption(
            f"measured by the simulator on {samples} samples: MVMs, ADC and DAC conversions, NoC bits; the simulator's "
            "own cycle times (slowest core's reads plus serial transfers, no pipelining) are in "
            "resources.simulator_cycle_time_s, the latency stays this model's", "", _SIM)
        out["model.inputs"] = Assumption(
            "energy_per_inference_j and power_w are modelled from the simulator's measured event counts (ADC and DAC "
            "conversions, cell reads in proportion to the DAC conversions, NoC bits); latency_s and throughput from "
            "the measured MVMs per layer; ops_per_inference is the measured MVMs' MACs", "", _SIM)
    else:
        out["activity"] = Assumption("analytic (no --data)", "", f"{MODEL}: counts of the mapping")
        out["model.inputs"] = Assumption("every figure is modelled or counted from the mapping (no simulation)", "",
                                         f"{MODEL}: counts of the mapping")
    in_need, out_need = buffer_need
    if in_need > hw.input_buffer_bytes or out_need > hw.output_buffer_bytes:
        out["warning.buffers"] = Assumption(
            f"working sets of {in_need} B input / {out_need} B output on the busiest core exceed the "
            f"{hw.input_buffer_bytes} B / {hw.output_buffer_bytes} B buffers: inputs are re-fetched over the NoC "
            "(not modelled)", "", f"{MODEL}: line-buffer working sets against hardware.input/output_buffer_bytes")
    if notes:
        out["notes"] = Assumption(list(notes), "", "hwmap analog_imc legalization and mapper (mapping.json notes)")
    return out
