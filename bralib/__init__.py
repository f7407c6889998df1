"""bralib: Bi-Level Routing Attention (BRA) and the BiFormer vision transformer.

The maintained code behind the bralib book. ``bralib.ops`` holds BRA and its backends.
"""

__version__ = "0.1.0"

# Loaded on first use, so `import bralib` stays light (no torch until a model is asked for).
_LAZY = {"create_model": "bralib.models", "list_models": "bralib.models"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'bralib' has no attribute {name!r}")
