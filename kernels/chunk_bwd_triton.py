"""Triton backward of the scalar-decay (log-linear Mamba-2) chunked form, dense rows, no initial state.

Forward per head (SPEC §4, ``output_triton``): o_t = sum_{s in chunk} lambda_t[lev(t, s)] P[t, s] v_s
+ sum_js w_t[js] Qt_t^T S[c, js], with P = (q k^T) exp(G_t - G_s) causal, Qt = exp(G) q and
S[c, js] the state of inter-chunk level js read by chunk c (``scan_triton``); each level's scan adds
chunk c's X_c = Kd_c^T v_c (Kd = k exp(G_end - G)) and decays by exp(G_end) per chunk.

Three launches:
1. ``level_scan_bwd_kernel`` (grid like the forward scan: rows x heads x levels x V tiles): the
   forward scan run in reverse on dS[c, js] = (w[:, js] Qt)^T dO, which is formed on the fly.
   The chunks adding to one sum of a level (a bucket's sources; the top: a bucket's pending sum)
   get one gradient, that of the state after the sum's last chunk, decayed back by a scalar; the
   scan stores it once per sum into ``dsum`` (one [K, V] slot per sum in the recorded states'
   layout and dtype, ``levels.tl_scan_source``), no atomics: fwd+bwd 1.11x - 1.20x faster on
   the H200 than fp32 atomics into a per-chunk buffer. Below the top it walks only the readers.
2. ``readout_grad_kernel`` (grid chunks x heads): the readout's share of dq and dlambda from the
   recomputed states (one per run of reading chunks, decayed to the reader as in the forward).
   It writes dq, the inter-chunk columns of dlambda (zero elsewhere) and q . dq into ``dacc``.
3. ``chunk_grad_kernel`` (grid chunks x heads): the intra-chunk product's four matmuls and dKd,
   dv from dX_c (the ``dsum`` slots of the levels c feeds, each decayed to c with the float64
   chunk-start log decay the readout uses); it adds its dq, dlambda and dacc terms to what
   launch 2 wrote and writes dk.
Split in two, each chunk kernel keeps about half the tiles live: one kernel holding both spilled
(255 registers, a 1 KB stack at key 128, value 64, bf16); the intra kernel still spills about
0.2 KB there, the readout and the reverse scan (8 warps) none. dq and dk of heads sharing a q/k group
are added atomically into the group's row.

The decay needs no reverse pass of its own: o and every state depend on the cumulative log
decay A_t only through q_t exp(A_t) and k_t exp(-A_t), so dL/dA_t = q_t . dq_t - k_t . dk_t
(per head, before summing heads of a group) and dg is its reverse cumulative sum. The chunk
kernels store that per-token value as [N, H, S] (linear in dq: each adds its share); the caller
does the cumsum along the last dim (torch's scan over a long outer dim with only H columns took
12 ms at 64K tokens).
"""
from __future__ import annotations

try:  # guarded: transformers checks every remote-code file's imports; this one loads only with triton
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover
    triton = tl = None

from ..levels import (
    tl_chunk_reads_scan, tl_chunks_with_bit, tl_nth_chunk_with_bit, tl_scan_level, tl_scan_run, tl_scan_source,
)
from .output_triton import _column, level_weights
from .scan_triton import chunk_program, mma, recorded_decay, reverse_scan_program


@triton.jit
def _operand(x, FULL: tl.constexpr, ACC: tl.constexpr):
    """A loaded tile for ``mma``: kept in its storage dtype (a bf16 tile takes half the registers
    of fp32; mma rounds to DOT anyway) unless masked: triton 3.6 on sm_90 faulted on a loaded,
    masked, transposed bf16 operand (``scan_triton._keys_times``), so that one goes through ACC."""
    if FULL:
        return x
    else:
        return x.to(ACC)


@triton.jit
def _key_rows(x, tok, grp, G: tl.constexpr, K: tl.constexpr, BK: tl.constexpr, dk, km, ACC: tl.constexpr):
    """The chunk's [C, BK] rows of q or k (the head's q/k group)."""
    return _operand(tl.load(x + (tok[:, None] * G + grp) * K + dk[None, :], mask=km[None, :], other=0.0), K == BK, ACC)


@triton.jit
def _value_rows(x, tok, h, H: tl.constexpr, V: tl.constexpr, BV: tl.constexpr, dv, vm, ACC: tl.constexpr):
    """The chunk's [C, BV] rows of v or dO in one value tile."""
    return _operand(tl.load(x + (tok[:, None] * H + h) * V + dv[None, :], mask=vm[None, :], other=0.0), V % BV == 0, ACC)


