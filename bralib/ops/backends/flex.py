"""The flex backend: FlexAttention with a block mask built from the routing index.

Tokens are put in region order (region 0's tokens, then region 1's, ...), so a routed region is a
contiguous run of n = HW/S^2 tokens and the routing index *is* a block-sparse attention pattern: query block
r attends to key blocks ``index[r]``, every one of them in full. FlexAttention compiles a kernel that skips
all other blocks, so nothing is gathered and no mask is evaluated inside a block.

Limits, handled here rather than discovered at run time:

* FlexAttention is compiled (``torch.compile``; the first call per shape takes seconds).
* On CPU it has no backward: asking for one raises an error that names the backends that can train.
  ``"auto"`` never picks flex for a CPU request that needs gradients.
* On CUDA, block sizes of 16 or 4 tokens (BiFormer's stages 2 and 3) were seen to fail to compile
  ("Q and KV block size must be divisible by BLOCK_M and BLOCK_N"). There the regions are *grouped*:
  128-token blocks hold several regions, block pairs that mix allowed and forbidden regions are marked
  partial, and a ``mask_mod`` reads the region-level routing inside them. Written correct by construction and
  tested on CPU (``block_size=128``); it has not yet run on a GPU.
"""

from __future__ import annotations

import sys

import torch

from bralib.ops.backends.layout import gather_tokens, head_view, merge_head_view, query_token_index
from bralib.ops.nonfinite import add_routed_nan, finite_or_zero, known_finite, routed_nan
from bralib.ops.regions import from_regions
from bralib.ops.routing import routing_mask

DEVICE_DTYPES = {
    "cpu": (torch.float16, torch.bfloat16, torch.float32),
    "cuda": (torch.float16, torch.bfloat16, torch.float32),
}
CUDA_BLOCK = 128  # FlexAttention's default block size on CUDA: a multiple of every kernel tile it picks

_compiled_flex = None


def flex_block_size(tokens_per_region: int, device_type: str) -> int:
    """Tokens per block: one region per block where the device compiles that, else groups of regions."""
    if device_type == "cuda" and tokens_per_region % CUDA_BLOCK != 0:
        return CUDA_BLOCK
    return tokens_per_region


def flex_request_problem(device_type: str, dtype: torch.dtype, needs_grad: bool) -> str | None:
    """Why flex cannot run this request, or None when it can."""
    if device_type not in DEVICE_DTYPES:
        return f"FlexAttention runs on {sorted(DEVICE_DTYPES)}, not on {device_type}"
    if dtype not in DEVICE_DTYPES[device_type]:
        allowed = ", ".join(str(d).replace("torch.", "") for d in DEVICE_DTYPES[device_type])
        return f"FlexAttention on {device_type} supports {allowed}, not {str(dtype).replace('torch.', '')}"
    if needs_grad and device_type == "cpu":
        return "FlexAttention has no CPU backward"
    return None


def region_block_mask(index: torch.Tensor, tokens_per_region: int, *, with_backward: bool):
    """One block per region: query block r attends, in full, to key blocks ``index[:, r]``."""
    from torch.nn.attention.flex_attention import BlockMask

    batch, n_regions, topk = index.shape
    kv_indices = torch.zeros(batch, 1, n_regions, n_regions, dtype=torch.int32, device=index.device)
    kv_indices[..., :topk] = index.sort(dim=-1).values[:, None].to(torch.int32)  # ascending: blocks read in order
    full_count = torch.full((batch, 1, n_regions), topk, dtype=torch.int32, device=index.device)
    # No partial blocks. Their (empty) index tensor must be a separate tensor from the full one: inductor's
    # CPU template fails to compile when both arguments are the same buffer.
    return BlockMask.from_kv_blocks(
        torch.zeros_like(full_count), torch.zeros_like(kv_indices), full_count, kv_indices,
        BLOCK_SIZE=tokens_per_region, compute_q_blocks=with_backward,
    )  # fmt: skip


