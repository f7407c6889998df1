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
# # Chapter 8 — Where does it route?
#
# BRA's routing {cite:p}`zhu2023biformer` is a choice: for every region, k regions out of S². This chapter opens a trained model and
# asks what it chooses, and whether the choice is better than a coin: the pictures of routed regions that
# papers and their readers like to draw, and then the counts that such pictures need behind them.
#
# The model is the smallest one that makes the question sharp: `isotropic_bra`, one BRA block on an 8×8
# grid of tokens (chapter 10 builds its whole family), trained by `experiments/routing_ablation.py` on
# **shape-pairs**: 32×32 images with a filled square, a hollow ring and two crosses, one 4×4-pixel cell
# each, in six colours; the label says whether the ring has the square's colour. The square and the ring
# are at least 6 cells apart, so the square's token must get the ring's colour from far away, and in this
# one-block model the only way there is routing.
#
# **Learning goals.** After this chapter you can
#
# 1. load a trained checkpoint safely (SHA-256 checked, weights only) and read its routing;
# 2. say how routing is learned at all, when top-k passes no gradient;
# 3. measure a hit rate with a binomial confidence interval (Wilson), against chance and against controls
#    (the same network untrained, a content-blind twin, an equally far distractor), instead of trusting one
#    picture.

# %% [markdown]
# ## Motivation
#
# A routing picture (a query region, its k routed regions outlined) shows one choice for one image. It
# cannot say whether that choice is typical, whether a random choice would look as good, or whether the
# *training* made it: an untrained network routes somewhere too. So every rate in this chapter comes with
# a 95 % interval and a control. (Chapter 8 of an earlier edition called such pictures the paper's
# "Figure 1"; the paper's Figure 1 is its throughput chart, and chapter 9 is about that one.)

# %%
import hashlib
import json
import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

import bralib
from bralib.data.shape_pairs import GRID, LABELS, chebyshev, make_shape_pairs
from bralib.ops import local_index, masks
from bralib.viz import draw_routing, draw_token_attention

torch.manual_seed(0)
torch.set_num_threads(1)
REPO = Path.cwd().parent if Path.cwd().name == "chapters" else Path.cwd()
N_WIN, TOPK = 4, 4  # 4x4 regions of 2x2 tokens, 4 routed per region

# %% [markdown]
# ## 1. Load the trained model
#
# The experiment stored each arm's seed-0 weights in float16 next to their SHA-256; a file whose hash
# changed is not the one the stored numbers describe. `torch.load(..., weights_only=True)` reads tensors
# only, never code. We then check the accuracy on the experiment's own validation images against the
# stored one.

# %%
CHECKPOINTS = REPO / "experiments" / "checkpoints" / "routing_ablation"
stored = json.loads((REPO / "experiments" / "results" / "routing_ablation.json").read_text())
settings = stored["settings"]


def load_arm(arm: str) -> torch.nn.Module:
    """The stored seed-0 weights of one arm of chapter 10's family, after checking their SHA-256."""
    path = CHECKPOINTS / f"isotropic_{arm}.pt"
    expected = Path(str(path) + ".sha256").read_text().split()[0]
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert digest == expected, f"{path.name} changed: SHA-256 {digest}, expected {expected}"
    model = bralib.create_model(f"isotropic_{arm}", num_classes=sum(LABELS.values()), heads=settings["heads"])
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    return model.eval()


model = load_arm("bra")
val = make_shape_pairs(settings["val_size"], seed=1_000_000, min_distance=settings["min_distance"],
                       distractors=settings["distractors"], colours=settings["colours"])  # fmt: skip
with torch.no_grad():
    same_logits = model(val.images)[:, : LABELS["same"]]
accuracy = (same_logits.argmax(-1) == val.labels["same"]).float().mean().item() * 100
seed0 = next(r for r in stored["runs"] if r["arm"] == "bra" and r["seed"] == 0)
print(f"'same' top-1 on {len(val)} validation images: {accuracy:.2f} % (stored: {seed0['final']['same']} %)")
assert abs(accuracy - seed0["final"]["same"]) < 0.2  # float16 weights: the same model, to rounding

