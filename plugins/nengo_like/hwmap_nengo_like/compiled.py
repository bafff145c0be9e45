"""The compiled step of a population: its input current and its neuron update through the
numba loops of :mod:`.kernels`, bit-identical to the numpy path (``NeuronType.step`` on the
current the simulator builds with numpy; :mod:`.simulator`, ``backend="numpy"``), which stays
the reference.

:func:`stepper` picks one per population: LIF, SpikingRectifiedLinear, RectifiedLinear and
LIFRate in compiled loops (numpy evaluating only the ``expm1`` / ``log1p`` of the neurons that
need one, see :mod:`.kernels`); the wrappers with their base type's rate computed so (the base
types without a compiled loop, Sigmoid and Tanh, by their numpy step on the compiled
current), RegularSpiking's spikes compiled, PoissonSpiking's and StochasticSpiking's by
their numpy code (their draws come from the population's ``RandomState``, in numpy's order);
any other type by its numpy step on the compiled current. A stepper's buffers are allocated
once; the first call of each loop compiles it (cached on disk by numba), which
:func:`warm_up` does before a run is timed.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from . import kernels as K
from .description import Population
from .neurons import (LIF, LIFRate, NeuronType, RatesToSpikesNeuronType, RectifiedLinear, RegularSpiking,
                      SpikingRectifiedLinear)
from .synapses import FilterStep

__all__ = ["Stepper", "stepper", "filter_step", "warm_up", "NONE"]

#: The array passed for an input a population does not have (numba needs an array of that type).
NONE = np.zeros(0)


class Stepper(ABC):
    """One population's step: ``step(dt, x, nin, out, state)`` with ``x`` its decoded input
    (``mode`` 1: ``(batch,)``; 2: already projected on the encoders, flat), ``nin`` its input
    into the neurons (flat; :data:`NONE` without), ``out`` its output (flat, written)."""

    def __init__(self, neuron: NeuronType, pop: Population, batch: int, has_n: bool) -> None:
        self.neuron, self.n, self.size = neuron, pop.n, batch * pop.n
        self.mode = 0 if pop.dims == 0 else 1 if pop.dims == 1 else 2
        self.e = np.ascontiguousarray(pop.encoders[:, 0], np.float64) if self.mode == 1 else NONE
        self.bias = np.ascontiguousarray(pop.bias, np.float64)
        self.gain = np.ascontiguousarray(pop.gain, np.float64)
        self.has_n = int(has_n)
        self.J = np.zeros(self.size)
        self.views: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def flat(self, state: dict[str, Any], key: str) -> np.ndarray:
        """The state array ``key`` as a flat view (remembered: the simulator keeps its state
        arrays and updates them in place)."""
        a = state[key]
        hit = self.views.get(key)
        if hit is not None and hit[0] is a:
            return hit[1]
        if not (isinstance(a, np.ndarray) and a.dtype == np.float64 and a.flags.c_contiguous and a.size == self.size):
            raise ValueError(f"state {key!r} must be a C-contiguous float64 array of {self.size} for the compiled step")
        self.views[key] = (a, a.reshape(-1))
        return self.views[key][1]

    def inputs(self, x: np.ndarray, nin: np.ndarray) -> tuple[Any, ...]:
        """The arguments of :func:`.kernels.current` before ``J``."""
        return self.n, self.mode, x, self.e, self.bias, self.has_n, self.gain, nin

    @abstractmethod
    def step(self, dt: float, x: np.ndarray, nin: np.ndarray, out: np.ndarray, state: dict[str, Any]) -> None:
        """Advance one step: ``out`` and ``state`` updated in place."""


class _OnCurrent(Stepper):
    """A type stepped on the current computed by its own call (:func:`.kernels.current`)."""

    def step(self, dt: float, x: np.ndarray, nin: np.ndarray, out: np.ndarray, state: dict[str, Any]) -> None:
        K.current(*self.inputs(x, nin), self.J)
        self.update(dt, self.J, out, state)

    @abstractmethod
    def update(self, dt: float, J: np.ndarray, out: np.ndarray, state: dict[str, Any]) -> None:
        """The neuron type's step on the current ``J``."""


