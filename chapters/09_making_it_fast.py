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
# # Chapter 9 — Making it fast
#
# Bi-level routing cuts attention's FLOPs from $O((HW)^2)$ to about $O((HW)^{4/3})$ (chapter 5). FLOPs are
# not time. This chapter finds out where the time of the paper's algorithm goes, builds four other ways to
# compute *exactly the same function*, checks them against the dense reference, and measures them side by
# side, forward and backward, in time and in memory.
#
# **Learning goals.** After this chapter you can
#
# 1. count the FLOPs and the bytes of every step of the gather algorithm, and say from their ratio (the
#    arithmetic intensity) whether a step is limited by arithmetic or by memory traffic;
# 2. explain what each bralib backend (`sdpa`, `dense`, `lean`, `flex`, `triton`) changes, and when each wins;
# 3. write the backward of a gather as an index-add, and see why that keeps the memory saved for the
#    backward at $O(HW\,C)$ instead of $O(k\,HW\,C)$;
# 4. measure honestly: same inputs, interleaved rounds, medians, the machine's load written down;
# 5. read `bralib bench` and `bralib.ops.explain_backend`, and let `backend="auto"` choose.

# %% [markdown]
# ## Motivation: the paper's own limitation
#
# The BiFormer paper {cite:p}`zhu2023biformer` is candid about it: at about equal FLOPs, BiFormer-STL (Swin-T's layout with BRA in
# place of window attention, 4.6 GFLOPs) runs at about half the throughput of Swin-T (4.5 GFLOPs) on a V100
# (its Figure 1), because the gather moves $k$ copies of the routed keys and values through memory and costs
# extra kernel launches. On one H100 (measured by the project on 2026-11-24, PyTorch 2.11, batch 128, 224×224;
# the numbers and settings are stored in `benchmarks/h100_anchors.json`), an independent re-implementation of
# the released BiFormer-S reaches:
#
# | images/s | inference, AMP | training, AMP |
# |---|---|---|
# | Swin-T (timm) | 5273 | 1800 |
# | BiFormer-S, the paper's gather | 1509 (0.29×) | 542 (0.30×) |
#
# Both models do about 4.5 GMACs per image. The same measurements show that no single way of computing
# BRA wins everywhere: at stage 1 (64-token regions, $k=1$) a fused attention kernel on the gathered keys is
# fastest; at stage 3 (4-token regions, $k=16$ of 49) plain dense attention over all 196 tokens with a
# mask is 4× faster than the gather. That is the plan of this chapter, on the CPU in front of us.

# %%
import json
import time
from pathlib import Path

import matplotlib.pyplot as plt
import torch

import bralib
from bralib.bench import report
from bralib.bench.measure import saved_bytes
from bralib.bench.ops_bench import bench_shape
from bralib.bench.shapes import preset_shapes
from bralib.ops import BACKENDS, bra, explain_backend, route_regions, to_regions
from bralib.ops.backends.gather import gather_kv
from bralib.ops.backends.layout import gather_tokens, routed_token_index

torch.manual_seed(0)
torch.set_num_threads(1)  # the live timings below use one core, so a busy machine disturbs them less

# %%
# The H100 numbers above, read from the file that records how they were made.
anchors = json.loads((Path(bralib.__file__).resolve().parent.parent / "benchmarks" / "h100_anchors.json").read_text())
columns, throughput = anchors["throughput"]["columns"], anchors["throughput"]
pairs = zip(throughput["swin_t"], throughput["biformer_s_gather"], strict=True)
gpu = dict(zip(columns, pairs, strict=True))  # column -> (Swin-T, BiFormer-S) images/s
print(anchors["provenance"])
for column in ("infer_amp", "train_amp"):
    swin, biformer = gpu[column]
    print(f"{column}: Swin-T {swin} img/s, BiFormer-S (gather) {biformer} img/s, ratio {biformer / swin:.2f}")
assert round(gpu["infer_amp"][1] / gpu["infer_amp"][0], 2) == 0.29  # the table's ratios, from the stored numbers
assert round(gpu["train_amp"][1] / gpu["train_amp"][0], 2) == 0.30

