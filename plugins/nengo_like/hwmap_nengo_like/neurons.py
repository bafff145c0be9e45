"""Neuron models with nengo's semantics (nengo 4.1, ``nengo/neurons.py``; Bekolay et al.,
"Nengo: a Python tool for building large-scale functional brain models", Front.
Neuroinform. 7:48, 2014; Eliasmith and Anderson, *Neural Engineering*, MIT Press, 2003).

Rate types: :class:`LIFRate`, :class:`RectifiedLinear`, :class:`Sigmoid`, :class:`Tanh`.
Spiking types: :class:`LIF` (refractory period, sub-step spike timing: the time a spike
crossed the threshold within the step shortens the next refractory period) and
:class:`SpikingRectifiedLinear`. Wrappers turning any rate type into a spiking one:
:class:`RegularSpiking`, :class:`PoissonSpiking`, :class:`StochasticSpiking`: the base
type's rate ``r`` becomes spikes of amplitude ``amplitude/dt``, several per step when
``r·dt > 1``, negative where the base rate is negative (Tanh).

Every type computes ``gain`` and ``bias`` from maximum rates and intercepts with nengo's
closed forms, the inverse (``max_rates_intercepts``), ``rates(x, gain, bias)`` (the tuning
curve) and ``step(dt, J, output, **state)``, which updates ``output`` and the state arrays
in place. ``step`` works element-wise on arrays of any shape, so the simulator runs a whole
batch of samples at once. ``spec()`` / :func:`from_spec` carry a type through the emitted
network description (JSON).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from .dists import Choice, Uniform, get_samples

__all__ = ["NeuronType", "RectifiedLinear", "SpikingRectifiedLinear", "Sigmoid", "Tanh", "LIFRate", "LIF",
           "RatesToSpikesNeuronType", "RegularSpiking", "PoissonSpiking", "StochasticSpiking", "from_spec",
           "NEURON_TYPES"]


class NeuronType(ABC):
    """Base of the neuron models. ``state``: the state variables and the distributions their
    initial values are drawn from (``initial_state`` overrides them by name)."""

    state: dict[str, Any] = {}
    spiking = False
    negative = True

    def __init__(self, initial_state: dict[str, Any] | None = None) -> None:
        self.initial_state = dict(initial_state) if initial_state else None
        for name in self.initial_state or {}:
            if name not in self.state:
                raise ValueError(f"{type(self).__name__}: initial_state names {name!r}, which is not one of its "
                                 f"state variables ({', '.join(self.state) or 'none'})")

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._params().items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.spec() == other.spec()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash(repr(self))

    def _params(self) -> dict[str, Any]:
        return {}

    def spec(self) -> dict[str, Any]:
        """The type and its parameters as JSON."""
        return {"type": type(self).__name__, **self._params()}

    def current(self, x: Any, gain: Any, bias: Any) -> np.ndarray:
        """``gain * x + bias``, ``x`` already projected on the encoders (samples × neurons)."""
        x = np.asarray(np.atleast_1d(x), dtype=float)
        gain = np.asarray(np.atleast_1d(gain), dtype=float)
        bias = np.asarray(np.atleast_1d(bias), dtype=float)
        if x.ndim == 1:
            x = x[:, np.newaxis]
        elif x.ndim >= 3 or x.shape[1] != gain.shape[0]:
            raise ValueError(f"{type(self).__name__}.current: expected x of shape {(x.shape[0], gain.shape[0])}, "
                             f"got {x.shape}")
        return gain * x + bias

    @abstractmethod
    def gain_bias(self, max_rates: Any, intercepts: Any) -> tuple[np.ndarray, np.ndarray]:
        """Gain and bias giving each neuron its maximum rate (at ``x = 1``) and intercept."""

    @abstractmethod
    def max_rates_intercepts(self, gain: Any, bias: Any) -> tuple[np.ndarray, np.ndarray]:
        """The inverse of :meth:`gain_bias`."""

    def rates(self, x: Any, gain: Any, bias: Any) -> np.ndarray:
        """Firing rates (Hz) for inputs ``x`` (the tuning curves): one step of the rate
        equation with ``dt = 1``."""
        J = self.current(x, gain, bias)
        out = np.zeros_like(J)
        self.step(1.0, J, out)
        return out

    def make_state(self, n_neurons: int, rng: Any = np.random, dtype: Any = None) -> dict[str, Any]:
        """Initial state, drawn from ``rng`` in the order of ``state`` (as nengo draws it)."""
        dtype = np.float64 if dtype is None else dtype
        given = self.initial_state or {}
        return {name: np.asarray(get_samples(given.get(name, default), n_neurons, None, rng), dtype=dtype)
                for name, default in self.state.items()}

    @abstractmethod
    def step(self, dt: float, J: np.ndarray, output: np.ndarray, **state: Any) -> None:
        """One step of ``dt`` on the input current ``J``: ``output`` and the state arrays
        updated in place."""


def _check_below(max_rates: np.ndarray, inv_tau_ref: float, who: str) -> None:
    if not np.all(max_rates < inv_tau_ref):
        raise ValueError(f"{who}: max rates must be below the inverse refractory period ({inv_tau_ref:0.3f})")


class RectifiedLinear(NeuronType):
    """``amplitude * max(0, J)``."""

    negative = False

    def __init__(self, amplitude: float = 1, initial_state: dict[str, Any] | None = None) -> None:
        super().__init__(initial_state)
        if not amplitude > 0:
            raise ValueError(f"{type(self).__name__}: amplitude = {amplitude!r} must be positive")
        self.amplitude = float(amplitude)

    def _params(self) -> dict[str, Any]:
        return {"amplitude": self.amplitude}

    def gain_bias(self, max_rates: Any, intercepts: Any) -> tuple[np.ndarray, np.ndarray]:
        max_rates = np.asarray(np.atleast_1d(max_rates), dtype=float)
        intercepts = np.asarray(np.atleast_1d(intercepts), dtype=float)
        gain = max_rates / (1 - intercepts)
        return gain, -intercepts * gain

    def max_rates_intercepts(self, gain: Any, bias: Any) -> tuple[np.ndarray, np.ndarray]:
        intercepts = -np.asarray(bias) / np.asarray(gain)
        return np.asarray(gain) * (1 - intercepts), intercepts

    def step(self, dt: float, J: np.ndarray, output: np.ndarray, **state: Any) -> None:
        output[...] = self.amplitude * np.maximum(0.0, J)


class SpikingRectifiedLinear(RectifiedLinear):
    """Integrate-and-fire with the rectified-linear rate: ``v += max(J, 0)·dt``, ``floor(v)``
    spikes of ``amplitude/dt``, ``v -= floor(v)``."""

    state = {"voltage": Uniform(low=0, high=1)}
    spiking = True

    def rates(self, x: Any, gain: Any, bias: Any) -> np.ndarray:
        J = self.current(x, gain, bias)
        out = np.zeros_like(J)
        RectifiedLinear.step(self, 1.0, J, out)
        return out

    def step(self, dt: float, J: np.ndarray, output: np.ndarray, voltage: np.ndarray,  # type: ignore[override]
             **state: Any) -> None:
        voltage += np.maximum(J, 0) * dt
        n_spikes = np.floor(voltage)
        output[...] = (self.amplitude / dt) * n_spikes
        voltage -= n_spikes


class _Saturating(NeuronType):
    """Sigmoid and Tanh: rate types saturating at ``1/tau_ref``."""

    def __init__(self, tau_ref: float = 0.0025, initial_state: dict[str, Any] | None = None) -> None:
        super().__init__(initial_state)
        if not tau_ref > 0:
            raise ValueError(f"{type(self).__name__}: tau_ref = {tau_ref!r} must be positive")
        self.tau_ref = float(tau_ref)

    def _params(self) -> dict[str, Any]:
        return {"tau_ref": self.tau_ref}


class Sigmoid(_Saturating):
    """``(1/tau_ref) / (1 + exp(-J))``; the intercept is the inflection point."""

    negative = False

    def gain_bias(self, max_rates: Any, intercepts: Any) -> tuple[np.ndarray, np.ndarray]:
        max_rates = np.asarray(np.atleast_1d(max_rates), dtype=float)
        intercepts = np.asarray(np.atleast_1d(intercepts), dtype=float)
        inv_tau_ref = 1.0 / self.tau_ref
        _check_below(max_rates, inv_tau_ref, "Sigmoid")
        inverse = -np.log(inv_tau_ref / max_rates - 1.0)
        gain = inverse / (1.0 - intercepts)
        return gain, inverse - gain

    def max_rates_intercepts(self, gain: Any, bias: Any) -> tuple[np.ndarray, np.ndarray]:
        inverse = np.asarray(gain) + np.asarray(bias)
        return (1.0 / self.tau_ref) / (1 + np.exp(-inverse)), 1 - inverse / np.asarray(gain)

    def step(self, dt: float, J: np.ndarray, output: np.ndarray, **state: Any) -> None:
        output[...] = (1.0 / self.tau_ref) / (1 + np.exp(-J))


class Tanh(_Saturating):
    """``(1/tau_ref) · tanh(J)``: negative rates for negative currents."""

    negative = True

    def gain_bias(self, max_rates: Any, intercepts: Any) -> tuple[np.ndarray, np.ndarray]:
        max_rates = np.asarray(np.atleast_1d(max_rates), dtype=float)
        intercepts = np.asarray(np.atleast_1d(intercepts), dtype=float)
        _check_below(max_rates, 1.0 / self.tau_ref, "Tanh")
        inverse = np.arctanh(max_rates * self.tau_ref)
        gain = inverse / (1.0 - intercepts)
        return gain, -gain * intercepts

    def max_rates_intercepts(self, gain: Any, bias: Any) -> tuple[np.ndarray, np.ndarray]:
        gain, bias = np.asarray(gain), np.asarray(bias)
        return (1.0 / self.tau_ref) * np.tanh(gain + bias), -bias / gain

    def step(self, dt: float, J: np.ndarray, output: np.ndarray, **state: Any) -> None:
        output[...] = (1.0 / self.tau_ref) * np.tanh(J)


class LIFRate(NeuronType):
    """The LIF rate: ``amplitude / (tau_ref + tau_rc·log1p(1/(J-1)))`` for ``J > 1``, else 0."""

    negative = False

    def __init__(self, tau_rc: float = 0.02, tau_ref: float = 0.002, amplitude: float = 1,
                 initial_state: dict[str, Any] | None = None) -> None:
        super().__init__(initial_state)
        if not tau_rc > 0 or not tau_ref >= 0 or not amplitude > 0:
            raise ValueError(f"{type(self).__name__}: tau_rc = {tau_rc!r} and amplitude = {amplitude!r} must be "
                             f"positive, tau_ref = {tau_ref!r} not negative")
        self.tau_rc = float(tau_rc)
        self.tau_ref = float(tau_ref)
        self.amplitude = float(amplitude)

    def _params(self) -> dict[str, Any]:
        return {"tau_rc": self.tau_rc, "tau_ref": self.tau_ref, "amplitude": self.amplitude}

    def gain_bias(self, max_rates: Any, intercepts: Any) -> tuple[np.ndarray, np.ndarray]:
        max_rates = np.asarray(np.atleast_1d(max_rates), dtype=float)
        intercepts = np.asarray(np.atleast_1d(intercepts), dtype=float)
        _check_below(max_rates, 1.0 / self.tau_ref if self.tau_ref > 0 else np.inf, type(self).__name__)
        x = 1.0 / (1 - np.exp((self.tau_ref - (1.0 / max_rates)) / self.tau_rc))
        gain = (1 - x) / (intercepts - 1.0)
        return gain, 1 - gain * intercepts

    def max_rates_intercepts(self, gain: Any, bias: Any) -> tuple[np.ndarray, np.ndarray]:
        gain, bias = np.asarray(gain), np.asarray(bias)
        intercepts = (1 - bias) / gain
        max_rates = 1.0 / (self.tau_ref - self.tau_rc * np.log1p(1.0 / (gain * (intercepts - 1) - 1)))
        return max_rates, intercepts

    def rates(self, x: Any, gain: Any, bias: Any) -> np.ndarray:
        J = self.current(x, gain, bias)
        out = np.zeros_like(J)
        LIFRate.step(self, 1.0, J, out)
        return out

    def step(self, dt: float, J: np.ndarray, output: np.ndarray, **state: Any) -> None:
        j = J - 1
        output[...] = 0
        pos = j > 0
        output[pos] = self.amplitude / (self.tau_ref + self.tau_rc * np.log1p(1.0 / j[pos]))


class LIF(LIFRate):
    """The spiking LIF: the membrane follows the exact solution for constant ``J`` over the
    step, held at 0 for ``tau_ref`` after a spike; the spike time within the step
    (``t_spike``) is solved from ``v(t) = 1`` and lengthens the refractory period into the
    next step accordingly (nengo's sub-step spike timing)."""

    state = {"voltage": Uniform(low=0, high=1), "refractory_time": Choice([0])}
    spiking = True

    def __init__(self, tau_rc: float = 0.02, tau_ref: float = 0.002, min_voltage: float = 0, amplitude: float = 1,
                 initial_state: dict[str, Any] | None = None) -> None:
        super().__init__(tau_rc=tau_rc, tau_ref=tau_ref, amplitude=amplitude, initial_state=initial_state)
        if not min_voltage <= 0:
            raise ValueError(f"LIF: min_voltage = {min_voltage!r} must not be positive")
        self.min_voltage = float(min_voltage)

    def _params(self) -> dict[str, Any]:
        return {**super()._params(), "min_voltage": self.min_voltage}

    def step(self, dt: float, J: np.ndarray, output: np.ndarray, voltage: np.ndarray,  # type: ignore[override]
             refractory_time: np.ndarray, **state: Any) -> None:
        if J.flags.c_contiguous and voltage.flags.c_contiguous and refractory_time.flags.c_contiguous:
            self._step_flat(dt, J.reshape(-1), output, voltage.reshape(-1), refractory_time.reshape(-1))
            return
        refractory_time -= dt
        delta_t = np.clip(dt - refractory_time, 0, dt)
        voltage -= (J - voltage) * np.expm1(-delta_t / self.tau_rc)
        spiked = voltage > 1
        output[...] = spiked * (self.amplitude / dt)
        t_spike = dt + self.tau_rc * np.log1p(-(voltage[spiked] - 1) / (J[spiked] - 1))
        voltage[voltage < self.min_voltage] = self.min_voltage
        voltage[spiked] = 0
        refractory_time[spiked] = self.tau_ref + t_spike

    def _step_flat(self, dt: float, J: np.ndarray, output: np.ndarray, voltage: np.ndarray,
                   refractory_time: np.ndarray) -> None:
        """:meth:`step` on flat views, with the same floating-point operations on every element
        (bit-identical) and less work. Where ``refractory_time <= 0`` after the decrement,
        ``clip(dt - refractory_time, 0, dt)`` is exactly ``dt``, so the membrane factor is the
        one constant ``expm1(-dt/tau_rc)``; ``expm1`` and the clip run only on the neurons
        refractory during (part of) the step (and NaN, as before); integer indices instead of
        boolean masks; in-place operations."""
        refractory_time -= dt
        part = np.flatnonzero(~(refractory_time <= 0))
        if part.size:
            v_part, J_part = voltage[part], J[part]
        dv = np.subtract(J, voltage)
        dv *= self._expm1_dt(dt)
        voltage -= dv
        if part.size:
            delta_t = dt - refractory_time[part]
            np.maximum(delta_t, 0, out=delta_t)  # np.clip(., 0, dt)
            np.minimum(delta_t, dt, out=delta_t)
            voltage[part] = v_part - (J_part - v_part) * np.expm1(-delta_t / self.tau_rc)
        spiked = voltage > 1
        if output.flags.c_contiguous:
            np.multiply(spiked, self.amplitude / dt, out=output.reshape(-1))
        else:
            output[...] = (spiked * (self.amplitude / dt)).reshape(output.shape)
        idx = np.flatnonzero(spiked)
        t_spike = dt + self.tau_rc * np.log1p(-(voltage[idx] - 1) / (J[idx] - 1))
        np.maximum(voltage, self.min_voltage, out=voltage)  # voltage[voltage < min_voltage] = min_voltage
        voltage[idx] = 0
        refractory_time[idx] = self.tau_ref + t_spike

    def _expm1_dt(self, dt: float) -> float:
        """``expm1(-dt/tau_rc)``, as the vectorized expression gives it for ``delta_t = dt``."""
        cache = self.__dict__.setdefault("_expm1_cache", {})
        if dt not in cache:
            cache[dt] = float(np.expm1(-np.array([dt]) / self.tau_rc)[0])
        return cache[dt]


class RatesToSpikesNeuronType(NeuronType):
    """Base of the wrappers: the base type turns current into a rate (``rate_out``), the
    wrapper turns the rate into spikes of ``amplitude/dt``."""

    spiking = True

    def __init__(self, base_type: NeuronType, amplitude: float = 1.0,
                 initial_state: dict[str, Any] | None = None) -> None:
        super().__init__(initial_state)
        if not isinstance(base_type, NeuronType):
            raise TypeError(f"{type(self).__name__}: base_type must be a neuron type, got {base_type!r}")
        if base_type.spiking:
            raise ValueError(f"{type(self).__name__}: base_type {type(base_type).__name__} already spikes; wrap "
                             "a rate type")
        if not amplitude > 0:
            raise ValueError(f"{type(self).__name__}: amplitude = {amplitude!r} must be positive")
        self.base_type = base_type
        self.amplitude = float(amplitude)
        self.negative = base_type.negative

    def _params(self) -> dict[str, Any]:
        return {"base_type": self.base_type, "amplitude": self.amplitude}

    def spec(self) -> dict[str, Any]:
        return {"type": type(self).__name__, "amplitude": self.amplitude, "base_type": self.base_type.spec()}

    def gain_bias(self, max_rates: Any, intercepts: Any) -> tuple[np.ndarray, np.ndarray]:
        return self.base_type.gain_bias(max_rates, intercepts)

    def max_rates_intercepts(self, gain: Any, bias: Any) -> tuple[np.ndarray, np.ndarray]:
        return self.base_type.max_rates_intercepts(gain, bias)

    def rates(self, x: Any, gain: Any, bias: Any) -> np.ndarray:
        return self.base_type.rates(x, gain, bias)

    @abstractmethod
    def spikes(self, dt: float, rate: np.ndarray, output: np.ndarray, **state: Any) -> None:
        """The spikes of one step for the base type's ``rate`` into ``output``."""

    def step(self, dt: float, J: np.ndarray, output: np.ndarray, **state: Any) -> None:
        """Base type then wrapper: ``J`` is the input current (the base state, if any, is
        ``base_state``; the wrapper's own under their names)."""
        rate = np.zeros_like(J)
        self.base_type.step(dt, J, rate, **state.get("base_state", {}))
        self.spikes(dt, rate, output, **{k: v for k, v in state.items() if k != "base_state"})


class RegularSpiking(RatesToSpikesNeuronType):
    """Regular inter-spike intervals: ``v += r·dt``, ``floor(v)`` spikes, ``v -= floor(v)``
    (Voelker, Rasmussen and Eliasmith, arXiv:2002.03553, 2020)."""

    state = {"voltage": Uniform(low=0, high=1)}

    def spikes(self, dt: float, rate: np.ndarray, output: np.ndarray, voltage: np.ndarray,  # type: ignore[override]
               **state: Any) -> None:
        voltage += dt * rate
        n_spikes = np.floor(voltage)
        output[...] = (self.amplitude / dt) * n_spikes
        voltage -= n_spikes


class StochasticSpiking(RatesToSpikesNeuronType):
    """Stochastic rounding: ``q = floor(r·dt)`` spikes, one more with probability the
    fractional part (of ``|r|·dt``, the sign restored, for base types with negative rates)."""

    def make_state(self, n_neurons: int, rng: Any = np.random, dtype: Any = None) -> dict[str, Any]:
        state = super().make_state(n_neurons, rng=rng, dtype=dtype)
        state["rng"] = rng
        return state

    def spikes(self, dt: float, rate: np.ndarray, output: np.ndarray, rng: Any = np.random,  # type: ignore[override]
               **state: Any) -> None:
        frac, n_spikes = np.modf(dt * (np.abs(rate) if self.negative else rate))
        n_spikes += rng.random_sample(size=frac.shape) < frac
        output[...] = (self.amplitude / dt) * n_spikes * (np.sign(rate) if self.negative else 1)


class PoissonSpiking(RatesToSpikesNeuronType):
    """Poisson statistics: ``Poisson(|r|·dt)`` spikes per step, signed like ``r``."""

    def make_state(self, n_neurons: int, rng: Any = np.random, dtype: Any = None) -> dict[str, Any]:
        state = super().make_state(n_neurons, rng=rng, dtype=dtype)
        state["rng"] = rng
        return state

    def spikes(self, dt: float, rate: np.ndarray, output: np.ndarray, rng: Any = np.random,  # type: ignore[override]
               **state: Any) -> None:
        if self.negative:
            n = rng.poisson(np.abs(rate).ravel() * dt, rate.size).reshape(rate.shape) * np.sign(rate)
        else:
            n = rng.poisson(rate.ravel() * dt, rate.size).reshape(rate.shape)
        output[...] = (self.amplitude / dt) * n


NEURON_TYPES: dict[str, type[NeuronType]] = {c.__name__: c for c in (
    RectifiedLinear, SpikingRectifiedLinear, Sigmoid, Tanh, LIFRate, LIF, RegularSpiking, PoissonSpiking,
    StochasticSpiking)}


def from_spec(spec: Any, where: str = "neuron type") -> NeuronType:
    """A neuron type from its :meth:`NeuronType.spec`; ``ValueError`` naming ``where`` for
    anything else."""
    if not isinstance(spec, dict) or spec.get("type") not in NEURON_TYPES:
        raise ValueError(f"{where}: not a neuron type spec ({spec!r:.80}); types: {', '.join(NEURON_TYPES)}")
    cls = NEURON_TYPES[spec["type"]]
    kw = {k: v for k, v in spec.items() if k != "type"}
    try:
        if issubclass(cls, RatesToSpikesNeuronType):
            return cls(from_spec(kw.pop("base_type", None), where), **kw)
        return cls(**kw)
    except TypeError as e:
        raise ValueError(f"{where}: {e}") from None