@triton.jit
def _write_keys(dst, off, x, km, ATOMIC: tl.constexpr, ADD: tl.constexpr):
    """x [C, BK] into the chunk's rows of dq or dk: atomically where the heads of a q/k group share
    the row (ATOMIC), else stored, plus what the row holds when ADD (the other chunk kernel's share)."""
    if ATOMIC:
        tl.atomic_add(dst + off, x, mask=km[None, :], sem="relaxed")
    else:
        if ADD:
            x += tl.load(dst + off, mask=km[None, :], other=0.0).to(x.dtype)
        tl.store(dst + off, x.to(dst.dtype.element_ty), mask=km[None, :])


@triton.jit
def _intra_decay(gc, causal):
    """Gamma [C, C] = exp(G_t - G_s) on and below the diagonal (1 above: masked by the caller)."""
    return tl.exp(tl.where(causal, gc[:, None] - gc[None, :], 0.0))


@triton.jit
def _level_sums(x, i, cols, L, C: tl.constexpr, LOG_C: tl.constexpr, LP: tl.constexpr, ACC: tl.constexpr):
    """[C, LP]: row t of x [C, C] summed per level of (t, s) (the adjoint of ``level_weights``).
    Level l holds 2^(l-1) <= t XOR s < 2^l, compared on the fly: an int64 level tile, or the
    loop unrolled, kept more [C, C] tiles live and spilled more (sm_90, key 128)."""
    xor = i[:, None] ^ i[None, :]
    sums = tl.zeros([C, LP], dtype=ACC)
    for lvl in range(LOG_C + 1):
        hi = tl.where(lvl == L - 1, 2 * C, 1 << lvl)  # the capped level takes every higher one
        level = (xor >= (1 << lvl) >> 1) & (xor < hi)
        sums += tl.where(cols[None, :] == lvl, tl.sum(tl.where(level, x, 0.0), 1)[:, None], 0.0)
    return sums


@triton.jit
def level_scan_bwd_kernel(
    q, g_cum, lam, do, dsum,
    S, NC, NJ, NSLOT, L, top_exp,
    H: tl.constexpr, G: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    C: tl.constexpr, LOG_C: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    ACC: tl.constexpr, PREC: tl.constexpr, DOT: tl.constexpr,
):
    row64, h, grp, js, js64, dk, dv, km, vm, hv, hvm, i, is_top, col, _window = reverse_scan_program(
        NJ, L, top_exp, H, G, K, V, C, LOG_C, BK, BV
    )

    # Every chunk adding to one sum (a bucket's sources; the top: a bucket's pending sum) gets the
    # same gradient, the one of the state after the sum's last chunk, decayed back to the chunk by
    # a scalar: stored once per sum (the chunk kernel decays it), no per-chunk atomics.
    dh = tl.zeros([BK, BV], dtype=ACC)  # gradient of the state at the end of chunk c
    dst = dsum + (row64 * NSLOT * H + h) * K * V + hv  # + slot * H * K * V
    if is_top:  # every chunk reads the top and adds to its pending sum
        for r in range(NC):
            c = (NC - 1 - r).to(tl.int64)
            slot, last, feeds, _ = tl_scan_source(c, js64, NJ, NC, top_exp)
            if feeds & (c == last):  # the sum closes after chunk c: what its readers passed back is in dh
                tl.store(dst + slot * H * K * V, dh.to(dsum.dtype.element_ty), mask=hvm)
            dh = _read_grad(dh, q, g_cum, lam, do, row64, c, h, grp, col, i, dk, km, dv, vm,
                            S, L, H, G, K, V, C, BK, DOT, PREC, ACC)
    else:  # only the readers (bit js set), in reverse: half the chunks, no branch around the loads
        num_read = tl_chunks_with_bit(NC, js64, 1)
        first_of_run = (tl.full((), 1, tl.int64) << js64) - 1
        for t in range(num_read):
            c = tl_nth_chunk_with_bit(num_read - 1 - t, js64, 1)
            dh = _read_grad(dh, q, g_cum, lam, do, row64, c, h, grp, col, i, dk, km, dv, vm,
                            S, L, H, G, K, V, C, BK, DOT, PREC, ACC)
            if (c & first_of_run) == 0:  # the run's first reader: its sum closed after chunk c - 1
                slot = tl_scan_source(c - 1, js64, NJ, NC, top_exp)[0]
                tl.store(dst + slot * H * K * V, dh.to(dsum.dtype.element_ty), mask=hvm)
                dh = tl.zeros([BK, BV], dtype=ACC)  # the state restarted there: no earlier reader