# %% [markdown]
# ## 1. Where the bytes go
#
# Take one BRA call: B images of H×W tokens with C channels in `heads` heads, S×S regions of
# $n = HW/S^2$ tokens, $k$ routed regions. Write $T = B\,HW$ for the number of tokens. The paper's
# algorithm, as `bralib.ops.backends.gather` computes it, does in float32 (4 bytes per number):
#
# 1. **regions**: copy q, k, v into region order (read and write each once);
# 2. **gather**: copy the $k$ routed regions of every region out of the region-ordered keys and values
#    (`index_select` over whole regions): $K^g, V^g$ of $k\,T\,C$ numbers each, read and written;
# 3. **split heads**: the batched matmuls want every head contiguous, so $Q$, $K^g$ and $V^g$ are copied
#    once more into head-major order;
# 4. **$QK^\top$**: $2\,T\,C\,k\,n$ FLOPs; reads $Q$ and $K^g$, writes the attention matrix ($T\cdot
#    \text{heads}\cdot k n$ numbers);
# 5. **softmax**: reads and writes the attention matrix (a handful of FLOPs per element);
# 6. **$AV$**: $2\,T\,C\,k\,n$ FLOPs; reads the attention matrix and $V^g$, writes the output;
# 7. **back to the map**: merge heads and undo the regions (two copies of the output).
#
# (The released code picks the routed regions with an element-wise `torch.gather` on a (B, S², S², n, C)
# broadcast of the keys, which also reads an int64 index per element and whose backward allocates $S^2$ times
# the keys; bralib's `gather` selects whole regions instead. The baseline below is the faster of the two.)
#
# The ratio FLOPs / bytes is the step's **arithmetic intensity**. A machine does $F$ FLOP/s and moves $M$
# bytes/s; a step whose intensity is below $F/M$ (the machine's *balance*) cannot keep the arithmetic units
# busy: its time is its bytes divided by $M$, whatever its FLOPs.


# %%
def gather_costs(batch, side, channels, heads, topk, n_win=7, itemsize=4):
    """(step, FLOPs, bytes) of each step of the gather algorithm for one BRA call on (B, side, side, C) maps."""
    T = batch * side * side  # tokens
    n = side * side // n_win**2  # tokens per region
    attn = T * heads * topk * n  # attention-matrix entries
    gathered = topk * T * channels  # numbers in K^g (and in V^g)
    return [
        ("regions (q, k, v)", 0, 3 * 2 * T * channels * itemsize),
        ("gather (K, V)", 0, 2 * 2 * gathered * itemsize),
        ("split heads", 0, 2 * (T * channels + 2 * gathered) * itemsize),
        ("Q K^T", 2 * T * channels * topk * n, (T * channels + gathered + attn) * itemsize),
        ("softmax", 5 * attn, 2 * attn * itemsize),
        ("A V", 2 * T * channels * topk * n, (attn + gathered + T * channels) * itemsize),
        ("back to the map", 0, 2 * 2 * T * channels * itemsize),
    ]


def machine_balance(seconds=0.5):
    """Measured FLOP/s of a large matmul and bytes/s of a large copy, on this core."""
    a, b = torch.randn(512, 512), torch.randn(512, 512)
    x, y = torch.randn(8 * 2**20), torch.empty(8 * 2**20)
    rates = {}
    for name, work, fn in [("flops", 2 * 512**3, lambda: a @ b), ("bytes", 2 * x.numel() * 4, lambda: y.copy_(x))]:
        fn()
        times = []
        while sum(times) < seconds / 2:
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        rates[name] = work / min(times)
    return rates


rates = machine_balance()
balance = rates["flops"] / rates["bytes"]
print(f"this core: {rates['flops'] / 1e9:.0f} GFLOP/s (matmul), {rates['bytes'] / 1e9:.1f} GB/s (copy)")
print(f"balance: {balance:.1f} FLOP/byte; steps below it are memory-bound\n")

for shape in preset_shapes("biformer-t", 8):
    costs = gather_costs(shape.batch, shape.height, shape.dim, shape.num_heads, shape.topk)
    total_flops, total_bytes = sum(c[1] for c in costs), sum(c[2] for c in costs)
    copy_share = sum(c[2] for c in costs if c[1] == 0) / total_bytes  # bytes of the steps with no arithmetic
    assert copy_share > 0.5
    print(f"{shape.label}: {total_flops / 1e9:.2f} GFLOP, {total_bytes / 1e6:.0f} MB, {copy_share:.0%} in pure copies")
    for step, flops, nbytes in costs:
        intensity = flops / nbytes
        floor_ms = max(flops / rates["flops"], nbytes / rates["bytes"]) * 1e3
        bound = "memory" if intensity < balance else "compute"
        print(f"  {step:<18} {intensity:6.2f} FLOP/B  {bound:>7}-bound  floor {floor_ms:6.1f} ms")

# %% [markdown]
# Read the three stages top to bottom. The copies (regions, gather, head splits, back to the map) do no
# arithmetic at all, and they move most of the bytes: about 60% at stage 1 and more than 75% at stage 3, where
# $k = 16$ makes $K^g$ and $V^g$ sixteen times the size of K and V. The two matrix products do better, but
# their intensity falls from stage to stage: every region's queries meet $k n = 64$ keys of head width 32 at
# all three stages, yet the queries per region shrink from 64 to 4, so each gathered key is used by fewer
# queries: about 8, 4.6 and 1.7 FLOP/byte for $QK^\top$ at stages 1, 2, 3. On this core the output above marks
# them compute-bound at stages 1-2 and memory-bound at stage 3 (where the line falls depends on the measured
# balance); on a GPU, whose balance is in the hundreds of FLOP/byte, all of them would be memory-bound. With
# most bytes in pure copies, that is what "the gather is memory-bound" means, and why FLOPs do not predict
# the time. The roofline {cite:p}`williams2009roofline` of {numref}`fig-roofline` draws the same
# numbers.

