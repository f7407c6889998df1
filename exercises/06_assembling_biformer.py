"""Exercises for chapter 6, "Assembling BiFormer".

Tags: difficulty, and kind (*transcription*, *design* or *experiment*, as in chapter 0). Check your functions
from the chapter's notebook or a terminal:

    bralib exercise check --chapter 6
"""

import torch


def block_forward(block, x: torch.Tensor) -> torch.Tensor:
    """[easy, transcription] The forward pass of a BiFormer block, written with its parts (do not call ``block(x)``).

    block: a ``bralib.models.BiFormerBlock`` in eval mode, with the submodules ``pos_conv`` (a depthwise
    Conv2d, or None), ``attn_norm``, ``attn``, ``mlp_norm`` and ``mlp``; x: (B, H, W, C), channels-last.
    Returns (B, H, W, C): position encoding, then pre-norm attention and pre-norm MLP, each with a residual.
    (In eval mode drop path is the identity: leave it out.)
    """
    raise NotImplementedError("fill in block_forward")


def stage_parameters(dim: int, depth: int, in_dim: int | None = None, global_attention: bool = False) -> int:
    """[hard, design] Parameters of one BiFormer stage, counted by hand (no model, no torch).

    dim: channels C of the stage; depth: blocks; in_dim: channels of the previous stage (None for the first
    stage, which gets its input from the stem and has no downsampling layer); global_attention: the stage uses
    stage 4's plain attention instead of BRA. MLP ratio 3, position-encoding kernel 3, LCE/LePE kernel 5.
    """
    raise NotImplementedError("fill in stage_parameters")


def feature_sizes(height: int, width: int) -> list[tuple[int, int]]:
    """[easy, design] (h, w) of BiFormer's four feature maps (strides 4, 8, 16, 32) for an image of height x width.

    With auto_pad, BRA pads each map internally and crops it again, so only the convolutions set the sizes.
    """
    raise NotImplementedError("fill in feature_sizes")


def padding_overhead(image_size: int, n_win: int = 7) -> list[float]:
    """[medium, experiment] The share of padded, empty tokens BRA computes on in each routed stage.

    A square image of image_size pixels (a multiple of 32) gives stages 1-3 maps of image_size // 4, // 8 and
    // 16 tokens per side. With auto_pad, BRA pads each map with zeros to the next multiple of n_win per side,
    attends on the padded map, and crops. For each of the three stages return the fraction of the padded map's
    tokens that are padding, 1 - side**2 / padded_side**2, as a Python float.

    Then experiment: tabulate it for 224, 256, 384, 512, 640 and 1024 with n_win = 7 and n_win = 8. Which
    sizes waste nothing with BiFormer's S = 7, and why was 224 a lucky size? What would you choose for 512?
    """
    raise NotImplementedError("fill in padding_overhead")
