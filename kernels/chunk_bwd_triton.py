"""Triton backward of the scalar-decay (log-linear Mamba-2) chunked form, dense rows, no initial state.

Forward per head (SPEC §4, ``output_triton``): o_t = sum_{s in chunk} lambda_t[lev(t, s)] P[t, s] v_s
+ sum_js w_t[js] Qt_t^T S[c, js], with P = (q k^T) exp(G_t - G_s) causal, Qt = exp(G) q and
S[c, js] the state of inter-chunk level js read by chunk c (``scan_triton``); each level's scan adds
chunk c's X_c = Kd_c^T v_c (Kd = k exp(G_end - G)) and decays by exp(G_end) per chunk.

Two launches:
1. ``level_scan_bwd_kernel`` (grid like the forward scan: rows x heads x levels x V tiles): the
   forward scan run in reverse on dS[c, js] = (w[:, js] Qt)^T dO, which is formed on the fly.
   What reaches X_c is added atomically into ``dsrc[c]`` (summed over the levels c feeds).
2. ``chunk_grad_kernel`` (grid chunks x heads): the intra-chunk product's four matmuls, the
   readout's dQt and dlambda from the recomputed states (one per run of reading chunks, decayed
   to the reader as in the forward), and dKd, dv from ``dsrc``. dq and dk of heads sharing a
   q/k group are added atomically into the group's row.

The decay needs no reverse pass of its own: o and every state depend on the cumulative log
decay A_t only through q_t exp(A_t) and k_t exp(-A_t), so dL/dA_t = q_t . dq_t - k_t . dk_t
(per head, before summing heads of a group) and dg is its reverse cumulative sum. The chunk
kernel stores that per-token value as [N, H, S]; the caller does the cumsum along the last dim
(torch's scan over a long outer dim with only H columns took 12 ms at 64K tokens).
"""
from __future__ import annotations

try:  # guarded: transformers checks every remote-code file's imports; this one loads only with triton
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover
    triton = tl = None

from ..levels import tl_capped_level, tl_chunk_reads_scan, tl_scan_level, tl_scan_run
from .output_triton import _column, level_weights
from .scan_triton import chunk_program, mma, recorded_decay, reverse_scan_program


@triton.jit
def level_scan_bwd_kernel(
    q, g_cum, lam, do, dsrc,
    S, NC, NJ, L, top_exp,
    H: tl.constexpr, G: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    C: tl.constexpr, LOG_C: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    ACC: tl.constexpr, PREC: tl.constexpr, DOT: tl.constexpr,
):
    row64, h, grp, js, js64, dk, dv, km, vm, hv, hvm, i, is_top, col, win = reverse_scan_program(
        NJ, L, top_exp, H, G, K, V, C, LOG_C, BK, BV
    )

    dh = tl.zeros([BK, BV], dtype=ACC)  # gradient of the level state (top: of its closed part)
    dp = tl.zeros([BK, BV], dtype=ACC)  # top only: gradient of the pending window sum
    for r in range(NC):
        c = NC - 1 - r
        ca = c.to(tl.int64)
        bit = (ca >> js64) & 1
        g_end = tl.load(g_cum + (row64 * S + c * C + C - 1) * H + h).to(ACC)
        decay = tl.exp(g_end)
        dst = dsrc + ((row64 * NC + c) * H + h) * K * V + hv
        if is_top:
            if (ca & win) == win:  # the window's pending sum joined the top state here
                dp = dh
            tl.atomic_add(dst, dp, mask=hvm, sem="relaxed")
            dh = decay * dh
            dp = decay * dp
        else:
            if (ca & win) == win:  # the state was reset after this chunk
                dh = tl.zeros([BK, BV], dtype=ACC)
            if bit == 0:
                tl.atomic_add(dst, dh, mask=hvm, sem="relaxed")
            dh = decay * dh
        if tl_chunk_reads_scan(ca, js64, NJ):  # chunk c read this state: dS = (w Qt)^T dO
            tok = row64 * S + c * C + i
            gc = tl.load(g_cum + tok * H + h).to(ACC)
            qt = tl.load(q + (tok[:, None] * G + grp) * K + dk[None, :], mask=km[None, :], other=0.0).to(ACC)
            wt = tl.load(lam + (tok * H + h) * L + col).to(ACC) * tl.exp(gc)
            dot = tl.load(do + (tok[:, None] * H + h) * V + dv[None, :], mask=vm[None, :], other=0.0).to(ACC)
            dh += mma(tl.trans(qt * wt[:, None]), dot, DOT, PREC, ACC)


