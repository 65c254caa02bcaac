"""Triton backward of the scalar-decay (log-linear Mamba-2) chunked form, dense rows, no initial state.

Forward per head (SPEC §4, ``output_triton``): o_t = sum_{s in chunk} lambda_t[lev(t, s)] P[t, s] v_s
+ sum_js w_t[js] Qt_t^T S[c, js], with P = (q k^T) exp(G_t - G_s) causal, Qt = exp(G) q and
S[c, js] the state of inter-chunk level js read by chunk c (``scan_triton``); each level's scan adds
chunk c's X_c = Kd_c^T v_c (Kd = k exp(G_end - G)) and decays by exp(G_end) per chunk.

Two launches:
1. ``level_scan_bwd_kernel`` (grid like the forward scan: rows x heads x levels x value tiles):
   the forward scan run in reverse on dS[c, js] = (w[:, js] Qt)^T dO, which is formed on
   the fly. The chunks adding to one sum of a level (a bucket's sources; the top: a bucket's
   pending sum) get one gradient, that of the state after the sum's last chunk, decayed back by a
   scalar; the scan stores it once per sum into ``dsum`` (one [K, V] slot per sum in the recorded
   states' layout and dtype, ``levels.tl_scan_source``), no atomics: fwd+bwd 1.11x - 1.20x faster
   on the H200 than fp32 atomics into a per-chunk buffer. Below the top it walks only the readers.
   At each reader it also takes the readout's share of dq and dlambda, with the q and dO rows it
   loaded for dS and its tile of the recorded state the reader read (decayed to the reader as in
   the forward): partial sums over the tile's values, added atomically into dq, the
   level's column of dlambda and q . dq into ``dacc`` (all three zero-filled by the caller).
2. ``chunk_grad_kernel`` (grid chunks x heads): the intra-chunk product's four matmuls and dKd,
   dv from dX_c (the ``dsum`` slots of the levels c feeds, each decayed to c with the float64
   chunk-start log decay the readout uses); it adds its dq, dlambda and dacc terms to what
   launch 1 wrote and writes dk.
The readout's gradient is taken in the scan, not in a chunk-parallel kernel of its own: such a
kernel loaded q and dO a second time (1.50 ms of the 2K backward on the H200 at 48 heads, key
128, value 64). The chunk kernel spills (255 registers, a 792 B stack at 4 warps, key 128, value
64, bf16); so does the reverse scan (4 warps, 255 registers, 48 B; faster than 8 warps without a
spill, ``chunk_triton._reverse_scan_launch``). dq and dk of heads sharing a q/k
group are added atomically into the group's row.

The decay needs no reverse pass of its own: o and every state depend on the cumulative log
decay A_t only through q_t exp(A_t) and k_t exp(-A_t), so dL/dA_t = q_t . dq_t - k_t . dk_t
(per head, before summing heads of a group) and dg is its reverse cumulative sum. The chunk
kernels store that per-token value as [N, H, S] (linear in dq: each adds its share); the caller
takes the reverse sum along the last dim (``decay_triton.row_reverse_cumsum``, writing [N, S, H];
torch's scan over a long outer dim with only H columns took 12 ms at 64K tokens).
"""
from __future__ import annotations

try:  # guarded: transformers checks every remote-code file's imports; this one loads only with triton
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover
    triton = tl = None

from ..levels import tl_chunks_with_bit, tl_nth_chunk_with_bit, tl_scan_run, tl_scan_source
from .output_triton import level_weights
from .scan_triton import chunk_program, mma, recorded_decay, reverse_scan_program, slot_tile


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
    return _operand(tl.load(x + (tok[:, None] * G + grp) * K + dk[None, :], mask=km[None, :], other=0.0), K % BK == 0, ACC)


@triton.jit
def _value_rows(x, tok, h, H: tl.constexpr, V: tl.constexpr, BV: tl.constexpr, dv, vm, ACC: tl.constexpr):
    """The chunk's [C, BV] rows of v or dO in one value tile."""
    return _operand(tl.load(x + (tok[:, None] * H + h) * V + dv[None, :], mask=vm[None, :], other=0.0), V % BV == 0, ACC)


