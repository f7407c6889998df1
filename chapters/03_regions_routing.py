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
# # Chapter 3 — Regions and the routing graph
#
# Bi-level routing attention works at two levels. At the coarse level it cuts the feature map into
# $S \times S$ **regions** and decides, for each region, which $k$ regions are worth attending to: a directed
# graph over regions, the **routing graph**. At the fine level (chapter 4) every query attends to the tokens
# of its region's $k$ routed regions. This chapter builds the coarse level, which is steps 1 and 3-5 of the
# paper's Algorithm 1, and looks at the graph it produces on a real picture.
#
# **Learning goals.** After this chapter you can
#
# 1. cut a (B, H, W, C) map into S×S regions, (B, S², HW/S², C), and put it back exactly;
# 2. compute region-level queries and keys by averaging, the region adjacency $A_r$, and the routing
#    index $I_r$ with `topk`;
# 3. check each against `bralib.ops` (`to_regions`, `from_regions`, `region_means`, `route_regions`);
# 4. read a routing graph drawn over an image, and predict how it changes with S and k.

# %% [markdown]
# ## Motivation: Algorithm 1
#
# The paper gives BRA as PyTorch-like pseudocode. The steps this chapter covers, for an input of shape
# (H, W, C):
#
# 1. patchify the input into $S^2$ regions: $(S^2, HW/S^2, C)$;
# 2. *(the linear projections to query, key and value)*;
# 3. region-level query and key: the mean over the tokens of each region, $Q^r, K^r \in \mathbb{R}^{S^2 \times C}$;
# 4. region adjacency $A^r = Q^r (K^r)^\top \in \mathbb{R}^{S^2 \times S^2}$;
# 5. routing index $I^r = \mathrm{topk}(A^r, k)$, $(S^2, k)$: row $i$ lists the $k$ regions region $i$
#    attends to.
#
# Everything here costs little: $S^2 = 49$ regions in each of BiFormer's three routed stages (stage 4, a 7×7
# map at 224×224, uses plain global attention and does not route), so $A^r$ is 49×49 however large the
# image. That is the point: the expensive choice of *where to look* is made on a tiny graph.

# %%
import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F

from bralib.ops import from_regions, region_means, region_of_tokens, route_regions, to_regions
from bralib.viz import draw_bra_levels
from bralib.viz.routing import draw_regions, draw_routing, sample_image, simple_features

_ = torch.manual_seed(0)  # (the generator it returns is not needed)

# %% [markdown]
# This chapter builds the left half of the picture below, the coarse level (chapter 4 builds the right
# half): regions, the region graph of scores, and its top-k per row.

# %% mystnb={"figure": {"caption": "The coarse level of BRA, which this chapter builds: regions (1), the region adjacency of region-mean queries against region-mean keys (2), and each row's top-k, the routed regions (3).", "name": "fig-coarse-level"}}
draw_bra_levels(n_win=4, topk=3, query_region=5, steps=(1, 2, 3))
plt.show()

# %% [markdown]
# ## 1. Patchify: from a map to regions
#
# A (B, H, W, C) map with $H = S h$ and $W = S w$ is really a 6-D array (B, S, h, S, w, C): region row $i$,
# row inside the region, region column $j$, column inside the region. Bringing the two region axes together
# and flattening gives (B, S², hw, C): region $r = iS + j$ (row-major), and inside each region its $hw$
# tokens, row-major too. A `reshape` alone cannot do it (it never reorders memory): the `permute` is the
# step that gathers each region's tokens.


# %%
def patchify(x, n_win):
    """(B, H, W, C) -> (B, S*S, H*W/S^2, C), regions and their tokens both row-major."""
    B, H, W, C = x.shape
    h, w = H // n_win, W // n_win
    x = x.reshape(B, n_win, h, n_win, w, C)  # (B, i, row in region, j, column in region, C)
    x = x.permute(0, 1, 3, 2, 4, 5)  # (B, i, j, row in region, column in region, C)
    return x.reshape(B, n_win * n_win, h * w, C)


