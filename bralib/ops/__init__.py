"""Bi-Level Routing Attention: regions, routing, gathering, token attention and its backends."""

from bralib.ops import masks
from bralib.ops.attention import BiLevelRoutingAttention, bra
from bralib.ops.backends import BACKENDS
from bralib.ops.backends.auto import explain_backend
from bralib.ops.regions import from_regions, region_of_tokens, to_regions
from bralib.ops.routing import local_index, region_means, route_regions, routing_mask

__all__ = [
    "BACKENDS",
    "BiLevelRoutingAttention",
    "bra",
    "explain_backend",
    "from_regions",
    "local_index",
    "masks",
    "region_means",
    "region_of_tokens",
    "route_regions",
    "routing_mask",
    "to_regions",
]
