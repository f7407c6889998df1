"""BiFormer models: the variants by name, official weights, costs, and routing access.

Usage::

    import bralib
    model = bralib.create_model("biformer_tiny")           # 13,142,760 parameters
    bralib.list_models()                                   # every known name
    bralib.models.load_official_weights(model, "biformer_tiny_in1k.pth")
    bralib.models.model_macs(model.eval())                 # 2,228,044,160 multiply-adds at 224x224 (fvcore)
    bralib.models.routing_maps(model, images)              # where each BRA block routes
"""

from bralib.models.biformer import (
    MODEL_CONFIGS,
    BiFormer,
    BiFormerBlock,
    BiFormerConfig,
    BiFormerStage,
    FeatureInfo,
    Routing,
    routing_maps,
)
from bralib.models.cost import count_parameters, macs_by_component, model_macs
from bralib.models.layers import DropPath, GlobalAttention, Mlp
from bralib.models.registry import create_model, list_models
from bralib.models.weights import KEY_TABLE, OfficialWeightsError, load_official_weights, to_official_state_dict

__all__ = [
    "KEY_TABLE",
    "MODEL_CONFIGS",
    "BiFormer",
    "BiFormerBlock",
    "BiFormerConfig",
    "BiFormerStage",
    "DropPath",
    "FeatureInfo",
    "GlobalAttention",
    "Mlp",
    "OfficialWeightsError",
    "Routing",
    "count_parameters",
    "create_model",
    "list_models",
    "load_official_weights",
    "macs_by_component",
    "model_macs",
    "routing_maps",
    "to_official_state_dict",
]
