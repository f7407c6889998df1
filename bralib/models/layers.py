"""Generic pieces of the BiFormer network: drop path, the MLP, and the global attention of the last stage.

All of them work on channels-last maps (B, H, W, C), the layout BiFormer's blocks use.
"""

from __future__ import annotations

import torch
from torch import nn

from bralib.errors import UsageError
from bralib.ops.validate import check_heads, check_positive_int


def drop_path(x: torch.Tensor, drop_prob: float, training: bool) -> torch.Tensor:
    """Stochastic depth: zero the whole residual branch of a random subset of samples (rate ``drop_prob``).

    Survivors are scaled by 1 / (1 - drop_prob), so the expected output is unchanged and evaluation
    needs no rescaling.
    """
    if drop_prob == 0.0 or not training:
        return x
    keep = 1.0 - drop_prob
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)  # one coin per sample, broadcast over the rest
    mask = x.new_empty(shape).bernoulli_(keep)  # on x's device and dtype: nothing is created on the CPU
    return x * mask / keep


class DropPath(nn.Module):
    """:func:`drop_path` as a module (identity in eval mode or with ``drop_prob=0``)."""

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        if isinstance(drop_prob, bool) or not isinstance(drop_prob, int | float) or not 0.0 <= drop_prob < 1.0:
            raise UsageError(f"drop_prob must be a number in [0, 1), got {drop_prob!r}")
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return drop_path(x, self.drop_prob, self.training)

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob:.3f}"


class Mlp(nn.Module):
    """The transformer's feed-forward part: Linear(C -> ratio*C), GELU, Linear(ratio*C -> C), on the last dim."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        check_positive_int("dim", dim)
        check_positive_int("hidden_dim", hidden_dim)
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class GlobalAttention(nn.Module):
    """Plain multi-head self-attention over all H*W tokens, plus a local positional term (stage 4 of BiFormer).

    At 224x224 the last stage is a 7x7 map: one region per token, so routing would select everything
    anyway and the released models use ordinary attention there. As released:

    * ``qkv`` has no bias and the scale is per head, ``head_dim ** -0.5`` (unlike BRA's "official" scale);
    * ``lepe`` (locally-enhanced positional encoding) is a depthwise conv on the attention's *input* x,
      not on V as BRA's local context enhancement is, added to the attention output before ``proj``.

    Args:
        dim: channels C.
        num_heads: attention heads (must divide ``dim``); the released models use 8.
        lepe_kernel: kernel size of the depthwise conv; 0 disables it.
    """

    def __init__(self, dim: int, num_heads: int = 8, lepe_kernel: int = 5) -> None:
        super().__init__()
        check_positive_int("dim", dim)
        check_heads("dim", dim, num_heads)
        even = isinstance(lepe_kernel, int) and lepe_kernel > 0 and lepe_kernel % 2 == 0
        if isinstance(lepe_kernel, bool) or not isinstance(lepe_kernel, int) or lepe_kernel < 0 or even:
            raise UsageError(f"lepe_kernel must be 0 (none) or an odd kernel size, got {lepe_kernel!r}")
        self.dim, self.num_heads = dim, num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)  # rows: q | k | v
        self.lepe = nn.Conv2d(dim, dim, lepe_kernel, padding=lepe_kernel // 2, groups=dim) if lepe_kernel else None
        self.proj = nn.Linear(dim, dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_heads={self.num_heads}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, H, W, C) -> (B, H, W, C)."""
        batch, height, width, channels = x.shape
        head_dim = channels // self.num_heads
        qkv = self.qkv(x).reshape(batch, height * width, 3, self.num_heads, head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, heads, N, d)
        # Explicit matmuls rather than scaled_dot_product_attention: at 7x7 tokens it costs nothing, and
        # FLOP counters see matmuls (they miss the fused CPU SDPA kernel).
        attn = torch.softmax((q * self.scale) @ k.transpose(-2, -1), dim=-1)  # (B, heads, N, N)
        out = (attn @ v).transpose(1, 2).reshape(batch, height, width, channels)  # (B, H, W, C)
        if self.lepe is not None:
            out = out + self.lepe(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return self.proj(out)


def init_weights(module: nn.Module) -> None:
    """Truncated-normal (std 0.02) linear weights and zero biases, unit LayerNorms; convs keep PyTorch's default.

    The initialisation of the official BiFormer (and of timm's vision transformers), for ``model.apply``.
    """
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
