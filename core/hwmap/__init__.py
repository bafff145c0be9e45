"""hwmap: what it costs to run a trained network on edge AI targets, side by side.

The public API plugins and users import from. A target plugin writes::

    from hwmap import hookimpl, TargetConfig, Legalized, Mapping, Artifacts, Simulation, KPIs

A spiking target that takes ANNs puts ``conversion: ConversionConfig`` in its config model
(the ``[conversion]`` table) and calls ``convert_to_snn(graph, target.calibration,
config.conversion)`` from its legalize.
"""

from .errors import (
    ConfigError,
    DataError,
    DoesNotFitError,
    GraphError,
    HwmapError,
    ModelError,
    PluginError,
    TargetError,
    UnsupportedOpError,
)
from .graph import Graph, Node, QuantAnnotation, Tensor
from .hookspecs import Register, hookimpl, hookspec
from .kpi import Assumption, Bottleneck, Fidelity, KPIs, LayerCost, Provenance
from .constants import constant
from .config import presets_in
from .source import ParseOptions, load_model
from .target import (
    Artifacts,
    Diagnostic,
    Legalized,
    Mapping,
    Simulation,
    Target,
    ConfigSection,
    FidelityClaim,
    TargetConfig,
    TargetSpec,
)
from .data import Dataset, load_data
from .conversion_config import ConversionConfig
from .passes.snn_convert import Conversion, ConversionSettings, LayerScale, convert_to_snn

__version__ = "0.1.0"

__all__ = [
    "Assumption", "Bottleneck", "ConfigSection", "FidelityClaim", "LayerCost", "Provenance", "Register", "constant", "presets_in",
    "Conversion", "ConversionConfig", "ConversionSettings", "LayerScale", "convert_to_snn",
    "Artifacts", "ConfigError", "DataError", "Dataset", "Diagnostic", "DoesNotFitError", "Fidelity", "Graph",
    "GraphError", "HwmapError", "KPIs", "Legalized", "Mapping", "ModelError", "Node", "ParseOptions",
    "PluginError", "QuantAnnotation", "Simulation", "Target", "TargetConfig", "TargetError", "TargetSpec",
    "Tensor", "UnsupportedOpError", "hookimpl", "hookspec", "load_data", "load_model", "__version__",
]
