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
# # Chapter 2 — A zoo of sparse attention patterns
#
# Chapter 1 ended with a verdict: at image resolutions, each query must attend to a *subset* of the keys.
# Vision transformers have tried many subsets. This chapter writes each of them the same way, as a boolean
# **token mask**, draws them side by side, and sorts them into families: **static** (handcrafted) patterns,
# fixed by positions alone; **query-agnostic** content-aware ones, which look at the image but give every
# query the same keys (deformable attention); and **query-aware** ones, which choose keys for each query (or,
# in BRA, for each region of queries). The authors' slides put exactly this question first: "can we have
# dynamic, query-aware sparse attention?" Bi-level routing is their answer.
#
# **Learning goals.** After this chapter you can
#
# 1. write a sparse attention pattern as an (N, N) boolean mask over the tokens of an H×W grid, and read one;
# 2. build the masks of window (Swin), shifted window, sliding window (neighbourhood), dilated, axial and
#    criss-cross attention, and count the keys each query sees;
# 3. explain what makes the routed mask of BRA different: it depends on the picture, it is shared by all
#    the queries of a region, and it need not be symmetric;
# 4. use dense masked attention as the obviously-right reference that a fast implementation must equal.

# %% [markdown]
# ## Motivation: the paper's Table 5
#
# BiFormer's Table 5 compares eight attention mechanisms in the same Swin-T layout, on ImageNet-1K (top-1 %)
# and ADE20K segmentation (mIoU):
#
# | attention | top-1 | mIoU |
# |---|---|---|
# | sliding window | 81.4 | – |
# | shifted window | 81.3 | 41.5 |
# | spatially separable | 81.5 | 42.9 |
# | sequential axial | 81.5 | 39.8 |
# | criss-cross | 81.7 | 43.0 |
# | cross-shaped window | 82.2 | 43.4 |
# | deformable | 82.0 | 42.6 |
# | **bi-level routing** | **82.7** | **44.8** |
#
# Where the rows come from matters. The first six are the six mechanisms of the CSWin paper's own ablation
# ({cite:t}`dong2022cswin`, its Table 9, run in the same Swin-T layout), and BiFormer's first author asked
# the CSWin authors for that ablation's settings (issue 44 of `microsoft/CSWin-Transformer`); the
# shifted-window row's 81.3 is Swin-T's published top-1, and the deformable row's 82.0 / 42.6 repeats DAT-T's
# published results (the same numbers as DAT-T's rows in BiFormer's main tables). The paper does not say it
# re-trained any of them, so read rows 1-7 as taken from earlier papers under the same layout, and only BRA's
# as trained for this table: close to a controlled comparison, not quite one.
#
# Read with that caveat, the table says less than "content wins". Six rows are static patterns, one is
# content-aware but query-agnostic (deformable: every query sees the same sampled keys), one is query-aware
# (BRA). The best static pattern, CSWin's cross-shaped window (82.2), beats the query-agnostic deformable
# attention (82.0), so looking at the content is not enough by itself; what BRA adds, on these numbers, is
# letting each region of queries choose its own keys (+0.5 top-1 and +1.4 mIoU over the cross-shaped
# window). To compare the patterns on equal terms we first need one language for all of them.

# %%
import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F

from bralib.ops import bra, masks, region_of_tokens, route_regions, to_regions
from bralib.viz.routing import draw_token_attention, sample_image, simple_features

_ = torch.manual_seed(0)  # (the generator it returns is not needed)

# %% [markdown]
# ## 1. A pattern is a boolean mask
#
# Take an H×W grid of tokens, numbered row-major (token $n$ is at row $n // W$, column $n \% W$). A sparse
# pattern is an $N \times N$ boolean matrix, $N = HW$: `mask[i, j]` is True when query $i$ may attend to key
# $j$. Row $i$ is "the keys query $i$ sees"; reshaped to (H, W) it is a picture of them. The simplest pattern
# is full attention, all True. Every mask of this chapter comes from `bralib.ops.masks`.
#
# We use a 16×16 grid (256 tokens), small enough to draw whole $N \times N$ masks.

# %%
H = W = 16
N = H * W
full = masks.full_mask(H, W)
print("full mask", tuple(full.shape), full.dtype, "keys per query:", int(full[0].sum()))
assert full.all()

