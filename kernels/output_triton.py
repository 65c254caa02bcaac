"""Triton: the output of every chunk, intra-chunk terms plus the inter-chunk level readout.

Grid ``(N * NC, H, V / BV)``. For the chunk's queries (SPEC §4, ``block.py`` for the algebra)::

    o = (P * Lambda) V  +  sum_js  lambda[:, level(js)] * (Qt @ states[js])

Scalar decay: P = (q k^T) * exp(G_t - G_s) (causal), formed here from q and k as loaded; Qt = exp(G) q
is read out as exp(G) per row times q @ states[js] (cheaper on the [C, BV] product than on q). The delta
rule's (P = QK Ab, Qt = exp(G) q - QK W) come from ``intra_triton.ut_factors_kernel`` as
Pw = P * Lambda and Qt, computed once per chunk rather than once per value tile.
Lambda[t, s] = lambda_t at level min(bit_length(t XOR s), L-1): the chunk is aligned, so slot
indices give the intra levels (``level_weights``).
Inter-chunk level js is read when bit js of the absolute chunk index is set; the top state
(last js) always; ``scan_triton.state_slot`` says where it was recorded (under scalar decay the
reader applies the decay from the recording chunk, ``recorded_decay``). PREFIX (the delta rule's
``scan_triton.prefix_scan_delta_kernel``): scan js recorded X(b_js, c), the plain recurrent
state at b_js = c with its js lowest bits cleared pushed on to c, so level js is the difference
of two of them and the readout weights each by lambda_js minus the lambda of the level read
below it; the top is empty (and unrecorded) before its first window. With an initial state,
the first chunk also reads the initial levels that lie inside it (``low``), each at
min(max(l, bit_length(t XOR (p0 - 1))), L-1) for query t.
"""
from __future__ import annotations

try:  # guarded: transformers checks every remote-code file's imports; this one loads only with triton
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover
    triton = tl = None

from ..levels import tl_bit_length, tl_chunk_reads_scan, tl_scan_level
from .scan_triton import chunk_program, mma, recorded_decay, slot_tile, state_slot


@triton.jit
def _column(tile, cols, col):
    """tile[t, col] for a [C, LP] tile; ``col`` a scalar or a [C, 1] column of indices."""
    return tl.sum(tl.where(cols[None, :] == col, tile, 0.0), 1)


@triton.jit
def level_weights(lam_t, cols, i, L, C: tl.constexpr, LOG_C: tl.constexpr, ACC: tl.constexpr):
    """Lambda [C, C]: lambda_t (a [C, LP] tile) at the level of (t, s) inside the chunk. Slots t
    and s of one aligned chunk lie at level > l exactly when t >> l != s >> l, so each level's mask
    comes from [C] vectors: no [C, C] level tile (int64 in ``tl_capped_level``) stays live."""
    weights = tl.zeros([C, C], dtype=ACC) + _column(lam_t, cols, 0)[:, None]
    for lvl in tl.static_range(1, LOG_C + 1):
        apart = (i >> (lvl - 1))[:, None] != (i >> (lvl - 1))[None, :]
        weights = tl.where(apart, _column(lam_t, cols, tl.minimum(lvl, L - 1))[:, None], weights)
    return weights


@triton.jit
def _state_tile(ptrs, mask, K: tl.constexpr, V: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr):
    """A [BK, BV] state tile, masked only where it is not whole: the [BK, BV] mask, live across
    the level loop, costs ~30 registers per thread."""
    if K == BK and V % BV == 0:
        return tl.load(ptrs)
    else:
        return tl.load(ptrs, mask=mask, other=0.0)


