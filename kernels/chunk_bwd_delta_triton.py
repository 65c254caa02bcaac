"""Triton backward of the delta-rule (log-linear Gated DeltaNet) chunked form, no initial state.

Forward per chunk and head (``block.py``, ``intra_triton``, ``output_triton``), G the chunk-local
cumulative log decay, Gamma[t, s] = exp(G_t - G_s) for s <= t::

    QK = (q k^T) * Gamma (causal)     KKs = strict_lower((k k^T) * Gamma)
    A  = I + diag(beta) KKs           Ab = A^-1 diag(beta)
    W  = Ab (k e^G)      U = Ab v     Kd = k e^(G_end - G)     Qt = e^G q - QK W
    o  = ((QK Ab) * Lambda) v  +  sum_js lambda[:, level(js)] * (Qt S[c, js])

and every inter-chunk level state h goes through chunk c as h -> M h (+ X if chunk c adds to that
level), M = e^(G_end) I - Kd^T W, X = Kd^T U.

Three launches after the recomputed forward stages (whose chunk factors include Qt per token,
which the reverse scans need at every level):
1. ``level_scan_bwd_delta_kernel`` (grid rows x heads x levels x V tiles): the forward scan in
   reverse, dh -> M^T dh = e^(G_end) dh - W^T (Kd dh), plus (lambda Qt)^T dO where the chunk reads
   the level. It stores dh' (the gradient of the state just after chunk c's transition) for every
   chunk and level, and the top scan also that of its pending window sum (slot NJ).
2. ``state_pairs_kernel`` (grid chunks x heads x key tiles^2): D per chunk (below), one key-tile
   block of it per program, and dX into slot NJ + 1.
3. ``chunk_grad_delta_kernel`` (grid chunks x heads): everything else, chunk-local.

The transition's gradient needs sum over every state h passing chunk c of h dh'^T, and the
forward records h only where chunk c reads it. The others are sums of recorded ones: a level
chunk c does not read holds the buckets of the lower levels it reads (they are the part of its
window before c), and the top's pending sum all of the non-top levels it reads. So, walking the
levels downwards with ``run`` = dp' + the dh' of the non-read levels above, a read level js pairs
its recorded state with E_js = dh'_js + run (the top with its own dh' only), and the chunk's own
contribution X, which lands exactly in the non-read levels and the pending sum, gets dX = run at
the bottom. With D = sum_js S_js E_js^T [K, K]: dKd -= W D, dW -= Kd D^T, d e^(G_end) = tr D.
D goes through global memory (K^2 floats a chunk and head, less than one state): forming it
costs K^2 V per level against 4 C K V for the per-level products W S_js E_js^T and
Kd E_js S_js^T, and it leaves the gradient kernel no product that contracts over both keys
and values.

Shared memory (227 KB a block on H100/H200): at K = 192 (BK = 256) one [C, BK] fp32 tile is
64 KB. So the chunk-parallel kernels walk the keys in tiles of at most 64 (``BKT``) and the
values in tiles of at most 64: the gradient kernel makes a value pass (dV, dO v^T, dU), a key
pass (dQt, dKd, dW, the direct q / k terms and their [C, C] sums dQK, dAb), the [C, C] chain
through the UT inverse, and a last key pass adding dQK and dKK through k and q. The reverse
scan's transition mixes all keys, so it holds [C, BK] tiles of W, Kd and lambda Qt; it runs
unpipelined (one stage: the prefetch buffers would triple them) and with narrow value tiles.

Chunk-local chain (checked against autograd on one chunk before writing the kernel):
dQt = sum_js lambda_js dO S_js^T; dP = (dO v^T) * Lambda; dQK = dP Ab^T - dQt W^T;
dW -= QK^T dQt; dU = Kd dX; dAb = QK^T dP + dU v^T + dW (k e^G)^T. A^-1 = I - Ab KKs (from
A^-1 A = I, so no second inversion and no division by beta); dbeta_s gets sum_t A^-1[t, s] dAb[t, s];
dL = strict_lower(-A^-T (dAb diag(beta)) A^-T) gives dbeta_t += sum_s dL KKs and the k k^T and
Gamma terms. The decay enters only through G (chunk-local: the chunk's states see it through
e^(G_end)), so the kernel stores dG per token and the caller takes the reverse cumulative sum
within each chunk. Every Gamma-weighted product Z = X * dX adds rowsum(Z) - colsum(Z) to dG.
"""
from __future__ import annotations

