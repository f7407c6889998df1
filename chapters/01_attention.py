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
# # Chapter 1 — Attention and its quadratic cost
#
# Bi-Level Routing Attention is an answer to one problem: full self-attention over an image costs time and
# memory that grow with the **square** of the number of pixels (tokens). This chapter builds attention from
# scratch, checks it against PyTorch, and then measures that square.
#
# **Learning goals.** After this chapter you can
#
# 1. write scaled dot-product attention in four lines, with or without a mask, and say what each line does;
# 2. explain why the logits are scaled by $1/\sqrt{d}$;
# 3. count the FLOPs and the memory of full attention over $N = HW$ tokens, and read a log-log plot of
#    them: slope 2 means quadratic;
# 4. say why a vision transformer at useful resolutions needs *sparse* attention, which is where BiFormer
#    starts.

# %% [markdown]
# ## Motivation: the number 3136
#
# BiFormer {cite:p}`zhu2023biformer` works on a 224×224 image cut into 4×4-pixel patches: its first stage has
# a 56×56 feature map, **3136 tokens**. In full self-attention every one of them compares itself with every
# other one: 3136² ≈ 9.8 million scores per head, per image, per layer. The paper's complexity analysis
# (its Eq. 8-9) says that bi-level routing brings the attention cost from $O((HW)^2)$ down to
# $O((HW)^{4/3})$. Before we can appreciate that, we need the $O((HW)^2)$: where it comes from, and what it
# means in seconds and bytes.

# %%
import math
import statistics
import time

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F

from bralib.ops import masks

torch.manual_seed(0)
torch.set_num_threads(1)  # timings below use one core, so other work on the machine disturbs them less

# %% [markdown]
# ## 1. An image as a sequence of tokens
#
# A vision transformer {cite:p}`dosovitskiy2021vit` stores a feature map channels-last, as (B, H, W, C): B images, an H×W grid of
# tokens, C channels each. Attention does not care about the grid: it sees a sequence of $N = HW$ tokens.
# Flattening is row-major, so token $n$ sits at row $n // W$, column $n \% W$.

# %%
B, H, W, C = 2, 4, 6, 8
x = torch.randn(B, H, W, C)  # (B, H, W, C)
tokens = x.reshape(B, H * W, C)  # (B, N, C)
print("feature map", tuple(x.shape), "-> tokens", tuple(tokens.shape))

n = 15
assert torch.equal(tokens[:, n], x[:, n // W, n % W])  # token 15 is row 2, column 3

# %% [markdown]
# ## 2. Scaled dot-product attention, from scratch
#
# Each token is projected to a **query** $q$, a **key** $k$ and a **value** $v$ (learned linear maps; here
# we just take random tensors). Query $i$ scores every key $j$ with a dot product, the scores of a row go
# through a softmax, and the output of query $i$ is the softmax-weighted average of the values
# {cite:p}`vaswani2017attention`:
#
# $$\mathrm{Attention}(Q, K, V) = \mathrm{softmax}\!\left(\frac{Q K^\top}{\sqrt{d}}\right) V,$$
#
# with $Q \in \mathbb{R}^{N \times d}$, $K \in \mathbb{R}^{N \times d}$, $V \in \mathbb{R}^{N \times d_v}$.
# A boolean **mask** (True = may attend) removes keys from a query's softmax by setting their scores to
# $-\infty$: this is how every sparse pattern of the next chapters will be expressed.


# %%
def attention(q, k, v, mask=None):
    """q: (..., N, d), k: (..., M, d), v: (..., M, dv), mask: bool broadcastable to (..., N, M) -> (..., N, dv)."""
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])  # (..., N, M): one score per (query, key)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))  # exp(-inf) = 0: masked keys get no weight
    weights = torch.softmax(scores, dim=-1)  # (..., N, M): every row sums to one
    return weights @ v  # (..., N, dv): each query's weighted average of the values


q = torch.randn(B, H * W, C)
k = torch.randn(B, H * W, C)
v = torch.randn(B, H * W, 5)  # values may have another width than queries and keys
out = attention(q, k, v)
print("out", tuple(out.shape))

# %% [markdown]
# PyTorch ships the same function, `torch.nn.functional.scaled_dot_product_attention`, with fused kernels
# behind it. Ours must agree with it, with and without a mask (PyTorch's boolean `attn_mask` uses the same
# convention: True = may attend). `bralib.ops.masks.masked_attention` is the library's version, with the
# scale passed explicitly; it is the dense reference every BRA backend will be checked against in chapter 4.

