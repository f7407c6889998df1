"""Where a NaN or an infinity goes in BRA: one rule that every backend keeps, so ``backend="auto"`` may switch.

Token attention (given a routing index; :func:`bralib.ops.bra` applies the rule after any backend):

* A token that query i does not route to contributes exactly nothing to query i, whatever its key and value
  hold, NaN and infinities included. (Dense formulations must *select* the routed keys: multiplying a masked
  NaN by a zero weight gives NaN, and adding -inf to a NaN logit leaves it NaN.)
* Output channel c of query i is NaN when a non-finite number reaches it: in q_i within c's head, in the key
  of a routed token within c's head (it enters every logit of that head), or in channel c of a routed token's
  value. Infinities give NaN too: IEEE arithmetic would give +-inf, NaN or even a finite number (a -inf
  logit is just a zero weight) depending on each backend's order of operations, and fused kernels (PyTorch's
  scaled_dot_product_attention) return 0 instead of NaN for a row of NaN logits.
* Every other output is exactly the attention over finite numbers.

Routing sees region means, computed once before any backend runs. A non-finite value in q (k) makes its
region's mean, and so that region's row (column) of the region logits, non-finite. ``torch.topk`` ranks NaN
above every number, so with content routing one NaN key makes every region route to its region, and the NaN
then reaches every query through the rule above; a region whose query mean is NaN routes to regions that
``torch.topk`` picks among equal NaNs (implementation-defined). Given the same routing index, every backend
gives the same NaNs.
"""

from __future__ import annotations

import torch
from torch._subclasses.fake_tensor import is_fake


def known_finite(*tensors: torch.Tensor) -> bool:
    """True when every value of ``tensors`` is cheaply known to be finite, so the rule has nothing to do.

    Only checked for real CPU tensors outside ``torch.compile`` (one sum per tensor; a NaN or inf makes the sum
    non-finite): elsewhere reading the answer would cost a device synchronisation or a graph break, so the
    answer is False and the callers apply the rule, which costs a few small passes and changes no finite output.
    A false alarm (a finite sum that overflows) only sends the caller down the exact path.
    """
    if torch.compiler.is_compiling() or any(t.device.type != "cpu" or is_fake(t) for t in tensors):
        return False  # fake tensors (FLOP counting) carry no values to read
    with torch.no_grad():
        # Half precision sums in float32: a float16 total overflows long before any value is large.
        total = sum(t.sum(dtype=torch.float32 if t.element_size() < 4 else None) for t in tensors)
        return bool(torch.isfinite(total))


def finite_or_zero(x: torch.Tensor) -> torch.Tensor:
    """x with every NaN and +-inf replaced by 0 (for dense formulations, before the masked-out keys are weighed)."""
    return x.nan_to_num(nan=0.0, posinf=0.0, neginf=0.0)


def _nan_where_nonfinite(x: torch.Tensor, shape: tuple[int, ...], dims: tuple[int, ...]) -> torch.Tensor:
    """``x`` viewed as ``shape`` and reduced over ``dims``: 0 where all values were finite, NaN where any was not.

    x * 0 is 0 for a finite x and NaN for NaN or +-inf; a sum of zeros cannot overflow.
    """
    return (x.detach() * 0).reshape(shape).sum(dims)


def routed_nan(k: torch.Tensor, v: torch.Tensor, index: torch.Tensor, *, num_heads: int, n_win: int) -> torch.Tensor:
    """(B, S*S, Cv): NaN where a routed region holds a non-finite key (in the channel's head) or value, else 0.

    Args:
        k: (B, H, W, Cqk); v: (B, H, W, Cv); index: (B, S*S, topk).
    """
    batch, height, width, c_qk = k.shape
    c_v, s, h, w = v.shape[-1], n_win, height // n_win, width // n_win
    bad_k = _nan_where_nonfinite(k, (batch, s, h, s, w, num_heads, c_qk // num_heads), (2, 4, 6))  # (B, S, S, heads)
    bad_v = _nan_where_nonfinite(v, (batch, s, h, s, w, c_v), (2, 4))  # (B, S, S, Cv)
    region = bad_v.reshape(batch, s * s, num_heads, -1) + bad_k.reshape(batch, s * s, num_heads, 1)
    images = torch.arange(batch, device=index.device)[:, None, None]  # (B, 1, 1)
    return region.reshape(batch, s * s, c_v)[images, index].sum(2)  # (B, S^2, topk, Cv) -> (B, S^2, Cv)


def add_routed_nan(out: torch.Tensor, nan: torch.Tensor, n_win: int) -> torch.Tensor:
    """out: (B, H, W, Cv) plus the (B, S*S, Cv) region values of :func:`routed_nan` on every token of each region."""
    batch, height, width, c_v = out.shape
    s, h, w = n_win, height // n_win, width // n_win
    spread = out.reshape(batch, s, h, s, w, c_v) + nan.reshape(batch, s, 1, s, 1, c_v)
    return spread.reshape(out.shape)


def add_query_nan(out: torch.Tensor, q: torch.Tensor, num_heads: int) -> torch.Tensor:
    """out: (B, H, W, Cv) with NaN in every head whose query channels hold a NaN or an infinity."""
    batch, height, width, c_qk = q.shape
    nan = _nan_where_nonfinite(q, (batch, height, width, num_heads, c_qk // num_heads), (4,))  # (B, H, W, heads)
    return (out.reshape(batch, height, width, num_heads, -1) + nan[..., None]).reshape(out.shape)


def apply_rule(
    out: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    index: torch.Tensor,
    *,
    num_heads: int,
    n_win: int,
) -> torch.Tensor:
    """``out`` (B, H, W, Cv) with NaN wherever the rule says a non-finite input reaches (unchanged elsewhere)."""
    if known_finite(q, k, v):
        return out
    out = add_routed_nan(out, routed_nan(k, v, index, num_heads=num_heads, n_win=n_win), n_win)
    return add_query_nan(out, q, num_heads)
