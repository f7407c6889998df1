"""Count the multiply-adds of a real forward pass.

Convention (the one place it is stated; :mod:`bralib.complexity.symbolic` follows it): **one multiply-add
(MAC) = 1 FLOP**, as the paper and fvcore count. ``torch.utils.flop_counter.FlopCounterMode`` counts 2 per
multiply-add, so everything it reports is halved here.

What is counted:

* everything ``FlopCounterMode`` sees: ``mm``, ``addmm``, ``bmm``, ``baddbmm``, convolutions (grouped and
  depthwise too) and the fused attention kernels it registers. Bias additions are *not* counted (fvcore
  does not count them either);
* ``aten._scaled_dot_product_flash_attention_for_cpu``, the kernel ``F.scaled_dot_product_attention`` runs on
  CPU, which ``FlopCounterMode`` does not know: 2 * B * heads * L_q * L_kv * d multiply-adds (Q K^T, then
  attention x V), like its CUDA siblings;
* ``elementwise=True`` adds the element-wise work ``FlopCounterMode`` does not see, one FLOP per element:
  reductions (``mean``, ``sum``: one per input element, e.g. BRA's region averaging), ``softmax`` (one per
  score: the exp, the max and the normalisation are counted once together), and arithmetic (``add``,
  ``mul``, ``div``, ``sub``: one per output element, e.g. the attention scale and the LCE residual add).
  These are O(HW * C) or O(scores) and matter only for small channel counts; they are off by default so
  the numbers compare with the paper's and fvcore's. A fused attention kernel (SDPA) does its softmax inside,
  where no element-wise op is visible: count element-wise work with an unfused backend (``gather``).

``topk``, ``index_select``, ``gather``, reshapes and copies move memory and compare numbers: they cost no
multiply-adds and are never counted. That is exactly why FLOPs are not time for BRA (see chapter 5).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

aten = torch.ops.aten

__all__ = ["count_flops", "count_flops_by_module", "flop_counter"]


def _numel(shape: Any) -> int:
    return math.prod(shape) if shape is not None else 0


def _cpu_sdpa_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    # FlopCounterMode units (2 per multiply-add), like torch's own sdpa formulas.
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _per_input_element(input_shape, *args, out_shape=None, **kwargs) -> int:
    return 2 * _numel(input_shape)  # one FLOP per element read, in FlopCounterMode units (x2)


def _per_output_element(*args, out_shape=None, **kwargs) -> int:
    return 2 * _numel(out_shape)


def _mapping(elementwise: bool) -> dict[Any, Callable[..., int]]:
    mapping: dict[Any, Callable[..., int]] = {}
    cpu_sdpa = getattr(aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if cpu_sdpa is not None:
        mapping[cpu_sdpa] = _cpu_sdpa_flop
    if elementwise:
        for op in (aten.mean, aten.sum, aten._softmax, aten._log_softmax):
            mapping[op] = _per_input_element
        for op in (aten.add, aten.mul, aten.div, aten.sub):
            mapping[op] = _per_output_element
    return mapping


def flop_counter(elementwise: bool = False, depth: int = 64) -> FlopCounterMode:
    """A silent ``FlopCounterMode`` that also knows CPU SDPA (and element-wise ops if asked).

    Its counts are in FlopCounterMode's units (2 per multiply-add); :func:`count_flops` halves them.
    """
    return FlopCounterMode(display=False, depth=depth, custom_mapping=_mapping(elementwise))


def _run(module: nn.Module, inputs: tuple, kwargs: dict, elementwise: bool) -> FlopCounterMode:
    if not isinstance(module, nn.Module) and not callable(module):
        raise TypeError(f"count_flops needs an nn.Module (or a callable), got {type(module).__name__}")
    counter = flop_counter(elementwise)
    with torch.no_grad(), counter:
        module(*inputs, **kwargs)
    return counter


def count_flops(module: nn.Module | Callable[..., Any], *inputs: Any, elementwise: bool = False, **kwargs: Any) -> int:
    """Multiply-adds (MACs, the paper's and fvcore's "FLOPs") of ``module(*inputs, **kwargs)``.

    The forward really runs (under ``torch.no_grad``), so data-dependent paths count as taken. See the module
    docstring for exactly which operations are counted; ``elementwise=True`` adds one per element of
    reductions, softmax and element-wise arithmetic.

    Example: ``count_flops(nn.Linear(64, 32), torch.randn(10, 64)) == 10 * 64 * 32``.
    """
    counter = _run(module, inputs, kwargs, elementwise)
    return counter.get_total_flops() // 2


def _parent(name: str, names: dict[str, int]) -> str | None:
    """The closest proper ancestor of ``name`` among ``names`` ("" is the root), or None for the root itself."""
    if not name:
        return None
    parts = name.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        if ".".join(parts[:cut]) in names:
            return ".".join(parts[:cut])
    return ""


def count_flops_by_module(
    module: nn.Module, *inputs: Any, elementwise: bool = False, inclusive: bool = True, **kwargs: Any
) -> dict[str, int]:
    """Multiply-adds per submodule, keyed by the names of ``module.named_modules()`` ("" is ``module`` itself).

    ``inclusive=True``: each entry includes its children (``result[""]`` is the total), like a profiler's
    "total" column. ``inclusive=False``: each entry is what runs in the module outside its children, so the
    values sum to the total. Submodules that did no counted work are left out.
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"count_flops_by_module needs an nn.Module, got {type(module).__name__}")
    counter = _run(module, inputs, kwargs, elementwise)
    root = type(module).__name__
    totals: dict[str, int] = {}
    for tracked, per_op in counter.get_flop_counts().items():
        if tracked == "Global":
            continue
        if tracked == root:
            name = ""
        elif tracked.startswith(root + "."):
            name = tracked[len(root) + 1 :]
        else:
            continue
        totals[name] = sum(per_op.values()) // 2
    totals.setdefault("", counter.get_total_flops() // 2)
    if inclusive:
        return {name: macs for name, macs in totals.items() if macs or name == ""}
    own: dict[str, int] = {}
    for name, macs in totals.items():
        # The nearest counted descendants, not just direct children: containers such as nn.ModuleList are
        # never called, so "stages.0.blocks" is absent while "stages.0.blocks.0" is there.
        own[name] = macs - sum(totals[other] for other in totals if _parent(other, totals) == name)
    return {name: macs for name, macs in own.items() if macs or name == ""}