# %% mystnb={"figure": {"caption": "Roofline of this core (measured peak matmul FLOP/s and copy bandwidth) with the gather algorithm's steps of BiFormer-T's three BRA stages at batch 8, placed by the intensities computed above; the copies do no arithmetic and appear only in the legend.", "name": "fig-roofline"}}
from bralib.viz import draw_roofline

roof_steps = {}
for stage, shape in enumerate(preset_shapes("biformer-t", 8), start=1):
    costs = {step: (flops, nbytes) for step, flops, nbytes in gather_costs(
        shape.batch, shape.height, shape.dim, shape.num_heads, shape.topk)}  # fmt: skip
    roof_steps[f"stage {stage} Q K^T"] = costs["Q K^T"]
    roof_steps[f"stage {stage} softmax"] = costs["softmax"]
roof_steps["stage 3 gather (K, V)"] = costs["gather (K, V)"]
draw_roofline(roof_steps, rates["flops"], rates["bytes"], title="The gather algorithm on this core (float32)")
plt.show()
qk_intensity = [roof_steps[f"stage {s} Q K^T"][0] / roof_steps[f"stage {s} Q K^T"][1] for s in (1, 2, 3)]
assert qk_intensity[0] > qk_intensity[1] > qk_intensity[2]  # fewer queries per gathered key, stage by stage
assert [round(i, 1) for i in qk_intensity] == [8.0, 4.6, 1.7]

# %% [markdown]
# The same bookkeeping predicts the **memory kept for the backward**. Autograd saves what each step needs
# to differentiate it: the scaled queries, $K^g$ and $V^g$ ($k$ copies each) and the attention matrix. We
# can count what is really saved with `torch.autograd.graph.saved_tensors_hooks` (what
# `bralib.bench.measure.saved_bytes` does: the distinct storages, in bytes) and compare:

# %%
shape = preset_shapes("biformer-t", 2)[2]  # stage 3 at batch 2: small enough to run anywhere
gen = torch.Generator().manual_seed(0)
q, k, v = (torch.randn(2, 14, 14, 256, generator=gen, requires_grad=True) for _ in range(3))
_, index = route_regions(q.detach(), k.detach(), n_win=7, topk=16)


def saved_by(backend):
    count, out = saved_bytes(
        lambda: bra(q, k, v, num_heads=8, n_win=7, topk=16, routing_index=index, backend=backend), exclude=(q, k, v)
    )
    return count


T, C, heads, topk, n = 2 * 196, 256, 8, 16, 4
# scaled q, K^g and V^g, the attention matrix; and each of the two region selects keeps its int64 region numbers
predicted_gather = (T * C * (1 + 2 * topk) + T * heads * topk * n) * 4 + 2 * index.numel() * 8
predicted_lean = (T * C + T * heads) * 4 + index.numel() * 8  # the output, one log-sum-exp per query and head
print(f"gather saves {saved_by('gather') / 2**20:.2f} MiB (predicted {predicted_gather / 2**20:.2f})")
print(f"lean saves   {saved_by('lean') / 2**20:.2f} MiB (predicted {predicted_lean / 2**20:.2f})")
assert saved_by("gather") == predicted_gather
assert saved_by("lean") == predicted_lean

# %% [markdown]
# ## 2. Five ways to compute the same function
#
# | backend | what it does | what it changes |
# |---|---|---|
# | `gather` | the paper's algorithm | the baseline every ratio is measured against |
# | `sdpa` | copies each routed key/value *token* once, as a row, straight from the map into its gathered place (heads stay inside the channels); then PyTorch's fused `scaled_dot_product_attention` (on a GPU, often a FlashAttention {cite:p}`dao2022flashattention` kernel) | no region copies, no head copies, no attention matrix in memory; autograd still saves $K^g, V^g$ |
# | `dense` | fused SDPA over **all** tokens with the routed-region mask | $S^2/k$ times the FLOPs, but no gather and one large, efficient kernel: wins when regions are tiny |
# | `lean` | `sdpa`'s gathers and fused kernels (forward and backward) in a custom autograd function, a few dozen regions at a time | saves only q, k, v, the output and the softmax statistics: $O(HW\,C)$ for the backward; the backward re-gathers and **index-adds** the key/value gradients into their source tokens; the chunks keep the gathered tokens in cache |
# | `flex` | FlexAttention {cite:p}`dong2024flexattention` with one block per routed region | nothing gathered at all: a compiled block-sparse kernel; forward only on CPU |
#
# The first change is the cheapest to see. The gather copies the key map into region order, then copies the
# routed regions out of it, then splits the heads: three passes over (up to) $k$ copies of the keys. But a
# routed region is just a list of token numbers, so we can copy whole token rows (C contiguous numbers each)
# straight from the (B, H, W, C) map, in the order the attention wants them, with one `index_select`:


# %%
def routed_token_rows(index, height, width, n_win):
    """(B, S*S, topk) -> the row of (B*H*W, C) that every gathered key comes from, in gathered order."""
    batch = index.shape[0]
    region_tokens = to_regions(torch.arange(height * width).view(1, height, width, 1), n_win).reshape(n_win**2, -1)
    return (region_tokens[index] + torch.arange(batch).view(batch, 1, 1, 1) * height * width).reshape(-1)


rows = routed_token_rows(index, 14, 14, 7)  # (B * S^2 * topk * n,)
k_rows = k.detach().reshape(-1, 256).index_select(0, rows).view(2, 49, 16 * 4, 256)  # (B, S^2, topk*n, C)
k_gather = gather_kv(to_regions(k.detach(), 7), index).reshape(2, 49, 16 * 4, 256)  # the gather backend's two copies
assert torch.equal(k_rows, k_gather)
assert torch.equal(rows, routed_token_index(index, 14, 14, 7))  # bralib's version
assert torch.equal(k_rows, gather_tokens(k.detach(), rows, 49))
print("token-row gather == the gather backend's:", k_rows.shape)

# %% [markdown]
# The backward of that copy is the heart of `lean`. If row $j$ of the key map was copied into gathered
# positions $i_1, i_2, \dots$, its gradient is the **sum** of the gradients of those positions. Writing
# `grad[rows] += g` would be wrong (repeated rows keep only one contribution); `index_add_` sums them, and
# needs nothing but the gathered gradient and the row numbers, never a buffer $k$ (or, for the released
# code's `torch.gather`, $S^2$) times the size of the keys. Exercise 9.2 asks you to write it.

# %%
g_rows = torch.randn(rows.numel(), 256, dtype=torch.float64)
grad_keys = torch.zeros(2 * 196, 256, dtype=torch.float64).index_add_(0, rows, g_rows)
k64 = k.detach().double().requires_grad_()
(autograd_grad,) = torch.autograd.grad(k64.reshape(-1, 256).index_select(0, rows), k64, g_rows)
assert torch.allclose(grad_keys, autograd_grad.reshape(-1, 256))
print("rows gathered more than once:", int((torch.bincount(rows) > 1).sum()), "of", 2 * 196)

# %% [markdown]
# Now every backend against the dense masked reference, on an awkward shape (H ≠ W, values narrower than
# queries and keys) in float64: outputs and the gradients of q, k and v. `flex` has no backward on CPU, so
# it is checked on its forward, in float32 (it compiles a kernel first: a few seconds).

# %%
gen = torch.Generator().manual_seed(1)
q6, k6 = (torch.randn(2, 6, 9, 8, generator=gen, dtype=torch.float64, requires_grad=True) for _ in range(2))
v6 = torch.randn(2, 6, 9, 4, generator=gen, dtype=torch.float64, requires_grad=True)
grad6 = torch.randn(2, 6, 9, 4, generator=gen, dtype=torch.float64)
kwargs = dict(num_heads=2, n_win=3, topk=2)


def out_and_grads(backend, *qkv):
    out = bra(*qkv, backend=backend, **kwargs)
    return (out, *torch.autograd.grad(out, qkv, grad6.to(out.dtype)))


expected = out_and_grads("reference", q6, k6, v6)
for name in ("gather", "sdpa", "dense", "lean"):
    for got, want in zip(out_and_grads(name, q6, k6, v6), expected, strict=True):
        torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-10)
with torch.no_grad():
    flex_out = bra(q6.float(), k6.float(), v6.float(), backend="flex", **kwargs)
torch.testing.assert_close(flex_out, expected[0].float(), atol=1e-5, rtol=1e-5)
print("gather, sdpa, dense, lean (forward and backward) and flex (forward) agree with the reference")

# %% [markdown]
# ## 3. Memory for the backward grows with k — except for `lean`
#
# The gather and `sdpa` keep $K^g$ and $V^g$ for the backward: $2k$ copies of the keys and values. `lean`
# keeps its inputs (which the layer holds anyway), its output and one number per query and head. Measured
# on a 28×28 map with 64 channels ({numref}`fig-backward-memory`):

# %% mystnb={"figure": {"caption": "Memory saved for the backward by one BRA call (28x28 tokens, $C = 64$) against the routed regions $k$: it grows with $k$ for `gather` and `sdpa` and stays flat for `lean`.", "name": "fig-backward-memory"}}
gen = torch.Generator().manual_seed(2)
q28, k28, v28 = (torch.randn(1, 28, 28, 64, generator=gen, requires_grad=True) for _ in range(3))
topks = [1, 2, 4, 8, 16, 49]
saved = {name: [] for name in ("gather", "sdpa", "lean")}
for topk in topks:
    _, index28 = route_regions(q28.detach(), k28.detach(), n_win=7, topk=topk)
    for name in saved:
        count, out = saved_bytes(
            lambda name=name, topk=topk, index=index28: bra(
                q28, k28, v28, num_heads=2, n_win=7, topk=topk, routing_index=index, backend=name
            ),
            exclude=(q28, k28, v28),
        )
        saved[name].append(count / 2**20)
