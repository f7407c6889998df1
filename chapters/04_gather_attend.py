# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Chapter 4 — Gather, attend, enhance
#
# Chapter 3 produced the routing index: for each of the $S^2$ regions, the $k$ regions its queries should
# look at. This chapter finishes Bi-Level Routing Attention: **gather** the keys and values of the routed
# regions, **attend** token to token, with several heads, **enhance** with a small depthwise convolution
# (the local context enhancement, LCE), project, and wrap it all in a layer. Then we check it from every side.
#
# **Learning goals.** After this chapter you can
#
# 1. gather the routed regions' keys and values into one (k·HW/S²)-token set per region, and attend to it;
# 2. split the attention into heads that share one routing graph;
# 3. add the LCE and the output projection, and build `BiLevelRoutingAttention` from its parts;
# 4. check a fast implementation four ways: against the dense masked reference, a naive loop, full attention
#    (k = S²), and finite differences (`gradcheck`);
# 5. explain why routing gets no gradient, and how the paper's scale differs from the released code's.

# %% [markdown]
# ## Motivation: Algorithm 1, steps 6-9
#
# 6. gather key and value of the routed regions: $K^g = \mathrm{gather}(K, I^r)$, $V^g = \mathrm{gather}(V,
#    I^r)$, each $(S^2, k\,HW/S^2, C)$;
# 7. token-to-token attention: $O = \mathrm{softmax}(Q (K^g)^\top)\, V^g$ (Algorithm 1 prints no scale; section
#    7 says which scale the text and the released code use);
# 8. output = attention + dwconv(V) (local context enhancement);
# 9. unpatchify back to (H, W, C).
#
# The paper's claim {cite:p}`zhu2023biformer` is that this is *the same* as attending to every token of the $k$ routed regions (a
# sparse, content-aware mask, chapter 2), computed with dense matrix products only: no sparse kernels
# needed, because whole regions are gathered.

# %%
import math
import statistics
import time

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from torch import nn

from bralib.ops import BACKENDS, BiLevelRoutingAttention, bra, from_regions, masks, route_regions, to_regions
from bralib.ops.backends.gather import gather_kv
from bralib.viz.routing import draw_routing, draw_token_attention, sample_image, simple_features

_ = torch.manual_seed(0)  # (the generator it returns is not needed)

# %% [markdown]
# ## 1. Gather
#
# Keys and values are cut into regions as in chapter 3: (B, S², n, C) with n = HW/S² tokens per region.
# For region $r$ we need the $k$ regions `index[b, r]`: an indexing problem. With advanced indexing, a
# (B, 1, 1) batch number next to the (B, S², k) index picks, for every (b, r, t), the whole region
# `kv_regions[b, index[b, r, t]]`.


# %%
def gather(kv_regions, index):
    """kv_regions: (B, S*S, n, C); index: (B, S*S, k) -> (B, S*S, k, n, C): the k routed regions of each region."""
    batch = torch.arange(kv_regions.shape[0])[:, None, None]  # (B, 1, 1), broadcasts against index
    return kv_regions[batch, index]  # (B, S*S, k, n, C)


B, H, W, C, n_win, topk = 2, 12, 18, 8, 3, 2  # 9 regions of 4 x 6 = 24 tokens; not square on purpose
q, k, v = torch.randn(B, H, W, C), torch.randn(B, H, W, C), torch.randn(B, H, W, 5)  # values: another width
_, index = route_regions(q, k, n_win=n_win, topk=topk)  # (B, 9, 2)
k_regions = to_regions(k, n_win)  # (B, 9, 24, C)
k_gathered = gather(k_regions, index)  # (B, 9, 2, 24, C)
print("index", tuple(index.shape), "-> gathered keys", tuple(k_gathered.shape))
b, r, t = 1, 4, 1
assert torch.equal(k_gathered[b, r, t], k_regions[b, index[b, r, t]])
assert torch.equal(k_gathered, gather_kv(k_regions, index))  # bralib's version

# %% [markdown]
# Drawn as memory: the first image's index above, region by region. K holds each region once; $K^g$ holds,
# for every query region, copies of its $k$ routed regions side by side, so the attention can read them as
# one contiguous block.