# %% [markdown]
# ## 2. The static patterns
#
# * **Window** (Swin {cite:p}`liu2021swin`): cut the grid into non-overlapping $w \times w$ windows; a token sees its window.
# * **Shifted window** (Swin's every other layer): the same windows moved by $w/2$, so information crosses
#   the previous windows' borders. (Swin rolls the map cyclically and masks the wrapped tokens; here, like
#   `window_mask`'s docstring says, border windows are simply smaller.)
# * **Sliding window** (Neighborhood Attention {cite:p}`hassani2023nat`, the paper's "sliding window"; NATTEN {cite:p}`natten` is its kernel library): a $w \times w$ window
#   centred on *each* token, slid inwards at the borders so everyone sees $w^2$ keys.
# * **Dilated**: tokens whose row and column agree modulo $d$: a sparse global grid.
# * **Axial / criss-cross** (CCNet {cite:p}`huang2019ccnet`): the token's row and its column. *Sequential* axial attention does the
#   row in one layer and the column in the next.

# %%
window, shift, neighbourhood, dilation = 4, 2, 5, 4
patterns = {
    "window 4x4": masks.window_mask(H, W, window),
    "shifted window": masks.window_mask(H, W, window, shift=shift),
    "sliding window 5x5": masks.neighbourhood_mask(H, W, neighbourhood),
    "dilated, d=4": masks.dilated_mask(H, W, dilation),
    "criss-cross (row + column)": masks.criss_cross_mask(H, W),
}
for name, mask in patterns.items():
    counts = mask.sum(-1)
    print(f"{name:<28} keys per query: min {int(counts.min()):3d}, max {int(counts.max()):3d}"
          f"   density {mask.float().mean():.3f}   symmetric: {bool(torch.equal(mask, mask.T))}")  # fmt: skip

# %% [markdown]
# Their key counts follow from their definitions, and we can assert them:

