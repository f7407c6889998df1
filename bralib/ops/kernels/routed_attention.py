"""Triton kernels for routed-region attention: the routed key/value regions are read by index, never gathered.

Layout. q, k: (B, H, W, Cqk) and v, out: (B, H, W, Cv), channels last, any strides with the channels
contiguous; head ``h`` is channels ``[h*D, (h+1)*D)``. The map is cut into S x S regions of ``region_h x
region_w`` tokens (n = region_h * region_w); region r is at grid position (r // S, r % S), and token j of a
region at (j // region_w, j % region_w) inside it. A token's address is computed from (region, token), so
no tensor is ever copied into region order.

Tiles. The grid is (B * heads, tiles); a program owns one head of one *tile* of query tokens: ``G`` regions
packed side by side, ``ROWS`` rows of each (a power of two >= n when G > 1, else a chunk of a large region;
``chunks`` tiles per region group). Packing makes the tile at least 16 rows tall, what ``tl.dot`` needs:
BiFormer's stage 3 has 4-token regions, so 4 of them share one 16-row tile. The key block of one step
holds, for every packed region, its ``SLOTS`` next routed regions (``KEY_ROWS`` tokens of each): a
(G*ROWS) x (G*SLOTS*KEY_ROWS) score block in which a query row may only see the columns of its own region
group (block-diagonal mask) whose slot is real (``< topk``, not a repeat, see below) and whose token exists
(``< n``). Masked scores never reach memory.

Index. ``Index`` is the routing index as int32 (B, S*S, topk), in which a region repeated in a row is
replaced by -1 after its first slot: the routed set is a *set* (as in the reference's token mask), so a
repeated region counts once. The backward's transposed routing (``Starts``, ``Counts``, ``Choosers``: for
every key region, the query regions that chose it, in a CSR list) is built from the same index.

Softmax. Online (flash-attention style): per query row a running max ``m`` and sum ``l`` in float32, base 2
(``scale_log2 = scale * log2(e)``), the output rescaled as the max grows. Masked scores are set to -1e30,
not -inf, so that a row whose columns are all masked in one step gives exp2(0) * 0 instead of NaN. The
forward stores the natural log-sum-exp per query and head, (B, heads, H, W) float32, for the backward.

Backward (FlashAttention-2's equations): with P = exp(S - lse) recomputed and Delta = rowsum(dO * O),
dP = dO V^T, dS = P * (dP - Delta), dQ = scale * dS K, dK = scale * dS^T Q, dV = P^T dO. ``_dq_kernel`` walks
the routing like the forward and writes Delta on the way. ``_dkv_kernel`` owns a tile of *key* tokens and
walks, for each of its key regions, the query regions that chose it (the transposed routing), so every dK/dV
row is written by exactly one program: no atomics, deterministic results, no float32 accumulation buffers.

Precision. Dots accumulate in float32; ``PRECISION`` is "ieee" for float32 inputs (no TF32). ``WIDEN``
converts loaded bfloat16 operands to float32: the launcher sets it only in Triton's interpreter, whose numpy
arithmetic has no bfloat16 (it computes bfloat16 products wrongly); compiled kernels use bfloat16 dots.
"""

from __future__ import annotations

import triton
import triton.language as tl

# Only Triton's builtins are used, never the helpers of triton.language.standard (tl.max, tl.sum, tl.zeros):
# those are @triton.jit functions themselves, decorated when triton.language is first imported, and a process
# that imported it before setting TRITON_INTERPRET (torch.compile does) cannot call them from interpreted
# kernels. tl.reduce with the combine functions tl.max and tl.sum use, and tl.full, compute the same.
# Kernels may read module globals only as constexpr.
NEG = tl.constexpr(-1.0e30)  # the score of a masked pair: finite, so exp2(NEG - NEG) = 1 is harmless (p is zeroed)
LOG2E = tl.constexpr(1.4426950408889634)
LN2 = tl.constexpr(0.6931471805599453)
INF = tl.constexpr(float("inf"))
NAN = tl.constexpr(float("nan"))


