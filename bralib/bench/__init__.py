"""``bralib bench``: how fast each BRA backend is, and how much memory it keeps for the backward.

* :mod:`bralib.bench.shapes` — the BRA stage shapes of BiFormer-T/S/B at 224x224 (and custom ones).
* :mod:`bralib.bench.measure` — interleaved timing (median of repeats), saved-activation bytes through
  ``torch.autograd.graph.saved_tensors_hooks``, CUDA peak memory.
* :mod:`bralib.bench.ops_bench` — every backend on every stage shape, forward and forward+backward.
* :mod:`bralib.bench.model_bench` — a whole BiFormer: training step and batch-1 inference per backend,
  eager and compiled.
* :mod:`bralib.bench.report` — the table of ratios against ``"gather"``, the JSON, the figure, and the
  ``measured.json`` that ``backend="auto"`` chooses from.
"""
