"""Hand-written kernels for the BRA backends, imported only by the backend that launches them.

``routed_attention``: Triton kernels for routed-region attention (forward, dq, dk/dv), launched by
:mod:`bralib.ops.backends.triton`. Importing that module imports ``triton`` and decorates the kernels with
``triton.jit``, which decides once, from ``TRITON_INTERPRET``, whether they run compiled (GPU) or in
Triton's interpreter (CPU); so nothing here is imported by ``import bralib``.
"""