fig, ax = plt.subplots(figsize=(5.5, 3.2))
for name, values in saved.items():
    ax.plot(topks, values, marker="o", label=name)
ax.set(xlabel="routed regions k", ylabel="saved for backward (MiB)", xscale="log", yscale="log")
ax.set_title("Activation memory of one BRA call (28x28, C=64)", fontsize=10)
ax.legend()
plt.show()
assert max(saved["lean"]) - min(saved["lean"]) < 0.05  # only the small routing index grows
assert saved["gather"][-1] > 20 * saved["lean"][-1]

# %% [markdown]
# ## 4. A live run
#
# `bralib bench` times every backend on BiFormer's three BRA stage shapes. Its rules: the same inputs and
# routing for all backends; a few warm-up rounds (first calls allocate, pick kernels, compile); then rounds
# in which every backend runs once, in a rotating order, so that whatever else happens on the machine hits
# all of them alike; the median over rounds. Here is a small version (batch 1, one core, a few rounds),
# short enough for this notebook. Its numbers are noisy: the stored full run in section 5 is the one to
# quote.

# %% tags=["nbval-ignore-output"]
# Tagged: timings differ on every run.
live = {"shapes": []}
for shape in preset_shapes("biformer-t", 1):
    record = bench_shape(
        shape, ("gather", "sdpa", "lean", "dense"), device=torch.device("cpu"), dtype=torch.float32,
        repeats=5, warmup=1, backward=True,
    )  # fmt: skip
    live["shapes"].append(record)
    print(report.shape_table(record), "\n")

# %%
for record in live["shapes"]:  # whatever the timings, every backend gave the gather's answer
    assert all(error < 1e-5 for error in record["max_rel_error"].values()), record["max_rel_error"]

# %% [markdown]
# ## 5. The full run (stored)
#
# The run below is the full benchmark: BiFormer-T/S's three BRA stage shapes at 224×224, batch 8, 30
# interleaved rounds, forward and forward+backward, plus a whole BiFormer-T training step and batch-1 inference
# per backend, made with
#
# ```
# OMP_NUM_THREADS=1 bralib bench --threads 1 --shapes biformer-t biformer-s --backward --repeats 30 --warmup 3 \
#     --model --model-backends gather sdpa lean auto --model-repeats 9 \
#     --json benchmarks/cpu_biformer_t.json --update-auto
# ```
#
# on one core of the 2-core CPU this book is built on, while other processes were keeping both cores busy (the
# load average is printed with it; `benchmarks/README.md` has the details, and the speed-ups the run was
# meant to reach). It is **loaded from the stored JSON**, not re-measured: the live run above is the one made now.

# %% mystnb={"figure": {"caption": "The stored CPU run, loaded from `benchmarks/cpu_biformer_t.json` (not measured now): each backend's speed-up over the gather, forward and forward+backward, and its saved activations relative to the gather, per BRA stage.", "name": "fig-stored-benchmark"}}
stored_path = Path(bralib.__file__).resolve().parent.parent / "benchmarks" / "cpu_biformer_t.json"
stored = report.load_results(stored_path)
print(f"STORED RUN from {stored['date']} ({stored_path.name}), not measured now\n")
print(report.report(stored))
fig = report.draw_figure(stored, title=f"Stored run, {stored['date']}: {stored['machine']['processor']}, "
                         f"{stored['machine']['torch_threads']} thread, batch 8")  # fmt: skip
plt.show()

# %%
for record in stored["shapes"]:  # the stored run's verdicts, per stage
    forward, train, saved = record["forward_ms"], record["train_ms"], record["saved_bytes"]
    print(f"{record['label']}: fastest forward {min(forward, key=forward.get)}, fastest forward+backward "
          f"{min(train, key=train.get)}, least saved {min(saved, key=saved.get)}")  # fmt: skip
    assert saved["lean"] <= 0.5 * saved["gather"]  # lean's memory does not depend on the noise
    assert max(record["max_rel_error"].values()) < 1e-5  # every backend computed the gather's function