@triton.jit
def chunk_grad_kernel(
    q, k, v, g_cum, lam, do, states, chunk_g, dsrc, dq, dk, dv, dlam, dacc,
    S, NC, NJ, NSLOT, top_exp, L,
    H: tl.constexpr, G: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    C: tl.constexpr, LOG_C: tl.constexpr, LP: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    ACC: tl.constexpr, PREC: tl.constexpr, DOT: tl.constexpr,
):
    row64, c, h, grp, i, tok, dkk, km = chunk_program(S, NC, H, G, K, C, BK)
    cols = tl.arange(0, LP)
    ca = c.to(tl.int64)

    qt = tl.load(q + (tok[:, None] * G + grp) * K + dkk[None, :], mask=km[None, :], other=0.0).to(ACC)
    kt = tl.load(k + (tok[:, None] * G + grp) * K + dkk[None, :], mask=km[None, :], other=0.0).to(ACC)
    gc = tl.load(g_cum + tok * H + h).to(ACC)
    g_end = tl.load(g_cum + (row64 * S + c * C + C - 1) * H + h).to(ACC)
    lam_t = tl.load(lam + (tok[:, None] * H + h) * L + cols[None, :], mask=cols[None, :] < L, other=0.0).to(ACC)

    causal = i[:, None] >= i[None, :]
    gamma = tl.exp(tl.where(causal, gc[:, None] - gc[None, :], 0.0))
    p = tl.where(causal, mma(qt, tl.trans(kt), DOT, PREC, ACC) * gamma, 0.0)
    lev = tl_capped_level(i[:, None], i[None, :], L)  # also for dlambda's per-level sums below
    weights = level_weights(lam_t, cols, i, L, C, LOG_C, ACC)
    m = p * weights
    e_q = tl.exp(gc)
    e_k = tl.exp(g_end - gc)
    qe = qt * e_q[:, None]  # Qt
    kd = kt * e_k[:, None]  # Kd

    dm = tl.zeros([C, C], dtype=ACC)  # dO v^T over all value tiles
    dqe = tl.zeros([C, BK], dtype=ACC)  # gradient of Qt
    dkd = tl.zeros([C, BK], dtype=ACC)  # gradient of Kd
    dlam_t = tl.zeros([C, LP], dtype=ACC)
    for v0 in range(0, V, BV):
        dvv = v0 + tl.arange(0, BV)
        vm = dvv < V
        hv = dkk[:, None] * V + dvv[None, :]
        hvm = km[:, None] & vm[None, :]
        vt = tl.load(v + (tok[:, None] * H + h) * V + dvv[None, :], mask=vm[None, :], other=0.0).to(ACC)
        dot = tl.load(do + (tok[:, None] * H + h) * V + dvv[None, :], mask=vm[None, :], other=0.0).to(ACC)
        dm += mma(dot, tl.trans(vt), DOT, PREC, ACC)
        dvt = mma(tl.trans(m), dot, DOT, PREC, ACC)
        for js in range(NJ):
            if tl_chunk_reads_scan(ca, js, NJ):
                col = tl_scan_level(js, NJ, L, LOG_C)
                slot, first = tl_scan_run(ca, 0, js, NJ, NC, top_exp)
                hs = tl.load(states + ((row64 * NSLOT + slot) * H + h) * K * V + hv, mask=hvm, other=0.0).to(ACC)
                decay = recorded_decay(chunk_g, row64, NC, H, h, c, first, ACC)
                dqe += (decay * _column(lam_t, cols, col))[:, None] * mma(dot, tl.trans(hs), DOT, PREC, ACC)
                read = decay * tl.sum(mma(qe, hs, DOT, PREC, ACC) * dot, 1)
                dlam_t += tl.where(cols[None, :] == col, read[:, None], 0.0)
        dx = tl.load(dsrc + ((row64 * NC + c) * H + h) * K * V + hv, mask=hvm, other=0.0).to(ACC)
        dkd += mma(vt, tl.trans(dx), DOT, PREC, ACC)
        dvt += mma(kd, dx, DOT, PREC, ACC)
        tl.store(dv + (tok[:, None] * H + h) * V + dvv[None, :], dvt.to(dv.dtype.element_ty), mask=vm[None, :])

    pdm = p * dm
    for lvl in tl.static_range(LOG_C + 1):
        dlam_t += tl.where(cols[None, :] == lvl, tl.sum(tl.where(lev == lvl, pdm, 0.0), 1)[:, None], 0.0)
    dp = tl.where(causal, dm * weights * gamma, 0.0)  # gradient of q k^T
    dqt = mma(dp, kt, DOT, PREC, ACC) + e_q[:, None] * dqe
    dkt = mma(tl.trans(dp), qt, DOT, PREC, ACC) + e_k[:, None] * dkd
    qk_off = (tok[:, None] * G + grp) * K + dkk[None, :]
    if G < H:  # the heads of a group add into its one row
        tl.atomic_add(dq + qk_off, dqt, mask=km[None, :], sem="relaxed")
        tl.atomic_add(dk + qk_off, dkt, mask=km[None, :], sem="relaxed")
    else:
        tl.store(dq + qk_off, dqt.to(dq.dtype.element_ty), mask=km[None, :])
        tl.store(dk + qk_off, dkt.to(dk.dtype.element_ty), mask=km[None, :])
    tl.store(dlam + (tok[:, None] * H + h) * L + cols[None, :], dlam_t.to(dlam.dtype.element_ty), mask=cols[None, :] < L)
    tl.store(dacc + (row64 * H + h) * S + c * C + i, tl.sum(qt * dqt, 1) - tl.sum(kt * dkt, 1))  # [N, H, S]