# %%
causal = torch.ones(H * W, H * W, dtype=torch.bool).tril()  # a mask: query i sees keys 0..i
torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v), atol=1e-6, rtol=1e-5)
torch.testing.assert_close(
    attention(q, k, v, causal), F.scaled_dot_product_attention(q, k, v, attn_mask=causal), atol=1e-6, rtol=1e-5
)
torch.testing.assert_close(
    attention(q, k, v, causal), masks.masked_attention(q, k, v, causal, C**-0.5), atol=1e-6, rtol=1e-5
)
# Heads are just one more batch dimension: (B, heads, N, d), as PyTorch expects them.
q4, k4, v4 = (torch.randn(B, 3, H * W, 4) for _ in range(3))
torch.testing.assert_close(attention(q4, k4, v4), F.scaled_dot_product_attention(q4, k4, v4), atol=1e-6, rtol=1e-5)

# %% [markdown]
# Two properties make attention an *average*: the weights of each query are non-negative and sum to one,
# so every output lies inside the range of the values it averages. With the causal mask, the first query
# sees only the first key, so it copies the first value exactly.

# %%
weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(C), dim=-1)
assert (weights >= 0).all() and torch.allclose(weights.sum(-1), torch.ones(B, H * W))
assert (out <= v.max(dim=1, keepdim=True).values + 1e-6).all() and (
    out >= v.min(dim=1, keepdim=True).values - 1e-6
).all()
torch.testing.assert_close(attention(q, k, v, causal)[:, 0], v[:, 0])

# %% [markdown]
# ### Why divide by $\sqrt{d}$?
#
# If the entries of $q$ and $k$ are independent with variance 1, their dot product is a sum of $d$ terms of
# variance 1: its standard deviation is $\sqrt{d}$. Without the scale, wide heads give huge scores, the
# softmax saturates to a one-hot vector, and its gradient vanishes. Dividing by $\sqrt{d}$ keeps the scores'
# spread near 1 whatever the width. (BiFormer's released code divides by the *full* width instead of the
# head width, a detail chapter 4 comes back to.)

# %%
for d in (4, 64, 1024):
    qd, kd = torch.randn(256, d), torch.randn(256, d)
    raw = qd @ kd.T
    top = torch.softmax(raw, -1).max(-1).values.mean()
    top_scaled = torch.softmax(raw / math.sqrt(d), -1).max(-1).values.mean()
    print(f"d={d:5d}  std of scores {raw.std():7.2f}, scaled {(raw / math.sqrt(d)).std():.2f}"
          f"   largest softmax weight {top:.2f}, scaled {top_scaled:.2f}")  # fmt: skip
    assert 0.8 < (raw / math.sqrt(d)).std() < 1.2

# %% [markdown]
# ## 3. Counting the cost
#
# For one head with $N$ queries, $M$ keys and width $d$ (take $d_v = d$):
#
# * $QK^\top$ is $N \cdot M$ dot products of length $d$: $NMd$ multiply-adds;
# * weights times $V$ is the same again: $NMd$ multiply-adds;
# * the softmax touches each of the $NM$ scores a few times: small next to the matmuls when $d$ is not tiny.
#
# So self-attention ($M = N$) costs $2N^2 d$ multiply-adds, which we count as $4N^2 d$ FLOPs (a multiply-add
# is two floating-point operations, which is what `torch.utils.flop_counter` counts; the BiFormer paper and
# fvcore {cite:p}`fvcore` count one multiply-add as one "FLOP", so their numbers are half of ours). And the naive
# implementation above stores the $N \times N$ weights: $4N^2$ bytes in float32, per head and per image.
#
# The projections that produce $q$, $k$, $v$ cost $3NC^2$ multiply-adds: linear in $N$. For small maps the
# projections dominate; as the map grows, the $N^2$ term always wins.


# %%
def attention_flops(n_queries, n_keys, dim):
    """FLOPs of softmax(Q K^T) V for one head: two matmuls of n_queries * n_keys * dim multiply-adds each."""
    return 2 * (2 * n_queries * n_keys * dim)


# Check the formula against PyTorch's own FLOP counter on one call.
from torch.utils.flop_counter import FlopCounterMode

with FlopCounterMode(display=False) as counter:
    attention(torch.randn(1, 196, 32), torch.randn(1, 196, 32), torch.randn(1, 196, 32))
assert counter.get_total_flops() == attention_flops(196, 196, 32)

