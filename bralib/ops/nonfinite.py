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

from bralib.ops.regions import region_of_tokens, to_regions


def finite_or_zero(x: torch.Tensor) -> torch.Tensor:
    """x with every NaN and +-inf replaced by 0 (for dense formulations, before the masked-out keys are weighed)."""
    return x.nan_to_num(nan=0.0, posinf=0.0, neginf=0.0)


def nonfinite_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """(B, H, W, C) -> (B, H, W, heads, 1) bool: the tokens whose channels in a head hold a NaN or an infinity."""
    batch, height, width, channels = x.shape
    bad = ~torch.isfinite(x).reshape(batch, height, width, num_heads, channels // num_heads)
    return bad.any(-1, keepdim=True)


def routed_nonfinite(
    k: torch.Tensor, v: torch.Tensor, index: torch.Tensor, *, num_heads: int, n_win: int
) -> torch.Tensor:
    """(B, H, W, Cv) bool: True where a non-finite key (in the channel's head) or value of a routed token reaches.

    Args:
        k: (B, H, W, Cqk); v: (B, H, W, Cv); index: (B, S*S, topk).
    """
    batch, height, width, c_v = v.shape
    bad_v = ~torch.isfinite(v).reshape(batch, height, width, num_heads, c_v // num_heads)
    source = (bad_v | nonfinite_heads(k, num_heads)).reshape(batch, height, width, c_v)  # what each key token spoils
    region = to_regions(source, n_win).any(2)  # (B, S^2, Cv)
    images = torch.arange(batch, device=index.device)[:, None, None]  # (B, 1, 1)
    routed = region[images, index].any(2)  # (B, S^2, Cv): some routed region holds a bad token
    return routed[:, region_of_tokens(height, width, n_win, device=index.device)].reshape(v.shape)


def nonfinite_reach(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, index: torch.Tensor, *, num_heads: int, n_win: int
) -> torch.Tensor:
    """(B, H, W, Cv) bool: the outputs the rule above makes NaN (q's own heads, and routed keys and values)."""
    batch, height, width, c_v = v.shape
    routed = routed_nonfinite(k, v, index, num_heads=num_heads, n_win=n_win)
    own = routed.reshape(batch, height, width, num_heads, c_v // num_heads) | nonfinite_heads(q, num_heads)
    return own.reshape(v.shape)


def poison(out: torch.Tensor, reach: torch.Tensor) -> torch.Tensor:
    """``out`` with NaN wherever ``reach`` is True."""
    return out.masked_fill(reach, float("nan"))
