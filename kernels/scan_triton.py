"""Triton: the inter-chunk level states, one independent scan per level (SPEC §4).

Grid ``(N * H, NJ, V / BV)``. Program ``js < NJ - 1`` owns inter-chunk level ``js`` (global level
log2(C) + 1 + js): walking the chunks c of its sequence (absolute chunk index ``ca``) it

1. records its state h into ``states[n, c, js]`` when bit js of ca is set (that chunk reads it);
2. pushes h through chunk c (decay; for the delta rule also the WY correction);
3. adds chunk c's own contribution when bit js of ca is 0;
4. resets h after the last chunk of every window of 2^(js+1) chunks.

The last program (``js = NJ - 1``) is the capped top level: everything more than ``top_exp``
inter-chunk levels away, i.e. all chunks before ca rounded down to a multiple of 2^top_exp.
It carries the top state h and a pending sum p of the current window; p joins h when the
window closes. Its state is recorded at every chunk.

With an initial state the programs start from ``h0`` / ``p0`` (built by the caller from the
re-levelled initial levels) and fold ``low`` (initial levels inside the first chunk) into
the first chunk's contribution.
"""
from __future__ import annotations

try:  # guarded: transformers checks every remote-code file's imports; this one loads only with triton
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover
    triton = tl = None

from ..levels import tl_chunk_reads_scan, tl_scan_window


@triton.jit
def scan_program(H: tl.constexpr, G: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr):
    """What a program of the grid (sequences x heads, scans, value tiles) works on: its row, head,
    q/k group, scan index, and the key / value-tile offsets and masks of its [BK, BV] state tile.
    Shared by the forward scan and its backward so both walk the same tiles."""
    pid_nh, js, pid_v = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    row, h = pid_nh // H, pid_nh % H
    dk = tl.arange(0, BK)
    dv = pid_v * BV + tl.arange(0, BV)
    km, vm = dk < K, dv < V
    return row, h, h // (H // G), js, dk, dv, km, vm, dk[:, None] * V + dv[None, :], km[:, None] & vm[None, :]


@triton.jit
def _push(hs, kd, wt, ut, decay, add, DELTA: tl.constexpr, PREC: tl.constexpr, ACC: tl.constexpr):
    """State [BK, BV] through one chunk, plus ``add`` times the chunk's contribution."""
    if DELTA:
        vnew = add * ut - tl.dot(wt, hs, input_precision=PREC, out_dtype=ACC)
    else:
        vnew = add * ut
    return decay * hs + tl.dot(tl.trans(kd), vnew, input_precision=PREC, out_dtype=ACC)


@triton.jit
def level_scan_kernel(
    k, vu, w, g_cum, states, h0, p0, low, base_chunk,
    S, NC, NJ, top_exp,
    H: tl.constexpr, G: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    C: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    DELTA: tl.constexpr, HAS_INIT: tl.constexpr, ACC: tl.constexpr, PREC: tl.constexpr,
):
    row, h, grp, js, dk, dv, km, vm, hv, hvm = scan_program(H, G, K, V, BK, BV)
    i = tl.arange(0, C)
    is_top = js == NJ - 1
    cb = tl.load(base_chunk + row)
    row64 = row.to(tl.int64)

    hs = tl.zeros([BK, BV], dtype=ACC)
    ps = tl.zeros([BK, BV], dtype=ACC)
    if HAS_INIT:
        hs += tl.load(h0 + ((row64 * NJ + js) * H + h) * K * V + hv, mask=hvm, other=0.0).to(ACC)
        if is_top:
            ps += tl.load(p0 + (row64 * H + h) * K * V + hv, mask=hvm, other=0.0).to(ACC)
    js64 = js.to(tl.int64)
    win = tl_scan_window(js, NJ, top_exp)

    for c in range(NC):
        ca = cb + c
        bit = (ca >> js64) & 1
        if tl_chunk_reads_scan(ca, js64, NJ):
            dst = states + (((row64 * NC + c) * NJ + js) * H + h) * K * V
            tl.store(dst + hv, hs.to(states.dtype.element_ty), mask=hvm)
        tok = row64 * S + c * C + i
        gc = tl.load(g_cum + tok * H + h).to(ACC)
        g_end = tl.load(g_cum + (row64 * S + c * C + C - 1) * H + h).to(ACC)
        kt = tl.load(k + (tok[:, None] * G + grp) * K + dk[None, :], mask=km[None, :], other=0.0).to(ACC)
        kd = kt * tl.exp(g_end - gc)[:, None]
        ut = tl.load(vu + (tok[:, None] * H + h) * V + dv[None, :], mask=vm[None, :], other=0.0).to(ACC)
        wt = kt
        if DELTA:
            wt = tl.load(w + (tok[:, None] * H + h) * K + dk[None, :], mask=km[None, :], other=0.0).to(ACC)
        decay = tl.exp(g_end)
        if HAS_INIT:
            if c == 0:  # initial levels inside the first chunk enter with its contribution
                lo = tl.load(low + (row64 * H + h) * K * V + hv, mask=hvm, other=0.0).to(ACC)
                hs += tl.where(tl_chunk_reads_scan(ca, js64, NJ), 0.0, 1.0) * lo
                ps += lo
        if is_top:
            hs = _push(hs, kd, wt, ut, decay, 0.0, DELTA, PREC, ACC)
            ps = _push(ps, kd, wt, ut, decay, 1.0, DELTA, PREC, ACC)
            if (ca & win) == win:
                hs += ps
                ps = tl.zeros([BK, BV], dtype=ACC)
        else:
            hs = _push(hs, kd, wt, ut, decay, tl.where(bit == 1, 0.0, 1.0), DELTA, PREC, ACC)
            if (ca & win) == win:
                hs = tl.zeros([BK, BV], dtype=ACC)