def grouped_block_mask(index: torch.Tensor, tokens_per_region: int, block_size: int, *, with_backward: bool):
    """Blocks of ``block_size`` tokens spanning several regions; mixed block pairs are partial with a mask_mod."""
    from torch.nn.attention.flex_attention import BlockMask

    batch, n_regions, _ = index.shape
    tokens = n_regions * tokens_per_region
    n_blocks = -(-tokens // block_size)
    allowed = routing_mask(index, n_regions)  # (B, S^2, S^2) bool
    # touch[i, r] = 1 when block i holds a token of region r.
    token_region = torch.arange(n_blocks * block_size, device=index.device) // tokens_per_region
    token_block = torch.arange(n_blocks * block_size, device=index.device) // block_size
    real = token_region < n_regions  # tokens past the end (padding of the last block) belong to no region
    touch = torch.zeros(n_blocks, n_regions, device=index.device)
    touch[token_block[real], token_region[real]] = 1.0
    allowed_f = allowed.float()
    any_allowed = touch @ allowed_f @ touch.T > 0  # (B, nb, nb)
    any_forbidden = touch @ (1.0 - allowed_f) @ touch.T > 0
    full = any_allowed & ~any_forbidden
    partial = any_allowed & any_forbidden

    def ordered(block_pairs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        counts = block_pairs.sum(-1, dtype=torch.int32)[:, None]  # (B, 1, nb)
        indices = torch.argsort(block_pairs.to(torch.int8), dim=-1, descending=True, stable=True)
        return counts, indices.to(torch.int32)[:, None]  # (B, 1, nb, nb): the listed blocks first

    last = n_regions - 1

    def mask_mod(b, h, q_idx, kv_idx):
        # Clamped: positions past the last token (block padding) must still index inside `allowed`.
        q_region = torch.clamp(q_idx // tokens_per_region, max=last)
        kv_region = torch.clamp(kv_idx // tokens_per_region, max=last)
        return allowed[b, q_region, kv_region]

    return BlockMask.from_kv_blocks(
        *ordered(partial), *ordered(full), BLOCK_SIZE=block_size, mask_mod=mask_mod,
        seq_lengths=(tokens, tokens), compute_q_blocks=with_backward,
    )  # fmt: skip


def _flex(device_type: str = "cpu"):
    """flex_attention compiled once per process (inside an outer torch.compile it is traced as it is).

    The first call per shape compiles a kernel: about 50 s on a CPU (measured on the project's 2-core machine),
    seconds on a GPU. A one-line note on stderr says so the first time, so a long first call is not a hang.
    """
    from torch.nn.attention.flex_attention import flex_attention

    global _compiled_flex
    if torch.compiler.is_compiling():
        return flex_attention
    if _compiled_flex is None:
        where = "about 50 s on a CPU" if device_type == "cpu" else "seconds"
        print(f"bralib: backend 'flex' compiles FlexAttention on its first call for each shape ({where});"
              " later calls are fast", file=sys.stderr, flush=True)  # fmt: skip
        _compiled_flex = torch.compile(flex_attention, dynamic=False)
    return _compiled_flex


def flex_attention_backend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    index: torch.Tensor,
    *,
    num_heads: int,
    n_win: int,
    scale: float,
    block_size: int | None = None,
) -> torch.Tensor:
    """q, k: (B, H, W, Cqk); v: (B, H, W, Cv); index: (B, S*S, topk) -> (B, H, W, Cv).

    ``block_size``: tokens per FlexAttention block; default one region per block where the device allows
    it (see :func:`flex_block_size`). Any other value groups regions into blocks of that many tokens.
    """
    batch, height, width, _ = q.shape
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))
    problem = flex_request_problem(q.device.type, q.dtype, needs_grad)
    if problem is not None:
        alternatives = "'lean' (memory-lean, fast on CPU), 'sdpa', 'dense', 'gather', or 'auto' (picks one that runs)"
        raise RuntimeError(f"backend 'flex' cannot run this request: {problem}. Use {alternatives}.")
    rows = query_token_index(batch, height, width, n_win, q.device)
    q_r, k_r, v_r = (gather_tokens(t, rows, n_win * n_win) for t in (q, k, v))  # (B, S^2, n, C*): region order
    tokens_per_region = q_r.shape[2]
    block_size = flex_block_size(tokens_per_region, q.device.type) if block_size is None else block_size
    grouped = block_size != tokens_per_region
    if not grouped:
        block_mask = region_block_mask(index, tokens_per_region, with_backward=needs_grad)
    else:
        block_mask = grouped_block_mask(index, tokens_per_region, block_size, with_backward=needs_grad)
    # A partial block weighs its masked-out keys by zero, and zero times NaN is NaN: zero the non-finite keys and
    # values there, and make NaN the outputs they reach through the routing (bralib.ops.nonfinite's rule).
    clean = grouped and not known_finite(k, v)
    if clean:
        k_r, v_r = finite_or_zero(k_r), finite_or_zero(v_r)

    def sequence_heads(x: torch.Tensor) -> torch.Tensor:  # (B, S^2, n, C) -> (B, heads, S^2*n, C/heads), a view
        return head_view(x.reshape(batch, 1, -1, x.shape[-1]), num_heads)

    flex = _flex(q.device.type)
    out = flex(sequence_heads(q_r), sequence_heads(k_r), sequence_heads(v_r), block_mask=block_mask, scale=scale)
    out = merge_head_view(out, batch).reshape(batch, n_win * n_win, tokens_per_region, v.shape[-1])  # (B, S^2, n, Cv)
    out = from_regions(out, n_win, height, width)
    return add_routed_nan(out, routed_nan(k, v, index, num_heads=num_heads, n_win=n_win), n_win) if clean else out