@triton.jit
def chunk_output_kernel(
    q, k, v, g_cum, lam, pw, qt_delta, states, chunk_g, low, base_chunk, first_pos, o,
    S, NC, NJ, NSLOT, top_exp, L,
    H: tl.constexpr, G: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    C: tl.constexpr, LOG_C: tl.constexpr, LP: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    DELTA: tl.constexpr, HAS_INIT: tl.constexpr, PREFIX: tl.constexpr, ACC: tl.constexpr, PREC: tl.constexpr,
    DOT: tl.constexpr,
):
    row64, c, h, grp, i, tok, dk, km = chunk_program(S, NC, H, G, K, C, BK)
    dv = tl.program_id(2) * BV + tl.arange(0, BV)
    vm = dv < V
    cols = tl.arange(0, LP)

    vt = tl.load(v + (tok[:, None] * H + h) * V + dv[None, :], mask=vm[None, :], other=0.0)
    lam_t = tl.load(lam + (tok[:, None] * H + h) * L + cols[None, :], mask=cols[None, :] < L, other=0.0).to(ACC)
    if DELTA:
        blk = (row64 * NC + c) * H + h
        p = tl.load(pw + blk * C * C + i[:, None] * C + i[None, :])
        qt = tl.load(qt_delta + (tok[:, None] * H + h) * K + dk[None, :], mask=km[None, :], other=0.0)
        eq = tl.full([C], 1.0, ACC)  # Qt comes decayed
    else:
        # q and k stay in their storage dtype (half the registers of fp32 tiles) and go to the
        # tensor cores as they are; Qt = exp(G) q is applied as exp(G) per row of each [C, BV]
        # readout (``eq``) rather than to the [C, K] query tile.
        qt = tl.load(q + (tok[:, None] * G + grp) * K + dk[None, :], mask=km[None, :], other=0.0)
        kt = tl.load(k + (tok[:, None] * G + grp) * K + dk[None, :], mask=km[None, :], other=0.0)
        if K != BK:  # a masked, transposed half operand faulted on sm_90 (``scan_triton._keys_times``)
            kt = kt.to(ACC)
        gc = tl.load(g_cum + tok * H + h).to(ACC)
        # causal, decay and Lambda in one pass over the scores; exp(G_t - G_s) may overflow
        # above the diagonal, where the select drops it
        p = mma(qt, tl.trans(kt), DOT, PREC, ACC) * tl.exp(gc[:, None] - gc[None, :])
        p = tl.where(i[:, None] >= i[None, :], p, 0.0) * level_weights(lam_t, cols, i, L, C, LOG_C, ACC)
        eq = tl.exp(gc)
    acc = mma(p, vt, DOT, PREC, ACC)

    cb = tl.load(base_chunk + row64)
    ca = cb + c
    hv = dk[:, None] * V + dv[None, :]
    hvm = km[:, None] & vm[None, :]
    below = tl.zeros([C], dtype=ACC)  # PREFIX: lambda of the level read below
    if PREFIX:  # the top holds nothing before its first window (and was not recorded)
        top_seen = (ca >> tl.minimum(top_exp, 62)) > 0
    else:
        top_seen = ca >= 0
    for js in range(NJ):
        if tl_chunk_reads_scan(ca, js, NJ) & ((js < NJ - 1) | top_seen):
            slot, first = state_slot(ca, cb, js, NJ, NC, top_exp, DELTA)
            hs = _state_tile(slot_tile(states, row64, slot, NSLOT, h, H, K, V) + hv, hvm, K, V, BK, BV)
            lam_js = _column(lam_t, cols, tl_scan_level(js, NJ, L, LOG_C))
            weight = (lam_js - below) * eq if PREFIX else lam_js * eq
            below = lam_js
            if not DELTA:
                weight = weight * recorded_decay(chunk_g, row64, NC, H, h, c, first, ACC)
            acc += weight[:, None] * mma(qt, hs, DOT, PREC, ACC)
    if HAS_INIT:
        if c == 0:
            pos = ca * C + i
            e = tl_bit_length(pos ^ (tl.load(first_pos + row64) - 1))
            for low_lvl in range(tl.minimum(LOG_C + 1, L - 1)):
                low_src = low + ((row64 * H + h) * L + low_lvl) * K * V
                low_hs = _state_tile(low_src + hv, hvm, K, V, BK, BV)
                low_col = tl.minimum(tl.maximum(e, low_lvl), L - 1)
                low_w = _column(lam_t, cols, low_col[:, None]) * eq
                acc += low_w[:, None] * mma(qt, low_hs, DOT, PREC, ACC)
    tl.store(o + (tok[:, None] * H + h) * V + dv[None, :], acc.to(o.dtype.element_ty), mask=vm[None, :])
