"""Checks for chapter 6, "Assembling BiFormer": a block's forward, a stage's parameters, the feature-map sizes."""

from __future__ import annotations

import torch

import bralib
from bralib.exercises import Case, exercise
from bralib.models import BiFormerBlock, count_parameters


def _block(seed: int, **kwargs) -> BiFormerBlock:
    torch.manual_seed(seed)
    block = BiFormerBlock(**kwargs).double().eval()
    for parameter in block.parameters():  # LayerNorms start at exactly 1 and 0: make mistakes visible
        parameter.data.add_(0.05 * torch.randn_like(parameter))
    return block


@exercise("block_forward")
def _block_forward():
    hint = (
        "x = x + pos_conv(x as NCHW) back to NHWC; x = x + attn(attn_norm(x)); x = x + mlp(mlp_norm(x)); "
        "pos_conv is None when the block has no position encoding"
    )
    for seed, (kwargs, shape, what) in enumerate([
        (dict(dim=16, num_heads=2, topk=2, n_win=2), (1, 4, 4, 16), "a BRA block: C=16, 2 heads, 2x2 regions, k=2"),
        (dict(dim=32, num_heads=4, topk=4, n_win=7), (2, 14, 21, 32), "two 14x21 maps, 7x7 regions as in BiFormer"),
        (dict(dim=16, num_heads=8, topk=None), (1, 7, 7, 16), "stage 4's block: global attention on a 7x7 map"),
        (dict(dim=16, num_heads=2, topk=1, n_win=2, pos_conv=0), (1, 4, 6, 16), "no position encoding (pos_conv=0)"),
    ]):  # fmt: skip
        block = _block(seed, **kwargs)
        x = torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        with torch.no_grad():
            expected = block(x)
        yield Case(what, args=(block, x), expected=expected, atol=1e-10, rtol=1e-8, hint=hint)


@exercise("stage_parameters")
def _stage_parameters():
    hint = (
        "per block: depthwise 3x3 pos conv (9C + C), two LayerNorms (2C each), attention (BRA: qkv 3C^2 + 3C, "
        "LCE 25C + C, proj C^2 + C; global: qkv 3C^2 without bias, proj C^2 + C, LePE 25C + C), MLP "
        "(C*rC + rC + rC*C + C); a stage after the first starts with a 3x3 conv (9*C_in*C + C) and a BatchNorm (2C)"
    )
    for name in ("biformer_tiny", "biformer_small", "biformer_base"):
        config = bralib.models.MODEL_CONFIGS[name]
        with torch.device("meta"):  # shapes only: counting needs no weights
            model = bralib.create_model(name)
        for stage in range(4):
            kwargs = {
                "dim": config.dims[stage],
                "depth": config.depths[stage],
                "in_dim": config.dims[stage - 1] if stage else None,
                "global_attention": config.topks[stage] is None,
            }
            what = f"{name}, stage {stage + 1}: C={kwargs['dim']}, {kwargs['depth']} blocks"
            expected = count_parameters(model.stages[stage])
            yield Case(what, kwargs=kwargs, expected=expected, hint=hint)


@exercise("feature_sizes")
def _feature_sizes():
    hint = "every stride-2 step (two in the stem, one per later stage) rounds up: ceil(H / 4), ceil(H / 8), ..."
    for height, width, what in [
        (224, 224, "224x224, the classification size"),
        (230, 310, "230x310: sizes that are not multiples of 32"),
        (33, 47, "a small odd-sized image"),
        (1, 1, "a single pixel"),
    ]:
        model = bralib.create_model("biformer_nano", features_only=True, auto_pad=True).eval()
        with torch.no_grad():
            maps = model(torch.zeros(1, 3, height, width))
        expected = [tuple(m.shape[2:]) for m in maps]
        yield Case(what, args=(height, width), expected=expected, hint=hint)


@exercise("padding_overhead")
def _padding_overhead():
    hint = "padded side = ceil(side / n_win) * n_win; overhead = 1 - side**2 / padded**2, for sides size/4, /8, /16"
    for image_size, n_win, what in [
        (224, 7, "224x224, S=7: nothing to pad"),
        (512, 7, "512x512, S=7: every stage pads"),
        (512, 8, "512x512, S=8"),
        (640, 7, "640x640, S=7"),
        (1024, 12, "1024x1024, S=12"),
    ]:
        expected = []
        for stage in range(3):
            side = image_size // 4 // 2**stage
            padded = side + (-side) % n_win  # what BiLevelRoutingAttention(auto_pad=True) pads each side to
            expected.append(1 - side**2 / padded**2)
        yield Case(what, args=(image_size,), kwargs={"n_win": n_win}, expected=expected, atol=1e-12, hint=hint)