sides = [14, 28, 56, 112]  # feature maps of 14^2 ... 112^2 tokens
dim = 32
print(f"{'map':>9} {'tokens N':>9} {'attention GFLOPs':>17} {'N x N weights (MB)':>19} {'projections GFLOPs':>19}")
for side in sides:
    N = side * side
    print(f"{side:>4} x {side:<3} {N:>9} {attention_flops(N, N, dim) / 1e9:>17.3f} {4 * N * N / 1e6:>19.1f}"
          f" {2 * 3 * N * dim * dim / 1e9:>19.4f}")  # fmt: skip

# %% [markdown]
# Doubling the side of the map quadruples $N$ and multiplies the attention cost by 16. On a log-log plot, a
# power law $y = a N^p$ is a straight line of slope $p$: $\log y = \log a + p \log N$. The analytic FLOPs
# have slope exactly 2.

# %%
token_counts = np.array([side * side for side in sides])
flops = np.array([attention_flops(N, N, dim) for N in token_counts], dtype=float)
flops_slope = np.polyfit(np.log(token_counts), np.log(flops), 1)[0]
print(f"slope of log FLOPs against log N: {flops_slope:.6f}")
assert abs(flops_slope - 2) < 1e-9

# %% [markdown]
# ## 4. Measuring it
#
# Now the clock. We time our `attention` (which builds the N×N weights) and PyTorch's fused
# `scaled_dot_product_attention` (which on the CPU streams over blocks of keys and never stores the whole
# N×N matrix) on one image, one head of width 32, one CPU thread, taking the median of a few repeats. The
# largest map, 112², makes our version allocate a 12544 × 12544 float matrix: 630 MB, for one head of one
# image. We run it once.
#
# Your times will differ from ours (they depend on the machine and on what else it is doing), so this
# cell's output is not compared by the book's checks; the assertions after it only test what any machine
# shows. The plot is {numref}`fig-attention-cost`.


