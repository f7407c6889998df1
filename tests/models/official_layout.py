"""An independent model of the released BiFormer for tests: its checkpoint layout and its forward pass.

Written from the released code's documented key layout and module details, not from bralib's code:
:func:`official_state_dict` builds a state dict with the released names and shapes, :func:`official_forward`
computes the released network's output straight from such a dict (the legacy BRA with its torch.gather over
an expanded K/V, the ``qk_dim ** -0.5`` scale in routing and in token attention, LCE on V, stage-4 attention
with LePE on x). If bralib's key table or modules disagree with the release, outputs differ.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

N_WIN = 7
TOPKS = (1, 4, 16, None)  # None: stage 4's plain attention (the release's -2)


def official_shapes(dims, depths, num_classes=1000, mlp_ratio=3) -> dict[str, tuple[int, ...]]:
    """Key -> shape of the released model's state dict, in the order the released model registers them."""
    shapes: dict[str, tuple[int, ...]] = {}

    def bn(prefix, c):
        shapes.update({f"{prefix}.weight": (c,), f"{prefix}.bias": (c,), f"{prefix}.running_mean": (c,)})
        shapes.update({f"{prefix}.running_var": (c,), f"{prefix}.num_batches_tracked": ()})

    def conv(prefix, c_out, c_in, k, bias=True):
        shapes[f"{prefix}.weight"] = (c_out, c_in, k, k)
        if bias:
            shapes[f"{prefix}.bias"] = (c_out,)

    def linear(prefix, c_out, c_in, bias=True):
        shapes[f"{prefix}.weight"] = (c_out, c_in)
        if bias:
            shapes[f"{prefix}.bias"] = (c_out,)

    def ln(prefix, c):
        shapes.update({f"{prefix}.weight": (c,), f"{prefix}.bias": (c,)})

    conv("downsample_layers.0.0", dims[0] // 2, 3, 3)
    bn("downsample_layers.0.1", dims[0] // 2)
    conv("downsample_layers.0.3", dims[0], dims[0] // 2, 3)
    bn("downsample_layers.0.4", dims[0])
    for i in range(1, 4):
        conv(f"downsample_layers.{i}.0", dims[i], dims[i - 1], 3)
        bn(f"downsample_layers.{i}.1", dims[i])
    for i, (c, depth) in enumerate(zip(dims, depths, strict=True)):
        for j in range(depth):
            p = f"stages.{i}.{j}"
            conv(f"{p}.pos_embed", c, 1, 3)
            ln(f"{p}.norm1", c)
            if TOPKS[i] is not None:
                conv(f"{p}.attn.lepe", c, 1, 5)
                linear(f"{p}.attn.qkv.qkv", 3 * c, c)
                linear(f"{p}.attn.wo", c, c)
            else:
                linear(f"{p}.attn.qkv", 3 * c, c, bias=False)
                linear(f"{p}.attn.proj", c, c)
                conv(f"{p}.attn.lepe", c, 1, 5)
            ln(f"{p}.norm2", c)
            linear(f"{p}.mlp.0", mlp_ratio * c, c)
            linear(f"{p}.mlp.3", c, mlp_ratio * c)
    bn("norm", dims[-1])
    linear("head", num_classes, dims[-1])
    return shapes


def official_state_dict(dims, depths, num_classes=1000, seed=0, dtype=torch.float64) -> dict[str, torch.Tensor]:
    """Random weights in the released layout; BatchNorm statistics random too (variances positive)."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in official_shapes(dims, depths, num_classes).items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(100)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=gen, dtype=dtype) + 0.5
        else:
            fan_in = shape[1] * (shape[2] * shape[3] if len(shape) == 4 else 1) if len(shape) > 1 else 1
            scale = fan_in**-0.5 if len(shape) > 1 else 0.1
            state[key] = torch.randn(shape, generator=gen, dtype=dtype) * scale
            if len(shape) == 1 and key.endswith("weight"):  # LayerNorm and BatchNorm scales near 1
                state[key] = 1.0 + state[key]
    return state


def _bn(x, sd, p):
    return F.batch_norm(x, sd[f"{p}.running_mean"], sd[f"{p}.running_var"], sd[f"{p}.weight"], sd[f"{p}.bias"])


def _dwconv(x_nhwc, sd, p, k):
    out = F.conv2d(
        x_nhwc.permute(0, 3, 1, 2), sd[f"{p}.weight"], sd[f"{p}.bias"], padding=k // 2, groups=x_nhwc.shape[-1]
    )
    return out.permute(0, 2, 3, 1)


def _bra(x, sd, p, heads, topk):
    """The released legacy BRA on (N, H, W, C), no padding."""
    n, height, width, c = x.shape
    h, w, s2 = height // N_WIN, width // N_WIN, N_WIN * N_WIN
    scale = c**-0.5  # the release: qk_dim ** -0.5 for routing and token attention alike
    x = x.reshape(n, N_WIN, h, N_WIN, w, c).permute(0, 1, 3, 2, 4, 5).reshape(n, s2, h, w, c)
    qkv = F.linear(x, sd[f"{p}.qkv.qkv.weight"], sd[f"{p}.qkv.qkv.bias"])
    q, kv = qkv[..., :c], qkv[..., c:]
    q_pix, kv_pix = q.reshape(n, s2, h * w, c), kv.reshape(n, s2, h * w, 2 * c)
    q_win, k_win = q.mean([2, 3]), kv[..., :c].mean([2, 3])  # (n, s2, c)
    v_img = kv[..., c:].reshape(n, N_WIN, N_WIN, h, w, c).permute(0, 5, 1, 3, 2, 4).reshape(n, c, height, width)
    lepe = F.conv2d(v_img, sd[f"{p}.lepe.weight"], sd[f"{p}.lepe.bias"], padding=2, groups=c)  # (n, c, H, W)
    logits = (q_win.detach() * scale) @ k_win.detach().transpose(-2, -1)
    index = torch.topk(logits, k=topk, dim=-1).indices  # (n, s2, topk)
    expanded = kv_pix.view(n, 1, s2, h * w, 2 * c).expand(-1, s2, -1, -1, -1)
    selected = torch.gather(expanded, 2, index.view(n, s2, topk, 1, 1).expand(-1, -1, -1, h * w, 2 * c))
    k_sel, v_sel = selected[..., :c], selected[..., c:]  # (n, s2, topk, hw, c)
    d = c // heads
    k_sel = k_sel.reshape(n * s2, topk * h * w, heads, d).permute(0, 2, 3, 1)  # (n s2, m, d, topk hw)
    v_sel = v_sel.reshape(n * s2, topk * h * w, heads, d).permute(0, 2, 1, 3)  # (n s2, m, topk hw, d)
    q_pix = q_pix.reshape(n * s2, h * w, heads, d).permute(0, 2, 1, 3)  # (n s2, m, hw, d)
    out = torch.softmax((q_pix * scale) @ k_sel, dim=-1) @ v_sel  # (n s2, m, hw, d)
    out = out.permute(0, 2, 1, 3).reshape(n, N_WIN, N_WIN, h, w, c).permute(0, 1, 3, 2, 4, 5)
    out = out.reshape(n, height, width, c) + lepe.permute(0, 2, 3, 1)
    return F.linear(out, sd[f"{p}.wo.weight"], sd[f"{p}.wo.bias"])


def _attention_lepe(x, sd, p, heads=8):
    n, height, width, c = x.shape
    tokens = x.reshape(n, height * width, c)
    qkv = F.linear(tokens, sd[f"{p}.qkv.weight"]).reshape(n, height * width, 3, heads, c // heads)
    q, k, v = qkv.permute(2, 0, 3, 1, 4)
    attn = torch.softmax((q @ k.transpose(-2, -1)) * (c // heads) ** -0.5, dim=-1)
    out = (attn @ v).transpose(1, 2).reshape(n, height, width, c) + _dwconv(x, sd, f"{p}.lepe", 5)
    return F.linear(out, sd[f"{p}.proj.weight"], sd[f"{p}.proj.bias"])


def official_forward(sd: dict[str, torch.Tensor], images: torch.Tensor, dims, depths) -> torch.Tensor:
    """Logits of the released BiFormer (eval mode) with the weights ``sd`` in the released layout."""
    x = F.conv2d(images, sd["downsample_layers.0.0.weight"], sd["downsample_layers.0.0.bias"], stride=2, padding=1)
    x = F.gelu(_bn(x, sd, "downsample_layers.0.1"))
    x = F.conv2d(x, sd["downsample_layers.0.3.weight"], sd["downsample_layers.0.3.bias"], stride=2, padding=1)
    x = _bn(x, sd, "downsample_layers.0.4")
    for i, (c, depth) in enumerate(zip(dims, depths, strict=True)):
        if i:
            w, b = sd[f"downsample_layers.{i}.0.weight"], sd[f"downsample_layers.{i}.0.bias"]
            x = _bn(F.conv2d(x, w, b, stride=2, padding=1), sd, f"downsample_layers.{i}.1")
        x = x.permute(0, 2, 3, 1)
        for j in range(depth):
            p = f"stages.{i}.{j}"
            x = x + _dwconv(x, sd, f"{p}.pos_embed", 3)
            y = F.layer_norm(x, (c,), sd[f"{p}.norm1.weight"], sd[f"{p}.norm1.bias"], eps=1e-6)
            x = x + (_bra(y, sd, f"{p}.attn", c // 32, TOPKS[i]) if TOPKS[i] else _attention_lepe(y, sd, f"{p}.attn"))
            y = F.layer_norm(x, (c,), sd[f"{p}.norm2.weight"], sd[f"{p}.norm2.bias"], eps=1e-6)
            y = F.gelu(F.linear(y, sd[f"{p}.mlp.0.weight"], sd[f"{p}.mlp.0.bias"]))
            x = x + F.linear(y, sd[f"{p}.mlp.3.weight"], sd[f"{p}.mlp.3.bias"])
        x = x.permute(0, 3, 1, 2)
    x = _bn(x, sd, "norm").mean([2, 3])
    return F.linear(x, sd["head.weight"], sd["head.bias"])