@triton.jit
def _write_keys(dst, off, x, km, ATOMIC: tl.constexpr, ADD: tl.constexpr):
    """x [C, BK] into the chunk's rows of dq or dk: atomically where several programs add to the
    row (ATOMIC: the heads of a q/k group; in the reverse scan also its levels and value tiles),
    else stored, plus what the row holds when ADD (the reverse scan's share)."""
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
    q, g_cum, lam, do, states, chunk_g, dsum, dq, dlam, dacc,
    S, NC, NJ, NSLOT, L, top_exp,
    H: tl.constexpr, G: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    C: tl.constexpr, LOG_C: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    ACC: tl.constexpr, PREC: tl.constexpr, DOT: tl.constexpr,
):
    row64, h, grp, js, js64, dk, dv, km, vm, hv, hvm, i, is_top, col, window = reverse_scan_program(
        NJ, L, top_exp, H, G, K, V, C, LOG_C, BK, BV
    )

    # Every chunk adding to one sum (a bucket's sources; the top: a bucket's pending sum) gets the
    # same gradient, the one of the state after the sum's last chunk, decayed back to the chunk by
    # a scalar: stored once per sum (the chunk kernel decays it), no per-chunk atomics.
    # The walk visits the chunks that read the level (``tl_chunk_reads_scan``) and whose state
    # holds something: below the top those with bit js set (half the chunks); at the top those
    # after its first window (``window``: the last chunk of the first window), before whose close
    # its state is zero: its read there adds nothing to the readout's gradients, and its dS
    # reaches no sum (no window closed earlier). Half the top's chunks at the bench lengths, where
    # the top is the longest walk. Every state loaded was recorded. One loop for both: triton
    # gives each loop's pipelined loads shared memory of their own (two took 226 KB in bf16 at
    # key 128, value 64, and fp32 did not fit sm_90).
    num_read = tl.where(is_top, tl.maximum(NC - 1 - window, 0), tl_chunks_with_bit(NC, js64, 1))
    dh = tl.zeros([BK, BV], dtype=ACC)  # gradient of the state at the end of chunk c
    for t in range(num_read):  # in reverse, no branch around the loads
        c = tl.where(is_top, NC - 1 - t, tl_nth_chunk_with_bit(num_read - 1 - t, js64, 1))
        slot, first = tl_scan_run(c, 0, js, NJ, NC, top_exp)  # the state c reads
        dh = _read_grad(dh, q, g_cum, lam, do, states, chunk_g, dq, dlam, dacc, row64, c, slot, first, h, grp,
                        col, i, dk, km, dv, vm, hv, hvm, S, NC, NSLOT, L, H, G, K, V, C, BK, BV, DOT, PREC, ACC)
        if (c == first) & (c > 0):  # c's run starts here: the sum it reads closed after chunk c - 1
            sum_slot = tl_scan_source(c - 1, js64, NJ, NC, top_exp)[0]
            tl.store(slot_tile(dsum, row64, sum_slot, NSLOT, h, H, K, V) + hv, dh.to(dsum.dtype.element_ty), mask=hvm)
            if is_top == 0:  # below the top the state restarted there: no earlier reader
                dh = tl.zeros([BK, BV], dtype=ACC)