# %%
counts = {name: mask.sum(-1) for name, mask in patterns.items()}
assert (counts["window 4x4"] == window**2).all()
assert set(counts["shifted window"].unique().tolist()) == {4, 8, 16}  # 2x2, 2x4 / 4x2 or 4x4 windows
assert (counts["sliding window 5x5"] == neighbourhood**2).all()
assert (counts["dilated, d=4"] == (H // dilation) * (W // dilation)).all()
assert (counts["criss-cross (row + column)"] == H + W - 1).all()
for name, mask in patterns.items():
    assert mask.diagonal().all(), f"{name}: every query sees itself"
# Windows, dilated grids and criss-cross are symmetric relations; a clamped sliding window is not:
# at the border a token's window is slid inwards, so it may see a token whose own window does not reach back.
for name in ("window 4x4", "shifted window", "dilated, d=4", "criss-cross (row + column)"):
    assert torch.equal(patterns[name], patterns[name].T)
assert not torch.equal(patterns["sliding window 5x5"], patterns["sliding window 5x5"].T)
# Criss-cross is the union of a row mask and a column mask; two hops (row, then column) reach everyone.
row, column = masks.row_mask(H, W), masks.column_mask(H, W)
assert torch.equal(patterns["criss-cross (row + column)"], row | column)
assert ((row.float() @ column.float()) > 0).all()

# %% [markdown]
# ## 3. A query-aware pattern: routed regions
#
# BRA cuts the grid into $S \times S$ regions, decides for each region which $k$ regions its queries should
# look at, and lets every query of a region attend to all the tokens of those $k$ regions. To compare it with
# the static masks fairly we give it the **same budget** as the 4×4 window: $S = 8$ regions of 2×2 tokens and
# $k = 4$ of them, 16 keys per query (the sliding window and criss-cross above see 25 and 31). Chapter 3 builds
# the routing step by step; here we only use it. The routing index comes from `route_regions`, fed with
# simple colour and texture features of a real picture (chapter 3 explains them too): regions that *look*
# alike get routed to each other.
#
# The index talks about regions, not tokens: we compute it from the 112×112 picture, cut into S = 8 regions
# per side, and apply it to our 16×16 token grid cut the same way, exactly as a model's stage works on a
# token grid coarser than the image.

# %% [markdown]
# The whole mechanism in one picture, before we use it (the panels are computed: a top-k of a region
# adjacency of random region means, on a 4×4 grid of regions):

# %% mystnb={"figure": {"caption": "The two levels of bi-level routing attention: the map is cut into regions (1), every region's query is scored against every region's key (2), each region keeps its top-k (3), the keys and values of those regions are gathered into one contiguous set (4), and the region's queries attend to it, plus a depthwise convolution of V (5).", "name": "fig-bra-levels"}}
from bralib.viz import draw_bra_levels

draw_bra_levels(n_win=4, topk=3, query_region=5)
plt.show()

# %%
n_win, topk = 8, 4  # 64 regions of 2x2 tokens, 4 routed: 16 keys per query, the window's budget
image = sample_image("astronaut", 112)  # (112, 112, 3) floats in [0, 1]
features = simple_features(image)  # (1, 112, 112, 5)
_, index = route_regions(features, features, n_win=n_win, topk=topk)  # index: (1, 64, 4)
routed = masks.routed_mask(index, H, W, n_win)[0]  # (N, N)
patterns["routed (BRA, S=8, k=4)"] = routed
print("region 0 routes to regions", index[0, 0].tolist())
print("routed mask: keys per query", sorted(set(routed.sum(-1).tolist())), " symmetric:", torch.equal(routed, routed.T))

# %% [markdown]
# Three properties set it apart. Every query sees the same number of keys, $k \cdot HW/S^2$; all the queries
# of one region share the same keys (the routing is decided per region); and it is not symmetric: region
# $a$ may pick region $b$ without $b$ picking $a$. And it depends on the image: the same code on another
# picture gives another mask, where every static mask above would stay the same.

# %%
tokens_per_region = (H // n_win) * (W // n_win)
assert (routed.sum(-1) == topk * tokens_per_region).all()
assert (routed.sum(-1) == patterns["window 4x4"].sum(-1)).all()  # the same budget as the window: 16 keys
region = region_of_tokens(H, W, n_win)  # (N,) region number of each token
for r in range(n_win * n_win):
    rows_of_r = routed[region == r]  # the masks of every query in region r ...
    assert (rows_of_r == rows_of_r[0]).all()  # ... are one and the same
assert not torch.equal(routed, routed.T)

other = simple_features(sample_image("coffee", 112))
_, other_index = route_regions(other, other, n_win=n_win, topk=topk)
assert not torch.equal(masks.routed_mask(other_index, H, W, n_win)[0], routed)

self_routed = (index[0] == torch.arange(n_win * n_win)[:, None]).any(-1)
print(f"{int(self_routed.sum())} of {n_win * n_win} regions route to themselves")
assert sorted(index[0, 9].tolist()) == [1, 5, 9, 13]  # the query region drawn below: wall routes to wall

# %% [markdown]
# Nothing forces a region to pick itself: whether a query sees its own neighbourhood depends on the
# content. (BiFormer adds a small depthwise convolution, the *local context enhancement* of chapter 4,
# partly for that reason.)
#
# ## 4. The zoo, drawn
#
# First, one query token and the keys it sees, over the picture (coloured: the mask's row; keys outside it
# are left clear). The static patterns ignore the picture. The routed one follows it: the query sits in
# region 9 (second row and column of the 8×8 regions), pale grey wall, and its region routes to itself, to
# the region above it and to two regions of bright wall further right, not to the orange suit. The six
# patterns spend between 4 and 31 keys per query, the routed one 16 like the window; only the routed one
# spends them where the picture looks alike ({numref}`fig-pattern-keys`).

# %% mystnb={"figure": {"caption": "The keys that one query token, at row 2, column 2 of a 16x16 token grid, may attend to under each pattern (coloured over the picture). Only the routed pattern depends on the picture.", "name": "fig-pattern-keys"}}
query = (2, 2)  # row, column of the query token in the 16x16 grid
query_index = query[0] * W + query[1]
fig, axes = plt.subplots(2, 3, figsize=(10, 7.4))
for ax, (name, mask) in zip(axes.flat, patterns.items(), strict=True):
    draw_token_attention(image, mask[query_index].reshape(H, W).float(), query, ax, cmap="cool", alpha=0.6,
                         n_win=n_win if name.startswith("routed") else None, title=name)  # fmt: skip
fig.suptitle(f"the keys that query token {query} sees (16 x 16 token grid)")
plt.tight_layout()
plt.show()

# %% [markdown]
# And the whole $N \times N$ masks ({numref}`fig-pattern-masks`): row $i$ is query $i$, column $j$ is key $j$, white = may attend.

# %% mystnb={"figure": {"caption": "The whole $N \\times N$ mask of each pattern (row: query token, column: key token, white: may attend), with the share of the matrix it keeps.", "name": "fig-pattern-masks"}}
fig, axes = plt.subplots(1, 6, figsize=(15, 2.9))
for ax, (name, mask) in zip(axes, patterns.items(), strict=True):
    ax.imshow(mask, cmap="gray", interpolation="nearest")
    ax.set_title(f"{name}\n{mask.float().mean():.1%} of the matrix", fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
axes[0].set_ylabel("query token")
plt.tight_layout()
plt.show()

# %% [markdown]
# ### A window mask is block-diagonal in region order
#
# Row-major numbering scatters a window's tokens over the matrix: in the plot above, window attention looks
# like a lattice. Renumber the tokens region by region (the order `bralib.ops.to_regions` uses) and it
# becomes what it is: independent blocks, one per window. That is why window attention can be computed as
# a batch of small dense attentions, one per window ({numref}`fig-block-diagonal`).

# %% mystnb={"figure": {"caption": "The window mask in row-major token order (left) and in region order (middle), where it is block-diagonal; the routed mask in region order (right) is made of whole region-by-region blocks, $k$ in each row of blocks.", "name": "fig-block-diagonal"}}
order = to_regions(torch.arange(N).reshape(1, H, W, 1), H // window).flatten()  # tokens region by region
in_region_order = patterns["window 4x4"][order][:, order]
block = torch.ones(window**2, window**2, dtype=torch.bool)
assert torch.equal(in_region_order, torch.block_diag(*[block] * (N // window**2)))

routed_order = to_regions(torch.arange(N).reshape(1, H, W, 1), n_win).flatten()  # BRA's own regions, S = 8
routed_in_region_order = routed[routed_order][:, routed_order]
fig, axes = plt.subplots(1, 3, figsize=(9, 3.2))
for ax, (title, mask) in zip(axes, [("window, row-major", patterns["window 4x4"]),
                                    ("window, region order", in_region_order),
                                    ("routed, region order", routed_in_region_order)], strict=True):  # fmt: skip
    ax.imshow(mask, cmap="gray", interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
plt.tight_layout()
plt.show()

# %% [markdown]
# In its own region order (S = 8, regions of 2×2 tokens) the routed mask is made of 4×4 blocks, and a block
# row holds $k = 4$ blocks wherever the routing put them. With one routed region per region, and that region
# itself, BRA *is* window attention (here with S = 4, the window's regions):

# %%
identity = torch.arange(4 * 4).reshape(1, -1, 1)  # S = 4: every region routes to itself only
assert torch.equal(masks.routed_mask(identity, H, W, 4)[0], patterns["window 4x4"])

# %% [markdown]
# ## 5. The dense reference
#
# With a mask, *any* of these patterns is computed by plain attention where the forbidden scores are set to
# $-\infty$: `masks.masked_attention(q, k, v, mask, scale)`. It is slow (it builds all $N^2$ scores, then
# throws most away) but it is obviously right, so it is the **reference**: a fast implementation of a
# pattern must give the same numbers. Two checks show the idea:
#
# * window attention computed as a batch of small per-window attentions equals the masked reference;
# * BRA's two backends, `"reference"` (exactly this masked attention) and `"gather"` (the paper's algorithm,
#   chapter 4), equal masked attention with the routed mask.

# %%
d = 8
q, k, v = (torch.randn(1, H, W, d) for _ in range(3))  # channels-last maps (B, H, W, C)
flat = [t.reshape(1, N, d) for t in (q, k, v)]  # (B, N, C) token sequences
scale = d**-0.5

# Full attention: the masked reference with an all-True mask is ordinary attention.
torch.testing.assert_close(masks.masked_attention(*flat, full, scale), F.scaled_dot_product_attention(*flat))

# Window attention, the efficient way: (B, windows, tokens per window, C), one small attention per window.
n_windows = H // window
per_window = F.scaled_dot_product_attention(*(to_regions(t, n_windows) for t in (q, k, v)))  # (1, 16, 16, d)
reference = masks.masked_attention(*flat, patterns["window 4x4"], scale)  # (1, N, d)
torch.testing.assert_close(per_window.reshape(N, d)[order.argsort()], reference[0], atol=1e-6, rtol=1e-5)

# BRA with the routed mask, one head: both backends against the masked reference.
reference = masks.masked_attention(*flat, routed, scale).reshape(1, H, W, d)
for backend in ("reference", "gather"):
    out = bra(q, k, v, num_heads=1, n_win=n_win, topk=topk, scale=scale, backend=backend, routing_index=index)
    torch.testing.assert_close(out, reference, atol=1e-6, rtol=1e-5)
    print(f"bra(backend={backend!r}) equals masked attention with the routed mask")

# %% [markdown]
# ## 6. What each pattern costs
#
# With a fixed number $m$ of keys per query, attention costs $4Nmd$ FLOPs instead of $4N^2 d$. The masks
# tell us $m$. On a 16×16 grid the savings are modest; chapter 3 shows how BRA's $m$ is chosen for
# BiFormer's 56×56 stage.

# %%
print(f"{'pattern':<28} {'keys per query':>15} {'of the N x N matrix':>20}")
for name, mask in patterns.items():
    keys = mask.sum(-1).float().mean()
    print(f"{name:<28} {keys:>15.1f} {mask.float().mean():>20.1%}")

# %% [markdown]
# ## Summary
#
# * A sparse attention pattern is an (N, N) boolean mask over row-major tokens; its row $i$, reshaped to
#   (H, W), is a picture of what query $i$ sees.
# * Windows, shifted windows, sliding windows, dilated grids and criss-cross lines are **static**: the same
#   mask for every picture. Their key counts are $w^2$, at most $w^2$, $w^2$, $HW/d^2$ and $H + W - 1$.
#   Deformable attention {cite:p}`xia2022dat` looks at the picture but is **query-agnostic**: all queries share its keys.
# * BRA's routed mask is **query-aware**: $k \cdot HW/S^2$ keys per query (here the window's 16), chosen per
#   region of queries, not symmetric, and different for a different picture. With $k = 1$ and self-routing
#   it is window attention.
# * Table 5 puts BRA first, but its other rows are quoted from CSWin's and DAT's papers, and a static pattern
#   (cross-shaped window, 82.2) beats the query-agnostic one (deformable, 82.0): the gain is in letting the
#   queries choose, not in looking at the content as such.
# * `masks.masked_attention` with any of these masks is the dense reference; fast code (per-window batches,
#   BRA's gather backend) must equal it.
#
# ## Exercises
#
# Open `exercises/02_sparse_patterns.py`, fill in the functions, and run the cell below (or `bralib exercise
# check --chapter 2`). Each exercise is tagged with its difficulty and its kind: *transcription* (write again
# what the chapter showed), *design* (work out something the chapter did not show) or *experiment* (build a
# measurement, then use it to answer a question). The solutions in `exercises/solutions/` answer every
# question asked here.
#
# **2.1 `window_mask(height, width, window)`** *[easy · design]*. The (N, N) mask of non-overlapping window
# attention, tokens numbered row-major. (Careful: numbering tokens column by column gives a different matrix.)
#
# **2.2 `neighbourhood_mask(height, width, window)`** *[medium · design]*. The sliding window of section 2:
# centred on the query, slid inwards at the borders, so every row has `window**2` keys.
#
# **2.3 `routed_token_mask(index, height, width, n_win)`** *[medium · design]*. From a routing index (B, S²,
# k) to the (B, N, N) token mask: token $i$ sees token $j$ when $j$'s region is one of the $k$ regions of
# $i$'s region. Which way round is it: does the mask of query $i$ depend on $i$'s row of the index or on
# $j$'s?
#
# **2.4 `two_layer_reach(first, second)`** *[medium · experiment]*. What fraction of (query, key) pairs are
# connected through two layers, one with each mask? Measure it for window then window, window then shifted
# window, criss-cross twice and the routed mask twice: which reach the whole map, and why does Swin alternate
# its windows?

# %% tags=["nbval-ignore-output"]
# Tagged: the output changes as you work on the exercises.
from bralib.exercises import check

for name in ("window_mask", "neighbourhood_mask", "routed_token_mask", "two_layer_reach"):
    check(name)