# %% tags=["nbval-ignore-output"]
def median_seconds(fn, args, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


measured = {"ours (stores N x N)": [], "PyTorch fused": []}
for N in token_counts:
    qn, kn, vn = (torch.randn(1, 1, int(N), dim) for _ in range(3))
    repeats = 5 if N <= 3136 else 1
    measured["ours (stores N x N)"].append(median_seconds(attention, (qn, kn, vn), repeats))
    measured["PyTorch fused"].append(median_seconds(F.scaled_dot_product_attention, (qn, kn, vn), 3))
    print(f"N = {N:6d}: " + ", ".join(f"{name} {times[-1] * 1e3:8.2f} ms" for name, times in measured.items()))

# %% mystnb={"figure": {"caption": "Time of full attention on one CPU thread (markers, left axis) and its analytic FLOPs (dashed, right axis) against the number of tokens $N = HW$, on log-log axes: both grow as $N^2$.", "name": "fig-attention-cost"}}
fig, ax = plt.subplots(figsize=(6.5, 4.2))
for (name, times), marker in zip(measured.items(), "os", strict=True):
    ax.loglog(token_counts, times, marker + "-", label=f"measured: {name}")
flops_axis = ax.twinx()
flops_axis.loglog(token_counts, flops, "k--", label="analytic FLOPs (right axis)")
flops_axis.set_ylabel("FLOPs of one head")
# Give both axes the same number of decades per inch, so equal slopes look equal (FLOPs meet our last point).
low, high = ax.get_ylim()
factor = flops[-1] / measured["ours (stores N x N)"][-1]
flops_axis.set_ylim(low * factor, high * factor)
ax.set(xlabel="tokens N = HW", ylabel="seconds (1 CPU thread)", title="full attention: time and FLOPs grow as N²")
ax.set_xticks(token_counts, [f"{s}²" for s in sides])
ax.grid(alpha=0.3, which="both")
lines = ax.get_legend_handles_labels()
more = flops_axis.get_legend_handles_labels()
ax.legend(lines[0] + more[0], lines[1] + more[1], loc="upper left", fontsize=8)
plt.show()

# %% [markdown]
# On the machine this book was built on, the measured lines are nearly straight too, flatter at small $N$
# because fixed overheads (allocating tensors, calling the kernel) dominate tiny problems; yours may bend
# elsewhere, since where overheads stop mattering depends on the machine. What the next cell asserts is
# weaker and should hold anywhere: between 56² and 112² the number of tokens grows 4×, so a linear cost would
# grow 4×, and both implementations grow more than that (the FLOPs grow 16×). If this assertion fails on
# your machine, something else was competing for the core; run the cell again.

# %%
for name, times in measured.items():
    growth = times[3] / times[2]
    print(f"{name}: 4x the tokens (56² -> 112²) took {growth:.0f}x the time")
    assert growth > 4, f"{name}: time should grow superlinearly, grew {growth:.1f}x for 4x the tokens"

# %% [markdown]
# ## 5. Why vision transformers need sparsity
#
# Language models attend over a few thousand tokens. Images produce far more, and dense prediction
# (segmentation, detection) wants high resolution. The table below puts the stage-1 map of common inputs
# (patches of 4×4 pixels) next to the cost of one full-attention layer with BiFormer-T's stage-1 settings
# (2 heads of width 32).

# %%
print(f"{'input':>12} {'stage-1 map':>12} {'tokens':>8} {'GFLOPs / layer':>15} {'weights, fp32 (GB)':>19}")
for name, (height, width) in {"ImageNet": (224, 224), "ADE20K crop": (512, 512), "Cityscapes": (1024, 2048)}.items():
    N = (height // 4) * (width // 4)
    heads, head_dim = 2, 32
    print(f"{name:>12} {height // 4:>5} x {width // 4:<4} {N:>8} {heads * attention_flops(N, N, head_dim) / 1e9:>15.1f}"
          f" {heads * 4 * N * N / 1e9:>19.2f}")  # fmt: skip

# %% [markdown]
# A single layer on one Cityscapes image would need more than 100 GB just for its attention weights, and
# even on an ImageNet image the weights of one layer take 79 MB per image (the fused kernel avoids the
# memory, not the FLOPs). The way out is to let each query attend to a **subset** of
# the keys: a sparse attention pattern. If every query sees a fixed number $m$ of keys, the cost drops from
# $4N^2 d$ to $4Nmd$: linear in $N$.
#
# Which subset? Swin {cite:p}`liu2021swin` uses local windows; other models use axial stripes, dilated grids, criss-cross lines.
# These patterns are **static**: they are the same for every image. BiFormer's idea is to make the subset
# depend on the content, cheaply: first decide, at the coarse level of regions, which regions are worth
# looking at, then attend to the tokens of those regions only. For BiFormer-T's stage 1 (S = 7 regions per
# side, k = 1 routed region), each query sees 64 tokens instead of 3136:

# %%
N, m = 56 * 56, 1 * (56 // 7) * (56 // 7)
print(
    f"full: {N} keys per query; routed (S=7, k=1): {m} keys per query; "
    f"{attention_flops(N, N, 32) / attention_flops(N, m, 32):.0f}x fewer attention FLOPs"
)
assert attention_flops(N, m, 32) * 49 == attention_flops(N, N, 32)

# %% [markdown]
# ## Summary
#
# * Attention is `softmax(q @ k.T / sqrt(d)) @ v`; a boolean mask sets forbidden scores to $-\infty$. Ours
#   equals `F.scaled_dot_product_attention` and `bralib.ops.masks.masked_attention`.
# * The $1/\sqrt{d}$ keeps scores of unit spread, so the softmax does not saturate for wide heads.
# * Full self-attention over $N = HW$ tokens costs $4N^2 d$ FLOPs and, done naively, $4N^2$ bytes of
#   weights per head: slope 2 on a log-log plot, in FLOPs and in measured time.
# * At vision resolutions that is too much: attention has to be sparse. Chapter 2 lays out the classic
#   sparse patterns as masks; chapter 3 builds BiFormer's content-aware one.
#
# ## Exercises
#
# Open `exercises/01_attention.py`, fill in the functions, and run the cells below (or `bralib exercise check
# --chapter 1` in a terminal) until they say PASSED. Each exercise is tagged with its difficulty and its kind:
# *transcription* (write again what the chapter showed), *design* (work out something the chapter did not
# show) or *experiment* (build a measurement, then use it to answer a question). The solutions in
# `exercises/solutions/` answer every question asked here.
#
# **1.1 `attention(q, k, v, mask=None)`** *[easy · transcription]*. Write scaled dot-product attention without
# looking at section 2. The check compares it with `F.scaled_dot_product_attention` on several shapes, with
# and without a mask.
#
# **1.2 `attention_memory_limit(budget_bytes, heads, itemsize=4)`** *[easy · design]*. The largest square map
# whose naive N × N attention weights fit in a memory budget. With an 80 GB GPU, two heads and 16-bit weights,
# how large an input image could one layer take?
#
# **1.3 `attention_entropy(q, k, scale)`** *[medium · experiment]*. The mean entropy of the attention rows.
# Measure it for head widths 4, 64 and 1024, with and without the $1/\sqrt{d}$ scale: what happens to the
# unscaled softmax as $d$ grows, and why does that hurt training?

# %% tags=["nbval-ignore-output"]
# Tagged: the output changes as you work on the exercises.
from bralib.exercises import check

for name in ("attention", "attention_memory_limit", "attention_entropy"):
    check(name)