# %% [markdown]
# How to read it. **Forward**: the backends that copy token rows once and run a fused kernel (`sdpa`, `lean`)
# beat the gather at every stage; `lean` a little more, because it works a few dozen regions at a time, so
# what it gathers is still in cache when the attention kernel reads it. At stage 3 (4-token regions) `dense`
# wins by far, as on the GPU: 196 tokens are so few that doing $S^2/k \approx 3$ times the arithmetic in one
# large kernel beats any gather; at stage 1 (3136 tokens) the same trade is hopeless. Compiled `flex` is
# correct but slower than `lean` on this CPU. **Forward+backward**: `lean` (stages 1-2) and `dense` (stage 3)
# win; `lean`'s backward re-gathers and index-adds instead of keeping $K^g$ and $V^g$. **Memory**: `lean`
# keeps 0.03-0.21× of what the gather keeps for the backward, and the figure shows that this does not get
# worse with $k$. **Whole model**: BRA is only part of a BiFormer-T step (MLPs, convolutions and norms cost
# the same for every backend), so the speed-ups are diluted; `auto`, which picks per stage, gives the fastest
# training step.
#
# Stage 2 (16-token regions, $k=4$) is where the fused backends gain least: its attention kernel alone
# (16 queries against 64 keys per region and head, tiny matrix products) takes about two thirds of `lean`'s
# time, so no rearrangement of copies around it can halve the gather's time. The next section's list says
# what would.
#
# The timings are noisy: other processes shared the two cores, and a round in which another process held
# "our" core takes twice as long. The rounds are interleaved, so every backend met the same noise, and the
# medians of process CPU time (the "CPU time" column) agree with the wall-clock ratios; still, read the
# ratios as ±10%.
#
# How much the load matters shows in a second stored run, made later on the same machine with nothing else
# running (`benchmarks/cpu_biformer_t_quiet.json`, BiFormer-T shapes and the whole model):

# %%
quiet = report.load_results(stored_path.with_name("cpu_biformer_t_quiet.json"))
print(f"STORED RUN from {quiet['date']}, load average before/after {quiet['load_before']} / {quiet['load_after']}\n")
print(report.target_table(quiet))
for run, result in [("loaded", stored), ("idle", quiet)]:
    stage1 = result["shapes"][0]
    assert stage1["label"].endswith("stage 1")
    print(f"{run:>6}: stage 1 gather forward {stage1['forward_ms']['gather']:.1f} ms, "
          f"lean {stage1['forward_ms']['lean']:.1f} ms")  # fmt: skip
    assert stage1["saved_bytes"]["lean"] <= 0.5 * stage1["saved_bytes"]["gather"]

# %% [markdown]
# On the idle machine the gather itself got much faster at stage 1 (the memory-bound step suffers most when
# other processes share the caches and the memory bus), so `lean`'s stage-1 forward speed-up fell from about
# 2.3× to about 1.6×, while stage 2 rose to about 2.1×. Forward+backward, memory and the training step kept
# the speed-ups the first run showed; a forward speed-up of 2× at *both* stages (the goal the benchmark was
# written for) was not reached in the same run. That is the honest summary of where this CPU stands.
#
# ## 6. Letting `auto` choose
#
# No backend wins everywhere, so `backend="auto"` (the default of `bra` and `BiLevelRoutingAttention`)
# chooses per request from measurements stored in the package (`bralib/ops/backends/measured.json`, written
# by `bralib bench --update-auto`): the nearest measured shape on the same device, the fastest backend
# there that *can* run the request (right device and dtype, a backward if gradients are needed, not a
# compiled-only backend outside `torch.compile`). It says why:

# %%
for side, channels, topk in [(56, 64, 1), (14, 256, 16)]:
    x = torch.randn(1, side, side, channels)
    explain_backend(x, x, n_win=7, topk=topk, needs_grad=True)
    print()

# %%
measured = json.loads((Path(bralib.ops.backends.__file__).parent / "measured.json").read_text())
for side, topk in [(56, 1), (28, 4), (14, 16)]:
    for needs_grad in (False, True):
        x = torch.randn(1, side, side, 64)
        choice = explain_backend(x, x, n_win=7, topk=topk, needs_grad=needs_grad, verbose=False)
        assert BACKENDS[choice.backend].problem("cpu", torch.float32, needs_grad) is None
        assert choice.backend != "flex" or not needs_grad  # never a backend that cannot run the request
print("runs stored for auto:", [(run["device"], run["dtype"]) for run in measured["runs"]])

# %% [markdown]
# ## 7. One kernel that reads the routed regions by index
#
# Every backend above except `dense` and `flex` writes the gathered keys and values to memory and reads them
# back: $k$ copies per call for `gather` and `sdpa`, one cache-sized chunk at a time for `lean`. A **fused
# kernel** never writes them. bralib's `triton` backend (`bralib.ops.kernels.routed_attention`, written in
# Triton {cite:p}`tillet2019triton`) runs one program per tile of query tokens and head. The program reads
# its regions' routed region numbers from the index, computes where those regions' key and value tokens sit
# in the (B, H, W, C) maps, and loads them straight into on-chip memory, keeping a running softmax (a max and
# a sum per query row; the output is rescaled whenever the max grows, as in FlashAttention
# {cite:p}`dao2022flashattention`). The gathered set exists only in registers. The backward recomputes the
# scores from the saved log-sum-exp; the query gradient walks the routing like the forward, and the key and
# value gradients walk the *transposed* routing (for every key region, the regions that chose it, built with
# one sort and a bincount), so each key's gradient is written by exactly one program, without atomics. It
# saves what `lean` saves: q, k, v, the index, the output and one log-sum-exp per query and head.
#
# What that does to the bytes, at BiFormer-S's stage shapes on a GPU (B = 64, bfloat16): the gather's steps of
# section 1 against the fused forward, which reads q once, reads every routed key and value region once per
# region that routes to it ($k$ times; once if the caches keep them between programs), and writes the output
# and one float32 log-sum-exp per query and head:


# %%
def fused_bytes(batch, side, channels, heads, topk, itemsize=2, cached=False):
    """Bytes the fused forward moves: q read, routed K and V read (k times, or once if cached), out and lse written."""
    tokens = batch * side * side
    kv_reads = 2 * (1 if cached else topk) * tokens * channels
    return (2 * tokens * channels + kv_reads) * itemsize + tokens * heads * 4


print(f"{'BiFormer-S, B=64, bf16':<24}{'gather MB':>10}{'fused MB':>10}{'cached MB':>10}{'gather/fused':>14}")
for shape in preset_shapes("biformer-s", 64):
    args = (shape.batch, shape.height, shape.dim, shape.num_heads, shape.topk)
    gather_mb = sum(nbytes for _, _, nbytes in gather_costs(*args, itemsize=2)) / 1e6
    fused_mb, cached_mb = fused_bytes(*args) / 1e6, fused_bytes(*args, cached=True) / 1e6
    print(f"{shape.label:<24}{gather_mb:>10.0f}{fused_mb:>10.0f}{cached_mb:>10.0f}{gather_mb / fused_mb:>13.1f}x")
    assert gather_mb > 5 * fused_mb  # no copies, no head splits, no attention matrix: 5-8x fewer bytes

# %% [markdown]
# Five to eight times fewer bytes before any cache helps. At stage 3 the 16 routed regions of neighbouring
# regions overlap heavily, and all the keys and values of one call (13 MB at B = 64) fit in an H100's L2 cache,
# so the traffic to memory can fall towards the "cached" column. Whether the time follows the bytes only a
# GPU run can say; none has been made for this kernel yet (`benchmarks/gpu_check.sh` is the prepared run).
#
# **Packing small regions.** `tl.dot`, the tensor-core matrix product, needs at least 16 rows and columns.
# A 64-token region fills a tile by itself, but stage 3's regions have 4 tokens: alone, 12 of a tile's 16 rows
# would be padding. So four regions share one tile, and each step loads, for each of the four, its next
# routed regions; a query row may only see the columns of its own region (a block-diagonal mask inside the
# score block). Three quarters of that small product is masked work, which costs little next to the memory
# traffic, and a 4-row product could not use the tensor cores anyway.

# %%
from bralib.ops.backends.triton import tiling_for

for shape in preset_shapes("biformer-s", 64):
    tiling = tiling_for(shape.tokens_per_region, shape.topk)
    steps = -(-shape.topk // tiling.slots) * -(-shape.tokens_per_region // tiling.key_rows)
    print(f"{shape.label}: {shape.tokens_per_region}-token regions -> {tiling.regions} region(s) x {tiling.rows} "
          f"rows per tile, {tiling.block_n} keys per step, {steps} step(s), {tiling.tiles(49)} tiles per image and head")  # fmt: skip
assert tiling_for(4, 16).regions == 4 and tiling_for(4, 16).block_m == 16  # stage 3: four regions per tile
assert tiling_for(64, 1).regions == 1 and tiling_for(64, 1).block_m == 64  # stage 1: one region per tile

# %% [markdown]
# There is no GPU here, but Triton can run the very same kernel on the CPU in its *interpreter*
# (`TRITON_INTERPRET=1`, read when the kernels are first loaded), one program after another in NumPy: much
# too slow to time, fine to check. Stage 3's geometry (4-token regions, $k = 16$) with one 32-channel head,
# forward and backward, against the reference, and what each keeps for the backward:

# %%
import importlib.util
import os

if importlib.util.find_spec("triton") is None:
    print("triton is not installed here (pip install triton, Linux x86-64): the fused kernel cannot run")
else:
    os.environ["TRITON_INTERPRET"] = "1"  # before the kernels are first loaded in this process
    gen = torch.Generator().manual_seed(3)
    q3, k3, v3 = (torch.randn(1, 14, 14, 32, generator=gen, requires_grad=True) for _ in range(3))
    grad3 = torch.randn(1, 14, 14, 32, generator=gen)
    _, index3 = route_regions(q3.detach(), k3.detach(), n_win=7, topk=16)

    def run(backend):
        return bra(q3, k3, v3, num_heads=1, n_win=7, topk=16, routing_index=index3, backend=backend)

    results = {}
    for name in ("reference", "triton", "lean"):
        out = run(name)
        results[name] = (out, *torch.autograd.grad(out, (q3, k3, v3), grad3))
    for got, want in zip(results["triton"], results["reference"], strict=True):
        torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-4)
    print("triton (in Triton's interpreter) == reference: output and q, k, v gradients")
    kept = {name: saved_bytes(lambda name=name: run(name), exclude=(q3, k3, v3))[0] for name in ("triton", "lean")}
    print(f"saved for the backward beyond q, k, v: triton {kept['triton']} bytes, lean {kept['lean']} bytes")
    assert kept["triton"] <= kept["lean"]