@triton.jit
def _read_grad(dh, q, g_cum, lam, do, states, chunk_g, dq, dlam, dacc, row64, c, slot, first, h, grp, col, i,
               dk, km, dv, vm, hv, hvm, S, NC, NSLOT, L, H: tl.constexpr, G: tl.constexpr, K: tl.constexpr,
               V: tl.constexpr, C: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
               DOT: tl.constexpr, PREC: tl.constexpr, ACC: tl.constexpr):
    """Chunk c read the state: dh carried back through c, plus dS = (w Qt)^T dO; and the readout's
    share of dq, dlambda and dacc (``_readout_grad``), from the same loads of c's rows."""
    g_end = tl.load(g_cum + (row64 * S + c * C + C - 1) * H + h).to(ACC)
    tok = row64 * S + c * C + i
    e_q = tl.exp(tl.load(g_cum + tok * H + h).to(ACC))  # Qt = e_q q
    w = tl.load(lam + (tok * H + h) * L + col).to(ACC)  # the level's lambda column
    qt = _key_rows(q, tok, grp, G, K, BK, dk, km, ACC)
    dot = _value_rows(do, tok, h, H, V, BV, dv, vm, ACC)
    _readout_grad(states, chunk_g, dq, dlam, dacc, qt, dot, e_q, w, row64, c, tok, slot, first, h, grp, col, i,
                  dk, km, hv, hvm, S, NC, NSLOT, L, H, G, K, V, C, BK, BV, DOT, PREC, ACC)
    return tl.exp(g_end) * dh + mma(tl.trans(qt), dot.to(ACC) * (w * e_q)[:, None], DOT, PREC, ACC)  # q goes in as stored


@triton.jit
def _readout_grad(states, chunk_g, dq, dlam, dacc, qt, dot, e_q, w, row64, c, tok, slot, first, h, grp, col, i,
                  dk, km, hv, hvm, S, NC, NSLOT, L, H: tl.constexpr, G: tl.constexpr, K: tl.constexpr,
                  V: tl.constexpr, C: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
                  DOT: tl.constexpr, PREC: tl.constexpr, ACC: tl.constexpr):
    """The readout o_t += w_t exp(G_t) q_t^T S (S: the state in ``slot``, recorded at chunk
    ``first`` and decayed to c) differentiated in q and w, from this program's [BK, BV] tile of S
    (every key, BV of the values): a partial sum over its values, added atomically to what the
    other value tiles' and levels' programs add (dq, dlam, dacc start at zero)."""
    hs = tl.load(slot_tile(states, row64, slot, NSLOT, h, H, K, V) + hv, mask=hvm, other=0.0)
    hs = _operand(hs, (K % BK == 0) & (V % BV == 0), ACC)
    scale = e_q * recorded_decay(chunk_g, row64, NC, H, h, c, first, ACC)
    dqt = (scale * w)[:, None] * mma(dot, tl.trans(hs), DOT, PREC, ACC)
    _write_keys(dq, (tok[:, None] * G + grp) * K + dk[None, :], dqt, km, True, False)
    read = scale * tl.sum(mma(qt, hs, DOT, PREC, ACC) * dot.to(ACC), 1)  # d o_t / d w_t, this tile's share
    tl.atomic_add(dlam + (tok * H + h) * L + col, read, sem="relaxed")
    # q_t . dq_t = w_t read_t: no [C, BK] product and sum for dacc
    tl.atomic_add(dacc + (row64 * H + h) * S + c * C + i, w * read, sem="relaxed")  # [N, H, S]


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
            d = tl.load(slot_tile(dsum, row64, slot, NSLOT, h, H, K, V) + hv, mask=hvm, other=0.0)
            dx += recorded_decay(chunk_g, row64, NC, H, h, last + 1, c + 1, ACC) * d
    return dx


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
    _write_keys(dq, qk_off, dqt, km, G < H, True)  # added to the readout's share (the scan's)
    dkt = mma(tl.trans(dp), qt, DOT, PREC, ACC) + e_k[:, None] * dkd
    own -= tl.sum(kt.to(ACC) * dkt, 1)
    _write_keys(dk, qk_off, dkt, km, G < H, False)
    acc_off = (row64 * H + h) * S + c * C + i  # [N, H, S]
    tl.store(dacc + acc_off, tl.load(dacc + acc_off) + own)
    lam_off = (tok[:, None] * H + h) * L + cols[None, :]
    dlam_t = _level_sums(pdm, i, cols, L, C, LOG_C, LP, ACC)
    dlam_t += tl.load(dlam + lam_off, mask=cols[None, :] < L, other=0.0).to(ACC)
    tl.store(dlam + lam_off, dlam_t.to(dlam.dtype.element_ty), mask=cols[None, :] < L)