# %% mystnb={"figure": {"caption": "The gather's memory layout for the first image of this section (S = 3, k = 2): K in region order, each region stored once (top, with how often it is copied), and the gathered K^g, one row of k region copies per query region (bottom): k times the size of K, whatever the routing.", "name": "fig-gather-layout"}}
from bralib.viz import draw_gather_layout

draw_gather_layout(n_win=n_win, topk=topk, index=index[0])
plt.show()

# %% [markdown]
# The gathered tensor is $k$ times larger than K itself: each region appears once for every region that
# routes to it. That copy is the price of using dense matrix products, and the paper's stated limitation
# (throughput does not follow FLOPs, because of gather memory traffic). How the copy is made matters too:
# the released code gathers with `torch.gather` from a (B, S², S², n, C) broadcast view, whose backward
# allocates a gradient buffer $S^2$ times the size of K; `gather_kv` selects whole regions with
# `index_select`, whose backward accumulates into a K-sized buffer. Same numbers, different memory.
#
# ## 2. Attend: one head
#
# Every region's $n$ queries attend to its $k\,n$ gathered keys: merge the (k, n) axes into one key axis,
# and it is chapter 1's attention, batched over (B, S²). Then `from_regions` puts the tokens back on the map.


# %%
def routed_attention_one_head(q, k, v, index, n_win):
    """q, k: (B, H, W, C); v: (B, H, W, Cv); index: (B, S*S, topk) -> (B, H, W, Cv)."""
    q_r = to_regions(q, n_win)  # (B, S^2, n, C)
    k_g = gather(to_regions(k, n_win), index).flatten(2, 3)  # (B, S^2, k*n, C)
    v_g = gather(to_regions(v, n_win), index).flatten(2, 3)  # (B, S^2, k*n, Cv)
    weights = torch.softmax(q_r @ k_g.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)  # (B, S^2, n, k*n)
    return from_regions(weights @ v_g, n_win, q.shape[1], q.shape[2])  # (B, H, W, Cv)


out = routed_attention_one_head(q, k, v, index, n_win)
print("out", tuple(out.shape))

# %% [markdown]
# Is it right? Chapter 2's dense reference says what it should be: attention over all $HW$ tokens, with the
# routed token mask.

# %%
mask = masks.routed_mask(index, H, W, n_win)  # (B, N, N)
dense = masks.masked_attention(q.flatten(1, 2), k.flatten(1, 2), v.flatten(1, 2), mask, C**-0.5)  # (B, N, 5)
torch.testing.assert_close(out, dense.reshape(B, H, W, 5), atol=1e-6, rtol=1e-5)

# %% [markdown]
# ## 3. Many heads, one routing graph
#
# With $h$ heads, the $C$ channels are split into $h$ groups of $d = C/h$; each head attends on its own
# channels with scale $d^{-1/2}$, and the heads' outputs are concatenated. All heads use the *same* routing
# index, computed once from all channels (chapter 3): routing is per region, not per head.


