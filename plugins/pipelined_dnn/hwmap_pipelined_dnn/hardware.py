"""The pipelined dataflow architecture's description: the TOML schema of a ``pipelined_dnn`` config.

One engine per layer, chained by FIFOs (chapter Section 3.5, Fig. 3.20; DNeuro in N2D2,
FINN, hls4ml): the config gives the budgets the engines share (multiply units, on-chip
memory bytes and, optionally, memory blocks), the number formats, the external memory and
the energy of each kind of operation.

Every field is declared with :func:`hwmap.constant`, with the unit and the source of its
default, so ``hwmap schema pipelined_dnn`` and the KPI record's ``assumptions`` say where
each number comes from. The works cited:

* Horowitz — M. Horowitz, "Computing's energy problem (and what we can do about it)",
  ISSCC 2014 (45 nm: 8-bit multiply 0.2 pJ, 8-bit add 0.03 pJ, 10 pJ per 64-bit read of an
  8 KB SRAM, 1.3–2.6 nJ per 64-bit DRAM access);
* UG573 — Xilinx, "UltraScale Architecture Memory Resources", UG573: a block RAM holds
  36 Kb as two independent 18 Kb RAMB18 blocks, each configurable 16K×1 ... 512×36;
* DS891 — Xilinx, "Zynq UltraScale+ MPSoC Data Sheet: Overview", DS891 (ZU9EG: 2,520 DSP
  slices, 32.1 Mb of block RAM);
* JESD79-4 — JEDEC DDR4 SDRAM standard: DDR4-2400 on a 64-bit bus moves 19.2 GB/s;
* hls4ml — Duarte et al., "Fast inference of deep neural networks in FPGAs for particle
  physics", JINST 13 P07027, 2018, and its documentation (``io_stream``: one pixel, all its
  channels, per transfer);
* FINN — Umuroglu et al., "FINN: A Framework for Fast, Scalable Binarized Neural Network
  Inference", FPGA 2017; Blott et al., "FINN-R", ACM TRETS 11(3), 2018.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from hwmap import ConfigSection, TargetConfig, constant

__all__ = ["HardwareConfig", "EnergyConfig", "TunerConfig", "PipelinedConfig", "HOROWITZ", "UG573", "CHAPTER",
           "FINN", "HLS4ML", "DNEURO"]

HOROWITZ = "Horowitz, ISSCC 2014, 45 nm"
UG573 = "Xilinx UG573 (UltraScale memory resources): RAMB18 = 18 Kb"
CHAPTER = "the chapter (ANDANTE, Section 3.5, Fig. 3.20)"
FINN = "FINN (Umuroglu et al., FPGA 2017; Blott et al., TRETS 2018)"
HLS4ML = "hls4ml (Duarte et al., JINST 2018)"
DNEURO = "N2D2 DNeuro (CEA, N2D2 documentation, 'Export: DNeuro')"


class HardwareConfig(ConfigSection):
    clock_hz: float = constant(200e6, "Hz", f"assumed: 200 MHz, the clock of the DNeuro MobileNet demo ({DNEURO}) and "
                               "a usual FPGA fabric clock for DSP datapaths", gt=0, le=5e9,
                               description="clock of every engine of the pipeline")
    multipliers: int = constant(1024, "", "assumed: a mid-size FPGA's DSP budget (DS891: the ZU9EG has 2,520 DSP "
                                "slices), of the order the issue's benchmark uses", ge=1, le=1 << 22,
                                description="budget of multiply units shared by all engines (one MAC per unit "
                                            "per cycle)")
    onchip_memory_bytes: int = constant(4 * 2**20, "B", "DS891: ZU9EG, 32.1 Mb of block RAM (~4 MiB)", ge=0,
                                        le=1 << 40, description="on-chip memory for weights, line buffers and FIFOs")
    memory_blocks: int = constant(0, "", "assumed: 0 = memory blocks are not budgeted (one resource: the exact tuner)",
                                  ge=0, le=1 << 24,
                                  description="budget of on-chip memory blocks (a second resource: weight memories "
                                              "split into banks by the parallelism); 0 = not a constraint")
    memory_block_bits: int = constant(18432, "bit", f"{UG573}: one RAMB18 holds 18 Kb", ge=64, le=1 << 24,
                                      description="bits of one memory block")
    weight_bits: int = constant(8, "bit", f"assumed: 8-bit weights, DNeuro's typical precision ({DNEURO}: 'integers "
                                "from 2 to 16 bits, typically 8 bits')", ge=2, le=16,
                                description="weight precision (fixed point, power-of-two scale per output channel)")
    activation_bits: int = constant(8, "bit", f"assumed: 8-bit activations, DNeuro's typical precision ({DNEURO})",
                                    ge=2, le=16, description="activation precision (fixed point, power-of-two scale)")
    accumulator_bits: int = constant(32, "bit", "assumed: a 32-bit accumulator, wide enough for 2^16 products of "
                                     "8-bit operands; biases are stored at this width", ge=16, le=48,
                                     description="accumulator width; biases are quantized to it")
    external_bandwidth_bytes_per_s: float = constant(19.2e9, "B/s", "JESD79-4: DDR4-2400 on a 64-bit bus, "
                                                     "2400 MT/s × 8 B", ge=0, le=1e13,
                                                     description="external memory bandwidth for streamed weights "
                                                                 "(0: no external memory)")
    external_memory_bytes: int = constant(2 * 2**30, "B", "assumed: 2 GiB, the DDR4 of a mid-range FPGA board",
                                          ge=0, le=1 << 44, description="external memory capacity for weights that "
                                                                        "do not fit on chip")
    input_pixels_per_cycle: int = constant(1, "", f"{HLS4ML} io_stream: one pixel, all its channels, per transfer",
                                           ge=1, le=4096, description="pixels the input interface delivers per cycle")


class EnergyConfig(ConfigSection):
    mac_pj: float = constant(0.23, "pJ", f"{HOROWITZ}: 8-bit multiply 0.2 pJ + 8-bit add 0.03 pJ", ge=0, le=1e6,
                             description="energy of one MAC at the configured bit widths")
    onchip_pj_per_bit: float = constant(0.156, "pJ", f"{HOROWITZ}: 10 pJ per 64-bit read of an 8 KB SRAM", ge=0,
                                        le=1e6, description="energy of one on-chip memory access, per bit")
    external_pj_per_bit: float = constant(20.3, "pJ", f"{HOROWITZ}: DRAM 1.3 nJ per 64-bit access (the low end of "
                                          "1.3–2.6 nJ)", ge=0, le=1e6,
                                          description="energy of one external memory access, per bit")
    static_w: float = constant(0.0, "W", "assumed: static power not modelled (0 W); set it for the device at hand",
                               ge=0, le=1e4, description="static power of the device, charged per inference")


class TunerConfig(ConfigSection):
    target_fps: float = constant(0.0, "1/s", "hwmap pipelined_dnn convention: 0 = as fast as the budgets allow",
                                 ge=0, le=1e9, description="frame rate to meet with the cheapest configuration; "
                                                           "0 maximizes throughput within the budgets")
    min_fifo_depth: int = constant(2, "", f"assumed: 2 entries, the smallest FIFO that lets producer and consumer "
                                   f"overlap ({FINN} inserts FIFOs of at least 2)", ge=1, le=1 << 20,
                                   description="smallest FIFO depth between two engines, in pixels")
    sim_frames: int = constant(4, "", "assumed: 4 frames are enough to reach the steady state the initiation "
                               "interval is measured in (the last two frames)", ge=3, le=64,
                               description="frames pushed through the cycle simulation")


class PipelinedConfig(TargetConfig):
    hardware: HardwareConfig = Field(default_factory=HardwareConfig)
    energy: EnergyConfig = Field(default_factory=EnergyConfig)
    tuner: TunerConfig = Field(default_factory=TunerConfig)

    @model_validator(mode="after")
    def _external_memory(self) -> "PipelinedConfig":
        hw = self.hardware
        if (hw.external_bandwidth_bytes_per_s > 0) != (hw.external_memory_bytes > 0):
            raise ValueError("hardware.external_bandwidth_bytes_per_s and hardware.external_memory_bytes must both "
                             "be 0 (no external memory) or both positive")
        return self