@triton.jit
def _token_yx(region, token, n_win, region_h, region_w):
    """Map row y and column x of token ``token`` of region ``region``."""
    y = (region // n_win) * region_h + token // region_w
    x = (region % n_win) * region_w + token % region_w
    return y, x


@triton.jit
def _widen(x, WIDEN: tl.constexpr):
    """x in float32 where WIDEN (bfloat16 in the interpreter, whose numpy arithmetic has no bfloat16), else x."""
    if WIDEN:
        x = x.to(tl.float32)
    return x


@triton.jit
def _load_tokens(
    base, y, x, stride_h, stride_w, ok, channels, C: tl.constexpr, C_PAD: tl.constexpr, WIDEN: tl.constexpr
):
    """(tokens, C_PAD) block: channels [channels, channels + C) of the tokens at (y, x); masked rows and pads are 0."""
    c = tl.arange(0, C_PAD)
    ptrs = base + (y * stride_h + x * stride_w)[:, None] + channels + c[None, :]
    return _widen(tl.load(ptrs, mask=ok[:, None] & (c[None, :] < C), other=0.0), WIDEN)


@triton.jit
def _tile_rows(tile, chunks, n_win, region_h, region_w, G: tl.constexpr, ROWS: tl.constexpr):
    """The G*ROWS rows of a tile: (group of each row, map y, map x, row is real)."""
    m = tl.arange(0, G * ROWS)
    group = m // ROWS
    region = (tile // chunks) * G + group
    token = (tile % chunks) * ROWS + m % ROWS
    ok = (region < n_win * n_win) & (token < region_h * region_w)
    region = tl.where(ok, region, 0)  # padded rows point at token 0: in bounds, and masked anyway
    token = tl.where(ok, token, 0)
    y, x = _token_yx(region, token, n_win, region_h, region_w)
    return group, y, x, ok


@triton.jit
def _routed_cols(
    Index, b, tile, chunks, t0, j0, topk, n_win, region_h, region_w,
    G: tl.constexpr, SLOTS: tl.constexpr, KEY_ROWS: tl.constexpr,
):  # fmt: skip
    """Key columns of one forward/dq step: slots t0.. and tokens j0.. of each packed region's routed regions.

    Returns (group of each column, map y, map x, column is real).
    """
    c = tl.arange(0, G * SLOTS * KEY_ROWS)
    group = c // (SLOTS * KEY_ROWS)
    slot = t0 + (c // KEY_ROWS) % SLOTS
    token = j0 + c % KEY_ROWS
    n_regions = n_win * n_win
    q_region = (tile // chunks) * G + group
    ok = (q_region < n_regions) & (slot < topk) & (token < region_h * region_w)
    region = tl.load(Index + (b * n_regions + q_region) * topk + slot, mask=ok, other=-1)
    ok = ok & (region >= 0)  # -1: a repeated region, already attended to
    region = tl.where(ok, region, 0)
    token = tl.where(ok, token, 0)
    y, x = _token_yx(region, token, n_win, region_h, region_w)
    return group, y, x, ok


@triton.jit
def _chooser_cols(
    Starts, Counts, Choosers, b, tile, chunks, p0, i0, n_win, region_h, region_w,
    G: tl.constexpr, SLOTS: tl.constexpr, KEY_ROWS: tl.constexpr,
):  # fmt: skip
    """Query columns of one dk/dv step: choosers p0.. and tokens i0.. of each packed key region's choosers."""
    c = tl.arange(0, G * SLOTS * KEY_ROWS)
    group = c // (SLOTS * KEY_ROWS)
    pair = p0 + (c // KEY_ROWS) % SLOTS
    token = i0 + c % KEY_ROWS
    n_regions = n_win * n_win
    k_region = (tile // chunks) * G + group
    region_ok = k_region < n_regions
    count = tl.load(Counts + b * n_regions + k_region, mask=region_ok, other=0)
    start = tl.load(Starts + b * n_regions + k_region, mask=region_ok, other=0)
    ok = region_ok & (pair < count) & (token < region_h * region_w)
    region = tl.load(Choosers + start + pair, mask=ok, other=0)
    token = tl.where(ok, token, 0)
    y, x = _token_yx(region, token, n_win, region_h, region_w)
    return group, y, x, ok


@triton.jit
def _fwd_kernel(
    Q, K, V, Out, Lse, Index,
    sqb, sqh, sqw, skb, skh, skw, svb, svh, svw, sob, soh, sow,
    heads, n_win, region_h, region_w, topk, chunks, scale_log2,
    D: tl.constexpr, DV: tl.constexpr, D_PAD: tl.constexpr, DV_PAD: tl.constexpr,
    G: tl.constexpr, ROWS: tl.constexpr, KEY_ROWS: tl.constexpr, SLOTS: tl.constexpr, PRECISION: tl.constexpr,
    WIDEN: tl.constexpr,
):  # fmt: skip
    """Out and the log-sum-exp of one head of one query tile.

    Packed tiles (G > 1) compute P V over the columns of every region group, with P = 0 where a row may not
    look; but 0 * NaN is NaN, so a NaN value routed by one region would spoil its tile-mates. There the
    non-finite values are replaced by 0 before the product, and a second product counts, per row and channel,
    the non-finite values the row may see: those outputs are set to NaN (bralib.ops.nonfinite's rule).
    """
    b = tl.program_id(0) // heads
    head = tl.program_id(0) % heads
    tile = tl.program_id(1)
    b64 = b.to(tl.int64)
    group, y, x, row_ok = _tile_rows(tile, chunks, n_win, region_h, region_w, G, ROWS)
    q = _load_tokens(Q + b64 * sqb, y, x, sqh, sqw, row_ok, head * D, D, D_PAD, WIDEN)  # (M, D_PAD)

    m_i = tl.full([G * ROWS], NEG, tl.float32)
    l_i = tl.full([G * ROWS], 0.0, tl.float32)
    acc = tl.full([G * ROWS, DV_PAD], 0.0, tl.float32)
    hits = tl.full([G * ROWS, DV_PAD], 0.0, tl.float32)  # non-finite values each row may see (G > 1 only)
    for t0 in range(0, topk, SLOTS):
        for j0 in range(0, region_h * region_w, KEY_ROWS):
            c_group, ky, kx, col_ok = _routed_cols(
                Index, b, tile, chunks, t0, j0, topk, n_win, region_h, region_w, G, SLOTS, KEY_ROWS
            )
            k = _load_tokens(K + b64 * skb, ky, kx, skh, skw, col_ok, head * D, D, D_PAD, WIDEN)  # (N, D_PAD)
            v = _load_tokens(V + b64 * svb, ky, kx, svh, svw, col_ok, head * DV, DV, DV_PAD, WIDEN)  # (N, DV_PAD)
            allowed = (group[:, None] == c_group[None, :]) & col_ok[None, :]  # (M, N)
            s = tl.where(allowed, tl.dot(q, tl.trans(k), input_precision=PRECISION) * scale_log2, NEG)
            m_new = tl.maximum(m_i, tl.reduce(s, 1, tl.standard._elementwise_max))
            alpha = tl.exp2(m_i - m_new)
            p = tl.where(allowed, tl.exp2(s - m_new[:, None]), 0.0)
            l_i = l_i * alpha + tl.reduce(p, 1, tl.standard._sum_combine)
            if G > 1:
                bad = (v != v) | (tl.abs(v) == INF)  # (N, DV_PAD)
                v = tl.where(bad, 0.0, v)
                hits += tl.dot(allowed.to(v.dtype), bad.to(v.dtype), input_precision=PRECISION)
            acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
            m_i = m_new

    l_safe = tl.where(l_i > 0.0, l_i, 1.0)  # only padded rows have l = 0
    out = acc / l_safe[:, None]
    if G > 1:
        out = tl.where(hits > 0.0, NAN, out)
    dv = tl.arange(0, DV_PAD)
    o_ptrs = Out + b64 * sob + (y * soh + x * sow)[:, None] + head * DV + dv[None, :]
    tl.store(o_ptrs, out.to(Out.dtype.element_ty), mask=row_ok[:, None] & (dv[None, :] < DV))
    stat = ((b64 * heads + head) * (n_win * region_h) + y) * (n_win * region_w) + x  # (B, heads, H, W) float32
    tl.store(Lse + stat, (m_i + tl.log2(l_safe)) * LN2, mask=row_ok)


@triton.jit
def _dq_kernel(
    Q, K, V, dO, Out, Lse, Delta, dQ, Index,
    sqb, sqh, sqw, skb, skh, skw, svb, svh, svw, sdb, sdh, sdw, sob, soh, sow,
    heads, n_win, region_h, region_w, topk, chunks, scale, scale_log2,
    D: tl.constexpr, DV: tl.constexpr, D_PAD: tl.constexpr, DV_PAD: tl.constexpr,
    G: tl.constexpr, ROWS: tl.constexpr, KEY_ROWS: tl.constexpr, SLOTS: tl.constexpr, PRECISION: tl.constexpr,
    WIDEN: tl.constexpr,
):  # fmt: skip
    """dQ of one head of one query tile, and Delta = rowsum(dO * O) of its rows for _dkv_kernel.

    dQ is contiguous (B, H, W, Cqk); Delta is (B, heads, H, W) float32, written here.
    """
    b = tl.program_id(0) // heads
    head = tl.program_id(0) % heads
    tile = tl.program_id(1)
    b64 = b.to(tl.int64)
    group, y, x, row_ok = _tile_rows(tile, chunks, n_win, region_h, region_w, G, ROWS)
    q = _load_tokens(Q + b64 * sqb, y, x, sqh, sqw, row_ok, head * D, D, D_PAD, WIDEN)  # (M, D_PAD)
    do = _load_tokens(dO + b64 * sdb, y, x, sdh, sdw, row_ok, head * DV, DV, DV_PAD, WIDEN)  # (M, DV_PAD)
    o = _load_tokens(Out + b64 * sob, y, x, soh, sow, row_ok, head * DV, DV, DV_PAD, WIDEN)  # (M, DV_PAD)
    delta = tl.reduce(do.to(tl.float32) * o.to(tl.float32), 1, tl.standard._sum_combine)
    stat = ((b64 * heads + head) * (n_win * region_h) + y) * (n_win * region_w) + x
    tl.store(Delta + stat, delta, mask=row_ok)
    lse2 = tl.load(Lse + stat, mask=row_ok, other=0.0) * LOG2E

    dq = tl.full([G * ROWS, D_PAD], 0.0, tl.float32)
    for t0 in range(0, topk, SLOTS):
        for j0 in range(0, region_h * region_w, KEY_ROWS):
            c_group, ky, kx, col_ok = _routed_cols(
                Index, b, tile, chunks, t0, j0, topk, n_win, region_h, region_w, G, SLOTS, KEY_ROWS
            )
            k = _load_tokens(K + b64 * skb, ky, kx, skh, skw, col_ok, head * D, D, D_PAD, WIDEN)  # (N, D_PAD)
            v = _load_tokens(V + b64 * svb, ky, kx, svh, svw, col_ok, head * DV, DV, DV_PAD, WIDEN)  # (N, DV_PAD)
            allowed = (group[:, None] == c_group[None, :]) & col_ok[None, :]  # (M, N)
            s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * scale_log2
            p = tl.where(allowed, tl.exp2(s - lse2[:, None]), 0.0)
            dp = tl.dot(do, tl.trans(v), input_precision=PRECISION)
            ds = p * (dp - delta[:, None])
            dq += tl.dot(ds.to(k.dtype), k, input_precision=PRECISION)

    d = tl.arange(0, D_PAD)
    rows = (b64 * (n_win * region_h) + y) * (n_win * region_w) + x
    g_ptrs = dQ + rows[:, None] * (heads * D) + head * D + d[None, :]
    tl.store(g_ptrs, (dq * scale).to(dQ.dtype.element_ty), mask=row_ok[:, None] & (d[None, :] < D))


@triton.jit
def _dkv_kernel(
    Q, K, V, dO, Lse, Delta, dK, dV, Starts, Counts, Choosers,
    sqb, sqh, sqw, skb, skh, skw, svb, svh, svw, sdb, sdh, sdw,
    heads, n_win, region_h, region_w, chunks, scale, scale_log2,
    D: tl.constexpr, DV: tl.constexpr, D_PAD: tl.constexpr, DV_PAD: tl.constexpr,
    G: tl.constexpr, ROWS: tl.constexpr, KEY_ROWS: tl.constexpr, SLOTS: tl.constexpr, PRECISION: tl.constexpr,
    WIDEN: tl.constexpr,
):  # fmt: skip
    """dK, dV of one head of a tile of key tokens (G packed key regions); dK, dV are contiguous (B, H, W, C*)."""
    b = tl.program_id(0) // heads
    head = tl.program_id(0) % heads
    tile = tl.program_id(1)
    b64 = b.to(tl.int64)
    n_regions = n_win * n_win
    height = n_win * region_h
    width = n_win * region_w
    group, y, x, row_ok = _tile_rows(tile, chunks, n_win, region_h, region_w, G, ROWS)
    k = _load_tokens(K + b64 * skb, y, x, skh, skw, row_ok, head * D, D, D_PAD, WIDEN)  # (M, D_PAD)
    v = _load_tokens(V + b64 * svb, y, x, svh, svw, row_ok, head * DV, DV, DV_PAD, WIDEN)  # (M, DV_PAD)

    # The loop runs as long as the most-chosen key region of the tile has choosers left.
    c_region = (tile // chunks) * G + tl.arange(0, G * SLOTS * KEY_ROWS) // (SLOTS * KEY_ROWS)
    counts = tl.load(Counts + b * n_regions + c_region, mask=c_region < n_regions, other=0)
    most = tl.reduce(counts, 0, tl.standard._elementwise_max)
    dk = tl.full([G * ROWS, D_PAD], 0.0, tl.float32)
    dv = tl.full([G * ROWS, DV_PAD], 0.0, tl.float32)
    for p0 in range(0, most, SLOTS):
        for i0 in range(0, region_h * region_w, KEY_ROWS):
            c_group, qy, qx, col_ok = _chooser_cols(
                Starts, Counts, Choosers, b, tile, chunks, p0, i0, n_win, region_h, region_w, G, SLOTS, KEY_ROWS
            )
            q = _load_tokens(Q + b64 * sqb, qy, qx, sqh, sqw, col_ok, head * D, D, D_PAD, WIDEN)  # (N, D_PAD)
            do = _load_tokens(dO + b64 * sdb, qy, qx, sdh, sdw, col_ok, head * DV, DV, DV_PAD, WIDEN)  # (N, DV_PAD)
            stat = ((b64 * heads + head) * height + qy) * width + qx
            lse2 = tl.load(Lse + stat, mask=col_ok, other=0.0) * LOG2E
            delta = tl.load(Delta + stat, mask=col_ok, other=0.0)
            allowed = (group[:, None] == c_group[None, :]) & col_ok[None, :]  # (M, N)
            s_t = tl.dot(k, tl.trans(q), input_precision=PRECISION) * scale_log2  # S^T
            p_t = tl.where(allowed, tl.exp2(s_t - lse2[None, :]), 0.0)
            dv += tl.dot(p_t.to(do.dtype), do, input_precision=PRECISION)
            dp_t = tl.dot(v, tl.trans(do), input_precision=PRECISION)
            ds_t = p_t * (dp_t - delta[None, :])
            dk += tl.dot(ds_t.to(q.dtype), q, input_precision=PRECISION)

    rows = (b64 * height + y) * width + x
    d = tl.arange(0, D_PAD)
    c = tl.arange(0, DV_PAD)
    k_mask = row_ok[:, None] & (d[None, :] < D)
    tl.store(
        dK + rows[:, None] * (heads * D) + head * D + d[None, :], (dk * scale).to(dK.dtype.element_ty), mask=k_mask
    )
    v_mask = row_ok[:, None] & (c[None, :] < DV)
    tl.store(dV + rows[:, None] * (heads * DV) + head * DV + c[None, :], dv.to(dV.dtype.element_ty), mask=v_mask)