try:  # guarded: transformers checks every remote-code file's imports; this one loads only with triton
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover
    triton = tl = None

from ..levels import tl_capped_level, tl_chunk_reads_scan, tl_scan_level
from .output_triton import _column, level_weights
from .scan_triton import chunk_program, head_rows, key_tile, mma, reverse_scan_program


@triton.jit
def _dot(a, b, PREC: tl.constexpr, ACC: tl.constexpr):
    return tl.dot(a, b, input_precision=PREC, out_dtype=ACC)


@triton.jit
def _state(base, row64, c, slot, NC, NSLOT, h, H, K, V):
    """Start of the [K, V] tile ``base[row, c, slot, h]`` (NSLOT slots a chunk): the recorded
    states (NJ slots) and their gradients (NJ + 2 slots, see the module docstring)."""
    return base + (((row64 * NC + c) * NSLOT + slot) * H + h) * K * V


@triton.jit
def _state_tile(base, row64, c, slot, NC, NSLOT, h, H, K, V, kc, km, dv, vm, ACC: tl.constexpr):
    """Rows ``kc`` x columns ``dv`` of ``_state(...)`` in ACC (masked entries zero)."""
    ptr = _state(base, row64, c, slot, NC, NSLOT, h, H, K, V) + kc[:, None] * V + dv[None, :]
    return tl.load(ptr, mask=km[:, None] & vm[None, :], other=0.0).to(ACC)


@triton.jit
def _gamma(gc, i):
    """Gamma[t, s] = exp(G_t - G_s), causal (0 above the diagonal)."""
    causal = i[:, None] >= i[None, :]
    return tl.where(causal, tl.exp(tl.where(causal, gc[:, None] - gc[None, :], 0.0)), 0.0)


@triton.jit
def _pull(dh, kd, wt, decay, DOT: tl.constexpr, PREC: tl.constexpr, ACC: tl.constexpr):
    """A state gradient [BK, BV] back through one chunk: M^T dh = decay dh - W^T (Kd dh)."""
    return decay * dh - mma(tl.trans(wt), mma(kd, dh, DOT, PREC, ACC), DOT, PREC, ACC)


@triton.jit
def _dg_pairs(z):
    """What a product weighted by Gamma[t, s] = exp(G_t - G_s) adds to dG: rowsum - colsum."""
    return tl.sum(z, 1) - tl.sum(z, 0)


