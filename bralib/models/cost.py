"""What a BiFormer costs: parameters, multiply-adds, and where the multiply-adds go.

Multiply-adds come from :func:`bralib.complexity.count_flops` (one multiply-add = 1, the paper's "FLOPs").
Two things are fixed here so the numbers compare with the paper's:

* **The algorithm, not the backend.** Backends compute the same function with different amounts of
  arithmetic (``dense`` attends to every token and masks, S*S/topk times the gather's work), and
  ``backend="auto"`` picks per shape and machine. Counting always uses the paper's algorithm, the
  ``gather`` backend, whatever backend the model runs with.
* **The convention.** ``convention="macs"`` counts the matrix products and convolutions only.
  ``convention="fvcore"`` adds what fvcore (used for the paper's and the official repository's numbers)
  also counts: 5 FLOPs per element of a LayerNorm and 2 per element of an inference-mode BatchNorm. It
  reproduces the released 2.228 / 4.487 / 9.795 G of BiFormer-T/S/B.

The forward runs on fake tensors (shapes only, no arithmetic), so counting BiFormer-B at 224x224 takes a
second or two on a laptop.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode

from bralib.models.biformer import BiFormer
from bralib.ops import BiLevelRoutingAttention

CONVENTIONS = ("macs", "fvcore")
# The components of :func:`macs_by_component`, in the order a figure shows them.
COMPONENTS = (
    "stem + downsampling",
    "qkv projection",
    "output projection",
    "token attention + routing",
    "depthwise convs (pos. enc., LCE)",
    "MLP",
    "norms (fvcore)",
    "head",
)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter values (buffers such as BatchNorm statistics are not parameters)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


@contextmanager
def _counting_backend(model: nn.Module) -> Iterator[None]:
    """Every BRA module temporarily uses the ``gather`` backend: the paper's algorithm and its arithmetic."""
    modules = [m for m in model.modules() if isinstance(m, BiLevelRoutingAttention)]
    saved = [m.backend for m in modules]
    for module in modules:
        module.backend = "gather"
    try:
        yield
    finally:
        for module, backend in zip(modules, saved, strict=True):
            module.backend = backend


@contextmanager
def _norm_flops(model: nn.Module, per_module: dict[str, int], enabled: bool) -> Iterator[None]:
    """While active, every forward of ``model`` adds fvcore's norm FLOPs to ``per_module`` (name -> FLOPs)."""
    names = {module: name for name, module in model.named_modules()}

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        affine = module.weight is not None
        if isinstance(module, nn.BatchNorm2d) and not module.training:
            per_element = 2 if affine else 1  # inference: one scale and shift per element
        else:
            per_element = 5 if affine else 4  # fvcore's "rough estimate" for a normalisation
        per_module[names[module]] = per_module.get(names[module], 0) + per_element * inputs[0].numel()

    norms = [m for m in model.modules() if isinstance(m, nn.LayerNorm | nn.BatchNorm2d)] if enabled else []
    handles = [m.register_forward_hook(hook) for m in norms]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _input(model: BiFormer, input_size: int | tuple[int, int] | None, batch: int) -> torch.Tensor:
    size = model.config.input_size if input_size is None else input_size
    height, width = (size, size) if isinstance(size, int) else size
    return torch.empty(batch, model.in_chans, height, width, dtype=next(model.parameters()).dtype)


def model_macs(
    model: BiFormer,
    input_size: int | tuple[int, int] | None = None,
    *,
    convention: str = "fvcore",
    batch: int = 1,
) -> int:
    """Multiply-adds of one forward pass of ``model`` on ``batch`` images of ``input_size`` (default: the
    variant's own size, 224 for the released ones).

    ``convention``: ``"fvcore"`` (default; the paper's and official repository's numbers) or ``"macs"``
    (matrix products and convolutions only). See the module docstring. The model's train/eval mode is used
    as is; call ``.eval()`` first for inference numbers (BatchNorm counts differently in training).
    """
    return _macs_per_module(model, input_size, convention=convention, batch=batch)[0]


def _macs_per_module(
    model: BiFormer, input_size: int | tuple[int, int] | None, *, convention: str, batch: int
) -> tuple[int, dict[str, int]]:
    """(total, each submodule's own multiply-adds plus fvcore norm FLOPs as "norm:<name>").

    Own counts have nothing counted twice: the attention's own work is its token attention and routing.
    Work the model does outside every submodule is in the total only (none in a BiFormer).
    """
    from bralib.complexity import count_flops_by_module

    if not isinstance(model, BiFormer):
        raise TypeError(f"model must be a bralib BiFormer, got {type(model).__name__}")
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
    norms: dict[str, int] = {}
    with _counting_backend(model), _norm_flops(model, norms, convention == "fvcore"):
        with FakeTensorMode(allow_non_fake_inputs=True):  # shapes only: no arithmetic is done
            own = count_flops_by_module(model, _input(model, input_size, batch), inclusive=False)
    total = sum(own.values()) + sum(norms.values())
    own.pop("", None)
    return total, own | {f"norm:{name}": flops for name, flops in norms.items()}


def _component(name: str) -> str:
    if name.startswith("norm:"):
        return "norms (fvcore)"
    leaf = name.rsplit(".", 1)[-1]
    if name.startswith("stem") or ".downsample" in name:
        return "stem + downsampling"
    if name.startswith("head"):
        return "head"
    if leaf == "qkv":
        return "qkv projection"
    if leaf == "proj":
        return "output projection"
    if leaf in ("pos_conv", "lce", "lepe"):
        return "depthwise convs (pos. enc., LCE)"
    if leaf in ("fc1", "fc2"):
        return "MLP"
    if leaf == "attn":
        return "token attention + routing"
    raise ValueError(f"no component for the counted module {name!r}: update bralib.models.cost._component")


def macs_by_component(
    model: BiFormer, input_size: int | tuple[int, int] | None = None, *, convention: str = "fvcore"
) -> dict[str, int]:
    """Multiply-adds of one image split by kind of work, keys in :data:`COMPONENTS` order; they sum to
    :func:`model_macs`. "token attention + routing" is the attention's own arithmetic (q k^T, softmax
    weights times v, and the region-level routing), outside its projections and depthwise conv."""
    total, per_module = _macs_per_module(model, input_size, convention=convention, batch=1)
    parts = dict.fromkeys(COMPONENTS, 0)
    for name, macs in per_module.items():
        parts[_component(name)] += macs
    if sum(parts.values()) != total:  # a counted op outside every named module would be lost here
        raise RuntimeError(f"components sum to {sum(parts.values())}, but the model counts {total}")
    return {name: macs for name, macs in parts.items() if macs or name != "norms (fvcore)"}