# %% [markdown]
# ## 2. Where one region routes
#
# The model routes from the region means of its queries and keys: region $i$'s mean query against every
# region's mean key gives a 16×16 table of scores, and each row keeps its 4 best. `last_index` holds the
# choice of the last forward pass, (B, 16, 4). We draw the row of the square's region for four images
# (yellow dashes: the square's region; cyan: the 4 regions it routes to, numbered by rank;
# {numref}`fig-square-routes`).


# %% mystnb={"figure": {"caption": "Where the square's region (yellow dashes) routes in four validation images: the 4 routed regions in cyan, numbered by rank; each title says whether the ring's region is among them.", "name": "fig-square-routes"}}
def region_of_cell(cell: int) -> int:
    """The region (4x4 grid of 2x2-token regions, row-major) of a cell (token) of the 8x8 grid."""
    return (cell // GRID // 2) * N_WIN + (cell % GRID) // 2


def routing_of(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """(B, 16, 4) routing index of the model's one block for these images."""
    with torch.no_grad():
        model(images)
    return model.blocks[0].attn.last_index


index = routing_of(model, val.images)  # (2048, 16, 4)
fig, axes = plt.subplots(1, 4, figsize=(12, 3.2))
for i, ax in enumerate(axes):
    square, ring = (region_of_cell(c) for c in val.cells[i, :2].tolist())
    routed = index[i, square].tolist()
    verdict = "ring routed" if ring in routed else "ring missed"
    draw_routing(val.images[i], index[i], N_WIN, square, ax=ax,
                 title=f"image {i}: ring in region {ring}, {verdict}")  # fmt: skip
    print(
        f"image {i}: square in region {square}, ring in {ring}, routed {routed}, "
        f"same={val.labels['same'][i].item()}, crosses in {[region_of_cell(c) for c in val.cells[i, 2:].tolist()]}"
    )
plt.tight_layout()
plt.show()
for i in range(4):
    square, ring = (region_of_cell(c) for c in val.cells[i, :2].tolist())
    assert set(index[i, square].tolist()) == {square, ring, 8, 15}, "the routing changed: update the text below"

# %% [markdown]
# In all four pictures the square's region routes to itself and to the ring's region, in the first two ranks,
# and spends its two other choices on the same two regions, 8 and 15, whatever they hold: empty in images 0
# to 2, a cross in region 8 of image 3. In image 0 the ring shares region 14 with a cross, so that region's
# mean mixes the two. The pictures suggest a rule: *the square's region, the ring's region, and two fixed
# ones*. Four pictures cannot show a rule; the counts below can.
#
# ## 3. How is routing learned at all?
#
# The routing index is an integer tensor: `topk` returns positions, and no gradient flows through a
# position. So the loss never tells the routing scores "choose the ring's region". Yet the scores are made
# of the same projections as the token attention: the region-mean query is the mean of the queries
# $W_q x$ of the region's tokens, the region-mean key likewise. When the square's *token* attends to the
# ring's token (whenever the ring's region happens to be gathered), the loss pushes $W_q$ and $W_k$ to make
# square-queries and ring-keys agree; the region means inherit that agreement, and the next time the
# routing ranks the ring's region higher. Routing is learned second-hand, through the q/k projections.
# (Chapter 10's exercise 10.2 writes *soft* routing, which passes a gradient to the scores directly.)
#
# We can watch it: the same network at its initial weights (the experiment seeds them with
# `torch.manual_seed(0)`, so this is exactly where the trained model started) routes the square's region to
# the ring's far less often.

# %%
torch.manual_seed(0)
untrained = bralib.create_model("isotropic_bra", num_classes=sum(LABELS.values()), heads=settings["heads"]).eval()
random_arm = load_arm("random")
print("routing index requires grad:", index.requires_grad, "| dtype:", index.dtype)
assert not index.requires_grad and index.dtype == torch.long

# %% [markdown]
# ## 4. Counting, with confidence intervals
#
# Over all 2,048 validation images: does the square's region route to the ring's region (a *hit*)? A rate
# from n images has sampling noise; the **Wilson score interval** is the 95 % interval to use for a
# proportion (exercise 8.3): unlike $p \pm 1.96\sqrt{p(1-p)/n}$ it stays inside [0, 1] and is not empty
# when no image (or every image) hits. The controls:
#
# * **chance**: 4 regions drawn at random out of 16 include the ring's with probability 4/16 = 0.25
#   (exercise 8.2); the `random` arm of chapter 10 routes exactly so, and we measure it too;
# * **the same network, untrained**;
# * **the content-blind twin**, `local` routing: its 4 regions are the nearest ones, and the ring is always
#   at least 3 regions away, so it can never hit (we count anyway);
# * **a distractor as far away**: a cross at least 6 cells from the square (in a region holding neither
#   the square nor the ring), which differs from the ring in shape only. Routing that follows the ring
#   should hit it less often ({numref}`fig-hit-rates`).


# %%
def wilson(hits: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion."""
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(centre - half, 0.0), min(centre + half, 1.0)  # in [0, 1] exactly, not just to rounding


def hit_counts(index: torch.Tensor, data) -> dict[str, tuple[int, int]]:
    """(hits, trials) for: the ring's region, a far cross's region, and the square's own region."""
    counts = {"ring": [0, 0], "far cross": [0, 0], "itself": [0, 0]}
    for i, cells in enumerate(data.cells.tolist()):
        square, ring = region_of_cell(cells[0]), region_of_cell(cells[1])
        routed = set(index[i, square].tolist())
        for name, target in (("ring", ring), ("itself", square)):
            counts[name][0] += target in routed
            counts[name][1] += 1
        for cross in cells[2:]:
            region = region_of_cell(cross)
            if chebyshev(cross, cells[0]) >= 6 and region not in (square, ring):
                counts["far cross"][0] += region in routed
                counts["far cross"][1] += 1
    return {name: (hits, n) for name, (hits, n) in counts.items()}


local_rows = local_index(N_WIN, TOPK).expand(len(val), -1, -1)
torch.manual_seed(1)
results = {
    "trained BRA": hit_counts(index, val),
    "untrained BRA": hit_counts(routing_of(untrained, val.images), val),
    "random routing": hit_counts(routing_of(random_arm, val.images), val),
    "local routing": hit_counts(local_rows, val),
}
print(f"{'model':<16}{'target':<11}{'hit rate':>9}{'95 % interval':>17}{'n':>6}")
for model_name, counts in results.items():
    for target, (hits, n) in counts.items():
        low, high = wilson(hits, n)
        print(f"{model_name:<16}{target:<11}{hits / n:>9.3f}   [{low:.3f}, {high:.3f}]{n:>6d}")

# %% mystnb={"figure": {"caption": "How often the square's region routes to the ring's region, to a far cross and to itself, for each model, with 95 % Wilson intervals. Dotted: chance, 4 of 16 regions.", "name": "fig-hit-rates"}}
fig, ax = plt.subplots(figsize=(7, 3.2))
names = list(results)
for j, target in enumerate(("ring", "far cross", "itself")):
    rates = np.array([results[m][target][0] / results[m][target][1] for m in names])
    bounds = np.array([wilson(*results[m][target]) for m in names])
    ax.bar(np.arange(len(names)) + (j - 1) * 0.27, rates, 0.27, label=f"to the {target}" if target != "itself"
           else "to itself", yerr=np.clip([rates - bounds[:, 0], bounds[:, 1] - rates], 0, None), capsize=2)  # fmt: skip
ax.axhline(TOPK / N_WIN**2, color="grey", ls=":", label="chance, 4 of 16")
ax.set_xticks(range(len(names)), names)
ax.set(ylabel="share of images", ylim=(0, 1.15), title="the square's region routes ...")
ax.legend(fontsize=8, ncol=4, loc="upper center")
plt.tight_layout()
plt.show()

# %%
rate = {m: {t: h / n for t, (h, n) in c.items()} for m, c in results.items()}
ring_low, _ = wilson(*results["trained BRA"]["ring"])
_, untrained_high = wilson(*results["untrained BRA"]["ring"])
_, cross_high = wilson(*results["trained BRA"]["far cross"])
assert ring_low > untrained_high and ring_low > cross_high and ring_low > 0.25  # training made it, not chance
assert results["local routing"]["ring"][0] == 0  # the content-blind twin never reaches the ring
assert abs(rate["random routing"]["ring"] - 0.25) < 0.04  # the random arm routes at chance
assert results["trained BRA"]["ring"] == (len(val), len(val)), "the routing changed: update the text below"
assert abs(rate["untrained BRA"]["ring"] - 0.29) < 0.02 and abs(rate["trained BRA"]["far cross"] - 0.14) < 0.02
fixed = [{8, 15} <= set(index[i, region_of_cell(c[0])].tolist()) for i, c in enumerate(val.cells.tolist())
         if not {8, 15} & {region_of_cell(c[0]), region_of_cell(c[1])}]  # fmt: skip
print(f"the square's region also routes to regions 8 and 15: {sum(fixed)} of {len(fixed)} images")
assert 0.4 < sum(fixed) / len(fixed) < 0.6

# %% [markdown]
# The trained routing sends the square's region to the ring's region in every one of the 2,048 validation
# images (Wilson interval [0.998, 1]). Each control is far below: the same network at its initial weights
# hits in about 29 % of images (near the 25 % of a random choice: untrained routing is a coin), the random
# arm at chance, the local twin never (the ring is out of its reach by construction), and a cross as far
# away as the ring is routed to in about 14 % of the images, *less* than chance, because two of the four
# choices are taken by the square itself and the ring. The only thing that separates the ring from such a
# cross is its shape, so the routing reads content, and training taught it to. The regions 8 and 15 of the
# pictures are favourites, not a rule: both are among the square region's four in about half of the images
# where neither holds the square or the ring. Once the ring is found, the loss cares little where the last
# two routes go.
#
# ## 5. Does a region route to itself?
#
# Nothing in BRA makes a region route to itself: region $i$ keeps itself only when its own mean key is among
# the 4 best matches for its own mean query, $\bar q_i \cdot \bar k_i$ against $\bar q_i \cdot \bar k_j$.
# Its own tokens' content reaches the output anyway, through the residual connection (and, in BiFormer,
# through the local context enhancement, a convolution on V), so the loss has no reason to ask for it.
# In `biformer_nano` (an earlier edition of this chapter) the cue's region almost never routed to itself in
# stages 1 and 2; here the square's region always does. Both follow from one rule, routing goes where the
# keys match the query, as a count over every region of every validation image shows (one share of 0.25
# is one of the four routed regions):

# %%
CONTENTS = ("empty", "cross", "ring", "square")  # what a region holds (square over ring over cross)
holds = torch.zeros(len(val), N_WIN * N_WIN, dtype=torch.long)  # (B, 16) index into CONTENTS
for column, kind in ((2, 1), (3, 1), (1, 2), (0, 3)):  # crosses, then the ring, then the square
    regions = torch.tensor([region_of_cell(c) for c in val.cells[:, column].tolist()])
    rows = torch.arange(len(val))
    holds[rows, regions] = torch.maximum(holds[rows, regions], torch.tensor(kind))
routes_to_itself = (index == torch.arange(N_WIN * N_WIN)[None, :, None]).any(-1)  # (B, 16)
destination = holds.gather(1, index.flatten(1)).reshape(index.shape)  # (B, 16, 4): what each routed region holds
print(f"{'region holds':<13}{'n':>7}{'routes to itself':>18}{'95 % interval':>17}   its 4 routed regions hold")
slot_share = {}
for kind, name in enumerate(CONTENTS):
    where = holds == kind
    hits, n = int(routes_to_itself[where].sum()), int(where.sum())
    low, high = wilson(hits, n)
    slot_share[name] = {other: (destination[where] == j).float().mean().item() for j, other in enumerate(CONTENTS)}
    shares = ", ".join(f"{other} {share:.2f}" for other, share in slot_share[name].items())
    print(f"{name:<13}{n:>7d}{hits / n:>18.3f}   [{low:.3f}, {high:.3f}]   {shares}")
self_rate = {name: routes_to_itself[holds == kind].float().mean().item() for kind, name in enumerate(CONTENTS)}
assert self_rate["square"] > 0.95 and self_rate["ring"] > 0.95 and self_rate["empty"] < 0.25
assert all(s["square"] > 0.2 and s["ring"] > 0.2 and s["cross"] < 0.1 for s in slot_share.values())

# %% [markdown]
# Every region, whatever it holds, gives one of its four routed regions to the square's region and one to the
# ring's; the other two go mostly to empty regions and almost never to a cross. So the square's and the
# ring's regions "route to themselves" only because *every* region routes to them: the trained routing has
# learnt which keys matter (those of the square and of the ring), nearly regardless of the query. On this
# task, one relation per image, that is all it needs: the square's region gets the ring, whatever else it
# gets. And a region that holds a cross or nothing keeps itself no more often than chance (4 of 16 = 0.25)
# allows: its own keys are not what queries look for.
#
# Self-routing is therefore not a rule of BRA but one more content match, and it appears exactly where a
# region's own mean key scores high against its own mean query. In `biformer_nano` the cue's region did not
# find its own keys among its best matches in stages 1 and 2, so it spent all k choices elsewhere; its own
# content still reached the next layer through the residual connection and the local context enhancement.
# Not routing to itself costs such a region nothing.
#
# ## 6. Inside the routed regions
#
# Routing only chooses regions. Within the 16 gathered tokens, the square's token still weighs every key.
# We recompute its attention from the block's own q and k (heads averaged; keys outside the routed regions
# get weight 0 and stay transparent), for the first image whose ring was routed:

# %% mystnb={"figure": {"caption": "The first validation image whose ring was routed: where the square's region routes (left), and the attention of the square's token over the routed tokens, heads averaged (right).", "name": "fig-inside-routed"}}
example = next(i for i in range(len(val)) if region_of_cell(val.cells[i, 1].item())
               in index[i, region_of_cell(val.cells[i, 0].item())])  # fmt: skip
block = model.blocks[0]
with torch.no_grad():
    x = block.attn_norm(model.embed(val.images[example : example + 1]))  # (1, 8, 8, 64)
    q, k, _ = block.attn.qkv(x).split(64, dim=-1)
    heads = block.attn.num_heads
    qh = q.reshape(64, heads, -1).transpose(0, 1)  # (heads, 64, 16)
    kh = k.reshape(64, heads, -1).transpose(0, 1)
    allowed = masks.routed_mask(index[example : example + 1], GRID, GRID, N_WIN)[0]  # (64, 64)
    weights = ((qh @ kh.transpose(-1, -2)) * block.attn.scale).masked_fill(~allowed, float("-inf"))
    weights = weights.softmax(-1).mean(0)  # (64, 64)
square_cell, ring_cell = val.cells[example, :2].tolist()
share = weights[square_cell, ring_cell].item()
fig, axes = plt.subplots(1, 2, figsize=(7, 3.4))
draw_routing(val.images[example], index[example], N_WIN, region_of_cell(square_cell), ax=axes[0],
             title="the square's region routes")  # fmt: skip
draw_token_attention(val.images[example], weights[square_cell].reshape(GRID, GRID), divmod(square_cell, GRID),
                     ax=axes[1], n_win=N_WIN, title=f"square token: {share:.0%} on the ring")  # fmt: skip
plt.tight_layout()
plt.show()
print(f"image {example}: the square token puts {share:.3f} of its attention on the ring's token")
assert torch.allclose(weights.sum(-1), torch.ones(64)) and share > 2 / 16

# %% [markdown]
# Routing narrowed the square's choice from 64 keys to 16; among those 16, token attention puts a large
# share on the ring's single token (a uniform spread would give 1/16 = 0.06), and spreads the rest over the
# other gathered tokens. The two levels do different jobs: the coarse one must not
# miss the ring's region, the fine one reads the ring's colour within it.
#
# ## Summary
#
# * A committed checkpoint is loaded after its SHA-256 is checked, with `weights_only=True`.
# * Routing is a top-k of region-mean scores; it passes no gradient, and is learned through the q/k
#   projections that token attention trains.
# * A hit rate needs an interval (Wilson) and controls: chance, the untrained network, a content-blind twin,
#   an equally far distractor. Pictures illustrate counts; they do not replace them.
#
# ## Exercises
#
# Open `exercises/08_where_it_routes.py`, fill in the functions, and run the cell below (or
# `bralib exercise check --chapter 8`).
#
# **8.1 `regions_under_box(top, left, size, image_size, n_win)`.** The regions a square box of pixels overlaps
# (here every object fills one cell, so one region; a bigger object spans several).
#
# **8.2 `chance_of_hit(n_regions, topk, n_targets)`.** The chance level of section 4: the probability that
# k regions drawn at random include at least one of m targets.
#
# **8.3 `wilson_interval(hits, n, z)`.** The Wilson score interval of section 4.

# %% tags=["nbval-ignore-output"]
# Tagged: the output changes as you work on the exercises.
from bralib.exercises import check

for name in ("regions_under_box", "chance_of_hit", "wilson_interval"):
    check(name)