@triton.jit
def _read_grad(dh, q, g_cum, lam, do, row64, c, h, grp, col, i, dk, km, dv, vm, S, L, H: tl.constexpr,
               G: tl.constexpr, K: tl.constexpr, V: tl.constexpr, C: tl.constexpr, BK: tl.constexpr,
               DOT: tl.constexpr, PREC: tl.constexpr, ACC: tl.constexpr):
    """dh carried back through chunk c, which read the state: plus dS = (w Qt)^T dO."""
    g_end = tl.load(g_cum + (row64 * S + c * C + C - 1) * H + h).to(ACC)
    tok = row64 * S + c * C + i
    gc = tl.load(g_cum + tok * H + h).to(ACC)
    qt = _key_rows(q, tok, grp, G, K, BK, dk, km, ACC)
    wt = tl.load(lam + (tok * H + h) * L + col).to(ACC) * tl.exp(gc)
    dot = tl.load(do + (tok[:, None] * H + h) * V + dv[None, :], mask=vm[None, :], other=0.0).to(ACC)
    return tl.exp(g_end) * dh + mma(tl.trans(qt), dot * wt[:, None], DOT, PREC, ACC)  # q goes in as stored


@triton.jit
def _source_grad(dsum, chunk_g, row64, c, h, NC, NJ, NSLOT, top_exp, H: tl.constexpr, K: tl.constexpr,
                 V: tl.constexpr, hv, hvm, BK: tl.constexpr, BV: tl.constexpr, ACC: tl.constexpr):
    """dX of chunk c (one [BK, BV] tile): over the sums it adds to that reach a reader, the sum's
    gradient (``level_scan_bwd_kernel``) decayed from the end of the sum's last chunk to the end of
    c, exp(G(last + 1) - G(c + 1)) from the float64 chunk-start log decay."""
    ca = c.to(tl.int64)
    dx = tl.zeros([BK, BV], dtype=ACC)
    for js in range(NJ):
        slot, last, feeds, adds = tl_scan_source(ca, js, NJ, NC, top_exp)
        if feeds:
            d = tl.load(dsum + ((row64 * NSLOT + slot) * H + h) * K * V + hv, mask=hvm, other=0.0)
            dx += recorded_decay(chunk_g, row64, NC, H, h, last + 1, c + 1, ACC) * d
    return dx


@triton.jit
def readout_grad_kernel(
    q, g_cum, lam, do, states, chunk_g, dq, dlam, dacc,
    S, NC, NJ, NSLOT, top_exp, L,
    H: tl.constexpr, G: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    C: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, LP: tl.constexpr, LOG_C: tl.constexpr,
    ACC: tl.constexpr, PREC: tl.constexpr, DOT: tl.constexpr,
):
    row64, c, h, grp, i, tok, dkk, km = chunk_program(S, NC, H, G, K, C, BK)
    cols = tl.arange(0, LP)
    ca = c.to(tl.int64)
    qt = _key_rows(q, tok, grp, G, K, BK, dkk, km, ACC)
    e_q = tl.exp(tl.load(g_cum + tok * H + h).to(ACC))  # Qt = e_q q: scaled after the product, q stays exact
    lam_t = tl.load(lam + (tok[:, None] * H + h) * L + cols[None, :], mask=cols[None, :] < L, other=0.0).to(ACC)

    dqt = tl.zeros([C, BK], dtype=ACC)
    dlam_t = tl.zeros([C, LP], dtype=ACC)
    for v0 in range(0, V, BV):
        dvv = v0 + tl.arange(0, BV)
        vm = dvv < V
        hv = dkk[:, None] * V + dvv[None, :]
        hvm = km[:, None] & vm[None, :]
        dot = _value_rows(do, tok, h, H, V, BV, dvv, vm, ACC)
        for js in range(NJ):
            if tl_chunk_reads_scan(ca, js, NJ):
                col = tl_scan_level(js, NJ, L, LOG_C)
                slot, first = tl_scan_run(ca, 0, js, NJ, NC, top_exp)
                hs = tl.load(states + ((row64 * NSLOT + slot) * H + h) * K * V + hv, mask=hvm, other=0.0)
                hs = _operand(hs, (K == BK) & (V % BV == 0), ACC)
                scale = e_q * recorded_decay(chunk_g, row64, NC, H, h, c, first, ACC)
                dqt += (scale * _column(lam_t, cols, col))[:, None] * mma(dot, tl.trans(hs), DOT, PREC, ACC)
                read = scale * tl.sum(mma(qt, hs, DOT, PREC, ACC) * dot.to(ACC), 1)
                dlam_t += tl.where(cols[None, :] == col, read[:, None], 0.0)
    _write_keys(dq, (tok[:, None] * G + grp) * K + dkk[None, :], dqt, km, G < H, False)
    tl.store(dlam + (tok[:, None] * H + h) * L + cols[None, :], dlam_t.to(dlam.dtype.element_ty), mask=cols[None, :] < L)
    tl.store(dacc + (row64 * H + h) * S + c * C + i, tl.sum(qt.to(ACC) * dqt, 1))  # [N, H, S]


