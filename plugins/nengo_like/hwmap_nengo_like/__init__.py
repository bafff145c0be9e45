"""hwmap's ``nengo_like`` target, and a nengo-compatible front end: ``import hwmap_nengo_like
as nengo`` runs a nengo script of the supported subset (Network, Ensemble, Node, Connection,
Probe, Simulator, the neuron types, Lowpass and Alpha, the distributions and LstsqL2) on the
target's own stages (chapter Section 3.2.5; nengo 4.1 semantics)."""

from . import dists, neurons, solvers, synapses
from .dists import Choice, ScatteredHypersphere, Uniform, UniformHypersphere
from .neurons import (LIF, LIFRate, PoissonSpiking, RectifiedLinear, RegularSpiking, Sigmoid, SpikingRectifiedLinear,
                      StochasticSpiking, Tanh)
from .objects import Connection, Default, Ensemble, Network, Node, Probe
from .simulator_api import Simulator
from .solvers import LstsqL2
from .synapses import Alpha, LinearFilter, Lowpass

__version__ = "0.1.0"

__all__ = ["Network", "Ensemble", "Node", "Connection", "Probe", "Simulator", "Default", "LIF", "LIFRate",
           "RectifiedLinear", "SpikingRectifiedLinear", "Sigmoid", "Tanh", "RegularSpiking", "PoissonSpiking",
           "StochasticSpiking", "Lowpass", "Alpha", "LinearFilter", "LstsqL2", "Uniform", "Choice",
           "UniformHypersphere", "ScatteredHypersphere", "dists", "neurons", "solvers", "synapses"]
