"""Solutions for chapter 6, "Assembling BiFormer"."""

import torch


def block_forward(block, x: torch.Tensor) -> torch.Tensor:
    """Three residual steps; the depthwise conv wants NCHW, so permute in and out."""
    if block.pos_conv is not None:
        x = x + block.pos_conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
    x = x + block.attn(block.attn_norm(x))
    return x + block.mlp(block.mlp_norm(x))


def stage_parameters(dim: int, depth: int, in_dim: int | None = None, global_attention: bool = False) -> int:
    """Weights plus biases, module by module; ``c`` is the stage's width, the MLP is 3c wide.

    Which layer kind holds most of a block's parameters: the MLP's two linear layers, 6c^2 of the block's 10c^2
    (qkv 3c^2 and the output projection c^2 hold the rest); convolutions, norms and biases are only linear in c.
    """
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
    """A 3x3 stride-2 conv with padding 1 maps n to ceil(n / 2); two in the stem, then one per stage.

    230x310 gives (58, 78), (29, 39), (15, 20), (8, 10); 224x320 gives (56, 80), (28, 40), (14, 20), (7, 10).
    Why detection code pads to a multiple of 32 anyway: with ceil at every step, a map at stride 32 no longer
    lines up exactly with the pixels (230 / 32 = 7.2 cells become 8), so the features of different strides
    disagree by a fraction of a cell at the borders, upsampling in a feature pyramid does not give back the
    same sizes, and BRA must pad the maps to multiples of n_win again, stage by stage.
    """
    sizes = []
    h, w = height, width
    for stage in range(4):
        steps = 2 if stage == 0 else 1
        for _ in range(steps):
            h, w = -(-h // 2), -(-w // 2)
        sizes.append((h, w))
    return sizes


def padding_overhead(image_size: int, n_win: int = 7) -> list[float]:
    """Each stage's side rounded up to a multiple of n_win; the share of the padded tokens.

    What the experiment shows: with S = 7 only sizes whose stage-3 side is a multiple of 7 waste nothing,
    i.e. image_size a multiple of 7 * 16 = 112 (224, 448, 672, ...): 224 = 7 * 32 was chosen so that all four
    maps (56, 28, 14, 7) divide by 7. At 512 the maps 128, 64, 32 pad to 133, 70, 35: about 7%, 16% and 16% of
    the tokens attended on are zeros. S = 8 (or 16, 32) divides all of 512's maps and wastes nothing: for
    512, pick a power of two, e.g. S = 16 as in chapter 0's plan_regions.
    """
    overheads = []
    for stage in range(3):
        side = image_size // 4 // 2**stage
        padded = -(-side // n_win) * n_win  # the next multiple of n_win
        overheads.append(1 - side**2 / padded**2)
    return overheads
