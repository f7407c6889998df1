"""bralib: Bi-Level Routing Attention (BRA) and the BiFormer vision transformer.

The maintained code behind the bralib book. ``bralib.ops`` holds BRA and its backends.
"""

__version__ = "0.1.0"