# %% [markdown]
# ## 8. What is left on the table
#
# * **Time the fused kernel.** Section 7's kernel is right (checked in the interpreter) but untimed: its
#   speed on a GPU, against the gather and against Swin-T, is what `benchmarks/gpu_check.sh` measures. On a
#   CPU the same idea needs a C++ kernel: at stage 2 the small attention products dominate what is left.
# * **Keep the region layout.** Each BRA call copies q, k, v into region order and the output back. A
#   model that kept its activations region-major between the qkv projection and the output projection would
#   skip those copies; so would gathering k and v together from the one qkv tensor they are slices of.
# * **GPU.** This chapter's own measurements are all on the CPU; the H100 numbers of the motivation come from
#   an earlier, separate run (`benchmarks/h100_anchors.json`) that did not include bralib's backends. FlexAttention with regions grouped into 128-token blocks
#   (what bralib's `flex` does on CUDA for small regions), `lean`'s recompute backward, the CUDA rows of the
#   equivalence tests, the compiled `triton` kernels and the whole-model comparison with Swin-T
#   (`benchmarks/gpu_vs_swin.py`) all still need a GPU run; `benchmarks/gpu_check.sh` makes it in one go.
# * **Lower precision.** bfloat16 halves every byte above; the routing stays in float32 (chapter 3), so AMP
#   does not change which regions are attended to.
#
# ## Summary
#
# * The gather algorithm is memory-bound: its copies and gathers do no arithmetic, and at small regions even
#   its matrix products have too few FLOPs per byte. Count bytes, not just FLOPs.
# * `sdpa` and `lean` gather token rows once and run a fused attention kernel (`lean` in cache-sized chunks);
#   `dense` trades $S^2/k$ times the FLOPs for one big kernel and wins at 4-token regions; `flex` skips the
#   gather with a block-sparse compiled kernel (forward only on CPU); `triton` reads the routed regions by
#   index inside one fused kernel per pass, 5-8x fewer bytes than the gather on paper (not yet timed on a GPU).
# * The backward of a gather is an index-add. Saving only q, k, v, the output and the softmax statistics
#   (`lean`) keeps the memory for the backward independent of $k$.
# * Measure side by side: same inputs, warm-up, interleaved rounds, medians, load written down.
#   `bralib bench` does it; `backend="auto"` uses its results and `explain_backend` says why.
#
# ## Exercises
#
# Open `exercises/09_making_it_fast.py`, fill in the functions, and run the cell below (or `bralib exercise
# check --chapter 9`) until they say PASSED. Each exercise is tagged with its difficulty and its kind:
# *transcription* (write again what the chapter showed), *design* (work out something the chapter did not
# show) or *experiment* (build a measurement, then use it to answer a question). The solutions in
# `exercises/solutions/` answer every question asked here.
#
# **9.1 `matmul_intensity(m, n, k, itemsize=4)`** *[easy · transcription]*. FLOPs per byte of one matrix
# product. Evaluate it for a region of stage 1 (64 queries, 64 keys, head width 32) and of stage 3 (4 queries,
# 64 keys): which is further below this machine's balance?
#
# **9.2 `scatter_add_rows(grads, rows, n_rows)`** *[medium · transcription]*. The backward of a row gather, as
# `lean` does it. Why is `out[rows] += grads` wrong?
#
# **9.3 `regions_per_chunk(cache_bytes, tokens_per_region, channels, topk, itemsize=4)`** *[medium · design]*.
# How many regions `lean` can process at a time with their gathered keys and values in cache. Why does a chunk
# of a few dozen regions suffice, and what would one region at a time cost?
#
# **9.4 `predicted_winner(side, channels, heads, n_win, topk, peak_flops, bandwidth)`** *[hard · experiment]*.
# A roofline model of the gather and the dense backend: predict which is faster, stage by stage, with this
# core's measured rates, and hold the predictions against the stored benchmark (section 5) and the H100
# anchors. Where is the model right, and what does it leave out?

# %% tags=["nbval-ignore-output"]
# Tagged: the output changes as you work on the exercises.
from bralib.exercises import check

for name in ("matmul_intensity", "scatter_add_rows", "regions_per_chunk", "predicted_winner"):
    check(name)
