"""Solutions for chapter 6, "Assembling BiFormer"."""

import torch


def block_forward(block, x: torch.Tensor) -> torch.Tensor:
    """Three residual steps; the depthwise conv wants NCHW, so permute in and out."""
    if block.pos_conv is not None:
        x = x + block.pos_conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
    x = x + block.attn(block.attn_norm(x))
    return x + block.mlp(block.mlp_norm(x))


def stage_parameters(dim: int, depth: int, in_dim: int | None = None, global_attention: bool = False) -> int:
    """Weights plus biases, module by module; ``c`` is the stage's width, the MLP is 3c wide."""
    c, hidden = dim, 3 * dim
    pos_conv = 9 * c + c  # depthwise 3x3: one 3x3 filter and one bias per channel
    norms = 2 * (2 * c)  # two LayerNorms, each a scale and a shift per channel
    if global_attention:
        attention = 3 * c * c + (c * c + c) + (25 * c + c)  # qkv without bias, proj, LePE 5x5
    else:
        attention = (3 * c * c + 3 * c) + (25 * c + c) + (c * c + c)  # qkv, LCE 5x5, proj
    mlp = (c * hidden + hidden) + (hidden * c + c)
    block = pos_conv + norms + attention + mlp
    downsample = 0 if in_dim is None else (9 * in_dim * c + c) + 2 * c  # conv 3x3 stride 2, BatchNorm
    return downsample + depth * block


def feature_sizes(height: int, width: int) -> list[tuple[int, int]]:
    """A 3x3 stride-2 conv with padding 1 maps n to ceil(n / 2); two in the stem, then one per stage."""
    sizes = []
    h, w = height, width
    for stage in range(4):
        steps = 2 if stage == 0 else 1
        for _ in range(steps):
            h, w = -(-h // 2), -(-w // 2)
        sizes.append((h, w))
    return sizes