@triton.jit
def level_scan_bwd_delta_kernel(
    k, w, qt, g_cum, lam, do, dstates,
    S, NC, NJ, L, top_exp,
    H: tl.constexpr, G: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    C: tl.constexpr, LOG_C: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, WK: tl.constexpr,
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
        if (ca & win) == win:  # the window closed after this chunk: pending joined the top, or reset
            if is_top:
                dp = dh
            else:
                dh = tl.zeros([BK, BV], dtype=ACC)
        tl.store(_state(dstates, row64, c, js, NC, NJ + 2, h, H, K, V) + hv, dh, mask=hvm)
        tok = row64 * S + c * C + i
        # Below the top a bucket's last chunk pulls back a zero gradient (the level restarted after
        # it) and its first chunk's pull is thrown away (the level started there): both skipped,
        # which leaves level 0 no pulls at all. The same first-chunk rule holds for the top's
        # pending sum. The top's closed part is zero up to its first window's close (ca <= win; no
        # initial state here): its gradient there meets only that zero state (state_pairs_kernel),
        # so it is neither pulled nor formed.
        pos = ca & win
        top_empty = is_top & (ca <= win)
        if is_top | ((pos != win) & (pos != 0)):
            gc = tl.load(g_cum + tok * H + h).to(ACC)
            g_end = tl.load(g_cum + (row64 * S + c * C + C - 1) * H + h).to(ACC)
            kd = head_rows(k, tok, G, grp, K, dk, km).to(ACC) * tl.exp(g_end - gc)[:, None]
            wt = head_rows(w, tok, H, h, WK, dk, km).to(ACC)  # W's rows are WK wide
            decay = tl.exp(g_end)
            if is_top:
                tl.store(_state(dstates, row64, c, NJ, NC, NJ + 2, h, H, K, V) + hv, dp, mask=hvm)
                if pos != 0:
                    dp = _pull(dp, kd, wt, decay, DOT, PREC, ACC)
            if top_empty:
                dh = tl.zeros([BK, BV], dtype=ACC)
            else:
                dh = _pull(dh, kd, wt, decay, DOT, PREC, ACC)
        else:
            dh = tl.zeros([BK, BV], dtype=ACC)
        if tl_chunk_reads_scan(ca, js64, NJ) & (top_empty == 0):  # chunk c read this state: dS = (lambda Qt)^T dO
            wq = head_rows(qt, tok, H, h, K, dk, km).to(ACC) * tl.load(lam + (tok * H + h) * L + col).to(ACC)[:, None]
            dh += mma(tl.trans(wq), head_rows(do, tok, H, h, V, dv, vm), DOT, PREC, ACC)


@triton.jit
def state_pairs_kernel(
    states, dstates, pairs, NC, NJ,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BKT: tl.constexpr, BV: tl.constexpr,
    ACC: tl.constexpr, PREC: tl.constexpr,
):
    """One [BKT, BKT] block of D = sum_js S_js E_js^T for one chunk and head: rows from the
    recorded states, columns from the gradients E_js, built on the fly from dh' (module
    docstring). The programs of the first row block also store dX (slot NJ + 1)."""
    pid_nc, h, blk = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    row64, c = (pid_nc // NC).to(tl.int64), pid_nc % NC
    ca = c.to(tl.int64)
    kr, krm = key_tile(blk // tl.cdiv(K, BKT) * BKT, K, BKT)  # rows of D: the recorded states
    ke, kem = key_tile(blk % tl.cdiv(K, BKT) * BKT, K, BKT)  # columns: their gradients E
    d = tl.zeros([BKT, BKT], dtype=ACC)
    for v0 in range(0, V, BV):
        dv = v0 + tl.arange(0, BV)
        vm = dv < V
        run = _state_tile(dstates, row64, c, NJ, NC, NJ + 2, h, H, K, V, ke, kem, dv, vm, ACC)
        for r in range(NJ):
            js = NJ - 1 - r
            dh = _state_tile(dstates, row64, c, js, NC, NJ + 2, h, H, K, V, ke, kem, dv, vm, ACC)
            if tl_chunk_reads_scan(ca, js, NJ):
                hs = _state_tile(states, row64, c, js, NC, NJ, h, H, K, V, kr, krm, dv, vm, ACC)
                d += _dot(hs, tl.trans(dh + tl.where(js == NJ - 1, 0.0, 1.0) * run), PREC, ACC)
            else:
                run += dh
        if blk < tl.cdiv(K, BKT):  # first row block: run is now dX, store it once
            dx = _state(dstates, row64, c, NJ + 1, NC, NJ + 2, h, H, K, V) + ke[:, None] * V + dv[None, :]
            tl.store(dx, run, mask=kem[:, None] & vm[None, :])
    pair = pairs + ((row64 * NC + c) * H + h) * K * K
    tl.store(pair + kr[:, None] * K + ke[None, :], d, mask=krm[:, None] & kem[None, :])


@triton.jit
def _pair_block(pairs, blk, r0, c0, K: tl.constexpr, BKT: tl.constexpr):
    """D[r0 : r0 + BKT, c0 : c0 + BKT] of chunk and head ``blk`` (zero outside K x K)."""
    r, rm = key_tile(r0, K, BKT)
    c, cm = key_tile(c0, K, BKT)
    return tl.load(pairs + blk * K * K + r[:, None] * K + c[None, :], mask=rm[:, None] & cm[None, :], other=0.0)


@triton.jit
def chunk_grad_delta_kernel(
    q, k, v, g_cum, beta, lam, a_inv, w, qt, do, states, dstates, pairs,
    dq, dk, dv, dlam, dbeta, dg,
    S, NC, NJ, L,
    H: tl.constexpr, G: tl.constexpr, K: tl.constexpr, V: tl.constexpr, WK: tl.constexpr,
    C: tl.constexpr, LOG_C: tl.constexpr, LP: tl.constexpr, BKT: tl.constexpr, BV: tl.constexpr,
    ACC: tl.constexpr, PREC: tl.constexpr,
):
    row64, c, h, grp, i, tok, _, _ = chunk_program(S, NC, H, G, K, C, BKT)
    cols = tl.arange(0, LP)
    lm = cols < L
    ca = c.to(tl.int64)
    blk = (row64 * NC + c) * H + h
    lam_t = head_rows(lam, tok, H, h, L, cols, lm).to(ACC)
    gc = tl.load(g_cum + tok * H + h).to(ACC)
    bt = tl.load(beta + tok * H + h).to(ACC)
    g_end = tl.load(g_cum + (row64 * S + c * C + C - 1) * H + h).to(ACC)
    ab = tl.load(a_inv + blk * C * C + i[:, None] * C + i[None, :]).to(ACC)
    e_g = tl.exp(gc)
    e_k = tl.exp(g_end - gc)

    # [C, C] products over the keys
    qk = tl.zeros([C, C], dtype=ACC)
    kk = tl.zeros([C, C], dtype=ACC)
    for k0 in range(0, K, BKT):
        kc, km = key_tile(k0, K, BKT)
        kt = head_rows(k, tok, G, grp, K, kc, km).to(ACC)
        qk += _dot(head_rows(q, tok, G, grp, K, kc, km).to(ACC), tl.trans(kt), PREC, ACC)
        kk += _dot(kt, tl.trans(kt), PREC, ACC)
    gamma = _gamma(gc, i)
    qk = qk * gamma
    kks = tl.where(i[:, None] > i[None, :], kk * gamma, 0.0)
    p = _dot(qk, ab, PREC, ACC)
    lev = tl_capped_level(i[:, None], i[None, :], L)  # also for dlambda's per-level sums below
    weights = level_weights(lam_t, cols, i, L, C, LOG_C, ACC)

    # Value side: dV = (P * Lambda)^T dO + Ab^T dU with dU = Kd dX; dO v^T and dU v^T for below.
    dm = tl.zeros([C, C], dtype=ACC)
    dab = tl.zeros([C, C], dtype=ACC)  # gradient of Ab
    for v0 in range(0, V, BV):
        dvv = v0 + tl.arange(0, BV)
        vm = dvv < V
        vt = head_rows(v, tok, H, h, V, dvv, vm).to(ACC)
        dot = head_rows(do, tok, H, h, V, dvv, vm).to(ACC)
        dm += _dot(dot, tl.trans(vt), PREC, ACC)
        du = tl.zeros([C, BV], dtype=ACC)
        for k0 in range(0, K, BKT):
            kc, km = key_tile(k0, K, BKT)
            kd = head_rows(k, tok, G, grp, K, kc, km).to(ACC) * e_k[:, None]
            du += _dot(kd, _state_tile(dstates, row64, c, NJ + 1, NC, NJ + 2, h, H, K, V, kc, km, dvv, vm, ACC), PREC, ACC)
        dvt = _dot(tl.trans(p * weights), dot, PREC, ACC) + _dot(tl.trans(ab), du, PREC, ACC)
        tl.store(dv + (tok[:, None] * H + h) * V + dvv[None, :], dvt, mask=vm[None, :])
        dab += _dot(du, tl.trans(vt), PREC, ACC)

    pdm = p * dm
    dlam_t = tl.zeros([C, LP], dtype=ACC)
    for lvl in tl.static_range(LOG_C + 1):
        dlam_t += tl.where(cols[None, :] == lvl, tl.sum(tl.where(lev == lvl, pdm, 0.0), 1)[:, None], 0.0)
    dp = dm * weights
    dab += _dot(tl.trans(qk), dp, PREC, ACC)
    dqk = _dot(dp, tl.trans(ab), PREC, ACC)  # the dQt W^T part follows per key tile

    # Key side, a key tile at a time: dQt from the level readouts, dKd and dW from the states
    # passing the chunk (D) and its own contribution (dX); q and k get their direct terms here.
    dgt = tl.zeros([C], dtype=ACC)
    z_kd = tl.zeros([], dtype=ACC)
    d_decay = tl.zeros([], dtype=ACC)
    for k0 in range(0, K, BKT):
        kc, km = key_tile(k0, K, BKT)
        qtl = head_rows(qt, tok, H, h, K, kc, km).to(ACC)
        dqt = tl.zeros([C, BKT], dtype=ACC)  # gradient of Qt
        dkd = tl.zeros([C, BKT], dtype=ACC)  # gradient of Kd
        for v0 in range(0, V, BV):
            dvv = v0 + tl.arange(0, BV)
            vm = dvv < V
            dot = head_rows(do, tok, H, h, V, dvv, vm).to(ACC)
            for js in range(NJ):
                if tl_chunk_reads_scan(ca, js, NJ):  # chunk c read lambda_js Qt S_js
                    dread = _dot(dot, tl.trans(_state_tile(states, row64, c, js, NC, NJ, h, H, K, V, kc, km, dvv, vm, ACC)), PREC, ACC)
                    col = tl_scan_level(js, NJ, L, LOG_C)
                    dqt += _column(lam_t, cols, col)[:, None] * dread
                    dlam_t += tl.where(cols[None, :] == col, tl.sum(qtl * dread, 1)[:, None], 0.0)
            u = _dot(ab, head_rows(v, tok, H, h, V, dvv, vm).to(ACC), PREC, ACC)
            dkd += _dot(u, tl.trans(_state_tile(dstates, row64, c, NJ + 1, NC, NJ + 2, h, H, K, V, kc, km, dvv, vm, ACC)), PREC, ACC)
        dw = -_dot(tl.trans(qk), dqt, PREC, ACC)  # gradient of W
        for k1 in range(0, K, BKT):  # the transitions: dKd -= W D, dW -= Kd D^T
            kc1, km1 = key_tile(k1, K, BKT)
            kd1 = head_rows(k, tok, G, grp, K, kc1, km1).to(ACC) * e_k[:, None]
            d_row = _pair_block(pairs, blk, k0, k1, K, BKT)
            dw -= _dot(kd1, tl.trans(d_row), PREC, ACC)
            dkd -= _dot(head_rows(w, tok, H, h, WK, kc1, km1).to(ACC), _pair_block(pairs, blk, k1, k0, K, BKT), PREC, ACC)
            if k1 == k0:
                diag = tl.arange(0, BKT)[:, None] == tl.arange(0, BKT)[None, :]
                d_decay += tl.sum(tl.sum(tl.where(diag, d_row, 0.0), 1), 0)
        wt = head_rows(w, tok, H, h, WK, kc, km).to(ACC)  # W's rows are padded to WK
        dqk -= _dot(dqt, tl.trans(wt), PREC, ACC)
        kt = head_rows(k, tok, G, grp, K, kc, km).to(ACC)
        ke = kt * e_g[:, None]
        dab += _dot(dw, tl.trans(ke), PREC, ACC)
        dke = _dot(tl.trans(ab), dw, PREC, ACC)
        z = tl.sum(kt * e_k[:, None] * dkd, 1)
        z_kd += tl.sum(z, 0)
        dgt += tl.sum(ke * dke, 1) - z + e_g * tl.sum(head_rows(q, tok, G, grp, K, kc, km).to(ACC) * dqt, 1)
        qk_off = (tok[:, None] * H + h) * K + kc[None, :]
        tl.store(dq + qk_off, e_g[:, None] * dqt, mask=km[None, :])
        tl.store(dk + qk_off, e_g[:, None] * dke + e_k[:, None] * dkd, mask=km[None, :])

    # Through the UT inverse: A^-1 = I - Ab KKs (from A^-1 A = I)
    eye = tl.where(i[:, None] == i[None, :], 1.0, 0.0).to(ACC)
    ai = eye - _dot(ab, kks, PREC, ACC)
    d_a = _dot(_dot(tl.trans(ai), dab * bt[None, :], PREC, ACC), tl.trans(ai), PREC, ACC)
    dl = tl.where(i[:, None] > i[None, :], -d_a, 0.0)
    db = tl.sum(ai * dab, 0) + tl.sum(dl * kks, 1)
    dkkg = dl * bt[:, None] * gamma  # gradient of k k^T
    dqkg = dqk * gamma  # gradient of q k^T
    dgt += _dg_pairs(dl * bt[:, None] * kks) + _dg_pairs(dqk * qk)
    dgt += tl.where(i == C - 1, z_kd + tl.exp(g_end) * d_decay, 0.0)
    tl.store(dlam + (tok[:, None] * H + h) * L + cols[None, :], dlam_t, mask=lm[None, :])
    tl.store(dbeta + tok * H + h, db)
    tl.store(dg + tok * H + h, dgt)

    tl.debug_barrier()  # the direct terms stored above, by other threads of this program
    for k0 in range(0, K, BKT):
        kc, km = key_tile(k0, K, BKT)
        kt = head_rows(k, tok, G, grp, K, kc, km).to(ACC)
        qk_off = (tok[:, None] * H + h) * K + kc[None, :]
        dqq = tl.load(dq + qk_off, mask=km[None, :], other=0.0) + _dot(dqkg, kt, PREC, ACC)
        dkt = tl.load(dk + qk_off, mask=km[None, :], other=0.0) + _dot(dkkg + tl.trans(dkkg), kt, PREC, ACC)
        dkt += _dot(tl.trans(dqkg), head_rows(q, tok, G, grp, K, kc, km).to(ACC), PREC, ACC)
        tl.store(dq + qk_off, dqq, mask=km[None, :])
        tl.store(dk + qk_off, dkt, mask=km[None, :])