@triton.jit
def chunk_grad_kernel(
    q, k, v, g_cum, lam, do, dsum, chunk_g, dq, dk, dv, dlam, dacc, S, NC, NJ, NSLOT, top_exp, L,
    H: tl.constexpr, G: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    C: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, LP: tl.constexpr, LOG_C: tl.constexpr,
    ACC: tl.constexpr, PREC: tl.constexpr, DOT: tl.constexpr,
):
    row64, c, h, grp, i, tok, dkk, km = chunk_program(S, NC, H, G, K, C, BK)
    cols = tl.arange(0, LP)

    qt = _key_rows(q, tok, grp, G, K, BK, dkk, km, ACC)
    kt = _key_rows(k, tok, grp, G, K, BK, dkk, km, ACC)
    gc = tl.load(g_cum + tok * H + h).to(ACC)
    g_end = tl.load(g_cum + (row64 * S + c * C + C - 1) * H + h).to(ACC)
    e_k = tl.exp(g_end - gc)  # Kd = e_k k
    lam_t = tl.load(lam + (tok[:, None] * H + h) * L + cols[None, :], mask=cols[None, :] < L, other=0.0).to(ACC)

    causal = i[:, None] >= i[None, :]
    p = tl.where(causal, mma(qt, tl.trans(kt), DOT, PREC, ACC) * _intra_decay(gc, causal), 0.0)
    weights = level_weights(lam_t, cols, i, L, C, LOG_C, ACC)

    # Live [C, C] tiles are what spills here: the decay and p * weights are formed where used.
    dm = tl.zeros([C, C], dtype=ACC)  # dO v^T over all value tiles
    dkd = tl.zeros([C, BK], dtype=ACC)  # gradient of Kd
    for v0 in range(0, V, BV):
        dvv = v0 + tl.arange(0, BV)
        vm = dvv < V
        vt = _value_rows(v, tok, h, H, V, BV, dvv, vm, ACC)
        dot = _value_rows(do, tok, h, H, V, BV, dvv, vm, ACC)
        dm += mma(dot, tl.trans(vt), DOT, PREC, ACC)
        dx = _source_grad(dsum, chunk_g, row64, c, h, NC, NJ, NSLOT, top_exp, H, K, V,
                          dkk[:, None] * V + dvv[None, :], km[:, None] & vm[None, :], BK, BV, ACC)
        dkd += mma(vt, tl.trans(dx), DOT, PREC, ACC)
        # Kd dx with the decay on the product's rows: k goes in as stored
        dvt = mma(tl.trans(p * weights), dot, DOT, PREC, ACC) + e_k[:, None] * mma(kt, dx, DOT, PREC, ACC)
        tl.store(dv + (tok[:, None] * H + h) * V + dvv[None, :], dvt.to(dv.dtype.element_ty), mask=vm[None, :])

    pdm = p * dm
    dp = tl.where(causal, dm * weights * _intra_decay(gc, causal), 0.0)  # gradient of q k^T
    # dq then dk, each written before the next is formed: one [C, BK] fp32 tile live at a time
    qk_off = (tok[:, None] * G + grp) * K + dkk[None, :]
    dqt = mma(dp, kt, DOT, PREC, ACC)
    own = tl.sum(qt.to(ACC) * dqt, 1)  # this kernel's share of dacc
    _write_keys(dq, qk_off, dqt, km, G < H, True)  # added to the readout's share
    dkt = mma(tl.trans(dp), qt, DOT, PREC, ACC) + e_k[:, None] * dkd
    own -= tl.sum(kt.to(ACC) * dkt, 1)
    _write_keys(dk, qk_off, dkt, km, G < H, False)
    acc_off = (row64 * H + h) * S + c * C + i  # [N, H, S]
    tl.store(dacc + acc_off, tl.load(dacc + acc_off) + own)
    lam_off = (tok[:, None] * H + h) * L + cols[None, :]
    dlam_t = _level_sums(pdm, i, cols, L, C, LOG_C, LP, ACC)
    dlam_t += tl.load(dlam + lam_off, mask=cols[None, :] < L, other=0.0).to(ACC)
    tl.store(dlam + lam_off, dlam_t.to(dlam.dtype.element_ty), mask=cols[None, :] < L)