class _Numpy(_OnCurrent):
    """Any type: its own numpy step on the compiled current."""

    def update(self, dt: float, J: np.ndarray, out: np.ndarray, state: dict[str, Any]) -> None:
        shape = (self.size // self.n, self.n)
        self.neuron.step(dt, J.reshape(shape), out.reshape(shape), **state)


class _Relu(_OnCurrent):
    def update(self, dt: float, J: np.ndarray, out: np.ndarray, state: dict[str, Any]) -> None:
        K.relu_rate(J, out, self.neuron.amplitude)  # type: ignore[attr-defined]


class _LIFRate(_OnCurrent):
    def __init__(self, neuron: NeuronType, pop: Population, batch: int, has_n: bool) -> None:
        super().__init__(neuron, pop, batch, has_n)
        self.idx, self.arg = np.zeros(self.size, np.int64), np.zeros(self.size)

    def update(self, dt: float, J: np.ndarray, out: np.ndarray, state: dict[str, Any]) -> None:
        nt: Any = self.neuron
        npos = K.lifrate_a(J, out, self.idx, self.arg)
        if npos:
            K.lifrate_b(npos, self.idx, np.log1p(self.arg[:npos]), out, nt.amplitude, nt.tau_ref, nt.tau_rc)


class _SpikingRelu(_OnCurrent):
    def update(self, dt: float, J: np.ndarray, out: np.ndarray, state: dict[str, Any]) -> None:
        amp_dt = self.neuron.amplitude / dt  # type: ignore[attr-defined]
        K.spiking_relu(J, self.flat(state, "voltage"), out, dt, amp_dt)


class _LIF(Stepper):
    """LIF in three compiled phases around numpy's ``expm1`` (of the neurons refractory during
    part of the step) and ``log1p`` (the spike times of the neurons that spiked)."""

    def __init__(self, neuron: NeuronType, pop: Population, batch: int, has_n: bool) -> None:
        super().__init__(neuron, pop, batch, has_n)
        self.part_idx, self.part_arg = np.zeros(self.size, np.int64), np.zeros(self.size)
        self.spk_idx, self.spk_arg = np.zeros(self.size, np.int64), np.zeros(self.size)
        self.mask = np.zeros(self.size, np.uint8)
        self.consts: dict[float, tuple[float, float]] = {}

    def _consts(self, dt: float) -> tuple[float, float]:
        """``expm1(-delta_t/tau_rc)`` for ``delta_t = dt`` and ``0``, by numpy as the numpy step has them."""
        if dt not in self.consts:
            tau_rc = self.neuron.tau_rc  # type: ignore[attr-defined]
            self.consts[dt] = (float(np.expm1(-np.array([dt]) / tau_rc)[0]),
                               float(np.expm1(-np.array([0.0]) / tau_rc)[0]))
        return self.consts[dt]

    def step(self, dt: float, x: np.ndarray, nin: np.ndarray, out: np.ndarray, state: dict[str, Any]) -> None:
        """The current computed by the first phase's call (one call less per step)."""
        nt: Any = self.neuron
        J = self.J
        v, rt = self.flat(state, "voltage"), self.flat(state, "refractory_time")
        amp_dt = nt.amplitude / dt
        c_dt, c_0 = self._consts(dt)
        npart, ns = K.lif_a(*self.inputs(x, nin), J, v, rt, out, dt, nt.tau_rc, amp_dt, nt.min_voltage, c_dt, c_0,
                            self.mask, self.part_idx, self.part_arg, self.spk_idx, self.spk_arg)
        if npart:
            ns = K.lif_b(npart, self.part_idx, np.expm1(self.part_arg[:npart]), J, v, out, amp_dt, nt.min_voltage,
                         self.spk_idx, self.spk_arg, ns)
        if ns:
            K.lif_c(ns, self.spk_idx, np.log1p(self.spk_arg[:ns]), rt, dt, nt.tau_rc, nt.tau_ref)


def _rate_stepper(base: NeuronType, pop: Population, batch: int, has_n: bool) -> _OnCurrent:
    if type(base) is RectifiedLinear:
        return _Relu(base, pop, batch, has_n)
    if type(base) is LIFRate:
        return _LIFRate(base, pop, batch, has_n)
    return _Numpy(base, pop, batch, has_n)


class _Wrapper(_OnCurrent):
    """A rate-to-spike wrapper: the base type's rate (compiled where it can be), then the spikes
    (RegularSpiking compiled; the random wrappers by their numpy code and generator)."""

    def __init__(self, neuron: NeuronType, pop: Population, batch: int, has_n: bool) -> None:
        super().__init__(neuron, pop, batch, has_n)
        assert isinstance(neuron, RatesToSpikesNeuronType)
        self.base = _rate_stepper(neuron.base_type, pop, batch, has_n)
        self.rate = np.zeros(self.size)

    def update(self, dt: float, J: np.ndarray, out: np.ndarray, state: dict[str, Any]) -> None:
        nt: Any = self.neuron
        self.base.update(dt, J, self.rate, state.get("base_state", {}))
        own = {k: v for k, v in state.items() if k != "base_state"}
        if type(nt) is RegularSpiking:
            K.regular(self.rate, self.flat(own, "voltage"), out, dt, nt.amplitude / dt)
        else:
            shape = (self.size // self.n, self.n)
            nt.spikes(dt, self.rate.reshape(shape), out.reshape(shape), **own)


def stepper(neuron: NeuronType, pop: Population, batch: int, has_n: bool) -> Stepper:
    """The compiled step of population ``pop`` (its type ``neuron``; ``has_n``: it has
    connections into its neurons) on ``batch`` samples."""
    if type(neuron) is LIF:
        return _LIF(neuron, pop, batch, has_n)
    if type(neuron) is SpikingRectifiedLinear:
        return _SpikingRelu(neuron, pop, batch, has_n)
    if isinstance(neuron, RatesToSpikesNeuronType):
        return _Wrapper(neuron, pop, batch, has_n)
    if not neuron.spiking:
        return _rate_stepper(neuron, pop, batch, has_n)
    return _Numpy(neuron, pop, batch, has_n)


def filter_step(f: FilterStep, u: np.ndarray) -> np.ndarray:
    """``f(u)``, the first-order filters without feed-through (Lowpass) compiled."""
    if f.kind == "onex" and u.flags.c_contiguous and u.dtype == np.float64:
        K.lowpass(f.X.reshape(-1), u.reshape(-1), f.a, f.b)
        return f.X[0]
    return f(u)


_WARM: list[bool] = []


def warm_up() -> None:
    """Compile (or load from numba's cache) every loop once, on a two-neuron population, so
    that no run pays for it."""
    if _WARM:
        return
    two = np.full(2, 5.0)
    for dims, has_n in ((0, True), (1, False), (2, False)):
        pop = Population("warm", 2, dims, {}, two, two, np.ones((2, dims)))
        x = np.zeros(1 if dims == 1 else 2) if dims else NONE
        nin = np.zeros(2) if has_n else NONE
        for nt in (LIF(), SpikingRectifiedLinear(), RectifiedLinear(), LIFRate(), RegularSpiking(LIFRate())):
            # one neuron spiking, one refractory for half the step: every phase runs
            st = {"voltage": np.array([[2.0, 0.5]]), "refractory_time": np.array([[0.0, 0.0015]])}
            stepper(nt, pop, 1, has_n).step(0.001, x, nin, np.zeros(2), st)
    f = FilterStep(np.array([[0.5]]), np.array([[1.0]]), np.array([[0.5]]), np.zeros((1, 1)), (1, 1))
    filter_step(f, np.ones((1, 1)))
    _WARM.append(True)