def unpatchify(regions, n_win, H, W):
    """(B, S*S, H*W/S^2, C) -> (B, H, W, C): the inverse of patchify."""
    B, _, _, C = regions.shape
    x = regions.reshape(B, n_win, n_win, H // n_win, W // n_win, C)  # (B, i, j, row, column, C)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(B, H, W, C)


# A 4 x 6 map whose single channel is the token's row-major number, cut into 2 x 2 regions of 2 x 3 tokens.
numbers = torch.arange(4 * 6).reshape(1, 4, 6, 1)
print(numbers[0, :, :, 0])
regions = patchify(numbers, 2)
for r in range(4):
    print(f"region {r}: tokens {regions[0, r, :, 0].tolist()}")

# %%
assert regions[0, 1, :, 0].tolist() == [3, 4, 5, 9, 10, 11]  # region 1 is the top-right block
assert torch.equal(regions, to_regions(numbers, 2))
# Reshaping without the permute cuts the map into strips of consecutive tokens instead: wrong.
assert not torch.equal(numbers.reshape(1, 4, 6, 1), regions)
# The round trip is exact (it only moves numbers), for any batch, channels and H != W.
for shape, n_win in [((2, 14, 21, 3), 7), ((1, 8, 8, 5), 4), ((3, 6, 12, 2), 3), ((1, 5, 5, 1), 1)]:
    x = torch.randn(shape)
    assert torch.equal(patchify(x, n_win), to_regions(x, n_win))
    assert torch.equal(unpatchify(patchify(x, n_win), n_win, *shape[1:3]), x)
    assert torch.equal(from_regions(to_regions(x, n_win), n_win, *shape[1:3]), x)

# %% [markdown]
# `bralib.ops.region_of_tokens` goes the other way: the region number of every token of the map, which is
# how a token mask (chapter 2) is built from region-level decisions.

# %%
region = region_of_tokens(4, 6, 2).reshape(4, 6)
print(region)
for r in range(4):
    assert sorted(numbers[0][region == r].flatten().tolist()) == regions[0, r, :, 0].tolist()

# %% [markdown]
# On a picture: BiFormer uses S = 7 in every stage. Our picture is scikit-image's astronaut at 112×112, so
# each of the 49 regions is 16×16 pixels ({numref}`fig-regions`).

# %% mystnb={"figure": {"caption": "scikit-image's astronaut at 112x112 pixels, cut into $S \\times S = 7 \\times 7$ regions of 16x16 pixels, numbered row-major.", "name": "fig-regions"}}
image = sample_image("astronaut", 112)  # (112, 112, 3) floats in [0, 1]
fig, ax = plt.subplots(figsize=(4.5, 4.5))
draw_regions(image, n_win=7, ax=ax)
ax.set_title("S = 7: regions numbered row-major")
plt.show()

# %% [markdown]
# ## 2. Region-level queries and keys
#
# A region's query is the mean of its tokens' queries, and the same for keys: one $C$-vector per region,
# $(B, S^2, C)$. The mean is taken over all channels at once, before any split into heads: one routing
# graph serves every head (the released code {cite:p}`biformer2023code` does the same).
#
# A small fact with a practical consequence: queries are a linear projection $q = xW + b$ of the input, and
# the mean of a projection is the projection of the mean. So region-level queries can be computed from the
# region means of $x$, $S^2$ projections instead of $HW$: `BiLevelRoutingAttention` does that.

# %%
B, H, W, C, n_win = 2, 14, 21, 6, 7
q, k = torch.randn(B, H, W, C), torch.randn(B, H, W, C)
q_region = patchify(q, n_win).mean(dim=2)  # (B, S^2, C)
k_region = patchify(k, n_win).mean(dim=2)  # (B, S^2, C)
torch.testing.assert_close(q_region, region_means(q, n_win))

x = torch.randn(B, H, W, 10, dtype=torch.float64)
projection = torch.nn.Linear(10, C, dtype=torch.float64)
torch.testing.assert_close(region_means(projection(x), n_win), projection(region_means(x, n_win)))

# %% [markdown]
# ## 3. The region adjacency and the routing index
#
# The adjacency is every region-level query against every region-level key, $A^r = Q^r (K^r)^\top$, a
# $(B, S^2, S^2)$ tensor; `bralib` scales it by $C^{-1/2}$ like the released code (a positive scale never
# changes which entries are largest). Row $i$ scores how relevant each region is to region $i$. Keeping the
# $k$ largest of each row gives the routing index $I^r$, (B, S², k), sorted by decreasing score.

# %%
topk = 4
adjacency = (q_region * C**-0.5) @ k_region.transpose(-1, -2)  # (B, S^2, S^2)
index = torch.topk(adjacency, k=topk, dim=-1).indices  # (B, S^2, k)
print("region 0 routes to", index[0, 0].tolist(), "with scores", [f"{s:.3f}" for s in adjacency[0, 0, index[0, 0]]])

# %%
logits, lib_index = route_regions(q, k, n_win=n_win, topk=topk)
torch.testing.assert_close(logits, adjacency)
assert torch.equal(lib_index, index)
scores = adjacency.gather(-1, index)  # (B, S^2, k): the scores of the routed regions
assert (scores[..., :-1] >= scores[..., 1:]).all()  # sorted, best first
assert (adjacency.max(-1).indices == index[..., 0]).all()  # the first choice is the row's maximum
# The top-k lists are nested: the best 2 are the first 2 of the best 4, and so on.
assert torch.equal(route_regions(q, k, n_win=n_win, topk=2)[1], index[..., :2])
# The scale does not change the choice.
assert torch.equal(route_regions(q, k, n_win=n_win, topk=topk, scale=10.0)[1], index)

# %% [markdown]
# Nothing makes the graph symmetric ($A^r$ compares queries with keys, which differ), and nothing makes a
# region route to itself. The graph is directed: region $i$ routes to $j$ whenever $j$ is in row $i$ of
# $I^r$.

# %% [markdown]
# ## 4. Routing on a real picture
#
# In a trained BiFormer, the queries and keys come out of learned projections. To see what routing *does*
# before training anything, we choose the features ourselves: for each pixel, its colour (chromaticity:
# red, green, blue over their sum), its brightness and its texture (the gradient magnitude), each
# standardised over the picture, and the 5-vector scaled to length 1. With $q = k$ = these features, the dot
# product of two pixels is their cosine similarity, and a region scores high against the regions that look
# like it. We use the same features as queries and keys.


# %%
def colour_texture_features(picture):
    """(H, W, 3) floats in [0, 1] -> (1, H, W, 5) unit vectors: chromaticity, brightness, gradient magnitude."""
    rgb = torch.as_tensor(picture, dtype=torch.float32)
    chroma = rgb / rgb.sum(-1, keepdim=True).clamp_min(1e-3)  # colour without brightness
    brightness = rgb.mean(-1)  # (H, W)
    padded = F.pad(brightness[None, None], (1, 1, 1, 1), mode="replicate")[0, 0]
    grad_y = (padded[2:, 1:-1] - padded[:-2, 1:-1]) / 2  # central differences
    grad_x = (padded[1:-1, 2:] - padded[1:-1, :-2]) / 2
    texture = (grad_x**2 + grad_y**2).sqrt()
    f = torch.cat([chroma, brightness[..., None], texture[..., None]], dim=-1)  # (H, W, 5)
    f = (f - f.mean((0, 1))) / f.std((0, 1)).clamp_min(1e-6)  # every cue on the same footing
    f = f / f.norm(dim=-1, keepdim=True).clamp_min(1e-6)  # unit vectors: dot product = cosine
    return f[None]


features = colour_texture_features(image)
torch.testing.assert_close(features, simple_features(image))  # the same as bralib.viz.routing's
logits, index = route_regions(features, features, n_win=7, topk=4)
print("routing index", tuple(index.shape))

# %% [markdown]
# `bralib.viz.routing.draw_routing(image, index, n_win, query_region)` draws one row of the index: the query
# region with a dashed yellow outline, its routed regions in cyan with their rank, the rest shaded
# ({numref}`fig-routing-four-queries`).

# %% mystnb={"figure": {"caption": "Where four query regions (dashed yellow: on the flag, the face, the suit and the helmet) route with $k = 4$: their routed regions in cyan, numbered by rank; the other regions are shaded.", "name": "fig-routing-four-queries"}}
query_regions = {"flag": 7, "face": 10, "suit": 36, "helmet": 40}
fig, axes = plt.subplots(1, 4, figsize=(12, 3.4))
for ax, (name, r) in zip(axes, query_regions.items(), strict=True):
    draw_routing(image, index[0], 7, r, ax, title=f"{name}: region {r} -> {index[0, r].tolist()}")
plt.tight_layout()
plt.show()

# %% [markdown]
# The routed regions resemble their query region: a region of the flag looks at the other flag region and
# at the bright wall, the face at the face and the hair, the orange suit at the suit, the black helmet at
# the other dark regions. Nothing told the routing about objects; similar features were enough. In a
# trained network the features are learned, so that the regions worth attending to score high.
#
# Not every region behaves so well, and the exception teaches something about dot products. Region 17
# (chin, mouth and the top of the collar) routes to the plain grey wall, not to the face. Its pixels point
# in several directions, so their mean is a short vector; the dot product $\bar q_{17} \cdot \bar k_j =
# |\bar q_{17}|\,|\bar k_j| \cos\theta$ then favours keys with a *long* mean, i.e. uniform regions, over the
# face's equally mixed regions. A dot product is not a similarity: it also rewards length.

# %%
region_feature = region_means(features, 7)[0]  # (49, 5)
lengths = region_feature.norm(dim=-1)
print("region 17 ->", index[0, 17].tolist(), f"  mean lengths: region 17 {lengths[17]:.2f}, "
      f"its picks {[f'{lengths[j]:.2f}' for j in index[0, 17]]}, the face's region 10 {lengths[10]:.2f}")  # fmt: skip
assert 17 not in index[0, 17] and (lengths[index[0, 17]] > lengths[17]).all()

# %% [markdown]
#
# A look at the full adjacency shows the structure behind these choices: rows are query regions, columns
# key regions, and blocks of similar regions light up together ({numref}`fig-adjacency`).

# %% mystnb={"figure": {"caption": "Left: the region adjacency $A^r$ of the astronaut (49x49; rows are query regions, columns key regions). Right: the routing graph it gives, the top 4 of each row.", "name": "fig-adjacency"}}
fig, axes = plt.subplots(1, 2, figsize=(9, 4))
shown = axes[0].imshow(logits[0], cmap="RdBu_r", vmin=-logits.abs().max(), vmax=logits.abs().max())
axes[0].set(title="region adjacency $A^r$ (49 x 49)", xlabel="key region", ylabel="query region")
fig.colorbar(shown, ax=axes[0], fraction=0.046)
routed = torch.zeros(49, 49).scatter(-1, index[0], 1.0)
axes[1].imshow(routed, cmap="gray_r")
axes[1].set(title="routing graph: top-4 of each row", xlabel="key region", ylabel="query region")
plt.tight_layout()
plt.show()

# %%
for name, r in query_regions.items():
    assert r in index[0, r].tolist(), f"{name}: a uniform-looking region should route to itself"
assert (routed.sum(-1) == 4).all()
print(f"{int(routed.diagonal().sum())} of 49 regions route to themselves; "
      f"{int((routed * routed.T).sum() - routed.diagonal().sum()) // 2} pairs route to each other")  # fmt: skip

# %% [markdown]
# ## 5. How S and k change the picture
#
# Two knobs set what a query sees: $S$, the regions per side (their size is $H/S \times W/S$), and $k$, how
# many regions it sees. A query attends to $k \cdot HW/S^2$ tokens. Below, the query is always the pixel
# on the astronaut's face marked by the star; the rows change $S$, the columns change $k$
# ({numref}`fig-s-and-k`).

# %% mystnb={"figure": {"caption": "What one query pixel on the face (star) attends to as $S$ (rows: 4, 7, 14) and $k$ (columns: 1, 4, 8) change; each title gives the number of pixels attended, $k \\cdot HW/S^2$.", "name": "fig-s-and-k"}}
point = (26, 54)  # (row, column) of the query pixel in the 112 x 112 picture, on the face
sizes, ks = (4, 7, 14), (1, 4, 8)
fig, axes = plt.subplots(len(sizes), len(ks), figsize=(9.5, 9.8))
covered = {}
for row_axes, S in zip(axes, sizes, strict=True):
    _, index_S = route_regions(features, features, n_win=S, topk=max(ks))
    r = (point[0] // (112 // S)) * S + point[1] // (112 // S)
    for ax, k_ in zip(row_axes, ks, strict=True):
        drawing = draw_routing(image, index_S[0, :, :k_], S, r, ax, ranks=S < 14, linewidth=1.5,
                               title=f"S={S}, k={k_}: {k_ * (112 // S) ** 2} pixels")  # fmt: skip
        ax.plot(point[1], point[0], marker="*", color="yellow", markersize=10, markeredgecolor="black")
        covered[S, k_] = set(drawing.routed)
plt.tight_layout()
plt.show()

# %% [markdown]
# What to see: with large regions (S = 4) one region already holds the whole face and the hair, and k = 8
# of them is half the picture. With S = 7 the face's region first picks the hair above it, then the rest of
# the face, then the bright shuttle. With small regions (S = 14) the choice is fine-grained: the first pick
# is the neighbouring patch of skin (not even the query's own region), then come far-away patches of similar
# colour on the shuttle. More regions per side make the routing more selective, at the price of a bigger
# graph ($S^4$ adjacency entries) and smaller, noisier region means. BiFormer's choice, S = 7 with k = 1, 4, 16 in its first three stages, keeps
# 64 tokens per query (Table 7 of the paper).
#
# Whatever S, raising k only adds regions: the routed set for k = 4 is inside the one for k = 8.

# %%
for S in sizes:
    assert covered[S, 1] <= covered[S, 4] <= covered[S, 8]
    assert all(len(covered[S, k_]) == k_ for k_ in ks)

# %% [markdown]
# ## 6. What the coarse level costs
#
# Routing costs the region means ($HW \cdot C$ additions), the adjacency ($S^2 \cdot S^2 \cdot C$
# multiply-adds) and a top-k over $S^2$ entries per row. Compare the adjacency with token-to-token attention
# among the routed tokens ($HW \cdot k \, HW/S^2 \cdot C$ multiply-adds, twice: scores and weighted sum) in
# BiFormer-T's first three stages, S = 7:

# %%
print(f"{'stage':>5} {'map':>8} {'C':>4} {'k':>3} {'adjacency MACs':>15} {'token attention MACs':>21}")
for stage, (side, channels, k_) in enumerate([(56, 64, 1), (28, 128, 4), (14, 256, 16)], start=1):
    routing_macs = (7 * 7) ** 2 * channels
    attention_macs = 2 * side * side * k_ * (side * side // 49) * channels
    print(f"{stage:>5} {side:>4}x{side:<3} {channels:>4} {k_:>3} {routing_macs:>15,} {attention_macs:>21,}")
    assert routing_macs < attention_macs

# %% [markdown]
# ## Summary
#
# * `to_regions` (patchify) is a reshape to (B, S, h, S, w, C), a permute that brings the region axes
#   together, and a reshape to (B, S², hw, C); `from_regions` undoes it exactly. Regions and tokens are
#   both numbered row-major.
# * Region-level queries and keys are region means over all channels; the adjacency
#   $A^r = Q^r (K^r)^\top$ is (B, S², S²), and the routing index $I^r$ is its row-wise top-k, sorted.
# * The routing graph is directed, content-dependent, and cheap: its cost depends on $S$, not on the
#   image's size.
# * On a real picture with colour/texture features, regions route to regions that look alike. Larger S makes
#   routing finer; larger k adds regions to the same ranked list.
#
# Chapter 4 uses the index: gather the keys and values of the routed regions and attend to them.
#
# ## Exercises
#
# Open `exercises/03_regions_routing.py`, fill in the functions, and run the cell below (or `bralib exercise
# check --chapter 3`). Each exercise is tagged with its difficulty and its kind: *transcription* (write again
# what the chapter showed), *design* (work out something the chapter did not show) or *experiment* (build a
# measurement, then use it to answer a question). The solutions in `exercises/solutions/` answer every
# question asked here.
#
# **3.1 `to_regions(x, n_win)`** *[easy · transcription]*. Cut (B, H, W, C) into (B, S², HW/S², C), regions
# and tokens row-major. The check tries non-square maps: a version that numbers regions column by column fails
# there.
#
# **3.2 `per_head_routing_index(q, k, n_win, topk, num_heads)`** *[medium · design]*. BiFormer shares one
# routing graph among all heads. Build one graph per head instead, each from its own channels: a (B, heads,
# S², k) index. What would it cost downstream, in the gather?
#
# **3.3 `routing_overlap(index_a, index_b)`** *[medium · experiment]*. The mean share of routed regions two
# routings have in common. Use it on the astronaut: how far do per-head graphs agree with the shared one, and
# how does a *random* routing compare with the content routing, against what chance alone predicts?

# %% tags=["nbval-ignore-output"]
# Tagged: the output changes as you work on the exercises.
from bralib.exercises import check

for name in ("to_regions", "per_head_routing_index", "routing_overlap"):
    check(name)
