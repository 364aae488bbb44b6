"""Graph transformer models: GT, GPS, Graphormer-style, on one skeleton."""

from gtcompress.models.config import LayerSpec, ModelConfig
from gtcompress.models.layers import GPSLayer, GraphContext, GraphormerLayer, GTLayer
from gtcompress.models.model import GPS, GraphModel, Graphormer, GraphTransformer, build_model

__all__ = [
    "GPS",
    "GPSLayer",
    "GTLayer",
    "GraphContext",
    "GraphModel",
    "GraphTransformer",
    "Graphormer",
    "GraphormerLayer",
    "LayerSpec",
    "ModelConfig",
    "build_model",
]