# %%
def routed_attention(q, k, v, index, n_win, num_heads, scale=None):
    """Multi-head BRA token attention. q, k: (B, H, W, C); v: (B, H, W, Cv); index: (B, S*S, topk)."""
    scale = (q.shape[-1] // num_heads) ** -0.5 if scale is None else scale

    def split_heads(t):  # (B, S^2, m, C) -> (B, S^2, heads, m, C/heads)
        return t.unflatten(-1, (num_heads, -1)).transpose(2, 3)

    q_r = split_heads(to_regions(q, n_win))  # (B, S^2, heads, n, d)
    k_g = split_heads(gather(to_regions(k, n_win), index).flatten(2, 3))  # (B, S^2, heads, k*n, d)
    v_g = split_heads(gather(to_regions(v, n_win), index).flatten(2, 3))  # (B, S^2, heads, k*n, dv)
    weights = torch.softmax((q_r @ k_g.transpose(-1, -2)) * scale, dim=-1)  # (B, S^2, heads, n, k*n)
    out = (weights @ v_g).transpose(2, 3).flatten(-2)  # (B, S^2, n, Cv): heads side by side again
    return from_regions(out, n_win, q.shape[1], q.shape[2])


torch.testing.assert_close(routed_attention(q, k, v, index, n_win, num_heads=1), out)
v8 = torch.randn(B, H, W, 4)  # 4 value channels: 2 per head
for backend in ("reference", "gather"):
    lib = bra(q, k, v8, num_heads=2, n_win=n_win, topk=topk, backend=backend, routing_index=index)
    torch.testing.assert_close(routed_attention(q, k, v8, index, n_win, num_heads=2), lib, atol=1e-6, rtol=1e-5)

# %% [markdown]
# ### A naive loop, written from the definition
#
# The vectorised code is dense with reshapes. Here is the same computation as nested Python loops that only
# slice the map: for each image, each region and each head, collect the routed regions' keys and values and
# attend. Slow, but independent of `to_regions`, `gather` and every reshape above.


# %%
def routed_attention_loop(q, k, v, index, n_win, num_heads):
    batch, height, width, channels = q.shape
    h, w = height // n_win, width // n_win
    d, dv = channels // num_heads, v.shape[-1] // num_heads
    out = torch.zeros(batch, height, width, v.shape[-1], dtype=v.dtype)

    def tokens(t, b, region):  # the (h*w, channels) tokens of one region of map t
        i, j = divmod(int(region), n_win)
        return t[b, i * h : (i + 1) * h, j * w : (j + 1) * w].reshape(h * w, -1)

    for b in range(batch):
        for region in range(n_win * n_win):
            keys = torch.cat([tokens(k, b, s) for s in index[b, region]])  # (k*n, C)
            values = torch.cat([tokens(v, b, s) for s in index[b, region]])  # (k*n, Cv)
            queries = tokens(q, b, region)  # (n, C)
            heads = []
            for head in range(num_heads):
                qh, kh = queries[:, head * d : (head + 1) * d], keys[:, head * d : (head + 1) * d]
                vh = values[:, head * dv : (head + 1) * dv]
                heads.append(F.scaled_dot_product_attention(qh, kh, vh))
            i, j = divmod(region, n_win)
            out[b, i * h : (i + 1) * h, j * w : (j + 1) * w] = torch.cat(heads, -1).reshape(h, w, -1)
    return out


torch.testing.assert_close(
    routed_attention_loop(q, k, v8, index, n_win, 2), routed_attention(q, k, v8, index, n_win, 2)
)

# %% [markdown]
# ### Every backend equals the dense reference
#
# `bralib.ops.BACKENDS` holds interchangeable implementations of this step (they differ in speed and
# memory; later chapters measure them). Whatever they do inside, each must equal the dense masked reference.
# The loop below runs every registered backend, so a backend added later is checked here too, on a few
# shapes: non-square maps, $C_{qk} \ne C_v$, several heads, float32 and float64. A backend is skipped only
# when its registry entry says it cannot run here (one that must be compiled first, which takes longer than a
# chapter may, or the fused Triton kernel, which needs a GPU or Triton's slow interpreter: chapter 9 runs it
# in the interpreter, and the test suite covers both).

# %%
configs = [  # (B, H, W, Cqk, Cv, heads, S, k, dtype)
    (2, 12, 18, 8, 4, 2, 3, 2, torch.float32),
    (1, 14, 14, 16, 16, 4, 7, 4, torch.float32),
    (2, 8, 8, 6, 9, 3, 4, 16, torch.float64),
]
for name, backend in BACKENDS.items():
    if backend.needs_compile:  # the registry says so; tests/ops runs it
        print(
            f"{name:<10} skipped here: it is compiled with torch.compile first, which takes longer than a chapter may"
        )
        continue
    unavailable = backend.available("cpu") if backend.available else None
    if unavailable:  # e.g. the Triton kernel, which needs a GPU or Triton's (slow) interpreter: chapter 9 runs it
        print(f"{name:<10} skipped here: {unavailable}")
        continue
    worst, skipped = 0.0, []
    for batch, height, width, c_qk, c_v, heads, s, k_, dtype in configs:
        reason = backend.problem("cpu", dtype, needs_grad=False)  # the registry's word on what it supports
        if reason:
            skipped.append(reason)
            continue
        gen = torch.Generator().manual_seed(height)
        qc, kc = (torch.randn(batch, height, width, c_qk, generator=gen, dtype=dtype) for _ in range(2))
        vc = torch.randn(batch, height, width, c_v, generator=gen, dtype=dtype)
        _, idx = route_regions(qc, kc, n_win=s, topk=k_)
        scale = (c_qk // heads) ** -0.5
        got = backend.fn(qc, kc, vc, idx, num_heads=heads, n_win=s, scale=scale)
        split = [t.flatten(1, 2).unflatten(-1, (heads, -1)).transpose(1, 2) for t in (qc, kc, vc)]
        expected = masks.masked_attention(*split, masks.routed_mask(idx, height, width, s)[:, None], scale)
        expected = expected.transpose(1, 2).reshape(batch, height, width, c_v)
        tolerance = 1e-5 if dtype == torch.float32 else 1e-10
        torch.testing.assert_close(got, expected, atol=tolerance, rtol=tolerance)
        worst = max(worst, (got - expected).abs().max().item())
    assert len(skipped) < len(configs), f"{name} ran on none of the shapes: {skipped}"
    note = f"; skipped {len(skipped)} shape(s): {'; '.join(skipped)}" if skipped else ""
    print(f"{name:<10} equals the reference on {len(configs) - len(skipped)} shapes (largest error {worst:.1e}){note}")

# %% [markdown]
# ### With k = S², BRA is full attention
#
# If every region routes to all $S^2$ regions, every query sees every token, and the order in which the
# regions were gathered does not matter: a softmax over a set of keys is a softmax over the same keys in any
# order. So BRA with $k = S^2$ must equal full multi-head attention.

# %%
full_index = route_regions(q, k, n_win=n_win, topk=n_win**2)[1]  # (B, 9, 9): all regions, in some order
split = [t.flatten(1, 2).unflatten(-1, (2, -1)).transpose(1, 2) for t in (q, k, v8)]  # (B, heads, N, d)
full = F.scaled_dot_product_attention(*split).transpose(1, 2).reshape(B, H, W, 4)
torch.testing.assert_close(routed_attention(q, k, v8, full_index, n_win, 2), full, atol=1e-6, rtol=1e-5)
torch.testing.assert_close(bra(q, k, v8, num_heads=2, n_win=n_win, topk=n_win**2), full, atol=1e-6, rtol=1e-5)

# %% [markdown]
# ## 4. What one query token sees
#
# Back to the astronaut of chapter 3, with its colour/texture features as queries and keys (scaled up, so
# the attention is sharp). For one query token on the face, the left panel shows where its region routes;
# the middle panel its attention weights under BRA, which live only in the routed regions; the right panel
# its weights under full attention, spread over everything that looks alike. (On this coarser 28×28 grid the
# face's region does not even route to itself, so the query's own neighbourhood gets no weight at all:
# section 5's local context enhancement is there for such cases.) The three panels are {numref}`fig-bra-vs-full`.

# %% mystnb={"figure": {"caption": "One query token on the face: where its region routes with $k = 4$ (left), its attention weights under BRA, which live only in the routed regions (middle), and under full attention (right).", "name": "fig-bra-vs-full"}}
picture = sample_image("astronaut", 112)
feat = simple_features(sample_image("astronaut", 28)) * 3.0  # (1, 28, 28, 5): 7 x 7 regions of 4 x 4 tokens
_, picture_index = route_regions(feat, feat, n_win=7, topk=4)
tokens_q = feat.flatten(1, 2)  # (1, 784, 5)
logits = tokens_q @ tokens_q.transpose(-1, -2)  # (1, 784, 784), scale folded into the features
routed_weights = torch.softmax(logits.masked_fill(~masks.routed_mask(picture_index, 28, 28, 7), float("-inf")), -1)
full_weights = torch.softmax(logits, -1)
query_token = (6, 13)  # row, column in the 28 x 28 token grid: on the face
query_flat = query_token[0] * 28 + query_token[1]
query_region = (query_token[0] // 4) * 7 + query_token[1] // 4

fig, axes = plt.subplots(1, 3, figsize=(12, 4.2))
draw_routing(picture, picture_index[0], 7, query_region, axes[0], title=f"region {query_region} routes to k=4")
bra_view = draw_token_attention(picture, routed_weights[0, query_flat].reshape(28, 28), query_token, axes[1],
                                n_win=7, title="BRA: weights of the query token")  # fmt: skip
draw_token_attention(picture, full_weights[0, query_flat].reshape(28, 28), query_token, axes[2],
                     title="full attention: weights of the same token")  # fmt: skip
plt.tight_layout()
plt.show()

# %%
seen = bra_view.heatmap.get_array()  # the (28, 28) weights drawn
assert abs(float(seen.sum()) - 1) < 1e-5  # a softmax row
assert int((~seen.mask).sum()) == 4 * 16  # non-zero on exactly k regions of 16 tokens
routed_full = full_weights[0, query_flat].reshape(7, 4, 7, 4).sum((1, 3)).flatten()[picture_index[0, query_region]]
print(f"region {query_region} routes to {picture_index[0, query_region].tolist()}; full attention puts "
      f"{routed_full.sum():.0%} of this query's weight on those 4 regions")  # fmt: skip

# %% [markdown]
# ## 5. Enhance and project: the whole layer
#
# Two pieces remain (Algorithm 1, step 8, and the layer's output projection):
#
# * **Local context enhancement (LCE)**: a depthwise 5×5 convolution of $V$, added to the attention output.
#   Whatever the routing chose, every token also gets a learned mix of its 5×5 neighbourhood (chapter 2
#   noted that nothing forces a region to route to itself). Depthwise: one 5×5 filter per channel
#   (`groups=C`), cheap.
# * **Output projection**: a linear layer on the channels, as in every attention layer.
#
# The layer starts, like any attention layer, with one linear map producing $q$, $k$ and $v$ from the input
# $x$ (rows in the order q | k | v, as in the released code). Here it is, assembled from this chapter's
# and chapter 3's pieces.


# %%
class MyBiLevelRoutingAttention(nn.Module):
    def __init__(self, dim, num_heads, n_win, topk, side_dwconv=5):
        super().__init__()
        self.num_heads, self.n_win, self.topk = num_heads, n_win, topk
        self.qkv = nn.Linear(dim, 3 * dim)  # rows: q | k | v
        self.lce = nn.Conv2d(dim, dim, side_dwconv, padding=side_dwconv // 2, groups=dim)  # depthwise
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):  # (B, H, W, C) -> (B, H, W, C)
        q, k, v = self.qkv(x).chunk(3, dim=-1)  # each (B, H, W, C)
        with torch.no_grad():  # routing: region means, adjacency, top-k (see section 6 for the no_grad)
            _, index = route_regions(q, k, n_win=self.n_win, topk=self.topk)
        out = routed_attention(q, k, v, index, self.n_win, self.num_heads)  # (B, H, W, C)
        out = out + self.lce(v.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)  # conv2d wants (B, C, H, W)
        return self.proj(out)


torch.manual_seed(0)
mine = MyBiLevelRoutingAttention(dim=16, num_heads=2, n_win=7, topk=4).double()
library = BiLevelRoutingAttention(dim=16, num_heads=2, n_win=7, topk=4).double()
library.load_state_dict(mine.state_dict())  # same parameter names: qkv, lce, proj
print(library)

x = torch.randn(2, 14, 21, 16, dtype=torch.float64)
torch.testing.assert_close(mine(x), library(x))

# %% [markdown]
# `BiLevelRoutingAttention` computes its routing from the region means of $x$, projected, rather than from
# the region means of $q$ and $k$: the mean of a projection is the projection of the mean (chapter 3), so
# the index is the same, at the cost of $S^2$ instead of $HW$ projections, and in float32 even under mixed
# precision. The assertion above checks that the two agree.
#
# ## 6. Gradients
#
# ### Why routing has no gradient
#
# The routing index is a set of integers. Nudge $q$ a little and the top-k choice stays the same; nudge it
# enough and it jumps. The output depends on the adjacency $A^r$ only through those integers, so its
# derivative with respect to $A^r$ is zero wherever it exists. PyTorch agrees: `topk(...).indices` carries no
# gradient. Computing routing on detached tensors (as the released code does, and `bra` does) therefore
# changes no gradient; it only saves autograd the bookkeeping of the region means and the adjacency.

# %%
qg = q.clone().requires_grad_(True)
logits_g, index_g = route_regions(qg, k, n_win=n_win, topk=topk)
print("logits need grad:", logits_g.requires_grad, "  index needs grad:", index_g.requires_grad)
assert logits_g.requires_grad and not index_g.requires_grad
assert torch.equal(route_regions(q + 1e-4 * torch.randn_like(q), k, n_win=n_win, topk=topk)[1], index)

# %% [markdown]
# Gradients still flow to $q$, $k$ and $v$ through the token attention, and to $v$ through the LCE. They must
# agree between implementations: our layer against the library's with the dense `reference` backend.

# %%
x1 = x.clone().requires_grad_(True)
x2 = x.clone().requires_grad_(True)
reference_layer = BiLevelRoutingAttention(dim=16, num_heads=2, n_win=7, topk=4, backend="reference").double()
reference_layer.load_state_dict(mine.state_dict())
mine(x1).square().sum().backward()
reference_layer(x2).square().sum().backward()
torch.testing.assert_close(x1.grad, x2.grad)
for (name, p1), p2 in zip(mine.named_parameters(), reference_layer.parameters(), strict=True):
    torch.testing.assert_close(p1.grad, p2.grad, msg=lambda m, name=name: f"gradient of {name}: {m}")
print("input and parameter gradients agree:", [name for name, _ in mine.named_parameters()])

# %% [markdown]
# `torch.autograd.gradcheck` compares the analytic gradient with finite differences, in float64, on a tiny
# input. It passes, which also confirms the argument above: small perturbations do not change the routing,
# so ignoring it in the backward pass is exact.

# %%
tiny = [torch.randn(1, 4, 6, 4, dtype=torch.float64, requires_grad=True) for _ in range(3)]
for backend in ("gather", "reference"):
    assert torch.autograd.gradcheck(
        lambda q_, k_, v_, backend=backend: bra(q_, k_, v_, num_heads=2, n_win=2, topk=2, backend=backend), tiny
    )
small_layer = BiLevelRoutingAttention(dim=4, num_heads=2, n_win=2, topk=2, side_dwconv=3).double()
assert torch.autograd.gradcheck(small_layer, (torch.randn(1, 4, 4, 4, dtype=torch.float64, requires_grad=True),))
print("gradcheck passed")

# %% [markdown]
# ## 7. The scale: paper versus released code
#
# Three sources, three answers. The paper's **Algorithm 1** (its pseudocode, also on the authors' slides)
# applies **no scale at all**: `A = bmm(query, key_g.transpose(-2, -1)); A = softmax(A)`. The paper's **text**
# introduces attention as standard scaled dot-product attention, $\mathrm{softmax}(QK^\top/\sqrt{C})V$ for
# queries and keys of width $C$, and never says which width applies once the channels are split into heads.
# The **released code** (`rayleizhu/BiFormer`) uses `scale = qk_dim ** -0.5`, $C_{qk}^{-1/2}$ with the *full*
# width, in every head: scores smaller by a factor $\sqrt{h}$ than with the usual per-head $d^{-1/2}$, so
# softer attention. It trains fine either way, but a model must be run with the scale it was trained with:
# `BiLevelRoutingAttention(..., scale_mode="official")` reproduces the released code (to load its weights);
# `scale_mode="paper"` (the default) reads the text the way every multi-head transformer does, $d^{-1/2}$
# with $d = C/h$ the head width. With one head the two coincide. The routing scale does not matter: a
# positive factor never changes a top-k.

# %%
paper = BiLevelRoutingAttention(dim=16, num_heads=4, n_win=7, topk=4, scale_mode="paper").double()
official = BiLevelRoutingAttention(dim=16, num_heads=4, n_win=7, topk=4, scale_mode="official").double()
official.load_state_dict(paper.state_dict())
print(f"4 heads of width 4: paper scale {paper.scale:.3f} = 4**-0.5, official scale {official.scale:.3f} = 16**-0.5")
assert paper.scale == 4**-0.5 and official.scale == 16**-0.5
assert not torch.allclose(paper(x), official(x))
one_head = BiLevelRoutingAttention(dim=16, num_heads=1, n_win=7, topk=4, scale_mode="official").double()
one_head_paper = BiLevelRoutingAttention(dim=16, num_heads=1, n_win=7, topk=4, scale_mode="paper").double()
one_head_paper.load_state_dict(one_head.state_dict())
torch.testing.assert_close(one_head(x), one_head_paper(x))

# %% [markdown]
# ## 8. Is it faster?
#
# BiFormer-T's first stage: a 56×56 map, C = 64, 2 heads, S = 7, k = 1, so each query attends to 64 tokens
# instead of 3136. The gather backend does $1/49$ of the reference's attention FLOPs, and one forward call
# shows it (one CPU thread, median of 3; your numbers will differ, so the output is not compared).


# %% tags=["nbval-ignore-output"]
def median_seconds(fn, repeats=3):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


torch.set_num_threads(1)
stage1 = [torch.randn(1, 56, 56, 64) for _ in range(3)]
with torch.no_grad():
    seconds = {
        backend: median_seconds(lambda backend=backend: bra(*stage1, num_heads=2, n_win=7, topk=1, backend=backend))
        for backend in ("reference", "gather")
    }
for backend, s in seconds.items():
    print(f"{backend:<10} {s * 1e3:8.1f} ms")
print(f"gather is {seconds['reference'] / seconds['gather']:.0f}x faster than the dense reference")

# %%
assert seconds["gather"] < seconds["reference"]

# %% [markdown]
# ## Summary
#
# * **Gather**: (B, S², n, C) regions and a (B, S², k) index give (B, S², k, n, C): each region's routed
#   keys and values, copied together so that attention is a dense batched matmul.
# * **Attend**: per region, softmax($Q K_g^\top / \sqrt d$) $V_g$, with heads sharing one routing graph; it
#   equals dense attention under the routed mask, a naive per-region loop, every registered backend, and
#   (with k = S²) full attention.
# * **Enhance**: a depthwise 5×5 convolution on $V$ (LCE) is added, then the output projection. Together
#   with the qkv projection and chapter 3's routing, that is `BiLevelRoutingAttention`.
# * Routing has no gradient (its result is integers) and is computed on detached tensors; gradients of
#   everything else agree across implementations and pass `gradcheck`.
# * `scale_mode="paper"` uses $d^{-1/2}$ per head (the usual reading of the paper's text; its Algorithm 1
#   prints no scale); `"official"` uses $C_{qk}^{-1/2}$ like the released code.
#
# ## Exercises
#
# Open `exercises/04_gather_attend.py`, fill in the functions, and run the cell below (or `bralib exercise
# check --chapter 4`). Each exercise is tagged with its difficulty and its kind: *transcription* (write again
# what the chapter showed), *design* (work out something the chapter did not show) or *experiment* (build a
# measurement, then use it to answer a question). The solutions in `exercises/solutions/` answer every
# question asked here.
#
# **4.1 `gather_regions(kv_regions, index)`** *[easy · transcription]*. The gather of section 1: (B, S², n, C)
# and (B, S², k) to (B, S², k, n, C). Each image has its own index.
#
# **4.2 `per_head_routed_attention(q, k, v, index, n_win)`** *[hard · design]*. Token attention when every
# head has its own routing graph (chapter 3's exercise 3.2): the index is (B, heads, S², k). With the same
# index in every head it must equal section 3's `routed_attention`. Why can the shared version gather once for
# all heads?
#
# **4.3 `error_vs_full_attention(q, k, v, n_win, num_heads)`** *[medium · experiment]*. The relative error of
# BRA against full attention for k = 1 … S². Measure it on random inputs and on the astronaut's features: how
# fast does it fall, why is it 0 at k = S², and why is random data the worst case for routing?

# %% tags=["nbval-ignore-output"]
# Tagged: the output changes as you work on the exercises.
from bralib.exercises import check

for name in ("gather_regions", "per_head_routed_attention", "error_vs_full_attention"):
    check(name)
